"""Known copies on S3: an S3 object a transfer wrote is a verified copy a later
transfer of the same source version reads (checked by its stored full-object CRC-32C
and its ETag, without reading it first), and a file transfer reads it instead of the
origin. Real SeaweedFS, nginx behind a ~20 MB/s pacing proxy, a real worker.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from staccato.client import StaccatoClient
from staccato.models import TransferOptions, TransferState
from tests.helpers import MiB, at_rest, sha256_file, write_random
from tests.servers.nginx import NginxServer
from tests.servers.pacing_proxy import PacingProxy
from tests.test_known_copies import (
    ORIGIN_RATE,
    _assert_origin_read_once,
    _recorded,
    _settled_origin_bytes,
)

OPTIONS = TransferOptions(chunk_size=4 * MiB, streams=4)
SIZE = 16 * MiB


@pytest.fixture(scope="module")
def slow_origin(nginx_ranges: NginxServer) -> Iterator[PacingProxy]:
    with PacingProxy(nginx_ranges.port, ORIGIN_RATE) as proxy:
        yield proxy


async def test_an_s3_copy_serves_a_later_transfer(
    s3_client: StaccatoClient,
    slow_origin: PacingProxy,
    nginx_ranges: NginxServer,
    http_root: Path,
    bucket: str,
    s3: Any,
    data_dir: Path,
) -> None:
    name = "known-copies-s3.bin"
    digest = write_random(http_root / name, SIZE, seed=31)
    at_rest(http_root / name)
    source = slow_origin.url(name)
    nginx_ranges.clear_log()
    first = await s3_client.submit(source, f"s3://{bucket}/{name}", OPTIONS)
    await s3_client.wait(first)
    await _recorded(s3_client, source, first)
    # what the first read (more than the object when a stream was retried at load),
    # once nginx's log stops growing
    first_served = _settled_origin_bytes(nginx_ranges, name)

    second = await s3_client.submit(source, str(data_dir / name), OPTIONS)
    await s3_client.wait(second)
    status = await s3_client.status(second)
    assert status.state == TransferState.completed, status
    assert sha256_file(data_dir / name) == digest
    assert status.read_from == f"s3://{bucket}/{name}", status
    assert "stored" in (status.read_from_reason or ""), status
    served = _settled_origin_bytes(nginx_ranges, name) - first_served
    assert served <= 0.1 * SIZE, f"the origin served {served} bytes to the second transfer"

    # the S3 copy replaced (new ETag), the file copy gone: the next transfer reads the
    # origin and says why
    s3.put_object(Bucket=bucket, Key=name, Body=b"something else")
    (data_dir / name).unlink()
    nginx_ranges.clear_log()  # the first two transfers' requests were all logged above
    third = await s3_client.submit(source, str(data_dir / "third.bin"), OPTIONS)
    await s3_client.wait(third)
    status = await s3_client.status(third)
    assert sha256_file(data_dir / "third.bin") == digest
    assert status.read_from == "origin", status
    why = status.read_from_reason or ""
    assert f"s3://{bucket}/{name}: it changed since it was recorded" in why, status
    _assert_origin_read_once(nginx_ranges, name, SIZE)
