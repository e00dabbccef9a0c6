"""Giving up within ``--retry-for`` in the activities whose schedule-to-close deadline
also allows the time one attempt may take (``copy_stream``, ``confirm_source``,
``stage_source``; :data:`staccato.workflows.failures.ALLOWANCE_STEPS`).

The workflow schedules them with ``schedule_to_close = budget + start_to_close``:
``budget`` is what is left of ``--retry-for`` since the transfer last made progress,
``start_to_close`` the generous time one attempt may take
(:func:`staccato.workflows.calls.copy_timeout`, 600 s and more), so that a long healthy
attempt is never cut off. Left to Temporal, attempts that all fail at once were
retried for that whole allowance past ``--retry-for`` (a full disk, a stopped sshd:
about 10 minutes more, ``status`` showing the transfer running). So the activity
itself turns a retryable failure into a non-retryable one, worded as the workflow's
own give-up (:func:`staccato.workflows.failures.gave_up_message`), once the deadline
passed without progress:

* the deadline is the activity's first scheduled time plus the retry budget it was
  scheduled with (read back as ``schedule_to_close - start_to_close``), or
  ``--retry-for`` after the last progress of any of its attempts, whichever is later;
* progress: a stream's durable bytes grew (``Checkpoint.progress_at``, carried from
  attempt to attempt in the heartbeat details), a staging read source bytes
  (``StagingProgress.progress_at``); ``confirm_source`` measures none;
* a failing attempt gives up when it *started* at or after the deadline: attempts
  that fail at once start every 10 s at most (``calls.RETRY``), so the transfer fails
  about one backoff after the deadline, while an attempt that started before it (one
  that waited long for a connection slot, or copied for an hour) is retried once
  more, and one that made progress is never given up on.

An attempt that *hangs* (an endpoint that accepts the connection and then answers
nothing: a stopped S3 server, a frozen sshd) never fails by itself: it was ended by
its heartbeat timeout or a driver's 60 s I/O timeout, the next attempt hung again, and
Temporal retried so for the whole allowance (10 minutes and more past
``--retry-for``). So the steps that ask for it (``watch_hangs``) also run a *hang
watch*: a thread that, once the deadline has passed, gives the attempt up when no
byte moved (:func:`staccato.endpoints.base.moved`: read from the source, sent to or
acknowledged by the destination, a durable chunk) for :func:`hang_s` seconds
(``STACCATO_HANG_S``, 30 by default) and, for a stream, once ``--retry-for`` has
passed since it last got further (its bytes done, durable or in flight, grew past
what any attempt had reached: ``Checkpoint.reached_at``, carried from attempt to
attempt, told here with :func:`reached`), not only since its last durable chunk: a
stream whose chunk takes longer to read than ``--retry-for`` (large chunks, a slow
source) gave a source that hung mid-chunk up after the hang limit alone, before
``--retry-for`` had passed since its last byte (tester T5, an SFTP source). Bytes read
or sent again by a retried attempt are not further (each attempt killed by its
heartbeat timeout would start the count again). A failing attempt's give-up above
still counts from durable progress. It interrupts the attempt's thread
(:func:`staccato.interrupts.interrupt`, deferred while the stream guard is shielded)
and the attempt fails, not retried, with a message naming the step's endpoints and
how long nothing moved.

A dataset's ``copy_batch`` runs the same watch (:func:`hang_watch`) over many
threads: its own, which heartbeats, and up to four that copy its files. Each thread
joins the watch while it talks to an endpoint (:func:`watched`: a file's copy or
comparison, a resume's clean-up, the reads sent ahead), and the watch interrupts
every thread joined (deferred for one in a :func:`staccato.activities.stream_guard.shield`
block); a thread that joins after it fired fails at once. Its progress is a file
handled (``BatchCheckpoint.progress_at``, told with :func:`progressed`), and a
file's copy ending counts as bytes moved. Before, a batch's file threads stayed
blocked on a stopped S3 server while its own thread kept heartbeating: the dataset
stayed ``running`` with no reason (tester). A batch to several roots
(``copy_batch_to_many``, :mod:`staccato.activities.dataset_fanout`) runs it the same
way. Once the watch fired it interrupts its
threads every second whatever moved since: the attempt is given up.

Only attempts scheduled with ``retry_for_s`` in their input do this (an input from a
worker before the field keeps Temporal's deadline alone). Times are wall-clock Unix
seconds: the worker's clock is compared with the server's scheduled time, so a skew
between them moves the give-up by as much.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from datetime import timedelta
from typing import Any, Protocol, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from staccato import interrupts, settings
from staccato.activities.liveness import forget_sent, heartbeat_on_behalf_of
from staccato.endpoints.base import Motion, motion_tracker
from staccato.endpoints.base import moved as _moved
from staccato.errors import RetryableError, SettingsError, WorkerStoppingError
from staccato.workflows.failures import gave_up_message

#: this attempt's last progress (Unix seconds), recorded by :func:`progressed`
_progress_at: ContextVar[float | None] = ContextVar("retry_deadline_progress_at", default=None)


class _WithRetryFor(Protocol):
    retry_for_s: float | None


In = TypeVar("In", bound=_WithRetryFor)
Out = TypeVar("Out")


def progressed(at: float | None = None) -> float:
    """Record that this attempt made progress at ``at`` (Unix seconds; None: now).

    Returns:
        The time recorded.
    """
    moment = time.time() if at is None else at
    _progress_at.set(moment)
    watch = _watch.get()
    if watch is not None:
        watch.progress_at = latest(watch.progress_at, moment)
    _moved()
    return moment


def reached(at: float | None = None) -> float:
    """Record that this attempt's stream got further than any attempt before, at
    ``at`` (Unix seconds; None: now): its hang watch counts ``--retry-for`` from it.

    Returns:
        The time recorded.
    """
    moment = time.time() if at is None else at
    watch = _watch.get()
    if watch is not None:
        watch.reached_at = latest(watch.reached_at, moment)
    return moment


#: ``ApplicationError.type`` of :class:`staccato.activities.stream_lease.StreamLeaseExpiredError`
_LEASE_EXPIRED = "StreamLeaseExpired"
#: seconds between the hang watch's looks
WATCH_TICK_S = 0.5
#: seconds between repeated interrupts of a hung attempt (a broad ``except`` in a
#: driver may swallow one)
_REPEAT_S = 1.0
#: the share of the attempt's heartbeat timeout it may go without moving a byte, past
#: its deadline, when that is shorter than :func:`hang_s`
HEARTBEAT_SHARE = 0.6


def hang_limit(hang: float, heartbeat_timeout_s: float | None) -> tuple[float, str]:
    """Seconds an attempt past its deadline may go without moving a byte, and what set
    them, for the give-up message: ``hang`` (:func:`hang_s`, ``STACCATO_HANG_S``), or
    :data:`HEARTBEAT_SHARE` of the attempt's heartbeat timeout (seconds; None: none)
    when that is shorter (at least 1 s). The message named STACCATO_HANG_S for a limit
    the heartbeat timeout set (tester72: "limit 12 s, STACCATO_HANG_S" with it at 30)."""
    if heartbeat_timeout_s:
        beats = heartbeat_timeout_s * HEARTBEAT_SHARE
        if beats < hang:
            return max(1.0, beats), (
                f"{HEARTBEAT_SHARE:.0%} of the {heartbeat_timeout_s:g} s heartbeat timeout "
                f"(heartbeat_timeout_s), below STACCATO_HANG_S {hang:g} s"
            )
    return hang, "STACCATO_HANG_S"


def hang_s() -> float:
    """Seconds an attempt past its deadline may go without moving a byte before it
    gives up (``STACCATO_HANG_S``, default 30; at least 1). Checked with every setting
    when the worker starts; when another setting went bad since (a staging directory
    replaced by a file), the default: the step that reads that setting fails with its
    reason, and the watch around it must not fail first with a retryable error."""
    try:
        return settings.current().hang_s
    except SettingsError:
        return float(settings.Settings.model_fields["hang_s"].default)


class EndpointHungError(RetryableError):
    """Raised in an attempt's thread by its hang watch (see the module): no byte moved
    for :func:`hang_s` seconds past the deadline. The wrapper turns the attempt's
    failure into the non-retryable give-up whatever the driver made of this."""

    TYPE = "EndpointHung"


class _HangWatch:
    """The hang watch of one attempt (see the module): it interrupts the threads that
    joined it (the attempt's own thread, for a single stream; each thread of a batch
    while it talks to an endpoint, :func:`watched`)."""

    def __init__(
        self,
        at: float,
        retry_for_s: float,
        progress_at: float | None,
        where: str,
        *,
        motion: Motion | None = None,
        caller: bool = True,
        reached_at: float | None = None,
    ):
        self.at = at  # the deadline before any progress of this attempt (Unix seconds)
        self.retry_for_s = retry_for_s
        self.progress_at = progress_at
        #: when the stream last got further than any attempt before (Unix seconds:
        #: :func:`reached`, or an earlier attempt's), or None (not a stream, not yet)
        self.reached_at = reached_at
        self.where = where
        # Temporal times out an attempt whose thread is blocked without heartbeats (a
        # send to a stopped server) at its heartbeat timeout, and the failure of an
        # attempt timed out is lost: give up well before that.
        timeout = activity.info().heartbeat_timeout
        self.limit_s, self.limit_by = hang_limit(
            hang_s(), timeout.total_seconds() if timeout else None
        )
        self.motion = motion if motion is not None else Motion()
        # idle since the attempt started (dispatching it to this thread took time the
        # server's heartbeat timeout counts too), not since this watch was made
        started = activity.info().started_time.timestamp()
        self.motion.at = min(
            self.motion.at, time.monotonic() - min(max(0.0, time.time() - started), self.limit_s)
        )
        #: the threads interrupted when the watch fires (idents)
        self.threads: set[int] = {threading.get_ident()} if caller else set()
        #: the attempt's own thread, whose heartbeats the watch sends once on its behalf
        #: (a single stream's; None for a batch: its heartbeats are not noted)
        self.owner: int | None = threading.get_ident() if caller else None
        self.message: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # in the activity's context: its one heartbeat on the attempt's behalf
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._run,), name="hang-watch", daemon=True
        )

    def deadline(self) -> float:
        p = self.progress_at
        return self.at if p is None else max(self.at, p + self.retry_for_s)

    def gives_up(self, idle: float) -> bool:
        """Whether the attempt is given up now: past its deadline and ``--retry-for``
        past the last time the stream got further (:attr:`reached_at`), and no byte
        moved in this attempt for :attr:`limit_s` (``idle``: seconds since its last
        motion)."""
        now = time.time()
        reached = self.reached_at
        return (
            idle >= self.limit_s
            and now >= self.deadline()
            and (reached is None or now >= reached + self.retry_for_s)
        )

    def words(self, idle: float) -> str:
        """How long nothing moved, for the give-up message."""
        moved = f"no byte moved for {idle:.0f} s (limit {self.limit_s:g} s, {self.limit_by})"
        if self.reached_at is None:
            return f"{moved} past the --retry-for deadline"
        return (
            f"{moved}, and the copy got no further for "
            f"{max(0.0, time.time() - self.reached_at):.0f} s "
            f"(--retry-for {self.retry_for_s:g} s)"
        )

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        fired_at = 0.0
        while not self._stop.wait(WATCH_TICK_S):
            idle = time.monotonic() - self.motion.at
            if self.message is None:
                if self.motion.elsewhere:
                    continue  # the endpoints copy between themselves (server-side)
                if not self.gives_up(idle):
                    continue
            elif time.monotonic() - fired_at < _REPEAT_S:
                # given up: repeated whatever moved since (a request sent again on a
                # new connection reaches a stopped server's kernel, and no further)
                continue
            with self._lock:
                if self._stop.is_set():
                    return
                first = self.message is None
                message = self.message or (
                    f"{self.where}: the server did not answer: {self.words(idle)}; it "
                    "may be hung or stopped. Check it, then run the transfer again"
                )
                if first:
                    self.message = message
                    activity.logger.warning("%s", message)
                fired_at = time.monotonic()
                for ident in list(self.threads):
                    # a thread talking to the worker's manager gets it when that call
                    # is done (staccato.interrupts.deferred)
                    _hang_messages[ident] = message
                    try:
                        interrupts.interrupt(ident, _ThreadHung)
                    except ValueError:  # the thread ended meanwhile
                        self.threads.discard(ident)
                        _hang_messages.pop(ident, None)
            if first:
                self._keep_attempt()

    def _keep_attempt(self) -> None:
        """One heartbeat on the interrupted attempt's behalf (its last details), once:
        the interrupted thread takes a moment to return and fail the attempt (over a
        second at a load of 15), and the watch fires at :data:`HEARTBEAT_SHARE` of
        the heartbeat timeout; when Temporal timed the attempt out first, its
        non-retryable give-up was lost and Temporal retried, every attempt hanging
        again until the whole allowance ran out (ci67: 150 s and more, attempts 6 to
        11 lost so). Once only: an attempt whose thread never returns still times
        out. Not for a batch (:attr:`owner` None): its heartbeats are not noted, and
        the previous attempt's details would take back its progress."""
        if self.owner is None:
            return
        try:
            heartbeat_on_behalf_of(self.owner)
        except Exception as err:  # noqa: BLE001 - best effort: the timeout stands
            activity.logger.warning("hang watch: heartbeat not sent: %s", err)

    def joined(self) -> contextlib.AbstractContextManager[None]:
        """The calling thread interrupted with the attempt's others when the watch
        fires, for the block (re-entered: a no-op). A thread that joins after it
        fired fails at once with :class:`EndpointHungError`."""
        return _Joined(self)

    def leave(self, ident: int) -> None:
        """Interrupt thread ``ident`` no more; take back an interrupt it has not
        raised yet."""
        with self._lock:
            self.threads.discard(ident)
            if self.message is not None:
                interrupts.cancel(ident)
                _hang_messages.pop(ident, None)

    def stop(self) -> str | None:
        """Stop watching, take back the interrupts not raised yet; the give-up message
        if the watch fired."""
        with self._lock:
            self._stop.set()
            if self.message is not None:
                for ident in self.threads:
                    interrupts.cancel(ident)
                    _hang_messages.pop(ident, None)
            self.threads.clear()
        return self.message


class _Joined:
    """:meth:`_HangWatch.joined` (a class, not a generator: its exit must remove the
    thread even when the watch's interrupt is raised in it)."""

    __slots__ = ("_watch", "_ident", "_outer")

    def __init__(self, watch: _HangWatch) -> None:
        self._watch = watch
        self._ident = threading.get_ident()
        self._outer = False

    def __enter__(self) -> None:
        watch = self._watch
        try:
            with watch._lock:
                if watch.message is not None:
                    raise EndpointHungError(watch.message)
                if self._ident in watch.threads:
                    return  # joined already (an enclosing block leaves)
                watch.threads.add(self._ident)
                self._outer = True
        except EndpointHungError:
            self.__exit__()  # an interrupt raised right after joining: leave
            raise

    def __exit__(self, *exc: object) -> None:
        if not self._outer:
            return
        while True:
            try:
                self._watch.leave(self._ident)
                return
            except EndpointHungError:
                continue  # raised here before it was taken back: leave all the same


#: thread ident -> the message of the hung attempt interrupted there
_hang_messages: dict[int, str] = {}


class _ThreadHung(EndpointHungError):
    """:class:`EndpointHungError` as :func:`staccato.interrupts.interrupt` builds it
    (no arguments): its message comes from the watch."""

    def __init__(self, message: str = "") -> None:
        super().__init__(
            message or _hang_messages.get(threading.get_ident(), "endpoint did not answer")
        )


_watch: ContextVar[_HangWatch | None] = ContextVar("retry_deadline_watch", default=None)


@contextlib.contextmanager
def hang_watch(
    retry_for_s: float | None, progress_at: float | None, where: str, motion: Motion
) -> Iterator[_HangWatch | None]:
    """The hang watch (see the module) of an activity whose work runs in several
    threads (a dataset's ``copy_batch``): each thread joins it while it talks to an
    endpoint (:func:`watched`, also in threads run in copies of this context), and all
    of them are interrupted when no byte moved (``motion``, which the caller tracks:
    :func:`~staccato.endpoints.base.motion_tracker`) for :func:`hang_s` seconds past
    the deadline (:func:`deadline` of ``retry_for_s``, or ``retry_for_s`` after
    ``progress_at``, the last progress of earlier attempts, or after what this one
    reports with :func:`progressed`). Yields None (no watch) when ``retry_for_s`` is
    None or the activity is local. After the block, :func:`hung`'s message says
    whether it fired: the caller fails the attempt with :func:`hung_error`."""
    if retry_for_s is None or activity.info().is_local:
        yield None
        return
    watch = _HangWatch(
        deadline(retry_for_s, None), retry_for_s, progress_at, where, motion=motion, caller=False
    )
    token = _watch.set(watch)
    watch.start()
    try:
        yield watch
    finally:
        watch.stop()
        _watch.reset(token)


def watched() -> contextlib.AbstractContextManager[None]:
    """The calling thread joins the running attempt's hang watch for the block (see
    :func:`hang_watch`); nothing without one.

    Raises:
        EndpointHungError: the watch fired already (entering), or fires in the block.
    """
    watch = _watch.get()
    return contextlib.nullcontext() if watch is None else watch.joined()


def hung() -> str | None:
    """The give-up message of the running attempt's hang watch if it fired, else None."""
    watch = _watch.get()
    return None if watch is None else watch.message


def hung_error(message: str, err: ApplicationError | None = None) -> ApplicationError:
    """The non-retryable failure of an attempt its hang watch gave up (``message``),
    with ``err``'s details (what the attempt failed with, whatever a driver made of
    the interrupt)."""
    details: tuple[Any, ...] = tuple(err.details) if err is not None else ()
    return ApplicationError(message, *details, type=EndpointHungError.TYPE, non_retryable=True)


def latest(*times: float | None) -> float | None:
    """The latest of ``times`` that are set, else None."""
    known = [t for t in times if t is not None]
    return max(known) if known else None


def deadline(retry_for_s: float, progress_at: float | None) -> float:
    """When the running activity gives up (Unix seconds): its first scheduled time
    plus the retry budget it was scheduled with, or ``retry_for_s`` after
    ``progress_at``, whichever is later."""
    info = activity.info()
    whole, attempt = info.schedule_to_close_timeout, info.start_to_close_timeout
    budget = (
        max(whole - attempt, timedelta(0)).total_seconds()
        if whole is not None and attempt is not None
        else retry_for_s
    )
    at = info.scheduled_time.timestamp() + budget
    return at if progress_at is None else max(at, progress_at + retry_for_s)


def within_retry_for(
    previous: Callable[[], float | None],
    watch_hangs: Callable[[In], str] | None = None,
    previous_reached: Callable[[], float | None] | None = None,
) -> Callable[[Callable[[In], Out]], Callable[[In], Out]]:
    """Wrap an activity (outside :func:`~staccato.activities.errors.mapped_errors`) so
    a retryable ``ApplicationError`` of an attempt that started at or after its
    deadline (:func:`deadline`) becomes a non-retryable one with the give-up wording,
    the same ``type`` and details.

    Args:
        previous: the last progress of earlier attempts (Unix seconds, from the
            heartbeat details), or None; this attempt's is what it recorded with
            :func:`progressed`.
        watch_hangs: for steps whose drivers report moved bytes: the endpoints the
            request talks to, in words (for the hang watch's message); None: no
            hang watch.
        previous_reached: when the stream last got further, in an earlier attempt
            (Unix seconds, from the heartbeat details), or None: the hang watch's
            ``--retry-for`` counts from it or from what this attempt reports with
            :func:`reached` (neither: from the deadline alone).
    """

    def decorate(fn: Callable[[In], Out]) -> Callable[[In], Out]:
        @functools.wraps(fn)
        def wrapper(request: In) -> Out:
            forget_sent()  # a previous activity's, on this thread
            token = _progress_at.set(None)
            watch: _HangWatch | None = None
            if watch_hangs is not None and request.retry_for_s is not None:
                info = activity.info()
                if not info.is_local:
                    watch = _HangWatch(
                        deadline(request.retry_for_s, None),
                        request.retry_for_s,
                        previous(),
                        watch_hangs(request),
                        reached_at=previous_reached() if previous_reached else None,
                    )
            watch_token = _watch.set(watch)
            try:
                if watch is None:
                    return fn(request)
                hung: str | None = None
                try:
                    with motion_tracker(watch.motion):
                        watch.start()
                        try:
                            return fn(request)
                        finally:
                            hung = watch.stop()
                except EndpointHungError:
                    hung = watch.stop()
                    raise hung_error(hung or "endpoint did not answer") from None
                except ApplicationError as err:
                    if hung is not None and err.type != WorkerStoppingError.TYPE:
                        raise hung_error(hung, err) from None
                    if err.type == _LEASE_EXPIRED and watch.reached_at is not None:
                        # its heartbeat timeout came first (shorter than --retry-for):
                        # blocked on a hung endpoint is as likely as a frozen process
                        raise ApplicationError(
                            f"{err.message}, or it was blocked {watch.where} (a server "
                            "that accepts connections and does not answer)",
                            *err.details,
                            type=err.type,
                            non_retryable=err.non_retryable,
                        ) from None
                    raise
            except ApplicationError as err:
                if (
                    err.non_retryable
                    or request.retry_for_s is None
                    or err.type == WorkerStoppingError.TYPE  # no fault: never a give-up
                ):
                    raise
                info = activity.info()
                progress_at = latest(previous(), _progress_at.get())
                if info.started_time.timestamp() < deadline(request.retry_for_s, progress_at):
                    raise
                raise gave_up(err, info.activity_type, request.retry_for_s) from None
            finally:
                _watch.reset(watch_token)
                _progress_at.reset(token)

        return wrapper

    return decorate


def gave_up(err: ApplicationError, step: str, retry_for_s: float) -> ApplicationError:
    """``err`` as a non-retryable error worded as the workflow's give-up of ``step``
    (an activity type) after ``retry_for_s`` seconds without progress, with the same
    ``type`` and details."""
    details: tuple[Any, ...] = tuple(err.details)
    return ApplicationError(
        gave_up_message(step, timedelta(seconds=retry_for_s), err.message, allowance=False),
        *details,
        type=err.type,
        non_retryable=True,
    )
