"""The file driver's write session against tampering (a real file system, no mocks):
publish must never pass off anything but this session's complete, unaltered temp file.

What every driver must do (a missing temp never taken for published, publish retried
after the rename, a stale writer stopped) is the driver contract, tests/contract; here
is what only the file driver can see (holes in a temp file, its journal removed alone)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from staccato import checksums
from staccato.endpoints import get_driver
from staccato.errors import WriteSessionLost
from staccato.models import WriteSession
from staccato.urls import parse_url

CHUNK = 64 * 1024
SIZE = 4 * CHUNK


def _written_session(tmp_path: Path, data: bytes) -> WriteSession:
    driver = get_driver("file")
    session = driver.open_session(parse_url(str(tmp_path / "out.bin")), SIZE, CHUNK, "t-file")
    with driver.open_writer(session) as writer:
        for index in range(SIZE // CHUNK):
            chunk = memoryview(data)[index * CHUNK : (index + 1) * CHUNK]
            writer.write_chunk(index, chunk, checksums.checksum_bytes("crc32c", chunk))
    return session


def test_truncated_and_rewritten_temp_is_not_published(tmp_path: Path) -> None:
    """Truncated after its chunks were written (then grown back to size: holes of
    zeros): publish reads it back, sees the damage, and refuses."""
    session = _written_session(tmp_path, os.urandom(SIZE))
    os.truncate(session.session_id, 0)
    os.truncate(session.session_id, SIZE)
    with pytest.raises(WriteSessionLost, match="no longer match"):
        get_driver("file").publish(session)
    assert not (tmp_path / "out.bin").exists()


@pytest.mark.parametrize("what", ["temp", "journal", "truncate"])
def test_writer_stops_when_its_files_are_tampered_with(tmp_path: Path, what: str) -> None:
    driver = get_driver("file")
    session = driver.open_session(parse_url(str(tmp_path / "out.bin")), SIZE, CHUNK, "t-file")
    chunk = memoryview(os.urandom(CHUNK))
    digest = checksums.checksum_bytes("crc32c", chunk)
    with driver.open_writer(session) as writer:
        writer.write_chunk(0, chunk, digest)
        if what == "temp":
            os.unlink(session.session_id)
        elif what == "journal":
            os.unlink(session.data["journal"])
        else:
            os.truncate(session.session_id, CHUNK)
        with pytest.raises(WriteSessionLost):
            writer.write_chunk(1, chunk, digest)
