"""Nested destinations: a start refused while a running writer's root or destination
encloses, or lies inside, what it would write.

Two datasets to one root, or two transfers to one destination, share a workflow id,
and Temporal runs one open workflow per id (:mod:`staccato.datasets.locks`,
:mod:`staccato.ids`). A dataset to ``R/sub`` while one writes ``R`` (or a transfer to
``R/x/f``, or a dataset to ``R`` while one writes ``R/sub``) has an id of its own, so
before a start the client asks Temporal one visibility query for running writers that
overlap (:func:`overlapping_writer`): the workflow ids a dataset at each proper
ancestor of the target would have (a single-root dataset, or the root lock of a
dataset to several roots), and, for a dataset's root ``R``, every running workflow
whose ``StaccatoDestination`` starts with ``R/`` (transfers, datasets and the child
transfers of a dataset's large files).

It is a client-side check, not a lock: two clients starting nested writers at the
same instant can both pass it, and workflows started with a plain Temporal client are
not checked. Visibility is eventually consistent (a writer started a moment ago may
not be listed yet). A dataset to several roots is found by the roots' lock ids when it
encloses the target, but only by its first root (its ``StaccatoDestination``) when
the target encloses one of its roots. ``StaccatoDestination`` is cut at 255
characters, so a root longer than that is not matched by prefix. A server whose
visibility refuses ``STARTS_WITH`` gets a second query for the enclosing writers only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from staccato import run_fields
from staccato.errors import DestinationBusyError, InvalidURLError
from staccato.ids import ROOT_LOCK_TYPE, root_lock_id

if TYPE_CHECKING:  # the light client (staccato.light_client) asks without the SDK
    from temporalio.client import Client, WorkflowExecution

    from staccato.urls import EndpointURL

#: workflows a query lists at most (its first page: one RPC); a re-run of a dataset
#: lists its own running child transfers too, which are skipped
PAGE_SIZE = 100


@dataclass(frozen=True)
class Writer:
    """A running writer overlapping a start's target.

    Attributes:
        target: the start's root or destination it overlaps (canonical text).
        holder: the id to cancel: the dataset (also of a root lock or a child
            transfer), or the transfer.
        kind: ``dataset`` or ``transfer``.
        writes: its root or destination (canonical text).
        source: its source as its memo says (``?`` when unknown); for a dataset's
            child transfer (a large file), the dataset's source root.
        file_source: for a dataset's child transfer, the source of the file it writes
            (``writes``); None otherwise.
    """

    target: str
    holder: str
    kind: str
    writes: str
    source: str
    file_source: str | None = None


def visibility_string(text: str) -> str:
    """``text`` as a visibility query's string literal (single-quoted)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def ancestor_roots(target: str) -> list[str]:
    """The canonical roots of every proper ancestor directory or prefix of the
    canonical URL ``target`` (``file:///a/b/c`` -> ``file:///a/b``, ``file:///a``,
    ``file:///``), each as a dataset to it would name its root
    (:func:`staccato.dataset_requests.dataset_id`); [] for an s3 key written in
    ``?key=`` form. Reads the local file system (symbolic links) for ``file`` URLs."""
    from staccato.urls import parse_url, resolve_local_directory, root_text

    base, _, query = target.partition("?")
    if query.startswith("key=") or "&key=" in query or "://" not in base:
        return []
    scheme, rest = base.split("://", 1)
    cut = rest.find("/")
    if cut < 0:
        return []
    authority, path = rest[:cut], rest[cut:].rstrip("/")
    suffix = f"?{query}" if query else ""
    found: list[str] = []
    while path:
        path = path.rsplit("/", 1)[0]
        text = f"{scheme}://{authority}{path or '/'}{suffix}"
        try:
            url = resolve_local_directory(parse_url(text), is_directory=True)
        except InvalidURLError:
            continue
        root = root_text(url)
        if root not in found and root.rstrip("/") != target.rstrip("/"):
            found.append(root)
    return found


def compared_place(url: EndpointURL) -> str:
    """The text the client's overlap checks compare for a root or destination ``url``
    (one place, one text): a local path with every symbolic link on it resolved, also
    where its tail does not exist yet (``os.path.realpath``: ``/data/link/sub`` is
    ``/data/real/sub``); an SFTP URL without its user (one server is its host and port
    as named, whoever logs in: two users see one file system, and a URL that names no
    user logs in as a configured one that may be the other's, so the user is not
    compared: a false refusal costs a retyped command, a copy into its own source
    costs the data); other URLs as :func:`staccato.urls.root_text`. Reads the local
    file system: client side only."""
    from staccato.urls import root_text

    if url.scheme == "file":
        return "file://" + os.path.realpath(url.path)
    text = root_text(url)
    if url.scheme == "sftp":
        authority, _, rest = text[len("sftp://") :].partition("/")
        return f"sftp://{authority.rpartition('@')[2]}/{rest}"
    return text


def encloses(outer: str, inner: str) -> bool:
    """Whether the place ``inner`` lies inside ``outer`` (texts of
    :func:`compared_place`; an s3 URL's query is left out): ``dst`` does not enclose
    ``dst2``, nor a place itself."""
    return inner.partition("?")[0].startswith(_prefix(outer))


def _prefix(root: str) -> str:
    """What a path under ``root`` starts with: ``root`` and one ``/`` (so ``dst`` does
    not match ``dst2``), without an s3 URL's query. A root that ends in ``/`` (a bucket
    or a file system's root) is its own prefix: ``s3://b/`` holds ``s3://b/x``, not
    ``s3://b2/x``."""
    base = root.partition("?")[0]
    return base if base.endswith("/") else base + "/"


async def overlapping_writer(
    client: Client, targets: Sequence[str], *, own: str, below: bool
) -> Writer | None:
    """The first running writer that overlaps one of ``targets`` (canonical roots of a
    dataset, or one transfer's destination), found by one visibility query; None when
    there is none. Skips the workflow ``own`` (a re-run attaches as before), its
    children (a dataset's child transfers and root locks) and locks it holds.

    Client-side only: see the module docstring (concurrent starts can both pass;
    plain Temporal starts are not checked).

    Args:
        client: a Temporal client.
        targets: canonical roots (no trailing ``/`` but at a bucket or file-system
            root) or a destination URL.
        own: the id the start uses.
        below: also look for writers inside the targets (a dataset's roots; not a
            single transfer's destination, which names a file or object).
    """
    from temporalio.service import RPCError, RPCStatusCode

    ancestors, enclosing, inside = overlap_clauses(targets, below=below)
    try:
        listed = await _running(client, enclosing + inside)
    except RPCError as err:
        # a server whose visibility lacks STARTS_WITH: the enclosing writers only
        if err.status != RPCStatusCode.INVALID_ARGUMENT or not inside:
            raise
        listed = await _running(client, enclosing)
    for found in listed:
        if own in (found.id, found.parent_id):
            continue
        try:
            memo = await found.memo()
        except Exception:  # a memo this client cannot decode (a plain client's start)
            memo = {}
        if found.workflow_type == ROOT_LOCK_TYPE and memo.get("holder") == own:
            continue
        dataset = found.id.startswith("staccato-dataset-") or found.workflow_type == ROOT_LOCK_TYPE
        holder = (
            str(memo.get("holder", found.id)) if found.workflow_type == ROOT_LOCK_TYPE else found.id
        )
        source = str(memo.get("source", "?"))
        file_source: str | None = None
        if found.parent_id and found.parent_id.startswith("staccato-dataset-"):
            holder, dataset = found.parent_id, True  # a dataset's child transfer
            # the message names the dataset's source root, and the file apart
            file_source, source = source, await _source_of(client, found.parent_id)
        if found.id in ancestors:
            writes = ancestors[found.id]
            target = next((t for t in targets if t.startswith(_prefix(writes))), targets[0])
        else:
            writes = str(
                memo.get("destination")
                or found.search_attributes.get(run_fields.DESTINATION, ["?"])[0]
            )
            target = next((t for t in targets if writes.startswith(_prefix(t))), targets[0])
        return Writer(
            target=target,
            holder=holder,
            kind="dataset" if dataset else "transfer",
            writes=writes,
            source=source,
            file_source=file_source,
        )
    return None


async def _source_of(client: Client, workflow_id: str) -> str:
    """The source ``workflow_id``'s memo names (a dataset's: its source root); ``?``
    when it cannot be read."""
    try:
        description = await client.get_workflow_handle(workflow_id).describe()
        return str(dict(await description.memo()).get("source", "?"))
    except Exception:  # only a message's detail: the refusal stands without it
        return "?"


def overlap_clauses(
    targets: Sequence[str], *, below: bool
) -> tuple[dict[str, str], list[str], list[str]]:
    """What :func:`overlapping_writer` asks visibility for ``targets``: the lock id of
    every proper ancestor root -> that root, the clause listing the writers that
    enclose a target (by those ids; none when no target has an ancestor) and, with
    ``below``, a clause per target listing the writers inside it."""
    ancestors: dict[str, str] = {}
    for target in targets:
        for root in ancestor_roots(target):
            ancestors.setdefault(root_lock_id(root), root)
    enclosing = (
        [f"WorkflowId IN ({', '.join(visibility_string(i) for i in ancestors)})"]
        if ancestors
        else []
    )
    prefixes = [_prefix(t) for t in targets] if below else []
    inside = [f"{run_fields.DESTINATION} STARTS_WITH {visibility_string(p)}" for p in prefixes]
    return ancestors, enclosing, inside


def running_query(clauses: list[str]) -> str | None:
    """The visibility query of the running workflows matching any of ``clauses``
    (None for no clause: nothing to ask)."""
    if not clauses:
        return None
    return f"ExecutionStatus = 'Running' AND ({' OR '.join(clauses)})"


async def _running(client: Client, clauses: list[str]) -> list[WorkflowExecution]:
    """The running workflows matching any of ``clauses`` (one page: one RPC)."""
    query = running_query(clauses)
    if query is None:
        return []
    return [w async for w in client.list_workflows(query, page_size=PAGE_SIZE, limit=PAGE_SIZE)]


def overlap_busy(writer: Writer, *, kind: str) -> DestinationBusyError:
    """The refusal of a start (``kind``: ``dataset`` or ``transfer``) to
    ``writer.target`` that overlaps ``writer`` (exit 1, as a busy destination)."""
    inside = writer.target.startswith(_prefix(writer.writes))
    where = "is inside" if inside else "encloses"
    held = (
        f"destination busy: {writer.target} {where} {writer.writes}, which is being "
        f"written by {writer.kind} {writer.holder} (from {writer.source})"
    )
    if writer.file_source is not None:  # a dataset's large file, by its own transfer
        held = (
            f"destination busy: {writer.target} {where} {writer.writes}, which is being "
            f"written by dataset {writer.holder} (source root {writer.source}): its file "
            f"from {writer.file_source}"
        )
    return DestinationBusyError(
        f"{held}; a {kind} there would mix its bytes with it: wait for it to finish or "
        f"cancel it with `staccato cancel {writer.holder}`",
        holder=held,
    )
