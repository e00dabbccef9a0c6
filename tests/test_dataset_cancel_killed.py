"""A dataset cancelled and then its worker SIGKILLed at once ends ``cancelled`` with
``files_done`` equal to the files complete at the destination, and no temp file left.

The batch's activity cannot answer the cancel (its worker is dead): it ends by its
heartbeat timeout (retry state ``CANCEL_REQUESTED``) with the last heartbeat details
the server holds, which lag the copy (the worker sends one at most every second),
or, when the kill came before the cancel reached it, it is cancelled while it waits
for its retry with no details at all. Either way the files the killed attempt
published after that heartbeat are at the destination; before
``dataset-count-published-past-checkpoint`` they were not counted (a tester: 43 done,
55 there; 48 and 58).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType

from staccato.client import StaccatoClient
from staccato.dataset_client import submit_dataset
from staccato.datasets.models import BatchCheckpoint, BatchResult, DatasetState
from staccato.datasets.workflow import DATASET_PUBLISHED_COUNT_PATCH, DatasetWorkflow
from staccato.models import TransferOptions
from tests.dataset_checks import MiB, wait_dataset
from tests.helpers import WorkerProcess, replayer_of

FILES = 400
SIZE = 32 * 1024


def _make_tree(source: Path) -> None:
    for i in range(FILES):
        path = source / f"d{i % 8}" / f"f{i:04d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(SIZE))


def _whole_copies(source: Path, destination: Path) -> int:
    """Files at ``destination`` under their final names whose bytes equal the source's."""
    whole = 0
    for path in destination.rglob("f*"):
        if ".staccato-" in path.name or not path.is_file():
            continue
        if path.read_bytes() == (source / path.relative_to(destination)).read_bytes():
            whole += 1
    return whole


def _temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".staccato-" in p.name]


async def _batch_counted_some(client: StaccatoClient, handle) -> bool:
    description = await handle.describe()
    for pending in description.raw_description.pending_activities:
        if pending.activity_type.name != "copy_batch" or not pending.heartbeat_details.payloads:
            continue
        (details,) = await client.temporal.data_converter.decode(
            pending.heartbeat_details.payloads, [BatchCheckpoint]
        )
        if details.done >= 1:
            return True
    return False


async def _asked_batches_to_cancel(handle) -> bool:
    history = await handle.fetch_history()
    return any(
        e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED for e in history.events
    )


async def _counted_by_batches(client: StaccatoClient, history) -> int:
    """Files done as the batches' own words say (what the dataset counted before the
    fix): a completed batch's result, a timed-out one's last heartbeat details."""
    converter = client.temporal.data_converter
    types: dict[int, str] = {}
    done = 0
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attributes = event.activity_task_scheduled_event_attributes
            types[event.event_id] = attributes.activity_type.name
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            attributes = event.activity_task_completed_event_attributes
            if types.get(attributes.scheduled_event_id) == "copy_batch":
                (result,) = await converter.decode(attributes.result.payloads, [BatchResult])
                done += result.done
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
            attributes = event.activity_task_timed_out_event_attributes
            details = attributes.failure.timeout_failure_info.last_heartbeat_details
            if types.get(attributes.scheduled_event_id) == "copy_batch" and details.payloads:
                (checkpoint,) = await converter.decode(details.payloads, [BatchCheckpoint])
                done += checkpoint.done
    return done


async def paced_dataset_copying(
    client: StaccatoClient, source: Path, destination: str
) -> tuple[str, Any]:
    """Submit ``source`` to ``destination`` paced (~30 files/s in all: files publish
    steadily between heartbeats, one a second at most reaching the server; ~13 s in
    all) in batches of 100, two at once; return (dataset id, its handle) once a
    batch's checkpoint counted a file."""
    dataset = await submit_dataset(
        client,
        str(source),
        destination,
        TransferOptions(chunk_size=1 * MiB, heartbeat_timeout_s=3, max_rate=1_000_000),
        batch_files=100,
        max_batches=2,
    )
    handle = client.temporal.get_workflow_handle(dataset)
    deadline = time.monotonic() + 60
    while not await _batch_counted_some(client, handle):
        assert time.monotonic() < deadline, "no batch checkpoint counted a file"
        await asyncio.sleep(0.05)
    return dataset, handle


async def cancel_until_batches_asked(client: StaccatoClient, dataset: str, handle: Any) -> None:
    """Cancel ``dataset`` and return once its workflow asked its batches to cancel (as a
    tester's ``staccato cancel`` then ``kill -9``: a kill now comes before the batches
    hear of it at their next heartbeat's answer, so they never answer the cancel)."""
    await client.cancel(dataset)
    deadline = time.monotonic() + 60
    while not await _asked_batches_to_cancel(handle):
        assert time.monotonic() < deadline, "the dataset never cancelled its batches"
        await asyncio.sleep(0.02)


async def test_cancel_then_sigkill_counts_every_file_published(
    temporal_server, data_dir: Path, tmp_path: Path
) -> None:
    source, destination = data_dir / "src", data_dir / "dst"
    _make_tree(source)
    worker = WorkerProcess(temporal_server.address, processes=2, log_dir=tmp_path)
    client = await StaccatoClient.connect(target_host=temporal_server.address)
    client.task_queue = worker.task_queue
    with worker:
        dataset, handle = await paced_dataset_copying(client, source, str(destination))
        await cancel_until_batches_asked(client, dataset, handle)
        worker.kill()
    with WorkerProcess(
        temporal_server.address, task_queue=worker.task_queue, processes=2, log_dir=tmp_path
    ):
        final = await wait_dataset(client, dataset, timeout_s=180)
        history = await handle.fetch_history()
    whole = _whole_copies(source, destination)
    assert final.state == DatasetState.cancelled, final
    assert 0 < whole < FILES, (whole, final)
    by_batches = await _counted_by_batches(client, history)
    if by_batches == whole:
        pytest.skip(
            f"the scene did not arise: the batches' last words count all {whole} files "
            "there (no file was published after a killed batch's last heartbeat)"
        )
    # every complete file at the destination is counted, none that is not there
    assert final.files_done == whole, (final.files_done, whole, by_batches, final)
    assert final.files_failed == 0 and final.failures == [], final
    assert _temp_files(destination) == []
    replayer = replayer_of(DatasetWorkflow)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure
    assert any(
        e.marker_recorded_event_attributes.marker_name == "core_patch"
        and DATASET_PUBLISHED_COUNT_PATCH.encode() in bytes(e.SerializeToString())
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
    )


async def _batches_wait_for_a_retry(handle) -> bool:
    """Whether a ``copy_batch`` is pending past its first attempt (the killed one timed
    out; no worker runs activities to start the next)."""
    description = await handle.describe()
    return any(
        a.activity_type.name == "copy_batch" and a.attempt >= 2
        for a in description.raw_description.pending_activities
    )


async def test_cancel_while_a_killed_batch_waits_for_its_retry_counts_what_it_published(
    temporal_server, data_dir: Path, tmp_path: Path
) -> None:
    """SIGKILL the worker mid-batch, and cancel the dataset while only a worker of
    workflows runs: the batch waits for its retry, so Temporal cancels it at once with
    no heartbeat details (``ACTIVITY_ID_NOT_STARTED``). Before, nothing its killed
    attempt published was counted, and its staged temp files stayed."""
    from temporalio.worker import Worker

    from staccato.workers.worker import TASK_QUEUE_WORKFLOWS, WORKFLOW_RUNNER

    source, destination = data_dir / "src", data_dir / "dst"
    _make_tree(source)
    worker = WorkerProcess(temporal_server.address, processes=2, log_dir=tmp_path)
    client = await StaccatoClient.connect(target_host=temporal_server.address)
    client.task_queue = worker.task_queue
    with worker:
        dataset, handle = await paced_dataset_copying(client, source, str(destination))
        worker.kill()
    async with Worker(
        client.temporal,
        task_queue=worker.task_queue,
        workflows=TASK_QUEUE_WORKFLOWS,
        workflow_runner=WORKFLOW_RUNNER,
    ):
        deadline = time.monotonic() + 60
        while not await _batches_wait_for_a_retry(handle):
            assert time.monotonic() < deadline, "no killed batch timed out"
            await asyncio.sleep(0.2)
        await client.cancel(dataset)
        deadline = time.monotonic() + 120
        while any(
            a.activity_type.name == "copy_batch"
            for a in (await handle.describe()).raw_description.pending_activities
        ):
            assert time.monotonic() < deadline, "the cancelled batches never ended"
            await asyncio.sleep(0.2)
    with WorkerProcess(
        temporal_server.address, task_queue=worker.task_queue, processes=2, log_dir=tmp_path
    ):
        final = await wait_dataset(client, dataset, timeout_s=180)
        history = await handle.fetch_history()
    whole = _whole_copies(source, destination)
    assert final.state == DatasetState.cancelled, final
    assert 0 < whole < FILES, (whole, final)
    by_batches = await _counted_by_batches(client, history)
    if by_batches == whole:
        pytest.skip(f"the scene did not arise: the batches' last words count all {whole} files")
    assert final.files_done == whole, (final.files_done, whole, by_batches, final)
    assert final.files_failed == 0 and final.failures == [], final
    assert _temp_files(destination) == []
