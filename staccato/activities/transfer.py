"""The activities of a transfer besides the streams: stat, prepare, publish, verify,
cleanup.

File roots: with ``STACCATO_FILE_ROOTS`` set (:func:`staccato.settings.file_roots`),
every activity checks its file URLs before any I/O (:func:`check_file_roots`): the
workflow's input can come from any Temporal client, so the worker itself decides
which of its files a transfer may read or write.

``verify`` reads the destination back and can run as long as a copy: it heartbeats
per chunk (through :func:`staccato.endpoints.base.keepalive`), so a killed worker's
verify is retried after the heartbeat timeout and a cancel reaches it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from temporalio import activity
from temporalio.exceptions import CancelledError

from staccato import checksums, secrets, settings
from staccato.activities.errors import mapped_errors
from staccato.activities.liveness import beating_with, heartbeating, send_heartbeat
from staccato.activities.retry_deadline import within_retry_for
from staccato.endpoints import get_driver
from staccato.endpoints.base import (
    ORPHAN_CLOCK_SLACK_S,
    Driver,
    Motion,
    directory_memo,
    keepalive,
    keepalive_hook,
    motion_tracker,
    moved,
)
from staccato.errors import (
    ChecksumMismatchError,
    PermanentError,
    PermissionDeniedError,
    SourceChangedError,
    StaccatoError,
)
from staccato.models import (
    ChecksumAlgorithm,
    ConfirmSourceInput,
    ObjectInfo,
    PrepareInput,
    PrepareResult,
    PublishBeat,
    PublishInput,
    VerifyBeat,
    VerifyInput,
    VerifyMode,
    WriteSession,
    same_version,
)
from staccato.plan import chunk_bounds
from staccato.urls import EndpointURL, parse_url, redact

MAX_CHUNKS = 100_000  # per object: bounds journal size, heartbeat work and memory per segment
_HEARTBEAT_EVERY_S = 0.5


def check_file_roots(*urls: str) -> None:
    """Refuse file URLs outside ``STACCATO_FILE_ROOTS`` (no-op when it is unset).

    The path is resolved first (symlinks and ``..``, also of a destination that does
    not exist yet), so neither can lead out of a root.

    Raises:
        PermissionDeniedError: a file URL resolves outside every root; names the path, what
            it resolved to and the roots.
        SettingsError: ``STACCATO_FILE_ROOTS`` is malformed (names the variable).
    """
    roots = settings.file_roots()
    if roots is None:
        return
    for text in urls:
        url = parse_url(text)
        if url.scheme != "file":
            continue
        resolved = os.path.realpath(url.path)
        if any(os.path.commonpath([resolved, root]) == root for root in roots):
            continue
        shown = "" if resolved == url.path else f" (resolves to {resolved})"
        raise PermissionDeniedError(
            f"{url.path}{shown} is outside the directories this worker may use "
            f"(STACCATO_FILE_ROOTS={':'.join(roots)}); use a path under one of them, or "
            "add its directory to STACCATO_FILE_ROOTS on the workers"
        )


#: how far a remote endpoint's clock may be ahead of the worker's, seconds: a source
#: whose mtime is within this (plus the mtime's resolution) of the worker's "now" at
#: stat time may be rewritten in place during the copy without its version changing
REMOTE_CLOCK_SKEW_S = 120.0


@activity.defn(name="stat")
@heartbeating
@mapped_errors
def stat(url: str, source_secret: str | None = None) -> ObjectInfo:
    """Size, version and range support of the object at ``url`` (whose sealed query,
    if any, is ``source_secret``); marks it for a second read before publish when its
    version cannot prove it stays the same during the copy (see
    :func:`needs_second_read`)."""
    return stat_source(url, source_secret)


def stat_source(url: str, source_secret: str | None = None) -> ObjectInfo:
    """The body of :func:`stat`, callable inside another activity (a dataset's batch).

    Raises:
        StaccatoError: as the driver's ``stat`` (not mapped to ``ApplicationError``).
    """
    check_file_roots(url)
    parsed = secrets.source_url(url, source_secret)
    info = get_driver(parsed.scheme).stat(parsed)
    local = parsed.scheme == "file" and info.mtime_resolution_s < 1.0  # not NFS, SMB, FUSE
    skew = settings.current().clock_skew_s
    if needs_second_read(info, time.time(), local=local, clock_skew_s=skew):
        info = info.model_copy(update={"reread_before_publish": True})
    return info


def needs_second_read(
    info: ObjectInfo, now: float, *, local: bool, clock_skew_s: float = REMOTE_CLOCK_SKEW_S
) -> bool:
    """Whether a rewrite in place during the copy could leave ``info.version`` as it is.

    A version built on an mtime of resolution ``r`` misses a rewrite only when the
    rewrite's mtime rounds to the one pinned, i.e. when the object was last modified
    less than ``r`` before the copy began (on the endpoint's clock; a remote clock may
    be off by ``clock_skew_s``, the worker setting ``STACCATO_CLOCK_SKEW_S``). An object modified longer ago than that is
    proved stable by the version re-checked on every read and before publish.

    Args:
        info: what the driver's ``stat`` said.
        now: the worker's time, seconds since the epoch.
        local: the endpoint's mtimes come from the worker's clock (a local file
            system; NFS and SMB servers set mtimes by their own clocks).
        clock_skew_s: how far a remote endpoint's clock may be from the worker's.
    """
    return mtime_needs_second_read(
        info.modified_at,
        info.mtime_resolution_s,
        now,
        local=local,
        clock_skew_s=clock_skew_s,
        endpoint_time=info.endpoint_time,
    )


def mtime_needs_second_read(
    modified_at: float | None,
    resolution_s: float,
    now: float,
    *,
    local: bool,
    clock_skew_s: float = REMOTE_CLOCK_SKEW_S,
    endpoint_time: float | None = None,
) -> bool:
    """:func:`needs_second_read` of the values themselves (an ``ObjectInfo``'s
    ``modified_at``, ``mtime_resolution_s``, ``endpoint_time``; seconds): a dataset's
    batch decides it for each small local file it reads, where building an
    ``ObjectInfo`` only to ask cost more than the rest of the decision.

    Args:
        clock_skew_s: seconds a remote endpoint's clock may be off (unused for a local
            clock).
    """
    if resolution_s <= 0:
        return False  # a validator that changes with every write (S3 ETag)
    if modified_at is None:
        return True  # nothing to prove it by
    if endpoint_time is not None:  # the endpoint's own clock: no skew to allow for
        # both times are whole seconds (HTTP-date): one more resolution of slack
        return modified_at > endpoint_time - 2 * resolution_s
    margin = resolution_s + (0.0 if local else clock_skew_s)
    return modified_at > now - margin


def _confirm_endpoint(request: ConfirmSourceInput) -> str:
    return f"reading {redact(request.source)} again to confirm it"


@activity.defn(name="confirm_source")
@within_retry_for(lambda: None, watch_hangs=_confirm_endpoint)
@mapped_errors
def confirm_source(request: ConfirmSourceInput) -> None:
    """Read segments of the source a second time and compare them with the copy's
    checksums: a source rewritten in place during the copy (same size, an mtime too
    coarse to tell) reads differently, and then nothing may be published.

    Heartbeats per chunk (the reads of one segment can be long).

    Raises:
        SourceChangedError: a segment reads differently now, or the version moved.
        ApplicationError: a retryable failure of an attempt that started after
            ``request.retry_for_s`` passed without progress, made non-retryable
            (:mod:`staccato.activities.retry_deadline`).
    """
    check_file_roots(request.source)
    url = secrets.source_url(request.source, request.source_secret)
    driver = get_driver(url.scheme)
    algorithm = request.checksum.value
    last_beat = 0.0

    def beat() -> None:
        nonlocal last_beat
        # the drivers' reads call this (keepalive) as bytes arrive, or while they wait
        # in short slices up to their I/O timeout: reached is as good as moved for the
        # hang watch (a read blocked on a hung server reaches none)
        moved()
        now = time.monotonic()
        if now - last_beat >= 0.5:
            last_beat = now
            # called inside the drivers' reads, where the hang watch or an HTTP
            # request deadline may interrupt this thread: sent whole
            send_heartbeat()

    size = request.source_info.size
    with keepalive_hook(beat):
        for first, end, expected in request.segments:
            actual = driver.segments_checksum(
                url, size, request.chunk_size, [(first, end)], algorithm, request.source_info
            )
            if actual != expected:
                start = first * request.chunk_size
                stop = min(size, end * request.chunk_size)
                raise SourceChangedError(
                    f"source changed during the transfer: {request.source} bytes [{start}, "
                    f"{stop}) read differently a second time (rewritten in place, size and "
                    f"mtime unchanged); nothing was published. Copy it again once the "
                    f"writer is done"
                )


@activity.defn(name="prepare")
@heartbeating
@mapped_errors
def prepare(request: PrepareInput) -> PrepareResult:
    """Check the destination and open a write session (idempotent per session_key).

    A cancel never interrupts it half-way: in a thread the SDK raises the cancel inside
    the running code, which could land after the endpoint created the session (an S3
    CreateMultipartUpload answered) and before its id was returned, leaving it unknown
    to everyone. Shielded, the session is opened, then aborted here if a cancel came
    (the workflow of a run recorded before this rule does not wait for the result), and
    the result is returned, so a workflow that waits aborts it too (abort is
    idempotent).
    """
    prepared: PrepareResult | None = None
    began = time.monotonic()
    try:
        with activity.shield_thread_cancel_exception():
            prepared = open_write_session(request)
            if unanswerable(began):
                # the attempt's deadline passed while the destination was not answering
                # (a local attempt cut at its 10 s, a regular one at its timeout): this
                # result reaches no one, and nothing else knows the session's id
                abort_unreceived_session(request.destination, prepared.session)
                return prepared
            if request.sweep_leftovers:
                # a lone transfer: every other upload on its key is an earlier run's or
                # attempt's (the key is this run's under its lock, and a run opens a
                # session only when it holds none)
                abort_earlier_runs_sessions(request.destination, prepared.session.session_id)
            else:
                abort_earlier_attempts_sessions(request.destination, prepared.session.session_id)
            # after the destination's checks (a refused one is left as it is); not for
            # a dataset's file (PrepareInput.sweep_leftovers)
            if request.sweep_leftovers:
                remove_leftovers(request.destination, request.session_key)
            if activity.is_cancelled():
                get_driver(parse_url(request.destination).scheme).abort(prepared.session)
    except CancelledError:
        if prepared is None:
            raise
    return prepared


#: seconds before a retried ``prepare`` was scheduled in which an earlier attempt of
#: it may have opened a session: the first, local, attempt runs for at most 10 s
#: (``staccato.workflows.calls.LOCAL_ATTEMPT_TIMEOUT``) and a Retry-After it was
#: answered is waited out before the regular activity is scheduled
EARLIER_ATTEMPTS_S = 60.0


def abort_earlier_attempts_sessions(destination: str, kept: str) -> None:
    """In a ``prepare`` that is not the step's first attempt (a local attempt cut at
    its timeout, or one that failed, may have had its S3 CreateMultipartUpload carried
    out with the answer lost or too late: no one would find that upload again, and the
    store keeps its parts, billed, until a lifecycle rule removes them): abort the
    sessions on ``destination`` (a canonical URL) opened since
    :data:`EARLIER_ATTEMPTS_S` before this activity was scheduled, but ``kept`` (the
    session just opened). Only for drivers whose sessions do not reopen by key;
    the transfer holds the destination's lock. Errors are logged by the driver, never
    raised."""
    info = activity.info()
    if info.is_local and info.attempt == 1:
        return
    parsed = parse_url(destination)
    driver = get_driver(parsed.scheme)
    if driver.features.reopens_by_key:
        return
    since = info.scheduled_time.timestamp() - EARLIER_ATTEMPTS_S - ORPHAN_CLOCK_SLACK_S
    aborted = driver.abort_orphaned_sessions(
        [parsed], since, time.time() + ORPHAN_CLOCK_SLACK_S, keep={kept}
    )
    if aborted:
        activity.logger.info(
            "aborted %d write session(s) an earlier prepare attempt opened on %s",
            aborted,
            redact(destination),
        )


#: seconds past an attempt's deadline before its session is taken as received by no
#: one: the server (or, for a local attempt, the worker's core) times the attempt out
#: at its deadline; the margin keeps a result that may still be delivered from being
#: aborted
UNANSWERABLE_MARGIN_S = 2.0


def unanswerable(began: float) -> bool:
    """Whether the running attempt's result can no longer be received: it was
    cancelled, or more than its start-to-close timeout (plus
    :data:`UNANSWERABLE_MARGIN_S`) passed since ``began`` (``time.monotonic()`` when
    this attempt's code started: later than the attempt's start, so the deadline
    computed from it is never early; no clock is compared with the server's), or its
    schedule-to-close deadline passed by more than ``ORPHAN_CLOCK_SLACK_S`` + the
    margin (the server's clock). ``activity.info()`` gives the start-to-close timeout
    for a local attempt too (the one its workflow asked for)."""
    if activity.is_cancelled():
        return True
    info = activity.info()
    timeout = info.start_to_close_timeout
    if (
        timeout is not None
        and time.monotonic() - began > timeout.total_seconds() + UNANSWERABLE_MARGIN_S
    ):
        return True
    overall = info.schedule_to_close_timeout
    if overall is not None and not info.is_local:
        deadline = info.scheduled_time.timestamp() + overall.total_seconds()
        if time.time() > deadline + ORPHAN_CLOCK_SLACK_S + UNANSWERABLE_MARGIN_S:
            return True
    return False


def abort_unreceived_session(destination: str, session: WriteSession) -> None:
    """Abort ``session``, opened by an attempt whose result no one receives
    (:func:`unanswerable`). Best effort: an error is logged, never raised (the next
    transfer to ``destination`` aborts what is left: :func:`abort_earlier_runs_sessions`)."""
    try:
        get_driver(parse_url(destination).scheme).abort(session)
    except StaccatoError as err:
        activity.logger.warning(
            "the write session a late prepare attempt opened on %s was not aborted "
            "(the next transfer there aborts it): %s",
            redact(destination),
            err,
        )
        return
    activity.logger.info(
        "aborted the write session opened on %s after this prepare attempt's deadline "
        "(no one receives its result)",
        redact(destination),
    )


def abort_earlier_runs_sessions(destination: str, kept: str) -> None:
    """In a lone transfer's ``prepare`` (not a dataset's file): abort every write session
    open on exactly ``destination`` (a canonical URL) but ``kept`` (the one just
    opened) and those opened after this attempt began (plus ``ORPHAN_CLOCK_SLACK_S``).
    Those were left by earlier runs or attempts to this destination: a prepare whose
    result came too late, a request a hung server read from its socket buffer after
    the client gave up; the transfer holds the destination's lock (one run writes it at
    a time) and a run opens a session only when it holds none (a resume reuses its
    session without a prepare). No lower time bound: a store may report every
    upload's start as one fixed date (moto: 2010). Only for drivers whose sessions
    do not reopen by key. Errors are logged by the driver, never raised."""
    parsed = parse_url(destination)
    driver = get_driver(parsed.scheme)
    if driver.features.reopens_by_key:
        return
    aborted = driver.abort_orphaned_sessions(
        [parsed], 0.0, time.time() + ORPHAN_CLOCK_SLACK_S, keep={kept}
    )
    if aborted:
        activity.logger.info(
            "aborted %d write session(s) that earlier runs or attempts left on %s",
            aborted,
            redact(destination),
        )


def remove_leftovers(destination: str, session_key: str) -> None:
    """Best effort, before a transfer's write session opens (``session_key``: its own,
    kept) or when its destination is found up to date: remove the temp data that
    earlier runs to ``destination`` (a canonical URL) left (a failed run whose clean-up gave up, its
    server down, or was cancelled; :meth:`Driver.remove_leftovers`). Not done for a
    dataset's files, batches or large (``PrepareInput.sweep_leftovers``: a dataset
    copies source names that may look like temp files); an error is logged, never
    raised (the copy does not depend on it)."""
    try:
        check_file_roots(destination)
        parsed = parse_url(destination)
        removed = get_driver(parsed.scheme).remove_leftovers(parsed, session_key)
    except (StaccatoError, OSError) as err:
        activity.logger.warning("leftover temp data beside %s not removed: %s", destination, err)
        return
    for path in removed:
        activity.logger.info("removed temp data an earlier run left: %s", path)


def open_write_session(request: PrepareInput) -> PrepareResult:
    """The body of :func:`prepare`, callable inside another activity (a dataset's batch).

    Raises:
        StaccatoError: as the driver's checks and ``open_session`` (not mapped).
    """
    with directory_memo():  # the checks before the session's and its own: one REALPATH
        return _open_write_session(request)


def _open_write_session(request: PrepareInput) -> PrepareResult:
    check_file_roots(request.destination)
    parsed = parse_url(request.destination)
    driver = get_driver(parsed.scheme)
    if request.make_parents:
        # a dataset's file: its directories are the dataset's to make (its listing
        # could not while this root was unreachable)
        driver.make_parents(parsed)
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
    # no activity.is_cancelled() here: in a process pool it is a round trip to the
    # worker's manager process (~1-5 ms, more than the rest of a small file); the
    # prepare activity checks it, a batch's heartbeat hook does between files
    return PrepareResult(
        session=session,
        chunk_size=chunk_size,
        note=note,
        verify_by_segments=not driver.features.stored_checksum,
        session_url=(driver.session_url(session) if driver.features.unpublished_readable else None),
    )


@activity.defn(name="publish")
def publish(request: PublishInput) -> str | None:
    """Re-check the source version, then atomically publish the destination.

    Heartbeats (:func:`~staccato.activities.liveness.beating_with`) say when it last
    moved bytes and the fresh copy it writes, if any (:class:`PublishBeat`): ``status``
    shows that copy's progress, and a publish waiting for its server as stalled.

    Returns:
        The destination's version read right after publish (ETag, size+mtime), the
        record of a known copy (:mod:`staccato.known_copies`); None when that stat
        failed (the publish itself succeeded: best effort, no copy is recorded).

    Raises:
        ApplicationError: as :func:`publish_session`'s errors, mapped
            (:func:`mapped_errors`).
    """
    tracker = Motion()
    size = request.session.size
    with motion_tracker(tracker), beating_with(lambda: _publish_beat(tracker, size)):
        return _publish(request)


def _publish_beat(tracker: Motion, size: int) -> tuple[PublishBeat]:
    """The publish's heartbeat details: when ``tracker`` last saw motion, as Unix
    seconds of the worker's clock; the bytes of the fresh copy written so far, of
    ``size``, and their rate since it began (bytes/s), once one began; the parts the
    store assembles while it does (``Motion.assembling``)."""
    now = time.monotonic()
    done, began = tracker.fresh_copied, tracker.fresh_began
    return (
        PublishBeat(
            moved_at=time.time() - (now - tracker.at),
            fresh_bytes_done=done if began is not None else None,
            fresh_bytes_total=size if began is not None else None,
            fresh_rate_bytes_per_s=(
                round(done / max(now - began, 1e-3), 1) if began is not None else None
            ),
            assembling_parts=tracker.assembling,
        ),
    )


@mapped_errors
def _publish(request: PublishInput) -> str | None:
    publish_session(request)
    destination = parse_url(request.session.url)
    try:
        return get_driver(destination.scheme).stat(destination).version
    except StaccatoError as err:
        activity.logger.warning("no version of %s after publish: %s", request.session.url, err)
        return None


def publish_session(request: PublishInput) -> None:
    """The body of :func:`publish`, callable inside another activity (a dataset's batch).

    Raises:
        SourceChangedError: the source's version moved since its stat.
        StaccatoError: as the driver's ``publish``.
    """
    check_file_roots(request.source, request.session.url)
    source = secrets.source_url(request.source, request.source_secret)
    now = get_driver(source.scheme).stat(source)
    if not same_version(request.source_info.version, now.version):
        before, after = request.source_info, now
        change = (
            f"size {before.size} -> {after.size} bytes"
            if after.size != before.size
            else f"same size, version {before.version!r} -> {after.version!r}"
        )
        raise SourceChangedError(
            f"source changed during the transfer: {request.source} was modified "
            f"({change}); nothing was published"
        )
    destination = parse_url(request.session.url)
    driver = get_driver(destination.scheme)
    started = time.monotonic()
    damaged, reread = driver.recheck_earlier_chunks(request.session)
    if reread:  # after an interruption or a foreign change only: says why it read data
        activity.logger.warning(
            "read back %d bytes an earlier worker life wrote, or changed after the last "
            "journaled chunk, to %s in %.1f s: %d chunks changed",
            reread,
            redact(request.session.url),
            time.monotonic() - started,
            len(damaged),
        )
    if damaged:
        _copy_again(request, source, driver, damaged)
    driver.publish(request.session, request.parts)


def _copy_again(
    request: PublishInput, source: EndpointURL, driver: Driver, damaged: dict[int, str]
) -> None:
    """Copy the chunks ``damaged`` (index -> journaled source checksum) from the source
    again, under its pinned version, into the write session: chunks an earlier
    attempt made durable whose bytes changed since (a write to the temp file while the
    worker or the service was down). One chunk-sized buffer; each chunk's new bytes
    must give its journaled checksum, the source's at the time.

    Raises:
        SourceChangedError: a chunk read from the source no longer gives the checksum
            journaled for it (the source changed under the same version).
        PermanentError: the source cannot serve a range (it was read whole or staged).
        StaccatoError: as the drivers raise them.
    """
    session = request.session
    if not request.source_info.supports_ranges:
        raise PermanentError(
            f"{len(damaged)} chunks of the temp file {session.session_id} changed while "
            f"the transfer was interrupted (first: chunk {min(damaged)}), and the source "
            f"{redact(request.source)} cannot serve a range to copy them again; nothing "
            "was published (copy it again)"
        )
    source_driver = get_driver(source.scheme)
    buffer = memoryview(bytearray(min(session.chunk_size, max(session.size, 1))))
    with driver.open_writer(session) as writer:
        for index, journaled in sorted(damaged.items()):
            offset, length = chunk_bounds(index, session.size, session.chunk_size)
            view = buffer[:length]
            with source_driver.open_read(source, request.source_info, offset, length) as reader:
                if reader.readinto_full(view) != length:
                    raise SourceChangedError(
                        f"source {redact(request.source)} ended before byte {offset + length}"
                    )
            algorithm = "sha256" if len(journaled) == 64 else "crc32c"
            digest = checksums.checksum_bytes(algorithm, view)
            if digest != journaled:
                raise SourceChangedError(
                    f"source changed during the transfer: chunk {index} of "
                    f"{redact(request.source)} reads as {algorithm}:{digest}, it read as "
                    f"{algorithm}:{journaled} when it was copied; nothing was published"
                )
            writer.write_chunk(index, view, digest)
            activity.logger.warning(
                "chunk %d of %s changed after it was written: copied again",
                index,
                redact(request.session.url),
            )


class HeartbeatStopped(Exception):
    """The verify activity was cancelled (the transfer was cancelled). Not an error
    (hence no ``Error`` in its name)."""


class ThrottledHeartbeat:
    """A :func:`keepalive` hook: heartbeats at most every 0.5 s (with the details
    ``details()`` returns, if given); raises :class:`HeartbeatStopped` once the
    activity is cancelled or the worker is gone."""

    def __init__(self, details: Callable[[], tuple[Any, ...]] | None = None) -> None:
        self._last = 0.0
        self._parent = os.getppid()
        self._details = details

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self._last < _HEARTBEAT_EVERY_S:
            return
        self._last = now
        if os.getppid() != self._parent:
            raise HeartbeatStopped("worker process is gone")
        if send_heartbeat(*(self._details() if self._details else ())):
            raise HeartbeatStopped("cancelled")


@activity.defn(name="verify")
def verify(request: VerifyInput) -> str:
    """Check the destination against the source-side checksum, heartbeating per chunk.

    Returns:
        The destination's checksum (hex), or ``""`` when only the size was checked.

    Raises:
        ApplicationError: ``ChecksumMismatchError`` (sizes or checksums differ) or another
            mapped error (see :func:`mapped_errors`).
        CancelledError: the activity was cancelled while reading back.
    """
    # its heartbeats say when it last heard from the destination (read-back bytes, a
    # line of the server's hash): ``status`` shows a verify waiting on a server that
    # does not answer as stalled, as a copy's (tester62: 73 s of a bare "100%")
    tracker = Motion()
    with motion_tracker(tracker), keepalive_hook(ThrottledHeartbeat(lambda: _verify_beat(tracker))):
        try:
            return _verify(request)
        except HeartbeatStopped as err:
            raise CancelledError(f"verify of {request.url} stopped: {err}") from None


def _verify_beat(tracker: Motion) -> tuple[VerifyBeat]:
    """The verify's heartbeat details: when ``tracker`` last saw motion, as Unix
    seconds of the worker's clock; the bytes read back so far and their rate over the
    attempt (bytes/s), once some were (``status`` shows them in phase ``verify``)."""
    now = time.monotonic()
    done = tracker.read_back
    return (
        VerifyBeat(
            moved_at=time.time() - (now - tracker.at),
            bytes_done=done or None,
            rate_bytes_per_s=round(done / max(now - tracker.began, 1e-3), 1) if done else None,
        ),
    )


@mapped_errors
def _verify(request: VerifyInput) -> str:
    return verify_object(request)


def verify_object(request: VerifyInput) -> str:
    """The body of :func:`verify` (without its heartbeat hook), callable inside another
    activity (a dataset's batch).

    Returns:
        As :func:`verify`.

    Raises:
        ChecksumMismatchError: sizes or checksums differ.
    """
    check_file_roots(request.url)
    url = parse_url(request.url)
    driver = get_driver(url.scheme)
    if request.mode == VerifyMode.none:
        return ""
    info = driver.stat(url)
    if info.size != request.size:
        raise ChecksumMismatchError(
            f"destination {request.url} has {info.size} bytes, expected {request.size}"
        )
    if request.mode == VerifyMode.size:
        return ""
    # through the caller's hook, never a bare activity.heartbeat(): inside a dataset's
    # batch that would replace the batch's checkpoint (its heartbeat details) with
    # nothing, and a retried batch would start again at its first file
    keepalive()
    if request.whole_object:
        # the stat above pins the read (one HeadObject, not one per layer)
        actual = driver.object_checksum(
            url, request.size, request.chunk_size, request.segments, request.checksum.value, info
        )
    else:
        try:
            actual = driver.segments_checksum(
                url, request.size, request.chunk_size, request.segments, request.checksum.value
            )
        except SourceChangedError:
            # the data read back is the destination's temp data, pinned as it was
            # when this read began: another writer changed it meanwhile. A damaged
            # segment (the workflow copies it again and reads every segment once
            # more), not a change of the source (tester71: "source changed: .../
            # .f.<hex>.staccato-part was modified")
            raise ChecksumMismatchError(
                f"destination {request.url} changed while it was read back: another "
                "process wrote to it"
            ) from None
    if actual != request.expected:
        where = ""
        if not request.whole_object:
            first = request.segments[0][0] * request.chunk_size
            end = min(request.size, request.segments[-1][1] * request.chunk_size)
            where = f" in bytes [{first}, {end})"
        raise ChecksumMismatchError(
            f"destination {request.url}{where} checksum {checksums.label(request.checksum, actual)} "
            f"differs from the source's {checksums.label(request.checksum, request.expected)}"
        )
    return actual


def check_after_publish(
    session: WriteSession,
    size: int,
    segments: list[tuple[int, int]],
    algorithm: ChecksumAlgorithm,
    expected: str,
    verified: bool,
    verify: VerifyMode,
) -> None:
    """The check after publish: the published object's size, or (``verify`` checksum
    and the data not verified before publish, e.g. S3 compared against its stored
    checksum) its checksum; nothing with ``verify`` none.

    Args:
        size: bytes expected at the destination.
        segments: ``(first_chunk, end_chunk)`` ranges ``expected`` combines.
        expected: the object's checksum as ``verify_object`` compares it.

    Raises:
        ChecksumMismatchError: "after publish: ..." (size or checksum differ).
    """
    if verify == VerifyMode.none:
        return
    mode = VerifyMode.size if verified or not verify.compares_checksums else VerifyMode.checksum
    try:
        verify_object(
            VerifyInput(
                url=session.url,
                size=size,
                chunk_size=session.chunk_size,
                segments=segments,
                checksum=algorithm,
                expected=expected,
                mode=mode,
                whole_object=True,
            )
        )
    except ChecksumMismatchError as err:
        raise ChecksumMismatchError(f"after publish: {err}") from None


@activity.defn(name="cleanup")
@heartbeating
@mapped_errors
def cleanup(session: WriteSession) -> None:
    """Remove a write session's temp data (temp file, multipart upload). Idempotent."""
    check_file_roots(session.url)
    url = parse_url(session.url)
    get_driver(url.scheme).abort(session)
