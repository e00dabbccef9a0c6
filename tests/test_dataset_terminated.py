"""A dataset terminated by hand (``temporal workflow terminate``, the SDK's
``terminate()``) runs no workflow code after it: its batches in flight write no
checkpoint into its counts. Tester t68 (1b) read ``failed, files_done 0 / progress
0/63`` and no ``left_behind`` of a dataset that had published 8 complete files. Now
``status`` reads the run's history (its batches with no end, and their files) and
counts the files they published at a destination it sees, names the temp files they
left, and the next run of the dataset removes those and copies the rest.

Real Temporal, real worker (SIGKILLed, whole group, before the terminate, so the
destination holds still: published files and the temp files of those being written),
real file system; the copy paced (``max_rate``) so the kill lands mid-batch. No
timing asserts: waits are bounded by conditions.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from staccato.cli.datasets import left_behind_lines, status_lines
from staccato.client import StaccatoClient
from staccato.dataset_client import dataset_status, submit_dataset
from staccato.datasets.models import DatasetState
from staccato.models import TransferOptions
from tests.dataset_checks import tree, wait_dataset
from tests.helpers import WorkerProcess, leftovers

FILES = 24
SIZE = 256 * 1024
#: 128 KiB/s, 64 KiB chunks: 2 s a file, ~48 s in all, so the kill lands with
#: batches in flight and a file half written (its temp file and journal there)
OPTIONS = TransferOptions(max_rate=128 * 1024, streams=2, chunk_size=64 * 1024)


def _published(source: Path, destination: Path) -> dict[str, int]:
    """The files at ``destination`` equal to their source (name -> size)."""
    if not destination.is_dir():
        return {}
    found: dict[str, int] = {}
    for path in destination.iterdir():
        if ".staccato-" in path.name or not path.is_file():
            continue
        if path.read_bytes() == (source / path.name).read_bytes():
            found[path.name] = path.stat().st_size
    return found


async def test_terminated_dataset_counts_what_it_published_and_names_its_temps(
    temporal_server, data_dir: Path, tmp_path: Path
) -> None:
    source, destination = data_dir / "tree", data_dir / "t10"
    source.mkdir()
    for i in range(FILES):
        (source / f"f{i:03d}.bin").write_bytes(os.urandom(SIZE))
    client = await StaccatoClient.connect(target_host=temporal_server.address, namespace="default")
    worker = WorkerProcess(temporal_server.address, processes=1, log_dir=tmp_path, own_group=True)
    with worker:
        client.task_queue = worker.task_queue
        dataset = await submit_dataset(
            client, str(source), str(destination), OPTIONS, batch_files=100, max_batches=2
        )
        deadline = time.monotonic() + 180
        while len(_published(source, destination)) < 2 or not leftovers(destination):
            assert time.monotonic() < deadline, "no 2 files published within 180 s"
            await asyncio.sleep(0.2)
        worker.kill_group()  # the destination holds still from here on
        await client.temporal.get_workflow_handle(dataset).terminate("test: t68 1b")
        published = _published(source, destination)
        temps = leftovers(destination)
        print(f"published {len(published)}, left {temps}")
        status = await dataset_status(client, dataset)
        print("\n".join(status_lines(status, False)))
        assert status.state == DatasetState.failed, status
        # every file it published, counted (it said 0 of 8 published)
        assert status.files_done == len(published), (status, sorted(published))
        assert status.bytes_done == sum(published.values()), status
        assert status.counts_unknown is None, status
        # each temp file (and journal) left is named, as a `left behind` line
        said = "\n".join(left_behind_lines(status))
        assert temps, "the kill left no temp file"
        for name in temps:
            assert name in said, (name, said)
        for failure in status.left_behind():
            assert "terminated" in (failure.left_behind or ""), failure
            assert failure.name not in published, failure

        # the next run of the dataset removes them and copies the rest
        again = await submit_dataset(client, str(source), str(destination))
        worker2 = WorkerProcess(temporal_server.address, task_queue=worker.task_queue)
        with worker2:
            final = await wait_dataset(client, again, timeout_s=240)
    assert final.state == DatasetState.completed, (final.error, final.failures)
    assert tree(destination) == tree(source)
    assert leftovers(destination) == [], leftovers(destination)
