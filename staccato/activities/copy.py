"""The ``copy_stream`` activity: copy one segment's chunks, checkpointing as it goes.

Resume (docs/architecture.md, "Invariants"): heartbeat details lag real progress (the SDK
throttles heartbeats), so a retried stream asks the destination which chunks are
durable (file journal, S3 ListParts) and copies only the others. Chunk writes are
positional, so a chunk written twice is harmless. After a hard kill at most the
chunk in flight per stream is sent again.

A destination may hold a chunk without knowing its checksum (S3 stores whose
ListParts reports no part checksums, a server-side copy without one): such a chunk
is read from the source once more to checksum it, and not written again.

Memory: one chunk-sized buffer per stream, whatever the object size.

Stalls: while a stream waits for its source (drivers call ``keepalive`` during long
waits), a minimum-throughput watchdog compares the bytes the source delivered with
``STACCATO_MIN_RATE_BYTES_PER_S`` over the last ``STACCATO_MIN_RATE_WINDOW_S`` of
reading time and fails the attempt with a retryable error naming the source and the
rate seen (so it shows in ``status`` as the last retry error); time spent writing to
the destination does not count against the source. A heartbeat that cannot be sent,
or a cancel (a pause, or Temporal giving up on the attempt), stops the stream at its
next heartbeat. And should the stream block in a call that never comes back (a
driver waiting without ``keepalive``), a guard thread interrupts it once no heartbeat
has been possible for the heartbeat timeout: by then Temporal has given up on the
attempt and started another, and this one must let go of its process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator
from types import FrameType

from pydantic import ValidationError
from temporalio import activity

from staccato import checksums, secrets, settings
from staccato.activities.errors import mapped_errors
from staccato.activities.transfer import check_file_roots
from staccato.endpoints import get_driver
from staccato.endpoints.base import ChunkWriter, Reader, keepalive_hook
from staccato.errors import RetryableError
from staccato.models import Checkpoint, StreamInput, StreamResult
from staccato.plan import chunk_bounds
from staccato.urls import parse_url, redact

_HEARTBEAT_EVERY_S = 0.5
log = logging.getLogger("staccato.stream")


class _Stopped(Exception):
    """The activity was cancelled (pause) or the worker is going away."""


class _Abandoned(RetryableError):
    """Raised in a stream blocked past its heartbeat timeout (see :class:`_Guard`)."""


class _Guard:
    """Interrupts the stream's (main) thread when it has not reached a heartbeat for
    ``limit_s`` seconds: Temporal has then timed the attempt out (no heartbeat for the
    heartbeat timeout) and retried it, so nobody waits for this one, but its process
    stays taken until the blocked call returns, and a worker has few processes.

    The interrupt is ``SIGUSR2`` sent to the main thread: its handler raises
    :class:`_Abandoned` there, a blocked system call (``recv``, ``read``, a lock wait)
    returning with ``EINTR`` first (PEP 475). It is repeated every ``_GUARD_TICK_S``
    while the thread stays blocked (a broad ``except`` in a driver may swallow one).
    It is deferred while the thread talks to the worker's shared state manager
    (heartbeat, cancel check), whose connection an interrupt would leave unusable.
    The handler stays installed once set and does nothing unless a guard is armed,
    so a signal that arrives late never disturbs the process's next activity.
    """

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self.touched = time.monotonic()
        self.armed = True
        self.shielded = False
        self.pending = False
        self.message = ""
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._main = threading.main_thread().ident
        self._thread = threading.Thread(target=self._watch, name="stream-guard", daemon=True)

    def touch(self) -> None:
        """The stream reached a heartbeat point (it is not blocked)."""
        self.touched = time.monotonic()

    @contextlib.contextmanager
    def shield(self) -> Iterator[None]:
        """Defer interrupts for the block (a call to the shared state manager)."""
        self.shielded = True
        try:
            yield
        finally:
            self.shielded = False
        if self.pending:
            self.pending = False
            raise _Abandoned(self.message)

    def _watch(self) -> None:
        while not self._stop.wait(_GUARD_TICK_S):
            idle = time.monotonic() - self.touched
            if idle < self.limit_s:
                continue
            with self._lock:
                if not self.armed:
                    return
                self.message = (
                    f"stream attempt abandoned: blocked for {idle:.0f} s without a heartbeat "
                    f"(heartbeat timeout {self.limit_s:g} s), so Temporal has retried it; "
                    "stopping it to free its worker process"
                )
                log.warning("%s", self.message)
                assert self._main is not None
                signal.pthread_kill(self._main, signal.SIGUSR2)

    def disarm(self) -> None:
        with self._lock:
            self.armed = False
        self._stop.set()


_GUARD_TICK_S = 0.5
_guard: _Guard | None = None  # the armed guard of this process's running stream


def _on_guard_signal(signum: int, frame: FrameType | None) -> None:
    guard = _guard
    if guard is None or not guard.armed:
        return
    if guard.shielded:
        guard.pending = True
        return
    raise _Abandoned(guard.message)


@contextlib.contextmanager
def _guarded(limit_s: float | None) -> Iterator[_Guard | None]:
    """Run the block under a :class:`_Guard` of ``limit_s`` seconds (the attempt's
    heartbeat timeout). Only in a process's main thread (an activity process of the
    worker's pool); elsewhere, and without a heartbeat timeout, unguarded."""
    global _guard
    if not limit_s or threading.current_thread() is not threading.main_thread():
        yield None
        return
    if signal.getsignal(signal.SIGUSR2) is not _on_guard_signal:
        signal.signal(signal.SIGUSR2, _on_guard_signal)
    guard = _Guard(limit_s)
    _guard = guard
    guard._thread.start()
    try:
        yield guard
    finally:
        guard.disarm()
        _guard = None


def _touch() -> None:
    guard = _guard
    if guard is not None:
        guard.touch()


class _RateWatchdog:
    """Fails a stream whose source is slower than a minimum rate.

    Time counts only while the stream reads from its source (``reading(True)``); the
    rate is the bytes delivered over the last ``window_s`` of that time.

    Args:
        source: the source URL as shown in messages (query values redacted).
        min_rate: bytes per second; 0 turns the watchdog off.
        window_s: seconds of reading time the rate is averaged over.
    """

    def __init__(self, source: str, min_rate: float, window_s: float) -> None:
        self._source = source
        self._min_rate = min_rate
        self._window_s = window_s
        self._clock = 0.0  # seconds spent reading, up to the start of the current spell
        self._since: float | None = None  # monotonic start of the current reading spell
        self._samples: deque[tuple[float, int]] = deque()  # (reading clock, bytes read)

    def reading(self, active: bool) -> None:
        """Start (True) or stop (False) counting time against the source."""
        now = time.monotonic()
        if active and self._since is None:
            self._since = now
        elif not active and self._since is not None:
            self._clock += now - self._since
            self._since = None

    def check(self, source_bytes: int) -> None:
        """Record that the source has delivered ``source_bytes`` so far.

        Raises:
            RetryableError: over the last window the source delivered less than the
                minimum rate; the message names the source, the rate and the settings.
        """
        if self._since is None or self._min_rate <= 0:
            return
        clock = self._clock + time.monotonic() - self._since
        samples = self._samples
        samples.append((clock, source_bytes))
        while len(samples) >= 2 and samples[1][0] <= clock - self._window_s:
            samples.popleft()
        first_clock, first_bytes = samples[0]
        span = clock - first_clock
        if span < self._window_s:
            return
        rate = (source_bytes - first_bytes) / span
        if rate < self._min_rate:
            raise RetryableError(
                f"source {self._source} is too slow: it delivered "
                f"{source_bytes - first_bytes} bytes in the last {span:.0f} s "
                f"({rate:.0f} bytes/s), below the minimum of {self._min_rate:.0f} bytes/s "
                f"over {self._window_s:g} s (worker settings STACCATO_MIN_RATE_BYTES_PER_S, "
                "STACCATO_MIN_RATE_WINDOW_S); retrying"
            )


class _StreamProgress:
    """Tracks a stream's progress and heartbeats it, at most every 0.5 s; runs the
    source's :class:`_RateWatchdog` at each heartbeat."""

    def __init__(
        self,
        segment: int,
        bytes_done: int,
        next_chunk: int,
        watchdog: _RateWatchdog | None = None,
    ) -> None:
        self.segment = segment
        self.watchdog = watchdog
        self.reader: Reader | None = None  # the source reader in use, for the watchdog
        self._closed_readers_bytes = 0
        self.bytes_done = bytes_done
        self.next_chunk = next_chunk
        self.bytes_read = 0
        self.in_flight = 0  # bytes of the chunk being read, not yet written
        self._copied = 0
        self._started = time.monotonic()
        self._last_beat = 0.0
        self._parent = os.getppid()

    def add(self, copied: int, read: int) -> None:
        self.bytes_done += copied
        self.in_flight = 0
        self._copied += copied
        self.bytes_read += read

    def reading(self, active: bool) -> None:
        """The stream starts (True) or stops (False) waiting on its source."""
        if self.watchdog is not None:
            self.watchdog.reading(active)

    def beat(self, force: bool = False) -> None:
        """Heartbeat if due.

        Raises:
            _Stopped: cancellation was requested, the heartbeat could not be sent, or
                the worker process is gone.
            RetryableError: the source is below its minimum rate (:class:`_RateWatchdog`).
        """
        now = time.monotonic()
        _touch()
        if not force and now - self._last_beat < _HEARTBEAT_EVERY_S:
            return
        self._last_beat = now
        if os.getppid() != self._parent:
            # The worker process died: this is a stale writer, stop now.
            raise _Stopped("worker process is gone")
        elapsed = max(now - self._started, 1e-6)
        _heartbeat(
            Checkpoint(
                segment=self.segment,
                next_chunk=self.next_chunk,
                bytes_done=self.bytes_done + self.in_flight,
                rate_bytes_per_s=round((self._copied + self.in_flight) / elapsed, 1),
                bytes_read=self.bytes_read,
            )
        )
        if self.watchdog is not None:
            self.watchdog.check(self.source_bytes())

    def source_bytes(self) -> int:
        """Bytes received from the source so far, including those of the open reader
        not yet in a chunk (and any it skipped to reach its offset)."""
        reader = self.reader
        return self._closed_readers_bytes + (reader.bytes_read if reader is not None else 0)

    def reader_opened(self, reader: Reader) -> None:
        self.reader = reader

    def reader_closed(self) -> None:
        if self.reader is not None:
            self._closed_readers_bytes += self.reader.bytes_read
        self.reader = None


def _heartbeat(*details: object) -> None:
    """Send a heartbeat, then check for cancellation.

    Raises:
        _Stopped: the activity was cancelled (a pause; Temporal gave up on the attempt,
            e.g. its heartbeat timed out and the server no longer knows it), or the
            heartbeat could not be handed to the worker (its process or the shared
            state manager is gone): either way nobody waits for this attempt's result.
    """
    guard = _guard
    try:
        with guard.shield() if guard is not None else contextlib.nullcontext():
            activity.heartbeat(*details)
            cancelled = activity.is_cancelled()
    except _Abandoned:
        raise
    except Exception as err:  # the worker's manager process is gone or broken
        log.warning(
            "stream stops: its heartbeat could not be sent (%s: %s)", type(err).__name__, err
        )
        raise _Stopped("heartbeat failed") from None
    if cancelled:
        raise _Stopped("cancelled")


def _previous_checkpoint() -> Checkpoint | None:
    details = activity.info().heartbeat_details
    if not details:
        return None
    try:
        return Checkpoint.model_validate(details[0])
    except ValidationError:
        return None  # an older schema: the destination's durable set still tells the truth


@activity.defn(name="copy_stream")
@mapped_errors
def copy_stream(request: StreamInput) -> StreamResult:
    """Copy the chunks of ``request.segment`` that the destination does not hold yet.

    Returns:
        ``complete=True`` and the segment checksum when every chunk is durable;
        ``complete=False`` with the first missing chunk when cancelled (pause).

    Raises:
        ApplicationError: a mapped :mod:`staccato.errors` error (see ``mapped_errors``).
    """
    check_file_roots(request.source, request.session.url)
    waiting = _Waiting()
    timeout = activity.info().heartbeat_timeout
    # A driver may wait before the first chunk (e.g. for an SFTP connection slot): it
    # calls base.keepalive(), which heartbeats here so the attempt is not timed out.
    with (
        _guarded(timeout.total_seconds() if timeout else None),
        keepalive_hook(waiting.beat),
    ):
        try:
            return _copy_segment(request, waiting)
        except _Stopped:  # cancelled while a driver waited, before the stream began
            return StreamResult(
                segment=request.segment.index,
                complete=False,
                next_chunk=request.segment.first_chunk,
            )


class _Waiting:
    """Heartbeats while a driver waits: the stream's progress once it exists, else the
    previous attempt's checkpoint unchanged (at most every 0.5 s)."""

    def __init__(self) -> None:
        self.progress: _StreamProgress | None = None
        self._last_beat = 0.0

    def beat(self) -> None:
        if self.progress is not None:
            self.progress.beat()
            return
        _touch()
        now = time.monotonic()
        if now - self._last_beat < _HEARTBEAT_EVERY_S:
            return
        self._last_beat = now
        _heartbeat(*activity.info().heartbeat_details)


def _copy_segment(request: StreamInput, waiting: _Waiting) -> StreamResult:
    """The body of :func:`copy_stream`."""
    segment = request.segment
    session = request.session
    algorithm = request.checksum.value
    source_url = secrets.source_url(request.source, request.source_secret)
    destination_url = parse_url(session.url)
    source = get_driver(source_url.scheme)
    source_info = request.source_info
    destination = get_driver(destination_url.scheme)

    checkpoint = _previous_checkpoint()
    durable = {
        index: digest
        for index, digest in destination.durable_chunks(
            session, segment.first_chunk, segment.end_chunk
        ).items()
        if segment.first_chunk <= index < segment.end_chunk
    }
    todo = [i for i in range(segment.first_chunk, segment.end_chunk) if i not in durable]
    rehash = {i for i, digest in durable.items() if not _is_digest(algorithm, digest)}
    done_bytes = sum(chunk_bounds(i, session.size, session.chunk_size)[1] for i in durable)
    config = settings.current()
    watchdog = _RateWatchdog(
        redact(request.source), config.min_rate_bytes_per_s, config.min_rate_window_s
    )
    progress = _StreamProgress(
        segment.index, done_bytes, todo[0] if todo else segment.end_chunk, watchdog
    )
    waiting.progress = progress
    if checkpoint is not None or durable:
        activity.logger.info(
            "segment %d resumes: %d of %d chunks durable (heartbeat said next chunk %s)",
            segment.index,
            len(durable),
            segment.end_chunk - segment.first_chunk,
            checkpoint.next_chunk if checkpoint else None,
        )

    # verify-on-write: each chunk is read back right after it is durable (still in the
    # page cache / close in time) instead of in a separate pass over the whole object
    read_back = request.read_back and destination.can_read_back
    server_side = bool(todo) and destination.can_copy_from(source_url, destination_url)
    buffer = memoryview(bytearray(session.chunk_size)) if todo or rehash else memoryview(b"")
    try:
        progress.beat(force=True)
        with destination.open_writer(session) if todo else _NoWriter() as writer:
            if server_side:
                for index in todo:
                    offset, length = chunk_bounds(index, session.size, session.chunk_size)
                    durable[index] = writer.copy_chunk(
                        index, source_url, source_info, offset, length, algorithm
                    )
                    if not _is_digest(algorithm, durable[index]):
                        rehash.add(index)  # the store did not say: checksum the source range
                    elif read_back:
                        _check_read_back(writer, index, buffer[:length], algorithm, durable[index])
                    progress.next_chunk = index + 1
                    progress.add(length, 0)
                    progress.beat()
                todo = []
            for run_start, run_end in _runs(sorted(rehash.union(todo))):
                first_offset = chunk_bounds(run_start, session.size, session.chunk_size)[0]
                last_offset, last_length = chunk_bounds(
                    run_end - 1, session.size, session.chunk_size
                )
                progress.reading(True)
                with source.open_read(
                    source_url,
                    source_info,
                    first_offset,
                    last_offset + last_length - first_offset,
                ) as reader:
                    progress.reader_opened(reader)
                    for index in range(run_start, run_end):
                        _, length = chunk_bounds(index, session.size, session.chunk_size)
                        view = buffer[:length]
                        before = reader.bytes_read
                        filled = 0
                        progress.reading(True)
                        while filled < length:
                            n = reader.readinto(view[filled:])
                            if n == 0:
                                raise RetryableError(
                                    f"{redact(request.source)} ended at byte "
                                    f"{index * session.chunk_size + filled}, expected {session.size}"
                                )
                            filled += n
                            progress.in_flight = filled  # shown as progress, not yet durable
                            progress.beat()
                        progress.reading(False)  # writing is the destination's time
                        digest = checksums.checksum_bytes(algorithm, view)
                        if index in rehash:
                            durable[index] = digest  # durable already: checksum only
                            progress.add(0, reader.bytes_read - before)
                            progress.beat()
                            continue
                        writer.write_chunk(index, view, digest)
                        if read_back:
                            _check_read_back(writer, index, view, algorithm, digest)
                        durable[index] = digest
                        progress.next_chunk = index + 1
                        progress.add(length, reader.bytes_read - before)
                        progress.beat()
                progress.reader_closed()
    except _Stopped:
        missing = [i for i in range(segment.first_chunk, segment.end_chunk) if i not in durable]
        return StreamResult(
            segment=segment.index,
            complete=False,
            next_chunk=missing[0] if missing else segment.end_chunk,
            bytes_done=progress.bytes_done,
            bytes_read=progress.bytes_read,
        )
    parts = [
        (durable[i], chunk_bounds(i, session.size, session.chunk_size)[1])
        for i in range(segment.first_chunk, segment.end_chunk)
    ]
    return StreamResult(
        segment=segment.index,
        complete=True,
        next_chunk=segment.end_chunk,
        bytes_done=segment.length,
        checksum=checksums.combine(algorithm, parts),
        bytes_read=progress.bytes_read,
        verified=read_back and not rehash,
    )


def _check_read_back(
    writer: ChunkWriter, index: int, view: memoryview, algorithm: str, expected: str
) -> None:
    """Read chunk ``index`` back from the destination (into ``view``, whose bytes are
    then overwritten) and compare its checksum with the source's.

    Raises:
        RetryableError: they differ; the retried stream's ``durable_chunks`` drops the
            chunk (its bytes no longer match the journaled checksum) and copies it again.
    """
    writer.read_back(index, view)
    actual = checksums.checksum_bytes(algorithm, view)
    if actual != expected:
        raise RetryableError(
            f"chunk {index} read back from the destination has checksum {actual}, the "
            f"source's is {expected}; copying it again"
        )


def _is_digest(algorithm: str, digest: str) -> bool:
    """Whether ``digest`` is a hex digest of ``algorithm`` (a destination that cannot
    tell a chunk's checksum reports ``""``, or one in another algorithm)."""
    return len(digest) == len(checksums.checksum_bytes(algorithm, b"")) and all(
        c in "0123456789abcdef" for c in digest
    )


def _runs(indexes: list[int]) -> list[tuple[int, int]]:
    """Group sorted chunk indexes into ``(first, end)`` runs of consecutive chunks."""
    runs: list[tuple[int, int]] = []
    for index in indexes:
        if runs and runs[-1][1] == index:
            runs[-1] = (runs[-1][0], index + 1)
        else:
            runs.append((index, index + 1))
    return runs


class _NoWriter(ChunkWriter):
    """Stands in for a writer when every chunk is durable already (nothing to open)."""

    def write_chunk(self, index: int, data: memoryview, checksum: str) -> None:  # pragma: no cover
        raise AssertionError("no chunks to write")
