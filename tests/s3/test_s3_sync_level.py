"""Sync levels between S3 objects that both keep a full-object CRC32C: ``checksum``
compares the stored checksums (HeadObject), so an up-to-date run reads no object's
data and writes nothing (SeaweedFS's per-bucket request and traffic counters);
a changed source is copied.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from staccato.client import StaccatoClient
from staccato.models import SyncLevel, TransferOptions
from tests.helpers import MiB, sha256_file, write_random
from tests.s3.conftest import MeteredSeaweedS3, settled
from tests.s3.s3util import file_crc32c, object_digest, open_uploads, put_with_crc32c
from tests.sync_checks import run

SIZE = 6 * MiB + 5
OPTIONS = TransferOptions(chunk_size=5 * MiB, streams=2, sync_level=SyncLevel.checksum)


def _sent_bytes(server: MeteredSeaweedS3, bucket: str) -> int:
    """Response-body bytes the S3 gateway sent for ``bucket`` (object data read; a
    HeadObject sends none, though SeaweedFS counts it as a GET request)."""
    return int(
        sum(
            v
            for n, labels, v in server.metrics()
            if n == "SeaweedFS_s3_bucket_traffic_sent_bytes_total"
            and labels.get("bucket") == bucket
        )
    )


def _counters(server: MeteredSeaweedS3, bucket: str) -> dict[str, int]:
    """Data bytes sent, writes and bytes received on ``bucket`` so far."""
    return {
        "sent": _sent_bytes(server, bucket),
        "PUT": server.request_count(bucket, "PUT", code=None),
        "POST": server.request_count(bucket, "POST", code=None),
        "received": server.received_bytes(bucket),
    }


def _settled_counters(server: MeteredSeaweedS3, bucket: str) -> dict[str, int]:
    settled(lambda: sum(_counters(server, bucket).values()), 0)
    return _counters(server, bucket)


async def test_checksum_between_s3_objects_uses_stored_crc32c(
    s3_client: StaccatoClient, s3_server: MeteredSeaweedS3, s3: Any, bucket: str, tmp_path: Path
) -> None:
    target_bucket = f"t-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=target_bucket)
    local = tmp_path / "src.bin"
    write_random(local, SIZE, seed=31)
    put_with_crc32c(s3, bucket, "src.bin", local)
    source, destination = f"s3://{bucket}/src.bin", f"s3://{target_bucket}/dst.bin"
    first = await run(s3_client, source, destination, OPTIONS)
    assert not first.up_to_date
    assert object_digest(s3, target_bucket, "dst.bin") == sha256_file(local)

    for _ in range(2):  # the second and third runs
        reads, writes = (
            _settled_counters(s3_server, bucket),
            _settled_counters(s3_server, target_bucket),
        )
        again = await run(s3_client, source, destination, OPTIONS)
        assert again.up_to_date and again.sync_level == SyncLevel.checksum
        assert again.checksum == f"crc32c:{file_crc32c(local)}"
        assert _settled_counters(s3_server, bucket) == reads  # source: no data read
        assert _settled_counters(s3_server, target_bucket) == writes  # no read, no write

    # new bytes, same size: copied
    write_random(local, SIZE, seed=32)
    put_with_crc32c(s3, bucket, "src.bin", local)
    changed = await run(s3_client, source, destination, OPTIONS)
    assert not changed.up_to_date
    assert object_digest(s3, target_bucket, "dst.bin") == sha256_file(local)
    assert open_uploads(s3, target_bucket) == []
