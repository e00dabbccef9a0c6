"""``cp -r``'s progress line says ``retrying: <error>`` only while a batch is actually
retrying, as a single transfer's ``cp`` line (one rule:
:func:`staccato.client.retry_is_over`): once the retried attempt of a batch copies
again, its last error is history. Before, the line (and ``status``'
``last_retry_error``) kept the error until the batch ended (issue 11).

A dataset of one batch (so the batch retried is the one copying after), its worker's
activity processes SIGKILLed mid-copy: Temporal runs the batch again, which goes on
from its last heartbeat. Local files only; waits bounded by conditions."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from staccato.cli.datasets import follow_text, status_lines
from staccato.client import StaccatoClient
from staccato.dataset_client import dataset_status, submit_dataset
from staccato.datasets.models import DatasetState, DatasetStatus
from staccato.models import TransferOptions
from tests.dataset_checks import tree, wait_dataset
from tests.helpers import WorkerProcess, spawned_children

FILES = 100
#: ~200 KB at 10 KB/s: ~20 s of copying, so the batch is mid-copy when its process
#: dies (at its first file counted, ~0.2 s a file) and copies for a while after
#: Temporal runs it again (the check wants 5 more files: 1 s). It was 160 files (~32 s
#: of copying), most of it after the checks, only to end the dataset
OPTIONS = TransferOptions(max_rate=10_000, heartbeat_timeout_s=10, retry_for_s=600)


async def _status_until(
    client: StaccatoClient, dataset: str, what, timeout_s: float
) -> DatasetStatus:
    """Poll the dataset's status (at most ``timeout_s``) until ``what`` holds of it or
    it is no longer running."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = await dataset_status(client, dataset)
        # scheduled until the run's first task: a poll at load can come before it
        if what(status) or status.state not in (DatasetState.scheduled, DatasetState.running):
            return status
        assert time.monotonic() < deadline, (
            f"not within {timeout_s} s: {status_lines(status, False)}"
        )
        await asyncio.sleep(0.3)


async def _batch_attempt(client: StaccatoClient, dataset: str) -> int:
    """The attempt of the dataset's batch in flight (0: none in flight)."""
    described = await client.temporal.get_workflow_handle(dataset).describe()
    attempts = [
        p.attempt
        for p in described.raw_description.pending_activities
        if p.activity_type.name == "copy_batch"
    ]
    return max(attempts, default=0)


async def test_the_retry_note_goes_once_the_retried_batch_copies_again(
    temporal_server, data_dir: Path, tmp_path: Path
) -> None:
    source, destination = data_dir / "src", data_dir / "dst"
    for i in range(FILES):
        path = source / f"d{i % 10}" / f"f{i:04d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(2048))
    with WorkerProcess(temporal_server.address, processes=2, log_dir=tmp_path) as worker:
        assert worker.process is not None
        client = await StaccatoClient.connect(
            target_host=temporal_server.address, namespace="default"
        )
        client.task_queue = worker.task_queue
        dataset = await submit_dataset(
            client, str(source), str(destination), OPTIONS, batch_files=1000, max_batches=1
        )
        under_way = await _status_until(client, dataset, lambda s: s.files_done > 0, 120)
        assert under_way.state == DatasetState.running, under_way
        for pid in spawned_children(worker.process.pid)[1:]:  # not the heartbeat manager
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 120
        while await _batch_attempt(client, dataset) < 2:  # Temporal runs it again
            assert time.monotonic() < deadline, "the batch was not retried"
            await asyncio.sleep(0.3)
        retried_at = (await dataset_status(client, dataset)).files_done
        # the retried attempt copies files again (the batch, the only one, still runs)
        again = await _status_until(client, dataset, lambda s: s.files_done >= retried_at + 5, 180)
        print(retried_at, follow_text(again))
        assert again.state == DatasetState.running, again
        assert await _batch_attempt(client, dataset) >= 2
        assert again.last_retry_error is None, again.last_retry_error
        assert "retrying" not in follow_text(again), follow_text(again)
        final = await wait_dataset(client, dataset, timeout_s=240)
    assert final.state == DatasetState.completed, final
    assert tree(destination) == tree(source)
