"""Bounded waits on an HTTP server: every wait ends, and the stream keeps heartbeating.

Connections are made in tries of at most ``CONNECT_SLICE_S`` up to ``CONNECT_TIMEOUT_S``;
a response (headers and body) is read through :class:`PacedSocket`, which waits in
slices of at most ``WAIT_SLICE_S``, calls :func:`staccato.endpoints.base.keepalive`
between them and fails after ``READ_TIMEOUT_S`` of silence. :func:`time_limit` bounds a
whole request (used by stat) with ``SIGALRM``. Proxies: ``http_proxy``,
``https_proxy`` and ``no_proxy`` are honoured as httpx and curl do.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import select
import signal
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator
from types import FrameType
from typing import Any
from urllib.parse import SplitResult, urlsplit

from staccato import interrupts, sockets
from staccato.endpoints.base import keepalive
from staccato.errors import RetryableError
from staccato.urls import redact

#: seconds to set up a connection (TCP, TLS, proxy tunnel)
CONNECT_TIMEOUT_S = 10.0
#: seconds a read waits for the server to send anything before it fails (retryable)
READ_TIMEOUT_S = 30.0
#: longest wait between two keepalive calls while waiting for the server, seconds
WAIT_SLICE_S = 0.5
#: one connect try, seconds (tries repeat, with keepalive between, up to CONNECT_TIMEOUT_S)
CONNECT_SLICE_S = 1.0


class RequestDeadlineError(RetryableError):
    """A stat request took longer than its deadline."""

    TYPE = "_Deadline"  # its ApplicationError.type before the rename


_alarm_lock = threading.Lock()
_alarm_message: list[str] = []  # the armed deadline's message; empty when none is armed


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    if _alarm_message:
        raise RequestDeadlineError(_alarm_message[0])


@contextlib.contextmanager
def time_limit(seconds: float, message: str) -> Iterator[None]:
    """Raise :class:`RequestDeadlineError` (retryable, with ``message``) if the block runs longer
    than ``seconds``.

    In the main thread by ``SIGALRM`` (a blocked ``recv`` returns with ``EINTR`` and the
    handler's exception propagates, PEP 475); the handler stays installed once set: it
    does nothing when no deadline is armed, so a late alarm can never end the process.
    In another thread (an activity in a worker process's thread) a timer interrupts
    it (:func:`staccato.interrupts.interrupt`: the exception at its next bytecode, its
    registered sockets shut down so a blocked ``recv`` returns).
    """
    if threading.current_thread() is not threading.main_thread():
        with _thread_time_limit(seconds, message):
            yield
        return
    with _alarm_lock:
        if signal.getsignal(signal.SIGALRM) is not _on_alarm:
            signal.signal(signal.SIGALRM, _on_alarm)
        _alarm_message[:] = [message]
        signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        _alarm_message.clear()


#: thread ident -> the message of the deadline that expired there
_thread_messages: dict[int, str] = {}


class _ThreadDeadlineError(RequestDeadlineError):
    """:class:`RequestDeadlineError` as raised in a thread by
    :func:`staccato.interrupts.interrupt`, which builds it without arguments."""

    def __init__(self, message: str = "") -> None:
        super().__init__(
            message or _thread_messages.get(threading.get_ident(), "request deadline passed")
        )


@contextlib.contextmanager
def _thread_time_limit(seconds: float, message: str) -> Iterator[None]:
    ident = threading.get_ident()
    lock = threading.Lock()
    done = False

    def expire() -> None:
        with lock:
            if done:
                return
            _thread_messages[ident] = message
            with contextlib.suppress(ValueError):  # the thread ended meanwhile
                interrupts.interrupt(ident, _ThreadDeadlineError)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        with lock:
            done = True
            timer.cancel()
            interrupts.cancel(ident)  # one asked for but not raised yet
            _thread_messages.pop(ident, None)


def connection_for(target: SplitResult) -> tuple[http.client.HTTPConnection, str]:
    """An ``http.client`` connection for ``target`` (not yet connected) and the request
    target to send, honouring ``http_proxy``/``https_proxy``/``no_proxy`` as httpx and
    curl do: an absolute URI through an HTTP proxy, a CONNECT tunnel for HTTPS."""
    host = target.hostname or ""
    https = target.scheme == "https"
    port = target.port or (443 if https else 80)
    path = (target.path or "/") + (f"?{target.query}" if target.query else "")
    proxy = urllib.request.getproxies().get(target.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        via = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if https:
            tunnel = http.client.HTTPSConnection(
                via.hostname or "", via.port or 80, timeout=CONNECT_SLICE_S
            )
            tunnel.set_tunnel(host, port)
            return tunnel, path
        plain = http.client.HTTPConnection(
            via.hostname or "", via.port or 80, timeout=CONNECT_SLICE_S
        )
        return plain, target.geturl()
    connection_class = http.client.HTTPSConnection if https else http.client.HTTPConnection
    return connection_class(host, port, timeout=CONNECT_SLICE_S), path


def open_connection(connection: http.client.HTTPConnection, url: str) -> None:
    """Connect within ``CONNECT_TIMEOUT_S``, in tries of at most ``CONNECT_SLICE_S``
    with :func:`keepalive` between them; reads then wait up to ``READ_TIMEOUT_S`` per
    socket operation (paced by :class:`PacedSocket` for the response).

    Raises:
        RetryableError: no connection within the timeout.
    """
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while True:
        try:
            connection.connect()
            break
        except TimeoutError:
            connection.close()
            if time.monotonic() >= deadline:
                raise RetryableError(
                    f"cannot connect to {redact(url)}: no answer within {CONNECT_TIMEOUT_S:.0f} s"
                ) from None
            keepalive()
    assert connection.sock is not None
    connection.sock.settimeout(READ_TIMEOUT_S)
    sockets.apply(connection.sock)  # buffers sized to the link (staccato.sockets)


class PacedSocket(io.RawIOBase):
    """The raw byte stream of a response, read without blocking: each read takes what
    the socket (or the TLS layer) has; when nothing is there it waits for the socket in
    slices of at most ``WAIT_SLICE_S`` and fails after ``READ_TIMEOUT_S`` of silence.
    :func:`keepalive` is called every ``WAIT_SLICE_S`` of reading, data or not (so the
    stream keeps heartbeating, sees a cancel, and its minimum-rate watchdog can end a
    source that drips its headers, or a TLS record, a byte at a time).

    The socket is non-blocking while this is open (its timeout is restored at close:
    a proxy's CONNECT answer is read this way before the TLS handshake).

    Raises (from ``readinto``):
        RetryableError: nothing arrived for ``READ_TIMEOUT_S``.
    """

    def __init__(self, raw: io.RawIOBase, sock: socket.socket, url: str) -> None:
        super().__init__()
        self._raw = raw  # the socket's own SocketIO, kept for its refcount on the socket
        self._sock = sock
        self._url = url
        self._timeout = sock.gettimeout()
        sock.settimeout(0.0)
        self._last_keepalive = time.monotonic()
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN | select.POLLPRI)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        silent_since = time.monotonic()
        while True:
            now = time.monotonic()
            # every slice, whether or not bytes trickle in (a drip never waits a slice)
            if now - self._last_keepalive >= WAIT_SLICE_S:
                self._last_keepalive = now
                keepalive()
            try:
                return self._sock.recv_into(buffer)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass  # nothing yet, or only part of a TLS record
            if now - silent_since >= READ_TIMEOUT_S:
                raise RetryableError(
                    f"{redact(self._url)} sent nothing for {READ_TIMEOUT_S:.0f} s "
                    "(read timeout); retrying"
                )
            self._poll.poll(int(WAIT_SLICE_S * 1000))

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(OSError):
                self._sock.settimeout(self._timeout)
            self._raw.close()
        super().close()


class PacedResponse(http.client.HTTPResponse):
    """An ``HTTPResponse`` read through a :class:`PacedSocket`."""

    url_shown = ""  # set per connection (the class is made per reader, see response_class)

    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        raw = self.fp.detach()  # the SocketIO http.client made (nothing buffered yet)
        self.fp = io.BufferedReader(PacedSocket(raw, sock, self.url_shown), 64 * 1024)


def response_class(url: str) -> type[PacedResponse]:
    return type("_PacedResponseFor", (PacedResponse,), {"url_shown": url})
