"""The stream guard: frees a worker process whose stream is blocked in a call that
never returns (tests/test_stream_guard.py).

Should a stream block in a call that never comes back (a driver waiting without
``keepalive``), a guard thread interrupts it once no heartbeat has been possible for
the heartbeat timeout: by then Temporal has given up on the attempt and started
another, and this one must let go of its process.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType

from staccato import interrupts
from staccato.errors import RetryableError

log = logging.getLogger("staccato.stream")


class StreamAbandonedError(RetryableError):
    """Raised in a stream blocked past its heartbeat timeout (see :class:`StreamGuard`)."""

    TYPE = "_Abandoned"  # its ApplicationError.type before the rename


class StreamGuard:
    """Interrupts the stream's (main) thread when it has not reached a heartbeat for
    ``limit_s`` seconds: Temporal has then timed the attempt out (no heartbeat for the
    heartbeat timeout) and retried it, so nobody waits for this one, but its process
    stays taken until the blocked call returns, and a worker has few processes.

    In a process's main thread the interrupt is ``SIGUSR2``: its handler raises
    :class:`StreamAbandonedError` there, a blocked system call (``recv``, ``read``, a lock wait)
    returning with ``EINTR`` first (PEP 475). It is repeated every ``GUARD_TICK_S``
    while the thread stays blocked (a broad ``except`` in a driver may swallow one).
    It is deferred while the thread talks to the worker's shared state manager
    (heartbeat, cancel check), whose connection an interrupt would leave unusable.
    The handler stays installed once set and does nothing unless a guard is armed,
    so a signal that arrives late never disturbs the process's next activity.

    In another thread (a worker process runs many streams in threads) a signal
    cannot reach it: the guard has :func:`staccato.interrupts.interrupt` raise
    :class:`StreamAbandonedError` in that thread and shut down the sockets it
    registered (its blocked ``recv`` returns); repeated every ``GUARD_TICK_S`` too,
    deferred while shielded, and taken back when the block ends first.
    """

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self.touched = time.monotonic()
        self.armed = True
        self.shielded = False
        self.pending = False
        self.message = ""
        self.logged = False
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._main = threading.main_thread().ident
        #: the guarded thread (the one that made the guard)
        self.ident = threading.get_ident()
        self._thread = threading.Thread(target=self._watch, name="stream-guard", daemon=True)

    def touch(self) -> None:
        """The stream reached a heartbeat point (it is not blocked)."""
        self.touched = time.monotonic()

    @contextlib.contextmanager
    def shield(self) -> Iterator[None]:
        """Defer interrupts for the block (a call to the shared state manager): the
        guard's own, and the others' (:func:`staccato.interrupts.deferred`: a hang
        watch, an HTTP request deadline)."""
        with self._lock:
            self.shielded = True
        try:
            with interrupts.deferred():
                yield
        finally:
            with self._lock:
                self.shielded = False
        if self.pending:
            self.pending = False
            raise StreamAbandonedError(self.message)

    def _watch(self) -> None:
        while not self._stop.wait(GUARD_TICK_S):
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
                if not self.logged:  # once per attempt: it repeats every tick
                    self.logged = True
                    log.warning("%s", self.message)
                if self.ident == self._main:
                    signal.pthread_kill(self.ident, signal.SIGUSR2)
                elif self.shielded:
                    self.pending = True
                else:
                    _abandoned_messages[self.ident] = self.message
                    with contextlib.suppress(ValueError):  # the thread ended meanwhile
                        interrupts.interrupt(self.ident, _ThreadAbandoned)

    def disarm(self) -> None:
        with self._lock:
            self.armed = False
            if self.ident != self._main:
                interrupts.cancel(self.ident)  # one asked for but not raised yet
                _abandoned_messages.pop(self.ident, None)
        self._stop.set()


#: thread ident -> the message of the abandoned stream interrupted there
_abandoned_messages: dict[int, str] = {}


class _ThreadAbandoned(StreamAbandonedError):
    """:class:`StreamAbandonedError` as raised in a stream's thread by
    :func:`staccato.interrupts.interrupt`, which builds it without arguments: it reads
    its message from the guard."""

    def __init__(self, message: str = "") -> None:
        super().__init__(
            message or _abandoned_messages.get(threading.get_ident(), "stream attempt abandoned")
        )


GUARD_TICK_S = 0.5
_main_guard: StreamGuard | None = None  # the armed guard of the main thread's stream
_local = threading.local()  # .guard: the armed guard of this thread's stream


#: thread ident -> the armed guard of the stream running in it (for the retry
#: deadline's hang watch, which must not interrupt a shielded call either)
_by_thread: dict[int, StreamGuard] = {}


def guard_of(ident: int) -> StreamGuard | None:
    """The armed guard of the stream running in thread ``ident``, or None."""
    return _by_thread.get(ident)


def _current() -> StreamGuard | None:
    guard: StreamGuard | None = getattr(_local, "guard", None)
    return guard


def _on_guard_signal(signum: int, frame: FrameType | None) -> None:
    guard = _main_guard
    if guard is None or not guard.armed:
        return
    if guard.shielded:
        guard.pending = True
        return
    raise StreamAbandonedError(guard.message)


@contextlib.contextmanager
def guarded(limit_s: float | None) -> Iterator[StreamGuard | None]:
    """Run the block under a :class:`StreamGuard` of ``limit_s`` seconds (the attempt's
    heartbeat timeout), in whatever thread it runs; without a heartbeat timeout,
    unguarded."""
    global _main_guard
    if not limit_s:
        yield None
        return
    guard = StreamGuard(limit_s)
    main = guard.ident == guard._main
    if main:
        if signal.getsignal(signal.SIGUSR2) is not _on_guard_signal:
            signal.signal(signal.SIGUSR2, _on_guard_signal)
        _main_guard = guard
    _local.guard = guard
    _by_thread[guard.ident] = guard
    guard._thread.start()
    try:
        yield guard
    finally:
        guard.disarm()
        _local.guard = None
        _by_thread.pop(guard.ident, None)
        if main:
            _main_guard = None
        else:
            interrupts.forget_sockets()


def touch() -> None:
    guard = _current()
    if guard is not None:
        guard.touch()


def shield() -> contextlib.AbstractContextManager[None]:
    """Defer interrupts for the block (a call to the worker's shared state manager,
    whose connection an interrupt would leave unusable): the armed guard's, and the
    others' (:func:`staccato.interrupts.deferred`: the retry deadline's hang watch,
    which also interrupts the threads of a dataset batch, which have no guard)."""
    guard = _current()
    return guard.shield() if guard is not None else interrupts.deferred()
