"""The driver interface: what every endpoint provides (docs/architecture.md, "The driver
contract"; tests/contract/ runs it against every driver).

A driver speaks one endpoint's protocol. It is constructed once per worker process
(see :func:`staccato.endpoints.get_driver`) and is called from activities only;
workflows never import a driver.

Reads are streaming into caller-owned buffers, so memory per stream is one chunk.
Writes go into a *write session* (temp file, S3 multipart upload) and become visible
under the destination name only at :meth:`Driver.publish`. Chunk writes are
positional (indexed), so repeating one is harmless. Shape after rclone's
``ChunkWriter`` (numbered writes + explicit finish/abort).

Every method raises only :mod:`staccato.errors` types.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import Future
from contextvars import ContextVar
from dataclasses import dataclass
from types import TracebackType
from typing import ClassVar, TypeVar

from staccato import checksums
from staccato.errors import UnsupportedError
from staccato.models import ListPage, ObjectInfo, WriteSession
from staccato.plan import chunk_bounds
from staccato.urls import EndpointURL

_T = TypeVar("_T")
#: seconds of clock difference allowed between a store's clock (an S3 upload's
#: ``Initiated``) and the worker's, when orphaned write sessions are found by time
ORPHAN_CLOCK_SLACK_S = 5.0

_keepalive_hook: ContextVar[Callable[[], None] | None] = ContextVar(
    "staccato_keepalive", default=None
)


def parts_digest(tags: Iterable[tuple[int, str]]) -> str:
    """The record of which stored parts a stream wrote or accepted: sha256 (hex, 64
    digits) over one ``"<part number>:<tag>\\n"`` line per part, in the order given
    (a segment's chunks in order; part number = chunk index + 1; ``tag``: the store's
    ETag without quotes, lower case, :meth:`ChunkWriter.part_tag`). The same parts
    with the same tags give the same digest, so publish compares what ListParts lists
    now with what the streams recorded (:attr:`StreamResult.parts`). The rule's
    source: a tester's part replaced after every part was uploaded and before
    CompleteMultipartUpload was completed into the object."""
    lines = "".join(f"{number}:{tag}\n" for number, tag in tags)
    return hashlib.sha256(lines.encode()).hexdigest()


def keepalive() -> None:
    """Drivers call this every second or so while they wait (for a connection slot,
    a rate limit...), so the activity running them keeps heartbeating. The hook may
    raise (the activity was cancelled): let that propagate."""
    hook = _keepalive_hook.get()
    if hook is not None:
        hook()


class Motion:
    """When bytes last moved (``time.monotonic()`` seconds), shared by the threads of
    one activity attempt (:func:`motion_tracker`)."""

    __slots__ = (
        "at",
        "began",
        "elsewhere",
        "read_back",
        "fresh_copied",
        "fresh_began",
        "assembling",
    )

    def __init__(self) -> None:
        self.at = self.began = time.monotonic()
        #: > 0 while the bytes move between the endpoints themselves (a server-side
        #: copy): no motion is seen here, and none is expected
        self.elsewhere = 0
        #: bytes read back and checksummed (:func:`read_back`): a verify's progress
        self.read_back = 0
        #: bytes a publish copied into a fresh copy of the data (:func:`fresh_copied`),
        #: and when (``time.monotonic()``) that copy began (None: none began)
        self.fresh_copied = 0
        self.fresh_began: float | None = None
        #: parts the store is assembling into the object while a publish waits for it
        #: (:func:`assembling`: S3 CompleteMultipartUpload); None otherwise
        self.assembling: int | None = None


_motion: ContextVar[Motion | None] = ContextVar("staccato_motion", default=None)


def moved() -> None:
    """Drivers and streams call this when bytes moved (read from a source, sent to or
    acknowledged by a destination): the retry deadline's hang watch
    (:mod:`staccato.activities.retry_deadline`) tells a slow endpoint from a hung one by
    it. Cheap; no-op outside a tracked attempt."""
    tracker = _motion.get()
    if tracker is not None:
        tracker.at = time.monotonic()


def read_back(nbytes: int) -> None:
    """A read-back (a verify) checksummed ``nbytes`` more bytes of a destination:
    counted in the attempt's tracker (``Motion.read_back``, the verify's heartbeat
    details say it) and as motion (:func:`moved`). No-op outside a tracked attempt."""
    tracker = _motion.get()
    if tracker is not None:
        tracker.at = time.monotonic()
        tracker.read_back += nbytes


def fresh_copied(nbytes: int) -> None:
    """A publish wrote ``nbytes`` more bytes into a fresh copy of the data it publishes
    (an SFTP temp file a stale writer may still write into: ``docs/sftp.md``): counted
    in the attempt's tracker (``Motion.fresh_copied``, the publish's heartbeat details
    say it: ``status`` shows the copy moving, not a publish waiting for its server)
    and as motion (:func:`moved`). No-op outside a tracked attempt."""
    tracker = _motion.get()
    if tracker is not None:
        tracker.at = time.monotonic()
        if tracker.fresh_began is None:
            tracker.fresh_began = tracker.at
        tracker.fresh_copied += nbytes


@contextlib.contextmanager
def assembling(parts: int) -> Iterator[None]:
    """For a publish's call in which the store assembles ``parts`` parts into the
    object (S3 CompleteMultipartUpload): the attempt's tracker says so
    (``Motion.assembling``, the publish's heartbeat details), so ``status`` says the
    publish waits for the store to assemble them, not that it stalled. AWS: "Processing
    of a Complete Multipart Upload request could take several minutes" (S3 API
    reference, CompleteMultipartUpload); moto took ~6 s. No-op outside a tracked
    attempt."""
    tracker = _motion.get()
    if tracker is None:
        yield
        return
    tracker.assembling = parts
    try:
        yield
    finally:
        tracker.assembling = None


@contextlib.contextmanager
def moving_elsewhere() -> Iterator[None]:
    """For a call in which the endpoints move the bytes themselves (S3
    UploadPartCopy): the hang watch does not count its time as time without motion."""
    tracker = _motion.get()
    if tracker is None:
        yield
        return
    tracker.elsewhere += 1
    try:
        yield
    finally:
        tracker.elsewhere -= 1
        tracker.at = time.monotonic()


@contextlib.contextmanager
def motion_tracker(tracker: Motion) -> Iterator[Motion]:
    """Have :func:`moved` update ``tracker`` for the block (and threads started in
    copies of its context)."""
    token = _motion.set(tracker)
    try:
        yield tracker
    finally:
        _motion.reset(token)


def has_keepalive() -> bool:
    """Whether the caller installed a :func:`keepalive` hook (long waits are safe)."""
    return _keepalive_hook.get() is not None


@contextlib.contextmanager
def keepalive_hook(hook: Callable[[], None]) -> Iterator[None]:
    """Install ``hook`` as what :func:`keepalive` calls, for the duration of the block."""
    token = _keepalive_hook.set(hook)
    try:
        yield
    finally:
        _keepalive_hook.reset(token)


@contextlib.contextmanager
def keepalive_past_stop() -> Iterator[None]:
    """For the steps after a publish (the check of the published object): the
    caller's :func:`keepalive` hook still runs (heartbeats), but what it raises to stop
    (a cancel) is let pass: the object is published, so the step ends and the caller
    learns the file was copied (a dataset's batch stopped by its cancel counts every
    file it published; a stop raised here lost one: published, not counted). The
    caller's next beat stops it."""
    hook = _keepalive_hook.get()
    if hook is None:
        yield
        return

    def beat() -> None:
        try:
            hook()
        except Exception:  # noqa: BLE001 - a stop, seen again at the caller's next beat
            pass

    token = _keepalive_hook.set(beat)
    try:
        yield
    finally:
        _keepalive_hook.reset(token)


#: seconds a stop waits at most, once raised, for the answer to a write sent whole
#: (:func:`stop_held`): a live store's answer, however loaded, comes well within it
STOP_HELD_MAX_S = 10.0


@contextlib.contextmanager
def stop_held(limit_s: float | None = None) -> Iterator[None]:
    """For the wait for the answer to a write sent whole, which the destination may
    have carried out already (an S3 PutObject): the caller's :func:`keepalive` hook
    still runs, but a stop it raises (a cancel) is held back until the answer comes,
    for at most ``limit_s`` seconds (None: :data:`STOP_HELD_MAX_S`) after the first
    one and while the attempt's lease holds (:func:`write_fence`); then that stop is
    raised. So the caller learns whether its object was published: a dataset's batch stopped by its cancel counts every
    file it published, and a stop raised in that wait lost the file whose answer was on
    its way (published, not counted: tester61 F). A store that does not answer delays
    the stop by at most that much."""
    hook = _keepalive_hook.get()
    if hook is None:
        yield
        return
    stopped_at: float | None = None
    limit = STOP_HELD_MAX_S if limit_s is None else limit_s

    def beat() -> None:
        nonlocal stopped_at
        try:
            hook()
        except Exception as stop:
            now = time.monotonic()
            if stopped_at is None:
                stopped_at = now
            if now - stopped_at >= limit:
                raise
            try:
                write_fence()  # the lease: Temporal may give the attempt up past it
            except Exception:  # noqa: BLE001 - the stop is what the caller gets
                raise stop from None

    token = _keepalive_hook.set(beat)
    try:
        yield
    finally:
        _keepalive_hook.reset(token)


_directory_memo: ContextVar[dict[object, object] | None] = ContextVar(
    "staccato_directory_memo", default=None
)


@contextlib.contextmanager
def directory_memo() -> Iterator[None]:
    """Keep what drivers learn about destination directories (an SFTP directory's real
    path) for the block, shared by the threads that run in copies of its context: a
    dataset's batch checks each directory once, not once per file (as the local
    batch's :class:`~staccato.endpoints.file.group.LocalGroup` does). Re-entrant: inside
    another block, that block's memo is used."""
    if _directory_memo.get() is not None:
        yield
        return
    token = _directory_memo.set({})
    try:
        yield
    finally:
        _directory_memo.reset(token)


def remembered(
    key: object, compute: Callable[[], _T], keep: Callable[[_T], bool] | None = None
) -> _T:
    """``compute()``, or what it returned for ``key`` before in the current
    :func:`directory_memo` block (outside one: always computed). What ``compute``
    raises is not remembered (a transient failure is asked again), nor a value
    ``keep`` (when given) says False of (e.g. a directory not there yet: made next)."""
    memo = _directory_memo.get()
    if memo is None:
        return compute()
    if key in memo:
        return memo[key]  # type: ignore[return-value]
    value = compute()
    if keep is None or keep(value):
        memo[key] = value
    return value


def remember_listed(listed: Iterable[tuple[str, ObjectInfo | None]]) -> None:
    """Keep, in the current :func:`directory_memo` block, what one listing of their
    range found at the destinations (canonical URL, its listed info or None: missing):
    a dataset's batch with ``--sync-level`` lists its S3 destination once instead of
    a HeadObject per file (:meth:`Driver.listed_objects`); outside a block: nothing."""
    memo = _directory_memo.get()
    if memo is not None:
        for url, info in listed:
            memo[("listed", url)] = info


def listed_at(url: str) -> tuple[bool, ObjectInfo | None]:
    """What the batch's listing found at the destination ``url`` (canonical):
    ``(True, info)``, ``(True, None)`` when it found nothing there, ``(False, None)``
    when it was not listed (:func:`remember_listed`, the current
    :func:`directory_memo` block)."""
    memo = _directory_memo.get()
    if memo is None or ("listed", url) not in memo:
        return False, None
    return True, memo[("listed", url)]  # type: ignore[return-value]


def remember(key: object, value: object) -> None:
    """Keep ``value`` for ``key`` in the current :func:`directory_memo` block (what
    :func:`remembered` then answers), replacing what was kept; outside a block: nothing."""
    memo = _directory_memo.get()
    if memo is not None:
        memo[key] = value


class OpenSessions:
    """The write sessions an activity attempt opened that cannot be found again by key
    (S3 multipart uploads: known only by the id CreateMultipartUpload answered) and
    has not ended yet (completed or aborted), shared by the threads of the attempt
    (:func:`session_tracker`): a dataset's batch heartbeats them in its checkpoint, so
    a retried attempt, or the clean-up after the batch, aborts those of an attempt
    whose worker was killed by their ids. Thread-safe.

    Attributes:
        changed: set when a session was opened since the caller last cleared it (the
            batch then heartbeats at once rather than on its next beat).
    """

    def __init__(self, sessions: dict[str, str] | None = None) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, str] = dict(sessions or {})
        self._waiter: Future[None] | None = None
        self.changed = threading.Event()

    def opened(self, url: str, session_id: str) -> None:
        """Record the session ``session_id`` on the canonical destination ``url``."""
        with self._lock:
            self._open[session_id] = url
            self.changed.set()
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(None)

    def waiter(self) -> Future[None]:
        """A future done once a session is opened (done already while :attr:`changed`
        is set): a loop that waits for its threads' futures wakes for it too."""
        with self._lock:
            if self._waiter is None or self._waiter.done():
                self._waiter = Future()
            if self.changed.is_set():
                self._waiter.set_result(None)
            return self._waiter

    def ended(self, session_id: str) -> None:
        """Forget ``session_id`` (completed or aborted; unknown: nothing)."""
        with self._lock:
            self._open.pop(session_id, None)

    def snapshot(self) -> dict[str, str]:
        """The sessions open now: session id -> canonical destination URL (a copy)."""
        with self._lock:
            return dict(self._open)


_open_sessions: ContextVar[OpenSessions | None] = ContextVar("staccato_open_sessions", default=None)


def open_sessions() -> OpenSessions | None:
    """The :class:`OpenSessions` of the current :func:`session_tracker` block, if any."""
    return _open_sessions.get()


@contextlib.contextmanager
def session_tracker(tracker: OpenSessions) -> Iterator[OpenSessions]:
    """Have :func:`session_opened` and :func:`session_ended` update ``tracker`` for the
    block (and threads started in copies of its context)."""
    token = _open_sessions.set(tracker)
    try:
        yield tracker
    finally:
        _open_sessions.reset(token)


def session_opened(url: str, session_id: str) -> None:
    """Drivers whose sessions cannot be found again by key call this right after the
    destination answered with a new session's id (S3: CreateMultipartUpload), before
    anything else can fail. No-op outside a :func:`session_tracker` block."""
    tracker = _open_sessions.get()
    if tracker is not None:
        tracker.opened(url, session_id)


def session_ended(session_id: str) -> None:
    """Drivers call this once a session :func:`session_opened` recorded is completed
    (published) or aborted (also when the destination says it is gone). No-op outside
    a :func:`session_tracker` block."""
    tracker = _open_sessions.get()
    if tracker is not None:
        tracker.ended(session_id)


_write_fence_hook: ContextVar[Callable[[], None] | None] = ContextVar(
    "staccato_write_fence", default=None
)


def write_fence() -> None:
    """Drivers call this right before each write to a destination (each ``pwrite``
    block, each SFTP write request, each piece of an S3 part body): the hook raises
    when the running attempt may have lost its lease (it went without a heartbeat
    for about its heartbeat timeout, so Temporal may have retried it elsewhere), and
    the write must not happen. Let that error propagate."""
    hook = _write_fence_hook.get()
    if hook is not None:
        hook()


def write_fenced() -> bool:
    """Whether this context writes under a fence (a stream attempt's thread): transports
    that cannot take back bytes once sent (an SSH packet, an SFTP request) check the
    fence right before each send too, not only before each request."""
    return _write_fence_hook.get() is not None


@contextlib.contextmanager
def write_fence_hook(hook: Callable[[], None]) -> Iterator[None]:
    """Install ``hook`` as what :func:`write_fence` calls, for the duration of the block."""
    token = _write_fence_hook.set(hook)
    try:
        yield
    finally:
        _write_fence_hook.reset(token)


class Reader(abc.ABC):
    """A byte range of a pinned source version, read sequentially."""

    #: bytes received from the source so far (including any discarded to reach the offset)
    bytes_read: int = 0

    @abc.abstractmethod
    def readinto(self, buffer: memoryview) -> int:
        """Fill ``buffer`` with up to ``len(buffer)`` next bytes; 0 means end of range.

        Raises:
            SourceChangedError: the source no longer has the pinned version.
            IncompleteReadError, RetryableError: transient failures.
        """

    def readinto_full(self, buffer: memoryview) -> int:
        """Fill ``buffer`` completely unless the range ends first; returns bytes filled."""
        filled = 0
        while filled < len(buffer):
            n = self.readinto(buffer[filled:])
            if n == 0:
                break
            filled += n
            moved()  # bytes arrived: a verify's read-back is not hung (``status``)
        return filled

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the connection / file descriptor."""

    def __enter__(self) -> Reader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ChunkWriter(abc.ABC):
    """Writes chunks of one write session; used by one stream at a time."""

    #: :meth:`write_chunk` hands the kernel exactly the bytes it is given (the buffer
    #: the stream checksummed, which nothing changes until it returns) and returns only
    #: once the kernel reports them durable (``fdatasync``): reading them back at once
    #: would read those same pages from the page cache, so the stream's verify-on-write
    #: takes the in-memory checksum as the chunk's check instead of a second full read
    #: (docs/architecture.md, "Integrity of a written chunk"). Chunks copied without
    #: passing through the stream (:meth:`copy_chunk`) are still read back.
    checked_in_memory: bool = False

    def read_back(self, index: int, into: memoryview) -> None:
        """Read chunk ``index`` as written into ``into`` (exactly its length), for the
        stream's verify-on-write (only called when ``Driver.features.read_back``).

        Raises:
            RetryableError: the bytes could not be read.
        """
        raise UnsupportedError("this endpoint cannot read back unpublished data")

    def read_back_checksum(self, index: int, length: int, algorithm: str, into: memoryview) -> str:
        """Checksum in ``algorithm`` (hex) of chunk ``index`` (``length`` bytes) as
        written, read back through ``into`` (any size > 0; its bytes are overwritten).

        The default reads the chunk whole with :meth:`read_back` (``into`` must hold
        ``length`` bytes then); a writer that can read a range block by block
        overrides it to keep the bytes in the CPU cache between read and checksum.

        Raises:
            RetryableError: the bytes could not be read.
        """
        view = into[:length]
        self.read_back(index, view)
        return checksums.checksum_bytes(algorithm, view)

    @abc.abstractmethod
    def write_chunk(self, index: int, data: memoryview, checksum: str) -> None:
        """Write chunk ``index`` (its bytes ``data`` and source-side hex ``checksum``)
        and make it durable: once this returns, :meth:`Driver.durable_chunks` reports it.

        Raises:
            PermissionDeniedError, RetryableError, SourceChangedError: as the endpoint reports.
            WriteSessionLostError: the session is gone (deleted, or published or aborted by
                another attempt): a stale writer stops here; a live transfer opens a new
                session and copies again.
        """

    def write_partial(self, index: int, data: memoryview, checksum: str) -> bool:
        """Keep the first ``len(data)`` bytes of chunk ``index`` (fewer than the chunk's
        length) durably, with ``checksum``, the source-side hex checksum of exactly
        those bytes computed on this buffer before the write: a paused stream's chunk
        in flight, so the resumed stream reads only the rest of it from the source
        (:meth:`Driver.partial_chunk`). Called after the stream stopped (a pause),
        never for a chunk that is durable whole.

        Returns:
            True once the bytes and their record are durable; False where the endpoint
            cannot keep part of a chunk (the default; S3: a part is uploaded whole or
            not at all), and the resumed stream copies the chunk whole.

        Raises:
            StaccatoError: as :meth:`write_chunk` (the stream logs it and keeps nothing).
        """
        return False

    def part_tag(self, index: int) -> str | None:
        """What the store answered when this writer wrote chunk ``index`` (S3: the
        part's ETag, without quotes, lower case), for the stream's record of the parts
        it wrote (:func:`parts_digest`); None when the endpoint keeps no such tag (the
        default: file, SFTP) or the chunk was not written by this writer."""
        return None

    def copy_chunk(
        self,
        index: int,
        source: EndpointURL,
        info: ObjectInfo,
        offset: int,
        length: int,
        algorithm: str,
    ) -> str:
        """Server-side copy of ``source[offset:offset+length]`` (pinned to ``info.version``)
        into chunk ``index``, durable on return, no bytes through the worker.

        Only called when ``Driver.features.server_side_copy`` and
        :meth:`Driver.can_copy_from` said yes.

        Returns:
            The chunk's hex checksum in ``algorithm`` (as the store computed it), or
            ``""`` when the store does not report one (the stream then reads the range
            from the source to checksum it).
        """
        raise UnsupportedError("server-side copy is not supported by this endpoint")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""

    def __enter__(self) -> ChunkWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class WholeReads(abc.ABC):
    """Reads of whole small objects (:meth:`Driver.read_whole`) sent ahead
    (:meth:`Driver.whole_reads`). Used by one thread; :meth:`close` drops what was
    sent and not read."""

    @abc.abstractmethod
    def send(self, url: EndpointURL) -> None:
        """Send the read of ``url`` now (nothing when it cannot be sent ahead: then
        :meth:`read` reads it when asked)."""

    @abc.abstractmethod
    def read(self, url: EndpointURL) -> tuple[ObjectInfo, bytes] | None:
        """The object at ``url`` and its info, as :meth:`Driver.read_whole` returns
        them (from the read sent ahead, else read now).

        Raises:
            As :meth:`Driver.read_whole`.
        """

    @abc.abstractmethod
    def drop(self, url: EndpointURL) -> None:
        """Forget the read of ``url`` sent and not read (its answer is not waited for)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Drop every read sent and not read."""


@dataclass(frozen=True)
class Features:
    """What a driver can do beyond the required read side, declared in one place
    (the shape of rclone's ``fs.Features``); the contract suite checks each claim
    (``tests/contract/test_write_contract.py::test_declared_features_hold``).

    Attributes:
        write: the endpoint can be a destination (``open_session`` ... ``publish``).
        read_back: ``ChunkWriter.read_back`` returns a chunk as written and
            ``durable_chunks`` re-checks the bytes it reports, so a stream verifies each
            chunk as it writes it (verify-on-write).
        unpublished_readable: ``session_url`` names the unpublished data, so it can be
            verified before publish (a temp file; not an S3 multipart upload).
        stored_checksum: ``object_checksum`` answers from stored metadata (S3's
            full-object CRC32C) instead of reading the object back.
        server_side_copy: ``can_copy_from`` may say yes for some sources (chunks copied
            inside the store, no bytes through the worker).
        whole_get: ``read_whole`` reads a small object and its version in one request
            (one atomic response: the bytes are of one version by construction).
        whole_put: ``put_whole`` writes a small object in one atomic request the store
            checks against the CRC32C sent with it (nothing is visible unless all of it
            arrived as sent).
        reopens_by_key: ``open_session`` with a session key used before finds that
            session again (a temp name derived from the key), so a caller may keep it
            for a retry. Without it each call opens a new one (S3: a new multipart
            upload, known only by the id its answer carried): a caller giving up on a
            session it cannot hand on must abort it, or it is left behind.
    """

    write: bool = False
    read_back: bool = False
    unpublished_readable: bool = False
    stored_checksum: bool = False
    server_side_copy: bool = False
    whole_get: bool = False
    whole_put: bool = False
    reopens_by_key: bool = False


class Driver(abc.ABC):
    """One endpoint's protocol. Subclasses set ``scheme`` and ``features``."""

    scheme: ClassVar[str]
    #: what this driver can do beyond reading (see :class:`Features`)
    features: ClassVar[Features] = Features()

    def adjust_chunk_size(self, size: int, chunk_size: int) -> tuple[int, str | None]:
        """Chunk size this destination accepts for an object of ``size`` bytes.

        Returns:
            ``(chunk_size, note)``; ``note`` says why it changed (None if unchanged).
        """
        return chunk_size, None

    def can_copy_from(self, source: EndpointURL, destination: EndpointURL) -> bool:
        """Whether chunks of ``source`` can be copied into ``destination`` server-side
        (only asked when ``features.server_side_copy``; e.g. S3 UploadPartCopy on one
        endpoint, ``copy_file_range`` between local files)."""
        return False

    @abc.abstractmethod
    def stat(self, url: EndpointURL) -> ObjectInfo:
        """Size, version and range support of the object at ``url``.

        Raises:
            NotFoundError, NotAFileError, PermissionDeniedError, RetryableError.
        """

    @abc.abstractmethod
    def open_read(self, url: EndpointURL, info: ObjectInfo, offset: int, length: int) -> Reader:
        """A reader of ``[offset, offset+length)`` of the version pinned in ``info``."""

    def root_exists(self, root: EndpointURL) -> bool:
        """Whether the directory or prefix ``root``, whose listing found no object, is
        there all the same (an empty directory): True unless the endpoint can tell
        an empty root from a missing one only this way (S3: :class:`S3Driver`).

        Raises:
            PermissionDeniedError, RetryableError: as the endpoint reports.
        """
        return True

    def listed_objects(
        self, root: EndpointURL, names: Sequence[str], max_keys: int
    ) -> dict[str, ObjectInfo] | None:
        """The objects of ``names`` (relative to the directory or prefix ``root``) that
        exist, with what a listing tells of them (size, modification time, version),
        from one listing of the range they span, where that is cheaper than a stat each
        (S3: ListObjectsV2, up to 1,000 keys a request); None where the endpoint offers
        none (the default) or the range holds more than ``max_keys`` entries (the
        caller stats each name).

        Raises:
            StaccatoError: as the listing fails (the caller stats each name).
        """
        return None

    def list_page(
        self,
        root: EndpointURL,
        after: str | None,
        limit: int,
        *,
        fence: Sequence[EndpointURL] = (),
    ) -> ListPage:
        """One page of the objects under the directory or prefix ``root``
        (docs/architecture.md, "Listing a directory or prefix").

        Entries come in strictly increasing order of their relative name as UTF-8 bytes
        (S3 ListObjectsV2 order; an S3-compatible store that keeps keys in a file tree,
        such as SeaweedFS, lists ``/`` before every other character, consistently with
        its own ``StartAfter``), starting after ``after`` (S3 ``StartAfter``
        semantics), at most ``limit`` of them (fewer is not the end). The listing restarts from ``after``
        alone (no other state). Only objects are entries: directories are walked,
        empty ones leave no trace; a symbolic link to a file is followed; a broken
        link, a loop or an unreadable directory is an entry with ``error`` set.

        ``fence``: the dataset's destination roots. Where the endpoint has symbolic
        links (file, sftp), a link that resolves to one of them on this endpoint, or
        into one, or a directory reached through links whose real path is one, is not
        followed: an entry with ``error`` (:func:`~staccato.endpoints.listing.into_destination`),
        so a link to the destination root never copies the copy.

        Raises:
            NotFoundError: ``root`` does not exist.
            SourceRootNotADirectoryError: ``root`` is a file, not a directory (exit 2).
            UnsupportedError: the endpoint names single objects (http).
            PermissionDeniedError, RetryableError: as the endpoint reports.
        """
        raise UnsupportedError(
            f"cannot list {root}: {self.scheme} endpoints name single objects, not "
            "directories; name a file, or use a file, s3 or sftp source for a directory"
        )

    def leads_into(self, url: EndpointURL, fence: Sequence[EndpointURL]) -> str | None:
        """Why the source file ``url`` must not be copied because, through symbolic
        links, it is in one of the destination roots ``fence`` (the reason
        :meth:`list_page` gives such a link); None when it is not, or where the
        endpoint has no links (the default). ``--retry-failed`` asks it of the names
        it copies again.

        Raises:
            RetryableError: as the endpoint reports.
        """
        return None

    def check_destination(self, url: EndpointURL) -> None:
        """Fail early if ``url`` cannot be written (missing parent, not writable, what
        is there not replaceable: :meth:`check_target`...).

        Raises:
            UnsupportedError: the endpoint is read-only.
        """
        if not self.features.write:
            raise UnsupportedError(
                f"{url.scheme} endpoints can only be sources, not destinations: {url}"
            )

    def check_target(self, url: EndpointURL) -> None:  # noqa: B027 - optional hook
        """What is at the destination name ``url`` now, if anything, is what a copy
        there may replace: the copy's :meth:`check_destination` applies this rule, and
        a sync check (:func:`staccato.sync.compare`) applies it before comparing, so a
        destination the copy refuses is never judged up to date either (comparing
        through a symbolic link would judge the file it points to). Nothing to refuse
        by default (an S3 key names an object).

        Raises:
            NotAFileError: a directory.
            PermanentError: a symbolic link, a device, FIFO or socket.
            PermissionDeniedError, RetryableError: as the endpoint reports.
        """

    #: seconds the times :meth:`changed_at` tells may read earlier than the moment
    #: they mark on the worker's and the Temporal server's clocks: their granularity
    #: and the skew between the endpoint's clock and those (0: no such time told)
    change_time_slack_s: ClassVar[float] = 0.0

    def changed_at(self, url: EndpointURL) -> float | None:
        """When the object at the destination name ``url`` last changed, data or name
        (a publish, a rewrite, a touch all move it; nothing sets it back), seconds
        since the epoch on the endpoint's clock, up to :attr:`change_time_slack_s`
        early; None where the endpoint cannot tell (the default; SFTP: SFTP v3
        attributes carry no change time). A retried dataset batch tells by it the
        files its killed attempt published from those up to date before
        (:func:`staccato.activities.resume_counts.published_since`).

        Raises:
            NotFoundError: nothing is there.
            PermissionDeniedError, RetryableError: as the endpoint reports.
        """
        return None

    def check_directory_name(self, url: EndpointURL) -> None:  # noqa: B027 - optional hook
        """The directory of the destination ``url``, when it exists, is named by its real
        path (no symbolic link on the way), as the copy's :meth:`check_destination`
        requires: a sync check (:func:`staccato.sync.compare`) applies it before
        comparing, so a destination the copy refuses is never judged up to date by
        reading the file where the link leads. Nothing to refuse by default (an S3 key
        names no directory).

        Raises:
            PermanentError: named through a symbolic link (the words of
                :func:`staccato.errors.linked_directory_message`).
            RetryableError: as the endpoint reports.
        """

    def check_destination_root(self, root: EndpointURL) -> None:
        """Fail a dataset up front when nothing can be written under its destination
        directory or prefix ``root`` (rather than each of its files with the same
        reason): the S3 bucket is missing, a file stands where a directory above the
        root would be made. A root that does not exist yet is fine (made as files are
        written). Cheap: one or a few requests.

        Raises:
            UnsupportedError: the endpoint is read-only.
            DestinationMissingError: as above (names the bucket or the file).
            PermissionDeniedError, RetryableError: as the endpoint reports.
        """
        if not self.features.write:
            raise UnsupportedError(
                f"{root.scheme} endpoints can only be sources, not destinations: {root}"
            )

    def read_whole(self, url: EndpointURL, max_size: int) -> tuple[ObjectInfo, bytes] | None:
        """The object at ``url`` and its info in one request (``features.whole_get``);
        None when it is larger than ``max_size`` bytes (nothing read past the headers).

        Raises:
            NotFoundError, PermissionDeniedError, RetryableError: as ``stat`` and reads.
        """
        raise UnsupportedError(f"{self.scheme} endpoints cannot read an object in one request")

    def whole_reads(self, root: EndpointURL, max_size: int) -> WholeReads | None:
        """Reads of whole small objects under ``root`` sent ahead of their use, so one
        thread keeps several requests in flight (a dataset's batch reads the next
        files' objects while it writes this one); None when this endpoint offers none
        (the caller reads with :meth:`read_whole`, in threads of its own)."""
        return None

    def put_whole(self, url: EndpointURL, data: bytes, crc32c: str, marker: str) -> str:
        """Write ``data`` (its CRC32C ``crc32c``, 8 hex digits) as the object at ``url``
        in one atomic request (``features.whole_put``); ``marker`` names the writer
        (as a session key).

        Returns:
            The CRC32C of the stored object as the store's answer vouches for it (8
            hex digits): the one it says it stored, or ours when its answer proves it
            stored exactly the bytes sent (S3: an MD5 ETag equal to the body's MD5);
            ``""`` if the answer proves neither (the caller reads the object back).

        Raises:
            ChecksumMismatchError: the store received other bytes (nothing was stored).
            PermissionDeniedError, DestinationMissingError, RetryableError.
        """
        raise UnsupportedError(f"{self.scheme} endpoints cannot write an object in one request")

    def make_parents(self, url: EndpointURL) -> None:  # noqa: B027 - optional hook
        """Create the missing directories above ``url`` (a dataset's nested names);
        nothing to do where names hold no directories (S3, the default).

        Raises:
            NotAFileError: a directory to create exists as a file (another file of the
                dataset, or one there already); it is never replaced.
            PermissionDeniedError, RetryableError: as the endpoint reports.
        """

    def open_session(
        self, url: EndpointURL, size: int, chunk_size: int, session_key: str
    ) -> WriteSession:
        """Open (or re-open, idempotently for the same ``session_key``) a write session.

        ``session_key`` is unique per workflow run and per write session within it
        (:class:`staccato.models.PrepareInput`); it is not the transfer id, which is
        the same for every transfer to a destination.

        Raises:
            DestinationMissingError, PermissionDeniedError, NotAFileError, RetryableError.
        """
        raise UnsupportedError(
            f"{url.scheme} endpoints can only be sources, not destinations: {url}"
        )

    def remove_leftovers(self, url: EndpointURL, session_key: str) -> list[str]:
        """Remove the temp data that earlier Staccato runs to ``url`` left beside it
        (a failed run whose clean-up gave up or was cancelled), except session
        ``session_key``'s own; called by ``prepare``, under the destination's lock (no
        other Staccato transfer writes those names meanwhile). Only names of
        Staccato's temp-name pattern for exactly this target are touched
        (:func:`staccato.temp_names.leftover_pattern`). Returns the paths removed. Default: none (an S3
        multipart upload carries no mark telling Staccato's from another client's).

        Raises:
            StaccatoError: as the endpoint reports (the caller logs it and goes on).
        """
        return []

    def open_writer(self, session: WriteSession) -> ChunkWriter:
        """A chunk writer for ``session``."""
        raise UnsupportedError(f"{self.scheme} endpoints cannot be written")

    def durable_chunks(
        self, session: WriteSession, first_chunk: int = 0, end_chunk: int | None = None
    ) -> dict[int, str]:
        """Chunks the destination holds durably for ``session``: index -> source checksum
        (hex, in the transfer's algorithm), or ``""`` when the destination holds the chunk
        but cannot tell its checksum (the stream re-reads that chunk from the source to
        checksum it, without writing it again).

        ``[first_chunk, end_chunk)`` (``None``: to the last chunk) is the range the
        caller needs (a stream's segment): a driver whose check costs work per chunk
        checks only those and calls :func:`keepalive` as it goes; others may ignore it
        and report more."""
        raise UnsupportedError(f"{self.scheme} endpoints cannot be written")

    def durable_chunk_matches(
        self, session: WriteSession, index: int, data: memoryview, reported: str
    ) -> bool:
        """Whether the chunk ``index`` the destination holds is ``data`` (the chunk read
        again from the source), for a chunk :meth:`durable_chunks` reported with
        ``reported``, a value that is not a checksum in the transfer's algorithm (the
        stream re-reads such chunks from the source). False: the stream writes the chunk
        again from ``data`` (it does not trust what the destination holds).

        The default is True: a driver whose :meth:`durable_chunks` checks the bytes
        itself (file, SFTP journals) reports only chunks that hold what was written. An
        S3 part can be replaced under its upload by anyone holding the upload id (same
        part number, other bytes), and S3 cannot read an unpublished part back: the S3
        driver compares what ListParts says of the part with ``data``."""
        return True

    def listed_tag(self, reported: str) -> str | None:
        """The tag (:meth:`ChunkWriter.part_tag`) in what :meth:`durable_chunks`
        reported of a chunk, for a stream that accepted that chunk without writing it
        (:meth:`durable_chunk_matches`); None when the endpoint keeps no tags (the
        default)."""
        return None

    def recheck_earlier_chunks(self, session: WriteSession) -> tuple[dict[int, str], int]:
        """Before publish: read back the chunks of ``session`` that an earlier attempt
        or process made durable (a worker killed or stopped, a service that was down)
        and that this attempt's verify-on-write therefore does not vouch for, and
        compare each with its recorded checksum.

        Returns:
            (damaged chunk index -> its recorded source checksum, bytes read back).
            The default: nothing to re-check (destinations that check otherwise: SFTP's
            server-side hash of the temp file; S3 compares each listed part with the
            source chunk on resume, :meth:`durable_chunk_matches`).

        Raises:
            StaccatoError: the destination could not be read.
        """
        return {}, 0

    def partial_chunk(self, session: WriteSession, index: int, into: memoryview) -> int:
        """The prefix of chunk ``index`` a paused stream kept
        (:meth:`ChunkWriter.write_partial`), read back from the destination into the
        start of ``into`` (the stream's chunk buffer) and checked against the checksum
        recorded with it, so the resumed stream reads only the rest of the chunk from
        the source and checksums the whole chunk over the bytes in ``into``.

        Returns:
            The bytes of the prefix now in ``into`` (0: none kept, or its bytes no
            longer match their checksum, or the endpoint cannot keep part of a chunk,
            the default).

        Raises:
            StaccatoError: the destination could not be read.
        """
        return 0

    def session_url(self, session: WriteSession) -> str | None:
        """A URL this driver can read the session's unpublished bytes from (a temp
        file), so they can be verified *before* publish; None when the endpoint cannot
        read an unfinished write (an S3 multipart upload)."""
        return None

    def publish(
        self, session: WriteSession, parts: Sequence[tuple[int, int, str]] | None = None
    ) -> None:
        """Atomically make the destination name hold the complete object.

        ``parts``: (first chunk, end chunk, :func:`parts_digest`) of each segment
        whose stream recorded the tags of its parts (:attr:`StreamResult.parts`); a
        driver that keeps tags (S3) publishes only if the parts it would publish still
        have them (else ``WriteSessionLostError``); others ignore it.

        Idempotent: publishing an already published session succeeds.
        """
        raise UnsupportedError(f"{self.scheme} endpoints cannot be written")

    def abort(self, session: WriteSession) -> None:
        """Discard the session's temp data. Idempotent; the destination name is untouched."""
        raise UnsupportedError(f"{self.scheme} endpoints cannot be written")

    def abort_orphaned_sessions(
        self,
        urls: Iterable[EndpointURL],
        since: float,
        until: float,
        keep: Collection[str] = (),
    ) -> int:
        """Abort the write sessions on exactly these destinations that were opened
        between ``since`` and ``until`` (Unix seconds) and that no one can find again by
        key, but those whose ids are in ``keep``: what an attempt killed mid-file
        (SIGKILL, no clean-up) left behind, found by its retry, or what a request
        whose answer was lost opened (its retry opened another). Only for drivers whose
        sessions do not reopen by key (``Features.reopens_by_key`` False: an S3
        multipart upload); the others reopen a session by its key and abort it. The
        caller must hold the destinations' lock (so every such session in the interval
        is one of its earlier attempts').

        Returns:
            How many sessions were aborted.
        """
        return 0

    def object_checksum(
        self,
        url: EndpointURL,
        size: int,
        chunk_size: int,
        segments: Iterable[tuple[int, int]],
        algorithm: str,
        info: ObjectInfo | None = None,
    ) -> str:
        """Checksum of the whole published object computed the way transfers compute it:
        per chunk, combined per segment ``(first_chunk, end_chunk)``, then per object.

        The default reads the object back (:meth:`segments_checksum`); drivers with
        stored checksums override it. ``info``: the object's stat when the caller has
        it (not asked again; the reads are pinned to its version), else a fresh one.
        """
        return self.segments_checksum(url, size, chunk_size, segments, algorithm, info)

    def segments_checksum(
        self,
        url: EndpointURL,
        size: int,
        chunk_size: int,
        segments: Iterable[tuple[int, int]],
        algorithm: str,
        info: ObjectInfo | None = None,
    ) -> str:
        """Combined checksum of the given consecutive-chunk segments, read back from
        the object at ``url`` (each segment with its own ranged read, so several
        activities can verify one object in parallel). Calls :func:`keepalive` per
        chunk.

        Args:
            info: the version to pin the reads to (raises ``SourceChangedError`` if the
                object no longer has it); default: what a fresh ``stat`` says.
        """
        if info is None:
            info = self.stat(url)
        segment_digests: list[tuple[str, int]] = []
        for first, end in segments:
            parts = self.chunk_checksums(url, info, size, chunk_size, first, end, algorithm)
            segment_digests.append((checksums.combine(algorithm, parts), sum(n for _, n in parts)))
        return checksums.combine(algorithm, segment_digests)

    def chunk_checksums(
        self,
        url: EndpointURL,
        info: ObjectInfo,
        size: int,
        chunk_size: int,
        first: int,
        end: int,
        algorithm: str,
    ) -> list[tuple[str, int]]:
        """``(hex checksum, length in bytes)`` of each chunk in ``[first, end)`` of the
        object at ``url``, read back with one ranged read pinned to ``info``. Calls
        :func:`keepalive` per chunk."""
        offset = first * chunk_size
        length = min(size, end * chunk_size) - offset
        buffer = memoryview(bytearray(min(chunk_size, max(size, 1))))
        parts: list[tuple[str, int]] = []
        with self.open_read(url, info, offset, length) as reader:
            for index in range(first, end):
                _, chunk_length = chunk_bounds(index, size, chunk_size)
                view = buffer[:chunk_length]
                filled = reader.readinto_full(view)
                keepalive()
                parts.append((checksums.checksum_bytes(algorithm, view[:filled]), filled))
                read_back(filled)
        return parts
