"""The ``copy_stream`` activity: copy one segment's chunks, checkpointing as it goes.

Resume (docs/architecture.md, "Invariants"): heartbeat details lag real progress (the SDK
throttles heartbeats), so a retried stream asks the destination which chunks are
durable (file journal, S3 ListParts) and copies only the others. Chunk writes are
positional, so a chunk written twice is harmless. After a hard kill at most the
chunk in flight per stream is sent again.

A pause inside a chunk keeps the bytes of it read so far where the destination can
hold part of a chunk (``ChunkWriter.write_partial``: a local file, SFTP); the resumed
stream reads them back, checks them (``Driver.partial_chunk``) and reads only the rest
from the source (docs/architecture.md, "A pause inside a chunk").

A destination may hold a chunk without knowing its checksum (S3 stores whose
ListParts reports no part checksums, a server-side copy without one): such a chunk
is read from the source once more to checksum it, and not written again.

Memory: one chunk-sized buffer per stream, whatever the object size (page-aligned,
so a file destination can write it with direct I/O), reserved against the worker
process's budget first (:mod:`staccato.activities.capacity`).

Heartbeats, the minimum-rate watchdog and stopping on a cancel:
:mod:`staccato.activities.stream_progress`; freeing a process whose stream is blocked
for good: :mod:`staccato.activities.stream_guard`; no write after the attempt may
have lost its segment (a frozen process woken up): :mod:`staccato.activities.stream_lease`.
"""

from __future__ import annotations

import mmap
import time
from collections.abc import Callable
from typing import Any

from temporalio import activity

from staccato import checksums, host_cpu, secrets, settings, sockets
from staccato.activities import capacity
from staccato.activities.errors import mapped_errors
from staccato.activities.liveness import send_heartbeat
from staccato.activities.pacing import Pacer, group_key, own_key, slot_key
from staccato.activities.retry_deadline import progressed, within_retry_for
from staccato.activities.staging import StagedSource, staged_source
from staccato.activities.stream_guard import guarded, touch
from staccato.activities.stream_lease import leased
from staccato.activities.stream_progress import (
    HEARTBEAT_EVERY_S,
    RateWatchdog,
    StreamProgress,
    StreamStopped,
    WaitingBeat,
    heartbeat,
    previous_checkpoint,
    stopped_by_shutdown,
    worker_stopping,
)
from staccato.activities.transfer import check_file_roots
from staccato.endpoints import get_driver
from staccato.endpoints.base import (
    ChunkWriter,
    Driver,
    Reader,
    keepalive_hook,
    moved,
    moving_elsewhere,
    parts_digest,
)
from staccato.errors import (
    AuthenticationRefusedError,
    RetryableError,
    SealKeyMissingError,
    StaccatoError,
    WorkerStoppingError,
)
from staccato.models import Checkpoint, StreamInput, StreamResult
from staccato.plan import chunk_bounds
from staccato.urls import parse_url, redact

#: seconds a stopped stream may wait for its destination (e.g. an SFTP connection slot)
#: to keep the start of its chunk in flight before it gives up keeping it
KEEP_PARTIAL_WAIT_S = 30.0


def _previous_progress_at() -> float | None:
    checkpoint = previous_checkpoint()
    return checkpoint.progress_at if checkpoint is not None else None


def _previous_reached_at() -> float | None:
    """When the stream last got further than before, in an earlier attempt (its
    checkpoint's ``reached_at``, Unix seconds), or None: the hang watch counts
    ``--retry-for`` from it."""
    checkpoint = previous_checkpoint()
    return checkpoint.reached_at if checkpoint is not None else None


def _stream_endpoints(request: StreamInput) -> str:
    return f"copying {redact(request.source)} to {redact(request.session.url)}"


def _refused_after_authenticating(err: AuthenticationRefusedError) -> RetryableError:
    """A copy stream's authentication refusal, retryable: the transfer's ``stat`` and
    ``prepare`` authenticated to its source and destination before any stream ran, so
    the credentials worked for this transfer and this worker's do not (one worker
    rolled out with a wrong key); the next attempt may run on a worker whose do. Given
    up as any retryable failure once ``--retry-for`` passes without progress
    (:mod:`staccato.activities.retry_deadline`)."""
    return RetryableError(
        f"authentication refused for {err.who} by this worker (it worked for an earlier "
        f"step of this transfer: a worker with other credentials may take the next "
        f"attempt, within --retry-for): {err}"
    )


def _key_missing_after_stat(err: SealKeyMissingError) -> RetryableError:
    """A copy stream's missing seal key, retryable: the transfer's ``stat`` opened the
    source's sealed query before any stream ran, so a worker of this task queue has
    the key and this one does not (a second ``staccato up`` with another
    ``STACCATO_HOME`` joined the server with a key of its own: tester63); the next
    attempt may run on a worker that has it. Given up as any retryable failure once
    ``--retry-for`` passes without progress."""
    return RetryableError(
        f"this worker lacks key {err.key_id}, which opened the transfer's source for an "
        "earlier step: a worker with the key may take the next attempt, within "
        f"--retry-for: {err}"
    )


@activity.defn(name="copy_stream")
@within_retry_for(
    _previous_progress_at, watch_hangs=_stream_endpoints, previous_reached=_previous_reached_at
)
@mapped_errors
def copy_stream(request: StreamInput) -> StreamResult:
    """Copy the chunks of ``request.segment`` that the destination does not hold yet.

    Returns:
        ``complete=True`` and the segment checksum when every chunk is durable;
        ``complete=False`` with the first missing chunk when cancelled (pause); its
        ``bytes_done`` counts the start of the chunk in flight where the destination
        kept it (:meth:`_SegmentCopy.keep_partial`).
        A stream its worker's shutdown stopped raises instead (below).

    Raises:
        ApplicationError: a mapped :mod:`staccato.errors` error (see ``mapped_errors``);
            a retryable one non-retryable once ``request.retry_for_s`` passed without
            the segment's durable bytes growing (:mod:`staccato.activities.retry_deadline`);
            a retryable ``WorkerStopping`` one when the worker shuts down (a graceful
            stop), after heartbeating the stream's last checkpoint: the attempt stays
            pending with it and is retried at once on the next worker.
    """
    check_file_roots(request.source, request.session.url)
    sockets.use(request.socket_buffer, request.stream_rate)  # this stream's connections
    waiting = WaitingBeat()
    info = activity.info()
    timeout = info.heartbeat_timeout
    # A driver may wait before the first chunk (e.g. for an SFTP connection slot): it
    # calls base.keepalive(), which heartbeats here so the attempt is not timed out.
    with (
        guarded(timeout.total_seconds() if timeout else None),
        # from the attempt's start on the server: one handed to a frozen worker's poll
        # and run when it wakes is stale (stream_lease)
        leased(timeout.total_seconds() if timeout else None, info.started_time),
        keepalive_hook(waiting.beat),
    ):
        try:
            with capacity.reserved(
                _buffer_bytes(request), request.segment.index, _waiting_for_capacity(request)
            ):
                try:
                    return _copy_segment(request, waiting)
                except AuthenticationRefusedError as err:
                    raise _refused_after_authenticating(err) from None
                except SealKeyMissingError as err:
                    raise _key_missing_after_stat(err) from None
        except StreamStopped:  # cancelled while a driver waited, before the stream began
            if worker_stopping():
                # not a pause: the attempt stays pending with its checkpoint (a result
                # would take the stream off the pending list, and with it its bytes,
                # until a worker replays the run)
                raise stopped_by_shutdown(None) from None
            return StreamResult(
                segment=request.segment.index,
                complete=False,
                next_chunk=request.segment.first_chunk,
            )
        except WorkerStoppingError:
            raise  # no endpoint's fault: not counted, no bytes to add (its checkpoint has them)
        except (StaccatoError, OSError) as err:
            if not isinstance(err, StaccatoError) or err.retryable:
                _count_endpoint_error(request, waiting.progress)
            if isinstance(err, StaccatoError):
                # should the transfer fail (this error, or the give-up once
                # ``--retry-for`` passed, which keeps its details): its status keeps the
                # bytes this stream, or an earlier attempt of it, moved
                earlier = previous_checkpoint()
                durable: int | None
                if waiting.progress is not None:  # this attempt's journaled bytes
                    moved = durable = waiting.progress.bytes_done
                elif earlier is not None:
                    moved, durable = earlier.bytes_done, earlier.bytes_durable
                else:
                    moved = durable = 0
                if moved:
                    err.details = (
                        *err.details,
                        {
                            "segment": request.segment.index,
                            "bytes_done": moved,
                            "bytes_durable": durable,
                        },
                    )
            raise


def _count_endpoint_error(request: StreamInput, progress: StreamProgress | None) -> None:
    """Heartbeat the checkpoint with one more endpoint error before the attempt fails:
    Temporal hands it to the next attempt, which reports the count in its result (the
    optimizer counts endpoint errors, not attempts lost with a worker). Best effort: a
    heartbeat that cannot be sent loses the count, never the error."""
    try:
        if progress is not None:
            progress.endpoint_errors += 1
            progress.beat(force=True)
            return
        checkpoint = previous_checkpoint() or Checkpoint(
            segment=request.segment.index, next_chunk=request.segment.first_chunk
        )
        checkpoint.endpoint_errors += 1
        send_heartbeat(checkpoint)
    except Exception:  # noqa: BLE001 - the endpoint's error is the one to report
        pass


def _buffer_bytes(request: StreamInput) -> int:
    """The stream's chunk buffer: a chunk at most, and no more than the object."""
    return min(request.session.chunk_size, max(request.session.size, 1))


def _waiting_for_capacity(request: StreamInput) -> Callable[[str], None]:
    """Heartbeats (at most every 0.5 s) while the stream waits for its buffer: the
    previous attempt's progress, and why it waits (shown by ``status``)."""
    previous = previous_checkpoint()
    last = [0.0]

    def beat(reason: str) -> None:
        touch()
        moved()  # waiting for this worker's memory, not for an endpoint
        now = time.monotonic()
        if now - last[0] < HEARTBEAT_EVERY_S:
            return
        last[0] = now
        heartbeat(
            Checkpoint(
                segment=request.segment.index,
                next_chunk=previous.next_chunk if previous else request.segment.first_chunk,
                bytes_done=previous.bytes_done if previous else 0,
                bytes_durable=previous.bytes_durable if previous else 0,
                summary=f"segment {request.segment.index}: {reason}",
                waiting=reason,
                endpoint_errors=previous.endpoint_errors if previous else 0,
                progress_at=previous.progress_at if previous else None,
            )
        )

    return beat


def _copy_segment(request: StreamInput, waiting: WaitingBeat) -> StreamResult:
    """The body of :func:`copy_stream`: what is durable already, then the server-side
    copies, then the runs of chunks read from the source (written, or only checksummed
    where the destination holds them without a checksum)."""
    copy = _SegmentCopy(request)
    waiting.progress = copy.progress
    cpu_at_start = host_cpu.sample()
    try:
        copy.progress.beat(force=True)
        copy.copy_all()
    except StreamStopped as stopped:
        if stopped.cancelled:
            # a pause or a graceful stop of the worker: the bytes of the chunk in flight
            # read so far (a hard kill writes nothing of them: the retry reads them again)
            copy.keep_partial()
        if worker_stopping():
            raise stopped_by_shutdown(copy.progress.checkpoint(stopped=True)) from None
        return copy.stopped_result()
    result = copy.complete_result()
    result.cpu_busy = host_cpu.busy_between(cpu_at_start, host_cpu.sample())
    return result


def copy_segment_in_process(
    request: StreamInput, beat: Callable[[], None], pacer: Pacer | None = None
) -> StreamResult:
    """Copy ``request.segment`` inside another activity (a dataset's ``copy_batch``):
    the same durable-chunk check, reads, checksums, writes and read-back as a stream,
    but progress goes to ``beat`` (called at most every 0.5 s; it heartbeats the
    caller's own details and raises to stop) instead of a stream checkpoint, and the
    reads are paced by the caller's ``pacer`` (a batch's, shared by its files; None:
    by the request's ``max_rate`` and ticket, as a stream).

    Returns:
        The complete :class:`StreamResult` (segment checksum, ``verified``).

    Raises:
        StreamStopped: ``beat`` stopped the copy (cancelled).
        StaccatoError: as the drivers raise them (not mapped).
    """
    copy = _SegmentCopy(request, beat, pacer)
    copy.copy_all()
    return copy.complete_result()


class _ForwardedProgress(StreamProgress):
    """A segment's progress inside another activity: due beats call the caller's hook
    (which heartbeats its own details) instead of sending a stream checkpoint."""

    def __init__(self, hook: Callable[[], None], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._hook = hook
        self._last_forwarded = 0.0

    def beat(self, force: bool = False) -> None:
        touch()
        now = time.monotonic()
        if not force and now - self._last_forwarded < HEARTBEAT_EVERY_S:
            return
        self._last_forwarded = now
        self._hook()
        if self.watchdog is not None:
            self.watchdog.check(self.source_bytes())


class _SegmentCopy:
    """One attempt at one segment: the drivers, what the destination holds, what is
    left to do, the progress, and the chunk buffer.

    Attributes:
        durable: chunk index -> checksum of every chunk the destination holds.
        todo: chunks still to copy.
        rehash: durable chunks whose checksum the destination could not tell: read
            from the source once more to checksum them, never written again.
        read_back: verify-on-write: each chunk is checked right after it is durable
            instead of in a separate pass: read back and compared, or, where the
            writer wrote the stream's checksummed buffer itself
            (``ChunkWriter.checked_in_memory``), by that in-memory checksum.
        server_side: the destination copies from the source itself (``copy_chunk``).
    """

    def __init__(
        self,
        request: StreamInput,
        beat: Callable[[], None] | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        self.request = request
        self.segment = segment = request.segment
        self.session = session = request.session
        self.algorithm = request.checksum.value
        self.source_url = secrets.source_url(request.source, request.source_secret)
        self.destination_url = parse_url(session.url)
        # a staged source is read from the worker's staging cache, never the origin
        self.source: Driver | StagedSource = (
            staged_source(request.staged) if request.staged else get_driver(self.source_url.scheme)
        )
        self.destination = get_driver(self.destination_url.scheme)
        checkpoint = previous_checkpoint() if beat is None else None
        self.durable = {
            index: digest
            for index, digest in self.destination.durable_chunks(
                session, segment.first_chunk, segment.end_chunk
            ).items()
            if segment.first_chunk <= index < segment.end_chunk
        }
        self.todo = [
            i for i in range(segment.first_chunk, segment.end_chunk) if i not in self.durable
        ]
        #: chunk index -> the tag of its part (S3: ETag) as this attempt uploaded it or
        #: accepted it (``Driver.listed_tag``), for the result's record of the parts
        #: (``StreamResult.parts``); a chunk without one leaves the record out
        self.tags: dict[int, str] = {}
        self.rehash = {
            i for i, digest in self.durable.items() if not _is_digest(self.algorithm, digest)
        }
        done_bytes = sum(self._length(i) for i in self.durable)
        config = settings.current()
        watchdog = RateWatchdog(
            redact(request.source), config.min_rate_bytes_per_s, config.min_rate_window_s
        )
        next_chunk = self.todo[0] if self.todo else segment.end_chunk
        self.progress = (
            StreamProgress(segment.index, done_bytes, next_chunk, watchdog, length=segment.length)
            if beat is None
            else _ForwardedProgress(
                beat, segment.index, done_bytes, next_chunk, watchdog, length=segment.length
            )
        )
        if checkpoint is not None:  # a retry: an earlier attempt heartbeated
            self.progress.rate_counts_in_flight = False
            self.progress.endpoint_errors = checkpoint.endpoint_errors
            self.progress.progress_at = checkpoint.progress_at
            self.progress.reached_at = checkpoint.reached_at
            if checkpoint.segment == segment.index:
                self.progress.reported_before = min(checkpoint.bytes_done, segment.length)
            if done_bytes > checkpoint.bytes_done:
                # the last attempt made bytes durable after its last heartbeat
                self.progress.progress_at = progressed()
        if checkpoint is not None or self.durable:
            activity.logger.info(
                "segment %d resumes: %d of %d chunks durable (heartbeat said next chunk %s)",
                segment.index,
                len(self.durable),
                segment.end_chunk - segment.first_chunk,
                checkpoint.next_chunk if checkpoint else None,
            )
        self.read_back = request.read_back and self.destination.features.read_back
        self.pacer = pacer or Pacer(
            request.max_rate,
            slot_key(request.ticket, request.governors)
            if request.ticket and request.governors
            else None,
            # the transfer's own share moves to the streams still running
            own_key=own_key(request.transfer_id),
            # a large file of a dataset: at most a stream's share of the dataset's
            group_key=(
                group_key(request.rate_group, request.rate_part) if request.rate_group else None
            ),
        )
        if self.pacer.active:
            self.progress.rate_cap = self.pacer.rate
        self.server_side = (
            bool(self.todo)
            and not request.staged
            and self.destination.features.server_side_copy
            and self.destination.can_copy_from(self.source_url, self.destination_url)
            and not self._rate_in_force()
        )
        needs_buffer = self.todo or self.rehash
        # a chunk at most, and no more than the object (a small file in a batch)
        length = min(session.chunk_size, max(session.size, 1))
        # page-aligned (anonymous mmap), so a file destination can write it with direct I/O
        self.buffer = memoryview(mmap.mmap(-1, length) if needs_buffer else bytearray())
        #: (chunk, bytes): the start of the first chunk to copy, kept by a paused
        #: attempt, read back from the destination into the buffer and checked against
        #: its recorded checksum: the source is read from there on (``partial_chunk``)
        self.prefix: tuple[int, int] | None = None
        #: (chunk, bytes it began with) while a chunk is read into the buffer, and the
        #: bytes of it in the buffer so far (``keep_partial``)
        self._filling: tuple[int, int] | None = None
        self._filled = 0
        if self.todo and not self.rehash and not self.server_side and beat is None:
            kept = self.destination.partial_chunk(session, self.todo[0], self.buffer)
            if kept:
                self.prefix = (self.todo[0], kept)
                self.progress.bytes_done += kept
                activity.logger.info(
                    "segment %d resumes chunk %d at byte %d of it (kept by a pause)",
                    segment.index,
                    self.todo[0],
                    kept,
                )

    def _rate_in_force(self) -> bool:
        """Whether a ``max_rate`` (the transfer's own, or an endpoint's or link's share
        on the rate board) paces this stream now. A server-side copy (a kernel file
        copy, an S3 part copy) cannot be paced, so a paced stream reads and writes
        through the worker instead. A cap set after the stream started does not turn
        a running server-side copy into a paced one."""
        if not self.pacer.active:
            return False
        self.pacer.start(self._paced_wait)  # the board's first word on the ticket
        return self.pacer.rate() is not None

    def _length(self, index: int) -> int:
        return chunk_bounds(index, self.session.size, self.session.chunk_size)[1]

    def copy_all(self) -> None:
        """Server-side copies, then the runs of chunks read from the source."""
        with self.open_writer() as writer:
            if self.server_side:
                self.copy_server_side(writer)
            for run_start, run_end in _runs(sorted(self.rehash.union(self.todo))):
                self.copy_run(writer, run_start, run_end)

    def open_writer(self) -> ChunkWriter:
        """The destination's writer, or a stand-in when every chunk is durable already."""
        return self.destination.open_writer(self.session) if self.todo else _NoWriter()

    def copy_server_side(self, writer: ChunkWriter) -> None:
        """Have the destination copy every chunk to do from the source itself."""
        for index in self.todo:
            offset, length = chunk_bounds(index, self.session.size, self.session.chunk_size)
            with moving_elsewhere():
                digest = writer.copy_chunk(
                    index, self.source_url, self.request.source_info, offset, length, self.algorithm
                )
            self.durable[index] = digest
            self._tag(index, writer.part_tag(index))
            if not _is_digest(self.algorithm, digest):
                self.rehash.add(index)  # the store did not say: checksum the source range
            elif self.read_back:  # the bytes did not pass through the stream: read back
                actual = writer.read_back_checksum(index, length, self.algorithm, self.buffer)
                _compare_read_back(index, actual, digest)
            self.progress.next_chunk = index + 1
            self.progress.add(length, 0)
            self.progress.beat()
        self.todo = []

    def copy_run(self, writer: ChunkWriter, run_start: int, run_end: int) -> None:
        """Read chunks ``[run_start, run_end)`` from the source with one reader; write
        each one (or only checksum it, if it is in :attr:`rehash`)."""
        size, chunk_size = self.session.size, self.session.chunk_size
        # the start of the run's first chunk a pause kept is in the buffer already
        kept = self.prefix[1] if self.prefix is not None and self.prefix[0] == run_start else 0
        first_offset = chunk_bounds(run_start, size, chunk_size)[0] + kept
        last_offset, last_length = chunk_bounds(run_end - 1, size, chunk_size)
        self.progress.reading(True)
        with self.source.open_read(
            self.source_url,
            self.request.source_info,
            first_offset,
            last_offset + last_length - first_offset,
        ) as reader:
            self.progress.reader_opened(reader)
            for index in range(run_start, run_end):
                self._copy_chunk(writer, reader, index, kept if index == run_start else 0)
        self.progress.reader_closed()

    def _copy_chunk(self, writer: ChunkWriter, reader: Reader, index: int, kept: int = 0) -> None:
        """Copy chunk ``index``: its first ``kept`` bytes are in the buffer already
        (checked, :attr:`prefix`), the rest comes from ``reader``; the checksum and the
        write cover the whole chunk."""
        view = self.buffer[: self._length(index)]
        before = reader.bytes_read
        # a chunk only checksummed here (durable already) has nothing to keep
        self._filling = None if index in self.rehash else (index, kept)
        self._fill(reader, index, view, kept)
        self._filling = None
        if kept:
            self.prefix = None
        digest = checksums.checksum_bytes(self.algorithm, view)
        if index in self.rehash:
            reported = self.durable.get(index, "")
            self.durable[index] = digest  # durable already: checksum only
            if self.destination.durable_chunk_matches(self.session, index, view, reported):
                if index not in self.tags:  # not this attempt's server-side copy
                    self._tag(index, self.destination.listed_tag(reported))
                self.progress.add(0, reader.bytes_read - before)
                self.progress.beat()
                return
            # the destination holds other bytes under this chunk (an S3 part replaced
            # under the upload) or nothing vouches for them: write it again, never
            # publish it (its bytes counted as done when the stream began)
            activity.logger.warning(
                "segment %d: chunk %d at the destination is not shown to hold the "
                "source's bytes; writing it again",
                self.segment.index,
                index,
            )
            if isinstance(writer, _NoWriter):  # nothing else to write in this segment
                with self.destination.open_writer(self.session) as again:
                    again.write_chunk(index, view, digest)
                    self._tag(index, again.part_tag(index))
            else:
                writer.write_chunk(index, view, digest)
                self._tag(index, writer.part_tag(index))
            self.progress.add(0, reader.bytes_read - before)
            self.progress.beat()
            return
        writer.write_chunk(index, view, digest)
        self._tag(index, writer.part_tag(index))
        if self.read_back and not writer.checked_in_memory:
            _check_read_back(writer, index, view, self.algorithm, digest)
        self.durable[index] = digest
        self.progress.next_chunk = index + 1
        self.progress.add(len(view) - kept, reader.bytes_read - before)  # kept: counted
        self.progress.beat()

    def _tag(self, index: int, tag: str | None) -> None:
        """Record chunk ``index``'s part tag (None: unknown, forgotten)."""
        if tag:
            self.tags[index] = tag
        else:
            self.tags.pop(index, None)

    def parts_record(self) -> str | None:
        """:func:`parts_digest` over the segment's parts' tags, None unless every
        chunk of the segment has one (``StreamResult.parts``)."""
        chunks = range(self.segment.first_chunk, self.segment.end_chunk)
        if not chunks or any(i not in self.tags for i in chunks):
            return None
        return parts_digest((i + 1, self.tags[i]) for i in chunks)

    def _fill(self, reader: Reader, index: int, view: memoryview, start: int = 0) -> None:
        """Read chunk ``index`` from ``reader`` into ``view`` from byte ``start`` (the
        bytes before it are there already) to its end, heartbeating.

        Raises:
            RetryableError: the source ended before the chunk's end.
        """
        filled = self._filled = start
        self.progress.reading(True)
        while filled < len(view):
            step = self.pacer.step(self._paced_wait) if self.pacer.active else None
            end = len(view) if step is None else min(len(view), filled + step)
            n = reader.readinto(view[filled:end])
            if n == 0:
                raise RetryableError(
                    f"{redact(self.request.source)} ended at byte "
                    f"{index * self.session.chunk_size + filled}, expected {self.session.size}"
                )
            filled += n
            moved()
            self._filled = filled
            self.progress.in_flight = filled - start  # shown as progress, not yet durable
            self.progress.beat()
            if step is not None:
                self.pacer.take(n, self._paced_wait)
        self.progress.reading(False)  # writing is the destination's time

    def _paced_wait(self, seconds: float) -> None:
        """Sleep while the pacer holds the stream back: heartbeating, and not counted
        as source reading time by the minimum-rate watchdog."""
        self.progress.reading(False)
        time.sleep(seconds)
        self.progress.beat()
        self.progress.reading(True)

    def keep_partial(self) -> None:
        """A pause or the worker's graceful shutdown stopped the stream inside a chunk:
        have the destination keep the bytes of it in the buffer
        (``ChunkWriter.write_partial``: durable, with their checksum computed here on
        this buffer, the source's bytes as read), so the resumed stream reads only the
        rest from the source and they count as done. Best effort: an endpoint that
        cannot keep part of a chunk (S3), an error writing it, or a destination wait
        beyond :data:`KEEP_PARTIAL_WAIT_S` keeps nothing, and the chunk is copied whole
        on resume."""
        if self._filling is None:
            return
        index, start = self._filling
        filled = self._filled
        if filled <= start:
            return  # nothing read since the kept prefix (recorded already)
        view = self.buffer[:filled]
        self.progress.reading(False)  # the source's rate watchdog: not reading now
        try:
            # the driver's waits (an SFTP connection slot another process's idle
            # connection holds) heartbeat, and the cancel already seen stops them only
            # after KEEP_PARTIAL_WAIT_S (the pause waits for this stream's result)
            with (
                keepalive_hook(self._keeping_beat(time.monotonic() + KEEP_PARTIAL_WAIT_S)),
                self.destination.open_writer(self.session) as writer,
            ):
                if not writer.write_partial(
                    index, view, checksums.checksum_bytes(self.algorithm, view)
                ):
                    return
        except (StaccatoError, OSError, StreamStopped) as err:
            activity.logger.warning(
                "segment %d: the %d bytes of chunk %d read before the stream stopped were "
                "not kept (%s); the resumed stream reads that chunk whole",
                self.segment.index,
                filled,
                index,
                err,
            )
            return
        self.progress.bytes_done += filled - start
        self.progress.in_flight = 0

    def _keeping_beat(self, deadline: float) -> Callable[[], None]:
        """The keepalive hook while :meth:`keep_partial` writes: heartbeats (the stream
        is stopped already: its cancel is not raised again) until ``deadline``
        (monotonic seconds), then stops the write.

        Raises (from the hook):
            StreamStopped: past ``deadline``.
        """

        def beat() -> None:
            if time.monotonic() > deadline:
                raise StreamStopped(f"keeping the chunk's start took over {KEEP_PARTIAL_WAIT_S} s")
            try:
                self.progress.beat()
            except StreamStopped:
                pass

        return beat

    def stopped_result(self) -> StreamResult:
        """Where a cancelled (paused) stream stopped: its first chunk not durable."""
        segment = self.segment
        missing = [
            i for i in range(segment.first_chunk, segment.end_chunk) if i not in self.durable
        ]
        return StreamResult(
            segment=segment.index,
            complete=False,
            next_chunk=missing[0] if missing else segment.end_chunk,
            bytes_done=self.progress.bytes_done,
            bytes_read=self.progress.bytes_read,
        )

    def complete_result(self) -> StreamResult:
        """Every chunk durable: the segment's checksum, combined from its chunks'."""
        segment = self.segment
        parts = [
            (self.durable[i], self._length(i))
            for i in range(segment.first_chunk, segment.end_chunk)
        ]
        return StreamResult(
            segment=segment.index,
            complete=True,
            next_chunk=segment.end_chunk,
            bytes_done=segment.length,
            checksum=checksums.combine(self.algorithm, parts),
            bytes_read=self.progress.bytes_read,
            verified=self.read_back and not self.rehash,
            attempt=activity.info().attempt if activity.in_activity() else 1,
            endpoint_errors=self.progress.endpoint_errors,
            parts=self.parts_record(),
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
    _compare_read_back(index, checksums.checksum_bytes(algorithm, view), expected)


def _compare_read_back(index: int, actual: str, expected: str) -> None:
    """Raise if chunk ``index`` read back as ``actual`` where the source gave ``expected``.

    Raises:
        RetryableError: as :func:`_check_read_back`.
    """
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
