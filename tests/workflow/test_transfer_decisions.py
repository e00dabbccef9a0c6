"""``TransferWorkflow``'s decisions on the time-skipping test server, its activities
replaced by test activities (see ``conftest.py``): which step runs next, with which
input, and how the transfer ends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import WorkflowEnvironment

from staccato.errors import DestinationBusyError
from staccato.models import (
    Checkpoint,
    ConfirmSourceInput,
    ObjectInfo,
    PublishInput,
    StreamInput,
    TransferOptions,
    TransferRequest,
    TransferState,
    VerifyInput,
    VerifyMode,
)
from staccato.starts import start_or_attach
from staccato.workflows import search_attributes as sa
from tests.workflow.conftest import (
    DESTINATION,
    OPTIONS,
    SIZE,
    SOURCE,
    Endpoint,
    Run,
    failing,
    segment_checksum,
    stream_until_cancelled,
    until,
)

Start = Callable[..., Awaitable[Run]]

# A broken decision tends to show as a workflow that never ends: bound each test
# (generously: a loaded machine made a 600 s retry deadline, skipped, take over 30 s).
pytestmark = pytest.mark.timeout(120)


async def failure_of(run: Run) -> BaseException:
    """The cause the transfer ended with (it must not complete)."""
    with pytest.raises(WorkflowFailureError) as caught:
        await run.handle.result()
    assert caught.value.cause is not None
    return caught.value.cause


async def processed(handle: WorkflowHandle[Any, Any], event: EventType.ValueType) -> bool:
    """Whether a workflow task completed after ``event`` (the workflow has seen it)."""
    seen = False
    async for item in handle.fetch_history_events():
        seen = seen or item.event_type == event
        if seen and item.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            return True
    return False


async def until_processed(handle: WorkflowHandle[Any, Any], event: EventType.ValueType) -> None:
    deadline = time.monotonic() + 10
    while not await processed(handle, event):
        assert time.monotonic() < deadline, f"the workflow never processed {event}"
        await asyncio.sleep(0.05)


async def lose_session(request: StreamInput, lost: Callable[[Any], Awaitable[Any]]) -> Any:
    """Segment 0's stream finds the write session gone; the others copy until the
    workflow cancels them.

    Only one stream fails: when two fail at once, the workflow's cancel of the other
    (already failed) stream is refused by the test server ("ACTIVITY_UNKNOWN"), which
    a real server ignores."""
    if request.segment.index == 0:
        return await lost(request)
    return await stream_until_cancelled(request)


async def test_completes_with_one_session_and_the_combined_checksum(transfer: Start) -> None:
    """Baseline: stat, prepare, one stream per segment, publish, the size check; the
    streams verified every chunk on write, so nothing is read back before publish."""
    endpoint = Endpoint()
    run = await transfer(endpoint)
    result = await run.handle.result()
    assert endpoint.names() == ["stat", "prepare", "copy_stream", "publish", "verify"]
    streams = endpoint.called("copy_stream")
    assert sorted(s.segment.index for s in streams) == [0, 1]
    assert all(s.read_back and s.session.session_id.startswith("temp-") for s in streams)
    (size_check,) = endpoint.called("verify")
    assert size_check.mode == VerifyMode.size and size_check.url == DESTINATION
    assert result.bytes == SIZE and result.source_version == "v1"
    assert result.checksum == "crc32c:" + segment_checksum(0, SIZE)
    assert (await run.progress()).state == TransferState.completed


async def test_pause_stops_streams_and_resume_reads_back_before_publish(transfer: Start) -> None:
    """Pause cancels the running streams and holds; resume schedules the segments
    again; since finished chunks sat exposed during the pause, the temp data is read
    back (verify before publish) even though every stream verified on write."""
    endpoint = Endpoint()
    endpoint.hooks["copy_stream"] = stream_until_cancelled
    run = await transfer(endpoint)
    await until(lambda: endpoint.running_streams == 2, "both streams to start")

    await run.handle.execute_update("pause")
    await until(lambda: endpoint.running_streams == 0, "the pause to stop the streams")
    progress = await run.progress()
    assert progress.state == TransferState.paused and progress.phase == "copy"
    assert len(endpoint.called("copy_stream")) == 2  # nothing rescheduled while paused

    del endpoint.hooks["copy_stream"]  # the streams finish after the resume
    await run.handle.execute_update("resume")
    result = await run.handle.result()

    assert result.bytes == SIZE
    streams = endpoint.called("copy_stream")
    assert sorted(s.segment.index for s in streams) == [0, 0, 1, 1]
    assert endpoint.names() == ["stat", "prepare", "copy_stream", "verify", "publish", "verify"]
    read_back = [v for v in endpoint.called("verify") if v.mode == VerifyMode.checksum]
    assert read_back and all(v.url == endpoint.session_url for v in read_back)
    assert endpoint.called("cleanup") == []


async def test_pause_refused_once_publish_started(transfer: Start) -> None:
    """Pause stops copy streams only: during publish it is refused with a reason and
    the transfer completes."""
    endpoint = Endpoint()
    release = asyncio.Event()

    async def slow_publish(_: PublishInput) -> None:
        await release.wait()

    endpoint.hooks["publish"] = slow_publish
    run = await transfer(endpoint)
    await until(lambda: bool(endpoint.called("publish")), "publish to start")
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await run.handle.execute_update("pause")
    assert "cannot pause" in str(refused.value.cause) and "publish" in str(refused.value.cause)
    release.set()
    assert (await run.handle.result()).bytes == SIZE


async def test_cancel_during_copy_cleans_up_and_ends_cancelled(transfer: Start) -> None:
    """A cancel before publish stops the streams, removes the temp data (cleanup of
    the session prepare opened), publishes nothing and ends cancelled."""
    endpoint = Endpoint()
    endpoint.hooks["copy_stream"] = stream_until_cancelled
    run = await transfer(endpoint)
    await until(lambda: endpoint.running_streams == 2, "both streams to start")

    await run.handle.cancel()
    await until(lambda: bool(endpoint.called("cleanup")), "cleanup after the cancel")
    assert isinstance(await failure_of(run), CancelledError)

    (prepared,) = endpoint.called("prepare")
    (cleaned,) = endpoint.called("cleanup")
    assert cleaned.session_id == f"temp-{prepared.session_key}"
    assert endpoint.called("publish") == []
    assert (await run.progress()).state == TransferState.cancelled


async def test_cancel_while_paused_cleans_up_and_ends_cancelled(transfer: Start) -> None:
    """A paused transfer has no stream running; a cancel still removes the temp data
    and ends it cancelled, and no stream is started again."""
    endpoint = Endpoint()
    endpoint.hooks["copy_stream"] = stream_until_cancelled
    run = await transfer(endpoint)
    await until(lambda: endpoint.running_streams == 2, "both streams to start")
    await run.handle.execute_update("pause")
    await until(lambda: endpoint.running_streams == 0, "the pause to stop the streams")

    await run.handle.cancel()
    await until(lambda: bool(endpoint.called("cleanup")), "cleanup after the cancel")
    assert isinstance(await failure_of(run), CancelledError)
    assert len(endpoint.called("copy_stream")) == 2
    assert endpoint.called("publish") == []
    assert (await run.progress()).state == TransferState.cancelled


async def test_cancel_after_publish_started_completes_without_cleanup(transfer: Start) -> None:
    """Once publish is scheduled the transfer is committed: a cancel is ignored,
    publish and the size check finish, nothing is cleaned up, it ends completed."""
    endpoint = Endpoint()
    release = asyncio.Event()

    async def slow_publish(_: PublishInput) -> None:
        await release.wait()

    endpoint.hooks["publish"] = slow_publish
    run = await transfer(endpoint)
    await until(lambda: bool(endpoint.called("publish")), "publish to start")

    await run.handle.cancel()
    await until_processed(run.handle, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED)
    release.set()
    result = await run.handle.result()

    assert result.bytes == SIZE
    assert endpoint.called("cleanup") == []
    assert endpoint.names()[-2:] == ["publish", "verify"]  # the size check still ran
    assert (await run.progress()).state == TransferState.completed


async def test_cancel_while_the_ending_steps_run_after_publish_completes(
    transfer: Start,
) -> None:
    """A cancel that arrives after publish, while the transfer unpins its staged entry
    (an ending step), does not end it cancelled: the destination holds the new
    object, so it completes (before, it ended cancelled over a published object)."""
    endpoint = Endpoint()
    release = asyncio.Event()

    async def slow_release(_: Any) -> None:
        await release.wait()

    endpoint.hooks["release_staged"] = slow_release
    run = await transfer(endpoint, options=TransferOptions(chunk_size=16, stage=True))
    await until(lambda: bool(endpoint.called("release_staged")), "the entry's release to start")

    await run.handle.cancel()
    await until_processed(run.handle, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED)
    release.set()
    result = await run.handle.result()

    assert result.bytes == SIZE
    assert len(endpoint.called("publish")) == 1 and endpoint.called("cleanup") == []
    assert (await run.progress()).state == TransferState.completed


async def test_cancel_during_a_publish_that_fails_ends_cancelled(transfer: Start) -> None:
    """A cancel ignored because publish had started applies after all when publish
    fails (nothing was published): cleanup runs and the transfer ends cancelled."""
    endpoint = Endpoint()
    release = asyncio.Event()
    refused = failing("PermissionDenied", "cannot rename onto /destination/object.bin")

    async def slow_failing_publish(request: PublishInput) -> None:
        await release.wait()
        await refused(request)

    endpoint.hooks["publish"] = slow_failing_publish
    run = await transfer(endpoint)
    await until(lambda: bool(endpoint.called("publish")), "publish to start")

    await run.handle.cancel()
    await until_processed(run.handle, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED)
    release.set()
    assert isinstance(await failure_of(run), CancelledError)
    assert len(endpoint.called("cleanup")) == 1
    assert (await run.progress()).state == TransferState.cancelled


async def test_lost_write_session_is_copied_again_into_a_new_one(transfer: Start) -> None:
    """A stream reporting WriteSessionLost (the temp data vanished): the old session
    is cleaned up, a new one is prepared under a new key, every segment is copied
    again into it, and that one is published."""
    endpoint = Endpoint()
    lost = failing("WriteSessionLost", "the temp file /destination/.part is gone")

    async def lose_first_session(request: StreamInput) -> Any:
        if request.session.session_id.endswith(endpoint.called("prepare")[0].session_key):
            return await lose_session(request, lost)
        return None

    endpoint.hooks["copy_stream"] = lose_first_session
    run = await transfer(endpoint)
    result = await run.handle.result()

    assert result.bytes == SIZE
    first, second = endpoint.called("prepare")
    assert second.session_key == first.session_key + "-1"
    assert [s.session_id for s in endpoint.called("cleanup")] == [f"temp-{first.session_key}"]
    (published,) = endpoint.called("publish")
    assert published.session.session_id == f"temp-{second.session_key}"
    into_second = [
        s.segment.index
        for s in endpoint.called("copy_stream")
        if s.session.session_id == published.session.session_id
    ]
    assert sorted(into_second) == [0, 1]


async def test_third_lost_write_session_fails_the_transfer(transfer: Start) -> None:
    """Sessions lost again and again: three are opened, no more; the transfer fails
    with WriteSessionLost, each session is cleaned up, nothing is published."""
    endpoint = Endpoint()
    lost = failing("WriteSessionLost", "the temp file is gone")
    endpoint.hooks["copy_stream"] = lambda request: lose_session(request, lost)
    run = await transfer(endpoint)
    error = await failure_of(run)

    assert isinstance(error, ApplicationError) and error.type == "WriteSessionLost"
    assert "3 write sessions in a row were lost" in error.message
    keys = [p.session_key for p in endpoint.called("prepare")]
    assert len(keys) == 3 and len(set(keys)) == 3
    assert sorted(s.session_id for s in endpoint.called("cleanup")) == sorted(
        f"temp-{k}" for k in keys
    )
    assert endpoint.called("publish") == []
    assert (await run.progress()).state == TransferState.failed


async def test_session_lost_after_publish_is_not_copied_again(transfer: Start) -> None:
    """Where the data is verified only after publish (no readable temp data, as on
    S3), a WriteSessionLost then must not start a new session: the destination was
    already replaced. The transfer fails and nothing is cleaned up."""
    endpoint = Endpoint(session_url=None)
    endpoint.hooks["verify"] = failing("WriteSessionLost", "the upload is gone")
    run = await transfer(endpoint)
    error = await failure_of(run)

    assert isinstance(error, ApplicationError) and error.type == "WriteSessionLost"
    assert len(endpoint.called("prepare")) == 1
    assert len(endpoint.called("publish")) == 1
    after = endpoint.called("verify")
    assert after and all(v.url == DESTINATION and v.mode == VerifyMode.checksum for v in after)
    assert endpoint.called("cleanup") == []


def _mismatch_on_segment(endpoint: Endpoint, chunk: int, times: int) -> None:
    """verify of the segment starting at ``chunk`` fails with ChecksumMismatch the
    first ``times`` times it is asked."""
    mismatch = failing("ChecksumMismatch", "chunk 2 of the temp file does not match")
    seen = 0

    async def hook(request: VerifyInput) -> Any:
        nonlocal seen
        if request.mode == VerifyMode.checksum and request.segments[0][0] == chunk:
            seen += 1
            if seen <= times:
                return await mismatch(request)
        return None

    endpoint.hooks["verify"] = hook


async def test_verify_mismatch_copies_that_segment_again(transfer: Start) -> None:
    """Read-back before publish (streams did not verify on write): segment 1's
    checksum mismatches once, so segment 1, and only it, is copied again, all
    segments are verified again, then published."""
    endpoint = Endpoint(verified_on_write=False)
    _mismatch_on_segment(endpoint, chunk=2, times=1)
    run = await transfer(endpoint)
    result = await run.handle.result()

    assert result.bytes == SIZE
    assert sorted(s.segment.index for s in endpoint.called("copy_stream")) == [0, 1, 1]
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
    read_back = [v for v in endpoint.called("verify") if v.mode == VerifyMode.checksum]
    assert len(read_back) == 4  # two segments, twice
    assert all(v.url == endpoint.session_url and not v.whole_object for v in read_back)
    assert endpoint.called("cleanup") == []


async def test_second_verify_mismatch_fails_and_cleans_up(transfer: Start) -> None:
    """A segment that mismatches again after its repair fails the transfer; nothing
    is published and the temp data is cleaned up."""
    endpoint = Endpoint(verified_on_write=False)
    _mismatch_on_segment(endpoint, chunk=2, times=2)
    run = await transfer(endpoint)
    error = await failure_of(run)

    assert isinstance(error, ApplicationError) and error.type == "ChecksumMismatch"
    assert sorted(s.segment.index for s in endpoint.called("copy_stream")) == [0, 1, 1]
    assert endpoint.called("publish") == []
    assert len(endpoint.called("cleanup")) == 1


async def test_source_read_again_before_publish_when_stat_asks(transfer: Start) -> None:
    """``reread_before_publish``: confirm_source runs once per segment, with the
    copy's checksums, after the copy and before publish."""
    endpoint = Endpoint(info=ObjectInfo(size=SIZE, version="v1", reread_before_publish=True))
    run = await transfer(endpoint)
    await run.handle.result()

    assert endpoint.names() == [
        "stat",
        "prepare",
        "copy_stream",
        "confirm_source",
        "publish",
        "verify",
    ]
    confirms: list[ConfirmSourceInput] = endpoint.called("confirm_source")
    assert sorted(c.segments[0] for c in confirms) == [
        (0, 2, segment_checksum(0, 32)),
        (2, 4, segment_checksum(32, 32)),
    ]


async def test_source_changed_at_second_read_fails_and_cleans_up(transfer: Start) -> None:
    """The second read finds the source rewritten in place: nothing is published,
    the temp data is cleaned up, the transfer fails with SourceChanged."""
    endpoint = Endpoint(info=ObjectInfo(size=SIZE, version="v1", reread_before_publish=True))
    endpoint.hooks["confirm_source"] = failing(
        "SourceChanged", "file:///source/object.bin changed during the copy"
    )
    run = await transfer(endpoint)
    error = await failure_of(run)

    assert isinstance(error, ApplicationError) and error.type == "SourceChanged"
    assert "changed during the copy" in error.message
    assert endpoint.called("publish") == []
    assert len(endpoint.called("cleanup")) == 1
    assert (await run.progress()).state == TransferState.failed


async def test_failure_is_reported_before_its_cleanup_and_a_cancel_stops_it(
    transfer_on_own_server: Start,
) -> None:
    """A failure before publish (patch ``failed-before-cleanup``): the state is
    ``failed`` with its reason (query, search attribute, memo) while the cleanup still
    runs, and ``Progress.cleanup`` names the temp data; a cancel requested meanwhile
    stops the cleanup: the run ends failed at once (not cancelled), its memo's
    ``left_behind`` naming the temp data. Before, it waited for the cleanup's end."""
    endpoint = Endpoint(info=ObjectInfo(size=SIZE, version="v1", reread_before_publish=True))
    endpoint.hooks["confirm_source"] = failing(
        "SourceChanged", "file:///source/object.bin changed during the copy"
    )
    release = asyncio.Event()

    async def slow_cleanup(_: Any) -> None:
        while not release.is_set():
            activity.heartbeat()
            await asyncio.sleep(0.02)

    endpoint.hooks["cleanup"] = slow_cleanup
    run = await transfer_on_own_server(endpoint)
    await until(lambda: bool(endpoint.called("cleanup")), "the cleanup to start")
    progress = await run.progress()
    assert progress.state == TransferState.failed, progress
    assert progress.error and "changed during the copy" in progress.error
    (prepared,) = endpoint.called("prepare")
    assert progress.cleanup and f"temp-{prepared.session_key}" in progress.cleanup, progress
    description = await run.handle.describe()
    assert description.status == WorkflowExecutionStatus.RUNNING
    assert description.typed_search_attributes.get(sa.STATE) == "failed"
    assert "changed during the copy" in (await description.memo())["error"]
    assert "left_behind" not in await description.memo()

    await run.handle.cancel()
    try:
        # the cleanup never finished: the cancel ended the run (before, it waited)
        error = await asyncio.wait_for(failure_of(run), 30)
    finally:
        release.set()
    assert isinstance(error, ApplicationError) and error.type == "SourceChanged", error
    assert len(endpoint.called("cleanup")) == 1
    assert endpoint.called("publish") == []
    memo = await (await run.handle.describe()).memo()
    assert f"temp-{prepared.session_key}" in memo["left_behind"], memo


async def test_cleanup_that_gives_up_leaves_left_behind_in_the_memo(transfer: Start) -> None:
    """A failed transfer whose cleanup keeps failing (the destination's server is
    down) ends failed once the cleanup's retries gave up, its memo's ``left_behind``
    naming the temp data and how it goes; a cleanup that succeeds leaves none."""
    endpoint = Endpoint(info=ObjectInfo(size=SIZE, version="v1", reread_before_publish=True))
    endpoint.hooks["confirm_source"] = failing("SourceChanged", "changed during the copy")
    endpoint.hooks["cleanup"] = failing("Unavailable", "connection refused", retryable=True)
    # --retry-for 1 s: the clean-up's window is its floor, 30 s (not 10 attempts, ~65 s)
    run = await transfer(endpoint, options=OPTIONS.model_copy(update={"retry_for_s": 1}))
    error = await failure_of(run)
    assert isinstance(error, ApplicationError) and error.type == "SourceChanged", error
    assert len(endpoint.called("cleanup")) > 1  # retried, then gave up
    (prepared,) = endpoint.called("prepare")
    memo = await (await run.handle.describe()).memo()
    assert f"temp-{prepared.session_key}" in memo["left_behind"], memo
    assert "the next transfer to this destination removes it" in memo["left_behind"]


async def test_cleanup_that_succeeds_leaves_no_left_behind(transfer: Start) -> None:
    endpoint = Endpoint(info=ObjectInfo(size=SIZE, version="v1", reread_before_publish=True))
    endpoint.hooks["confirm_source"] = failing("SourceChanged", "changed during the copy")
    run = await transfer(endpoint)
    await failure_of(run)
    assert len(endpoint.called("cleanup")) == 1
    assert "left_behind" not in await (await run.handle.describe()).memo()


async def test_permanent_error_fails_at_once(transfer: Start) -> None:
    """A non-retryable error (missing source) fails the transfer on its first
    attempt, with the endpoint's message."""
    endpoint = Endpoint()
    endpoint.hooks["stat"] = failing("NotFound", "file:///source/object.bin: no such file")
    run = await transfer(endpoint)
    error = await failure_of(run)

    assert isinstance(error, ApplicationError) and error.type == "NotFound"
    assert "no such file" in error.message
    assert len(endpoint.called("stat")) == 1


@pytest.mark.parametrize(
    ("request_input", "expected"),
    [
        (
            {"source": SOURCE, "destination": DESTINATION, "options": {"chunk_size": -1}},
            "options.chunk_size",
        ),
        ({"source": SOURCE, "destination": "relative/path.bin"}, "destination"),
        ({"source": SOURCE}, "destination: Field required"),
        (b"\x00not json", "expected a JSON payload"),
        ({"source": DESTINATION, "destination": DESTINATION}, "the same object"),
    ],
    ids=["negative-chunk-size", "relative-path", "missing-field", "not-json", "onto-itself"],
)
async def test_malformed_input_fails_at_once(
    transfer: Start, request_input: Any, expected: str
) -> None:
    """Any Temporal client can start the workflow: malformed input fails it at once
    (no activity runs) with a message naming the field."""
    endpoint = Endpoint()
    run = await transfer(endpoint, request=request_input)
    error = await failure_of(run)

    assert isinstance(error, ApplicationError) and error.type == "InvalidInput"
    assert expected in error.message
    assert endpoint.calls == []


@pytest.mark.parametrize("count", [0, 2])
async def test_wrong_number_of_inputs_fails_at_once(transfer: Start, count: int) -> None:
    """A raw start with no input or with two fails the run (it does not hang with its
    workflow task failing), naming what was expected."""
    endpoint = Endpoint()
    request = {"source": SOURCE, "destination": DESTINATION}
    run = await transfer(endpoint, args=[request] * count)
    error = await failure_of(run)

    assert isinstance(error, ApplicationError)
    if count == 0:  # named for what it lacks: the input and its shape
        assert error.type == "InvalidInput" and "needs its input" in error.message, error
    else:
        assert error.type == "TypeError" and "positional argument" in error.message, error
    assert endpoint.calls == []


async def test_environment_is_time_skipping(env: WorkflowEnvironment) -> None:
    """The suite's premise: the retry test above relies on skipped time."""
    assert env.supports_time_skipping


async def test_cancel_that_comes_with_prepares_result_cleans_up_its_session(
    transfer: Start,
) -> None:
    """A cancel that reaches the workflow while prepare runs, or in the same workflow
    task as prepare's result (a worker killed before it saw the result, the cancel
    sent meanwhile), still cleans up the session prepare opened: its id is known only
    from that result (an S3 multipart upload), and the transfer must not end cancelled
    with a temp file or an open upload left behind.

    Prepare's first attempt (a local activity) fails as a transient error; its second
    (a regular activity) sends the cancel itself and returns the session once the
    workflow has processed the cancel (the test server refuses a cancel of an
    activity that already completed, which a real server ignores, so the "with the
    result" case is not reachable here)."""
    endpoint = Endpoint()
    handles: list[WorkflowHandle[Any, Any]] = []
    attempts = 0

    async def cancel_then_open(request: Any) -> Any:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ApplicationError("connection reset", type="RetryableError")
        await handles[0].cancel()
        await until_processed(handles[0], EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED)
        return None  # the default session: temp-<session key>

    endpoint.hooks["prepare"] = cancel_then_open
    run = await transfer(endpoint)
    handles.append(run.handle)
    assert isinstance(await failure_of(run), CancelledError)

    prepared = endpoint.called("prepare")
    assert len(prepared) == 2
    (cleaned,) = endpoint.called("cleanup")
    assert cleaned.session_id == f"temp-{prepared[-1].session_key}"
    assert endpoint.called("copy_stream") == []
    assert (await run.progress()).state == TransferState.cancelled


#: a verified copy the look-ups find (its record's checksum is the data's)
KNOWN = "file:///copies/object.bin"
#: a remote origin (a local file origin is never read from a copy)
REMOTE = "http://origin.example/object.bin"


@pytest.mark.parametrize(
    ("error_type", "message", "blamed"),
    [
        # the destination went down and the stream gave up: not the copy's fault
        ("RetryableError", "gave up: cannot connect to 127.0.0.1:2622", False),
        # the copy changed while it was read: its fault
        ("SourceChanged", f"source changed: {KNOWN} is being modified", True),
    ],
    ids=["destination-down", "copy-changed"],
)
async def test_a_failed_stream_blames_the_known_copy_only_when_its_read_failed(
    transfer: Start, error_type: str, message: str, blamed: bool
) -> None:
    """Segment 0's stream, reading the known copy, fails once: the rest is read from
    the origin either way, and ``read_from_reason`` says the copy failed only when
    the error is the copy's (changed, gone, short); a destination's failure (a
    stream that gave up on a down SFTP server) said ``the copy ... failed while it
    was read`` before, blaming a local copy that never failed."""
    from staccato.models import KnownCopy

    failed: list[int] = []

    async def stream(request: StreamInput) -> Any:
        if request.source == KNOWN and request.segment.index == 0 and not failed:
            failed.append(0)
            raise ApplicationError(message, type=error_type, non_retryable=True)
        return None

    endpoint = Endpoint(hooks={"copy_stream": stream})
    copy = KnownCopy(
        url=KNOWN,
        info=ObjectInfo(size=SIZE, version="copy-v1"),
        checksum="crc32c:" + segment_checksum(0, SIZE),
        reason="a verified copy",
    )
    request = TransferRequest(source=REMOTE, destination=DESTINATION, options=OPTIONS)
    run = await transfer(endpoint, request=request, known_copy=copy)
    result = await run.handle.result()
    assert failed, "no stream read the known copy"
    assert result.read_from == "origin", result
    why = result.read_from_reason or ""
    print(why)
    assert KNOWN in why and message in why and "read from the origin" in why, why
    assert ("the copy " + KNOWN + " failed while it was read" in why) is blamed, why
    if not blamed:
        assert "not necessarily at the copy" in why, why


async def test_a_local_file_source_is_never_read_from_a_known_copy(transfer: Start) -> None:
    """A ``file://`` source with a verified copy on record: no lookup is made (the
    look-ups get no known-copy input; ``find_known_copy`` never runs) and every stream
    reads the origin, which ``read_from_reason`` explains. Before, the copy (an S3
    object read at S3's rate) replaced the worker's own disk."""
    from staccato.models import KnownCopy

    endpoint = Endpoint()
    copy = KnownCopy(
        url=KNOWN,
        info=ObjectInfo(size=SIZE, version="copy-v1"),
        checksum="crc32c:" + segment_checksum(0, SIZE),
        reason="a verified copy",
    )
    run = await transfer(endpoint, known_copy=copy)
    result = await run.handle.result()
    assert result.read_from == "origin", result
    assert "a local file source is read from disk" in (result.read_from_reason or ""), result
    assert {c.source for c in endpoint.called("copy_stream")} == {SOURCE}


async def test_cleanup_after_failure_retries_for_its_whole_window(transfer: Start) -> None:
    """A failed transfer's clean-up that keeps failing, ``--retry-for 1s`` (its window
    is then the 30 s floor): attempts are still started 30 s after the clean-up's
    first one (Temporal's clock, skipped here), and none after the window plus one
    backoff (10 s). Before, Temporal gave up once the next backoff (10 s) no longer
    fitted in the 30 s deadline: the last attempt started about 25 s in."""
    endpoint = Endpoint(info=ObjectInfo(size=SIZE, version="v1", reread_before_publish=True))
    endpoint.hooks["confirm_source"] = failing("SourceChanged", "changed during the copy")
    attempts: list[tuple[int, float]] = []

    async def dead_server(_: Any) -> None:
        info = activity.info()
        started = info.started_time - info.scheduled_time
        attempts.append((info.attempt, started.total_seconds()))
        raise ApplicationError("connection refused", type="Unavailable")

    endpoint.hooks["cleanup"] = dead_server
    run = await transfer(endpoint, options=TransferOptions(chunk_size=16, streams=2, retry_for_s=1))
    error = await failure_of(run)
    assert isinstance(error, ApplicationError) and error.type == "SourceChanged", error
    last_attempt, last_started_s = attempts[-1]
    assert last_attempt == len(attempts) < 10, attempts  # the window ended it, not the count
    assert 30 <= last_started_s <= 40, attempts
    memo = await (await run.handle.describe()).memo()
    assert "may be left" in memo["left_behind"], memo


@pytest.mark.parametrize(
    ("destination", "stopped"),
    [
        (
            "s3://bucket/dir/object.bin",
            "(it stays failed, and its multipart upload stays open: `staccato status {id}` "
            "then names the upload id to abort)",
        ),
        (
            "file:///destination/object.bin",
            "(it stays failed; the next transfer to this destination removes its temp file)",
        ),
        (
            "file:///destination/" + "n" * 147,
            "(it stays failed; `staccato status {id}` then names its temp file and journal "
            "to delete by hand: the next transfer does not remove them",
        ),
    ],
    ids=["s3", "file", "file-name-over-146-bytes"],
)
async def test_busy_while_cleaning_up_says_what_a_stopped_cleanup_leaves(
    transfer: Start, env: WorkflowEnvironment, destination: str, stopped: str
) -> None:
    """A start refused because the destination's transfer failed and still cleans up
    (``starts._cleaning_up``) says what stopping that clean-up leaves and how it goes,
    per destination: S3 has no sweep (the clean-up itself aborts the multipart
    upload), a file or SFTP name over 146 bytes is never swept. Before, every one said
    the next transfer removes a temp file left on a file or SFTP destination."""
    endpoint = Endpoint(info=ObjectInfo(size=SIZE, version="v1", reread_before_publish=True))
    endpoint.hooks["confirm_source"] = failing("SourceChanged", "changed during the copy")
    release = asyncio.Event()

    async def slow_cleanup(_: Any) -> None:
        while not release.is_set():
            activity.heartbeat()
            await asyncio.sleep(0.02)

    endpoint.hooks["cleanup"] = slow_cleanup
    options = TransferOptions(chunk_size=16, streams=2)
    run = await transfer(
        endpoint, request=TransferRequest(source=SOURCE, destination=destination, options=options)
    )
    try:
        await until(lambda: bool(endpoint.called("cleanup")), "the cleanup to start")
        other = TransferRequest(source="file:///source/other.bin", destination=destination)
        with pytest.raises(DestinationBusyError) as busy:
            await start_or_attach(env.client, other, task_queue="unused")
    finally:
        release.set()
    message = str(busy.value)
    assert f"the failed transfer {run.handle.id} is still removing its partial data" in message
    assert stopped.format(id=run.handle.id) in message, message
    if destination.startswith("s3://"):
        assert "next transfer" not in message and "temp file" not in message, message


async def test_scheduled_while_prepare_is_retried_running_once_streams_start(
    transfer: Start,
) -> None:
    """``prepare`` fails (the destination's server is down, as after a wait for a busy
    destination whose holder only cleaned up) and is retried: the state stays
    ``scheduled`` (query and search attribute StaccatoState), as README's states say,
    until the streams start; then ``running``. Before, it was ``running`` from the end
    of ``stat`` on."""
    endpoint = Endpoint()
    release = asyncio.Event()

    async def down_then_up(_: Any) -> None:
        if activity.info().attempt == 1:
            raise ApplicationError("cannot connect: connection refused", type="Unavailable")
        while not release.is_set():  # the retry, held until the state was checked
            activity.heartbeat()
            await asyncio.sleep(0.02)

    endpoint.hooks["prepare"] = down_then_up
    endpoint.hooks["copy_stream"] = stream_until_cancelled
    run = await transfer(endpoint)
    try:
        await until(lambda: len(endpoint.called("prepare")) == 2, "prepare's retry")
        progress = await run.progress()
        assert progress.state == TransferState.scheduled and progress.phase == "prepare", progress
        description = await run.handle.describe()
        assert description.typed_search_attributes.get(sa.STATE) == "scheduled"
    finally:
        release.set()
    await until(lambda: endpoint.running_streams == 2, "both streams to start")
    assert (await run.progress()).state == TransferState.running
    description = await run.handle.describe()
    assert description.typed_search_attributes.get(sa.STATE) == "running"


async def test_a_stream_cancelled_between_attempts_keeps_its_bytes_in_the_failed_count(
    transfer_on_own_server: Start,
) -> None:
    """One stream fails for good while the other waits out its retry backoff: the
    workflow reads the other's last heartbeat (activity ``streams_moved``, patch
    ``streams-moved-on-failure``) before it cancels it, so the failed run's memo keeps
    its bytes. A stream cancelled in its backoff carries no details of its own
    (``ACTIVITY_ID_NOT_STARTED``): the memo said 0 B with bytes durable (an sshd gone
    mid-copy at load ~20, before the worker's first progress report)."""
    endpoint = Endpoint()
    first_failed = asyncio.Event()

    async def streams(request: Any) -> Any:
        if request.segment.index == 0:
            if activity.info().attempt == 1:
                activity.heartbeat(
                    Checkpoint(segment=0, next_chunk=1, bytes_done=16).model_dump(mode="json")
                )
                first_failed.set()
                raise ApplicationError("connection refused", type="Unavailable")
            return await stream_until_cancelled(request)
        await first_failed.wait()  # segment 0 failed once: it is in its backoff now
        raise ApplicationError("permission denied", type="Permission", non_retryable=True)

    endpoint.hooks["copy_stream"] = streams
    run = await transfer_on_own_server(endpoint)
    error = await failure_of(run)
    assert isinstance(error, ApplicationError) and error.type == "Permission", error
    memo = await (await run.handle.describe()).memo()
    assert memo["bytes_done"] == 16, memo
