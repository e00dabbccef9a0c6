"""A governor publishes its per-ticket rates in its memo, and the rate board reads them
there (one ``describe``, answered by the server alone) instead of querying it.

A query to a running workflow whose worker stalls is dispatched as a legacy query task
carrying history events newer than the worker's last completed workflow task; sdk-core
sends the commands of their activation later with the next task's, so the live run and
a replay batch events differently and the governor's history stops replaying. Every
worker's rate board asked each governor of its streams once a second: the governors'
main trigger. Here the governor runs on a task queue of the test's own, polled by an
in-process worker that is shut down before the board reads: a query would get no
answer."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from staccato.activities.pacing import slot_key
from staccato.client import StaccatoClient
from staccato.links import governor_id
from staccato.models import GovernorState, Limits, SlotHolder, SlotRunning
from staccato.workers.rates import RateBoard, governor_rates
from staccato.workers.worker import WORKFLOW_RUNNER
from staccato.workflows import governor
from staccato.workflows.governor import (
    RATES_MEMO,
    RATES_QUERY,
    RUNNING_SIGNAL,
    GovernorWorkflow,
)
from tests.helpers import MiB

MAX_RATE = 2 * MiB
TICKET = "holder/run/1"


async def _start_governor(
    temporal_server: Any, prefix: str
) -> tuple[Client, str, str, WorkflowHandle[Any, Any]]:
    """A governor with ``max_rate`` :data:`MAX_RATE` and one holder (:data:`TICKET`) of
    2 streams, started on a task queue of its own (no worker polls it yet): the client,
    the queue, the governor's name and its handle."""
    client = (
        await StaccatoClient.connect(target_host=temporal_server.address, namespace="default")
    ).temporal
    queue = f"{prefix}-{uuid.uuid4().hex[:8]}"
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    state = GovernorState(
        name=name,
        limits=Limits(max_rate=MAX_RATE),
        holders=[SlotHolder(ticket=TICKET, workflow_id="holder", run_id="run", streams=2, token=1)],
        next_token=2,
    )
    handle = await client.start_workflow(
        "GovernorWorkflow", state, id=governor_id(name), task_queue=queue
    )
    return client, queue, name, handle


async def _memo_rates(handle: WorkflowHandle[Any, Any]) -> dict[str, float] | None:
    described = await handle.describe()
    value: dict[str, float] | None = await described.memo_value(
        RATES_MEMO, None, type_hint=dict[str, float]
    )
    return value


async def _until_memo(
    handle: WorkflowHandle[Any, Any], expected: dict[str, float], timeout_s: float = 60
) -> None:
    deadline = time.monotonic() + timeout_s
    seen = None
    while seen != expected:
        assert time.monotonic() < deadline, f"memo rates: {seen}, expected {expected}"
        seen = await _memo_rates(handle)
        await asyncio.sleep(0.1)


async def _upserts(client: Client, workflow_id: str) -> tuple[int, bool]:
    """The memo upserts of ``workflow_id``'s history, and whether a workflow task
    completed after its last signal (the signal was handled)."""
    count = 0
    handled = True
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED:
            count += 1
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            handled = False
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            handled = True
    return count, handled


async def _signal_handled(client: Client, workflow_id: str) -> int:
    """Waits until a workflow task completed after the last signal; returns the memo
    upserts."""
    deadline = time.monotonic() + 60
    while True:
        count, handled = await _upserts(client, workflow_id)
        if handled:
            return count
        assert time.monotonic() < deadline, "the signal was never handled"
        await asyncio.sleep(0.1)


async def test_rate_board_reads_a_governors_rates_with_no_worker_to_answer(
    temporal_server: Any,
) -> None:
    """A governor with ``max_rate`` 2 MiB/s and one holder of 2 streams publishes
    ticket -> 1 MiB/s in its memo once; told that 1 stream still runs, 2 MiB/s (one
    upsert more); told the same again, no upsert. Then, with no worker polling its
    task queue, the rate board still gives the ticket 2 MiB/s. Before, the board
    queried the governor (no answer: the ticket had no rate) and the governor had no
    such memo."""
    client, queue, name, handle = await _start_governor(temporal_server, "rates-memo")
    ticket = TICKET
    try:
        async with Worker(
            client, task_queue=queue, workflows=[GovernorWorkflow], workflow_runner=WORKFLOW_RUNNER
        ):
            await _until_memo(handle, {ticket: MAX_RATE / 2})
            assert await _signal_handled(client, handle.id) == 1
            await handle.signal(RUNNING_SIGNAL, SlotRunning(ticket=ticket, streams=1))
            await _until_memo(handle, {ticket: MAX_RATE})
            assert await _signal_handled(client, handle.id) == 2
            await handle.signal(RUNNING_SIGNAL, SlotRunning(ticket=ticket, streams=1))
            assert await _signal_handled(client, handle.id) == 2, "no upsert for no change"
        # no worker polls the governor's queue now: a query would wait for none
        assert await asyncio.wait_for(governor_rates(client, name), 30) == {ticket: MAX_RATE}
        board = RateBoard(client, dict)
        with board._running(ticket, (name,)):
            rates = await asyncio.wait_for(board.rates(), 30)
        assert rates == {slot_key(ticket, (name,)): MAX_RATE}
    finally:
        await handle.terminate("test over")


@workflow.defn(name="RatesMemoOldGovernor")
class _OldGovernor:
    """Stands for a governor of an older release: answers the ``rates`` query, has no
    memo."""

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)

    @workflow.query(name=RATES_QUERY)
    def rates(self) -> dict[str, float]:
        return {"old/run/1": 123.0}


async def test_a_governor_without_the_memo_is_queried(temporal_server: Any) -> None:
    """A governor whose memo has no rates (an older release's run) is asked the
    ``rates`` query, as before."""
    client = (
        await StaccatoClient.connect(target_host=temporal_server.address, namespace="default")
    ).temporal
    queue = f"rates-memo-old-{uuid.uuid4().hex[:8]}"
    name = f"rates-memo-old-{uuid.uuid4().hex[:8]}"
    async with Worker(
        client,
        task_queue=queue,
        workflows=[_OldGovernor],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        handle = await client.start_workflow(
            _OldGovernor.run, id=governor_id(name), task_queue=queue
        )
        try:
            assert await _memo_rates(handle) is None
            got = await asyncio.wait_for(governor_rates(client, name), 30)
            assert got == {"old/run/1": 123.0}
        finally:
            await handle.terminate("test over")


async def test_continue_as_new_carries_the_rates(
    temporal_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A governor that continues as new starts its next run with the rates in its
    memo (passed to continue-as-new: the server does not carry it): the rate board reads them at once, and the
    new run upserts nothing while they do not change."""
    monkeypatch.setattr(governor, "MAX_HISTORY", 5)  # the first signal's task
    client, queue, _, handle = await _start_governor(temporal_server, "rates-memo-can")
    ticket = TICKET
    try:
        async with Worker(
            client,
            task_queue=queue,
            workflows=[GovernorWorkflow],
            workflow_runner=UnsandboxedWorkflowRunner(),  # sees MAX_HISTORY patched
        ):
            await _until_memo(handle, {ticket: MAX_RATE / 2})
            first = (await handle.describe()).run_id
            await handle.signal(RUNNING_SIGNAL, SlotRunning(ticket=ticket, streams=2))
            deadline = time.monotonic() + 60
            while (described := await handle.describe()).run_id == first:
                assert time.monotonic() < deadline, "the governor never continued as new"
                await asyncio.sleep(0.1)
            rates = await described.memo_value(RATES_MEMO, None, type_hint=dict[str, float])
            assert rates == {ticket: MAX_RATE / 2}
            assert await _signal_handled(client, handle.id) == 0  # its first task ran
    finally:
        await client.get_workflow_handle(handle.id).terminate("test over")
