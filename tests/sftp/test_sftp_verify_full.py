"""An SFTP destination's temp file damaged while its lone stream still writes
(docs/architecture.md, "Reading every byte back before publish"): ``--verify
checksum`` has the server hash the temp file before publish, so the damage fails the
transfer and nothing is published. ``--verify full`` is refused for SFTP (the
protocol gives no change time, so a write after the read-back would be published:
tester71); its refusal is tested in tests/test_verify_full.py.

Scene: file -> sftp, one stream (one segment), 4 MiB chunks paced at 8 MiB/s; once
chunk 0 is journaled, 8 bytes of it are overwritten in the temp file while the stream
writes on.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from staccato.client import StaccatoClient
from staccato.endpoints.sftp.journal import parse_records
from staccato.models import TransferOptions, TransferState, VerifyMode
from tests.helpers import MiB, at_rest, wait_for_status, write_random
from tests.servers.sshd import SshdServer

CHUNK = 4 * MiB
SIZE = 8 * CHUNK


async def test_a_lone_segment_damaged_while_writing_fails_the_checksum_level(
    sftp_client: StaccatoClient,
    sftp_exec_logged: SshdServer,
    data_dir: Path,
) -> None:
    verify = VerifyMode.checksum
    source = data_dir / "src.bin"
    write_random(source, SIZE, seed=71)
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
    ended = await wait_for_status(
        sftp_client, transfer, lambda s: s.state == TransferState.failed, timeout_s=180
    )
    assert ended.error is not None and "checksum" in ended.error, ended.error
    assert not destination.exists()
