"""Front runs: a ``TransferWorkflow`` started under any id other than its
destination's transfer id (a Schedule's timestamped run, ``temporal workflow start
--workflow-id manual-1``, an SDK start with its own id, ``submit --if-busy wait``).

The workflow id of the canonical run (:func:`staccato.ids.transfer_id`) is the
destination's lock; a front run never writes. It runs ONE activity,
``run_as_destination_transfer`` (:mod:`staccato.activities.front`), on the control
task queue ``<task queue>-control``, which starts the destination's transfer as
``staccato submit`` would, or attaches to it when the identical request is running;
when a different transfer holds the destination it fails with "destination busy"
(``options.if_busy = fail``) or waits for it to end (``wait``). The front reports
the canonical run's outcome as its own: completed (its result), failed (its reason)
or cancelled. Cancelling the front cancels the canonical run it drives, and still
reports what that run did (one that had begun publishing completes: completed). When
someone else cancels the canonical run (``staccato cancel DEST``), the front ends
FAILED in Temporal (the SDK ends a workflow Canceled only when a cancel was asked of
it) but records state ``cancelled``, which every view shows (:mod:`staccato.run_states`).

History: a front run adds 2 markers (patches), at most 2 upserts (search attributes,
memo, only when the start lacked them), the activity's 3 events, at most 2
``front_state`` signals (queued, running: 5 events each with their upsert) and the
state upsert at the end: about 25 events per front run, however long it waits or
copies. A front cancelled while no worker ran its activity adds the patch marker and
``cancel_front_transfer``'s 3 events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, RetryState

with workflow.unsafe.imports_passed_through():
    from staccato.ids import transfer_id
    from staccato.models import (
        FrontInput,
        Progress,
        TransferRequest,
        TransferResult,
        TransferState,
    )

from staccato.workflows import search_attributes as sa
from staccato.workflows.failures import DESTINATION_CANCELLED, reason, reason_type

#: the activity a front run runs (served by the control worker)
RUN_AS_DESTINATION_TRANSFER = "run_as_destination_transfer"
#: the activity that passes a front's cancel on when the attempt it was asked of
#: had died (:data:`CANCEL_UNDELIVERED_PATCH`)
CANCEL_FRONT_TRANSFER = "cancel_front_transfer"
#: a front cancelled while its activity's attempt had no live worker (killed, or
#: stopped with the service) ends cancelled: that attempt times out instead of
#: cancelling, and the server does not retry an activity whose cancel was asked
#: (retry state CANCEL_REQUESTED), so the front ran ``cancel_front_transfer`` to
#: cancel the destination's transfer it had started, if any. Before: the front ended
#: failed ("activity Heartbeat timeout") and a transfer it drove went on writing.
CANCEL_UNDELIVERED_PATCH = "front-cancel-undelivered"
#: suffix of the control task queue, served in every ``staccato worker`` process
CONTROL_QUEUE_SUFFIX = "-control"
#: the activity may wait or copy for long: its liveness is its heartbeat
_FRONT_TIMEOUT = timedelta(days=3650)
_DEFAULT_HEARTBEAT_TIMEOUT = timedelta(seconds=20)
# an interrupted activity (worker gone) is retried; failures of the transfer are final
_FRONT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
)


def control_queue(task_queue: str) -> str:
    """The control task queue of the workers polling ``task_queue``."""
    return task_queue + CONTROL_QUEUE_SUFFIX


def is_front(request: TransferRequest) -> bool:
    """Whether the running workflow is a front run: its id is not its destination's
    transfer id."""
    return workflow.info().workflow_id != transfer_id(request.destination)


async def run_front(
    request: TransferRequest, progress: Progress, set_state: Callable[[TransferState], None]
) -> TransferResult:
    """Run ``request`` as its destination's transfer and return that run's result.

    Args:
        request: the validated input.
        progress: the front's progress (the ``progress`` query, the UI line): gets the
            canonical run's size, checksum or error when it ends.
        set_state: records the front's state (search attribute, progress, UI line).

    Raises:
        ApplicationError: non-retryable: destination busy (``if_busy = fail``), or the
            canonical run failed (its reason), or was cancelled by someone else (type
            :data:`~staccato.workflows.failures.DESTINATION_CANCELLED`; the front's state
            is then ``cancelled``, though it ends FAILED).
        asyncio.CancelledError: the front was cancelled and so was the canonical run.
    """
    info = workflow.info()
    canonical = transfer_id(request.destination)
    workflow.set_current_details(f"runs as the destination's transfer {canonical}")
    heartbeat_timeout = (
        timedelta(seconds=request.options.heartbeat_timeout_s)
        if request.options.heartbeat_timeout_s
        else _DEFAULT_HEARTBEAT_TIMEOUT
    )
    task = asyncio.ensure_future(
        workflow.execute_activity(
            RUN_AS_DESTINATION_TRANSFER,
            FrontInput(request=request, front_id=info.workflow_id, front_run_id=info.run_id),
            result_type=TransferResult,
            task_queue=control_queue(info.task_queue),
            start_to_close_timeout=_FRONT_TIMEOUT,
            heartbeat_timeout=heartbeat_timeout,
            retry_policy=_FRONT_RETRY,
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        )
    )
    cancel_asked = False
    try:
        try:
            while True:
                try:
                    result = await asyncio.shield(task)
                    break
                except asyncio.CancelledError:
                    if task.done():
                        raise
                    # cancel the activity: it cancels the canonical run and reports what
                    # that run did (completed if it was publishing already)
                    cancel_asked = True
                    task.cancel()
        except ActivityError as err:
            if not (cancel_asked and _cancel_undelivered(err)):
                raise
            if not workflow.patched(CANCEL_UNDELIVERED_PATCH):
                raise
            passed_on = await workflow.execute_activity(
                CANCEL_FRONT_TRANSFER,
                FrontInput(request=request, front_id=info.workflow_id, front_run_id=info.run_id),
                result_type=TransferResult | None,  # type: ignore[arg-type]
                task_queue=control_queue(info.task_queue),
                start_to_close_timeout=_FRONT_TIMEOUT,
                heartbeat_timeout=heartbeat_timeout,
                retry_policy=_FRONT_RETRY,
            )
            if passed_on is None:  # nothing started, or it ended cancelled
                set_state(TransferState.cancelled)
                raise asyncio.CancelledError() from None
            result = passed_on  # it had begun to publish: completed
    except ActivityError as err:
        progress.phase = "done"
        if isinstance(err.cause, CancelledError):
            set_state(TransferState.cancelled)
            raise asyncio.CancelledError() from None
        progress.error = reason(err)
        kind = reason_type(err)
        # the destination's transfer was cancelled by someone else: so was this run. It
        # can only end FAILED (a workflow ends Canceled only when a cancel was asked of
        # it), so it records cancelled, which every view shows (staccato.run_states).
        # Decided by the activity's recorded failure: old histories replay unchanged.
        cancelled = kind == DESTINATION_CANCELLED
        set_state(TransferState.cancelled if cancelled else TransferState.failed)
        raise ApplicationError(progress.error, type=kind, non_retryable=True) from None
    progress.bytes_total = progress.bytes_committed = result.bytes
    progress.checksum = result.checksum
    progress.phase = "done"
    set_state(TransferState.completed)
    return result


def _cancel_undelivered(err: ActivityError) -> bool:
    """Whether the front's activity, asked to cancel, ended without having been told:
    its attempt timed out (a worker that died or was stopped) and the server did not
    retry it because the cancel was asked (``RETRY_STATE_CANCEL_REQUESTED``)."""
    return (
        not isinstance(err.cause, CancelledError) and err.retry_state == RetryState.CANCEL_REQUESTED
    )


def lacks_visibility(request: TransferRequest) -> bool:
    """Whether the run was started without Staccato's search attributes or memo (by
    a raw Temporal client or a Schedule that did not set them)."""
    return workflow.info().typed_search_attributes.get(sa.DESTINATION) is None or (
        workflow.memo_value("request_hash", None) != request.request_hash()
    )


def make_visible(request: TransferRequest) -> None:
    """Give a run started without them Staccato's search attributes (StaccatoSource,
    StaccatoDestination, StaccatoState) and memo (URLs, request hash), so ``staccato
    status``/``list`` and the UI's filters find it. One upsert each, at most."""
    if workflow.info().typed_search_attributes.get(sa.DESTINATION) is None:
        workflow.upsert_search_attributes(
            [
                sa.SOURCE.value_set(sa.keyword(request.source)),
                sa.DESTINATION.value_set(sa.keyword(request.destination)),
                sa.STATE.value_set(TransferState.scheduled.value),
            ]
        )
    if workflow.memo_value("request_hash", None) != request.request_hash():
        workflow.upsert_memo(sa.memo(request))


#: signal the front's activity sends when the front becomes ``queued`` or ``running``
FRONT_STATE_SIGNAL = "front_state"
_FRONT_STATES = (TransferState.queued, TransferState.running)


def show_state(progress: Progress, state: str, canonical: str) -> None:
    """Record a front run's live state (search attribute StaccatoState, the UI's
    current details), as its activity reports it; other states are ignored."""
    if state not in {s.value for s in _FRONT_STATES} or progress.state == state:
        return
    progress.state = TransferState(state)
    progress.phase = state
    workflow.upsert_search_attributes([sa.STATE.value_set(state)])
    workflow.set_current_details(
        f"**{state}**: "
        + (
            f"waiting for the transfer writing the destination ({canonical}) to end"
            if state == TransferState.queued
            else f"runs as the destination's transfer {canonical}"
        )
    )
