"""Which handles may still write into an ``sftp`` write session's temp file: the
*writers directory* that lets publish tell whether renaming the temp file over the
target is safe, or whether it must publish a fresh copy instead.

Why: a stream's lease (:mod:`staccato.activities.stream_lease`) stops it before each
send, but not the bytes it already handed to the kernel. An SFTP write request that is
whole in a socket's queue (the client's send queue, sshd's receive queue, the pipe to
``sftp-server``) when its process is frozen is carried out whenever the server reads
it, on the handle the server opened on the temp file, and after publish's
``rename(2)`` that handle leads to the published file (same inode). The same holds for
a request sent in the microseconds between the lease check and the send, and for the
requests in flight on a connection the client dropped (an I/O timeout) while the
server was slow. No request to the server can close another session's handle, and
nothing tells how long such bytes may wait.

So a writer registers before it opens the temp file and deregisters only once the
server acknowledged closing it:

* ``open_session`` makes the directory ``.NAME.<key>.staccato-writers`` beside the temp
  file.
* a writer makes ``<that directory>/<random id>`` (``SSH_FXP_MKDIR``, acknowledged)
  before it opens the temp file; it fails with ``WriteSessionLost`` when the directory
  is gone (published, or aborted).
* a writer that closed its handles (acknowledged: the server carried out every request
  it sent before, and later ones name a closed handle) removes its entry.
* publish removes the directory (``SSH_FXP_RMDIR``: atomic, and refused unless it is
  empty). Removed: every writer that ever opened the temp file closed it, and none can
  register (and so none can open it) any more: renaming the temp file is safe. Not
  removed (a writer frozen, dead, or cut off without closing): publish writes a fresh
  file (``.NAME.<key>.staccato-fresh``) through its own handle from the temp file's
  bytes, each chunk checked against its journal record as it is copied, and renames
  that one; the stale handles lead to the temp file, which is then removed.

Cost: two requests per writer and two per session (mkdir, rmdir) when nothing went
wrong; a second pass over the data (read and write) at publish only after a writer was
lost. Test: ``tests/sftp/test_sftp_zombie.py``.
"""

from __future__ import annotations

import logging
import posixpath
import uuid

from paramiko.sftp_attr import SFTPAttributes

from staccato import checksums
from staccato.endpoints import base
from staccato.endpoints.sftp.files import remove_if_exists
from staccato.endpoints.sftp.journal import SHA256, parse_records
from staccato.endpoints.sftp.pipeline import PIECE_BYTES, ReadPipeline, SourceEnded, write_at
from staccato.endpoints.sftp.protocol import (
    FX_NO_SUCH_FILE,
    FXF_CREAT,
    FXF_READ,
    FXF_TRUNC,
    FXF_WRITE,
    StaccatoSFTP,
    StatusError,
)
from staccato.errors import WriteSessionLost
from staccato.models import WriteSession
from staccato.plan import chunk_bounds, chunk_count
from staccato.temp_names import FRESH_SUFFIX, TEMP_SUFFIX, WRITERS_SUFFIX

log = logging.getLogger("staccato.sftp")


def writers_of(temp: str) -> str:
    """The writers directory of the temp file ``temp`` (``….staccato-part``)."""
    return temp.removesuffix(TEMP_SUFFIX) + WRITERS_SUFFIX


def fresh_of(temp: str) -> str:
    """The name of the fresh copy publish may write for the temp file ``temp``."""
    return temp.removesuffix(TEMP_SUFFIX) + FRESH_SUFFIX


def _code(err: OSError | StatusError) -> int | None:
    if isinstance(err, StatusError):
        return err.code
    return FX_NO_SUCH_FILE if isinstance(err, FileNotFoundError) else None


def make_directory(sftp: StaccatoSFTP, temp: str) -> None:
    """Make the writers directory of ``temp`` (a session opened again keeps the one it
    has, with the entries of writers that may still write in it).

    Raises:
        OSError: the server refused it (other than: it exists).
    """
    directory = writers_of(temp)
    try:
        sftp.mkdir(directory, 0o700)
    except OSError:
        # OpenSSH answers a generic failure when it exists: tell by a stat (which
        # raises when it does not)
        sftp.stat(directory)


def register(sftp: StaccatoSFTP, temp: str) -> str:
    """Record a new writer of ``temp``, before it opens it; returns its entry (give it
    to :func:`deregister` once its handles are closed).

    Raises:
        WriteSessionLost: the writers directory is gone (the session was published or
            aborted; or opened by an older worker version, without one).
        OSError: another refusal by the server.
        Exception: what the stream's write fence raises (its lease is lost).
    """
    entry = posixpath.join(writers_of(temp), uuid.uuid4().hex)
    base.write_fence()  # a stream attempt woken after it lost its segment registers nothing
    try:
        sftp.mkdir(entry, 0o700)
    except OSError as err:
        if _code(err) == FX_NO_SUCH_FILE or _missing(sftp, writers_of(temp)):
            raise WriteSessionLost(
                f"write session {temp} is gone (published or aborted by another attempt: "
                "it takes no more writers; or opened by an older worker version)"
            ) from None
        raise
    return entry


def _missing(sftp: StaccatoSFTP, path: str) -> bool:
    """Whether ``path`` does not exist on the server (other failures: False)."""
    try:
        sftp.stat(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return False


def deregister(sftp: StaccatoSFTP, entry: str) -> None:
    """Remove a writer's entry once the server acknowledged closing its handles (gone
    already: publish removed it, nothing to do).

    Raises:
        OSError: another refusal by the server, or the connection.
    """
    try:
        sftp.rmdir(entry)
    except FileNotFoundError:
        pass


def seal(sftp: StaccatoSFTP, temp: str) -> bool:
    """Remove the writers directory of ``temp`` if it is empty (atomic: no writer can
    register after). True: no handle a writer opened on ``temp`` is open any more, and
    none will be. False: a writer may still write (its entry is there), or the
    directory is missing (a session an older worker opened, or this publish retried
    after it removed it): publish must not rename ``temp`` itself.

    Raises:
        ConnectionError, TimeoutError: the connection.
    """
    try:
        sftp.rmdir(writers_of(temp))
    except (ConnectionError, TimeoutError):
        raise
    except OSError as err:
        log.info(
            "%s: writers that did not close it may still write into it (%s): publishing "
            "a fresh copy of it",
            temp,
            err,
        )
        return False
    return True


def clear(sftp: StaccatoSFTP, temp: str) -> None:
    """Remove the writers directory of ``temp`` and the entries in it (after a publish
    of a fresh copy, an abort, a leftover sweep); nothing if it is gone.

    Raises:
        OSError: the server refused, or the connection.
    """
    directory = writers_of(temp)
    try:
        names = [name for name, _ in sftp.read_dir(directory)]
    except StatusError as err:
        if err.code == FX_NO_SUCH_FILE:
            return
        raise
    for name in names:
        try:
            sftp.rmdir(posixpath.join(directory, name.decode(errors="surrogateescape")))
        except FileNotFoundError:
            pass
    try:
        sftp.rmdir(directory)
    except FileNotFoundError:
        pass


def fresh_copy(
    sftp: StaccatoSFTP, session: WriteSession, fresh: str, journal: bytes
) -> SFTPAttributes:
    """Write the file ``fresh`` (created, or emptied) through a handle of its own from
    the bytes of the session's temp file, chunk by chunk, each checked against the
    checksum its journal record (``journal``: the journal's bytes) holds (the SHA-256
    an earlier release's hash record holds, where there is one) as it is copied; fsynced and closed. The temp file may
    still be written by a stale writer meanwhile: what is copied is what the journal
    vouches for, whatever it writes.

    Returns:
        The attributes of ``fresh`` (for the publish marker).

    Raises:
        WriteSessionLost: a chunk of the temp file no longer holds the bytes journaled
            for it, or the temp file is shorter (``fresh`` is removed; the transfer
            copies again into a new session).
        StatusError, OSError: the server's refusal, or the connection.
    """
    temp = session.data["temp"]
    chunks = chunk_count(session.size, session.chunk_size)
    records = parse_records(journal, chunks)
    out = sftp.open_handle(fresh, FXF_WRITE | FXF_CREAT | FXF_TRUNC)
    done = False
    try:
        source = sftp.open_handle(temp, FXF_READ)
        try:
            buffer = memoryview(bytearray(min(PIECE_BYTES, session.chunk_size or 1)))
            for index in range(chunks):
                offset, length = chunk_bounds(index, session.size, session.chunk_size)
                checksum, recorded = records[index]
                # an earlier release's SHA-256 where the record has one (stronger than
                # a CRC-32C checksum); a cksum CRC is no stronger than the checksum
                sha = recorded.value if recorded is not None and recorded.kind == SHA256 else None
                algorithm = "sha256" if sha is not None or len(checksum) == 64 else "crc32c"
                expected = sha if sha is not None else checksum
                hasher = checksums.new_hasher(algorithm)
                pipe = ReadPipeline(sftp, source, offset, offset + length, probe_eof=False)
                copied = 0
                while copied < length:
                    piece = buffer[: min(len(buffer), length - copied)]
                    try:
                        got = pipe.readinto(piece)
                    except SourceEnded:
                        got = 0
                    if got != len(piece):
                        raise WriteSessionLost(
                            f"write session {temp} ended before the bytes of chunk {index}: "
                            "copying again"
                        )
                    hasher.update(piece)
                    write_at(sftp, out, offset + copied, piece)
                    copied += got
                    base.fresh_copied(got)  # the publish's heartbeats say it (status)
                    base.keepalive()
                if hasher.hexdigest() != expected:
                    raise WriteSessionLost(
                        f"write session {temp}: chunk {index} no longer holds the bytes "
                        "journaled for it (a stale writer wrote into it): copying again"
                    )
            sftp.fsync_handle(out)
            attrs = sftp.fstat_handle(out)
        finally:
            sftp.close_handle(source)
        done = True
    finally:
        try:
            sftp.close_handle(out)
        finally:
            if not done:
                remove_if_exists(sftp, fresh)
    if attrs.st_size != session.size:
        remove_if_exists(sftp, fresh)
        raise WriteSessionLost(
            f"write session {temp}: its fresh copy has {attrs.st_size} bytes, expected "
            f"{session.size}: copying again"
        )
    return attrs
