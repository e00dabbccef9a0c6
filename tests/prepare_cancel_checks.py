"""The scene of tester64 F6, shared by the S3 and SFTP destination tests: a transfer's
``prepare`` hangs on a frozen destination server, its worker is SIGKILLed, the
transfer is cancelled while no worker runs, and a worker is back; the cancel must take
effect while the server is still frozen (the old code waited for the new worker's
prepare attempt, hung, until its start-to-close timeout: 2 min)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from temporalio.api.enums.v1 import PendingActivityState

from staccato.client import StaccatoClient
from staccato.errors import TransferCancelledError
from staccato.workers.worker import WORKFLOW_RUNNER
from staccato.workflows.transfer import TransferWorkflow
from tests.helpers import WorkerProcess, child_pids, pid_alive, replayer_of

#: the local attempt's cut (10 s) and the regular attempt's scheduling, with room
REGULAR_ATTEMPT_WITHIN_S = 90.0
#: the dead worker's attempt's heartbeat timeout (20 s) and the next attempt's
#: scheduling (1 s backoff), with room
NEXT_ATTEMPT_WITHIN_S = 60.0
#: from the new worker's start to the run's end, the server still frozen. A
#: correctness bound, not a speed one: the new code ends the run within the bounded
#: wait it gives an unanswered prepare after a cancel (one heartbeat timeout, 20 s)
#: plus the new worker's start (~15 s seen on a loaded 2-core machine) and a few
#: workflow tasks; the old code waited for the prepare attempt the new worker started,
#: hung on the frozen server, to end: its start-to-close timeout (``SHORT_TIMEOUT``,
#: 120 s after it started), so it cannot end within this
CANCELLED_WITHIN_S = 90.0


async def pending_of(client: StaccatoClient, transfer: str, step: str) -> list[Any]:
    """The pending activities of ``step`` in the run ``transfer`` (none once it ended)."""
    description = await client.temporal.get_workflow_handle(transfer).describe()
    return [
        pending
        for pending in description.raw_description.pending_activities
        if pending.activity_type.name == step
    ]


async def until(check: Callable[[], Awaitable[bool]], within_s: float, what: str) -> None:
    """Poll ``check`` every 0.2 s until it returns True, within ``within_s`` seconds
    (else fail, saying ``what`` did not happen)."""
    deadline = time.monotonic() + within_s
    while not await check():
        assert time.monotonic() < deadline, f"{what} within {within_s} s"
        await asyncio.sleep(0.2)


async def cancelled_while_no_worker(
    client: StaccatoClient,
    transfer: str,
    first: WorkerProcess,
    start_worker: Callable[[], WorkerProcess],
    started: list[WorkerProcess],
) -> None:
    """With ``transfer``'s destination server frozen: wait until ``first`` (the only
    worker of ``client``'s queue) runs ``prepare`` as a regular activity, SIGKILL it
    (and its pool), wait until that attempt timed out by its heartbeat and the next
    one waits, cancel, start a worker (``start_worker``; appended to ``started`` for the
    caller to stop), and return once the run ended cancelled, within
    :data:`CANCELLED_WITHIN_S` of that start. Premise asserted: the new worker started
    the next prepare attempt (a cancel that finds it not started ends it at once).
    Then the run's history is replayed (it must replay with this code)."""
    step_started = PendingActivityState.PENDING_ACTIVITY_STATE_STARTED

    async def regular_attempt_runs() -> bool:
        return any(p.state == step_started for p in await pending_of(client, transfer, "prepare"))

    await until(regular_attempt_runs, REGULAR_ATTEMPT_WITHIN_S, "no prepare attempt ran")
    # the worker dies while its prepare waits for the frozen server
    assert first.process is not None, "the first worker is not running"
    pool = child_pids(first.process.pid)
    first.kill()
    bound = time.monotonic() + 30
    while any(pid_alive(p) for p in pool) and time.monotonic() < bound:
        await asyncio.sleep(0.05)
    assert not any(pid_alive(p) for p in pool), "the first worker's pool lives on"

    # its attempt times out by its heartbeat (20 s) and the next one waits for a worker
    # (the tester's case: the worker was down that long)
    async def next_attempt_waits() -> bool:
        return any(p.attempt >= 2 for p in await pending_of(client, transfer, "prepare"))

    await until(next_attempt_waits, NEXT_ATTEMPT_WITHIN_S, "no next prepare attempt")
    # cancelled while no worker runs, then a worker is back
    assert await client.cancel(transfer) is True
    back_at = time.time()
    started.append(start_worker())
    ended = asyncio.ensure_future(asyncio.wait_for(client.wait(transfer), CANCELLED_WITHIN_S))
    # premise: the new worker runs that attempt (hung on the frozen server) before the
    # cancel reaches it
    seen: list[bool] = []

    async def new_worker_runs_it() -> bool:
        if any(
            p.attempt >= 2 and p.last_started_time.ToNanoseconds() / 1e9 >= back_at
            for p in await pending_of(client, transfer, "prepare")
        ):
            seen.append(True)
        return bool(seen) or ended.done()

    try:
        await until(new_worker_runs_it, CANCELLED_WITHIN_S, "the run went on")
        assert seen, "premise: the new worker never ran the prepare attempt"
    finally:
        if not seen:
            ended.cancel()
    with pytest.raises(TransferCancelledError):
        await ended
    # the run's history (a cancel during prepare, the new worker's attempt never
    # answered) replays with this code: no nondeterminism in that path
    history = await client.temporal.get_workflow_handle(transfer).fetch_history()
    replayer = replayer_of(TransferWorkflow, workflow_runner=WORKFLOW_RUNNER)
    await replayer.replay_workflow(history)
