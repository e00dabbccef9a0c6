"""Live progress where Temporal users look: the workflow's current-details line (the
Temporal UI, ``temporal workflow describe``) moves while data moves, long before a
segment finishes, and the streams' heartbeats carry a summary people can read."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from pathlib import Path
from typing import Any

from temporalio.api.sdk.v1 import WorkflowMetadata

from staccato.client import StaccatoClient
from staccato.errors import StaccatoError
from staccato.models import TransferOptions, TransferState
from staccato.workers.progress_reporter import MIN_PERIOD_S, TICK_S, report_period, reports_by
from staccato.workflows.transfer import TransferWorkflow
from tests.helpers import MiB, at_rest, replayer_of, sha256_file, write_random
from tests.servers.nginx import NginxServer, nginx_fixture

# 4 streams from an nginx sending 5 MiB/s per connection: ~20 MiB/s in all, and one
# segment per stream, so no segment finishes before the copy's last seconds and the
# workflow alone (committed segments) would show 0 bytes all along. The size can be
# raised for a longer look (STACCATO_TEST_LIVE_PROGRESS_MIB=1024: ~51 s).
SIZE = int(os.environ.get("STACCATO_TEST_LIVE_PROGRESS_MIB", "400")) * MiB
OPTIONS = TransferOptions(chunk_size=4 * MiB, streams=4)
paced_nginx = nginx_fixture("http_root", scope="function", extra_server_config="limit_rate 5m;")
_BYTES = re.compile(r"\): ([0-9.]+ [KMGTPE]?i?B) / ")


async def _details(client: StaccatoClient, transfer: str) -> str:
    """What the Temporal UI reads: the workflow's ``__temporal_workflow_metadata`` query."""
    handle = client.temporal.get_workflow_handle(transfer)
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    return metadata.current_details


def _copy_timeline(history: list[Any]) -> list[float]:
    """Server times (epoch seconds) of a transfer's copy: its first stream's start,
    each ``report_progress`` signal while streams run, its last stream's end."""

    def at(event: Any) -> float:
        return float(event.event_time.ToDatetime().timestamp())

    streams = {
        event.event_id
        for event in history
        if event.HasField("activity_task_scheduled_event_attributes")
        and event.activity_task_scheduled_event_attributes.activity_type.name == "copy_stream"
    }
    starts = [
        at(event)
        for event in history
        if event.HasField("activity_task_started_event_attributes")
        and event.activity_task_started_event_attributes.scheduled_event_id in streams
    ]
    ends = [
        at(event)
        for event in history
        if event.HasField("activity_task_completed_event_attributes")
        and event.activity_task_completed_event_attributes.scheduled_event_id in streams
    ]
    assert starts and ends, "no copy_stream activity in the history"
    first, last = min(starts), max(ends)
    signals = [
        at(event)
        for event in history
        if event.HasField("workflow_execution_signaled_event_attributes")
        and event.workflow_execution_signaled_event_attributes.signal_name == "report_progress"
    ]
    return [first, *(t for t in signals if first < t < last), last]


async def test_current_details_advance_while_data_moves(
    client: StaccatoClient, paced_nginx: NginxServer, http_root: Path, data_dir: Path
) -> None:
    write_random(http_root / "live.bin", SIZE, seed=11)
    at_rest(http_root / "live.bin")
    destination = data_dir / "live.bin"
    transfer = await client.submit(paced_nginx.url("live.bin"), str(destination), OPTIONS)
    changes: list[tuple[float, str]] = []  # (monotonic time, details) at each change
    deadline = time.monotonic() + 60 + SIZE / (10 * MiB)
    state = TransferState.scheduled
    while time.monotonic() < deadline:
        status = await client.status(transfer)
        state = status.state
        if state in (TransferState.completed, TransferState.failed, TransferState.cancelled):
            break
        details = await _details(client, transfer)
        if "(copy)" in details and (not changes or changes[-1][1] != details):
            changes.append((time.monotonic(), details))
        await asyncio.sleep(0.25)
    assert state == TransferState.completed, state
    assert sha256_file(destination) == sha256_file(http_root / "live.bin")
    history = [
        event
        async for event in client.temporal.get_workflow_handle(transfer).fetch_history_events()
    ]
    signals = sum(
        1 for event in history if event.HasField("workflow_execution_signaled_event_attributes")
    )
    print(
        f"live progress: {SIZE // MiB} MiB, {len(changes)} detail changes while copying, "
        f"{len(history)} history events ({signals} report_progress signals)"
    )
    for at, text in changes:
        print(f"  {at - changes[0][0]:6.1f} s  {text}")
    copying = [(at, text) for at, text in changes if "**running** (copy)" in text]
    assert len(copying) >= 2, changes
    # The line moves at every reporter tick while data moves: no tick without a report
    # (a skipped one would leave a gap of two ticks). Timed at the server (the first
    # stream's start, each report_progress signal, the last stream's end), not by this
    # test's polls, which a busy machine delays (CI: 16.8 s at load 40); a tick late by
    # less than a tick on a busy worker still passes.
    times = _copy_timeline(history)
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    assert len(times) >= 3 and max(gaps) < TICK_S + MIN_PERIOD_S, (gaps, changes)
    # before any segment finished, it already showed bytes on the way, a rate, an ETA
    reported = [text for _, text in copying if re.search(r" at [0-9.]+ [KMG]iB/s", text)]
    assert reported, changes
    first = reported[0]
    assert "0/4 segments done" in first, first
    assert _BYTES.search(first) and not first.startswith("**running** (copy): 0 B /"), first
    assert re.search(r"\(\d+%\) at [0-9.]+ [KMG]iB/s, ETA ", first), first
    assert "streams running" in first, first
    copy_s = times[-1] - times[0]
    assert signals <= reports_by(copy_s + 2 * MIN_PERIOD_S) + 1, (signals, copy_s)
    # a history with report_progress signals replays: the handler issues no command
    recorded = await client.temporal.get_workflow_handle(transfer).fetch_history()
    replayer = replayer_of(TransferWorkflow)
    await replayer.replay_workflow(recorded)


async def test_heartbeats_carry_a_summary(
    client: StaccatoClient, paced_nginx: NginxServer, http_root: Path, data_dir: Path
) -> None:
    """``temporal workflow describe`` shows each stream's heartbeat: it says how far."""
    write_random(http_root / "beat.bin", 64 * MiB, seed=12)
    at_rest(http_root / "beat.bin")
    transfer = await client.submit(paced_nginx.url("beat.bin"), str(data_dir / "beat.bin"), OPTIONS)
    handle = client.temporal.get_workflow_handle(transfer)
    summaries: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not summaries:
        description = await handle.describe()
        for pending in description.raw_description.pending_activities:
            if pending.heartbeat_details.payloads:
                (details,) = await client.temporal.data_converter.decode(
                    pending.heartbeat_details.payloads
                )
                if isinstance(details, dict) and details.get("summary"):
                    summaries.append(details["summary"])
        await asyncio.sleep(0.2)
    with contextlib.suppress(StaccatoError):  # it may have finished meanwhile
        await client.cancel(transfer)
    assert summaries, "no heartbeat carried a summary"
    assert re.fullmatch(
        r"segment \d+: [0-9.]+ [KMG]?i?B / 16\.0 MiB \(\d+%\)( at [0-9.]+ [KMG]?i?B/s)?",
        summaries[0],
    ), summaries


def test_reports_stay_far_below_temporal_history_warning() -> None:
    """The numbers the reporter's docstring and the README give: about 4 events per
    report; a month-long copy stays well below Temporal's 10,240-event warning."""
    hour, day = 3600, 86400
    assert report_period(0) == MIN_PERIOD_S and report_period(day) == day / 180
    assert 300 <= reports_by(hour) <= 330  # ~1,300 events in the first hour
    assert 880 <= reports_by(day) <= 910  # ~3,600 by a day
    assert 4 * reports_by(30 * day) <= 6100  # ~6,000 by 30 days (the longest retry budget)
