"""Heartbeats that only say "this attempt's worker is alive", for short activities.

A short activity (``stat``, ``prepare``, ``publish``, ``cleanup``...) has nothing to
checkpoint, and before this it sent no heartbeats: Temporal noticed a worker that died
under one only at the attempt's start-to-close timeout (2 min), and the transfer
stood still that long. Scheduled with a heartbeat timeout
(:data:`staccato.workflows.calls.SHORT_HEARTBEAT_TIMEOUT`, 20 s) and decorated with
:func:`heartbeating`, such an activity heartbeats while its body runs, so a dead
worker is noticed within the heartbeat timeout instead.

:func:`heartbeating` heartbeats (no details) every quarter of the attempt's heartbeat
timeout, at most every :data:`BEAT_EVERY_MAX_S`:

* a sync body (the activity pool: threads of spawned processes, heartbeats through the
  worker's shared state manager): from a daemon thread that runs in a copy of the
  calling thread's ``contextvars`` context (``activity.heartbeat`` finds the running
  activity through a ContextVar, which a new thread does not inherit);
* an async body (the control queue, in the worker's event loop): from a task.

It stops when the body returns or raises, before the result is handed back (no
heartbeat of a finished attempt). It does nothing in a local activity (its first
attempt: a local activity has no heartbeats) or an attempt scheduled without a
heartbeat timeout (a run recorded before this rule: nothing would watch them). A
heartbeat that fails (the worker's manager process gone) is logged once and ends the
heartbeats of that attempt; the body's result or error is returned as it is.

Only for activities that keep no heartbeat details: a heartbeat here replaces the
details with none (a stream's checkpoint, a batch's next file would be lost).
:func:`beating_with` is its variant for a sync body whose heartbeats say its progress
(``publish``: when it last moved bytes, its SFTP fresh copy's bytes), every
:data:`BEAT_WITH_DETAILS_S` s at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import copy
import functools
import inspect
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, ParamSpec, TypeVar, cast

from temporalio import activity

from staccato import interrupts
from staccato.activities import stream_lease

#: seconds between heartbeats at most (a quarter of the heartbeat timeout when shorter)
BEAT_EVERY_MAX_S = 5.0
#: seconds between heartbeats at least (for very short heartbeat timeouts)
BEAT_EVERY_MIN_S = 0.1
#: seconds a finished body waits for the heartbeat thread to end (a heartbeat stuck
#: on a hung manager is left behind: the thread is a daemon and sends nothing more)
_JOIN_S = 1.0
#: name prefix of the heartbeat threads (tests look for it)
THREAD_PREFIX = "heartbeat-"

P = ParamSpec("P")
R = TypeVar("R")


def beat_interval() -> float | None:
    """Seconds between this attempt's heartbeats, or None when it should send none (a
    local activity, or no heartbeat timeout). Call inside an activity."""
    info = activity.info()
    timeout = info.heartbeat_timeout
    if info.is_local or not timeout:
        return None
    return min(BEAT_EVERY_MAX_S, max(BEAT_EVERY_MIN_S, timeout.total_seconds() / 4))


def _beat(
    every: float,
    stop: threading.Event | None = None,
    details: Callable[[], tuple[Any, ...]] | None = None,
) -> bool:
    """One heartbeat (after ``every`` s, unless ``stop`` is set first), with the
    details ``details()`` returns (none without it); False once it failed (logged) or
    was stopped."""
    if stop is not None and stop.wait(every):
        return False
    try:
        activity.heartbeat(*(details() if details is not None else ()))
    except Exception as err:  # noqa: BLE001 - the body's outcome must not depend on it
        activity.logger.warning(
            "heartbeat failed (the worker may be shutting down); no more heartbeats "
            "from this attempt: %s: %s",
            type(err).__name__,
            err,
        )
        return False
    return True


def _beat_until(
    every: float, stop: threading.Event, details: Callable[[], tuple[Any, ...]] | None = None
) -> None:
    while _beat(every, stop, details):
        pass


#: seconds between the heartbeats of a body that says its progress in them
#: (:func:`beating_with`): ``status`` reads when it last moved bytes from the newest
#: one, and calls a step that moved nothing for ``RATE_CURRENT_S`` (5 s) waiting
BEAT_WITH_DETAILS_S = 1.0


@contextlib.contextmanager
def beating_with(details: Callable[[], tuple[Any, ...]]) -> Iterator[None]:
    """:func:`heartbeating` for a sync body that says its progress: while the block
    runs, a daemon thread (in a copy of the caller's ``contextvars`` context)
    heartbeats every :data:`BEAT_WITH_DETAILS_S` s at most (a quarter of the heartbeat
    timeout when shorter) with the details ``details()`` returns (called in that
    thread: it must read state the body updates without locks, e.g. a
    :class:`~staccato.endpoints.base.Motion`). Nothing in a local activity or without a
    heartbeat timeout (:func:`beat_interval`). The rule's source: a publish writing an
    SFTP fresh copy was shown as waiting for its server (tester73 M3)."""
    with _beating_thread(BEAT_WITH_DETAILS_S, details):
        yield


@contextlib.contextmanager
def _beating_thread(
    every_max: float, details: Callable[[], tuple[Any, ...]] | None = None
) -> Iterator[None]:
    """While the block runs, a daemon heartbeat thread (in a copy of the caller's
    context) beats every :func:`beat_interval` s, at most ``every_max`` s, with
    ``details()`` (none without it); nothing where :func:`beat_interval` is None. The
    block's end stops it (waited for :data:`_JOIN_S` s at most)."""
    every = beat_interval()
    if every is None:
        yield
        return
    stop = threading.Event()
    context = contextvars.copy_context()
    thread = threading.Thread(
        target=context.run,
        args=(_beat_until, min(every, every_max), stop, details),
        name=f"{THREAD_PREFIX}{activity.info().activity_type}",
        daemon=True,
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(_JOIN_S)


async def _beat_forever(every: float) -> None:
    while True:
        await asyncio.sleep(every)
        if not _beat(every):
            return


#: thread ident -> a copy of the details of the last heartbeat the activity running in
#: that thread sent (:func:`note_sent`), for :func:`heartbeat_on_behalf_of`
_sent: dict[int, tuple[Any, ...]] = {}


#: thread ident -> when (``time.monotonic()``) that thread's activity last sent one
_sent_at: dict[int, float] = {}


def note_sent(details: tuple[Any, ...]) -> None:
    """Remember (a deep copy: a checkpoint mutates as the stream goes on) the details
    of the heartbeat the calling thread's activity just sent, and when."""
    ident = threading.get_ident()
    _sent[ident] = copy.deepcopy(details)
    _sent_at[ident] = time.monotonic()


def forget_sent() -> None:
    """Forget the calling thread's last heartbeat details (an attempt starts on it:
    thread idents are reused)."""
    _sent.pop(threading.get_ident(), None)
    _sent_at.pop(threading.get_ident(), None)


@contextlib.contextmanager
def resent_while_blocked() -> Iterator[None]:
    """While the block runs, a daemon thread (in a copy of the caller's context)
    heartbeats on the calling thread's behalf (:func:`heartbeat_on_behalf_of`: its
    last details, a consistent checkpoint, never one it is still changing) whenever the
    caller sent none for a beat interval (:func:`beat_interval`): a batch attempt whose
    thread waits on a hung server in a call of its own (a retried attempt's resume
    compare, its destination listing) stays known alive to Temporal, as one waiting on
    its files' threads does, instead of timing out on its heartbeat, attempt after
    attempt, and ``status`` blaming its worker process. Its hang watch still gives up
    at ``--retry-for``; a frozen or killed process sends nothing (the thread stops with
    it). Each heartbeat sent renews the attempt's lease
    (:mod:`staccato.activities.stream_lease`: the server heard from it then); once the
    lease lapsed, none is sent (Temporal may have handed the batch on). A cancel a
    heartbeat brings is seen by the caller's next own heartbeat. Nothing in a local
    activity or without a heartbeat timeout."""
    every = beat_interval()
    if every is None:
        yield
        return
    ident = threading.get_ident()
    stop = threading.Event()

    def resend() -> None:
        while not stop.wait(every / 2):
            if time.monotonic() - _sent_at.get(ident, 0.0) < every:
                continue
            handed_at = time.monotonic()
            try:
                stream_lease.check()
                heartbeat_on_behalf_of(ident)
            except Exception as err:  # noqa: BLE001 - the caller's own beat reports it
                activity.logger.info("keep-alive heartbeat not sent: %s", err)
                return
            _sent_at[ident] = handed_at
            stream_lease.renew(handed_at)

    context = contextvars.copy_context()
    thread = threading.Thread(
        target=context.run, args=(resend,), name=f"{THREAD_PREFIX}resend", daemon=True
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(_JOIN_S)


def heartbeat_on_behalf_of(ident: int) -> None:
    """From another thread in the activity's context (``contextvars``): one heartbeat
    with the details the activity in thread ``ident`` last sent, or, when it sent none
    yet, those its attempt started with (the previous attempt's checkpoint, which a
    heartbeat without details would erase). Temporal then keeps the attempt (and its
    checkpoint) one more heartbeat timeout: the hang watch sends it when it interrupts
    a hung attempt, so the attempt's non-retryable give-up reaches the server before
    the attempt's heartbeat timeout (the give-up of an attempt Temporal timed out is
    lost, and it was retried: ci67).

    Raises:
        whatever ``activity.heartbeat`` raises (the worker's manager is gone).
    """
    details = _sent.get(ident) or tuple(activity.info().heartbeat_details)
    activity.heartbeat(*details)


def send_heartbeat(*details: Any) -> bool:
    """``activity.heartbeat(*details)`` from the activity's own thread, then whether
    the activity is cancelled (``activity.is_cancelled()``, also a call to the
    manager in a worker process), both sent whole:
    neither an interrupt (:func:`staccato.interrupts.deferred`: a stream guard, a hang
    watch, an HTTP request deadline) nor Temporal's thread-cancel exception lands
    inside the send to the worker's shared state manager, whose connection it would
    leave half written for every later heartbeat of the process. Either is raised
    once the send is done.

    Raises:
        whatever ``activity.heartbeat`` raises (its worker's manager is gone), then
        the interrupt or cancel held off during it.
    """
    with interrupts.deferred(), activity.shield_thread_cancel_exception():
        activity.heartbeat(*details)
        note_sent(details)
        return activity.is_cancelled()


def heartbeating(fn: Callable[P, R]) -> Callable[P, R]:
    """Wrap a short activity's function (sync or async) so it heartbeats while it runs
    (see the module). Put it under ``@activity.defn``.

    The wrapped function's result and exceptions are the body's, unchanged."""
    if inspect.iscoroutinefunction(fn):
        run_async = cast(Callable[..., Awaitable[Any]], fn)

        @functools.wraps(fn)
        async def beating_async(*args: Any, **kwargs: Any) -> Any:
            every = beat_interval()
            if every is None:
                return await run_async(*args, **kwargs)
            beats = asyncio.get_running_loop().create_task(_beat_forever(every))
            try:
                return await run_async(*args, **kwargs)
            finally:
                beats.cancel()

        return cast(Callable[P, R], beating_async)

    @functools.wraps(fn)
    def beating(*args: P.args, **kwargs: P.kwargs) -> R:
        with _beating_thread(BEAT_EVERY_MAX_S):
            return fn(*args, **kwargs)

    return beating
