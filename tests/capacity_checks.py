"""Many concurrent transfers on one worker: when each starts copying, and the worker's
resident memory meanwhile. Used by tests/test_capacity.py and bench/bench_capacity.py."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus

from staccato.client import StaccatoClient
from staccato.models import Checkpoint, TransferOptions


def tree_rss(pid: int) -> int:
    """Bytes resident in ``pid`` and all its descendants (``VmRSS``), 0 once gone."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    return total


class RssSampler:
    """Samples :func:`tree_rss` of ``pid`` every ``interval_s`` in a thread; use as a
    context manager; :attr:`peak` is the largest sample (bytes)."""

    def __init__(self, pid: int, interval_s: float = 0.2) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, tree_rss(self.pid))
            self.samples += 1

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Starts:
    """Seconds from submit until each transfer's status first showed bytes copied."""

    started: dict[str, float] = field(default_factory=dict)
    reasons: set[str] = field(default_factory=set)  # "waiting for worker capacity" lines seen


async def submit_all(
    client: StaccatoClient, source: str, destinations: list[Path], options: TransferOptions
) -> tuple[list[str], float]:
    """Submit one transfer per destination at once; their ids and the monotonic time
    after the last submit."""
    ids = await asyncio.gather(*(client.submit(source, str(d), options) for d in destinations))
    return list(ids), time.monotonic()


async def _copying(client: StaccatoClient, transfer: str, starts: Starts) -> bool:
    """Whether a stream of ``transfer`` has copied bytes: heartbeated bytes read or
    done, or completed (the server's pending activities and history: no query, so the
    worker is not asked), or the transfer ended."""
    handle = client.temporal.get_workflow_handle(transfer)
    description = await handle.describe()
    if description.status != WorkflowExecutionStatus.RUNNING:
        return True
    streams_pending = 0
    for pending in description.raw_description.pending_activities:
        streams_pending += pending.activity_type.name == "copy_stream"
        if not pending.heartbeat_details.payloads:
            continue
        try:
            (details,) = await client.temporal.data_converter.decode(
                pending.heartbeat_details.payloads, [Checkpoint]
            )
        except Exception:
            continue
        if isinstance(details, Checkpoint):
            if getattr(details, "waiting", None):
                starts.reasons.add(str(details.waiting))
            if details.bytes_done > 0 or details.bytes_read > 0:
                return True
    # a stream that copied its segment within its first heartbeat interval and ended
    # left no details: more streams scheduled than pending means one completed
    scheduled = 0
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attributes = event.activity_task_scheduled_event_attributes
            scheduled += attributes.activity_type.name == "copy_stream"
    return scheduled > streams_pending


async def watch_starts(
    client: StaccatoClient, transfers: list[str], since: float, timeout_s: float
) -> Starts:
    """Poll every transfer until a stream of it has copied bytes (or it ended);
    record when (seconds after ``since``; the poll round's time, so late by up to a
    round, and heartbeats reach the server up to 1 s late). Stops at ``timeout_s``
    seconds after ``since``."""
    starts = Starts()
    while len(starts.started) < len(transfers) and time.monotonic() - since < timeout_s:
        waiting = [t for t in transfers if t not in starts.started]
        copying = await asyncio.gather(*(_copying(client, t, starts) for t in waiting))
        now = time.monotonic() - since
        for transfer, started in zip(waiting, copying, strict=True):
            if started:
                starts.started[transfer] = now
        await asyncio.sleep(0.05)
    return starts


def _seconds(later: object, earlier: object) -> float:
    return later.ToDatetime().timestamp() - earlier.ToDatetime().timestamp()  # type: ignore[attr-defined]


async def first_stream_breakdown(
    client: StaccatoClient, transfers: list[str], retried: list[str] | None = None
) -> dict[str, dict[str, float]]:
    """Per transfer (after it ended; transfer id -> row), where the time from its start
    until its first ``copy_stream`` started went, from the server's event times
    (seconds): workflow tasks (count, waiting to be picked up, being processed, which
    includes local activities), other activities (waiting, running, attempts retried)
    and the first stream's wait. An activity's queue wait runs from its scheduling to
    its last attempt's start (the server records no other), so it includes the
    attempts that failed or timed out; each such activity is added to ``retried`` as
    "transfer: activity attempt N after: last failure"."""
    rows: dict[str, dict[str, float]] = {}
    earliest = None
    histories = []
    for transfer in transfers:
        events = [
            e async for e in client.temporal.get_workflow_handle(transfer).fetch_history_events()
        ]
        histories.append(events)
        if earliest is None or events[0].event_time.ToDatetime() < earliest.ToDatetime():
            earliest = events[0].event_time
    for transfer, events in zip(transfers, histories, strict=True):
        by_id = {e.event_id: e for e in events}
        row = {
            "workflow started after the first one": _seconds(events[0].event_time, earliest),
            "workflow tasks": 0.0,
            "workflow task queue wait": 0.0,
            "workflow task processing": 0.0,
            "workflow tasks failed or timed out": 0.0,
            "activities before streams": 0.0,
            "their queue wait": 0.0,
            "their run time": 0.0,
            "their retried attempts": 0.0,
            "first stream queue wait": 0.0,
            "start -> first stream started": 0.0,
        }
        stream_starts = [
            e
            for e in events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
            and by_id[
                e.activity_task_started_event_attributes.scheduled_event_id
            ].activity_task_scheduled_event_attributes.activity_type.name
            == "copy_stream"
        ]
        if not stream_starts:
            continue
        first = min(stream_starts, key=lambda e: e.event_time.ToDatetime())
        first_scheduled = by_id[first.activity_task_started_event_attributes.scheduled_event_id]
        row["first stream queue wait"] = _seconds(first.event_time, first_scheduled.event_time)
        row["start -> first stream started"] = _seconds(first.event_time, events[0].event_time)
        for event in events:
            if event.event_id >= first_scheduled.event_id:
                break
            kind = event.event_type
            if kind == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
                scheduled = by_id[event.workflow_task_started_event_attributes.scheduled_event_id]
                row["workflow tasks"] += 1
                row["workflow task queue wait"] += _seconds(event.event_time, scheduled.event_time)
            elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                started = by_id[event.workflow_task_completed_event_attributes.started_event_id]
                row["workflow task processing"] += _seconds(event.event_time, started.event_time)
            elif kind in (
                EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT,
                EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED,
            ):
                row["workflow tasks failed or timed out"] += 1
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                scheduled = by_id[event.activity_task_started_event_attributes.scheduled_event_id]
                name = scheduled.activity_task_scheduled_event_attributes.activity_type.name
                wait = _seconds(event.event_time, scheduled.event_time)
                if name == "copy_stream":
                    continue
                # the server records only the last attempt's start: an attempt that
                # timed out is hidden in the queue wait unless counted here
                attempts = event.activity_task_started_event_attributes.attempt
                row["their retried attempts"] += max(0, attempts - 1)
                failure = event.activity_task_started_event_attributes.last_failure
                if attempts > 1 and retried is not None:
                    retried.append(
                        f"{transfer}: {name} attempt {attempts} after: {failure.message}"
                    )
                row["activities before streams"] += 1
                row["their queue wait"] += wait
            elif kind in (
                EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
                EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED,
            ):
                attributes = (
                    event.activity_task_completed_event_attributes
                    if kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
                    else event.activity_task_failed_event_attributes
                )
                started = by_id[attributes.started_event_id]
                row["their run time"] += _seconds(event.event_time, started.event_time)
        rows[transfer] = row
    return rows


def watch_writes(destinations: list[Path], since: float, timeout_s: float) -> dict[Path, float]:
    """Poll (every 0.1 s, in the file system only: no load on Temporal) until each
    destination has a byte written: its file driver's temp file beside it
    (``.NAME.*.staccato-part``) holds allocated blocks, or it is published. Returns
    destination -> seconds after ``since`` (late by up to a poll); stops at
    ``timeout_s`` seconds after ``since``."""
    written: dict[Path, float] = {}
    while len(written) < len(destinations) and time.monotonic() - since < timeout_s:
        now = time.monotonic() - since
        for destination in destinations:
            if destination in written:
                continue
            if destination.exists():
                written[destination] = now
                continue
            for temp in destination.parent.glob(f".{destination.name}.*.staccato-part"):
                try:
                    if temp.stat().st_blocks > 0:
                        written[destination] = now
                        break
                except OSError:
                    continue
        time.sleep(0.1)
    return written
