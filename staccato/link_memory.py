"""Client side of per-link tuning's memory: read what links learned
(:mod:`staccato.workflows.link_tuning` keeps it; ``staccato limit learned`` shows it).
Imports no driver: the CLI loads it only for the commands that use it."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import Client, WorkflowQueryRejectedError
from temporalio.common import QueryRejectCondition
from temporalio.service import RPCError, RPCStatusCode

from staccato.settled_query import GOVERNOR_STICKY_S, settled_query
from staccato.tuning import LinkMemory
from staccato.workflows.link_tuning import GET_QUERY, link_tuning_id


async def read_link_memory(
    client: Client, link: str, *, timeout: timedelta | None = None
) -> LinkMemory | None:
    """``link``'s memory, or None when nothing was recorded (no workflow runs).

    Args:
        timeout: bound on the query (None: ``staccato.client.query_wait_s``), at most
            :func:`~staccato.settled_query.query_deadline_s` of the governors' queue;
            a query waits for a worker of that queue to answer it.

    Raises:
        RPCError: Temporal failed otherwise (``DEADLINE_EXCEEDED`` past ``timeout``).
        NotSettledError: the memory's workflow kept a workflow task its worker has
            not taken (:func:`~staccato.settled_query.settled_query`): not asked.
    """
    try:
        # a forgotten (terminated) memory is no memory
        # once settled, below the governors' queue's sticky timeout (staccato.settled_query)
        return await settled_query(
            client.get_workflow_handle(link_tuning_id(link)),
            GET_QUERY,
            result_type=LinkMemory,
            reject_condition=QueryRejectCondition.NOT_OPEN,
            rpc_timeout_s=None if timeout is None else timeout.total_seconds(),
            sticky_timeout_s=GOVERNOR_STICKY_S,
        )
    except WorkflowQueryRejectedError:
        return None
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return None
        raise


async def list_link_memories(client: Client) -> list[LinkMemory]:
    """Every link's memory, sorted by link name.

    Raises:
        NotSettledError: a memory's workflow kept a workflow task its worker has not
            taken (:func:`read_link_memory`): not asked, rather than left out.
    """
    memories: list[LinkMemory] = []
    async for w in client.list_workflows(
        "WorkflowType = 'LinkTuningWorkflow' AND ExecutionStatus = 'Running'"
    ):
        try:
            memory = await settled_query(
                client.get_workflow_handle(w.id),
                GET_QUERY,
                result_type=LinkMemory,
                sticky_timeout_s=GOVERNOR_STICKY_S,
            )
        except RPCError:
            continue  # continued as new or ended meanwhile
        if memory is not None:
            memories.append(memory)
    return sorted(memories, key=lambda m: m.link)


async def forget_link_memory(client: Client, link: str) -> bool:
    """Drop what ``link`` learned (its next tuned transfer starts cold); False when
    nothing was recorded.

    Raises:
        RPCError: Temporal failed otherwise.
    """
    try:
        await client.get_workflow_handle(link_tuning_id(link)).terminate("forgotten by a user")
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True
