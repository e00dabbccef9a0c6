"""The S3 driver in this process against moto: publish completes a multipart upload only
when its parts still have the ETags the streams recorded (``Driver.publish``'s
``parts``), including a part replaced in the window between publish's ListParts and
its CompleteMultipartUpload (the ListParts answer held by a relay while the test
replaces the part). A tester's part replaced before CompleteMultipartUpload was
completed into the object, replacing the good one at the key."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from staccato import checksums
from staccato.endpoints.base import parts_digest
from staccato.endpoints.s3 import S3Driver
from staccato.errors import WriteSessionLost
from staccato.models import MiB, WriteSession
from staccato.urls import parse_url
from tests.s3.conftest import GatedLink
from tests.s3.s3util import open_uploads

CHUNK = 5 * MiB  # moto refuses a part under 5 MiB but the last
KEY = "parts.bin"
OLD = b"the old object"


def _upload(driver: S3Driver, bucket: str) -> tuple[WriteSession, list[tuple[int, int, str]]]:
    """A multipart upload of two 5 MiB parts written by the driver, and the record of
    its parts a stream would return (one segment)."""
    session = driver.open_session(parse_url(f"s3://{bucket}/{KEY}"), 2 * CHUNK, CHUNK, "pp-test")
    tags: list[tuple[int, str]] = []
    with driver.open_writer(session) as writer:
        for index in range(2):
            data = memoryview(bytes([index + 1]) * CHUNK)
            writer.write_chunk(index, data, checksums.checksum_bytes("crc32c", data))
            tag = writer.part_tag(index)
            assert tag and '"' not in tag, tag
            tags.append((index + 1, tag))
    return session, [(0, 2, parts_digest(tags))]


def _replace_first_part(s3: Any, bucket: str, session: WriteSession) -> None:
    s3.upload_part(
        Bucket=bucket,
        Key=KEY,
        UploadId=session.session_id,
        PartNumber=1,
        Body=b"\xff" * CHUNK,  # same size, other bytes; boto3's defaults
    )


@pytest.fixture
def moto_env(moto_s3: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """This process's AWS configuration pointed at moto; a fresh bucket holding the old
    object at :data:`KEY`."""
    moto_s3.apply_env(monkeypatch)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return moto_s3


def _bucket(s3: Any) -> str:
    name = f"pp-{time.time_ns()}"
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key=KEY, Body=OLD)
    return name


def test_publish_completes_parts_with_the_recorded_etags(moto_env: Any) -> None:
    s3 = moto_env.client()
    bucket = _bucket(s3)
    driver = S3Driver()
    session, parts = _upload(driver, bucket)
    driver.publish(session, parts)
    assert s3.get_object(Bucket=bucket, Key=KEY)["Body"].read() == b"\x01" * CHUNK + b"\x02" * CHUNK


def test_publish_refuses_a_part_replaced_after_its_stream(moto_env: Any) -> None:
    s3 = moto_env.client()
    bucket = _bucket(s3)
    driver = S3Driver()
    session, parts = _upload(driver, bucket)
    _replace_first_part(s3, bucket, session)
    with pytest.raises(WriteSessionLost, match="ETag is not the one its stream uploaded"):
        driver.publish(session, parts)
    assert s3.get_object(Bucket=bucket, Key=KEY)["Body"].read() == OLD
    # the upload is left open (never completed), for the workflow's clean-up
    assert [u["UploadId"] for u in open_uploads(s3, bucket)] == [session.session_id]
    driver.abort(session)


def test_publish_refuses_a_part_replaced_between_list_and_complete(
    moto_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ListParts's answer is held until the part is replaced: the listing shows the
    recorded ETags, CompleteMultipartUpload (sent with them) is refused by moto
    (``InvalidPart``): a lost session, never a completed object."""
    s3 = moto_env.client()
    bucket = _bucket(s3)
    link = GatedLink(moto_env.s3_port)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", link.endpoint_url)
        driver = S3Driver()
        session, parts = _upload(driver, bucket)
        link.hold_answer(rb"^GET [^ ]*uploadId=")  # ListParts (publish's, below)
        outcome: list[BaseException | None] = []

        def publish() -> None:
            try:
                driver.publish(session, parts)
                outcome.append(None)
            except BaseException as err:  # noqa: BLE001 - handed to the test
                outcome.append(err)

        thread = threading.Thread(target=publish, daemon=True)
        thread.start()
        assert link.answer_held.wait(60), "publish's ListParts never came"
        _replace_first_part(s3, bucket, session)
        link.release()
        thread.join(60)
        assert outcome, "publish did not return"
        assert isinstance(outcome[0], WriteSessionLost), outcome
        assert "ETag changed after it was listed" in str(outcome[0])
        assert s3.get_object(Bucket=bucket, Key=KEY)["Body"].read() == OLD
        driver.abort(session)
    finally:
        link.close()
