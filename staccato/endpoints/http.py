"""The ``http``/``https`` endpoint (sources only), with httpx.

Stat sends ``HEAD``; when that advertises ranges (or is refused: some servers
answer 405, case C12) a ranged ``GET`` for ``bytes=0-0`` decides: a ``206`` with a
matching ``Content-Range`` (RFC 9110 §14.4) proves range support and gives the size;
a ``200`` means the server ignores ranges (C1); a ``416`` with ``bytes */0`` is an
empty object. The version pinned is the strong ``ETag``, or
else ``Last-Modified`` (RFC 9110 §8.8).

Reads send ``Range`` with ``If-Range`` (RFC 9110 §13.1.5) holding the pinned
validator, and accept only a ``206`` whose ``Content-Range`` is exactly the range asked
for; a ``200`` then means the representation changed -> ``SourceChanged``. A server
without range support is read from byte 0 in one stream (earlier bytes discarded).
A body that ends before its ``Content-Length`` is a retryable error (C11).
"""

from __future__ import annotations

import email.utils
import http.client
import re
import urllib.request
from collections.abc import Mapping
from email.message import Message
from typing import Any
from urllib.parse import SplitResult, urlsplit

import httpx

from staccato.endpoints.base import Driver, Reader
from staccato.errors import (
    IncompleteRead,
    NotFound,
    PermanentError,
    PermissionDenied,
    RetryableError,
    SourceChanged,
    StaccatoError,
)
from staccato.models import ObjectInfo
from staccato.urls import EndpointURL

_CONTENT_RANGE = re.compile(r"^bytes\s+(\d+)-(\d+)/(\d+|\*)$")
_MAX_READ = 1 << 20  # bytes per readinto call
_UNSATISFIED_RANGE = re.compile(r"^bytes\s+\*/(\d+)$")
_TIMEOUT = httpx.Timeout(connect=10.0, read=30.0, write=30.0, pool=30.0)


def _status_error(code: int, url: str) -> StaccatoError:
    if code == 404 or code == 410:
        return NotFound(f"source not found: {url} (HTTP {code})")
    if code in (401, 403):
        return PermissionDenied(f"source refused: {url} (HTTP {code})")
    if code in (408, 425, 429) or code >= 500:
        return RetryableError(f"source unavailable: {url} (HTTP {code})")
    return PermanentError(f"unexpected response from {url}: HTTP {code}")


def _transport_error(err: httpx.HTTPError, url: str) -> StaccatoError:
    if isinstance(err, httpx.RemoteProtocolError):
        return IncompleteRead(f"connection to {url} broke mid-response: {err}")
    return RetryableError(f"cannot read {url}: {type(err).__name__}: {err}")


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
        return email.utils.parsedate_to_datetime(value).timestamp()
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
    """An ``http.client`` connection for ``target`` and the request target to send,
    honouring ``http_proxy``/``https_proxy``/``no_proxy`` as httpx and curl do: an
    absolute URI through an HTTP proxy, a CONNECT tunnel for HTTPS."""
    host = target.hostname or ""
    https = target.scheme == "https"
    port = target.port or (443 if https else 80)
    path = (target.path or "/") + (f"?{target.query}" if target.query else "")
    proxy = urllib.request.getproxies().get(target.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        via = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if https:
            tunnel = http.client.HTTPSConnection(
                via.hostname or "", via.port or 80, timeout=_TIMEOUT.read
            )
            tunnel.set_tunnel(host, port)
            return tunnel, path
        plain = http.client.HTTPConnection(
            via.hostname or "", via.port or 80, timeout=_TIMEOUT.read
        )
        return plain, target.geturl()
    connection_class = http.client.HTTPSConnection if https else http.client.HTTPConnection
    return connection_class(host, port, timeout=_TIMEOUT.read), path


class HTTPReader(Reader):
    """Streams one byte range of an HTTP resource straight into caller buffers.

    The bulk read path uses the standard library's ``http.client``: its
    ``HTTPResponse.readinto`` receives from the socket directly into the chunk buffer,
    with no intermediate ``bytes`` objects (httpx allocates and joins pieces, which
    caps one process at ~500 MB/s here). Stat, redirects and everything else use httpx.
    """

    def __init__(self, url: str, info: ObjectInfo, offset: int, length: int) -> None:
        self._url = url
        self._info = info
        self._remaining = length
        self._connection: http.client.HTTPConnection | None = None
        self._response: http.client.HTTPResponse | None = None
        if length <= 0:
            return
        target = urlsplit(info.extra.get("location") or url)
        headers = {"Accept-Encoding": "identity", "User-Agent": "staccato"}
        ranged = info.supports_ranges
        if ranged:
            headers["Range"] = f"bytes={offset}-{offset + length - 1}"
            validator = _validator(info)
            if validator:
                headers["If-Range"] = validator
        try:
            self._connection, path = _connect(target)
            self._connection.request("GET", path, headers=headers)
            self._response = self._connection.getresponse()
        except (OSError, http.client.HTTPException) as err:
            self.close()
            raise RetryableError(f"cannot read {url}: {type(err).__name__}: {err}") from None
        try:
            self._check_response(self._response, ranged, offset, length)
            if not ranged and offset:
                self._discard(offset)
        except BaseException:
            self.close()
            raise

    def _check_response(
        self, response: http.client.HTTPResponse, ranged: bool, offset: int, length: int
    ) -> None:
        code = response.status
        headers = response.headers
        if code in (404, 410):  # it was there at stat time, as every driver reports it
            raise SourceChanged(
                f"source changed: {self._url} was removed during the transfer (HTTP {code})"
            )
        if ranged:
            if code == 200:
                raise SourceChanged(
                    f"source changed during the transfer: {self._url} no longer matches "
                    f"the version pinned at start ({self._info.version})"
                )
            if code != 206:
                if code == 416:
                    raise SourceChanged(
                        f"source changed: {self._url} is now shorter than {offset + length} bytes"
                    )
                raise _status_error(code, self._url)
            match = _CONTENT_RANGE.match(headers.get("content-range", ""))
            expected = (offset, offset + length - 1)
            if not match or (int(match.group(1)), int(match.group(2))) != expected:
                # C1: never write a body at an offset it does not belong to.
                raise SourceChanged(
                    f"{self._url} answered Range bytes={expected[0]}-{expected[1]} with "
                    f"Content-Range {headers.get('content-range')!r}"
                )
            if match.group(3) != "*" and int(match.group(3)) != self._info.size:
                raise SourceChanged(
                    f"source changed: {self._url} is now {match.group(3)} bytes "
                    f"(was {self._info.size})"
                )
        else:
            if code != 200:
                raise _status_error(code, self._url)
            total = headers.get("content-length")
            if total is not None and int(total) != self._info.size:
                raise SourceChanged(
                    f"source changed: {self._url} is now {total} bytes (was {self._info.size})"
                )
        if (headers.get("etag") or headers.get("last-modified")) and _version(
            headers, self._info.size
        ) != self._info.version:
            raise SourceChanged(
                f"source changed during the transfer: {self._url} has a new ETag/Last-Modified"
            )

    def _discard(self, count: int) -> None:
        scratch = memoryview(bytearray(min(count, 1 << 20)))
        while count > 0:
            n = self._read(scratch[: min(count, len(scratch))])
            if n == 0:
                raise IncompleteRead(f"{self._url} ended before byte {count}")
            self.bytes_read += n
            count -= n

    def _read(self, buffer: memoryview) -> int:
        assert self._response is not None
        try:
            return self._response.readinto(buffer)
        except (OSError, http.client.HTTPException) as err:
            raise IncompleteRead(f"reading {self._url} failed mid-response: {err}") from None

    def readinto(self, buffer: memoryview) -> int:
        if self._remaining <= 0:
            return 0
        # At most 1 MiB per call: http.client fills the whole buffer before returning,
        # and the caller heartbeats (and notices cancellation) between calls.
        n = self._read(buffer[: min(len(buffer), self._remaining, _MAX_READ)])
        if n == 0:
            raise IncompleteRead(
                f"{self._url} ended {self._remaining} bytes before the end of the requested range"
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

    def __init__(self) -> None:
        self._client = httpx.Client(
            timeout=_TIMEOUT, follow_redirects=True, headers={"User-Agent": "staccato"}
        )

    def stat(self, url: EndpointURL) -> ObjectInfo:
        """``HEAD`` first; if it advertises ``Accept-Ranges: bytes``, a ranged ``GET``
        of one byte confirms it (some servers and proxies advertise ranges and ignore
        them, C1). A refused ``HEAD`` (405, 501, ...) falls back to the ranged ``GET``
        (C12)."""
        try:
            head = self._client.head(url.canonical, headers={"Accept-Encoding": "identity"})
        except httpx.HTTPError as err:
            raise _transport_error(err, url.canonical) from None
        code = head.status_code
        if code in (401, 403, 404, 410) or code >= 500 or code in (408, 429):
            raise _status_error(code, url.canonical)
        if code == 200:
            length = head.headers.get("content-length", "")
            advertises_ranges = "bytes" in head.headers.get("accept-ranges", "").lower()
            if length.isdigit() and (int(length) == 0 or not advertises_ranges):
                return self._info_from_probe(head, url.canonical)
        try:
            with self._client.stream(
                "GET", url.canonical, headers={"Range": "bytes=0-0", "Accept-Encoding": "identity"}
            ) as response:
                return self._info_from_probe(response, url.canonical)
        except httpx.HTTPError as err:
            raise _transport_error(err, url.canonical) from None

    def _info_from_probe(self, response: httpx.Response, url: str) -> ObjectInfo:
        code = response.status_code
        extra = {
            key: response.headers[header]
            for key, header in (("etag", "etag"), ("last_modified", "last-modified"))
            if header in response.headers
        }
        if str(response.url) != url:
            extra["location"] = str(response.url)  # after redirects: where reads go
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
            raise PermanentError(f"{url} answered a range probe with a malformed Content-Range")
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
                    f"{url} sends no Content-Length and no byte ranges; its size cannot be known "
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
        raise _status_error(code, url)

    def open_read(self, url: EndpointURL, info: ObjectInfo, offset: int, length: int) -> Reader:
        return HTTPReader(url.canonical, info, offset, length)
