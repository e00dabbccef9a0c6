"""A PutObject of a dataset batch checks the batch's lease right before its bytes go to
the socket, not before the work that precedes the send (signing, taking or opening a
connection, botocore's retries): a batch frozen in that work and woken after its lease
ran out sends nothing (the CI failure of
``test_frozen_batch_writes_nothing_after_losing_its_batch``'s kind: a stale PutObject
after the wake). The hold-up here is the signing: the credentials are handed over
slowly, as a process frozen there would hand them."""

from __future__ import annotations

import base64
import socket
import time
from typing import Any

import crc32c
import pytest

from staccato.activities.stream_lease import StreamLeaseExpiredError, leased
from staccato.endpoints.base import write_fence_hook
from staccato.endpoints.s3.driver import S3Driver
from staccato.endpoints.s3.lean import LeanS3
from staccato.urls import parse_url
from tests.s3.conftest import MeteredSeaweedS3

HEARTBEAT_TIMEOUT_S = 2.0  # the lease runs out 1.5 s after it starts
BODY = b"stale bytes" * 100


class _HeldCredentials:
    """The driver's credentials, handed over only after ``hold_s`` seconds (the put's
    process held up between its first lease check and its send)."""

    def __init__(self, credentials: Any, hold_s: float) -> None:
        self._credentials = credentials
        self._hold_s = hold_s

    def get_frozen_credentials(self) -> Any:
        time.sleep(self._hold_s)
        return self._credentials.get_frozen_credentials()


def _headers() -> dict[str, str]:
    return {
        "content-type": "application/octet-stream",
        "x-amz-checksum-crc32c": base64.b64encode(crc32c.crc32c(BODY).to_bytes(4, "big")).decode(),
    }


def test_a_lean_put_held_up_past_its_lease_sends_nothing(
    s3_env: MeteredSeaweedS3, s3: Any, bucket: str
) -> None:
    driver = S3Driver()
    url = parse_url(f"s3://{bucket}/dst/f0031")
    endpoint = driver.endpoint(url)
    lean = LeanS3(
        endpoint.endpoint_url, endpoint.region, _HeldCredentials(endpoint.credentials, 2.0)
    )
    puts = s3_env.request_count(bucket, "PUT", code=None)
    with leased(HEARTBEAT_TIMEOUT_S), pytest.raises(StreamLeaseExpiredError):
        lean.put(bucket, url.key, BODY, _headers())
    assert s3_env.request_count(bucket, "PUT", code=None) == puts, "a PutObject reached the store"
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def test_each_send_of_a_lean_put_is_checked(s3_env: MeteredSeaweedS3, s3: Any, bucket: str) -> None:
    """A kept-alive connection the store had closed: the put is sent again on a new
    one, and that send is checked too (right before it, after the connect)."""
    driver = S3Driver()
    url = parse_url(f"s3://{bucket}/dst/f0001")
    driver.put_whole(url, BODY, f"{crc32c.crc32c(BODY):08x}", "marker")
    lean = driver._lean_for(url, driver.endpoint(url))
    assert lean is not None and lean._idle, "no kept-alive connection"
    for connection in lean._idle:  # as a store closing idle connections does
        connection.sock.shutdown(socket.SHUT_RDWR)
    checks: list[int] = []

    def fence() -> None:  # what each check saw: the idle connections left
        checks.append(len(lean._idle))

    with write_fence_hook(fence):
        assert lean.put(bucket, url.key, BODY, _headers()) is not None
    assert len(checks) >= 2, f"the put was sent {len(checks)} time(s) checked: {checks}"


def test_a_boto3_put_is_checked_right_before_it_is_sent(
    s3_env: MeteredSeaweedS3, s3: Any, bucket: str
) -> None:
    """botocore's PutObject (the path when the lean one does not apply) checks the
    lease between signing and sending: an expired lease stops it, nothing sent."""
    driver = S3Driver()
    url = parse_url(f"s3://{bucket}/dst/f0002")
    client = driver.endpoint(url).client
    puts = s3_env.request_count(bucket, "PUT", code=None)
    expired = False

    def fence() -> None:
        if expired:
            raise StreamLeaseExpiredError("lease ran out (test)")

    # signing done, the lease runs out: as a process frozen after botocore signed
    def run_out(**_: Any) -> None:
        nonlocal expired
        expired = True

    client.meta.events.register_first("before-send.s3.PutObject", run_out, unique_id="run-out")
    try:
        with write_fence_hook(fence), pytest.raises(StreamLeaseExpiredError):
            client.put_object(Bucket=bucket, Key=url.key, Body=BODY)
    finally:
        client.meta.events.unregister("before-send.s3.PutObject", unique_id="run-out")
    assert s3_env.request_count(bucket, "PUT", code=None) == puts, "a PutObject reached the store"
