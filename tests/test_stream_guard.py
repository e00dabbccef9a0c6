"""The stream guard: a stream blocked in a call that never returns (no heartbeat for
its heartbeat timeout, so Temporal has given up on the attempt) is interrupted, so its
worker process is freed; a stream that keeps reaching heartbeat points is left alone."""

from __future__ import annotations

import signal
import socket
import threading
import time

import pytest

from staccato.activities.stream_guard import StreamAbandonedError, guarded, touch


def test_blocked_call_is_interrupted_after_the_heartbeat_timeout() -> None:
    """A ``recv`` on a real socket that never gets data (its own timeout 20 s) ends
    within a second of the 1 s limit with a retryable error that says why."""
    quiet, _peer = socket.socketpair()
    quiet.settimeout(20)
    started = time.monotonic()
    with pytest.raises(StreamAbandonedError) as abandoned, guarded(1.0):
        quiet.recv(1)
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 2.5, elapsed
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
