"""S3 limits, part planning and ListParts paging: pure functions, no network.

The limits are Amazon S3's ("Amazon S3 multipart upload limits",
https://docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html), which
S3-compatible stores (SeaweedFS, MinIO, Ceph RGW, ...) copy:

| rule | value | API |
| --- | --- | --- |
| part size, except the last part | >= 5 MiB | CompleteMultipartUpload (``EntityTooSmall``) |
| part size | <= 5 GiB | UploadPart (``EntityTooLarge``) |
| parts per upload | <= 10,000, numbered 1..10,000 | UploadPart ``partNumber`` |
| object size | <= 5 TiB | CompleteMultipartUpload |
| one PutObject / CopyObject | <= 5 GiB | PutObject, CopyObject |
| object key | <= 1,024 bytes of UTF-8 | every call (``KeyTooLongError``) |
| ListParts page | <= 1,000 parts | ListParts ``max-parts`` |

A chunk of a transfer is one part (chunk ``i`` is part number ``i + 1``), so the
part size is the transfer's chunk size, adjusted to these limits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from staccato.errors import Unsupported
from staccato.models import GiB, MiB
from staccato.urls import S3_MAX_KEY_BYTES

TiB = 1024 * GiB

#: smallest part except the last (bytes); CompleteMultipartUpload rejects smaller ones
MIN_PART_SIZE = 5 * MiB
#: largest part (bytes), UploadPart
MAX_PART_SIZE = 5 * GiB
#: most parts in one multipart upload
MAX_PARTS = 10_000
#: largest object (bytes)
MAX_OBJECT_SIZE = 5 * TiB
#: largest single PutObject / CopyObject (bytes)
MAX_PUT_SIZE = 5 * GiB
#: longest object key (bytes of UTF-8)
MAX_KEY_BYTES = S3_MAX_KEY_BYTES
#: most parts ListParts returns per page
LIST_PARTS_PAGE = 1_000


def _size_text(n: int) -> str:
    for unit, factor in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    if n >= MiB:
        return f"{n / MiB:.1f} MiB"
    return f"{n} bytes"


def fits_one_part(size: int, part_size: int) -> bool:
    """Whether an object of ``size`` bytes is uploaded as one part (it fits in one
    requested chunk, and a part holds at most 5 GiB). A sole part may be smaller than
    5 MiB: only parts other than the last must reach it."""
    return size <= part_size and size <= MAX_PART_SIZE


def plan_part_size(size: int, requested: int) -> tuple[int, str | None]:
    """The part size (bytes) for an object of ``size`` bytes when ``requested`` bytes
    per chunk were asked for.

    * An object that fits in one requested chunk (at most 5 GiB) is one part; the
      chunk size stays as requested (0 B: no chunk at all, one empty PutObject).
    * Otherwise parts are at least 5 MiB and at most 5 GiB, and big enough that the
      object needs at most 10,000 parts (rounded up to a whole MiB).

    Returns:
        ``(part_size, note)``; ``note`` says what was changed and why (None if nothing).

    Raises:
        Unsupported: the object is larger than 5 TiB, S3's largest object.
    """
    if requested <= 0:
        raise ValueError("requested chunk size must be positive")
    if size > MAX_OBJECT_SIZE:
        raise Unsupported(
            f"the object is {size} bytes; S3 objects are at most 5 TiB ({MAX_OBJECT_SIZE} bytes)"
        )
    if fits_one_part(size, requested):
        return requested, None
    part = min(max(requested, MIN_PART_SIZE), MAX_PART_SIZE)
    reasons: list[str] = []
    if requested < MIN_PART_SIZE:
        reasons.append("S3 parts except the last must be at least 5 MiB")
    elif requested > MAX_PART_SIZE:
        reasons.append("S3 parts are at most 5 GiB")
    if -(-size // part) > MAX_PARTS:
        least = -(-size // MAX_PARTS)
        part = -(-least // MiB) * MiB
        reasons = [
            f"an upload has at most {MAX_PARTS:,} parts, so {_size_text(size)} needs parts "
            f"of at least {least} bytes"
        ]
    if part == requested:
        return part, None
    return part, (
        f"chunk size {_size_text(requested)} -> {_size_text(part)} for S3: " + "; ".join(reasons)
    )


def collect_parts(
    fetch_page: Callable[[int], Mapping[str, Any]],
    *,
    max_pages: int = MAX_PARTS + 1,
    conflicts: set[int] | None = None,
) -> dict[int, Mapping[str, Any]]:
    """Every part of a multipart upload, by part number, from ListParts pages.

    ``fetch_page(marker)`` returns one ListParts response for ``PartNumberMarker=marker``
    (0 for the first page). Paged to the end (``IsTruncated``), past 1,000 parts. Some servers
    ignore the marker and repeat a page, or return a ``NextPartNumberMarker`` that does
    not move: parts are de-duplicated by part number (first seen wins), a marker that
    does not move falls back to the highest part number seen, and paging stops when
    that does not move either or a page brings no new part. A part missed that way is
    merely uploaded again (part writes are idempotent), never lost.

    Some stores (SeaweedFS) keep every upload of a part number, each listed with its
    own ETag (a part replaced under the upload is listed beside the one it replaced, in
    no set order), and which of them CompleteMultipartUpload takes cannot be told from
    the listing: the numbers listed more than once with different ETags and the same
    size are added to ``conflicts`` when it is given.

    Returns:
        ``{part_number: part}`` where ``part`` is the ListParts entry (``PartNumber``,
        ``ETag``, ``Size``, optional ``ChecksumCRC32C`` ...).
    """
    parts: dict[int, Mapping[str, Any]] = {}
    marker = 0
    for _ in range(max_pages):
        page = fetch_page(marker)
        new = 0
        for part in page.get("Parts") or []:
            number = int(part["PartNumber"])
            if number not in parts:
                parts[number] = part
                new += 1
            elif (
                conflicts is not None
                and part.get("ETag") != parts[number].get("ETag")
                and part.get("Size") == parts[number].get("Size")
            ):
                conflicts.add(number)
        if not page.get("IsTruncated") or not new:
            break
        next_marker = page.get("NextPartNumberMarker")
        following = int(next_marker) if next_marker not in (None, "") else 0
        if following <= marker:
            following = max(parts, default=marker)
        if following <= marker:
            break
        marker = following
    return parts
