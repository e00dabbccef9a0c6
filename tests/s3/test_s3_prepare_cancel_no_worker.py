"""A cancel requested while no worker ran, of a transfer whose ``prepare`` hangs on a
frozen S3 server, takes effect soon after a worker is back, while the server is still
frozen (tester64 F6: ``kill -STOP`` moto, ``submit`` to S3, SIGKILL the worker while
prepare hangs, ``cancel``, ``up`` again: the run stayed ``scheduled / prepare /
cancel_requested yes`` for ~125 s, until the hung prepare attempt's start-to-close
timeout, 2 min).

The workflow waited for prepare to end after the cancel (so that the multipart upload
it may open is never lost); a prepare that has not answered now gets a bounded wait,
then the run ends cancelled, saying in ``left_behind`` that an upload may be opened on
the key when the server answers. Such an upload is aborted by the prepare attempt
itself (its result reaches no one) or by the next transfer to the key. Server: the
session's moto, SIGSTOPped and resumed; workers: real processes, one SIGKILLed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import PendingActivityState

from staccato.client import StaccatoClient
from staccato.errors import TransferCancelledError
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
#: the dead worker's attempt's heartbeat timeout (20 s) and the next attempt's
#: scheduling (1 s backoff), with room
_NEXT_ATTEMPT_WITHIN_S = 60.0
#: from the new worker's start to the run's end, the S3 server still frozen. A
#: correctness bound, not a speed one: the new code ends the run within the bounded
#: wait it gives an unanswered prepare after a cancel (one heartbeat timeout, 20 s)
#: plus the new worker's start (~15 s seen on a loaded 2-core machine) and a few
#: workflow tasks; the old code waited for the prepare attempt the new worker started,
#: hung on the frozen server, to end: its start-to-close timeout (``SHORT_TIMEOUT``,
#: 120 s after it started), so it cannot end within this
_CANCELLED_WITHIN_S = 90.0
#: the next transfer, the server awake (a correctness bound)
_COMPLETES_WITHIN_S = 150.0


def _open_uploads(s3: Any, bucket: str, key: str) -> list[str]:
    """The ids of the multipart uploads open on exactly ``key`` (at the server)."""
    page = s3.list_multipart_uploads(Bucket=bucket, Prefix=key)
    return [u["UploadId"] for u in page.get("Uploads", []) if u["Key"] == key]


async def _settled(s3: Any, bucket: str, key: str) -> list[str]:
    """The uploads open on ``key`` once the listing is the same for 10 polls in a row
    (moto answers the requests it read after it woke; bounded)."""
    seen: list[list[str]] = []
    for _ in range(300):
        seen.append(sorted(_open_uploads(s3, bucket, key)))
        if len(seen) >= 10 and all(s == seen[-1] for s in seen[-10:]):
            return seen[-1]
        await asyncio.sleep(0.2)
    raise AssertionError(f"the uploads on {key} never settled: {seen[-10:]}")


async def _pending(client: StaccatoClient, transfer: str, step: str) -> list[Any]:
    """The pending activities of ``step`` in the run ``transfer`` (none once it ended)."""
    description = await client.temporal.get_workflow_handle(transfer).describe()
    return [
        pending
        for pending in description.raw_description.pending_activities
        if pending.activity_type.name == step
    ]


async def _until(check: Any, within_s: float, what: str) -> None:
    """Poll the coroutine function ``check`` every 0.2 s until it returns True, within
    ``within_s`` (else fail, saying ``what`` never happened)."""
    deadline = time.monotonic() + within_s
    while not await check():
        assert time.monotonic() < deadline, f"{what} within {within_s} s"
        await asyncio.sleep(0.2)


async def test_cancel_asked_without_a_worker_ends_soon_after_one_is_back(
    temporal_server,
    profile_worker: WorkerProcess,
    moto_s3: Any,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    s3 = moto_s3.client()
    bucket = "prepare-cancel-no-worker"
    key = "c1.bin"
    with contextlib.suppress(Exception):
        s3.create_bucket(Bucket=bucket)
    source = data_dir / "prepare-cancel-no-worker.bin"
    digest = write_random(source, 6 * MiB, seed=64)
    destination = f"s3://{bucket}/{key}?profile=moto"
    first = started_s3_worker(temporal_server.address, profile_worker.env, tmp_path)
    second: WorkerProcess | None = None
    client = await queue_client(temporal_server.address, first.task_queue)
    try:
        assert moto_s3.pid is not None, "moto is not running"
        with stopped_process_tree(moto_s3.pid):
            transfer = await client.submit(
                str(source), destination, TransferOptions(retry_for_s=600)
            )
            started = PendingActivityState.PENDING_ACTIVITY_STATE_STARTED

            async def regular_attempt_runs() -> bool:
                pending = await _pending(client, transfer, "prepare")
                return any(p.state == started for p in pending)

            await _until(regular_attempt_runs, _REGULAR_ATTEMPT_WITHIN_S, "no prepare attempt ran")
            # the worker dies while its prepare waits for the frozen server
            assert first.process is not None, "the first worker is not running"
            pool = child_pids(first.process.pid)
            first.kill()
            bound = time.monotonic() + 30
            while any(pid_alive(p) for p in pool) and time.monotonic() < bound:
                await asyncio.sleep(0.05)
            assert not any(pid_alive(p) for p in pool), "the first worker's pool lives on"

            # the dead worker's attempt times out by its heartbeat (20 s) and the next
            # one waits for a worker (the tester's case: the worker was down that long)
            async def next_attempt_waits() -> bool:
                return any(p.attempt >= 2 for p in await _pending(client, transfer, "prepare"))

            await _until(next_attempt_waits, _NEXT_ATTEMPT_WITHIN_S, "no next prepare attempt")
            # cancelled while no worker runs, then a worker is back
            assert await client.cancel(transfer) is True
            back_at = time.time()
            second = started_s3_worker(
                temporal_server.address, profile_worker.env, tmp_path, first.task_queue
            )
            ended = asyncio.ensure_future(
                asyncio.wait_for(client.wait(transfer), _CANCELLED_WITHIN_S)
            )

            # premise: the new worker runs that attempt (it hangs on the frozen server)
            # before the cancel reaches it; a cancel that finds it not started yet ends
            # it at once (the old code was quick then too)
            seen: list[bool] = []

            async def new_worker_runs_it() -> bool:
                if any(
                    p.attempt >= 2 and p.last_started_time.ToNanoseconds() / 1e9 >= back_at
                    for p in await _pending(client, transfer, "prepare")
                ):
                    seen.append(True)
                return bool(seen) or ended.done()

            await _until(new_worker_runs_it, _CANCELLED_WITHIN_S, "the run went on")
            assert seen, "premise: the new worker never ran the prepare attempt"
            with pytest.raises(TransferCancelledError):
                await ended
            status = await client.status(transfer)
            assert status.state == TransferState.cancelled, status
            # it says an upload may be opened on the key, and what removes it
            assert status.left_behind and f"s3://{bucket}/{key}" in status.left_behind, status
            assert "next transfer" in status.left_behind, status.left_behind
        # the server woke: the requests it read are answered (the prepare attempts'
        # CreateMultipartUpload: the dead worker's never aborted)
        await _settled(s3, bucket, key)
        again = await client.submit(str(source), destination, TransferOptions())
        result = await asyncio.wait_for(client.wait(again), _COMPLETES_WITHIN_S)
        assert result.bytes == 6 * MiB
        assert object_digest(s3, bucket, key) == digest
        assert _open_uploads(s3, bucket, key) == []
    finally:
        first.stop()
        if second is not None:
            second.stop()
