"""The ``http``/``https`` endpoint (sources only), with httpx.

Stat sends ``HEAD``; when that advertises ranges (or is refused: some servers
answer 405) a ranged ``GET`` for ``bytes=0-0`` decides: a ``206`` with a
matching ``Content-Range`` (RFC 9110 §14.4) proves range support and gives the size;
a ``200`` means the server ignores ranges (it answers a Range request with 200 and
the whole body, as proxies that strip ranges do); a ``416`` with ``bytes */0`` is an
empty object. The version pinned is the strong ``ETag``, or
else ``Last-Modified`` (RFC 9110 §8.8).

Reads send ``Range`` with ``If-Range`` (RFC 9110 §13.1.5) holding the pinned
validator, and accept only a ``206`` whose ``Content-Range`` is exactly the range asked
for; a ``200`` then means the representation changed -> ``SourceChangedError``. A server
without range support is read from byte 0 in one stream (earlier bytes discarded).
A body that ends before its ``Content-Length`` is a retryable error
(tests/test_http_cases.py ``test_body_shorter_than_content_length``).

Time bounds: every wait for the server is bounded. The bulk read path waits for each
piece of the response (headers and body) in slices of at most a second, calling
:func:`staccato.endpoints.base.keepalive` between slices (the stream heartbeats, and
notices a cancel or a source below its minimum rate), and gives up after
``READ_TIMEOUT_S`` of silence. Stat bounds each whole request, headers included, to
``REQUEST_DEADLINE_S`` (a server that drips one byte every few seconds never trips a
per-read timeout).

Retry-After: a ``503`` or ``429`` with ``Retry-After`` (RFC 9110 section 10.2.3, seconds
or an HTTP-date) raises a :class:`RetryableError` with ``retry_after_s``, which the
activity turns into Temporal's next retry delay.

Credentials: request headers a worker is configured with for an origin
(``HTTPDriver(origin_headers=)``) go to that origin only. On a redirect to another origin
``Authorization``, ``Proxy-Authorization`` and ``Cookie`` are dropped (RFC 9110 section
15.4), and the bulk path sends them only when it reads from the source's own origin.
Messages never show a URL's query values (:func:`staccato.urls.redact`): presigned
URLs carry their token there.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import logging
import re
import select
import signal
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from email.message import Message
from email.utils import parsedate_to_datetime
from types import FrameType
from typing import Any
from urllib.parse import SplitResult, urljoin, urlsplit

import httpx

from staccato.endpoints.base import Driver, Reader, keepalive
from staccato.errors import (
    IncompleteReadError,
    NotFoundError,
    PermanentError,
    PermissionDeniedError,
    RetryableError,
    SourceChangedError,
    StaccatoError,
)
from staccato.models import ObjectInfo
from staccato.urls import EndpointURL, redact

_CONTENT_RANGE = re.compile(r"^bytes\s+(\d+)-(\d+)/(\d+|\*)$")
_MAX_READ = 1 << 20  # bytes per readinto call
_UNSATISFIED_RANGE = re.compile(r"^bytes\s+\*/(\d+)$")
#: seconds to set up a connection (TCP, TLS, proxy tunnel)
CONNECT_TIMEOUT_S = 10.0
#: seconds a read waits for the server to send anything before it fails (retryable)
READ_TIMEOUT_S = 30.0
#: seconds one whole stat request may take, headers included
REQUEST_DEADLINE_S = 60.0
#: longest wait between two keepalive calls while waiting for the server, seconds
_WAIT_SLICE_S = 0.5
#: one connect try, seconds (tries repeat, with keepalive between, up to CONNECT_TIMEOUT_S)
_CONNECT_SLICE_S = 1.0
_TIMEOUT = httpx.Timeout(
    connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S, write=READ_TIMEOUT_S, pool=READ_TIMEOUT_S
)
_MAX_REDIRECTS = 10
#: request headers that carry credentials: never sent to another origin (RFC 9110 section 15.4)
_CREDENTIAL_HEADERS = ("authorization", "proxy-authorization", "cookie")


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (RFC 9110 section 10.2.3): a
    non-negative integer of seconds, or an HTTP-date (then the time until it, at least 0).

    Args:
        value: the header's value, or None when absent.
        now: the current Unix time (for tests); default ``time.time()``.

    Returns:
        Seconds, or None when absent or unparsable (the retry policy's backoff applies).
    """
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP-date is always GMT (RFC 9110 section 5.6.7)
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _status_error(
    code: int, url: str, headers: Mapping[str, str] | Message | None = None
) -> StaccatoError:
    shown = redact(url)
    if code == 404 or code == 410:
        return NotFoundError(f"source not found: {shown} (HTTP {code})")
    if code in (401, 403):
        return PermissionDeniedError(f"source refused: {shown} (HTTP {code})")
    if code in (408, 425, 429) or code >= 500:
        delay = (
            retry_after_s(headers.get("retry-after"))
            if headers is not None and code in (429, 503)
            else None
        )
        if delay is not None:
            return RetryableError(
                f"source unavailable: {shown} (HTTP {code}, Retry-After {delay:.0f} s)",
                retry_after_s=delay,
            )
        return RetryableError(f"source unavailable: {shown} (HTTP {code})")
    return PermanentError(f"unexpected response from {shown}: HTTP {code}")


def _scrubbed(text: str, *urls: str) -> str:
    """``text`` (an exception's message) with each of ``urls`` and its query string
    replaced by the redacted form: httpx and http.client put request URLs in some of
    their messages."""
    for url in urls:
        if not url:
            continue
        text = text.replace(url, redact(url))
        query = urlsplit(url).query
        if query:
            text = text.replace(query, "REDACTED")
    return text


def _transport_error(err: httpx.HTTPError, url: str) -> StaccatoError:
    shown = redact(url)
    urls = [url]
    with contextlib.suppress(RuntimeError):  # no request attached to the error
        urls.append(str(err.request.url))
    detail = _scrubbed(str(err), *urls)
    if isinstance(err, httpx.RemoteProtocolError):
        return IncompleteReadError(f"connection to {shown} broke mid-response: {detail}")
    return RetryableError(f"cannot read {shown}: {type(err).__name__}: {detail}")


class _RedactURLs(logging.Filter):
    """Redacts the query values of URLs in httpx's log records (its INFO line
    ``HTTP Request: GET <url> ...`` shows the whole URL, token included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact(str(arg))
                if isinstance(arg, httpx.URL) or (isinstance(arg, str) and "://" in arg)
                else arg
                for arg in record.args
            )
        return True


logging.getLogger("httpx").addFilter(_RedactURLs())


def _origin(url: str | httpx.URL) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the default port filled in (RFC 6454 section 4)."""
    parts = urlsplit(str(url))
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def _without_credentials(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in _CREDENTIAL_HEADERS}


class _Deadline(RetryableError):
    """A stat request took longer than its deadline."""


_alarm_lock = threading.Lock()
_alarm_message: list[str] = []  # the armed deadline's message; empty when none is armed


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    if _alarm_message:
        raise _Deadline(_alarm_message[0])


@contextlib.contextmanager
def _time_limit(seconds: float, message: str) -> Iterator[None]:
    """Raise :class:`_Deadline` (retryable, with ``message``) if the block runs longer
    than ``seconds``, by ``SIGALRM`` in the main thread (a blocked ``recv`` returns with
    ``EINTR`` and the handler's exception propagates, PEP 475). Elsewhere (a thread) the
    block runs unbounded but for httpx's per-read timeouts.

    The handler stays installed once set: it does nothing when no deadline is armed,
    so a late alarm can never end the process.
    """
    if threading.current_thread() is not threading.main_thread():
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


def _validator(info: ObjectInfo) -> str | None:
    """The If-Range value: a strong ETag or a Last-Modified date (RFC 9110 §13.1.5)."""
    etag = info.extra.get("etag")
    if etag and not etag.startswith("W/"):
        return etag
    return info.extra.get("last_modified")


def _freshness(headers: Mapping[str, str] | Message) -> dict[str, Any]:
    """``ObjectInfo`` fields saying how far the version can be trusted.

    ``Last-Modified`` has a resolution of one second (RFC 9110 section 8.8.2), and
    common servers derive their ETag from it (nginx: mtime and size), so a source
    modified within that second of the copy may change without a new version. Without
    ``Last-Modified`` a strong ETag is trusted; with neither, nothing pins the version.
    """
    modified = _http_date(headers.get("last-modified"))
    if modified is not None:
        # the server's Date (RFC 9110 section 6.6.1) is on the same clock as its mtimes
        return {
            "modified_at": modified,
            "mtime_resolution_s": 1.0,
            "endpoint_time": _http_date(headers.get("date")),
        }
    etag = headers.get("etag")
    if etag and not etag.startswith("W/"):
        return {}
    return {"modified_at": None, "mtime_resolution_s": 1.0}


def _http_date(value: str | None) -> float | None:
    """An HTTP-date (RFC 9110 section 5.6.7) as seconds since the epoch, or None."""
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


def _version(headers: Mapping[str, str] | Message, size: int) -> str:
    etag = headers.get("etag")
    if etag and not etag.startswith("W/"):
        return f"etag={etag}"
    modified = headers.get("last-modified")
    if modified:
        return f"last_modified={modified};size={size}"
    return f"size={size}"


def _connect(target: SplitResult) -> tuple[http.client.HTTPConnection, str]:
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
                via.hostname or "", via.port or 80, timeout=_CONNECT_SLICE_S
            )
            tunnel.set_tunnel(host, port)
            return tunnel, path
        plain = http.client.HTTPConnection(
            via.hostname or "", via.port or 80, timeout=_CONNECT_SLICE_S
        )
        return plain, target.geturl()
    connection_class = http.client.HTTPSConnection if https else http.client.HTTPConnection
    return connection_class(host, port, timeout=_CONNECT_SLICE_S), path


def _open(connection: http.client.HTTPConnection, url: str) -> None:
    """Connect within ``CONNECT_TIMEOUT_S``, in tries of at most ``_CONNECT_SLICE_S``
    with :func:`keepalive` between them; reads then wait up to ``READ_TIMEOUT_S`` per
    socket operation (paced by :class:`_PacedSocket` for the response).

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


class _PacedSocket(io.RawIOBase):
    """The raw byte stream of a response, read without blocking: each read takes what
    the socket (or the TLS layer) has; when nothing is there it waits for the socket in
    slices of at most ``_WAIT_SLICE_S`` and fails after ``READ_TIMEOUT_S`` of silence.
    :func:`keepalive` is called every ``_WAIT_SLICE_S`` of reading, data or not (so the
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
            if now - self._last_keepalive >= _WAIT_SLICE_S:
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
            self._poll.poll(int(_WAIT_SLICE_S * 1000))

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(OSError):
                self._sock.settimeout(self._timeout)
            self._raw.close()
        super().close()


class _PacedResponse(http.client.HTTPResponse):
    """An ``HTTPResponse`` read through a :class:`_PacedSocket`."""

    url_shown = ""  # set per connection (the class is made per reader, see _response_class)

    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        raw = self.fp.detach()  # the SocketIO http.client made (nothing buffered yet)
        self.fp = io.BufferedReader(_PacedSocket(raw, sock, self.url_shown), 64 * 1024)


def _response_class(url: str) -> type[_PacedResponse]:
    return type("_PacedResponseFor", (_PacedResponse,), {"url_shown": url})


class HTTPReader(Reader):
    """Streams one byte range of an HTTP resource straight into caller buffers.

    The bulk read path uses the standard library's ``http.client``: reading the body
    with ``readinto1`` receives from the socket directly into the chunk buffer, with
    no intermediate ``bytes`` objects (httpx allocates and joins pieces, which caps one
    process at ~500 MB/s here), and returns what one ``recv`` got, so the caller sees
    progress as it comes. Stat, redirects and everything else use httpx.

    Args:
        url: the source URL (its origin alone receives ``credentials``).
        info: what stat found (the pinned version, range support).
        offset, length: the byte range, in bytes.
        credentials: headers configured for the source's origin (``Authorization`` ...).
    """

    def __init__(
        self,
        url: str,
        info: ObjectInfo,
        offset: int,
        length: int,
        credentials: Mapping[str, str] | None = None,
    ) -> None:
        self._url = url
        self._shown = redact(url)
        self._info = info
        self._remaining = length
        self._skip = 0 if info.supports_ranges else offset  # bytes before the range
        self._connection: http.client.HTTPConnection | None = None
        self._response: http.client.HTTPResponse | None = None
        self._location = url
        if length <= 0:
            return
        ranged = info.supports_ranges
        headers = {"Accept-Encoding": "identity", "User-Agent": "staccato"}
        if ranged:
            headers["Range"] = f"bytes={offset}-{offset + length - 1}"
            validator = _validator(info)
            if validator:
                headers["If-Range"] = validator
        # an older stat kept where redirects led; now each read follows them afresh (a
        # presigned redirect target expires, and its token must not be kept)
        location = info.extra.get("location") or url
        for _ in range(_MAX_REDIRECTS + 1):
            self._response = self._get(location, headers, credentials)
            following = self._redirect(location, self._response)
            if following is None:
                break
            self.close()
            location = following
        else:
            self.close()
            raise PermanentError(f"{self._shown} redirects more than {_MAX_REDIRECTS} times")
        self._location = location
        try:
            self._check_response(self._response, ranged, offset, length)
        except BaseException:
            self.close()
            raise

    def _get(
        self, location: str, headers: Mapping[str, str], credentials: Mapping[str, str] | None
    ) -> http.client.HTTPResponse:
        """Send the ``GET`` to ``location``; credentials only to the source's own origin.

        Raises:
            RetryableError: connection or protocol failure (message redacted).
        """
        sent = dict(headers)
        if credentials:
            sent.update(
                credentials
                if _origin(location) == _origin(self._url)
                else _without_credentials(credentials)
            )
        try:
            self._connection, path = _connect(urlsplit(location))
            self._connection.response_class = _response_class(location)
            _open(self._connection, location)
            self._connection.request("GET", path, headers=sent)
            return self._connection.getresponse()
        except (OSError, http.client.HTTPException) as err:
            self.close()
            detail = _scrubbed(f"{type(err).__name__}: {err}", self._url, location)
            raise RetryableError(f"cannot read {self._shown}: {detail}") from None
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _redirect(location: str, response: http.client.HTTPResponse) -> str | None:
        """The absolute URL a 301/302/303/307/308 response points to, else None."""
        target = response.getheader("location")
        if response.status not in (301, 302, 303, 307, 308) or not target:
            return None
        return urljoin(location, target)

    def _check_response(
        self, response: http.client.HTTPResponse, ranged: bool, offset: int, length: int
    ) -> None:
        code = response.status
        headers = response.headers
        if code in (404, 410):  # it was there at stat time, as every driver reports it
            raise SourceChangedError(
                f"source changed: {self._url} was removed during the transfer (HTTP {code})"
            )
        if ranged:
            if code == 200:
                raise SourceChangedError(
                    f"source changed during the transfer: {self._shown} no longer matches "
                    f"the version pinned at start ({self._info.version})"
                )
            if code != 206:
                if code == 416:
                    raise SourceChangedError(
                        f"source changed: {self._shown} is now shorter than {offset + length} bytes"
                    )
                raise _status_error(code, self._url, headers)
            match = _CONTENT_RANGE.match(headers.get("content-range", ""))
            expected = (offset, offset + length - 1)
            if not match or (int(match.group(1)), int(match.group(2))) != expected:
                # never write a body at an offset it does not belong to (a server that
                # answers a Range request with 200 and the whole body)
                raise SourceChangedError(
                    f"{self._shown} answered Range bytes={expected[0]}-{expected[1]} with "
                    f"Content-Range {headers.get('content-range')!r}"
                )
            if match.group(3) != "*" and int(match.group(3)) != self._info.size:
                raise SourceChangedError(
                    f"source changed: {self._shown} is now {match.group(3)} bytes "
                    f"(was {self._info.size})"
                )
        else:
            if code != 200:
                raise _status_error(code, self._url, headers)
            total = headers.get("content-length")
            if total is not None and int(total) != self._info.size:
                raise SourceChangedError(
                    f"source changed: {self._shown} is now {total} bytes (was {self._info.size})"
                )
        if (headers.get("etag") or headers.get("last-modified")) and _version(
            headers, self._info.size
        ) != self._info.version:
            raise SourceChangedError(
                f"source changed during the transfer: {self._shown} has a new ETag/Last-Modified"
            )

    def _discard(self, count: int) -> None:
        """Read and drop ``count`` bytes (a server without ranges sends from byte 0),
        counting them in ``bytes_read`` and calling :func:`keepalive` as they pass, so
        a long skip heartbeats and shows as source progress."""
        scratch = memoryview(bytearray(min(count, 1 << 20)))
        offset = count
        while count > 0:
            n = self._read(scratch[: min(count, len(scratch))])
            if n == 0:
                raise IncompleteReadError(f"{self._shown} ended before byte {offset}")
            self.bytes_read += n
            count -= n
            keepalive()

    def _read(self, buffer: memoryview) -> int:
        """What one ``recv`` brings (or the buffered bytes), at most ``len(buffer)``."""
        response = self._response
        assert response is not None
        try:
            if response.chunked:  # rare for ranged reads: http.client decodes the chunks
                piece = response.read1(len(buffer))
                buffer[: len(piece)] = piece
                return len(piece)
            return response.fp.readinto1(buffer)  # type: ignore[attr-defined,no-any-return]
        except (OSError, http.client.HTTPException) as err:
            detail = _scrubbed(str(err), self._url, self._location)
            raise IncompleteReadError(
                f"reading {self._shown} failed mid-response: {detail}"
            ) from None

    def readinto(self, buffer: memoryview) -> int:
        if self._remaining <= 0:
            return 0
        if self._skip:  # here, not at open: the caller watches bytes_read while it runs
            self._discard(self._skip)
            self._skip = 0
        n = self._read(buffer[: min(len(buffer), self._remaining, _MAX_READ)])
        if n == 0:
            raise IncompleteReadError(
                f"{self._shown} ended {self._remaining} bytes before the end of the requested range"
            )
        self._remaining -= n
        self.bytes_read += n
        return n

    def close(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class HTTPDriver(Driver):
    """Driver for ``http://`` and ``https://`` sources."""

    scheme = "http"
    can_write = False

    def __init__(self, origin_headers: Mapping[str, Mapping[str, str]] | None = None) -> None:
        """Args:
        origin_headers: request headers per origin (``"https://host[:port]"``), e.g. an
            ``Authorization`` configured on the worker for one server; sent to that
            origin only, and credentials among them never follow a redirect to another
            origin."""
        self._origin_headers = {
            _origin(origin): dict(headers) for origin, headers in (origin_headers or {}).items()
        }
        self._client = httpx.Client(
            timeout=_TIMEOUT, follow_redirects=False, headers={"User-Agent": "staccato"}
        )

    def _request(self, method: str, url: str, headers: Mapping[str, str]) -> httpx.Response:
        """Send ``method url`` with its body unread, following up to ``_MAX_REDIRECTS``
        redirects; on the way to another origin than ``url``'s, ``Authorization``,
        ``Proxy-Authorization`` and ``Cookie`` are dropped (RFC 9110 section 15.4; httpx
        alone keeps ``Authorization`` on an http -> https upgrade of the same host).
        The caller closes the response.

        Raises:
            httpx.HTTPError: transport failures.
            PermanentError: too many redirects.
        """
        origin = _origin(url)
        request = self._client.build_request(
            method, url, headers={**self._origin_headers.get(origin, {}), **headers}
        )
        for _ in range(_MAX_REDIRECTS + 1):
            response = self._client.send(request, stream=True, follow_redirects=False)
            following = response.next_request
            if following is None:
                return response
            response.close()
            if _origin(following.url) != origin:
                for name in _CREDENTIAL_HEADERS:
                    following.headers.pop(name, None)
            request = following
        raise PermanentError(f"{redact(url)} redirects more than {_MAX_REDIRECTS} times")

    def stat(self, url: EndpointURL) -> ObjectInfo:
        """``HEAD`` first; if it advertises ``Accept-Ranges: bytes``, a ranged ``GET``
        of one byte confirms it (some servers and proxies advertise ranges and ignore
        them). A refused ``HEAD`` (405, 501, ...) falls back to the ranged ``GET``
        (tests/test_http_cases.py ``test_head_refused``). Each request, redirects included, must end within ``REQUEST_DEADLINE_S``.

        Raises:
            NotFoundError, PermissionDeniedError: 404/410, 401/403.
            RetryableError: 5xx, 408, 429 (with ``retry_after_s`` from ``Retry-After``
                on 429/503), transport errors, a request over its deadline.
        """
        try:
            return self._stat(url.canonical)
        finally:
            self._client.cookies.clear()  # no cookie of one transfer reaches another

    def _stat(self, url: str) -> ObjectInfo:
        shown = redact(url)
        try:
            with _time_limit(
                REQUEST_DEADLINE_S,
                f"HEAD {shown} took longer than {REQUEST_DEADLINE_S:.0f} s; retrying",
            ):
                head = self._request("HEAD", url, {"Accept-Encoding": "identity"})
                head.close()
        except httpx.HTTPError as err:
            raise _transport_error(err, url) from None
        code = head.status_code
        if code in (401, 403, 404, 410) or code >= 500 or code in (408, 429):
            raise _status_error(code, url, head.headers)
        if code == 200:
            length = head.headers.get("content-length", "")
            advertises_ranges = "bytes" in head.headers.get("accept-ranges", "").lower()
            if length.isdigit() and (int(length) == 0 or not advertises_ranges):
                return self._info_from_probe(head, url)
        try:
            with _time_limit(
                REQUEST_DEADLINE_S,
                f"GET {shown} (Range bytes=0-0) took longer than {REQUEST_DEADLINE_S:.0f} s; "
                "retrying",
            ):
                response = self._request(
                    "GET", url, {"Range": "bytes=0-0", "Accept-Encoding": "identity"}
                )
            try:
                return self._info_from_probe(response, url)
            finally:
                response.close()
        except httpx.HTTPError as err:
            raise _transport_error(err, url) from None

    def _info_from_probe(self, response: httpx.Response, url: str) -> ObjectInfo:
        code = response.status_code
        extra = {
            key: response.headers[header]
            for key, header in (("etag", "etag"), ("last_modified", "last-modified"))
            if header in response.headers
        }
        content_type = response.headers.get("content-type")
        if code == 206:
            match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
            if match and match.group(1) == "0" and match.group(3) != "*":
                size = int(match.group(3))
                return ObjectInfo(
                    size=size,
                    version=_version(response.headers, size),
                    supports_ranges=True,
                    content_type=content_type,
                    extra=extra,
                    **_freshness(response.headers),
                )
            raise PermanentError(
                f"{redact(url)} answered a range probe with a malformed Content-Range"
            )
        if code == 416:
            match = _UNSATISFIED_RANGE.match(response.headers.get("content-range", ""))
            if match and match.group(1) == "0":
                return ObjectInfo(
                    size=0,
                    version=_version(response.headers, 0),
                    supports_ranges=True,
                    content_type=content_type,
                    extra=extra,
                    **_freshness(response.headers),
                )
        if code == 200:
            length = response.headers.get("content-length")
            if length is None or not length.isdigit():
                raise PermanentError(
                    f"{redact(url)} sends no Content-Length and no byte ranges; its size cannot be known "
                    "(staging through a cache is not supported yet)"
                )
            size = int(length)
            return ObjectInfo(
                size=size,
                version=_version(response.headers, size),
                supports_ranges=False,
                content_type=content_type,
                extra=extra,
                **_freshness(response.headers),
            )
        raise _status_error(code, url, response.headers)

    def open_read(self, url: EndpointURL, info: ObjectInfo, offset: int, length: int) -> Reader:
        return HTTPReader(
            url.canonical, info, offset, length, self._origin_headers.get(_origin(url.canonical))
        )
