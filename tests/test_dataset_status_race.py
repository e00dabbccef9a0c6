"""A dataset's status counts a batch once, whenever it ends: its result (the workflow's
counts, from the progress query) and its heartbeat (what is in flight, from the
describe) are never both added.

0.22.0 described the dataset first and queried its counts after; a query waits for the
workflow task in flight, which after a Temporal restart replays the history while the
batches' results land, so a batch that ended in between was counted twice: ``cp -r``
showed ``3138/2001 files``, then ``2000/2001`` and fewer bytes. Here the batch is made
to end between the two (the client's poller check, made between them, waits for the
dataset's end first) on a real dev server and worker.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from temporalio.api.enums.v1 import PendingActivityState

from staccato.client import StaccatoClient
from staccato.dataset_client import dataset_status, follow_dataset, submit_dataset
from staccato.datasets.models import BatchCheckpoint, DatasetState
from staccato.models import TransferOptions
from tests.dataset_checks import MiB, tree, tree_difference
from tests.helpers import WorkerProcess

FILES = 300


async def _batch_beat_done(client: StaccatoClient, handle) -> int:
    """Files done by the batch in flight, as its last heartbeat says (0: none yet)."""
    description = await handle.describe()
    for pending in description.raw_description.pending_activities:
        if pending.activity_type.name != "copy_batch":
            continue
        if pending.state != PendingActivityState.PENDING_ACTIVITY_STATE_STARTED:
            continue
        if not pending.heartbeat_details.payloads:
            continue
        (details,) = await client.temporal.data_converter.decode(
            pending.heartbeat_details.payloads, [BatchCheckpoint]
        )
        return details.done
    return 0


async def test_a_batch_ending_between_counts_and_heartbeats_is_counted_once(
    temporal_server, worker: WorkerProcess, data_dir: Path
) -> None:
    """On the session worker (with a client of its own: the test swaps its
    ``may_answer``): the scene needs no worker of its own, only one batch at a time."""
    source, destination = data_dir / "src", data_dir / "dst"
    for i in range(FILES):
        path = source / f"d{i % 5}" / f"f{i:04d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(2000))
    client = await StaccatoClient.connect(target_host=temporal_server.address, namespace="default")
    client.task_queue = worker.task_queue
    dataset = await submit_dataset(
        client,
        str(source),
        str(destination),
        # paced: the one batch beats with files done for seconds before it ends
        TransferOptions(chunk_size=1 * MiB, heartbeat_timeout_s=2, max_rate=150_000),
        batch_files=FILES,
        max_batches=1,
        page_size=FILES,
    )
    handle = client.temporal.get_workflow_handle(dataset)
    deadline = time.monotonic() + 60
    beat_done = 0
    while time.monotonic() < deadline:
        beat_done = await _batch_beat_done(client, handle)
        if beat_done > 0:
            break
        await asyncio.sleep(0.05)
    assert 0 < beat_done < FILES, f"no heartbeat with files done: {beat_done}"

    # between what the status reads first and the counts it queries, the batch ends
    # (and with it the dataset): the client checks for pollers in between
    asked = client.may_answer

    async def after_the_end(task_queue: str) -> bool:
        await asyncio.wait_for(handle.result(), timeout=120)
        return await asked(task_queue)

    client.may_answer = after_the_end  # type: ignore[method-assign]
    status = await dataset_status(client, dataset)
    client.may_answer = asked  # type: ignore[method-assign]
    assert status.files_done <= status.files_total == FILES, (
        f"{status.files_done}/{status.files_total} files (the batch's {beat_done} "
        "files in flight counted on top of its result)"
    )
    assert status.bytes_done <= status.bytes_total, status
    final = [s async for s in follow_dataset(client, dataset)][-1]
    assert final.state == DatasetState.completed, final
    assert final.files_done == FILES, final
    assert tree_difference(tree(destination), tree(source)) == []
