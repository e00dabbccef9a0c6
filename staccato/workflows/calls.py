"""How the transfer workflow schedules its activities: retry policy, timeouts, the
short steps' local-activity first attempt, write-session keys, cancellation checks."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    FailureError,
    RetryState,
)

from staccato.workflows.failures import reason

# Retries: transient failures (network, 5xx, a killed worker) back off from 1 s to
# 10 s, with no attempt limit: how long is bounded by each activity's
# schedule_to_close_timeout, the transfer's retry budget (options.retry_for_s). The cap
# is what an outage's end costs: an endpoint back after 15-18 s was retried at 31 s
# with a 30 s cap (1, 3, 7, 15, 31), at 25 s with 10 s; a stream's attempt every 10 s
# is still nothing to an endpoint (a throttling answer's Retry-After is honoured
# above it). Replay: the retry policy is a command attribute that the determinism
# check does not compare (as the timeouts, see SHORT_HEARTBEAT_TIMEOUT), and a
# running activity keeps the policy it was scheduled with.
RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=0,
)
SHORT_TIMEOUT = timedelta(minutes=2)
#: heartbeat timeout of the short regular activities (stat, prepare, publish, verify of
#: the size, cleanup, sync_check, release_staged, abort_batch_orphans, the link-tuning
#: recall and record): their bodies heartbeat every 5 s while they run
#: (:func:`staccato.activities.liveness.heartbeating`), so an attempt whose worker died
#: (SIGKILL, a lost machine) is timed out and retried elsewhere within this, not after
#: its start-to-close timeout (:data:`SHORT_TIMEOUT`, 2 min).
#: Replay: no ``workflow.patched`` needed. Temporal's determinism check of a
#: ScheduleActivityTask command against the recorded ActivityTaskScheduled event
#: compares the activity id and type only, not its timeouts (sdk-core,
#: ``activity_state_machine.rs``, ``ScheduleCommandCreated::on_activity_task_scheduled``),
#: and every recorded history under tests/workflow/histories replays with it.
SHORT_HEARTBEAT_TIMEOUT = timedelta(seconds=20)
#: start-to-close of a short step's first, local attempt (and never past the step's
#: retry budget): it runs inside the workflow task, which the worker holds (and the
#: ``progress`` query waits behind) until it returns. A healthy stat or prepare takes
#: milliseconds; one waiting for a hung endpoint (a SIGSTOPped S3 server) held it for
#: the whole :data:`SHORT_TIMEOUT`, 2 min: ``--retry-for 15s`` gave up after ~130 s
#: and ``status`` said no worker answered while the worker ran (tester T1, T12). Past
#: this, the step goes on as a regular activity (retries backed off, its heartbeats and
#: retry reasons in ``status``, the budget its schedule-to-close). Replay: a local
#: activity's timeout is not in the history (its marker records the outcome).
LOCAL_ATTEMPT_TIMEOUT = timedelta(seconds=10)
STREAM_RATE_FLOOR = 1_000_000  # bytes/s assumed when sizing a stream's start-to-close timeout
T = TypeVar("T")


def sealed(source_secret: str | None) -> tuple[str, ...]:
    """The extra argument of ``stat`` for a source with a sealed query (none without)."""
    return (source_secret,) if source_secret is not None else ()


async def short_activity(
    name: str,
    arg: Any,
    result_type: type[T],
    *more_args: Any,
    budget: timedelta | None = None,
    cancellation_type: workflow.ActivityCancellationType = (
        workflow.ActivityCancellationType.TRY_CANCEL
    ),
) -> T:
    """Run a short activity (stat, prepare, a size check) with its retries.

    The first attempt is a local activity: it runs on this worker inside the workflow
    task, saving the ~20 ms server round trip of a regular activity (three of them per
    transfer), for at most :data:`LOCAL_ATTEMPT_TIMEOUT` (and ``budget``). If it fails with a retryable error, the activity runs again as a regular
    activity with :data:`RETRY`, so its retries back off durably and their reasons show
    in ``status`` (pending activities; local activities do not appear there), and a
    worker that dies under one is noticed within :data:`SHORT_HEARTBEAT_TIMEOUT`.
    A non-retryable failure (missing source, permission denied...) fails at once.

    ``cancellation_type`` applies to both: ``WAIT_CANCELLATION_COMPLETED`` makes a
    cancel of the workflow wait for the attempt under way to end, so a step that
    creates something at an endpoint (``prepare``: an S3 multipart upload) hands its
    result back for clean-up instead of leaving it unknown.
    """
    local_timeout = LOCAL_ATTEMPT_TIMEOUT
    if budget is not None:
        local_timeout = max(min(local_timeout, budget), timedelta(seconds=1))
    try:
        return await workflow.execute_local_activity(
            name,
            args=[arg, *more_args],
            result_type=result_type,
            start_to_close_timeout=local_timeout,
            retry_policy=RetryPolicy(maximum_attempts=1),
            cancellation_type=cancellation_type,
        )
    except FailureError as err:
        cause = local_attempt_failure(err)
        if isinstance(cause, CancelledError) or (
            isinstance(cause, ApplicationError) and cause.non_retryable
        ):
            raise
        workflow.logger.info("%s failed on its first attempt (%s); retrying", name, reason(err))
        # The endpoint asked for a pause (HTTP Retry-After): the regular activity's first
        # attempt starts at once, so wait here as its retries would.
        delay = cause.next_retry_delay if isinstance(cause, ApplicationError) else None
        if delay and workflow.patched("retry-after-before-regular-activity"):
            await workflow.sleep(delay)
    return await workflow.execute_activity(
        name,
        args=[arg, *more_args],
        result_type=result_type,
        start_to_close_timeout=SHORT_TIMEOUT,
        schedule_to_close_timeout=budget,
        heartbeat_timeout=SHORT_HEARTBEAT_TIMEOUT,
        retry_policy=RETRY,
        cancellation_type=cancellation_type,
    )


def local_attempt_failure(err: FailureError) -> BaseException:
    """Why a local activity's attempt failed: an :class:`ApplicationError`, a
    :class:`~temporalio.exceptions.TimeoutError` (its start-to-close timeout) or a
    :class:`CancelledError`, whichever way the SDK raised it.

    A live attempt's failure arrives wrapped in an :class:`ActivityError`; the same
    failure replayed from its history marker (a worker that restarted, lost the run
    from its cache, or answers a query by replaying) arrives bare. Both must take the
    same branch: a bare ``TimeoutError`` uncaught made the replay fail the workflow
    where the live run had scheduled the step's regular activity, a nondeterminism
    error that left such a transfer stuck after a worker restart and failed every
    progress query answered by replay (``Fail workflow machine does not handle this
    event: ActivityTaskScheduled``; history in
    tests/workflow/histories/0.30.0/prepare-local-attempt-timed-out.json)."""
    if isinstance(err, ActivityError) and err.cause is not None:
        return err.cause
    return err


def cancelling() -> bool:
    """Whether this task (the workflow's run, when called from it) was asked to cancel."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


#: an activity that ended failed or timed out after its cancel was requested ends as
#: cancelled, as one that acknowledged the cancel does (:func:`ended_by_cancel`)
CANCEL_ENDED_PATCH = "cancel-ended-activity"


def ended_by_cancel(err: BaseException) -> bool:
    """Whether ``err``, an activity's error, means the activity ended because its cancel
    was requested: it acknowledged the cancel (cause ``CancelledError``), or, behind
    :data:`CANCEL_ENDED_PATCH`, it failed or timed out after the request (retry state
    ``CANCEL_REQUESTED``). An activity process that is frozen or starved (SIGSTOP, a
    suspended VM, a machine at load 70) cannot acknowledge a cancel: Temporal ends the
    attempt by its heartbeat timeout and never retries an attempt whose cancel was
    requested (`RetryState.CANCEL_REQUESTED` in temporalio's ``ActivityError``), so
    that timeout is the cancel's outcome, not a fault of the copy.

    The patch is asked only on that path, so a recorded history in which such an
    ending failed its run (or its files) replays as recorded.
    """
    if isinstance(getattr(err, "cause", None), CancelledError):
        return True
    return (
        isinstance(err, ActivityError)
        and err.retry_state == RetryState.CANCEL_REQUESTED
        and workflow.patched(CANCEL_ENDED_PATCH)
    )


def raise_if_cancelling() -> None:
    """Raise if this task was asked to cancel (workflow cancellation): an activity
    started with WAIT_CANCELLATION_COMPLETED may return normally after the request."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()


SESSION_KEY_PATCH = "session-key-whole-run-id"


def session_key(attempt: int = 0) -> str:
    """Unique per run (and per write session within the run, after a lost one).

    The whole run id: Temporal's run ids are time-ordered UUIDs (version 7), whose first
    8 hex digits are the same for runs started within about a minute, so a prefix would
    give two runs of one destination the same temp data and journal. Runs recorded
    before this rule keep their prefix key (``workflow.patched``).
    """
    info = workflow.info()
    run = info.run_id if workflow.patched(SESSION_KEY_PATCH) else info.run_id[:8]
    return run_session_key(info.workflow_id, run, attempt)


def run_session_key(workflow_id: str, run_id: str, attempt: int = 0) -> str:
    """The write session key of the run ``run_id`` of ``workflow_id`` (its ``attempt``-th
    write session, 0 the first): what :func:`session_key` returns in the run, derived
    outside it too (the client names a terminated run's temp file by it:
    :func:`staccato.leftovers.terminated_left`). String operations only."""
    key = f"{workflow_id}-{run_id}"
    return key if attempt == 0 else f"{key}-{attempt}"


def copy_timeout(size: int) -> timedelta:
    """Generous start-to-close bound for moving ``size`` bytes (heartbeats catch stalls)."""
    return timedelta(seconds=600 + size // STREAM_RATE_FLOOR)
