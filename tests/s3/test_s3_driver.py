"""The S3 driver in this process against the real SeaweedFS (``s3_server``): paging,
pinning, store-side checksum verification, stale writers, abort, idempotency."""

from __future__ import annotations

import base64
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from staccato import checksums
from staccato.endpoints.s3 import MARKER, S3Driver, UploadGone
from staccato.errors import (
    DestinationMissing,
    InvalidURL,
    NotFound,
    RetryableError,
    SourceChanged,
    WriteSessionLost,
)
from staccato.models import MiB, WriteSession
from staccato.urls import parse_url
from tests.s3.conftest import MeteredSeaweedS3
from tests.s3.s3util import exists, open_uploads


@pytest.fixture
def driver(s3_env: MeteredSeaweedS3) -> S3Driver:
    """A fresh driver (its clients read this test's AWS environment)."""
    return S3Driver()


def _crc(data: bytes | memoryview) -> str:
    return checksums.checksum_bytes("crc32c", data)


def test_list_parts_pages_past_1000_parts(driver: S3Driver, s3: Any, bucket: str) -> None:
    """An upload with more than 1,000 parts, on a real server: 1,100 parts, ListParts pages of 1,000 (PartNumberMarker)."""
    url = parse_url(f"s3://{bucket}/many")
    count = 1100
    session = driver.open_session(url, count, 1, "c4-test")  # 1-byte chunks: 1,100 parts
    assert session.data["mode"] == "multipart"

    def put(number: int) -> None:
        s3.upload_part(
            Bucket=bucket,
            Key="many",
            UploadId=session.session_id,
            PartNumber=number,
            Body=b"x",
            ChecksumCRC32C=base64.b64encode(bytes.fromhex(_crc(b"x"))).decode(),
        )

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(1, count + 1)))
    first_page = s3.list_parts(
        Bucket=bucket, Key="many", UploadId=session.session_id, MaxParts=1000
    )
    assert first_page["IsTruncated"] and len(first_page["Parts"]) == 1000  # it really pages
    durable = driver.durable_chunks(session)
    assert sorted(durable) == list(range(count))
    # SeaweedFS's ListParts has no part checksums: each part is shown by its MD5 ETag
    assert all(v.startswith("part::") for v in durable.values())
    assert driver.durable_chunk_matches(session, 0, memoryview(b"x"), durable[0])
    assert not driver.durable_chunk_matches(session, 0, memoryview(b"y"), durable[0])
    assert not driver.durable_chunk_matches(session, 0, memoryview(b"x"), "part::not-an-md5")
    driver.abort(session)
    driver.abort(session)  # idempotent
    assert open_uploads(s3, bucket) == []


def test_read_is_pinned_to_the_etag(driver: S3Driver, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="pinned", Body=b"a" * 1000)
    url = parse_url(f"s3://{bucket}/pinned")
    info = driver.stat(url)
    assert info.extra["etag"] and info.size == 1000
    with driver.open_read(url, info, 10, 20) as reader:
        buffer = memoryview(bytearray(20))
        assert reader.readinto_full(buffer) == 20
    s3.put_object(Bucket=bucket, Key="pinned", Body=b"b" * 1000)  # same size, new bytes
    with pytest.raises(SourceChanged, match="source changed"):
        driver.open_read(url, info, 10, 20)
    s3.delete_object(Bucket=bucket, Key="pinned")
    with pytest.raises(SourceChanged, match="deleted"):
        driver.open_read(url, info, 10, 20)


def test_server_side_copy_is_pinned_to_the_etag(driver: S3Driver, s3: Any, bucket: str) -> None:
    data = os.urandom(6 * MiB)
    s3.put_object(Bucket=bucket, Key="src", Body=data)
    source = parse_url(f"s3://{bucket}/src")
    info = driver.stat(source)
    destination = parse_url(f"s3://{bucket}/dst")
    assert driver.can_copy_from(source, destination)
    session = driver.open_session(destination, len(data), 5 * MiB, "copy-pin")
    with driver.open_writer(session) as writer:
        crc = writer.copy_chunk(0, source, info, 0, 5 * MiB, "crc32c")
        assert crc == _crc(memoryview(data)[: 5 * MiB])  # SeaweedFS computed it
        s3.put_object(Bucket=bucket, Key="src", Body=os.urandom(6 * MiB))
        with pytest.raises(SourceChanged, match="source changed"):
            writer.copy_chunk(1, source, info, 5 * MiB, MiB, "crc32c")
    driver.abort(session)
    assert open_uploads(s3, bucket) == [] and not exists(s3, bucket, "dst")


def test_zero_byte_source_is_never_fetched(
    driver: S3Driver, s3_server: MeteredSeaweedS3, s3: Any, bucket: str
) -> None:
    """A 0-byte object: a ranged GET of it is 416; the driver sends none."""
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    url = parse_url(f"s3://{bucket}/empty")
    info = driver.stat(url)
    assert info.size == 0
    with driver.open_read(url, info, 0, 0) as reader:
        assert reader.readinto(memoryview(bytearray(1))) == 0
    assert driver.object_checksum(url, 0, MiB, [], "crc32c") == "00000000"
    assert s3_server.request_count(bucket, "GET", code=None) == s3_server.request_count(
        bucket, "GET", code="200"
    )  # HEADs only: no 206, no 416


def test_zero_byte_destination_is_one_empty_put(
    driver: S3Driver, s3_server: MeteredSeaweedS3, s3: Any, bucket: str
) -> None:
    """A 0-byte object: no multipart upload (a Complete with no parts is rejected): one PutObject."""
    url = parse_url(f"s3://{bucket}/empty")
    driver.check_destination(url)
    session = driver.open_session(url, 0, 16 * MiB, "zero")
    assert session.data["mode"] == "put" and driver.durable_chunks(session) == {}
    driver.publish(session)
    driver.publish(session)  # idempotent
    head = s3.head_object(Bucket=bucket, Key="empty")
    assert head["ContentLength"] == 0 and head["Metadata"][MARKER] == "zero"
    assert s3_server.request_count(bucket, "POST", code=None) == 0  # no CreateMultipartUpload
    assert open_uploads(s3, bucket) == []


def test_store_verifies_the_source_checksum_of_each_part(
    driver: S3Driver, s3: Any, bucket: str
) -> None:
    """Each UploadPart carries the CRC32C of the bytes read from the source; the store
    refuses a part whose bytes do not match it (BadDigest -> retryable)."""
    url = parse_url(f"s3://{bucket}/obj")
    data = memoryview(os.urandom(6 * MiB))
    session = driver.open_session(url, len(data), 5 * MiB, "crc")
    with driver.open_writer(session) as writer:
        with pytest.raises(RetryableError, match="BadDigest"):
            writer.write_chunk(0, data[: 5 * MiB], "deadbeef")
        assert driver.durable_chunks(session) == {}
        writer.write_chunk(0, data[: 5 * MiB], _crc(data[: 5 * MiB]))
        writer.write_chunk(1, data[5 * MiB :], _crc(data[5 * MiB :]))
    driver.publish(session)
    driver.publish(session)  # idempotent: the upload is gone, the object is ours
    whole = _crc(data)
    assert driver.stat(url).extra["crc32c"] == whole  # the store's full-object CRC32C
    assert driver.object_checksum(url, len(data), 5 * MiB, [(0, 2)], "crc32c") == whole


def test_stale_writer_stops_after_abort(driver: S3Driver, s3: Any, bucket: str) -> None:
    url = parse_url(f"s3://{bucket}/obj")
    data = memoryview(os.urandom(5 * MiB))
    session = driver.open_session(url, 10 * MiB, 5 * MiB, "stale")
    with driver.open_writer(session) as writer:
        writer.write_chunk(0, data, _crc(data))
        driver.abort(session)
        with pytest.raises(UploadGone):
            writer.write_chunk(1, data, _crc(data))
    assert open_uploads(s3, bucket) == [] and not exists(s3, bucket, "obj")


def test_a_one_part_object_touches_the_key_only_at_publish(
    driver: S3Driver, s3: Any, bucket: str
) -> None:
    """An object that fits in one part is still a multipart upload: the old object at
    the key stays as it was through write and abort; only publish replaces it."""
    s3.put_object(Bucket=bucket, Key="obj", Body=b"the previous object")
    url = parse_url(f"s3://{bucket}/obj")
    for marker, publish in (("aborted", False), ("published", True)):
        session = driver.open_session(url, 3, MiB, marker)
        assert session.data["mode"] == "multipart"
        with driver.open_writer(session) as writer:
            writer.write_chunk(0, memoryview(b"abc"), _crc(b"abc"))
        assert list(driver.durable_chunks(session)) == [0]
        assert s3.get_object(Bucket=bucket, Key="obj")["Body"].read() == b"the previous object"
        if publish:
            driver.publish(session)
            driver.abort(session)  # after publish: the published object stays
            assert s3.get_object(Bucket=bucket, Key="obj")["Body"].read() == b"abc"
        else:
            driver.abort(session)
            driver.abort(session)  # idempotent
            assert s3.get_object(Bucket=bucket, Key="obj")["Body"].read() == b"the previous object"
        assert open_uploads(s3, bucket) == []


def test_errors_name_bucket_and_key(driver: S3Driver, bucket: str) -> None:
    with pytest.raises(NotFound, match=r"bucket 'no-such-bucket-here' does not exist"):
        driver.stat(parse_url("s3://no-such-bucket-here/k"))
    with pytest.raises(NotFound, match=rf"no such key 'nope' in bucket '{bucket}'"):
        driver.stat(parse_url(f"s3://{bucket}/nope"))
    with pytest.raises(DestinationMissing, match="create it first"):
        driver.check_destination(parse_url("s3://no-such-bucket-here/k"))
    with pytest.raises(InvalidURL, match="names a bucket"):
        driver.stat(parse_url(f"s3://{bucket}"))


def test_an_older_single_put_session_is_copied_again(
    driver: S3Driver, s3: Any, bucket: str
) -> None:
    """A non-empty ``put`` session of an older worker (which wrote the key before
    publish) is reported lost, so the workflow copies again into a multipart upload;
    its abort never deletes the object at the key."""
    s3.put_object(Bucket=bucket, Key="obj", Body=b"the previous object")
    url = parse_url(f"s3://{bucket}/obj")
    session = WriteSession(
        url=url.canonical,
        size=3,
        chunk_size=MiB,
        session_id="put:old",
        data={"marker": "old", "content_type": "text/plain", "mode": "put"},
    )
    with pytest.raises(WriteSessionLost), driver.open_writer(session) as writer:
        writer.write_chunk(0, memoryview(b"abc"), _crc(b"abc"))
    with pytest.raises(WriteSessionLost):
        driver.durable_chunks(session)
    with pytest.raises(WriteSessionLost):
        driver.publish(session)
    driver.abort(session)
    assert s3.get_object(Bucket=bucket, Key="obj")["Body"].read() == b"the previous object"


def test_a_session_given_up_after_a_transient_error_is_aborted_when_it_cannot_be_found_again(
    driver: S3Driver, s3: Any, bucket: str, tmp_path: Any
) -> None:
    """A dataset's file that fails with a transient error keeps its write session for
    the retry only where the retry can find it again (a temp name derived from the
    key). An S3 multipart upload is new at every ``open_session``: kept, it would be
    left open (its parts stored and billed) while the retry opens another one."""
    from staccato.activities.small_copy import drop_session
    from staccato.endpoints.file.driver import FileDriver

    transient = RetryableError("connection reset by the store")
    url = parse_url(f"s3://{bucket}/medium.bin")
    session = driver.open_session(url, 12 * MiB, 5 * MiB, "given-up")
    assert [u["UploadId"] for u in open_uploads(s3, bucket)] == [session.session_id]
    drop_session(driver, session, transient)
    assert open_uploads(s3, bucket) == []

    files = FileDriver()
    local = parse_url(str(tmp_path / "medium.bin"))
    kept = files.open_session(local, 12 * MiB, 5 * MiB, "given-up")
    drop_session(files, kept, transient)
    assert files.open_session(local, 12 * MiB, 5 * MiB, "given-up").session_id == kept.session_id
    assert any(tmp_path.iterdir()), "the temp file kept for the retry is gone"
    drop_session(files, kept, WriteSessionLost("gone"))
    assert not any(tmp_path.iterdir()), "a session ended by a permanent error is left behind"


@pytest.mark.parametrize("before", ["absent", "present"])
def test_a_late_empty_publish_never_replaces_a_newer_object(
    driver: S3Driver, s3: Any, bucket: str, before: str
) -> None:
    """A 0-byte object is one PutObject at publish, made conditional on the key as the
    session found it (If-None-Match / If-Match): a publish repeated after it succeeded
    (its answer lost) still succeeds, and a late one (a frozen worker's, after a newer
    object replaced this one) refuses to put the empty object back over it."""
    key = f"empty-{before}"
    if before == "present":
        s3.put_object(Bucket=bucket, Key=key, Body=b"the previous object")
    session = driver.open_session(parse_url(f"s3://{bucket}/{key}"), 0, MiB, f"late-{before}")
    driver.publish(session)
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b""
    driver.publish(session)  # the same attempt again: its own object is there
    s3.put_object(Bucket=bucket, Key=key, Body=b"a newer object")
    with pytest.raises(WriteSessionLost, match="changed since its write session"):
        driver.publish(session)
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"a newer object"
