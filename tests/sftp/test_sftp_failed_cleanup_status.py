"""``status`` of a failed file -> SFTP upload whose clean-up still runs (tester65 T5):
sshd and its session processes SIGSTOPped mid-copy, ``--retry-for`` short, so the
transfer fails while the server hangs and its run goes on trying to remove the temp
file on the frozen server. Meanwhile ``status`` said ``bytes_durable 0 B: nothing
kept, the run's clean-up removed its partial data`` while the same output said the
temp file was still being removed, and it was there. While the clean-up runs, the
durable line must say it is being removed; once the clean-up gave up (the server
still stopped), that it could not remove it (``left_behind``), as is the case.
Server: ``sftp_logged``, stopped and resumed (in a ``finally``); a real worker.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from staccato.cli import render
from staccato.client import StaccatoClient
from staccato.errors import TransferFailedError
from staccato.models import TransferOptions, TransferState, TransferStatus
from tests.helpers import (
    HUNG_CLEANUP_FOR_S,
    MiB,
    stopped_process_tree,
    wait_for_status,
    write_random,
)
from tests.servers.sshd import SshdServer

SIZE = 64 * MiB
#: one 32 MiB chunk per stream, paced (2 MiB/s each): the server is stopped inside the
#: first chunks, so nothing is durable (0 B) while bytes have moved, the tester's case
OPTIONS = TransferOptions(
    chunk_size=32 * MiB,
    streams=2,
    max_rate=4 * MiB,
    retry_for_s=10,
    heartbeat_timeout_s=5,
    cleanup_for_s=HUNG_CLEANUP_FOR_S,
)
#: correctness bounds, not speed ones: the failure comes within ~1 minute of the stop,
#: the clean-up gives up within its window (--retry-for + one backoff: ~20 s) after it
FAILS_WITHIN_S = 150.0
_ENDED = (TransferState.completed, TransferState.failed, TransferState.cancelled)


def _durable_line(status: TransferStatus) -> str:
    lines = [line for line in render.status_lines(status) if line.startswith("bytes_durable")]
    assert len(lines) == 1, render.status_lines(status)
    return lines[0]


async def test_status_of_a_failed_sftp_upload_never_says_removed_while_its_cleanup_runs(
    sftp_client: StaccatoClient, sftp_logged: SshdServer, data_dir: Path
) -> None:
    source = data_dir / "failed-cleanup.bin"
    write_random(source, SIZE, seed=651)
    out = data_dir / "failed-cleanup-out"
    out.mkdir()
    target = out / "failed-cleanup.bin"
    transfer = await sftp_client.submit(str(source), sftp_logged.url(str(target)), OPTIONS)
    await wait_for_status(
        sftp_client, transfer, lambda s: s.bytes_done > 0 or s.state in _ENDED, timeout_s=120
    )
    assert sftp_logged.pid is not None, "sshd is not running"
    with stopped_process_tree(sftp_logged.pid):
        cleaning = await wait_for_status(
            sftp_client,
            transfer,
            lambda s: s.state in _ENDED and (s.cleanup is not None or s.left_behind is not None),
            timeout_s=FAILS_WITHIN_S,
            interval_s=0.5,
        )
        assert cleaning.state == TransferState.failed, cleaning
        assert cleaning.cleanup is not None, "the clean-up was over before it was seen"
        temp_files = [p.name for p in out.iterdir() if ".staccato" in p.name]
        assert temp_files, "the partial data is gone while the server is stopped"
        assert cleaning.bytes_done > (cleaning.bytes_durable or 0), cleaning
        said = _durable_line(cleaning)
        assert "removed its partial data" not in said, said
        assert "still removing" in said, said
        # the clean-up gives up against the stopped server: what it left is said, and
        # the durable line agrees
        over = await wait_for_status(
            sftp_client,
            transfer,
            lambda s: s.cleanup is None,
            timeout_s=FAILS_WITHIN_S,
            interval_s=0.5,
        )
        assert over.left_behind is not None, over
        said = _durable_line(over)
        assert "could not remove its partial data" in said, said
        assert "removed its partial data" not in said.replace("could not remove", ""), said
    with pytest.raises(TransferFailedError):
        await sftp_client.wait(transfer)
    assert not target.exists(), "a failed upload published its destination"
