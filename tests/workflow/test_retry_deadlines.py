"""Retry deadlines (``--retry-for``) on a time-skipping server of their own: hours of
backoff pass in a second there, unless another test's run left an activity pending on
the server, which stops its clock (under pytest-xdist one such test ran over 120 s)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from staccato.models import TransferOptions, TransferState
from tests.workflow.conftest import Endpoint, Run, failing, time_skipping_env
from tests.workflow.test_transfer_decisions import failure_of

Start = Callable[..., Awaitable[Run]]


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
    error = await failure_of(run)

    assert isinstance(error, ApplicationError)
    assert error.message.startswith("gave up: the stat step kept failing")
    assert "--retry-for 1 h without progress" in error.message
    assert "connection refused by source.example" in error.message
    attempts = len(endpoint.called("stat"))
    # 1 local attempt, then backoff 1, 2, 4, 8, 16, then 30 s each: ~120 in an hour
    assert 100 <= attempts <= 125, attempts
    assert endpoint.called("prepare") == [] and endpoint.called("cleanup") == []


async def test_stream_retries_until_the_deadline_then_cleans_up(transfer: Start) -> None:
    """A stream that keeps failing with a retryable error: the transfer gives up
    after the deadline, naming the copy step and the last error, and removes the
    temp data of the session it opened."""
    endpoint = Endpoint()
    endpoint.hooks["copy_stream"] = failing(
        "EndpointUnavailable", "connection reset by source.example", retryable=True
    )
    run = await transfer(endpoint, options=TransferOptions(chunk_size=16, retry_for_s=600))
    error = await failure_of(run)

    assert isinstance(error, ApplicationError)
    assert error.message.startswith("gave up: the copy_stream step kept failing")
    assert "connection reset by source.example" in error.message
    assert endpoint.called("publish") == []
    assert len(endpoint.called("cleanup")) == 1
    assert (await run.progress()).state == TransferState.failed
