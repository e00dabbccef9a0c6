"""Small objects of a dataset in as few requests as possible, counted at the server
(SeaweedFS's own request metrics): file->s3 one PutObject per file, s3->file one
GetObject per file, plus a fixed cost per dataset (listing, one HeadBucket per worker
process and minute). The one-request PutObject rests on the store refusing a body
whose CRC32C differs from the one sent with it: checked here with a wrong one."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import crc32c
import pytest
from botocore.exceptions import ClientError

from staccato.client import StaccatoClient
from staccato.datasets.models import DatasetState
from staccato.endpoints.s3.driver import S3Driver
from staccato.errors import RetryableError
from staccato.models import TransferOptions
from staccato.urls import parse_url
from tests.dataset_checks import MiB, run_dataset, tree
from tests.s3.conftest import MeteredSeaweedS3
from tests.s3.s3util import keys, open_uploads

FILES = 40
#: requests per small file at most, counted at the server (was 9 for file->s3)
PER_FILE = 1
#: requests per dataset besides those: listing pages, HeadBucket per worker process
FIXED = 12
OPTIONS = TransferOptions(chunk_size=5 * MiB)


def _requests(server: MeteredSeaweedS3, bucket: str) -> int:
    """Every request the gateway counted on ``bucket`` (any method, any status), once
    the count stopped moving (metrics are read after the dataset ended)."""
    deadline = time.monotonic() + 10
    last = -1
    while True:
        now = int(
            sum(
                v
                for n, labels, v in server.metrics()
                if n == "SeaweedFS_s3_request_total" and labels.get("bucket") == bucket
            )
        )
        if now == last or time.monotonic() > deadline:
            return now
        last = now
        time.sleep(0.3)


async def test_small_files_take_one_request_each(
    s3_client: StaccatoClient, s3: Any, s3_server: MeteredSeaweedS3, bucket: str, data_dir: Path
) -> None:
    source, back = data_dir / "src", data_dir / "back"
    for i in range(FILES):
        path = source / f"d{i % 3}" / f"f{i:03}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes([i]) * (1000 + i))
    (source / "empty").write_bytes(b"")
    files = FILES + 1
    before = _requests(s3_server, bucket)
    up = await run_dataset(s3_client, str(source), f"s3://{bucket}/run", options=OPTIONS)
    assert up.state == DatasetState.completed and up.files_done == files, up
    uploaded = _requests(s3_server, bucket) - before
    assert keys(s3, bucket) == sorted(
        f"run/{p.relative_to(source)}" for p in source.rglob("*") if p.is_file()
    )
    assert open_uploads(s3, bucket) == []
    assert uploaded <= PER_FILE * files + FIXED, f"file->s3: {uploaded} requests for {files} files"

    before = _requests(s3_server, bucket)
    down = await run_dataset(s3_client, f"s3://{bucket}/run/", str(back), options=OPTIONS)
    assert down.state == DatasetState.completed and down.files_done == files, down
    downloaded = _requests(s3_server, bucket) - before
    assert tree(back) == tree(source)
    assert downloaded <= PER_FILE * files + FIXED, (
        f"s3->file: {downloaded} requests for {files} files"
    )


def test_the_store_refuses_a_body_whose_crc32c_differs(
    s3_env: MeteredSeaweedS3, s3: Any, bucket: str
) -> None:
    body = b"x" * 65536
    wrong = crc32c.crc32c(body) ^ 1
    with pytest.raises(ClientError) as raised:
        s3.put_object(
            Bucket=bucket,
            Key="raw",
            Body=body,
            ChecksumCRC32C=base64.b64encode(wrong.to_bytes(4, "big")).decode(),
        )
    assert raised.value.response["Error"]["Code"] == "BadDigest"
    driver = S3Driver()
    url = parse_url(f"s3://{bucket}/driver")
    with pytest.raises(RetryableError, match="BadDigest|[Dd]igest|checksum"):
        driver.put_whole(url, body, f"{wrong:08x}", "marker")
    assert keys(s3, bucket) == []
    stored = driver.put_whole(url, body, f"{crc32c.crc32c(body):08x}", "marker")
    assert stored == f"{crc32c.crc32c(body):08x}"
    info, data = driver.read_whole(url, 1 * MiB) or (None, b"")
    assert data == body and info is not None and info.extra["crc32c"] == stored
    assert driver.read_whole(url, len(body) - 1) is None
