"""A fan-out dataset batch (``copy_batch_to_many``: several destination roots) frozen
past its heartbeat timeout writes nothing at any root when it wakes.

As ``tests/test_dataset_zombie.py``: one batch of small files to two local roots runs
on a first worker (unpaced); once a fifth of it is published at the first root, that
worker's process tree is frozen (SIGSTOP), a second worker takes the batch over after
its heartbeat timeout and the dataset completes, both trees equal to the source. A
newer version of each file the frozen batch had not reached is then written at both
roots, and the frozen tree is woken (SIGCONT): the woken batch must put no stale copy
over a newer version at either root (bytes compared) and leave no temp file. Before
the file driver fenced the creation of a write session's temp file, the woken batch's
file threads (in the half second before its next heartbeat stopped it) opened new
sessions, unfenced, and left their temp and journal files behind at a root.
"""

from __future__ import annotations

from pathlib import Path

from staccato.client import StaccatoClient
from staccato.models import TransferOptions
from tests.dataset_checks import MiB, tree
from tests.helpers import WorkerProcess, leftovers
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

FILES = 1500
SIZE = 2000
OPTIONS = TransferOptions(chunk_size=1 * MiB, heartbeat_timeout_s=4)


async def test_frozen_fan_out_batch_writes_nothing_at_any_root_after_losing_its_batch(
    data_dir: Path, tmp_path: Path
) -> None:
    source = data_dir / "src"
    roots = [data_dir / "one", data_dir / "two"]
    old_files(source, FILES, SIZE)
    with short_poll_server(tmp_path) as temporal_server:
        first = WorkerProcess(temporal_server.address, processes=2, log_dir=tmp_path)
        first.start()
        second = None
        frozen: list[int] = []
        try:
            async with await StaccatoClient.connect(target_host=temporal_server.address) as client:
                client.task_queue = first.task_queue
                dataset = await submit_one_batch(
                    client, source, [str(r) for r in roots], OPTIONS, FILES
                )
                await wait_for(lambda: len(published_names(roots[0])) >= FILES // 5, 60)
                frozen = freeze(first)
                written = published_names(roots[0]) | published_names(roots[1])
                ahead = names_ahead(written, FILES, gap=8)  # past those in flight
                second = second_worker(first, temporal_server.address, tmp_path)
                await wait_completed(client, dataset, FILES)
                assert tree(roots[0]) == tree(source) == tree(roots[1])
                newer = [write_newer(root, ahead) for root in roots]

                def replaced() -> list[str]:
                    return [
                        f"{root.name}/{name}"
                        for root, versions in zip(roots, newer, strict=True)
                        for name in replaced_files(root, versions)
                    ]

                thaw(frozen)
                stopped = await woken_batch_end(first, replaced)
                print(f"woken batch: {len(replaced())} of {2 * len(ahead)} newer versions replaced")
                assert replaced() == [], f"the woken batch replaced {len(replaced())} newer files"
                assert stopped, f"the woken batch did not stop:\n{first.log_tail(4000)}"
                assert [leftovers(root) for root in roots] == [[], []]
        finally:
            thaw(frozen)
            first.stop()
            if second is not None:
                second.stop()
