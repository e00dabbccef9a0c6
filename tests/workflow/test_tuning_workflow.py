"""``TransferWorkflow`` with the per-link optimizer (``options.tuning``): what it asks
the control queue, how it cuts and runs the segments, what it remembers. The
optimizer's arithmetic is tested on throughput series in tests/test_tuning.py; here
the decisions are driven by errors (a failed attempt is no timing)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from staccato import checksums, tuning
from staccato.ids import transfer_id
from staccato.models import (
    ObjectInfo,
    StartLookup,
    StartLookupInput,
    StreamInput,
    StreamResult,
    TransferOptions,
    TransferRequest,
    TransferResult,
    TuningRecall,
)
from staccato.tuning import LinkMemory
from staccato.workflows.front import control_queue
from staccato.workflows.slots import FIND_GOVERNORS
from staccato.workflows.transfer import TransferWorkflow

from .conftest import DESTINATION, SOURCE, WAIT_S, Endpoint, failing, segment_checksum

MiB = 1024 * 1024
SIZE = 1024 * MiB  # the fake activities move no bytes: only the plan's arithmetic
TUNED = TransferOptions(tuning=True)


class Control:
    """The control queue's activities: no governor, and a link memory kept here."""

    def __init__(self, memory: LinkMemory | None = None) -> None:
        self.memory = memory
        self.recalled: list[str] = []
        self.recorded: list[LinkMemory] = []

    @activity.defn(name=FIND_GOVERNORS)
    async def find_governors(self, names: list[str]) -> list[str]:
        return []

    @activity.defn(name="recall_link_tuning")
    async def recall(self, link: str) -> TuningRecall:
        self.recalled.append(link)
        return TuningRecall(
            memory=None if self.memory is None else self.memory.model_dump(mode="json"),
            memory_budget=tuning.DEFAULT_MEMORY_BUDGET,
        )

    @activity.defn(name="look_up_start")
    async def look_up_start(self, request: StartLookupInput) -> StartLookup:
        recalled = None if request.link is None else await self.recall(request.link)
        return StartLookup(recall=recalled, governors=[])

    @activity.defn(name="record_link_tuning")
    async def record(self, memory: LinkMemory) -> None:
        self.recorded.append(LinkMemory.model_validate(memory))


Start = Callable[[Endpoint, Control, TransferOptions], Awaitable[WorkflowHandle[Any, Any]]]


@pytest.fixture
async def start(env: WorkflowEnvironment) -> AsyncIterator[Start]:
    workers: list[Worker] = []
    runs: list[asyncio.Task[None]] = []
    handles: list[WorkflowHandle[Any, Any]] = []

    async def go(
        endpoint: Endpoint, control: Control, options: TransferOptions
    ) -> WorkflowHandle[Any, Any]:
        queue = f"wf-{uuid.uuid4().hex[:12]}"
        worker = Worker(
            env.client,
            task_queue=queue,
            workflows=[TransferWorkflow],
            # the start lookups run first as a local activity on the workflow's worker
            activities=[*endpoint.activities(), control.look_up_start],
        )
        control_worker = Worker(
            env.client,
            task_queue=control_queue(queue),
            activities=[
                control.find_governors,
                control.recall,
                control.record,
                control.look_up_start,
            ],
        )
        workers.extend([worker, control_worker])
        runs.extend([asyncio.create_task(w.run()) for w in (worker, control_worker)])
        handle = await env.client.start_workflow(
            "TransferWorkflow",
            TransferRequest(source=SOURCE, destination=DESTINATION, options=options),
            id=transfer_id(DESTINATION),
            task_queue=queue,
            result_type=TransferResult,
            id_conflict_policy=WorkflowIDConflictPolicy.TERMINATE_EXISTING,
        )
        handles.append(handle)
        return handle

    yield go
    for handle in handles:
        try:
            # this run only: a terminate by id alone would end the newest run of the
            # id, which may be the next test's run of the same destination
            await env.client.get_workflow_handle(handle.id, run_id=handle.result_run_id).terminate(
                "test over"
            )
        except RPCError:
            pass
    for worker in workers:
        await asyncio.wait_for(worker.shutdown(), WAIT_S)
    await asyncio.gather(*runs, return_exceptions=True)


async def finished(handle: WorkflowHandle[Any, Any]) -> TransferResult:
    """The run's result once it closed, waited for by polling its description: asking
    for the result would let the time-skipping server skip time while the test's
    activities run in real time (timing them out)."""
    deadline = asyncio.get_running_loop().time() + 60
    while (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
        assert asyncio.get_running_loop().time() < deadline, "the transfer did not end in 60 s"
        await asyncio.sleep(0.05)
    result: TransferResult = await handle.result()
    return result


async def first_wave(handle: WorkflowHandle[Any, Any]) -> int:
    """The ``copy_stream`` activities the workflow scheduled before the first of them
    ended, read from its history: the streams its plan ran at once at the start (not
    sampled in time: a busy machine may start them slowly, the plan is what counts)."""
    streams: set[int] = set()
    async for e in handle.fetch_history_events():
        if e.activity_task_scheduled_event_attributes.activity_type.name == "copy_stream":
            streams.add(e.event_id)
        elif (
            e.activity_task_completed_event_attributes.scheduled_event_id in streams
            or e.activity_task_failed_event_attributes.scheduled_event_id in streams
        ):
            break
    return len(streams)


def refusing_past(
    endpoint: Endpoint, limit: int, *, lost_worker: bool = False
) -> Callable[[StreamInput], Awaitable[Any]]:
    """A ``copy_stream`` of a server that fails connections past ``limit`` at once:
    each stream waits (at most 0.3 s) for more to start, and reports that it needed
    three attempts (two failed with the endpoint's error) when more than ``limit``
    ran beside it. ``lost_worker``: the two failed attempts were lost with a worker
    (heartbeat timeout) instead, not the endpoint's errors."""

    async def hook(request: StreamInput) -> StreamResult:
        deadline = asyncio.get_running_loop().time() + 0.3
        crowded = False
        while asyncio.get_running_loop().time() < deadline:
            crowded = crowded or endpoint.running_streams > limit
            await asyncio.sleep(0.01)
        segment = request.segment
        return StreamResult(
            segment=segment.index,
            complete=True,
            next_chunk=segment.end_chunk,
            bytes_done=segment.length,
            checksum=segment_checksum(segment.offset, segment.length),
            bytes_read=segment.length,
            verified=request.read_back,
            attempt=3 if crowded else 1,
            endpoint_errors=2 if crowded and not lost_worker else 0,
        )

    return hook


async def test_tuned_transfer_backs_off_from_failing_streams_and_remembers(
    start: Start,
) -> None:
    endpoint = Endpoint(info=ObjectInfo(size=SIZE, version="v1"))
    endpoint.hooks["copy_stream"] = refusing_past(endpoint, 4)
    control = Control()
    handle = await start(endpoint, control, TUNED)
    result: TransferResult = await finished(handle)
    assert control.recalled == ["file://,file://"]
    streams = endpoint.called("copy_stream")
    # many segments (the streams change between them), in 16 MiB chunks
    assert len(streams) == tuning.segments_for(SIZE, 16 * MiB, tuning.MAX_STREAMS) == 32
    assert {s.session.chunk_size for s in streams} == {16 * MiB}
    (memory,) = control.recorded
    # it probed past 4, met the failures, and remembers a setting below them
    # the sweep starts at 8: the failures are met there or at its first step up (12)
    assert memory.ceiling is not None and 4 < memory.ceiling <= 12
    assert memory.streams < memory.ceiling
    assert memory.link == "file://,file://" and memory.transfers == 1
    assert result.tuning is not None and result.tuning.decisions >= 3
    assert result.bytes == SIZE


async def test_attempts_lost_with_a_worker_are_not_link_errors(start: Start) -> None:
    endpoint = Endpoint(info=ObjectInfo(size=SIZE, version="v1"))
    endpoint.hooks["copy_stream"] = refusing_past(endpoint, 4, lost_worker=True)
    control = Control()
    handle = await start(endpoint, control, TUNED)
    result: TransferResult = await finished(handle)
    (memory,) = control.recorded
    assert memory.ceiling is None, memory  # no back-off, nothing learned against the link
    assert result.tuning is not None
    assert result.bytes == SIZE


async def test_user_values_are_not_tuned(start: Start) -> None:
    endpoint = Endpoint(info=ObjectInfo(size=SIZE, version="v1"))
    control = Control(LinkMemory(link="file://,file://", streams=12))
    handle = await start(endpoint, control, TransferOptions(streams=2, chunk_size=8 * MiB))
    result: TransferResult = await finished(handle)
    assert control.recalled == [] and control.recorded == []
    assert len(endpoint.called("copy_stream")) == 2
    assert result.tuning is None and result.streams == 2


async def test_warm_start_runs_the_remembered_streams(start: Start) -> None:
    endpoint = Endpoint(info=ObjectInfo(size=SIZE, version="v1"))
    endpoint.hooks["copy_stream"] = refusing_past(endpoint, 16)
    control = Control(LinkMemory(link="file://,file://", streams=2, chunk_size=32 * MiB))
    handle = await start(endpoint, control, TUNED)
    result: TransferResult = await finished(handle)
    streams = endpoint.called("copy_stream")
    assert {s.session.chunk_size for s in streams} == {32 * MiB}
    # the first segments run two at a time (re-probes add one stream at a time)
    assert await first_wave(handle) == 2
    assert result.tuning is not None and result.tuning.chunk_size == 32 * MiB
    assert control.recorded[0].transfers == 1


async def test_a_warm_fast_link_copies_in_one_wave_of_long_segments(start: Start) -> None:
    """A link that remembers 4 streams at 800 MiB/s (a stream: 400 MiB in 2 s) cuts a
    1 GiB object into 4 segments, one per stream, not 32 of 32 MiB (patch
    ``tune-segment-seconds``); a link remembered slow keeps the 32."""
    fast = LinkMemory(link="file://,file://", streams=4, chunk_size=16 * MiB, rate=800 * MiB)
    for memory, segments in ((fast, 4), (fast.model_copy(update={"rate": 40 * MiB}), 32)):
        endpoint = Endpoint(info=ObjectInfo(size=SIZE, version="v1"))
        control = Control(memory)
        result: TransferResult = await finished(await start(endpoint, control, TUNED))
        streams = endpoint.called("copy_stream")
        assert len(streams) == segments, (memory.rate, [s.segment for s in streams])
        assert sum(s.segment.length for s in streams) == SIZE == result.bytes


async def test_small_objects_are_not_tuned(start: Start) -> None:
    endpoint = Endpoint(info=ObjectInfo(size=tuning.MIN_TUNED_BYTES - 1, version="v1"))
    control = Control()
    handle = await start(endpoint, control, TUNED)
    result: TransferResult = await finished(handle)
    assert control.recalled == [] and result.tuning is None


async def test_a_cold_link_starts_at_eight_streams_and_sweeps(start: Start) -> None:
    """A new run (patch ``tune-sweep``) starts a link it knows nothing of at 8 streams,
    and records the sweep's state with what the link learned."""
    endpoint = Endpoint(info=ObjectInfo(size=SIZE, version="v1"))
    endpoint.hooks["copy_stream"] = refusing_past(endpoint, 16)
    control = Control()
    handle = await start(endpoint, control, TUNED)
    result: TransferResult = await finished(handle)
    # the first segments run 8 at a time (the sweep's start; before it, 4)
    assert await first_wave(handle) == 8
    patches = [
        json.loads(e.marker_recorded_event_attributes.details["patch-data"].payloads[0].data)["id"]
        async for e in handle.fetch_history_events()
        if e.marker_recorded_event_attributes.marker_name == "core_patch"
    ]
    assert "tune-sweep" in patches, patches
    # and the knee's search (patch tune-knee: decisions differ, so the segments' order),
    # its windows rated by the link's bytes per second of workflow time (tune-wall-rate)
    assert {"tune-knee", "tune-wall-rate"} <= set(patches), patches
    assert result.tuning is not None
    (memory,) = control.recorded
    assert memory.transfers == 1 and result.bytes == SIZE


async def test_recall_caps_streams_at_the_workers_capacity_not_its_processes(
    env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker runs processes x threads streams at once: the optimizer may use them
    (capped at 4, the processes of a default 2-core worker, it never passed 4
    streams), and its budget is no more than the worker's chunk buffers allow."""
    from temporalio.testing import ActivityEnvironment

    from staccato.activities.link_tuning import LinkTuningActivities

    monkeypatch.setenv("STACCATO_WORKER_PROCESSES", "4")
    monkeypatch.setenv("STACCATO_WORKER_THREADS", "8")
    monkeypatch.setenv("STACCATO_WORKER_MEMORY_BYTES", str(1024 * MiB))
    link = f"http://h-{uuid.uuid4().hex[:8]}:80,file://"
    recall = await ActivityEnvironment().run(
        LinkTuningActivities(env.client).recall_link_tuning, link
    )
    assert recall.memory is None
    assert recall.worker_processes == 4 * 8
    # 1 GiB less 6 processes' own 160 MiB: 64 MiB of chunk buffers (16 MiB a process),
    # counted twice (a stream's chunk and its read-back), below the 2 GiB tuning setting
    assert recall.memory_budget == tuning.BUFFERS_PER_STREAM * 64 * MiB
    told = await ActivityEnvironment().run(
        LinkTuningActivities(
            env.client, streams_at_once=18 * 64, buffer_bytes=100 * MiB
        ).recall_link_tuning,
        link,
    )
    assert told.worker_processes == 18 * 64
    assert told.memory_budget == 200 * MiB


async def test_recall_of_a_local_copy_says_tuning_is_off(env: WorkflowEnvironment) -> None:
    """A local copy (``file://,file://``) is not tuned: its recall says ``enabled``
    False, so the workflow runs the request's fixed defaults (4 x 16 MiB) and records
    nothing (before: enabled, and the optimizer tuned on page-cache rates); any other
    link is tuned as before."""
    from temporalio.testing import ActivityEnvironment

    from staccato.activities.link_tuning import LinkTuningActivities

    activities = LinkTuningActivities(env.client)
    local = await ActivityEnvironment().run(activities.recall_link_tuning, "file://,file://")
    assert local.enabled is False and local.memory is None, local
    link = f"http://h-{uuid.uuid4().hex[:8]}:80,file://"
    remote = await ActivityEnvironment().run(activities.recall_link_tuning, link)
    assert remote.enabled is True, remote


async def test_a_cpu_bound_link_gets_no_more_streams(start: Start) -> None:
    """Segments whose worker measured its CPUs 99 % busy (``StreamResult.cpu_busy``,
    patch ``tune-cpu-busy``): the cold sweep never runs more than its 8 streams, and a
    reason says why. Before, the same streams (each one as fast alone as beside the
    others) climbed to 12 and 16."""
    endpoint = Endpoint(info=ObjectInfo(size=SIZE, version="v1"))
    plain = refusing_past(endpoint, 16)

    async def busy(request: StreamInput) -> StreamResult:
        result = await plain(request)
        return result.model_copy(update={"cpu_busy": 0.99})

    endpoint.hooks["copy_stream"] = busy
    control = Control()
    seen: list[int] = []

    async def watch() -> None:
        while True:
            seen.append(endpoint.running_streams)
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    try:
        handle = await start(endpoint, control, TUNED)
        result: TransferResult = await finished(handle)
    finally:
        watcher.cancel()
    assert result.bytes == SIZE and result.tuning is not None
    assert max(seen) <= tuning.SWEEP_STREAMS, seen
    (memory,) = control.recorded
    assert memory.streams <= tuning.SWEEP_STREAMS, memory
    assert any("CPU 99 % busy: more streams cannot help" in r for r in memory.reasons), memory
    patches = [
        json.loads(e.marker_recorded_event_attributes.details["patch-data"].payloads[0].data)["id"]
        async for e in handle.fetch_history_events()
        if e.marker_recorded_event_attributes.marker_name == "core_patch"
    ]
    assert {"tune-cpu-busy", "tune-no-late-probe"} <= set(patches), patches


def _read_back(endpoint: Endpoint) -> list[Any]:
    """The ``verify`` calls before publish (of the temp data)."""
    return [v for v in endpoint.called("verify") if v.url == endpoint.session_url]


def _expected(part: Any) -> str:
    """The checksum a read-back part must find: its segments' (as the fake streams
    computed them), combined in order."""
    pieces = []
    for first, end in part.segments:
        offset = first * part.chunk_size
        length = min(part.size, end * part.chunk_size) - offset
        pieces.append((segment_checksum(offset, length), length))
    return checksums.combine(part.checksum.value, pieces)


async def test_a_tuned_copy_reads_back_in_one_part_per_lane(start: Start) -> None:
    """Many segments (32), streams not verified on write: the read-back before
    publish runs at most one ``verify`` per stream lane, each over a run of
    consecutive segments with their combined checksum, together every segment once
    (patch verify-grouped-parts; before, one ``verify`` per segment: 32)."""
    endpoint = Endpoint(info=ObjectInfo(size=SIZE, version="v1"), verified_on_write=False)
    handle = await start(endpoint, Control(), TUNED)
    result: TransferResult = await finished(handle)
    assert result.bytes == SIZE
    streams = endpoint.called("copy_stream")
    assert len(streams) == 32
    parts = _read_back(endpoint)
    assert 1 <= len(parts) <= tuning.MAX_STREAMS < len(streams)
    covered = sorted(first for part in parts for first, _ in part.segments)
    assert covered == sorted(s.segment.first_chunk for s in streams)
    for part in parts:
        assert not part.whole_object
        assert part.expected == _expected(part)
        ends = [end for _, end in part.segments]
        assert [first for first, _ in part.segments[1:]] == ends[:-1]  # consecutive


async def test_a_mismatched_read_back_part_copies_its_segments_again(start: Start) -> None:
    """The first read-back part mismatches once: its segments (and only they) are
    copied again, then the whole temp data is read back again and published."""
    endpoint = Endpoint(info=ObjectInfo(size=SIZE, version="v1"), verified_on_write=False)
    mismatch = failing("ChecksumMismatch", "the temp file does not match")
    first_part: list[Any] = []

    async def hook(request: Any) -> Any:
        if request.url == endpoint.session_url and not first_part:
            first_part.append(request)
            return await mismatch(request)
        return None

    endpoint.hooks["verify"] = hook
    handle = await start(endpoint, Control(), TUNED)
    result: TransferResult = await finished(handle)
    assert result.bytes == SIZE
    (bad,) = first_part
    assert len(bad.segments) > 1
    streams = endpoint.called("copy_stream")
    again = [s.segment.first_chunk for s in streams[32:]]
    assert sorted(again) == [first for first, _ in bad.segments]
    # then the whole temp data read back once more, and published
    last_copy = max(i for i, (name, _) in enumerate(endpoint.calls) if name == "copy_stream")
    second = [
        arg
        for name, arg in endpoint.calls[last_copy:]
        if name == "verify" and arg.url == endpoint.session_url
    ]
    covered = sorted(first for part in second for first, _ in part.segments)
    assert covered == sorted(s.segment.first_chunk for s in streams[:32])
    assert endpoint.names()[-2:] == ["publish", "verify"]
