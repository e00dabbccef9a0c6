"""Copy one object inside an activity: the steps of a ``TransferWorkflow`` run in
process, for a dataset's small files (``copy_batch``).

stat -> sync check (``--sync-level``) -> prepare (write session under a temp name) ->
chunks (durable-chunk check, read, checksum, write, read back where the destination
can) -> verify the temp data before publish where it was not read back (SFTP) ->
confirm the source (when its version cannot prove it stayed the same) -> publish
(source version re-checked, atomic rename / CompleteMultipartUpload) -> check after
publish (size; S3 stored checksum). The same driver calls and the same guarantees as a
single transfer: nothing is published unverified, a failure before publish leaves the
destination name untouched and removes the temp data.

Each step is the body of the single transfer's activity
(:func:`staccato.activities.transfer.stat_source`, ``open_write_session``,
``publish_session``, ``verify_object``; :func:`staccato.activities.copy.copy_segment_in_process`;
:func:`staccato.sync.compare`), so the two paths cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from staccato import checksums
from staccato.activities.copy import copy_segment_in_process
from staccato.activities.pacing import Pacer, paced_by
from staccato.activities.small_copy import copy_small, drop_session
from staccato.activities.stream_progress import StreamStopped
from staccato.activities.transfer import (
    check_after_publish,
    open_write_session,
    publish_session,
    stat_source,
    verify_object,
)
from staccato.endpoints import get_driver
from staccato.endpoints.base import keepalive_past_stop, listed_at
from staccato.errors import SourceChangedError, StaccatoError
from staccato.models import (
    ObjectInfo,
    PrepareInput,
    PublishInput,
    Segment,
    StreamInput,
    SyncLevel,
    SyncResult,
    TransferOptions,
    VerifyInput,
    VerifyMode,
    WriteSession,
)
from staccato.plan import chunk_count
from staccato.sync import compare
from staccato.urls import parse_url


@dataclass(frozen=True)
class ObjectOutcome:
    """What :func:`copy_object` did.

    Attributes:
        copied: False when the destination already matched (sync level): nothing written.
        bytes: bytes written to the destination (0 when not copied).
        reason: the sync check's reason when not copied.
    """

    copied: bool
    bytes: int
    reason: str = ""


def up_to_date(
    source: str,
    destination: str,
    level: SyncLevel,
    options: TransferOptions,
    info: ObjectInfo | None = None,
) -> tuple[bool, str]:
    """Whether ``destination`` already matches ``source`` at ``level``
    (:func:`staccato.sync.compare`), and why; ``info`` is the source's stat when the
    caller has it (several destinations compared with one source).

    Raises:
        StaccatoError: as the drivers raise them (a missing source: NotFoundError).
    """
    info = info or stat_source(source)
    src = parse_url(source)
    dst = parse_url(destination)
    result = compare(
        level,
        get_driver(src.scheme),
        src,
        info,
        get_driver(dst.scheme),
        dst,
        chunk_size=options.chunk_size,
        algorithm=options.checksum.value,
    )
    return result.up_to_date, result.reason


def copy_object(
    source: str,
    destination: str,
    options: TransferOptions,
    session_key: str,
    beat: Callable[[], None],
    listed_size: int | None = None,
    pacer: Pacer | None = None,
) -> ObjectOutcome:
    """Copy ``source`` to ``destination`` (canonical URLs) with the guarantees of a
    single transfer, in this process.

    Args:
        options: chunk size, checksum, verify mode, sync level (``streams`` is unused:
            one object is copied by one thread here).
        session_key: names the write session; the same key reopens the same temp data,
            so a retried batch resumes a half-written file from its durable chunks.
        beat: called at most every 0.5 s while data moves (heartbeats the caller's
            details); may raise to stop.
        listed_size: the size the listing gave (bytes): a small object is tried in as
            few requests as its endpoints allow first
            (:func:`staccato.activities.small_copy.copy_small`).
        pacer: paces the source reads (a batch's, shared by its files: see
            :class:`staccato.activities.pacing.SharedPacer`); None: not paced.

    Raises:
        StreamStopped: ``beat`` stopped it (cancelled): the write session is removed.
        PermanentError: this object cannot be copied (missing, changed during the copy,
            a name the destination cannot hold...): its write session is removed and
            the destination name is untouched.
        RetryableError: a transient failure; the write session is kept for the retry.
    """
    if listed_size is not None and options.sync_level is None:
        pace = None if pacer is None else paced_by(pacer, beat)
        written = copy_small(source, destination, options, session_key, listed_size, pace)
        if written is not None:
            return ObjectOutcome(copied=True, bytes=written)
    info = stat_source(source)
    src = parse_url(source)
    dst = parse_url(destination)
    destination_driver = get_driver(dst.scheme)
    if options.sync_level is not None:
        known, listed = listed_at(destination)  # the batch's listing of its range
        if known and listed is None:
            check = SyncResult(up_to_date=False, reason=f"destination {dst} does not exist")
        else:
            check = compare(
                options.sync_level,
                get_driver(src.scheme),
                src,
                info,
                destination_driver,
                dst,
                chunk_size=options.chunk_size,
                algorithm=options.checksum.value,
                listed=listed,
            )
        if check.up_to_date:
            return ObjectOutcome(copied=False, bytes=0, reason=check.reason)
        if listed_size is not None and (
            get_driver(src.scheme).features.whole_get or destination_driver.features.whole_put
        ):
            # not up to date: a small object still goes in as few requests as its
            # endpoints allow (S3: one PutObject instead of a multipart upload's ~8)
            pace = None if pacer is None else paced_by(pacer, beat)
            written = copy_small(
                source, destination, options, session_key, info.size, pace, compared=True
            )
            if written is not None:
                return ObjectOutcome(copied=True, bytes=written)
    destination_driver.make_parents(dst)
    prepared = open_write_session(
        PrepareInput(
            destination=destination,
            size=info.size,
            chunk_size=options.chunk_size,
            session_key=session_key,
        )
    )
    session = prepared.session
    try:
        _write_and_publish(source, info, session, prepared.session_url, options, beat, pacer)
    except StaccatoError as err:
        drop_session(destination_driver, session, err)
        raise
    except StreamStopped:  # cancelled: nothing of this file is left behind
        destination_driver.abort(session)
        raise
    return ObjectOutcome(copied=True, bytes=info.size)


def _write_and_publish(
    source: str,
    info: ObjectInfo,
    session: WriteSession,
    session_url: str | None,
    options: TransferOptions,
    beat: Callable[[], None],
    pacer: Pacer | None = None,
) -> None:
    """Chunks, checks before publish, publish, checks after (see the module docstring)."""
    chunks = chunk_count(info.size, session.chunk_size)
    algorithm = options.checksum
    digest = checksums.combine(algorithm.value, [])
    verified = True
    parts: list[tuple[int, int, str]] | None = None
    if chunks:
        result = copy_segment_in_process(
            StreamInput(
                transfer_id=session.session_id,
                source=source,
                source_info=info,
                session=session,
                segment=Segment(
                    index=0, first_chunk=0, end_chunk=chunks, offset=0, length=info.size
                ),
                checksum=algorithm,
                read_back=options.verify.compares_checksums,
            ),
            beat,
            pacer,
        )
        digest = checksums.combine(algorithm.value, [(result.checksum or "", info.size)])
        verified = result.verified
        if result.parts:  # publish only the parts this stream uploaded or accepted
            parts = [(0, chunks, result.parts)]
    segments = [(0, chunks)]
    checking = options.verify.compares_checksums
    if checking and not verified and session_url is not None:
        # the destination could not read each chunk back (SFTP): read the temp data once
        verify_object(
            VerifyInput(
                url=session_url,
                size=info.size,
                chunk_size=session.chunk_size,
                segments=segments,
                checksum=algorithm,
                expected=digest,
                mode=VerifyMode.checksum,
                whole_object=False,
            )
        )
        verified = True
    if info.reread_before_publish and chunks:
        url = parse_url(source)
        again = get_driver(url.scheme).segments_checksum(
            url, info.size, session.chunk_size, segments, algorithm.value, info
        )
        if again != digest:  # both combined over the one segment
            raise SourceChangedError(
                f"source changed during the copy: {source} read differently a second "
                "time (rewritten in place, size and mtime unchanged); nothing was published"
            )
    publish_session(PublishInput(session=session, source=source, source_info=info, parts=parts))
    with keepalive_past_stop():  # published: a stop now must not hide it
        check_after_publish(
            session, info.size, segments, algorithm, digest, verified, options.verify
        )
