"""Group commit of small files written whole to a local file system (a dataset's batch).

A single transfer makes each chunk durable (``fdatasync``) before it journals it, and
each publish durable (``fsync`` of the directory): two journal commits of the file
system per file, which for a file of 64 KiB cost far more than its bytes. A batch of
small files instead commits them in groups, with the same guarantees:

1. :meth:`LocalGroup.stage`: the whole file is written under its temp name (the
   write session's name, :func:`staccato.endpoints.file.session.session_paths`) from
   the bytes read (immutable ``bytes``: nothing can change them between the source's
   checks and ``pwrite``), not read back: as a stream's chunk written from its own
   buffer (docs/architecture.md, "Written from the stream's buffer"), a read right
   after the write would only read the same pages from the page cache. No journal:
   the file is one chunk, and a temp file not published is written again whole by a
   retry (``O_TRUNC``), never trusted.
2. :meth:`LocalGroup.commit`, for the files staged so far, in order: their data made
   durable (``sync_file_range`` starts the write-back of every temp file at once, then
   one ``fdatasync`` each, up to :data:`SYNC_THREADS` at once: each waits mostly for
   the device, and on a file system without a journal each flushes the device's cache,
   which a device serves better several at a time than one after the other), each
   local source's version re-checked, each temp
   file renamed over its target, then each directory touched ``fsync``-ed once.
   Only then does the caller count the files as done (its checkpoint moves past them).

So nothing is renamed to its final name before its bytes are durable (a crash at any
point leaves at a final name either the old file or the whole new one), and the
checkpoint never covers a file whose rename is not durable. A temp file left by a
killed attempt keeps its name (same session key), so the retry rewrites and renames it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from staccato.endpoints.base import write_fence
from staccato.endpoints.file.driver import FileDriver, check_parent, check_target
from staccato.endpoints.file.fs import NO_SPACE, no_space, os_error
from staccato.endpoints.file.read import file_version, what_changed
from staccato.endpoints.file.session import JOURNAL_SUFFIX, session_paths, unlink_if_present
from staccato.errors import (
    NOT_REPLACED,
    NotAFileError,
    SourceChangedError,
    StaccatoError,
)
from staccato.models import ObjectInfo, same_version
from staccato.urls import EndpointURL


def _libc_sync_file_range() -> Callable[..., int] | None:
    """``sync_file_range(2)`` from the C library (Linux), or None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


_SYNC_FILE_RANGE = _libc_sync_file_range()
#: ``fdatasync`` calls of one commit in flight at once (threads of this process, shared
#: by its batches; measured on a virtio disk: 64 files of 64 KiB 0.10-0.13 s one after
#: the other, 0.06-0.08 s eight at a time)
SYNC_THREADS = 8
_syncers: ThreadPoolExecutor | None = None
_syncers_lock = threading.Lock()


def _datasync_all(fds: list[int]) -> None:
    """``fdatasync`` each of ``fds``, up to :data:`SYNC_THREADS` at once; returns once
    every call has returned (so the caller may close them).

    The fds are dealt into at most :data:`SYNC_THREADS` slices, one task each, which
    syncs its slice one fd after the other: as many calls in flight as one task per fd
    gave, for a handful of thread hand-offs per group instead of a few per file (a
    task's submit, its future's completion and the waiter's wake-up each take the GIL).

    Raises:
        OSError: a call that failed (the first failure of the first slice with one;
            every slice runs to its end, syncing its fds after a failure too).
    """
    global _syncers
    if len(fds) < 3:
        for fd in fds:
            os.fdatasync(fd)
        return
    with _syncers_lock:
        if _syncers is None:
            _syncers = ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="group-sync")
        pool = _syncers
    slices = min(SYNC_THREADS, len(fds))
    futures = [pool.submit(_datasync_each, fds[first::slices]) for first in range(slices)]
    wait(futures)
    for future in futures:
        error = future.exception()
        if error is not None:
            raise error


def _datasync_each(fds: list[int]) -> None:
    """``fdatasync`` each of ``fds`` in turn, all of them even after a failure.

    Raises:
        OSError: the first call that failed.
    """
    failure: OSError | None = None
    for fd in fds:
        try:
            os.fdatasync(fd)
        except OSError as err:
            failure = failure or err
    if failure is not None:
        raise failure


#: sync_file_range(2) flag: start write-back of the dirty pages, do not wait
_SYNC_FILE_RANGE_WRITE = 2


@dataclass
class StagedFile:
    """One file written whole under its temp name, not yet durable nor published.

    Attributes:
        target: the destination path (final name).
        temp: the temp file's path (beside ``target``).
        fd: the temp file, open until the commit.
        size: bytes written.
        source_path: a local source to re-stat before publish (its version pinned in
            ``source_version``); None for a source whose bytes are of one version by
            construction (one GetObject response).
    """

    target: str
    temp: str
    fd: int
    size: int
    source_path: str | None = None
    source_version: str | None = None


class LocalGroup:
    """The destination side of a batch of small files to a local file system: each
    directory checked and created once per batch, files staged, committed in groups.

    Thread-safe: files are staged from several threads; commit and discard run in
    one thread (the batch's).
    """

    def __init__(self) -> None:
        self._directories: dict[str, int | StaccatoError] = {}
        #: the file whose check found a directory's error (its message names it)
        self._failed_for: dict[str, str] = {}
        #: per directory (checked), the names in it that were not regular files when
        #: the batch first wrote there; None: too large to list, each name is lstat'ed
        self._not_files: dict[str, frozenset[str] | None] = {}
        self._lock = threading.Lock()

    def _directory(self, url: EndpointURL) -> int:
        """The destination directory of ``url``, created if missing and checked as a
        single transfer checks it (:func:`check_parent`) the first time: an open fd
        (``O_DIRECTORY``) to ``fsync`` at commit.

        Raises:
            StaccatoError: as ``make_parents`` and ``check_parent`` (remembered for
                the batch: every file of that directory fails alike, each named in its
                own message: the check is asked again for another file, as a single
                transfer of it would, since the words name the file, e.g.
                :func:`staccato.errors.linked_directory_message`).
        """
        parent = os.path.dirname(url.path) or "/"
        known = self._directories.get(parent)
        if known is None:
            with self._lock:
                known = self._directories.get(parent)
                if known is None:
                    known = self._directories[parent] = _open_directory(url, parent)
                    self._failed_for[parent] = url.path
        if isinstance(known, StaccatoError):
            if self._failed_for.get(parent) == url.path:
                raise known
            again = _open_directory(url, parent)
            if isinstance(again, int):  # healed meanwhile: the batch keeps one verdict
                os.close(again)
                raise known
            raise again
        return known

    def _check_target(self, target: str) -> None:
        """:func:`check_target` of ``target``, asked only for a name its directory held
        as something else than a regular file when the batch first wrote there (one
        ``scandir`` of a directory of at most :data:`LISTED_DIRECTORY_MAX` bytes, its
        entries' types from ``getdents``), not one ``lstat`` per file. What appears at
        a name later (a directory made for another file of the dataset, or by another
        writer) is found by the rename, which refuses to replace a directory
        (:func:`_publish_error`); a link or special file made there by another writer
        within the batch is replaced, as it would be between an ``lstat`` and the
        rename.

        Raises:
            as :func:`check_target`.
        """
        parent, _, name = target.rpartition("/")
        parent = parent or "/"
        try:
            odd = self._not_files[parent]
        except KeyError:
            odd = self._not_files[parent] = _not_files(parent)
        if odd is None or name in odd:
            check_target(target)

    def stage(
        self,
        url: EndpointURL,
        session_key: str,
        data: bytes,
        source_path: str | None = None,
        source_version: str | None = None,
    ) -> StagedFile:
        """Write ``data`` whole under ``url``'s temp name (session ``session_key``).

        Args:
            data: the whole file, as read (and checked: an S3 GetObject's CRC32C) from
                the source; written as it is, not read back (module docstring).
            source_path, source_version: a local source, re-checked before publish.

        Raises:
            NotAFileError, PermanentError: the target is a directory, a symbolic link or
                another non-regular file; the directory cannot be created or used.
            RetryableError: no space left (names the file system, the bytes needed
                and free, and the fix): the batch is retried for ``--retry-for``, as on
                an SFTP destination.
            PermanentError: the file is larger than the whole file system.
        """
        self._directory(url)
        self._check_target(url.path)
        temp, _ = session_paths(url, session_key)
        write_fence()  # under the batch's lease: a retry elsewhere writes this temp name too
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise os_error(err, f"destination {url.path}") from None
        try:
            view = memoryview(data)
            written = 0
            while written < len(view):
                written += os.pwrite(fd, view[written:], written)
        except BaseException as err:
            os.close(fd)
            unlink_if_present(temp)
            if isinstance(err, OSError):
                if err.errno in NO_SPACE:
                    raise no_space(url.path, len(data), temp, err) from None
                raise os_error(err, f"destination temp file {temp}") from None
            raise
        return StagedFile(
            target=url.path,
            temp=temp,
            fd=fd,
            size=len(data),
            source_path=source_path,
            source_version=source_version,
        )

    def commit(self, staged: list[StagedFile]) -> list[StaccatoError | None]:
        """Make ``staged`` durable and publish them, in order (see the module docstring).

        Returns:
            Per file (same order): None when published, else the reason it was not (a
            source changed, a rename refused); that file's temp file is removed.

        Raises:
            StaccatoError: the data or a directory could not be made durable (an I/O
                error): nothing counts as published; the temp files are left for the
                retry (which rewrites them).
        """
        if not staged:
            return []
        try:
            if _SYNC_FILE_RANGE is not None:
                for item in staged:
                    # start every write-back at once: one journal commit serves them all
                    _SYNC_FILE_RANGE(item.fd, 0, 0, _SYNC_FILE_RANGE_WRITE)
            _datasync_all([item.fd for item in staged])
        except OSError as err:
            raise os_error(err, "destination: making the written files durable") from None
        finally:
            for item in staged:
                os.close(item.fd)
                item.fd = -1
        results: list[StaccatoError | None] = []
        directories: set[str] = set()
        for item in staged:
            # under the batch's lease (raised, not a file's failure): a batch frozen past
            # its heartbeat timeout may have been retried, and a newer file published
            write_fence()
            try:
                _check_source(item)
                os.rename(item.temp, item.target)
            except (StaccatoError, OSError) as err:
                unlink_if_present(item.temp)
                results.append(_publish_error(err, item.target))
                continue
            directories.add(os.path.dirname(item.target) or "/")
            results.append(None)
        for directory in sorted(directories):
            known = self._directories.get(directory)
            try:
                if isinstance(known, int):
                    os.fsync(known)
                else:
                    _fsync_directory(directory)
            except OSError as err:
                raise os_error(err, f"destination directory {directory}") from None
        return results

    def discard(self, staged: list[StagedFile]) -> None:
        """Remove staged files never committed (cancelled, or a failure before commit)."""
        for item in staged:
            if item.fd >= 0:
                os.close(item.fd)
                item.fd = -1
            unlink_if_present(item.temp)

    def close(self) -> None:
        """Close the directories' fds."""
        with self._lock:
            for known in self._directories.values():
                if isinstance(known, int):
                    os.close(known)
            self._directories.clear()


#: bytes: a destination directory larger than this (~1,000-4,000 names on ext4) is
#: not listed by :meth:`LocalGroup._check_target` (each batch writing there would read
#: it whole); each of its targets is ``lstat``-ed instead
LISTED_DIRECTORY_MAX = 64 * 1024


def _not_files(directory: str) -> frozenset[str] | None:
    """The names in ``directory`` that are not regular files (``DirEntry`` types: no
    ``stat`` where the file system gives them), or None when it is larger than
    :data:`LISTED_DIRECTORY_MAX` bytes or cannot be listed (every name is then
    checked by itself)."""
    try:
        if os.stat(directory).st_size > LISTED_DIRECTORY_MAX:
            return None
        with os.scandir(directory) as entries:
            return frozenset(
                entry.name for entry in entries if not entry.is_file(follow_symlinks=False)
            )
    except OSError:
        return None


def _open_directory(url: EndpointURL, parent: str) -> int | StaccatoError:
    """``parent`` created (as ``make_parents``), checked (``check_parent``) and opened."""
    try:
        created = []
        missing = parent
        while not os.path.isdir(missing) and os.path.dirname(missing) != missing:
            created.append(missing)
            missing = os.path.dirname(missing)
        FileDriver().make_parents(url)
        for directory in reversed(created):
            # the new directory's own name made durable in its parent, so a crash
            # cannot take away a directory whose files were counted as done
            _fsync_directory(os.path.dirname(directory))
        check_parent(Path(parent), url)
        return os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except StaccatoError as err:
        return err
    except OSError as err:
        return os_error(err, f"destination directory {parent}")


def _publish_error(err: StaccatoError | OSError, target: str) -> StaccatoError:
    """Why ``target`` was not published, in words (a directory now at its name: another
    file of the dataset whose name has ``target`` as a directory, or one there before)."""
    if isinstance(err, StaccatoError):
        return err
    if err.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
        return NotAFileError(
            f"destination {target} is a directory (made for another file of the dataset, "
            f"or there already); {NOT_REPLACED}"
        )
    return os_error(err, f"destination {target}")


def _fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_source(item: StagedFile) -> None:
    """The local source still has the version its bytes were read at (as a single
    transfer re-checks it before publish).

    Raises:
        SourceChangedError: it was modified, replaced or removed.
    """
    if item.source_path is None or item.source_version is None:
        return
    try:
        st = os.stat(item.source_path)
    except FileNotFoundError:
        raise SourceChangedError(
            f"source changed during the transfer: {item.source_path} was removed; "
            "nothing was published"
        ) from None
    except OSError as err:
        raise os_error(err, f"source {item.source_path}") from None
    if not same_version(item.source_version or "", file_version(st)):
        raise SourceChangedError(
            f"source changed during the transfer: {item.source_path} "
            f"{_what_changed(item, st)}; nothing was published"
        )


def _what_changed(item: StagedFile, st: os.stat_result) -> str:
    return what_changed(ObjectInfo(size=item.size, version=item.source_version or ""), st)


def remove_temp(url: EndpointURL, session_key: str) -> None:
    """Remove what a session ``session_key`` of ``url`` may have left (its temp file,
    and the journal an earlier release kept beside it)."""
    temp, journal = session_paths(url, session_key)
    unlink_if_present(temp)
    if journal.endswith(JOURNAL_SUFFIX):
        unlink_if_present(journal)
