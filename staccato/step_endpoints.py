"""Which endpoints each step of a transfer talks to, in words (canonical URLs, no
secret): the one wording of the workflow's give-ups (a step that ran out of its retry
budget, :func:`staccato.workflows.failures.timed_out_text`) and of ``status`` while a
step's attempt waits for its endpoint (:func:`staccato.cli.render.step_wait_text`).

Plain functions of strings, with no Temporal import: the workflow (through its
sandbox's passed-through imports) and the command line's rendering both use them.
"""

from __future__ import annotations

#: the endpoints each step talks to: ``source``, ``destination`` or both (a step not
#: named here: both)
STEP_ENDPOINTS: dict[str, tuple[str, ...]] = {
    "stat": ("source",),
    "confirm_source": ("source",),
    "stage_source": ("source",),
    "prepare": ("destination",),
    "verify": ("destination",),
    "cleanup": ("destination",),
    "sync_check": ("destination",),
    # publish re-reads the source's version, then publishes at the destination
    "publish": ("source", "destination"),
    "copy_stream": ("source", "destination"),
}


def remote_endpoints(*urls: str) -> list[str]:
    """Of ``urls`` (canonical URLs), those of servers, which may accept connections and
    not answer: every one but a local file (``file://``) and an empty one, each once."""
    return list(dict.fromkeys(u for u in urls if u and not u.startswith("file:")))


def step_endpoints(step: str, source: str, destination: str) -> str:
    """The servers the activity ``step`` talks to, in words (``s3://b/k``, or
    ``s3://b/k or sftp://h/d/f``: which of the two did not answer is not known to the
    workflow): ``source`` and ``destination`` are canonical URLs (no secret). A local
    file is no server that may not answer (tester T14 read "s3://b/k or file:///d/f
    did not answer"): left out, and "" when the step reads and writes local files only
    (:func:`staccato.workflows.failures.timed_out_text` then names the worker); "its
    endpoint" when neither URL is known."""
    urls = {"source": source, "destination": destination}
    names = [urls[k] for k in STEP_ENDPOINTS.get(step, ("source", "destination")) if urls[k]]
    if not names:
        return "its endpoint"
    return " or ".join(remote_endpoints(*names))


def step_endpoints_named(step: str, source: str, destination: str) -> str:
    """:func:`step_endpoints` with each server's role: ``s3://b/k (the destination)``,
    ``s3://b/k (the source) or sftp://h/d/f (the destination)``; "" when the step
    talks to local files only or neither URL is known (``source`` and ``destination``:
    canonical URLs, no secret)."""
    urls = {"source": source, "destination": destination}
    named: dict[str, list[str]] = {}
    for role in STEP_ENDPOINTS.get(step, ("source", "destination")):
        for url in remote_endpoints(urls[role]):
            # the same URL both ways: named once, with both roles
            named.setdefault(url, []).append(f"the {role}")
    return " or ".join(f"{url} ({' and '.join(roles)})" for url, roles in named.items())
