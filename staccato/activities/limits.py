"""Control activities of endpoint and link limits (see :mod:`staccato.workflows.governor`).

All are async and run in the worker's main process on the control task queue with
the worker's own Temporal client: they only call Temporal.

* ``find_governors``: which of a transfer's endpoint and link names have a running
  governor. Only those are asked (a ``GovernorWorkflow`` runs while a limit is set or
  a slot is held), so a transfer on endpoints without limits costs three describe
  calls and no governor; a limit set later counts only transfers that start after it.
* ``start_governor``: signal-with-start ``acquire`` at a governor that ended between
  ``find_governors`` and the transfer's own signal.
* ``find_ended``: which of a governor's holders and waiters have ended.
"""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from staccato.links import governor_id
from staccato.models import GovernorState, HolderRef, StartGovernorInput
from staccato.workflows.governor import ACQUIRE_SIGNAL, GOVERNOR_QUEUE, GovernorWorkflow


async def start_governor_signal(
    client: Client, name: str, signal: str, arg: object
) -> WorkflowHandle:
    """Signal the governor of ``name``, starting it (with no limits, on
    :data:`~staccato.workflows.governor.GOVERNOR_QUEUE`) when it is not running
    (signal-with-start)."""
    return await client.start_workflow(
        GovernorWorkflow.run,
        GovernorState(name=name),
        id=governor_id(name),
        task_queue=GOVERNOR_QUEUE,
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
    """

    def __init__(self, client: Client):
        self._client = client

    @activity.defn(name="find_governors")
    async def find_governors(self, names: list[str]) -> list[str]:
        """The names of ``names`` whose governor runs, in the order given."""
        running = await asyncio.gather(*(governor_running(self._client, n) for n in names))
        return [n for n, up in zip(names, running, strict=True) if up]

    @activity.defn(name="start_governor")
    async def start_governor(self, arg: StartGovernorInput) -> None:
        """Send ``acquire`` to the governor of ``arg.name``, starting it if needed."""
        await start_governor_signal(self._client, arg.name, ACQUIRE_SIGNAL, arg.request)

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
