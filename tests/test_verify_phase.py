"""The read-back before publish (verify): it heartbeats, so a SIGKILLed worker's verify
is retried after the heartbeat timeout rather than its start-to-close bound (hours for
a big object), and it cannot be paused (the copy is over)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from staccato.client import StaccatoClient
from staccato.errors import StaccatoError
from staccato.models import TransferOptions, TransferState
from tests.helpers import MiB, WorkerProcess, leftovers, wait_for_phase, wait_for_status

SIZE = 1024 * MiB  # its sha256 read-back lasts seconds: caught by a phase poll
OPTIONS = TransferOptions(
    chunk_size=64 * MiB, streams=2, checksum="sha256", heartbeat_timeout_s=3, retry_for_s=600
)


@pytest.fixture
def own_worker(temporal_server, tmp_path: Path) -> Iterator[WorkerProcess]:
    process = WorkerProcess(temporal_server.address, processes=2, log_dir=tmp_path)
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
async def own_client(temporal_server, own_worker: WorkerProcess) -> StaccatoClient:
    connected = await StaccatoClient.connect(target_host=temporal_server.address)
    connected.task_queue = own_worker.task_queue
    return connected


async def _in_verify(client: StaccatoClient, data_dir: Path) -> tuple[str, Path]:
    """Start a 1 GiB copy that reads its temp data back before publish (it was paused
    once) and return when that read-back runs."""
    source = data_dir / "big.bin"
    with open(source, "wb") as f:
        f.truncate(SIZE)  # sparse: copies fast; the read-back still checksums 1 GiB
    destination = data_dir / "big.out"
    transfer = await client.submit(str(source), str(destination), OPTIONS)
    await client.pause(transfer)
    await client.resume(transfer)
    phase = await wait_for_phase(client, transfer, ("verify", "publish", "done"))
    handle = client.temporal.get_workflow_handle(transfer)
    if phase != "verify":
        print(await client.status(transfer))
        print((await handle.describe()).raw_description.pending_activities)
        history = await handle.fetch_history()
        for event in history.events:
            print(event.event_id, event.event_type, event.event_time.ToJsonString())
    assert phase == "verify", f"did not catch the read-back (phase {phase})"
    return transfer, destination


async def test_verify_retried_soon_after_worker_sigkill(
    own_client: StaccatoClient, own_worker: WorkerProcess, data_dir: Path
) -> None:
    transfer, destination = await _in_verify(own_client, data_dir)
    own_worker.kill()
    killed = time.monotonic()
    own_worker.start()
    # heartbeat timeout 3 s, a new attempt re-reads 1 GiB: seconds quiet, several times
    # that at load 15, and far below the start-to-close bound (600 s + 1 s per MB) that
    # a verify not retried on its heartbeat would wait for
    result = await asyncio.wait_for(own_client.wait(transfer), 200)
    elapsed = time.monotonic() - killed
    print(f"verify killed; transfer completed {elapsed:.1f} s later")
    assert result.bytes == SIZE
    assert destination.stat().st_size == SIZE
    assert leftovers(data_dir) == []


async def test_pause_refused_once_the_copy_is_over(client: StaccatoClient, data_dir: Path) -> None:
    """On the session worker: nothing here kills or configures a worker."""
    transfer, destination = await _in_verify(client, data_dir)
    with pytest.raises(StaccatoError) as refused:
        await client.pause(transfer)
    assert "cannot pause" in str(refused.value) and "verify" in str(refused.value)
    status = await wait_for_status(
        client, transfer, lambda s: s.state == TransferState.completed, timeout_s=120
    )
    assert status.state == TransferState.completed
    assert destination.stat().st_size == SIZE
