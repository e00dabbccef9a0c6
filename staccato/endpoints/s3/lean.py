"""A lean GetObject and PutObject for a dataset's small objects: the requests botocore
would send,
signed with AWS Signature Version 4 here (the S3 flavour: the URI path encoded once,
the payload hash of the empty body signed; AWS "Signature Version 4 signing process"
and "Authenticating Requests: Using the Authorization Header", Amazon S3 API
reference) and sent on this module's own keep-alive ``http.client`` connections,
without botocore's per-call machinery (parameter validation, event hooks, endpoint
rules, response parsing: ~2.5 ms of CPU per call) nor urllib3's (~0.5 ms): ~0.3 ms of
CPU per 64 KiB object here, which for such objects is most of the copy.

Only the plain case takes it; anything else answers None and the caller makes the
request through boto3 as always (which retries, follows redirects and words errors):
* an S3-compatible store reached by path-style addressing at an ``http://``
  ``endpoint_url`` with no user info, query or fragment (never AWS itself: its
  virtual-host addressing, regional redirects and endpoint rules stay botocore's; nor
  https, whose CA bundle and verification settings stay botocore's);
* no proxy configured in the environment (botocore honours them; this path does not);
* a key whose URL path no layer can normalise (no empty, ``.`` or ``..`` segment);
* a ``200`` answer with a ``Content-Length``. Any other status, any connection or
  protocol error: None, nothing else done (the boto3 request that follows reports it).
  A kept-alive connection the store closed meanwhile is tried once more on a new one
  (GET and PUT of a whole object are idempotent).

The exchange itself is HTTP/1.1 written and read here (RFC 9112) rather than through
``http.client``, whose response parsing goes through the ``email`` package (~0.3 ms
of CPU per answer, more than the rest of the request): the request line and headers
are sent as botocore sends them (plus ``Accept-Encoding: identity``, unsigned, as
``http.client`` adds it); the answer is taken only when it is plain: an ``HTTP/1.x``
status line, header lines without obsolete line folding, no ``Transfer-Encoding``,
one ``Content-Length`` (a GET's body is read to exactly that length, so a connection
goes back to the pool only at a message boundary); anything else is None as above
and the connection is closed.

A dataset's batch reads ahead (:meth:`LeanS3.send_get`, then :meth:`LeanS3.finish_get`
when the file's turn comes): several GETs in flight from one thread, each on a
connection of its own taken from the pool, the answer read and checked exactly as
:meth:`LeanS3.get` reads it; an answer never read is dropped with its connection.

PutObject carries what boto3's ``put_object`` call in
:meth:`staccato.endpoints.s3.driver.S3Driver.put_whole` carries: ``Content-Length``,
``Content-Type``, the body's CRC32C (``x-amz-checksum-crc32c``: the store rejects a
body that differs, nothing stored), the marker metadata, and the SHA-256 of the body
signed (as botocore signs it on ``http``). Any answer but a plain ``200``: None, and
the boto3 request that follows sends it again and reports what the store says.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import threading
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from staccato import interrupts
from staccato.endpoints.base import keepalive, moved, stop_held, write_fence

#: environment variables that route requests through a proxy (botocore honours them)
_PROXY_VARIABLES = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)
#: SHA-256 of the empty body: the payload hash a GET signs (as botocore signs it on http)
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
#: idle connections kept per endpoint (a process runs a few batches, each reading
#: ahead on :data:`staccato.activities.dataset.READ_AHEAD` connections, or with a few
#: threads)
_IDLE_MAX = 32
#: seconds to connect, and to wait for each read of an answer
_TIMEOUT_S = 60.0
#: seconds between the :func:`~staccato.endpoints.base.keepalive` calls of a read
#: that waits for the store (the activity's heartbeat timeout is 20 s by default)
_WAIT_SLICE_S = 0.5
#: bytes asked of the socket at once for status and header lines
_RECEIVE_BYTES = 65536


class LeanS3:
    """GetObject of small objects on one endpoint (thread-safe: each request takes a
    connection of its own from a small pool of idle ones)."""

    def __init__(self, endpoint_url: str, region: str, credentials: Any) -> None:
        parts = urlsplit(endpoint_url)
        self._host = parts.hostname or ""
        self._port = parts.port or 80
        #: the Host header as botocore sends it (no port when it is the default)
        self._host_header = parts.netloc
        self._base_path = parts.path.rstrip("/")
        self._region = region or "us-east-1"
        self._credentials = credentials
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()
        #: (day, region, secret key) -> the day's signing key
        self._keys: dict[tuple[str, str, str], bytes] = {}

    @staticmethod
    def usable(endpoint_url: str, is_aws: bool, client: Any) -> bool:
        """Whether requests to this endpoint can take the lean path (see the module
        docstring)."""
        if is_aws or not endpoint_url.startswith("http://"):
            return False
        parts = urlsplit(endpoint_url)
        if parts.username or parts.password or parts.query or parts.fragment or not parts.hostname:
            return False
        if any(os.environ.get(name) for name in _PROXY_VARIABLES):
            return False
        config = client.meta.config
        return (config.s3 or {}).get("addressing_style") == "path" and not config.proxies

    def get(self, bucket: str, key: str, max_size: int) -> tuple[dict[str, Any], bytes] | None:
        """GetObject ``key`` (``x-amz-checksum-mode: ENABLED``).

        Returns:
            (the response's fields as boto3 names them: ETag, VersionId, LastModified,
            ChecksumCRC32C, ChecksumType, ContentType, ContentLength; the body), the
            fields alone with an empty body when the object is over ``max_size`` bytes,
            or None when the lean path does not apply or did not get a plain ``200``.
        """
        if _odd_key(key) or self._credentials is None:
            return None
        path = self._path(bucket, key)
        sent = self._send("GET", path, {"x-amz-checksum-mode": "ENABLED"}, b"", _EMPTY_SHA256)
        if sent is None:
            return None
        return self._answer(*sent, max_size)

    def put(
        self, bucket: str, key: str, data: bytes, headers: dict[str, str]
    ) -> dict[str, Any] | None:
        """PutObject ``key`` with ``data`` and ``headers`` (``Content-Type``,
        ``x-amz-checksum-crc32c``, ``x-amz-meta-*``; lowercase names).

        Returns:
            The answer's fields as boto3 names them (ETag, VersionId, ChecksumCRC32C),
            or None when the lean path does not apply or did not get a plain ``200``.

        A stop the keepalive hook raises while the answer is awaited (a dataset's
        cancel) waits for the answer, bounded (:func:`~staccato.endpoints.base.stop_held`):
        the object may be stored already, and the caller must learn whether it was.

        Raises:
            StreamLeaseExpiredError: the running attempt's lease ran out before a send
                (:func:`~staccato.endpoints.base.write_fence`, checked right before each
                one): that send did not happen.
            StreamStopped (or what the keepalive hook raises): stopped, and no answer
                came within the bound.
        """
        if _odd_key(key) or self._credentials is None:
            return None
        payload = hashlib.sha256(data).hexdigest()
        # sent, the object may be stored whatever comes next: a stop (the batch's cancel)
        # waits for the answer, which says whether it was (base.stop_held)
        with stop_held():
            # a dataset batch's write, under its lease: checked right before each send
            sent = self._send("PUT", self._path(bucket, key), headers, data, payload, fenced=True)
        if sent is None:
            return None
        connection, answer = sent
        whole = False
        try:
            if answer.status != 200:
                return None
            length = answer.length()
            if length:
                with stop_held():
                    connection.read(length)  # the body of a 200 answer to PutObject is empty
            whole = length is not None and not answer.closes
            return {
                "ETag": answer.headers.get("etag"),
                "VersionId": answer.headers.get("x-amz-version-id"),
                "ChecksumCRC32C": answer.headers.get("x-amz-checksum-crc32c"),
            }
        except (OSError, ValueError):  # the boto3 request that follows reports it
            return None
        finally:
            if whole:
                self._release(connection)
            else:
                connection.close()

    def _path(self, bucket: str, key: str) -> str:
        """The request path of ``key`` (path-style; each byte URI-encoded once, as
        SigV4 for S3 signs it)."""
        return f"{self._base_path}/{quote(bucket, safe='')}/{quote(key, safe='/~')}"

    def _send(
        self,
        method: str,
        path: str,
        extra: dict[str, str],
        body: bytes,
        payload_hash: str,
        *,
        fenced: bool = False,
    ) -> tuple[_Connection, _Answer] | None:
        """Send a signed request; the connection and the answer (its status and
        headers read, its body not), or None on a connection or protocol error.
        ``fenced`` (a write): each send, the one on a new connection too, is checked
        by :func:`write_fence` right before it (see :meth:`_sent`).

        Raises:
            StreamLeaseExpiredError: (``fenced``) the attempt's lease ran out before a
                send; nothing of that send left.
        """
        message = self._message(method, path, extra, body, payload_hash)
        if message is None:
            return None
        for _ in range(2):
            sent = self._sent(message, fenced=fenced)
            if sent is None:
                return None
            connection, reused = sent
            try:
                return connection, connection.answer()
            except (_Closed, ConnectionResetError, BrokenPipeError):
                connection.close()
                if not reused:
                    return None
                # the store closed an idle connection: once more on a new one
            except (OSError, ValueError):  # as above
                connection.close()
                return None
            except BaseException:  # stopped while waiting (keepalive raised)
                connection.close()
                raise
        return None

    def _sent(self, message: bytes, *, fenced: bool = False) -> tuple[_Connection, bool] | None:
        """``message`` sent whole on a pooled or new connection: the connection and
        whether it was reused; once more on a new one when a kept-alive connection
        turns out closed; None on any other connection error (nothing left open).

        ``fenced`` (a write): :func:`write_fence` is called once the connection is
        there, right before ``sendall``, so that neither a connect nor the signing nor
        a retry lies between the lease's check and the bytes reaching the kernel (a
        check before them let a batch frozen in between send its PutObject on waking,
        after its lease had run out).

        Raises:
            StreamLeaseExpiredError: (``fenced``) the lease ran out: nothing sent (the
                connection, unused, goes back to the pool).
        """
        for _ in range(2):
            try:
                connection, reused = self._connection()
            except OSError:
                return None
            if fenced:
                try:
                    write_fence()
                except BaseException:
                    self._release(connection)  # nothing was sent on it
                    raise
            try:
                interrupts.register_socket(connection.sock)  # a guard can free this thread
                connection.sock.sendall(message)
                return connection, reused
            except (ConnectionResetError, BrokenPipeError):
                connection.close()
                if not reused:
                    return None
                # the store closed an idle connection: once more on a new one
            except OSError:
                connection.close()
                return None
        return None

    def _message(
        self, method: str, path: str, extra: dict[str, str], body: bytes, payload_hash: str
    ) -> bytes | None:
        """The request's bytes (request line, signed headers, body), or None when it
        cannot be signed (the boto3 request that follows reports why)."""
        try:
            headers = self._signed_headers(method, path, extra, payload_hash)
        except Exception:  # noqa: BLE001 - the boto3 request that follows reports it
            return None
        lines = [f"{method} {path} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines.append("Accept-Encoding: identity")
        if body or method == "PUT":
            lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head + body if body else head

    def send_get(self, bucket: str, key: str) -> SentGet | None:
        """Send GetObject ``key`` (as :meth:`get` does) without reading its answer, so
        that one thread keeps several requests in flight on connections of their own
        (a dataset's batch reads ahead of the file it writes). The answer is read by
        :meth:`finish_get`; a request never finished must be dropped
        (:meth:`SentGet.drop`: its connection is closed, never reused).

        Returns:
            The request in flight, or None when the lean path does not apply or the
            request could not be sent (nothing is left open).
        """
        if _odd_key(key) or self._credentials is None:
            return None
        message = self._message(
            "GET", self._path(bucket, key), {"x-amz-checksum-mode": "ENABLED"}, b"", _EMPTY_SHA256
        )
        if message is None:
            return None
        sent = self._sent(message)
        return None if sent is None else SentGet(*sent, bucket, key)

    def finish_get(self, sent: SentGet, max_size: int) -> tuple[dict[str, Any], bytes] | None:
        """The answer to a GetObject sent by :meth:`send_get`, as :meth:`get` returns
        it (None: not a plain ``200``, or a connection or protocol error; the
        connection is then closed). A kept-alive connection the store had closed
        before it read the request is tried once more on a new one, as :meth:`get`
        does."""
        connection = sent.connection
        sent.connection = None
        if connection is None:
            raise ValueError(f"GetObject of {sent.key!r}: its answer was taken already")
        try:
            answer = connection.answer()
        except (_Closed, ConnectionResetError, BrokenPipeError):
            connection.close()
            return self.get(sent.bucket, sent.key, max_size) if sent.reused else None
        except (OSError, ValueError):  # the boto3 request that follows reports it
            connection.close()
            return None
        except BaseException:  # stopped while waiting (keepalive raised): never reused
            connection.close()
            raise
        return self._answer(connection, answer, max_size)

    def _answer(
        self, connection: _Connection, answer: _Answer, max_size: int
    ) -> tuple[dict[str, Any], bytes] | None:
        """The fields and body of a plain 200 answer; the connection goes back to the
        pool only when the answer was read to its end."""
        whole = False
        try:
            size = answer.length()
            if answer.status != 200 or size is None:
                return None
            headers = answer.headers
            modified = headers.get("last-modified")
            fields: dict[str, Any] = {
                "ETag": headers.get("etag"),
                "VersionId": headers.get("x-amz-version-id"),
                "ChecksumCRC32C": headers.get("x-amz-checksum-crc32c"),
                "ChecksumType": headers.get("x-amz-checksum-type", "FULL_OBJECT"),
                "ContentType": headers.get("content-type"),
                "ContentLength": size,
                "LastModified": parsedate_to_datetime(modified) if modified else None,
            }
            if size > max_size:
                return fields, b""
            data = connection.read(size)
            if len(data) != size:
                return None
            whole = not answer.closes
            return fields, data
        except (OSError, ValueError, TypeError):  # as above
            return None
        finally:
            if whole:
                self._release(connection)  # read to its end: reused
            else:
                connection.close()  # unread bytes, or closing: never handed on

    def _connection(self) -> tuple[_Connection, bool]:
        """An idle connection (True) or a new one (False).

        Raises:
            OSError: no connection could be made.
        """
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return _Connection(self._host, self._port), False

    def _release(self, connection: _Connection) -> None:
        with self._lock:
            if len(self._idle) < _IDLE_MAX:
                self._idle.append(connection)
                return
        connection.close()

    def _signed_headers(
        self, method: str, path: str, extra: dict[str, str], payload_hash: str
    ) -> dict[str, str]:
        """The headers of a request with its SigV4 ``Authorization`` (every header
        signed; ``extra``'s names lowercase)."""
        frozen = self._credentials.get_frozen_credentials()
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        day = amz_date[:8]
        headers = {
            **extra,
            "host": self._host_header,
            "x-amz-content-sha256": payload_hash,
            "x-amz-date": amz_date,
        }
        if frozen.token:
            headers["x-amz-security-token"] = frozen.token
        names = sorted(headers)
        signed = ";".join(names)  # Content-Length is sent, not signed (as botocore)
        canonical = "\n".join(
            [
                method,
                path,
                "",  # no query
                "".join(f"{name}:{headers[name].strip()}\n" for name in names),
                signed,
                payload_hash,
            ]
        )
        scope = f"{day}/{self._region}/s3/aws4_request"
        to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256",
                amz_date,
                scope,
                hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
            ]
        )
        signature = hmac.new(
            self._signing_key(day, frozen.secret_key), to_sign.encode("utf-8"), hashlib.sha256
        ).hexdigest()
        headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={frozen.access_key}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}"
        )
        return headers

    def _signing_key(self, day: str, secret: str) -> bytes:
        """The day's SigV4 signing key (HMAC chain over day, region, service, request)."""
        cached = (day, self._region, secret)
        found = self._keys.get(cached)
        if found is None:
            found = ("AWS4" + secret).encode("utf-8")
            for part in (day, self._region, "s3", "aws4_request"):
                found = hmac.new(found, part.encode("utf-8"), hashlib.sha256).digest()
            with self._lock:
                if len(self._keys) > 4:
                    self._keys.clear()
                self._keys[cached] = found
        return found


class SentGet:
    """A GetObject sent by :meth:`LeanS3.send_get` whose answer is not read yet.

    Attributes:
        connection: the connection the answer comes on (None once taken or dropped).
        reused: whether it was an idle kept-alive connection (the store may have
            closed it before reading the request: then sent again on a new one).
        bucket, key: the object asked for.
    """

    __slots__ = ("connection", "reused", "bucket", "key")

    def __init__(self, connection: _Connection, reused: bool, bucket: str, key: str) -> None:
        self.connection: _Connection | None = connection
        self.reused = reused
        self.bucket = bucket
        self.key = key

    def drop(self) -> None:
        """Close the connection of an answer that will not be read (never reused)."""
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.close()


def _odd_key(key: str) -> bool:
    """Whether some layer could normalise ``key``'s URL path (an empty, ``.`` or ``..``
    segment), or it is empty: those go through boto3."""
    return not key or any(segment in ("", ".", "..") for segment in key.split("/"))


#: bytes: the longest status or header line read, and the most header lines, of an
#: answer (a longer one is not plain: None, the connection closed)
_LINE_MAX = 65536
_HEADERS_MAX = 100


class _Closed(Exception):
    """The store closed the connection before answering (an idle one: try a new one)."""


class _Answer:
    """An answer's status line and headers (names lowercase; a repeated header's values
    joined with ``", "``, RFC 9110 section 5.3).

    Attributes:
        status: the status code.
        headers: name -> value.
        closes: the store closes the connection after this answer (HTTP/1.0, or
            ``Connection: close``).
    """

    def __init__(self, status: int, headers: dict[str, str], closes: bool) -> None:
        self.status = status
        self.headers = headers
        self.closes = closes

    def length(self) -> int | None:
        """The body's length (bytes) from ``Content-Length``; None when the answer has
        none, or a ``Transfer-Encoding`` (not plain).

        Raises:
            ValueError: a ``Content-Length`` that is not one non-negative number (two
                different values joined, a sign, letters).
        """
        if "transfer-encoding" in self.headers:
            return None
        value = self.headers.get("content-length")
        if value is None:
            return None
        if not value.isdigit():
            raise ValueError(f"Content-Length {value!r}")
        return int(value)


class _Connection:
    """One kept-alive HTTP/1.1 connection (``TCP_NODELAY``, as ``http.client`` sets
    it): its socket and a buffered reader of what the store sends.

    Raises (constructor):
        OSError: the connection could not be made within the timeout.
    """

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=_TIMEOUT_S)
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            self.sock.close()
            raise
        self._reader = _Reader(self.sock)

    def answer(self) -> _Answer:
        """Read an answer's status line and headers.

        Raises:
            _Closed: the store closed the connection before the status line.
            ValueError: not a plain HTTP/1.x answer (see the module docstring).
            OSError: the connection broke or timed out.
        """
        line = self._reader.readline(_LINE_MAX + 1)
        if not line:
            raise _Closed()
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ValueError(f"status line {line[:100]!r}")
        headers: dict[str, str] = {}
        closes = parts[0] == b"HTTP/1.0"
        for _ in range(_HEADERS_MAX + 1):
            line = self._reader.readline(_LINE_MAX + 1)
            if line in (b"\r\n", b"\n"):
                break
            if not line.endswith(b"\n") or line[:1] in (b" ", b"\t"):
                raise ValueError("header line cut, too long or folded")
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip():
                raise ValueError(f"header line {line[:100]!r}")
            key = name.decode("latin-1").lower()
            text = value.strip().decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        else:
            raise ValueError("too many header lines")
        if "close" in headers.get("connection", "").lower():
            closes = True
        return _Answer(int(parts[1]), headers, closes)

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes of the body (fewer only when the store closed early)."""
        return self._reader.read(size)

    def close(self) -> None:
        self.sock.close()


_T = TypeVar("_T")


class _Reader:
    """Buffered reads of a connection's socket whose waits call
    :func:`~staccato.endpoints.base.keepalive` every :data:`_WAIT_SLICE_S` seconds: an
    activity waiting for a slow store's answer heartbeats (a dataset's batch reading
    ahead waits in its only thread), and a cancel or a lost worker stops the wait.
    A read that receives nothing for :data:`_TIMEOUT_S` seconds raises
    :class:`TimeoutError` (an ``OSError``), as the socket's own timeout did.

    (``socket.makefile``'s reader cannot be used so: after a timeout it refuses all
    further reads.)

    Raises (every read):
        OSError: the connection broke, or stayed silent for :data:`_TIMEOUT_S` s.
        Whatever the installed keepalive hook raises (the activity was cancelled).
    """

    __slots__ = ("_sock", "_buffer")

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        #: bytes received and not read yet
        self._buffer = bytearray()

    def _patiently(self, receive: Callable[[], _T]) -> _T:
        """``receive()`` (one ``recv``), waiting in slices with keepalive between."""
        deadline = time.monotonic() + _TIMEOUT_S
        self._sock.settimeout(_WAIT_SLICE_S)
        try:
            while True:
                try:
                    received = receive()
                    moved()  # the store answered (the hang watch, a dataset's rate)
                    return received
                except TimeoutError:
                    if time.monotonic() >= deadline:
                        raise
                    keepalive()
        finally:
            self._sock.settimeout(_TIMEOUT_S)

    def readline(self, limit: int) -> bytes:
        """Bytes up to and including the next ``\\n``, at most ``limit`` of them (fewer
        and no ``\\n`` only when the store closed the connection)."""
        buffer = self._buffer
        searched = 0
        while True:
            end = buffer.find(b"\n", searched, limit)
            if end >= 0:
                size = end + 1
            elif len(buffer) >= limit:
                size = limit
            else:
                searched = len(buffer)
                data = self._patiently(lambda: self._sock.recv(_RECEIVE_BYTES))
                if data:
                    buffer += data
                    continue
                size = len(buffer)
            line = bytes(buffer[:size])
            del buffer[:size]
            return line

    def read(self, size: int) -> bytes:
        """``size`` bytes (fewer only when the store closed the connection early)."""
        buffer = self._buffer
        if len(buffer) >= size:
            data = bytes(buffer[:size])
            del buffer[:size]
            return data
        into = bytearray(size)
        got = len(buffer)
        into[:got] = buffer
        buffer.clear()
        with memoryview(into) as view:
            while got < size:
                with view[got:] as rest:
                    received = self._patiently(lambda: self._sock.recv_into(rest))
                if not received:
                    break
                got += received
        return bytes(into) if got == size else bytes(into[:got])
