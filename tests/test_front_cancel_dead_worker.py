"""A front run (a transfer started under an id of its own: ``submit --if-busy wait``,
a Schedule's run, a plain Temporal start) cancelled while its worker is dead ends
cancelled, and so does the destination's transfer it drove (tester67, MED).

The scene: the worker is SIGKILLed, the cancel is asked while none runs, a worker
starts again. The new worker hands the cancel to the front's activity, whose attempt
died with the old worker: that attempt then times out (heartbeat), and Temporal does
not retry an activity whose cancel was asked (retry state CANCEL_REQUESTED). Before
the fix the front ended failed ("activity Heartbeat timeout") and a transfer it drove
went on and replaced the destination.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType, RetryState
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import CancelledError

from staccato.client import StaccatoClient
from staccato.models import TransferOptions, TransferState
from tests.helpers import MiB, WorkerProcess, at_rest, wait_for_status, write_random
from tests.servers.nginx import NginxServer
from tests.servers.pacing_proxy import PacingProxy
from tests.test_lock import raw_client, raw_input

#: long enough for a worker to start before the dead attempt's heartbeat times out
#: (the scene), short enough to keep the test to about a minute
HEARTBEAT_S = 20
OPTIONS = TransferOptions(chunk_size=1 * MiB, streams=1, heartbeat_timeout_s=HEARTBEAT_S)


async def _cancel_met_a_dead_attempt(client: StaccatoClient, front: str) -> bool:
    """Whether the front's activity timed out with its cancel asked (the scene): an
    ``ActivityTaskTimedOut`` with retry state CANCEL_REQUESTED in its history."""
    history = await client.temporal.get_workflow_handle(front).fetch_history()
    return any(
        e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT
        and e.activity_task_timed_out_event_attributes.retry_state
        == RetryState.RETRY_STATE_CANCEL_REQUESTED
        for e in history.events
    )


async def _cancelled_with_worker_dead(
    client: StaccatoClient, first: WorkerProcess, second: WorkerProcess, front: str
) -> Any:
    """SIGKILL ``first``, cancel ``front``, start ``second``; the front's end status."""
    first.kill()
    await client.cancel(front)
    second.start()
    handle = client.temporal.get_workflow_handle(front)
    with pytest.raises(WorkflowFailureError) as failure:
        await asyncio.wait_for(handle.result(), 4 * HEARTBEAT_S + 60)
    if not await _cancel_met_a_dead_attempt(client, front):
        pytest.skip("the dead attempt timed out before the new worker took the cancel")
    assert isinstance(failure.value.cause, CancelledError), failure.value.cause
    status = await client.status(front)
    assert status.state == TransferState.cancelled, status
    return status


@pytest.mark.parametrize("scene", ["queued", "driving"])
async def test_front_cancelled_while_its_worker_is_dead_ends_cancelled(
    scene: str,
    temporal_server,
    nginx_ranges: NginxServer,
    http_root: Path,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    """queued: a front waiting (``--if-busy wait``) behind a paused transfer ends
    cancelled; the holder stays paused and the destination is untouched. driving: a
    front whose transfer copies ends cancelled, its transfer too, and the destination
    keeps what it held."""
    paced = PacingProxy(nginx_ranges.port, rate_bytes_per_s=2_000_000).start()
    # 30 s each at the pace; the holder's differs (an identical request attaches)
    write_random(http_root / f"fc-{scene}.bin", 64 * MiB, seed=71)
    write_random(http_root / f"fc-{scene}-held.bin", 64 * MiB, seed=72)
    at_rest(http_root / f"fc-{scene}.bin")
    at_rest(http_root / f"fc-{scene}-held.bin")
    destination = data_dir / "front-cancel.out"
    destination.write_bytes(b"previous")
    first = WorkerProcess(temporal_server.address, processes=1, log_dir=tmp_path).start()
    second = WorkerProcess(
        temporal_server.address, task_queue=first.task_queue, processes=1, log_dir=tmp_path
    )
    try:
        client = await StaccatoClient.connect(
            target_host=temporal_server.address, namespace="default"
        )
        client.task_queue = first.task_queue
        holder = None
        if scene == "queued":
            holder = await client.submit(
                paced.url(f"fc-{scene}-held.bin"), str(destination), OPTIONS
            )
            await client.pause(holder)
            await wait_for_status(
                client, holder, lambda s: s.state == TransferState.paused, interval_s=0.5
            )
        plain = await raw_client(temporal_server.address)
        front = f"fc-{scene}-{uuid.uuid4().hex[:6]}"
        await plain.start_workflow(
            "TransferWorkflow",
            raw_input(
                paced.url(f"fc-{scene}.bin"),
                str(destination),
                if_busy="wait",
                heartbeat_timeout_s=HEARTBEAT_S,
            ),
            id=front,
            task_queue=first.task_queue,
        )
        if scene == "queued":
            await wait_for_status(
                client, front, lambda s: s.state == TransferState.queued, interval_s=0.5
            )
        else:
            await wait_for_status(
                client,
                front,
                lambda s: s.state == TransferState.running and s.bytes_done > 0 and s.runs_as,
                interval_s=0.5,
            )
        status = await _cancelled_with_worker_dead(client, first, second, front)
        if holder is not None:
            held = await client.status(holder)
            assert held.state == TransferState.paused, held
            await client.cancel(holder)
            await wait_for_status(
                client, holder, lambda s: s.state == TransferState.cancelled, interval_s=0.5
            )
        else:
            assert status.runs_as, status
            drove = await wait_for_status(
                client,
                status.runs_as,
                lambda s: s.state in (TransferState.cancelled, TransferState.completed),
                interval_s=0.5,
            )
            assert drove.state == TransferState.cancelled, drove
        assert destination.read_bytes() == b"previous"
    finally:
        first.kill()
        second.kill()
        paced.stop()
