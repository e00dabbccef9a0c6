"""A dataset batch to a local directory frozen past its heartbeat timeout writes
nothing when it wakes (the group commit's path: files staged under temp names, then
renamed in groups).

As ``tests/s3/test_s3_dataset_zombie.py``: one batch of 3000 small files runs on a
first worker (unpaced: a group commit is running most of the time, so the freeze
usually catches one between its syncs and its renames); once a fifth of it is
published that worker's process tree is frozen (SIGSTOP),
a second worker takes the batch over after its heartbeat timeout and the dataset
completes; a newer version of each file the frozen batch had not reached is then
written at the destination (a new file renamed over it, as a later writer would), and
the frozen tree is woken (SIGCONT). Before batches ran under the stream lease, the
woken batch went on renaming and staging its stale copies over the newer versions (536
of 2379 replaced in one run); now it stops before its next write
(``StreamLeaseExpired``) and removes what it had staged.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from staccato.client import StaccatoClient
from staccato.dataset_client import submit_dataset
from staccato.datasets.models import DatasetState
from staccato.models import TransferOptions
from tests.dataset_checks import MiB, wait_dataset
from tests.helpers import WorkerProcess
from tests.zombie_checks import short_poll_server, thaw
from tests.zombie_checks import tree as process_tree

FILES = 3000
SIZE = 2000
HEARTBEAT_TIMEOUT_S = 4
OPTIONS = TransferOptions(chunk_size=1 * MiB, heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S)


def _published(destination: Path) -> set[str]:
    if not destination.is_dir():
        return set()
    return {p.name for p in destination.iterdir() if ".staccato-" not in p.name}


def _replaced(destination: Path, newer: dict[str, bytes]) -> list[str]:
    """The names of ``newer`` whose file is no longer the newer version."""
    return [name for name, data in newer.items() if (destination / name).read_bytes() != data]


async def test_frozen_batch_to_a_directory_writes_nothing_after_losing_its_batch(
    data_dir: Path, tmp_path: Path
) -> None:
    source, destination = data_dir / "src", data_dir / "dst"
    source.mkdir()
    for i in range(FILES):
        (source / f"f{i:04d}").write_bytes(os.urandom(SIZE))
    past = time.time() - 3600
    for path in source.iterdir():
        os.utime(path, (past, past))
    with short_poll_server(tmp_path) as temporal_server:
        first = WorkerProcess(temporal_server.address, processes=2, log_dir=tmp_path)
        first.start()
        second = None
        frozen: list[int] = []
        try:
            async with await StaccatoClient.connect(target_host=temporal_server.address) as client:
                client.task_queue = first.task_queue
                dataset = await submit_dataset(
                    client,
                    str(source),
                    str(destination),
                    OPTIONS,
                    batch_files=FILES,
                    max_batches=1,
                )
                deadline = time.monotonic() + 60
                while len(_published(destination)) < FILES // 5 and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                assert first.process is not None
                frozen = process_tree(first.process.pid)
                for pid in reversed(frozen):  # the activity processes first
                    os.kill(pid, signal.SIGSTOP)
                written = _published(destination)
                assert FILES // 5 <= len(written) < FILES // 2, len(written)
                # the files the frozen batch would write next (past those staged and
                # not yet renamed: a group commit holds those written meanwhile)
                last = max(int(name[1:]) for name in written)
                ahead = [f"f{i:04d}" for i in range(last + 1, FILES)]
                assert len(ahead) >= FILES // 3, len(ahead)
                second = WorkerProcess(
                    temporal_server.address,
                    task_queue=first.task_queue,
                    processes=2,
                    log_dir=tmp_path,
                )
                second.start()
                final = await wait_dataset(client, dataset, timeout_s=120)
                assert final.state == DatasetState.completed, final
                assert final.files_done == FILES and final.files_failed == 0, final
                newer = {name: b"newer version of " + name.encode() for name in ahead}
                for name, data in newer.items():
                    fresh = destination / f"{name}.newer"
                    fresh.write_bytes(data)
                    fresh.replace(destination / name)
                inodes = {name: (destination / name).stat().st_ino for name in newer}
                thaw(frozen)
                # the woken batch ends: it stops at its lease, or (before the fix) it
                # goes on and replaces newer versions
                deadline = time.monotonic() + 30
                stopped = False
                while time.monotonic() < deadline:
                    stopped = "StreamLeaseExpired" in first.log_tail(20000)
                    if stopped or _replaced(destination, newer):
                        break
                    await asyncio.sleep(0.2)
                replaced = _replaced(destination, newer)
                moved = [n for n in newer if (destination / n).stat().st_ino != inodes[n]]
                print(f"woken batch: {len(replaced)} of {len(newer)} newer versions replaced")
                assert replaced == [] and moved == [], (
                    f"the woken batch replaced {len(replaced)} newer files"
                )
                assert stopped, f"the woken batch did not stop:\n{first.log_tail(4000)}"
                # what it had staged is removed (the rest was renamed by the retry)
                left = [p.name for p in destination.iterdir() if ".staccato-" in p.name]
                assert left == [], left
        finally:
            thaw(frozen)
            first.stop()
            if second is not None:
                second.stop()
