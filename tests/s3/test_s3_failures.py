"""Cancel, permanent failure and a changed source: no multipart upload left open
(ListMultipartUploads), nothing published, a clear reason. Plus what must never leak
(keys and secrets) and what must hold (Content-Type; a multipart ETag is not an MD5).
Server: SeaweedFS (``s3_server``)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from staccato.client import StaccatoClient, TransferFailed
from staccato.models import TransferOptions, TransferState
from tests.helpers import MiB, WorkerProcess, wait_for_status, write_random
from tests.s3.conftest import GatedLink, MeteredSeaweedS3, settled
from tests.s3.s3util import exists, file_crc32c, object_digest, open_uploads, put_with_crc32c
from tests.servers.nginx import NginxServer, nginx_fixture

SIZE = 48 * MiB
OPTIONS = TransferOptions(chunk_size=5 * MiB, streams=4, heartbeat_timeout_s=3)


# nginx sending at most 3 MB/s per connection: a 48 MiB transfer lasts ~4 s.
slow_nginx = nginx_fixture("http_root", scope="function", extra_server_config="limit_rate 3m;")


async def _wait_for_parts(s3: Any, bucket: str, at_least: int = 1, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for upload in open_uploads(s3, bucket):
            parts = s3.list_parts(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
            if len(parts.get("Parts") or []) >= at_least:
                return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"no multipart upload with {at_least} parts in {bucket}")


async def test_cancel_aborts_the_multipart_upload(
    s3_client: StaccatoClient, s3: Any, bucket: str, slow_nginx: NginxServer, http_root: Path
) -> None:
    write_random(http_root / "s3-cancel.bin", SIZE, seed=21)
    transfer = await s3_client.submit(
        slow_nginx.url("s3-cancel.bin"), f"s3://{bucket}/cancel.bin", OPTIONS
    )
    await _wait_for_parts(s3, bucket)
    await s3_client.cancel(transfer)
    status = await wait_for_status(
        s3_client, transfer, lambda s: s.state == TransferState.cancelled, timeout_s=60
    )
    assert status.state == TransferState.cancelled
    with pytest.raises(TransferFailed):
        await s3_client.wait(transfer)
    assert open_uploads(s3, bucket) == []
    assert not exists(s3, bucket, "cancel.bin")


async def test_upload_aborted_by_hand_is_started_again(
    s3_client: StaccatoClient, s3: Any, bucket: str, slow_nginx: NginxServer, http_root: Path
) -> None:
    """The multipart upload aborted under a live transfer (by hand, a lifecycle rule):
    the transfer starts a new upload, copies again and publishes the right bytes."""
    digest = write_random(http_root / "s3-lost.bin", SIZE, seed=24)
    transfer = await s3_client.submit(
        slow_nginx.url("s3-lost.bin"), f"s3://{bucket}/lost.bin", OPTIONS
    )
    await _wait_for_parts(s3, bucket)
    (upload,) = open_uploads(s3, bucket)
    s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    result = await asyncio.wait_for(s3_client.wait(transfer), 120)
    assert result.bytes == SIZE
    assert object_digest(s3, bucket, "lost.bin") == digest
    assert open_uploads(s3, bucket) == []
    # status says the upload was started again (tester69: no status said so)
    ended = await s3_client.status(transfer)
    assert (ended.restarted or "").startswith("upload restarted 1 time ("), ended


async def test_permanent_failure_aborts_and_keeps_the_old_object(
    s3_client: StaccatoClient, s3: Any, bucket: str, slow_nginx: NginxServer, http_root: Path
) -> None:
    """The HTTP source changes mid-transfer (SourceChanged, not retried): the upload is
    aborted and the object already at the key is untouched."""
    source = http_root / "s3-changed.bin"
    write_random(source, SIZE, seed=22)
    s3.put_object(Bucket=bucket, Key="kept.bin", Body=b"precious old content")
    transfer = await s3_client.submit(
        slow_nginx.url("s3-changed.bin"), f"s3://{bucket}/kept.bin", OPTIONS
    )
    await _wait_for_parts(s3, bucket)
    time.sleep(1.1)  # a new Last-Modified second, so nginx's ETag changes
    write_random(source, SIZE, seed=23)
    with pytest.raises(TransferFailed) as failure:
        await asyncio.wait_for(s3_client.wait(transfer), 120)
    assert "source changed" in str(failure.value)
    assert open_uploads(s3, bucket) == []
    assert s3.get_object(Bucket=bucket, Key="kept.bin")["Body"].read() == b"precious old content"


async def test_s3_source_overwritten_mid_transfer(
    profile_client: StaccatoClient, gated_link: GatedLink, s3: Any, bucket: str, tmp_path: Path
) -> None:
    """The source object is overwritten while it is being copied: the next ranged GET
    (If-Match -> 412) or else the publish-time re-check fails with `source changed`;
    nothing is published and the upload is aborted. To make "while" certain, the
    destination is the same SeaweedFS behind a relay (profile ``gated``) that holds the
    first UploadPart until the source was overwritten; one stream of 4 chunks, so the
    later chunks are read after that. (A 2 MB/s uplink was not certain: the worker runs
    every stream at once, all parts landed together and publish could come before the
    overwrite, ci35.)"""
    source = tmp_path / "src.bin"
    write_random(source, 20 * MiB, seed=24)
    put_with_crc32c(s3, bucket, "src.bin", source)
    gated_link.arm(rb"^PUT " + re.escape(f"/{bucket}/dst.bin".encode()) + rb"[? ]")
    try:
        transfer = await profile_client.submit(
            f"s3://{bucket}/src.bin",
            f"s3://{bucket}/dst.bin?profile=gated",
            TransferOptions(chunk_size=5 * MiB, streams=1),
        )
        assert await asyncio.to_thread(gated_link.held.wait, 60), "no UploadPart came"
        s3.put_object(Bucket=bucket, Key="src.bin", Body=b"a different object")
    finally:
        gated_link.release()
    with pytest.raises(TransferFailed) as failure:
        await asyncio.wait_for(profile_client.wait(transfer), 120)
    assert "source changed" in str(failure.value), failure.value
    assert f"s3://{bucket}/src.bin" in str(failure.value)
    assert open_uploads(s3, bucket) == []
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 1  # the source only


async def test_keys_never_reach_history_or_logs(
    s3_client: StaccatoClient,
    s3_worker: WorkerProcess,
    s3_server: MeteredSeaweedS3,
    s3: Any,
    bucket: str,
    data_dir: Path,
) -> None:
    source = data_dir / "src.bin"
    write_random(source, 6 * MiB, seed=25)
    good = await s3_client.submit(str(source), f"s3://{bucket}/secret-test.bin", OPTIONS)
    await s3_client.wait(good)
    bad = await s3_client.submit(
        str(source), f"s3://{bucket}/secret-test-2.bin?profile=badsecret", OPTIONS
    )
    with pytest.raises(TransferFailed, match="SignatureDoesNotMatch"):
        await s3_client.wait(bad)
    texts = [s3_worker.log_tail(10_000_000)]
    for transfer in (good, bad):
        history = await s3_client.temporal.get_workflow_handle(transfer).fetch_history()
        texts.append(json.dumps(history.to_json_dict()))
    for text in texts:
        for secret in (s3_server.secret_key, s3_server.access_key, s3_server.readonly_secret):
            assert secret not in text


async def test_content_type_guessed_from_the_name(
    s3_client: StaccatoClient, s3: Any, bucket: str, data_dir: Path
) -> None:
    (data_dir / "doc.json").write_text('{"a": 1}')
    transfer = await s3_client.submit(str(data_dir / "doc.json"), f"s3://{bucket}/doc.json")
    await s3_client.wait(transfer)
    assert s3.head_object(Bucket=bucket, Key="doc.json")["ContentType"] == "application/json"
    s3.put_object(Bucket=bucket, Key="table", Body=b"a,b\n1,2\n", ContentType="text/csv")
    transfer = await s3_client.submit(f"s3://{bucket}/table", f"s3://{bucket}/copy.csv")
    await s3_client.wait(transfer)  # a server-side copy into a one-part multipart upload
    assert s3.head_object(Bucket=bucket, Key="copy.csv")["ContentType"] == "text/csv"
    assert s3.get_object(Bucket=bucket, Key="copy.csv")["Body"].read() == b"a,b\n1,2\n"


async def test_multipart_etag_is_not_taken_for_an_md5(
    s3_client: StaccatoClient, s3: Any, bucket: str, data_dir: Path, tmp_path: Path
) -> None:
    """A multipart ETag is not an MD5: a multipart source (ETag "...-3") verifies through CRC32C, and the object
    Staccato uploads has the store's full-object CRC32C equal to the source-side one."""
    source = tmp_path / "src.bin"
    digest = write_random(source, 20 * MiB, seed=26)
    put_with_crc32c(s3, bucket, "mp.bin", source, part_size=8 * MiB)
    assert s3.head_object(Bucket=bucket, Key="mp.bin")["ETag"].endswith('-3"')
    transfer = await s3_client.submit(f"s3://{bucket}/mp.bin", str(data_dir / "mp.bin"), OPTIONS)
    result = await s3_client.wait(transfer)
    assert result.verified == "checksum" and result.checksum == f"crc32c:{file_crc32c(source)}"
    transfer = await s3_client.submit(str(data_dir / "mp.bin"), f"s3://{bucket}/again.bin", OPTIONS)
    await s3_client.wait(transfer)
    head = s3.head_object(Bucket=bucket, Key="again.bin", ChecksumMode="ENABLED")
    assert head["ETag"].endswith('-4"') and head.get("ChecksumType") == "FULL_OBJECT"
    assert head["ChecksumCRC32C"] and object_digest(s3, bucket, "again.bin") == digest


def _weed_shell(server: MeteredSeaweedS3, command: str) -> None:
    result = subprocess.run(
        [server.binary, "shell", f"-master=127.0.0.1:{server.master_port}"],
        input=command + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result


@pytest.fixture
def throttled_bucket(s3_server: MeteredSeaweedS3, bucket: str) -> Iterator[str]:
    """A bucket SeaweedFS's circuit breaker lets take one write at a time: every other
    concurrent write is refused with ``503 ErrTooManyRequest`` (its SlowDown)."""
    _weed_shell(
        s3_server, "s3.circuitBreaker -global -type Count -actions Write -values 10000 -apply"
    )
    _weed_shell(
        s3_server,
        f"s3.circuitBreaker -buckets {bucket} -type Count -actions Write -values 1 -apply",
    )
    time.sleep(2)  # the S3 gateway picks the configuration up from the filer
    try:
        yield bucket
    finally:
        _weed_shell(s3_server, "s3.circuitBreaker -delete -apply")


async def test_throttling_is_retried_with_backoff(
    s3_client: StaccatoClient,
    s3_server: MeteredSeaweedS3,
    s3: Any,
    throttled_bucket: str,
    data_dir: Path,
) -> None:
    """Issue 9: four streams against a bucket that takes one write at a time. The 503s
    are retried (botocore's standard retry mode, then Temporal's activity retries) and
    the transfer completes byte-identical."""
    source = data_dir / "src.bin"
    digest = write_random(source, 40 * MiB, seed=27)
    transfer = await s3_client.submit(
        str(source), f"s3://{throttled_bucket}/throttled.bin", OPTIONS
    )
    result = await asyncio.wait_for(s3_client.wait(transfer), 150)
    assert result.bytes == 40 * MiB
    assert object_digest(s3, throttled_bucket, "throttled.bin") == digest
    throttled = settled(lambda: s3_server.request_count(throttled_bucket, "PUT", code="503"), 1)
    print(f"503 answers retried: {throttled}")
    assert throttled > 0
    assert open_uploads(s3, throttled_bucket) == []


@pytest.mark.parametrize("profile", ["gated", "gated-once"])
async def test_a_lost_create_multipart_answer_leaves_no_upload(
    profile_client: StaccatoClient,
    gated_link: GatedLink,
    s3: Any,
    bucket: str,
    tmp_path: Path,
    profile: str,
) -> None:
    """The store carries out CreateMultipartUpload and its answer is lost (the
    connection closed after the request). ``gated``: botocore sends it again and the
    copy uses the second upload; ``gated-once`` (no botocore retry): the ``prepare``
    attempt fails and the step's next attempt opens another. The first, known to no
    one (ListMultipartUploads shows no metadata), stayed open for good, its parts
    billed; now it is aborted once the answer came on a retry. The object arrives
    exact, no upload is left."""
    source = tmp_path / "src.bin"
    digest = write_random(source, 12 * MiB, seed=25)
    gated_link.lose_answer(rb"^POST " + re.escape(f"/{bucket}/lost.bin".encode()) + rb"\?uploads")
    transfer = await profile_client.submit(
        str(source),
        f"s3://{bucket}/lost.bin?profile={profile}",
        TransferOptions(chunk_size=5 * MiB, streams=1),
    )
    await asyncio.wait_for(profile_client.wait(transfer), 120)
    assert gated_link.lost.is_set(), "no CreateMultipartUpload answer was dropped"
    assert object_digest(s3, bucket, "lost.bin") == digest
    assert open_uploads(s3, bucket) == []
