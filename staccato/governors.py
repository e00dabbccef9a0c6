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

from staccato.activities.limits import governor_running, start_governor_signal
from staccato.links import LimitTarget, governor_id
from staccato.models import GovernorState, LimitChange, Limits
from staccato.windows import parse_window
from staccato.workflows.governor import SET_LIMITS_SIGNAL, STATE_QUERY


class LimitView(BaseModel):
    """One line of ``staccato limit list``: a governor's limits and load."""

    target: str
    limits: Limits
    active: int
    streams: int
    queued: int
    #: the share of ``max_rate`` each held stream reads at (bytes/s); None without one
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


async def list_limits(client: Client) -> list[LimitView]:
    """Every running governor's limits, holders and queue, sorted by target."""
    ids = [
        w.id
        async for w in client.list_workflows(
            "WorkflowType = 'GovernorWorkflow' AND ExecutionStatus = 'Running'"
        )
    ]

    async def one(workflow_id: str) -> LimitView | None:
        try:
            state = await client.get_workflow_handle(workflow_id).query(
                STATE_QUERY, result_type=GovernorState
            )
        except RPCError:
            return None  # ended meanwhile
        return LimitView(
            target=state.name,
            limits=state.limits,
            active=len(state.holders),
            streams=sum(h.streams for h in state.holders),
            queued=len(state.waiters),
            rate_per_stream=(
                None
                if state.limits.max_rate is None
                else state.limits.max_rate / max(1, sum(h.streams for h in state.holders))
            ),
        )

    views = [v for v in await asyncio.gather(*(one(i) for i in ids)) if v is not None]
    return sorted(views, key=lambda v: v.target)
