"""The S3 source side: one ranged GetObject of the version pinned at stat time.

The range is pinned with ``If-Match`` (the ETag) and ``VersionId`` where the bucket is
versioned; the answer's ``Content-Range``, total size and ETag are checked too, for
stores that ignore ``If-Match``. Any difference is ``SourceChanged``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from staccato.endpoints.base import Reader
from staccato.endpoints.s3.errors import _changed_or, _s3_error, _scrub
from staccato.errors import IncompleteRead, SourceChanged
from staccato.models import ObjectInfo
from staccato.urls import EndpointURL

if TYPE_CHECKING:
    from staccato.endpoints.s3.driver import S3Driver

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class S3Reader(Reader):
    """One ranged GetObject of the pinned version, streamed into caller buffers."""

    def __init__(
        self, driver: S3Driver, url: EndpointURL, info: ObjectInfo, offset: int, length: int
    ) -> None:
        self._remaining = length
        self._body: Any = None
        if length <= 0:
            return  # never a ranged GET of an empty range (416 on a 0-byte object)
        self._what = f"s3://{url.bucket}/{url.key}"
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
        try:
            _check_range(response, self._what, info, offset, length)
        except BaseException:
            self.close()
            raise

    def readinto(self, buffer: memoryview) -> int:
        if self._remaining <= 0:
            return 0
        want = min(len(buffer), self._remaining)
        try:
            n = self._body.readinto(buffer[:want])
        except (IncompleteReadError, ResponseStreamingError, ReadTimeoutError, OSError) as err:
            raise IncompleteRead(
                f"GetObject of {self._what} broke with {self._remaining} bytes left: "
                f"{_scrub(str(err), None)}"
            ) from None
        if not n:
            raise IncompleteRead(f"GetObject of {self._what} ended {self._remaining} bytes early")
        self._remaining -= n
        self.bytes_read += n
        return n

    def close(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None


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
