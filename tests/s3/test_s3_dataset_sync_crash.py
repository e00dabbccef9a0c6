"""A dataset at ``--sync-level checksum`` to an empty S3 prefix, its worker frozen
then SIGKILLed mid-batch: the objects the killed attempt stored past its last
checkpoint count as copied, by their ``LastModified`` (tester: an empty destination,
a frozen worker: 331 of 26,000 files counted up to date)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from tests.s3.conftest import _start_without_inherited_aws
from tests.test_dataset_sync_crash import empty_destination_with_kill


def _held(s3: Any, bucket: str, prefix: str) -> dict[str, tuple[int, str]]:
    """Name under ``prefix`` -> (size, sha256) of every object there."""
    found: dict[str, tuple[int, str]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            data = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            found[item["Key"][len(prefix) :]] = (len(data), hashlib.sha256(data).hexdigest())
    return found


async def test_sync_to_empty_s3_prefix_worker_killed_counts_every_file_copied(
    temporal_server, s3_worker_env: dict[str, str], s3: Any, bucket: str, data_dir: Path
) -> None:
    await empty_destination_with_kill(
        temporal_server,
        data_dir,
        lambda _: f"s3://{bucket}/dst",
        s3_worker_env,
        held=lambda: _held(s3, bucket, "dst/"),
        start=_start_without_inherited_aws,
    )
