"""A ``resume`` sent while no worker runs the paused transfer: no worker takes the
update within STACCATO_CLIENT_WAIT_S, and Temporal drops an update no worker
accepted. The client then sends it as the ``control`` signal, kept in the history:
the worker that comes back resumes the transfer (tester57 F1: the message promised
"Temporal may still deliver it", and the transfer stayed paused)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from staccato.client import StaccatoClient
from staccato.models import TransferOptions, TransferState
from tests.helpers import (
    MiB,
    WorkerProcess,
    at_rest,
    run_cli,
    sha256_file,
    wait_for_status,
    write_random,
)
from tests.servers.nginx import NginxServer, nginx_fixture

SIZE = 12 * MiB
OPTIONS = TransferOptions(chunk_size=2 * MiB, streams=1, heartbeat_timeout_s=3)
# one stream: the workers run one activity process each (a second one is ~0.65 CPU-s
# to start, and ran nothing)

# ~6 s for the file at 2 MB/s: the pause comes before the end
paced_nginx = nginx_fixture("http_root", scope="function", extra_server_config="limit_rate 2m;")


async def test_a_resume_sent_with_no_worker_applies_when_one_comes(
    temporal_server, paced_nginx: NginxServer, http_root: Path, data_dir: Path, tmp_path: Path
) -> None:
    write_random(http_root / "held.bin", SIZE, seed=57)
    at_rest(http_root / "held.bin")
    destination = data_dir / "held.bin"
    first = WorkerProcess(temporal_server.address, processes=1, log_dir=tmp_path)
    second = WorkerProcess(
        temporal_server.address, task_queue=first.task_queue, processes=1, log_dir=tmp_path
    )
    try:
        first.start()
        client = await StaccatoClient.connect(target_host=temporal_server.address)
        client.task_queue = first.task_queue
        transfer = await client.submit(paced_nginx.url("held.bin"), str(destination), OPTIONS)
        await wait_for_status(client, transfer, lambda s: s.bytes_done >= 2 * MiB, timeout_s=120)
        await client.pause(transfer)
        first.kill()
        result = await asyncio.to_thread(
            run_cli,
            "resume",
            transfer,
            address=temporal_server.address,
            task_queue=first.task_queue,
            env={"STACCATO_CLIENT_WAIT_S": "2"},
            timeout_s=60,
        )
        assert result.returncode == 1, result
        assert "no worker took the resume" in result.stderr, result.stderr
        second.start()
        # no second resume: the one sent while no worker ran is delivered
        resumed = await wait_for_status(
            client, transfer, lambda s: s.state != TransferState.paused, timeout_s=90
        )
        # the message said what happens (not "Temporal may still deliver it")
        assert "applies when a worker picks the transfer up" in result.stderr, result.stderr
        assert resumed.state in (TransferState.running, TransferState.completed), resumed
        done = await asyncio.wait_for(client.wait(transfer), 180)
    finally:
        first.kill()
        second.stop()
    assert done.bytes == SIZE
    assert sha256_file(destination) == sha256_file(http_root / "held.bin")


async def test_a_resume_sent_with_no_worker_survives_a_temporal_restart(
    data_dir: Path, tmp_path: Path
) -> None:
    """As above, with Temporal restarted before a worker comes back (as ``staccato up``
    after a SIGKILL restarts its dev server): an update no worker accepted lives in the
    server's memory only and was lost (the tester's transfer stayed paused), a signal
    is in the history."""
    from tests.servers.temporal_server import TemporalDevServer

    server = TemporalDevServer(tmp_path / "temporal.db", headless=True)
    server.start()
    source = data_dir / "held.bin"
    digest = write_random(source, SIZE, seed=58)
    destination = data_dir / "held-out.bin"
    paced = OPTIONS.model_copy(update={"max_rate": 2 * MiB})
    first = WorkerProcess(server.address, processes=1, log_dir=tmp_path)
    second = WorkerProcess(
        server.address, task_queue=first.task_queue, processes=1, log_dir=tmp_path
    )
    try:
        first.start()
        client = await StaccatoClient.connect(target_host=server.address)
        client.task_queue = first.task_queue
        transfer = await client.submit(str(source), str(destination), paced)
        await wait_for_status(client, transfer, lambda s: s.bytes_done >= 2 * MiB, timeout_s=120)
        await client.pause(transfer)
        first.kill()
        result = await asyncio.to_thread(
            run_cli,
            "resume",
            transfer,
            address=server.address,
            task_queue=first.task_queue,
            env={"STACCATO_CLIENT_WAIT_S": "2"},
            timeout_s=60,
        )
        assert result.returncode == 1, result
        server.kill()
        server.start()  # same port, same database file
        client = await StaccatoClient.connect(target_host=server.address)
        client.task_queue = first.task_queue
        second.start()
        resumed = await wait_for_status(
            client, transfer, lambda s: s.state != TransferState.paused, timeout_s=90
        )
        assert resumed.state in (TransferState.running, TransferState.completed), resumed
        done = await asyncio.wait_for(client.wait(transfer), 180)
    finally:
        first.kill()
        second.stop()
        server.stop()
    assert done.bytes == SIZE
    assert sha256_file(destination) == digest
