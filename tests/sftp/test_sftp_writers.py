"""No handle a writer opened on an SFTP temp file leads to the published file
(:mod:`staccato.endpoints.sftp.writers`).

A writer's requests may be carried out by the server after its stream lost its
segment and the file was published: those already in the kernel's socket queues when
its worker froze (``tests/sftp/test_sftp_zombie.py`` makes that happen with real
processes). Here a writer that never closed its handle sends a write request of
*other* bytes (another version of the source) after publish, as the server would carry
out a queued one: the published file keeps its bytes, inode, mtime and ctime. With
every writer closed, publish renames the temp file itself (no second pass over the
data).
"""

from __future__ import annotations

import os
from pathlib import Path

from staccato import checksums
from staccato.endpoints import get_driver
from staccato.endpoints.sftp.pipeline import write_at
from staccato.endpoints.sftp.streams import SFTPChunkWriter
from staccato.urls import parse_url
from tests.helpers import leftovers
from tests.servers.sshd import SshdServer

CHUNK = 256 * 1024


def _fresh_copies(log: Path, name: str) -> int:
    """Requests on fresh copies of ``name``'s sessions in the server's log."""
    return sum(
        f".{name}." in line and ".staccato-fresh" in line for line in log.read_text().splitlines()
    )


def _write_all(driver, session, data: bytes) -> None:  # type: ignore[no-untyped-def]
    with driver.open_writer(session) as writer:
        for index in range(len(data) // CHUNK):
            piece = memoryview(data)[index * CHUNK : (index + 1) * CHUNK]
            writer.write_chunk(index, piece, checksums.checksum_bytes("crc32c", piece))


def test_a_lost_writers_late_request_misses_the_published_file(
    logged_driver_env: Path, sftp_logged: SshdServer, sftp_log: Path, data_dir: Path
) -> None:
    driver = get_driver("sftp")
    target = data_dir / "lost-writer.bin"
    url = parse_url(sftp_logged.url(str(target)))
    data = os.urandom(4 * CHUNK)
    session = driver.open_session(url, len(data), CHUNK, "t-lost-writer")
    # registered and holding a handle on the temp file: a stream whose worker froze
    lost = driver.open_writer(session)
    assert isinstance(lost, SFTPChunkWriter)
    _write_all(driver, session, data)  # the attempt that took its segment over
    driver.publish(session)
    published = target.stat()
    assert target.read_bytes() == data
    # a request the lost writer had sent before it lost its segment, carried out now:
    # bytes of another version of the source
    assert lost._connection is not None and lost._handle is not None
    write_at(lost._connection.sftp, lost._handle, 0, memoryview(b"stale" * CHUNK))
    lost._connection.sftp.fsync_handle(lost._handle)
    after = target.stat()
    assert target.read_bytes() == data, "a lost writer's request changed the published file"
    assert (after.st_ino, after.st_mtime_ns, after.st_ctime_ns) == (
        published.st_ino,
        published.st_mtime_ns,
        published.st_ctime_ns,
    )
    lost.close()
    assert leftovers(data_dir) == []
    assert _fresh_copies(sftp_log, "lost-writer.bin") > 0  # published a fresh copy


def test_publish_renames_the_temp_file_when_every_writer_closed(
    logged_driver_env: Path, sftp_logged: SshdServer, sftp_log: Path, data_dir: Path
) -> None:
    driver = get_driver("sftp")
    target = data_dir / "closed-writers.bin"
    url = parse_url(sftp_logged.url(str(target)))
    data = os.urandom(4 * CHUNK)
    session = driver.open_session(url, len(data), CHUNK, "t-closed-writers")
    _write_all(driver, session, data[: 2 * CHUNK] + bytes(2 * CHUNK))  # chunks 0, 1 count
    _write_all(driver, session, data)
    driver.publish(session)
    assert target.read_bytes() == data
    assert leftovers(data_dir) == []
    assert f'posix-rename old "{session.data["temp"]}"' in sftp_log.read_text()
    assert _fresh_copies(sftp_log, "closed-writers.bin") == 0
