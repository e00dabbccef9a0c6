"""Benchmark: one worker's capacity for many concurrent transfers.

Run by hand: `.venv/bin/python -m bench.bench_capacity [--transfers 50] [--processes N]
[--profile DIR]`.

N concurrent 64 MiB http->file transfers are submitted at once, from this one process
(the client API), to one worker with default settings and no limits. Printed:

* seconds from the last submit until each transfer has written bytes (its streams'
  heartbeats at the server, polled without queries): first, median, last (goal: the
  last within 5 s);
* the worker process tree's peak RSS (sampled every 0.2 s) against
  ``STACCATO_WORKER_MEMORY_BYTES``; that every copy is byte-identical;
* where the time before each transfer's first stream went, from the server's
  history timestamps: workflow tasks (how many, waiting in the queue, being
  processed by the worker), activities before the streams (waiting, running), and
  the first stream's wait for a worker slot;
* with ``--profile DIR``: a py-spy profile of the worker's processes (py-spy must be
  installed).

Quote the load average printed with the numbers: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from bench.common import MiB, Service, random_file
from staccato import settings
from staccato.client import StaccatoClient
from staccato.models import TransferOptions
from tests.capacity_checks import (
    RssSampler,
    first_stream_breakdown,
    watch_writes,
)
from tests.servers.nginx import NginxServer


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _quantiles(values: list[float]) -> str:
    if not values:
        return "-"
    values = sorted(values)
    return (
        f"{statistics.median(values):.2f} / {values[int(len(values) * 0.9)]:.2f} / {values[-1]:.2f}"
    )


def _profilers(pid: int, out: Path) -> list[subprocess.Popen[bytes]]:
    """py-spy record of the worker and each of its child processes (until stopped)."""
    spy = shutil.which("py-spy") or str(Path(os.sys.executable).parent / "py-spy")
    pids = [pid] + [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return [
        subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(p),
                "--format",
                "speedscope",
                "--nonblocking",
                "--rate",
                "50",
                "-o",
                str(out / f"worker-{i}-{p}.json"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i, p in enumerate(pids)
    ]


async def _starts(
    service: Service,
    nginx: NginxServer,
    work: Path,
    transfers: int,
    profile: Path | None,
    keep: Path | None,
) -> None:
    source = random_file(work / "64m.bin", 64 * MiB)
    digest = _sha256(source)
    # one URL per transfer (hard links: one file's blocks), so no transfer reads
    # another's finished copy of the same URL (known copies) instead of the origin
    for i in range(transfers):
        os.link(source, work / f"64m-{i:03d}.bin")
    out = work / "out"
    out.mkdir()
    destinations = [out / f"copy-{i:03d}.bin" for i in range(transfers)]
    assert service.worker is not None
    spies = _profilers(service.worker.pid, profile) if profile else []
    load_before = os.getloadavg()
    async with await StaccatoClient.connect(target_host=f"127.0.0.1:{service.port}") as client:
        client.task_queue = "bench"
        cpu_before = _tree_cpu(service.worker.pid)
        with RssSampler(service.worker.pid) as rss:
            submitted_at = time.monotonic()
            ids = await asyncio.gather(
                *(
                    client.submit(nginx.url(f"64m-{i:03d}.bin"), str(d), TransferOptions())
                    for i, d in enumerate(destinations)
                )
            )
            submitted = time.monotonic()
            queue_watch = (
                asyncio.create_task(_watch_control_queue(client, keep / "control-queue.txt"))
                if keep is not None
                else None
            )
            # in a thread: the destinations' file system only, no load on Temporal
            written = await asyncio.to_thread(watch_writes, destinations, submitted, 600)
            cpu_started = _tree_cpu(service.worker.pid)
            began = time.monotonic()
            await asyncio.gather(*(client.wait(t) for t in ids))
            finished = time.monotonic() - began
            if queue_watch is not None:
                queue_watch.cancel()
        for spy in spies:
            spy.send_signal(2)
        retried: list[str] = []
        breakdown = await first_stream_breakdown(client, ids, retried)
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            # every transfer's history: the dispatch timeline needs them all
            for transfer in ids:
                history = await client.temporal.get_workflow_handle(transfer).fetch_history()
                (keep / f"{transfer}.json").write_text(history.to_json())
    load_after = os.getloadavg()
    times = sorted(written.values())
    memory = getattr(settings.current(), "worker_memory_bytes", 0) or 1
    identical = sum(_sha256(d) == digest for d in destinations)
    print(f"\n{transfers} concurrent 64 MiB http->file transfers on one worker (defaults):\n")
    print("| measure | value |\n| --- | --: |")
    print(f"| load average before / after | {load_before[0]:.1f} / {load_after[0]:.1f} |")
    print(
        f"| submitting the {transfers} (one client, concurrently) | {submitted - submitted_at:.1f} s |"
    )
    print(f"| bytes written (all) | {len(times)}/{transfers} |")
    if times:
        print("| first byte written, after the last submit: |  |")
        print(f"| first | {times[0]:.1f} s |")
        print(f"| median | {times[len(times) // 2]:.1f} s |")
        print(f"| last (goal <= 5 s) | {times[-1]:.1f} s |")
    print(f"| worker tree CPU (user+sys) until all wrote | {cpu_started - cpu_before:.1f} s |")
    print(f"| all completed, after the last start | {finished:.1f} s |")
    print(f"| byte-identical | {identical}/{transfers} |")
    print(
        f"| worker tree peak RSS | {rss.peak / MiB:.0f} MiB of {memory / MiB:.0f} MiB "
        f"({rss.samples} samples) |"
    )
    print("\nBefore each transfer's first stream started (server history times, seconds;")
    print("median / p90 / max over the transfers):\n")
    print("| component | value |\n| --- | --: |")
    columns: dict[str, list[float]] = defaultdict(list)
    for row in breakdown.values():
        for key, value in row.items():
            columns[key].append(value)
    for key, values in columns.items():
        print(f"| {key} | {_quantiles(values)} |")
    by_destination = dict(zip(destinations, ids, strict=True))
    if written:
        slowest_path = max(written, key=lambda d: written[d])
        slowest = by_destination[slowest_path]
        print(f"\nThe slowest transfer ({slowest}, wrote at {written[slowest_path]:.1f} s):\n")
        print("| phase | seconds |\n| --- | --: |")
        for key, value in breakdown.get(slowest, {}).items():
            print(f"| {key} | {value:.2f} |")
    print(f"\nActivities before the streams that needed more than one attempt: {len(retried)}")
    for line in retried:
        print(f"- {line}")
    log = service.home / "worker.log"
    if keep is not None and log.exists():
        shutil.copy(log, keep / "worker.log")
    if keep is not None and (service.home / "temporal.log").exists():
        shutil.copy(service.home / "temporal.log", keep / "temporal.log")
    slow_tasks = log.read_text(errors="replace").count("TMPRL1104") if log.exists() else 0
    print(f"\nWorkflow tasks over 5 s (TMPRL1104 in the worker log): {slow_tasks}")
    for path in destinations:
        path.unlink()
    out.rmdir()
    source.unlink()


async def _watch_control_queue(client: StaccatoClient, out: Path) -> None:
    """Every second: the control queue's activity pollers (how many polled within the
    last second) and backlog, as the server sees them; lines appended to ``out``."""
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    began = time.monotonic()
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a") as f:
        while True:
            try:
                answer = await client.temporal.workflow_service.describe_task_queue(
                    DescribeTaskQueueRequest(
                        namespace=client.temporal.namespace,
                        task_queue=TaskQueue(name="bench-control"),
                        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
                        report_stats=True,
                    )
                )
                stats = answer.stats
                f.write(
                    f"{time.monotonic() - began:6.1f} s pollers={len(answer.pollers)} "
                    f"backlog={stats.approximate_backlog_count} "
                    f"age={stats.approximate_backlog_age.ToTimedelta().total_seconds():.1f} "
                    f"add/s={stats.tasks_add_rate:.1f} dispatch/s={stats.tasks_dispatch_rate:.1f}\n"
                )
                f.flush()
            except Exception as err:  # noqa: BLE001 - a diagnostic only
                f.write(f"{time.monotonic() - began:6.1f} s describe failed: {err}\n")
            await asyncio.sleep(1.0)


def _tree_cpu(pid: int) -> float:
    """user+sys CPU seconds of ``pid`` and its live descendants."""
    ticks = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            todo += [
                int(c) for c in Path(f"/proc/{current}/task/{current}/children").read_text().split()
            ]
        except OSError:
            continue
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transfers", type=int, default=50)
    parser.add_argument("--processes", type=int, default=None, help="worker --processes")
    parser.add_argument("--profile", type=Path, help="directory for py-spy profiles")
    parser.add_argument(
        "--keep",
        type=Path,
        help="directory for the worker's log and the histories (JSON) of the slowest "
        "transfer and of those with a retried activity",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="staccato-bench-data-", dir="/tmp"))
    work.chmod(0o755)
    try:
        service = Service(processes=args.processes or settings.worker_processes()).start()
        nginx = NginxServer(work)
        nginx.start()
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
        try:
            asyncio.run(_starts(service, nginx, work, args.transfers, args.profile, args.keep))
        finally:
            nginx.stop()
            service.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
