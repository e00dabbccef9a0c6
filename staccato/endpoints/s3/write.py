"""The S3 destination side: the parts of one multipart upload.

Chunk ``i`` of a transfer is part ``i + 1`` of the session's multipart upload
(UploadPart with the chunk's CRC32C, or UploadPartCopy for a server-side copy from the
same endpoint). Part sizes are planned in :mod:`.parts`; the session's life (create,
list the parts S3 holds, complete, abort) is the driver's (:mod:`.driver`).
A writer whose upload was completed or aborted meanwhile stops with
:class:`UploadGone`.
"""

from __future__ import annotations

import http.client
from dataclasses import dataclass
from typing import TYPE_CHECKING

import crc32c as _crc32c
import urllib3.exceptions
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError

from staccato.endpoints.base import ChunkWriter, keepalive, moved, write_fence
from staccato.endpoints.s3.checksums import _b64_to_hex, _crc_b64, _is_crc32c_hex
from staccato.endpoints.s3.client import _Endpoint
from staccato.endpoints.s3.errors import _changed_or, _code, _s3_error
from staccato.errors import PermanentError, RetryableError, StaccatoError, WriteSessionLost
from staccato.models import ObjectInfo, WriteSession
from staccato.urls import EndpointURL

if TYPE_CHECKING:
    from staccato.endpoints.s3.driver import S3Driver

_SEND_PIECE = 1 << 20  # bytes handed to the socket per write while sending a chunk


class _ViewBody:
    """A seekable, read-only file over a memoryview: botocore streams it (and rewinds it
    to retry) without copying the chunk; reads hand out slices of at least 1 MiB so
    the socket is fed in large writes.

    A piece handed out tells the hang watch that the one before it went to the socket
    (:func:`~staccato.endpoints.base.moved`), only the first time a piece that far into
    the body goes: botocore retries a request whose send timed out (its 10 s connect
    timeout also bounds a send) on a new connection, rewinding the body, and the
    kernel of a stopped server still takes the first MiBs of each. Counted as motion,
    those re-sends, every ~11 s, kept a stream to a SIGSTOPped moto "moving" under
    the 12 s limit of the default heartbeat timeout: its hang watch never fired, and
    the attempt ended only when botocore's 5 tries did (~60 s), a minute late."""

    def __init__(self, view: memoryview) -> None:
        self._view = view
        self._position = 0
        #: the furthest position a piece was handed out from (bytes): pieces below it
        #: are re-sends of a retried request, not motion
        self._furthest = 0

    def __len__(self) -> int:
        return len(self._view)

    def read(self, size: int | None = -1) -> memoryview | bytes:
        if self._position >= len(self._view):
            return b""
        if size is None or size < 0:
            end = len(self._view)
        else:
            end = min(len(self._view), self._position + max(size, _SEND_PIECE))
        write_fence()  # the piece goes on the wire next
        piece = self._view[self._position : end]
        if self._position > self._furthest:
            moved()  # the piece before this one went to the socket (the first time)
            self._furthest = self._position
        self._position = end
        # A large part can take longer to send than the heartbeat timeout: heartbeat
        # (rate-limited) while sending. If the stream was cancelled this raises, the
        # request is abandoned and the part is simply not there.
        keepalive()
        return piece

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._position, 2: len(self._view)}[whence]
        self._position = max(0, min(len(self._view), base + offset))
        return self._position

    def tell(self) -> int:
        return self._position

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True


class UploadGone(WriteSessionLost):
    """The multipart upload no longer exists: completed or aborted (by another attempt
    of this transfer, by hand, or by a lifecycle rule). A stale writer stops here; a
    live transfer opens a new upload and copies again."""


def _reraise_keepalive(err: Exception) -> None:
    """botocore wraps an exception raised while it sends a body (``HTTPClientError``);
    one from :func:`keepalive` (the stream was cancelled or paused) is not an S3 error:
    let it through unwrapped."""
    inner = getattr(err, "kwargs", {}).get("error") if isinstance(err, HTTPClientError) else None
    if isinstance(inner, Exception) and not isinstance(
        inner, (OSError, http.client.HTTPException, urllib3.exceptions.HTTPError, StaccatoError)
    ):
        raise inner


@dataclass(frozen=True)
class _UploadDestination:
    """The destination of a session, rebuilt from its (serialised) WriteSession."""

    url: EndpointURL
    endpoint: _Endpoint
    session: WriteSession

    @property
    def bucket(self) -> str:
        return self.url.bucket

    @property
    def key(self) -> str:
        return self.url.key

    @property
    def empty_put(self) -> bool:
        """A 0-byte object: no upload, one empty PutObject at publish."""
        return self.session.data.get("mode") == "put"

    def check_not_legacy(self) -> None:
        """A ``put`` session of a non-empty object comes from an older Staccato that
        wrote small objects with one PutObject before publish: treat it as lost, so the
        workflow opens a new (multipart) session and copies again.

        Raises:
            WriteSessionLost: the session is such an old one.
        """
        if self.empty_put and self.session.size > 0:
            raise WriteSessionLost(
                f"write session {self.session.session_id!r} of s3://{self.bucket}/{self.key} "
                "is a single-PutObject session of an older worker; copying again into a "
                "multipart upload"
            )

    @property
    def upload_id(self) -> str:
        return self.session.session_id

    @property
    def marker(self) -> str:
        return self.session.data["marker"]

    def error(self, err: Exception, action: str) -> StaccatoError:
        return _s3_error(
            err, self.endpoint, self.bucket, self.key, role="destination", action=action
        )

    def gone(self) -> UploadGone:
        return UploadGone(
            f"multipart upload {self.upload_id[:16]}... of s3://{self.bucket}/{self.key} no longer "
            "exists (completed or aborted by another attempt, or by a lifecycle rule)"
        )


class S3ChunkWriter(ChunkWriter):
    """Writes chunks as parts of the session's multipart upload: UploadPart, or
    UploadPartCopy for a server-side copy. (A 0-byte object has no chunk.)"""

    def __init__(self, driver: S3Driver, session: WriteSession) -> None:
        self._driver = driver
        self._target = driver.target(session)
        #: part number - 1 -> the ETag (no quotes, lower case) the store answered
        self._tags: dict[int, str] = {}

    def part_tag(self, index: int) -> str | None:
        """The ETag UploadPart or UploadPartCopy answered for chunk ``index``'s part
        (no quotes, lower case), as ListParts lists it; None if this writer did not
        write it or the store answered none."""
        return self._tags.get(index)

    def write_chunk(self, index: int, data: memoryview, checksum: str) -> None:
        target = self._target
        crc = checksum if _is_crc32c_hex(checksum) else f"{_crc32c.crc32c(data):08x}"
        crc_b64 = _crc_b64(int(crc, 16))
        client = target.endpoint.client
        target.check_not_legacy()
        if target.empty_put:
            raise PermanentError(f"chunk {index} of a 0-byte object's session (bug)")
        try:
            response = client.upload_part(
                Bucket=target.bucket,
                Key=target.key,
                UploadId=target.upload_id,
                PartNumber=index + 1,
                Body=_ViewBody(data),
                ContentLength=len(data),
                ChecksumCRC32C=crc_b64,
            )
        except ClientError as err:
            if _code(err) == "NoSuchUpload":
                raise target.gone() from None  # a stale writer stops here
            raise target.error(err, f"UploadPart {index + 1}") from None
        except BotoCoreError as err:
            _reraise_keepalive(err)
            raise target.error(err, f"UploadPart {index + 1}") from None
        echoed = response.get("ChecksumCRC32C")
        if echoed and echoed != crc_b64:
            raise RetryableError(
                f"s3://{target.bucket}/{target.key} part {index + 1}: the store computed CRC32C "
                f"{echoed}, the source bytes have {crc_b64}"
            )
        self._remember(index, response.get("ETag"))

    def _remember(self, index: int, etag: object) -> None:
        tag = str(etag or "").strip('"').lower()
        if tag:
            self._tags[index] = tag
        else:
            self._tags.pop(index, None)

    def copy_chunk(
        self,
        index: int,
        source: EndpointURL,
        info: ObjectInfo,
        offset: int,
        length: int,
        algorithm: str,
    ) -> str:
        target = self._target
        copy_source: dict[str, str] = {"Bucket": source.bucket, "Key": source.key}
        if info.extra.get("version_id"):
            copy_source["VersionId"] = info.extra["version_id"]
        pinned: dict[str, str] = {}
        if info.extra.get("etag"):
            pinned["CopySourceIfMatch"] = info.extra["etag"]
        client = target.endpoint.client
        source_endpoint = self._driver.endpoint(source)
        target.check_not_legacy()
        write_fence()
        try:
            response = client.upload_part_copy(
                Bucket=target.bucket,
                Key=target.key,
                UploadId=target.upload_id,
                PartNumber=index + 1,
                CopySource=copy_source,
                CopySourceRange=f"bytes={offset}-{offset + length - 1}",
                **pinned,
            )
            result = response.get("CopyPartResult") or {}
        except ClientError as err:
            code = _code(err)
            if code == "NoSuchUpload":
                raise target.gone() from None
            if code in ("PreconditionFailed", "NoSuchKey", "NoSuchVersion", "InvalidRange"):
                raise _changed_or(
                    err, source_endpoint, source, info, offset, length, "UploadPartCopy"
                ) from None
            raise target.error(err, "UploadPartCopy") from None
        except BotoCoreError as err:
            raise target.error(err, "UploadPartCopy") from None
        self._remember(index, result.get("ETag"))
        if algorithm != "crc32c":
            return ""  # the stream reads the range to compute another algorithm
        return _b64_to_hex(result.get("ChecksumCRC32C"))
