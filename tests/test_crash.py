"""Crashes: worker SIGKILL, Temporal SIGKILL, source endpoint down. The transfer
completes, byte-identical, and re-reads at most streams x chunk_size."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType, TimeoutType

from staccato.client import StaccatoClient
from staccato.models import Checkpoint, TransferOptions, TransferState
from tests.helpers import (
    MiB,
    WorkerProcess,
    at_rest,
    child_pids,
    leftovers,
    no_worker_waits,
    pid_alive,
    sha256_file,
    write_random,
)
from tests.servers.holding_proxy import HoldingProxy
from tests.servers.nginx import NginxServer, nginx_fixture
from tests.servers.temporal_server import TemporalDevServer

SIZE = 64 * MiB
CHUNK = 2 * MiB
STREAMS = 4
# the worker-kill object, held at 20 %: 25.6 MiB at 4 x 8 MB/s take ~0.8 s, so each
# stream has heartbeated progress (every 0.5 s) before it is held; the SDK sends the
# details it holds 2.4 s (0.8 x the heartbeat timeout) after a stream's first
KILL_SIZE = 128 * MiB
OPTIONS = TransferOptions(chunk_size=CHUNK, streams=STREAMS, heartbeat_timeout_s=3)


# nginx sending at most 8 MB/s per connection, so a transfer lasts a few seconds.
slow_nginx = nginx_fixture("http_root", scope="function", extra_server_config="limit_rate 8m;")


async def _client(address: str, task_queue: str) -> StaccatoClient:
    client = await StaccatoClient.connect(target_host=address, namespace="default")
    client.task_queue = task_queue
    return client


async def _heartbeated_bytes(client: StaccatoClient, transfer: str) -> int:
    """Bytes the streams' heartbeat details at the server say are durable: what a new
    worker resumes from (the SDK sends details at most every 0.8 x the heartbeat
    timeout, so a stream's live progress runs ahead of them)."""
    description = await client.temporal.get_workflow_handle(transfer).describe()
    total = 0
    for pending in description.raw_description.pending_activities:
        if not pending.heartbeat_details.payloads:
            continue
        (details,) = await client.temporal.data_converter.decode(
            pending.heartbeat_details.payloads, [Checkpoint]
        )
        total += details.bytes_done if isinstance(details, Checkpoint) else 0
    return total


async def test_resume_after_worker_kill(
    temporal_server: TemporalDevServer,
    slow_nginx: NginxServer,
    http_root: Path,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    """The worker SIGKILLed mid-copy: the transfer resumes on a new worker from its
    checkpoint. The source holds the streams at 20 % until after the kill (polling for
    20 % of a local copy could find it done); the source's bytes are counted where the
    workers receive them, at the proxy (nginx counts what it wrote into the loopback
    buffers, megabytes more while the proxy holds)."""
    digest = write_random(http_root / "kill.bin", KILL_SIZE, seed=7)
    at_rest(http_root / "kill.bin")
    destination = data_dir / "kill.bin"
    # slow_nginx (8 MB/s per stream) before the hold: the streams heartbeat some
    # progress (every 0.5 s) before they are held
    proxy = HoldingProxy(slow_nginx.port, hold_after=int(KILL_SIZE * 0.2)).start()
    first = WorkerProcess(temporal_server.address, processes=2, log_dir=tmp_path)
    try:
        first.start()
        client = await _client(temporal_server.address, first.task_queue)
        transfer = await client.submit(proxy.url("kill.bin"), str(destination), OPTIONS)
        await asyncio.to_thread(proxy.wait_held, 60)
        status = await client.status(transfer)
        assert status.state == TransferState.running, status
        # kill once a checkpoint is at the server, so there is something to resume from
        deadline = time.monotonic() + 30
        while await _heartbeated_bytes(client, transfer) == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        checkpointed = await _heartbeated_bytes(client, transfer)
        assert 0 < checkpointed < KILL_SIZE, f"{checkpointed} bytes checkpointed before the kill"
        pool = child_pids(first.process.pid)
        assert pool, "the worker should run its activities in child processes"
        first.kill()
        deadline = time.monotonic() + 10
        while any(pid_alive(p) for p in pool) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert not any(pid_alive(p) for p in pool), "activity processes outlived the killed worker"
        # no worker: status still tells the truth (running, the heartbeats' bytes, and why)
        with no_worker_waits():  # until a worker starts again
            orphaned = await client.status(transfer)
        assert orphaned.state == TransferState.running, orphaned
        assert orphaned.bytes_done > 0, orphaned
        assert "no worker answers" in (orphaned.last_retry_error or ""), orphaned
        proxy.release()

        with WorkerProcess(
            temporal_server.address, task_queue=first.task_queue, processes=2, log_dir=tmp_path
        ):
            result = await asyncio.wait_for(client.wait(transfer), 120)
        # every response byte the workers were sent (headers and stat probes included)
        sent = proxy.relayed
    finally:
        first.kill()  # (killed already, unless an assertion failed before)
        proxy.release()
        proxy.stop()
    assert result.bytes == KILL_SIZE
    assert sha256_file(destination) == digest
    assert leftovers(data_dir) == []
    print(
        f"worker kill: source sent {sent} bytes for {KILL_SIZE}: re-sent {sent - KILL_SIZE} (bound {2 * STREAMS * CHUNK})"
    )
    # the object + at most the chunk in flight per stream again, plus what the proxy
    # relayed into the killed worker's socket buffers that it never read (a reader
    # slowed by a busy machine), as the bound counted at nginx allowed for
    assert sent <= KILL_SIZE + 2 * STREAMS * CHUNK, f"re-sent {sent - KILL_SIZE} bytes"


async def test_resume_after_temporal_kill(
    nginx_ranges: NginxServer, http_root: Path, data_dir: Path, tmp_path: Path
) -> None:
    """Temporal SIGKILLed mid-copy and started again: the transfer completes. The source
    holds the streams at 20 % until Temporal is back, so the outage falls mid-copy
    however fast the copy (polling for 20 % of a local copy could see it done)."""
    server = TemporalDevServer(tmp_path / "temporal.db")
    server.start()
    proxy = HoldingProxy(nginx_ranges.port, hold_after=int(SIZE * 0.2)).start()
    try:
        digest = write_random(http_root / "tkill.bin", SIZE, seed=8)
        destination = data_dir / "tkill.bin"
        with WorkerProcess(server.address, processes=2, log_dir=tmp_path) as worker:
            client = await _client(server.address, worker.task_queue)
            transfer = await client.submit(proxy.url("tkill.bin"), str(destination), OPTIONS)
            await asyncio.to_thread(proxy.wait_held, 60)
            assert (await client.status(transfer)).state == TransferState.running
            server.kill()
            await asyncio.sleep(2)  # the outage itself, not a wait for a condition
            server.start()  # same port, same SQLite file
            proxy.release()
            result = await asyncio.wait_for(client.wait(transfer), 180)
        assert result.bytes == SIZE
        assert sha256_file(destination) == digest
        assert leftovers(data_dir) == []
    finally:
        proxy.release()
        proxy.stop()
        server.stop()


async def test_source_down_then_back(
    client: StaccatoClient,
    slow_nginx: NginxServer,
    http_root: Path,
    data_dir: Path,
) -> None:
    """The source stops mid-copy (its streams held at 20 % by a proxy, so the copy
    cannot end first), comes back after 10 s: status says why the transfer retries,
    and it completes byte-identical."""
    digest = write_random(http_root / "down.bin", SIZE, seed=9)
    destination = data_dir / "down.bin"
    proxy = HoldingProxy(slow_nginx.port, hold_after=int(SIZE * 0.2)).start()
    try:
        transfer = await client.submit(proxy.url("down.bin"), str(destination), OPTIONS)
        await asyncio.to_thread(proxy.wait_held, 60)
        slow_nginx.stop()
        proxy.release()  # what was held goes out, then the streams meet the stopped source
        retry_reasons: list[str] = []
        deadline = time.monotonic() + 10
        try:
            while time.monotonic() < deadline:
                status = await client.status(transfer)
                if status.last_retry_error:
                    retry_reasons.append(status.last_retry_error)
                await asyncio.sleep(0.5)
        finally:
            slow_nginx.start()
        result = await asyncio.wait_for(client.wait(transfer), 120)
    finally:
        proxy.release()
        proxy.stop()
    assert result.bytes == SIZE
    assert sha256_file(destination) == digest
    print(f"source down: last retry reason seen: {retry_reasons[-1] if retry_reasons else None}")
    assert retry_reasons, "status never showed why the transfer was retrying"
    assert "down.bin" in retry_reasons[-1] or "127.0.0.1" in retry_reasons[-1], retry_reasons[-1]


#: the publish test's object: small, its copy is quick; what matters is publish
PUBLISH_SIZE = 8 * MiB
#: seconds after the kill by which the publish attempt of the killed worker must have
#: been timed out: its heartbeat timeout is 20 s (SHORT_HEARTBEAT_TIMEOUT); without one
#: Temporal waits for its 2 min start-to-close timeout, and this fails first
PUBLISH_TIMED_OUT_BOUND_S = 60.0


async def _pending(client: StaccatoClient, transfer: str, activity_type: str) -> list[Any]:
    description = await client.temporal.get_workflow_handle(transfer).describe()
    return [
        p
        for p in description.raw_description.pending_activities
        if p.activity_type.name == activity_type
    ]


async def test_worker_killed_under_publish_is_noticed_by_its_heartbeat_timeout(
    temporal_server: TemporalDevServer,
    nginx_ranges: NginxServer,
    http_root: Path,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    """A worker SIGKILLed (its whole process group) while publish re-stats the source:
    the attempt is timed out by its heartbeat timeout (not its 2 min start-to-close),
    retried on a new worker, and the transfer completes byte-identical with no temp
    file left. The source is behind a proxy that holds HEAD responses once the object's
    bytes have passed: publish's re-stat, never the first stat."""
    digest = write_random(http_root / "publish-kill.bin", PUBLISH_SIZE, seed=31)
    at_rest(http_root / "publish-kill.bin")  # no second read of the source before publish
    destination = data_dir / "publish-kill.bin"
    proxy = HoldingProxy(nginx_ranges.port, hold_after=PUBLISH_SIZE, hold_method="HEAD").start()
    first = WorkerProcess(
        temporal_server.address, processes=2, log_dir=tmp_path, own_group=True
    ).start()
    second = WorkerProcess(
        temporal_server.address, task_queue=first.task_queue, processes=2, log_dir=tmp_path
    )
    try:
        client = await _client(temporal_server.address, first.task_queue)
        transfer = await client.submit(
            proxy.url("publish-kill.bin"),
            str(destination),
            TransferOptions(chunk_size=2 * MiB, streams=2),
        )
        await asyncio.to_thread(proxy.wait_held, 120)
        deadline = time.monotonic() + 30
        while not (held := await _pending(client, transfer, "publish")):
            assert time.monotonic() < deadline, "a HEAD was held, but no publish is pending"
            await asyncio.sleep(0.1)
        assert held[0].attempt == 1, held[0]
        first.kill_group()
        killed_at = time.monotonic()
        await asyncio.to_thread(second.start)
        # the hold stays on, so the retry (its re-stat held too) stays visible
        while True:
            pending = await _pending(client, transfer, "publish")
            assert len(pending) == 1, f"publish pending: {pending}"
            publish = pending[0]
            if publish.attempt >= 2:
                break
            waited = time.monotonic() - killed_at
            assert waited < PUBLISH_TIMED_OUT_BOUND_S, (
                f"the publish attempt of the killed worker was not timed out within "
                f"{PUBLISH_TIMED_OUT_BOUND_S:g} s of the kill (still attempt "
                f"{publish.attempt}): Temporal notices a worker that died under publish "
                f"only at its heartbeat timeout, or without one at its start-to-close "
                f"timeout (2 min)"
            )
            await asyncio.sleep(0.2)
        print(
            f"publish attempt timed out {time.monotonic() - killed_at:.1f} s after the "
            f"kill: {publish.last_failure.message}"
        )
        proxy.release()
        result = await asyncio.wait_for(client.wait(transfer), 120)
        history = await client.temporal.get_workflow_handle(transfer).fetch_history()
    finally:
        proxy.release()
        second.stop()
        if first.process is not None and first.process.poll() is None:
            first.kill_group()
        proxy.stop()
    assert result.bytes == PUBLISH_SIZE
    assert sha256_file(destination) == digest
    assert leftovers(data_dir) == []
    # the publish attempt that completed started after the killed one's timeout
    scheduled = [
        e.event_id
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == "publish"
    ]
    assert len(scheduled) == 1, scheduled
    (started,) = [
        e.activity_task_started_event_attributes
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        and e.activity_task_started_event_attributes.scheduled_event_id == scheduled[0]
    ]
    assert started.attempt >= 2, started
    timeout_type = started.last_failure.timeout_failure_info.timeout_type
    assert timeout_type == TimeoutType.TIMEOUT_TYPE_HEARTBEAT, (
        f"the killed worker's publish attempt ended by {TimeoutType.Name(timeout_type)}, "
        f"not by its heartbeat timeout: {started.last_failure}"
    )
