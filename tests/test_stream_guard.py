"""The stream guard: a stream blocked in a call that never returns (no heartbeat for
its heartbeat timeout, so Temporal has given up on the attempt) is interrupted, so its
worker process is freed; a stream that keeps reaching heartbeat points is left alone."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable

import pytest

from staccato import sockets
from staccato.activities.stream_guard import StreamAbandonedError, guarded, touch

#: a correctness bound, not a speed one: the blocked calls below end on their own after
#: 20 s, so an interrupt must come well before; the 1 s limit plus a guard thread that
#: a machine at load 15 may schedule seconds late (2.5 s was within its reach)
INTERRUPTED_WITHIN_S = 10.0


def test_blocked_call_is_interrupted_after_the_heartbeat_timeout() -> None:
    """A ``recv`` on a real socket that never gets data (its own timeout 20 s) ends
    at the 1 s limit, well before its own timeout, with a retryable error that says
    why."""
    quiet, _peer = socket.socketpair()
    quiet.settimeout(20)
    started = time.monotonic()
    with pytest.raises(StreamAbandonedError) as abandoned, guarded(1.0):
        quiet.recv(1)
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < INTERRUPTED_WITHIN_S, elapsed
    assert abandoned.value.retryable
    assert "heartbeat timeout 1 s" in str(abandoned.value)
    # once the stream is over, a late signal is ignored: the process lives on
    assert threading.main_thread().ident is not None
    signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR2)
    time.sleep(0.2)
    quiet.close()
    _peer.close()


def test_stream_that_reaches_heartbeats_is_left_alone() -> None:
    """Waits shorter than the limit between heartbeat points, for three times the limit."""
    with guarded(1.0):
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            time.sleep(0.3)
            touch()


def _in_thread(body: Callable[[], object]) -> BaseException | None:
    """Run ``body`` in a new thread (as a worker process runs its streams); what it
    raised, or None."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            body()
        except BaseException as err:
            raised.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "the guarded thread is still blocked"
    return raised[0] if raised else None


def test_blocked_call_in_a_thread_is_interrupted() -> None:
    """As above, but the stream runs in a thread (no signal reaches it): a ``recv`` on
    a socket its driver registered (20 s timeout) ends at the limit, not its timeout."""
    quiet, _peer = socket.socketpair()
    quiet.settimeout(20)
    started = time.monotonic()

    def stream() -> None:
        with guarded(1.0):
            sockets.apply(quiet, 65536)  # as drivers do with each new connection
            quiet.recv(1)

    raised = _in_thread(stream)
    elapsed = time.monotonic() - started
    assert isinstance(raised, StreamAbandonedError), raised
    assert 1.0 <= elapsed < INTERRUPTED_WITHIN_S, elapsed
    assert raised.retryable and "heartbeat timeout 1 s" in str(raised)
    quiet.close()
    _peer.close()


def test_busy_thread_is_interrupted_and_a_finished_one_is_not() -> None:
    """A thread looping in Python without reaching a heartbeat is interrupted; a
    guard whose block ended leaves the thread's next work alone."""

    def spin() -> None:
        with guarded(1.0):
            end = time.monotonic() + 20
            while time.monotonic() < end:
                sum(range(1000))

    started = time.monotonic()
    assert isinstance(_in_thread(spin), StreamAbandonedError)
    assert time.monotonic() - started < INTERRUPTED_WITHIN_S

    def quick_then_work() -> None:
        with guarded(0.5):
            touch()
        time.sleep(1.5)  # past the limit of the guard that ended

    assert _in_thread(quick_then_work) is None


def test_threads_in_a_thread_left_alone_while_touching() -> None:
    """Two streams in threads: the one reaching heartbeats runs to its end while the
    other, blocked, is interrupted."""

    def healthy() -> None:
        with guarded(1.0):
            end = time.monotonic() + 2.5
            while time.monotonic() < end:
                time.sleep(0.2)
                touch()

    def blocked() -> None:
        quiet, _peer = socket.socketpair()
        quiet.settimeout(20)
        with guarded(1.0):
            sockets.apply(quiet, 65536)
            quiet.recv(1)

    results: dict[str, BaseException | None] = {}
    threads = [
        threading.Thread(target=lambda n=name, f=f: results.__setitem__(n, _in_thread(f)))
        for name, f in (("healthy", healthy), ("blocked", blocked))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results["healthy"] is None
    assert isinstance(results["blocked"], StreamAbandonedError)
