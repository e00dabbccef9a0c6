"""A dataset whose SFTP source hangs while it is listed (sshd and its session
processes SIGSTOPped) fails soon after ``--retry-for`` naming the source it lists,
as an S3 source does (tests/s3/test_s3_dataset_list_hung.py; tester T13), with
``cp -r`` exiting 1. Server: ``sftp_logged``, stopped and resumed (always)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from staccato.client import StaccatoClient
from tests.helpers import WorkerProcess, run_cli, stopped_process_tree
from tests.servers.sshd import SshdServer

#: a correctness bound, not a speed one: ``cp -r`` returns once the dataset ended
CP_WITHIN_S = 240.0


async def test_an_sftp_source_hung_while_listed_fails_the_dataset_naming_it(
    sftp_client: StaccatoClient,
    sftp_worker: WorkerProcess,
    temporal_server: Any,
    sftp_logged: SshdServer,
    data_dir: Path,
) -> None:
    remote = data_dir / "remote"
    for i in range(5):
        (remote / f"d{i % 2}").mkdir(parents=True, exist_ok=True)
        (remote / f"d{i % 2}" / f"f{i}.bin").write_bytes(bytes([i]) * 1000)
    source = sftp_logged.url(str(remote))
    out = data_dir / "out"
    args: dict[str, Any] = dict(address=temporal_server.address, task_queue=sftp_worker.task_queue)
    assert sftp_logged.pid is not None, "sshd is not running"
    with stopped_process_tree(sftp_logged.pid):
        done = await asyncio.to_thread(
            run_cli, "cp", "-r", "-q", "--retry-for", "10s", source, str(out),
            timeout_s=CP_WITHIN_S, **args,
        )  # fmt: skip
    print(f"cp -r: exit {done.returncode}; stderr: {done.stderr.strip()}")
    assert done.returncode == 1, done
    assert f"listing {source}" in done.stderr and "did not answer" in done.stderr, done.stderr
    assert "Not enough time" not in done.stderr and "Traceback" not in done.stderr
    status = json.loads(run_cli("status", "--json", str(out), **args).stdout)
    assert status["state"] == "failed" and f"listing {source}" in status["error"], status
