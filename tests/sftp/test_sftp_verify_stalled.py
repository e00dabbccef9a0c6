"""A verify that waits on a frozen SFTP server says so (tester62): sshd and its
sessions SIGSTOPped while the server hashes the temp file (the verify before publish,
:mod:`staccato.endpoints.sftp.remote_hash`). The old code showed ``phase verify`` and a
bare ``100%`` for as long as it hung (73 s), no ``stalled`` line, no reason; now
``status`` says it is stalled since when, waiting for the destination, and ``cp``'s
line says it is verifying. Woken again, the transfer completes with the exact bytes.

The server's exec requests run through a script that, for the hash command only,
touches ``hashing`` in its work dir and waits (at most 120 s) for ``go``: the test
freezes sshd while the verify is surely in the server's hands, not after it ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from staccato.cli.render import progress_text, status_lines
from staccato.client import StaccatoClient
from staccato.models import TransferOptions, TransferState, TransferStatus
from tests.helpers import (
    MiB,
    WorkerProcess,
    sha256_file,
    stopped_process_tree,
    write_random,
)
from tests.servers.sshd import SshdServer
from tests.sftp.conftest import _started

SIZE = 16 * MiB
OPTIONS = TransferOptions(chunk_size=4 * MiB, streams=2, retry_for_s=300)


def _held_hash(work_dir: Path) -> str:
    """sshd config: sftp as usual; the server-side hash command (its marker
    ``staccato-hash-``) waits for ``work_dir/go`` after touching ``work_dir/hashing``;
    every other exec runs at once."""
    hashing, go = work_dir / "hashing", work_dir / "go"
    return (
        'Match all\n  SetEnv SHLVL=1\n  ForceCommand case "$SSH_ORIGINAL_COMMAND" in '
        "internal-sftp|*sftp-server*) exec /usr/lib/openssh/sftp-server;; "
        f"*staccato-hash-*) touch {hashing}; i=0; "
        f"while [ ! -e {go} ] && [ $i -lt 600 ]; do sleep 0.2; i=$((i+1)); done;; "
        'esac; exec sh -c "$SSH_ORIGINAL_COMMAND"'
    )


@pytest.fixture
def held_server(
    sshd_server: SshdServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SshdServer]:
    """An sshd of this test's own whose server-side hash waits for a go (see module)."""
    work_dir = tmp_path_factory.mktemp("sshd-held").resolve()
    server = _started(SshdServer(work_dir, extra_config=_held_hash(work_dir)), sshd_server)
    try:
        yield server
    finally:
        (work_dir / "go").touch()
        server.stop()


async def _until_file(path: Path, client: StaccatoClient, transfer: str, timeout_s: float) -> None:
    """Wait (at most ``timeout_s``) until ``path`` exists; fail naming the transfer's
    last status if it does not."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            pytest.fail(f"{path} never appeared: {await client.status(transfer)}")
        await asyncio.sleep(0.1)


async def test_a_verify_waiting_on_a_frozen_sftp_server_is_shown_stalled(
    temporal_server,
    held_server: SshdServer,
    settings_env: dict[str, str],
    settings_worker: WorkerProcess,
    data_dir: Path,
) -> None:
    known_hosts = Path(settings_env["STACCATO_SSH_KNOWN_HOSTS"])
    known_hosts.write_text(known_hosts.read_text() + held_server.known_hosts_path.read_text())
    source = data_dir / "verify-stall.bin"
    digest = write_random(source, SIZE, seed=62)
    out = data_dir / "out-verify-stall"
    out.mkdir()
    destination = out / "v.bin"
    work_dir = held_server.work_dir
    with contextlib.nullcontext(settings_worker) as worker:  # the session's: ends its transfer
        client = await StaccatoClient.connect(
            target_host=temporal_server.address, namespace="default"
        )
        client.task_queue = worker.task_queue
        transfer = await client.submit(str(source), held_server.url(str(destination)), OPTIONS)
        await _until_file(work_dir / "hashing", client, transfer, 120)
        seen: list[TransferStatus] = []
        assert held_server.pid is not None
        with stopped_process_tree(held_server.pid):
            deadline = time.monotonic() + 45  # within the server's 60 s I/O timeout
            while time.monotonic() < deadline:
                status = await client.status(transfer)
                seen.append(status)
                if status.idle_since:
                    break
                await asyncio.sleep(0.5)
            (work_dir / "go").touch()
        stalled = seen[-1]
        print([(s.phase, s.idle_since, progress_text(s)) for s in seen[-3:]])
        assert stalled.state == TransferState.running, stalled
        assert stalled.phase == "verify", stalled
        assert stalled.idle_since, [(s.phase, s.bytes_done) for s in seen]
        shown = progress_text(stalled)
        assert "verifying" in shown and "stalled: nothing moved since" in shown, shown
        lines = [line for line in status_lines(stalled) if line.startswith("stalled")]
        assert lines and "waiting for the destination" in lines[0], status_lines(stalled)
        await asyncio.wait_for(client.wait(transfer), 180)
    assert sha256_file(destination) == digest
