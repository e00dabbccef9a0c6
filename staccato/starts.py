"""Starting transfers: the one way a destination's transfer (its canonical run) is
started, used by :class:`staccato.client.StaccatoClient` and by the front runs'
activity (:mod:`staccato.activities.front`).

The canonical workflow id (:func:`staccato.ids.transfer_id`) is the destination's
lock: the start uses ``id_conflict_policy=FAIL``, so while a transfer to the
destination runs, an identical request (same request hash, kept in the memo)
attaches to it, and a different one is refused with :class:`DestinationBusyError`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

from temporalio.client import Client
from temporalio.common import (
    Priority,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError

from staccato.errors import DestinationBusyError
from staccato.ids import transfer_id
from staccato.models import TransferRequest, TransferState
from staccato.workflows import search_attributes as sa

#: memo key of a canonical run started by a front run: ``<front id>/<front run id>``
STARTED_BY = "started_by"


@dataclass(frozen=True)
class Started:
    """A canonical run started or attached to.

    Attributes:
        workflow_id: the destination's transfer id.
        run_id: the run.
        attached: an identical transfer was already running (nothing new started).
    """

    workflow_id: str
    run_id: str
    attached: bool


def search_attributes(request: TransferRequest, state: TransferState) -> TypedSearchAttributes:
    """StaccatoSource, StaccatoDestination and StaccatoState of a transfer run."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(sa.SOURCE, sa.keyword(request.source)),
            SearchAttributePair(sa.DESTINATION, sa.keyword(request.destination)),
            SearchAttributePair(sa.STATE, state.value),
        ]
    )


def summary(request: TransferRequest) -> str:
    """The UI's one-line summary: ``SOURCE -> DESTINATION`` (at most 200 characters)."""
    return f"{request.source} -> {request.destination}"[:200]


async def start_or_attach(
    client: Client,
    request: TransferRequest,
    *,
    task_queue: str,
    started_by: str | None = None,
) -> Started:
    """Start the destination's transfer (its canonical run), or attach to the running
    one when it is the identical request.

    Args:
        client: a Temporal client with Staccato's data converter.
        request: a validated request.
        task_queue: the workers' task queue.
        started_by: ``<front id>/<front run id>`` of the front run starting it (kept
            in the memo so a retried front finds the run it started).

    Raises:
        DestinationBusyError: a different transfer to this destination is running
            (the message names it and its source).
    """
    workflow_id = transfer_id(request.destination)
    request_hash = request.request_hash()
    run_memo = sa.memo(request)
    if started_by:
        run_memo[STARTED_BY] = started_by
    try:
        # by name: the workflow takes its input as a raw payload and validates it
        handle = await client.start_workflow(
            "TransferWorkflow",
            request,
            id=workflow_id,
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            memo=run_memo,
            search_attributes=search_attributes(request, TransferState.scheduled),
            static_summary=summary(request),
            # Temporal's task priority: the transfer's activities inherit it
            priority=Priority(priority_key=request.options.priority),
        )
    except WorkflowAlreadyStartedError as err:
        description = await client.get_workflow_handle(workflow_id).describe()
        holder = dict(await description.memo())
        run_id = err.run_id or description.run_id
        if holder.get("request_hash") == request_hash:
            return Started(workflow_id, run_id, attached=True)
        held = (
            f"destination busy: {request.destination} is being written by transfer "
            f"{workflow_id} (from {holder.get('source', '?')})"
        )
        raise DestinationBusyError(
            f"{held}; wait for it to finish, "
            f"cancel it with `staccato cancel {workflow_id}`, or start with --if-busy wait "
            '(in a raw start\'s or a Schedule\'s input: "options": {"if_busy": "wait"})',
            holder=held,
        ) from None
    return Started(workflow_id, handle.first_execution_run_id or handle.result_run_id or "", False)


def front_id(request: TransferRequest) -> str:
    """A fresh front-run id for ``request``: ``<transfer id>-<8 random hex>``."""
    return f"{transfer_id(request.destination)}-{secrets.token_hex(4)}"


async def start_front(
    client: Client,
    request: TransferRequest,
    *,
    task_queue: str,
    workflow_id: str,
    start_delay: timedelta | None = None,
) -> str:
    """Start a front run (see :mod:`staccato.workflows.front`) of ``request`` under
    ``workflow_id``, optionally ``start_delay`` from now (Temporal's start delay);
    returns its run id. It takes the destination's lock when it runs, waiting or
    failing per ``request.options.if_busy``."""
    handle = await client.start_workflow(
        "TransferWorkflow",
        request,
        id=workflow_id,
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        memo=sa.memo(request),
        search_attributes=search_attributes(request, TransferState.scheduled),
        static_summary=summary(request),
        start_delay=start_delay,
        priority=Priority(priority_key=request.options.priority),
    )
    return handle.first_execution_run_id or handle.result_run_id or ""
