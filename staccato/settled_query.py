"""Query a workflow only when it is settled, and never for longer than its worker's
sticky timeout: the one way Staccato's clients and workers ask a running workflow a
query (``status``, ``cp``'s progress line, ``limit list``, the rate board, the link
memories). No Temporal-workflow imports: clients and workers use it.

Why (docs/architecture.md, "Queries and replay"): a query the Temporal server hands
to a worker as a query task of its own (a "legacy" query, not one carried by a
workflow task) on the normal task queue carries the run's full history as it is when
a worker polls the query, so with events newer than the run's last workflow task
when some arrived meanwhile. sdk-core applies them in an ordinary
activation and holds back the commands the code emits; they leave with the next real
workflow task's, batched differently from a replay, and the run fails replay from
then on.

What the server does, read in temporalio/temporal (a stored copy, commit 004c540;
the dev server the tests run is 1.32.0):

* ``service/history/api/queryworkflow/api.go``: a query is dispatched directly
  (through matching, as a query task) only when it is "safe": no workflow task is
  pending or started (``!HasPendingWorkflowTask() && !HasStartedWorkflowTask()``),
  or the run is closed. Otherwise it is *buffered* and goes out with the next
  workflow task (``queries`` on that task: answered after that task's events, the
  consistent path), or is "unblocked" and dispatched directly once a workflow task
  completes with no new one (``respondworkflowtaskcompleted/api.go``,
  ``handleBufferedQueries``).
* ``queryDirectlyThroughMatching``: the direct query goes to the run's sticky queue
  first, under a context of its own bounded by the worker's sticky schedule-to-start
  timeout (``rpc.ResetContextTimeout`` starts from ``context.Background()``: the
  caller's deadline does not shorten it). When that worker does not take it in time
  (stalled, frozen) or its sticky queue has no poller, the server clears the run's
  stickiness and, *if the caller's deadline has not passed*
  (``common.IsValidContext(ctx)``), sends the query to the normal task queue, where
  any worker may take it and gets the full history (``createPollWorkflowTaskQueueResponse``:
  "non sticky && query task: full history"), read when a worker polls it.

So the gate this module adds does not match the server's direct dispatch: a
description that shows a pending workflow task is one whose query the server would
*buffer* (safe in itself, but it waits for that task: the whole deadline when its
worker is frozen). What it buys is a prompt, explained "not answered" instead of a
query that waits behind a worker that has not taken the run's latest workflow task
(tester F2: ``status`` and ``list`` of a queued transfer took its full wait, saying
nothing of the cause), and no query while the run has unhandled events.

What guards the replay hazard in the direct path is the deadline:
:func:`query_deadline_s` keeps every query's ``rpc_timeout`` below the sticky
timeout of the workers that run it (:data:`STICKY_SHARE` of it), so a query its
sticky worker does not take has expired before the server would forward it to the
normal queue; before this module, queries with no ``rpc_timeout`` (the governor's
slot query, the rate board's, the link memories') ran under the server's own bound
(~30 s in tester F2) and those of the governors' queue (2 s sticky timeout) for 5 s: both
outlived the sticky attempt. Left: a run whose sticky worker is gone (no poller on
its sticky queue) goes to the normal queue at once; a query then still carries the
events that arrive while it waits for a worker (see docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.api.enums.v1 import PendingWorkflowTaskState
from temporalio.client import WorkflowHandle

from staccato import settings
from staccato.errors import StaccatoError

__all__ = [
    "GOVERNOR_STICKY_S",
    "REDESCRIBE_S",
    "SETTLE_S",
    "STICKY_SHARE",
    "NotSettledError",
    "pending_task",
    "query_deadline_s",
    "settled",
    "settled_query",
]

#: seconds a query waits for the run's worker to take its pending workflow task
#: (re-describing it every :data:`REDESCRIBE_S`) before it is given up as not
#: answered: a worker that keeps up takes a task within milliseconds (a transfer's
#: tasks follow one another within ~0.1 s while its streams end), and ``status``
#: and ``cp``'s progress line (every 0.5 s) must not wait longer than a line
SETTLE_S = 1.0
#: seconds between two descriptions while the run has a pending workflow task
REDESCRIBE_S = 0.2
#: share of the worker's sticky schedule-to-start timeout a query may wait: below
#: 1, so the query has expired when the server gives up the sticky attempt and would
#: send it to the normal queue (see the module docstring)
STICKY_SHARE = 0.75
#: the governors' queue's sticky schedule-to-start timeout (seconds), which
#: ``staccato.workers.worker.governor_worker`` sets: a governor cached by a worker
#: that died gets its next task elsewhere after this, every transfer on its
#: endpoint waiting meanwhile (default 10 s)
GOVERNOR_STICKY_S = 2.0

_ARG_UNSET: Any = object()


class NotSettledError(StaccatoError):
    """A query not sent: the run has a workflow task its worker has not taken (or not
    finished) since ``since``, for longer than :data:`SETTLE_S`.

    Attributes:
        workflow_id: the run's workflow id.
        since: when that task was first scheduled (UTC), None when not said.
        started: whether a worker has taken it (and holds it) rather than none.
        description: the run's last description (``WorkflowExecutionDescription``).
        reason: the words for users, e.g. ``its worker has not taken its latest
            workflow task since 2026-12-07T00:13:56Z``.
    """

    def __init__(
        self, workflow_id: str, since: datetime | None, started: bool, description: Any
    ) -> None:
        self.workflow_id = workflow_id
        self.since = since
        self.started = started
        self.description = description
        when = f" since {since.strftime('%Y-%m-%dT%H:%M:%SZ')}" if since else ""
        verb = "finished" if started else "taken"
        self.reason = f"its worker has not {verb} its latest workflow task{when}"
        super().__init__(f"not answered: {self.reason}")


def pending_task(description: Any) -> tuple[datetime | None, bool] | None:
    """The run's pending workflow task as ``description`` (a
    ``WorkflowExecutionDescription``) shows it: (when it was first scheduled, UTC, or
    None when not said; whether a worker has started it); None when it has none, or
    the description does not say (``raw_description.pending_workflow_task``, set by
    the server while a task is scheduled or started)."""
    raw = getattr(description, "raw_description", None)
    try:
        if raw is None or not raw.HasField("pending_workflow_task"):
            return None
        task = raw.pending_workflow_task
        stamp = (
            task.original_scheduled_time
            if task.HasField("original_scheduled_time")
            else task.scheduled_time
        )
        since = stamp.ToDatetime(tzinfo=UTC) if stamp.seconds else None
        started = task.state == PendingWorkflowTaskState.PENDING_WORKFLOW_TASK_STATE_STARTED
        return since, started
    except (AttributeError, ValueError):
        return None


def query_deadline_s(
    wanted_s: float | None = None, *, sticky_timeout_s: float | None = None
) -> float:
    """Seconds a query may wait for its answer: ``wanted_s`` (default the status
    rule, ``staccato.client.query_wait_s``: min(5, ``STACCATO_CLIENT_WAIT_S``)),
    at most :data:`STICKY_SHARE` of the sticky timeout of the workers that run the
    workflow (``sticky_timeout_s``; default ``STACCATO_WORKER_STICKY_TIMEOUT_S``,
    10 s; :data:`GOVERNOR_STICKY_S` for a governor or a link's memory)."""
    if wanted_s is None:
        from staccato.client import query_wait_s

        wanted_s = query_wait_s()
    sticky = (
        settings.current().worker_sticky_timeout_s if sticky_timeout_s is None else sticky_timeout_s
    )
    return max(0.1, min(wanted_s, STICKY_SHARE * sticky))


async def settled(
    handle: WorkflowHandle[Any, Any], description: Any = None, *, settle_s: float = SETTLE_S
) -> Any:
    """The run's description once it has no pending workflow task: ``description``
    (one the caller already has) when it shows none, else the run described again
    every :data:`REDESCRIBE_S` for at most ``settle_s`` seconds.

    Raises:
        NotSettledError: it still had one after ``settle_s`` seconds.
        RPCError: a description failed (not found, the server away).
    """
    wait = timedelta(seconds=settings.current().client_wait_s)
    if description is None:
        description = await handle.describe(rpc_timeout=wait)
    deadline = time.monotonic() + settle_s
    while True:
        pending = pending_task(description)
        if pending is None:
            return description
        if time.monotonic() + REDESCRIBE_S > deadline:
            since, started = pending
            raise NotSettledError(handle.id, since, started, description)
        await asyncio.sleep(REDESCRIBE_S)
        description = await handle.describe(rpc_timeout=wait)


async def settled_query(
    handle: WorkflowHandle[Any, Any],
    query: str,
    arg: Any = _ARG_UNSET,
    *,
    result_type: type | None = None,
    description: Any = None,
    rpc_timeout_s: float | None = None,
    sticky_timeout_s: float | None = None,
    reject_condition: Any = None,
    settle_s: float = SETTLE_S,
) -> Any:
    """Ask the run of ``handle`` the query ``query`` (with ``arg`` when given) once it
    is :func:`settled`, waiting at most :func:`query_deadline_s` (``rpc_timeout_s``,
    ``sticky_timeout_s``) for the answer.

    Args:
        description: the run's description the caller already has (saves one).
        reject_condition: Temporal's ``QueryRejectCondition`` (None: the client's).

    Returns:
        The answer, as ``result_type``.

    Raises:
        NotSettledError: the run kept a pending workflow task (no query was sent).
        RPCError: a description or the query failed, or the deadline passed.
        WorkflowQueryFailedError: a worker took the query and failed it.
        WorkflowQueryRejectedError: rejected under ``reject_condition``.
    """
    await settled(handle, description, settle_s=settle_s)
    deadline = timedelta(seconds=query_deadline_s(rpc_timeout_s, sticky_timeout_s=sticky_timeout_s))
    kwargs: dict[str, Any] = {"result_type": result_type, "rpc_timeout": deadline}
    if reject_condition is not None:
        kwargs["reject_condition"] = reject_condition
    if arg is _ARG_UNSET:
        return await handle.query(query, **kwargs)
    return await handle.query(query, arg, **kwargs)
