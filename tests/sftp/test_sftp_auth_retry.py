"""A worker whose key the SFTP server refuses, mid-transfer: the transfer authenticated
to that server already (its ``stat`` and ``prepare`` did), so the stream's refusal is
retried within ``--retry-for`` and a worker with the right key finishes the copy
(tester57 F7: one misconfigured worker rollout failed every transfer in flight at once,
even with ``--retry-for 40s``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from staccato.client import StaccatoClient
from staccato.models import TransferOptions
from tests.helpers import MiB, WorkerProcess, retried_past_a_wrong_worker, sha256_file, write_random
from tests.servers.sshd import SshdServer
from tests.sftp.conftest import known_hosts_lines

SIZE = 16 * MiB
# ~8 s at 2 MiB/s: the worker is replaced mid-copy
OPTIONS = TransferOptions(
    chunk_size=2 * MiB, streams=1, max_rate=2 * MiB, heartbeat_timeout_s=3, retry_for_s=120
)


def _env(work: Path, key: Path, sshd_server: SshdServer) -> dict[str, str]:
    known_hosts = work / "known_hosts"
    known_hosts.write_text(known_hosts_lines(sshd_server))
    (work / "home").mkdir(exist_ok=True)
    return {
        "HOME": str(work / "home"),
        "SSH_AUTH_SOCK": "",
        "STACCATO_SSH_CONFIG": "none",
        "STACCATO_SSH_IDENTITY": str(key),
        "STACCATO_SSH_KNOWN_HOSTS": str(known_hosts),
        "STACCATO_SFTP_LOCK_DIR": str(work / "locks"),
    }


async def test_a_refused_key_mid_transfer_is_retried_until_a_worker_with_the_right_one(
    temporal_server, sshd_server: SshdServer, data_dir: Path, tmp_path: Path
) -> None:
    source = data_dir / "src.bin"
    digest = write_random(source, SIZE, seed=7)
    destination = data_dir / "dst.bin"
    wrong = tmp_path / "wrong_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True)
    right_env = _env(tmp_path, sshd_server.client_key_path, sshd_server)
    first = WorkerProcess(temporal_server.address, env=right_env, log_dir=tmp_path)
    wrong_worker = WorkerProcess(
        temporal_server.address,
        task_queue=first.task_queue,
        env={**right_env, "STACCATO_SSH_IDENTITY": str(wrong)},
        log_dir=tmp_path,
    )
    last = WorkerProcess(
        temporal_server.address, task_queue=first.task_queue, env=right_env, log_dir=tmp_path
    )
    try:
        first.start()
        client = await StaccatoClient.connect(target_host=temporal_server.address)
        client.task_queue = first.task_queue
        transfer = await client.submit(str(source), sshd_server.url(str(destination)), OPTIONS)
        done = await retried_past_a_wrong_worker(
            client,
            transfer,
            (first, wrong_worker, last),
            shown="authentication refused",
            says="by this worker (it worked for an earlier step",
            moved=4 * MiB,
        )
    finally:
        first.kill()
        wrong_worker.kill()
        last.stop()
    assert done.bytes == SIZE
    assert sha256_file(destination) == digest
