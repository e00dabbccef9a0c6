"""Cancel of a file -> S3 upload while the S3 server hangs (SIGSTOPped: it accepts
connections and answers nothing), tester63: the cancelled run's clean-up
(AbortMultipartUpload) must give up within a bounded time, the run must end
``cancelled`` naming the upload it left (``left_behind``, with the upload id) instead
of claiming the partial data removed, and the progress line (``cp``, ``watch``) must say
``cancelling`` meanwhile.

Before: each clean-up attempt waited for boto3's 60 s read timeout (and retries), the
10 attempts had no window (the run ended ~11 minutes after the cancel), ``status``
then said ``nothing kept, the run's clean-up removed its partial data`` with no
``left_behind``, and the line said ``running`` throughout. Server: the session's
SeaweedFS, stopped and resumed (in a ``finally``); a real worker.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from staccato.cli import render
from staccato.client import StaccatoClient
from staccato.errors import TransferFailedError
from staccato.models import MiB, TransferOptions, TransferState
from tests.helpers import HUNG_CLEANUP_FOR_S, stopped_process_tree, wait_for_status, write_random
from tests.s3.conftest import MeteredSeaweedS3
from tests.s3.s3util import open_uploads

SIZE = 64 * MiB
#: paced so the copy lasts ~16 s and the server can be stopped mid-copy; the default
#: --retry-for (24 h), as in the report; the clean-up window the suite's hung scenes use
OPTIONS = TransferOptions(
    chunk_size=8 * MiB,
    streams=2,
    max_rate=4 * MiB,
    heartbeat_timeout_s=5,
    cleanup_for_s=HUNG_CLEANUP_FOR_S,
)
#: a correctness bound, not a speed one: the old code ended ~10 minutes after the cancel
ENDS_WITHIN_S = 150.0
_ENDED = (TransferState.completed, TransferState.failed, TransferState.cancelled)


async def test_cancel_during_s3_hang_ends_bounded_naming_the_upload_left(
    s3_client: StaccatoClient,
    s3_server: MeteredSeaweedS3,
    s3: Any,
    bucket: str,
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = data_dir / "cancel-hang.bin"
    write_random(source, SIZE, seed=163)
    key = "cancel-hang.bin"
    transfer = await s3_client.submit(str(source), f"s3://{bucket}/{key}", OPTIONS)
    # the progress line as `cp` prints it on a pipe (render.follow, plain lines)
    following = asyncio.create_task(render.follow(s3_client, transfer, quiet=False))
    try:
        await wait_for_status(
            s3_client,
            transfer,
            lambda s: s.bytes_done > 0 or s.state in _ENDED,
            timeout_s=120,
        )
        uploads = [u["UploadId"] for u in open_uploads(s3, bucket) if u["Key"] == key]
        assert len(uploads) == 1, uploads
        upload_id = uploads[0]
        assert s3_server.pid is not None
        with stopped_process_tree(s3_server.pid):
            await s3_client.cancel(transfer)
            ended = await wait_for_status(
                s3_client,
                transfer,
                lambda s: s.state in (TransferState.cancelled, TransferState.failed),
                timeout_s=ENDS_WITHIN_S,
                interval_s=1.0,
            )
            final = await asyncio.wait_for(following, 30)
            # all said while the server was still stopped: the clean-up cannot have
            # removed anything
            assert ended.state == TransferState.cancelled, ended
            assert ended.left_behind is not None, ended
            assert upload_id in ended.left_behind, ended.left_behind
            assert "abort" in ended.left_behind, ended.left_behind
            durable = render.durable_text(ended)
            assert "removed" not in durable, durable
            assert final.state == TransferState.cancelled
    finally:
        following.cancel()
        with contextlib.suppress(BaseException):
            await following
    lines = capsys.readouterr().err.splitlines()
    assert any(line.startswith("cancelling: ") for line in lines), lines
    # once the server answers again, what left_behind says removes it: an abort of
    # that upload id (the timed-out aborts the server received while stopped may
    # have removed it meanwhile: hence "may be left"); nothing else stays open
    try:
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except ClientError as err:
        assert err.response["Error"]["Code"] == "NoSuchUpload", err
    assert not [u for u in open_uploads(s3, bucket) if u["Key"] == key]


async def test_failed_upload_to_hung_s3_ends_wait_at_the_first_cleanup_failure(
    s3_client: StaccatoClient,
    s3_server: MeteredSeaweedS3,
    s3: Any,
    bucket: str,
    data_dir: Path,
) -> None:
    """README: a failed transfer's ``cp`` (``wait``) waits for its clean-up's first
    attempt only and exits 1 when that fails, the clean-up going on in the run. Before,
    that first AbortMultipartUpload hung on the stopped server for the whole clean-up
    window (boto3's 60 s read timeout, retried), so ``wait`` returned only once the
    clean-up was over (tester63: ``cp`` exited 65 s after the stop, the transfer failed
    at 22 s). Now it fails within seconds: ``wait`` returns while the clean-up still
    retries (``status`` says ``cleanup``)."""
    source = data_dir / "fail-hang.bin"
    write_random(source, SIZE, seed=164)
    key = "fail-hang.bin"
    options = OPTIONS.model_copy(update={"retry_for_s": 10})
    transfer = await s3_client.submit(str(source), f"s3://{bucket}/{key}", options)
    await wait_for_status(
        s3_client,
        transfer,
        lambda s: s.bytes_done > 0 or s.state in _ENDED,
        timeout_s=120,
    )
    assert s3_server.pid is not None
    with stopped_process_tree(s3_server.pid):
        with pytest.raises(TransferFailedError):
            await asyncio.wait_for(s3_client.wait(transfer), ENDS_WITHIN_S)
        status = await s3_client.status(transfer)
        assert status.state == TransferState.failed, status
        # the clean-up still runs (it retries within its window: --retry-for, 10 s, plus
        # one 10 s backoff from its start)
        assert status.cleanup is not None, status
        assert status.last_retry_error, status
        ended = await wait_for_status(
            s3_client, transfer, lambda s: s.cleanup is None, timeout_s=ENDS_WITHIN_S
        )
        assert ended.left_behind is not None, ended
    with contextlib.suppress(ClientError):
        for upload in open_uploads(s3, bucket):
            if upload["Key"] == key:
                s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"])
