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

import re
from collections.abc import Iterator

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
_UNSATISFIED_RANGE = re.compile(r"^bytes\s+\*/(\d+)$")
_TIMEOUT = httpx.Timeout(connect=10.0, read=30.0, write=30.0, pool=30.0)
_READ_PIECE = 1 << 20


def _status_error(response: httpx.Response, url: str) -> StaccatoError:
    code = response.status_code
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


def _version(response: httpx.Response, size: int) -> str:
    etag = response.headers.get("etag")
    if etag and not etag.startswith("W/"):
        return f"etag={etag}"
    modified = response.headers.get("last-modified")
    if modified:
        return f"last_modified={modified};size={size}"
    return f"size={size}"


class HTTPReader(Reader):
    """Streams one byte range of an HTTP resource into caller buffers."""

    def __init__(
        self, client: httpx.Client, url: str, info: ObjectInfo, offset: int, length: int
    ) -> None:
        self._url = url
        self._info = info
        self._remaining = length
        self._pending = memoryview(b"")
        self._response: httpx.Response | None = None
        if length <= 0:
            return
        headers = {"Accept-Encoding": "identity"}
        ranged = info.supports_ranges
        if ranged:
            headers["Range"] = f"bytes={offset}-{offset + length - 1}"
            validator = _validator(info)
            if validator:
                headers["If-Range"] = validator
        try:
            request = client.build_request("GET", url, headers=headers)
            response = client.send(request, stream=True)
        except httpx.HTTPError as err:
            raise _transport_error(err, url) from None
        self._response = response
        try:
            self._check_response(response, ranged, offset, length)
        except BaseException:
            self.close()
            raise
        self._pieces: Iterator[bytes] = response.iter_raw(_READ_PIECE)
        if not ranged and offset:
            self._discard(offset)

    def _check_response(
        self, response: httpx.Response, ranged: bool, offset: int, length: int
    ) -> None:
        code = response.status_code
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
                raise _status_error(response, self._url)
            match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
            expected = (offset, offset + length - 1)
            if not match or (int(match.group(1)), int(match.group(2))) != expected:
                # C1: never write a body at an offset it does not belong to.
                raise SourceChanged(
                    f"{self._url} answered Range bytes={expected[0]}-{expected[1]} with "
                    f"Content-Range {response.headers.get('content-range')!r}"
                )
            if match.group(3) != "*" and int(match.group(3)) != self._info.size:
                raise SourceChanged(
                    f"source changed: {self._url} is now {match.group(3)} bytes (was {self._info.size})"
                )
        else:
            if code != 200:
                raise _status_error(response, self._url)
            total = response.headers.get("content-length")
            if total is not None and int(total) != self._info.size:
                raise SourceChanged(
                    f"source changed: {self._url} is now {total} bytes (was {self._info.size})"
                )
        if _version(response, self._info.size) != self._info.version and (
            response.headers.get("etag") or response.headers.get("last-modified")
        ):
            raise SourceChanged(
                f"source changed during the transfer: {self._url} has a new ETag/Last-Modified"
            )

    def _next_piece(self) -> bool:
        try:
            piece = next(self._pieces, b"")
        except httpx.HTTPError as err:
            raise _transport_error(err, self._url) from None
        self._pending = memoryview(piece)
        return bool(piece)

    def _discard(self, count: int) -> None:
        while count > 0:
            if not self._pending and not self._next_piece():
                raise IncompleteRead(f"{self._url} ended before byte {count}")
            n = min(count, len(self._pending))
            self._pending = self._pending[n:]
            self.bytes_read += n
            count -= n

    def readinto(self, buffer: memoryview) -> int:
        if self._remaining <= 0:
            return 0
        if not self._pending and not self._next_piece():
            raise IncompleteRead(
                f"{self._url} ended {self._remaining} bytes before the end of the requested range"
            )
        n = min(len(buffer), len(self._pending), self._remaining)
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        self._remaining -= n
        self.bytes_read += n
        return n

    def close(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None


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
            raise _status_error(head, url.canonical)
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
        content_type = response.headers.get("content-type")
        if code == 206:
            match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
            if match and match.group(1) == "0" and match.group(3) != "*":
                size = int(match.group(3))
                return ObjectInfo(
                    size=size,
                    version=_version(response, size),
                    supports_ranges=True,
                    content_type=content_type,
                    extra=extra,
                )
            raise PermanentError(f"{url} answered a range probe with a malformed Content-Range")
        if code == 416:
            match = _UNSATISFIED_RANGE.match(response.headers.get("content-range", ""))
            if match and match.group(1) == "0":
                return ObjectInfo(
                    size=0,
                    version=_version(response, 0),
                    supports_ranges=True,
                    content_type=content_type,
                    extra=extra,
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
                version=_version(response, size),
                supports_ranges=False,
                content_type=content_type,
                extra=extra,
            )
        raise _status_error(response, url)

    def open_read(self, url: EndpointURL, info: ObjectInfo, offset: int, length: int) -> Reader:
        return HTTPReader(self._client, url.canonical, info, offset, length)
