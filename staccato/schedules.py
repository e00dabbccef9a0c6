"""Recurring transfers on Temporal Schedules (async Python API).

    staccato = await StaccatoClient.connect()
    schedules = Schedules(staccato)
    await schedules.create(
        "nightly", "https://example.com/data.bin", "/backup/data.bin",
        Timing(cron="30 2 * * *", time_zone="Europe/Paris"),
    )
    view = await schedules.describe("nightly")     # next runs, recent runs and outcomes

A schedule named NAME is the Temporal Schedule ``staccato-schedule-NAME``. Its action
starts ``TransferWorkflow`` with the validated request under the workflow id
``staccato-schedule-NAME``, to which Temporal appends the run's scheduled time
(``staccato-schedule-NAME-2026-12-01T02:30:00Z``), so every run has its own id and
``staccato status ID`` follows it. The runs carry the same memo and search attributes
as a ``staccato submit`` (source, destination, state).

Everything a user types is checked before Temporal is asked anything, in
:mod:`staccato.schedule_timing` (re-exported here): :func:`check_name`,
:func:`parse_every`, :func:`check_cron`, :func:`check_time_zone`, :func:`parse_at`,
:func:`parse_catchup_window`, :class:`Timing`; each raises
:class:`InvalidScheduleError` naming the option and what was expected.
"""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field
from temporalio.client import (
    Schedule,
    ScheduleActionExecution,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionResult,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleDescription,
    ScheduleHandle,
    SchedulePolicy,
    ScheduleState,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from staccato.client import StaccatoClient
from staccato.errors import InvalidURLError, StaccatoError, TransferNotFoundError
from staccato.models import TransferOptions, TransferRequest, TransferState
from staccato.run_fields import runs_tuned
from staccato.schedule_timing import (
    MAX_NAME_CHARS,
    SCHEDULE_ID_PREFIX,
    SCHEDULE_SOURCE_REMEDY,
    InvalidScheduleError,
    Overlap,
    Timing,
    check_at,
    check_cron,
    check_name,
    check_time_zone,
    duration_text,
    parse_at,
    parse_catchup_window,
    parse_every,
    schedule_id,
)
from staccato.urls import file_source_problem
from staccato.workflows import search_attributes as sa

__all__ = [
    "MAX_NAME_CHARS",
    "SCHEDULE_ID_PREFIX",
    "SCHEDULE_SOURCE_REMEDY",
    "InvalidScheduleError",
    "Overlap",
    "ScheduleExistsError",
    "ScheduleNotFoundError",
    "ScheduleView",
    "ScheduledRun",
    "Schedules",
    "Timing",
    "TriggerOutcome",
    "check_at",
    "check_cron",
    "check_name",
    "check_time_zone",
    "duration_text",
    "parse_at",
    "parse_catchup_window",
    "parse_every",
    "schedule_id",
    "scheduled_options",
]

_PAUSE_NOTE = "paused with `staccato schedule pause`"
_UNPAUSE_NOTE = "unpaused with `staccato schedule unpause`"


class ScheduleNotFoundError(StaccatoError):
    """No Staccato schedule has this name."""


class ScheduleExistsError(StaccatoError):
    """A schedule with this name exists already."""


class ScheduledRun(BaseModel):
    """One run a schedule started, and how it went.

    Attributes:
        workflow_id: the run's transfer id (``staccato-schedule-NAME-<scheduled time>``).
        run_id: its Temporal run id.
        scheduled_at / started_at: when it was due / started (UTC).
        state: its transfer state (``unknown`` once Temporal no longer keeps it).
        bytes_done / bytes_total: bytes.
        error: why it failed or was cancelled.
        up_to_date: True when it completed without copying (the destination already
            matched at the options' sync level); None otherwise.
    """

    workflow_id: str
    run_id: str
    scheduled_at: datetime
    started_at: datetime
    state: str
    bytes_done: int = 0
    bytes_total: int | None = None
    error: str | None = None
    up_to_date: bool | None = None


class ScheduleView(BaseModel):
    """A Staccato schedule as ``schedule list`` / ``describe`` show it.

    Attributes:
        name / id: the schedule's name and Temporal Schedule id.
        source / destination: the transfer's URLs (a source's query redacted).
        timing: ``every 1h``, ``cron '…' (zone)`` or ``at …``.
        paused / note: paused, and Temporal's note on the last pause or unpause.
        overlap: the overlap policy; catchup_window_s: seconds (None: Temporal's default, 1 year).
        options: the transfer options of every run (``TransferOptions`` as JSON), but
            for a tuned schedule (``tuning`` true: neither ``--streams`` nor
            ``--chunk-size`` given) ``streams`` and ``chunk_size`` are None: each run's
            are chosen per link (its ``status``' ``tuning``). A local copy's ``tuning``
            is false (:func:`staccato.run_fields.runs_tuned`): its runs are not tuned.
        next_runs: the next times it is due (UTC, at most 10, none when paused).
        recent_runs: the latest runs it started, oldest first (Temporal keeps 10).
        running: workflow ids of its runs still running.
        runs_started / runs_skipped / runs_missed: runs it started, skipped by the
            overlap policy, and missed beyond the catch-up window.
        remaining_runs: runs left for a one-off (``--at``) schedule; None if unlimited.
    """

    name: str
    id: str
    source: str
    destination: str
    timing: str
    paused: bool
    note: str = ""
    overlap: str = Overlap.skip.value
    catchup_window_s: float | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    next_runs: list[datetime] = Field(default_factory=list)
    recent_runs: list[ScheduledRun] = Field(default_factory=list)
    running: list[str] = Field(default_factory=list)
    runs_started: int = 0
    runs_skipped: int = 0
    runs_missed: int = 0
    remaining_runs: int | None = None


class TriggerOutcome(BaseModel):
    """What ``trigger`` did: ``started`` (``workflow_id`` is the new run), ``skipped``
    (a run was going and the overlap policy dropped the new one; ``running`` names it),
    or ``requested`` (Temporal took the request but no run showed within the wait)."""

    outcome: str
    workflow_id: str | None = None
    running: list[str] = Field(default_factory=list)


def scheduled_options(options: TransferOptions | None) -> TransferOptions:
    """The options of a scheduled run: ``options``, with ``if_busy`` ``wait`` unless
    the caller set it (a scheduled run waits for a busy destination; a CLI submission
    fails at once)."""
    options = options or TransferOptions()
    if "if_busy" in options.model_fields_set:
        return options
    return TransferOptions.model_validate({**options.model_dump(), "if_busy": "wait"})


class Schedules:
    """Create and manage recurring transfers through a :class:`StaccatoClient`.

    Args:
        client: a connected client; its ``task_queue`` is where the runs go.
    """

    def __init__(self, client: StaccatoClient) -> None:
        self.client = client
        self.temporal = client.temporal

    def _handle(self, name: str) -> ScheduleHandle:
        return self.temporal.get_schedule_handle(schedule_id(check_name(name)))

    async def _describe(self, name: str) -> ScheduleDescription:
        """Raises ScheduleNotFoundError when there is no such (Staccato) schedule."""
        try:
            description = await self._handle(name).describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                raise ScheduleNotFoundError(
                    f"no schedule {name!r} (`staccato schedule list` shows the schedules)"
                ) from None
            raise
        action = description.schedule.action
        if not (
            isinstance(action, ScheduleActionStartWorkflow)
            and action.workflow == "TransferWorkflow"
        ):
            raise ScheduleNotFoundError(
                f"schedule {description.id!r} exists but does not run Staccato transfers"
            )
        return description

    async def create(
        self,
        name: str,
        source: str,
        destination: str,
        timing: Timing,
        options: TransferOptions | None = None,
        *,
        overlap: Overlap = Overlap.skip,
        catchup_window: timedelta | None = None,
        paused: bool = False,
        pause_on_failure: bool = False,
    ) -> ScheduleView:
        """Create schedule ``name`` copying ``source`` to ``destination`` at ``timing``.

        ``options`` as for submit; a run due while another transfer writes the
        destination waits for it unless ``options`` set ``if_busy`` (:func:`scheduled_options`).
        Checked as ``staccato schedule create`` checks it, with the same functions
        and words: a local ``source`` that is a directory is refused (each run copies
        one file: :func:`staccato.urls.file_source_problem`), and so is a
        ``timing.at`` that is not in the future (:func:`check_at`: it would never run).

        Raises:
            InvalidScheduleError: a bad name; ``timing.at`` not in the future.
            InvalidURLError: bad URLs (as for submit); a local source that is a
                directory.
            ScheduleExistsError: a schedule of this name exists.
        """
        check_name(name)
        request = StaccatoClient.make_request(source, destination, scheduled_options(options))
        problem = file_source_problem(source, SCHEDULE_SOURCE_REMEDY)
        if problem is not None:
            raise InvalidURLError(problem)
        if timing.at is not None:
            check_at(timing.at, "Timing.at")
        try:
            existing = await self.describe(name)
        except ScheduleNotFoundError:
            pass
        else:
            raise ScheduleExistsError(
                f"schedule {name!r} already exists ({existing.timing}, {existing.source} -> "
                f"{existing.destination}); delete it first with `staccato schedule delete {name}`"
            )
        summary = f"{request.source} -> {request.destination}"
        attributes = TypedSearchAttributes(
            [
                SearchAttributePair(sa.SOURCE, sa.keyword(request.source)),
                SearchAttributePair(sa.DESTINATION, sa.keyword(request.destination)),
            ]
        )
        action = ScheduleActionStartWorkflow(
            "TransferWorkflow",
            request,
            id=schedule_id(name),
            task_queue=self.client.task_queue,
            memo={
                "source": request.source,
                "destination": request.destination,
                "request_hash": request.request_hash(),
                "chunk_size": request.options.chunk_size,
                "streams": request.options.streams,
                "schedule": name,
            },
            typed_search_attributes=TypedSearchAttributes(
                [*attributes, SearchAttributePair(sa.STATE, TransferState.scheduled.value)]
            ),
            static_summary=f"{summary} (schedule {name})"[:200],
        )
        one_off = timing.at is not None
        schedule = Schedule(
            action=action,
            spec=timing.spec(),
            policy=SchedulePolicy(
                overlap=overlap.temporal(),
                catchup_window=catchup_window,
                pause_on_failure=pause_on_failure,
            ),
            state=ScheduleState(
                paused=paused,
                note="created paused" if paused else "",
                limited_actions=one_off,
                remaining_actions=1 if one_off else 0,
            ),
        )
        try:
            await self.temporal.create_schedule(
                schedule_id(name),
                schedule,
                memo={
                    "source": request.source,
                    "destination": request.destination,
                    "timing": timing.text(),
                },
                search_attributes=attributes,
            )
        except ScheduleAlreadyRunningError:
            raise ScheduleExistsError(
                f"schedule {name!r} already exists; delete it first with "
                f"`staccato schedule delete {name}`"
            ) from None
        return await self.describe(name)

    async def describe(self, name: str) -> ScheduleView:
        """The schedule, its next runs and its recent runs with their outcomes.

        Raises:
            InvalidScheduleError: a bad name.
            ScheduleNotFoundError: no such schedule.
        """
        description = await self._describe(name)
        view = await self._view(name, description)
        view.recent_runs = [await self._run(result) for result in description.info.recent_actions]
        return view

    async def list(self) -> list[ScheduleView]:
        """Every Staccato schedule (by name), each with its latest run only.

        Schedules of the namespace that Staccato did not make are skipped. Temporal's
        list of schedules is eventually consistent: one created a moment ago may be
        missing for a second.
        """
        views: list[ScheduleView] = []
        async for entry in await self.temporal.list_schedules():
            if not entry.id.startswith(SCHEDULE_ID_PREFIX):
                continue
            name = entry.id[len(SCHEDULE_ID_PREFIX) :]
            try:
                description = await self._describe(name)
            except (ScheduleNotFoundError, InvalidScheduleError):
                continue  # deleted since listed, or not Staccato's
            view = await self._view(name, description)
            if description.info.recent_actions:
                view.recent_runs = [await self._run(description.info.recent_actions[-1])]
            views.append(view)
        return sorted(views, key=lambda v: v.name)

    async def _view(self, name: str, description: ScheduleDescription) -> ScheduleView:
        try:
            memo = dict(await description.memo())
        except Exception:  # a memo this client cannot decode (another codec key)
            memo = {}
        schedule, info = description.schedule, description.info
        options: dict[str, Any] = {}
        action = schedule.action
        if isinstance(action, ScheduleActionStartWorkflow) and action.args:
            try:
                (request,) = await self.temporal.data_converter.decode(
                    list(action.args), [TransferRequest]
                )
                options = request.options.model_dump(mode="json")
                if runs_tuned(request):
                    # chosen per link at each run (its `status --json` says what in
                    # `tuning`); the fixed 4 x 16 MiB are only the fallback, and shown
                    # beside `tuning: true` they read as if fixed
                    options.update(streams=None, chunk_size=None)
                elif request.options.tuning:
                    # a local copy is not tuned (links.tuned_link): its runs run the
                    # fixed streams and chunk size shown (it said "tuned per link")
                    options.update(tuning=False)
                memo.setdefault("source", request.source)
                memo.setdefault("destination", request.destination)
            except Exception:  # an input this client cannot decode (another codec key)
                options = {}
        return ScheduleView(
            name=name,
            id=description.id,
            source=str(memo.get("source", "?")),
            destination=str(memo.get("destination", "?")),
            timing=str(memo.get("timing", "?")),
            paused=schedule.state.paused,
            note=schedule.state.note or "",
            overlap=Overlap[schedule.policy.overlap.name.lower()].value,
            catchup_window_s=(
                schedule.policy.catchup_window.total_seconds()
                if schedule.policy.catchup_window
                else None
            ),
            options=options,
            # Temporal still computes due times while paused; none of them will run
            next_runs=[]
            if schedule.state.paused
            else [t.astimezone(UTC) for t in info.next_action_times],
            running=_workflow_ids(info.running_actions),
            runs_started=info.num_actions,
            runs_skipped=info.num_actions_skipped_overlap,
            runs_missed=info.num_actions_missed_catchup_window,
            remaining_runs=(
                schedule.state.remaining_actions if schedule.state.limited_actions else None
            ),
        )

    async def _run(self, result: ScheduleActionResult) -> ScheduledRun:
        """A recent action with its transfer's state (one status call)."""
        action = result.action
        assert isinstance(action, ScheduleActionExecutionStartWorkflow)
        run = ScheduledRun(
            workflow_id=action.workflow_id,
            run_id=action.first_execution_run_id,
            scheduled_at=result.scheduled_at.astimezone(UTC),
            started_at=result.started_at.astimezone(UTC),
            state="unknown",
        )
        try:
            status = await self.client.status(action.workflow_id, run_id=run.run_id)
        except TransferNotFoundError:
            return run  # past the namespace's retention
        run.state = status.state.value
        run.bytes_done = status.bytes_done
        run.bytes_total = status.bytes_total
        run.error = status.error
        run.up_to_date = status.up_to_date
        return run

    async def pause(self, name: str) -> None:
        """Pause: no run starts until ``unpause`` (a running one goes on).

        Raises:
            ScheduleNotFoundError: no such schedule.
        """
        await self._describe(name)
        await self._handle(name).pause(note=_PAUSE_NOTE)

    async def unpause(self, name: str) -> None:
        """Unpause: runs start again at the next due time (missed ones are not made up).

        Raises:
            ScheduleNotFoundError: no such schedule.
        """
        await self._describe(name)
        await self._handle(name).unpause(note=_UNPAUSE_NOTE)

    async def trigger(self, name: str, *, wait_s: float = 10.0) -> TriggerOutcome:
        """Start one run now (also when paused), under the schedule's overlap policy,
        and wait up to ``wait_s`` seconds to see whether it started or was skipped.

        Raises:
            ScheduleNotFoundError: no such schedule.
        """
        before = (await self._describe(name)).info
        await self._handle(name).trigger()
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            info = (await self._describe(name)).info
            if info.num_actions > before.num_actions and info.recent_actions:
                return TriggerOutcome(
                    outcome="started",
                    workflow_id=next(iter(_workflow_ids([info.recent_actions[-1].action])), None),
                )
            if info.num_actions_skipped_overlap > before.num_actions_skipped_overlap:
                return TriggerOutcome(
                    outcome="skipped", running=_workflow_ids(info.running_actions)
                )
            await asyncio.sleep(0.2)
        return TriggerOutcome(outcome="requested")

    async def delete(self, name: str) -> builtins.list[str]:
        """Delete the schedule; runs still going go on. Returns their workflow ids.

        Raises:
            ScheduleNotFoundError: no such schedule.
        """
        description = await self._describe(name)
        await self._handle(name).delete()
        return _workflow_ids(description.info.running_actions)


def _workflow_ids(actions: Sequence[ScheduleActionExecution]) -> builtins.list[str]:
    """The workflow ids of a schedule's actions (all start a workflow here)."""
    return [a.workflow_id for a in actions if isinstance(a, ScheduleActionExecutionStartWorkflow)]
