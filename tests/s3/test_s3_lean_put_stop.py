"""A stop (a dataset's cancel) that comes while a lean PutObject awaits its answer waits
for the answer: the store may have stored the object already, and the caller must
learn whether it did (a batch counts a file it published only if its copy returns).
Before, the wait's keepalive raised the stop at once: the object stored, the file not
counted (tester61 F). A store that does not answer holds the stop for a bounded time
only. In process against SeaweedFS behind the relay that holds one answer."""

from __future__ import annotations

import base64
import threading
from typing import Any

import crc32c
import pytest

from staccato.activities.stream_progress import StreamStopped
from staccato.endpoints import base
from staccato.endpoints.base import keepalive_hook
from staccato.endpoints.s3.driver import S3Driver
from staccato.endpoints.s3.lean import LeanS3
from staccato.urls import parse_url
from tests.s3.conftest import GatedLink, MeteredSeaweedS3
from tests.s3.s3util import keys

BODY = b"published before its answer" * 100


def _put(lean: LeanS3, bucket: str, key: str, stopped: threading.Event) -> Any:
    """``lean.put`` of BODY under a keepalive hook that stops it (and sets ``stopped``)
    at each call: returns the answer's fields, or the error it raised."""

    def stop() -> None:
        stopped.set()
        raise StreamStopped("cancelled")

    crc = base64.b64encode(crc32c.crc32c(BODY).to_bytes(4, "big")).decode()
    headers = {"content-type": "application/octet-stream", "x-amz-checksum-crc32c": crc}
    with keepalive_hook(stop):
        try:
            return lean.put(bucket, key, BODY, headers)
        except StreamStopped as err:
            return err


def _lean(bucket: str, link: GatedLink) -> LeanS3:
    endpoint = S3Driver().endpoint(parse_url(f"s3://{bucket}/k"))
    return LeanS3(link.endpoint_url, endpoint.region, endpoint.credentials)


def test_a_stop_during_a_puts_answer_waits_for_it(
    s3_env: MeteredSeaweedS3, gated_link: GatedLink, s3: Any, bucket: str
) -> None:
    lean = _lean(bucket, gated_link)
    stopped = threading.Event()
    result: list[Any] = []
    gated_link.hold_answer(f"^PUT /{bucket}/a HTTP/1.1".encode())
    try:
        thread = threading.Thread(target=lambda: result.append(_put(lean, bucket, "a", stopped)))
        thread.start()
        assert gated_link.answer_held.wait(30), "no PutObject came"
        assert keys(s3, bucket) == ["a"]  # stored; its answer waits at the relay
        assert stopped.wait(30), "the wait for the answer never called keepalive"
    finally:
        gated_link.release()
    thread.join(60)
    (fields,) = result
    assert isinstance(fields, dict) and fields["ETag"], fields  # the answer, learnt
    assert s3.get_object(Bucket=bucket, Key="a")["Body"].read() == BODY


def test_a_store_that_does_not_answer_holds_the_stop_a_bounded_time(
    s3_env: MeteredSeaweedS3,
    gated_link: GatedLink,
    s3: Any,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(base, "STOP_HELD_MAX_S", 1.0)
    lean = _lean(bucket, gated_link)
    result: list[Any] = []
    gated_link.hold_answer(f"^PUT /{bucket}/b HTTP/1.1".encode())
    try:
        thread = threading.Thread(
            target=lambda: result.append(_put(lean, bucket, "b", threading.Event()))
        )
        thread.start()
        thread.join(60)  # the answer never comes: the stop is raised after its bound
        assert not thread.is_alive(), "the stop was held for good"
    finally:
        gated_link.release()
    (stop,) = result
    assert isinstance(stop, StreamStopped), stop
