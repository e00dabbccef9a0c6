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
import re
import time
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus

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


async def _cancel_seen(client: StaccatoClient, transfer: str, timeout_s: float) -> bool:
    """Whether, within ``timeout_s``, a workflow task completed after the transfer's
    cancel request (or the transfer ended)."""
    handle = client.temporal.get_workflow_handle(transfer)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        requested = False
        async for event in handle.fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED:
                requested = True
            elif requested and event.event_type in (
                EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
                EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED,
                EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT,
            ):
                return True
        if (await handle.describe()).status != WorkflowExecutionStatus.RUNNING:
            return True
        await asyncio.sleep(0.3)
    return False


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
            # the cancel reaches the workflow while the request is still held: a workflow
            # task has run since the request (the local activity running prepare is
            # cancelled then, in its thread, at once when its answer comes back)
            assert await _cancel_seen(profile_client, transfer, timeout_s=60), (
                "no workflow task ran after the cancel request"
            )
    finally:
        gated_link.release()
    status = await wait_for_status(
        profile_client, transfer, lambda s: s.state in ENDED, timeout_s=90
    )
    if step == "prepare":
        # nothing can have been published: the cancel is what ended it
        assert status.state == TransferState.cancelled, status
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
