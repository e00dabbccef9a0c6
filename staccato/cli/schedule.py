"""``staccato schedule create|list|describe|pause|unpause|trigger|delete``: recurring
transfers on Temporal Schedules, through :class:`staccato.schedules.Schedules`.

Every option is checked before Temporal is asked anything: a bad name, cron, interval,
time zone, time or URL exits 2 naming the option; an existing name on create or an
unknown one on the other commands exits 1 (as any service error).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from staccato import units
from staccato.cli import render
from staccato.cli.common import EXIT_USAGE, check_file_source, fail, run
from staccato.cli.options import (
    ChecksumOption,
    ChunkSizeOption,
    DestinationArg,
    IfBusyOption,
    JsonOption,
    MaxRateOption,
    OwnerOption,
    PriorityOption,
    RetryForOption,
    SourceArg,
    StageOption,
    StreamsOption,
    SyncLevelOption,
    VerifyOption,
    check_verify_full,
    choice_option,
    transfer_options,
)
from staccato.errors import InvalidURLError
from staccato.models import (
    DEFAULT_PRIORITY,
    DEFAULT_RETRY_FOR_S,
    ChecksumAlgorithm,
    IfBusy,
    VerifyMode,
)
from staccato.schedule_timing import (
    SCHEDULE_SOURCE_REMEDY,
    InvalidScheduleError,
    Overlap,
    Timing,
    check_cron,
    check_name,
    check_time_zone,
    duration_text,
    parse_at,
    parse_catchup_window,
    parse_every,
)

if TYPE_CHECKING:  # imported where used: `--help` and usage errors need no Temporal client
    from staccato.schedules import ScheduledRun, ScheduleView

T = TypeVar("T")

app = typer.Typer(
    name="schedule",
    help=(
        "Recurring transfers on Temporal Schedules: `staccato schedule create NAME SOURCE "
        "DESTINATION --every 1h` (or --cron '30 2 * * *', or --at TIME for one run)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _usage(check: Callable[[], T]) -> T:
    """Run a validation; a bad value exits 2 with its message (before any Temporal call)."""
    try:
        return check()
    except (InvalidScheduleError, InvalidURLError) as err:
        fail(str(err), EXIT_USAGE)


def _parser(check: Callable[[str], Any]) -> Callable[[str], Any]:
    """A typer parser from a validator: its message becomes typer's "Invalid value"."""

    def parse(text: str) -> Any:
        try:
            return check(text)
        except InvalidScheduleError as err:
            raise typer.BadParameter(str(err)) from None

    return parse


NameArg = Annotated[
    str,
    typer.Argument(
        help="Schedule name: letters, digits, '.', '_', '-'.",
        metavar="NAME",
        parser=_parser(check_name),
    ),
]


@app.command()
def create(
    name: NameArg,
    source: SourceArg,
    destination: DestinationArg,
    every: Annotated[
        str | None,
        typer.Option(
            "--every",
            metavar="INTERVAL",
            help="Run every INTERVAL (30s, 5m, 1h, 1h30m, 1d), counted from the Unix epoch.",
        ),
    ] = None,
    cron: Annotated[
        str | None,
        typer.Option(
            "--cron",
            metavar="EXPR",
            help="Run at the times of a cron expression, e.g. '30 2 * * *' (02:30 daily), "
            "read in --time-zone; day-of-month and day-of-week must both match.",
        ),
    ] = None,
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            metavar="TIME",
            help="Run once at TIME: ISO 8601 (2026-12-02T03:00, offset optional) or a "
            "delay (10m, 2h).",
        ),
    ] = None,
    time_zone: Annotated[
        str | None,
        typer.Option(
            "--time-zone",
            metavar="ZONE",
            help="IANA time zone of --cron and of an --at without offset (default UTC).",
        ),
    ] = None,
    overlap: Annotated[
        Overlap,
        choice_option(
            Overlap,
            "--overlap",
            help="When a run is due while the last one still runs: skip it, buffer one or "
            "all, cancel or terminate the running one, or allow all.",
        ),
    ] = Overlap.skip,
    catchup_window: Annotated[
        str | None,
        typer.Option(
            "--catchup-window",
            metavar="DURATION",
            help="After Temporal was down, make up a missed run due within this long "
            "(10s .. 366d; default Temporal's, 1 year).",
        ),
    ] = None,
    sync_level: SyncLevelOption = None,
    if_busy: IfBusyOption = IfBusy.wait,
    chunk_size: ChunkSizeOption = None,
    streams: StreamsOption = None,
    verify: VerifyOption = VerifyMode.checksum,
    checksum: ChecksumOption = ChecksumAlgorithm.crc32c,
    retry_for: RetryForOption = DEFAULT_RETRY_FOR_S,
    paused: Annotated[
        bool, typer.Option("--paused", help="Create it paused (`schedule unpause` starts it).")
    ] = False,
    pause_on_failure: Annotated[
        bool, typer.Option("--pause-on-failure", help="Pause the schedule when a run fails.")
    ] = False,
    as_json: JsonOption = False,
    priority: PriorityOption = DEFAULT_PRIORITY,
    owner: OwnerOption = None,
    max_rate: MaxRateOption = None,
    stage: StageOption = False,
) -> None:
    """Create a schedule copying SOURCE to DESTINATION at the given times.

    Each run is a transfer with its own id (staccato-schedule-NAME-<time>); by default a
    run due while the previous one still runs is skipped (--overlap).
    """
    # said in the CLI's words before the model says it in its field names
    given = [o for o, v in (("--every", every), ("--cron", cron), ("--at", at)) if v is not None]
    if len(given) != 1:
        fail("give exactly one of --every, --cron, --at", EXIT_USAGE)
    if every is not None and time_zone is not None:
        fail(
            "--time-zone applies to --cron and --at; --every counts from the Unix epoch",
            EXIT_USAGE,
        )
    timing = _usage(
        lambda: Timing(
            every_s=int(parse_every(every).total_seconds()) if every is not None else None,
            cron=check_cron(cron) if cron is not None else None,
            at=parse_at(at, check_time_zone(time_zone) if time_zone is not None else None)
            if at is not None
            else None,
            time_zone=time_zone,
        )
    )
    window = _usage(lambda: parse_catchup_window(catchup_window)) if catchup_window else None
    options = transfer_options(
        chunk_size,
        streams,
        verify,
        checksum,
        retry_for,
        sync_level,
        if_busy,
        priority=priority,
        owner=owner,
        max_rate=max_rate,
        stage=stage,
    )
    check_verify_full(verify, [destination], recursive=False)
    from staccato.client import StaccatoClient

    _usage(lambda: StaccatoClient.make_request(source, destination, options))
    # each run copies one file: a directory would fail every run
    check_file_source(source, remedy=SCHEDULE_SOURCE_REMEDY)

    async def go() -> ScheduleView:
        from staccato.schedules import Schedules

        client = await StaccatoClient.connect()
        return await Schedules(client).create(
            name,
            source,
            destination,
            timing,
            options,
            overlap=overlap,
            catchup_window=window,
            paused=paused,
            pause_on_failure=pause_on_failure,
        )

    view = run(go)
    if as_json:
        typer.echo(json.dumps(view.model_dump(mode="json"), indent=2))
        return
    typer.echo(f"created schedule {view.name}: {view.timing}, {view.source} -> {view.destination}")
    if view.paused:
        typer.echo(f"paused: start it with `staccato schedule unpause {view.name}`")
    elif view.next_runs:
        typer.echo(f"next run: {_time(view.next_runs[0])}")
    else:
        typer.echo("warning: Temporal finds no time this schedule is due", err=True)


@app.command("list")
def list_schedules(as_json: JsonOption = False) -> None:
    """List the schedules: state, timing, next run, last run and its outcome."""

    async def go() -> list[ScheduleView]:
        from staccato.client import StaccatoClient
        from staccato.schedules import Schedules

        client = await StaccatoClient.connect()
        return await Schedules(client).list()

    views = run(go)
    if as_json:
        typer.echo(json.dumps([v.model_dump(mode="json") for v in views], indent=2))
        return
    for view in views:
        state = _state_text(view)
        next_run = _time(view.next_runs[0]) if view.next_runs else "-"
        last = view.recent_runs[-1] if view.recent_runs else None
        last_text = f"{_time(last.scheduled_at)} {_outcome(last)}" if last else "-"
        typer.echo(
            f"{view.name}  {state}  {view.timing}  next {next_run}  last {last_text}  "
            f"{view.source} -> {view.destination}"
        )


@app.command()
def describe(name: NameArg, as_json: JsonOption = False) -> None:
    """Show a schedule: timing, policy, options, next runs, recent runs and outcomes."""

    async def go() -> ScheduleView:
        from staccato.client import StaccatoClient
        from staccato.schedules import Schedules

        client = await StaccatoClient.connect()
        return await Schedules(client).describe(name)

    view = run(go)
    if as_json:
        typer.echo(json.dumps(view.model_dump(mode="json"), indent=2))
        return
    for line in _describe_lines(view):
        typer.echo(line)


def _options_text(options: dict[str, Any]) -> str:
    """``chunk 16.0 MiB, 4 streams, verify checksum, ...`` from TransferOptions' JSON."""
    known = {
        "chunk_size": lambda v: f"chunk {render.size(v)}",
        "streams": lambda v: units.counted(v, "stream"),
        "verify": lambda v: f"verify {v}",
        "checksum": lambda v: f"checksum {v}",
        "retry_for_s": lambda v: f"retry for {duration_text(v)}",
        "heartbeat_timeout_s": lambda v: f"heartbeat timeout {duration_text(v)}",
        "cleanup_for_s": lambda v: f"clean-up window {duration_text(v)}",
        "sync_level": lambda v: f"sync level {v}",
        "if_busy": lambda v: f"if busy {v}",
        "max_rate": lambda v: f"max rate {render.size(v)}/s",
        "stage": lambda v: "staged" if v else "not staged",
        "from_origin": lambda v: "from the origin (no known copy)" if v else "",
        "tuning": lambda v: "streams and chunk size tuned per link" if v else "",
    }

    def other(key: str, value: Any) -> str:  # a yes/no by its name alone, like the rest
        name = key.replace("_", " ")
        if isinstance(value, bool):
            return name if value else ""
        return f"{name} {value}"

    shown = (
        known[k](v) if k in known else other(k, v)
        for k, v in options.items()
        if v is not None  # a tuned schedule's streams and chunk size: None
    )
    return ", ".join(text for text in shown if text)


def _state_text(view: ScheduleView) -> str:
    """``active``, ``paused``, or ``done`` for a one-off schedule whose run has started
    (no run left: it was "active" beside "0 left" and no next run)."""
    if view.remaining_runs == 0:
        return "done"
    return "paused" if view.paused else "active"


def _next_runs_text(view: ScheduleView) -> str:
    """The next due times, or ``-``; with a run left but none due (not paused, none
    running) the reason: a one-off's time has passed and Temporal's scheduler has
    started no run (late on a loaded machine, or never when the time passed before it
    took the schedule). A bare ``-`` beside "1 left" read as a contradiction."""
    if view.next_runs:
        return ", ".join(_time(t) for t in view.next_runs[:5])
    if view.remaining_runs and not view.paused and not view.running:
        return "- (its time has passed and no run has started)"
    return "-"


def _describe_lines(view: ScheduleView) -> list[str]:
    window = duration_text(view.catchup_window_s) if view.catchup_window_s else "Temporal's default"
    state = _state_text(view)
    if view.note:
        state += f" ({view.note})"
    lines = [
        f"schedule:     {view.name} ({view.id})",
        f"state:        {state}",
        f"when:         {view.timing}",
        f"source:       {view.source}",
        f"destination:  {view.destination}",
        f"overlap:      {view.overlap}; catch-up window {window}",
        f"options:      {_options_text(view.options) or '-'}",
        f"runs:         {view.runs_started} started, {view.runs_skipped} skipped (overlap), "
        f"{view.runs_missed} missed (catch-up window)"
        + (f", {view.remaining_runs} left" if view.remaining_runs is not None else ""),
        f"running:      {', '.join(view.running) or '-'}",
        f"next runs:    {_next_runs_text(view)}",
        "recent runs:" + ("" if view.recent_runs else "  -"),
    ]
    for r in reversed(view.recent_runs):
        total = render.size(r.bytes_total) if r.bytes_total is not None else "?"
        moved = render.ended_bytes_text(r.state, r.bytes_done, r.bytes_total)
        lines.append(
            f"  {_time(r.scheduled_at)}  {_outcome(r):<10}  {r.workflow_id}  "
            + (moved or f"{render.size(r.bytes_done)} / {total}")
            + (f"  {r.error}" if r.error else "")
        )
    return lines


def _outcome(run: ScheduledRun) -> str:
    """A run's state, ``up to date`` for a completed run that had nothing to copy."""
    return "up to date" if run.up_to_date else run.state


def _time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _act(name: str, action: str, done: str) -> None:
    async def go() -> None:
        from staccato.client import StaccatoClient
        from staccato.schedules import Schedules

        client = await StaccatoClient.connect()
        await getattr(Schedules(client), action)(name)

    run(go)
    typer.echo(f"{done}: {name}")


@app.command()
def pause(name: NameArg) -> None:
    """Pause a schedule: no run starts until unpause (a running one goes on)."""
    _act(name, "pause", "paused schedule")


@app.command()
def unpause(name: NameArg) -> None:
    """Unpause a schedule: runs start again from the next due time."""
    _act(name, "unpause", "unpaused schedule")


@app.command()
def trigger(name: NameArg) -> None:
    """Start one run now (also when paused), under the schedule's overlap policy."""

    async def go() -> Any:
        from staccato.client import StaccatoClient
        from staccato.schedules import Schedules

        client = await StaccatoClient.connect()
        return await Schedules(client).trigger(name)

    outcome = run(go)
    if outcome.outcome == "started":
        typer.echo(f"started: {outcome.workflow_id}")
    elif outcome.outcome == "skipped":
        fail(
            f"schedule {name}: a run is still going ({', '.join(outcome.running) or '?'}) and "
            "the overlap policy skipped the new one"
        )
    else:
        typer.echo(f"trigger sent: {name} (`staccato schedule describe {name}` shows the run)")


@app.command()
def delete(name: NameArg) -> None:
    """Delete a schedule. A run still going goes on (`staccato cancel ID` stops it)."""

    async def go() -> list[str]:
        from staccato.client import StaccatoClient
        from staccato.schedules import Schedules

        client = await StaccatoClient.connect()
        return await Schedules(client).delete(name)

    running = run(go)
    typer.echo(f"deleted schedule: {name}")
    for workflow_id in running:
        typer.echo(
            f"still running: {workflow_id} (`staccato cancel {workflow_id}` stops it)", err=True
        )
