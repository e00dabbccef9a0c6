"""Control activities of endpoint and link limits (see :mod:`staccato.workflows.governor`).

Both are async and run in the worker's main process on the control task queue with
the worker's own Temporal client: they only call Temporal.

* ``acquire_slots``: a transfer asks the governors of its endpoints and link, in
  sorted order; only governors that exist (a running ``GovernorWorkflow``, which
  exists while a limit is set or a slot is held) are asked, so a transfer on an
  endpoint without limits costs three describe calls and no governor. A limit set
  later counts only transfers that start after it.
* ``find_ended``: which of a governor's holders and waiters have ended.
"""

from __future__ import annotations

import asyncio
import contextlib

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from staccato.links import governor_id
from staccato.models import (
    AcquireInput,
    AcquireResult,
    GovernorState,
    HolderRef,
    SlotGrant,
    SlotRelease,
    SlotRequest,
    SlotView,
)
from staccato.workflows.governor import (
    ACQUIRE_SIGNAL,
    RELEASE_SIGNAL,
    SLOT_QUERY,
    GovernorWorkflow,
)

#: seconds between two looks at a governor while queued
POLL_S = 0.25
#: seconds between two ``limit_queued`` signals with a changed reason
QUEUED_SIGNAL_EVERY_S = 10.0
#: the transfer's signal carrying why it is queued ("" once granted)
LIMIT_QUEUED_SIGNAL = "limit_queued"


async def start_governor_signal(
    client: Client, name: str, task_queue: str, signal: str, arg: object
) -> WorkflowHandle:
    """Signal the governor of ``name``, starting it (with no limits) when it is not
    running (signal-with-start)."""
    return await client.start_workflow(
        GovernorWorkflow.run,
        GovernorState(name=name),
        id=governor_id(name),
        task_queue=task_queue,
        start_signal=signal,
        start_signal_args=[arg],
    )


async def governor_running(client: Client, name: str) -> bool:
    """Whether the governor of ``name`` exists and runs."""
    try:
        description = await client.get_workflow_handle(governor_id(name)).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return description.status == WorkflowExecutionStatus.RUNNING


class LimitActivities:
    """The control worker's limit activities; they share the worker's client.

    Args:
        client: the worker's client.
        task_queue: the stream workers' task queue (governors run there).
    """

    def __init__(self, client: Client, *, task_queue: str, poll_s: float = POLL_S):
        self._client = client
        self._task_queue = task_queue
        self._poll_s = poll_s

    @activity.defn(name="acquire_slots")
    async def acquire_slots(self, arg: AcquireInput) -> AcquireResult:
        """Ask each running governor of ``arg.names`` in order for a slot; wait for
        each grant (polling the ``slot`` query), telling the transfer why it waits.

        Returns:
            The grants and the streams the transfer may run (the smallest grant).

        Raises:
            asyncio.CancelledError: the transfer was cancelled: every slot asked for
                was given back first.
        """
        request = arg.request
        asked = request.streams
        grants: list[SlotGrant] = []
        contacted: list[str] = []
        shown = ""
        shown_at = 0.0
        loop = asyncio.get_running_loop()
        try:
            for name in arg.names:
                if not await governor_running(self._client, name):
                    continue
                contacted.append(name)
                ask = request.model_copy(update={"streams": asked})
                handle = await start_governor_signal(
                    self._client, name, self._task_queue, ACQUIRE_SIGNAL, ask
                )
                while True:
                    try:
                        view: SlotView = await handle.query(
                            SLOT_QUERY, request.ticket, result_type=SlotView
                        )
                    except RPCError as err:
                        activity.logger.info("slot query of %s failed: %s", name, err)
                        view = SlotView(known=False)
                    if view.granted:
                        grants.append(
                            SlotGrant(
                                name=name,
                                ticket=request.ticket,
                                token=view.token,
                                streams=view.streams,
                            )
                        )
                        asked = min(asked, view.streams)
                        break
                    if not view.known:  # the governor ended or forgot it: ask again
                        handle = await start_governor_signal(
                            self._client, name, self._task_queue, ACQUIRE_SIGNAL, ask
                        )
                    elif view.reason != shown and (
                        not shown or loop.time() - shown_at >= QUEUED_SIGNAL_EVERY_S
                    ):
                        shown, shown_at = view.reason, loop.time()
                        await self._tell(request.workflow_id, request.run_id, shown)
                    activity.heartbeat(len(grants))
                    await asyncio.sleep(self._poll_s)
            for grant in grants:  # an earlier governor granted more than a later one
                if grant.streams > asked:
                    await self._client.get_workflow_handle(governor_id(grant.name)).signal(
                        RELEASE_SIGNAL, SlotRelease(ticket=request.ticket, streams=asked)
                    )
                    grant.streams = asked
            return AcquireResult(grants=grants, streams=asked)
        except asyncio.CancelledError:
            details = activity.cancellation_details()
            if details is not None and details.cancel_requested:
                await asyncio.shield(self._give_back(contacted, request))
            raise

    async def _give_back(self, names: list[str], request: SlotRequest) -> None:
        for name in names:
            with contextlib.suppress(RPCError):
                await self._client.get_workflow_handle(governor_id(name)).signal(
                    RELEASE_SIGNAL, SlotRelease(ticket=request.ticket)
                )

    async def _tell(self, workflow_id: str, run_id: str, reason: str) -> None:
        """Tell the transfer why it waits (its state ``queued``, the UI line); a hint
        only: a failure is logged."""
        try:
            await self._client.get_workflow_handle(workflow_id, run_id=run_id).signal(
                LIMIT_QUEUED_SIGNAL, reason
            )
        except RPCError as err:
            activity.logger.info("could not tell %s it is queued: %s", workflow_id, err)

    @activity.defn(name="find_ended")
    async def find_ended(self, refs: list[HolderRef]) -> list[str]:
        """The tickets of ``refs`` whose workflow run is no longer running (or unknown)."""

        async def ended(ref: HolderRef) -> bool:
            try:
                description = await self._client.get_workflow_handle(
                    ref.workflow_id, run_id=ref.run_id
                ).describe()
            except RPCError as err:
                if err.status == RPCStatusCode.NOT_FOUND:
                    return True
                raise
            return description.status != WorkflowExecutionStatus.RUNNING

        outcomes = await asyncio.gather(*(ended(r) for r in refs))
        return [r.ticket for r, gone in zip(refs, outcomes, strict=True) if gone]
