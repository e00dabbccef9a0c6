"""A hung S3 server (SIGSTOPped: it keeps its sockets, accepts connections and answers
nothing) must not outlast ``--retry-for``: the copy gives up within a bounded time
after the deadline, naming what it was copying to; a short hang (resumed before the
deadline) is ridden out and the copy completes with the same bytes.

Before the hang watch (staccato/activities/retry_deadline.py) every attempt hung until
its heartbeat or driver timeout, and Temporal retried so for the whole allowance
(schedule_to_close = budget + copy_timeout: 10 minutes and more): the transfer stayed
``running``. Server: the session's SeaweedFS, stopped and resumed (in a ``finally``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowExecutionStatus

from staccato.cli import render
from staccato.client import StaccatoClient
from staccato.errors import TransferFailedError
from staccato.fanout_client import group_status
from staccato.models import NO_WORKER_ANSWERS, GroupState, TransferOptions, TransferState
from staccato.workflows.calls import SHORT_TIMEOUT
from tests.helpers import MiB, stopped_process_tree, wait_for_status, write_random
from tests.s3.conftest import MeteredSeaweedS3
from tests.s3.s3util import object_digest

SIZE = 64 * MiB
#: paced so the copy lasts ~16 s and the server can be stopped mid-copy
OPTIONS = TransferOptions(
    chunk_size=8 * MiB, streams=2, max_rate=4 * MiB, retry_for_s=10, heartbeat_timeout_s=5
)
#: a correctness bound, not a speed one: the old code stayed running ~10 minutes
GIVES_UP_WITHIN_S = 150.0


def _stopped(server: MeteredSeaweedS3) -> contextlib.AbstractContextManager[None]:
    """The S3 server and its children SIGSTOPped for the block."""
    assert server.pid is not None, "the S3 server is not running"
    return stopped_process_tree(server.pid)


_ENDED = (TransferState.completed, TransferState.failed, TransferState.cancelled)
_GROUP_ENDED = (
    GroupState.completed,
    GroupState.completed_with_errors,
    GroupState.failed,
    GroupState.cancelled,
)


async def _copying(client: StaccatoClient, transfer: str) -> None:
    """Wait until the copy has moved bytes (the server is then stopped mid-copy)."""
    await wait_for_status(
        client,
        transfer,
        # (not "not running": a transfer still scheduled is not copying yet, and the
        # server stopped then hangs its prepare step, not a copy)
        lambda s: s.bytes_done > 0 or s.state in _ENDED,
        timeout_s=120,
    )


async def test_hung_s3_server_fails_soon_after_retry_for_naming_the_destination(
    s3_client: StaccatoClient, s3_server: MeteredSeaweedS3, bucket: str, data_dir: Path
) -> None:
    source = data_dir / "hang.bin"
    write_random(source, SIZE, seed=71)
    destination = f"s3://{bucket}/hang.bin"
    transfer = await s3_client.submit(str(source), destination, OPTIONS)
    await _copying(s3_client, transfer)
    reasons: set[str] = set()  # the retry reasons status showed during the hang

    async def watch() -> None:
        while True:
            status = await s3_client.status(transfer)
            if status.last_retry_error:
                reasons.add(status.last_retry_error)
            await asyncio.sleep(0.5)

    with _stopped(s3_server):
        stopped_at = time.monotonic()
        watching = asyncio.create_task(watch())
        try:
            with pytest.raises(TransferFailedError) as failed:
                await asyncio.wait_for(s3_client.wait(transfer), GIVES_UP_WITHIN_S)
        finally:
            watching.cancel()
        took = time.monotonic() - stopped_at
    message = str(failed.value)
    assert destination in message, message
    assert "did not answer" in message, message
    assert took < GIVES_UP_WITHIN_S  # (wait_for raised TimeoutError otherwise)
    # a timed-out attempt is said in words that name where it was blocked
    for reason in reasons:
        assert "activity Heartbeat timeout" not in reason, reasons
        if "heartbeat" in reason:
            assert destination in reason, reasons


async def test_short_s3_hang_before_retry_for_completes(
    s3_client: StaccatoClient, s3_server: MeteredSeaweedS3, s3: Any, bucket: str, data_dir: Path
) -> None:
    source = data_dir / "short-hang.bin"
    digest = write_random(source, SIZE, seed=72)
    transfer = await s3_client.submit(str(source), f"s3://{bucket}/short.bin", OPTIONS)
    await _copying(s3_client, transfer)
    with _stopped(s3_server):
        # the fault's length (well inside --retry-for), not a wait for a condition
        await asyncio.sleep(4)
    result = await asyncio.wait_for(s3_client.wait(transfer), 300)
    assert result.bytes == SIZE
    assert object_digest(s3, bucket, "short.bin") == digest


async def test_upload_to_hung_moto_fails_soon_after_retry_for(
    profile_client: StaccatoClient, moto_s3: Any, data_dir: Path
) -> None:
    """README's try-endpoints case: an upload to moto's S3 server, the default heartbeat
    timeout. Unlike SeaweedFS, moto's connections are rarely reused, so a retried
    attempt's first request (ListParts, a GET: one ``send``) goes out on a new
    connection. The old code registered a botocore socket with the interrupts only
    when ``send`` found it already connected: that GET's blocked ``recv`` was never
    shut down, the hang watch fired in vain, the stream guard logged "stream attempt
    abandoned" every half second, and the transfer stayed running minutes past
    --retry-for (this test timed out after 150 s on it)."""
    s3 = moto_s3.client()
    bucket = "hang-upload"
    with contextlib.suppress(Exception):
        s3.create_bucket(Bucket=bucket)
    source = data_dir / "moto-hang.bin"
    write_random(source, SIZE, seed=73)
    destination = f"s3://{bucket}/hang.bin?profile=moto"
    options = TransferOptions(chunk_size=8 * MiB, streams=2, max_rate=4 * MiB, retry_for_s=10)
    transfer = await profile_client.submit(str(source), destination, options)
    await _copying(profile_client, transfer)
    assert moto_s3.pid is not None, "moto is not running"
    with stopped_process_tree(moto_s3.pid):
        with pytest.raises(TransferFailedError) as failed:
            await asyncio.wait_for(profile_client.wait(transfer), GIVES_UP_WITHIN_S)
    message = str(failed.value)
    assert f"s3://{bucket}/hang.bin" in message, message
    assert "did not answer" in message, message


async def test_hung_s3_source_while_staging_fails_the_group_at_once(
    s3_client: StaccatoClient, s3_server: MeteredSeaweedS3, s3: Any, bucket: str, data_dir: Path
) -> None:
    """A fan-out of an S3 source to two destinations, the S3 server stopped while the
    group stages the source. The give-up failed both destinations ("the server did not
    answer"), but the old group stayed ``running`` (phase staging, "0 B staged") a
    minute more: its run went on to release the staged entry, whose lock a hung
    attempt's thread held, and status said running while the run had not returned
    (cp followed it so). Its staged bytes read 0 after 17.6 MiB had shown, and a
    retry line said the attempt "was blocked" without naming on what."""
    key = "hang-stage.bin"
    source_file = data_dir / key
    write_random(source_file, SIZE, seed=75)
    s3.upload_file(str(source_file), bucket, key)
    source = f"s3://{bucket}/{key}"
    (data_dir / "fa").mkdir()
    (data_dir / "fb").mkdir()
    destinations = [str(data_dir / "fa" / "h.bin"), str(data_dir / "fb" / "h.bin")]
    # the tester's: paced at 2 MiB/s, the default heartbeat timeout (staging: 20 s)
    options = TransferOptions(chunk_size=8 * MiB, streams=2, max_rate=2 * MiB, retry_for_s=10)
    group = await s3_client.fan_out(source, destinations, options)
    deadline = time.monotonic() + 120
    while True:
        status = await group_status(s3_client, group)
        if (status.staged_bytes or 0) > 8 * MiB or status.state in _GROUP_ENDED:
            break
        assert time.monotonic() < deadline, f"never staged: {status}"
        await asyncio.sleep(0.2)
    assert status.state == GroupState.running, status
    reasons: set[str] = set()
    staged_seen = status.staged_bytes or 0
    staged_shown: list[int] = []
    with _stopped(s3_server):
        deadline = time.monotonic() + GIVES_UP_WITHIN_S
        while True:
            status = await group_status(s3_client, group)
            if status.last_retry_error:
                reasons.add(status.last_retry_error)
            every_failed = all(d.state == TransferState.failed for d in status.destinations)
            # never a group running whose every destination failed already
            assert status.state == GroupState.failed or not every_failed, status
            if status.state in _GROUP_ENDED:
                break
            staged_seen = max(staged_seen, status.staged_bytes or 0)
            staged_shown.append(status.staged_bytes or 0)
            assert time.monotonic() < deadline, f"still {status.state.value}: {status}"
            await asyncio.sleep(0.5)
        # the Python API's wait ends as soon as the group says failed too (not when
        # its run, still releasing the staged entry, returns)
        waited = await asyncio.wait_for(s3_client.wait_group(group), 30)
        assert waited.state == GroupState.failed, waited
    final = status
    assert final.state == GroupState.failed, final
    assert final.error is not None and "did not answer" in final.error, final
    assert source in final.error, final
    for row in final.destinations:
        assert row.state == TransferState.failed, row
        assert row.error is not None and "did not answer" in row.error, row
    # what was staged stays shown (not 0 B)
    assert all(shown > 0 for shown in staged_shown), staged_shown
    assert staged_seen > 0
    assert (final.staged_bytes or 0) > 0, final
    # a timed-out attempt's retry line names where it was blocked
    for reason in reasons:
        if "heartbeat" in reason:
            assert source in reason, reasons


async def test_s3_source_hung_under_publish_fails_naming_it(
    s3_client: StaccatoClient, s3_server: MeteredSeaweedS3, s3: Any, bucket: str, data_dir: Path
) -> None:
    """The tester's download from S3 (2 MiB/s, --retry-for 10 s), the server stopped
    near the end: the rest of the object is in the sockets' buffers, so the copy
    completes, and ``publish``, which re-reads the source's version, hangs. Its
    retry deadline passed while its first attempt hung, before any attempt failed: the
    old code ended "gave up: the publish step kept failing ...; last error: none
    recorded", naming no endpoint. A failed run whose clean-up removed the temp file
    keeps nothing (``bytes_durable`` 0), as an ended failed run's."""
    key = "hang-publish.bin"
    source_file = data_dir / key
    # 32 MiB: its copy (16 s at 2 MiB/s) is most of the test's time; the stop comes in
    # its last 4 MiB as with any size
    size = 32 * MiB
    write_random(source_file, size, seed=76)
    s3.upload_file(str(source_file), bucket, key)
    source = f"s3://{bucket}/{key}"
    destination = data_dir / "dl.bin"
    options = TransferOptions(max_rate=2 * MiB, retry_for_s=10)
    transfer = await s3_client.submit(source, str(destination), options)
    # the last few MiB: fewer than the sockets buffer (~17 MiB were read from them
    # after a stop here)
    await wait_for_status(
        s3_client,
        transfer,
        lambda s: s.bytes_done >= size - 4 * MiB or s.state in _ENDED,
        timeout_s=120,
    )
    phases: set[str] = set()
    with _stopped(s3_server):
        deadline = time.monotonic() + GIVES_UP_WITHIN_S
        while True:
            status = await s3_client.status(transfer)
            if status.phase:
                phases.add(status.phase)
            if status.state == TransferState.failed and status.cleanup is None:
                # its clean-up is over: nothing is kept
                assert status.bytes_durable == 0, status
            if status.state in _ENDED:
                # (a failed run goes on while it removes its temp file: its end)
                described = await s3_client.temporal.get_workflow_handle(transfer).describe()
                if described.status != WorkflowExecutionStatus.RUNNING:
                    break
            assert time.monotonic() < deadline, f"still {status.state.value}: {status}"
            await asyncio.sleep(0.5)
    if "publish" not in phases:
        pytest.skip(f"the copy hung before publish (phases {phases}): smaller socket buffers")
    status = await s3_client.status(transfer)
    assert status.state == TransferState.failed, status
    message = status.error or ""
    assert "publish" in message and "did not answer" in message, message
    assert source in message, message
    # the local destination is no server that may not answer: only the source is
    # blamed (tester T14 read "s3://... or file:///... did not answer")
    assert destination.as_uri() not in message and "file://" not in message, message
    assert "none recorded" not in message, message
    assert status.bytes_durable == 0, status
    assert not destination.exists()


async def _history(client: StaccatoClient, transfer: str) -> list[Any]:
    """The transfer's history events (its latest run)."""
    handle = client.temporal.get_workflow_handle(transfer)
    return [event async for event in handle.fetch_history_events()]


async def test_upload_to_hung_moto_gives_up_in_the_streams_first_attempt(
    profile_client: StaccatoClient, moto_s3: Any, data_dir: Path
) -> None:
    """The tester's upload to moto (T1), the default heartbeat timeout (20 s: a hang
    limit of 12 s), moto SIGSTOPped mid-copy. botocore retries an UploadPart whose send
    timed out (after its 10 s connect timeout, which also bounds a send) on a new
    connection, rewinding the part's body, and the stopped server's kernel takes the
    first MiBs of each try: the old hang watch counted those re-sends as bytes moved,
    every ~11 s, under its 12 s limit, so it never fired in the streams' first
    attempts, which ended only when botocore's 5 tries did (~60 s); their retries
    then gave up (~85 s after the stop). Now a re-sent piece is not motion: each
    hung stream gives up in its first attempt, with the hang watch's reason, after
    --retry-for past the last time it got further (its message says how long)."""
    s3 = moto_s3.client()
    bucket = "hang-first"
    with contextlib.suppress(Exception):
        s3.create_bucket(Bucket=bucket)
    source = data_dir / "moto-first.bin"
    write_random(source, SIZE, seed=77)
    destination = f"s3://{bucket}/first.bin?profile=moto"
    options = TransferOptions(chunk_size=8 * MiB, streams=2, max_rate=4 * MiB, retry_for_s=10)
    transfer = await profile_client.submit(str(source), destination, options)
    await _copying(profile_client, transfer)
    assert moto_s3.pid is not None, "moto is not running"
    with stopped_process_tree(moto_s3.pid):
        with pytest.raises(TransferFailedError) as failed:
            await asyncio.wait_for(profile_client.wait(transfer), GIVES_UP_WITHIN_S)
    message = str(failed.value)
    assert f"s3://{bucket}/first.bin" in message, message
    assert "did not answer" in message, message
    events = await _history(profile_client, transfer)
    scheduled = {
        e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
        for e in events
        if e.HasField("activity_task_scheduled_event_attributes")
    }
    # a started event is written when its activity closes, with its last attempt
    started = {
        e.event_id: e.activity_task_started_event_attributes
        for e in events
        if e.HasField("activity_task_started_event_attributes")
        and scheduled[e.activity_task_started_event_attributes.scheduled_event_id] == "copy_stream"
    }
    hung = [
        e.activity_task_failed_event_attributes
        for e in events
        if e.HasField("activity_task_failed_event_attributes")
        and e.activity_task_failed_event_attributes.started_event_id in started
        and e.activity_task_failed_event_attributes.failure.application_failure_info.type
        == "EndpointHung"
    ]
    assert hung, [e.event_type for e in events]
    for failure in hung:
        attempt = started[failure.started_event_id].attempt
        # given up by the first attempt's own hang watch, not after a retry
        assert attempt == 1, (attempt, failure.failure.message)
        said = re.search(r"the copy got no further for (\d+) s", failure.failure.message)
        assert said is not None, failure.failure.message
        # --retry-for counts from the last time the stream got further (whole seconds)
        assert int(said.group(1)) >= options.retry_for_s, failure.failure.message


async def test_status_of_a_transfer_whose_prepare_hangs_never_says_no_worker_answers(
    profile_client: StaccatoClient, moto_s3: Any, data_dir: Path
) -> None:
    """moto SIGSTOPped before the upload starts (T1, T12): the first attempt of its
    ``prepare`` runs as a local activity, inside the workflow task, whose worker then
    answers no progress query until it returns. The old first attempt waited for
    the hung server for its whole start-to-close timeout (2 min): ``--retry-for 10s``
    gave up after ~130 s, and meanwhile ``status`` said "waiting: no worker answers"
    (every query that timed out behind the workflow task) while the worker ran. Now
    the local attempt is cut at ``LOCAL_ATTEMPT_TIMEOUT`` (and the retry budget), the
    step goes on as a regular activity, and a status whose query waited behind the
    workflow task says that the worker is busy running a step, never that no worker
    answers."""
    s3 = moto_s3.client()
    bucket = "hang-prepare"
    with contextlib.suppress(Exception):
        s3.create_bucket(Bucket=bucket)
    source = data_dir / "moto-prepare.bin"
    write_random(source, MiB, seed=78)
    destination = f"s3://{bucket}/prepare.bin?profile=moto"
    options = TransferOptions(retry_for_s=10)
    said: list[str] = []
    assert moto_s3.pid is not None, "moto is not running"
    with stopped_process_tree(moto_s3.pid):
        transfer = await profile_client.submit(str(source), destination, options)
        deadline = time.monotonic() + GIVES_UP_WITHIN_S
        while True:
            assert await profile_client.pollers() > 0  # a worker polls throughout
            status = await profile_client.status(transfer)
            if status.last_retry_error:
                said.append(status.last_retry_error)
            if status.state in _ENDED:
                break
            assert time.monotonic() < deadline, f"still {status.state.value}: {status}"
            await asyncio.sleep(0.2)
    assert status.state == TransferState.failed, status
    assert "prepare" in (status.error or "") and "did not answer" in (status.error or "")
    for reason in said:
        assert not reason.startswith(NO_WORKER_ANSWERS), said
    events = await _history(profile_client, transfer)
    began = events[0].event_time.ToDatetime()
    local = [
        e.event_time.ToDatetime()
        for e in events
        if e.HasField("marker_recorded_event_attributes")
        and e.marker_recorded_event_attributes.marker_name == "core_local_activity"
    ]
    assert local, [e.event_type for e in events]
    # the local attempts (stat, then the hung prepare) ended within their cut, not
    # after the old 2 min
    assert max(local) - began < SHORT_TIMEOUT, (began, local)


#: a correctness bound, not a speed one: the stall is said 5 s into the step's regular
#: attempt (its local attempt takes 10 s first); the old code never said it (110 s of
#: "scheduled / phase prepare" with --retry-for 10m: newcomer tester)
STEP_STALL_SAID_WITHIN_S = 90.0


async def _runs_as_activity(client: StaccatoClient, transfer: str, step: str) -> bool:
    """Whether ``step`` of ``transfer`` runs as a regular activity (a pending activity
    of its run, its attempt started), not as its first, local attempt."""
    described = await client.temporal.get_workflow_handle(transfer).describe()
    return any(
        p.activity_type.name == step and p.HasField("last_started_time")
        for p in described.raw_description.pending_activities
    )


async def test_status_of_a_hung_prepare_names_the_step_and_its_destination(
    profile_client: StaccatoClient, moto_s3: Any, data_dir: Path
) -> None:
    """The newcomer's case: moto SIGSTOPped before an upload with a long --retry-for
    (5 min). Past its 10 s local attempt, ``prepare`` runs as a regular activity that
    heartbeats while it waits for the stopped server, so no heartbeat timeout and no
    failure shows: the old ``status`` said only ``scheduled / phase prepare`` (110 s
    of it), and ``cp``'s line ``starting: 0 B / 1.0 MiB (0%)``. Now, once the attempt
    has run the copy's stall rule (5 s), status says the step waits for its
    destination and since when (``stalled_step``, ``idle_since``), as a copy's
    stalled streams are said, and so does the progress line."""
    s3 = moto_s3.client()
    bucket = "hang-prepare-said"
    with contextlib.suppress(Exception):
        s3.create_bucket(Bucket=bucket)
    source = data_dir / "moto-prepare-said.bin"
    write_random(source, MiB, seed=79)
    destination = f"s3://{bucket}/said.bin?profile=moto"
    where = f"s3://{bucket}/said.bin"
    options = TransferOptions(retry_for_s=300)
    assert moto_s3.pid is not None, "moto is not running"
    with stopped_process_tree(moto_s3.pid):
        transfer = await profile_client.submit(str(source), destination, options)
        submitted = time.monotonic()
        try:
            deadline = submitted + STEP_STALL_SAID_WITHIN_S
            regular = False
            while True:
                status = await profile_client.status(transfer)
                assert status.state not in _ENDED, status
                said = [line for line in render.status_lines(status) if line.startswith("stalled")]
                if regular and said:
                    print(f"said {time.monotonic() - submitted:.1f} s after submit: {said}")
                    break
                regular = regular or await _runs_as_activity(profile_client, transfer, "prepare")
                assert time.monotonic() < deadline, (
                    f"status never said the hung prepare (regular attempt: {regular}): {status}"
                )
                await asyncio.sleep(0.5)
        finally:
            await profile_client.cancel(transfer)
    # the step, the server it waits for (and its role), since when
    assert status.state == TransferState.scheduled, status
    assert status.phase == "prepare", status
    (line,) = said
    assert "prepare: waiting for " in line and f"{where}" in line, line
    assert "(the destination) to answer since " in line, line
    assert status.idle_since is not None and status.idle_since in line, line
    shown = status.to_json_dict()
    assert shown["stalled_step"] == "prepare", shown
    assert shown["idle_since"] == status.idle_since, shown
    # cp's and watch's progress line says it too
    progress = render.plain_line(status)
    assert "stalled: prepare: waiting for " in progress and where in progress, progress
    # the cancelled run ends once moto answers again (it holds nothing afterwards)
    await asyncio.wait_for(_ended(profile_client, transfer), 150)


async def _ended(client: StaccatoClient, transfer: str) -> None:
    """Wait (unbounded: the caller bounds it) until ``transfer``'s run has closed."""
    handle = client.temporal.get_workflow_handle(transfer)
    while (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
        await asyncio.sleep(0.5)
