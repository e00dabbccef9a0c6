"""A dataset cancelled while its batches cannot answer (their activity processes
frozen, as on a starved machine) ends ``cancelled`` with no file reported failed and
no temp file left.

Temporal never retries an activity attempt whose cancel was requested: a batch that
ends by its heartbeat timeout after the cancel reaches the workflow with retry state
``CANCEL_REQUESTED``, not as cancelled.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any, NamedTuple

from temporalio.api.enums.v1 import EventType

from staccato.client import StaccatoClient
from staccato.dataset_client import dataset_status, submit_dataset
from staccato.datasets.models import (
    BatchCheckpoint,
    DatasetState,
    DatasetStatus,
    FanOutBatchCheckpoint,
)
from staccato.datasets.workflow import FAN_OUT_CANCEL_ENDED_PATCH, DatasetWorkflow
from staccato.models import TransferOptions
from staccato.workflows.calls import CANCEL_ENDED_PATCH
from tests.dataset_checks import MiB, tree, wait_dataset
from tests.helpers import WorkerProcess, replayer_of, spawned_children

FILES = 200


def _published(root: Path) -> list[Path]:
    return [p for p in root.rglob("f*") if ".staccato-" not in p.name]


def _temp_files(roots: list[Path]) -> list[Path]:
    return [p for r in roots for p in r.rglob("*") if ".staccato-" in p.name]


def _make_tree(source: Path) -> None:
    for i in range(FILES):
        path = source / f"d{i % 10}" / f"f{i:04d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(64 * 1024))


async def _batch_counted_some(client: StaccatoClient, handle, activity: str) -> bool:
    """Whether a running ``activity`` (``copy_batch`` or ``copy_batch_to_many``)'s last
    heartbeat counts a file done and some left to do."""
    checkpoint = BatchCheckpoint if activity == "copy_batch" else FanOutBatchCheckpoint
    description = await handle.describe()
    for pending in description.raw_description.pending_activities:
        if pending.activity_type.name != activity or not pending.heartbeat_details.payloads:
            continue
        (details,) = await client.temporal.data_converter.decode(
            pending.heartbeat_details.payloads, [checkpoint]
        )
        if details.done >= 1 and details.next_index < 16:
            return True
    return False


class _Frozen(NamedTuple):
    final: DatasetStatus  # the dataset's end
    waiting: DatasetStatus  # its status while the cancel waited
    history: Any  # its history
    seen_temp: list[Path]  # temp files at the roots while frozen


async def _freeze_and_cancel(
    temporal_server, source: Path, roots: list[Path], activity: str, tmp_path: Path
) -> _Frozen:
    """Copy ``source`` to ``roots`` (paced: a batch of 20 files lasts ~10 s, far longer
    than the server's copy of its heartbeat lags behind it, up to 0.8 x the 3 s
    heartbeat timeout, the SDK's throttle: at 1 MB/s a batch could end before the
    freeze, and then none was frozen mid-way, ci35), freeze (SIGSTOP) the worker's
    activity processes once a running batch's checkpoint at the server counts a file
    (those must be counted although the batch never returns), cancel, wait until the
    frozen batches ended by their heartbeat timeout (cancel requested: no retry), then
    wake the processes, as a starved machine's would, and wait for the end."""
    frozen: list[int] = []
    try:
        with WorkerProcess(temporal_server.address, processes=2, log_dir=tmp_path) as worker:
            assert worker.process is not None
            client = await StaccatoClient.connect(target_host=temporal_server.address)
            client.task_queue = worker.task_queue
            dataset = await submit_dataset(
                client,
                str(source),
                str(roots[0]) if len(roots) == 1 else [str(r) for r in roots],
                TransferOptions(chunk_size=1 * MiB, heartbeat_timeout_s=3, max_rate=250_000),
                batch_files=20,
                max_batches=2,
            )
            handle = client.temporal.get_workflow_handle(dataset)
            deadline = time.monotonic() + 60
            while not await _batch_counted_some(client, handle, activity):
                assert time.monotonic() < deadline, "no batch checkpoint counted a file"
                await asyncio.sleep(0.05)
            frozen = spawned_children(worker.process.pid)[1:]  # not the heartbeat manager
            assert len(frozen) == worker.processes, frozen
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)
            seen_temp = _temp_files(roots)  # a freeze may catch a write under way
            await client.cancel(dataset)
            # still running, and says a cancel waits (the tester saw only "running")
            waiting = await dataset_status(client, dataset)
            assert waiting.state == DatasetState.running, waiting
            assert waiting.cancel_requested is True and waiting.eta_s is None, waiting
            # and when it was asked (tester69: the transfer's said no word of it)
            assert waiting.cancel_requested_at is not None, waiting
            deadline = time.monotonic() + 120
            while any(
                a.activity_type.name == activity
                for a in (await handle.describe()).raw_description.pending_activities
            ):
                assert time.monotonic() < deadline, "the frozen batches never ended"
                await asyncio.sleep(0.5)
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)
            frozen = []
            final = await wait_dataset(client, dataset, timeout_s=120)
            history = await handle.fetch_history()
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    return _Frozen(final, waiting, history, seen_temp)


async def _check_patched_and_replays(history: Any, patch: str) -> None:
    """The patched ending is in ``history``, which replays with this code."""
    assert any(
        e.marker_recorded_event_attributes.marker_name == "core_patch"
        and patch.encode() in bytes(e.SerializeToString())
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
    )
    replayer = replayer_of(DatasetWorkflow)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure


async def test_cancel_of_frozen_batches_ends_cancelled_with_no_failure(
    temporal_server, data_dir: Path, tmp_path: Path
) -> None:
    source, destination = data_dir / "src", data_dir / "dst"
    _make_tree(source)
    final, waiting, history, seen_temp = await _freeze_and_cancel(
        temporal_server, source, [destination], "copy_batch", tmp_path
    )
    assert final.state == DatasetState.cancelled and final.cancel_requested is None, final
    assert final.failures == [] and final.files_failed == 0, final
    # counted: what each batch's result or, for a frozen one, its last checkpoint
    # says, and the files it published after that beat, found at the destination
    # (dataset-count-published-past-checkpoint): what the destination holds
    published = _published(destination)
    assert 0 < final.files_done == len(published) < FILES, (final.files_done, len(published))
    # the frozen batches' files are counted from their last checkpoints: at least what
    # their heartbeats showed while they were frozen (they could not beat again; the
    # worker may still have sent a later beat it held)
    assert final.files_done >= waiting.files_done, (final, waiting)
    assert _temp_files([destination]) == []
    assert all(tree(destination)[k] == tree(source)[k] for k in tree(destination))
    await _check_patched_and_replays(history, CANCEL_ENDED_PATCH)


async def test_cancel_of_frozen_fan_out_batches_counts_them_and_leaves_no_temp_file(
    temporal_server, data_dir: Path, tmp_path: Path
) -> None:
    """The same with two destination roots (``copy_batch_to_many``): on 0.15.0 the
    frozen batches' files were neither counted nor their temp files removed."""
    source = data_dir / "src"
    roots = [data_dir / "dst-a", data_dir / "dst-b"]
    _make_tree(source)
    final, waiting, history, seen_temp = await _freeze_and_cancel(
        temporal_server, source, roots, "copy_batch_to_many", tmp_path
    )
    assert final.state == DatasetState.cancelled, final
    assert final.failures == [] and final.files_failed == 0, final
    assert final.destinations is not None
    for root, counts in zip(roots, final.destinations, strict=True):
        published = _published(root)
        # each root's count: its batches' results and the frozen ones' checkpoints
        assert 0 < counts.files_done <= len(published) < FILES, (root, counts, len(published))
        assert all(tree(root)[k] == tree(source)[k] for k in tree(root))
    assert _temp_files(roots) == [] and not any(p.exists() for p in seen_temp), seen_temp
    # at least what the frozen batches' heartbeats showed while they were frozen
    assert final.files_done >= waiting.files_done, (final, waiting)
    await _check_patched_and_replays(history, FAN_OUT_CANCEL_ENDED_PATCH)
