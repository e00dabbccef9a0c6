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

from pathlib import Path

from staccato.client import StaccatoClient
from staccato.models import TransferOptions
from tests.dataset_checks import MiB
from tests.helpers import WorkerProcess
from tests.zombie_checks import (
    freeze,
    names_ahead,
    old_files,
    published_names,
    replaced_files,
    second_worker,
    short_poll_server,
    submit_one_batch,
    thaw,
    wait_completed,
    wait_for,
    woken_batch_end,
    write_newer,
)

FILES = 3000
SIZE = 2000
HEARTBEAT_TIMEOUT_S = 4
OPTIONS = TransferOptions(chunk_size=1 * MiB, heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S)


async def test_frozen_batch_to_a_directory_writes_nothing_after_losing_its_batch(
    data_dir: Path, tmp_path: Path
) -> None:
    source, destination = data_dir / "src", data_dir / "dst"
    old_files(source, FILES, SIZE)
    with short_poll_server(tmp_path) as temporal_server:
        first = WorkerProcess(temporal_server.address, processes=2, log_dir=tmp_path)
        first.start()
        second = None
        frozen: list[int] = []
        try:
            async with await StaccatoClient.connect(target_host=temporal_server.address) as client:
                client.task_queue = first.task_queue
                dataset = await submit_one_batch(client, source, str(destination), OPTIONS, FILES)
                await wait_for(lambda: len(published_names(destination)) >= FILES // 5, 60)
                frozen = freeze(first)
                # the files the frozen batch would write next (past those staged and
                # not yet renamed: a group commit holds those written meanwhile)
                ahead = names_ahead(published_names(destination), FILES, gap=1)
                second = second_worker(first, temporal_server.address, tmp_path)
                await wait_completed(client, dataset, FILES)
                newer = write_newer(destination, ahead)
                inodes = {name: (destination / name).stat().st_ino for name in newer}
                thaw(frozen)
                # the woken batch ends: it stops at its lease, or (before the fix) it
                # goes on and replaces newer versions
                stopped = await woken_batch_end(first, lambda: replaced_files(destination, newer))
                replaced = replaced_files(destination, newer)
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
