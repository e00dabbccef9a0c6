"""Transfers queued for one destination (``--if-busy wait``) run in the order they were
submitted, also after the worker was SIGKILLed while they waited: the last submitted
source's bytes end up at the destination."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowExecutionStatus

from staccato.client import StaccatoClient, transfer_id
from staccato.models import IfBusy, TransferOptions, TransferState
from staccato.starts import STARTED_BY, front_id, start_front
from tests.helpers import (
    MiB,
    WorkerProcess,
    at_rest,
    run_cli,
    sha256_file,
    wait_for_status,
    write_random,
)
from tests.servers.nginx import NginxServer
from tests.servers.pacing_proxy import PacingProxy

OPTIONS = TransferOptions(chunk_size=1 * MiB, streams=1, heartbeat_timeout_s=3)
WAIT = OPTIONS.model_copy(update={"if_busy": IfBusy.wait})
#: a :class:`PacingProxy` rate (bytes/s) that paces nothing
FULL_SPEED = 1e12


async def _until(probe: Any, what: str, *, timeout_s: float = 60.0) -> Any:
    """Await ``probe()`` until it returns something truthy; return it.

    Raises:
        AssertionError: not so within ``timeout_s`` seconds (names ``what``).
    """
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value = await probe()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: not so within {timeout_s} s (last: {value!r})")
        await asyncio.sleep(0.2)


async def _retried(client: StaccatoClient, front: str) -> bool:
    """Whether the front's activity runs again in an attempt after the first (the
    worker that ran it was killed) or the front has ended."""
    description = await client.temporal.get_workflow_handle(front).describe()
    if description.status != WorkflowExecutionStatus.RUNNING:
        return True
    pending = description.raw_description.pending_activities
    return any(p.attempt > 1 for p in pending)


async def test_queued_transfers_keep_submission_order_across_a_worker_kill(
    temporal_server,
    nginx_ranges: NginxServer,
    http_root: Path,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    """A paced transfer holds the destination (paused: it holds it however slow the
    starts below are); three different transfers are queued behind it, one after the
    other; the worker is SIGKILLed while they wait and a new one takes over (every
    front's activity retries at once). Then: the destination holds the last submitted
    source's bytes, and the fronts started the destination's transfer in submission
    order (the canonical runs' start times and ``started_by`` memo)."""
    write_random(http_root / "ohold.bin", 8 * MiB, seed=701)
    at_rest(http_root / "ohold.bin")
    digests = []
    for n in range(3):
        digests.append(write_random(http_root / f"oq{n}.bin", 2 * MiB, seed=710 + n))
        at_rest(http_root / f"oq{n}.bin")
    destination = data_dir / "order.out"
    paced = PacingProxy(nginx_ranges.port, rate_bytes_per_s=2_000_000).start()
    first = WorkerProcess(temporal_server.address, processes=2, log_dir=tmp_path).start()
    second = WorkerProcess(
        temporal_server.address, task_queue=first.task_queue, processes=2, log_dir=tmp_path
    )
    try:
        client = await StaccatoClient.connect(
            target_host=temporal_server.address, namespace="default"
        )
        client.task_queue = first.task_queue
        holder = await client.submit(paced.url("ohold.bin"), str(destination), OPTIONS)
        await client.pause(holder)
        fronts = []
        for n in range(3):
            queued = await client.start(paced.url(f"oq{n}.bin"), str(destination), WAIT)
            assert queued.queued, queued
            fronts.append(queued.id)
        for front in fronts:
            await wait_for_status(
                client, front, lambda s: s.state == TransferState.queued, timeout_s=60
            )
        first.kill()  # while all three wait
        second.start()
        for front in fronts:
            await _until(lambda f=front: _retried(client, f), f"{front} retried", timeout_s=90)
        paced.rate = FULL_SPEED
        await client.resume(holder)
        results = [await asyncio.wait_for(client.wait(f), 180) for f in fronts]
    finally:
        first.kill()
        second.kill()
        paced.stop()
    assert [r.source for r in results] == [paced.url(f"oq{n}.bin") for n in range(3)]
    canonical = transfer_id(str(destination))

    async def closed_runs() -> list[Any]:
        runs = [e async for e in client.temporal.list_workflows(f"WorkflowId = '{canonical}'")]
        done = [r for r in runs if r.close_time is not None]
        return done if len(done) == len(runs) == 4 else []

    runs = await _until(closed_runs, "4 closed canonical runs")
    by_start = sorted(runs, key=lambda r: r.start_time)
    starters = [str((await r.memo()).get(STARTED_BY, "")).split("/")[0] for r in by_start]
    assert starters == ["", *fronts], (
        f"canonical runs in start order were started by {starters}; submitted: {fronts}"
    )
    assert sha256_file(destination) == digests[-1], "the destination holds not the last submitted"


async def test_a_start_never_jumps_a_transfer_queued_earlier(
    client: StaccatoClient, worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """While a transfer queued for a destination waits (here one no worker serves: it
    waits until it is terminated), the destination is not free for a later start,
    even with no transfer writing it: `submit` (the light client, and the SDK's client
    it hands over to) fails as busy naming the queued one; `--if-busy wait` queues
    behind it and runs once it has left the queue."""
    first = data_dir / "early.bin"
    write_random(first, 64 * 1024, seed=721)
    later = data_dir / "later.bin"
    later_digest = write_random(later, 96 * 1024, seed=722)
    destination = data_dir / "jump.out"
    request = client.make_request(str(first), str(destination), WAIT)
    early = front_id(request)
    await start_front(
        client.temporal, request, task_queue=f"noworker-{uuid.uuid4().hex[:8]}", workflow_id=early
    )
    query = f"WorkflowId = '{early}' AND ExecutionStatus = 'Running'"
    await _until(
        lambda: _ids(client.temporal.list_workflows(query)), f"{early} listed", timeout_s=30
    )
    env = {"STACCATO_TEMPORAL_HTTP": temporal_server.http_address}
    for light in ("1", "0"):
        out = run_cli(
            "submit",
            str(later),
            str(destination),
            address=temporal_server.address,
            task_queue=worker.task_queue,
            env={**env, "STACCATO_LIGHT_CLIENT": light},
        )
        assert out.returncode == 1, (light, out)
        assert "queued for it earlier" in out.stderr and early in out.stderr, out.stderr
    assert not destination.exists()
    queued = await client.start(str(later), str(destination), WAIT)
    assert queued.queued, queued
    waiting = await wait_for_status(
        client, queued.id, lambda s: s.state == TransferState.queued, timeout_s=60
    )
    assert early in (waiting.reason or ""), waiting
    await client.temporal.get_workflow_handle(early).terminate("left the queue (test)")
    result = await asyncio.wait_for(client.wait(queued.id), 60)
    assert result.bytes == 96 * 1024
    assert sha256_file(destination) == later_digest


async def _ids(executions: Any) -> list[str]:
    return [e.id async for e in executions]
