"""tester64 F6 on an SFTP destination: sshd frozen (SIGSTOP, it answers nothing), a
transfer's ``prepare`` hangs, its worker is SIGKILLed, the transfer is cancelled while
no worker runs, and a worker is back: the run ends cancelled while sshd is still
frozen, and its ``left_behind`` names the temp file a prepare attempt may still create
(its name is known from the run's session key); once sshd answers, the next transfer
to the destination leaves no temp file, journal or writers directory there and
publishes the bytes whole. Real sshd (``sftp_logged``), Temporal and worker processes.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from staccato.client import StaccatoClient
from staccato.models import TransferOptions, TransferState
from tests.helpers import (
    MiB,
    WorkerProcess,
    leftovers,
    sha256_file,
    stopped_process_tree,
    write_random,
)
from tests.prepare_cancel_checks import cancelled_while_no_worker, until
from tests.servers.sshd import SshdServer

pytestmark = pytest.mark.slow

#: the next transfer, the server awake (a correctness bound)
_COMPLETES_WITHIN_S = 150.0
#: for the late prepare attempt to remove what it created (a correctness bound)
_SETTLES_WITHIN_S = 60.0


def _worker(address: str, like: WorkerProcess, log_dir: Path, queue: str | None) -> WorkerProcess:
    worker = WorkerProcess(address, task_queue=queue, processes=1, env=like.env, log_dir=log_dir)
    worker.start()
    return worker


async def test_cancel_asked_without_a_worker_ends_soon_and_says_the_temp_file(
    temporal_server,
    sftp_worker: WorkerProcess,
    sftp_logged: SshdServer,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    source = data_dir / "prepare-cancel-no-worker.bin"
    write_random(source, 3 * MiB, seed=65)
    out = data_dir / "prepare-cancel-out"
    out.mkdir()
    target = out / "c1.bin"
    destination = sftp_logged.url(str(target))
    first = _worker(temporal_server.address, sftp_worker, tmp_path, None)
    more: list[WorkerProcess] = []
    client = await StaccatoClient.connect(target_host=temporal_server.address)
    client.task_queue = first.task_queue
    try:
        assert sftp_logged.pid is not None, "sshd is not running"
        with stopped_process_tree(sftp_logged.pid):
            transfer = await client.submit(
                str(source), destination, TransferOptions(retry_for_s=600)
            )
            await cancelled_while_no_worker(
                client,
                transfer,
                first,
                lambda: _worker(temporal_server.address, sftp_worker, tmp_path, first.task_queue),
                more,
            )
            status = await client.status(transfer)
            assert status.state == TransferState.cancelled, status
            # it names the temp file an attempt may still create, and what removes it
            left = status.left_behind or ""
            assert f"{out}/.c1.bin." in left and ".staccato-part" in left, status
            assert "next transfer" in left, left
        again = await client.submit(str(source), destination, TransferOptions())
        result = await asyncio.wait_for(client.wait(again), _COMPLETES_WITHIN_S)
        assert result.bytes == 3 * MiB
        assert sha256_file(target) == sha256_file(source)

        # none left: the next transfer swept what the dead worker's attempts created,
        # and the new worker's attempt, answered once sshd woke, removed its own (it
        # knows of the cancel: its run is over), maybe after that sweep (bounded)
        async def nothing_left() -> bool:
            return leftovers(out) == []

        await until(nothing_left, _SETTLES_WITHIN_S, f"temp data left: {leftovers(out)}")
    finally:
        first.stop()
        for worker in more:
            worker.stop()
