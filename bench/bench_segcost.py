"""What each segment of a file -> SFTP copy costs, tuned (many ~64 MiB segments) vs
fixed (``--streams N``: one segment per stream), from the copies' workflow histories and
the test sshd's log (issue 14).

    python -m bench.bench_segcost [--size BYTES] [--runs 3] [--load 2] [--streams 4]

Per copy: the ``copy_stream`` activities (segments, attempts), the mean of each one's
schedule-to-start wait and start-to-close run, the gap between one segment's close
and the next one's start on the busiest stream slot, the copy span (first stream
start -> last stream close), and the SSH connections the sshd accepted during the
copy (``Accepted publickey`` lines of its log: a per-process pool that reused its
connections would accept about one per activity thread). ``--load N`` starts N busy
loops (``python3 -c 'while 1: pass'``) for the run and kills them (by PID) at its end.
The modes run alternately, one copy each per round.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bench_timeline import _activity, _kind, _when, history
from bench.common import GiB, OtherService, Service, random_file, sftp_worker_env
from staccato.ids import transfer_id
from tests.servers.sshd import SshdServer


def accepted(sshd: SshdServer) -> int:
    """SSH logins the sshd has accepted so far (its log)."""
    return sshd.sshd_log_path.read_text(errors="replace").count("Accepted publickey")


def segments(events: list[dict[str, Any]]) -> dict[str, float]:
    """Per-copy figures from one history (see the module)."""
    by_id = {str(e["eventId"]): e for e in events}
    scheduled: dict[str, float] = {}
    started: dict[str, float] = {}
    closed: dict[str, float] = {}
    attempts = 0
    for e in events:
        kind, name = _kind(e), _activity(e, by_id)
        if name != "copy_stream":
            continue
        at = _when(e["eventTime"])
        if kind == "ACTIVITY_TASK_SCHEDULED":
            scheduled[str(e["eventId"])] = at
        else:
            attrs = next(v for k, v in e.items() if k.startswith("activityTask"))
            sid = str(attrs["scheduledEventId"])
            if kind == "ACTIVITY_TASK_STARTED":
                started[sid] = at
                attempts += int(attrs.get("attempt", 1))
            elif kind in ("ACTIVITY_TASK_COMPLETED", "ACTIVITY_TASK_FAILED"):
                closed[sid] = at
    ids = [i for i in scheduled if i in started and i in closed]
    others: dict[str, list[float]] = {}
    opened: dict[str, tuple[str, float]] = {}
    spans: dict[str, list[tuple[float, float]]] = {}
    for e in events:
        kind, name = _kind(e), _activity(e, by_id)
        if not name or name == "copy_stream":
            continue
        attrs = next((v for k, v in e.items() if k.startswith("activityTask")), {})
        sid = str(attrs.get("scheduledEventId", e["eventId"]))
        if kind == "ACTIVITY_TASK_STARTED":
            opened[sid] = (name, _when(e["eventTime"]))
        elif kind in ("ACTIVITY_TASK_COMPLETED", "ACTIVITY_TASK_FAILED") and sid in opened:
            others.setdefault(name, []).append(_when(e["eventTime"]) - opened[sid][1])
            spans.setdefault(name, []).append((opened[sid][1], _when(e["eventTime"])))
    waits = [started[i] - scheduled[i] for i in ids]
    runs = [closed[i] - started[i] for i in ids]
    # a segment scheduled after another closed: the gap from that close to its start
    ends = sorted(closed[i] for i in ids)
    gaps = []
    for i in ids:
        before = [c for c in ends if c <= scheduled[i] + 0.001]
        if before:
            gaps.append(started[i] - before[-1])
    return {
        "segments": len(ids),
        "attempts": attempts,
        "wait ms": 1000 * statistics.mean(waits),
        "run s": statistics.mean(runs),
        "gap ms": 1000 * statistics.mean(gaps) if gaps else 0.0,
        "copy s": max(closed[i] for i in ids) - min(started[i] for i in ids),
        "workflow s": _when(events[-1]["eventTime"]) - _when(events[0]["eventTime"]),
        **{f"{name} s": sum(times) for name, times in sorted(others.items())},
        "verify n": len(spans.get("verify", [])),
        "verify wall s": max(b for _, b in spans["verify"]) - min(a for a, _ in spans["verify"])
        if spans.get("verify")
        else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=GiB)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--load", type=int, default=2)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument(
        "--before", type=Path, help="another checkout (with .venv) run alternately with this one"
    )
    parser.add_argument("--modes", nargs="+", default=["tuned", "fixed"])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="segcost-"))
    sshd = SshdServer(work / "sshd")
    sshd.start()
    trees = {"this": Service(processes=args.processes, env=sftp_worker_env(sshd, work)).start()}
    if args.before:
        trees["before"] = OtherService(
            args.before, processes=args.processes, env=sftp_worker_env(sshd, work)
        ).start()
    loops: list[subprocess.Popen[bytes]] = []
    try:
        source = random_file(work / "src.bin", args.size)
        loops = [
            subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(args.load)
        ]
        modes = {"tuned": ["-q"], "fixed": ["-q", "--streams", str(args.streams)]}
        runs = [(tree, mode) for mode in args.modes for tree in trees]
        for round_ in range(args.runs):
            for tree, mode in runs:
                service, options = trees[tree], modes[mode]
                dst = work / "out" / f"{tree}-{mode}-{round_}.bin"
                dst.parent.mkdir(exist_ok=True)
                url = sshd.url(str(dst))
                before = accepted(sshd)
                began = time.monotonic()
                service.staccato("cp", str(source), url, *options)
                took = time.monotonic() - began
                time.sleep(0.5)  # the log's last lines
                logins = accepted(sshd) - before
                figures = segments(history(service, transfer_id(url)))
                line = "  ".join(
                    f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                    for k, v in figures.items()
                )
                print(
                    f"round {round_} {tree:6} {mode:5}: total {took:.1f} s  ssh logins {logins}  {line}",
                    flush=True,
                )
                dst.unlink()
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()
        for service in trees.values():
            service.stop()
        sshd.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
