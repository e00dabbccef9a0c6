"""The ``file`` endpoint: local (or locally mounted) file systems.

Source: positional reads (``os.preadv`` into the caller's buffer), version pinned as
size + mtime (ns) + inode and re-checked with ``fstat`` after every read, so a file
rewritten, truncated or appended to during the copy fails with ``SourceChangedError``.

Destination: a temp file beside the target (same directory, so the final
``rename(2)`` is atomic, POSIX ``rename``), written positionally; each chunk is
``fdatasync``-ed, then a line (index and source checksum) is appended to a small
journal beside the temp file. A resumed stream re-reads the journaled chunks of its
own segment (heartbeating as it reads) and trusts only those whose bytes still match
the journaled checksum, so a torn write or a stray writer cannot make a damaged chunk
look durable. Publish reads no data (its cost does not grow with the object): it
checks the temp file is this session's, whole, fully journaled and has no chunk
turned into a hole, then fsyncs the file, renames over the target and fsyncs the
directory.

Running out of space (``ENOSPC``, ``EDQUOT``) is permanent: retrying cannot free the
destination's file system, so the error names it, the bytes needed and free, and
the fix. The free-space check runs on every attempt, counting what the temp file
already holds.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat as stat_module
from pathlib import Path
from urllib.parse import quote

from staccato import checksums
from staccato.endpoints.base import ChunkWriter, Driver, Reader, keepalive
from staccato.errors import (
    DestinationMissingError,
    NotAFileError,
    PermanentError,
    PermissionDeniedError,
    RetryableError,
    SourceChangedError,
    StaccatoError,
    WriteSessionLostError,
    from_os_error,
)
from staccato.models import ObjectInfo, WriteSession
from staccato.plan import chunk_bounds, chunk_count
from staccato.urls import EndpointURL

_TEMP_SUFFIX = ".staccato-part"
_JOURNAL_SUFFIX = ".staccato-journal"


def _os_error(err: OSError, what: str) -> StaccatoError:
    if err.errno in _NO_SPACE:
        return PermanentError(
            f"{what}: {err.strerror or 'no space left on device'}; free space there or "
            "choose another destination, then submit again"
        )
    return from_os_error(err, what)


#: file systems whose mtimes come from this kernel's clock in (nearly) nanoseconds: a
#: rewrite moves the mtime. On the others (NFS, SMB, FUSE: the server's clock; FAT and
#: exFAT: 2 s) a rewrite within the mtime's resolution can keep it.
FINE_MTIME_FILE_SYSTEMS = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "zfs", "f2fs", "overlay", "bcachefs"}
)
#: mtime resolution assumed of the other file systems, seconds (FAT keeps 2 s)
COARSE_MTIME_RESOLUTION_S = 2.0
FINE_MTIME_RESOLUTION_S = 0.01  # the kernel's coarse clock ticks every 1-10 ms


_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")  # mountinfo writes a space as \040


def file_system_type(path: str) -> str:
    """The type of the file system holding ``path`` (``ext4``, ``nfs4``...), from
    ``/proc/self/mountinfo`` (proc(5)); ``""`` where that cannot be read."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return ""
    real = os.path.realpath(path)
    best, fs_type = -1, ""
    for line in lines:
        fields = line.split()
        try:
            mount_point = _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), fields[4])
            kind = fields[fields.index("-") + 1]
        except (IndexError, ValueError):
            continue
        inside = real == mount_point or real.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) > best:
            best, fs_type = len(mount_point), kind
    return fs_type


def mtime_resolution_s(path: str) -> float:
    """How coarse the mtimes of the file system holding ``path`` may be, seconds."""
    if file_system_type(path) in FINE_MTIME_FILE_SYSTEMS:
        return FINE_MTIME_RESOLUTION_S
    return COARSE_MTIME_RESOLUTION_S


# write errors no retry can heal: the file system (or the user's quota) is full
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


def _mount_point(path: str) -> str:
    """The mount point of the file system holding ``path`` (an existing path)."""
    path = os.path.realpath(path)
    while not os.path.ismount(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def _allocated(st: os.stat_result, size: int) -> int:
    """Bytes of ``size`` the file already has blocks for (``st_blocks`` is in 512-byte
    units, POSIX ``stat``), so a resumed write needs only the rest."""
    return min(st.st_blocks * 512, size)


def _no_space(target: str, size: int, temp: str, err: OSError | None = None) -> PermanentError:
    """The out-of-space error for writing ``size`` bytes to ``target`` via ``temp``:
    names the file system, the bytes still needed and free, and the fix."""
    parent = os.path.dirname(target) or "."
    mount = _mount_point(parent)
    try:
        fs = os.statvfs(parent)
        free = fs.f_bavail * fs.f_frsize
    except OSError:
        free = -1
    try:
        held = _allocated(os.stat(temp), size)
    except OSError:
        held = 0
    needed = size - held
    if err is None:
        cause = "not enough free space"
    elif err.errno == errno.EDQUOT:
        cause = "the disk quota is exhausted"
    else:
        cause = "the file system is full"
    return PermanentError(
        f"not enough space for {target} on the file system mounted at {mount}: {cause}; "
        f"{needed} more bytes needed (of {size}), {free} bytes free. Free at least "
        f"{max(needed - max(free, 0), 0)} bytes there (or raise the quota), or choose a "
        "destination on another file system, then submit again"
    )


def _version(st: os.stat_result) -> str:
    return f"size={st.st_size};mtime_ns={st.st_mtime_ns};ino={st.st_ino}"


def _what_changed(info: ObjectInfo, st: os.stat_result) -> str:
    """Which part of the pinned version (size, mtime, inode) moved, in words."""
    if st.st_size != info.size:
        return f"now has {st.st_size} bytes (was {info.size})"
    if not info.version.endswith(f";ino={st.st_ino}"):
        return "was replaced by another file (new inode)"
    return "was modified (new modification time)"


class FileReader(Reader):
    """Reads ``[offset, offset+length)`` of a local file, checking its version."""

    def __init__(self, path: str, info: ObjectInfo, offset: int, length: int) -> None:
        self._path = path
        self._info = info
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as err:
            if err.errno == errno.ENOENT:
                raise SourceChangedError(
                    f"source changed: {path} was removed during the transfer"
                ) from None
            raise _os_error(err, f"source {path}") from None
        self._position = offset
        self._end = offset + length
        self._check()
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(self._fd, offset, length, os.POSIX_FADV_SEQUENTIAL)

    def check_version(self) -> None:
        """Raise :class:`SourceChangedError` if the file no longer has the pinned version."""
        self._check()

    def _check(self) -> None:
        st = os.fstat(self._fd)
        if _version(st) != self._info.version:
            raise SourceChangedError(
                f"source changed during the transfer: {self._path} {_what_changed(self._info, st)}"
            )

    def readinto(self, buffer: memoryview) -> int:
        want = min(len(buffer), self._end - self._position)
        if want <= 0:
            return 0
        try:
            n = os.preadv(self._fd, [buffer[:want]], self._position)
        except OSError as err:
            raise _os_error(err, f"source {self._path}") from None
        if n == 0:
            self._check()
            raise SourceChangedError(
                f"source changed: {self._path} ended early at byte {self._position}"
            )
        self._position += n
        self.bytes_read += n
        self._check()
        if self._position == self._end == self._info.size:
            # A source appended to while it is copied: the stat size must be the real end
            # of the file (tests/test_control.py test_source_file_changed_during_transfer).
            if os.pread(self._fd, 1, self._position):
                raise SourceChangedError(
                    f"source changed: {self._path} grew beyond {self._info.size} bytes"
                )
        return n

    def fileno(self) -> int:
        """The source's file descriptor (for ``copy_file_range``)."""
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class FileChunkWriter(ChunkWriter):
    """Positional writes into a session's temp file; one journal line per chunk."""

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
            raise _os_error(err, f"destination temp file {self._temp}") from None
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
        offset = index * self._chunk_size
        try:
            view = data
            while view:
                n = os.pwrite(self._fd, view[:_WRITE_BLOCK], offset)
                view = view[n:]
                offset += n
            self._commit(index, checksum)
        except OSError as err:
            raise self._write_error(err) from None

    def _write_error(self, err: OSError) -> StaccatoError:
        if err.errno in _NO_SPACE:
            return _no_space(self._target, self._size, self._temp, err)
        return _os_error(err, f"destination temp file {self._temp}")

    def _commit(self, index: int, checksum: str) -> None:
        # fdatasync per chunk: the journal then records durable chunks, and on this
        # kind of VM it is also faster than letting dirty pages pile up (1.9 s vs
        # 0.8 s for 1 GiB: the kernel throttles writers once dirty pages accumulate).
        os.fdatasync(self._fd)
        os.write(self._journal, f"{index} {checksum}\n".encode())

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
            raise _os_error(err, f"destination temp file {self._temp}") from None

    def _read_fd(self) -> int:
        if self._reader < 0:
            self._reader = os.open(self._temp, os.O_RDONLY | os.O_CLOEXEC)
            if hasattr(os, "posix_fadvise"):
                # No readahead: it would reach into chunks other streams are writing
                # and slow their writes (compare with bench/bench_file_http.py).
                os.posix_fadvise(self._reader, 0, 0, os.POSIX_FADV_RANDOM)
        return self._reader

    def close(self) -> None:
        for fd in (self._fd, self._journal, self._reader):
            if fd >= 0:
                os.close(fd)
        self._fd = self._journal = self._reader = -1


# Bytes per pwrite(2) call. Several streams write into one temp file, and a write
# holds the inode lock for all the pages it covers: 1 MiB calls keep one stream from
# stalling the others for a whole chunk (bench/bench_file_http.py measures the copy).
_WRITE_BLOCK = 1 << 20
_COPY_BLOCK = 1 << 20  # bytes read, checksummed and copied at a time by copy_chunk

# copy_file_range(2) errors meaning "the kernel cannot copy between these two files"
_NO_KERNEL_COPY = {errno.EXDEV, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


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


class FileDriver(Driver):
    """Driver for ``file://`` URLs."""

    scheme = "file"
    can_read_back = True  # the temp file is readable, and durable_chunks re-checks bytes

    def can_copy_from(self, source: EndpointURL, destination: EndpointURL) -> bool:
        """Local file to local file: ``copy_file_range(2)`` (see ``copy_chunk``)."""
        return source.scheme == destination.scheme == "file"

    def stat(self, url: EndpointURL) -> ObjectInfo:
        try:
            st = os.stat(url.path)
        except OSError as err:
            raise _os_error(err, f"source {url.path}") from None
        if stat_module.S_ISDIR(st.st_mode):
            raise NotAFileError(
                f"source {url.path} is a directory; name a file (directory transfers are not supported yet)"
            )
        if not stat_module.S_ISREG(st.st_mode):
            raise PermanentError(f"source {url.path} is not a regular file")
        if not os.access(url.path, os.R_OK):
            raise PermissionDeniedError(f"source {url.path}: permission denied")
        return ObjectInfo(
            size=st.st_size,
            version=_version(st),
            supports_ranges=True,
            modified_at=st.st_mtime,
            mtime_resolution_s=mtime_resolution_s(url.path),
        )

    def open_read(self, url: EndpointURL, info: ObjectInfo, offset: int, length: int) -> Reader:
        return FileReader(url.path, info, offset, length)

    def check_destination(self, url: EndpointURL) -> None:
        target = Path(url.path)
        parent = target.parent
        try:
            parent_mode = os.stat(parent).st_mode
        except FileNotFoundError:
            raise DestinationMissingError(
                f"destination directory {parent} does not exist (for {url}); create it first"
            ) from None
        except OSError as err:
            raise _os_error(err, f"destination directory {parent}") from None
        if not stat_module.S_ISDIR(parent_mode):
            raise DestinationMissingError(
                f"destination directory {parent} is not a directory (for {url})"
            )
        try:
            existing = os.lstat(target)
        except FileNotFoundError:
            existing = None
        except OSError as err:
            raise _os_error(err, f"destination {target}") from None
        if existing is not None:
            if stat_module.S_ISDIR(existing.st_mode):
                raise NotAFileError(
                    f"destination {target} is a directory; name the file to write, e.g. {target}/NAME"
                )
            if stat_module.S_ISLNK(existing.st_mode):
                raise PermanentError(
                    f"destination {target} is a symbolic link; name the file it points to "
                    f"({os.path.realpath(target)}) to replace that file"
                )
            if not stat_module.S_ISREG(existing.st_mode):
                raise PermanentError(
                    f"destination {target} exists and is not a regular file (a device, FIFO or "
                    "socket); refusing to replace it"
                )
        if not os.access(parent, os.W_OK | os.X_OK):
            raise PermissionDeniedError(f"destination directory {parent} is not writable")

    def check_space(self, url: EndpointURL, size: int, temp: str | None = None) -> None:
        """Fail before copying when the destination file system cannot hold ``size``
        bytes, less what the session's ``temp`` file already holds (a retried attempt).

        Raises:
            PermanentError: not enough free space (names the file system, bytes needed
                and free, and the fix).
        """
        parent = os.path.dirname(url.path) or "/"
        try:
            fs = os.statvfs(parent)
        except OSError:
            return
        free = fs.f_bavail * fs.f_frsize
        held = 0
        if temp is not None:
            try:
                held = _allocated(os.stat(temp), size)
            except FileNotFoundError:
                held = 0
            except OSError as err:
                raise _os_error(err, f"destination temp file {temp}") from None
        if size - held > free:
            raise _no_space(url.path, size, temp or url.path)

    def _paths(self, url: EndpointURL, session_key: str) -> tuple[str, str]:
        target = Path(url.path)
        # keep the temp name within NAME_MAX (255 bytes) whatever the target's name
        key = hashlib.sha256(session_key.encode()).hexdigest()[:16]
        name = target.name.encode()[:150].decode(errors="ignore")
        stem = f".{name}.{key}"
        return str(target.parent / (stem + _TEMP_SUFFIX)), str(
            target.parent / (stem + _JOURNAL_SUFFIX)
        )

    def open_session(
        self, url: EndpointURL, size: int, chunk_size: int, session_key: str
    ) -> WriteSession:
        self.check_destination(url)
        temp, journal = self._paths(url, session_key)
        self.check_space(url, size, temp)  # every attempt: a retry may find the disk full
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                st = os.fstat(fd)
                if st.st_size != size:
                    os.ftruncate(fd, size)
            finally:
                os.close(fd)
            fd = os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
            try:
                journal_inode = os.fstat(fd).st_ino
            finally:
                os.close(fd)
        except OSError as err:
            raise _os_error(err, f"destination {url.path}") from None
        return WriteSession(
            url=url.canonical,
            size=size,
            chunk_size=chunk_size,
            session_id=temp,
            # the inodes tell this session's files from look-alikes (a file re-created
            # under the name, an old destination of the same size after publish)
            data={
                "path": url.path,
                "journal": journal,
                "inode": str(st.st_ino),
                "journal_inode": str(journal_inode),
            },
        )

    def open_writer(self, session: WriteSession) -> ChunkWriter:
        return FileChunkWriter(session)

    def _journaled_chunks(self, session: WriteSession) -> dict[int, str]:
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

    def durable_chunks(
        self, session: WriteSession, first_chunk: int = 0, end_chunk: int | None = None
    ) -> dict[int, str]:
        """Journaled chunks in ``[first_chunk, end_chunk)`` whose bytes in the temp file
        still match their checksum.

        Costs one local read of the range's chunks already written (none on a first
        attempt): a resumed stream checks its own segment only, reading
        ``_CHECK_BLOCK`` bytes at a time and calling :func:`keepalive` between blocks
        so its activity heartbeats however slow the disk is.
        """
        end = chunk_count(session.size, session.chunk_size) if end_chunk is None else end_chunk
        journaled = {
            index: checksum
            for index, checksum in self._journaled_chunks(session).items()
            if first_chunk <= index < end
        }
        if not journaled:
            return {}
        durable: dict[int, str] = {}
        buffer = memoryview(bytearray(min(session.chunk_size, _CHECK_BLOCK)))
        try:
            fd = os.open(session.session_id, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return {}
        try:
            for index, checksum in sorted(journaled.items()):
                keepalive()
                offset, length = chunk_bounds(index, session.size, session.chunk_size)
                algorithm = "sha256" if len(checksum) == 64 else "crc32c"
                hasher = checksums.new_hasher(algorithm)
                done = 0
                while done < length:
                    view = buffer[: min(len(buffer), length - done)]
                    n = os.preadv(fd, [view], offset + done)
                    if n <= 0:
                        break
                    hasher.update(view[:n])
                    done += n
                    keepalive()
                if done == length and hasher.hexdigest() == checksum:
                    durable[index] = checksum
        except OSError as err:
            raise _os_error(err, f"destination temp file {session.session_id}") from None
        finally:
            os.close(fd)
        return durable

    def session_url(self, session: WriteSession) -> str | None:
        return "file://" + quote(session.session_id, safe="/")

    def publish(self, session: WriteSession) -> None:
        """Check the temp file is still this session's, whole and unaltered where that
        is cheap to see, then fsync + rename(2) over the target + fsync the directory.

        Reads no data, so its cost does not grow with the object (it runs in a short
        activity): the bytes were proven when written (journal after ``fdatasync``,
        verify-on-write or the pre-publish verify). What it can see from metadata it
        checks: inode, size, a journal line per chunk, and no chunk lying wholly in a
        hole (``SEEK_HOLE``, e.g. truncated and extended again) unless the journal
        says that chunk is zeros (some file systems store zero blocks as holes).

        Raises:
            WriteSessionLostError: the temp file or journal is gone or not this session's,
                has the wrong size, or a chunk whose journaled checksum is not that of
                zeros is a hole.
        """
        target = session.data["path"]
        temp = session.session_id
        inode = session.data.get("inode")
        try:
            st = os.stat(temp)
        except FileNotFoundError:
            if _is_published(target, session):
                return  # an earlier attempt published it (the activity retried after rename)
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
        journaled = self._journaled_chunks(session)
        missing = chunk_count(session.size, session.chunk_size) - len(journaled)
        if missing:
            raise PermanentError(f"refusing to publish {target}: {missing} chunks are not durable")
        damaged = _holed_chunks(temp, session, journaled)
        if damaged:
            raise WriteSessionLostError(
                f"write session {temp}: {len(damaged)} chunks (first: {damaged[0]}) no longer "
                "match their checksums: they read as zeros (the temp file was truncated or "
                "holes were punched into it)"
            )
        try:
            fd = os.open(temp, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(temp, target)
            dir_fd = os.open(os.path.dirname(target) or ".", os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as err:
            raise _os_error(err, f"destination {target}") from None
        _unlink(session.data["journal"])

    def abort(self, session: WriteSession) -> None:
        _unlink(session.session_id)
        _unlink(session.data["journal"])


# bytes read (and checksummed) at a time when a resumed stream re-checks its chunks;
# keepalive() is called between blocks (8 MiB: a few tens of ms on a slow disk)
_CHECK_BLOCK = 8 << 20


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


def _holed_chunks(temp: str, session: WriteSession, journaled: dict[int, str]) -> list[int]:
    """Chunks lying wholly in a hole of ``temp`` whose journaled checksum is not that of
    zeros (their bytes would read as zeros): damage, found without reading data.

    A chunk only partly in a hole is not judged here (file systems may store any zero
    block as a hole); its bytes were proven when it was written.
    """
    try:
        fd = os.open(temp, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        raise _os_error(err, f"destination temp file {temp}") from None
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
            algorithm = "sha256" if len(checksum) == 64 else "crc32c"
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


def _is_published(target: str, session: WriteSession) -> bool:
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


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
