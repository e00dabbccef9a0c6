"""Reading and writing the bytes of an ``sftp`` transfer: :class:`SFTPReader` (a
pinned remote file's range, pipelined, re-checking the pinned size and mtime after
every buffer) and :class:`SFTPChunkWriter` (a write session's chunks, written
positionally and pipelined into the temp file, fsynced, then recorded in the journal).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from paramiko.sftp_attr import SFTPAttributes

from staccato.checksums import posix_cksum
from staccato.endpoints.base import ChunkWriter, Reader
from staccato.endpoints.sftp.connection import Connection, guarded
from staccato.endpoints.sftp.files import mapped, short_of_space, stat_or_none
from staccato.endpoints.sftp.journal import (
    CKSUM,
    JOURNAL_RECORD_BYTES,
    ServerHash,
    hash_record,
    hash_slot,
    journal_record,
    partial_record,
    partial_slot,
)
from staccato.endpoints.sftp.pipeline import (
    ReadPipeline,
    SourceEnded,
    SourceLonger,
    write_at,
    write_records,
)
from staccato.endpoints.sftp.pool import POOL
from staccato.endpoints.sftp.protocol import FX_NO_SUCH_FILE, FXF_READ, FXF_WRITE, StatusError
from staccato.endpoints.sftp.ssh import SSHHost, resolve
from staccato.endpoints.sftp.writers import deregister, register
from staccato.errors import SourceChanged, WriteSessionLost
from staccato.models import ObjectInfo, WriteSession
from staccato.plan import chunk_count
from staccato.urls import EndpointURL, parse_url

log = logging.getLogger("staccato.sftp")

READ_CALL_BYTES = 16 * 1024 * 1024  # most bytes one Reader.readinto call returns


class SFTPReader(Reader):
    """Pipelined reads of ``[offset, offset+length)`` of a pinned remote file."""

    def __init__(
        self, url: EndpointURL, target: SSHHost, info: ObjectInfo, offset: int, length: int
    ) -> None:
        self._url = url
        self._info = info
        self._connection: Connection | None = POOL.acquire(target)
        self._handle: bytes | None = None
        try:
            with mapped(f"source {url}"), guarded(self._connection):
                sftp = self._connection.sftp
                try:
                    self._handle = sftp.open_handle(url.path, FXF_READ)
                except StatusError as err:
                    if err.code == FX_NO_SUCH_FILE:
                        raise SourceChanged(
                            f"source changed: {url} was removed during the transfer"
                        ) from None
                    raise
                self._check(sftp.fstat_handle(self._handle))
                end = offset + length
                self._pipe = ReadPipeline(
                    sftp, self._handle, offset, end, probe_eof=end == info.size
                )
        except BaseException:
            self.close()
            raise

    def _check(self, attrs: SFTPAttributes) -> None:
        pinned_size = int(self._info.extra.get("stat_size", self._info.size))
        pinned_mtime = self._info.extra.get("mtime")
        if attrs.st_size != pinned_size:
            raise SourceChanged(
                f"source changed during the transfer: {self._url} now has size "
                f"{attrs.st_size} bytes (was {pinned_size})"
            )
        if pinned_mtime is not None and str(attrs.st_mtime) != pinned_mtime:
            raise SourceChanged(
                f"source changed during the transfer: {self._url} has a new modification "
                f"time ({attrs.st_mtime}, was {pinned_mtime}; same size)"
            )

    def readinto(self, buffer: memoryview) -> int:
        """Up to ``READ_CALL_BYTES`` (16 MiB) per call, whatever the buffer's size: the
        caller heartbeats between calls."""
        assert self._connection is not None and self._handle is not None
        buffer = buffer[:READ_CALL_BYTES]
        with mapped(f"source {self._url}"), guarded(self._connection):
            try:
                n = self._pipe.readinto(buffer)
            except SourceEnded as ended:
                raise SourceChanged(
                    f"source changed: {self._url} ended at byte {ended.at}, expected {self._info.size} bytes"
                ) from None
            except SourceLonger:
                raise SourceChanged(
                    f"source changed: {self._url} has more than the {self._info.size} bytes it had when "
                    "the transfer started (it grew, or its size was reported wrongly)"
                ) from None
            self.bytes_read += n
            if n:
                self._check(self._connection.sftp.fstat_handle(self._handle))
        return n

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            if self._handle is not None and connection.alive():
                with guarded(connection):
                    connection.sftp.close_handle(self._handle)
        except Exception as err:
            # answers still in flight: do not reuse this connection
            log.info(
                "closing the source handle of %s failed (%r): dropping the connection",
                self._url,
                err,
            )
            connection.broken = True
        finally:
            POOL.release(connection)


def _server_hash(data: memoryview) -> ServerHash:
    """What the server's ``cksum`` must print for ``data`` (the hash record's hash)."""
    return ServerHash(CKSUM, str(posix_cksum(data)))


class SFTPChunkWriter(ChunkWriter):
    """Pipelined positional writes into a session's temp file; one fsync + journal line
    per chunk, written with a hash record holding the CRC POSIX ``cksum`` prints for the
    bytes written (:func:`~staccato.checksums.posix_cksum`), computed from the very
    buffer that is sent (the one the stream checksummed), so verify can have the server
    run ``cksum`` on the temp file instead of reading it back
    (:meth:`~staccato.endpoints.sftp.driver.SFTPDriver.segments_checksum`)."""

    def __init__(self, session: WriteSession) -> None:
        self._url = parse_url(session.url)
        self._temp = session.data["temp"]
        self._journal_path = session.data["journal"]
        self._chunk_size = session.chunk_size
        self._chunks = chunk_count(session.size, session.chunk_size)
        self._size = session.size
        self._handle: bytes | None = None
        self._journal: bytes | None = None
        self._hasher: ThreadPoolExecutor | None = None
        #: this writer's entry in the session's writers directory (registered before
        #: the temp file is opened, removed once its handles are closed: publish tells
        #: by it whether a handle on the temp file may still write; see
        #: :mod:`~staccato.endpoints.sftp.writers`)
        self._entry: str | None = None
        self._connection: Connection | None = POOL.acquire(resolve(self._url))
        try:
            with (
                mapped(f"destination {self._url} (temp file {self._temp})"),
                guarded(self._connection),
            ):
                sftp = self._connection.sftp
                self._entry = register(sftp, self._temp)
                try:
                    self._handle = sftp.open_handle(self._temp, FXF_WRITE)
                    self._journal = sftp.open_handle(self._journal_path, FXF_WRITE)
                except StatusError as err:
                    if err.code == FX_NO_SUCH_FILE:
                        raise WriteSessionLost(
                            f"write session {self._temp} is gone (deleted, or published or aborted by another attempt)"
                        ) from None
                    raise
        except BaseException:
            self.close()
            raise

    def write_chunk(self, index: int, data: memoryview, checksum: str) -> None:
        assert (
            self._connection is not None and self._handle is not None and self._journal is not None
        )
        sftp = self._connection.sftp
        with (
            mapped(f"destination {self._url} (temp file {self._temp})"),
            guarded(self._connection),
        ):
            if stat_or_none(sftp, self._temp) is None:
                raise WriteSessionLost(
                    f"write session {self._temp} is gone (deleted, or published by another attempt); stopping this writer"
                )
            # a 64-hex-digit checksum is the chunk's SHA-256 already (--checksum sha256);
            # else hashed beside the writes (fastcrc lets go of the GIL) from the same
            # buffer, which nothing changes until this returns
            hashed = None
            if len(checksum) != 64:
                if self._hasher is None:
                    self._hasher = ThreadPoolExecutor(1, thread_name_prefix="staccato-sftp-hash")
                hashed = self._hasher.submit(_server_hash, data)
            try:
                write_at(sftp, self._handle, index * self._chunk_size, data)
                sftp.fsync_handle(self._handle)
            except StatusError as err:
                # a generic failure may be a full disk: ask the server's free space
                full = short_of_space(
                    sftp,
                    err,
                    self._temp,
                    len(data),
                    f"destination {self._url} (temp file {self._temp})",
                    self._size,
                )
                if full is None:
                    raise
                raise full from None
            finally:
                server_hash = hashed.result() if hashed is not None else None
            records = [(index * JOURNAL_RECORD_BYTES, journal_record(index, checksum))]
            if server_hash is not None:
                slot = hash_slot(index, self._chunks)
                records.insert(
                    0, (slot * JOURNAL_RECORD_BYTES, hash_record(index, checksum, server_hash))
                )
            write_records(sftp, self._journal, records)

    def write_partial(self, index: int, data: memoryview, checksum: str) -> bool:
        """Write the first ``len(data)`` bytes of chunk ``index`` and fsync them, then
        the chunk's partial record (:func:`~staccato.endpoints.sftp.journal.partial_record`;
        the order of a chunk record). ``SFTPDriver.partial_chunk`` reads the bytes back
        and checks them before a resumed stream builds on them."""
        assert (
            self._connection is not None and self._handle is not None and self._journal is not None
        )
        sftp = self._connection.sftp
        with (
            mapped(f"destination {self._url} (temp file {self._temp})"),
            guarded(self._connection),
        ):
            if stat_or_none(sftp, self._temp) is None:
                raise WriteSessionLost(
                    f"write session {self._temp} is gone (deleted, or published by another attempt); stopping this writer"
                )
            record = partial_record(index, len(data), checksum)
            write_at(sftp, self._handle, index * self._chunk_size, data)
            sftp.fsync_handle(self._handle)
            slot = partial_slot(index, self._chunks)
            write_records(sftp, self._journal, [(slot * JOURNAL_RECORD_BYTES, record)])
        return True

    def close(self) -> None:
        hasher, self._hasher = self._hasher, None
        if hasher is not None:
            hasher.shutdown(wait=True)
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            if connection.alive():
                with guarded(connection):
                    for handle in (self._handle, self._journal):
                        if handle is not None:
                            connection.sftp.close_handle(handle)
                    # only now: the server carried out every request sent on them
                    if self._entry is not None:
                        deregister(connection.sftp, self._entry)
        except Exception as err:
            log.info(
                "closing the temp file handles of %s failed (%r): dropping the connection",
                self._temp,
                err,
            )
            connection.broken = True
        finally:
            POOL.release(connection)
