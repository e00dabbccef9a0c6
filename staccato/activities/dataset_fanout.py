"""The activities of a dataset with several destination roots (``cp -r SRC D1 D2 ...``):
``copy_batch_to_many`` (small files, each read once from the source and written to
every root that needs it) and ``compare_targets`` (a large file's ``--sync-level``
check at each root, before the group that reads it once is started).

A file of a batch: with ``--sync-level``, each target root is compared first
(:func:`staccato.sync.compare`) and only those that do not match are written; a file
matching everywhere is not read. Otherwise the file is read whole into memory once
(it is small: at most :data:`staccato.datasets.models.FAN_OUT_SMALL_MAX` bytes and one
chunk) and written to each target with a single transfer's guarantees (temp name,
read back or the store's CRC32C, publish:
:func:`staccato.activities.small_copy.write_whole`). One outcome per (file, root): a
permanent error fails that pair with its reason and never the other roots.

A root that fails transiently (its server down) is marked down for the rest of the
pass: its pairs are deferred (kept in the checkpoint) while the other roots go on.
After the pass, the deferred pairs are tried again in rounds (backoff 1 s doubling
to 10 s), each round reading each of their files once more, until ``--retry-for``
after the batch was first scheduled (the workflow gives the batch that long plus its
working time): then each deferred pair fails with the root's last error. So a down root costs the other roots nothing and re-reads
only the small files it still misses.

A root that *hangs* (a stopped S3 server or sshd: connections accepted, nothing
answered) fails nothing by itself: the file thread writing to it blocks and the group
in flight waits. So the batch runs a dataset batch's hang watch
(:func:`staccato.activities.retry_deadline.hang_watch`, as ``copy_batch``): each file
thread joins it (:func:`~staccato.activities.retry_deadline.watched`), as do the
resume's comparisons and the deferred rounds, and once no byte moved for
``STACCATO_HANG_S`` seconds (less with a short heartbeat timeout) past ``--retry-for``
(after the batch's first schedule or its last group counted, ``progress_at``) it
interrupts them all and the attempt fails, not retried, naming the source and every
root ("...: the server did not answer: ...") and, last, the roots whose calls it
interrupted ("(no answer from s3://...)": the hung one), its checkpoint in the
error's details.
An error raised once the watch fired is that give-up, never a pair failed for itself
or a root marked down (:func:`_unless_hung`), a healthy root's included. What the
healthy roots get: the files counted before keep their counts there; the batch's pairs
not ended fail at every root with the give-up's reason (the workflow's rule for a
batch failed for good), their write sessions removed. A down root costs the others
nothing; a hung one costs them the rest of its batch (the watch sees only that
nothing moved, not where: it gives the whole attempt up, as a batch to one root). Each heartbeat says when a byte last moved
(``moved_at``): ``status`` shows no rate while none moves.

Files: up to :data:`FILES_IN_FLIGHT` at once (threads; one at a time with SFTP on
either side), a group at a time: the checkpoint (:class:`FanOutBatchCheckpoint`,
the heartbeat details) moves after each group. A retried attempt (worker killed)
takes the files its checkpoint names ended past ``next_index`` (each heartbeat names
the files of the group in flight that ended at every root: ``ended_after``) as
recorded when every root still holds a file of their size (a stat each, the source
not read again), and compares the other files from its checkpoint on with each
target, group by group up to
the first group of which no pair matches (past the one in flight at the
kill: heartbeats are throttled, so the checkpoint may lag by a few groups; a root
that failed every file matches nowhere and does not stop it), and counts the
matches (nothing sent again): skipped when they match at ``--sync-level`` and
their root holds them unchanged since before the batch was first scheduled (up to
date, as a run without the crash counts them), copied when the root changed them
since (the killed attempt wrote them: :mod:`staccato.activities.resume_counts`) or
they match at the checksum level only; what their write sessions left under temp
names is removed. A match is counted with its file's group, when the pass counts
that group and moves the checkpoint past it, never before: an attempt killed during
the scan (or before the pass reached the file) left its matches out of its
checkpoint, and the next attempt, scanning again from the same ``next_index``, finds
them again (through 0.29 the scan counted them at once, and an attempt killed after
heartbeating them had them counted twice: 374-390 skipped of 300 files per root).
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import CancelledError

from staccato.activities import retry_deadline
from staccato.activities.dataset import (
    _Beat,
    _progress_meter,
    _prune_ended_after,
    _stopped_by_cancel,
    _with_checkpoint,
    abort_recorded_uploads,
    batch_pacer,
    holds_size,
    uploads_meter,
    watched_batch,
)
from staccato.activities.errors import mapped_errors
from staccato.activities.liveness import resent_while_blocked
from staccato.activities.object_copy import up_to_date
from staccato.activities.pacing import SharedPacer, beating_wait, paced_by
from staccato.activities.resume_counts import batch_scheduled_at, published_since
from staccato.activities.small_copy import read_whole_source, write_whole
from staccato.activities.stream_progress import StreamStopped
from staccato.activities.transfer import (
    HeartbeatStopped,
    ThrottledHeartbeat,
    check_file_roots,
    stat_source,
)
from staccato.datasets.models import (
    FAN_OUT_SMALL_MAX,
    DestinationCounts,
    FanOutBatchCheckpoint,
    FanOutBatchInput,
    FanOutBatchResult,
    FileFailure,
    TargetsInput,
    TargetsResult,
    file_class,
)
from staccato.datasets.names import source_url, target_url
from staccato.endpoints.base import (
    Motion,
    OpenSessions,
    directory_memo,
    keepalive_hook,
    open_sessions,
    session_tracker,
)
from staccato.endpoints.file.group import remove_temp
from staccato.errors import (
    ChecksumMismatchError,
    PermanentError,
    StaccatoError,
    WriteSessionLostError,
)
from staccato.models import ObjectInfo, SyncLevel
from staccato.urls import EndpointURL, parse_url, redact

#: files of a batch copied at once (threads: each file's waits overlap the others')
FILES_IN_FLIGHT = 4
#: attempts per (file, root) when the write proved bad (checksum, session lost)
_PAIR_ATTEMPTS = 2
#: seconds between two rounds of deferred pairs: first, and the cap of the doubling
_BACKOFF_FIRST_S = 1.0
_BACKOFF_MAX_S = 10.0


@dataclass
class _FileEnd:
    """One file's pass: per target, its outcome ('c' copied, 's' skipped, 'f' failed
    with a reason, 'd' deferred with the root's transient error)."""

    outcomes: dict[int, tuple[str, str]] = field(default_factory=dict)


class _Down:
    """The roots found down in this pass (shared by the file threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.roots: dict[int, str] = {}

    def mark(self, target: int, why: str) -> None:
        with self._lock:
            self.roots[target] = why

    def why(self, target: int) -> str | None:
        with self._lock:
            return self.roots.get(target)


@activity.defn(name="compare_targets")
def compare_targets(request: TargetsInput) -> TargetsResult:
    """Whether each destination of a large file already matches its source at
    ``request.options.sync_level`` (stat once; ``checksum`` reads both, heartbeating).
    A destination that cannot be compared (down, refused) counts as not matching:
    its transfer then says why.

    Raises:
        ApplicationError: the source cannot be stat-ed (mapped: missing, refused...).
        CancelledError: cancelled while reading.
    """
    with keepalive_hook(ThrottledHeartbeat()):
        try:
            return _compare_targets(request)
        except HeartbeatStopped as err:
            raise CancelledError(f"compare of {request.source} stopped: {err}") from None


@mapped_errors
def _compare_targets(request: TargetsInput) -> TargetsResult:
    check_file_roots(request.source, *request.destinations)
    level = request.options.sync_level or SyncLevel.size
    info = stat_source(request.source)
    matches = []
    for destination in request.destinations:
        try:
            same, _ = up_to_date(request.source, destination, level, request.options, info)
            matches.append(same)
        except StaccatoError:
            matches.append(False)
    return TargetsResult(up_to_date=matches)


@activity.defn(name="copy_batch_to_many")
def copy_batch_to_many(request: FanOutBatchInput) -> FanOutBatchResult:
    """Copy the batch's files to their target roots (see the module docstring).

    Raises:
        CancelledError: the dataset was cancelled (the writes in flight are removed).
        ApplicationError: a mapped error: a transient failure of the source (retried
            from the checkpoint).
    """
    interrupted: set[str] = set()
    token = _interrupted.set(interrupted)
    try:
        return watched_batch(
            lambda motion: _copy_batch(request, motion),
            request.options.retry_for_s,
            _previous(request).progress_at,
            _batch_endpoints(request),
            lambda message: _hung_words(message, interrupted),
        )
    finally:
        _interrupted.reset(token)


def _batch_endpoints(request: FanOutBatchInput) -> str:
    """What a batch copies, in the words of its hang watch's give-up."""
    roots = ", ".join(redact(r) for r in request.destination_roots)
    return f"copying {redact(request.source_root)} to {roots}"


#: the roots (redacted) whose calls the hang watch's interrupt ended, of the running
#: batch attempt (its threads share the set: they run in copies of its context)
_interrupted: ContextVar[set[str] | None] = ContextVar("fan_out_interrupted", default=None)


def _unless_hung(err: BaseException, root: str | None = None) -> None:
    """Raise the hang watch's give-up in place of ``err`` (what a driver made of its
    interrupt, or the interrupt itself) once the watch fired: a root that did not
    answer is not marked down (deferred), nor a pair failed for itself, and a healthy
    root interrupted with it is not either. ``root``: the URL the failed call talked
    to, named in the give-up (:func:`_hung_words`)."""
    hung = retry_deadline.hung()
    if hung is None and not isinstance(err, retry_deadline.EndpointHungError):
        return
    interrupted = _interrupted.get()
    if root is not None and interrupted is not None:
        interrupted.add(redact(root))
    if hung is not None:
        raise retry_deadline.EndpointHungError(hung) from None
    raise err


def _hung_words(hung: str, interrupted: set[str]) -> str:
    """The hang watch's give-up ``hung`` (naming the source and every root), with the
    roots whose calls it interrupted (a call still waiting past the watch's limit:
    the root that did not answer)."""
    if not interrupted:
        return hung
    return f"{hung} (no answer from {', '.join(sorted(interrupted))})"


def _previous(request: FanOutBatchInput) -> FanOutBatchCheckpoint:
    details = activity.info().heartbeat_details
    state: FanOutBatchCheckpoint | None = None
    if details:
        try:
            state = FanOutBatchCheckpoint.model_validate(details[0])
        except ValidationError:
            state = None
    if state is None:
        state = FanOutBatchCheckpoint()
    if len(state.destinations) != len(request.destination_roots):
        state.destinations = [DestinationCounts(destination=r) for r in request.destination_roots]
    return state


def _deadline(retry_for_s: float) -> float:
    """``time.monotonic()`` by which deferred pairs give up: ``retry_for_s`` after the
    batch was first scheduled (its ``--retry-for``), and before its start-to-close
    window ends (less a fifth of it, at least 2 s, to report in time)."""
    info = activity.info()
    now = datetime.now(UTC)
    left = (info.scheduled_time + timedelta(seconds=retry_for_s) - now).total_seconds()
    if info.start_to_close_timeout:
        window = info.start_to_close_timeout
        margin = max(2.0, window.total_seconds() / 5)
        left = min(left, (info.started_time + window - now).total_seconds() - margin)
    return time.monotonic() + left


@mapped_errors
def _copy_batch(
    request: FanOutBatchInput, motion: Motion | None = None
) -> FanOutBatchResult | None:
    """The batch (see the module); ``motion``: the attempt's, whose last move each
    heartbeat tells (``moved_at``).

    Raises:
        EndpointHungError: the attempt's hang watch gave up (whatever its files'
            threads failed with, or stopped by), the checkpoint in its details.
        StaccatoError: a transient failure of the source (retried from the checkpoint).
    """
    check_file_roots(request.source_root, *request.destination_roots)
    state = _previous(request)
    resuming = activity.info().attempt > 1
    # the uploads open (the earlier attempts' not aborted yet, and this one's)
    sessions = OpenSessions(state.uploads)
    beat = _Beat(
        state, uploads_meter(state, sessions, _progress_meter(state, None, motion)), sessions
    )
    root = parse_url(request.source_root)
    roots = [parse_url(r) for r in request.destination_roots]
    sftp = "sftp" in (root.scheme, *(r.scheme for r in roots))
    deadline = _deadline(request.options.retry_for_s)
    pacer = batch_pacer(request)
    handled_after: set[int] = set()  # files counted past ``next_index`` (a cancel's)
    # the resume's matches, by file index, until the pass counts their file (_pass)
    resumed: dict[int, _FileEnd] = {}
    try:
        # each destination directory checked once per batch, not per file
        with keepalive_hook(beat), directory_memo(), session_tracker(sessions):
            if state.uploads:
                abort_recorded_uploads(state.uploads, request.key)
            if pacer is not None:
                pacer.start(beating_wait(beat))
            in_flight = 1 if sftp else FILES_IN_FLIGHT
            if resuming:
                # its compares wait on the roots in this thread: kept alive meanwhile
                with resent_while_blocked():
                    _resume(request, root, roots, state, beat, in_flight, resumed)
            _pass(
                request,
                root,
                roots,
                state,
                beat,
                in_flight=in_flight,
                pacer=pacer,
                handled_after=handled_after,
                resumed=resumed,
            )
            _deferred_rounds(request, root, roots, state, beat, deadline, pacer)
            state.current = None
    except StreamStopped:
        hung = retry_deadline.hung()
        if hung is not None and not _stopped_by_cancel():
            # a heartbeat the watch's interrupt broke: the give-up, not a stop
            raise _with_checkpoint(retry_deadline.EndpointHungError(hung), state, beat) from None
        if not _stopped_by_cancel():
            return None
        # the dataset's cancel: what was counted (also the files of the group that
        # ended, see _pass) is the batch's last word; the rest is named
        counted = (set(range(state.next_index)) | handled_after) - {i for i, _ in state.deferred}
        # the roots where the resume found a file the pass did not reach count (they
        # hold it); the file itself is not handled
        for index, end in sorted(resumed.items()):
            _count_roots(request, state, index, end)
        return _result(
            state, not_handled=[f.name for i, f in enumerate(request.files) if i not in counted]
        )
    except StaccatoError as err:
        hung = retry_deadline.hung()
        if hung is not None and not isinstance(err, retry_deadline.EndpointHungError):
            # a driver made something else of the interrupt: the give-up's words
            raise _with_checkpoint(retry_deadline.EndpointHungError(hung), state, beat) from None
        # the retry starts at the first file not ended; the last attempt's error is
        # all its workflow gets when the batch fails for good (no heartbeat details):
        # it counts what this checkpoint says was handled
        _with_checkpoint(err, state, beat)
        raise
    except Exception:
        hung = retry_deadline.hung()
        if hung is None:
            raise
        # (an OSError a driver left unclassified after the interrupt's socket shutdown)
        raise _with_checkpoint(retry_deadline.EndpointHungError(hung), state, beat) from None
    return _result(state)


def _result(
    state: FanOutBatchCheckpoint, not_handled: list[str] | None = None
) -> FanOutBatchResult:
    """The batch's result: the counts of ``state`` and, for a batch stopped by the
    dataset's cancel, the names of the files it did not count (None: every one)."""
    return FanOutBatchResult(
        done=state.done,
        skipped=state.skipped,
        failed=state.failed,
        bytes=state.bytes,
        destinations=state.destinations,
        failures=state.failures,
        not_handled=not_handled,
    )


def _pass(
    request: FanOutBatchInput,
    root: EndpointURL,
    roots: list[EndpointURL],
    state: FanOutBatchCheckpoint,
    beat: _Beat,
    *,
    in_flight: int,
    pacer: SharedPacer | None = None,
    handled_after: set[int] | None = None,
    resumed: dict[int, _FileEnd] | None = None,
) -> None:
    """Every file from the checkpoint on, ``in_flight`` at a time; the checkpoint moves
    after each group (its files' outcomes counted first); their reads paced by
    ``pacer`` (None: not paced). Stopped by the dataset's cancel, the files of the
    group that ended are counted too (their indexes added to ``handled_after``).

    ``resumed``: the resume's matches (:func:`_resume`), file index -> their outcomes:
    such a file is sent to its other targets only (not read when none is left) and
    its matches join its outcomes, counted with its group; each is taken out of
    ``resumed`` once its file is counted (what is left: not counted)."""
    down = _Down()
    stop = threading.Event()
    files = len(request.files)
    resumed = {} if resumed is None else resumed

    def file_beat() -> None:
        if stop.is_set():
            raise StreamStopped("batch stopped")

    def run(index: int) -> _FileEnd:
        matched = resumed.get(index)
        if matched is None:
            return copy(index, request.files[index].targets)
        targets = [t for t in request.files[index].targets if t not in matched.outcomes]
        if not targets:
            return _FileEnd(dict(matched.outcomes))  # matched everywhere: not read
        try:
            end = copy(index, targets)
        except _StoppedBetweenRoots as stopped:
            stopped.end.outcomes.update(matched.outcomes)
            raise
        except StreamStopped as stopped:
            # stopped before a root was written: its matched roots count still
            left = {t: ("d", "stopped before this root was written") for t in targets}
            raise _StoppedBetweenRoots(_FileEnd({**matched.outcomes, **left})) from stopped
        end.outcomes.update(matched.outcomes)
        return end

    def copy(index: int, targets: list[int]) -> _FileEnd:
        # interrupted, with the batch's other threads, when its hang watch fires
        with keepalive_hook(file_beat), retry_deadline.watched():
            return _copy_file(request, index, root, roots, targets, down, file_beat, pacer)

    with ThreadPoolExecutor(in_flight, thread_name_prefix="fan-file") as pool:
        while state.next_index < files:
            group = range(state.next_index, min(files, state.next_index + in_flight))
            state.current = request.files[group[0]].name
            futures = [pool.submit(contextvars.copy_context().run, run, index) for index in group]
            try:
                sessions = open_sessions()
                while True:
                    if sessions is None:
                        _, pending = wait(futures, timeout=0.5)
                    else:
                        # a file's thread opened an upload: the beat below sends its id
                        # now (else: the group's end, or 0.5 s)
                        left: list[Future[Any]] = [f for f in futures if not f.done()]
                        if left:
                            left.append(sessions.waiter())
                            wait(left, timeout=0.5, return_when=FIRST_COMPLETED)
                        pending = {f for f in futures if not f.done()}
                    if pending:
                        # the group's files that ended (published at every root) are
                        # named in the checkpoint: a retry after a kill reads none again
                        _note_ended_after(request, state, group, futures)
                    beat()
                    if not pending:
                        break
            except BaseException as err:
                stop.set()  # each file in flight stops and removes its write session
                wait(futures)
                if isinstance(err, StreamStopped) and _stopped_by_cancel():
                    # no attempt follows the dataset's cancel: count the group's files
                    # that ended (next_index stays the first file of the group)
                    for index, future in zip(group, futures, strict=True):
                        stopped = future.exception()
                        if stopped is None:
                            resumed.pop(index, None)
                            _count(request, state, index, future.result())
                            if handled_after is not None:
                                handled_after.add(index)
                        elif isinstance(stopped, _StoppedBetweenRoots):
                            # its written roots count; the file itself is not handled
                            # (its other roots are deferred, so it is named as such)
                            resumed.pop(index, None)
                            _count(request, state, index, stopped.end)
                else:
                    _note_ended_after(request, state, group, futures)
                raise
            error = next((f.exception() for f in futures if f.exception() is not None), None)
            if error is not None:
                # the group's other files that ended: named in the failing checkpoint
                _note_ended_after(request, state, group, futures)
                raise error
            for index, future in zip(group, futures, strict=True):
                resumed.pop(index, None)
                _count(request, state, index, future.result())
            state.next_index = group[-1] + 1
            _prune_ended_after(state)
            beat()


def _note_ended_after(
    request: FanOutBatchInput,
    state: FanOutBatchCheckpoint,
    group: range,
    futures: list[Future[_FileEnd]],
) -> None:
    """Put in ``state.ended_after`` the files of ``group`` (a failing attempt's, not
    counted: the checkpoint stays at its first file) whose pass ended copied or up to
    date at every one of their roots (``futures``: their passes). A file prefailed,
    with a pair deferred, failed at a root, or moved by an earlier pass is left out
    (it fails with the batch); one an earlier attempt ended stays unless this one
    ended it otherwise."""
    kept = dict(state.ended_after or {})
    for index, future in zip(group, futures, strict=True):
        if not future.done() or future.exception() is not None:
            continue
        entry = request.files[index]
        outcomes = future.result().outcomes
        whole = (
            not entry.prefailed
            and str(index) not in state.partial
            and index not in state.moved
            and set(outcomes) == set(entry.targets)
            and all(outcome in ("c", "s") for outcome, _ in outcomes.values())
        )
        if whole:
            kept[str(index)] = {str(t): outcome for t, (outcome, _) in sorted(outcomes.items())}
        else:
            kept.pop(str(index), None)
    state.ended_after = {k: v for k, v in kept.items() if int(k) >= state.next_index} or None


def _copy_file(
    request: FanOutBatchInput,
    index: int,
    root: EndpointURL,
    roots: list[EndpointURL],
    targets: list[int],
    down: _Down,
    beat: Callable[[], None],
    pacer: SharedPacer | None = None,
) -> _FileEnd:
    """One file to its ``targets``: compare (sync level), read once (its bytes taken
    from the batch's ``pacer`` before they are written), write each.

    Raises:
        StreamStopped: cancelled.
        RetryableError: the source failed transiently (the attempt is retried).
    """
    end = _FileEnd()
    name = request.files[index].name
    options = request.options
    try:
        source = source_url(root, name).canonical
        urls = {t: target_url(roots[t], name).canonical for t in targets}
    except PermanentError as err:
        _unless_hung(err)
        for t in targets:
            end.outcomes[t] = ("f", str(err))
        return end
    needed = list(targets)
    if options.sync_level is not None:
        try:
            info = stat_source(source)
        except PermanentError as err:
            _unless_hung(err, request.source_root)
            for t in targets:
                end.outcomes[t] = ("f", str(err))
            return end
        needed = []
        for t in targets:
            if (why := down.why(t)) is not None:
                end.outcomes[t] = ("d", why)
                continue
            try:
                same, why = up_to_date(source, urls[t], options.sync_level, options, info)
            except PermanentError as err:
                _unless_hung(err, request.destination_roots[t])
                end.outcomes[t] = ("f", str(err))
                continue
            except StaccatoError as err:
                _unless_hung(err, request.destination_roots[t])
                down.mark(t, str(err))
                end.outcomes[t] = ("d", str(err))
                continue
            if same:
                end.outcomes[t] = ("s", why)
            else:
                needed.append(t)
    for t in list(needed):
        if (why := down.why(t)) is not None:
            end.outcomes[t] = ("d", why)
            needed.remove(t)
    if not needed:
        return end  # up to date (or deferred) everywhere: not read
    try:
        info, data = read_whole_source(source, _limit(request))
    except PermanentError as err:
        _unless_hung(err, request.source_root)
        for t in needed:
            end.outcomes[t] = ("f", str(err))
        return end
    if pacer is not None:
        paced_by(pacer, beat)(len(data))
    try:
        for t in needed:
            beat()
            end.outcomes[t] = _write(request, index, t, urls[t], data, info, down)
    except StreamStopped as stopped:
        if not end.outcomes:
            raise
        # stopped between two roots: the roots written before are published and count
        # (the root being written removed its session); the rest are not handled
        for t in needed:
            end.outcomes.setdefault(t, ("d", "stopped before this root was written"))
        raise _StoppedBetweenRoots(end) from stopped
    return end


class _StoppedBetweenRoots(StreamStopped):
    """A file stopped (the dataset's cancel) after some of its roots were written:
    ``end`` holds their outcomes, the roots not written as deferred ("d")."""

    def __init__(self, end: _FileEnd) -> None:
        super().__init__("batch stopped between a file's roots")
        self.end = end


def _limit(request: FanOutBatchInput) -> int:
    return min(FAN_OUT_SMALL_MAX, request.options.chunk_size)


def _write(
    request: FanOutBatchInput,
    index: int,
    target: int,
    url: str,
    data: bytes,
    info: ObjectInfo,
    down: _Down,
) -> tuple[str, str]:
    """One (file, root) write; its outcome (see :class:`_FileEnd`)."""
    if (why := down.why(target)) is not None:
        return ("d", why)
    try:
        for attempt in range(_PAIR_ATTEMPTS):
            key = _session_key(request, index, target, attempt)
            try:
                write_whole(url, data, info, request.options, key)
                return ("c", "")
            except (ChecksumMismatchError, WriteSessionLostError):
                if attempt + 1 == _PAIR_ATTEMPTS:
                    raise
    except PermanentError as err:
        _unless_hung(err, request.destination_roots[target])
        return ("f", str(err))
    except StaccatoError as err:  # transient: this root is down for the rest of the pass
        _unless_hung(err, request.destination_roots[target])
        down.mark(target, str(err))
        return ("d", str(err))
    return ("f", "not written")  # not reached


def _session_key(request: FanOutBatchInput, index: int, target: int, attempt: int) -> str:
    return f"{request.key}-{index}-t{target}" + (f"-{attempt}" if attempt else "")


def _count(
    request: FanOutBatchInput, state: FanOutBatchCheckpoint, index: int, end: _FileEnd
) -> None:
    """Count file ``index``'s pass: per root, and the file itself once no pair of it
    is deferred."""
    entry = request.files[index]
    kind = state.partial.pop(str(index), "f" if entry.prefailed else "s")
    # copied to some root (in this pass or an earlier one): a file that failed at
    # another root still counts its bytes as moved
    copied = (
        kind == "c"
        or index in state.moved
        or any(outcome == "c" for outcome, _ in end.outcomes.values())
    )
    for target, (outcome, why) in sorted(end.outcomes.items()):
        counts = state.destinations[target]
        if outcome == "c":
            counts.files_done += 1
            counts.bytes_done += entry.size
        elif outcome == "s":
            counts.files_skipped += 1
        elif outcome == "f":
            counts.files_failed += 1
            state.failures.append(
                FileFailure(
                    name=entry.name, reason=why, destination=request.destination_roots[target]
                )
            )
        else:
            state.deferred.append([index, target])
            state.reasons[str(target)] = why
            state.down_since.setdefault(str(target), _now())
            continue
        kind = file_class((kind, outcome))
    if any(i == index for i, _ in state.deferred):
        state.partial[str(index)] = kind
        if copied and index not in state.moved:
            state.moved.append(index)
        return
    if index in state.moved:
        state.moved.remove(index)
    if kind == "f":
        state.failed += 1
        if copied:
            state.bytes += entry.size
    elif kind == "c":
        state.done += 1
        state.bytes += entry.size
    else:
        state.skipped += 1


def _now() -> str:
    """Now, ISO 8601 UTC (``2026-12-05T02:07:03Z``)."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _forget_recovered(state: FanOutBatchCheckpoint) -> None:
    """Drop the ``down_since`` of the roots no pair of which is deferred any more."""
    waiting = {str(target) for _, target in state.deferred}
    state.down_since = {t: at for t, at in state.down_since.items() if t in waiting}


def _deferred_rounds(
    request: FanOutBatchInput,
    root: EndpointURL,
    roots: list[EndpointURL],
    state: FanOutBatchCheckpoint,
    beat: _Beat,
    deadline: float,
    pacer: SharedPacer | None = None,
) -> None:
    """Try the deferred pairs again, a round at a time, until none is left or the
    batch's time is up (then each fails with its root's last error)."""
    wait_s = _BACKOFF_FIRST_S
    while state.deferred:
        if time.monotonic() + wait_s >= deadline:
            pairs, state.deferred = state.deferred, []
            by_file: dict[int, _FileEnd] = {}
            for index, target in pairs:
                why = state.reasons.get(str(target), "destination unreachable")
                by_file.setdefault(index, _FileEnd()).outcomes[target] = (
                    "f",
                    f"gave up retrying within the batch's --retry-for: {why}",
                )
            for index, end in sorted(by_file.items()):
                _count(request, state, index, end)
            _forget_recovered(state)
            beat(force=True)
            return
        until = time.monotonic() + wait_s
        while time.monotonic() < until:
            beat()
            time.sleep(min(0.25, max(0.0, until - time.monotonic())))
        wait_s = min(_BACKOFF_MAX_S, wait_s * 2)
        by_index: dict[int, list[int]] = {}
        for index, target in state.deferred:
            by_index.setdefault(index, []).append(target)
        down = _Down()
        for index, targets in sorted(by_index.items()):
            state.current = request.files[index].name
            beat()
            with retry_deadline.watched():
                end = _copy_file(request, index, root, roots, targets, down, beat, pacer)
            # the pairs leave the checkpoint only now, with their outcomes counted
            state.deferred = [pair for pair in state.deferred if pair[0] != index]
            _count(request, state, index, end)
            _forget_recovered(state)
        beat(force=True)


def _resume(
    request: FanOutBatchInput,
    root: EndpointURL,
    roots: list[EndpointURL],
    state: FanOutBatchCheckpoint,
    beat: _Beat,
    in_flight: int,
    resumed: dict[int, _FileEnd],
) -> None:
    """A retried attempt: the previous one wrote the files a group of ``in_flight`` at
    a time from its checkpoint on, and its checkpoint (throttled heartbeats) may lag
    behind by some groups. So from the checkpoint on, group by group, each (file,
    root) pair that matches is put in ``resumed`` (file index -> its matches' outcomes)
    and is not sent again (what its write session left is removed): skipped ('s')
    when it matches at ``--sync-level`` and the root holds it unchanged since before
    the batch was first scheduled, copied ('c') when the root changed it since (an
    earlier attempt wrote it) or it matches at the checksum level only (or without a
    sync level), until a group none of whose pairs matches: past the group in flight
    at the kill, nothing was started.

    Why: the checkpoint counts the files before ``next_index`` only, and what the
    killed attempt did with each file past it (in a sync run: skipped some, copied
    the others) is lost with it; the root's change time tells them apart
    (:mod:`staccato.activities.resume_counts`). Where a root keeps none (SFTP), a
    pair the killed attempt copied after its last checkpoint counts as skipped.

    Nothing is counted here (``state`` is left as it is, but its ``current``): the pass
    counts each match with its file's other roots, when it counts the file's group
    and moves ``next_index`` past it (:func:`_pass`). Counted here, in the checkpoint
    each heartbeat carries while ``next_index`` stays behind them, the matches of an
    attempt killed before its pass reached them were counted again by the next
    attempt, which scans from the same ``next_index`` (a sync re-run to two roots
    killed twice, under load: 374-390 skipped of 300 files per root).

    A file the checkpoint names ended (``ended_after``, every root 'c' or 's') is put
    in ``resumed`` as recorded, without reading its source, when each root still
    holds a file of its size (:func:`_recorded_targets`); else compared as above.

    A group with unmatched pairs is not where the scan stops: a root that failed a
    file (read-only, full) holds nothing of a group the previous attempt ended, so
    stopping at the first unmatched pair sent every later group again to the roots
    that had taken it. The pairs that do not match are left to the pass (a file
    matching everywhere is not read again)."""
    start = state.next_index
    files = len(request.files)
    recorded = dict(state.ended_after or {})
    while start < files:
        any_matched = False
        for index in range(start, min(files, start + in_flight)):
            state.current = request.files[index].name
            beat()
            with retry_deadline.watched():
                known = _recorded_targets(request, index, roots, recorded.get(str(index)))
                if known is not None:
                    # named ended in the checkpoint and still there: not read again
                    resumed[index] = known
                    any_matched = True
                    continue
                copied, skipped = _matching_targets(request, index, root, roots)
            if not copied and not skipped:
                continue
            any_matched = True
            end = resumed.setdefault(index, _FileEnd())
            for t in copied:
                end.outcomes[t] = ("c", "written by an earlier attempt")
            for t in skipped:
                end.outcomes[t] = ("s", "up to date")
        if not any_matched:
            return
        start += in_flight


def _recorded_targets(
    request: FanOutBatchInput,
    index: int,
    roots: list[EndpointURL],
    recorded: dict[str, str] | None,
) -> _FileEnd | None:
    """File ``index``'s outcomes as the checkpoint recorded them (``recorded``: its
    ``ended_after`` entry, root index as text -> ``'c'`` or ``'s'``), when every one
    of its targets is named there and still holds a file of its size (a stat of each
    root, nothing read of the source); else None: the file is compared as before
    (:func:`_matching_targets`), so one removed or resized behind our back is copied
    again (also when a root cannot be asked now). What the pairs' write sessions
    left under temp names is removed."""
    if not recorded:
        return None
    entry = request.files[index]
    if set(recorded) != {str(t) for t in entry.targets}:
        return None
    end = _FileEnd()
    for t in entry.targets:
        kind = recorded[str(t)]
        try:
            dst = target_url(roots[t], entry.name)
            if kind not in ("c", "s") or not holds_size(dst, entry.size):
                return None
        except StaccatoError as err:
            _unless_hung(err, request.destination_roots[t])
            return None  # compared as before (which says why, or finds it down)
        end.outcomes[t] = (kind, "recorded by an earlier attempt")
    for t in entry.targets:
        dst = target_url(roots[t], entry.name)
        if dst.scheme == "file":
            for attempt in range(_PAIR_ATTEMPTS):
                remove_temp(dst, _session_key(request, index, t, attempt))
    return end


def _count_roots(
    request: FanOutBatchInput, state: FanOutBatchCheckpoint, index: int, end: _FileEnd
) -> None:
    """Count at their roots the copied ('c') and skipped ('s') outcomes of ``end``
    (file ``index``'s resumed matches), not the file itself: a batch stopped by the
    dataset's cancel before its pass reached the file."""
    size = request.files[index].size
    for target, (outcome, _) in sorted(end.outcomes.items()):
        counts = state.destinations[target]
        if outcome == "c":
            counts.files_done += 1
            counts.bytes_done += size
        elif outcome == "s":
            counts.files_skipped += 1


def _matching_targets(
    request: FanOutBatchInput, index: int, root: EndpointURL, roots: list[EndpointURL]
) -> tuple[list[int], list[int]]:
    """The targets of file ``index`` that already hold it: those an earlier attempt
    wrote (matching at ``options.sync_level`` and changed since the batch was first
    scheduled, or matching at the checksum level only, or without a sync level:
    copied), and those that match at ``options.sync_level`` unchanged since before
    (up to date: skipped). The temp data their write sessions may have left is
    removed."""
    entry = request.files[index]
    options = request.options
    try:
        source = target_url(root, entry.name).canonical
        info = stat_source(source)
    except StaccatoError as err:
        _unless_hung(err)
        return [], []  # the pass says why
    copied: list[int] = []
    skipped: list[int] = []
    since = batch_scheduled_at()
    for t in entry.targets:
        try:
            dst = target_url(roots[t], entry.name)
            same = False
            if options.sync_level is not None:
                same, _ = up_to_date(source, dst.canonical, options.sync_level, options, info)
            if same and published_since(dst, since):
                copied.append(t)  # written since the batch began: by an earlier attempt
            elif same:
                skipped.append(t)
            elif options.sync_level != SyncLevel.checksum:
                same, _ = up_to_date(source, dst.canonical, SyncLevel.checksum, options, info)
                if same:
                    copied.append(t)
        except StaccatoError as err:
            _unless_hung(err, request.destination_roots[t])
            continue
        if same and dst.scheme == "file":
            for attempt in range(_PAIR_ATTEMPTS):
                remove_temp(dst, _session_key(request, index, t, attempt))
    if copied:
        activity.logger.info(
            "%s: written by the previous attempt to %d roots", entry.name, len(copied)
        )
    return copied, skipped
