"""A pause whose streams cannot answer it (their activity process frozen, as when a
machine is starved) still pauses the transfer, and resume completes it.

Temporal never retries an activity attempt whose cancel was requested: a stream that
ends with a failure or a heartbeat timeout instead of as cancelled reaches the
workflow with retry state ``CANCEL_REQUESTED``. Before the ``paused-stream-ended``
patch the workflow took that for the stream's failure and failed the whole transfer
("stream attempt stopped before writing", seen on a loaded CI machine).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from staccato.client import StaccatoClient
from staccato.models import TransferOptions, TransferState
from tests.helpers import (
    MiB,
    WorkerProcess,
    leftovers,
    sha256_file,
    spawned_children,
    wait_for_status,
    write_random,
)
from tests.servers.holding_proxy import HoldingProxy
from tests.servers.nginx import NginxServer, nginx_fixture

SIZE = 24 * MiB
OPTIONS = TransferOptions(chunk_size=2 * MiB, streams=2, heartbeat_timeout_s=4)

held_nginx = nginx_fixture("http_root", scope="function")


def _activity_processes(worker_pid: int) -> list[int]:
    """The worker's activity processes: its spawned children but the heartbeat manager
    (started, and ready, before the pool)."""
    return spawned_children(worker_pid)[1:]


async def test_pause_of_frozen_streams_pauses_and_resume_completes(
    temporal_server, held_nginx: NginxServer, http_root: Path, data_dir: Path, tmp_path: Path
) -> None:
    digest = write_random(http_root / "frozen.bin", SIZE, seed=77)
    destination = data_dir / "frozen.bin"
    proxy = HoldingProxy(held_nginx.port, hold_after=int(SIZE * 0.3)).start()
    frozen: list[int] = []
    try:
        with WorkerProcess(temporal_server.address, processes=2, log_dir=tmp_path) as worker:
            assert worker.process is not None
            client = await StaccatoClient.connect(target_host=temporal_server.address)
            client.task_queue = worker.task_queue
            transfer = await client.submit(proxy.url("frozen.bin"), str(destination), OPTIONS)
            await asyncio.to_thread(proxy.wait_held, 60)  # streams mid-body, held
            frozen = _activity_processes(worker.process.pid)
            assert len(frozen) == worker.processes, frozen
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)
            await client.pause(transfer)  # the worker's main process takes the update
            # the frozen streams cannot answer the cancel: each ends by its heartbeat
            # timeout, which Temporal does not retry (cancel requested)
            handle = client.temporal.get_workflow_handle(transfer)
            deadline = time.monotonic() + 120
            while (await handle.describe()).raw_description.pending_activities:
                assert time.monotonic() < deadline, "the frozen streams never ended"
                await asyncio.sleep(0.5)
            status = await client.status(transfer)
            assert status.state == TransferState.paused, status
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)
            frozen = []
            proxy.release()
            await client.resume(transfer)
            status = await wait_for_status(
                client,
                transfer,
                lambda s: s.state in (TransferState.completed, TransferState.failed),
                timeout_s=180,
            )
            assert status.state == TransferState.completed, status
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        proxy.stop()
    assert sha256_file(destination) == digest
    assert leftovers(data_dir) == []
