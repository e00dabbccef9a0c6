"""What a user types to make a schedule, checked before Temporal is asked anything:
the name, when it runs (:class:`Timing`: ``--every``, ``--cron``, ``--at`` and
``--time-zone``), the overlap policy and the catch-up window. Pure: no I/O, no
Temporal calls beyond building its spec objects.

Each check raises :class:`InvalidScheduleError` naming the option and what was expected.

The cron dialect is Temporal's (the server compiles it into calendar specs): 5 fields
(minute hour day-of-month month day-of-week), 6 (+ year) or 7 (second first, + year);
``*``, ``a``, ``a-b``, ``a/step``, ``a-b/step`` and lists ``a,b``; month names (3+
letters), day names (2+ letters, 0 or 7 = Sunday); ``@yearly``, ``@annually``,
``@monthly``, ``@weekly``, ``@daily``, ``@midnight``, ``@hourly``. Unlike classic cron, a
day-of-month AND a day-of-week must both match.
"""

from __future__ import annotations

import re
import zoneinfo
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, model_validator

from staccato.errors import StaccatoError
from staccato.quantities import SCHEDULE_NAME, require_str

if TYPE_CHECKING:  # imported where built: the command's checks need no Temporal client
    from temporalio.client import ScheduleOverlapPolicy, ScheduleSpec

SCHEDULE_ID_PREFIX = "staccato-schedule-"
MAX_NAME_CHARS = 64
#: Temporal's minimum catch-up window (its scheduler raises a shorter one to this).
MIN_CATCHUP_WINDOW_S = 10
MAX_SCHEDULE_DURATION_S = 366 * 86400
#: Temporal's calendar specs cover the years 2000..2100.
MAX_AT_YEAR = 2100
#: what a schedule whose source is a directory should do instead (its runs copy one
#: file): the remedy :func:`staccato.urls.file_source_problem` names
SCHEDULE_SOURCE_REMEDY = "each run of a schedule copies one file; name a file"
_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_NAME_CHARS - 1}}}")
_DURATION_PART = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class InvalidScheduleError(StaccatoError):
    """A schedule option or name the user gave is malformed (a usage error)."""


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
        from temporalio.client import ScheduleOverlapPolicy

        return ScheduleOverlapPolicy[self.name.upper()]


def schedule_id(name: str) -> str:
    """The Temporal Schedule id (and the runs' workflow id prefix) of schedule ``name``."""
    return SCHEDULE_ID_PREFIX + name


def check_name(name: str) -> str:
    """Return ``name`` if it can name a schedule.

    Raises:
        InvalidScheduleError: not 1..64 of letters, digits, ``.``, ``_``, ``-``,
            starting with a letter or digit (it becomes part of Temporal ids).
        TypeError: ``name`` is not a str.
    """
    if not _NAME.fullmatch(require_str(name, "name", SCHEDULE_NAME)):
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
    return check_at(at, f"--at {text!r}", now=now)


def check_at(at: datetime, shown: str, *, now: datetime | None = None) -> datetime:
    """A one-off schedule's time (``--at``, :attr:`Timing.at`), checked: in the future
    and before the end of Temporal's calendar; returned as an aware UTC datetime in
    whole seconds (a fraction rounds up: the calendar spec has no fraction). One
    without tzinfo is local time, as :meth:`Timing.spec` reads it. ``shown``: what
    the message names (``--at '10m'``, ``Timing.at``).

    Raises:
        InvalidScheduleError: not in the future, or after 2100.
    """
    now = now or datetime.now(UTC)
    at = at.astimezone(UTC)
    at = at.replace(microsecond=0) + (timedelta(seconds=1) if at.microsecond else timedelta())
    if at <= now:
        raise InvalidScheduleError(
            f"{shown}: {at.isoformat()} is not in the future (now {now.isoformat(timespec='seconds')})"
        )
    if at.year > MAX_AT_YEAR:
        raise InvalidScheduleError(f"{shown}: expected a time before {MAX_AT_YEAR + 1}")
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
        InvalidScheduleError: wrong number of fields, a value out of range, no date
            from today on that it matches (``0 0 31 2 *``), a
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
    if not _has_a_date(dict(zip((f[0] for f in layout), fields, strict=True))):
        raise InvalidScheduleError(
            f"--cron {text!r}: matches no date from today to {_YEAR[2]} (the day of "
            "month and the day of week must both match, on a day the month has); expected "
            "an expression that names a date to come"
        )
    return cron


def _values(text: str, field: tuple[str, int, int, tuple[str, ...], int]) -> set[int]:
    """The values a checked cron field names (``a``, ``a-b``, ``*``, ``/step``, lists);
    day of week 7 is 0 (Sunday)."""
    found: set[int] = set()
    for part in text.split(","):
        span, _, step = part.partition("/")
        first, dash, last = span.partition("-")
        start = field[1] if span == "*" else _cron_value(first, field)
        if span == "*" or step:
            end = _cron_value(last, field) if dash else field[2]
        else:
            end = _cron_value(last, field) if dash else start
        found.update(range(start, end + 1, int(step) if step else 1))
    if field is _DOW and 7 in found:
        found = (found - {7}) | {0}
    return found


def _has_a_date(fields: dict[str, str]) -> bool:
    """Whether some date from today (UTC) to the last year the dialect knows matches
    the day-of-month, month, day-of-week and year fields (keyed by field name)."""
    days = _values(fields[_DOM[0]], _DOM)
    months = _values(fields[_MONTH[0]], _MONTH)
    weekdays = _values(fields[_DOW[0]], _DOW)
    today = datetime.now(UTC).date()
    years = _values(fields.get(_YEAR[0], "*"), _YEAR)
    for year in sorted(y for y in years if y >= today.year):
        for month in sorted(months):
            for day in sorted(days):
                try:
                    date = datetime(year, month, day).date()
                except ValueError:
                    continue  # no such day in that month
                # cron counts Sunday as 0; isoweekday() counts it as 7
                if date >= today and date.isoweekday() % 7 in weekdays:
                    return True
    return False


class Timing(BaseModel):
    """When a schedule runs: exactly one of ``every_s``, ``cron``, ``at``.

    Attributes:
        every_s: seconds between runs, counted from the Unix epoch.
        cron: a cron expression in Temporal's dialect, read in ``time_zone``.
        at: one run at this instant (UTC).
        time_zone: IANA name for ``cron`` (default UTC); shown for ``at``.

    Raises (on construction):
        InvalidScheduleError: none or several of every_s/cron/at; a time zone with
            every_s; a bad cron or time zone (named by field: the CLI says its own
            option names first).
        pydantic.ValidationError: an unknown field (``every=`` for ``every_s=``), or a
            value of the wrong type.
    """

    # an unknown field is refused, not dropped: Timing(every="1h", cron=...) was a cron
    # schedule. Timings are stored only as text (the schedule's memo "timing"), never
    # read back into this model, so no stored input can carry one.
    model_config = ConfigDict(frozen=True, extra="forbid")

    every_s: int | None = Field(None, ge=1, le=MAX_SCHEDULE_DURATION_S)
    cron: str | None = None
    at: datetime | None = None
    time_zone: str | None = None

    @model_validator(mode="after")
    def _one(self) -> Timing:
        given = [n for n in ("every_s", "cron", "at") if getattr(self, n) is not None]
        if len(given) != 1:
            raise InvalidScheduleError(
                "give exactly one of every_s, cron, at"
                + (f" (given: {', '.join(given)})" if given else "")
            )
        if self.every_s is not None and self.time_zone:
            raise InvalidScheduleError(
                "time_zone applies to cron and at; every_s counts from the Unix epoch"
            )
        if self.cron is not None:
            check_cron(self.cron)
        if self.time_zone is not None:  # an empty name is not UTC: refused
            check_time_zone(self.time_zone)
        return self

    def spec(self) -> ScheduleSpec:
        """The Temporal schedule spec."""
        from temporalio.client import (
            ScheduleCalendarSpec,
            ScheduleIntervalSpec,
            ScheduleRange,
            ScheduleSpec,
        )

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
