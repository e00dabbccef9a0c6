"""A worker SIGKILLed while a short step retries as a regular activity after its
local first attempt timed out: the next worker replays the run and finishes it.

The first attempt of ``prepare`` runs as a local activity; against a hung S3 server
(moto, SIGSTOPped) it times out after ``LOCAL_ATTEMPT_TIMEOUT`` and the step goes on
as a regular activity. Replayed from the history, that timeout reached the workflow
bare (a ``TimeoutError``, not an ``ActivityError``), which the workflow did not catch:
the replay failed the workflow where the live run had scheduled the regular activity,
a nondeterminism error on every workflow task of the new worker (the transfer stuck
until its retry budget passed) and on every progress query answered by replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType, PendingActivityState

from staccato.client import StaccatoClient
from staccato.models import TransferOptions, TransferState
from tests.helpers import (
    MiB,
    WorkerProcess,
    child_pids,
    pid_alive,
    stopped_process_tree,
    write_random,
)
from tests.s3.conftest import queue_client, started_s3_worker
from tests.s3.s3util import object_digest

pytestmark = pytest.mark.slow

#: the local attempt's cut (10 s) and the regular attempt's scheduling, with room
_REGULAR_ATTEMPT_WITHIN_S = 90.0
#: the dead worker's attempt times out by its heartbeat (20 s), then the step and the
#: copy run on the new worker
_COMPLETES_WITHIN_S = 150.0


async def _history(client: StaccatoClient, transfer: str) -> list[Any]:
    handle = client.temporal.get_workflow_handle(transfer)
    return [event async for event in handle.fetch_history_events()]


async def _regular_attempt_started(client: StaccatoClient, transfer: str, step: str) -> bool:
    """Whether an attempt of ``step`` runs as a regular activity (a pending activity
    whose attempt started: its started event is written only when the attempt ends)."""
    description = await client.temporal.get_workflow_handle(transfer).describe()
    return any(
        pending.activity_type.name == step
        and pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        for pending in description.raw_description.pending_activities
    )


async def test_worker_killed_after_a_local_attempt_timed_out_the_next_worker_finishes(
    temporal_server,
    profile_worker: WorkerProcess,
    moto_s3: Any,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    s3 = moto_s3.client()
    bucket = "local-attempt-replay"
    with contextlib.suppress(Exception):
        s3.create_bucket(Bucket=bucket)
    source = data_dir / "local-attempt.bin"
    digest = write_random(source, 3 * MiB, seed=91)
    first = started_s3_worker(temporal_server.address, profile_worker.env, tmp_path)
    second: WorkerProcess | None = None
    client = await queue_client(temporal_server.address, first.task_queue)
    try:
        assert moto_s3.pid is not None, "moto is not running"
        with stopped_process_tree(moto_s3.pid):
            transfer = await client.submit(
                str(source),
                f"s3://{bucket}/local-attempt.bin?profile=moto",
                TransferOptions(retry_for_s=600),
            )
            deadline = time.monotonic() + _REGULAR_ATTEMPT_WITHIN_S
            while True:
                events = await _history(client, transfer)
                if await _regular_attempt_started(client, transfer, "prepare"):
                    break  # the regular prepare runs, after the local attempt's marker
                assert time.monotonic() < deadline, [e.event_type for e in events]
                await asyncio.sleep(0.2)
            timed_out = [
                e
                for e in events
                if e.HasField("marker_recorded_event_attributes")
                and e.marker_recorded_event_attributes.HasField("failure")
            ]
            assert timed_out, "no local attempt failed before the regular one"
            assert first.process is not None, "the first worker is not running"
            pool = child_pids(first.process.pid)
            first.kill()
            bound = time.monotonic() + 30
            while any(pid_alive(p) for p in pool) and time.monotonic() < bound:
                await asyncio.sleep(0.05)
            second = started_s3_worker(
                temporal_server.address, profile_worker.env, tmp_path, first.task_queue
            )
        result = await asyncio.wait_for(client.wait(transfer), _COMPLETES_WITHIN_S)
        assert result.bytes == 3 * MiB
        assert object_digest(s3, bucket, "local-attempt.bin") == digest
        status = await client.status(transfer)
        assert status.state == TransferState.completed
        failed_tasks = [
            e
            for e in await _history(client, transfer)
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
        ]
        assert not failed_tasks, failed_tasks[0].workflow_task_failed_event_attributes.failure
    finally:
        first.stop()
        if second is not None:
            second.stop()
