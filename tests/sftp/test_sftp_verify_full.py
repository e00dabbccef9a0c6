"""``--verify full`` to an SFTP destination (docs/architecture.md, "Reading every byte
back before publish"): the temp file is checked per segment before publish, as with
``checksum``, and a lone segment too, so a chunk damaged while its stream still
writes is copied again rather than failing the transfer.

Scene: file -> sftp, one stream (one segment), 4 MiB chunks paced at 8 MiB/s; once
chunk 0 is journaled, 8 bytes of it are overwritten in the temp file while the stream
writes on. ``full``: the server's hash finds the damage, the segment is copied again
(only chunk 0 re-sent: the stream's journal check drops it), the published file is
the source. ``checksum``: the whole-object verify of the lone segment fails the
transfer, nothing published. On the old code ``VerifyMode.full`` does not exist.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType

from staccato.client import StaccatoClient
from staccato.endpoints.sftp.journal import parse_records
from staccato.models import TransferOptions, TransferState, VerifyMode
from tests.helpers import MiB, at_rest, sha256_file, wait_for_status, write_random
from tests.servers.sshd import SshdServer

CHUNK = 4 * MiB
SIZE = 8 * CHUNK


def _scheduled(history: object, activity_type: str) -> int:
    return sum(
        1
        for e in history.events  # type: ignore[attr-defined]
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == activity_type
    )


@pytest.mark.parametrize("verify", [VerifyMode.full, VerifyMode.checksum])
async def test_lone_segment_damaged_while_writing(
    sftp_client: StaccatoClient,
    sftp_exec_logged: SshdServer,
    data_dir: Path,
    verify: VerifyMode,
) -> None:
    source = data_dir / "src.bin"
    digest = write_random(source, SIZE, seed=71)
    at_rest(source)
    out = data_dir / "out"
    out.mkdir()
    destination = out / "dst.bin"
    options = TransferOptions(
        streams=1, chunk_size=CHUNK, max_rate=8 * MiB, heartbeat_timeout_s=60, verify=verify
    )
    transfer = await sftp_client.submit(
        str(source), sftp_exec_logged.url(str(destination)), options
    )
    chunks = SIZE // CHUNK
    deadline = time.monotonic() + 120
    while True:
        assert time.monotonic() < deadline, "chunk 0 was not journaled in 120 s"
        journals = [p for p in out.iterdir() if p.name.endswith(".staccato-journal")]
        records = parse_records(journals[0].read_bytes(), chunks) if journals else {}
        if 0 in records:
            break
        await asyncio.sleep(0.02)
    assert len(records) < chunks, "every chunk was journaled before the damage"
    (temp,) = [p for p in out.iterdir() if p.name.endswith(".staccato-part")]
    with open(temp, "r+b") as handle:
        handle.seek(100)
        handle.write(b"ZZZZZZZZ")
    history_handle = sftp_client.temporal.get_workflow_handle(transfer)
    if verify == VerifyMode.full:
        result = await asyncio.wait_for(sftp_client.wait(transfer), 180)
        assert result.bytes == SIZE
        assert result.verified == VerifyMode.full
        assert sha256_file(destination) == digest
        history = await history_handle.fetch_history()
        assert _scheduled(history, "copy_stream") == 2  # the segment copied again
        assert _scheduled(history, "verify") == 2
    else:
        ended = await wait_for_status(
            sftp_client, transfer, lambda s: s.state == TransferState.failed, timeout_s=180
        )
        assert ended.error is not None and "checksum" in ended.error, ended.error
        assert not destination.exists()
