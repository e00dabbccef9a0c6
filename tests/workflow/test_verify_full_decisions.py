"""``TransferWorkflow``'s decisions with ``--verify full`` (patch ``verify-full``) on
the time-skipping test server, its activities replaced by test activities (see
``conftest.py``): the temp data is read back per segment before publish even when
every stream verified on write, a lone segment is repaired rather than failed, and an
S3 destination is refused before ``prepare``. On the old code ``VerifyMode.full``
does not exist."""

from __future__ import annotations

from typing import Any

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError

from staccato.models import TransferOptions, TransferRequest, VerifyInput, VerifyMode
from tests.workflow.conftest import (
    OPTIONS,
    SIZE,
    SOURCE,
    Endpoint,
    Run,
    failing,
)

pytestmark = pytest.mark.timeout(120)

FULL = OPTIONS.model_copy(update={"verify": VerifyMode.full})


async def test_full_reads_back_every_segment_though_verified_on_write(transfer: Any) -> None:
    """Streams that verified every chunk on write: ``checksum`` reads nothing back
    (test_transfer_decisions' baseline), ``full`` reads each segment of the temp data
    before publish (``mode`` checksum: the activity of an older worker decodes it),
    then publishes and checks the size."""
    endpoint = Endpoint(verified_on_write=True)
    run: Run = await transfer(endpoint, options=FULL)
    result = await run.handle.result()
    assert result.bytes == SIZE and result.verified == VerifyMode.full
    assert endpoint.names() == ["stat", "prepare", "copy_stream", "verify", "publish", "verify"]
    streams = endpoint.called("copy_stream")
    assert streams and all(s.read_back for s in streams)
    read_back = [v for v in endpoint.called("verify") if v.url == endpoint.session_url]
    assert sorted(v.segments[0][0] for v in read_back) == [0, 2]  # one per segment
    assert all(v.mode == VerifyMode.checksum and not v.whole_object for v in read_back)
    (size_check,) = [v for v in endpoint.called("verify") if v.url != endpoint.session_url]
    assert size_check.mode == VerifyMode.size
    assert endpoint.called("cleanup") == []


async def test_full_repairs_a_lone_segment(transfer: Any) -> None:
    """One stream (one segment) whose read-back mismatches once: the segment is copied
    again and read back again, then published (``checksum`` reads a lone segment as
    the whole object and fails on a mismatch)."""
    endpoint = Endpoint(verified_on_write=True)
    seen = 0
    mismatch = failing("ChecksumMismatch", "chunk 0 of the temp file does not match")

    async def hook(request: VerifyInput) -> Any:
        nonlocal seen
        if request.url == endpoint.session_url:
            seen += 1
            if seen == 1:
                return await mismatch(request)
        return None

    endpoint.hooks["verify"] = hook
    options = FULL.model_copy(update={"streams": 1})
    run: Run = await transfer(endpoint, options=options)
    result = await run.handle.result()
    assert result.bytes == SIZE
    assert [s.segment.index for s in endpoint.called("copy_stream")] == [0, 0]
    assert endpoint.names() == [
        "stat",
        "prepare",
        "copy_stream",
        "verify",
        "copy_stream",
        "verify",
        "publish",
        "verify",
    ]
    assert seen == 2
    assert endpoint.called("cleanup") == []


async def test_full_to_s3_fails_before_prepare(transfer: Any) -> None:
    """A request (from the API: the CLI exits 2 first) for ``full`` to an S3
    destination fails, non-retryable, before any write session is opened, naming the
    option, the kind and the kinds accepted."""
    endpoint = Endpoint(session_url=None)
    request = TransferRequest(
        source=SOURCE,
        destination="s3://bucket/object.bin",
        options=TransferOptions.model_validate(FULL.model_dump()),
    )
    run: Run = await transfer(endpoint, request=request)
    with pytest.raises(WorkflowFailureError) as caught:
        await run.handle.result()
    error = caught.value.cause
    assert isinstance(error, ApplicationError) and error.type == "PermanentError"
    assert "--verify full" in error.message and "s3" in error.message
    assert "back file destinations only" in error.message
    assert endpoint.called("prepare") == []
    assert endpoint.called("copy_stream") == []
    assert endpoint.called("publish") == []
