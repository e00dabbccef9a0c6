"""The file driver's write session: a temp file beside the target and its journal.

The temp file is written positionally (:class:`FileChunkWriter`); each chunk is
``fdatasync``-ed, then a line (index and source checksum) and an owner record (the
worker life that wrote it, :mod:`staccato.worker_life`) are appended to the journal.
Before publish, chunks of an earlier worker life are read back and checked
(:func:`recheck_earlier_chunks`): verify-on-write does not vouch for bytes left while
no worker ran; nor, in this life, for any chunk once the temp file changed after the
journal's last append (:func:`changed_after_journal`: its ctime later than the
journal's mtime), when every chunk is read back.
A resumed stream re-reads the journaled chunks of its own segment
(:func:`durable_chunks`) and trusts only those whose bytes still match, so a torn write
or a stray writer cannot make a damaged chunk look durable. Before publish,
:func:`check_publishable` checks from metadata only that the temp file is still this
session's, whole, fully journaled, and has no chunk turned into a hole.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import re
import stat as stat_module

from staccato import checksums
from staccato.endpoints.base import ChunkWriter, keepalive, write_fence
from staccato.endpoints.file.fs import NO_SPACE, no_space, os_error
from staccato.endpoints.file.read import FileReader
from staccato.errors import (
    PermanentError,
    RetryableError,
    SourceChangedError,
    StaccatoError,
    WriteSessionLostError,
)
from staccato.models import ObjectInfo, WriteSession
from staccato.plan import chunk_bounds, chunk_count
from staccato.temp_names import JOURNAL_SUFFIX, TEMP_SUFFIX, session_stem
from staccato.urls import EndpointURL
from staccato.worker_life import worker_life

log = logging.getLogger(__name__)

# Bytes per pwrite(2) call. Several streams write into one temp file, and a write
# holds the inode lock for all the pages it covers: 1 MiB calls keep one stream from
# stalling the others for a whole chunk (bench/bench_file_http.py measures the copy).
_WRITE_BLOCK = 1 << 20
_COPY_BLOCK = 1 << 20  # bytes read, checksummed and copied at a time by copy_chunk

# Direct I/O (open(2) ``O_DIRECT``): buffer address, file offset and length must be
# multiples of the device's logical block size; a page (4 KiB) covers 512-byte and
# 4 KiB devices alike. Pieces not so aligned go through the page cache.
_DIRECT_ALIGN = 4096
_DIRECT_BLOCK = 16 << 20  # bytes per direct pwrite(2) (the lease is checked before each)

# copy_file_range(2) errors meaning "the kernel cannot copy between these two files"
_NO_KERNEL_COPY = {errno.EXDEV, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}

# bytes read (and checksummed) at a time when a resumed stream re-checks its chunks;
# keepalive() is called between blocks (8 MiB: a few tens of ms on a slow disk)
CHECK_BLOCK = 8 << 20


def session_paths(url: EndpointURL, session_key: str) -> tuple[str, str]:
    """The temp file and journal paths of the session ``session_key`` for ``url``:
    hidden names beside the target (same directory, so publish's rename is atomic)."""
    # string operations, not pathlib: called once per small file of a dataset
    stem = session_stem(*os.path.split(url.path), session_key)
    return stem + TEMP_SUFFIX, stem + JOURNAL_SUFFIX


#: bytes of a journal read to tell whether Staccato wrote it (:func:`written_by_staccato`)
JOURNAL_PROOF_BYTES = 64 * 1024
_JOURNAL_LINE = re.compile(rb"(?:p \d+ )?\d+ [0-9a-f]{8,64}|o \d+ [0-9a-f]{16}")
#: a partial record: ``p INDEX LENGTH CHECKSUM``, the first LENGTH bytes of chunk
#: INDEX, kept by a paused stream (:meth:`FileChunkWriter.write_partial`); a reader
#: of chunk lines only (an older worker) skips it (its first field is no index)
_PARTIAL_PREFIX = "p "
#: an owner record: ``o INDEX LIFE``, the worker life (:func:`worker_life`) that wrote
#: (or re-read and checked) the chunk line of INDEX before it; a reader of chunk lines
#: only skips it. A chunk line with no owner record after it belongs to no life.
_OWNER_PREFIX = "o "


def written_by_staccato(journal: str) -> bool:
    """Whether the file ``journal`` is a write session's journal: empty (a session
    that journaled no chunk yet), or complete lines that all read ``INDEX CHECKSUM``
    (hex), at least one, in its first :data:`JOURNAL_PROOF_BYTES` (a torn last line
    is allowed). The leftover sweep removes a temp file and its journal only then: a
    user's files of the pattern (a tree copied from a destination that had leftovers,
    then a single transfer to that name) were removed as leftovers (a tester's case).
    False when it cannot be read."""
    try:
        with open(journal, "rb") as handle:
            data = handle.read(JOURNAL_PROOF_BYTES)
    except OSError:
        return False
    if not data:
        return True
    lines = data.split(b"\n")[:-1]  # the last piece: torn, or cut by the read
    return bool(lines) and all(_JOURNAL_LINE.fullmatch(line) for line in lines)


def journaled_chunks(session: WriteSession) -> dict[int, str]:
    """Chunks the journal lists (index -> source checksum), unverified."""
    chunks = chunk_count(session.size, session.chunk_size)
    journaled: dict[int, str] = {}
    try:
        with open(session.data["journal"], encoding="ascii", errors="replace") as journal:
            for line in journal:
                if not line.endswith("\n"):
                    break  # a torn last line: that chunk is simply sent again
                index_text, _, checksum = line.strip().partition(" ")
                if index_text.isdigit() and int(index_text) < chunks and checksum:
                    journaled[int(index_text)] = checksum
    except FileNotFoundError:
        return {}
    return journaled


def chunk_owners(session: WriteSession) -> dict[int, str]:
    """The worker life that vouches for each chunk's latest journal line (index ->
    life; ``""``: no owner record after it, e.g. written by an older worker)."""
    owners: dict[int, str] = {}
    try:
        with open(session.data["journal"], encoding="ascii", errors="replace") as journal:
            for line in journal:
                if not line.endswith("\n"):
                    break
                fields = line.split()
                if len(fields) == 2 and fields[0].isdigit():
                    owners[int(fields[0])] = ""  # a (new) chunk line: nobody's yet
                elif (
                    len(fields) == 3
                    and fields[0] == _OWNER_PREFIX.strip()
                    and fields[1].isdigit()
                    and int(fields[1]) in owners
                ):
                    owners[int(fields[1])] = fields[2]
    except FileNotFoundError:
        return {}
    return owners


def _vouch(session: WriteSession, indexes: list[int]) -> None:
    """Append an owner record of this worker life for each chunk of ``indexes``
    (re-read and found equal to its journaled checksum), so neither a later stream
    nor publish in this life reads it again. Best effort: a journal that cannot be
    appended to only costs that read once more."""
    if not indexes:
        return
    life = worker_life()
    try:
        fd = os.open(session.data["journal"], os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    except OSError:
        return
    try:
        write_fence()
        os.write(fd, "".join(f"{_OWNER_PREFIX}{i} {life}\n" for i in indexes).encode())
    except OSError:
        pass
    finally:
        os.close(fd)


def changed_after_journal(session: WriteSession) -> tuple[int, int] | None:
    """Whether the temp file changed after the journal's last append: its inode
    change time (``st_ctime_ns``) later than the journal's modification time
    (``st_mtime_ns``). Two ``stat`` calls, no data read.

    Every change this session makes to the temp file precedes a journal append:
    ``pwrite`` and ``copy_file_range`` of a chunk come before its line
    (:meth:`FileChunkWriter._commit`), a partial record's bytes before the record,
    ``ftruncate`` (:meth:`FileDriver.open_session`) before the first line; the
    ``fdatasync`` calls and the reads back change no time stamp, and nothing sets the
    temp file's mode or times. The kernel takes both stamps from one clock (Linux: the
    coarse clock, a tick of 1-10 ms, with a floor under it since the multigrain
    stamps of 6.13), so after our own last write the temp file's ctime is never later
    than the journal's mtime. A ctime later than it is someone else's write,
    ``truncate``, ``chmod`` or ``utime`` (``utime`` sets the ctime to now; no call sets
    it back) after our last journal line: the chunks' verify-on-write no longer
    vouches for them. Not seen: a change within the same clock tick as that last
    append (equal stamps), a change followed by another journal append of ours (a
    stream still writing, a forged journal line), a file system whose ctime does not
    follow writes (vfat keeps a creation time there).

    Returns:
        None when unchanged (or either file is missing: :func:`check_publishable`
        says what became of it); else (temp ctime, journal mtime), nanoseconds.
    """
    try:
        temp = os.stat(session.session_id)
        journal = os.stat(session.data["journal"])
    except FileNotFoundError:
        return None
    except OSError as err:
        raise os_error(err, f"destination temp file {session.session_id}") from None
    if temp.st_ctime_ns > journal.st_mtime_ns:
        return temp.st_ctime_ns, journal.st_mtime_ns
    return None


def recheck_earlier_chunks(session: WriteSession) -> tuple[dict[int, str], int]:
    """Read back every journaled chunk that no process of this worker life vouches
    for (written before a worker was killed or stopped, or the service was down, or
    by another worker) and compare it with its journaled checksum. Chunks written in
    this life keep the verify-on-write argument and are not read, unless the temp
    file changed after the journal's last append (:func:`changed_after_journal`: a
    writer not ours, e.g. while the worker was stopped with every chunk journaled):
    then every journaled chunk is read back. Those found equal get an owner record
    of this life (:func:`_vouch`: a retried publish does not read them again; the
    append also moves the journal's mtime past the change).

    Costs two ``stat`` calls, plus one local read of the chunks of earlier lives only
    (none when one worker life wrote them all and nothing else changed the temp
    file since), ``CHECK_BLOCK`` bytes at a time, :func:`keepalive` between.

    Returns:
        (damaged chunk index -> its journaled checksum, bytes read back).

    Raises:
        StaccatoError: the temp file could not be read.
    """
    life = worker_life()
    journaled = journaled_chunks(session)
    changed = changed_after_journal(session) if journaled else None
    if changed is not None:
        log.warning(
            "%s changed %.3f s after its journal's last line (ctime %d ns > journal "
            "mtime %d ns): reading back every chunk before publish",
            session.session_id,
            (changed[0] - changed[1]) / 1e9,
            *changed,
        )
    owners = chunk_owners(session)
    earlier = sorted(i for i in journaled if changed is not None or owners.get(i, "") != life)
    if not earlier:
        return {}, 0
    buffer = memoryview(bytearray(min(session.chunk_size, CHECK_BLOCK)))
    damaged: dict[int, str] = {}
    equal: list[int] = []
    read = 0
    try:
        fd = os.open(session.session_id, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return {}, 0  # check_publishable says what became of it
    except OSError as err:
        raise os_error(err, f"destination temp file {session.session_id}") from None
    try:
        for index in earlier:
            if _chunk_matches(fd, session, index, journaled[index], buffer):
                equal.append(index)
            else:
                damaged[index] = journaled[index]
            read += chunk_bounds(index, session.size, session.chunk_size)[1]
            if len(equal) >= 256:
                _vouch(session, equal)
                equal = []
    except OSError as err:
        raise os_error(err, f"destination temp file {session.session_id}") from None
    finally:
        os.close(fd)
    _vouch(session, equal)
    return damaged, read


def partial_chunk(session: WriteSession, index: int, into: memoryview) -> int:
    """The prefix of chunk ``index`` a paused stream kept: the journal's last partial
    record for it whose bytes in the temp file still match its checksum, read into the
    start of ``into``; returns its length (0: none, or none that matches). A record
    no shorter than the chunk, or for a chunk journaled whole, is ignored (the chunk
    record rules). Costs one local read of the prefix (``keepalive`` between blocks).

    Raises:
        StaccatoError: the temp file could not be read (not a missing one: 0).
    """
    offset, length = chunk_bounds(index, session.size, session.chunk_size)
    records: list[tuple[int, str]] = []
    try:
        with open(session.data["journal"], encoding="ascii", errors="replace") as journal:
            for line in journal:
                if not line.endswith("\n"):
                    break  # torn: that record was never complete
                if line.startswith(_PARTIAL_PREFIX):
                    fields = line[len(_PARTIAL_PREFIX) :].split()
                    if (
                        len(fields) == 3
                        and fields[0].isdigit()
                        and int(fields[0]) == index
                        and fields[1].isdigit()
                        and 0 < int(fields[1]) < length
                        and int(fields[1]) <= len(into)
                    ):
                        records.append((int(fields[1]), fields[2]))
                elif line.partition(" ")[0] == str(index):
                    return 0  # journaled whole: durable_chunks' business
    except FileNotFoundError:
        return 0
    if not records:
        return 0
    try:
        fd = os.open(session.session_id, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0
    try:
        for kept, checksum in reversed(records):  # the latest first (a longer prefix)
            view = into[:kept]
            done = 0
            while done < kept:
                keepalive()
                n = os.preadv(fd, [view[done : done + CHECK_BLOCK]], offset + done)
                if n <= 0:
                    break
                done += n
            if done == kept and checksums.checksum_bytes(_algorithm_of(checksum), view) == checksum:
                return kept
    except OSError as err:
        raise os_error(err, f"destination temp file {session.session_id}") from None
    finally:
        os.close(fd)
    return 0


def durable_chunks(session: WriteSession, first_chunk: int, end_chunk: int) -> dict[int, str]:
    """Journaled chunks in ``[first_chunk, end_chunk)`` whose bytes in the temp file
    still match their checksum.

    Costs one local read of the range's chunks already written (none on a first
    attempt), ``CHECK_BLOCK`` bytes at a time, calling :func:`keepalive` between blocks
    so the stream's activity heartbeats however slow the disk is.
    """
    journaled = {
        index: checksum
        for index, checksum in journaled_chunks(session).items()
        if first_chunk <= index < end_chunk
    }
    if not journaled:
        return {}
    buffer = memoryview(bytearray(min(session.chunk_size, CHECK_BLOCK)))
    try:
        fd = os.open(session.session_id, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return {}
    try:
        durable = {
            index: checksum
            for index, checksum in sorted(journaled.items())
            if _chunk_matches(fd, session, index, checksum, buffer)
        }
    except OSError as err:
        raise os_error(err, f"destination temp file {session.session_id}") from None
    finally:
        os.close(fd)
    # re-read now: publish in this life need not read them again
    life = worker_life()
    owners = chunk_owners(session)
    _vouch(session, [i for i in durable if owners.get(i, "") != life])
    return durable


def _chunk_matches(
    fd: int, session: WriteSession, index: int, checksum: str, buffer: memoryview
) -> bool:
    """Whether chunk ``index`` of the temp file ``fd`` is whole and has ``checksum``."""
    keepalive()
    offset, length = chunk_bounds(index, session.size, session.chunk_size)
    hasher = checksums.new_hasher(_algorithm_of(checksum))
    done = 0
    while done < length:
        view = buffer[: min(len(buffer), length - done)]
        n = os.preadv(fd, [view], offset + done)
        if n <= 0:
            break
        hasher.update(view[:n])
        done += n
        keepalive()
    return done == length and hasher.hexdigest() == checksum


def _algorithm_of(checksum: str) -> str:
    """The algorithm of a journaled checksum, told by its length (SHA-256: 64 hex)."""
    return "sha256" if len(checksum) == 64 else "crc32c"


def check_publishable(session: WriteSession) -> bool:
    """Check the temp file is still this session's, whole and unaltered where metadata
    shows it: inode, size, a journal line per chunk, and no chunk lying wholly in a hole
    (``SEEK_HOLE``, e.g. truncated and extended again) unless the journal says that
    chunk is zeros (some file systems store zero blocks as holes). Reads no data.

    Returns:
        False if there is nothing to publish because an earlier attempt published this
        session (the temp file is gone and the target is it, same inode); True otherwise.

    Raises:
        WriteSessionLostError: the temp file or journal is gone or not this session's,
            has the wrong size, or a chunk whose journaled checksum is not that of zeros
            is a hole.
        PermanentError: chunks are missing from the journal.
    """
    target = session.data["path"]
    temp = session.session_id
    inode = session.data.get("inode")
    try:
        st = os.stat(temp)
    except FileNotFoundError:
        if is_published(target, session):
            return False  # an earlier attempt published it (the activity retried after rename)
        raise WriteSessionLostError(
            f"write session {temp} is gone and {target} was not published"
        ) from None
    if inode is not None and str(st.st_ino) != inode:
        raise WriteSessionLostError(f"write session {temp} was replaced by another file")
    if st.st_size != session.size:
        raise WriteSessionLostError(
            f"write session {temp} has {st.st_size} bytes, expected {session.size}"
        )
    journal_inode = session.data.get("journal_inode")
    try:
        journal_st = os.stat(session.data["journal"])
    except FileNotFoundError:
        raise WriteSessionLostError(f"write session {temp}: its journal was deleted") from None
    if journal_inode is not None and str(journal_st.st_ino) != journal_inode:
        raise WriteSessionLostError(f"write session {temp}: its journal was replaced")
    journaled = journaled_chunks(session)
    missing = chunk_count(session.size, session.chunk_size) - len(journaled)
    if missing:
        raise PermanentError(f"refusing to publish {target}: {missing} chunks are not durable")
    damaged = holed_chunks(temp, session, journaled)
    if damaged:
        raise WriteSessionLostError(
            f"write session {temp}: {len(damaged)} chunks (first: {damaged[0]}) no longer "
            "match their checksums: they read as zeros (the temp file was truncated or "
            "holes were punched into it)"
        )
    return True


def _holes(fd: int, size: int) -> list[tuple[int, int]]:
    """The holes ``[start, end)`` of the file's first ``size`` bytes, found with
    ``lseek(SEEK_HOLE/SEEK_DATA)`` (metadata only: one call per hole or data extent).
    File systems without hole reporting report none."""
    if not hasattr(os, "SEEK_HOLE"):
        return []
    holes: list[tuple[int, int]] = []
    position = 0
    while position < size:
        try:
            hole = os.lseek(fd, position, os.SEEK_HOLE)
        except OSError:
            return holes  # EINVAL/ENXIO: no hole reporting here
        if hole >= size:
            break
        try:
            data = os.lseek(fd, hole, os.SEEK_DATA)
        except OSError as err:
            if err.errno != errno.ENXIO:
                return holes
            data = size  # a hole up to the end of the file
        holes.append((hole, min(data, size)))
        position = data
    return holes


def holed_chunks(temp: str, session: WriteSession, journaled: dict[int, str]) -> list[int]:
    """Chunks lying wholly in a hole of ``temp`` whose journaled checksum is not that of
    zeros (their bytes would read as zeros): damage, found without reading data.

    A chunk only partly in a hole is not judged here (file systems may store any zero
    block as a hole); its bytes were proven when it was written.
    """
    try:
        fd = os.open(temp, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        raise os_error(err, f"destination temp file {temp}") from None
    try:
        holes = _holes(fd, session.size)
    finally:
        os.close(fd)
    chunk_size = session.chunk_size
    zeros: dict[tuple[str, int], str] = {}
    damaged: list[int] = []
    for start, end in holes:
        first = -(-start // chunk_size)
        for index in range(first, chunk_count(session.size, chunk_size)):
            offset, length = chunk_bounds(index, session.size, chunk_size)
            if offset + length > end:
                break
            checksum = journaled.get(index, "")
            algorithm = _algorithm_of(checksum)
            if (algorithm, length) not in zeros:
                zeros[(algorithm, length)] = _zeros_checksum(algorithm, length)
            if checksum != zeros[(algorithm, length)]:
                damaged.append(index)
    return damaged


def _zeros_checksum(algorithm: str, length: int) -> str:
    """Checksum of ``length`` zero bytes (fed 1 MiB at a time: memory stays small)."""
    hasher = checksums.new_hasher(algorithm)
    block = bytes(min(length, 1 << 20))
    done = 0
    while done < length:
        piece = min(len(block), length - done)
        hasher.update(block[:piece])
        done += piece
    return hasher.hexdigest()


def is_published(target: str, session: WriteSession) -> bool:
    """Whether ``target`` is this session's temp file, renamed (same inode); sessions
    without a recorded inode fall back to the size."""
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return False
    inode = session.data.get("inode")
    if inode is not None:
        return str(st.st_ino) == inode
    return stat_module.S_ISREG(st.st_mode) and st.st_size == session.size


def unlink_if_present(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _copy_file_range(source_fd: int, target_fd: int, offset: int, target: int, length: int) -> int:
    """Copy ``length`` bytes in the kernel; returns bytes copied (less only at the
    source's end-of-file, which the caller's version check then reports)."""
    done = 0
    while done < length:
        n = os.copy_file_range(source_fd, target_fd, length - done, offset + done, target + done)
        if n == 0:
            break
        done += n
    return done


class FileChunkWriter(ChunkWriter):
    """Positional writes into a session's temp file; one journal line per chunk.

    :meth:`write_chunk` writes the stream's checksummed buffer and ``fdatasync``-s it
    before journaling, so it is verified in memory (``checked_in_memory``); kernel
    copies (:meth:`copy_chunk`) are read back block by block
    (:meth:`read_back_checksum`).
    """

    checked_in_memory = True

    def __init__(self, session: WriteSession) -> None:
        self._temp = session.session_id
        self._target = session.data["path"]
        self._journal_path = session.data["journal"]
        try:
            self._fd = os.open(self._temp, os.O_WRONLY | os.O_CLOEXEC)
            self._journal = os.open(self._journal_path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except OSError as err:
            if err.errno == errno.ENOENT:
                raise WriteSessionLostError(
                    f"write session {self._temp} is gone (deleted, or published or aborted by another attempt)"
                ) from None
            raise os_error(err, f"destination temp file {self._temp}") from None
        self._inode = os.fstat(self._fd).st_ino
        self._journal_inode = os.fstat(self._journal).st_ino
        self._size = session.size
        if session.data.get("inode", str(self._inode)) != str(self._inode):
            self.close()
            raise WriteSessionLostError(
                f"write session {self._temp} was replaced by another file (deleted and created again)"
            )
        self._chunk_size = session.chunk_size
        self._reader = -1
        self._buffer: memoryview | None = None
        self._kernel_copy = True
        self._direct = _open_direct(self._temp)  # -1: the file system refuses O_DIRECT

    def _check_session(self) -> None:
        """Before each chunk: the session's files are still the ones this writer opened.

        A stale writer (an attempt Temporal gave up on) must not touch a published
        object: once publish renamed the temp file away, the name no longer leads here.
        A temp file or journal deleted, replaced or truncated under a live transfer is
        a lost session too (the workflow then copies again into a new one).

        Raises:
            WriteSessionLostError: as above.
        """
        try:
            if os.stat(self._temp).st_ino != self._inode:
                raise FileNotFoundError
        except FileNotFoundError:
            raise WriteSessionLostError(
                f"write session {self._temp} is gone (deleted, or published by another attempt); stopping this writer"
            ) from None
        try:
            if os.stat(self._journal_path).st_ino != self._journal_inode:
                raise FileNotFoundError
        except FileNotFoundError:
            raise WriteSessionLostError(
                f"write session {self._temp}: its journal {self._journal_path} was deleted"
            ) from None
        size = os.fstat(self._fd).st_size
        if size != self._size:
            raise WriteSessionLostError(
                f"write session {self._temp} was truncated or extended to {size} bytes "
                f"(expected {self._size})"
            )

    def write_chunk(self, index: int, data: memoryview, checksum: str) -> None:
        self._check_session()
        try:
            self._write_at(index * self._chunk_size, data)
            self._commit(index, checksum)
        except OSError as err:
            raise self._write_error(err) from None

    def _write_at(self, offset: int, data: memoryview) -> None:
        """``pwrite`` all of ``data`` at ``offset`` (bytes), each write behind the
        session's fence. Raises: OSError."""
        view = data
        while view:
            write_fence()
            n = self._pwrite(view, offset)
            view = view[n:]
            offset += n

    def write_partial(self, index: int, data: memoryview, checksum: str) -> bool:
        """Write the first ``len(data)`` bytes of chunk ``index``, ``fdatasync``, then
        journal a partial record ``p INDEX LENGTH CHECKSUM`` (the order of a chunk
        line: the record is written only once the bytes are durable).
        :func:`partial_chunk` reads the prefix back and checks it before a resumed
        stream builds on it, as :func:`durable_chunks` does for whole chunks."""
        self._check_session()
        try:
            self._write_at(index * self._chunk_size, data)
            os.fdatasync(self._fd)
            os.write(self._journal, f"{_PARTIAL_PREFIX}{index} {len(data)} {checksum}\n".encode())
        except OSError as err:
            raise self._write_error(err) from None
        return True

    def _pwrite(self, view: memoryview, offset: int) -> int:
        """Write the start of ``view`` at ``offset``; returns bytes written.

        Direct I/O where address, offset and length are aligned: the disk reads the
        stream's buffer itself (no copy into the page cache, no dirty pages left for
        ``fdatasync`` to find), which on a loaded machine costs a fraction of the CPU
        of a buffered write; up to ``_DIRECT_BLOCK`` at a time (the device gets many
        requests at once, a direct write waits for them). Durability is still
        ``fdatasync``'s (the device's write cache). Anything else, and a file system
        refusing a direct write (``EINVAL``), goes through the page cache,
        ``_WRITE_BLOCK`` at a time.
        """
        aligned = len(view) - len(view) % _DIRECT_ALIGN
        if (
            self._direct >= 0
            and aligned
            and offset % _DIRECT_ALIGN == 0
            and _address(view) % _DIRECT_ALIGN == 0
        ):
            try:
                return os.pwrite(self._direct, view[: min(aligned, _DIRECT_BLOCK)], offset)
            except OSError as err:
                if err.errno != errno.EINVAL:
                    raise
                os.close(self._direct)
                self._direct = -1
        return os.pwrite(self._fd, view[:_WRITE_BLOCK], offset)

    def _write_error(self, err: OSError) -> StaccatoError:
        if err.errno in NO_SPACE:
            return no_space(self._target, self._size, self._temp, err)
        return os_error(err, f"destination temp file {self._temp}")

    def _commit(self, index: int, checksum: str) -> None:
        # fdatasync per chunk: the journal then records durable chunks, and dirty pages
        # do not pile up until the kernel throttles every writer at once.
        os.fdatasync(self._fd)
        # the chunk line and its owner record in one append (O_APPEND: not interleaved
        # with another stream's); a chunk line without its owner is read back later
        os.write(
            self._journal,
            f"{index} {checksum}\n{_OWNER_PREFIX}{index} {worker_life()}\n".encode(),
        )

    def copy_chunk(
        self,
        index: int,
        source: EndpointURL,
        info: ObjectInfo,
        offset: int,
        length: int,
        algorithm: str,
    ) -> str:
        """Copy a local file's range in the kernel (``copy_file_range(2)``: no bytes
        through user space for the write, extents shared on file systems with reflinks,
        a server-side copy on NFS 4.2), checksumming the source range as it is read.

        The read-back of :meth:`read_back` then checks the copy against that checksum.
        Falls back to ``pwrite`` where the kernel cannot copy between the two files
        (``EXDEV``, ``EOPNOTSUPP``...).

        Raises:
            SourceChangedError: the source's version moved (checked after the read and after
                the copy).
        """
        self._check_session()
        if self._buffer is None:
            self._buffer = memoryview(bytearray(min(self._chunk_size, _COPY_BLOCK)))
        hasher = checksums.new_hasher(algorithm)
        target = index * self._chunk_size
        with contextlib.closing(FileReader(source.path, info, offset, length)) as reader:
            try:
                done = 0
                while done < length:  # block by block: read + checksum, then copy it
                    block = self._buffer[: min(len(self._buffer), length - done)]
                    if reader.readinto_full(block) != len(block):
                        raise SourceChangedError(
                            f"source changed: {source.path} ended before byte {offset + length}"
                        )
                    hasher.update(block)
                    copied = 0
                    write_fence()
                    if self._kernel_copy:
                        try:
                            copied = _copy_file_range(
                                reader.fileno(), self._fd, offset + done, target + done, len(block)
                            )
                        except OSError as err:
                            if err.errno not in _NO_KERNEL_COPY:
                                raise
                            self._kernel_copy = False  # and write the block from the buffer
                    while copied < len(block):
                        copied += os.pwrite(self._fd, block[copied:], target + done + copied)
                    done += len(block)
                reader.check_version()  # the kernel read the source again: same version?
                digest = hasher.hexdigest()
                self._commit(index, digest)
            except OSError as err:
                raise self._write_error(err) from None
        return digest

    def read_back(self, index: int, into: memoryview) -> None:
        offset = index * self._chunk_size
        try:
            filled = 0
            while filled < len(into):
                n = os.preadv(self._read_fd(), [into[filled:]], offset + filled)
                if n == 0:
                    raise RetryableError(
                        f"destination temp file {self._temp} ends before byte {offset + len(into)}"
                    )
                filled += n
        except OSError as err:
            raise os_error(err, f"destination temp file {self._temp}") from None

    def read_back_checksum(self, index: int, length: int, algorithm: str, into: memoryview) -> str:
        """Checksum chunk ``index`` of the temp file ``len(into)`` bytes at a time (a
        block of ``_COPY_BLOCK`` stays in the CPU cache from ``preadv`` to the hasher;
        a whole chunk would go through memory twice)."""
        offset = index * self._chunk_size
        block = into[: min(len(into), _COPY_BLOCK)]
        hasher = checksums.new_hasher(algorithm)
        try:
            done = 0
            while done < length:
                view = block[: min(len(block), length - done)]
                n = os.preadv(self._read_fd(), [view], offset + done)
                if n == 0:
                    raise RetryableError(
                        f"destination temp file {self._temp} ends before byte {offset + length}"
                    )
                hasher.update(view[:n])
                done += n
        except OSError as err:
            raise os_error(err, f"destination temp file {self._temp}") from None
        return hasher.hexdigest()

    def _read_fd(self) -> int:
        if self._reader < 0:
            self._reader = os.open(self._temp, os.O_RDONLY | os.O_CLOEXEC)
            if hasattr(os, "posix_fadvise"):
                # No readahead: it would reach into chunks other streams are writing
                # and slow their writes (compare with bench/bench_file_http.py).
                os.posix_fadvise(self._reader, 0, 0, os.POSIX_FADV_RANDOM)
        return self._reader

    def close(self) -> None:
        for fd in (self._fd, self._journal, self._reader, self._direct):
            if fd >= 0:
                os.close(fd)
        self._fd = self._journal = self._reader = self._direct = -1


def _open_direct(path: str) -> int:
    """A write descriptor of ``path`` with ``O_DIRECT``, or -1 where the platform or
    the file system has none (tmpfs before Linux 6.6 says ``EINVAL``)."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return -1
    try:
        return os.open(path, os.O_WRONLY | os.O_CLOEXEC | flag)
    except OSError:
        return -1


def _address(view: memoryview) -> int:
    """The memory address of ``view``'s first byte (-1 when it cannot be told: a
    read-only buffer), to check direct I/O's alignment."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(view))
    except (TypeError, ValueError):
        return -1
