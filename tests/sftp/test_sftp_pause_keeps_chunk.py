"""A pause inside a chunk to an SFTP destination keeps the bytes each stream read of
it (written, fsynced, a partial record in the journal), the paused status counts
them, and the resumed streams read that prefix back from the server, check it, and
ask the source only for the rest (``tests/test_pause_keeps_chunk.py`` for a local
file, where it also holds with no worker). Before, the pause lost every chunk in
flight: 0 B while paused, each chunk sent again from its start."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from staccato.cli import render
from staccato.client import StaccatoClient
from staccato.endpoints.sftp.journal import JOURNAL_RECORD_BYTES
from staccato.models import TransferOptions, TransferState
from tests.helpers import (
    IN_FLIGHT_PER_STREAM,
    MiB,
    at_rest,
    leftovers,
    sha256_file,
    wait_for_status,
    write_random,
)
from tests.servers.nginx import NginxServer, nginx_fixture

CHUNK = 16 * MiB
STREAMS = 4
SIZE = STREAMS * CHUNK  # one chunk per stream
OPTIONS = TransferOptions(chunk_size=CHUNK, streams=STREAMS, heartbeat_timeout_s=5)
PAUSE_AT = 16 * MiB  # ~4 MiB of each chunk
#: what the source may send again in all: the bytes in the sockets and the readers'
#: buffers when the pause stopped the streams (a chunk per stream was 64 MiB here)
RESENT_BOUND = STREAMS * IN_FLIGHT_PER_STREAM

# each connection at 2 MB/s: a chunk takes ~8 s, so the pause lands inside it
paced_nginx = nginx_fixture("http_root", scope="function", extra_server_config="limit_rate 2m;")


def _kept_in_journal(data: bytes) -> int:
    """Bytes the journal's partial records (``p index length checksum crc32``) keep."""
    kept: dict[int, int] = {}
    for start in range(0, len(data), JOURNAL_RECORD_BYTES):
        fields = data[start : start + JOURNAL_RECORD_BYTES].decode("ascii", "replace").split()
        if len(fields) == 5 and fields[0] == "p":
            kept[int(fields[1])] = int(fields[2])
    return sum(kept.values())


async def test_a_pause_inside_a_chunk_to_sftp_keeps_what_the_streams_read_of_it(
    sftp_client: StaccatoClient,
    sftp_url,
    paced_nginx: NginxServer,
    http_root: Path,
    data_dir: Path,
) -> None:
    source = http_root / "keep-sftp.bin"
    write_random(source, SIZE, seed=78)
    at_rest(source)
    destination = data_dir / "keep.bin"
    transfer = await sftp_client.submit(
        paced_nginx.url("keep-sftp.bin"), sftp_url(destination), OPTIONS
    )
    deadline = time.monotonic() + 120
    while (before := await sftp_client.status(transfer)).bytes_done < PAUSE_AT:
        assert before.state in (TransferState.scheduled, TransferState.running), before
        assert time.monotonic() < deadline, before
        await asyncio.sleep(0.1)
    await sftp_client.pause(transfer)
    handle = sftp_client.temporal.get_workflow_handle(transfer)
    deadline = time.monotonic() + 60
    while "bytes_paused" not in (memo := await (await handle.describe()).memo()):
        assert time.monotonic() < deadline, memo
        await asyncio.sleep(0.1)
    held = await wait_for_status(
        sftp_client, transfer, lambda s: s.state == TransferState.paused, timeout_s=30
    )
    (journal,) = [p for p in data_dir.iterdir() if p.name.endswith(".staccato-journal")]
    kept = _kept_in_journal(journal.read_bytes())
    await sftp_client.resume(transfer)
    result = await asyncio.wait_for(sftp_client.wait(transfer), 180)
    # the check before publish is every SFTP copy's, not the resume's (tester75)
    verified = render.verify_level_text(await sftp_client.status(transfer))
    assert verified.startswith("checksum: temp file checked against the source's"), verified
    assert "hashed on the server" in verified and "paused" not in verified, verified
    sent = paced_nginx.bytes_sent()
    resent = sent - SIZE
    numbers = (
        f"before the pause {before.bytes_done} B shown; paused: {held.bytes_done} B, "
        f"{kept} B kept in the journal; the source sent {sent} B: {resent} B again"
    )
    print(numbers)
    assert held.bytes_done >= before.bytes_done, numbers
    assert held.bytes_done == memo["bytes_paused"] == kept, numbers
    assert result.bytes == SIZE
    assert 0 <= resent <= RESENT_BOUND, numbers
    assert sha256_file(destination) == sha256_file(source)
    assert leftovers(data_dir) == []
