"""A small object read whole (``S3Driver.read_whole``, a dataset's s3 -> file path)
or written whole (``S3Driver.put_whole``, file -> s3) is one GetObject / PutObject
signed (SigV4) and sent without boto3's per-call machinery, for a plain S3-compatible
endpoint; it gives and stores what boto3's calls give and store, and everything it
does not handle (a missing key, a refused body, keys a URL path could normalise) goes
through boto3 as before, with its usual errors. (Keys with empty, ``.`` or
``..`` segments also go through boto3; SeaweedFS refuses to store them.)"""

from __future__ import annotations

import socket
from typing import Any

import crc32c
import pytest

from staccato.endpoints.s3.driver import S3Driver
from staccato.errors import NotFoundError
from staccato.urls import EndpointURL, parse_url
from tests.s3.conftest import MeteredSeaweedS3

BODY = bytes(range(256)) * 256  # 64 KiB


def _boto3_calls(driver: S3Driver, url: EndpointURL) -> list[str]:
    """The boto3 operations ``driver``'s client makes from now on (its own events)."""
    calls: list[str] = []
    client = driver.endpoint(url).client
    client.meta.events.register(
        "before-call.s3", lambda model, **_: calls.append(model.name), unique_id="count-calls"
    )
    return calls


def test_read_whole_skips_boto3_and_matches_what_it_reads(
    s3_env: MeteredSeaweedS3, s3: Any, bucket: str
) -> None:
    driver = S3Driver()
    url = parse_url(f"s3://{bucket}/run/a b+%2B.bin")
    stored = driver.put_whole(url, BODY, f"{crc32c.crc32c(BODY):08x}", "marker")
    calls = _boto3_calls(driver, url)
    got = driver.read_whole(url, 1 << 20)
    assert got is not None
    info, data = got
    assert calls == [], f"read through boto3: {calls}"
    assert data == BODY
    # the same info as boto3's GetObject gives (version, size, stored CRC32C, time)
    assert info == driver.stat(url).model_copy(update={"content_type": info.content_type})
    assert info.extra["crc32c"] == stored
    assert info.modified_at is not None
    # larger than asked: None, and the connection is not reused half-read
    assert driver.read_whole(url, len(BODY) - 1) is None
    assert driver.read_whole(url, 1 << 20) == got


def test_what_the_lean_get_leaves_goes_through_boto3(
    s3_env: MeteredSeaweedS3, s3: Any, bucket: str
) -> None:
    driver = S3Driver()
    missing = parse_url(f"s3://{bucket}/run/missing")
    calls = _boto3_calls(driver, missing)
    with pytest.raises(NotFoundError, match="missing"):
        driver.read_whole(missing, 1 << 20)
    assert calls == ["GetObject"]


def test_put_whole_skips_boto3_and_stores_what_boto3_stores(
    s3_env: MeteredSeaweedS3, s3: Any, bucket: str
) -> None:
    driver = S3Driver()
    url = parse_url(f"s3://{bucket}/run/a b+%2B.json")
    calls = _boto3_calls(driver, url)
    crc = f"{crc32c.crc32c(BODY):08x}"
    assert driver.put_whole(url, BODY, crc, "the-marker") == crc
    assert driver.put_whole(parse_url(f"s3://{bucket}/run/empty"), b"", "00000000", "m") in (
        "00000000",
        "",
    )
    assert calls == [], f"written through boto3: {calls}"
    head = s3.head_object(Bucket=bucket, Key="run/a b+%2B.json", ChecksumMode="ENABLED")
    assert head["ContentLength"] == len(BODY)
    assert head["ContentType"] == "application/json"
    assert head["Metadata"] == {"staccato-transfer": "the-marker"}
    assert s3.get_object(Bucket=bucket, Key="run/a b+%2B.json")["Body"].read() == BODY
    assert s3.get_object(Bucket=bucket, Key="run/empty")["Body"].read() == b""


def test_a_connection_the_store_closed_is_replaced(
    s3_env: MeteredSeaweedS3, s3: Any, bucket: str
) -> None:
    driver = S3Driver()
    url = parse_url(f"s3://{bucket}/run/x.bin")
    driver.put_whole(url, BODY, f"{crc32c.crc32c(BODY):08x}", "marker")
    lean = driver._lean_for(url, driver.endpoint(url))
    assert lean is not None and lean._idle, "no kept-alive connection"
    calls = _boto3_calls(driver, url)
    for connection in lean._idle:  # as a store closing idle connections does
        assert connection.sock is not None
        connection.sock.shutdown(socket.SHUT_RDWR)
    got = driver.read_whole(url, 1 << 20)
    assert got is not None and got[1] == BODY
    assert calls == [], f"read through boto3: {calls}"
