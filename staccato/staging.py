"""The staging cache: a worker-side, size-capped, crash-safe copy of a source that
cannot be read again cheaply (a server that ignores ``Range``), so that a failure at
the destination never makes the service fetch the source again.

Layout under ``root`` (``STACCATO_STAGING_DIR``), one directory per entry::

    <key>.lock              flock(2) of the entry: staging, pinning, eviction
                            (removed with the entry)
    <key>/data.partial      the bytes while they are staged
    <key>/data              the staged bytes (renamed from data.partial once durable)
    <key>/manifest.json     written last (temp + fsync + rename): the commit point
    <key>/used              mtime = last use (LRU order)
    <key>/pins/<holder>     one file per transfer using the entry

``key`` is the sha256 of the source URL (secrets and user info removed) and its
version (ETag, or mtime + size). An entry without a complete manifest is never served;
a half-written one is removed when that key is staged next. Reads check each cache
chunk's CRC32C against the manifest (:class:`StagedReader`): a mismatch drops the
entry and raises :class:`StagedEntryLostError`, so damaged bytes are never served.

Eviction (least recently used first) runs before staging makes room; a pinned entry
is never evicted. No Temporal import here: a plain cache, used by the activities.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from staccato import checksums, units
from staccato.endpoints.base import Reader, keepalive
from staccato.errors import PermanentError
from staccato.urls import redact

#: bytes per cache chunk, each with its own CRC32C in the manifest
CACHE_CHUNK = 4 * 1024 * 1024
#: bytes staged between two fdatasyncs of the data
SYNC_EVERY = 32 * 1024 * 1024
MANIFEST = "manifest.json"
DATA = "data"
PARTIAL = "data.partial"
PINS = "pins"
USED = "used"
#: seconds between tries of a lock another process holds
_LOCK_POLL_S = 0.2
DIR_SETTING = "STACCATO_STAGING_DIR"
CAP_SETTING = "STACCATO_STAGING_MAX_BYTES"


class StagedEntryLostError(PermanentError):
    """The staged copy a stream reads from is gone or damaged (a chunk's CRC32C
    differs from the manifest's, the entry was evicted, the stream runs on another
    machine). Not retried as such: the transfer stages the source again."""

    TYPE = "StagedEntryLost"


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` holds.

    Attributes:
        url: the source URL, redacted (no secrets, no user info).
        version: the source version staged (ETag, or mtime + size).
        size: bytes.
        chunk_size: bytes per cache chunk.
        crc32c: hex CRC32C of each cache chunk, in order.
    """

    url: str
    version: str
    size: int
    chunk_size: int
    crc32c: list[str]
    complete: bool = True


def entry_key(url: str, version: str) -> str:
    """The cache key of a source version: sha256 hex of the redacted URL and version."""
    return hashlib.sha256(f"{shown_url(url)}\n{version}".encode()).hexdigest()


def shown_url(url: str) -> str:
    """``url`` without user info and with query values redacted."""
    shown = redact(url)
    scheme, sep, rest = shown.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        rest = rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"


class StagingCache:
    """The cache under ``root``, at most ``max_bytes`` of complete entries.

    Args:
        root: the cache directory (created on first use).
        max_bytes: the cap on the bytes of all entries (``STACCATO_STAGING_MAX_BYTES``).
    """

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes

    # -- layout ----------------------------------------------------------------------------
    def path(self, key: str) -> Path:
        return self.root / key

    def ensure_root(self) -> None:
        """Create the cache directory and check it is writable.

        Raises:
            PermanentError: it cannot be created or written (names the setting).
        """
        if self.root.exists() and not self.root.is_dir():
            raise PermanentError(
                f"the staging cache directory {self.root} ({DIR_SETTING}) exists and is not a "
                f"directory; set {DIR_SETTING} to a writable directory"
            )
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise PermanentError(
                f"the staging cache directory {self.root} ({DIR_SETTING}) is not writable: "
                f"{err.strerror or err}; set {DIR_SETTING} to a writable directory"
            ) from None

    def lock_path(self, key: str) -> Path:
        return self.root / f"{key}.lock"

    def damage_path(self, key: str) -> Path:
        """The note a reader that found entry ``key`` damaged leaves when it drops it
        (:meth:`damage_note`)."""
        return self.root / f"{key}.damaged"

    def damage_note(self, key: str) -> str | None:
        """Why entry ``key`` was dropped as damaged (the reader's message), while it
        is not staged again; None otherwise. A stream that opens the entry after
        another dropped it, and the staging read that stages it again, say this
        rather than that it is not in the cache (tester69: a damaged entry was logged
        as "not in the staging cache")."""
        try:
            return self.damage_path(key).read_text() or None
        except (OSError, UnicodeDecodeError):
            return None

    @contextlib.contextmanager
    def locked(
        self, key: str, *, wait: bool = True, waiting: Callable[[], None] | None = None
    ) -> Iterator[bool]:
        """Hold the entry's lock (``flock``); yields False (without it) when ``wait`` is
        False and another process holds it. While waiting (another process stages the
        key), ``waiting`` (if given) then :func:`~staccato.endpoints.base.keepalive` are
        called every 0.2 s, so the waiting activity keeps heartbeating.

        The lock file is removed with its entry (:meth:`forget`); a lock taken on a
        file that was removed meanwhile is let go and taken again on the current one."""
        while True:
            fd = os.open(self.lock_path(key), os.O_CREAT | os.O_RDWR, 0o600)
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if not wait:
                            yield False
                            return
                        # another process stages this key: wait, heartbeating the activity
                        if waiting is not None:
                            waiting()
                        keepalive()
                        time.sleep(_LOCK_POLL_S)
                try:
                    current = os.stat(self.lock_path(key)).st_ino
                except FileNotFoundError:
                    current = -1
                if current != os.fstat(fd).st_ino:
                    continue  # its holder removed it with the entry: lock the new file
                yield True
                return
            finally:
                os.close(fd)  # releases the lock

    # -- entries ----------------------------------------------------------------------------
    def manifest(self, key: str) -> Manifest | None:
        """The complete entry's manifest, or None (absent, half-written, unreadable)."""
        try:
            raw = json.loads((self.path(key) / MANIFEST).read_text())
            found = Manifest(**raw)
        except (OSError, ValueError, TypeError):
            return None
        if not found.complete or not (self.path(key) / DATA).is_file():
            return None
        return found

    def touch(self, key: str) -> None:
        """Record a use now (LRU order)."""
        used = self.path(key) / USED
        with contextlib.suppress(OSError):
            used.touch()
            os.utime(used)

    def pin(self, key: str, holder: str) -> None:
        """Mark the entry in use by ``holder`` (a transfer id): never evicted until
        :meth:`unpin`. Call with the entry's lock held."""
        pins = self.path(key) / PINS
        pins.mkdir(parents=True, exist_ok=True)
        (pins / _pin_name(holder)).touch()

    def unpin(self, key: str, holder: str) -> None:
        """``holder`` no longer uses the entry (absent: nothing to do). When nothing
        is staged under ``key`` then (no complete entry, no other pin: a stage that was
        cancelled or failed removed its entry, or a crashed one left half of it), the
        entry and its lock file go too: a cancelled fan-out left a 0-byte ``.lock``,
        which taking the lock here had made again. Removed with the lock held, so no
        other process stages the key meanwhile (:meth:`locked`: a waiter on the removed
        file takes the lock again on a new one)."""
        with self.locked(key):
            with contextlib.suppress(FileNotFoundError):
                (self.path(key) / PINS / _pin_name(holder)).unlink()
            if self.manifest(key) is None and not self.pins(key):
                self.forget(key)
                with contextlib.suppress(FileNotFoundError):
                    self.damage_path(key).unlink()

    def pins(self, key: str) -> list[str]:
        try:
            return sorted(p.name for p in (self.path(key) / PINS).iterdir())
        except FileNotFoundError:
            return []

    def drop(self, key: str) -> None:
        """Remove the entry (its manifest first, so it is never served half removed)."""
        entry = self.path(key)
        with contextlib.suppress(FileNotFoundError):
            (entry / MANIFEST).unlink()
        shutil.rmtree(entry, ignore_errors=True)

    def forget(self, key: str) -> None:
        """Remove the entry and its lock file (call with the entry's lock held; a
        waiter on the removed lock file takes the lock again on a new one)."""
        self.drop(key)
        with contextlib.suppress(FileNotFoundError):
            self.lock_path(key).unlink()

    def staged_so_far(self, key: str) -> int:
        """Bytes of the entry staged so far by whoever stages it (the partial data
        file's size), or its size once complete; 0 when absent."""
        for name in (PARTIAL, DATA):
            with contextlib.suppress(OSError):
                return (self.path(key) / name).stat().st_size
        return 0

    def entries(self) -> list[tuple[float, str, int]]:
        """Complete entries as ``(last use, key, bytes)``, least recently used first."""
        found: list[tuple[float, str, int]] = []
        try:
            children = list(self.root.iterdir())
        except FileNotFoundError:
            return []
        for child in children:
            if not child.is_dir():
                continue
            manifest = self.manifest(child.name)
            if manifest is None:
                continue
            try:
                used = (child / USED).stat().st_mtime
            except FileNotFoundError:
                used = 0.0
            found.append((used, child.name, manifest.size))
        return sorted(found)

    def make_room(self, key: str, size: int) -> list[str]:
        """Evict unpinned entries, least recently used first, until ``size`` more bytes
        fit under the cap. Returns the keys evicted.

        Raises:
            PermanentError: ``size`` exceeds the cap, or pinned entries leave no room
                (the message names the setting and the sizes).
        """
        if size > self.max_bytes:
            raise PermanentError(
                f"the source ({units.size(size)}, {size} bytes) is larger than the staging "
                f"cache's cap {CAP_SETTING}={self.max_bytes} ({units.size(self.max_bytes)}); "
                f"raise {CAP_SETTING} to at least {size}"
            )
        evicted: list[str] = []
        entries = [e for e in self.entries() if e[1] != key]
        used = sum(e[2] for e in entries)
        for _, other, other_size in entries:
            if used + size <= self.max_bytes:
                break
            with self.locked(other, wait=False) as held:
                if not held or self.pins(other):
                    continue
                self.forget(other)
            evicted.append(other)
            used -= other_size
        if used + size > self.max_bytes:
            raise PermanentError(
                f"the staging cache ({CAP_SETTING}={self.max_bytes}) has no room for "
                f"{size} bytes: entries in use by running transfers hold {used} bytes; "
                f"raise {CAP_SETTING} or wait for them to end"
            )
        return evicted

    def stage(
        self,
        key: str,
        manifest_url: str,
        version: str,
        size: int,
        holder: str,
        fill: Callable[[Callable[[bytes | memoryview], None]], None],
        waiting: Callable[[int], None] | None = None,
    ) -> tuple[Manifest, bool]:
        """Stage a source version as entry ``key`` (or reuse the complete entry) and
        pin it for ``holder``.

        Args:
            fill: called with a ``write(bytes)`` function; writes the source's bytes in
                order, from byte 0 (an error it raises leaves no entry).
            waiting: while another process stages ``key``, called every 0.2 s with
                the bytes it has staged so far.

        Returns:
            The manifest and whether the entry was there already (no source read).

        Raises:
            PermanentError: the directory is not writable, the cap has no room, the
                file system has less free space than ``size`` or runs out while
                staging (ENOSPC), the source sent another number of bytes than ``size``.
            Whatever ``fill`` raises.
        """
        self.ensure_root()

        def report() -> None:
            if waiting is not None:
                waiting(self.staged_so_far(key))

        with self.locked(key, waiting=report):
            found = self.manifest(key)
            if found is not None and found.size == size:
                self.pin(key, holder)
                self.touch(key)
                return found, True
            self.drop(key)  # a half-written entry of a crashed stage, or a stale one
            self.make_room(key, size)
            self._check_free_space(size)
            entry = self.path(key)
            entry.mkdir(parents=True)
            self.pin(key, holder)
            crcs: list[str] = []
            pending = bytearray()
            written = 0
            try:
                with open(entry / PARTIAL, "wb") as out:

                    def write(data: bytes | memoryview) -> None:
                        nonlocal written
                        written += len(data)
                        if written > size:
                            raise PermanentError(
                                f"{manifest_url} sent more than the {size} bytes it announced"
                            )
                        out.write(data)
                        if written // SYNC_EVERY != (written - len(data)) // SYNC_EVERY:
                            # bounded dirty data: the final fdatasync stays short, so
                            # the staging activity never goes long without a heartbeat
                            out.flush()
                            os.fdatasync(out.fileno())
                        pending.extend(data)
                        while len(pending) >= CACHE_CHUNK:
                            crcs.append(
                                checksums.checksum_bytes(
                                    "crc32c", memoryview(pending)[:CACHE_CHUNK]
                                )
                            )
                            del pending[:CACHE_CHUNK]

                    fill(write)
                    if written != size:
                        raise PermanentError(
                            f"{manifest_url} sent {written} bytes, {size} were announced"
                        )
                    if pending:
                        crcs.append(checksums.checksum_bytes("crc32c", memoryview(pending)))
                    out.flush()
                    os.fdatasync(out.fileno())
                os.rename(entry / PARTIAL, entry / DATA)
                made = Manifest(
                    url=manifest_url,
                    version=version,
                    size=size,
                    chunk_size=CACHE_CHUNK,
                    crc32c=crcs,
                )
                temp = entry / f"{MANIFEST}.tmp"
                with open(temp, "w") as text:
                    json.dump(made.__dict__, text)
                    text.flush()
                    os.fsync(text.fileno())
                os.rename(temp, entry / MANIFEST)  # the commit point
                with contextlib.suppress(FileNotFoundError):
                    self.damage_path(key).unlink()  # staged again: no longer damaged
                _fsync_dir(entry)
                _fsync_dir(self.root)
            except OSError as err:
                self.forget(key)
                if err.errno != errno.ENOSPC:
                    raise
                raise PermanentError(self._no_space(size, written)) from None
            except BaseException:
                self.forget(key)
                raise
            self.touch(key)
            return made, False

    def _free_bytes(self) -> int:
        found = os.statvfs(self.root)
        return found.f_bavail * found.f_frsize

    def _no_space(self, size: int, written: int = 0) -> str:
        free = self._free_bytes()
        ran_out = f" (ran out after {written} bytes)" if written else ""
        return (
            f"the staging cache directory {self.root} ({DIR_SETTING}) has {free} bytes "
            f"({units.size(free)}) free, the source needs {size} bytes "
            f"({units.size(size)}){ran_out}; set {DIR_SETTING} to a directory on a file "
            f"system with room, or lower {CAP_SETTING} to fit it"
        )

    def _check_free_space(self, size: int) -> None:
        """Raise PermanentError (naming the setting, the bytes needed and free) when
        the cache's file system has fewer than ``size`` bytes free (statvfs)."""
        if self._free_bytes() < size:
            raise PermanentError(self._no_space(size))

    def open_reader(self, key: str, offset: int, length: int) -> StagedReader:
        """A reader of bytes ``[offset, offset + length)`` of entry ``key``.

        Raises:
            StagedEntryLostError: no complete entry ``key`` here.
        """
        found = self.manifest(key)
        if found is None:
            damaged = self.damage_note(key)
            if damaged is not None:
                # another stream found it damaged and dropped it: said so, not "not here"
                raise StagedEntryLostError(damaged)
            raise StagedEntryLostError(
                f"the staged copy {key[:12]} is not in the staging cache {self.root} of this "
                "worker (evicted, removed, or staged on another machine); staging the source again"
            )
        self.touch(key)
        return StagedReader(self, key, found, offset, length)


class StagedReader(Reader):
    """Reads a range of a staged entry, checking each cache chunk's CRC32C before any
    of its bytes is handed out.

    Raises (from :meth:`readinto`):
        StagedEntryLostError: a chunk's checksum differs (the entry is dropped) or the
            data file is gone.
    """

    def __init__(
        self, cache: StagingCache, key: str, manifest: Manifest, offset: int, length: int
    ) -> None:
        self._cache = cache
        self._key = key
        self._manifest = manifest
        self._position = offset
        self._end = min(offset + length, manifest.size)
        self._chunk_index = -1
        self._chunk = b""
        try:
            self._fd: int | None = os.open(cache.path(key) / DATA, os.O_RDONLY)
        except FileNotFoundError:
            raise StagedEntryLostError(
                f"the staged copy {key[:12]} vanished from {cache.root}; staging the source again"
            ) from None

    def _load(self, index: int) -> None:
        assert self._fd is not None
        size, chunk = self._manifest.size, self._manifest.chunk_size
        start = index * chunk
        data = os.pread(self._fd, min(chunk, size - start), start)
        actual = checksums.checksum_bytes("crc32c", data)
        expected = self._manifest.crc32c[index] if index < len(self._manifest.crc32c) else ""
        if len(data) != min(chunk, size - start) or actual != expected:
            why = (
                f"the staged copy of {self._manifest.url} was found damaged: cache chunk "
                f"{index} has CRC32C {actual}, its manifest says {expected}; dropped it, "
                "reading the source again into the staging cache"
            )
            with self._cache.locked(self._key):
                # the note first: a stream that finds the manifest gone finds it
                with contextlib.suppress(OSError):
                    note = self._cache.damage_path(self._key)
                    temp = note.with_name(f"{note.name}.{os.getpid()}.tmp")
                    temp.write_text(why)
                    os.rename(temp, note)  # whole or absent to a reader
                self._cache.forget(self._key)
            raise StagedEntryLostError(why)
        self._chunk_index, self._chunk = index, data

    def readinto(self, buffer: memoryview) -> int:
        if self._position >= self._end or not len(buffer):
            return 0
        chunk = self._manifest.chunk_size
        index = self._position // chunk
        if index != self._chunk_index:
            self._load(index)
        start = self._position - index * chunk
        n = min(len(buffer), len(self._chunk) - start, self._end - self._position)
        buffer[:n] = self._chunk[start : start + n]
        self._position += n
        self.bytes_read += n
        return n

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _pin_name(holder: str) -> str:
    """A file name for ``holder`` (a workflow id may hold ``/``)."""
    return hashlib.sha256(holder.encode()).hexdigest()[:32]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as err:  # pragma: no cover - some file systems refuse a directory fsync
        if err.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)
