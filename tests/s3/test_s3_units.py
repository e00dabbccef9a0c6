"""S3 part planning, ListParts paging logic and client configuration (no server)."""

from __future__ import annotations

import pytest

from staccato.client import StaccatoClient
from staccato.endpoints.base import Motion, motion_tracker
from staccato.endpoints.s3 import S3Driver, _b64_to_hex, _ViewBody
from staccato.endpoints.s3.parts import (
    MAX_OBJECT_SIZE,
    MAX_PART_SIZE,
    MAX_PARTS,
    MIN_PART_SIZE,
    TiB,
    collect_parts,
    fits_one_part,
    plan_part_size,
)
from staccato.errors import InvalidURL, Unsupported
from staccato.models import DEFAULT_CHUNK_SIZE, GiB, MiB
from staccato.plan import chunk_count
from staccato.urls import parse_url


def _check_limits(size: int, part: int) -> None:
    """The plan obeys every S3 limit (staccato.endpoints.s3.parts module docstring)."""
    if fits_one_part(size, part):
        assert size <= 5 * GiB
        return
    parts = chunk_count(size, part)
    assert MIN_PART_SIZE <= part <= MAX_PART_SIZE
    assert 2 <= parts <= MAX_PARTS
    assert size - (parts - 1) * part >= 1  # the last part may be short, never empty


@pytest.mark.parametrize(
    ("size", "requested", "expected_part", "one_part", "note"),
    [
        (0, DEFAULT_CHUNK_SIZE, DEFAULT_CHUNK_SIZE, True, None),  # 0 bytes: no part, one PutObject
        (5 * MiB - 1, DEFAULT_CHUNK_SIZE, DEFAULT_CHUNK_SIZE, True, None),
        (5 * MiB - 1, 1 * MiB, 5 * MiB, True, "at least 5 MiB"),
        (5 * MiB, 5 * MiB, 5 * MiB, True, None),
        (5 * MiB + 1, 5 * MiB, 5 * MiB, False, None),
        (64 * MiB, 1 * MiB, 5 * MiB, False, "chunk size 1 MiB -> 5 MiB"),
        (5 * GiB, DEFAULT_CHUNK_SIZE, DEFAULT_CHUNK_SIZE, False, None),  # 320 parts
        (5 * GiB, 5 * GiB, 5 * GiB, True, None),  # one part of 5 GiB
        (5 * GiB, 1 * MiB, 5 * MiB, False, "at least 5 MiB"),  # 1024 parts
        (5 * TiB, DEFAULT_CHUNK_SIZE, 525 * MiB, False, "at most 10,000 parts"),
        (5 * TiB, 1 * MiB, 525 * MiB, False, "at most 10,000 parts"),
        (5 * TiB, 5 * GiB, 5 * GiB, False, None),  # 1024 parts of 5 GiB
    ],
)
def test_part_planning(
    size: int, requested: int, expected_part: int, one_part: bool, note: str | None
) -> None:
    part, why = plan_part_size(size, requested)
    assert part == expected_part
    assert fits_one_part(size, part) == one_part
    if note is None:
        assert why is None
    else:
        assert why is not None and note in why
    _check_limits(size, part)


def test_5_tib_needs_525_mib_parts_and_fits_10000() -> None:
    part, _ = plan_part_size(5 * TiB, 16 * MiB)
    assert chunk_count(5 * TiB, part) == 9987
    assert chunk_count(5 * TiB, part - MiB) > MAX_PARTS  # and it is the smallest whole MiB


def test_object_larger_than_5_tib_is_refused() -> None:
    with pytest.raises(Unsupported, match="at most 5 TiB"):
        plan_part_size(MAX_OBJECT_SIZE + 1, 16 * MiB)


@pytest.mark.parametrize("size", [1, 5 * MiB + 1, 77 * GiB + 3, 1 * TiB, 5 * TiB])
@pytest.mark.parametrize("requested", [1, 1 * MiB, 8 * MiB, 64 * MiB, 5 * GiB])
def test_every_plan_obeys_the_limits(size: int, requested: int) -> None:
    _check_limits(size, plan_part_size(size, requested)[0])


def _pages(parts_per_page: int, total: int, *, honour_marker: bool, moving_marker: bool):
    """ListParts responses of a server holding parts 1..total (a pure function; the
    behaviour against real servers is in test_s3_driver.py)."""
    calls: list[int] = []

    def fetch(marker: int) -> dict:
        calls.append(marker)
        start = marker if honour_marker else 0
        numbers = list(range(start + 1, min(total, start + parts_per_page) + 1))
        page = {
            "Parts": [{"PartNumber": n, "Size": 1, "ETag": f'"{n}"'} for n in numbers],
            "IsTruncated": bool(numbers) and numbers[-1] < total,
        }
        page["NextPartNumberMarker"] = numbers[-1] if moving_marker and numbers else marker
        return page

    return fetch, calls


def test_collect_parts_pages_to_the_end() -> None:
    fetch, calls = _pages(1000, 2500, honour_marker=True, moving_marker=True)
    assert sorted(collect_parts(fetch)) == list(range(1, 2501))
    assert calls == [0, 1000, 2000]


def test_collect_parts_falls_back_when_the_marker_does_not_move() -> None:
    """An upload with more than 1,000 parts spans ListParts pages: a NextPartNumberMarker
    stuck at the request's marker falls back to the highest part seen."""
    fetch, calls = _pages(1000, 2500, honour_marker=True, moving_marker=False)
    assert sorted(collect_parts(fetch)) == list(range(1, 2501))
    assert calls == [0, 1000, 2000]


def test_collect_parts_stops_when_the_server_repeats_pages() -> None:
    """An upload with more than 1,000 parts spans ListParts pages: a server that ignores
    the marker repeats page 1 forever: de-duplicate, stop."""
    fetch, calls = _pages(1000, 2500, honour_marker=False, moving_marker=True)
    parts = collect_parts(fetch)
    assert sorted(parts) == list(range(1, 1001))  # the rest are simply uploaded again
    assert len(calls) == 2


def test_checksum_text() -> None:
    assert _b64_to_hex("/p6vEA==") == "fe9eaf10"
    assert _b64_to_hex("/p6vEA==-3") == ""  # composite: not a checksum of the bytes
    assert _b64_to_hex(None) == ""
    assert _b64_to_hex("not base64!") == ""


def test_view_body_streams_without_copying() -> None:
    data = bytearray(range(256)) * 10_000
    body = _ViewBody(memoryview(data))
    first = body.read(8192)
    assert isinstance(first, memoryview) and first.obj is data  # a view, not a copy
    assert len(first) == 1 << 20 or len(first) == len(data)
    rest = body.read()
    assert bytes(first) + bytes(rest) == bytes(data)
    assert body.read() == b""
    body.seek(0)
    assert body.tell() == 0 and bytes(body.read(-1)) == bytes(data)


def test_view_body_pieces_re_sent_by_a_retry_are_not_motion() -> None:
    """botocore rewinds a part's body to retry its request (a send that timed out on a
    stopped server): only pieces past the furthest one sent before tell the hang watch
    that bytes moved; the re-sends into a stopped server's socket buffers, every ~11 s,
    kept its 12 s limit from being reached (tester T1)."""
    body = _ViewBody(memoryview(bytearray(4 << 20)))
    motion = Motion()
    with motion_tracker(motion):
        motion.at = 0.0
        body.read(1)  # the first piece: nothing went to the socket yet
        assert motion.at == 0.0
        body.read(1)  # the first piece went out
        assert motion.at > 0.0
        body.read(1)
        body.seek(0)  # botocore's retry
        motion.at = 0.0
        for _ in range(3):
            body.read(1)  # the same three pieces again: no motion
        assert motion.at == 0.0
        body.read(1)  # the third piece went out for the first time
        assert motion.at > 0.0


@pytest.mark.parametrize("key", ["dir/", "a/b/"])
def test_key_ending_in_slash_is_refused_as_destination(key: str) -> None:
    with pytest.raises(InvalidURL, match="names no S3 object"):
        StaccatoClient.make_request("/tmp/x", f"s3://bucket/{key}")


@pytest.mark.parametrize("url", ["s3://bucket", "s3://bucket/"])
def test_a_bare_bucket_is_refused_naming_it(url: str) -> None:
    with pytest.raises(InvalidURL, match=f"destination '{url}' names a bucket, not an object"):
        StaccatoClient.make_request("/tmp/x", url)
    with pytest.raises(InvalidURL, match=f"source '{url}' names a bucket, not an object"):
        StaccatoClient.make_request(url, "/tmp/x")


def test_key_ending_in_slash_is_a_valid_source() -> None:
    request = StaccatoClient.make_request("s3://bucket/dir/", "/tmp/x")
    assert request.source == "s3://bucket/dir/"


def _client_config(monkeypatch: pytest.MonkeyPatch, **env: str):
    for key in ("AWS_CA_BUNDLE", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    endpoint = S3Driver().endpoint(parse_url("s3://bucket/key"))
    return endpoint, endpoint.client.meta.config


def test_non_aws_endpoint_gets_path_style_and_checksums_when_required(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A custom endpoint (AWS_ENDPOINT_URL_S3) is an S3-compatible store."""
    endpoint, config = _client_config(monkeypatch, AWS_ENDPOINT_URL_S3="http://127.0.0.1:9")
    assert endpoint.endpoint_url == "http://127.0.0.1:9" and not endpoint.is_aws
    assert config.s3["addressing_style"] == "path"
    assert config.request_checksum_calculation == "when_required"
    assert config.response_checksum_validation == "when_required"
    assert config.retries == {"mode": "standard", "total_max_attempts": 5}


def test_aws_endpoint_keeps_sdk_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint, config = _client_config(monkeypatch)
    assert endpoint.is_aws and "amazonaws.com" in endpoint.endpoint_url
    assert "addressing_style" not in (config.s3 or {})
    assert config.request_checksum_calculation == "when_supported"  # the SDK's default


def test_user_settings_win(monkeypatch: pytest.MonkeyPatch) -> None:
    _, config = _client_config(
        monkeypatch,
        AWS_ENDPOINT_URL_S3="http://127.0.0.1:9",
        AWS_REQUEST_CHECKSUM_CALCULATION="when_supported",
        AWS_RETRY_MODE="adaptive",
        AWS_MAX_ATTEMPTS="9",
    )
    assert config.request_checksum_calculation == "when_supported"
    assert config.retries == {"mode": "adaptive", "total_max_attempts": 9}


@pytest.mark.parametrize(
    "value",
    [
        "2026-12-02T13:40:01.123Z",
        "2026-12-02T13:40:01Z",
        "2026-12-02T13:40:01+02:00",
        "Wed, 02 Dec 2026 13:40:01 GMT",
        "1764682801",
    ],
)
def test_the_fast_timestamp_parser_answers_as_botocores(value: str) -> None:
    """S3 answers' timestamps (a listing's LastModified per key) are parsed by the
    standard library where they are ISO 8601 with a zone, else by botocore: the same
    instant either way."""
    import botocore.utils

    from staccato.endpoints.s3.client import _parse_timestamp

    ours, theirs = _parse_timestamp(value), botocore.utils.parse_timestamp(value)
    assert ours.tzinfo is not None and ours.timestamp() == theirs.timestamp()
