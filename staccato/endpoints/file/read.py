"""Reading a local file: a range of the pinned version (size + mtime (ns) + inode),
re-checked with ``fstat`` after every read, so a file rewritten, truncated or appended
to during the copy fails with ``SourceChangedError``."""

from __future__ import annotations

import errno
import os

from staccato.endpoints.base import Reader
from staccato.endpoints.file.fs import os_error
from staccato.errors import SourceChangedError
from staccato.models import ObjectInfo, same_version


def file_version(st: os.stat_result) -> str:
    """A local file's version: size, mtime and ctime (ns) and inode. The ctime moves on
    every write and metadata change and cannot be set back (``touch -r`` restores only
    the mtime), so a rewrite in place with the mtime put back is a new version. Compare
    with :func:`staccato.models.same_version`."""
    return f"size={st.st_size};mtime_ns={st.st_mtime_ns};ctime_ns={st.st_ctime_ns};ino={st.st_ino}"


def what_changed(info: ObjectInfo, st: os.stat_result) -> str:
    """Which part of the pinned version (size, mtime, inode) moved, in words; a file
    whose last name went while open (``fstat`` of its fd: no link left) says so, as
    that also moves its change time: deleted, or another file renamed over it (an
    atomic replace, which a writer's save often is)."""
    if st.st_nlink == 0:
        return "was removed or replaced (deleted, or another file renamed over it, while it was being read)"
    if st.st_size != info.size:
        return f"now has {st.st_size} bytes (was {info.size})"
    if not info.version.endswith(f";ino={st.st_ino}"):
        return "was replaced by another file (new inode)"
    if f";mtime_ns={st.st_mtime_ns};" not in info.version:
        return "was modified (new modification time)"
    return "was modified or its metadata changed (new change time; its mtime is the same)"


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
            raise os_error(err, f"source {path}") from None
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
        if not same_version(self._info.version, file_version(st)):
            raise SourceChangedError(
                f"source changed during the transfer: {self._path} {what_changed(self._info, st)}"
            )

    def readinto(self, buffer: memoryview) -> int:
        want = min(len(buffer), self._end - self._position)
        if want <= 0:
            return 0
        try:
            n = os.preadv(self._fd, [buffer[:want]], self._position)
        except OSError as err:
            raise os_error(err, f"source {self._path}") from None
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
