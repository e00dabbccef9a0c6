"""Known copies on S3: an S3 object a transfer wrote is a verified copy a later
transfer of the same source version reads (checked by its stored full-object CRC-32C
and its ETag, without reading it first), and a file transfer reads it instead of the
origin. A local file source is never read from its S3 copy (the disk is cheaper), and
a tuned transfer that read a copy teaches its link nothing (it measured the copy's
link). Real SeaweedFS, nginx (behind a ~20 MB/s pacing proxy for the origin counts),
a real worker.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from staccato.client import StaccatoClient
from staccato.link_memory import forget_link_memory
from staccato.links import link_of
from staccato.models import TransferOptions, TransferState
from staccato.tuning import MIN_TUNED_BYTES
from tests.helpers import MiB, assert_link_learned_nothing, at_rest, sha256_file, write_random
from tests.s3.conftest import MeteredSeaweedS3, settled
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


def _bucket_requests(server: MeteredSeaweedS3, bucket: str) -> int:
    """Requests of any kind (GET, HEAD, ...) and any outcome on ``bucket`` so far."""
    return int(
        sum(
            v
            for n, labels, v in server.metrics()
            if n == "SeaweedFS_s3_request_total" and labels.get("bucket") == bucket
        )
    )


async def test_a_local_source_is_read_from_disk_not_from_its_s3_copy(
    s3_client: StaccatoClient, s3_server: MeteredSeaweedS3, bucket: str, data_dir: Path
) -> None:
    """A local file uploaded to S3, then copied to a local destination: the second
    transfer reads the file (``read_from`` origin) and sends the bucket no request at
    all (no HEAD to check the copy, no GET to read it). Before, it read the S3 copy at
    S3's rate (and a tuned one stored that rate as the file->file link's)."""
    name = "local-origin.bin"
    digest = write_random(data_dir / name, 4 * MiB, seed=41)
    at_rest(data_dir / name)
    first = await s3_client.submit(str(data_dir / name), f"s3://{bucket}/{name}", OPTIONS)
    await s3_client.wait(first)
    uploaded = await s3_client.status(first)
    assert uploaded.state == TransferState.completed, uploaded
    await _recorded(s3_client, uploaded.source, first)  # a record the next could find
    before = settled(lambda: _bucket_requests(s3_server, bucket), 0)

    second = await s3_client.submit(str(data_dir / name), str(data_dir / "again.bin"), OPTIONS)
    await s3_client.wait(second)
    status = await s3_client.status(second)
    assert status.state == TransferState.completed, status
    assert sha256_file(data_dir / "again.bin") == digest
    assert status.read_from == "origin", status
    assert "a local file source is read from disk" in (status.read_from_reason or ""), status
    after = settled(lambda: _bucket_requests(s3_server, bucket), before)
    assert after == before, f"the second transfer sent {after - before} requests to the bucket"


async def test_a_tuned_transfer_that_read_a_copy_teaches_its_link_nothing(
    s3_client: StaccatoClient,
    s3_server: MeteredSeaweedS3,
    nginx_ranges: NginxServer,
    http_root: Path,
    bucket: str,
    data_dir: Path,
) -> None:
    """http -> S3, then the same http source -> a file, both tuned (the smallest tuned
    size): the second reads the S3 copy, so what its optimizer measured is S3's rate,
    not the http -> file link's: that link's memory stays empty and ``status`` says
    why. Before, the S3 read rate was stored as the http -> file link's."""
    name = "tuned-copy.bin"
    digest = write_random(http_root / name, MIN_TUNED_BYTES, seed=43)
    at_rest(http_root / name)
    source = nginx_ranges.url(name)
    tuned = TransferOptions(tuning=True)
    first = await s3_client.submit(source, f"s3://{bucket}/{name}", tuned)
    await s3_client.wait(first)
    await _recorded(s3_client, source, first)
    destination = data_dir / name
    link = link_of(source, str(destination))
    await forget_link_memory(s3_client.temporal, link)  # another test's http -> file
    gets = s3_server.request_count(bucket, "GET")

    second = await s3_client.submit(source, str(destination), tuned)
    await s3_client.wait(second)
    status = await s3_client.status(second)
    assert status.state == TransferState.completed, status
    assert sha256_file(destination) == digest
    assert status.read_from == f"s3://{bucket}/{name}", status
    assert s3_server.request_count(bucket, "GET") > gets  # it did read the copy
    await assert_link_learned_nothing(
        s3_client, status, link, f"read the known copy s3://{bucket}/{name}"
    )


async def test_a_tuned_transfer_that_read_its_staged_entry_teaches_its_link_nothing(
    s3_client: StaccatoClient, nginx_ranges: NginxServer, http_root: Path, data_dir: Path
) -> None:
    """A tuned ``--stage`` http -> file transfer: its streams read the staging cache,
    not the origin, so the http -> file link's memory stays empty and ``status`` says
    why. Before, the cache's read rate was stored as the link's."""
    name = "tuned-staged.bin"
    digest = write_random(http_root / name, MIN_TUNED_BYTES, seed=47)
    at_rest(http_root / name)
    source = nginx_ranges.url(name)
    destination = data_dir / name
    link = link_of(source, str(destination))
    await forget_link_memory(s3_client.temporal, link)  # another test's http -> file
    staged = await s3_client.submit(
        source, str(destination), TransferOptions(tuning=True, stage=True, from_origin=True)
    )
    await s3_client.wait(staged)
    status = await s3_client.status(staged)
    assert status.state == TransferState.completed, status
    assert sha256_file(destination) == digest
    await assert_link_learned_nothing(s3_client, status, link, "read the source's staged entry")
