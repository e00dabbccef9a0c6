"""Bandwidth cap of an endpoint, measured at the destination: ``--max-rate`` on an nginx
endpoint shared by several concurrent transfers, and a lowered cap reaching them.

A private nginx serving ``--transfers`` random files of ``--size-mb`` MB, a private
Temporal dev server and one worker with an activity process for every stream
(``--transfers`` x ``--streams``, plus 4 for the other steps). Two runs:

1. ``staccato limit set http://127.0.0.1:PORT --max-rate CAP``, all transfers submitted
   at once; the bytes the destination holds are sampled every 0.2 s; the aggregate rate
   of every sliding ``--window`` s window while they copy (first byte to last byte):
   max, min, and the worst excess over the cap.
2. The same, and ``--lower-after`` s after the first byte the cap is lowered to
   ``--lowered`` with ``staccato limit set``: seconds from the command's return until
   a 2 s window's rate is within +10 % of the lowered cap, and the windows after.

A file destination grows a whole chunk at a time, so up to transfers x streams x chunk
bytes have been read but not yet written: the bench uses 1 MiB chunks (16 MiB in
flight with 4 x 4 streams, +-1.7 MB/s over 10 s); with the default 16 MiB chunks the
destination moves in steps of ~270 MB and windows of a few seconds mean nothing.

Rates are decimal MB/s (10^6 bytes/s), as the CLI's ``40MB/s``. Run by hand:

    python -m bench.bench_rate [--transfers 4] [--size-mb 200] [--cap 40] [--lowered 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Service, _children, random_file
from staccato.cli.options import parse_size
from staccato.client import StaccatoClient
from staccato.links import endpoint_of
from staccato.models import TransferOptions, TransferResult, VerifyMode
from tests.servers.nginx import NginxServer

MB = 10**6
#: seconds between two samples of the destination
SAMPLE_S = 0.2
#: window over which the time to take effect is judged (seconds)
SHORT_WINDOW_S = 2.0
#: how far above a cap a window may be and still count as within it
TOLERANCE = 0.10


def written(directory: Path) -> int:
    """Bytes the file system holds under ``directory`` (allocated blocks: a file
    destination's temp file is sparse until its chunks are written)."""
    return sum(p.stat().st_blocks * 512 for p in directory.rglob("*") if p.is_file())


class Growth:
    """(monotonic seconds, bytes written) samples of one destination directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.samples: list[tuple[float, int]] = []

    async def follow(self, done: asyncio.Future[Any], timeout_s: float) -> None:
        """Sample every :data:`SAMPLE_S` (on a fixed schedule, no drift) until ``done``
        or ``timeout_s`` seconds have passed (then raise TimeoutError)."""
        start = time.monotonic()
        k = 0
        while not done.done():
            self.samples.append((time.monotonic(), written(self.directory)))
            if time.monotonic() - start > timeout_s:
                raise TimeoutError(f"transfers not done within {timeout_s:.0f} s")
            k += 1
            await asyncio.sleep(max(0.0, start + k * SAMPLE_S - time.monotonic()))
        self.samples.append((time.monotonic(), written(self.directory)))

    def copying(self, total: int) -> tuple[float, float]:
        """Times of the first sample with bytes and of the first holding ``total``."""
        first = next(t for t, b in self.samples if b > 0)
        last = next((t for t, b in self.samples if b >= total), self.samples[-1][0])
        return first, last

    def at(self, t: float) -> float:
        """Bytes at time ``t``, interpolated linearly between the samples around it."""
        for (t0, b0), (t1, b1) in zip(self.samples, self.samples[1:], strict=False):
            if t0 <= t <= t1:
                return b0 + (b1 - b0) * (t - t0) / (t1 - t0) if t1 > t0 else b1
        return float(self.samples[-1][1] if t > self.samples[-1][0] else self.samples[0][1])

    def windows(self, span: float, since: float, until: float) -> list[tuple[float, float]]:
        """(start, bytes/s) of every window of about ``span`` seconds between two
        samples within [since, until]: from each sample to the first one ``span`` s
        later (a late sample on a busy machine makes that window a little longer;
        its rate is over its true length)."""
        inside = [s for s in self.samples if since <= s[0] <= until]
        out: list[tuple[float, float]] = []
        j = 0
        for i, (t0, b0) in enumerate(inside):
            j = max(j, i + 1)
            while j < len(inside) and inside[j][0] < t0 + span:
                j += 1
            if j == len(inside):
                break
            t1, b1 = inside[j]
            out.append((t0, (b1 - b0) / (t1 - t0)))
        return out


async def run_transfers(
    client: StaccatoClient,
    nginx: NginxServer,
    names: list[str],
    destination: Path,
    options: TransferOptions,
) -> tuple[Growth, asyncio.Future[list[TransferResult]], list[str]]:
    """Submit one transfer per name at once; return the growth log (being followed by
    the caller) and the future of all results."""
    destination.mkdir()
    submitted = await asyncio.gather(
        *(client.start(nginx.url(n), str(destination / n), options) for n in names)
    )
    ids = [s.id for s in submitted]
    results = asyncio.ensure_future(asyncio.gather(*(client.wait(t) for t in ids)))
    return Growth(destination), results, ids


async def limit_set(service: Service, target: str, rate: str) -> tuple[float, float]:
    """``staccato limit set target --max-rate rate`` in a thread (the sampling goes on);
    (seconds the command took, monotonic time it returned)."""
    started = time.monotonic()
    await asyncio.to_thread(service.staccato, "limit", "set", target, "--max-rate", rate)
    returned = time.monotonic()
    return returned - started, returned


def save(path: Path | None, run: str, growth: Growth) -> None:
    """Append ``growth``'s samples to ``path`` (CSV: run, seconds from the first, bytes)."""
    if path is None:
        return
    t0 = growth.samples[0][0]
    with open(path, "a") as out:
        out.writelines(f"{run},{t - t0:.3f},{b}\n" for t, b in growth.samples)


def mbps(rate: float) -> str:
    return f"{rate / MB:6.2f}"


async def measure(args: argparse.Namespace, service: Service, nginx: NginxServer) -> None:
    client = await StaccatoClient.connect(target_host=f"127.0.0.1:{service.port}")
    client.task_queue = "bench"
    endpoint = endpoint_of(nginx.base_url)
    cap = args.cap * MB
    lowered = args.lowered * MB
    size = args.size_mb * MB
    names = [f"src-{i}.bin" for i in range(args.transfers)]
    total = size * len(names)
    options = TransferOptions(
        streams=args.streams, chunk_size=args.chunk_size, verify=VerifyMode.size, owner="bench"
    )
    timeout_s = 3 * total / lowered + 60
    rows: list[tuple[str, str]] = []

    # run 1: a steady cap
    took, _ = await limit_set(service, endpoint, f"{args.cap}MB/s")
    print(f"limit set {endpoint} --max-rate {args.cap}MB/s ({took:.1f} s)", flush=True)
    out = Path(tempfile.mkdtemp(prefix="staccato-bench-rate-out-", dir="/tmp"))
    try:
        submitted = time.monotonic()
        growth, results, _ = await run_transfers(client, nginx, names, out / "steady", options)
        await growth.follow(results, timeout_s)
        done = await results
        assert all(r.bytes == size for r in done), done
        first, last = growth.copying(total)
        save(args.samples, "steady", growth)
        windows = growth.windows(args.window, first, last)
        rates = [r for _, r in windows]
        print(f"run 1: {total / MB:.0f} MB copied in {last - first:.1f} s, {len(rates)} windows")
        if rates:
            worst = max(rates)
            rows += [
                (
                    f"run 1: mean rate, first to last byte ({last - first:.1f} s)",
                    mbps(total / (last - first)),
                ),
                (
                    f"run 1: mean rate, submission to last byte ({last - submitted:.1f} s)",
                    mbps(total / (last - submitted)),
                ),
                (f"run 1: {args.window:.0f} s windows: max", mbps(worst)),
                (f"run 1: {args.window:.0f} s windows: min", mbps(min(rates))),
                (
                    f"run 1: worst excess over {args.cap} MB/s",
                    f"{100 * (worst / cap - 1):+6.1f} %",
                ),
                (
                    "run 1: 2 s windows: max",
                    mbps(max(r for _, r in growth.windows(SHORT_WINDOW_S, first, last))),
                ),
            ]
        shutil.rmtree(out / "steady")

        # run 2: the cap lowered mid-run
        took, _ = await limit_set(service, endpoint, f"{args.cap}MB/s")
        growth, results, _ = await run_transfers(client, nginx, names, out / "lowered", options)
        follower = asyncio.ensure_future(growth.follow(results, timeout_s))
        deadline = time.monotonic() + 120
        while not growth.samples or growth.samples[-1][1] == 0:
            if time.monotonic() > deadline or follower.done():
                raise TimeoutError("run 2: no byte reached the destination within 120 s")
            await asyncio.sleep(SAMPLE_S)
        first = growth.samples[-1][0]
        await asyncio.sleep(max(0.0, first + args.lower_after - time.monotonic()))
        asked = time.monotonic()
        took, returned = await limit_set(service, endpoint, f"{args.lowered}MB/s")
        print(f"lowered to {args.lowered}MB/s at +{asked - first:.1f} s ({took:.1f} s)", flush=True)
        await follower
        done = await results
        assert all(r.bytes == size for r in done), done
        _, last = growth.copying(total)
        save(args.samples, "lowered", growth)
        short = growth.windows(SHORT_WINDOW_S, asked, last)
        # the first 2 s window (from when the command was run) at the lowered cap
        effect = next((s for s, r in short if r <= (1 + TOLERANCE) * lowered), None)
        before = growth.windows(SHORT_WINDOW_S, first, asked)
        rows.append(("run 2: 2 s windows before lowering: max", mbps(max(r for _, r in before))))
        rows.append(("run 2: limit set command took (s)", f"{took:6.1f}"))
        rows.append(
            (
                f"run 2: s from the command's return to the first 2 s window <= "
                f"{args.lowered} MB/s +10 %",
                f"{effect - returned:6.1f}" if effect is not None else "never",
            )
        )
        settled = growth.windows(SHORT_WINDOW_S, returned + 5, last)
        if settled:
            rows.append(("run 2: 2 s windows from +5 s: max", mbps(max(r for _, r in settled))))
        after = growth.windows(args.window, returned + 5, last)
        if after:
            worst = max(r for _, r in after)
            rows += [
                (f"run 2: {args.window:.0f} s windows from +5 s: max", mbps(worst)),
                (
                    f"run 2: {args.window:.0f} s windows from +5 s: min",
                    mbps(min(r for _, r in after)),
                ),
                (
                    f"run 2: worst excess over {args.lowered} MB/s",
                    f"{100 * (worst / lowered - 1):+6.1f} %",
                ),
            ]
        print("run 2: 1 s rates from the command's return (MB/s):")
        print(
            " ".join(
                f"{k:+d}:{(growth.at(returned + k + 1) - growth.at(returned + k)) / MB:.1f}"
                for k in range(-3, 10)
                if returned + k + 1 <= last
            )
        )
    finally:
        shutil.rmtree(out, ignore_errors=True)

    load = os.getloadavg()
    print(
        f"\n{args.transfers} transfers x {args.size_mb} MB, {args.streams} streams each, "
        f"chunks of {args.chunk_size} bytes, "
        f"cap {args.cap} -> {args.lowered} MB/s; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n"
    )
    width = max(len(label) for label, _ in rows)
    in_flight = args.transfers * args.streams * args.chunk_size
    print(
        f"(the destination grows a chunk at a time: up to {in_flight / MB:.1f} MB read but not "
        f"yet written, so a window's rate is exact to +-{in_flight / MB / args.window:.1f} MB/s "
        f"over {args.window:.0f} s, +-{in_flight / MB / SHORT_WINDOW_S:.1f} over "
        f"{SHORT_WINDOW_S:.0f} s)\n"
    )
    print(f"| {'measure'.ljust(width)} | MB/s or as said |")
    print(f"| {'-' * width} | --: |")
    for label, value in rows:
        print(f"| {label.ljust(width)} | {value.strip()} |")


def started_at(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/PID/stat), None when it is gone: tells
    a process this bench started from a later one that got its PID."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (FileNotFoundError, IndexError):
        return None


def stop_all(service: Service, nginx: NginxServer) -> None:
    """Stop the worker (and kill any of its processes left), the dev server and nginx."""
    worker = service.worker
    pids = _children(worker.pid) if worker is not None and worker.poll() is None else []
    family = [(p, started_at(p)) for p in pids]
    try:
        service.stop()
    except Exception as err:  # a worker or server that would not stop: killed below
        print(f"stopping the service: {err}")
        for proc in (service.worker, service.server):
            if proc and proc.poll() is None:
                proc.kill()
                proc.wait(10)
    for pid, start in family:
        if start is not None and started_at(pid) == start:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    nginx.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transfers", type=int, default=4)
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument(
        "--chunk-size",
        type=parse_size,
        default="1MiB",
        help="small: a file destination grows a whole chunk at a time, so big chunks "
        "make its growth too coarse to show a rate over a few seconds",
    )
    parser.add_argument("--cap", type=int, default=40, help="MB/s")
    parser.add_argument("--lowered", type=int, default=20, help="MB/s")
    parser.add_argument("--window", type=float, default=10.0, help="seconds")
    parser.add_argument("--lower-after", type=float, default=6.0, help="seconds")
    parser.add_argument("--samples", type=Path, help="write every sample here (CSV: run,s,bytes)")
    parser.add_argument("--worker-log", type=Path, help="copy the worker's log here")
    args = parser.parse_args()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)

    data = Path(tempfile.mkdtemp(prefix="staccato-bench-rate-src-", dir="/tmp"))
    data.chmod(0o755)
    nginx = NginxServer(data)
    service = Service(processes=args.transfers * args.streams + 4)
    try:
        for i in range(args.transfers):
            random_file(data / f"src-{i}.bin", args.size_mb * MB)
        nginx.start()
        service.start()
        asyncio.run(measure(args, service, nginx))
    finally:
        if args.worker_log and (service.home / "worker.log").exists():
            shutil.copy(service.home / "worker.log", args.worker_log)
        stop_all(service, nginx)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
