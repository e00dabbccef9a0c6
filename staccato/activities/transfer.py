"""The short activities of a transfer: stat, prepare, publish, verify, cleanup."""

from __future__ import annotations

from temporalio import activity

from staccato import checksums
from staccato.activities.errors import mapped_errors
from staccato.endpoints import get_driver
from staccato.errors import ChecksumMismatch, SourceChanged
from staccato.models import (
    ObjectInfo,
    PrepareInput,
    PrepareResult,
    PublishInput,
    VerifyInput,
    VerifyMode,
    WriteSession,
)
from staccato.urls import parse_url

MAX_CHUNKS = 100_000  # per object: bounds journal size, heartbeat work and memory per segment


@activity.defn(name="stat")
@mapped_errors
def stat(url: str) -> ObjectInfo:
    """Size, version and range support of the object at ``url``."""
    parsed = parse_url(url)
    return get_driver(parsed.scheme).stat(parsed)


@activity.defn(name="prepare")
@mapped_errors
def prepare(request: PrepareInput) -> PrepareResult:
    """Check the destination and open a write session (idempotent per session_key)."""
    parsed = parse_url(request.destination)
    driver = get_driver(parsed.scheme)
    driver.check_destination(parsed)
    chunk_size, note = driver.adjust_chunk_size(request.size, request.chunk_size)
    smallest = -(-request.size // MAX_CHUNKS)
    if chunk_size < smallest:
        note = (
            f"chunk size raised from {chunk_size} to {smallest} bytes: at most "
            f"{MAX_CHUNKS} chunks per object (per-chunk bookkeeping is bounded)"
        )
        chunk_size = smallest
    session = driver.open_session(parsed, request.size, chunk_size, request.session_key)
    if activity.is_cancelled():
        # The workflow was cancelled while this prepare ran and may not wait for its
        # result: nobody else would clean this session up (a multipart upload would be
        # left behind). Abort is idempotent, so a workflow that does wait and cleans up
        # too does no harm.
        driver.abort(session)
    return PrepareResult(
        session=session,
        chunk_size=chunk_size,
        note=note,
        verify_by_segments=not driver.stored_object_checksum,
        session_url=driver.session_url(session),
    )


@activity.defn(name="publish")
@mapped_errors
def publish(request: PublishInput) -> None:
    """Re-check the source version, then atomically publish the destination."""
    source = parse_url(request.source)
    now = get_driver(source.scheme).stat(source)
    if now.version != request.source_info.version:
        raise SourceChanged(
            f"source changed during the transfer: {request.source} was modified "
            f"(size {request.source_info.size} -> {now.size} bytes); nothing was published"
        )
    destination = parse_url(request.session.url)
    get_driver(destination.scheme).publish(request.session)


@activity.defn(name="verify")
@mapped_errors
def verify(request: VerifyInput) -> str:
    """Check the published destination against the source-side checksum.

    Returns:
        The destination's checksum (hex), or ``""`` when only the size was checked.

    Raises:
        ChecksumMismatch: sizes or checksums differ.
    """
    url = parse_url(request.url)
    driver = get_driver(url.scheme)
    if request.mode == VerifyMode.none:
        return ""
    info = driver.stat(url)
    if info.size != request.size:
        raise ChecksumMismatch(
            f"destination {request.url} has {info.size} bytes, expected {request.size}"
        )
    if request.mode == VerifyMode.size:
        return ""
    activity.heartbeat()
    if request.whole_object:
        actual = driver.object_checksum(
            url, request.size, request.chunk_size, request.segments, request.checksum.value
        )
    else:
        actual = driver.segments_checksum(
            url, request.size, request.chunk_size, request.segments, request.checksum.value
        )
    if actual != request.expected:
        where = ""
        if not request.whole_object:
            first = request.segments[0][0] * request.chunk_size
            end = min(request.size, request.segments[-1][1] * request.chunk_size)
            where = f" in bytes [{first}, {end})"
        raise ChecksumMismatch(
            f"destination {request.url}{where} checksum {checksums.label(request.checksum, actual)} "
            f"differs from the source's {checksums.label(request.checksum, request.expected)}"
        )
    return actual


@activity.defn(name="cleanup")
@mapped_errors
def cleanup(session: WriteSession) -> None:
    """Remove a write session's temp data (temp file, multipart upload). Idempotent."""
    url = parse_url(session.url)
    get_driver(url.scheme).abort(session)
