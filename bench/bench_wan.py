"""Benchmark: http->file over an emulated long fat link (:mod:`bench.wan`), fixed
settings against each other and against the optimizer.

Run by hand, as root: ``.venv/bin/python -m bench.bench_wan [--profile A B]
[--size-gib 1] [--optimizer] [--optimizer-size-gib 4] [--scale 0.25]``.

``--scale F`` multiplies the profiles' rates (same knees): the optimizer's decisions
depend on bytes (segments, windows), not seconds, so a quarter-rate link shows the same
search at a quarter of the CPU per second, on a machine too busy for the full rates.
The worker runs ``--processes`` (default 4) activity processes x
``STACCATO_WORKER_THREADS`` threads, with enough ``STACCATO_WORKER_MEMORY_BYTES`` for
16 streams of 64 MiB chunks.

For each profile:

* the sweep: ``staccato cp --streams S --chunk-size C URL DEST`` for S in 1, 2, 4, 8, 12,
  16 and C in 4, 16, 64 MiB; the best fixed setting, and the default (4 x 16 MiB)
  beside it;
* ``--optimizer``: ``staccato cp URL DEST`` without ``--streams``/``--chunk-size``
  (the optimizer chooses, when the release has one; otherwise this measures the
  defaults) on a fresh Temporal server (cold: nothing learned about the link), then
  again (warm); throughput over the first 2 GiB and after, and per 512 MiB.

Two rates per run: "cmd MB/s" is the object size over the whole ``staccato cp``
command (start-up, submit, copy, read-back verification, publish: what a user waits
for); "link MB/s" is counted at the server, bytes nginx sent over the span from the
first request's start to the last one's end (what the link carried, what tuning acts
on). "errors" counts responses >= 400. MB = 10**6 bytes. The destination is on tmpfs
(``--dest-dir``, default /dev/shm) so the disk does not hide the link.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import GiB, MiB, Service
from bench.wan import PROFILES, Profile, WanLink

STREAMS = (1, 2, 4, 8, 12, 16)
CHUNKS_MIB = (4, 16, 64)
DEFAULT = (4, 16)
#: the optimizer must reach its level within this many bytes
WARM_UP_BYTES = 2 * GiB
WINDOW_BYTES = 512 * MiB


@dataclass
class Run:
    """One ``staccato cp`` measured: wall seconds of the command, the requests nginx
    logged (each: start, end in Unix seconds, bytes) and the error count."""

    size: int
    wall_s: float
    spans: list[tuple[float, float, int]]
    errors: int

    @property
    def cmd_rate(self) -> float:
        return self.size / self.wall_s

    @property
    def link_rate(self) -> float:
        if not self.spans:
            return 0.0
        start = min(s for s, _, _ in self.spans)
        end = max(e for _, e, _ in self.spans)
        return sum(b for _, _, b in self.spans) / max(end - start, 1e-9)

    def time_at(self, target: int) -> float:
        """Seconds after the first request began at which ``target`` bytes had been
        sent, each request's bytes spread evenly over its duration."""
        start = min(s for s, _, _ in self.spans)
        events: list[tuple[float, float]] = []  # (time, rate change in bytes/s)
        for s, e, b in self.spans:
            rate = b / max(e - s, 1e-6)
            events += [(s, rate), (e, -rate)]
        events.sort()
        sent, rate, now = 0.0, 0.0, start
        for t, delta in events:
            if rate > 0 and sent + rate * (t - now) >= target:
                return now + (target - sent) / rate - start
            sent += rate * (t - now)
            rate += delta
            now = t
        return now - start

    def window_streams(self, window: int) -> list[float]:
        """Requests in flight on average over each ``window`` bytes (the streams the
        copy ran there, as the server saw them)."""
        total = sum(b for _, _, b in self.spans)
        start = min(s for s, _, _ in self.spans)
        marks = [self.time_at(m) + start for m in range(window, total, window)]
        marks.append(max(e for _, e, _ in self.spans))
        out, before = [], start
        for mark in marks:
            busy = sum(max(0.0, min(e, mark) - max(s, before)) for s, e, _ in self.spans)
            out.append(busy / max(mark - before, 1e-9))
            before = mark
        return out

    def window_rates(self, window: int) -> list[float]:
        """MB/s over each ``window`` bytes (the last one possibly shorter)."""
        total = sum(b for _, _, b in self.spans)
        marks = list(range(window, total, window))
        if not marks or total - marks[-1] >= window // 2:
            marks.append(total)  # the tail as a window of its own
        else:
            marks[-1] = total  # a short tail joins the window before it
        rates, before, t_before = [], 0, 0.0
        for mark in marks:
            t = self.time_at(mark)
            rates.append((mark - before) / max(t - t_before, 1e-9) / 1e6)
            before, t_before = mark, t
        return rates


def _spans(
    requests: list[dict[str, Any]], since: float
) -> tuple[list[tuple[float, float, int]], int]:
    spans, errors = [], 0
    for r in requests:
        end = float(r["msec"])
        if end < since:
            continue
        if int(r["status"]) >= 400:
            errors += 1
        # the stat's one-byte probe (Range bytes=0-0) and HEAD carry no data
        if int(r["body_bytes_sent"]) > 0 and r["range"] != "bytes=0-0":
            spans.append((end - float(r["request_time"]), end, int(r["body_bytes_sent"])))
    return spans, errors


def copy(
    service: Service, link: WanLink, name: str, size: int, dest: Path, options: list[str]
) -> Run:
    """One ``staccato cp -q [options] URL dest`` through the link, measured."""
    dest.unlink(missing_ok=True)
    link.clear_log()
    since = time.time()
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "staccato.cli", "cp", "-q", *options, link.url(name), str(dest)],
        env=service.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"staccato cp {' '.join(options)} failed: {done.stderr[-2000:]}")
    if dest.stat().st_size != size:
        raise RuntimeError(f"{dest}: {dest.stat().st_size} bytes, expected {size}")
    dest.unlink()
    spans, errors = _spans(link.requests(), since - 1)
    return Run(size, wall, spans, errors)


def sweep(
    service: Service,
    link: WanLink,
    name: str,
    size: int,
    dest: Path,
    runs: int,
    settings: list[tuple[int, int]],
) -> dict[tuple[int, int], Run]:
    """Every fixed (streams, chunk MiB) setting, ``runs`` times each (rounds, settings
    in the same order); the run with the median link rate is kept per setting."""
    results: dict[tuple[int, int], list[Run]] = {k: [] for k in settings}
    for _ in range(runs):
        for streams, chunk in settings:
            run = copy(
                service, link, name, size, dest,
                ["--streams", str(streams), "--chunk-size", f"{chunk}MiB"],
            )  # fmt: skip
            results[(streams, chunk)].append(run)
            print(
                f"  {streams:2d} x {chunk:2d} MiB: cmd {run.cmd_rate / 1e6:6.1f} MB/s, "
                f"link {run.link_rate / 1e6:6.1f} MB/s, errors {run.errors}",
                flush=True,
            )
    return {k: sorted(v, key=lambda r: r.link_rate)[len(v) // 2] for k, v in results.items()}


def sweep_table(profile: Profile, found: dict[tuple[int, int], Run]) -> str:
    best = max(found, key=lambda k: found[k].link_rate)
    lines = [
        f"{profile.describe()}; best fixed: {best[0]} x {best[1]} MiB, "
        f"default: {DEFAULT[0]} x {DEFAULT[1]} MiB\n",
        "| streams | chunk MiB | cmd s | cmd MB/s | link MB/s | of best | errors | |",
        "| --: | --: | --: | --: | --: | --: | --: | --- |",
    ]
    top = found[best].link_rate
    for (streams, chunk), run in sorted(found.items()):
        mark = "best" if (streams, chunk) == best else ""
        mark += " default" if (streams, chunk) == DEFAULT else ""
        lines.append(
            f"| {streams} | {chunk} | {run.wall_s:.1f} | {run.cmd_rate / 1e6:.1f} | "
            f"{run.link_rate / 1e6:.1f} | {run.link_rate / top:.0%} | {run.errors} | {mark} |"
        )
    return "\n".join(lines)


def optimizer_rows(label: str, run: Run, best: float | None, warm_up: int) -> str:
    """One markdown row: rates over the first ``warm_up`` bytes and after them."""
    total = sum(b for _, _, b in run.spans)
    warm_up = min(warm_up, total)
    t_warm = run.time_at(warm_up)
    end = run.time_at(total)
    first = warm_up / max(t_warm, 1e-9)
    after = (total - warm_up) / max(end - t_warm, 1e-9) if total > warm_up else 0.0
    of_best = f"{first / best:.0%} / {after / best:.0%}" if best else "n/a (no sweep)"
    windows = " ".join(f"{r:.0f}" for r in run.window_rates(WINDOW_BYTES))
    streams = " ".join(f"{s:.1f}" for s in run.window_streams(WINDOW_BYTES))
    return (
        f"| {label} | {run.wall_s:.1f} | {run.cmd_rate / 1e6:.1f} | {first / 1e6:.1f} | "
        f"{after / 1e6:.1f} | {of_best} | {run.errors} | {windows} | {streams} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", nargs="+", default=["A", "B"], choices=sorted(PROFILES))
    parser.add_argument("--size-gib", type=float, default=1.0, help="object size of the sweep")
    parser.add_argument("--runs", type=int, default=1, help="sweep rounds (median kept)")
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument("--streams", type=int, nargs="+", default=list(STREAMS))
    parser.add_argument("--chunks-mib", type=int, nargs="+", default=list(CHUNKS_MIB))
    parser.add_argument(
        "--warm-up-gib", type=float, default=WARM_UP_BYTES / GiB,
        help="the optimizer's rate is reported over this much and after it",
    )  # fmt: skip
    parser.add_argument("--optimizer", action="store_true", help="cold and warm runs, no options")
    parser.add_argument("--optimizer-size-gib", type=float, default=4.0)
    parser.add_argument("--hurt", default="decay", choices=["decay", "limit_conn"])
    parser.add_argument(
        "--scale", type=float, default=1.0,
        help="multiply the profiles' rates (e.g. 0.25 on a loaded machine: the same "
        "decisions per byte, a quarter of the CPU per second)",
    )  # fmt: skip
    parser.add_argument(
        "--best-mb-s", type=float, nargs="+", default=[],
        help="with --no-sweep: each profile's best fixed link MB/s (from an earlier sweep)",
    )  # fmt: skip
    parser.add_argument(
        "--processes", type=int, default=4,
        help="the worker's activity processes (each runs STACCATO_WORKER_THREADS streams)",
    )  # fmt: skip
    parser.add_argument("--dest-dir", type=Path, default=Path("/dev/shm"))
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/staccato-wan-data"))
    args = parser.parse_args()

    args.data_dir.mkdir(parents=True, exist_ok=True)
    args.data_dir.chmod(0o755)
    sizes = {int(args.size_gib * GiB), int(args.optimizer_size_gib * GiB)}
    for size in sizes:
        _object(args.data_dir, size)
    dest = args.dest_dir / f"staccato-wan-out-{int(time.time())}.bin"
    processes = args.processes
    reports: list[str] = []
    try:
        for name in args.profile:
            profile = PROFILES[name].scaled(args.scale)
            print(f"\n{profile.describe()}", flush=True)
            with WanLink(profile, args.data_dir, hurt=args.hurt) as link:
                index = args.profile.index(name)
                best: float | None = (
                    args.best_mb_s[index] * 1e6 if index < len(args.best_mb_s) else None
                )
                if not args.no_sweep:
                    service = Service(processes=processes, env=_worker_env(processes)).start()
                    try:
                        size = int(args.size_gib * GiB)
                        copy(service, link, _name(size), size, dest, [])  # warm-up
                        settings = [(st, c) for c in args.chunks_mib for st in args.streams]
                        found = sweep(service, link, _name(size), size, dest, args.runs, settings)
                    finally:
                        service.stop()
                    best = max(r.link_rate for r in found.values())
                    reports.append(sweep_table(profile, found))
                if args.optimizer:
                    size = int(args.optimizer_size_gib * GiB)
                    warm_up = int(args.warm_up_gib * GiB)
                    rows = [
                        f"{profile.describe()}; `staccato cp` without --streams/--chunk-size, "
                        f"{size / GiB:g} GiB, fresh Temporal server (cold), then again (warm)\n",
                        f"| run | cmd s | cmd MB/s | link MB/s first {warm_up / GiB:g} GiB | "
                        "after | of best fixed "
                        "(first / after) | errors | link MB/s per 512 MiB | streams per 512 MiB |",
                        "| --- | --: | --: | --: | --: | --: | --: | --- | --- |",
                    ]
                    service = Service(processes=processes, env=_worker_env(processes)).start()
                    try:
                        for label in ("cold", "warm"):
                            _object(args.data_dir, size)  # in the page cache again
                            run = copy(service, link, _name(size), size, dest, [])
                            rows.append(optimizer_rows(label, run, best, warm_up))
                            print(rows[-1], flush=True)
                            _print_learned(service)
                    finally:
                        service.stop()
                    reports.append("\n".join(rows))
    finally:
        dest.unlink(missing_ok=True)
    print("\n" + "\n\n".join(reports))


def _print_learned(service: Service) -> None:
    """What the link learned and the last decisions' reasons (``limit learned``)."""
    done = subprocess.run(
        [sys.executable, "-m", "staccato.cli", "limit", "learned", "--json"],
        env=service.env,
        capture_output=True,
        text=True,
    )
    print(done.stdout.strip() or done.stderr.strip(), flush=True)


def _worker_env(processes: int) -> dict[str, str]:
    """The worker's memory cap: its processes' own memory plus every stream's buffers at
    the largest setting swept (16 streams x 64 MiB, a chunk and its read-back each), so
    the sweep's fixed settings never wait for capacity."""
    from staccato.settings import WORKER_PROCESS_OVERHEAD_BYTES

    buffers = max(STREAMS) * max(CHUNKS_MIB) * MiB * 2
    return {
        "STACCATO_WORKER_PROCESSES": str(processes),
        "STACCATO_WORKER_MEMORY_BYTES": str(
            (processes + 2) * WORKER_PROCESS_OVERHEAD_BYTES + buffers
        ),
    }


def _name(size: int) -> str:
    return f"wan-{size // MiB}MiB.bin"


def _object(data_dir: Path, size: int) -> Path:
    """A random object of ``size`` bytes served by the link (kept between runs)."""
    path = data_dir / _name(size)
    if not path.exists() or path.stat().st_size != size:
        block = 64 * MiB
        with open(path, "wb") as out:
            for offset in range(0, size, block):
                out.write(os.urandom(min(block, size - offset)))
        path.chmod(0o644)
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)  # cached
    return path


if __name__ == "__main__":
    main()
