"""A multipart upload that no one knows the id of must not outlive the next transfer
to its key (tester: ``kill -STOP`` moto, ``cp ... --retry-for 15s`` gave up with "the
prepare step ... did not answer", ``kill -CONT``: an open upload stayed on the key for
good, even after a later successful copy to it, and ``status`` said nothing was left).

The first ``prepare`` attempt runs as a local activity cut at 10 s; its thread kept
waiting in CreateMultipartUpload and created the upload when moto woke, its result
going nowhere. Now that attempt aborts the upload it opened past its deadline
(``staccato.activities.transfer.unanswerable``), and a lone transfer's ``prepare``
aborts every other upload open on its exact key (earlier runs' and attempts'). Server:
the session's moto, SIGSTOPped and resumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import pytest

from staccato.client import StaccatoClient
from staccato.errors import TransferFailedError
from staccato.models import TransferOptions, TransferState
from tests.helpers import MiB, stopped_process_tree, write_random
from tests.s3.s3util import object_digest, settled_uploads_on_key, uploads_on_key

#: a correctness bound, not a speed one
ENDS_WITHIN_S = 150.0


def _bucket(s3: Any, name: str) -> str:
    with contextlib.suppress(Exception):
        s3.create_bucket(Bucket=name)
    return name


async def _logged(path: Path, text: str, timeout_s: float) -> bool:
    """Whether the worker's log at ``path`` has ``text`` within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return True
        await asyncio.sleep(0.2)
    return False


async def test_prepare_answered_after_the_transfer_gave_up_leaves_no_upload(
    profile_client: StaccatoClient, profile_worker: Any, moto_s3: Any, data_dir: Path
) -> None:
    """The tester's scene: moto stopped before the submit, ``--retry-for`` short, the
    transfer fails, moto resumed. ``status`` says an upload may be
    opened on the key and that the next transfer removes it, and the next transfer
    leaves none open (the old code said nothing and kept it for good)."""
    s3 = moto_s3.client()
    bucket = _bucket(s3, "late-prepare")
    key = "p16.bin"
    source = data_dir / "late-prepare.bin"
    digest = write_random(source, 3 * MiB, seed=161)
    destination = f"s3://{bucket}/{key}?profile=moto"
    assert moto_s3.pid is not None, "moto is not running"
    with stopped_process_tree(moto_s3.pid):
        transfer = await profile_client.submit(
            str(source), destination, TransferOptions(retry_for_s=10)
        )
        with pytest.raises(TransferFailedError):
            await asyncio.wait_for(profile_client.wait(transfer), ENDS_WITHIN_S)
    status = await profile_client.status(transfer)
    assert status.state == TransferState.failed, status
    assert "prepare" in (status.error or ""), status.error
    # the failed run says an upload may appear on the key, and what removes it
    assert status.left_behind and f"s3://{bucket}/{key}" in status.left_behind, status
    assert "next transfer" in status.left_behind, status.left_behind
    # moto woke: the local attempt's CreateMultipartUpload is answered (logged; that
    # attempt aborts its upload), and any request moto read late is carried out
    marker = f"s3://{bucket}/{key}: multipart upload started"
    assert await _logged(profile_worker.log_path, marker, 120), "the late answer never came"
    await settled_uploads_on_key(s3, bucket, key)
    # the next transfer to the key copies it whole and leaves no upload open there
    again = await profile_client.submit(str(source), destination, TransferOptions())
    await asyncio.wait_for(profile_client.wait(again), ENDS_WITHIN_S)
    assert object_digest(s3, bucket, key) == digest
    assert uploads_on_key(s3, bucket, key) == []


async def test_next_transfer_aborts_an_upload_left_on_its_key(
    profile_client: StaccatoClient, moto_s3: Any, data_dir: Path
) -> None:
    """An upload left open on the key (a late answer whose attempt's worker died, a
    request a frozen server read after the client gave up) is aborted by the next
    transfer there; uploads on other keys are left alone. The old code kept it (only
    a retried prepare attempt looked, within a minute before it, which moto's fixed
    2010 ``Initiated`` never matches)."""
    s3 = moto_s3.client()
    bucket = _bucket(s3, "orphan-key")
    key = "dir/p16.bin"
    left = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    other = s3.create_multipart_upload(Bucket=bucket, Key=f"{key}.other")["UploadId"]
    source = data_dir / "orphan-key.bin"
    digest = write_random(source, 5 * MiB, seed=162)
    transfer = await profile_client.submit(
        str(source), f"s3://{bucket}/{key}?profile=moto", TransferOptions()
    )
    result = await asyncio.wait_for(profile_client.wait(transfer), ENDS_WITHIN_S)
    assert result.bytes == 5 * MiB
    assert object_digest(s3, bucket, key) == digest
    assert left not in uploads_on_key(s3, bucket, key)
    assert uploads_on_key(s3, bucket, key) == []
    assert uploads_on_key(s3, bucket, f"{key}.other") == [other]
    s3.abort_multipart_upload(Bucket=bucket, Key=f"{key}.other", UploadId=other)
