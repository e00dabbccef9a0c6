"""Reading one byte range of an HTTP resource into the caller's buffers."""

from __future__ import annotations

import http.client
from collections.abc import Mapping
from urllib.parse import quote, urljoin, urlsplit

from staccato.endpoints.base import Reader, keepalive
from staccato.endpoints.http.bounded_io import connection_for, open_connection, response_class
from staccato.endpoints.http.messages import (
    CONTENT_RANGE,
    MAX_REDIRECTS,
    if_range_validator,
    origin_of,
    scrubbed,
    status_error,
    version_of,
    without_credentials,
)
from staccato.errors import (
    IncompleteReadError,
    InvalidURLError,
    PermanentError,
    RetryableError,
    SourceChangedError,
)
from staccato.models import ObjectInfo
from staccato.urls import redact

MAX_READ = 1 << 20  # bytes per readinto call
#: kept as written in a redirect's Location: RFC 3986's reserved and unreserved
#: characters and ``%`` (escapes the server made); the rest is percent-encoded
_LOCATION_KEPT = "-._~:/?#[]@!$&'()*+,;=%"


class HTTPReader(Reader):
    """Streams one byte range of an HTTP resource straight into caller buffers.

    The bulk read path uses the standard library's ``http.client``: reading the body
    with ``readinto1`` receives from the socket directly into the chunk buffer, with
    no intermediate ``bytes`` objects (httpx allocates and joins a ``bytes`` per piece:
    an extra copy of every byte; bench/bench_file_http.py measures the throughput),
    and returns what one ``recv`` got, so the caller sees progress as it comes. Stat, redirects and everything else use httpx.

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
            validator = if_range_validator(info)
            if validator:
                headers["If-Range"] = validator
        # an older stat kept where redirects led; now each read follows them afresh (a
        # presigned redirect target expires, and its token must not be kept)
        location = info.extra.get("location") or url
        for _ in range(MAX_REDIRECTS + 1):
            self._response = self._get(location, headers, credentials)
            following = self._redirect(location, self._response)
            if following is None:
                break
            self.close()
            location = following
        else:
            self.close()
            raise PermanentError(f"{self._shown} redirects more than {MAX_REDIRECTS} times")
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
        try:
            if credentials:
                sent.update(
                    credentials
                    if origin_of(location) == origin_of(self._url)
                    else without_credentials(credentials)
                )
            self._connection, path = connection_for(urlsplit(location))
            self._connection.response_class = response_class(location)
            open_connection(self._connection, location)
            self._connection.request("GET", path, headers=sent)
            return self._connection.getresponse()
        except (http.client.InvalidURL, UnicodeError, ValueError) as err:
            # http.client refuses the URL itself (a space or control character, a
            # non-ASCII request target, a bad port): the same request fails on every
            # try, so it is not retried (for --retry-for, 24 h by default)
            self.close()
            detail = scrubbed(f"{type(err).__name__}: {err}", self._url, location)
            shown = redact(location)
            raise InvalidURLError(
                f"cannot read {self._shown}: the URL {shown} is malformed: {detail}"
                if shown != self._shown
                else f"cannot read {self._shown}: the URL is malformed: {detail}"
            ) from None
        except (OSError, http.client.HTTPException) as err:
            self.close()
            detail = scrubbed(f"{type(err).__name__}: {err}", self._url, location)
            raise RetryableError(f"cannot read {self._shown}: {detail}") from None
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _redirect(location: str, response: http.client.HTTPResponse) -> str | None:
        """The absolute URL a 301/302/303/307/308 response points to, else None.

        What a URL cannot hold as written (a space, non-ASCII, ``"<>{}|``) is
        percent-encoded as httpx does when the stat follows the same redirect (and
        curl and browsers do), so the reads ask for the URL the stat found."""
        target = response.getheader("location")
        if response.status not in (301, 302, 303, 307, 308) or not target:
            return None
        return quote(urljoin(location, target), safe=_LOCATION_KEPT)

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
                if (headers.get("etag") or headers.get("last-modified")) and version_of(
                    headers, self._info.size
                ) == self._info.version:
                    # the whole object, unchanged: not If-Range's answer to a new
                    # version (RFC 9110 section 13.1.5) but a server that ignores larger
                    # ranges though it honoured the one-byte probe at stat
                    raise PermanentError(
                        f"{self._shown} answered Range bytes={offset}-{offset + length - 1} "
                        f"with the whole object (HTTP 200, same version {self._info.version}): "
                        "the server ignores byte ranges for it (it honoured the one-byte "
                        "probe); copy it with --stage, which reads it once in one stream"
                    )
                raise SourceChangedError(
                    f"source changed during the transfer: {self._shown} no longer matches "
                    f"the version pinned at start ({self._info.version})"
                )
            if code != 206:
                if code == 416:
                    raise SourceChangedError(
                        f"source changed: {self._shown} is now shorter than {offset + length} bytes"
                    )
                raise status_error(code, self._url, headers)
            match = CONTENT_RANGE.match(headers.get("content-range", ""))
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
                raise status_error(code, self._url, headers)
            total = headers.get("content-length")
            if total is not None and int(total) != self._info.size:
                raise SourceChangedError(
                    f"source changed: {self._shown} is now {total} bytes (was {self._info.size})"
                )
        if (headers.get("etag") or headers.get("last-modified")) and version_of(
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
            detail = scrubbed(str(err), self._url, self._location)
            raise IncompleteReadError(
                f"reading {self._shown} failed mid-response: {detail}"
            ) from None

    def readinto(self, buffer: memoryview) -> int:
        if self._remaining <= 0:
            return 0
        if self._skip:  # here, not at open: the caller watches bytes_read while it runs
            self._discard(self._skip)
            self._skip = 0
        n = self._read(buffer[: min(len(buffer), self._remaining, MAX_READ)])
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
