"""The verify phase shows a rate and an ETA while a part of the read-back is still
running (tester73 M1): ``cp --streams 4`` to SFTP read ``verified_bytes`` 256 MiB of
1 GiB with ``verify_rate_bytes_per_s`` and ``verify_eta_s`` null, as the server hashes
the temp file (:mod:`staccato.endpoints.sftp.remote_hash`) and its parts heartbeat no
bytes of their own. Here the server's first hash command runs at once and every later
one waits for a go (printing a line every 0.2 s, which the hash's reader skips, so the
part is not stalled): while the second part waits, ``status`` has the first part's
bytes verified and, now, a rate and an ETA (the read-back's average since it began).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from staccato.cli.render import progress_text
from staccato.client import StaccatoClient
from staccato.models import TransferOptions, TransferStatus
from tests.helpers import MiB, WorkerProcess, sha256_file, write_random
from tests.servers.sshd import SshdServer
from tests.sftp.conftest import _started

SIZE = 16 * MiB
OPTIONS = TransferOptions(chunk_size=4 * MiB, streams=2, retry_for_s=300)


def _second_hash_held(work_dir: Path) -> str:
    """sshd config: sftp as usual; the first server-side hash command (marker
    ``staccato-hash-``) runs at once, every later one touches ``work_dir/hashing`` and
    waits for ``work_dir/go`` (at most 120 s) printing ``waiting`` lines; every other
    exec runs at once."""
    first, hashing, go = work_dir / "first", work_dir / "hashing", work_dir / "go"
    return (
        'Match all\n  SetEnv SHLVL=1\n  ForceCommand case "$SSH_ORIGINAL_COMMAND" in '
        "internal-sftp|*sftp-server*) exec /usr/lib/openssh/sftp-server;; "
        f"*staccato-hash-*) if ! mkdir {first} 2>/dev/null; then touch {hashing}; i=0; "
        f"while [ ! -e {go} ] && [ $i -lt 600 ]; do echo waiting; sleep 0.2; "
        "i=$((i+1)); done; fi;; "
        'esac; exec sh -c "$SSH_ORIGINAL_COMMAND"'
    )


@pytest.fixture
def second_hash_held(
    sshd_server: SshdServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SshdServer]:
    """An sshd of this test's own whose second and later hashes wait for a go."""
    work_dir = tmp_path_factory.mktemp("sshd-second-held").resolve()
    server = _started(SshdServer(work_dir, extra_config=_second_hash_held(work_dir)), sshd_server)
    try:
        yield server
    finally:
        (work_dir / "go").touch()
        server.stop()


async def test_a_verify_part_still_hashing_shows_the_read_backs_rate_and_eta(
    temporal_server,
    second_hash_held: SshdServer,
    settings_env: dict[str, str],
    settings_worker: WorkerProcess,
    data_dir: Path,
) -> None:
    server = second_hash_held
    known_hosts = Path(settings_env["STACCATO_SSH_KNOWN_HOSTS"])
    known_hosts.write_text(known_hosts.read_text() + server.known_hosts_path.read_text())
    source = data_dir / "verify-rate.bin"
    digest = write_random(source, SIZE, seed=73)
    out = data_dir / "out-verify-rate"
    out.mkdir()
    destination = out / "v.bin"
    work_dir = server.work_dir
    with contextlib.nullcontext(settings_worker) as worker:  # the session's: ends its transfer
        client = await StaccatoClient.connect(
            target_host=temporal_server.address, namespace="default"
        )
        client.task_queue = worker.task_queue
        transfer = await client.submit(str(source), server.url(str(destination)), OPTIONS)
        seen: list[TransferStatus] = []
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                status = await client.status(transfer)
                if status.state.value in ("completed", "failed", "cancelled"):
                    break
                if status.phase == "verify" and (status.verified_bytes or 0) > 0:
                    seen.append(status)
                    if len(seen) >= 3:
                        break
                await asyncio.sleep(0.1)
        finally:
            (work_dir / "go").touch()
        await asyncio.wait_for(client.wait(transfer), 180)
    assert (work_dir / "hashing").exists(), "no second hash was held"
    assert seen, f"no status in phase verify with bytes verified: {status}"
    assert all(0 < (s.verified_bytes or 0) < SIZE for s in seen), seen
    shown = [(s.verified_bytes, s.verify_rate_bytes_per_s, s.verify_eta_s) for s in seen]
    assert all((s.verify_rate_bytes_per_s or 0) > 0 for s in seen), shown
    assert all(s.verify_eta_s is not None for s in seen), shown
    assert all(" at " in progress_text(s).split("verifying ")[1] for s in seen), [
        progress_text(s) for s in seen
    ]
    assert sha256_file(destination) == digest
