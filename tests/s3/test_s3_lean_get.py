"""A small object read whole (``S3Driver.read_whole``, a dataset's s3 -> file path)
or written whole (``S3Driver.put_whole``, file -> s3) is one GetObject / PutObject
signed (SigV4) and sent without boto3's per-call machinery, for a plain S3-compatible
endpoint; it gives and stores what boto3's calls give and store, and everything it
does not handle (a missing key, a refused body, keys a URL path could normalise) goes
through boto3 as before, with its usual errors. (Keys with empty, ``.`` or
``..`` segments also go through boto3; SeaweedFS refuses to store them.)"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import time
from pathlib import Path
from typing import Any

import crc32c
import pytest

from staccato.endpoints.s3 import lean as lean_module
from staccato.endpoints.s3.driver import FILES_RECHECK_S, S3Driver
from staccato.errors import NotFoundError
from staccato.urls import EndpointURL, parse_url
from tests.s3.conftest import MeteredSeaweedS3, settled

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
    # the first PutObject to a store not known to answer our CRC32C carries our
    # CRC32C and MD5 too; once it answered one (SeaweedFS does), only the marker
    assert head["Metadata"] == {
        "staccato-transfer": "the-marker",
        "staccato-crc32c": crc,
        "staccato-md5": hashlib.md5(BODY).hexdigest(),
    }
    empty = s3.head_object(Bucket=bucket, Key="run/empty")
    assert empty["Metadata"] == {"staccato-transfer": "m"}
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


def test_small_objects_are_read_without_http_client_parsing(
    s3_env: MeteredSeaweedS3, s3: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lean GetObject reads its answers itself (``http.client`` parses each
    answer's headers through the ``email`` package: ~0.3 ms of CPU per small object):
    one GET per object counted at the server, one connection kept for all of them,
    and the bytes and version boto3 gives."""
    driver = S3Driver()
    urls = [parse_url(f"s3://{bucket}/run/f{number}.bin") for number in range(6)]
    for url in urls:
        s3.put_object(Bucket=bucket, Key=url.key, Body=BODY + url.key.encode())
    gets_before = s3_env.request_count(bucket, "GET")
    calls = _boto3_calls(driver, urls[0])
    parsed: list[object] = []
    real_parse = http.client.parse_headers
    with monkeypatch.context() as patched:
        patched.setattr(
            http.client, "parse_headers", lambda *a, **k: parsed.append(a) or real_parse(*a, **k)
        )
        read = [driver.read_whole(url, 1 << 20) for url in urls]
    assert calls == [], f"read through boto3: {calls}"
    assert parsed == [], "answers parsed by http.client"
    assert settled(lambda: s3_env.request_count(bucket, "GET"), gets_before + len(urls)) == (
        gets_before + len(urls)
    )
    for url, got in zip(urls, read, strict=True):
        assert got is not None and got[1] == BODY + url.key.encode()
        assert got[0].version == driver.stat(url).version
    lean = driver._lean_for(urls[0], driver.endpoint(urls[0]))
    assert lean is not None and len(lean._idle) == 1


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n folded\r\n\r\nabc", "folded"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc", "Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\nabc", "Length"),
        (b"ICY 200 OK\r\n\r\n", "status line"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "header line"),
    ],
)
def test_an_answer_that_is_not_plain_is_refused(answer: bytes, problem: str) -> None:
    """What the lean path does not read as a plain answer (the boto3 request that
    follows reads it, or reports it): a folded header line, two differing or a signed
    ``Content-Length``, something other than HTTP/1.x."""
    server, client = socket.socketpair()
    with server:
        connection = lean_module._Connection.__new__(lean_module._Connection)
        connection.sock, connection._reader = client, client.makefile("rb")
        server.sendall(answer)
        with pytest.raises(ValueError, match=problem):
            connection.answer().length()
        connection.close()


def test_an_answer_says_when_its_connection_closes() -> None:
    server, client = socket.socketpair()
    with server:
        connection = lean_module._Connection.__new__(lean_module._Connection)
        connection.sock, connection._reader = client, client.makefile("rb")
        server.sendall(
            b"HTTP/1.1 200 OK\r\nETag: a\r\nEtag: b\r\nConnection: close\r\n"
            b"Transfer-Encoding: chunked\r\n\r\nHTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx"
        )
        first = connection.answer()
        assert (first.status, first.closes, first.length()) == (200, True, None)
        assert first.headers["etag"] == "a, b"
        second = connection.answer()
        assert (second.closes, second.length(), connection.read(1)) == (True, 1, b"x")
        connection.close()


def test_the_aws_files_are_looked_at_once_a_second(
    s3_env: MeteredSeaweedS3, bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A batch asks for its S3 client per file: the shared config and credentials
    files are ``stat``-ed again only after :data:`FILES_RECHECK_S` (or when the
    environment changed), not per call."""
    credentials = tmp_path / "credentials"
    credentials.write_text("")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    driver = S3Driver()
    url = parse_url(f"s3://{bucket}/k")
    frozen = time.monotonic()
    monkeypatch.setattr(time, "monotonic", lambda: frozen)  # a busy machine: no second passes
    first = driver.endpoint(url)
    looked: list[str] = []
    real_stat = os.stat
    monkeypatch.setattr(
        os, "stat", lambda path, *a, **k: looked.append(str(path)) or real_stat(path, *a, **k)
    )
    for _ in range(20):
        assert driver.endpoint(url) is first
    assert str(credentials) not in looked
    monkeypatch.setattr(time, "monotonic", lambda: frozen + FILES_RECHECK_S)
    assert driver.endpoint(url) is first
    assert looked.count(str(credentials)) == 1
    monkeypatch.setenv("AWS_REGION", "eu-west-3")  # the environment changed: looked again
    assert driver.endpoint(url) is not first
    assert looked.count(str(credentials)) >= 2  # (botocore reads it too, for the new client)


def test_reads_sent_ahead_are_in_flight_at_once_and_read_as_read_whole_reads(
    s3_env: MeteredSeaweedS3, s3: Any, bucket: str
) -> None:
    """``whole_reads`` (a dataset's batch, S3 -> file): the GETs of the next objects
    are all sent before any answer is read (counted at the server), each on a
    connection of its own; each answer, read in any order, is what ``read_whole``
    gives (bytes, version, stored CRC32C checked); the connections go back to the
    pool. An answer that is not a plain 200 (a missing key) is asked again through
    boto3, which reports it; an object over the size limit is None; a read dropped
    or left at ``close`` closes its connection (never reused half-read)."""
    driver = S3Driver()
    root = parse_url(f"s3://{bucket}/run/")
    urls = [parse_url(f"s3://{bucket}/run/f{number}.bin") for number in range(8)]
    for url in urls:
        s3.put_object(Bucket=bucket, Key=url.key, Body=BODY + url.key.encode())
    expected = {url.key: driver.read_whole(url, 1 << 20) for url in urls}
    gets_before = s3_env.request_count(bucket, "GET")
    calls = _boto3_calls(driver, urls[0])
    reads = driver.whole_reads(root, 1 << 20)
    assert reads is not None
    for url in urls:
        reads.send(url)
    lean = driver._lean_for(urls[0], driver.endpoint(urls[0]))
    assert lean is not None and lean._idle == [], "a request in flight on a pooled connection"
    # every GET answered by the store before this thread read any answer
    assert settled(lambda: s3_env.request_count(bucket, "GET"), gets_before + len(urls)) == (
        gets_before + len(urls)
    )
    for url in reversed(urls):
        assert reads.read(url) == expected[url.key]
    assert calls == [], f"read through boto3: {calls}"
    assert len(lean._idle) == len(urls)  # each read to its end: kept alive, reused

    big, missing = urls[0], parse_url(f"s3://{bucket}/run/missing")
    small = driver.whole_reads(root, len(BODY) - 1)
    assert small is not None
    small.send(big)
    small.send(missing)
    assert small.read(big) is None  # over the limit
    with pytest.raises(NotFoundError, match="missing"):
        small.read(missing)
    assert calls == ["GetObject"]  # the missing key asked again through boto3

    idle = len(lean._idle)
    dropped, left = urls[1], urls[2]
    reads.send(dropped)
    reads.send(left)
    reads.drop(dropped)
    reads.close()
    assert len(lean._idle) == idle - 2, "an unread answer's connection went back to the pool"
    # not sent ahead (or already taken): read now, as read_whole reads it
    assert reads.read(left) == expected[left.key]


def test_a_read_sent_ahead_on_a_connection_the_store_closed_is_sent_again(
    s3_env: MeteredSeaweedS3, s3: Any, bucket: str
) -> None:
    driver = S3Driver()
    url = parse_url(f"s3://{bucket}/run/x.bin")
    driver.put_whole(url, BODY, f"{crc32c.crc32c(BODY):08x}", "marker")
    lean = driver._lean_for(url, driver.endpoint(url))
    assert lean is not None and lean._idle, "no kept-alive connection"
    calls = _boto3_calls(driver, url)
    for connection in lean._idle:  # as a store closing idle connections does
        connection.sock.shutdown(socket.SHUT_RDWR)
    reads = driver.whole_reads(parse_url(f"s3://{bucket}/run/"), 1 << 20)
    assert reads is not None
    reads.send(url)
    got = reads.read(url)
    assert got is not None and got[1] == BODY
    assert calls == [], f"read through boto3: {calls}"


def test_no_reads_ahead_where_the_lean_path_does_not_apply(
    s3_env: MeteredSeaweedS3, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Behind a proxy (which botocore honours and the lean path does not) the batch
    reads in threads, through boto3, as before."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    driver = S3Driver()
    assert driver.whole_reads(parse_url(f"s3://{bucket}/run/"), 1 << 20) is None
