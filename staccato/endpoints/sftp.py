"""The ``sftp`` endpoint: ``sftp://[user@]host[:port]/path`` as source and destination,
over SSH with paramiko (SFTP v3, draft-ietf-secsh-filexfer-02, plus OpenSSH extensions).

Connections, authentication, host keys, the per-host connection cap and the pipelined
reads and writes live in :mod:`staccato.endpoints.sftp_ssh` (settings, ssh config,
known_hosts, keys) and :mod:`staccato.endpoints.sftp_conn` (pool, slots, pipelines);
``docs/sftp.md`` is the user-facing description.

Source: ``stat`` pins size + mtime (SFTP v3 ``ATTRS``: mtime in whole seconds) and
checks, with a 1-byte read at ``size``, that the file really ends there (C10: e.g.
files under ``/proc`` report size 0). If it does not, a small file (up to
``MEASURE_LIMIT_BYTES``) is measured by reading it to its end and copied in one stream;
the end-of-file is checked again when it is copied. Reads are pipelined, re-check the
pinned size + mtime (``FSTAT``) after every buffer, and a range that ends at the
object's end must be followed by ``SSH_FX_EOF``: a file that changed, shrank or grew
fails with ``SourceChanged``.

Destination (DESIGN.md invariants): chunks are written into a temp file beside the
target (``.NAME.<key>.staccato-part``; NAME is cut to 150 bytes and ``<key>`` is 16 hex
digits of the SHA-256 of the transfer id, so the name fits NAME_MAX = 255 bytes
whatever the target's name), positionally and pipelined; after a chunk's
writes are acknowledged the server fsyncs it (``fsync@openssh.com``) and the chunk is
recorded in a journal beside it (``.NAME.<transfer>.staccato-journal``): each chunk
has a fixed-size record at
``index x JOURNAL_RECORD_BYTES`` holding ``index checksum crc32`` (positional writes,
so no reliance on a server honouring ``SSH_FXF_APPEND``; the record's own CRC-32 and
index discard torn or stray bytes), so a resumed stream re-sends only missing
chunks. Publish fsyncs the temp file and renames it over the target with
``posix-rename@openssh.com`` (an atomic ``rename(2)``). Where the server lacks it (or
refuses it) a plain SFTP ``RENAME`` is used when the target does not exist; when it
does (C8: OpenSSH's plain rename refuses to replace), the target is moved aside to
``.NAME.<transfer>.staccato-old``, the temp file renamed in, and the old one removed;
a failure in between moves the old one back. Readers may then see no file for a
moment, never a partial one. Without ``fsync@openssh.com`` chunks are only as durable
as the server's page cache: a worker crash loses nothing, a server OS crash may, and
``verify`` (which re-reads the destination) would catch it.

Proof of publish: SFTP v3 attributes carry no inode, so a publish retried after its
rename (the activity failed before it could report) cannot tell this session's file
from an older one of the same size by its attributes alone. Before the rename, publish
records a *marker* in the journal (a record after the chunk records): the temp file's
mtime, made different from the target's current mtime with ``SETSTAT`` where they
would be equal; ``rename(2)`` keeps the mtime. A missing temp file then counts as
published only when the journal holds the marker and the target has that mtime and
the session's size; otherwise the session is lost (``WriteSessionLost``: the workflow
copies again). A retry after the journal was removed (the very last step) also copies
again: never the old content reported as the new.

A stale writer (an attempt Temporal gave up on) checks before each chunk that the temp
file still exists; after publish or abort it stops with a retryable error. (SFTP v3
has no inode numbers, so the check is by name.)
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import stat as stat_module
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar
from urllib.parse import quote

from paramiko.sftp_attr import SFTPAttributes

from staccato.endpoints.base import ChunkWriter, Driver, Reader
from staccato.endpoints.sftp_conn import (
    FX_NO_SUCH_FILE,
    FXF_CREAT,
    FXF_READ,
    FXF_WRITE,
    POOL,
    Connection,
    SourceEnded,
    SourceLonger,
    StaccatoSFTP,
    StatusError,
    guarded,
    run,
    status_error,
)
from staccato.endpoints.sftp_ssh import Target, resolve
from staccato.errors import (
    DestinationMissing,
    IsADirectory,
    NotFound,
    PermanentError,
    SourceChanged,
    StaccatoError,
    WriteSessionLost,
)
from staccato.models import ObjectInfo, WriteSession
from staccato.plan import chunk_count
from staccato.urls import EndpointURL, parse_url

T = TypeVar("T")
log = logging.getLogger("staccato.sftp")

_TEMP_SUFFIX = ".staccato-part"
_JOURNAL_SUFFIX = ".staccato-journal"
_BACKUP_SUFFIX = ".staccato-old"
MEASURE_LIMIT_BYTES = (
    64 * 1024 * 1024
)  # C10: largest file measured by reading when its stat size is wrong
_MEASURE_BUFFER = 1024 * 1024
JOURNAL_RECORD_BYTES = 128  # per chunk: index (<= 20), checksum (<= 64 hex), crc32 (8)
READ_CALL_BYTES = 16 * 1024 * 1024  # most bytes one Reader.readinto call returns
_NAME_BYTES = 150  # of the target's name kept in temp names (+ 42 bytes of key and suffix)
_MARKER = "published-mtime"


def _missing(err: BaseException) -> bool:
    if isinstance(err, StatusError):
        return err.code == FX_NO_SUCH_FILE
    return isinstance(err, FileNotFoundError)


@contextmanager
def _mapped(what: str) -> Iterator[None]:
    """SFTP status errors (and paramiko's IOErrors) -> Staccato errors naming ``what``."""
    try:
        yield
    except StaccatoError:
        raise
    except (StatusError, OSError) as err:
        raise status_error(err, what) from None


def _stat(sftp: StaccatoSFTP, path: str) -> SFTPAttributes | None:
    """``SSH_FXP_STAT`` (follows symlinks); None if there is no such file."""
    try:
        return sftp.stat(path)
    except FileNotFoundError:
        return None


def _journal_record(index: int, checksum: str) -> bytes:
    """The journal record of chunk ``index``: ``index checksum crc32``, space-padded to
    ``JOURNAL_RECORD_BYTES`` with a final newline (readable with ``cat``)."""
    if len(f"{index} {checksum} 00000000") >= JOURNAL_RECORD_BYTES:
        raise PermanentError(f"checksum {checksum!r} does not fit a journal record")
    return _journal_record_text(f"{index} {checksum}")


def _parse_journal(data: bytes, chunks: int) -> dict[int, str]:
    """Durable chunks from journal bytes: valid records in their own slots only (holes
    of never-written slots read as zero bytes and are skipped)."""
    durable: dict[int, str] = {}
    for slot in range(min(chunks, len(data) // JOURNAL_RECORD_BYTES)):
        record = data[slot * JOURNAL_RECORD_BYTES : (slot + 1) * JOURNAL_RECORD_BYTES]
        parts = record.decode("ascii", "replace").split()
        if len(parts) != 3 or parts[0] != str(slot) or not parts[1]:
            continue
        if f"{zlib.crc32(f'{parts[0]} {parts[1]}'.encode()):08x}" == parts[2]:
            durable[slot] = parts[1]
    return durable


def _marker_record(mtime: int) -> bytes:
    """The publish marker record: the mtime (seconds) the published file will have."""
    return _journal_record_text(f"{_MARKER} {mtime}")


def _journal_record_text(body: str) -> bytes:
    text = f"{body} {zlib.crc32(body.encode()):08x}"
    return (text.ljust(JOURNAL_RECORD_BYTES - 1) + "\n").encode()


def _parse_marker(data: bytes, chunks: int) -> int | None:
    """The publish marker's mtime from journal bytes (the slot after the last chunk's),
    or None if there is no valid marker."""
    record = data[chunks * JOURNAL_RECORD_BYTES : (chunks + 1) * JOURNAL_RECORD_BYTES]
    parts = record.decode("ascii", "replace").split()
    if len(parts) != 3 or parts[0] != _MARKER or not parts[1].isdigit():
        return None
    if f"{zlib.crc32(f'{parts[0]} {parts[1]}'.encode()):08x}" != parts[2]:
        return None
    return int(parts[1])


def _read_all(sftp: StaccatoSFTP, path: str) -> bytes | None:
    """The whole (small) file at ``path``; None if it does not exist."""
    try:
        handle = sftp.open_handle(path, FXF_READ)
    except StatusError as err:
        if err.code == FX_NO_SUCH_FILE:
            return None
        raise
    try:
        size = sftp.fstat_handle(handle).st_size or 0
        buffer = bytearray(size)
        pipe = sftp.reader(handle, 0, size, probe_eof=False)
        try:
            filled = pipe.readinto(memoryview(buffer))
        except SourceEnded as ended:
            filled = ended.at
        return bytes(buffer[:filled])
    finally:
        sftp.close_handle(handle)


def _remove_if_exists(sftp: StaccatoSFTP, path: str) -> None:
    try:
        sftp.remove(path)
    except FileNotFoundError:
        pass


def _published(sftp: StaccatoSFTP, paths: dict[str, str], size: int, chunks: int) -> bool:
    """Whether the target provably is this session's temp file, renamed: the journal
    holds the publish marker and the target has its mtime and the session's size."""
    journal = _read_all(sftp, paths["journal"])
    if journal is None:
        return False
    marker = _parse_marker(journal, chunks)
    if marker is None:
        return False
    target = _stat(sftp, paths["path"])
    return (
        target is not None
        and stat_module.S_ISREG(target.st_mode or 0)
        and target.st_size == size
        and target.st_mtime == marker
    )


class SFTPReader(Reader):
    """Pipelined reads of ``[offset, offset+length)`` of a pinned remote file."""

    def __init__(
        self, url: EndpointURL, target: Target, info: ObjectInfo, offset: int, length: int
    ) -> None:
        self._url = url
        self._info = info
        self._connection: Connection | None = POOL.acquire(target)
        self._handle: bytes | None = None
        try:
            with _mapped(f"source {url}"), guarded(self._connection):
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
                self._pipe = sftp.reader(self._handle, offset, end, probe_eof=end == info.size)
        except BaseException:
            self.close()
            raise

    def _check(self, attrs: SFTPAttributes) -> None:
        pinned_size = int(self._info.extra.get("stat_size", self._info.size))
        pinned_mtime = self._info.extra.get("mtime")
        if attrs.st_size != pinned_size or (
            pinned_mtime is not None and str(attrs.st_mtime) != pinned_mtime
        ):
            raise SourceChanged(
                f"source changed during the transfer: {self._url} now has size {attrs.st_size} bytes "
                f"(was {pinned_size}) or a new modification time"
            )

    def readinto(self, buffer: memoryview) -> int:
        """Up to ``READ_CALL_BYTES`` (16 MiB) per call, whatever the buffer's size: the
        caller heartbeats between calls."""
        assert self._connection is not None and self._handle is not None
        buffer = buffer[:READ_CALL_BYTES]
        with _mapped(f"source {self._url}"), guarded(self._connection):
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


class SFTPChunkWriter(ChunkWriter):
    """Pipelined positional writes into a session's temp file; one fsync + journal line
    per chunk."""

    def __init__(self, session: WriteSession) -> None:
        self._url = parse_url(session.url)
        self._temp = session.data["temp"]
        self._journal_path = session.data["journal"]
        self._chunk_size = session.chunk_size
        self._handle: bytes | None = None
        self._journal: bytes | None = None
        self._connection: Connection | None = POOL.acquire(resolve(self._url))
        try:
            with (
                _mapped(f"destination {self._url} (temp file {self._temp})"),
                guarded(self._connection),
            ):
                sftp = self._connection.sftp
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
            _mapped(f"destination {self._url} (temp file {self._temp})"),
            guarded(self._connection),
        ):
            if _stat(sftp, self._temp) is None:
                raise WriteSessionLost(
                    f"write session {self._temp} is gone (deleted, or published by another attempt); stopping this writer"
                )
            sftp.write_at(self._handle, index * self._chunk_size, data)
            sftp.fsync_handle(self._handle)
            record = _journal_record(index, checksum)
            sftp.write_at(self._journal, index * len(record), memoryview(record))

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            if connection.alive():
                with guarded(connection):
                    for handle in (self._handle, self._journal):
                        if handle is not None:
                            connection.sftp.close_handle(handle)
        except Exception as err:
            log.info(
                "closing the temp file handles of %s failed (%r): dropping the connection",
                self._temp,
                err,
            )
            connection.broken = True
        finally:
            POOL.release(connection)


class SFTPDriver(Driver):
    """Driver for ``sftp://`` URLs."""

    scheme = "sftp"

    def _run(self, url: EndpointURL, what: str, fn: Callable[[StaccatoSFTP], T]) -> T:
        target = resolve(url)
        with _mapped(what):
            return run(target, fn)

    # -- source ----------------------------------------------------------------------

    def stat(self, url: EndpointURL) -> ObjectInfo:
        def op(sftp: StaccatoSFTP) -> ObjectInfo:
            attrs = _stat(sftp, url.path)
            if attrs is None:
                raise NotFound(f"source {url}: no such file on the server")
            mode = attrs.st_mode or 0
            if stat_module.S_ISDIR(mode):
                raise IsADirectory(
                    f"source {url} is a directory; name a file (directory transfers are not supported yet)"
                )
            if not stat_module.S_ISREG(mode):
                raise PermanentError(f"source {url} is not a regular file")
            stat_size = attrs.st_size or 0
            mtime = attrs.st_mtime or 0
            size = self._real_size(sftp, url, stat_size)
            if size != stat_size:
                again = _stat(sftp, url.path)
                if again is None or again.st_size != stat_size or again.st_mtime != mtime:
                    raise SourceChanged(f"source changed: {url} is being modified")
            version = f"size={size};mtime={mtime}" + (
                f";stat_size={stat_size}" if size != stat_size else ""
            )
            return ObjectInfo(
                size=size,
                version=version,
                supports_ranges=size == stat_size,
                extra={"mtime": str(mtime), "stat_size": str(stat_size)},
                # SFTP v3 attributes carry whole seconds (draft-ietf-secsh-filexfer-02 5)
                modified_at=float(mtime) if attrs.st_mtime is not None else None,
                mtime_resolution_s=1.0,
            )

        return self._run(url, f"source {url}", op)

    def _real_size(self, sftp: StaccatoSFTP, url: EndpointURL, stat_size: int) -> int:
        """``stat_size`` if the file ends there (1-byte read answers EOF), else its
        length measured by reading it (C10), up to ``MEASURE_LIMIT_BYTES``."""
        handle = sftp.open_handle(url.path, FXF_READ)
        try:
            try:
                sftp.reader(handle, stat_size, stat_size, probe_eof=True).readinto(
                    memoryview(bytearray(1))
                )
                return stat_size
            except SourceLonger:
                pass
            buffer = memoryview(bytearray(_MEASURE_BUFFER))
            pipe = sftp.reader(handle, 0, MEASURE_LIMIT_BYTES, probe_eof=True)
            try:
                while pipe.readinto(buffer):
                    pass
            except SourceEnded as ended:
                pipe.drain()
                return ended.at
            except SourceLonger:
                pass
            raise PermanentError(
                f"source {url}: the server reports {stat_size} bytes but the file is longer than "
                f"{MEASURE_LIMIT_BYTES} bytes (a file whose size the server cannot tell, or one "
                "being written to); copy it to a regular file first"
            )
        finally:
            sftp.close_handle(handle)

    def open_read(self, url: EndpointURL, info: ObjectInfo, offset: int, length: int) -> Reader:
        return SFTPReader(url, resolve(url), info, offset, length)

    # -- destination -----------------------------------------------------------------

    def _check_destination(self, sftp: StaccatoSFTP, url: EndpointURL) -> None:
        parent = posixpath.dirname(url.path) or "/"
        parent_attrs = _stat(sftp, parent)
        if parent_attrs is None:
            raise DestinationMissing(
                f"destination directory {parent} does not exist on {url.host} (for {url}); create it first"
            )
        if not stat_module.S_ISDIR(parent_attrs.st_mode or 0):
            raise DestinationMissing(
                f"destination {parent} on {url.host} is not a directory (for {url})"
            )
        target_attrs = _stat(sftp, url.path)
        if target_attrs is not None and stat_module.S_ISDIR(target_attrs.st_mode or 0):
            raise IsADirectory(
                f"destination {url} is a directory; name the file to write, e.g. {url}/NAME"
            )

    def check_destination(self, url: EndpointURL) -> None:
        self._run(url, f"destination {url}", lambda sftp: self._check_destination(sftp, url))

    @staticmethod
    def _paths(url: EndpointURL, transfer_id: str) -> dict[str, str]:
        directory, name = posixpath.split(url.path)
        # within NAME_MAX (255 bytes) whatever the target's name: 150 bytes of it + key
        key = hashlib.sha256(transfer_id.encode()).hexdigest()[:16]
        short = name.encode()[:_NAME_BYTES].decode(errors="ignore")
        stem = posixpath.join(directory, f".{short}.{key}")
        return {
            "path": url.path,
            "temp": stem + _TEMP_SUFFIX,
            "journal": stem + _JOURNAL_SUFFIX,
            "backup": stem + _BACKUP_SUFFIX,
        }

    def open_session(
        self, url: EndpointURL, size: int, chunk_size: int, transfer_id: str
    ) -> WriteSession:
        paths = self._paths(url, transfer_id)

        def op(sftp: StaccatoSFTP) -> None:
            self._check_destination(sftp, url)
            handle = sftp.open_handle(paths["temp"], FXF_WRITE | FXF_CREAT)
            try:
                if sftp.fstat_handle(handle).st_size != size:
                    try:
                        sftp.truncate_handle(handle, size)
                    except StatusError as err:
                        # servers without FSETSTAT size: the chunk writes give the size
                        log.debug("%s: cannot set the temp file's size (%s)", url, err)
            finally:
                sftp.close_handle(handle)
            sftp.close_handle(sftp.open_handle(paths["journal"], FXF_WRITE | FXF_CREAT))

        self._run(url, f"destination {url}", op)
        return WriteSession(
            url=url.canonical,
            size=size,
            chunk_size=chunk_size,
            session_id=paths["temp"],
            data=paths,
        )

    def open_writer(self, session: WriteSession) -> ChunkWriter:
        return SFTPChunkWriter(session)

    def durable_chunks(
        self, session: WriteSession, first_chunk: int = 0, end_chunk: int | None = None
    ) -> dict[int, str]:
        url = parse_url(session.url)
        data = self._run(
            url, f"destination {url}", lambda sftp: _read_all(sftp, session.data["journal"])
        )
        if data is None:
            return {}
        return _parse_journal(data, chunk_count(session.size, session.chunk_size))

    def session_url(self, session: WriteSession) -> str | None:
        url = parse_url(session.url)
        quoted_path = quote(url.path, safe="/")
        return url.canonical[: len(url.canonical) - len(quoted_path)] + quote(
            session.session_id, safe="/"
        )

    def publish(self, session: WriteSession) -> None:
        url = parse_url(session.url)
        paths = session.data
        chunks = chunk_count(session.size, session.chunk_size)

        def op(sftp: StaccatoSFTP) -> None:
            temp_attrs = _stat(sftp, paths["temp"])
            if temp_attrs is None:
                if _published(sftp, paths, session.size, chunks):
                    # an earlier attempt published it (the activity retried after the rename)
                    _remove_if_exists(sftp, paths["backup"])
                    _remove_if_exists(sftp, paths["journal"])
                    return
                raise WriteSessionLost(
                    f"write session {paths['temp']} is gone and nothing proves that {url} holds "
                    "this transfer's bytes (it was not published by an earlier attempt, or the "
                    "proof was already cleaned up): copying again"
                )
            journal = _read_all(sftp, paths["journal"])
            if journal is None:
                raise WriteSessionLost(
                    f"write session {paths['temp']}: its journal {paths['journal']} was deleted"
                )
            missing = chunks - len(_parse_journal(journal, chunks))
            if missing:
                raise PermanentError(f"refusing to publish {url}: {missing} chunks are not durable")
            if temp_attrs.st_size != session.size:
                raise PermanentError(
                    f"refusing to publish {url}: temp file has {temp_attrs.st_size} bytes, expected {session.size}"
                )
            handle = sftp.open_handle(paths["temp"], FXF_READ)
            try:
                sftp.fsync_handle(handle)
            finally:
                sftp.close_handle(handle)
            self._mark(sftp, paths, temp_attrs, chunks)
            self._replace(sftp, paths)
            _remove_if_exists(sftp, paths["backup"])
            _remove_if_exists(sftp, paths["journal"])

        self._run(url, f"destination {url}", op)

    @staticmethod
    def _mark(
        sftp: StaccatoSFTP, paths: dict[str, str], temp_attrs: SFTPAttributes, chunks: int
    ) -> None:
        """Record the publish marker: the mtime (seconds) the temp file has, made
        different from the current target's (``SETSTAT``, draft-ietf-secsh-filexfer-02
        §6.9) where they are equal, written and fsynced into the journal's slot after
        the chunk records. Without ``SETSTAT`` (refused) no marker is written: a retry
        after the rename then copies again rather than guess."""
        mtime = int(temp_attrs.st_mtime or 0)
        target = _stat(sftp, paths["path"])
        if target is not None and target.st_mtime == mtime:
            mtime += 1
            try:
                sftp.utime(paths["temp"], (int(temp_attrs.st_atime or mtime), mtime))
            except OSError as err:
                if isinstance(err, (TimeoutError, ConnectionError)):
                    raise
                log.info(
                    "%s: cannot set the temp file's mtime (%s): publishing without a marker",
                    paths["temp"],
                    err,
                )
                return
        journal = sftp.open_handle(paths["journal"], FXF_WRITE)
        try:
            sftp.write_at(journal, chunks * JOURNAL_RECORD_BYTES, memoryview(_marker_record(mtime)))
            sftp.fsync_handle(journal)
        finally:
            sftp.close_handle(journal)

    @staticmethod
    def _replace(sftp: StaccatoSFTP, paths: dict[str, str]) -> None:
        """Rename the temp file over the target (C8): posix-rename where the server
        offers and allows it, else a plain rename, else move the old target aside."""
        temp, target, backup = paths["temp"], paths["path"], paths["backup"]
        if sftp.has_posix_rename:
            try:
                sftp.posix_rename(temp, target)
                return
            except OSError as err:
                if _missing(err) or isinstance(err, (TimeoutError, ConnectionError)):
                    raise
                # refused (e.g. sftp-server -P posix-rename) or unsupported: stop asking
                log.info(
                    "posix-rename@openssh.com refused for %s (%s): using plain RENAME", target, err
                )
                sftp.extensions.pop("posix-rename@openssh.com", None)
        try:
            sftp.rename(temp, target)
            return
        except OSError as err:
            if _missing(err) or _stat(sftp, target) is None:
                raise
        # The target exists and plain RENAME will not replace it (OpenSSH: link(2) semantics).
        _remove_if_exists(sftp, backup)
        sftp.rename(target, backup)
        try:
            sftp.rename(temp, target)
        except BaseException as err:
            try:
                sftp.rename(backup, target)
            except Exception as undo:
                log.warning(
                    "publishing %s failed (%r) and moving the previous file back from %s failed "
                    "too (%r); abort or the next publish restores it",
                    target,
                    err,
                    backup,
                    undo,
                )
            raise

    def abort(self, session: WriteSession) -> None:
        url = parse_url(session.url)
        paths = session.data

        def op(sftp: StaccatoSFTP) -> None:
            _remove_if_exists(sftp, paths["temp"])
            _remove_if_exists(sftp, paths["journal"])
            if _stat(sftp, paths["backup"]) is not None:
                if _stat(sftp, paths["path"]) is None:
                    sftp.rename(
                        paths["backup"], paths["path"]
                    )  # a publish stopped half-way: undo it
                else:
                    _remove_if_exists(sftp, paths["backup"])

        self._run(url, f"destination {url}", op)
