"""``status`` across a GRACEFUL worker stop (SIGTERM, ``staccato down``): the bytes the
streams moved stay in the status while no worker runs (a tester saw ``0 B`` right
after 38 %, while a SIGKILL kept them), and a new worker resumes from them.

The stop cancels the running streams; a stream that returned where it stopped (as for
a pause) completed its activity, which then left the pending activities with its
heartbeat details, and with no worker the workflow never took in its result: status
found no stream and no committed segment. A stream stopped by its worker's shutdown
now fails its attempt with a retryable ``WorkerStopping`` error, so the attempt stays
pending with its checkpoint."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from temporalio.api.enums.v1 import PendingActivityState

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
from tests.servers.temporal_server import TemporalDevServer
from tests.test_crash import _heartbeated_bytes

SIZE = 96 * MiB
CHUNK = 4 * MiB
# a short heartbeat timeout: the SDK sends details every 2.4 s, so the checkpoints at
# the server follow the copy closely
OPTIONS = TransferOptions(chunk_size=CHUNK, streams=2, heartbeat_timeout_s=3)
# the running activities' grace on SIGTERM before the worker cancels them
SHUTDOWN_ENV = {"STACCATO_WORKER_SHUTDOWN_TIMEOUT_S": "1"}

# 4 MiB/s per connection: two streams need 12 s for the whole object, and keep
# heartbeating while they copy (a stream blocked in a read would not see the cancel)
paced_nginx = nginx_fixture("http_root", scope="function", extra_server_config="limit_rate 4m;")


async def test_status_keeps_bytes_across_graceful_worker_stop(
    temporal_server: TemporalDevServer,
    paced_nginx: NginxServer,
    http_root: Path,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    """SIGTERM the worker mid-copy: while no worker runs, ``status`` (client and
    command) reports at least the bytes it reported just before the stop, the streams
    stay pending at the server with their checkpoints, and a new worker completes the
    transfer."""
    source = http_root / "graceful-stop.bin"
    digest = write_random(source, SIZE, seed=47)
    at_rest(source)
    destination = data_dir / "graceful-stop.bin"
    # one activity process per worker: its threads run the 2 streams (the stop acts on
    # the whole worker; a second process is ~0.65 CPU-s per start)
    first = WorkerProcess(temporal_server.address, processes=1, env=SHUTDOWN_ENV, log_dir=tmp_path)
    try:
        first.start()
        client = await StaccatoClient.connect(target_host=temporal_server.address)
        client.task_queue = first.task_queue
        transfer = await client.submit(
            paced_nginx.url("graceful-stop.bin"), str(destination), OPTIONS
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if await _heartbeated_bytes(client, transfer) >= SIZE * 0.15:
                break
            await asyncio.sleep(0.1)
        before = await client.status(transfer)
        assert before.state == TransferState.running, before
        known = before.bytes_done
        assert 0 < known < SIZE, before
        await asyncio.to_thread(first.stop)  # SIGTERM: the worker's graceful shutdown
        assert first.process is not None and first.process.returncode is not None
        with no_worker_waits():
            stopped = await client.status(transfer)
        assert stopped.bytes_total == SIZE, stopped
        assert stopped.bytes_done >= known, (known, stopped)
        assert stopped.rate_bytes_per_s is None, stopped  # nothing moves without a worker
        # the streams are still pending at the server, with their checkpoints
        description = await client.temporal.get_workflow_handle(transfer).describe()
        streams = [
            p
            for p in description.raw_description.pending_activities
            if p.activity_type.name == "copy_stream"
        ]
        assert len(streams) == 2, (description.raw_description.pending_activities, first.log_tail())
        assert all(
            p.state != PendingActivityState.PENDING_ACTIVITY_STATE_STARTED for p in streams
        ), streams
        assert await _heartbeated_bytes(client, transfer) >= known
        with no_worker_waits():
            orphaned = await status_json(
                transfer, address=temporal_server.address, task_queue=first.task_queue
            )
        assert orphaned["bytes_done"] >= known, (known, orphaned)
        with WorkerProcess(
            temporal_server.address, task_queue=first.task_queue, processes=1, log_dir=tmp_path
        ):
            result = await asyncio.wait_for(client.wait(transfer), 180)
    finally:
        first.kill()
    assert result.bytes == SIZE
    assert sha256_file(destination) == digest
