"""A file -> SFTP transfer terminated by hand (the SDK's ``terminate()``, as
``temporal workflow terminate``) runs no clean-up: its temp file, journal and writers
directory stay on the server (tester F4: and ``status`` said nothing). ``status`` of
the terminated run names them (``left_behind``, "may be left": an SFTP server's files
are not looked at from the client), and the same transfer again removes them and
publishes the whole file. Real sshd (``sftp_logged``) and worker; the copy paced
(``max_rate``) so the terminate lands mid-copy. The file case:
``tests/test_terminated_leftovers.py``."""

from __future__ import annotations

from pathlib import Path

from staccato.client import StaccatoClient
from staccato.models import TransferOptions, TransferState
from tests.helpers import MiB, leftovers, sha256_file, wait_for_status, write_random
from tests.servers.sshd import SshdServer

SIZE = 16 * MiB
#: ~8 s at 2 MiB/s: a terminate after 2 MiB lands well before the end
OPTIONS = TransferOptions(chunk_size=2 * MiB, streams=2, max_rate=2 * MiB)
_ENDED = (TransferState.completed, TransferState.failed, TransferState.cancelled)


async def test_terminated_sftp_upload_names_its_temp_file_and_next_one_sweeps_it(
    sftp_client: StaccatoClient, sftp_logged: SshdServer, data_dir: Path
) -> None:
    source = data_dir / "terminated.bin"
    write_random(source, SIZE, seed=172)
    out = data_dir / "out"
    out.mkdir()
    target = out / "terminated.bin"
    destination = sftp_logged.url(str(target))
    transfer = await sftp_client.submit(str(source), destination, OPTIONS)
    await wait_for_status(
        sftp_client,
        transfer,
        lambda s: s.bytes_done >= 2 * MiB or s.state in _ENDED,
        timeout_s=120,
    )
    assert (await sftp_client.status(transfer)).state == TransferState.running
    run_id = sftp_client.submitted_run(transfer)
    assert run_id is not None
    handle = sftp_client.temporal.get_workflow_handle(transfer, run_id=run_id)
    await handle.terminate("test: F4")
    left = leftovers(out)
    assert any(name.endswith(".staccato-part") for name in left), left
    ended = await sftp_client.status(transfer, run_id=run_id)
    assert ended.state == TransferState.failed, ended
    assert ended.left_behind is not None, (ended, left)
    assert "terminated" in ended.left_behind, ended.left_behind
    for name in left:
        if name.endswith((".staccato-part", ".staccato-journal")):
            assert str(out / name) in ended.left_behind, (name, ended.left_behind)

    again = await sftp_client.submit(
        str(source), destination, OPTIONS.model_copy(update={"max_rate": None})
    )
    await sftp_client.wait(again)
    assert sha256_file(target) == sha256_file(source)
    assert leftovers(out) == [], leftovers(out)
