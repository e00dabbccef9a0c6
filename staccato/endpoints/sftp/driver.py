"""The ``sftp`` driver: ``sftp://[user@]host[:port]/path`` as source and destination,
over SSH with paramiko (SFTP v3, draft-ietf-secsh-filexfer-02, plus OpenSSH
extensions). ``docs/sftp.md`` is the user-facing description; the driver contract is
in ``docs/architecture.md``.

Source: ``stat`` pins size + mtime (SFTP v3 ``ATTRS``: mtime in whole seconds) and
checks, with a 1-byte read at ``size``, that the file really ends there (a file whose
stat size is wrong: e.g. files under ``/proc`` report size 0). If it does not, a small
file (up to ``MEASURE_LIMIT_BYTES``) is measured by reading it to its end and copied in
one stream; the end-of-file is checked again when it is copied. Reads
(:class:`~staccato.endpoints.sftp.streams.SFTPReader`) are pipelined, re-check the
pinned size + mtime (``FSTAT``) after every buffer, and a range that ends at the
object's end must be followed by ``SSH_FX_EOF``: a file that changed, shrank or grew
fails with ``SourceChanged``.

Destination (the write-session invariants of ``docs/architecture.md``): chunks are
written into a temp file beside the target (``.NAME.<key>.staccato-part``; NAME is cut
to 150 bytes and ``<key>`` is 16 hex digits of the SHA-256 of the transfer id, so the
name fits NAME_MAX = 255 bytes whatever the target's name), positionally and
pipelined; after a chunk's writes are acknowledged the server fsyncs it
(``fsync@openssh.com``) and the chunk is recorded in a journal beside it
(:mod:`staccato.endpoints.sftp.journal`). Publish fsyncs the temp file and renames it
over the target with ``posix-rename@openssh.com`` (an atomic ``rename(2)``). Where the
server lacks it (or refuses it) a plain SFTP ``RENAME`` is used when the target does
not exist; when it does (a server without posix-rename: OpenSSH's plain rename refuses
to replace), the target is moved aside to ``.NAME.<key>.staccato-old``, the temp file
renamed in, and the old one removed; a failure in between moves the old one back.
Readers may then see no file for a moment, never a partial one. Without
``fsync@openssh.com`` chunks are only as durable as the server's page cache: a worker
crash loses nothing, a server OS crash may, and ``verify`` (which re-reads the
destination) would catch it.

Proof of publish (:func:`~staccato.endpoints.sftp.journal.published`): before the
rename, publish records a marker in the journal: the temp file's mtime, made different
from the target's current mtime with ``SETSTAT`` where they would be equal;
``rename(2)`` keeps the mtime. A missing temp file then counts as published only when
the journal holds the marker and the target has that mtime and the session's size;
otherwise the session is lost (``WriteSessionLost``: the workflow copies again). A
retry after the journal was removed (the very last step) also copies again: never the
old content reported as the new.

A stale writer (an attempt Temporal gave up on) checks before each chunk that the temp
file still exists; after publish or abort it stops with a retryable error. (SFTP v3
has no inode numbers, so the check is by name.) What it had sent before is kept off
the published file by the writers directory (:mod:`~staccato.endpoints.sftp.writers`):
publish renames the temp file only when every writer closed its handles on it, else
a fresh copy of it.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import posixpath
import stat as stat_module
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar
from urllib.parse import quote

from paramiko.sftp_attr import SFTPAttributes

from staccato import checksums
from staccato.endpoints import base
from staccato.endpoints.base import ChunkWriter, Driver, Features, Reader
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
from staccato.endpoints.sftp import remote_hash
from staccato.endpoints.sftp.connection import guarded
from staccato.endpoints.sftp.files import (
    is_missing,
    mapped,
    read_all,
    read_handle,
    read_only_message,
    refused_if_read_only,
    remove_if_exists,
    stat_or_none,
    status_error,
)
from staccato.endpoints.sftp.journal import (
    JOURNAL_RECORD_BYTES,
    SHA256,
    ServerHash,
    marker_record,
    parse_journal,
    parse_partial,
    parse_records,
    published,
    valid_hash,
    written_by_staccato,
)
from staccato.endpoints.sftp.pipeline import ReadPipeline, SourceEnded, SourceLonger, write_at
from staccato.endpoints.sftp.pool import POOL, run
from staccato.endpoints.sftp.protocol import (
    FX_NO_SUCH_FILE,
    FX_PERMISSION_DENIED,
    FXF_CREAT,
    FXF_READ,
    FXF_WRITE,
    StaccatoSFTP,
    StatusError,
)
from staccato.endpoints.sftp.ssh import resolve
from staccato.endpoints.sftp.streams import SFTPChunkWriter, SFTPReader
from staccato.endpoints.sftp.writers import clear, fresh_copy, fresh_of, make_directory, seal
from staccato.errors import (
    NOT_A_REGULAR_FILE,
    DestinationMissing,
    IsADirectory,
    NotFound,
    PermanentError,
    PermissionDeniedError,
    SourceChanged,
    SourceRootNotADirectoryError,
    WriteSessionLost,
    directory_target_message,
    file_in_the_way_message,
    linked_directory_message,
    no_capacity_message,
    source_root_not_a_directory,
)
from staccato.models import ListPage, ObjectInfo, WriteSession
from staccato.plan import chunk_bounds, chunk_count
from staccato.temp_names import (
    FRESH_SUFFIX,
    JOURNAL_SUFFIX,
    TEMP_SUFFIX,
    WRITERS_SUFFIX,
    journal_of,
    leftover_pattern,
    session_stem,
)
from staccato.urls import EndpointURL, parse_url

T = TypeVar("T")
log = logging.getLogger("staccato.sftp")

_BACKUP_SUFFIX = ".staccato-old"
#: the SFTP session names the leftover sweep takes besides temp file and journal
_MORE_KINDS = (WRITERS_SUFFIX.removeprefix(".staccato-"), FRESH_SUFFIX.removeprefix(".staccato-"))
# largest file measured by reading when its stat size is wrong (e.g. under /proc)
MEASURE_LIMIT_BYTES = 64 * 1024 * 1024
_MEASURE_BUFFER = 1024 * 1024
#: large directories' sorted names, kept for the next page (see SortedCache) while the
#: directory's mtime and size hold. SFTP mtimes are whole seconds, so a directory
#: changed in the last _CACHE_QUIET_S seconds (by this worker's clock; allows that much
#: skew) is never kept: a name added within the second of a listing could be missed.
_CACHE = SortedCache()
_CACHE_QUIET_S = 10.0


def _server_hash(checksum: str, recorded: ServerHash | None) -> ServerHash | None:
    """The hash the server must compute for a journaled chunk: its hash record's, or
    its checksum where that is a SHA-256 (``--checksum sha256``: 64 hex digits, the
    writer then records no second hash); None: the chunk is read back."""
    if recorded is not None:
        return recorded
    return ServerHash(SHA256, checksum) if valid_hash(SHA256, checksum) else None


class SFTPDriver(Driver):
    """Driver for ``sftp://`` URLs."""

    scheme = "sftp"
    # the temp file is readable before publish (verified per segment); no read-back
    # per chunk: a second round trip per chunk costs more than one pass at the end
    features = Features(write=True, unpublished_readable=True, reopens_by_key=True)

    def _run(self, url: EndpointURL, what: str, fn: Callable[[StaccatoSFTP], T]) -> T:
        target = resolve(url)
        with mapped(what):
            return run(target, fn)

    # -- source ----------------------------------------------------------------------

    def stat(self, url: EndpointURL) -> ObjectInfo:
        def op(sftp: StaccatoSFTP) -> ObjectInfo:
            attrs = stat_or_none(sftp, url.path)
            if attrs is None:
                if url.path.endswith(TEMP_SUFFIX):
                    # a transfer's own temp file, read to verify it before publish
                    raise NotFound(
                        f"the temp file {url} is gone: something removed it while the "
                        "transfer wrote it (e.g. a transfer to the same file named by "
                        "another URL, such as localhost for 127.0.0.1, which holds "
                        "another lock)"
                    )
                raise NotFound(f"source {url}: no such file on the server")
            mode = attrs.st_mode or 0
            if stat_module.S_ISDIR(mode):
                raise IsADirectory(
                    f"source {url} is a directory; name a file, or copy the directory with cp -r"
                )
            if not stat_module.S_ISREG(mode):
                raise PermanentError(f"source {url} is not a regular file")
            stat_size = attrs.st_size or 0
            mtime = attrs.st_mtime or 0
            # a transfer's own temp file (the verify before publish stats it twice) is a
            # regular file Staccato wrote, not one whose stat size may be wrong: no
            # 1-byte probe (OPEN, READ, CLOSE); its reads still need EOF at its end
            temp = url.path.endswith(TEMP_SUFFIX)
            size = stat_size if temp else self._real_size(sftp, url, stat_size)
            if size != stat_size:
                again = stat_or_none(sftp, url.path)
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
        length measured by reading it (a file whose stat size is wrong, e.g. under
        ``/proc``), up to ``MEASURE_LIMIT_BYTES``."""
        handle = sftp.open_handle(url.path, FXF_READ)
        try:
            try:
                ReadPipeline(sftp, handle, stat_size, stat_size, probe_eof=True).readinto(
                    memoryview(bytearray(1))
                )
                return stat_size
            except SourceLonger:
                pass
            buffer = memoryview(bytearray(_MEASURE_BUFFER))
            pipe = ReadPipeline(sftp, handle, 0, MEASURE_LIMIT_BYTES, probe_eof=True)
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

    def list_page(
        self,
        root: EndpointURL,
        after: str | None,
        limit: int,
        *,
        fence: Sequence[EndpointURL] = (),
    ) -> ListPage:
        """The files under the server directory ``root``, on one pooled connection
        (see :meth:`Driver.list_page`; order and restart:
        :mod:`staccato.endpoints.listing`). Directories are read with raw names
        (:meth:`StaccatoSFTP.read_dir`); a symbolic link costs one STAT (a link to a
        directory one REALPATH more, to tell a loop back to a directory being walked,
        and where ``fence`` holds a root on this server, a link to a file too, to tell
        a link into a destination root: the server's own host and port, as named);
        a link the server cannot follow is walked hop by hop to tell a loop from a
        missing target (OpenSSH answers ``ELOOP`` as ``SSH_FX_NO_SUCH_FILE``). FIFOs,
        sockets and devices are error entries, names that are not UTF-8 error entries
        spelled with ``\\xNN`` escapes. A lost connection is retryable, never an entry.
        Memory: the entries of the directories on the current path + one page + the
        sorted names of the last two large directories (``_CACHE``).

        Raises:
            NotFoundError, PermissionDeniedError: ``root`` is missing or unreadable.
            SourceRootNotADirectoryError: ``root`` is not a directory.
        """
        top = root.path

        def op(sftp: StaccatoSFTP) -> ListPage:
            attrs = stat_or_none(sftp, top)
            if attrs is None:
                raise NotFound(
                    f"source directory {root} does not exist: no such directory on the "
                    "server; check the path"
                )
            if not stat_module.S_ISDIR(attrs.st_mode or 0):
                raise SourceRootNotADirectoryError(source_root_not_a_directory(str(root)))
            # resolved paths of the directories on the walk's current path (loop check)
            reals = {"": sftp.real_path(top)}
            walls = _fence(sftp, root, fence)
            resolve = bool(walls.roots)

            def list_dir(prefix: str) -> SortedChildren:
                path = posixpath.join(top, prefix)
                try:
                    dir_attrs = sftp.stat(path)
                    token = (
                        root.host,
                        root.port,
                        root.user,
                        path,
                        dir_attrs.st_mtime,
                        dir_attrs.st_size,
                        resolve,
                    )
                    cached = _CACHE.get(token)
                    if cached is not None:
                        return cached
                    listed = sort_children(_children(sftp, path, resolve))
                except (StatusError, OSError) as err:
                    if not _is_status(err):
                        raise  # the connection, not the directory: retried
                    if not prefix:
                        raise status_error(err, f"source directory {root}") from None
                    if is_missing(err):
                        return SortedChildren((), ())  # removed while listed
                    if isinstance(err, PermissionError) or (
                        isinstance(err, StatusError) and err.code == FX_PERMISSION_DENIED
                    ):
                        raise ListDirectoryError(
                            "cannot list directory: permission denied"
                        ) from None
                    reason = err.message if isinstance(err, StatusError) else str(err)
                    raise ListDirectoryError(f"cannot list directory: {reason}") from None
                mtime = dir_attrs.st_mtime
                if mtime is not None and mtime < time.time() - _CACHE_QUIET_S:
                    _CACHE.put(token, listed)
                return listed

            def describe(prefix: str, child: Child) -> Child:
                # a directory's identity: its resolved path (a link's was resolved when
                # listed); kept for the directories on the current path only
                identity = child.identity or posixpath.join(reals[prefix], child.name)
                for stale in [k for k in reals if not prefix.startswith(k)]:
                    del reals[stale]
                reals[prefix + child.name + "/"] = str(identity)
                return dataclasses.replace(child, identity=identity, described=True)

            entries = walk(list_dir, reals[""], after, describe, fence=walls, root_real=reals[""])
            return page(entries, limit)

        return self._run(root, f"listing {root}", op)

    def leads_into(self, url: EndpointURL, fence: Sequence[EndpointURL]) -> str | None:
        """See :meth:`Driver.leads_into`: REALPATH of ``url`` on the server (hop by hop
        for a link it cannot follow) against the roots of ``fence`` on this server."""
        if not any(_same_server(url, r) for r in fence):
            return None

        def op(sftp: StaccatoSFTP) -> str | None:
            walls = _fence(sftp, url, fence)
            real = _real_or_none(sftp, url.path) or _broken_real(sftp, url.path)
            shown = walls.holding(real) if real is not None else None
            if real is None or shown is None:
                return None
            attrs = stat_or_none(sftp, real)
            directory = attrs is not None and stat_module.S_ISDIR(attrs.st_mode or 0)
            return into_destination(shown, real, link=True, directory=directory)

        return self._run(url, f"source {url}", op)

    def _check_destination(self, sftp: StaccatoSFTP, url: EndpointURL) -> None:
        parent = posixpath.dirname(url.path) or "/"
        parent_attrs = _directory_attrs(sftp, url, parent)
        if parent_attrs is None:
            raise DestinationMissing(
                f"destination directory {parent} does not exist on {url.host} (for {url}); create it first"
            )
        if not stat_module.S_ISDIR(parent_attrs.st_mode or 0):
            raise DestinationMissing(
                f"destination {parent} on {url.host} is not a directory (for {url})"
            )
        _check_real_directory(sftp, url, parent)
        # once per prepare (check_destination, then open_session's own check)
        key = ("sftp-target", url.host, url.port, url.user, url.path)
        base.remembered(key, lambda: _check_target(sftp, url))

    def check_target(self, url: EndpointURL) -> None:
        """See :meth:`Driver.check_target`: one LSTAT on the server."""
        self._run(url, f"destination {url}", lambda sftp: _check_target(sftp, url))

    def check_directory_name(self, url: EndpointURL) -> None:
        """See :meth:`Driver.check_directory_name`: a STAT of the directory and, when
        it exists, one REALPATH (once per directory within a
        :func:`staccato.endpoints.base.directory_memo` block)."""

        def op(sftp: StaccatoSFTP) -> None:
            parent = posixpath.dirname(url.path) or "/"
            attrs = _directory_attrs(sftp, url, parent)
            if attrs is not None and stat_module.S_ISDIR(attrs.st_mode or 0):
                _check_real_directory(sftp, url, parent)

        self._run(url, f"destination directory of {url}", op)

    def check_destination_root(self, root: EndpointURL) -> None:
        """The nearest existing directory at or above the destination directory
        ``root`` is a directory (a few stats), named by its real path (one REALPATH:
        a root named through a symbolic link fails the dataset once, naming the real
        path, rather than each of its files), on a file system that can hold files
        (one ``statvfs@openssh.com``, where the server offers it: not /proc or /sys,
        in the words of a local root, :func:`no_capacity_message`; not read-only).

        Raises:
            DestinationMissingError: a file is on the way (named).
            PermanentError: the root is named through a symbolic link; a file system
                with no capacity.
            PermissionDeniedError: a read-only file system.
            RetryableError: the server cannot be reached (as any operation).

        A missing root is made here (``mkdir -p``, as its files would make it): the
        server's permissions are its own (an SFTP client cannot ask ``access``, and
        ``chattr +i`` shows in no mode bits), so making it is the one sure check. A
        root that cannot be made fails the dataset up front (PermissionDeniedError),
        not each of its files with the same reason.
        """

        def op(sftp: StaccatoSFTP) -> None:
            path = root.path or "/"
            attrs = stat_or_none(sftp, path)
            while attrs is None and path not in ("", "/"):
                path = posixpath.dirname(path)
                attrs = stat_or_none(sftp, path)
            if attrs is not None and not stat_module.S_ISDIR(attrs.st_mode or 0):
                raise DestinationMissing(
                    f"destination directory {root.path} on {root.host} cannot be made: "
                    f"{path} is a file, not a directory; choose another destination"
                )
            if attrs is None:
                return
            real = _real_or_none(sftp, path)
            if real is not None and real != _as_text(path):
                real_root = posixpath.join(real, posixpath.relpath(root.path or "/", path))
                raise PermanentError(
                    linked_directory_message(
                        str(root), _url_of(root, posixpath.normpath(real_root))
                    )
                )
            fs = sftp.file_system(path)
            what = f"destination directory {root.path} on {root.host}"
            if fs is not None and fs.blocks == 0:  # /proc, /sys and the like
                raise PermanentError(no_capacity_message(what, f"the file system holding {path}"))
            if fs is not None and fs.read_only:
                raise PermissionDeniedError(read_only_message(what, path))
            _make_root(sftp, root, path, what)

        self._run(root, f"checking destination {root}", op)

    def make_parents(self, url: EndpointURL) -> None:
        def op(sftp: StaccatoSFTP) -> None:
            parent = posixpath.dirname(url.path) or "/"
            # asked for each file (a directory removed during a batch is made again),
            # and kept for the checks of the prepare that follows (_directory_attrs)
            attrs = stat_or_none(sftp, parent)
            if attrs is not None and stat_module.S_ISDIR(attrs.st_mode or 0):
                base.remember(_directory_key(url, parent), attrs)
                return  # the common case: one round trip
            missing: list[str] = []
            path = parent
            while path not in ("", "/"):
                attrs = stat_or_none(sftp, path)
                if attrs is None:
                    missing.append(path)
                    path = posixpath.dirname(path)
                    continue
                if not stat_module.S_ISDIR(attrs.st_mode or 0):
                    raise IsADirectory(file_in_the_way_message(path, url.path, f" on {url.host}"))
                break
            if missing:
                # made inside the directory ``path`` leads to: never outside a
                # dataset's root through a link in it (one REALPATH per new directory)
                _check_real_directory(sftp, url, path, posixpath.relpath(parent, path))
            with refused_if_read_only(sftp, path, f"destination {url}"):
                for directory in reversed(missing):
                    _make_directory(sftp, directory)

        self._run(url, f"destination directory of {url}", op)

    def check_destination(self, url: EndpointURL) -> None:
        self._run(url, f"destination {url}", lambda sftp: self._check_destination(sftp, url))

    @staticmethod
    def _paths(url: EndpointURL, session_key: str) -> dict[str, str]:
        stem = session_stem(*posixpath.split(url.path), session_key)
        return {
            "path": url.path,
            "temp": stem + TEMP_SUFFIX,
            "journal": stem + JOURNAL_SUFFIX,
            "backup": stem + _BACKUP_SUFFIX,
            "writers": stem + WRITERS_SUFFIX,
            "fresh": stem + FRESH_SUFFIX,
        }

    def remove_leftovers(self, url: EndpointURL, session_key: str) -> list[str]:
        directory, name = posixpath.split(url.path)
        pattern = leftover_pattern(name, _MORE_KINDS)
        if pattern is None:
            return []
        own = self._paths(url, session_key)

        def op(sftp: StaccatoSFTP) -> list[str]:
            removed: list[str] = []
            found = [
                posixpath.join(directory, raw.decode(errors="surrogateescape"))
                for raw, _ in sftp.read_dir(directory or ".")
                if pattern.fullmatch(raw) is not None
            ]
            # a temp file and its journal go only when the journal is one Staccato
            # wrote (decided before anything goes): a user's files may have these names
            journals = {_journal_beside(p) for p in found}
            ours = {j for j in journals if written_by_staccato(sftp, j)}
            for path in found:
                if path in (own["temp"], own["journal"], own["writers"], own["fresh"]):
                    continue
                if _journal_beside(path) not in ours:
                    log.info("kept %s: no journal Staccato wrote beside it", path)
                    continue
                try:
                    if path.endswith(WRITERS_SUFFIX):
                        clear(sftp, path.removesuffix(WRITERS_SUFFIX) + TEMP_SUFFIX)
                    else:
                        remove_if_exists(sftp, path)
                except OSError as err:  # one that cannot go (a directory) keeps no other
                    log.warning("leftover temp data %s not removed: %s", path, err)
                    continue
                removed.append(path)
            return removed

        return self._run(url, f"leftover temp data beside {url}", op)

    def open_session(
        self, url: EndpointURL, size: int, chunk_size: int, session_key: str
    ) -> WriteSession:
        paths = self._paths(url, session_key)

        def op(sftp: StaccatoSFTP) -> None:
            self._check_destination(sftp, url)
            directory = posixpath.dirname(paths["temp"]) or "/"
            with refused_if_read_only(sftp, directory, f"destination {url}"):
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
            make_directory(sftp, paths["temp"])

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
        """The journal's chunks; those in ``[first_chunk, end_chunk)`` whose record has
        a server hash (``cksum``'s CRC, or a SHA-256) are re-checked by the server
        where it can hash (:mod:`~staccato.endpoints.sftp.remote_hash`): a chunk whose
        bytes no longer hash to it (damaged after it was written: torn write, OS crash,
        stray writer) is left out, so the stream sends it again. Without server-side hashing the
        journal is trusted as it is (the verify before publish reads the data back)."""
        url = parse_url(session.url)
        chunks = chunk_count(session.size, session.chunk_size)
        data = self._run(
            url, f"destination {url}", lambda sftp: read_all(sftp, session.data["journal"])
        )
        if data is None:
            return {}
        records = parse_records(data, chunks)
        end = chunks if end_chunk is None else min(end_chunk, chunks)
        # a chunk's server hash: its hash record's, or its checksum where that is a
        # SHA-256 (64 hex digits: --checksum sha256, the writer then records no second
        # hash). At worst a chunk is dropped and sent again.
        wanted = {
            index: _server_hash(checksum, found)
            for index, (checksum, found) in records.items()
            if first_chunk <= index < end
        }
        expected = {index: found for index, found in wanted.items() if found is not None}
        ranges = [
            (index, *chunk_bounds(index, session.size, session.chunk_size), expected[index].kind)
            for index in sorted(expected)
        ]
        if ranges and remote_hash.enabled():
            hashes = self._remote_hashes(url, session.data["temp"], ranges)
            if hashes:
                for index, _, _, _ in ranges:
                    if index in hashes and hashes[index] != expected[index]:
                        log.info(
                            "%s: chunk %d no longer holds the bytes journaled for it "
                            "(the server hashes it differently): sending it again",
                            session.data["temp"],
                            index,
                        )
                        del records[index]
        return {index: checksum for index, (checksum, _) in records.items()}

    def partial_chunk(self, session: WriteSession, index: int, into: memoryview) -> int:
        """The prefix of chunk ``index`` a paused stream kept (its partial record),
        read back over SFTP into ``into`` and checked against the record's checksum
        (a destination read of at most a chunk, instead of the source's); 0 when there
        is none, the chunk has a chunk record, or the bytes no longer match."""
        url = parse_url(session.url)
        chunks = chunk_count(session.size, session.chunk_size)
        data = self._run(
            url, f"destination {url}", lambda sftp: read_all(sftp, session.data["journal"])
        )
        if not data or index in parse_journal(data, chunks):
            return 0
        record = parse_partial(data, chunks, index)
        offset, length = chunk_bounds(index, session.size, session.chunk_size)
        if record is None or not 0 < record[0] < length or record[0] > len(into):
            return 0
        kept, checksum = record
        temp = parse_url(_url_of(url, session.data["temp"]))
        info = self.stat(temp)
        if info.size != session.size:
            return 0
        # not pinned to the mtime: the other streams of the transfer write the file
        info = info.model_copy(
            update={"extra": {k: v for k, v in info.extra.items() if k != "mtime"}}
        )
        view = into[:kept]
        with self.open_read(temp, info, offset, kept) as reader:
            done = 0
            while done < kept:
                n = reader.readinto(view[done:])
                if n <= 0:
                    return 0
                done += n
                base.keepalive()
        algorithm = "sha256" if len(checksum) == 64 else "crc32c"
        if checksums.checksum_bytes(algorithm, view) != checksum:
            log.info(
                "%s: the %d bytes of chunk %d a pause kept no longer match their checksum: "
                "sending the chunk whole",
                session.data["temp"],
                kept,
                index,
            )
            return 0
        return kept

    def _remote_hashes(
        self, url: EndpointURL, path: str, ranges: list[tuple[int, int, int, str]]
    ) -> dict[int, ServerHash]:
        """:func:`remote_hash.hash_ranges` of the server file ``path`` on a pooled
        connection to ``url``'s server (connection failures mapped as every operation's)."""
        target = resolve(url)
        with mapped(f"destination {url}"):
            connection = POOL.acquire(target)
            try:
                with guarded(connection):
                    return remote_hash.hash_ranges(connection, path, ranges)
            finally:
                POOL.release(connection)

    def segments_checksum(
        self,
        url: EndpointURL,
        size: int,
        chunk_size: int,
        segments: Iterable[tuple[int, int]],
        algorithm: str,
        info: ObjectInfo | None = None,
    ) -> str:
        """See :meth:`Driver.segments_checksum`. For a write session's temp file (the
        verify before publish, ``url`` from :meth:`session_url`) the server hashes the
        chunks instead of sending them back, where it can
        (:mod:`~staccato.endpoints.sftp.remote_hash`): a chunk whose bytes on the
        server hash to what its hash record holds (the CRC of POSIX ``cksum``; an
        earlier release's SHA-256) counts with the checksum recorded beside it; every
        other chunk (no record, no hash record, a different hash, no exec channel, a
        hash the server cannot compute) is read back over SFTP as before.

        Why that checks as much as reading back: the writer computed the record's
        hash from the very buffer it sent, the one the stream computed the chunk's
        checksum on (nothing changes it in between: ``ChunkWriter.write_chunk``), and
        wrote both into one record with its own CRC. Bytes on the server that hash to
        that value are, against accidental damage, those bytes, so their checksum is
        the recorded one: the argument of a local file's verify-on-write
        (``ChunkWriter.checked_in_memory``), with the server's read of its disk in
        place of the kernel's. ``cksum``'s 32-bit CRC misses random damage with
        probability 2**-32 and no burst of up to 32 bits, as the CRC-32C that reading
        back compares; neither guards against someone who can write the temp file
        (nor does reading back: they could write matching bytes). With ``--checksum
        sha256`` the checksum is itself the chunk's SHA-256, which the server then
        computes, and no second hash is recorded. A damaged chunk hashes
        differently, is read back, and its real checksum makes the segment mismatch
        (the workflow then copies it again: :meth:`durable_chunks` drops the chunk).
        A read pinned to ``info`` (a source read a second time) always reads, and so
        does a verify of fewer than :data:`remote_hash.MIN_BYTES` (a dataset's small
        file: reading it back costs less than an exec channel).
        """
        segments = list(segments)
        # a read pinned to a version (confirm_source: a source read a second time)
        # always reads; the server's hash is for a session's temp file
        if (
            info is not None
            or not url.path.endswith(TEMP_SUFFIX)
            or not remote_hash.enabled()
            or _segments_bytes(segments, size, chunk_size) < remote_hash.MIN_BYTES
        ):
            return super().segments_checksum(url, size, chunk_size, segments, algorithm, info)
        journal_path = journal_of(url.path)
        data = self._run(url, f"destination {url}", lambda sftp: read_all(sftp, journal_path))
        records = parse_records(data or b"", chunk_count(size, chunk_size))
        digest_length = len(checksums.checksum_bytes(algorithm, b""))
        expected: dict[int, tuple[str, ServerHash]] = {}  # index -> (checksum, its hash)
        for index, (checksum, found) in records.items():
            if len(checksum) != digest_length:
                continue
            server_hash = _server_hash(checksum, found)
            if server_hash is not None:
                expected[index] = (checksum, server_hash)
        # every segment's ranges over one exec channel (up to its batch size): a channel
        # costs ~0.5 s on a loaded loopback worker (an ssh process through the
        # ControlMaster, a shell on the server; bench/segcost_phases.py), the hashing of
        # a 16 MiB chunk ~2 ms per MiB
        ranges = [
            (index, *chunk_bounds(index, size, chunk_size), expected[index][1].kind)
            for first, end in segments
            for index in range(first, end)
            if index in expected
        ]
        hashes = self._remote_hashes(url, url.path, ranges) if ranges else {}
        segment_digests: list[tuple[str, int]] = []
        for first, end in segments:
            parts: list[tuple[str, int]] = []
            index = first
            while index < end:
                _, length = chunk_bounds(index, size, chunk_size)
                if index in expected and hashes.get(index) == expected[index][1]:
                    parts.append((expected[index][0], length))
                    index += 1
                    continue
                # read back the run of chunks the server did not vouch for
                stop = index + 1
                while stop < end and not (
                    stop in expected and hashes.get(stop) == expected[stop][1]
                ):
                    stop += 1
                if info is None:
                    info = self.stat(url)
                parts += self.chunk_checksums(url, info, size, chunk_size, index, stop, algorithm)
                index = stop
            base.keepalive()
            segment_digests.append((checksums.combine(algorithm, parts), sum(n for _, n in parts)))
        return checksums.combine(algorithm, segment_digests)

    def session_url(self, session: WriteSession) -> str | None:
        return _url_of(parse_url(session.url), session.session_id)

    def publish(
        self, session: WriteSession, parts: Sequence[tuple[int, int, str]] | None = None
    ) -> None:
        url = parse_url(session.url)
        paths = session.data
        chunks = chunk_count(session.size, session.chunk_size)

        def op(sftp: StaccatoSFTP) -> None:
            temp_attrs = stat_or_none(sftp, paths["temp"])
            if temp_attrs is None:
                if published(sftp, paths, session.size, chunks):
                    # an earlier attempt published it (the activity retried after the rename)
                    remove_if_exists(sftp, paths["backup"])
                    clear(sftp, paths["temp"])
                    remove_if_exists(sftp, paths["journal"])
                    return
                raise WriteSessionLost(
                    f"write session {paths['temp']} is gone and nothing proves that {url} holds "
                    "this transfer's bytes (it was not published by an earlier attempt, or the "
                    "proof was already cleaned up): copying again"
                )
            # opened once: read here, the publish marker written through it (_mark)
            try:
                journal_handle = sftp.open_handle(paths["journal"], FXF_READ | FXF_WRITE)
            except StatusError as err:
                if err.code == FX_NO_SUCH_FILE:
                    raise WriteSessionLost(
                        f"write session {paths['temp']}: its journal {paths['journal']} was deleted"
                    ) from None
                raise
            try:
                journal = read_handle(sftp, journal_handle)
                missing = chunks - len(parse_journal(journal, chunks))
                if missing:
                    raise PermanentError(
                        f"refusing to publish {url}: {missing} chunks are not durable"
                    )
                if temp_attrs.st_size != session.size:
                    raise PermanentError(
                        f"refusing to publish {url}: temp file has {temp_attrs.st_size} bytes, expected {session.size}"
                    )
                # no handle a writer opened on the temp file may lead to the published
                # file: renamed only when every writer closed its handles, else a
                # fresh copy is published (the writers directory, see writers.py)
                sealed = seal(sftp, paths["temp"])
                if sealed:
                    handle = sftp.open_handle(paths["temp"], FXF_READ)
                    try:
                        sftp.fsync_handle(handle)
                    finally:
                        sftp.close_handle(handle)
                    publishing, attrs = paths["temp"], temp_attrs
                else:
                    publishing = fresh_of(paths["temp"])
                    attrs = fresh_copy(sftp, session, publishing, journal)
                self._mark(sftp, paths, publishing, attrs, chunks, journal_handle)
            finally:
                sftp.close_handle(journal_handle)
            self._replace(sftp, {**paths, "temp": publishing})
            if not sealed:
                # what stale writers may still write into, then their entries
                remove_if_exists(sftp, paths["temp"])
                clear(sftp, paths["temp"])
            remove_if_exists(sftp, paths["backup"])
            remove_if_exists(sftp, paths["journal"])

        self._run(url, f"destination {url}", op)

    @staticmethod
    def _mark(
        sftp: StaccatoSFTP,
        paths: dict[str, str],
        publishing: str,
        temp_attrs: SFTPAttributes,
        chunks: int,
        journal: bytes,
    ) -> None:
        """Record the publish marker: the mtime (seconds) the file to be renamed over
        the target (``publishing``: the temp file or its fresh copy) has, made
        different from the current target's (``SETSTAT``, draft-ietf-secsh-filexfer-02
        §6.9) where they are equal, written and fsynced into the journal's slot after
        the chunk records (``journal``: its open handle). Without ``SETSTAT`` (refused)
        no marker is written: a retry after the rename then copies again rather than
        guess."""
        mtime = int(temp_attrs.st_mtime or 0)
        target = stat_or_none(sftp, paths["path"])
        if target is not None and target.st_mtime == mtime:
            mtime += 1
            try:
                sftp.utime(publishing, (int(temp_attrs.st_atime or mtime), mtime))
            except OSError as err:
                if isinstance(err, (TimeoutError, ConnectionError)):
                    raise
                log.info(
                    "%s: cannot set the temp file's mtime (%s): publishing without a marker",
                    publishing,
                    err,
                )
                return
        write_at(sftp, journal, chunks * JOURNAL_RECORD_BYTES, memoryview(marker_record(mtime)))
        sftp.fsync_handle(journal)

    @staticmethod
    def _replace(sftp: StaccatoSFTP, paths: dict[str, str]) -> None:
        """Rename the temp file over the target: posix-rename where the server
        offers and allows it, else a plain rename, else move the old target aside."""
        temp, target, backup = paths["temp"], paths["path"], paths["backup"]
        if sftp.has_posix_rename:
            try:
                sftp.posix_rename(temp, target)
                return
            except OSError as err:
                if is_missing(err) or isinstance(err, (TimeoutError, ConnectionError)):
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
            if is_missing(err) or stat_or_none(sftp, target) is None:
                raise
        # The target exists and plain RENAME will not replace it (OpenSSH: link(2) semantics).
        remove_if_exists(sftp, backup)
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
            remove_if_exists(sftp, paths["temp"])
            remove_if_exists(sftp, fresh_of(paths["temp"]))
            clear(sftp, paths["temp"])
            remove_if_exists(sftp, paths["journal"])
            if stat_or_none(sftp, paths["backup"]) is not None:
                if stat_or_none(sftp, paths["path"]) is None:
                    sftp.rename(
                        paths["backup"], paths["path"]
                    )  # a publish stopped half-way: undo it
                else:
                    remove_if_exists(sftp, paths["backup"])

        self._run(url, f"destination {url}", op)


def _journal_beside(path: str) -> str:
    """The journal of the session a temp file, writers directory or fresh copy
    ``path`` belongs to (a journal: itself)."""
    for suffix in (TEMP_SUFFIX, WRITERS_SUFFIX, FRESH_SUFFIX):
        if path.endswith(suffix):
            return path.removesuffix(suffix) + JOURNAL_SUFFIX
    return path


def _children(sftp: StaccatoSFTP, path: str, resolve: bool = False) -> list[Child]:
    """The children of the server directory ``path``, symbolic links followed; a link
    to a directory carries its resolved path as identity and as :attr:`Child.real`;
    with ``resolve`` a link to a file (one REALPATH more) and a broken link (where the
    server resolves a missing last component, as OpenSSH does) carry theirs too.

    Raises:
        StatusError: the directory cannot be read.
    """
    found: list[Child] = []
    for raw, attrs in sftp.read_dir(path):
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            found.append(
                Child(raw.decode("utf-8", "backslashreplace"), error="the name is not valid UTF-8")
            )
            continue
        full = posixpath.join(path, name)
        mode = attrs.st_mode or 0
        identity: str | None = None
        real: str | None = None  # a link's target, resolved
        if stat_module.S_ISLNK(mode):
            try:
                attrs = sftp.stat(full)
            except OSError as err:
                if not _is_status(err):
                    raise
                if isinstance(err, PermissionError):
                    reason = "cannot follow symbolic link: permission denied"
                else:
                    reason = _link_problem(sftp, full)
                broken_real = _broken_real(sftp, full) if resolve else None
                found.append(Child(name, error=reason, real=broken_real))
                continue
            mode = attrs.st_mode or 0
            if stat_module.S_ISDIR(mode):
                try:
                    identity = sftp.real_path(full)
                except StatusError:
                    found.append(Child(name, error=LINK_LOOP))
                    continue
                real = identity
            elif resolve:
                real = _real_or_none(sftp, full)
        if stat_module.S_ISDIR(mode):
            found.append(Child(name, is_dir=True, identity=identity, described=False, real=real))
        elif stat_module.S_ISREG(mode):
            found.append(
                Child(
                    name,
                    size=attrs.st_size or 0,
                    modified_at=float(attrs.st_mtime) if attrs.st_mtime is not None else None,
                    real=real,
                )
            )
        else:
            found.append(Child(name, error=NOT_A_REGULAR_FILE))
    return found


def _directory_attrs(sftp: StaccatoSFTP, url: EndpointURL, path: str) -> SFTPAttributes | None:
    """STAT of the server path ``path`` (a destination's parent directory), None when
    it does not exist. A directory is asked once per
    :func:`staccato.endpoints.base.directory_memo` block (a dataset's batch, a
    transfer's prepare), as its REALPATH is (:func:`_check_real_directory`), and
    :meth:`SFTPDriver.make_parents` (asked for each file of a batch, right before its
    prepare) refreshes it: a file of a batch costs one STAT of its directory, not
    three. Anything else (missing, a file) is asked every time.

    Raises:
        OSError, StatusError: the connection, or the server's refusal.
    """
    return base.remembered(
        _directory_key(url, path),
        lambda: stat_or_none(sftp, path),
        keep=lambda attrs: attrs is not None and stat_module.S_ISDIR(attrs.st_mode or 0),
    )


def _directory_key(url: EndpointURL, path: str) -> tuple[object, ...]:
    """The :func:`staccato.endpoints.base.remembered` key of the STAT of the server
    directory ``path`` on ``url``'s server."""
    return ("sftp-directory", url.host, url.port, url.user, path)


def _segments_bytes(segments: Sequence[tuple[int, int]], size: int, chunk_size: int) -> int:
    """Bytes of an object of ``size`` bytes in the chunk ranges ``segments``
    (``[first, end)`` chunk indexes of ``chunk_size`` bytes)."""
    return sum(
        min(size, end * chunk_size) - min(size, first * chunk_size) for first, end in segments
    )


def _check_target(sftp: StaccatoSFTP, url: EndpointURL) -> None:
    """What is at the destination ``url`` now, if anything, is a regular file (which
    the copy may replace): not a directory, a symbolic link (the copy would replace
    the link, a comparison judge the file it points to), a device, FIFO or socket.
    The file driver's rule (:func:`staccato.endpoints.file.driver.check_target`).

    Raises:
        IsADirectory: a directory.
        PermanentError: a symbolic link or another non-regular file.
        OSError, StatusError: the connection, or the server's refusal (mapped by the
            caller).
    """
    try:
        attrs = sftp.lstat(url.path)
    except FileNotFoundError:
        return
    mode = attrs.st_mode or 0
    if stat_module.S_ISREG(mode):
        return
    if stat_module.S_ISDIR(mode):
        raise IsADirectory(directory_target_message(str(url)))
    if stat_module.S_ISLNK(mode):
        target = _real_or_none(sftp, url.path) or sftp.readlink(url.path) or "?"
        raise PermanentError(
            f"destination {url} is a symbolic link on {url.host}; name the file it points "
            f"to ({target}) to replace that file"
        )
    raise PermanentError(
        f"destination {url} exists and is not a regular file (a device, FIFO or socket); "
        "refusing to replace it"
    )


def _make_root(sftp: StaccatoSFTP, root: EndpointURL, existing: str, what: str) -> None:
    """Make the directories from ``existing`` (the nearest existing directory at or above
    the dataset's destination directory ``root``, checked) down to ``root``.

    Raises:
        PermissionDeniedError: the server refused to make one (names where).
        OSError: another refusal (mapped by the caller's ``_run``).
    """
    target = posixpath.normpath(root.path or "/")
    missing: list[str] = []
    walk = target
    while walk != posixpath.normpath(existing) and walk not in ("", "/"):
        missing.append(walk)
        walk = posixpath.dirname(walk)
    for directory in reversed(missing):
        try:
            _make_directory(sftp, directory)
        except PermissionError:
            raise PermissionDeniedError(
                f"{what} cannot be made: permission denied in {posixpath.dirname(directory)} "
                f"(the server's user cannot create a directory there); make the directory "
                "writable, or choose another destination"
            ) from None


def _make_directory(sftp: StaccatoSFTP, directory: str) -> None:
    """``mkdir`` of ``directory``; one made meanwhile (by another batch or run) is fine.

    Raises:
        OSError: the server refused it, and no directory is there.
    """
    try:
        sftp.mkdir(directory)
    except OSError:
        again = stat_or_none(sftp, directory)
        if again is None or not stat_module.S_ISDIR(again.st_mode or 0):
            raise


def _url_of(url: EndpointURL, path: str) -> str:
    """The canonical URL of the server path ``path`` on ``url``'s server (as ``url``
    names it: user, host, port)."""
    quoted_path = quote(url.path, safe="/")
    return url.canonical[: len(url.canonical) - len(quoted_path)] + quote(path, safe="/")


def _as_text(path: str) -> str:
    """``path`` normalised as text (``.``, ``..``, repeated and leading ``//``
    slashes), what its REALPATH is when no symbolic link is on it: a spelling is
    not a link."""
    return "/" + posixpath.normpath(path).lstrip("/")


def _check_real_directory(
    sftp: StaccatoSFTP, url: EndpointURL, directory: str, below: str = "."
) -> None:
    """The existing directory ``directory`` of the destination ``url`` (its parent, or
    with ``below`` the nearest existing one above it, ``below`` the rest of the way to
    the parent) is named by its real path: no symbolic link on the way, as
    :func:`staccato.endpoints.file.driver.check_parent` asks of a local one. The
    transfer id (the destination's lock) is derived from the URL, so a second spelling
    of a directory would be a second lock on one file, and a dataset's file under a link
    in its destination root would be written outside the root. One REALPATH, asked once
    per directory within a :func:`staccato.endpoints.base.directory_memo` block (a
    dataset's batch, a transfer's prepare); none where the server cannot resolve it.

    Raises:
        PermanentError: the directory is named through a link (names the real path).
        OSError: the connection (retried).
    """
    key = ("sftp-realpath", url.host, url.port, url.user, directory)
    real = base.remembered(key, lambda: _real_or_none(sftp, directory))
    if real is None or real == _as_text(directory):
        return
    real_target = posixpath.normpath(posixpath.join(real, below, posixpath.basename(url.path)))
    raise PermanentError(linked_directory_message(str(url), _url_of(url, real_target)))


def _same_server(url: EndpointURL, other: EndpointURL) -> bool:
    """Whether ``other`` is an sftp URL of ``url``'s server (host and port as named;
    users may differ: one file system)."""
    return other.scheme == "sftp" and (other.host, other.port or 22) == (url.host, url.port or 22)


def _fence(sftp: StaccatoSFTP, url: EndpointURL, roots: Sequence[EndpointURL]) -> Fence:
    """The ones of a dataset's destination roots on ``url``'s server, by real path on
    the server (:func:`_real_or_nearest`), shown as their URLs.

    Raises:
        OSError: the connection (retried).
    """
    return Fence(
        tuple((_real_or_nearest(sftp, r.path), str(r)) for r in roots if _same_server(url, r))
    )


def _real_or_none(sftp: StaccatoSFTP, path: str) -> str | None:
    """REALPATH of ``path``, None where the server cannot resolve it (a loop, a
    missing component before the last).

    Raises:
        OSError: the connection, not the path (retried).
    """
    try:
        return sftp.real_path(path)
    except StatusError:
        return None


def _real_or_nearest(sftp: StaccatoSFTP, path: str) -> str:
    """The real path of the server path ``path``, which may not exist yet (a
    destination root made as files are written): REALPATH of its nearest ancestor
    that resolves, and the rest as named.

    Raises:
        OSError: the connection, not the path (retried).
    """
    rest: list[str] = []
    while True:
        real = _real_or_none(sftp, path)
        if real is not None:
            return posixpath.join(real, *reversed(rest))
        parent, name = posixpath.split(path.rstrip("/"))
        if not name or parent == path:
            return posixpath.join("/", *reversed(rest))
        rest.append(name)
        path = parent


#: most links followed in one path resolution (Linux's MAXSYMLINKS, path_resolution(7))
_MAX_LINK_HOPS = 40


def _broken_real(sftp: StaccatoSFTP, path: str) -> str | None:
    """Where the link at ``path``, which the server cannot follow, leads: READLINK hop
    by hop to the first path that is not a link, then :func:`_real_or_nearest` (its
    missing tail as named); None for a loop or a link that cannot be read.

    Raises:
        OSError: the connection, not the path (retried).
    """
    for _ in range(_MAX_LINK_HOPS):
        try:
            if not stat_module.S_ISLNK(sftp.lstat(path).st_mode or 0):
                return _real_or_nearest(sftp, path)
            target = sftp.readlink(path)
        except OSError as err:
            if not _is_status(err):
                raise
            return _real_or_nearest(sftp, path)  # missing: the link leads there
        if target is None:
            return None
        path = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    return None


def _link_problem(sftp: StaccatoSFTP, path: str) -> str:
    """Why the server could not follow the link at ``path``: READLINK hop by hop, a
    link seen twice (or more than 40 hops) is a loop, a missing target a broken link."""
    seen: set[str] = set()
    for _ in range(_MAX_LINK_HOPS):
        if path in seen:
            return LINK_LOOP
        seen.add(path)
        try:
            if not stat_module.S_ISLNK(sftp.lstat(path).st_mode or 0):
                return BROKEN_LINK  # exists, yet could not be followed: a bad component
            target = sftp.readlink(path)
        except OSError as err:
            if not _is_status(err):
                raise
            return BROKEN_LINK
        if target is None:
            return BROKEN_LINK
        path = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    return LINK_LOOP


def _is_status(err: BaseException) -> bool:
    """Whether ``err`` is the server's answer about a file (an SFTP status: paramiko
    raises ``OSError`` with ``ENOENT``, ``EACCES`` or no errno for one) rather than a
    lost connection (``ConnectionResetError``, ``TimeoutError``, ``EPIPE``...), which
    must be retried, never reported as a property of the file."""
    if isinstance(err, StatusError):
        return True
    return type(err) in (OSError, FileNotFoundError, PermissionError) and (
        getattr(err, "errno", None) in (None, errno.ENOENT, errno.EACCES)
    )
