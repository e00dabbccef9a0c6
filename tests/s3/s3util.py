"""Small helpers for the S3 tests: digests of objects, leftovers, random files."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from pathlib import Path
from typing import Any

import crc32c

from tests.helpers import MiB


def object_digest(s3: Any, bucket: str, key: str) -> str:
    """SHA-256 of an object, streamed (1 MiB reads)."""
    digest = hashlib.sha256()
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    for piece in iter(lambda: body.read(MiB), b""):
        digest.update(piece)
    return digest.hexdigest()


def file_crc32c(path: Path) -> str:
    """CRC-32C of a file as Staccato prints it (8 hex digits)."""
    value = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MiB), b""):
            value = crc32c.crc32c(block, value)
    return f"{value:08x}"


def open_uploads(s3: Any, bucket: str) -> list[dict[str, Any]]:
    """Multipart uploads still open in ``bucket`` (ListMultipartUploads)."""
    return list(s3.list_multipart_uploads(Bucket=bucket).get("Uploads") or [])


def keys(s3: Any, bucket: str) -> list[str]:
    """Every key in ``bucket``."""
    found: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        found += [o["Key"] for o in page.get("Contents") or []]
    return found


def exists(s3: Any, bucket: str, key: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as err:
        if err.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
            return False
        raise
    return True


def crc32c_b64(data: bytes) -> str:
    """CRC32C as S3 carries it: base64 of 4 big-endian bytes."""
    return base64.b64encode(crc32c.crc32c(data).to_bytes(4, "big")).decode()


def listed_part_sizes(s3: Any, bucket: str, key: str, upload_id: str) -> dict[int, int]:
    """Part number -> size of the parts ListParts lists of an open upload (one page)."""
    page = s3.list_parts(Bucket=bucket, Key=key, UploadId=upload_id, MaxParts=1000)
    return {int(p["PartNumber"]): int(p["Size"]) for p in page.get("Parts") or []}


def replace_part(
    s3: Any,
    bucket: str,
    key: str,
    upload_id: str,
    number: int,
    source: Path,
    chunk_size: int,
    *,
    with_crc32c: bool,
) -> int:
    """Upload part ``number`` of an open upload again under its id, from its chunk of
    ``source`` with 10 bytes changed (the same size, other bytes: a tester's case);
    returns its length. ``with_crc32c``: send the new bytes' own CRC32C (SeaweedFS
    refuses a part of a CRC32C upload without one); without: boto3's defaults, as the
    tester sent it (moto)."""
    size = source.stat().st_size
    offset = (number - 1) * chunk_size
    length = min(chunk_size, size - offset)
    with open(source, "rb") as f:
        f.seek(offset)
        body = bytearray(f.read(length))
    body[1000:1010] = bytes(b ^ 0xFF for b in body[1000:1010])
    extra = {"ChecksumCRC32C": crc32c_b64(bytes(body))} if with_crc32c else {}
    s3.upload_part(
        Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=bytes(body), **extra
    )
    return length


def put_with_crc32c(s3: Any, bucket: str, key: str, path: Path, part_size: int = 8 * MiB) -> None:
    """Upload ``path`` carrying CRC32C checksums (boto3 needs awscrt to compute CRC32C
    itself): one PutObject up to ``part_size``, else a multipart upload with a CRC32C per
    part and a full-object CRC32C, as Staccato writes objects."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        if size <= part_size:
            data = f.read()
            s3.put_object(Bucket=bucket, Key=key, Body=data, ChecksumCRC32C=crc32c_b64(data))
            return
        upload = s3.create_multipart_upload(
            Bucket=bucket, Key=key, ChecksumAlgorithm="CRC32C", ChecksumType="FULL_OBJECT"
        )
        parts = []
        for number, data in enumerate(iter(lambda: f.read(part_size), b""), start=1):
            crc = crc32c_b64(data)
            etag = s3.upload_part(
                Bucket=bucket,
                Key=key,
                UploadId=upload["UploadId"],
                PartNumber=number,
                Body=data,
                ChecksumCRC32C=crc,
            )["ETag"]
            parts.append({"PartNumber": number, "ETag": etag, "ChecksumCRC32C": crc})
        s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
        )


def uploads_on_key(s3: Any, bucket: str, key: str) -> list[str]:
    """The ids of the multipart uploads open on exactly ``key`` (at the server)."""
    page = s3.list_multipart_uploads(Bucket=bucket, Prefix=key)
    return [u["UploadId"] for u in page.get("Uploads", []) if u["Key"] == key]


async def settled_uploads_on_key(s3: Any, bucket: str, key: str) -> list[str]:
    """The uploads open on ``key`` once the listing is the same for 10 polls in a row
    (a stopped server answers the requests it read once it wakes; bounded: 300 polls
    0.2 s apart).

    Raises:
        AssertionError: the listing never settled.
    """
    seen: list[list[str]] = []
    for _ in range(300):
        seen.append(sorted(uploads_on_key(s3, bucket, key)))
        if len(seen) >= 10 and all(s == seen[-1] for s in seen[-10:]):
            return seen[-1]
        await asyncio.sleep(0.2)
    raise AssertionError(f"the uploads on {key} never settled: {seen[-10:]}")
