"""The shown rate of a paced copy after a worker kill is the rate its bytes move at
(tester75 MED 3): after SIGKILL and a new worker, ``watch`` showed 39.4 / 40.0 / 23.3
MiB/s while the bytes grew at ~64 / 86 / 58 MiB/s. A resumed attempt's rate counted
only its durable chunks over all its time (its set-up and the chunk being read in
it): about 0.6x. Now its clock starts at its first read, and once a chunk of it is
durable its chunk being read counts. A consistency check between two reported
numbers, not a timing assert: the rates shown against the bytes the same statuses
say moved (as tests/sftp/test_sftp_tuned_rate.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from staccato.client import StaccatoClient
from staccato.models import TransferOptions, TransferState, TransferStatus
from tests.helpers import MiB, WorkerProcess, sha256_file, write_random
from tests.servers.sshd import SshdServer


async def test_a_paced_copys_rate_after_a_worker_kill_is_its_bytes_rate(
    temporal_server,
    sshd_server: SshdServer,
    env_worker_env: dict[str, str],
    data_dir: Path,
    tmp_path: Path,
) -> None:
    """A file -> SFTP copy of 768 MiB, 4 streams of 32 MiB chunks paced at 64 MiB/s
    (untuned, as a ``--max-rate`` copy is), its worker SIGKILLed at a third and a new
    one started: from the first status with a rate to the last in the copy phase, the
    mean of the rates shown is within 0.7x-1.5x of the bytes those two statuses say
    moved over the time between them. Before, ~0.57x."""
    size = 768 * MiB
    source = data_dir / "src.bin"
    digest = write_random(source, size, seed=75)
    out = data_dir / "out"
    out.mkdir()
    destination = out / "big2.bin"
    first = WorkerProcess(
        temporal_server.address, processes=2, env=env_worker_env, log_dir=tmp_path
    ).start()
    client = await StaccatoClient.connect(target_host=temporal_server.address, namespace="default")
    client.task_queue = first.task_queue
    options = TransferOptions(
        streams=4, chunk_size=32 * MiB, heartbeat_timeout_s=3, max_rate=64 * MiB
    )
    try:
        transfer = await client.submit(str(source), sshd_server.url(str(destination)), options)
        deadline = time.monotonic() + 120
        while (await client.status(transfer)).bytes_done < size // 3:
            assert time.monotonic() < deadline, "the copy made no progress"
            await asyncio.sleep(0.2)
    finally:
        first.kill()
    second = WorkerProcess(
        temporal_server.address,
        task_queue=first.task_queue,
        processes=2,
        env=env_worker_env,
        log_dir=tmp_path,
    ).start()
    seen: list[tuple[float, TransferStatus]] = []
    try:
        deadline = time.monotonic() + 300
        while (status := await client.status(transfer)).state not in (
            TransferState.completed,
            TransferState.failed,
            TransferState.cancelled,
        ):
            assert time.monotonic() < deadline, f"not completed in time: {status}"
            if status.phase == "copy" and status.rate_bytes_per_s and status.bytes_done < size:
                seen.append((time.monotonic(), status))
            await asyncio.sleep(0.5)
    finally:
        second.stop()
    assert status.state == TransferState.completed, status
    assert sha256_file(destination) == digest
    shown = [
        (round(t - seen[0][0], 1), s.bytes_done // MiB, round((s.rate_bytes_per_s or 0) / MiB, 1))
        for t, s in seen
    ]
    (t0, a), (t1, b) = seen[0], seen[-1]
    assert t1 - t0 >= 1.0 and b.bytes_done > a.bytes_done, shown
    moved = (b.bytes_done - a.bytes_done) / (t1 - t0)
    mean = sum(s.rate_bytes_per_s or 0 for _, s in seen) / len(seen)
    assert 0.7 <= mean / moved <= 1.5, (round(mean / moved, 2), round(moved / MiB, 1), shown)
