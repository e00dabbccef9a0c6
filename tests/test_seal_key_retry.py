"""A worker that lacks the key a source's query was sealed with, mid-transfer: the
transfer's ``stat`` opened the seal on a worker that had the key, so the stream's
missing key is retried within ``--retry-for`` and a worker with the key finishes the
copy (tester63: a second ``staccato up`` with another ``STACCATO_HOME`` joined the
same server with a key of its own, and a ``?token=`` transfer whose stream landed on
it failed for good at 61 %), as a refused credential is
(tests/sftp/test_sftp_auth_retry.py)."""

from __future__ import annotations

import os
from pathlib import Path

from staccato import secrets
from staccato.client import StaccatoClient
from staccato.models import TransferOptions
from tests.helpers import MiB, WorkerProcess, retried_past_a_wrong_worker, sha256_file, write_random

SIZE = 16 * MiB
# ~8 s at 2 MiB/s: the worker is replaced mid-copy
OPTIONS = TransferOptions(
    chunk_size=2 * MiB, streams=1, max_rate=2 * MiB, heartbeat_timeout_s=3, retry_for_s=120
)


async def test_a_worker_without_the_seal_key_mid_transfer_is_retried_until_one_with_it(
    temporal_server, nginx_ranges, http_root: Path, data_dir: Path, tmp_path: Path
) -> None:
    digest = write_random(http_root / "sealed.bin", SIZE, seed=11)
    source = nginx_ranges.url("sealed.bin?token=sealme42")
    destination = data_dir / "sealed.bin"
    right = {"STACCATO_SECRET_KEY": os.environ["STACCATO_SECRET_KEY"]}  # the client's
    first = WorkerProcess(temporal_server.address, processes=1, env=right, log_dir=tmp_path)
    keyless = WorkerProcess(
        temporal_server.address,
        task_queue=first.task_queue,
        processes=1,
        env={"STACCATO_SECRET_KEY": secrets.new_key_text()},
        log_dir=tmp_path,
    )
    last = WorkerProcess(
        temporal_server.address,
        task_queue=first.task_queue,
        processes=1,
        env=right,
        log_dir=tmp_path,
    )
    try:
        first.start()
        client = await StaccatoClient.connect(target_host=temporal_server.address)
        client.task_queue = first.task_queue
        transfer = await client.submit(source, str(destination), OPTIONS)
        done = await retried_past_a_wrong_worker(
            client,
            transfer,
            (first, keyless, last),
            shown="lacks key",
            says="a worker with the key may take the next attempt",
            moved=4 * MiB,
        )
    finally:
        first.kill()
        keyless.kill()
        last.stop()
    assert done.bytes == SIZE
    assert sha256_file(destination) == digest
