"""A dataset batch retried on a new worker while its S3 destination hangs (tester64):
the retried attempt's resume compares (HeadObject, one file after another, in the
batch's own thread) wait on the stopped server. They sent no heartbeat meanwhile, so
each attempt timed out on its heartbeat, the next one hung the same way, and
``status`` blamed a dead worker process though one ran. The attempt is now kept alive
while it waits (its last checkpoint re-sent): one attempt rides out the hang and the
dataset completes once the server answers. Server: the session's SeaweedFS, stopped
and resumed (in a ``finally``); real workers, the first SIGKILLed.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import PendingActivityState

from staccato.client import StaccatoClient
from staccato.dataset_client import submit_dataset
from staccato.datasets.models import DatasetState
from staccato.models import TransferOptions
from tests.dataset_checks import MiB, wait_dataset
from tests.helpers import (
    WorkerProcess,
    child_pids,
    pid_alive,
    stopped_process_tree,
    write_random,
)
from tests.s3.conftest import MeteredSeaweedS3, queue_client, started_s3_worker

BATCH = 600
BATCH_RATE = 32 * 1024
HEARTBEAT_TIMEOUT_S = 8
#: how long the retried attempt is watched while the server is stopped: two of its
#: heartbeat timeouts (the old attempts each timed out after one, so the old code shows
#: a third attempt within the first; it was three, 8 s more of a fixed window)
WATCHED_S = 2 * HEARTBEAT_TIMEOUT_S


async def _batch_attempt(client: StaccatoClient, dataset: str) -> tuple[int, bool] | None:
    """The pending ``copy_batch``'s attempt number and whether it is started."""
    description = await client.temporal.get_workflow_handle(dataset).describe()
    for pending in description.raw_description.pending_activities:
        if pending.activity_type.name == "copy_batch":
            return (
                pending.attempt,
                pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED,
            )
    return None


async def test_a_retried_batch_waiting_on_a_hung_s3_stays_one_attempt(
    temporal_server,
    s3_server: MeteredSeaweedS3,
    s3_worker_env: dict[str, str],
    s3: Any,
    bucket: str,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    source = data_dir / "src"
    source.mkdir()
    for i in range(BATCH):
        write_random(source / f"f{i:04d}", 100 + i, seed=i)
    prefix = f"resume-hung-{time.time_ns()}/"
    first = started_s3_worker(temporal_server.address, s3_worker_env, tmp_path)
    second: WorkerProcess | None = None
    try:
        client = await queue_client(temporal_server.address, first.task_queue)
        dataset = await submit_dataset(
            client,
            str(source),
            f"s3://{bucket}/{prefix}",
            TransferOptions(
                chunk_size=1 * MiB, heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S, max_rate=BATCH_RATE
            ),
            batch_files=BATCH,
            max_batches=1,
        )

        def published() -> int:
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            return sum(page.get("KeyCount", 0) for page in pages)

        deadline = time.monotonic() + 90
        while await asyncio.to_thread(published) < 20:
            assert time.monotonic() < deadline, "the batch published nothing"
            await asyncio.sleep(0.1)
        assert first.process is not None
        assert s3_server.pid is not None
        with stopped_process_tree(s3_server.pid):
            pool = child_pids(first.process.pid)
            first.kill()
            while any(pid_alive(p) for p in pool) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            second = started_s3_worker(
                temporal_server.address, s3_worker_env, tmp_path, first.task_queue
            )
            # the first attempt times out on its heartbeat; a retried one starts on the
            # new worker and waits on the stopped server in its resume
            retried: int | None = None
            while retried is None:
                seen = await _batch_attempt(client, dataset)
                if seen is not None and seen[0] >= 2 and seen[1]:
                    retried = seen[0]
                assert time.monotonic() < deadline + 60, f"no retried attempt started: {seen}"
                await asyncio.sleep(0.2)
            watched_until = time.monotonic() + WATCHED_S
            attempts = {retried}
            while time.monotonic() < watched_until:
                seen = await _batch_attempt(client, dataset)
                if seen is not None:
                    attempts.add(seen[0])
                await asyncio.sleep(0.5)
            assert attempts == {retried}, (
                f"the retried attempt did not ride out the hang: attempts {sorted(attempts)} "
                f"in {WATCHED_S} s with the server stopped"
            )
        final = await wait_dataset(client, dataset, timeout_s=180)
        assert final.state == DatasetState.completed, final
        assert final.files_done == BATCH and final.files_failed == 0, final
        assert await asyncio.to_thread(published) == BATCH
    finally:
        first.kill()
        if second is not None:
            second.stop()
