"""One listing of everything Staccato runs: transfers, datasets and fan-out groups in a
single newest-first order by start time (``staccato list``, :meth:`StaccatoClient.list`,
:func:`staccato.dataset_client.list_datasets`, :func:`staccato.fanout_client.list_groups`).

One visibility query names every kind asked for; one row per workflow id (its latest
run; with a state asked, a transfer's row is its latest run too, shown only when that
run is in the state: a filter matches the state ``list`` shows, never an older run's). Rows are ordered by
``started_at`` (a dataset: its first run's start, kept across continue-as-new), newest
first, and ``limit`` applies to the merged order.

How few statuses it reads: Temporal's visibility lists running executions first, then
closed ones by close time, newest first (the SQL stores and Elasticsearch alike). A
run never starts after it closes, so once the listing has reached closes older than a
run's start, nothing still unread started after it: that run's row can be read and
placed. A status (a describe, and a query or a result) is read only for rows that can
still be among the first ``limit``, except a running run's: its read begins as it is
listed (at most ``limit`` of them, :data:`LIST_CONCURRENCY` at once), since it may wait
a query's whole deadline for a worker that does not answer (a frozen worker: each
such row waited in turn, ``list`` took 21-31 s, tester t68 5b); with reads begun at
once, ``list`` waits about one deadline per :data:`LIST_CONCURRENCY` such rows.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from temporalio.client import WorkflowExecution
from temporalio.service import RPCError

from staccato.client import DATASET_TYPE, GROUP_TYPE, TRANSFER_TYPE
from staccato.datasets.models import DATASET_ID_PREFIX, DatasetStatus
from staccato.errors import StaccatoError
from staccato.models import GroupStatus, TransferStatus
from staccato.run_states import ended_condition

if TYPE_CHECKING:
    from staccato.client import StaccatoClient

#: one row of a listing
Row = TransferStatus | DatasetStatus | GroupStatus

#: every kind ``staccato list`` shows
ALL_TYPES = (DATASET_TYPE, GROUP_TYPE, TRANSFER_TYPE)
#: rows whose status is read at once
LIST_CONCURRENCY = 16


def _transfer_state(state: str) -> str:
    """The visibility condition of a transfer run that may show ``state``. A closed
    run shows the state :func:`staccato.run_states.ended_state` gives it (its execution
    status, whatever its StaccatoState last said, except a run that ended FAILED having
    recorded ``cancelled``: a front run whose destination's transfer was cancelled; a
    front run cancelled before its delayed start never ran to set it: it stays
    ``scheduled``); a running run shows its StaccatoState (``failed`` too: a failed
    transfer's run goes on while it removes its partial data). The rows read are checked
    against ``state`` again (a run may have moved on since)."""
    ended = ended_condition(state)
    running = f"StaccatoState = '{state}' AND ExecutionStatus = 'Running'"
    if ended is None:
        return running
    if state == "failed":  # failed, its run still removing the partial data
        return f"({ended} OR ({running}))"
    return ended


def _query(types: Sequence[str], transfer_state: str | None) -> str:
    """The visibility query: the workflow types; a transfer only in ``transfer_state``
    when given (:func:`_transfer_state`). Datasets and groups are filtered on their
    status."""
    parts = []
    others = [t for t in types if t != TRANSFER_TYPE]
    if TRANSFER_TYPE in types:
        state = f" AND {_transfer_state(transfer_state)}" if transfer_state else ""
        parts.append(f"(WorkflowType = '{TRANSFER_TYPE}'{state})")
    if others:
        parts.append("WorkflowType IN (" + ", ".join(f"'{t}'" for t in others) + ")")
    return " OR ".join(parts)


async def _read(
    client: StaccatoClient, execution: WorkflowExecution, *, latest: bool = False
) -> Row | None:
    """The status of the row ``execution`` stands for (a transfer with ``latest``: its
    workflow id's latest run, not necessarily the run listed); None when it is not one
    Staccato can read (odd input, memo or id made by someone else): skipped, never an
    error."""
    from staccato.dataset_client import dataset_status
    from staccato.fanout_client import group_status

    try:
        if execution.workflow_type == DATASET_TYPE:
            # its own run where a root's lock took its id since (not the lock's holder)
            # the memo's counts: no ended run's history read per row
            return await dataset_status(
                client, execution.id, own_run_id=execution.run_id, look_in_flight=False
            )
        if execution.workflow_type == GROUP_TYPE:
            return await group_status(client, execution.id)
        return await client.status(execution.id, run_id=None if latest else execution.run_id)
    except (StaccatoError, RPCError, ValueError, KeyError, TypeError):
        return None


def _started(row: Row, listed: datetime) -> float:
    """A row's start in seconds since the epoch: its ``started_at``, else when the
    run listed started (``listed``)."""
    if row.started_at:
        return datetime.fromisoformat(row.started_at.replace("Z", "+00:00")).timestamp()
    return listed.timestamp()


async def list_rows(
    client: StaccatoClient,
    *,
    types: Sequence[str] = ALL_TYPES,
    state: str | None = None,
    limit: int = 50,
) -> list[Row]:
    """The newest ``limit`` rows of the kinds ``types`` (workflow type names), newest
    first by start time, across kinds; with ``state`` only rows in that state (a
    transfer: when its latest run is in that state, as ``list`` without ``state`` and
    ``status`` show it).

    Args:
        client: a connected client.
        types: any of :data:`ALL_TYPES`.
        state: a state's value (``running``, ``completed_with_errors``, ...) or None.
        limit: at most this many rows (exactly this many when that many exist).

    Returns:
        TransferStatus, DatasetStatus and GroupStatus rows, each with ``started_at``.
    """
    transfer_state = state
    if state is not None:
        from staccato.models import TransferState

        if state not in TransferState.__members__:  # a state transfers never have
            types = [t for t in types if t != TRANSFER_TYPE]
            transfer_state = None
    if not types or limit < 1:
        return []
    executions = aiter(client.temporal.list_workflows(_query(types, transfer_state)))
    # a state asked: a transfer's row is its latest run (an earlier run listed in the
    # state, e.g. failed, while the latest completed, is not its row)
    latest = transfer_state is not None
    gate = asyncio.Semaphore(LIST_CONCURRENCY)
    #: reads begun, by workflow id: a running run's begins as it is listed
    reads: dict[str, asyncio.Task[Row | None]] = {}

    async def bounded(execution: WorkflowExecution) -> Row | None:
        async with gate:
            return await _read(client, execution, latest=latest)

    def read(execution: WorkflowExecution) -> asyncio.Task[Row | None]:
        task = reads.get(execution.id)
        if task is None:
            task = reads[execution.id] = asyncio.ensure_future(bounded(execution))
        return task

    try:
        return await _placed(
            executions, read, types=types, state=state, limit=limit, fetch_running=limit
        )
    finally:
        for task in reads.values():
            task.cancel()
        await asyncio.gather(*reads.values(), return_exceptions=True)


async def _placed(
    executions: Any,
    read: Callable[[WorkflowExecution], Awaitable[Row | None]],
    *,
    types: Sequence[str],
    state: str | None,
    limit: int,
    fetch_running: int,
) -> list[Row]:
    """:func:`list_rows`' order: the rows of ``executions`` (the visibility listing,
    an async iterator), each read by ``read``, placed newest first. A running run's
    read begins as it is listed (at most ``fetch_running`` of them: running runs are
    listed first), so the runs a frozen worker leaves unanswered wait their query
    deadlines together, not one after another (tester t68 5b: ``list`` 21-31 s, each
    row's read begun only once the closed runs listed after it placed it)."""
    fetched = 0
    order = itertools.count()
    seen: set[str] = set()
    #: listed, status not read yet: (-start of the run listed, n, execution)
    pending: list[tuple[float, int, WorkflowExecution]] = []
    #: read, not placed yet: (-start, n, row)
    ready: list[tuple[float, int, Row]] = []
    rows: list[Row] = []
    #: every execution not listed yet started at or before this (seconds)
    unread_bound = float("inf")
    exhausted = False

    while len(rows) < limit:
        ceiling = max(-pending[0][0] if pending else float("-inf"), unread_bound)
        while ready and -ready[0][0] >= ceiling and len(rows) < limit:
            rows.append(heapq.heappop(ready)[2])
        if len(rows) >= limit or (exhausted and not pending and not ready):
            break
        # rows whose status can be read now: nothing unread started after them
        batch: list[WorkflowExecution] = []
        wanted = max(1, min(LIST_CONCURRENCY, limit - len(rows) - len(ready)))
        while pending and -pending[0][0] >= unread_bound and len(batch) < wanted:
            batch.append(heapq.heappop(pending)[2])
        if batch:
            answers = await asyncio.gather(*(read(e) for e in batch))
            for execution, row in zip(batch, answers, strict=True):
                if row is None:
                    continue
                # the query narrows a transfer's state, not a dataset's or group's: each
                # row is checked (a transfer's may have moved on since it was listed)
                if state is not None and row.state.value != state:
                    continue
                heapq.heappush(ready, (-_started(row, execution.start_time), next(order), row))
            continue
        try:
            execution = await anext(executions)
        except StopAsyncIteration:
            exhausted, unread_bound = True, float("-inf")
            continue
        if execution.close_time is not None:
            unread_bound = min(unread_bound, execution.close_time.timestamp())
        if execution.id in seen:
            continue  # an older run of the same id
        if execution.workflow_type == DATASET_TYPE and not execution.id.startswith(
            DATASET_ID_PREFIX
        ):
            continue
        seen.add(execution.id)
        if execution.close_time is None and fetched < fetch_running:
            fetched += 1
            read(execution)  # begun now, awaited when the row can be placed
        heapq.heappush(pending, (-execution.start_time.timestamp(), next(order), execution))
    return rows
