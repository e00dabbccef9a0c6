"""The control activity of front runs (see :mod:`staccato.workflows.front`).

``run_as_destination_transfer`` is async and runs in the worker's main process on
the control task queue, with the worker's own Temporal client: it only calls
Temporal (start, describe, wait for a result, cancel), so it takes none of the
activity processes that move bytes, and thousands can wait at once.

Crash safety: every heartbeat carries the canonical run it started or attached to
(:class:`~staccato.models.FrontCheckpoint`); a retry after the worker died attaches
to that run and never starts a second one. A start whose heartbeat was lost is
found again by the memo key ``started_by`` the canonical run carries.

Order: fronts waiting for one destination poll it each on their own, and after a
worker's restart all their activities retry at once, so the first poll to find the
destination free is no sign of who queued first. The start itself keeps the order
(:func:`staccato.starts.queued_ahead`): while the destination is free, a front that
has an earlier one still waiting (by the time its run was due, then its id, both in
Temporal) is refused as busy and polls again.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ApplicationError, CancelledError, TerminatedError
from temporalio.service import RPCError, RPCStatusCode

from staccato.errors import (
    DESTINATION_CANCELLED_TYPE,
    DestinationBusyError,
    TransferFailedError,
    innermost_message,
)
from staccato.ids import transfer_id
from staccato.models import FrontCheckpoint, FrontInput, IfBusy, TransferResult, TransferState
from staccato.starts import STARTED_BY, QueuePlace, queue_place, start_or_attach
from staccato.workflows.front import FRONT_STATE_SIGNAL

#: seconds between two looks at a busy destination (``if_busy = wait``)
BUSY_POLL_S = 2.0
#: seconds between two heartbeats (they carry the canonical run and deliver cancels)
HEARTBEAT_S = 1.0


class FrontActivities:
    """The control worker's activities; they share the worker's Temporal client.

    Args:
        client: the worker's client (Staccato's data converter).
        task_queue: the task queue canonical runs are started on (the stream workers').
        busy_poll_s: seconds between two looks at a busy destination.
    """

    def __init__(self, client: Client, *, task_queue: str, busy_poll_s: float = BUSY_POLL_S):
        self._client = client
        self._task_queue = task_queue
        self._busy_poll_s = busy_poll_s

    @activity.defn(name="run_as_destination_transfer")
    async def run_as_destination_transfer(self, front: FrontInput) -> TransferResult:
        """Start the destination's transfer for ``front.request`` (or attach to the
        identical running one), wait for it and return its result.

        Raises:
            ApplicationError: non-retryable: ``destination busy: ...`` (``if_busy =
                fail`` and a different transfer holds the destination), or the
                canonical run failed / was terminated (type ``TransferFailed``) / was
                cancelled by someone else (type
                :data:`~staccato.errors.DESTINATION_CANCELLED_TYPE`).
            asyncio.CancelledError: this activity was cancelled (the front was): the
                canonical run was cancelled too, and ended cancelled.
        """
        request = front.request
        canonical = transfer_id(request.destination)
        started_by = f"{front.front_id}/{front.front_run_id}"
        state = _last_checkpoint() or FrontCheckpoint(transfer_id=canonical)
        if state.run_id is None and activity.info().attempt > 1:
            state.run_id = await self._run_started_by(canonical, started_by)
        beat = asyncio.create_task(_heartbeat(lambda: state))
        try:
            place: QueuePlace | None = None
            while state.run_id is None:
                if place is None:
                    place = await self._place(front.front_id, front.front_run_id)
                try:
                    started = await start_or_attach(
                        self._client,
                        request,
                        task_queue=self._task_queue,
                        started_by=started_by,
                        place=place,
                    )
                except DestinationBusyError as err:
                    if request.options.if_busy != IfBusy.wait:
                        raise ApplicationError(
                            str(err), type=DestinationBusyError.TYPE, non_retryable=True
                        ) from None
                    if state.waiting_for is None:
                        activity.logger.info("%s: queued: %s", front.front_id, err)
                        await self._signal_state(front.front_id, TransferState.queued)
                    state.waiting_for = f"{err.holder}; waiting for it to end (--if-busy wait)"
                    activity.heartbeat(state)
                    await asyncio.sleep(self._busy_poll_s)
                    continue
                activity.logger.info(
                    "%s: %s the destination's transfer %s (queued since %s)",
                    front.front_id,
                    "attached to" if started.attached else "started",
                    started.run_id,
                    place[0].isoformat(),
                )
                state.run_id, state.attached, state.waiting_for = (
                    started.run_id,
                    started.attached,
                    None,
                )
                activity.heartbeat(state)
            await self._signal_state(front.front_id, TransferState.running)
            return await self._outcome(canonical, state.run_id)
        except asyncio.CancelledError:
            details = activity.cancellation_details()
            if state.run_id is None or details is None or not details.cancel_requested:
                raise  # worker shutdown or heartbeat timeout: retried, re-attaches
            return await self._cancel(canonical, state.run_id)
        finally:
            beat.cancel()

    @activity.defn(name="cancel_front_transfer")
    async def cancel_front_transfer(self, front: FrontInput) -> TransferResult | None:
        """Pass a front's cancel on to the destination's transfer it started, when the
        attempt of ``run_as_destination_transfer`` the cancel was asked of had died (no
        worker ran it: it timed out, and Temporal retries no activity whose cancel was
        asked). The run it started is found by its memo ``started_by``.

        Returns:
            None when the front started none, or the one it started ended cancelled (or
            had ended before: a front is cancelled, so is what it drove); that run's
            result when it completed anyway (it had begun to publish).

        Raises:
            ApplicationError: non-retryable: the run failed (its reason).
        """
        canonical = transfer_id(front.request.destination)
        started_by = f"{front.front_id}/{front.front_run_id}"
        run_id = await self._run_started_by(canonical, started_by)
        if run_id is None:
            activity.logger.info("%s: cancelled; it had started no transfer", front.front_id)
            return None
        beat = asyncio.create_task(_heartbeat(lambda: FrontCheckpoint(transfer_id=canonical)))
        try:
            return await self._cancel(canonical, run_id)
        except asyncio.CancelledError:
            if activity.is_cancelled():
                raise
            return None  # the run it drove ended cancelled
        finally:
            beat.cancel()

    async def _place(self, front_id: str, front_run_id: str) -> QueuePlace:
        """This front run's place in its destination's queue
        (:func:`staccato.starts.queued_ahead`): it starts the destination's transfer
        only when no front queued earlier waits, so the queue keeps its order also when
        a worker's restart retries every waiting front at once."""
        handle = self._client.get_workflow_handle(front_id, run_id=front_run_id)
        return queue_place(await handle.describe())

    async def _signal_state(self, front_id: str, state: TransferState) -> None:
        """Tell the front run its live state (its search attribute and UI line); a
        hint only: a failure is logged, never fatal."""
        try:
            await self._client.get_workflow_handle(front_id).signal(FRONT_STATE_SIGNAL, state.value)
        except RPCError as err:
            activity.logger.info("could not signal %s %s: %s", front_id, state.value, err)

    async def _run_started_by(self, canonical: str, started_by: str) -> str | None:
        """The latest canonical run if this front started it (memo ``started_by``)."""
        try:
            description = await self._client.get_workflow_handle(canonical).describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return None
            raise
        if dict(await description.memo()).get(STARTED_BY) == started_by:
            return description.run_id
        return None

    async def _outcome(self, canonical: str, run_id: str) -> TransferResult:
        """Wait for the canonical run and return its result, or raise its failure as a
        non-retryable ``ApplicationError``."""
        handle = self._client.get_workflow_handle(
            canonical, run_id=run_id, result_type=TransferResult
        )
        try:
            result: TransferResult = await handle.result(follow_runs=False)
            return result
        except WorkflowFailureError as err:
            cause: BaseException | None = err.cause
            if isinstance(cause, CancelledError):
                # its own type: the front records state cancelled (staccato.run_states)
                raise ApplicationError(
                    f"cancelled: the destination's transfer {canonical} was cancelled",
                    type=DESTINATION_CANCELLED_TYPE,
                    non_retryable=True,
                ) from None
            if isinstance(cause, TerminatedError):
                message = f"failed: the destination's transfer {canonical} was terminated"
            else:
                message = innermost_message(cause)
            raise ApplicationError(
                message, type=TransferFailedError.TYPE, non_retryable=True
            ) from None

    async def _cancel(self, canonical: str, run_id: str) -> TransferResult:
        """The front was cancelled: cancel the canonical run it drives and report what
        that run did (its result if it completed anyway, having begun to publish)."""
        handle = self._client.get_workflow_handle(
            canonical, run_id=run_id, result_type=TransferResult
        )
        with contextlib.suppress(RPCError):
            await handle.cancel()
        try:
            return await self._outcome(canonical, run_id)
        except ApplicationError:
            if (await handle.describe()).status == WorkflowExecutionStatus.CANCELED:
                raise asyncio.CancelledError() from None
            raise


def _last_checkpoint() -> FrontCheckpoint | None:
    """The checkpoint the previous attempt heartbeated, if any."""
    details: Any = activity.info().heartbeat_details
    if not details:
        return None
    try:
        return FrontCheckpoint.model_validate(details[0])
    except ValueError:
        return None


async def _heartbeat(current: Any) -> None:
    """Heartbeat ``current()`` every :data:`HEARTBEAT_S` seconds (a cancel reaches the
    activity only at a heartbeat)."""
    while True:
        activity.heartbeat(current())
        await asyncio.sleep(HEARTBEAT_S)
