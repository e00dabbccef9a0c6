"""Cancel of a file -> SFTP upload while sshd hangs (sshd and its session processes
SIGSTOPped: connections stay open, nothing answers), tester63: the cancelled run
stayed ``running`` for over 3 minutes. The cancelled run's clean-up (removing the temp
file on the frozen server) must give up within its window, and the run must end
``cancelled`` naming what it may have left (``left_behind``) instead of claiming the
partial data removed, all while the server is still stopped. Server: ``sftp_logged``,
stopped and resumed (in a ``finally``); a real worker.
"""

from __future__ import annotations

from pathlib import Path

from staccato.cli import render
from staccato.client import StaccatoClient
from staccato.models import TransferOptions, TransferState
from tests.helpers import (
    HUNG_CLEANUP_FOR_S,
    MiB,
    stopped_process_tree,
    wait_for_status,
    write_random,
)
from tests.servers.sshd import SshdServer

SIZE = 64 * MiB
#: paced so the copy lasts ~16 s and the server can be stopped mid-copy; the default
#: --retry-for (24 h), as in the report; the clean-up window the suite's hung scenes use
OPTIONS = TransferOptions(
    chunk_size=8 * MiB,
    streams=2,
    max_rate=4 * MiB,
    heartbeat_timeout_s=5,
    cleanup_for_s=HUNG_CLEANUP_FOR_S,
)
#: a correctness bound, not a speed one: the tester's run was still running after 3 min
ENDS_WITHIN_S = 150.0
_ENDED = (TransferState.completed, TransferState.failed, TransferState.cancelled)


async def test_cancel_during_sftp_hang_ends_bounded_naming_what_it_left(
    sftp_client: StaccatoClient, sftp_logged: SshdServer, data_dir: Path
) -> None:
    source = data_dir / "cancel-hang.bin"
    write_random(source, SIZE, seed=164)
    out = data_dir / "cancel-hang-out"
    out.mkdir()
    target = out / "cancel-hang.bin"
    transfer = await sftp_client.submit(str(source), sftp_logged.url(str(target)), OPTIONS)
    await wait_for_status(
        sftp_client, transfer, lambda s: s.bytes_done > 0 or s.state in _ENDED, timeout_s=120
    )
    assert sftp_logged.pid is not None, "sshd is not running"
    with stopped_process_tree(sftp_logged.pid):
        await sftp_client.cancel(transfer)
        ended = await wait_for_status(
            sftp_client,
            transfer,
            lambda s: s.state in (TransferState.cancelled, TransferState.failed),
            timeout_s=ENDS_WITHIN_S,
            interval_s=1.0,
        )
        # said while the server was still stopped: the clean-up cannot have removed
        # anything
        assert ended.state == TransferState.cancelled, ended
        assert ended.left_behind is not None, ended
        assert str(out) in ended.left_behind, ended.left_behind
        durable = render.durable_text(ended)
        assert "removed" not in durable, durable
    assert not target.exists(), "a cancelled upload published its destination"
    leftovers = sorted(p.name for p in out.iterdir())
    # once the server answers again, nothing but what left_behind named may be there
    for name in leftovers:
        assert name in ended.left_behind or ".staccato" in name, (name, ended.left_behind)
