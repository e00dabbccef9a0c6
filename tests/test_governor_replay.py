"""A governor's decisions depend on its history's events, not on the times of its
workflow tasks: a real governor history (a holder checked by ``find_ended`` while it
copies) replays as recorded, and replays the same when every event's time is moved.

A governor that compared ``workflow.now()`` with its last check to choose between
"run ``find_ended`` now" and "start a timer" could take the other branch on a replay
whose task times differ from the first execution's, and fail with a nondeterminism
error (TMPRL1100, "Activity machine does not handle this event: TimerStarted") that
stops it granting slots for good. The check is now driven by a timer's firing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory

from staccato.client import StaccatoClient
from staccato.links import endpoint_of, governor_id, parse_limit_target
from staccato.workflows.governor import FIND_ENDED, GovernorWorkflow
from tests.helpers import MiB, replayer_of, sha256_file, write_random
from tests.servers.nginx import NginxServer
from tests.servers.pacing_proxy import PacingProxy
from tests.test_limits import FULL_SPEED, OPTIONS, governor_ends, limits, until

__all__ = ["limits"]  # the fixture


async def _find_ended_scheduled(client: StaccatoClient, workflow_id: str) -> int:
    """How many ``find_ended`` activities ``workflow_id``'s current run has scheduled."""
    count = 0
    async for event in client.temporal.get_workflow_handle(workflow_id).fetch_history_events():
        if (
            event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
            and event.activity_task_scheduled_event_attributes.activity_type.name == FIND_ENDED
        ):
            count += 1
    return count


def _times_frozen(history: WorkflowHistory) -> WorkflowHistory:
    """``history`` with every event's time set to the first event's: each workflow
    task of the replay sees the start time as ``workflow.now()``."""
    events = list(history.events)
    first = events[0].event_time
    for event in events:
        event.event_time.CopyFrom(first)
    return WorkflowHistory(history.workflow_id, events)


async def test_governor_replays_whatever_its_task_times(
    client: StaccatoClient,
    limits: Callable[..., Awaitable[None]],
    nginx_ranges: NginxServer,
    http_root: Path,
    data_dir: Path,
) -> None:
    """max-active 1 on a paced endpoint: the holder copies (at 100 kB/s: 4 MiB would
    take 42 s) until the governor has run ``find_ended`` (one check per 5 s); then it
    copies at full speed, and the governor's history replays as recorded and with all
    its event times frozen at its start."""
    source = PacingProxy(nginx_ranges.port, rate_bytes_per_s=100_000).start()
    try:
        name = endpoint_of(f"http://127.0.0.1:{source.port}")
        await limits(name, max_active=1)
        digest = write_random(http_root / "checked.bin", 4 * MiB, seed=31)
        transfer = (
            await client.start(source.url("checked.bin"), str(data_dir / "checked.bin"), OPTIONS)
        ).id
        governor = governor_id(parse_limit_target(name).name)

        async def checked() -> bool:
            return await _find_ended_scheduled(client, governor) >= 1

        await until(checked, "the governor checks its holder", timeout_s=120)
        source.rate = FULL_SPEED
        assert (await asyncio.wait_for(client.wait(transfer), 120)).bytes == 4 * MiB
        assert sha256_file(data_dir / "checked.bin") == digest
        history = await client.temporal.get_workflow_handle(governor).fetch_history()
    finally:
        source.stop()
    await governor_ends(client, name)
    replayer = replayer_of(GovernorWorkflow)
    await replayer.replay_workflow(history)
    await replayer.replay_workflow(_times_frozen(history))
