"""Scale of a dataset (``cp -r``): a large local tree of small files, file->file.

Run by hand (never by the test suite)::

    .venv/bin/python -m bench.scale_dataset [--files 100000] [--size-kib 1] [--per-directory 100]

One private Temporal dev server and one ``staccato worker`` (``--processes``, default 4).
The source tree (kept between invocations) is ``--files`` random files of
``--size-kib`` KiB, ``--per-directory`` per directory. One ``staccato cp -r`` copies it
to an empty directory; measured:

* worker RSS: the sum of VmRSS over the worker and its activity processes, sampled
  every 0.5 s from before the run to its end: baseline, peak, growth (peak - baseline),
  and the last sample (memory still held after the run);
* the dataset's runs (continue-as-new) and the history events of each run
  (``DatasetWorkflow`` run by run, from the Temporal server);
* total wall time and files/s; the copy is checked (file count and bytes).

Then the numbers projected to ``--project`` files (default 10 M) from the measured ones:
runs = files / files-per-run, events per run as measured (a run ends at the same
history limit whatever the file count), listing memory = one page plus the sorted
children of the directories on the current path (independent of the file count).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script or with -m

from bench.bench_dataset import tree_summary  # noqa: E402
from bench.common import MiB, Service, _children  # noqa: E402
from staccato.datasets.models import DatasetRequest  # noqa: E402
from staccato.datasets.workflow import EVENTS_PER_UNIT  # noqa: E402

max_batches = DatasetRequest.model_fields["max_batches"].default
max_children = DatasetRequest.model_fields["max_children"].default


def make_tree(root: Path, files: int, size: int, per_directory: int) -> Path:
    """``files`` random files of ``size`` bytes under ``root``, ``per_directory`` per
    directory (kept between invocations when complete)."""
    marker = root.parent / f"{root.name}.complete-{files}-{size}-{per_directory}"
    if not marker.exists():
        shutil.rmtree(root, ignore_errors=True)
        block = os.urandom(size + files)
        for number in range(files):
            directory = root / f"d{number // per_directory:05d}"
            if number % per_directory == 0:
                directory.mkdir(parents=True)
            (directory / f"f{number:07d}.bin").write_bytes(block[number : number + size])
        marker.touch()
    return root


class RssSampler(threading.Thread):
    """Samples the summed VmRSS (bytes) of a process and its descendants every 0.5 s."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[int] = []
        self.processes_seen = 0
        self._done = threading.Event()

    def sample(self) -> int:
        total = 0
        pids = [self.pid, *_children(self.pid)]
        self.processes_seen = max(self.processes_seen, len(pids))
        for pid in pids:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            except (FileNotFoundError, ProcessLookupError):
                continue
        return total

    def run(self) -> None:
        while not self._done.wait(0.5):
            self.samples.append(self.sample())

    def stop(self) -> None:
        self._done.set()
        self.join(5)


async def dataset_runs(port: int) -> list[tuple[str, int]]:
    """(run id, history events) of each ``DatasetWorkflow`` run, oldest first."""
    from temporalio.client import Client

    client = await Client.connect(f"127.0.0.1:{port}")
    runs = []
    async for execution in client.list_workflows("WorkflowType = 'DatasetWorkflow'"):
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
        history = await handle.fetch_history()
        runs.append((execution.start_time, execution.run_id, len(history.events)))
    return [(run_id, events) for _, run_id, events in sorted(runs)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--size-kib", type=int, default=1)
    parser.add_argument("--per-directory", type=int, default=100)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--project", type=int, default=10_000_000)
    args = parser.parse_args()
    size = args.size_kib * 1024

    work = Path(tempfile.mkdtemp(prefix="staccato-scale-", dir="/tmp"))
    started = time.perf_counter()
    source = make_tree(
        Path(tempfile.gettempdir()) / "staccato-scale-src", args.files, size, args.per_directory
    )
    print(f"source tree ready in {time.perf_counter() - started:.0f} s", flush=True)
    destination = work / "out"
    service = Service(processes=args.processes).start()
    try:
        assert service.worker is not None
        sampler = RssSampler(service.worker.pid)
        time.sleep(2)  # the activity processes have warmed up
        baseline = statistics.median(sampler.sample() for _ in range(5))
        sampler.start()
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "staccato.cli", "cp", "-r", str(source), str(destination)],
            env=service.env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        seconds = time.perf_counter() - started
        sampler.stop()
        copied = tree_summary(destination)
        if copied != (args.files, args.files * size):
            raise SystemExit(
                f"copied {copied} (files, bytes), not {(args.files, args.files * size)}"
            )
        runs = asyncio.run(dataset_runs(service.port))
        peak = max(sampler.samples)
        events = [count for _, count in runs]
        files_per_run = args.files / len(runs) if len(runs) > 1 else float(args.files)
        print(
            f"\n{args.files} files of {args.size_kib} KiB, {args.per_directory} per directory, "
            f"file->file, worker --processes {args.processes} "
            f"({sampler.processes_seen} processes sampled)\n"
        )
        print("| measure | value |\n| --- | --: |")
        print(f"| total time | {seconds:.0f} s ({args.files / seconds:.0f} files/s) |")
        print(f"| worker RSS before | {baseline / MiB:.0f} MiB |")
        print(f"| worker RSS peak | {peak / MiB:.0f} MiB |")
        print(f"| worker RSS growth (peak - before) | {(peak - baseline) / MiB:.0f} MiB |")
        print(f"| worker RSS at the end | {sampler.samples[-1] / MiB:.0f} MiB |")
        print(f"| runs (continue-as-new) | {len(runs)} |")
        print(f"| history events per run | {', '.join(str(e) for e in events)} |")
        print(f"| max events in one run | {max(events)} |")
        if len(runs) > 1:
            # the last run holds the remainder: the full runs say how many fit in one
            full = events[:-1]
            per_file = sum(full) / (args.files * len(full) / len(runs))
        else:
            per_file = events[0] / args.files
        print(f"| events per 1,000 files | {per_file * 1000:.1f} |")
        # a run continues as new when its history nears the limit (less room for the
        # work in flight), so a run holds at most ~limit events whatever the file count
        limit = DatasetRequest.model_fields["history_limit"].default
        room = limit - (max_batches + max_children) * EVENTS_PER_UNIT - 20
        files_per_full_run = files_per_run if len(runs) > 1 else room / per_file
        projected_runs = -(-args.project // int(files_per_full_run))
        print(
            f"\nProjected to {args.project:,} files: ~{projected_runs} runs "
            f"(~{args.project * per_file:,.0f} events in all, each run <= {max(events)} "
            f"events, ~{files_per_full_run:,.0f} files per run); at "
            f"{args.files / seconds:.0f} files/s "
            f"~{args.project / (args.files / seconds) / 3600:.1f} h"
        )
    finally:
        service.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
