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

    The interrupt is ``SIGUSR2`` sent to the main thread: its handler raises
    :class:`StreamAbandonedError` there, a blocked system call (``recv``, ``read``, a lock wait)
    returning with ``EINTR`` first (PEP 475). It is repeated every ``GUARD_TICK_S``
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
                log.warning("%s", self.message)
                assert self._main is not None
                signal.pthread_kill(self._main, signal.SIGUSR2)

    def disarm(self) -> None:
        with self._lock:
            self.armed = False
        self._stop.set()


GUARD_TICK_S = 0.5
_guard: StreamGuard | None = None  # the armed guard of this process's running stream


def _on_guard_signal(signum: int, frame: FrameType | None) -> None:
    guard = _guard
    if guard is None or not guard.armed:
        return
    if guard.shielded:
        guard.pending = True
        return
    raise StreamAbandonedError(guard.message)


@contextlib.contextmanager
def guarded(limit_s: float | None) -> Iterator[StreamGuard | None]:
    """Run the block under a :class:`StreamGuard` of ``limit_s`` seconds (the attempt's
    heartbeat timeout). Only in a process's main thread (an activity process of the
    worker's pool); elsewhere, and without a heartbeat timeout, unguarded."""
    global _guard
    if not limit_s or threading.current_thread() is not threading.main_thread():
        yield None
        return
    if signal.getsignal(signal.SIGUSR2) is not _on_guard_signal:
        signal.signal(signal.SIGUSR2, _on_guard_signal)
    guard = StreamGuard(limit_s)
    _guard = guard
    guard._thread.start()
    try:
        yield guard
    finally:
        guard.disarm()
        _guard = None


def touch() -> None:
    guard = _guard
    if guard is not None:
        guard.touch()


def shield() -> contextlib.AbstractContextManager[None]:
    """Defer the armed guard's interrupts for the block (a call to the worker's shared
    state manager, whose connection an interrupt would leave unusable)."""
    guard = _guard
    return guard.shield() if guard is not None else contextlib.nullcontext()
