"""Client side of endpoint and link limits: ``staccato limit set|list|unset``.

Limits live in the governor workflow of each endpoint or link
(:mod:`staccato.workflows.governor`): setting one signals it with signal-with-start
(starting it when none runs), listing queries every running governor, unsetting
signals it (it ends once nothing is limited, held or queued).
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from staccato import settings
from staccato.activities.limits import governor_running, start_governor_signal
from staccato.errors import StaccatoError
from staccato.links import LimitTarget, governor_id
from staccato.models import GovernorState, LimitChange, Limits, rate_per_stream
from staccato.settled_query import (
    GOVERNOR_STICKY_S,
    NotSettledError,
    query_deadline_s,
    settled_query,
)
from staccato.windows import parse_window
from staccato.workflows.governor import GOVERNOR_QUEUE, SET_LIMITS_SIGNAL, STATE_QUERY


class LimitView(BaseModel):
    """One line of ``staccato limit list``: a governor's limits and load."""

    target: str
    limits: Limits
    active: int
    streams: int
    queued: int
    #: the share of ``max_rate`` each held stream reads at (bytes/s: over the streams
    #: still running, :func:`~staccato.models.rate_per_stream`); None without one
    rate_per_stream: float | None = None


def check_window(text: str) -> str:
    """Validate ``HH:MM-HH:MM[,TZ]`` (24 h clock, an IANA time zone; default UTC).

    Raises:
        ValueError: the message says what was expected.
    """
    parse_window(text)
    return text.strip()


async def set_limits(client: Client, target: LimitTarget, limits: Limits) -> None:
    """Store ``limits`` (the fields set) on ``target``'s governor, starting it if needed."""
    await start_governor_signal(client, target.name, SET_LIMITS_SIGNAL, LimitChange(set=limits))


async def unset_limits(client: Client, target: LimitTarget, fields: list[str]) -> bool:
    """Clear ``fields`` (all when empty) on ``target``; False when no governor runs."""
    if not await governor_running(client, target.name):
        return False
    try:
        await client.get_workflow_handle(governor_id(target.name)).signal(
            SET_LIMITS_SIGNAL, LimitChange(unset=fields or list(Limits.model_fields))
        )
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        return False  # it ended since it was found running: nothing is set there
    return True


async def governor_state(client: Client, workflow_id: str) -> GovernorState | None:
    """The state of the governor ``workflow_id`` (its query), or None when it has
    ended (not found).

    A query is answered by a worker polling :data:`GOVERNOR_QUEUE`; it is bounded by
    the client's wait (``STACCATO_CLIENT_WAIT_S``, :mod:`staccato.settings`) and by
    :func:`~staccato.settled_query.query_deadline_s` (below the governors' sticky
    timeout), and sent only once the governor has no pending workflow task
    (:func:`~staccato.settled_query.settled_query`).

    Raises:
        StaccatoError: no answer in that time (no worker runs, or none keeps up), or
            the governor's worker has not taken its latest workflow task: the limits
            are kept in Temporal all the same, so this is not "no limits".
    """
    wanted_s = settings.current().client_wait_s
    # below the governors' sticky timeout, and only once the governor has no pending
    # workflow task (staccato.settled_query, docs/architecture.md "Queries and replay")
    wait_s = query_deadline_s(wanted_s, sticky_timeout_s=GOVERNOR_STICKY_S)
    try:
        state: GovernorState = await settled_query(
            client.get_workflow_handle(workflow_id),
            STATE_QUERY,
            result_type=GovernorState,
            rpc_timeout_s=wanted_s,
            sticky_timeout_s=GOVERNOR_STICKY_S,
            # a command asked once: the whole wait for its worker to take its task
            settle_s=wanted_s,
        )
    except NotSettledError as err:
        raise _unanswered(
            workflow_id,
            wanted_s,
            f"{err.reason}, so it was not asked (a query now could "
            "replay events it has not handled)",
        ) from None
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return None  # ended meanwhile
        raise _unanswered(workflow_id, wait_s, err.message) from None
    return state


def _unanswered(workflow_id: str, wait_s: float, why: str) -> StaccatoError:
    """The error of a governor (``workflow_id``) that did not answer in ``wait_s``
    seconds (``why``: the cause as known)."""
    return StaccatoError(
        f"the governor {workflow_id} did not answer in {wait_s:g} s "
        f"(STACCATO_CLIENT_WAIT_S): no worker polls task queue {GOVERNOR_QUEUE!r}, "
        "or none keeps up; limits stay stored in Temporal, start a worker "
        f"(`staccato up` or `staccato worker`) to read or change them ({why})"
    )


async def list_limits(client: Client) -> list[LimitView]:
    """Every running governor's limits, holders and queue, sorted by target.

    Raises:
        StaccatoError: a governor does not answer (:func:`governor_state`).
    """
    ids = [
        w.id
        async for w in client.list_workflows(
            "WorkflowType = 'GovernorWorkflow' AND ExecutionStatus = 'Running'"
        )
    ]

    async def one(workflow_id: str) -> LimitView | None:
        state = await governor_state(client, workflow_id)
        if state is None:
            return None  # ended meanwhile
        return LimitView(
            target=state.name,
            limits=state.limits,
            active=len(state.holders),
            streams=sum(h.streams for h in state.holders),
            queued=len(state.waiters),
            rate_per_stream=rate_per_stream(state.limits.max_rate, state.holders),
        )

    views = [v for v in await asyncio.gather(*(one(i) for i in ids)) if v is not None]
    return sorted(views, key=lambda v: v.target)
