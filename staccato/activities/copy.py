"""The ``copy_stream`` activity: copy one segment's chunks, checkpointing as it goes.

Resume (DESIGN.md, invariants): heartbeat details lag real progress (the SDK
throttles heartbeats), so a retried stream asks the destination which chunks are
durable (file journal, S3 ListParts) and copies only the others. Chunk writes are
positional, so a chunk written twice is harmless. After a hard kill at most the
chunk in flight per stream is sent again.

A destination may hold a chunk without knowing its checksum (S3 stores whose
ListParts reports no part checksums, a server-side copy without one): such a chunk
is read from the source once more to checksum it, and not written again.

Memory: one chunk-sized buffer per stream, whatever the object size.
"""

from __future__ import annotations

import os
import time

from pydantic import ValidationError
from temporalio import activity

from staccato import checksums, secrets
from staccato.activities.errors import mapped_errors
from staccato.endpoints import get_driver
from staccato.endpoints.base import ChunkWriter, keepalive_hook
from staccato.errors import RetryableError
from staccato.models import Checkpoint, StreamInput, StreamResult
from staccato.plan import chunk_bounds
from staccato.urls import parse_url

_HEARTBEAT_EVERY_S = 0.5


class _Stopped(Exception):
    """The activity was cancelled (pause) or the worker is going away."""


class _StreamProgress:
    """Tracks a stream's progress and heartbeats it, at most every 0.5 s."""

    def __init__(self, segment: int, bytes_done: int, next_chunk: int) -> None:
        self.segment = segment
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

    def beat(self, force: bool = False) -> None:
        """Heartbeat if due; raise :class:`_Stopped` when cancellation was requested."""
        now = time.monotonic()
        if not force and now - self._last_beat < _HEARTBEAT_EVERY_S:
            return
        self._last_beat = now
        if os.getppid() != self._parent:
            # The worker process died: this is a stale writer, stop now.
            raise _Stopped("worker process is gone")
        elapsed = max(now - self._started, 1e-6)
        activity.heartbeat(
            Checkpoint(
                segment=self.segment,
                next_chunk=self.next_chunk,
                bytes_done=self.bytes_done + self.in_flight,
                rate_bytes_per_s=round((self._copied + self.in_flight) / elapsed, 1),
                bytes_read=self.bytes_read,
            )
        )
        if activity.is_cancelled():
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
    waiting = _Waiting()
    # A driver may wait before the first chunk (e.g. for an SFTP connection slot): it
    # calls base.keepalive(), which heartbeats here so the attempt is not timed out.
    with keepalive_hook(waiting.beat):
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
        now = time.monotonic()
        if now - self._last_beat < _HEARTBEAT_EVERY_S:
            return
        self._last_beat = now
        activity.heartbeat(*activity.info().heartbeat_details)
        if activity.is_cancelled():
            raise _Stopped("cancelled")


def _copy_segment(request: StreamInput, waiting: _Waiting) -> StreamResult:
    """The body of :func:`copy_stream`."""
    segment = request.segment
    session = request.session
    algorithm = request.checksum.value
    source_url = secrets.source_url(request.source, request.source_secret)
    destination_url = parse_url(session.url)
    source = get_driver(source_url.scheme)
    source_info = secrets.worker_info(source, source_url, request.source_info)
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
    progress = _StreamProgress(segment.index, done_bytes, todo[0] if todo else segment.end_chunk)
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
                with source.open_read(
                    source_url,
                    source_info,
                    first_offset,
                    last_offset + last_length - first_offset,
                ) as reader:
                    for index in range(run_start, run_end):
                        _, length = chunk_bounds(index, session.size, session.chunk_size)
                        view = buffer[:length]
                        before = reader.bytes_read
                        filled = 0
                        while filled < length:
                            n = reader.readinto(view[filled:])
                            if n == 0:
                                raise RetryableError(
                                    f"{request.source} ended at byte "
                                    f"{index * session.chunk_size + filled}, expected {session.size}"
                                )
                            filled += n
                            progress.in_flight = filled  # shown as progress, not yet durable
                            progress.beat()
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
