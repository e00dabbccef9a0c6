"""``staccato schedule``: recurring transfers on Temporal Schedules, against the real
Temporal dev server and a real worker; and every bad input refused before Temporal is
asked anything."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import os
import subprocess
import time
import uuid
import zoneinfo
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from staccato.client import StaccatoClient
from staccato.schedules import (
    InvalidScheduleError,
    Schedules,
    Timing,
    check_cron,
    check_name,
    parse_at,
    parse_catchup_window,
    parse_every,
)
from tests.helpers import MiB, at_rest, run_cli, sha256_file, write_random
from tests.servers.nginx import NginxServer, nginx_fixture
from tests.servers.pacing_proxy import PacingProxy
from tests.sync_checks import data_bytes_served, settled_requests

# nginx sending at most 2 MB/s per connection: an 8 MiB run on one stream lasts ~4 s.
slow_nginx = nginx_fixture("http_root", scope="module", extra_server_config="limit_rate 2m;")

#: a :class:`PacingProxy` rate (bytes/s) that paces nothing
FULL_SPEED = 1e12

# Nothing listens here: a usage error must be reported without reaching for Temporal.
NO_TEMPORAL = "127.0.0.1:1"


@pytest.fixture
def cli(temporal_server, worker):
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(
            *args, address=temporal_server.address, task_queue=worker.task_queue, timeout_s=60
        )

    run.address = temporal_server.address  # type: ignore[attr-defined]
    return run


def _in_this_process(cli, look: Callable[[StaccatoClient], Awaitable[Any]]) -> Any:
    """``look(client)``, on a client of the session's server connected for it, in a
    thread of its own (an async test's loop is busy running the test); its result."""

    async def go() -> Any:
        client = await StaccatoClient.connect(target_host=cli.address, namespace="default")
        try:
            return await look(client)
        finally:
            await client.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, go()).result()


def _looks_until(
    cli, look: Callable[[StaccatoClient], Awaitable[Any]], predicate, deadline: float
) -> None:
    """``look(client)`` every 0.5 s in this process until ``predicate`` holds of what it
    returns or ``deadline`` (``time.monotonic()``) passes. A wait, not a check: the
    caller looks through the CLI after it (a CLI process per look, ~0.5 CPU-s, kept a
    core of the 2 busy; a look in this process costs a Temporal call)."""

    async def each(client: StaccatoClient) -> None:
        while not predicate(await look(client)) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)

    _in_this_process(cli, each)


async def _view(name: str, client: StaccatoClient) -> dict[str, Any]:
    """The schedule's view as ``schedule describe --json`` prints it."""
    return (await Schedules(client).describe(name)).model_dump(mode="json")


def _name() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


def _describe(cli, name: str) -> dict[str, Any]:
    result = cli("schedule", "describe", name, "--json")
    assert result.returncode == 0, result
    return json.loads(result.stdout)


def _until(cli, name: str, predicate, timeout_s: float, what: str) -> dict[str, Any]:
    """Describe the schedule (``schedule describe --json``) until ``predicate(view)``;
    that view; fail after ``timeout_s`` seconds. It waits for the predicate in this
    process (the same view, read by the CLI's own code) before each CLI look."""
    deadline = time.monotonic() + timeout_s
    view: dict[str, Any] = {}
    while time.monotonic() < deadline:
        _looks_until(cli, functools.partial(_view, name), predicate, deadline)
        view = _describe(cli, name)
        if predicate(view):
            return view
        time.sleep(0.5)  # the CLI saw less than this process (it never did): again
    raise AssertionError(f"{what} not seen in {timeout_s} s; last view: {view}")


def _completed(view: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in view["recent_runs"] if r["state"] == "completed"]


def test_schedule_lifecycle(cli, data_dir: Path) -> None:
    """Runs every 2 s copy the file; list/describe show next and recent runs with
    outcomes; pause stops runs, unpause resumes them, trigger starts one now (also
    while paused), delete removes the schedule."""
    source, destination = data_dir / "src.bin", data_dir / "dst.bin"
    digest = write_random(source, 3 * MiB + 5, seed=7)
    name = _name()
    created = cli(
        "schedule", "create", name, str(source), str(destination),
        "--every", "2s", "--chunk-size", "1MiB", "--streams", "2",
    )  # fmt: skip
    assert created.returncode == 0, created
    assert f"created schedule {name}: every 2s" in created.stdout
    try:
        view = _until(cli, name, lambda v: len(_completed(v)) >= 2, 60, "two completed runs")
        assert sha256_file(destination) == digest
        run = _completed(view)[0]
        assert run["workflow_id"].startswith(f"staccato-schedule-{name}-")
        assert run["bytes_done"] == run["bytes_total"] == 3 * MiB + 5
        assert view["timing"] == "every 2s" and view["overlap"] == "skip"
        assert view["options"]["chunk_size"] == MiB and view["options"]["streams"] == 2
        assert view["source"] == source.as_uri() and view["destination"] == destination.as_uri()
        assert view["next_runs"] and all(
            datetime.fromisoformat(t) > datetime.fromisoformat(run["scheduled_at"])
            for t in view["next_runs"]
        )
        # each run is a transfer `staccato status` knows
        status = cli("status", run["workflow_id"], "--json")
        assert status.returncode == 0, status
        assert json.loads(status.stdout)["state"] == "completed"

        text = cli("schedule", "describe", name)
        assert text.returncode == 0, text
        assert "next runs:" in text.stdout and "completed" in text.stdout, text.stdout
        listed = _until_listed(cli, name)
        assert listed["paused"] is False and listed["recent_runs"], listed
        plain = cli("schedule", "list")
        assert any(
            line.startswith(f"{name}  active  every 2s") for line in plain.stdout.splitlines()
        )

        # pause: once Temporal shows it paused, no run starts over 3 intervals
        paused = cli("schedule", "pause", name)
        assert paused.returncode == 0 and f"paused schedule: {name}" in paused.stdout, paused
        view = _until(cli, name, lambda v: v["paused"] and not v["running"], 30, "paused, idle")
        before = view["runs_started"]
        assert view["next_runs"] == []
        # an observation window of 2.5 intervals, not a wait for a condition: one look
        # after it, as runs_started counts every run the schedule started (a look every
        # 0.5 s cost 10 CLI processes, ~0.3 CPU-s each, and showed nothing more)
        time.sleep(5)
        assert _describe(cli, name)["runs_started"] == before, "a run started while paused"

        # trigger starts one now, paused or not
        triggered = cli("schedule", "trigger", name)
        assert triggered.returncode == 0, triggered
        assert f"started: staccato-schedule-{name}-" in triggered.stdout
        view = _until(
            cli,
            name,
            lambda v: v["runs_started"] == before + 1 and not v["running"],
            30,
            "the triggered run",
        )
        assert view["recent_runs"][-1]["state"] == "completed"
        assert view["paused"] is True

        unpaused = cli("schedule", "unpause", name)
        assert unpaused.returncode == 0, unpaused
        _until(cli, name, lambda v: v["runs_started"] >= before + 2, 30, "runs after unpause")
        assert sha256_file(destination) == digest
    finally:
        deleted = cli("schedule", "delete", name)
    assert deleted.returncode == 0 and f"deleted schedule: {name}" in deleted.stdout, deleted
    gone = cli("schedule", "describe", name)
    assert gone.returncode == 1 and f"no schedule '{name}'" in gone.stderr, gone


def _until_listed(cli, name: str, timeout_s: float = 20) -> dict[str, Any]:
    """``schedule list --json`` until it shows ``name`` (Temporal's list lags a little)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = cli("schedule", "list", "--json")
        assert result.returncode == 0, result
        for view in json.loads(result.stdout):
            if view["name"] == name:
                return view
        time.sleep(0.5)
    raise AssertionError(f"schedule {name} not listed in {timeout_s} s")


def test_one_off_at(cli, data_dir: Path) -> None:
    """--at runs the transfer once, then the schedule has no run left."""
    source, destination = data_dir / "src.bin", data_dir / "dst.bin"
    digest = write_random(source, MiB, seed=3)
    name = _name()
    # a few seconds ahead: a time that passes before Temporal has the schedule never runs
    created = cli("schedule", "create", name, str(source), str(destination), "--at", "4s")
    assert created.returncode == 0, created
    try:
        view = _until(cli, name, lambda v: len(_completed(v)) == 1, 60, "the one run")
        assert sha256_file(destination) == digest
        assert view["remaining_runs"] == 0 and view["next_runs"] == []
        assert view["runs_started"] == 1
    finally:
        cli("schedule", "delete", name)


def test_cron_in_time_zone_paused(cli, data_dir: Path) -> None:
    """--cron is read in --time-zone; --paused creates it without any run."""
    name = _name()
    created = cli(
        "schedule", "create", name, str(data_dir / "a.bin"), str(data_dir / "b.bin"),
        "--cron", "30 2 * * *", "--time-zone", "America/New_York", "--paused",
    )  # fmt: skip
    assert created.returncode == 0, created
    try:
        view = _describe(cli, name)
        assert view["paused"] is True and view["runs_started"] == 0
        assert view["timing"] == "cron '30 2 * * *' (America/New_York)"
        # paused: Temporal lists no next run; unpaused, each is 02:30 in New York
        assert cli("schedule", "unpause", name).returncode == 0
        view = _until(cli, name, lambda v: len(v["next_runs"]) >= 2, 20, "next runs")
        for text in view["next_runs"]:
            local = datetime.fromisoformat(text).astimezone(zoneinfo.ZoneInfo("America/New_York"))
            assert (local.hour, local.minute, local.second) == (2, 30, 0), view["next_runs"]
        exists = cli(
            "schedule", "create", name, str(data_dir / "c.bin"), str(data_dir / "d.bin"),
            "--every", "1h",
        )  # fmt: skip
        assert exists.returncode == 1, exists
        assert f"schedule {name!r} already exists" in exists.stderr
        assert "Traceback" not in exists.stderr
    finally:
        cli("schedule", "delete", name)


@pytest.mark.parametrize("command", ["describe", "pause", "unpause", "trigger", "delete"])
def test_unknown_name_exits_1(cli, command: str) -> None:
    result = cli("schedule", command, "no-such-schedule")
    assert result.returncode == 1, result
    assert "no schedule 'no-such-schedule'" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["create", "bad name!", "{src}", "{dst}", "--every", "1h"], "schedule name 'bad name!'"),
        (["create", "n", "{src}", "{dst}", "--every", "5 parsecs"], "--every '5 parsecs'"),
        (["create", "n", "{src}", "{dst}", "--every", "0s"], "between 1s and 366d"),
        (["create", "n", "{src}", "{dst}", "--cron", "61 * * * *"], "minute 61 is outside 0-59"),
        (["create", "n", "{src}", "{dst}", "--cron", "* * *"], "expected 5 fields"),
        (["create", "n", "{src}", "{dst}", "--cron", "0 0 * * funday"], "day of week 'funday'"),
        (["create", "n", "{src}", "{dst}", "--cron", "CRON_TZ=UTC 0 * * * *"], "--time-zone"),
        (
            ["create", "n", "{src}", "{dst}", "--cron", "0 3 * * *", "--time-zone", "Mars/Olympus"],
            "--time-zone 'Mars/Olympus'",
        ),
        (
            ["create", "n", "{src}", "{dst}", "--cron", "0 3 * * *", "--time-zone", ""],
            "--time-zone '': expected an IANA time zone name",
        ),
        (
            ["create", "n", "{src}", "{dst}", "--at", "2099-01-01T00:00", "--time-zone", ""],
            "--time-zone '': expected an IANA time zone name",
        ),
        (
            ["create", "n", "{src}", "{dst}", "--cron", "0 0 31 2 *"],
            "--cron '0 0 31 2 *': matches no date from today",
        ),
        (
            ["create", "n", "{src}", "{dst}", "--cron", "0 0 13 2 * 2020"],
            "--cron '0 0 13 2 * 2020': matches no date from today",
        ),
        (["create", "n", "{src}", "{dst}"], "exactly one of --every, --cron, --at"),
        (["create", "n", "{src}", "{dst}", "--every", "1h", "--cron", "0 * * * *"], "exactly one"),
        (
            ["create", "n", "{src}", "{dst}", "--every", "1h", "--time-zone", "UTC"],
            "--every counts from the Unix epoch",
        ),
        (["create", "n", "{src}", "{dst}", "--at", "2001-01-01T00:00"], "is not in the future"),
        (["create", "n", "{src}", "{dst}", "--at", "tomorrow"], "--at 'tomorrow'"),
        (
            ["create", "n", "{src}", "{dst}", "--every", "1h", "--catchup-window", "5s"],
            "--catchup-window '5s'",
        ),
        (["create", "n", "ftp://h/f", "{dst}", "--every", "1h"], "unknown URL scheme 'ftp'"),
        (["create", "n", "{src}", "{src}", "--every", "1h"], "source and destination are the same"),
        (["create", "n", "{src}", "{dst}", "--every", "1h", "--overlap", "sometimes"], "--overlap"),
        (
            ["create", "n", "{dir}", "{dst}", "--every", "1h"],
            "is a directory: each run of a schedule copies one file",
        ),
        (["describe", "_bad"], "schedule name '_bad'"),
        (["delete", "a/b"], "schedule name 'a/b'"),
    ],
)
def test_usage_errors_exit_2_without_temporal(
    data_dir: Path, args: list[str], expected: str
) -> None:
    source, destination = data_dir / "src.bin", data_dir / "dst.bin"
    args = [a.format(src=source, dst=destination, dir=data_dir) for a in args]
    result = run_cli("schedule", *args, address=NO_TEMPORAL, timeout_s=60)
    assert result.returncode == 2, result
    assert expected in result.stderr, result.stderr
    assert "cannot reach Temporal" not in result.stderr
    assert "Traceback" not in result.stderr


def test_validators() -> None:
    """The parsers accept Temporal's forms and name the option in every refusal."""
    assert parse_every("1h30m") == timedelta(hours=1, minutes=30)
    assert parse_every("90") == timedelta(seconds=90)
    assert parse_catchup_window("10m") == timedelta(minutes=10)
    for cron in ["*/15 * * * *", "0 9-17 * * mon-fri", "0 0 1 jan,jul *", "@daily",
                 "0 30 2 * * * 2030", "0 0 * * 7", "5/10 * * * * 2026-2030"]:  # fmt: skip
        assert check_cron(cron) == cron
    for cron, message in [
        ("0 24 * * *", "hour 24 is outside 0-23"),
        ("0 0 0 * *", "day of month 0 is outside 1-31"),
        ("*/0 * * * *", "step '0'"),
        ("10-5 * * * *", "ends before it starts"),
        ("0 0 * ja *", "month 'ja' is not a number or a name"),
        ("@every 5m", "use --every"),
    ]:
        with pytest.raises(InvalidScheduleError, match="--cron") as err:
            check_cron(cron)
        assert message in str(err.value)
    now = datetime(2026, 12, 1, 18, 0, tzinfo=UTC)
    assert parse_at("10m", now=now) == now + timedelta(minutes=10)
    assert parse_at("2026-12-02T03:00", "Europe/Paris", now=now) == datetime(
        2026, 12, 2, 2, 0, tzinfo=UTC
    )
    assert parse_at("2026-12-02T03:00+05:00", "Europe/Paris", now=now) == datetime(
        2026, 12, 1, 22, 0, tzinfo=UTC
    )
    with pytest.raises(InvalidScheduleError, match="before 2101"):
        parse_at("2101-01-01T00:00", now=now)
    for name in ["nightly", "a", "backup.v2_x-1", "x" * 64]:
        assert check_name(name) == name
    for name in ["", "-x", "x" * 65, "a b", "a/b", "é"]:
        with pytest.raises(InvalidScheduleError, match="schedule name"):
            check_name(name)
    at = Timing(at=datetime(2026, 12, 2, 2, 0, 5, tzinfo=UTC), time_zone="Europe/Paris")
    assert at.text() == "at 2026-12-02T03:00:05+01:00"
    (calendar,) = at.spec().calendars
    assert (calendar.year[0].start, calendar.hour[0].start, calendar.second[0].start) == (
        2026,
        2,
        5,
    )


def test_timing_refuses_unknown_fields_and_names_its_own() -> None:
    """Python callers: `Timing(every="1h", cron=...)` silently dropped `every` (a cron
    schedule); an unknown field is refused, and two timings are named by field, not
    by the CLI's options."""
    import pydantic

    with pytest.raises(pydantic.ValidationError, match="every"):
        Timing(every="1h", cron="0 * * * *")  # type: ignore[call-arg]
    with pytest.raises(InvalidScheduleError) as two:
        Timing(every_s=3600, cron="0 * * * *")
    assert "exactly one of every_s, cron, at" in str(two.value), two.value
    assert "--" not in str(two.value), two.value
    with pytest.raises(InvalidScheduleError) as zone:
        Timing(every_s=3600, time_zone="UTC")
    assert "time_zone applies to cron and at" in str(zone.value), zone.value
    assert "--" not in str(zone.value), zone.value


def test_failed_run_shows_its_reason(cli, data_dir: Path) -> None:
    """A run that fails is listed with its outcome and the transfer's reason."""
    name = _name()
    created = cli(
        "schedule", "create", name, str(data_dir / "missing.bin"), str(data_dir / "dst.bin"),
        "--every", "1h",
    )  # fmt: skip
    assert created.returncode == 0, created
    try:
        # one run, triggered: runs every 2 s overlapped on a busy machine (one always
        # running), and the view never showed the failed one alone
        triggered = cli("schedule", "trigger", name)
        assert triggered.returncode == 0, triggered
        view = _until(cli, name, lambda v: bool(v["recent_runs"]) and not v["running"], 60, "a run")
        assert {r["state"] for r in view["recent_runs"]} == {"failed"}, view["recent_runs"]
        assert "missing.bin: no such file or directory" in view["recent_runs"][0]["error"]
        text = cli("schedule", "describe", name)
        assert "failed" in text.stdout and "no such file or directory" in text.stdout, text.stdout
        assert not (data_dir / "dst.bin").exists()
    finally:
        cli("schedule", "delete", name)


async def test_foreign_schedules_are_left_alone(cli, temporal_server, data_dir: Path) -> None:
    """Schedules Staccato did not make (another id, another workflow type) never break
    `schedule list`, are not listed, and are not Staccato's to describe."""
    from temporalio.client import (
        Schedule,
        ScheduleActionStartWorkflow,
        ScheduleIntervalSpec,
        ScheduleSpec,
        ScheduleState,
    )

    temporal = await temporal_server.client()
    suffix = uuid.uuid4().hex[:8]
    foreign = {
        f"foreign-{suffix}": "TransferWorkflow",  # a raw Temporal schedule of transfers
        f"staccato-schedule-odd-{suffix}": "SomeOtherWorkflow",
    }
    for schedule_id, workflow in foreign.items():
        await temporal.create_schedule(
            schedule_id,
            Schedule(
                action=ScheduleActionStartWorkflow(
                    workflow, "not a request", id=schedule_id, task_queue="nobody-polls"
                ),
                spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(hours=1))]),
                state=ScheduleState(paused=True),
            ),
        )
    name = _name()
    mine = cli(
        "schedule", "create", name, str(data_dir / "a.bin"), str(data_dir / "b.bin"),
        "--every", "1h", "--paused",
    )  # fmt: skip
    assert mine.returncode == 0, mine
    try:
        _until_listed(cli, name)
        listed = cli("schedule", "list", "--json")
        assert listed.returncode == 0, listed
        names = [v["name"] for v in json.loads(listed.stdout)]
        assert name in names and not any(suffix in n for n in names), names
        odd = cli("schedule", "describe", f"odd-{suffix}")
        assert odd.returncode == 1 and "does not run Staccato transfers" in odd.stderr, odd
    finally:
        cli("schedule", "delete", name)
        for schedule_id in foreign:
            await temporal.get_schedule_handle(schedule_id).delete()


def test_runs_wait_for_a_busy_destination(cli, data_dir: Path) -> None:
    """A scheduled run's --if-busy defaults to wait (cp/submit fail), where the transfer
    options have the field."""
    from staccato.models import TransferOptions

    name = _name()
    args = ["schedule", "create", name, str(data_dir / "a.bin"), str(data_dir / "b.bin")]
    created = cli(*args, "--every", "1h", "--paused")
    assert created.returncode == 0, created
    try:
        options = _describe(cli, name)["options"]
        if "if_busy" in TransferOptions.model_fields:
            assert options["if_busy"] == "wait"
    finally:
        cli("schedule", "delete", name)


def test_runs_carry_the_rate_cap_and_staging(cli, data_dir: Path) -> None:
    """``schedule create --max-rate --stage``: each run's options carry both, and
    describe shows them in words."""
    name = _name()
    args = ["schedule", "create", name, str(data_dir / "a.bin"), str(data_dir / "b.bin")]
    created = cli(*args, "--every", "1h", "--paused", "--max-rate", "10MB/s", "--stage")
    assert created.returncode == 0, created
    try:
        options = _describe(cli, name)["options"]
        assert options["max_rate"] == 10 * 1000 * 1000 and options["stage"] is True, options
        text = cli("schedule", "describe", name).stdout
        assert "max rate 9.5 MiB/s" in text and "staged" in text, text
    finally:
        cli("schedule", "delete", name)


@pytest.mark.parametrize("level", ["size", "mtime", "checksum"])
def test_sync_level_runs_after_the_first_are_up_to_date(
    cli, level: str, nginx_ranges: NginxServer, http_root: Path, data_dir: Path
) -> None:
    """With --sync-level, the first scheduled run copies, the second and third complete
    as up to date and the source serves no data bytes (checksum: one read of a source
    that keeps no checksum, never a copy); after the source changes, the next run
    copies it."""
    source = http_root / f"sync-{level}-{uuid.uuid4().hex[:8]}.bin"
    size = 2 * MiB
    digest = write_random(source, size, seed=21)
    at_rest(source)
    uri = f"/{source.name}"
    destination = data_dir / "dst.bin"
    name = _name()
    created = cli(
        "schedule", "create", name, nginx_ranges.url(source.name), str(destination),
        "--every", "1h", "--paused", "--sync-level", level,
    )  # fmt: skip
    assert created.returncode == 0, created

    def run_once(count: int) -> dict[str, Any]:
        # triggered and awaited through the client in this process: the test is about
        # what the runs copy, not the CLI's words (a trigger and a describe CLI per run
        # were 8 of this test's 11 CLI processes, ~0.5 CPU-s each); the describe CLI
        # below still shows the runs
        async def trigger_and_wait(client: StaccatoClient) -> dict[str, Any]:
            outcome = await Schedules(client).trigger(name)
            assert outcome.outcome in ("started", "requested"), outcome
            deadline = time.monotonic() + 60
            while True:
                view = await _view(name, client)
                # the run's own workflow ended too (not only the destination's transfer
                # it runs as, whose completed status has no ``up_to_date`` of the run)
                if len(_completed(view)) >= count and not view["running"]:
                    return view
                assert time.monotonic() < deadline, f"{count} runs not seen in 60 s: {view}"
                await asyncio.sleep(0.5)

        return _completed(_in_this_process(cli, trigger_and_wait))[-1]  # oldest first

    try:
        first = run_once(1)
        assert not first["up_to_date"] and sha256_file(destination) == digest
        for count in (2, 3):
            before = len(settled_requests(nginx_ranges, uri))
            again = run_once(count)
            assert again["up_to_date"], again
            served = data_bytes_served(settled_requests(nginx_ranges, uri)[before:])
            assert served == (size if level == "checksum" else 0), (level, served)
        assert sha256_file(destination) == digest
        # the source changes (new bytes, a newer mtime; for size, one byte more): the
        # next run copies
        changed = write_random(source, size + (level == "size"), seed=22)
        later = destination.stat().st_mtime + 3600
        os.utime(source, (later, later))
        copied = run_once(4)
        assert not copied["up_to_date"], copied
        assert sha256_file(destination) == changed
        text = cli("schedule", "describe", name)
        assert "up to date" in text.stdout, text.stdout
    finally:
        cli("schedule", "delete", name)


def test_overlap_skip_while_a_run_goes_on(
    cli, nginx_ranges: NginxServer, http_root: Path, data_dir: Path
) -> None:
    """With the default overlap policy a run due (here: triggered) while the last one
    still runs is skipped, and `trigger` says so naming the running one. The run's
    source is paced (500 kB/s: 8 MiB in ~17 s) until the second trigger has answered,
    then served at full speed (at nginx's 2 MB/s, ~4 s, a second CLI started at load
    ~18 came after the run had ended, and its trigger started a run)."""
    source = http_root / f"slow-{uuid.uuid4().hex[:8]}.bin"
    digest = write_random(source, 8 * MiB, seed=11)
    at_rest(source)
    destination = data_dir / "dst.bin"
    name = _name()
    paced = PacingProxy(nginx_ranges.port, rate_bytes_per_s=500_000).start()
    try:
        created = cli(
            "schedule", "create", name, paced.url(source.name), str(destination),
            "--every", "1h", "--paused", "--streams", "1", "--chunk-size", "1MiB",
        )  # fmt: skip
        assert created.returncode == 0, created
        first = cli("schedule", "trigger", name)
        assert first.returncode == 0 and "started: " in first.stdout, first
        run_id = first.stdout.split("started: ", 1)[1].strip()
        second = cli("schedule", "trigger", name)
        paced.rate = FULL_SPEED
        assert second.returncode == 1, second
        assert "overlap policy skipped" in second.stderr and run_id in second.stderr
        view = _until(cli, name, lambda v: not v["running"], 60, "the run's end")
        assert view["runs_started"] == 1 and view["runs_skipped"] == 1, view
        assert [r["state"] for r in view["recent_runs"]] == ["completed"]
        assert sha256_file(destination) == digest
    finally:
        cli("schedule", "delete", name)
        paced.stop()


async def test_source_token_stays_sealed(
    temporal_server, worker, data_dir: Path, tmp_path: Path
) -> None:
    """A source's query (a token) reaches the Schedule only sealed: not in its memo,
    search attributes, summary or action input as Temporal stores them."""
    import base64
    import os

    env = {
        "STACCATO_SECRET_KEY": base64.b64encode(os.urandom(32)).decode(),
        "STACCATO_HOME": str(tmp_path / "home"),
    }
    name = _name()
    created = run_cli(
        "schedule", "create", name, "https://example.org/x.bin?token=hunter2",
        str(data_dir / "x.bin"), "--every", "1h", "--paused",
        address=temporal_server.address, task_queue=worker.task_queue, env=env,
    )  # fmt: skip
    assert created.returncode == 0, created
    assert "hunter2" not in created.stdout + created.stderr
    temporal = await temporal_server.client()
    handle = temporal.get_schedule_handle(f"staccato-schedule-{name}")
    try:
        raw = await handle.describe()
        stored = str(raw.raw_description)
        assert "REDACTED" in stored, stored[:2000]
        assert "hunter2" not in stored
    finally:
        await handle.delete()


#: the source of the cancelled run: 32 MiB at the slow server's 2 MB/s (~16 s), so the
#: cancel comes long before the end also at load ~20 (with 8 MiB, ci42's run completed
#: before its cancel)
CANCELLED_RUN_BYTES = 32 * MiB


def _trigger_until_copying(cli, name: str) -> str:
    """Trigger a run of the schedule ``name`` and wait (at most 60 s) until its
    destination's transfer has written a chunk (2 MiB); the run's id."""
    triggered = cli("schedule", "trigger", name)
    assert triggered.returncode == 0 and "started: " in triggered.stdout, triggered
    run_id = triggered.stdout.split("started: ", 1)[1].strip()
    deadline = time.monotonic() + 60
    # until a chunk is written (the slow server sends 2 MB/s): looks in this process,
    # then the CLI's
    _looks_until(
        cli,
        lambda client: client.status(run_id),
        lambda status: status.bytes_done >= 2 * MiB,
        deadline,
    )
    shown = json.loads(cli("status", run_id, "--json").stdout)
    assert shown["state"] == "running" and shown["bytes_done"] >= 2 * MiB, shown
    return run_id


def test_a_cancelled_run_shows_the_bytes_it_copied(
    cli, slow_nginx: NginxServer, http_root: Path, data_dir: Path
) -> None:
    """A run cancelled mid-copy shows the bytes its destination's transfer copied and
    the size (tester: its row read "0 B / ?": a schedule's run is a front run, which
    keeps no counts of its own; the run it started wrote them as it ended)."""
    source = http_root / f"cancel-{uuid.uuid4().hex[:8]}.bin"
    write_random(source, CANCELLED_RUN_BYTES, seed=12)
    at_rest(source)
    name = _name()
    created = cli(
        "schedule", "create", name, slow_nginx.url(source.name), str(data_dir / "dst.bin"),
        "--every", "1h", "--paused", "--streams", "1", "--chunk-size", "1MiB",
    )  # fmt: skip
    assert created.returncode == 0, created
    try:
        run_id = _trigger_until_copying(cli, name)
        cancelled = cli("cancel", run_id)
        assert cancelled.returncode == 0, cancelled
        view = _until(cli, name, lambda v: not v["running"], 60, "the run's end")
        (run,) = view["recent_runs"]
        assert run["state"] == "cancelled", run
        # (the cancel reaches the streams at a heartbeat: the last chunks may be in)
        assert (
            run["bytes_total"] == CANCELLED_RUN_BYTES
            and 0 < run["bytes_done"] <= CANCELLED_RUN_BYTES
        ), run
        ended = json.loads(cli("status", run_id, "--json").stdout)
        assert (ended["bytes_done"], ended["bytes_total"]) == (
            run["bytes_done"],
            CANCELLED_RUN_BYTES,
        )
        text = cli("schedule", "describe", name).stdout
        row = next(line for line in text.splitlines() if run_id in line)
        assert "/ 32.0 MiB" in row and "?" not in row, row
    finally:
        cli("schedule", "delete", name)


async def test_a_run_whose_destination_was_cancelled_shows_cancelled(
    cli, client, slow_nginx: NginxServer, http_root: Path, data_dir: Path
) -> None:
    """`staccato cancel DEST` while a schedule's run copies cancels the destination's
    transfer that run runs as: the run shows ``cancelled`` (tester: ``failed``, with
    "cancelled: the destination's transfer ... was cancelled") in schedule describe,
    status (text and --json), list --state and the Python client, and records
    StaccatoState ``cancelled`` (the UI's filter), though Temporal says Failed (the SDK
    ends a workflow Canceled only when a cancel was asked of it); its error still says
    whose cancel it was."""
    from staccato.client import transfer_id
    from staccato.models import TransferState
    from staccato.workflows import search_attributes as sa

    source = http_root / f"dcancel-{uuid.uuid4().hex[:8]}.bin"
    write_random(source, CANCELLED_RUN_BYTES, seed=13)
    at_rest(source)
    destination = data_dir / "dst.bin"
    canonical = transfer_id(str(destination))
    name = _name()
    created = cli(
        "schedule", "create", name, slow_nginx.url(source.name), str(destination),
        "--every", "1h", "--paused", "--streams", "1", "--chunk-size", "1MiB",
    )  # fmt: skip
    assert created.returncode == 0, created
    try:
        run_id = _trigger_until_copying(cli, name)
        # the destination names its transfer (running), not the schedule's run
        cancelled = cli("cancel", str(destination))
        assert cancelled.returncode == 0 and canonical in cancelled.stdout, cancelled
        view = _until(cli, name, lambda v: not v["running"], 60, "the run's end")
        (run,) = view["recent_runs"]
        assert run["state"] == "cancelled", run
        assert f"the destination's transfer {canonical} was cancelled" in run["error"], run
        text = cli("schedule", "describe", name).stdout
        row = next(line for line in text.splitlines() if run_id in line)
        assert row.split()[1] == "cancelled", row
        # status, text and JSON; the destination's transfer itself
        shown = json.loads(cli("status", run_id, "--json").stdout)
        assert shown["state"] == "cancelled" and canonical in shown["error"], shown
        lines = cli("status", run_id).stdout.splitlines()
        assert next(line for line in lines if line.startswith("state")).split() == [
            "state",
            "cancelled",
        ], lines
        assert json.loads(cli("status", canonical, "--json").stdout)["state"] == "cancelled"
        # list --state: under cancelled (once visibility has the close: it lags the
        # run's own state, a little), not under failed
        _looks_until(
            cli,
            lambda client: client.list(state=TransferState.cancelled),
            lambda rows: run_id in [r.id for r in rows],
            time.monotonic() + 30,
        )
        listed = cli("list", "--state", "cancelled", "--json")
        assert listed.returncode == 0, listed
        ids = [r["id"] for r in json.loads(listed.stdout)]
        assert run_id in ids, listed.stdout
        failed = cli("list", "--state", "failed", "--json")
        assert failed.returncode == 0, failed
        assert run_id not in [r["id"] for r in json.loads(failed.stdout)], failed.stdout
        # the Python client
        assert (await client.status(run_id)).state == TransferState.cancelled
        rows = await client.list(state=TransferState.cancelled)
        assert run_id in [r.id for r in rows], rows
        # the UI's filter: StaccatoState; Temporal's own status stays Failed
        description = await client.temporal.get_workflow_handle(run_id).describe()
        assert description.typed_search_attributes.get(sa.STATE) == "cancelled"
        assert description.status is not None and description.status.name == "FAILED"
        # a cancel of the run now: it is cancelled already (exit 0)
        again = cli("cancel", run_id)
        assert again.returncode == 0 and "already cancelled" in again.stdout, again
    finally:
        cli("schedule", "delete", name)
