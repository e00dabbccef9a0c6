"""Live progress in the Temporal UI: the worker tells each transfer how far its
streams are, without the history growing with the object's size.

A stream heartbeats its checkpoint every ~1 s; Temporal keeps only the last one per
pending activity (no history event). The workflow cannot read heartbeats, so on its
own it knows only finished segments (one segment may be 64 GiB). The reporter, in
the worker's main process (it has the Temporal client), closes that gap:

* :class:`RunningStreams` (a worker interceptor) records which ``copy_stream``
  attempts run on this worker, per transfer run;
* every :data:`TICK_S` seconds :class:`ProgressReporter` describes each such run
  (free: no history event) and, when this worker runs the lowest-numbered started
  stream (so one worker, one signal per transfer) and a report is due, sends the
  ``report_progress`` signal (:class:`~staccato.models.ProgressReport`: bytes per
  running segment from the heartbeats, summed rate); the workflow shows it in its
  current-details line.

History cost: a signal adds ~4 events (WorkflowExecutionSignaled and a workflow task:
scheduled, started, completed). Reports are due every :data:`MIN_PERIOD_S` (9 s, so
the line is never more than ~10 s old) for the first :data:`GROWTH` x 9 s of a run
(27 min: 180 reports, ~720 events); after that the period is the run's age /
:data:`GROWTH` (20 s at 1 h, 8 min at one day), so each doubling of the age adds
GROWTH x ln 2 ~ 125 reports: ~325 reports (~1,300 events) by 1 h, ~900 (~3,600) by
one day, ~1,510 (~6,000) by 30 days (the longest retry budget). No report is sent once the history holds
:data:`MAX_HISTORY_EVENTS`, far below Temporal's 10,240-event warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from temporalio import activity
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from staccato.models import Checkpoint, ProgressReport

log = logging.getLogger("staccato.progress")

#: seconds between two looks at the running transfers
TICK_S = 9.0
#: shortest time between two reports to one transfer (seconds)
MIN_PERIOD_S = 9.0
#: the report period is at least the run's age divided by this
GROWTH = 180
#: no reports once a run's history holds this many events (Temporal warns at 10,240)
MAX_HISTORY_EVENTS = 8000
STREAM_ACTIVITY = "copy_stream"


def report_period(age_s: float) -> float:
    """Seconds between two reports to a transfer run ``age_s`` seconds old."""
    return max(MIN_PERIOD_S, age_s / GROWTH)


def reports_by(age_s: float) -> int:
    """How many reports a run that copies for ``age_s`` seconds receives at most
    (the integral of 1 / :func:`report_period`): for the numbers in the docstring."""
    knee = MIN_PERIOD_S * GROWTH
    if age_s <= knee:
        return int(age_s / MIN_PERIOD_S)
    return int(GROWTH + GROWTH * math.log(age_s / knee))


def segment_of(activity_id: str) -> int | None:
    """The segment index in a stream's activity id ``stream-0003-1``, else None."""
    parts = activity_id.split("-")
    if len(parts) == 3 and parts[0] == "stream" and parts[1].isdigit():
        return int(parts[1])
    return None


@dataclass
class RunningStreams:
    """The ``copy_stream`` attempts running on this worker: (workflow id, run id) ->
    their activity ids. Filled by the interceptor :meth:`interceptor` returns."""

    runs: dict[tuple[str, str], set[str]] = field(default_factory=dict)

    @contextlib.contextmanager
    def running(self, workflow_id: str, run_id: str, activity_id: str) -> Iterator[None]:
        key = (workflow_id, run_id)
        self.runs.setdefault(key, set()).add(activity_id)
        try:
            yield
        finally:
            ids = self.runs.get(key)
            if ids is not None:
                ids.discard(activity_id)
                if not ids:
                    del self.runs[key]

    def interceptor(self) -> Interceptor:
        return _Interceptor(self)


class _Interceptor(Interceptor):
    def __init__(self, streams: RunningStreams) -> None:
        self._streams = streams

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Inbound(next, self._streams)


class _Inbound(ActivityInboundInterceptor):
    """Runs in the worker's main process, around the pool process's activity call."""

    def __init__(self, next: ActivityInboundInterceptor, streams: RunningStreams) -> None:
        super().__init__(next)
        self._streams = streams

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        if info.activity_type != STREAM_ACTIVITY or info.workflow_id is None:
            return await super().execute_activity(input)
        with self._streams.running(info.workflow_id, info.workflow_run_id or "", info.activity_id):
            return await super().execute_activity(input)


class ProgressReporter:
    """Sends ``report_progress`` to the transfers whose streams run here (see the
    module docstring). Never fails the worker: a failed look or signal is logged at
    debug level and tried again at the next tick.

    Args:
        client: the worker's Temporal client (the project's data converter).
        streams: filled by the worker's interceptor.
        tick_s: seconds between two looks.
    """

    def __init__(self, client: Client, streams: RunningStreams, tick_s: float = TICK_S) -> None:
        self._client = client
        self._streams = streams
        self._tick_s = tick_s
        self._last: dict[tuple[str, str], float] = {}  # run -> monotonic time of last report

    async def run(self) -> None:
        """Report until cancelled."""
        next_at = time.monotonic()
        while True:
            next_at += self._tick_s  # on a fixed grid: the ticks do not drift
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            await self.tick()

    async def tick(self) -> None:
        """One look at every run with a stream here; report where due."""
        runs = {key: set(ids) for key, ids in self._streams.runs.items()}
        for key in list(self._last):
            if key not in runs:
                del self._last[key]
        for (workflow_id, run_id), ours in runs.items():
            try:
                await self._report(workflow_id, run_id, ours)
            except Exception as err:  # the next tick tries again
                log.debug("progress report to %s failed: %s", workflow_id, err)

    async def _report(self, workflow_id: str, run_id: str, ours: set[str]) -> None:
        key = (workflow_id, run_id)
        handle = self._client.get_workflow_handle(workflow_id, run_id=run_id)
        description = await handle.describe()
        if description.status != WorkflowExecutionStatus.RUNNING:
            return
        if (description.history_length or 0) >= MAX_HISTORY_EVENTS:
            return
        started: list[tuple[int, Any]] = []
        for pending in description.raw_description.pending_activities:
            segment = segment_of(pending.activity_id)
            if (
                pending.activity_type.name != STREAM_ACTIVITY
                or segment is None
                or pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED
            ):
                continue
            started.append((segment, pending))
        if not started:
            return
        started.sort(key=lambda item: item[0])
        if started[0][1].activity_id not in ours:
            return  # the worker of the lowest-numbered stream reports
        age = (datetime.now(UTC) - (description.start_time or datetime.now(UTC))).total_seconds()
        last = self._last.get(key)
        if last is not None and time.monotonic() - last < report_period(age) - self._tick_s / 2:
            return
        report = ProgressReport()
        for segment, pending in started:
            if not pending.heartbeat_details.payloads:
                continue
            try:
                (details,) = await self._client.data_converter.decode(
                    pending.heartbeat_details.payloads, [Checkpoint]
                )
            except Exception:
                continue
            if isinstance(details, Checkpoint):
                report.segments[segment] = details.bytes_done
                if details.moved_within(_heartbeat_timeout_s(pending)):
                    # a stream waiting on a hung server heartbeats its average rate
                    report.rate_bytes_per_s += details.rate_bytes_per_s
        if not report.segments:
            return
        await handle.signal("report_progress", report)
        self._last[key] = time.monotonic()


#: a stream's heartbeat timeout when its activity does not say (the workflow's default)
_DEFAULT_HEARTBEAT_TIMEOUT_S = 20.0


def _heartbeat_timeout_s(pending: Any) -> float:
    """The heartbeat timeout (seconds) of the pending activity ``pending``."""
    options = pending.activity_options if pending.HasField("activity_options") else None
    if options is not None and options.HasField("heartbeat_timeout"):
        return options.heartbeat_timeout.ToTimedelta().total_seconds() or (
            _DEFAULT_HEARTBEAT_TIMEOUT_S
        )
    return _DEFAULT_HEARTBEAT_TIMEOUT_S
