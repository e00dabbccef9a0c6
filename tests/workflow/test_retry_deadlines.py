"""Retry deadlines (``--retry-for``) on a time-skipping server of their own: hours of
backoff pass in a second there, unless another test's run left an activity pending on
the server, which stops its clock (under pytest-xdist one such test ran over 120 s).

Each wait for a transfer's end is bounded (:func:`ended_with`): a workflow task the test
server refuses is never retried there, so the run would otherwise hang until the
suite's timeout. The test server refuses a task that cancels an activity which closed
while the task ran ("ACTIVITY_UNKNOWN for scheduledEventId=..."; Temporal's server
accepts it): so no test here lets an activity reach its deadline while the workflow may
cancel it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from staccato.models import StreamInput, StreamResult, TransferOptions, TransferState
from tests.workflow.conftest import Endpoint, Run, failing, time_skipping_env
from tests.workflow.test_transfer_decisions import failure_of

Start = Callable[..., Awaitable[Run]]

#: real seconds a transfer may take to give up here (it takes 1-5 s; a loaded machine
#: made it 30 s)
END_WITHIN_S = 120.0


async def ended_with(run: Run) -> BaseException:
    """The cause the transfer failed with, waited for at most :data:`END_WITHIN_S`
    real seconds; fails naming the last events of the run's history if it has not
    ended by then (the workflow never gives up, the test server's clock stopped or it
    refused a workflow task)."""
    try:
        return await asyncio.wait_for(failure_of(run), END_WITHIN_S)
    except TimeoutError:
        events = [event async for event in run.handle.fetch_history_events()]
        last = ", ".join(
            f"{event.event_id}:{EventType.Name(event.event_type).removeprefix('EVENT_TYPE_')}"
            for event in events[-8:]
        )
        pytest.fail(
            f"the transfer had not ended after {END_WITHIN_S:g} s of real time on the "
            f"time-skipping server: it never gave up, or the server's clock stopped, or "
            f"the server refused a workflow task (see 'Error while completing workflow "
            f"activation' in the output); last events: {last}"
        )


@pytest.fixture(scope="module")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    """This module's own time-skipping server (overrides the session's)."""
    async with time_skipping_env() as environment:
        yield environment


async def test_retries_until_the_retry_for_deadline(transfer: Start) -> None:
    """A stat that keeps failing with a retryable error is retried with backoff
    until ``retry_for_s`` (1 h here, skipped by the test server) has passed without
    progress; then the transfer fails saying it gave up, with the last error."""
    endpoint = Endpoint()
    endpoint.hooks["stat"] = failing(
        "EndpointUnavailable", "connection refused by source.example", retryable=True
    )
    run = await transfer(endpoint, options=TransferOptions(chunk_size=16, retry_for_s=3600))
    error = await ended_with(run)

    assert isinstance(error, ApplicationError)
    assert error.message.startswith("gave up: the stat step kept failing")
    # it gave up before the deadline, once the next attempt would start after it
    assert "the next attempt would start after --retry-for (1 h) without" in error.message
    assert "connection refused by source.example" in error.message
    attempts = len(endpoint.called("stat"))
    # 1 local attempt, then backoff 1, 2, 4, 8, then 10 s each (calls.RETRY): ~364 in
    # an hour (with the earlier 30 s cap: ~120)
    assert 340 <= attempts <= 370, attempts
    assert endpoint.called("prepare") == [] and endpoint.called("cleanup") == []


async def test_stream_retries_until_the_deadline_then_cleans_up(transfer: Start) -> None:
    """A stream that keeps failing with a retryable error: the transfer gives up
    after the deadline, naming the copy step and the last error, and removes the
    temp data of the session it opened.

    Only the first segment's stream fails (the other three complete): were all four
    failing, they would reach the same deadline together and the workflow would
    cancel streams that had just closed, which the test server refuses (see the
    module docstring)."""
    endpoint = Endpoint()
    reset = failing("EndpointUnavailable", "connection reset by source.example", retryable=True)

    async def first_segment_fails(request: StreamInput) -> StreamResult | None:
        if request.segment.index == 0:
            return await reset(request)
        return None  # the endpoint's complete stream

    endpoint.hooks["copy_stream"] = first_segment_fails
    run = await transfer(endpoint, options=TransferOptions(chunk_size=16, retry_for_s=600))
    error = await ended_with(run)

    assert isinstance(error, ApplicationError)
    assert error.message.startswith("gave up: the copy_stream step kept failing")
    assert "connection reset by source.example" in error.message
    assert endpoint.called("publish") == []
    assert len(endpoint.called("cleanup")) == 1
    assert (await run.progress()).state == TransferState.failed
