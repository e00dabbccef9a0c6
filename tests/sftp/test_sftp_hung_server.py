"""A hung SFTP server (sshd and its session processes SIGSTOPped: connections stay
open, nothing answers) must not outlast ``--retry-for``: the copy gives up within a
bounded time after the deadline, naming the destination. The old code showed the
transfer ``running`` with frozen bytes and no reason, and retried each hung attempt
for the whole allowance (10 minutes and more). Server: ``sftp_logged``, stopped and
resumed (in a ``finally``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from datetime import datetime
from pathlib import Path

import pytest

from staccato.cli.render import progress_text, status_lines
from staccato.client import StaccatoClient
from staccato.errors import TransferFailedError
from staccato.models import TransferOptions, TransferState, TransferStatus
from tests.helpers import MiB, sha256_file, stopped_process_tree, wait_for_status, write_random
from tests.servers.sshd import SshdServer

SIZE = 64 * MiB
OPTIONS = TransferOptions(
    chunk_size=8 * MiB, streams=2, max_rate=4 * MiB, retry_for_s=10, heartbeat_timeout_s=5
)
#: a correctness bound, not a speed one: the old code stayed running ~10 minutes
GIVES_UP_WITHIN_S = 150.0


def _stopped(server: SshdServer) -> contextlib.AbstractContextManager[None]:
    """sshd and its session processes SIGSTOPped for the block."""
    assert server.pid is not None, "sshd is not running"
    return stopped_process_tree(server.pid)


async def _copied(client: StaccatoClient, transfer: str, at_least: int) -> None:
    """Wait (2 minutes at most) until ``transfer`` copied ``at_least`` bytes or ended.
    Not "until running": a transfer still scheduled is not copying yet, and a server
    stopped then hangs its prepare step, not a copy (ci66)."""
    await wait_for_status(
        client,
        transfer,
        lambda s: (
            s.bytes_done >= at_least
            or s.state in (TransferState.completed, TransferState.failed, TransferState.cancelled)
        ),
        timeout_s=120,
    )


async def test_hung_sftp_server_fails_soon_after_retry_for_naming_the_destination(
    sftp_client: StaccatoClient, sftp_logged: SshdServer, data_dir: Path
) -> None:
    source = data_dir / "hang.bin"
    write_random(source, SIZE, seed=73)
    out = data_dir / "out"
    out.mkdir()
    destination = sftp_logged.url(str(out / "hang.bin"))
    transfer = await sftp_client.submit(str(source), destination, OPTIONS)
    await _copied(sftp_client, transfer, 1)
    with _stopped(sftp_logged):
        stopped_at = time.monotonic()
        with pytest.raises(TransferFailedError) as failed:
            await asyncio.wait_for(sftp_client.wait(transfer), GIVES_UP_WITHIN_S)
        took = time.monotonic() - stopped_at
    message = str(failed.value)
    assert str(out / "hang.bin") in message, message
    assert "did not answer" in message, message
    assert took < GIVES_UP_WITHIN_S


async def test_sftp_server_hung_before_prepare_fails_naming_the_destination(
    sftp_client: StaccatoClient, sftp_logged: SshdServer, data_dir: Path
) -> None:
    """sshd stopped before the transfer starts: its ``prepare`` step (the first that
    talks to the destination) hangs. Each attempt waits for an answer that never
    comes, and the retry deadline passed while one was still running, so no attempt
    had failed: the old code ended "gave up: the prepare step kept failing ...; last
    error: none recorded" (seen in CI), naming neither the server nor the hang."""
    source = data_dir / "hang-prepare.bin"
    write_random(source, MiB, seed=74)
    out = data_dir / "out-prepare"
    out.mkdir()
    destination = sftp_logged.url(str(out / "hang.bin"))
    with _stopped(sftp_logged):
        transfer = await sftp_client.submit(str(source), destination, OPTIONS)
        with pytest.raises(TransferFailedError) as failed:
            await asyncio.wait_for(sftp_client.wait(transfer), GIVES_UP_WITHIN_S)
    message = str(failed.value)
    assert "prepare" in message, message
    assert str(out / "hang.bin") in message, message
    assert "did not answer" in message, message
    assert "none recorded" not in message, message


async def test_hung_sftp_source_gives_up_retry_for_after_its_last_byte(
    sftp_client: StaccatoClient, sftp_logged: SshdServer, data_dir: Path
) -> None:
    """An SFTP *source* stopped mid-chunk (T5), a chunk longer to read than
    ``--retry-for``: no chunk is durable yet, so the attempt's deadline (its schedule
    plus the budget) passed while it still read. The old hang watch then gave up once
    nothing had moved for its hang limit (3 s here: 0.6 x the 5 s heartbeat timeout),
    before ``--retry-for`` had passed since the source's last byte. ``--retry-for``
    counts from the last time the copy got further: the give-up says so."""
    source_file = data_dir / "hang-source.bin"
    write_random(source_file, SIZE, seed=79)
    source = sftp_logged.url(str(source_file))
    destination = data_dir / "from-sftp.bin"
    options = TransferOptions(
        chunk_size=32 * MiB, streams=1, max_rate=MiB, retry_for_s=8, heartbeat_timeout_s=5
    )
    transfer = await sftp_client.submit(source, str(destination), options)
    # mid-chunk (32 s at 1 MiB/s), past the attempt's deadline (its start + 8 s)
    await _copied(sftp_client, transfer, 12 * MiB)
    with _stopped(sftp_logged):
        with pytest.raises(TransferFailedError) as failed:
            await asyncio.wait_for(sftp_client.wait(transfer), GIVES_UP_WITHIN_S)
    message = str(failed.value)
    assert source in message, message
    assert "did not answer" in message, message
    said = re.search(r"the copy got no further for (\d+) s", message)
    assert said is not None, message
    assert int(said.group(1)) >= options.retry_for_s, message
    assert not destination.exists()


async def test_status_of_a_copy_to_a_frozen_sftp_server_says_it_is_stalled(
    sftp_client: StaccatoClient, sftp_logged: SshdServer, data_dir: Path
) -> None:
    """sshd frozen mid-copy, ``--retry-for`` long: the streams wait for the server
    (heartbeating on) until their I/O timeout, 60 s. Meanwhile ``status`` said nothing
    but "no rate" (tester60 #6: 58 s with no reason); now it shows ``idle_since``, when
    a byte last moved, and the human lines say it is stalled waiting for the source
    or destination. Woken again, the copy completes, exact."""
    source = data_dir / "stall.bin"
    digest = write_random(source, SIZE, seed=80)
    out = data_dir / "out-stall"
    out.mkdir()
    options = OPTIONS.model_copy(update={"retry_for_s": 300})
    transfer = await sftp_client.submit(str(source), sftp_logged.url(str(out / "s.bin")), options)
    await _copied(sftp_client, transfer, 1)
    seen: list[TransferStatus] = []
    said_at = 0.0
    with _stopped(sftp_logged):
        frozen_at = time.time()  # bytes still go into the socket buffers a while
        deadline = time.monotonic() + 45  # within the streams' 60 s I/O timeout
        while time.monotonic() < deadline:
            status = await sftp_client.status(transfer)
            assert status.state == TransferState.running, status
            seen.append(status)
            if status.idle_since:
                said_at = time.time()
                break
            await asyncio.sleep(0.5)
    stalled = seen[-1]
    assert stalled.idle_since, [(s.bytes_done, s.rate_bytes_per_s) for s in seen]
    assert stalled.rate_bytes_per_s is None and stalled.eta_s is None, stalled
    since = datetime.fromisoformat(stalled.idle_since.replace("Z", "+00:00")).timestamp()
    assert frozen_at - 5 <= since <= said_at - 4, (stalled.idle_since, frozen_at, said_at)
    assert any(line.startswith("stalled") for line in status_lines(stalled)), stalled
    assert "stalled: nothing moved since" in progress_text(stalled)
    await asyncio.wait_for(sftp_client.wait(transfer), GIVES_UP_WITHIN_S)
    assert sha256_file(out / "s.bin") == digest
