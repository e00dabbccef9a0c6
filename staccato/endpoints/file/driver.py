"""The ``file`` driver: stat, read, list a directory tree, check the destination and its
free space, open, publish and abort write sessions (the session's files: :mod:`.session`)."""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import stat as stat_module
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from staccato.endpoints.base import (
    ChunkWriter,
    Driver,
    Features,
    Reader,
    remembered,
    write_fence,
)
from staccato.endpoints.file.fs import (
    KERNEL_COPY_FILE_SYSTEMS,
    PSEUDO_FILE_SYSTEMS,
    allocated,
    capacity_for_files,
    file_system_type,
    journal_room,
    mount_point,
    mtime_resolution_of,
    no_space,
    os_error,
)
from staccato.endpoints.file.read import FileReader, file_version
from staccato.endpoints.file.session import (
    FileChunkWriter,
    check_publishable,
    durable_chunks,
    partial_chunk,
    recheck_earlier_chunks,
    session_paths,
    unlink_if_present,
    written_by_staccato,
)
from staccato.endpoints.listing import (
    BROKEN_LINK,
    LINK_LOOP,
    Child,
    Fence,
    ListDirectoryError,
    SortedCache,
    SortedChildren,
    into_destination,
    page,
    sort_children,
    walk,
)
from staccato.errors import (
    NOT_A_REGULAR_FILE,
    DestinationMissingError,
    NotAFileError,
    PermanentError,
    PermissionDeniedError,
    SourceRootNotADirectoryError,
    directory_target_message,
    file_in_the_way_message,
    linked_directory_message,
    no_capacity_message,
    source_root_not_a_directory,
)
from staccato.models import ListPage, ObjectInfo, WriteSession
from staccato.plan import chunk_count
from staccato.temp_names import TEMP_SUFFIX, journal_of, leftover_pattern
from staccato.urls import EndpointURL

_log = logging.getLogger("staccato.file")


class FileDriver(Driver):
    """Driver for ``file://`` URLs."""

    scheme = "file"
    # the temp file is readable, and durable_chunks re-checks the bytes it reports
    features = Features(
        write=True,
        read_back=True,
        unpublished_readable=True,
        server_side_copy=True,
        reopens_by_key=True,
    )

    def can_copy_from(self, source: EndpointURL, destination: EndpointURL) -> bool:
        """Local file to local file where the destination's file system copies without
        this machine's page cache (``KERNEL_COPY_FILE_SYSTEMS``: shared extents, a
        server-side copy): ``copy_file_range(2)`` (see ``copy_chunk``). Elsewhere the
        stream reads, checksums and writes the bytes itself (direct I/O)."""
        if not source.scheme == destination.scheme == "file":
            return False
        parent = os.path.dirname(destination.path) or "."
        return file_system_type(parent) in KERNEL_COPY_FILE_SYSTEMS

    def stat(self, url: EndpointURL) -> ObjectInfo:
        try:
            st = os.stat(url.path)
        except OSError as err:
            raise os_error(err, f"source {url.path}") from None
        if stat_module.S_ISDIR(st.st_mode):
            raise NotAFileError(
                f"source {url.path} is a directory; name a file, or copy the directory with cp -r"
            )
        if not stat_module.S_ISREG(st.st_mode):
            raise PermanentError(f"source {url.path} is not a regular file")
        if not os.access(url.path, os.R_OK):
            raise PermissionDeniedError(f"source {url.path}: permission denied")
        kind = file_system_type(url.path, st.st_dev)
        if kind in PSEUDO_FILE_SYSTEMS:
            raise PermanentError(
                f"source {url.path} is on the kernel's {kind} file system: its size "
                f"({st.st_size} bytes) says nothing of what a read returns, and it changes "
                "as it is read; copy it to a regular file first (e.g. with cat)"
            )
        return ObjectInfo(
            size=st.st_size,
            version=file_version(st),
            supports_ranges=True,
            modified_at=st.st_mtime,
            mtime_resolution_s=mtime_resolution_of(kind),
        )

    def open_read(self, url: EndpointURL, info: ObjectInfo, offset: int, length: int) -> Reader:
        return FileReader(url.path, info, offset, length)

    def list_page(
        self,
        root: EndpointURL,
        after: str | None,
        limit: int,
        *,
        fence: Sequence[EndpointURL] = (),
    ) -> ListPage:
        """The files under the directory ``root`` (see :meth:`Driver.list_page` and
        :mod:`staccato.endpoints.listing` for the order and restart). Symbolic links are
        followed, to files and to directories (a link back to a directory being walked
        is a ``symbolic link loop`` entry), except into the ``file`` roots of ``fence``
        (each link then costs an ``os.path.realpath``); FIFOs, sockets and devices are error
        entries; a name that is not valid UTF-8 is an error entry spelled with
        ``\\xNN`` escapes. A file or directory removed while being listed is left
        out. Memory: the entries of the directories on the current path + one page,
        and the sorted names of the last two directories of 5,000 names or more (so
        paging through a huge directory does not re-read it per page).

        Raises:
            NotFoundError, PermissionDeniedError: ``root`` is missing or unreadable.
            SourceRootNotADirectoryError: ``root`` is not a directory.
        """
        top = root.path
        try:
            st = os.stat(top)
        except OSError as err:
            raise os_error(err, f"source directory {top}") from None
        if not stat_module.S_ISDIR(st.st_mode):
            raise SourceRootNotADirectoryError(source_root_not_a_directory(str(root)))

        walls = _fence(fence)
        resolve = bool(walls.roots)

        def list_dir(prefix: str) -> SortedChildren:
            try:
                return _sorted_children(os.path.join(top, prefix), resolve)
            except OSError as err:
                if not prefix:
                    raise os_error(err, f"source directory {top}") from None
                if err.errno == errno.ENOENT:
                    return SortedChildren((), ())  # removed while listed
                reason = "permission denied" if err.errno == errno.EACCES else err.strerror
                raise ListDirectoryError(f"cannot list directory: {reason}") from None

        def describe(prefix: str, child: Child) -> Child | None:
            return _described(os.path.join(top, prefix, child.name), child)

        entries = walk(
            list_dir,
            (st.st_dev, st.st_ino),
            after,
            describe,
            fence=walls,
            root_real=os.path.realpath(top) if resolve else None,
        )
        return page(entries, limit)

    def leads_into(self, url: EndpointURL, fence: Sequence[EndpointURL]) -> str | None:
        walls = _fence(fence)
        real = os.path.realpath(url.path)
        shown = walls.holding(real)
        if shown is None:
            return None
        return into_destination(shown, real, link=True, directory=os.path.isdir(real))

    def check_destination(self, url: EndpointURL) -> None:
        target = Path(url.path)
        check_parent(target.parent, url)
        check_target(target)

    def check_target(self, url: EndpointURL) -> None:
        """See :meth:`Driver.check_target` and the module's :func:`check_target`."""
        check_target(url.path)

    #: the inode's ctime is the file system's clock (the worker's host, for a local
    #: disk; a network file system's server), its kernel's coarse clock (ticks of a few
    #: ms): 1 s covers that and a Temporal server's clock on another host kept by NTP
    change_time_slack_s = 1.0

    def changed_at(self, url: EndpointURL) -> float | None:
        """The inode's ``st_ctime`` (not followed through a link): a publish's rename,
        a write, ``utime`` and ``chmod`` set it to the kernel's time, and nothing sets
        it back (``utime`` moves the mtime, not it). See :meth:`Driver.changed_at`."""
        try:
            return os.lstat(url.path).st_ctime
        except OSError as err:
            raise os_error(err, f"destination {url.path}") from None

    def check_directory_name(self, url: EndpointURL) -> None:
        """See :meth:`Driver.check_directory_name`: the words of :func:`check_parent`.
        One realpath per directory within a
        :func:`staccato.endpoints.base.directory_memo` block."""
        parent = os.path.normpath(os.path.dirname(url.path) or "/")
        if not os.path.isdir(parent):
            return  # made by the copy (make_parents checks the one above)
        real = remembered(("file-realpath", parent), lambda: os.path.realpath(parent))
        if real != parent:
            raise PermanentError(
                linked_directory_message(url.path, os.path.join(real, os.path.basename(url.path)))
            )

    def check_destination_root(self, root: EndpointURL) -> None:
        """Nothing under the destination directory ``root`` could be written: the
        nearest existing directory at or above it is not a directory (a file, a broken
        symbolic link stands where the root or a directory above it would be made), its
        file system has no capacity (/proc, /sys: :func:`no_capacity_message`, the
        words of a single transfer there) or is read-only, or the root is missing and
        that directory is not writable (``mkdir -p`` would fail), or the root is there
        and not writable (no file could be made in it: its mode, ``chattr +i``). A
        statvfs and an access check (``access(2)``): nothing is made.

        Raises:
            DestinationMissingError: a file is on the way (named).
            PermanentError: a file system with no capacity.
            PermissionDeniedError: read-only, the root cannot be made there, or it is
                there and not writable.
        """
        path = Path(root.path)
        while not os.path.lexists(path) and path != path.parent:
            path = path.parent
        if not os.path.isdir(path):
            kind = "a file" if os.path.exists(path) else "a broken symbolic link"
            raise DestinationMissingError(
                f"destination directory {root.path} cannot be made: {path} is {kind}, not "
                "a directory; choose another destination"
            )
        try:
            fs = os.statvfs(path)
        except OSError:
            return  # the copy of each file says why, if anything is wrong
        what = f"destination directory {root.path}"
        if fs.f_blocks == 0:  # no capacity at all: /proc, /sys and the like (statvfs(3))
            raise PermanentError(
                no_capacity_message(what, f"the file system mounted at {mount_point(str(path))}")
            )
        if fs.f_flag & os.ST_RDONLY:
            raise PermissionDeniedError(read_only_message(what, str(path)))
        if os.access(path, os.W_OK | os.X_OK):
            return
        if str(path) != os.path.normpath(root.path):
            raise PermissionDeniedError(
                f"{what} cannot be made: permission denied in {path} (this worker's user "
                "cannot create a directory there); make the directory writable, or choose "
                "another destination"
            )
        # there but closed to writes (its mode, or an immutable flag, which shows in no
        # mode bit: access(2) is the kernel's own verdict): no file of the dataset could
        # be written, so it fails once rather than each file with the same reason
        raise PermissionDeniedError(
            f"{what} is not writable: this worker's user cannot create files in it "
            "(its permissions, or an immutable flag: lsattr -d); make it writable, or "
            "choose another destination"
        )

    def make_parents(self, url: EndpointURL) -> None:
        """Make the missing directories above ``url`` (none when its directory exists).

        The nearest existing directory above them is checked first, as the SFTP
        driver does: named through a symbolic link, nothing is made (a directory
        would be created where the link leads, outside the destination as named).

        Raises:
            PermanentError: that directory is named through a symbolic link (the
                words of :func:`staccato.errors.linked_directory_message`).
            NotAFileError: a file has the name of a directory to make.
            StaccatoError: another OS error, mapped (:func:`os_error`).
        """
        parent = os.path.dirname(url.path) or "/"
        if os.path.isdir(parent):
            return  # the common case; check_parent judges a link in its name
        check_nearest_directory(url, parent)
        try:
            os.makedirs(parent, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            blocking = parent
            for candidate in Path(parent).parents:
                if candidate.is_dir():
                    break
                blocking = str(candidate)
            while not os.path.isdir(os.path.dirname(blocking)):
                blocking = os.path.dirname(blocking)
            raise NotAFileError(file_in_the_way_message(blocking, url.path)) from None
        except OSError as err:
            raise os_error(err, f"destination directory {parent}") from None

    def check_space(self, url: EndpointURL, size: int, temp: str | None = None) -> None:
        """Fail before copying when the destination file system cannot hold ``size``
        bytes, less what the session's ``temp`` file already holds (a retried attempt).

        Raises:
            RetryableError: not enough free space (names the file system, bytes needed
                and free, and the fix): space may be freed, the attempt is retried for
                ``--retry-for`` and the temp file kept (:func:`~.fs.no_space`).
            PermanentError: the file and its journal are larger than the file system's
                whole capacity (:func:`~.fs.capacity_for_files`), or the file system
                has none (``/proc``).
        """
        parent = os.path.dirname(url.path) or "/"
        try:
            fs = os.statvfs(parent)
        except OSError:
            return
        if fs.f_blocks == 0:  # no capacity at all: /proc, /sys and the like (statvfs(3))
            raise PermanentError(
                no_capacity_message(
                    f"destination {url.path}", f"the file system mounted at {mount_point(parent)}"
                )
            )
        free = fs.f_bavail * fs.f_frsize
        held = 0
        if temp is not None:
            try:
                held = allocated(os.stat(temp), size)
            except FileNotFoundError:
                held = 0
            except OSError as err:
                raise os_error(err, f"destination temp file {temp}") from None
        never_fits = capacity_for_files(fs) < size + journal_room(size, fs.f_frsize)
        if size - held > free or (never_fits and size > held):
            raise no_space(url.path, size, temp or url.path)

    def remove_leftovers(self, url: EndpointURL, session_key: str) -> list[str]:
        parent, name = os.path.split(url.path)
        pattern = leftover_pattern(name)
        if pattern is None:
            return []
        own = set(session_paths(url, session_key))
        removed: list[str] = []
        try:
            with os.scandir(parent or ".") as entries:
                names = [entry.name for entry in entries]
        except OSError as err:
            raise os_error(err, f"destination directory of {url.path}") from None
        found_paths = [
            os.path.join(parent, found)
            for found in names
            if pattern.fullmatch(os.fsencode(found)) is not None
        ]
        # a temp file and its journal go only when the journal is one Staccato wrote
        # (decided before anything goes): a user's files may have these names
        ours = {
            path
            for path in found_paths
            if path not in own
            and written_by_staccato(journal_of(path) if path.endswith(TEMP_SUFFIX) else path)
        }
        for path in found_paths:
            if path not in ours:
                if path not in own:
                    _log.info("kept %s: no journal Staccato wrote beside it", path)
                continue
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            except OSError as err:  # one that cannot go (a directory) keeps no other
                _log.warning("leftover temp data %s not removed: %s", path, err)
                continue
            removed.append(path)
        return removed

    def open_session(
        self, url: EndpointURL, size: int, chunk_size: int, session_key: str
    ) -> WriteSession:
        self.check_destination(url)
        temp, journal = session_paths(url, session_key)
        self.check_space(url, size, temp)  # every attempt: a retry may find the disk full
        # under a dataset batch's lease: a retry elsewhere opens this temp name too (the
        # same session key), and a woken zombie must neither truncate it nor leave one
        write_fence()
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
            raise os_error(err, f"destination {url.path}") from None
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

    def durable_chunks(
        self, session: WriteSession, first_chunk: int = 0, end_chunk: int | None = None
    ) -> dict[int, str]:
        """Journaled chunks in ``[first_chunk, end_chunk)`` whose bytes in the temp file
        still match their checksum (:func:`staccato.endpoints.file.session.durable_chunks`:
        a resumed stream re-reads its own segment, heartbeating as it reads)."""
        end = chunk_count(session.size, session.chunk_size) if end_chunk is None else end_chunk
        return durable_chunks(session, first_chunk, end)

    def recheck_earlier_chunks(self, session: WriteSession) -> tuple[dict[int, str], int]:
        """Journaled chunks no process of this worker life vouches for, read back and
        compared with their journaled checksums
        (:func:`staccato.endpoints.file.session.recheck_earlier_chunks`)."""
        return recheck_earlier_chunks(session)

    def partial_chunk(self, session: WriteSession, index: int, into: memoryview) -> int:
        """The prefix of chunk ``index`` a paused stream kept, read back into ``into``
        and checked (:func:`staccato.endpoints.file.session.partial_chunk`)."""
        return partial_chunk(session, index, into)

    def session_url(self, session: WriteSession) -> str | None:
        return "file://" + quote(session.session_id, safe="/")

    def publish(
        self, session: WriteSession, parts: Sequence[tuple[int, int, str]] | None = None
    ) -> None:
        """Check the temp file is still this session's, whole and unaltered where that
        is cheap to see, then rename(2) over the target + fsync the directory (each
        chunk was fdatasync'ed before it was journaled).

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
        if not check_publishable(session):
            # published by an attempt killed before it removed the journal
            unlink_if_present(session.data["journal"])
            return
        target = session.data["path"]
        temp = session.session_id
        try:
            # no fsync of the temp file here: check_publishable found a journal line
            # for every chunk, and a line is written only after that chunk's
            # fdatasync (FileChunkWriter._commit), so the data (and the size it needs)
            # is on disk already; a second sync costs a journal commit per file
            write_fence()  # a dataset batch publishes under its lease
            os.rename(temp, target)
            dir_fd = os.open(os.path.dirname(target) or ".", os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as err:
            raise os_error(err, f"destination {target}") from None
        unlink_if_present(session.data["journal"])

    def abort(self, session: WriteSession) -> None:
        unlink_if_present(session.session_id)
        unlink_if_present(session.data["journal"])


def _file_on_the_way(path: Path | str) -> str:
    """The first component of ``path`` that exists and is not a directory (``path``
    itself when none is found: it changed meanwhile)."""
    for candidate in reversed(Path(path).parents):
        if candidate.exists() and not candidate.is_dir():
            return str(candidate)
    return str(path)


def check_nearest_directory(url: EndpointURL, parent: str) -> None:
    """The nearest existing directory at or above ``parent`` (the missing directory of
    the destination ``url``) is named by its real path, before anything is made in it:
    the rule of the SFTP driver's ``make_parents``. Its real path is asked once per
    directory within a :func:`staccato.endpoints.base.directory_memo` block.

    Raises:
        PermanentError: named through a symbolic link (names the real target).
    """
    nearest = parent
    while not os.path.isdir(nearest):
        up = os.path.dirname(nearest)
        if up == nearest:
            return
        nearest = up
    named = os.path.normpath(nearest)
    real = remembered(("file-realpath", named), lambda: os.path.realpath(named))
    if real != named:
        real_target = os.path.join(real, os.path.relpath(url.path, named))
        raise PermanentError(linked_directory_message(url.path, real_target))


def check_parent(parent: Path, url: EndpointURL) -> None:
    """The destination directory ``parent`` (of ``url``) exists, is a directory named by
    its real path (no symbolic link on the way) and is writable.

    Raises:
        DestinationMissingError: missing, or not a directory.
        PermanentError: reached through a symbolic link (names the real path).
        PermissionDeniedError: not writable.
    """
    try:
        parent_mode = os.stat(parent).st_mode
    except FileNotFoundError:
        # found by the worker, which does the I/O: a client on another machine sees
        # none of its paths, so a missing directory there is no evidence (README,
        # "Local destinations: what is refused before the transfer starts")
        raise DestinationMissingError(
            f"destination directory {parent} does not exist on the worker's file system "
            f"(for {url}); nothing was written: create it (mkdir -p {parent}) where the "
            "workers run, then copy again"
        ) from None
    except NotADirectoryError:  # ENOTDIR: a component of the path is a file
        raise DestinationMissingError(
            f"destination directory {parent}: {_file_on_the_way(parent)} is a file, not a "
            f"directory (for {url})"
        ) from None
    except OSError as err:
        raise os_error(err, f"destination directory {parent}") from None
    if not stat_module.S_ISDIR(parent_mode):
        raise DestinationMissingError(
            f"destination directory {parent} is not a directory (for {url})"
        )
    real_parent = os.path.realpath(parent)
    if real_parent != str(parent):
        # the transfer id (the destination's lock) is derived from the path: two
        # spellings of one directory would let two transfers write one file
        target = Path(url.path)
        raise PermanentError(
            linked_directory_message(str(target), os.path.join(real_parent, target.name))
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        try:
            read_only = bool(os.statvfs(parent).f_flag & os.ST_RDONLY)
        except OSError:
            read_only = False
        if read_only:  # not a matter of permissions: root cannot write there either
            raise PermissionDeniedError(
                read_only_message(f"destination directory {parent}", str(parent))
            )
        raise PermissionDeniedError(
            f"destination directory {parent} is not writable: this worker's user cannot "
            "create files in it (its permissions, or an immutable flag: lsattr -d); make "
            "it writable, or choose another destination"
        )


def read_only_message(what: str, path: str) -> str:
    """Why nothing can be written at ``path`` (on a file system mounted read-only,
    ``statvfs(3)``'s ``ST_RDONLY``), ``what`` naming the destination: one wording for
    a single transfer's destination and a dataset's root."""
    return (
        f"{what}: the file system mounted at {mount_point(path)} is read-only: nothing "
        "can be written there; choose another destination"
    )


def check_target(target: Path | str) -> None:
    """What is at the destination name ``target`` now, if anything, is a regular file
    (which may be replaced): not a directory, a symbolic link, a device, FIFO or socket.

    Raises:
        NotAFileError: a directory; a file where a directory above it would be
            (named, in the words of :func:`staccato.errors.file_in_the_way_message`).
        PermanentError: a symbolic link or another non-regular file.
    """
    try:
        existing = os.lstat(target)
    except FileNotFoundError:
        return
    except NotADirectoryError:  # ENOTDIR: a file where a directory above it would be
        raise NotAFileError(
            file_in_the_way_message(_file_on_the_way(target), str(target))
        ) from None
    except OSError as err:
        raise os_error(err, f"destination {target}") from None
    if stat_module.S_ISREG(existing.st_mode):
        return
    if stat_module.S_ISDIR(existing.st_mode):
        raise NotAFileError(directory_target_message(str(target)))
    if stat_module.S_ISLNK(existing.st_mode):
        raise PermanentError(
            f"destination {target} is a symbolic link; name the file it points to "
            f"({os.path.realpath(target)}) to replace that file"
        )
    raise PermanentError(
        f"destination {target} exists and is not a regular file (a device, FIFO or "
        "socket); refusing to replace it"
    )


def _fence(roots: Sequence[EndpointURL]) -> Fence:
    """The local ones of a dataset's destination roots, by real path (every link
    resolved, also where the tail does not exist yet), shown as their paths."""
    return Fence(tuple((os.path.realpath(r.path), r.path) for r in roots if r.scheme == "file"))


#: large directories' sorted names, kept for the next page (see SortedCache)
_CACHE = SortedCache()


def _sorted_children(path: str, resolve: bool = False) -> SortedChildren:
    """:func:`_children` of ``path`` in walk order; a large directory's sorted names are
    kept for the next page while the directory's mtime and ctime (nanoseconds) stay
    the same (a name added or removed changes them). A name added within the file
    system's clock tick of the listing may be missed, as with any listing of a
    directory that changes while it is listed.

    Raises:
        OSError: the directory cannot be read.
    """
    st = os.stat(path)
    token = (path, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, resolve)
    cached = _CACHE.get(token)
    if cached is not None:
        return cached
    listed = sort_children(_children(path, resolve))
    _CACHE.put(token, listed)
    return listed


def _children(path: str, resolve: bool = False) -> list[Child]:
    """The children of the directory ``path``: names and kinds from ``readdir`` alone
    (``d_type``), except symbolic links, which are followed (one ``stat``) to tell a
    directory from a file, and with ``resolve`` resolved (``os.path.realpath``, also
    a broken link's target: :attr:`Child.real`); the rest is described later
    (:func:`_described`).

    Raises:
        OSError: the directory cannot be read.
    """
    found: list[Child] = []
    with os.scandir(path) as entries:
        for entry in entries:
            name = entry.name
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:
                shown = os.fsencode(name).decode("utf-8", "backslashreplace")
                found.append(Child(shown, error="the name is not valid UTF-8"))
                continue
            try:
                if not entry.is_symlink():
                    is_dir = entry.is_dir(follow_symlinks=False)
                    found.append(Child(name, is_dir=is_dir, described=False))
                    continue
            except OSError:
                continue  # removed while listed
            child = _described(entry.path, Child(name))
            if child is not None:
                if resolve:
                    child = dataclasses.replace(child, real=os.path.realpath(entry.path))
                found.append(child)
    return found


def _described(path: str, child: Child) -> Child | None:
    """``child`` (at ``path``) with what ``stat`` says (symbolic links followed): a
    directory's identity, a file's size and mtime, or why it cannot be copied; None
    if it is gone."""
    name = child.name
    try:
        st = os.stat(path)
    except OSError as err:
        if err.errno == errno.ENOENT:
            return Child(name, error=BROKEN_LINK) if os.path.islink(path) else None
        if err.errno == errno.ELOOP:
            return Child(name, error=LINK_LOOP)
        return Child(name, is_dir=child.is_dir, error=f"cannot stat: {err.strerror}")
    if stat_module.S_ISDIR(st.st_mode):
        return Child(name, is_dir=True, identity=(st.st_dev, st.st_ino))
    if stat_module.S_ISREG(st.st_mode):
        return Child(name, size=st.st_size, modified_at=st.st_mtime)
    return Child(name, error=NOT_A_REGULAR_FILE)
