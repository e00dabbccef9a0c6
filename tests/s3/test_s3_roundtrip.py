"""Round trips file->s3, s3->file, http->s3 and s3->s3 (server-side on one endpoint;
streamed across endpoints): byte-identical, verified against the store's CRC32C, and
nothing left open.

The S3 driver's sizes around the 5 MiB minimum part are its driver contract
(tests/contract); here server-side copy (CopyObject vs UploadPartCopy) runs them all,
the other pairs an empty object, one byte (one part), two parts' worth and a 64 MiB
object uploaded by boto3 in 8 MiB parts (an ETag "...-N").

Server: SeaweedFS (``s3_server``); across endpoints a second SeaweedFS (profile
``other``). Part size 5 MiB, so 5 MiB + 1 is the smallest multipart upload.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from staccato.client import StaccatoClient
from staccato.errors import TransferFailedError
from staccato.models import TransferOptions
from tests.helpers import MiB, leftovers, pair_sizes, sha256_file, write_random
from tests.s3.conftest import MeteredSeaweedS3, settled
from tests.s3.s3util import file_crc32c, keys, object_digest, open_uploads, put_with_crc32c

PART = 5 * MiB
SIZES = [0, 1, PART - 1, PART, PART + 1, 64 * MiB]  # server-side copy
PAIR_SIZES = [0, 1, PART + 1, 64 * MiB]
OPTIONS = TransferOptions(chunk_size=PART, streams=4)


def _put_source(s3: Any, bucket: str, key: str, path: Path) -> None:
    """Upload with boto3's TransferManager: objects over 8 MiB become multipart objects
    with an ETag ``"...-N"`` (a multipart ETag is not an MD5: never to be taken for one); boto3 stores a CRC32
    (not CRC32C) additional checksum."""
    s3.upload_file(str(path), bucket, key, Config=TransferConfig(multipart_chunksize=8 * MiB))


@pytest.mark.parametrize("size", PAIR_SIZES)
async def test_file_to_s3(
    s3_client: StaccatoClient, s3: Any, bucket: str, data_dir: Path, size: int
) -> None:
    source = data_dir / "src.bin"
    digest = write_random(source, size, seed=size)
    transfer = await s3_client.submit(str(source), f"s3://{bucket}/dir/obj-{size}.bin", OPTIONS)
    result = await s3_client.wait(transfer)
    assert result.bytes == size
    assert result.checksum == f"crc32c:{file_crc32c(source)}"
    assert object_digest(s3, bucket, f"dir/obj-{size}.bin") == digest
    assert keys(s3, bucket) == [f"dir/obj-{size}.bin"]
    assert open_uploads(s3, bucket) == []


@pytest.mark.parametrize("size", PAIR_SIZES)
async def test_s3_to_file(
    s3_client: StaccatoClient, s3: Any, bucket: str, data_dir: Path, tmp_path: Path, size: int
) -> None:
    source = tmp_path / "src.bin"
    digest = write_random(source, size, seed=size + 1)
    _put_source(s3, bucket, "src.bin", source)
    destination = data_dir / "dst.bin"
    transfer = await s3_client.submit(f"s3://{bucket}/src.bin", str(destination), OPTIONS)
    result = await s3_client.wait(transfer)
    assert result.bytes == size
    assert sha256_file(destination) == digest
    assert result.checksum == f"crc32c:{file_crc32c(source)}"
    assert leftovers(data_dir) == []


@pytest.mark.parametrize("size", pair_sizes(PART))
async def test_http_to_s3(
    s3_client: StaccatoClient, s3: Any, bucket: str, nginx_ranges, http_root: Path, size: int
) -> None:
    name = f"s3-rt-{size}.bin"
    digest = write_random(http_root / name, size, seed=size + 2)
    transfer = await s3_client.submit(nginx_ranges.url(name), f"s3://{bucket}/{name}", OPTIONS)
    result = await s3_client.wait(transfer)
    assert result.bytes == size
    assert object_digest(s3, bucket, name) == digest
    assert open_uploads(s3, bucket) == []


def _writes(server: MeteredSeaweedS3, bucket: str) -> int:
    """PUT requests (PutObject, UploadPart, UploadPartCopy) + COPY (CopyObject)."""
    return server.request_count(bucket, "PUT") + server.request_count(bucket, "COPY")


@pytest.mark.parametrize("size", SIZES)
async def test_s3_to_s3_same_endpoint_is_server_side(
    s3_client: StaccatoClient,
    s3_server: MeteredSeaweedS3,
    s3: Any,
    bucket: str,
    tmp_path: Path,
    size: int,
) -> None:
    """Two buckets on one endpoint: UploadPartCopy. Measured on the server
    (SeaweedFS request counters): the source bucket served no ranged GET (HTTP 206; its
    HEADs count as GET 200), so no object bytes went to the worker, and the destination
    got one PUT per part (UploadPartCopy, also for a one-part object) or, for 0 B, one
    empty PutObject. UploadPartCopy parts get a CRC32C computed by the store."""
    source = tmp_path / "src.bin"
    digest = write_random(source, size, seed=size + 3)
    put_with_crc32c(s3, bucket, "a/src.bin", source)
    target = f"{bucket}-copy"
    s3.create_bucket(Bucket=target)
    # CreateBucket is a PUT that SeaweedFS may count a moment after answering it
    writes_before = settled(lambda: _writes(s3_server, target), 0)
    transfer = await s3_client.submit(
        f"s3://{bucket}/a/src.bin", f"s3://{target}/b/dst.bin", OPTIONS
    )
    result = await s3_client.wait(transfer)
    assert result.bytes == size
    assert result.checksum == f"crc32c:{file_crc32c(source)}"
    assert object_digest(s3, target, "b/dst.bin") == digest
    ranged_gets = s3_server.request_count(bucket, "GET", code="206")
    if ranged_gets:
        # A stream retried (a heartbeat timeout on a loaded machine) re-reads the parts
        # whose checksum ListParts does not report (SeaweedFS): that is the only excuse.
        attempts = [
            event.activity_task_started_event_attributes.attempt
            async for event in s3_client.temporal.get_workflow_handle(
                transfer
            ).fetch_history_events()
            if event.HasField("activity_task_started_event_attributes")
        ]
        assert max(attempts, default=1) > 1, f"{ranged_gets} ranged GETs, no retried attempt"
    expected = max(1, -(-size // PART))
    assert settled(lambda: _writes(s3_server, target) - writes_before, expected) == expected
    assert open_uploads(s3, target) == []


@pytest.mark.parametrize("size", [0, PART + 1, 24 * MiB])
async def test_s3_to_s3_across_endpoints_is_streamed(
    profile_client: StaccatoClient,
    seaweed_s3,
    s3: Any,
    bucket: str,
    tmp_path: Path,
    size: int,
) -> None:
    """Default profile (metered SeaweedFS) -> profile ``other`` (a second SeaweedFS, its
    endpoint from the worker's config file): the bytes go through the worker."""
    source = tmp_path / "src.bin"
    digest = write_random(source, size, seed=size + 4)
    _put_source(s3, bucket, "src.bin", source)
    other = seaweed_s3.client()
    other.create_bucket(Bucket=bucket)
    transfer = await profile_client.submit(
        f"s3://{bucket}/src.bin", f"s3://{bucket}/dst.bin?profile=other", OPTIONS
    )
    result = await profile_client.wait(transfer)
    assert result.bytes == size
    assert object_digest(other, bucket, "dst.bin") == digest
    assert other.head_object(Bucket=bucket, Key="dst.bin")["ContentLength"] == size
    assert open_uploads(other, bucket) == []


async def test_server_side_copy_of_a_source_without_store_checksum(
    s3_client: StaccatoClient, s3_server: MeteredSeaweedS3, s3: Any, bucket: str, tmp_path: Path
) -> None:
    """A one-part object stored without CRC32C is copied server-side into a one-part
    multipart upload: SeaweedFS computes the part's CRC32C on UploadPartCopy, so no
    byte of the source goes through the worker (no ranged GET) and the destination gets
    exactly one write (the UploadPartCopy)."""
    source = tmp_path / "src.bin"
    digest = write_random(source, 3 * MiB, seed=99)
    _put_source(s3, bucket, "src.bin", source)
    target = f"{bucket}-copy"
    s3.create_bucket(Bucket=target)
    writes_before = settled(lambda: _writes(s3_server, target), 0)  # CreateBucket, counted late
    transfer = await s3_client.submit(f"s3://{bucket}/src.bin", f"s3://{target}/dst.bin", OPTIONS)
    result = await s3_client.wait(transfer)
    assert result.checksum == f"crc32c:{file_crc32c(source)}"
    assert object_digest(s3, target, "dst.bin") == digest
    assert settled(lambda: _writes(s3_server, target) - writes_before, 1) == 1
    assert s3_server.request_count(bucket, "GET", code="206") == 0


async def test_sha256_checksum_to_and_from_s3(
    s3_client: StaccatoClient, s3: Any, bucket: str, data_dir: Path
) -> None:
    """``--checksum sha256``: parts still carry a CRC32C for the store; the SHA-256 tree
    is computed from the source bytes and verified by reading the object back."""
    source = data_dir / "src.bin"
    digest = write_random(source, 2 * PART + 7, seed=5)
    options = TransferOptions(chunk_size=PART, streams=2, checksum="sha256")
    up = await s3_client.submit(str(source), f"s3://{bucket}/sha.bin", options)
    uploaded = await s3_client.wait(up)
    assert uploaded.checksum.startswith("sha256-tree:")
    down = await s3_client.submit(f"s3://{bucket}/sha.bin", str(data_dir / "back.bin"), options)
    downloaded = await s3_client.wait(down)
    assert downloaded.checksum == uploaded.checksum
    assert sha256_file(data_dir / "back.bin") == digest


@pytest.mark.parametrize("signature", ["s3v4", "s3"], ids=["sigv4", "sigv2"])
async def test_a_presigned_get_url_is_an_http_source(
    s3_client: StaccatoClient,
    s3_server: MeteredSeaweedS3,
    s3: Any,
    bucket: str,
    data_dir: Path,
    signature: str,
) -> None:
    """A presigned URL signed for GET is refused to HEAD (403: the signature covers the
    method): stat asks with the ranged GET instead, and the object copies (a tester
    found it failing "source refused (HTTP 403)", though README says such URLs work)."""
    source = data_dir / "signed.bin"
    digest = write_random(source, 3 * MiB + 5)
    s3.upload_file(str(source), bucket, "signed.bin")
    signer = s3_server.client(
        config=Config(signature_version=signature, s3={"addressing_style": "path"})
    )
    url = signer.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "signed.bin"}, ExpiresIn=600
    )
    assert httpx.head(url).status_code == 403, "the store lets HEAD through: nothing to test"
    destination = data_dir / "signed.out"
    result = await s3_client.wait(
        await s3_client.submit(url, str(destination), TransferOptions(chunk_size=MiB, streams=2))
    )
    assert result.bytes == 3 * MiB + 5
    assert sha256_file(destination) == digest
    assert leftovers(data_dir) == []
    # a signature the store refuses to GET too is the source's answer: it fails at
    # once, naming the refusal, and writes nothing
    forged = url.replace("Signature=", "Signature=0", 1)
    refused = data_dir / "refused.out"
    with pytest.raises(TransferFailedError, match=r"source refused: .*\(HTTP 403\)"):
        await s3_client.wait(await s3_client.submit(forged, str(refused), TransferOptions()))
    assert not refused.exists() and leftovers(data_dir) == []
