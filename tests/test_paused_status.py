"""A paused transfer's status with no worker: the bytes its pause stopped at (its
streams' durable chunks are in the workflow's state, which only a worker reads; the
status showed the committed segments' bytes alone, 0 B for a one-segment transfer
paused half-way, patch ``paused-bytes-memo``)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from staccato.client import StaccatoClient
from staccato.models import TransferOptions, TransferState
from tests.helpers import (
    MiB,
    WorkerProcess,
    at_rest,
    no_worker_waits,
    sha256_file,
    status_json,
    write_random,
)
from tests.servers.nginx import NginxServer, nginx_fixture

SIZE = 16 * MiB
#: one stream, so one segment: nothing is committed before the end
OPTIONS = TransferOptions(chunk_size=2 * MiB, streams=1, heartbeat_timeout_s=3)

# ~16 s for the file at 1 MB/s: the pause asked for at 4 MiB (~4 s) has ~12 s before the
# end (at 2 MB/s ~6 s, which a pause's way to the stream can take at load 15)
paced_nginx = nginx_fixture("http_root", scope="function", extra_server_config="limit_rate 1m;")


async def test_a_paused_transfer_keeps_its_bytes_in_status_with_no_worker(
    temporal_server, paced_nginx: NginxServer, http_root: Path, data_dir: Path, tmp_path: Path
) -> None:
    write_random(http_root / "paused.bin", SIZE, seed=41)
    at_rest(http_root / "paused.bin")
    destination = data_dir / "paused.bin"
    first = WorkerProcess(temporal_server.address, processes=2, log_dir=tmp_path)
    try:
        first.start()
        client = await StaccatoClient.connect(target_host=temporal_server.address)
        client.task_queue = first.task_queue
        transfer = await client.submit(paced_nginx.url("paused.bin"), str(destination), OPTIONS)
        deadline = time.monotonic() + 120
        while (status := await client.status(transfer)).bytes_done < 4 * MiB:
            assert status.state in (TransferState.scheduled, TransferState.running), status
            assert time.monotonic() < deadline, status
            await asyncio.sleep(0.1)
        await client.pause(transfer)
        # the stream stopped: what the run holds (a worker answers)
        handle = client.temporal.get_workflow_handle(transfer)
        deadline = time.monotonic() + 60
        while "bytes_paused" not in (memo := await (await handle.describe()).memo()):
            assert time.monotonic() < deadline, memo
            await asyncio.sleep(0.1)
        held = await client.status(transfer)
        assert held.state == TransferState.paused, held
        assert 0 < held.bytes_done < SIZE and held.bytes_done == memo["bytes_paused"], held
        # what a paused transfer holds is durable: a resume does not send it again
        assert held.bytes_durable == held.bytes_done, held
        first.kill()
        with no_worker_waits():
            orphaned = await status_json(
                transfer, address=temporal_server.address, task_queue=first.task_queue
            )
        assert orphaned["state"] == "paused", orphaned
        assert orphaned["bytes_done"] == held.bytes_done, (held.bytes_done, orphaned)
        assert orphaned["bytes_durable"] == held.bytes_done, (held.bytes_done, orphaned)
        with WorkerProcess(
            temporal_server.address, task_queue=first.task_queue, processes=2, log_dir=tmp_path
        ):
            await client.resume(transfer)
            # resumed: the figure is gone from the memo (it holds only while paused)
            memo = await (await handle.describe()).memo()
            assert "bytes_paused" not in memo, memo
            result = await asyncio.wait_for(client.wait(transfer), 180)
    finally:
        first.kill()
    assert result.bytes == SIZE
    assert sha256_file(destination) == sha256_file(http_root / "paused.bin")
