"""Cancel at every step of a file -> S3 transfer onto a key that already holds an
object: afterwards the key holds the previous object intact (and the transfer does not
say completed), or the transfer says completed and the key holds the new object; never
anything else, and no multipart upload is left open.

Each step's window is hit deterministically: the worker reaches SeaweedFS through a
relay (profile ``gated``) that holds the step's first request (CreateMultipartUpload
for prepare, the first part for copy, CompleteMultipartUpload / the empty PutObject
for publish) until the cancel has been sent. The stat step is hit by cancelling at
once after submit. Sizes: an object that fits in one part, one of three parts, 0 B.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from pathlib import Path
from typing import Any

import pytest

from staccato.client import StaccatoClient
from staccato.models import MiB, TransferOptions, TransferState
from tests.helpers import wait_for_status, write_random
from tests.s3.conftest import GatedLink
from tests.s3.s3util import open_uploads

OLD = b"the object that was at the key before the transfer"
OPTIONS = TransferOptions(chunk_size=5 * MiB, streams=2, heartbeat_timeout_s=3)
ENDED = (TransferState.completed, TransferState.cancelled, TransferState.failed)
SIZES = {"one-part": 300 * 1024, "multipart": 12 * MiB, "empty": 0}


def _request(step: str, bucket: str, key: str) -> bytes | None:
    """The request line that opens ``step``'s window (None: no request to hold)."""
    path = re.escape(f"/{bucket}/{key}".encode())
    return {
        "stat": None,
        "prepare": rb"^POST " + path + rb"\?uploads",
        # UploadPart (or, before the fix, the single PutObject written during the copy)
        "copy": rb"^PUT " + path + rb"[? ]",
        "publish": rb"^POST " + path + rb"\?[^ ]*uploadId=",
        "publish-empty": rb"^PUT " + path + rb"[? ]",
    }[step]


async def _until_empty(s3: Any, bucket: str, timeout_s: float = 20) -> list[Any]:
    """Open multipart uploads once none is left or ``timeout_s`` passed (an abandoned
    prepare may still be finishing when the workflow closes)."""
    deadline = time.monotonic() + timeout_s
    uploads = open_uploads(s3, bucket)
    while uploads and time.monotonic() < deadline:
        await asyncio.sleep(0.3)
        uploads = open_uploads(s3, bucket)
    return uploads


@pytest.mark.parametrize(
    ("size_name", "step"),
    [
        (size, step)
        for size in ("one-part", "multipart")
        for step in ("stat", "prepare", "copy", "publish")
    ]
    + [("empty", "stat"), ("empty", "publish-empty")],
)
async def test_cancel_never_loses_the_previous_object(
    profile_client: StaccatoClient,
    gated_link: GatedLink,
    s3: Any,
    bucket: str,
    tmp_path: Path,
    size_name: str,
    step: str,
) -> None:
    size = SIZES[size_name]
    source = tmp_path / "new.bin"
    write_random(source, size, seed=size + len(step))
    new = source.read_bytes()
    key = "obj.bin"
    s3.put_object(Bucket=bucket, Key=key, Body=OLD)
    pattern = _request(step, bucket, key)
    if pattern is not None:
        gated_link.arm(pattern)
    try:
        transfer = await profile_client.submit(
            str(source), f"s3://{bucket}/{key}?profile=gated", OPTIONS
        )
        if pattern is not None:
            held = await asyncio.to_thread(gated_link.held.wait, 60)
            assert held, f"the {step} request never came"
        await profile_client.cancel(transfer)
        if pattern is not None:
            # let the cancel reach the workflow while the request is still held
            with contextlib.suppress(TimeoutError):
                await wait_for_status(
                    profile_client, transfer, lambda s: s.state in ENDED, timeout_s=3
                )
    finally:
        gated_link.release()
    status = await wait_for_status(
        profile_client, transfer, lambda s: s.state in ENDED, timeout_s=90
    )
    assert await _until_empty(s3, bucket) == []
    await asyncio.sleep(2)  # and none appears later (a request that was still under way)
    assert open_uploads(s3, bucket) == []
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert listed == [key], f"the key is gone after a cancel in {step} ({status.state})"
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    if status.state == TransferState.completed:
        assert body == new, "reported completed, but the key does not hold the new object"
    else:
        assert body == OLD, (
            f"reported {status.state.value}, but the previous object at the key was replaced "
            f"({len(body)} bytes now)"
        )
