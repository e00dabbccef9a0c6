"""``cp``'s last line after a ``staccato cancel`` during an sshd stall says the bytes the
ended run's ``status`` says (tester, F5: the last line read 112 MiB while ``status``
read 64 MiB). A real ``staccato cp`` (stderr a pipe: one line per status) to a file ->
SFTP upload, sshd and its session processes SIGSTOPped mid-copy, then a cancel; the
rule: what is reported matches the run's committed state, one implementation with
``status``. Server: ``sftp_logged``, stopped and resumed (in a ``finally``); a real
worker.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from staccato import units
from staccato.client import StaccatoClient
from staccato.errors import TransferNotFoundError
from staccato.ids import transfer_id
from staccato.models import TransferState
from tests.helpers import MiB, run_cli, stopped_process_tree, write_random
from tests.servers.sshd import SshdServer

SIZE = 64 * MiB
#: paced so the copy lasts ~16 s and the server can be stopped mid-copy
CP_OPTIONS = ("--chunk-size", "8MiB", "--streams", "2", "--max-rate", "4MiB")
#: the cancelled run's clean-up window (``STACCATO_CLEANUP_FOR_S`` of the ``cp``: its
#: clean-up tries the frozen server this long plus one 10 s backoff), shorter than the
#: production 30 s and long enough for more than :data:`_CLEANUP_LINES` lines in it
CLEANUP_FOR_S = 10
#: a correctness bound, not a speed one (the cancelled run's clean-up gives up on the
#: frozen server within its window)
ENDS_WITHIN_S = 240.0
_ENDED = (TransferState.completed, TransferState.failed, TransferState.cancelled)
#: ``cancelled: 24.0 MiB / 64.0 MiB ...`` (render.plain_line) and ``... was cancelled
#: (...) after 24.0 MiB of 64.0 MiB`` (client.cancelled_text)
_LINE_BYTES = re.compile(r"^cancell(?:ed|ing): (?P<done>[0-9.]+ [KMGT]?i?B) /")
#: the progress lines at the end that fall in the cancelled run's clean-up (it tries the
#: frozen server CLEANUP_FOR_S + 10 s, a line every 2 s)
_CLEANUP_LINES = 5
_END_BYTES = re.compile(r"was cancelled .* after (?P<done>[0-9.]+ [KMGT]?i?B) of ")


async def _begun(client: StaccatoClient, transfer: str) -> None:
    """Wait (a bound on a condition) until ``cp`` has started ``transfer`` and it has
    moved some bytes, or ended."""
    for _ in range(600):
        try:
            current = await client.status(transfer)
        except TransferNotFoundError:
            await asyncio.sleep(0.2)
            continue
        if current.bytes_done >= 8 * MiB or current.state in _ENDED:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{transfer} did not begin")


async def test_cp_last_line_after_cancel_in_sftp_hang_is_status_bytes(
    temporal_server,
    sftp_client: StaccatoClient,
    sftp_logged: SshdServer,
    data_dir: Path,
) -> None:
    source = data_dir / "cancel-hang-line.bin"
    write_random(source, SIZE, seed=165)
    out = data_dir / "cancel-hang-line-out"
    out.mkdir()
    destination = sftp_logged.url(str(out / "cancel-hang-line.bin"))
    transfer = transfer_id(destination)
    cp = asyncio.ensure_future(
        asyncio.to_thread(
            run_cli,
            "cp",
            *CP_OPTIONS,
            str(source),
            destination,
            address=temporal_server.address,
            task_queue=sftp_client.task_queue,
            env={"STACCATO_CLEANUP_FOR_S": str(CLEANUP_FOR_S)},
            timeout_s=ENDS_WITHIN_S + 120,
        )
    )
    try:
        await _begun(sftp_client, transfer)
        assert sftp_logged.pid is not None, "sshd is not running"
        with stopped_process_tree(sftp_logged.pid):
            await sftp_client.cancel(transfer)
            done = await asyncio.wait_for(asyncio.shield(cp), ENDS_WITHIN_S)
            ended = await sftp_client.status(transfer)
    finally:
        await asyncio.gather(cp, return_exceptions=True)
    assert ended.state == TransferState.cancelled, ended
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    shown = units.size(ended.bytes_done)
    # the last progress line and the end line: both the ended run's bytes; so are the
    # `cancelling` lines while its clean-up tries the frozen server (20 s, a line
    # every 2 s: the last few lines before the end). They read 0 B once the
    # streams had stopped, then the end said 7.4 MiB (the tester's: 112 MiB, then 64)
    progress = [m["done"] for line in lines if (m := _LINE_BYTES.match(line))]
    assert len(progress) > _CLEANUP_LINES, done.stderr
    assert progress[-1] == shown, (progress, ended, done.stderr)
    assert progress[-_CLEANUP_LINES:] == [shown] * _CLEANUP_LINES, (progress, ended)
    end = [m["done"] for line in lines if (m := _END_BYTES.search(line))]
    assert end == [shown], (end, ended, done.stderr)
