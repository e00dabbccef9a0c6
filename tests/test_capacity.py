"""A worker's memory cap (STACCATO_WORKER_MEMORY_BYTES) holds: a stream that has no
memory for its chunk buffer waits, and its transfer's status says so, naming the
setting. Many concurrent transfers on one worker (50 x 64 MiB: when each starts
writing, the worker's peak memory) are measured by bench/bench_capacity.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

from staccato.client import StaccatoClient
from staccato.models import TransferOptions, TransferState
from tests.helpers import (
    MiB,
    WorkerProcess,
    at_rest,
    sha256_file,
    wait_for_status,
    write_random,
)
from tests.servers.nginx import NginxServer, nginx_fixture
from tests.servers.temporal_server import TemporalDevServer

slow_nginx = nginx_fixture("http_root", scope="function", extra_server_config="limit_rate 8m;")


async def test_a_stream_without_memory_waits_and_status_says_so(
    temporal_server: TemporalDevServer,
    slow_nginx: NginxServer,
    http_root: Path,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    """One process whose memory share holds one 24 MiB chunk buffer: of a transfer's
    two streams one copies, the other waits for it, and status says why; both finish."""
    digest = write_random(http_root / "tight.bin", 96 * MiB, seed=51)
    at_rest(http_root / "tight.bin")
    destination = data_dir / "tight.bin"
    env = {"STACCATO_WORKER_MEMORY_BYTES": str(512 * MiB)}  # 32 MiB for buffers
    with WorkerProcess(temporal_server.address, processes=1, env=env, log_dir=tmp_path) as worker:
        async with await StaccatoClient.connect(target_host=temporal_server.address) as client:
            client.task_queue = worker.task_queue
            transfer = await client.submit(
                slow_nginx.url("tight.bin"),
                str(destination),
                TransferOptions(chunk_size=24 * MiB, streams=2),
            )
            status = await wait_for_status(
                client,
                transfer,
                lambda s: (
                    s.state == TransferState.completed
                    or bool(s.reason and "waiting for worker capacity" in s.reason)
                ),
                timeout_s=120,
            )
            print(f"status while a stream waits: {status.state} {status.reason!r}")
            assert status.state == TransferState.running, status
            assert status.reason and "STACCATO_WORKER_MEMORY_BYTES" in status.reason
            assert status.bytes_done < 96 * MiB
            result = await asyncio.wait_for(client.wait(transfer), 180)
    assert result.bytes == 96 * MiB
    assert sha256_file(destination) == digest
