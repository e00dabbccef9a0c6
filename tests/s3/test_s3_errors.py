"""Answers of an S3 endpoint that retrying cannot heal fail at once with the cause and
the fix; throttling with ``Retry-After`` is handed to Temporal as the next delay; no
credential ever appears in a message, a repr or a log line.

Server: a real HTTP server answering S3 errors (``S3Answers``), pointed at by the
worker's standard AWS configuration (``AWS_ENDPOINT_URL_S3``), with the real driver and
botocore; and a worker (profile ``answers``) for the end-to-end bound.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import pytest

from staccato.client import StaccatoClient, TransferFailed
from staccato.endpoints.s3 import S3Driver
from staccato.errors import InvalidURL, PermanentError, RetryableError
from staccato.models import TransferOptions
from staccato.urls import parse_url
from tests.helpers import WorkerProcess
from tests.s3.s3_answers import Answer, S3Answers

KEY_ID = "AKIASTACCATOTESTKEY1"
SECRET = "staccatoSecretValue0123456789abcdefghij"
TOKEN = "staccatoSessionToken0123456789ZYXWVUTSRQ"
SKEWED = Answer(
    403,
    "RequestTimeTooSkewed",
    "The difference between the request time and the current time is too large.",
    {"RequestTime": "20261201T120000Z", "ServerTime": "2026-12-01T13:00:00Z"},
)
MOVED = Answer(
    301,
    "PermanentRedirect",
    "The bucket you are attempting to access must be addressed using the specified endpoint.",
    {"Endpoint": "bkt.s3.eu-west-1.amazonaws.com", "Bucket": "bkt"},
    {"x-amz-bucket-region": "eu-west-1"},
)


@pytest.fixture(scope="module")
def answers() -> Iterator[S3Answers]:
    server = S3Answers()
    yield server
    server.close()


@pytest.fixture
def driver(answers: S3Answers, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> S3Driver:
    """A driver configured like a worker: credentials (with a session token) and the
    endpoint from the environment, 3 attempts per call."""
    for name, value in {
        "AWS_ENDPOINT_URL_S3": answers.endpoint_url,
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_SESSION_TOKEN": TOKEN,
        "AWS_REGION": "us-east-1",
        "AWS_MAX_ATTEMPTS": "3",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return S3Driver()


def _fail(driver: S3Driver, call: str) -> Exception:
    """The error of one driver call (stat of a source, or opening an upload)."""
    url = parse_url("s3://bkt/dir/obj.bin")
    try:
        if call == "stat":
            driver.stat(url)
        else:
            driver.open_session(url, 10, 5 * 1024 * 1024, "t")
    except Exception as err:
        return err
    raise AssertionError(f"{call} did not fail")


@pytest.mark.parametrize("call", ["stat", "create"])
def test_clock_skew_is_permanent_and_names_the_fix(
    driver: S3Driver, answers: S3Answers, call: str
) -> None:
    answers.set(SKEWED)
    err = _fail(driver, call)
    assert isinstance(err, PermanentError) and not isinstance(err, RetryableError), err
    text = str(err)
    assert "clock" in text and "NTP" in text and "RequestTimeTooSkewed" in text, text
    assert "13:00:00" in text  # the server's time, so the user sees how far off
    assert len(answers.requests) <= 2, answers.requests  # no retries (HEAD, then one GET)


@pytest.mark.parametrize("call", ["stat", "create"])
def test_permanent_redirect_names_the_region_and_the_endpoint(
    driver: S3Driver, answers: S3Answers, call: str
) -> None:
    answers.set(MOVED)
    err = _fail(driver, call)
    assert isinstance(err, PermanentError) and not isinstance(err, RetryableError), err
    text = str(err)
    assert "'eu-west-1'" in text and answers.endpoint_url in text, text
    assert "region = eu-west-1" in text and "endpoint_url" in text, text
    assert "'.', '..'" not in text
    assert len(answers.requests) <= 4, answers.requests  # botocore's one redirect at most


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            Answer(
                400,
                "AuthorizationHeaderMalformed",
                "The authorization header is malformed; the region 'us-east-1' is wrong; "
                "expecting 'ap-south-2'",
                {"Region": "ap-south-2"},
            ),
            "region = ap-south-2",
        ),
        (
            Answer(400, "IllegalLocationConstraintException", "opt-in region"),
            "set the bucket's region",
        ),
        (Answer(403, "InvalidAccessKeyId", "no such key id"), "access key id is not known"),
        (Answer(403, "InvalidObjectState", "archived"), "restore it first"),
        (Answer(400, "KeyTooLongError", "Your key is too long"), "at most 1024 bytes"),
        (Answer(403, "ExpiredToken", "expired"), "session token is expired"),
    ],
)
def test_errors_that_cannot_heal_are_permanent(
    driver: S3Driver, answers: S3Answers, answer: Answer, expected: str
) -> None:
    answers.set(answer)
    err = _fail(driver, "create")
    assert isinstance(err, PermanentError) and not isinstance(err, RetryableError), err
    assert expected in str(err), str(err)
    assert "'.', '..'" not in str(err)  # the segment hint only fits keys that have them
    assert len(answers.requests) <= 2, answers.requests


def test_a_404_to_a_write_is_the_store_refusing_the_key_not_a_missing_key(
    driver: S3Driver, answers: S3Answers
) -> None:
    """A write creates its key, so a 404 to it (moto's answer to a key holding a
    newline) is no "no such key", which reads as a source-side problem: it says the store
    refused the key, at once (no retry). A 404 to a read still says what is missing."""
    answers.set(Answer(404, "NotFound", "Not Found"))
    err = _fail(driver, "create")
    assert isinstance(err, PermanentError) and not isinstance(err, RetryableError), err
    assert "refuses this key" in str(err) and "no such key" not in str(err), str(err)
    assert "404" in str(err) and "s3://bkt/dir/obj.bin" in str(err), str(err)
    assert len(answers.requests) <= 2, answers.requests
    assert "refuses" not in str(_fail(driver, "stat"))  # a read: the key (or bucket) is missing


def test_a_key_over_the_s3_limit_is_refused_when_parsed() -> None:
    with pytest.raises(InvalidURL, match=r"2000 bytes long; S3 keys are at most 1024 bytes"):
        parse_url("s3://bkt/" + "k" * 2000)
    assert len(parse_url("s3://bkt/" + "é" * 512).key.encode()) == 1024  # at the limit: fine


@pytest.mark.parametrize("retry_after", ["7", "http-date"])
def test_throttling_with_retry_after_is_handed_to_temporal(
    driver: S3Driver, answers: S3Answers, retry_after: str
) -> None:
    """A 503 SlowDown with Retry-After is not retried inside botocore (whose backoff
    would ignore it): the RetryableError carries the delay for Temporal."""
    value = retry_after if retry_after.isdigit() else formatdate(time.time() + 30, usegmt=True)
    answers.set(
        Answer(503, "SlowDown", "Please reduce your request rate.", {}, {"Retry-After": value})
    )
    err = _fail(driver, "create")
    assert isinstance(err, RetryableError), err
    assert err.retry_after_s is not None
    if retry_after.isdigit():
        assert err.retry_after_s == 7
    else:
        assert 25 <= err.retry_after_s <= 31
    assert "SlowDown" in str(err) and "retry after" in str(err)
    assert len(answers.requests) == 1, answers.requests


def test_throttling_without_retry_after_keeps_botocores_backoff(
    driver: S3Driver, answers: S3Answers
) -> None:
    answers.set(Answer(503, "SlowDown", "Please reduce your request rate."))
    err = _fail(driver, "create")
    assert isinstance(err, RetryableError) and err.retry_after_s is None, err
    assert len(answers.requests) == 3  # AWS_MAX_ATTEMPTS


ECHO = {"AWSAccessKeyId": KEY_ID, "StringToSign": "{authorization}", "Token": "{token}"}


@pytest.mark.parametrize(
    "answer",
    [
        Answer(403, "SignatureDoesNotMatch", "signature mismatch: {authorization}", ECHO),
        Answer(400, "InvalidArgument", "bad header {authorization} {token}", ECHO),
        Answer(500, "InternalError", "failed: {authorization} token={token}", ECHO),
        Answer(409, "SomethingNew", "Credential={authorization}", ECHO),
        Answer(403, "AccessDenied", "denied for {authorization}", ECHO),
    ],
)
def test_no_credential_in_any_message_repr_or_log(
    driver: S3Driver,
    answers: S3Answers,
    answer: Answer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A store that echoes the request's Authorization header and session token in its
    errors: no access key id, secret, token or signature reaches a Staccato message,
    its repr, or a log line of Staccato (or botocore at the worker's WARNING level)."""
    caplog.set_level(logging.DEBUG, logger="staccato")
    caplog.set_level(logging.WARNING, logger="botocore")
    answers.set(answer)
    texts: list[str] = []
    for call in ("stat", "create"):
        err = _fail(driver, call)
        texts += [str(err), repr(err)]
    url = parse_url("s3://bkt/k")
    texts.append(repr(driver.endpoint(url)))
    texts.append(caplog.text)
    signatures = []
    for request in answers.requests:
        assert request  # a request was made with credentials
    for text in texts:
        for secret in (KEY_ID, SECRET, TOKEN, *signatures):
            assert secret not in text, text
        assert "Signature=" not in text or "Signature=***" in text, text


@pytest.fixture(scope="module")
def answers_worker(
    temporal_server, answers: S3Answers, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    directory = tmp_path_factory.mktemp("answers-aws")
    (directory / "config").write_text(
        f"[default]\nregion = us-east-1\nendpoint_url = {answers.endpoint_url}\n"
    )
    (directory / "credentials").write_text(
        f"[default]\naws_access_key_id = {KEY_ID}\naws_secret_access_key = {SECRET}\n"
        f"aws_session_token = {TOKEN}\n"
    )
    process = WorkerProcess(
        temporal_server.address,
        processes=1,
        env={
            "AWS_CONFIG_FILE": str(directory / "config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(directory / "credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
        },
        log_dir=tmp_path_factory.mktemp("answers-worker"),
    )
    from tests.s3.conftest import _start_without_inherited_aws

    _start_without_inherited_aws(process)
    yield process
    process.stop()


@pytest.mark.parametrize("answer", [SKEWED, MOVED], ids=["clock-skew", "redirect"])
async def test_transfer_fails_at_once_and_history_holds_no_credential(
    temporal_server,
    answers_worker: WorkerProcess,
    answers: S3Answers,
    answer: Answer,
    data_dir: Path,
) -> None:
    """End to end: the transfer fails within seconds (not after minutes of retries) with
    the cause; neither its history nor the worker's log holds a credential."""
    client = await StaccatoClient.connect(target_host=temporal_server.address)
    client.task_queue = answers_worker.task_queue
    answers.set(answer)
    source = data_dir / "src.bin"
    source.write_bytes(b"x" * 1000)
    started = time.monotonic()
    transfer = await client.submit(str(source), f"s3://bkt/{answer.code}.bin", TransferOptions())
    try:
        with pytest.raises(TransferFailed) as failure:
            await asyncio.wait_for(client.wait(transfer), 60)
    except BaseException:
        await client.cancel(transfer)  # old code retries on and on: end it
        raise
    elapsed = time.monotonic() - started
    print(f"{answer.code}: failed after {elapsed:.1f} s, {len(answers.requests)} requests")
    assert elapsed < 20
    assert ("clock" in str(failure.value)) or ("eu-west-1" in str(failure.value))
    history = await client.temporal.get_workflow_handle(transfer).fetch_history()
    for text in (json.dumps(history.to_json_dict()), answers_worker.log_tail(10_000_000)):
        for secret in (KEY_ID, SECRET, TOKEN):
            assert secret not in text


def test_a_signed_request_in_any_text_is_scrubbed(driver: S3Driver) -> None:
    """What botocore can put in an exception's text (a request URL with a presigned
    query, an Authorization header) loses every credential and signature."""
    from staccato.endpoints.s3 import _scrub

    endpoint = driver.endpoint(parse_url("s3://bkt/k"))
    text = (
        f"Authorization: AWS4-HMAC-SHA256 Credential={KEY_ID}/20261201/us-east-1/s3/"
        "aws4_request, SignedHeaders=host;x-amz-date, Signature=" + "ab12" * 16 + " "
        f"http://u:p@h/bkt/k?X-Amz-Credential={KEY_ID}%2F2026&X-Amz-Signature="
        + "cd34" * 16
        + f"&X-Amz-Security-Token={TOKEN}&x-id=GetObject secret={SECRET}"
    )
    cleaned = _scrub(text, endpoint)
    for secret in (KEY_ID, SECRET, TOKEN, "ab12" * 16, "cd34" * 16, "u:p@"):
        assert secret not in cleaned, cleaned
    assert "x-id=GetObject" in cleaned and "/bkt/k" in cleaned


async def test_retry_after_spaces_the_attempts_of_a_transfer(
    temporal_server, answers_worker: WorkerProcess, answers: S3Answers, data_dir: Path
) -> None:
    """End to end: a store answering ``503 SlowDown`` with ``Retry-After: 3`` sees the
    transfer's attempts (as regular activities, after the first local one) at least
    3 s apart, not botocore's sub-second retries nor Temporal's 1-2 s backoff."""
    client = await StaccatoClient.connect(target_host=temporal_server.address)
    client.task_queue = answers_worker.task_queue
    answers.set(
        Answer(503, "SlowDown", "Please reduce your request rate.", {}, {"Retry-After": "3"})
    )
    source = data_dir / "src.bin"
    source.write_bytes(b"x" * 1000)
    transfer = await client.submit(str(source), "s3://bkt/throttled.bin", TransferOptions())
    try:
        deadline = time.monotonic() + 40
        while len(answers.times) < 5 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        times = list(answers.times)
    finally:
        await client.cancel(transfer)
    assert len(times) >= 5, answers.requests
    gaps = [b - a for a, b in zip(times[1:], times[2:], strict=False)]
    print(f"gaps between attempts after the local one: {[round(g, 2) for g in gaps]}")
    assert all(gap >= 2.8 for gap in gaps), gaps
