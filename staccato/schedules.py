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

Everything a user types is checked here before Temporal is asked anything
(:func:`check_name`, :func:`parse_every`, :func:`check_cron`, :func:`check_time_zone`,
:func:`parse_at`, :func:`parse_catchup_window`); each raises
:class:`InvalidScheduleError` naming the option and what was expected.

The cron dialect is Temporal's (the server compiles it into calendar specs): 5 fields
(minute hour day-of-month month day-of-week), 6 (+ year) or 7 (second first, + year);
``*``, ``a``, ``a-b``, ``a/step``, ``a-b/step`` and lists ``a,b``; month names (3+
letters), day names (2+ letters, 0 or 7 = Sunday); ``@yearly``, ``@annually``,
``@monthly``, ``@weekly``, ``@daily``, ``@midnight``, ``@hourly``. Unlike classic cron, a
day-of-month AND a day-of-week must both match.
"""

from __future__ import annotations

import asyncio
import builtins
import re
import time
import zoneinfo
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from temporalio.client import (
    Schedule,
    ScheduleActionExecution,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionResult,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleDescription,
    ScheduleHandle,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleState,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from staccato.client import StaccatoClient
from staccato.errors import StaccatoError, TransferNotFoundError
from staccato.models import TransferOptions, TransferRequest, TransferState
from staccato.workflows import search_attributes as sa

SCHEDULE_ID_PREFIX = "staccato-schedule-"
MAX_NAME_CHARS = 64
#: Temporal refuses a catch-up window under 10 s (the scheduler's own minimum).
MIN_CATCHUP_WINDOW_S = 10
MAX_SCHEDULE_DURATION_S = 366 * 86400
#: Temporal's calendar specs cover the years 2000..2100.
MAX_AT_YEAR = 2100
_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_NAME_CHARS - 1}}}")
_DURATION_PART = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PAUSE_NOTE = "paused with `staccato schedule pause`"
_UNPAUSE_NOTE = "unpaused with `staccato schedule unpause`"


class InvalidScheduleError(StaccatoError):
    """A schedule option or name the user gave is malformed (a usage error)."""


class ScheduleNotFoundError(StaccatoError):
    """No Staccato schedule has this name."""


class ScheduleExistsError(StaccatoError):
    """A schedule with this name exists already."""


class Overlap(StrEnum):
    """What a run due while the previous one still runs does (Temporal's overlap policy).

    skip: it is dropped (default); buffer-one: it starts when the running one ends
    (at most one waits); buffer-all: every one waits its turn; cancel-other: the
    running one is cancelled; terminate-other: the running one is terminated;
    allow-all: it starts at once.
    """

    skip = "skip"
    buffer_one = "buffer-one"
    buffer_all = "buffer-all"
    cancel_other = "cancel-other"
    terminate_other = "terminate-other"
    allow_all = "allow-all"

    def temporal(self) -> ScheduleOverlapPolicy:
        """The Temporal policy of this name."""
        return ScheduleOverlapPolicy[self.name.upper()]


def schedule_id(name: str) -> str:
    """The Temporal Schedule id (and the runs' workflow id prefix) of schedule ``name``."""
    return SCHEDULE_ID_PREFIX + name


def check_name(name: str) -> str:
    """Return ``name`` if it can name a schedule.

    Raises:
        InvalidScheduleError: not 1..64 of letters, digits, ``.``, ``_``, ``-``,
            starting with a letter or digit (it becomes part of Temporal ids).
    """
    if not _NAME.fullmatch(name):
        raise InvalidScheduleError(
            f"schedule name {name!r}: expected 1 to {MAX_NAME_CHARS} letters, digits, '.', "
            "'_' or '-', starting with a letter or digit (e.g. nightly-backup)"
        )
    return name


def _duration_s(text: str) -> int | None:
    """Whole seconds of ``90``, ``90s``, ``5m``, ``1h30m``, ``2d``; None if not one."""
    cleaned = text.strip().lower().replace(" ", "")
    if cleaned.isdigit():
        return int(cleaned)
    parts = _DURATION_PART.findall(cleaned)
    if not parts or "".join(n + u for n, u in parts) != cleaned:
        return None
    return sum(int(n) * _UNITS[u] for n, u in parts)


def parse_every(text: str) -> timedelta:
    """Parse ``--every``: ``30s``, ``5m``, ``1h``, ``1h30m``, ``1d`` (whole seconds).

    Intervals count from the Unix epoch (``--every 1h`` runs on the hour, UTC).

    Raises:
        InvalidScheduleError: not a duration, or outside 1 s .. 366 days.
    """
    seconds = _duration_s(text)
    if seconds is None:
        raise InvalidScheduleError(
            f"--every {text!r}: expected an interval such as 30s, 5m, 1h, 1h30m or 1d"
        )
    if not 1 <= seconds <= MAX_SCHEDULE_DURATION_S:
        raise InvalidScheduleError(f"--every {text!r}: expected between 1s and 366d")
    return timedelta(seconds=seconds)


def parse_catchup_window(text: str) -> timedelta:
    """Parse ``--catchup-window``: how far back runs missed while Temporal was down
    are still made up (``10m``, ``1h``, ``1d``).

    Raises:
        InvalidScheduleError: not a duration, or outside 10 s (Temporal's minimum) .. 366 days.
    """
    seconds = _duration_s(text)
    if seconds is None or not MIN_CATCHUP_WINDOW_S <= seconds <= MAX_SCHEDULE_DURATION_S:
        raise InvalidScheduleError(
            f"--catchup-window {text!r}: expected a duration between 10s and 366d, e.g. 10m, 1h, 1d"
        )
    return timedelta(seconds=seconds)


def check_time_zone(name: str) -> str:
    """Return ``name`` if it is an IANA time zone (``Europe/Paris``, ``UTC``).

    Raises:
        InvalidScheduleError: not a time zone name this machine's tz database knows.
    """
    if name not in zoneinfo.available_timezones() and name != "UTC":
        raise InvalidScheduleError(
            f"--time-zone {name!r}: expected an IANA time zone name such as UTC, "
            "Europe/Paris or America/New_York"
        )
    return name


def parse_at(text: str, time_zone: str | None = None, *, now: datetime | None = None) -> datetime:
    """Parse ``--at``: an ISO 8601 time (``2026-12-02T03:00``, ``2026-12-02 03:00:00+01:00``)
    or a delay from now (``10m``, ``2h``). A time without an offset is in ``time_zone``
    (default UTC). Returns an aware UTC datetime, whole seconds.

    Raises:
        InvalidScheduleError: neither form, not in the future, or after 2100 (the end of
            Temporal's calendar).
    """
    now = now or datetime.now(UTC)
    delay = _duration_s(text)
    if delay is not None:
        at = now + timedelta(seconds=max(delay, 1))
    else:
        try:
            parsed = datetime.fromisoformat(text.strip())
        except ValueError:
            raise InvalidScheduleError(
                f"--at {text!r}: expected an ISO 8601 time such as 2026-12-02T03:00 or "
                "2026-12-02T03:00+01:00, or a delay such as 10m or 2h"
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=zoneinfo.ZoneInfo(time_zone or "UTC"))
        at = parsed.astimezone(UTC)
    at = at.replace(microsecond=0) + (timedelta(seconds=1) if at.microsecond else timedelta())
    if at <= now:
        raise InvalidScheduleError(
            f"--at {text!r}: {at.isoformat()} is not in the future (now {now.isoformat(timespec='seconds')})"
        )
    if at.year > MAX_AT_YEAR:
        raise InvalidScheduleError(f"--at {text!r}: expected a time before {MAX_AT_YEAR + 1}")
    return at


_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = tuple(
    "january february march april may june july august september october november december".split()
)
_DAYS = tuple("sunday monday tuesday wednesday thursday friday saturday".split())
# (field name, lowest, highest, names, shortest name prefix)
_SECOND = ("second", 0, 59, (), 0)
_MINUTE = ("minute", 0, 59, (), 0)
_HOUR = ("hour", 0, 23, (), 0)
_DOM = ("day of month", 1, 31, (), 0)
_MONTH = ("month", 1, 12, _MONTHS, 3)
_DOW = ("day of week", 0, 7, _DAYS, 2)
_YEAR = ("year", 2000, 2100, (), 0)
_LAYOUTS = {
    5: (_MINUTE, _HOUR, _DOM, _MONTH, _DOW),
    6: (_MINUTE, _HOUR, _DOM, _MONTH, _DOW, _YEAR),
    7: (_SECOND, _MINUTE, _HOUR, _DOM, _MONTH, _DOW, _YEAR),
}


def _cron_value(text: str, field: tuple[str, int, int, tuple[str, ...], int]) -> int:
    name, low, high, names, shortest = field
    lowered = text.lower()
    if names and len(lowered) >= shortest:
        for index, full in enumerate(names):
            if full.startswith(lowered):
                return index + (1 if field is _MONTH else 0)
    if not lowered.isdigit():
        raise ValueError(f"{name} {text!r} is not a number" + (" or a name" if names else ""))
    value = int(lowered)
    if not low <= value <= high:
        raise ValueError(f"{name} {value} is outside {low}-{high}")
    return value


def _check_cron_field(text: str, field: tuple[str, int, int, tuple[str, ...], int]) -> None:
    for part in text.split(","):
        span, slash, step = part.partition("/")
        if slash and not (step.isdigit() and int(step) >= 1):
            raise ValueError(f"{field[0]} step {step!r} must be a whole number >= 1")
        if span == "*":
            continue
        first, dash, last = span.partition("-")
        start = _cron_value(first, field)
        if dash and _cron_value(last, field) < start:
            raise ValueError(f"{field[0]} range {span!r} ends before it starts")


def check_cron(text: str) -> str:
    """Return ``text`` (trimmed) if Temporal's cron dialect accepts it (module docstring).

    Raises:
        InvalidScheduleError: wrong number of fields, a value out of range, a
            ``CRON_TZ=``/``TZ=`` prefix (use ``--time-zone``) or ``@every`` (use ``--every``).
    """
    cron = " ".join(text.split())
    if cron.startswith(("CRON_TZ=", "TZ=")):
        raise InvalidScheduleError(
            f"--cron {text!r}: give the time zone with --time-zone, not in the expression"
        )
    if cron.startswith("@every"):
        raise InvalidScheduleError(f"--cron {text!r}: use --every for intervals")
    fields = _MACROS.get(cron, cron).split()
    layout = _LAYOUTS.get(len(fields))
    if layout is None:
        raise InvalidScheduleError(
            f"--cron {text!r}: expected 5 fields (minute hour day-of-month month "
            "day-of-week, e.g. '30 2 * * *'), 6 (+ year), 7 (second first, + year) "
            "or @hourly/@daily/@weekly/@monthly/@yearly"
        )
    try:
        for value, field in zip(fields, layout, strict=True):
            _check_cron_field(value, field)
    except ValueError as err:
        raise InvalidScheduleError(f"--cron {text!r}: {err}") from None
    return cron


class Timing(BaseModel):
    """When a schedule runs: exactly one of ``every_s``, ``cron``, ``at``.

    Attributes:
        every_s: seconds between runs, counted from the Unix epoch.
        cron: a cron expression in Temporal's dialect, read in ``time_zone``.
        at: one run at this instant (UTC).
        time_zone: IANA name for ``cron`` (default UTC); shown for ``at``.

    Raises (on construction):
        InvalidScheduleError: none or several of every_s/cron/at; a time zone with
            every_s; a bad cron or time zone.
    """

    model_config = ConfigDict(frozen=True)

    every_s: int | None = Field(None, ge=1, le=MAX_SCHEDULE_DURATION_S)
    cron: str | None = None
    at: datetime | None = None
    time_zone: str | None = None

    @model_validator(mode="after")
    def _one(self) -> Timing:
        given = [n for n in ("every_s", "cron", "at") if getattr(self, n) is not None]
        if len(given) != 1:
            raise InvalidScheduleError("give exactly one of --every, --cron, --at")
        if self.every_s is not None and self.time_zone:
            raise InvalidScheduleError(
                "--time-zone applies to --cron and --at; --every counts from the Unix epoch"
            )
        if self.cron is not None:
            check_cron(self.cron)
        if self.time_zone:
            check_time_zone(self.time_zone)
        return self

    def spec(self) -> ScheduleSpec:
        """The Temporal schedule spec."""
        if self.every_s is not None:
            return ScheduleSpec(
                intervals=[ScheduleIntervalSpec(every=timedelta(seconds=self.every_s))]
            )
        if self.cron is not None:
            return ScheduleSpec(
                cron_expressions=[self.cron], time_zone_name=self.time_zone or "UTC"
            )
        assert self.at is not None
        at = self.at.astimezone(UTC)
        return ScheduleSpec(
            calendars=[
                ScheduleCalendarSpec(
                    second=[ScheduleRange(at.second)],
                    minute=[ScheduleRange(at.minute)],
                    hour=[ScheduleRange(at.hour)],
                    day_of_month=[ScheduleRange(at.day)],
                    month=[ScheduleRange(at.month)],
                    year=[ScheduleRange(at.year)],
                )
            ],
            time_zone_name="UTC",
        )

    def text(self) -> str:
        """``every 1h``, ``cron '30 2 * * *' (Europe/Paris)``, ``at 2026-12-02T03:00:00+01:00``."""
        if self.every_s is not None:
            return f"every {duration_text(self.every_s)}"
        if self.cron is not None:
            return f"cron '{self.cron}' ({self.time_zone or 'UTC'})"
        assert self.at is not None
        return f"at {self.at.astimezone(zoneinfo.ZoneInfo(self.time_zone or 'UTC')).isoformat()}"


def duration_text(seconds: float) -> str:
    """Seconds as :func:`parse_every` reads them: ``90`` -> ``1m30s``, ``86400`` -> ``1d``."""
    rest, parts = int(seconds), []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts) or "0s"


class ScheduledRun(BaseModel):
    """One run a schedule started, and how it went.

    Attributes:
        workflow_id: the run's transfer id (``staccato-schedule-NAME-<scheduled time>``).
        run_id: its Temporal run id.
        scheduled_at / started_at: when it was due / started (UTC).
        state: its transfer state (``unknown`` once Temporal no longer keeps it).
        bytes_done / bytes_total: bytes.
        error: why it failed or was cancelled.
    """

    workflow_id: str
    run_id: str
    scheduled_at: datetime
    started_at: datetime
    state: str
    bytes_done: int = 0
    bytes_total: int | None = None
    error: str | None = None


class ScheduleView(BaseModel):
    """A Staccato schedule as ``schedule list`` / ``describe`` show it.

    Attributes:
        name / id: the schedule's name and Temporal Schedule id.
        source / destination: the transfer's URLs (a source's query redacted).
        timing: ``every 1h``, ``cron '…' (zone)`` or ``at …``.
        paused / note: paused, and Temporal's note on the last pause or unpause.
        overlap: the overlap policy; catchup_window_s: seconds (None: Temporal's default, 1 year).
        options: the transfer options of every run (``TransferOptions`` as JSON).
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
    fails at once). Builds whose TransferOptions have no ``if_busy`` keep ``options``."""
    options = options or TransferOptions()
    if "if_busy" not in TransferOptions.model_fields or "if_busy" in options.model_fields_set:
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

        Raises:
            InvalidScheduleError: a bad name.
            InvalidURLError: bad URLs (as for submit).
            ScheduleExistsError: a schedule of this name exists.
        """
        check_name(name)
        request = StaccatoClient.make_request(source, destination, scheduled_options(options))
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
        memo = dict(await description.memo())
        schedule, info = description.schedule, description.info
        options: dict[str, Any] = {}
        action = schedule.action
        if isinstance(action, ScheduleActionStartWorkflow) and action.args:
            try:
                (request,) = await self.temporal.data_converter.decode(
                    list(action.args), [TransferRequest]
                )
                options = request.options.model_dump(mode="json")
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
