"""Where the wall time of one ``staccato cp -q`` goes, from the command's start to its
exit: the command's own start (interpreter, imports, the start call), then each step
of the transfer's workflow history (its events' server timestamps), then the command
learning the end and exiting.

    python -m bench.bench_timeline [--size BYTES ...] [--runs 5] [--before DIR]
        [--trace] [--dynamic KEY=JSON ...] [--dump DIR] [--s3 | --http]

``--http``: the source is a file an nginx this run starts serves (ranges on), so the
steps are those of an http->file copy.

``--s3``: the source is an object in a SeaweedFS this run starts (the same bytes,
uploaded once per size), so the steps are those of an s3->file copy; the workers get
the store's credentials in their environment.

Each tree (this checkout, and ``--before``'s: a checkout with its own ``.venv``) gets
a private service of its own (a dev server, started by this checkout's code, and a
worker of that tree's code, so a change to the workflow or the worker shows); the
trees' commands run alternately, one copy
each per round, the first round a warm-up. The command runs as a user runs it
(``python -m staccato.cli cp -q SRC DST``, the light client when the service's HTTP
API is known, as ``staccato up``'s is). After each command the transfer's history is
read (Temporal's HTTP API) and cut into steps; the table gives each step's median in
milliseconds. Times are the server's event times against this process's clock (the
same machine).

Steps (a step missing from a run counts 0):

* ``start``: command start -> ``WorkflowExecutionStarted`` (interpreter, imports,
  the overlap query, the start call);
* ``wft1 wait`` / ``wft1 run``: the first workflow task's schedule-to-start, and
  start-to-complete (stat, start lookups and prepare run in it as local activities);
* ``streams wait``: first stream scheduled -> its start (schedule-to-start);
* ``copy``: first stream started -> last stream completed;
* ``->publish``: last stream completed -> publish scheduled (a workflow task);
* ``publish``: publish scheduled -> completed;
* ``->end``: publish completed -> ``WorkflowExecutionCompleted`` (a workflow task:
  the size check after publish, slots given back);
* ``exit``: completed event -> the command's exit (the long poll's answer, the
  interpreter's exit);
* ``total``: the command's wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.bench_s3 import BUCKET
from bench.common import REPO, OtherService, Service, random_file
from staccato.ids import transfer_id

#: run as ``python -c`` in a tree instead of ``-m staccato.cli`` with ``--trace``: the
#: command as usual, with its import end, each light-client call and its exit logged
#: (POSIX seconds) as JSON lines to the file ``STACCATO_BENCH_TRACE`` names
TRACER = """
import json, os, sys, time
_log = open(os.environ["STACCATO_BENCH_TRACE"], "a")
def note(what, at, until=None):
    _log.write(json.dumps([what, at, until]) + "\\n"); _log.flush()
note("python", time.time())
import staccato.cli, staccato.cli.commands, staccato.light_client as light
note("imported", time.time())
_call = light.LightClient.call
async def call(self, method, path, **kw):
    began = time.time()
    try:
        return await _call(self, method, path, **kw)
    finally:
        note(method + " " + path.rsplit("/", 1)[-1][:24], began, time.time())
light.LightClient.call = call
_exit = os._exit
def leave(code):
    note("exit", time.time()); _exit(code)
os._exit = leave
sys.argv = ["staccato"] + sys.argv[1:]
staccato.cli.main()
"""

STEPS = (
    "start",
    "wft1 wait",
    "wft1 run",
    "streams wait",
    "copy",
    "->publish",
    "publish",
    "->end",
    "exit",
    "total",
)


def _when(text: str) -> float:
    """An RFC 3339 event time (nanoseconds, ``Z``) as POSIX seconds."""
    head, _, frac = text.rstrip("Z").partition(".")
    base = datetime.fromisoformat(head + "+00:00").timestamp()
    return base + (float("0." + frac) if frac else 0.0)


def history(service: Service, workflow_id: str) -> list[dict[str, Any]]:
    """The events of the latest run of ``workflow_id`` (Temporal's HTTP API)."""
    url = (
        f"http://127.0.0.1:{service.http_port}/api/v1/namespaces/default/workflows/"
        f"{workflow_id}/history?maximumPageSize=1000"
    )
    with urllib.request.urlopen(url, timeout=30) as answer:
        events: list[dict[str, Any]] = json.load(answer)["history"]["events"]
    return events


def _kind(event: dict[str, Any]) -> str:
    """``WORKFLOW_TASK_STARTED`` from ``EVENT_TYPE_WORKFLOW_TASK_STARTED``."""
    return str(event["eventType"]).removeprefix("EVENT_TYPE_")


def _activity(event: dict[str, Any], by_id: dict[str, dict[str, Any]]) -> str:
    """The activity type name of an activity event (a scheduled one's, or through its
    scheduled event id)."""
    for key, attrs in event.items():
        if key.startswith("activityTask") and isinstance(attrs, dict):
            if "activityType" in attrs:
                return str(attrs["activityType"]["name"])
            scheduled = by_id.get(str(attrs.get("scheduledEventId")))
            if scheduled is not None:
                return _activity(scheduled, by_id)
    return ""


def steps(events: list[dict[str, Any]], began: float, ended: float) -> dict[str, float]:
    """Seconds per step (see the module docstring) of one command and its history."""
    by_id = {str(e["eventId"]): e for e in events}
    timed = [(_kind(e), _activity(e, by_id), _when(e["eventTime"])) for e in events]

    def first(kind: str, activity: str | None = None) -> float | None:
        for k, a, t in timed:
            if k == kind and (activity is None or a == activity):
                return t
        return None

    def last(kind: str, activity: str | None = None) -> float | None:
        found = None
        for k, a, t in timed:
            if k == kind and (activity is None or a == activity):
                found = t
        return found

    started = first("WORKFLOW_EXECUTION_STARTED")
    completed = last("WORKFLOW_EXECUTION_COMPLETED")
    assert started is not None and completed is not None, [k for k, _, _ in timed]
    wft_scheduled = first("WORKFLOW_TASK_SCHEDULED")
    wft_started = first("WORKFLOW_TASK_STARTED")
    wft_completed = first("WORKFLOW_TASK_COMPLETED")
    stream_scheduled = first("ACTIVITY_TASK_SCHEDULED", "copy_stream")
    stream_started = first("ACTIVITY_TASK_STARTED", "copy_stream")
    stream_done = last("ACTIVITY_TASK_COMPLETED", "copy_stream")
    publish_scheduled = first("ACTIVITY_TASK_SCHEDULED", "publish")
    publish_done = last("ACTIVITY_TASK_COMPLETED", "publish")

    def span(a: float | None, b: float | None) -> float:
        return b - a if a is not None and b is not None else 0.0

    return {
        "start": started - began,
        "wft1 wait": span(wft_scheduled, wft_started),
        "wft1 run": span(wft_started, wft_completed),
        "streams wait": span(stream_scheduled, stream_started),
        "copy": span(stream_started, stream_done),
        "->publish": span(stream_done, publish_scheduled),
        "publish": span(publish_scheduled, publish_done),
        "->end": span(publish_done or stream_done, completed),
        "exit": ended - completed,
        "total": ended - began,
    }


TRACE_STEPS = (
    "| py init",
    "| imports",
    "| to first call",
    "| GET workflows",
    "| POST start",
    "| GET pollers",
    "| long poll",
    "| close seen",
    "| exit",
)


def traced(
    path: Path, began: float, ended: float, events: list[dict[str, Any]]
) -> dict[str, float]:
    """The command's own steps from its trace (see :data:`TRACER`), in seconds:
    interpreter start, imports, up to its first call, each call's duration, how long
    after the close event the long poll answered, and its exit."""
    notes = [json.loads(line) for line in path.read_text().splitlines()]
    at = {what: (t, until) for what, t, until in notes}
    calls = [(what, t, until) for what, t, until in notes if until is not None]
    completed = _when(events[-1]["eventTime"])
    found = {
        "| py init": at["python"][0] - began,
        "| imports": at["imported"][0] - at["python"][0],
        "| to first call": (calls[0][1] if calls else at["exit"][0]) - at["imported"][0],
        "| exit": ended - at["exit"][0],
    }
    for what, t, until in calls:
        if what.startswith("GET workflows"):
            found["| GET workflows"] = until - t
        elif what.startswith("POST"):
            found["| POST start"] = until - t
        elif what.startswith("GET history"):
            found["| long poll"] = until - t
            found["| close seen"] = until - completed
        else:  # the task queue's pollers
            found["| GET pollers"] = until - t
    return found


def _dump(events: list[dict[str, Any]], began: float, out: Path) -> None:
    """One run's history as ``+ms kind activity`` lines (for reading by hand)."""
    by_id = {str(e["eventId"]): e for e in events}
    lines = [
        f"{(_when(e['eventTime']) - began) * 1000:8.1f} ms  {_kind(e)}  {_activity(e, by_id)}"
        for e in events
    ]
    out.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, action="append", help="bytes (repeatable)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--before", type=Path, help="an older checkout (with its .venv)")
    parser.add_argument(
        "--fixed",
        metavar="STREAMS:CHUNK",
        help="copy with --streams STREAMS --chunk-size CHUNK (as bench_loopback's rows, "
        "e.g. 4:16M) instead of the link's tuning",
    )
    parser.add_argument("--dump", type=Path, help="write each run's event lines here")
    parser.add_argument(
        "--dynamic",
        nargs="+",
        metavar="KEY=JSON",
        help="also a service of this checkout whose dev server has these dynamic "
        "configuration values (`this+dynamic`): an A/B of server settings",
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="run the command through a tracer: also its imports, each HTTP call, its exit",
    )
    source_kind = parser.add_mutually_exclusive_group()
    source_kind.add_argument(
        "--s3", action="store_true", help="copy from an object in a SeaweedFS (s3->file)"
    )
    source_kind.add_argument(
        "--http", action="store_true", help="copy from an nginx on loopback (http->file)"
    )
    args = parser.parse_args()
    sizes = args.size or [1 << 20]
    work = Path(tempfile.mkdtemp(prefix="staccato-bench-timeline-", dir="/tmp"))
    seaweed: Any = None
    nginx: Any = None
    env: dict[str, str] = {}
    if args.http:
        from tests.servers.nginx import NginxServer

        work.chmod(0o755)  # nginx's workers read the sources
        nginx = NginxServer(work)
        nginx.start()
    if args.s3:
        from tests.servers.seaweedfs import SeaweedS3

        seaweed = SeaweedS3(work / "seaweedfs", max_volumes=100)
        seaweed.start()
        seaweed.client().create_bucket(Bucket=BUCKET)
        env = {
            k: v
            for k, v in seaweed.subprocess_env().items()
            if k.startswith("AWS_") and k != "AWS_CA_BUNDLE"
        }
    services: dict[str, tuple[Service, str, Path]] = {
        "this": (Service(env=env), sys.executable, REPO)
    }
    if args.dynamic:
        values = {k: json.loads(v) for k, _, v in (d.partition("=") for d in args.dynamic)}
        services["this+dynamic"] = (
            Service(dynamic_config=values, env=env),
            sys.executable,
            REPO,
        )
    if args.before:
        before = args.before.resolve()
        services["before"] = (
            OtherService(before, env=env),
            str(before / ".venv/bin/python"),
            before,
        )
    try:
        for service, _, _ in services.values():
            service.start()
        for size in sizes:
            source = random_file(work / f"src-{size}.bin", size)
            source_url = str(source)
            if seaweed is not None:
                seaweed.client().upload_file(str(source), BUCKET, source.name)
                source_url = f"s3://{BUCKET}/{source.name}"
            if nginx is not None:
                # at rest, as in bench_loopback: a source modified within the clock
                # skew would be read a second time before publish
                rest = time.time() - 3600
                os.utime(source, (rest, rest))
                source_url = nginx.url(source.name)
            out = work / f"out-{size}.bin"
            streams, _, chunk = (args.fixed or "").partition(":")
            fixed = ["--streams", streams, "--chunk-size", chunk] if args.fixed else []
            results: dict[str, list[dict[str, float]]] = {name: [] for name in services}
            loads: list[float] = []
            names = list(services)
            for round_ in range(args.runs + 1):  # round 0 warms up
                for k in range(len(names)):
                    name = names[(round_ + k) % len(names)]
                    service, python, tree = services[name]
                    out.unlink(missing_ok=True)
                    os.sync()
                    command = ["-c", TRACER] if args.trace else ["-m", "staccato.cli"]
                    argv = [python, *command, "cp", "-q", source_url, str(out), *fixed]
                    trace = work / "trace.jsonl"
                    trace.unlink(missing_ok=True)
                    env = {**service.env, "STACCATO_BENCH_TRACE": str(trace)}
                    began = time.time()
                    subprocess.run(argv, cwd=tree, env=env, check=True)
                    ended = time.time()
                    events = history(service, transfer_id(str(out)))
                    if args.dump:
                        args.dump.mkdir(parents=True, exist_ok=True)
                        _dump(events, began, args.dump / f"{size}-{name}-{round_}.txt")
                    if round_:
                        found = steps(events, began, ended)
                        if args.trace:
                            found.update(traced(trace, began, ended, events))
                        results[name].append(found)
                        loads.append(os.getloadavg()[0])
            source.unlink()
            out.unlink(missing_ok=True)
            print(
                f"\n{size} bytes, medians of {args.runs} (ms), load average "
                f"{min(loads):.1f}-{max(loads):.1f}\n"
            )
            print("| step | " + " | ".join(names) + " |")
            print("| --- | " + " | ".join("--:" for _ in names) + " |")
            for step in STEPS + (TRACE_STEPS if args.trace else ()):
                cells = [
                    f"{statistics.median(r.get(step, 0.0) for r in results[n]) * 1000:.0f}"
                    for n in names
                ]
                print(f"| {step} | " + " | ".join(cells) + " |")
            sys.stdout.flush()
    finally:
        for service, _, _ in services.values():
            service.stop()
        if seaweed is not None:
            seaweed.stop()
        if nginx is not None:
            nginx.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
