"""The figures ``staccato status`` gives of one transfer are the streams' own: no rate
and no ETA while no worker answers (its heartbeats are history)."""

from __future__ import annotations

from pathlib import Path

from staccato.client import StaccatoClient
from staccato.models import TransferOptions, TransferState
from tests.helpers import (
    MiB,
    WorkerProcess,
    at_rest,
    no_worker_waits,
    wait_for_status,
    write_random,
)
from tests.servers.nginx import NginxServer, nginx_fixture
from tests.servers.temporal_server import TemporalDevServer

# 2 streams at 2 MiB/s each: 64 MiB last ~16 s, long enough to kill the worker mid-copy
paced_nginx = nginx_fixture("http_root", scope="function", extra_server_config="limit_rate 2m;")


async def test_no_rate_nor_eta_while_no_worker_answers(
    temporal_server: TemporalDevServer,
    paced_nginx: NginxServer,
    http_root: Path,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    """The worker killed mid-copy: ``status`` says no worker answers, keeps the bytes
    of the streams' last heartbeats, and shows no rate and no ETA (it showed the dead
    streams' last rate and an ETA made from it)."""
    write_random(http_root / "paced.bin", 64 * MiB, seed=3)
    at_rest(http_root / "paced.bin")
    worker = WorkerProcess(temporal_server.address, processes=1, log_dir=tmp_path).start()
    try:
        client = await StaccatoClient.connect(target_host=temporal_server.address)
        client.task_queue = worker.task_queue
        options = TransferOptions(chunk_size=4 * MiB, streams=2)
        transfer = await client.submit(
            paced_nginx.url("paced.bin"), str(data_dir / "paced.bin"), options
        )
        moving = await wait_for_status(
            client, transfer, lambda s: bool(s.rate_bytes_per_s) and s.bytes_done > 0
        )
        assert moving.eta_s is not None, moving
    finally:
        worker.kill()
    with no_worker_waits():  # no worker starts again
        orphaned = await client.status(transfer)
    assert orphaned.state == TransferState.running, orphaned
    assert "no worker answers" in (orphaned.last_retry_error or ""), orphaned
    assert orphaned.bytes_done > 0, orphaned
    assert orphaned.rate_bytes_per_s is None and orphaned.eta_s is None, orphaned
    await client.temporal.get_workflow_handle(transfer).terminate("test over")
