"""The S3 source side: one ranged GetObject of the version pinned at stat time.

The range is pinned with ``If-Match`` (the ETag) and ``VersionId`` where the bucket is
versioned; the answer's ``Content-Range``, total size and ETag are checked too, for
stores that ignore ``If-Match``. Any difference is ``SourceChanged``.
"""

from __future__ import annotations

import http.client
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from botocore.response import StreamingBody

from staccato.endpoints.base import Reader
from staccato.endpoints.s3.errors import _changed_or, _s3_error, _scrub
from staccato.errors import IncompleteRead, SourceChanged
from staccato.models import ObjectInfo
from staccato.urls import EndpointURL

if TYPE_CHECKING:
    from staccato.endpoints.s3.driver import S3Driver

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class _RangeGet:
    """One ranged GetObject of the pinned version: the answer checked (range, total
    size, ETag), its body read into caller buffers."""

    def __init__(
        self, driver: S3Driver, url: EndpointURL, info: ObjectInfo, offset: int, length: int
    ) -> None:
        self.remaining = length
        self.what = f"s3://{url.bucket}/{url.key}"
        self._body: Any = None
        self._direct: Callable[[memoryview], int] | None = None
        endpoint = driver.endpoint(url)
        params: dict[str, Any] = {
            "Bucket": url.bucket,
            "Key": url.key,
            "Range": f"bytes={offset}-{offset + length - 1}",
        }
        etag = info.extra.get("etag")
        if etag:
            params["IfMatch"] = etag
        if info.extra.get("version_id"):
            params["VersionId"] = info.extra["version_id"]
        try:
            response = endpoint.client.get_object(**params)
        except ClientError as err:
            raise _changed_or(err, endpoint, url, info, offset, length, "GetObject") from None
        except (BotoCoreError, OSError) as err:
            raise _s3_error(
                err, endpoint, url.bucket, url.key, role="source", action="GetObject"
            ) from None
        self._body = response["Body"]
        self._direct = _direct_readinto(self._body)
        try:
            _check_range(response, self.what, info, offset, length)
        except BaseException:
            self.close()
            raise

    def readinto(self, buffer: memoryview) -> int:
        """Up to ``len(buffer)`` bytes of the range (at least 1 while it has any).

        Raises:
            IncompleteRead: the body broke or ended before the range's end.
        """
        want = min(len(buffer), self.remaining)
        try:
            n = (self._direct or self._body.readinto)(buffer[:want])
        except (IncompleteReadError, ResponseStreamingError, ReadTimeoutError, OSError) as err:
            raise IncompleteRead(
                f"GetObject of {self.what} broke with {self.remaining} bytes left: "
                f"{_scrub(str(err), None)}"
            ) from None
        if not n:
            raise IncompleteRead(f"GetObject of {self.what} ended {self.remaining} bytes early")
        self.remaining -= n
        return n

    def close(self) -> None:
        if self._body is not None:
            raw = self._body._raw_stream if self._direct is not None else None
            if raw is not None and self.remaining <= 0 and raw._fp.isclosed():
                # read to its end past urllib3: hand the connection back to its pool
                # (what urllib3 does itself when it reads the last byte)
                raw.release_conn()
            self._body.close()
            self._body = None


class S3Reader(Reader):
    """One ranged GetObject of the pinned version, streamed into caller buffers.

    One GET per range (a stream's run of chunks), not several in flight: measured
    against SeaweedFS on a loaded 2-core machine, sending the next 32 MiB GET while
    the current one was read cost the worker more CPU (threads, a request per piece)
    than the overlap gained."""

    def __init__(
        self, driver: S3Driver, url: EndpointURL, info: ObjectInfo, offset: int, length: int
    ) -> None:
        self._remaining = length
        self._get: _RangeGet | None = None
        if length <= 0:
            return  # never a ranged GET of an empty range (416 on a 0-byte object)
        self._get = _RangeGet(driver, url, info, offset, length)

    @property
    def _direct(self) -> Callable[[memoryview], int] | None:
        """The GET's direct ``readinto`` (None: urllib3's), for tests."""
        return self._get._direct if self._get is not None else None

    def readinto(self, buffer: memoryview) -> int:
        if self._remaining <= 0 or self._get is None:
            return 0
        n = self._get.readinto(buffer[: min(len(buffer), self._remaining)])
        self._remaining -= n
        self.bytes_read += n
        return n

    def close(self) -> None:
        if self._get is not None:
            self._get.close()
            self._get = None


def _direct_readinto(body: Any) -> Callable[[memoryview], int] | None:
    """``readinto`` of the HTTP response under botocore's body, or None.

    urllib3's ``HTTPResponse.readinto`` reads into a new ``bytes`` (http.client reads
    into a fresh bytearray and copies it out) and copies that into the buffer: two
    copies and two chunk-sized allocations per read. http.client's own ``readinto``
    receives straight into the buffer (``recv_into``). Taken only for a plain body: a
    botocore ``StreamingBody`` (no checksum-validating wrapper) over a urllib3
    response whose http.client response has a ``Content-Length``, is not chunked and
    not content-encoded, and from which nothing was read yet. The reader counts the
    bytes itself (``IncompleteRead`` on a short body), as urllib3 would.
    """
    if type(body) is not StreamingBody:
        return None
    raw = getattr(body, "_raw_stream", None)
    fp = getattr(raw, "_fp", None)
    if (
        not isinstance(fp, http.client.HTTPResponse)
        or fp.chunked
        or fp.length is None
        or getattr(raw, "_fp_bytes_read", 1) != 0
        or not hasattr(raw, "release_conn")
        or (fp.getheader("Content-Encoding") or "identity").lower() != "identity"
    ):
        return None
    return fp.readinto


def _check_range(
    response: Mapping[str, Any], what: str, info: ObjectInfo, offset: int, length: int
) -> None:
    """The body must be exactly the range asked for, of the pinned version."""
    match = _CONTENT_RANGE.match(response.get("ContentRange") or "")
    if not match or (int(match.group(1)), int(match.group(2))) != (offset, offset + length - 1):
        raise SourceChanged(
            f"{what} answered Range bytes={offset}-{offset + length - 1} with Content-Range "
            f"{response.get('ContentRange')!r}"
        )
    if match.group(3) != "*" and int(match.group(3)) != info.size:
        raise SourceChanged(
            f"source changed: {what} is now {match.group(3)} bytes (was {info.size})"
        )
    pinned = info.extra.get("etag")
    if pinned and response.get("ETag") and response["ETag"] != pinned:
        # for servers that ignore If-Match
        raise SourceChanged(f"source changed during the transfer: {what} has a new ETag")
