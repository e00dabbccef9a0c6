"""Where the wall time of one ``staccato cp -r`` of a local tree goes (issue 11's
file->file row): the command's start, each listing page and batch activity (scheduled,
started, completed, server times), the workflow tasks, the end, and the CPU of each
process group sampled every 50 ms (``/proc/PID/stat``), so the idle cores show.

    python -m bench.bench_dataset_timeline [--files 10000] [--runs 2] [--before DIR]

One private service per tree (this checkout, and ``--before``'s with its own
``.venv``), alternating runs, the first of each a warm-up (not printed). Per run: the
events as one line each (ms from the command's start), then a summary: the time to
the first batch's start, the time with N batches running (N = 0..8), the span from the
last batch's end to the command's exit, and the cores busy on average (all CPU of the
command, worker, activity processes and Temporal over the wall time).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.bench_dataset import make_tree
from bench.bench_timeline import _activity, _kind, _when, history
from bench.common import OtherService, Service, _children, cpu_seconds, server_pids
from staccato.dataset_requests import dataset_id


class Sampler(threading.Thread):
    """CPU seconds of each group every 50 ms (the command's own group: its pid)."""

    def __init__(self, service: Service) -> None:
        super().__init__(daemon=True)
        self.service = service
        self.command: int | None = None
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.stop = threading.Event()
        self.dead: dict[int, float] = {}

    def groups(self) -> dict[str, list[int]]:
        assert self.service.worker is not None
        worker = self.service.worker.pid
        return {
            "command": [self.command] if self.command else [],
            "worker": [worker],
            "activities": _children(worker),
            "temporal": server_pids(self.service.server),
        }

    def run(self) -> None:
        last: dict[int, float] = {}
        while not self.stop.is_set():
            now = time.time()
            got: dict[str, float] = {}
            for name, pids in self.groups().items():
                # a process gone keeps its last reading
                last.update(cpu_seconds(pids))
                got[name] = sum(last.get(pid, 0.0) for pid in pids)
            if self.command:
                got["command"] = last.get(self.command, 0.0)
            self.samples.append((now, got))
            time.sleep(0.05)


def one_run(service: Service, source: Path, destination: Path) -> dict[str, Any]:
    sampler = Sampler(service)
    sampler.start()
    time.sleep(0.2)
    began = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-m", "staccato.cli", "cp", "-r", str(source), str(destination), "-q"],
        env=service.env,
        cwd=service.repo,
        stdout=subprocess.DEVNULL,
    )
    sampler.command = proc.pid
    proc.wait()
    ended = time.time()
    time.sleep(0.2)
    sampler.stop.set()
    sampler.join()
    events = history(service, dataset_id(str(destination)))
    return {"began": began, "ended": ended, "events": events, "samples": sampler.samples}


def report(run: dict[str, Any], label: str) -> None:
    began, ended, events = run["began"], run["ended"], run["events"]
    by_id = {str(e["eventId"]): e for e in events}
    rel = lambda t: (t - began) * 1000  # noqa: E731
    spans: dict[str, dict[str, float]] = {}
    print(f"--- {label}: {(ended - began) * 1000:.0f} ms, {len(events)} events")
    for e in events:
        kind, act, t = _kind(e), _activity(e, by_id), _when(e["eventTime"])
        if kind.startswith("ACTIVITY_TASK"):
            attrs = next(v for k, v in e.items() if k.startswith("activityTask"))
            sid = str(attrs.get("scheduledEventId", e["eventId"]))
            spans.setdefault(sid, {"name": act})[kind.removeprefix("ACTIVITY_TASK_")] = t
        if kind.startswith(("WORKFLOW_TASK", "WORKFLOW_EXECUTION", "ACTIVITY")):
            print(f"  {rel(t):8.0f}  {kind:32s} {act}")
    batches = [s for s in spans.values() if s["name"] == "copy_batch" and "COMPLETED" in s]
    # concurrency histogram of batches running
    edges = sorted(
        {began, ended} | {s["STARTED"] for s in batches} | {s["COMPLETED"] for s in batches}
    )
    running: dict[int, float] = {}
    for a, b in zip(edges, edges[1:], strict=False):
        mid = (a + b) / 2
        n = sum(1 for s in batches if s["STARTED"] <= mid < s["COMPLETED"])
        running[n] = running.get(n, 0.0) + (b - a)
    first = min(s["STARTED"] for s in batches)
    last = max(s["COMPLETED"] for s in batches)
    samples = run["samples"]
    t0 = min(samples, key=lambda s: abs(s[0] - began))[1]
    t1 = min(samples, key=lambda s: abs(s[0] - ended))[1]
    cpu = {k: t1.get(k, 0.0) - t0.get(k, 0.0) for k in t1}
    cpu["command"] = t1.get("command", 0.0)
    total = sum(cpu.values())
    started = next(
        _when(e["eventTime"]) for e in events if _kind(e) == "WORKFLOW_EXECUTION_STARTED"
    )
    pages = [s for s in spans.values() if s["name"] == "list_entries" and "COMPLETED" in s]
    print(
        f"  workflow started {rel(started):.0f} ms, -> first batch start "
        f"{(first - started) * 1000:.0f} ms; pages {len(pages)}, first page listed in "
        f"{(min(p['COMPLETED'] for p in pages) - started) * 1000:.0f} ms"
    )
    print(
        f"  first batch start {rel(first):.0f} ms, last batch end {rel(last):.0f} ms, "
        f"exit after {(ended - last) * 1000:.0f} ms; batches {len(batches)}"
    )
    print(
        "  time with N batches running (ms): "
        + ", ".join(f"{n}: {v * 1000:.0f}" for n, v in sorted(running.items()))
    )
    for s in sorted(batches, key=lambda s: s["SCHEDULED"]):
        print(
            f"    batch sched {rel(s['SCHEDULED']):6.0f} start {rel(s['STARTED']):6.0f} "
            f"end {rel(s['COMPLETED']):6.0f}"
        )
    print(
        "  CPU-s "
        + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
        + f"; cores busy {total / (ended - began):.2f}"
    )
    # busy cores per 250 ms window
    line = []
    for i in range(len(samples)):
        t, now = samples[i]
        if t < began or t > ended:
            continue
        j = next((k for k in range(i, len(samples)) if samples[k][0] >= t + 0.25), None)
        if j is None:
            break
        later = samples[j]
        busy = sum(later[1].get(k, 0) - now.get(k, 0) for k in now) / (later[0] - t)
        line.append(f"{rel(t):.0f}:{busy:.1f}")
    print("  busy cores (from ms: cores, 250 ms windows): " + " ".join(line[::5]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--before", type=Path, default=None)
    args = parser.parse_args()
    source = make_tree(
        Path(tempfile.gettempdir()) / f"staccato-bench-dataset-src-{args.files}x64k",
        args.files,
        64 * 1024,
    )
    work = Path(tempfile.mkdtemp(prefix="staccato-dstimeline-", dir="/tmp"))
    trees = {"this": Service().start()}
    if args.before:
        trees["before"] = OtherService(args.before).start()
    count = 0
    try:
        for number in range(args.runs + 1):
            for label, service in trees.items():
                count += 1
                destination = work / f"out-{count}"
                os.sync()
                time.sleep(1)
                run = one_run(service, source, destination)
                if number:
                    print(f"load {os.getloadavg()}")
                    report(run, f"{label} run {number}")
    finally:
        for service in trees.values():
            service.stop()
        subprocess.run(["rm", "-rf", str(work)])


if __name__ == "__main__":
    main()
