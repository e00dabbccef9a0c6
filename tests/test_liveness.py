"""``heartbeating`` (staccato/activities/liveness.py) in real activities: a Temporal
worker in this process, on the session's dev server, running sync activities in a
:class:`~staccato.workers.threaded_pool.ThreadedProcessPool` (spawned processes x
threads, heartbeats through a multiprocessing manager, as ``staccato worker`` does)
and async ones in its event loop. While a decorated activity blocks, the server's
``last_heartbeat_time`` of it advances and it outlives its heartbeat timeout (twice
over); it returns (or fails with) what its body did; a local activity gets no
heartbeat thread."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
import uuid
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from multiprocessing.managers import SyncManager
from pathlib import Path

import pytest
from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.worker import SharedStateManager, UnsandboxedWorkflowRunner, Worker

from staccato.activities.liveness import THREAD_PREFIX, heartbeating
from staccato.workers.threaded_pool import ThreadedProcessPool
from tests.servers.temporal_server import TemporalDevServer

#: the test activities' heartbeat timeout: beats every 0.75 s (a quarter of it)
HEARTBEAT_TIMEOUT = timedelta(seconds=3)
#: how many heartbeat timeouts a blocked activity must outlive, by the server's clock
#: (with at least 3 heartbeats seen advancing): without heartbeats its one attempt fails
#: at the first timeout; 4 (12 s in each of three tests) only waited longer
OUTLIVE = 2
#: seconds a blocked activity waits for its release file at most
BLOCK_BOUND_S = 120.0


def _heartbeat_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX))


def _warm_up() -> int:
    """Run in a pool process: it has imported this module (as ``staccato worker``'s
    processes import the activities before the first one runs: a cold import under
    load can take longer than the heartbeat timeout)."""
    return multiprocessing.current_process().pid or 0


def _wait_for(release: str) -> None:
    deadline = time.monotonic() + BLOCK_BOUND_S
    while not Path(release).exists():
        if time.monotonic() > deadline:
            raise ApplicationError(f"{release} never appeared", non_retryable=True)
        time.sleep(0.05)


@activity.defn(name="liveness_block")
@heartbeating
def block(release: str) -> list[str]:
    """Wait until the file ``release`` exists; return the heartbeat threads of this
    process seen when the body began (this activity's, in a regular attempt)."""
    threads = _heartbeat_threads()
    _wait_for(release)
    return threads


@activity.defn(name="liveness_fail")
@heartbeating
def fail(release: str) -> None:
    """Wait until ``release`` exists, then fail (non-retryable ``Boom``)."""
    _wait_for(release)
    raise ApplicationError("the body's own failure", type="Boom", non_retryable=True)


@activity.defn(name="liveness_block_async")
@heartbeating
async def block_async(release: str) -> str:
    """``block`` for an async activity (the control queue's kind)."""
    deadline = time.monotonic() + BLOCK_BOUND_S
    while not Path(release).exists():
        assert time.monotonic() < deadline, f"{release} never appeared"
        await asyncio.sleep(0.05)
    return "async done"


@dataclass
class Run:
    activity: str
    release: str
    local: bool = False


@workflow.defn(name="LivenessWorkflow")
class LivenessWorkflow:
    @workflow.run
    async def run(self, run: Run) -> object:
        if run.local:
            return await workflow.execute_local_activity(
                run.activity,
                run.release,
                start_to_close_timeout=timedelta(minutes=3),
                retry_policy=RetryPolicy(maximum_attempts=1),
            )
        # one attempt: a heartbeat timeout would fail the run
        return await workflow.execute_activity(
            run.activity,
            run.release,
            start_to_close_timeout=timedelta(minutes=3),
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=RetryPolicy(maximum_attempts=1),
        )


@dataclass
class Harness:
    client: Client
    task_queue: str
    directory: Path
    #: every release file handed out (all created when the test ends)
    releases: list[Path] = field(default_factory=list)

    async def start(self, name: str, *, local: bool = False) -> tuple[str, Path]:
        """Start ``name`` in a workflow; returns the workflow id and its release file."""
        release = self.directory / f"release-{uuid.uuid4().hex[:8]}"
        self.releases.append(release)
        workflow_id = f"liveness-{uuid.uuid4().hex[:12]}"
        await self.client.start_workflow(
            LivenessWorkflow.run,
            Run(activity=name, release=str(release), local=local),
            id=workflow_id,
            task_queue=self.task_queue,
        )
        return workflow_id, release

    async def outlives_its_heartbeat_timeout(self, workflow_id: str) -> None:
        """Wait until the run's activity has run ``OUTLIVE`` heartbeat timeouts by the
        server's clock, its last heartbeat advancing meanwhile, in its first attempt.

        Raises:
            AssertionError: naming what was seen instead (no heartbeat, a second
                attempt, the activity gone) after ``BLOCK_BOUND_S`` seconds.
        """
        handle = self.client.get_workflow_handle(workflow_id)
        beats: list[float] = []
        deadline = time.monotonic() + BLOCK_BOUND_S
        while True:
            assert time.monotonic() < deadline, (
                f"after {BLOCK_BOUND_S:g} s: heartbeats seen at {beats} (server times)"
            )
            description = await handle.describe()
            pending = description.raw_description.pending_activities
            if not pending:
                if description.status != WorkflowExecutionStatus.RUNNING:
                    try:
                        await handle.result()
                    except WorkflowFailureError as err:
                        raise AssertionError(f"the run ended: {err.cause}") from err
                    raise AssertionError("the run ended before its activity was released")
                await asyncio.sleep(0.2)  # not scheduled yet
                continue
            (act,) = pending
            assert act.attempt == 1, f"the activity was retried: {act.last_failure}"
            if act.HasField("last_heartbeat_time"):
                beat = act.last_heartbeat_time.ToDatetime().timestamp()
                if not beats or beat > beats[-1]:
                    beats.append(beat)
                ran = beat - act.last_started_time.ToDatetime().timestamp()
                if ran >= OUTLIVE * HEARTBEAT_TIMEOUT.total_seconds() and len(beats) >= 3:
                    return
            await asyncio.sleep(0.2)


@pytest.fixture
async def harness(temporal_server: TemporalDevServer, tmp_path: Path) -> AsyncIterator[Harness]:
    """A worker of this process: the test activities in a 2-process x 4-thread pool with
    a spawned manager for heartbeats, the async one in its event loop."""
    client = await Client.connect(temporal_server.address, namespace="default")
    task_queue = f"liveness-{uuid.uuid4().hex[:12]}"
    context = multiprocessing.get_context("spawn")
    manager = SyncManager(ctx=context)
    manager.start()
    pool = ThreadedProcessPool(2, 4, mp_context=context)
    try:
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(pool, _warm_up) for _ in range(4)))
        with warnings.catch_warnings():
            # it compares with the processes only; each runs 4 activities
            warnings.filterwarnings("ignore", message="Worker max_concurrent_activities")
            worker = Worker(
                client,
                task_queue=task_queue,
                workflows=[LivenessWorkflow],
                workflow_runner=UnsandboxedWorkflowRunner(),
                activities=[block, fail, block_async],
                activity_executor=pool,
                shared_state_manager=SharedStateManager.create_from_multiprocessing(manager),
                max_concurrent_activities=8,
                max_heartbeat_throttle_interval=timedelta(seconds=1),
                default_heartbeat_throttle_interval=timedelta(seconds=1),
                graceful_shutdown_timeout=timedelta(0),
            )
        harness = Harness(client, task_queue, tmp_path)
        async with worker:
            try:
                yield harness
            finally:
                for release in harness.releases:  # no activity stays blocked
                    release.touch()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        manager.shutdown()


async def test_a_blocked_sync_activity_heartbeats_and_returns_its_result(
    harness: Harness,
) -> None:
    workflow_id, release = await harness.start("liveness_block")
    await harness.outlives_its_heartbeat_timeout(workflow_id)
    release.touch()
    handle = harness.client.get_workflow_handle(workflow_id)
    result = await asyncio.wait_for(handle.result(), 60)
    assert result == [f"{THREAD_PREFIX}liveness_block"]
    # one attempt, never timed out
    history = await handle.fetch_history()
    (started,) = [
        e.activity_task_started_event_attributes
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    ]
    assert started.attempt == 1


async def test_a_body_failure_is_the_activity_failure(harness: Harness) -> None:
    workflow_id, release = await harness.start("liveness_fail")
    await harness.outlives_its_heartbeat_timeout(workflow_id)
    release.touch()
    handle = harness.client.get_workflow_handle(workflow_id)
    with pytest.raises(WorkflowFailureError) as failed:
        await asyncio.wait_for(handle.result(), 60)
    cause = failed.value.cause
    assert isinstance(cause, ActivityError), cause
    assert isinstance(cause.cause, ApplicationError), cause.cause
    assert cause.cause.type == "Boom" and cause.cause.message == "the body's own failure"


async def test_an_async_activity_heartbeats(harness: Harness) -> None:
    workflow_id, release = await harness.start("liveness_block_async")
    await harness.outlives_its_heartbeat_timeout(workflow_id)
    release.touch()
    result = await asyncio.wait_for(harness.client.get_workflow_handle(workflow_id).result(), 60)
    assert result == "async done"


async def test_a_local_activity_gets_no_heartbeat_thread(harness: Harness) -> None:
    workflow_id, release = await harness.start("liveness_block", local=True)
    release.touch()
    result = await asyncio.wait_for(harness.client.get_workflow_handle(workflow_id).result(), 60)
    assert result == []
