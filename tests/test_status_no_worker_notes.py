"""What ``status`` says of a transfer no worker answers for is true of that run (a
tester's LOW reports): a cancel requested of a dead worker's run says it waits for a
worker (not that the transfer goes on); a tuned run whose copy has begun says its
streams are unknown until a worker answers (not that the tuner chooses them as the
copy starts); a ``--not-before`` start whose time has come but that has not begun
says it starts when a worker polls (no stream heartbeated); and ``submit`` names the
second of the stored start time that ``status`` names."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from staccato.cli import render
from staccato.client import StaccatoClient
from staccato.models import FrontCheckpoint, IfBusy, TransferOptions, TransferState
from tests.helpers import (
    NO_WORKER_ENV,
    MiB,
    WorkerProcess,
    at_rest,
    no_worker_waits,
    run_cli,
    wait_for_status,
    write_random,
)
from tests.servers.nginx import NginxServer, nginx_fixture
from tests.servers.temporal_server import TemporalDevServer

# 80 MiB (tuned: above 64 MiB) at 2 MiB/s a stream: long enough to kill the worker
paced_nginx = nginx_fixture("http_root", scope="function", extra_server_config="limit_rate 2m;")


async def _orphaned(
    temporal_server: TemporalDevServer,
    nginx: NginxServer,
    http_root: Path,
    destination: Path,
    tmp_path: Path,
    options: TransferOptions,
) -> tuple[StaccatoClient, str, dict[str, Any]]:
    """A transfer of 80 MiB from ``nginx`` whose worker is killed once bytes moved:
    the client, the transfer id and the CLI's arguments (its task queue)."""
    write_random(http_root / "orphan.bin", 80 * MiB, seed=5)
    at_rest(http_root / "orphan.bin")
    worker = WorkerProcess(temporal_server.address, processes=1, log_dir=tmp_path).start()
    client = await StaccatoClient.connect(target_host=temporal_server.address)
    client.task_queue = worker.task_queue
    try:
        transfer = await client.submit(nginx.url("orphan.bin"), str(destination), options)
        await wait_for_status(client, transfer, lambda s: s.bytes_done > 0, timeout_s=120)
    finally:
        worker.kill()
    with no_worker_waits():
        orphaned = await client.status(transfer)
    assert orphaned.state == TransferState.running, orphaned
    assert "no worker answers" in (orphaned.last_retry_error or ""), orphaned
    # the CLI's status queries: no worker answers them (NO_WORKER_ENV)
    args = {"address": temporal_server.address, "task_queue": worker.task_queue}
    return client, transfer, {**args, "env": NO_WORKER_ENV}


async def test_a_dead_workers_tuned_run_says_its_streams_are_unknown(
    temporal_server: TemporalDevServer,
    paced_nginx: NginxServer,
    http_root: Path,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    """A tuned transfer whose worker is killed mid-copy: ``status`` says its streams
    and chunk size are unknown until a worker answers (it said "chosen by the tuner as
    the copy starts"), null in ``--json`` with ``streams_unknown``."""
    client, transfer, args = await _orphaned(
        temporal_server,
        paced_nginx,
        http_root,
        data_dir / "tuned.bin",
        tmp_path,
        TransferOptions(tuning=True),  # neither streams nor chunk size given
    )
    try:
        shown = run_cli("status", transfer, **args)
        assert shown.returncode == 0, shown.stderr
        assert "as the copy starts" not in shown.stdout, shown.stdout
        unknown = "chosen by the tuner (per-link optimizer); unknown until a worker answers"
        assert f"streams            {unknown}\n" in shown.stdout, shown.stdout
        assert f"chunk_size         {unknown}\n" in shown.stdout, shown.stdout
        given = json.loads(run_cli("status", "--json", transfer, **args).stdout)
        assert given["streams_unknown"] is True and given["tuner_chooses"] is None, given
        assert given["streams"] is None and given["chunk_size"] is None, given
    finally:
        await client.temporal.get_workflow_handle(transfer).terminate("test over")


async def test_a_dead_workers_fixed_run_shows_no_past_attempt_time_nor_the_tuner(
    temporal_server: TemporalDevServer,
    paced_nginx: NginxServer,
    http_root: Path,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    """A transfer with fixed streams (``--streams 2``) whose worker is killed: once
    its streams' retries are due, no worker takes them; ``next_attempt_at`` is null
    rather than a time in the past (it showed one), and the human ``status`` shows the
    streams the run uses, with no word of a tuner (a tester read "chosen by the
    tuner")."""
    client, transfer, args = await _orphaned(
        temporal_server,
        paced_nginx,
        http_root,
        data_dir / "fixed-retry.bin",
        tmp_path,
        TransferOptions(chunk_size=4 * MiB, streams=2, heartbeat_timeout_s=3),
    )
    try:
        # the killed worker's streams time out (3 s) and are retried: attempt 2 is due
        # after its backoff (1 s), and no worker takes it
        due: datetime | None = None
        deadline = time.monotonic() + 120
        while True:
            current = await client.status(transfer)
            retried = "attempt " in (current.last_retry_error or "")
            if current.next_attempt_at is not None:
                due = (
                    max(due, datetime.fromisoformat(current.next_attempt_at))
                    if due
                    else (datetime.fromisoformat(current.next_attempt_at))
                )
            if retried and (due is None or datetime.now(UTC) > due + timedelta(seconds=1)):
                break
            assert time.monotonic() < deadline, current
            await asyncio.sleep(0.2)
        given = json.loads(run_cli("status", "--json", transfer, **args).stdout)
        print(json.dumps(given, indent=2))
        assert "no worker answers" in (given["last_retry_error"] or ""), given
        assert "attempt " in given["last_retry_error"], given
        shown_at = given["next_attempt_at"]
        assert shown_at is None or datetime.fromisoformat(shown_at) > datetime.now(UTC), given
        assert given["streams"] == 2 and given["chunk_size"] == 4 * MiB, given
        assert given["tuner_chooses"] is None and given["streams_unknown"] is None, given
        shown = run_cli("status", transfer, **args)
        print(shown.stdout)
        assert shown.returncode == 0, shown.stderr
        assert "tuner" not in shown.stdout, shown.stdout
        assert "streams            2\n" in shown.stdout, shown.stdout
    finally:
        await client.temporal.get_workflow_handle(transfer).terminate("test over")


async def test_a_cancel_of_a_dead_workers_run_says_it_waits_for_a_worker(
    temporal_server: TemporalDevServer,
    paced_nginx: NginxServer,
    http_root: Path,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    """``cancel`` of a running transfer whose worker was killed says "cancel
    requested"; ``status`` then says the cancel takes effect when a worker polls, and
    ``--json`` has ``cancel_requested`` (it said the transfer goes on)."""
    client, transfer, args = await _orphaned(
        temporal_server,
        paced_nginx,
        http_root,
        data_dir / "fixed.bin",
        tmp_path,
        TransferOptions(chunk_size=4 * MiB, streams=2),
    )
    try:
        given = json.loads(run_cli("status", "--json", transfer, **args).stdout)
        assert given["cancel_requested"] is False, given  # a boolean, not null
        cancelled = run_cli("cancel", transfer, **args)
        assert cancelled.returncode == 0 and "cancel requested" in cancelled.stdout, cancelled
        shown = run_cli("status", transfer, **args)
        assert shown.returncode == 0, shown.stderr
        assert "goes on when a worker polls" not in shown.stdout, shown.stdout
        said = "a cancel was requested; it takes effect when a worker polls"
        assert said in shown.stdout, shown.stdout
        given = json.loads(run_cli("status", "--json", transfer, **args).stdout)
        assert given["cancel_requested"] is True and given["state"] == "running", given
    finally:
        await client.temporal.get_workflow_handle(transfer).terminate("test over")


async def test_a_delayed_start_not_begun_says_when_it_starts(
    temporal_server: TemporalDevServer, data_dir: Path
) -> None:
    """``--not-before`` to a task queue no worker polls: once its time has come,
    ``status`` says it has not begun and starts when a worker polls, naming its time
    (it said "progress is the streams' last heartbeats" though no stream started)."""
    source = data_dir / "src.bin"
    write_random(source, 64 * 1024, seed=6)
    client = await StaccatoClient.connect(target_host=temporal_server.address)
    client.task_queue = f"no-worker-{time.time_ns()}"
    submitted = await client.start(
        str(source), str(data_dir / "late.bin"), not_before=timedelta(seconds=2)
    )
    assert submitted.starts_at is not None
    due = submitted.starts_at.astimezone(UTC).isoformat(timespec="seconds")
    try:
        # its time passes: no longer scheduled ahead, and no worker to begin it
        waiting = await wait_for_status(
            client, submitted.id, lambda s: s.last_retry_error is not None, timeout_s=30
        )
        note = waiting.last_retry_error or ""
        assert "heartbeats" not in note, note
        assert "has not begun" in note and f"starts at {due} when a worker polls" in note, note
        # the line watch and status print: it waits, nothing is retried (G8: "retrying")
        shown = render.progress_text(waiting)
        assert "waiting: no worker answers" in shown and "retrying" not in shown, shown
    finally:
        await client.temporal.get_workflow_handle(submitted.id).terminate("test over")


async def test_submit_and_status_name_the_same_start_time(
    temporal_server: TemporalDevServer, data_dir: Path
) -> None:
    """The start time ``submit --not-before`` returns and prints is the one Temporal
    stored, which ``status`` shows, in one format (they were a second apart: the
    client's clock plus the delay, against the server's)."""
    source = data_dir / "src.bin"
    write_random(source, 64 * 1024, seed=7)
    queue = f"no-worker-{time.time_ns()}"
    client = await StaccatoClient.connect(target_host=temporal_server.address)
    client.task_queue = queue
    submitted = await client.start(
        str(source), str(data_dir / "api.bin"), not_before=timedelta(hours=1)
    )
    stored = await client.temporal.get_workflow_handle(submitted.id).describe()
    at = stored.raw_description.workflow_execution_info.execution_time.ToDatetime(tzinfo=UTC)
    assert submitted.starts_at == at, (submitted.starts_at, at)
    args = {"address": temporal_server.address, "task_queue": queue}
    printed = run_cli(
        "submit", "--not-before", "1h", str(source), str(data_dir / "cli.bin"), **args
    )
    assert printed.returncode == 0, printed.stderr
    line = next(x for x in printed.stderr.splitlines() if x.startswith("scheduled: "))
    transfer, _, starts = line.removeprefix("scheduled: ").partition(" starts at ")
    status = json.loads(run_cli("status", "--json", transfer, **args).stdout)
    assert status["starts_at"] == starts, (line, status)
    for workflow_id in (submitted.id, transfer):
        await client.temporal.get_workflow_handle(workflow_id).terminate("test over")


async def test_a_queued_fronts_cancel_with_no_worker_says_it_waits_for_one(
    temporal_server: TemporalDevServer,
    paced_nginx: NginxServer,
    http_root: Path,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    """A ``--if-busy wait`` transfer queued behind one writing its destination, then
    the worker is killed and the queued one cancelled: ``status`` says the cancel was
    requested and takes effect when a worker polls (``cancel_requested`` in
    ``--json``); it said "queued" with no word of the cancel."""
    write_random(http_root / "held.bin", 80 * MiB, seed=9)
    at_rest(http_root / "held.bin")
    source = data_dir / "queued-src.bin"
    write_random(source, 64 * 1024, seed=8)
    worker = WorkerProcess(temporal_server.address, processes=1, log_dir=tmp_path).start()
    client = await StaccatoClient.connect(target_host=temporal_server.address)
    client.task_queue = worker.task_queue
    # for the CLIs run once the worker is killed (NO_WORKER_ENV)
    args: dict[str, Any] = {"address": temporal_server.address, "task_queue": worker.task_queue}
    args |= {"env": NO_WORKER_ENV}
    destination = str(data_dir / "held.bin")
    try:
        holder = await client.submit(
            paced_nginx.url("held.bin"), destination, TransferOptions(chunk_size=4 * MiB)
        )
        queued = await client.start(str(source), destination, TransferOptions(if_busy=IfBusy.wait))
        waiting = await wait_for_status(
            client, queued.id, lambda s: s.state == TransferState.queued, timeout_s=60
        )
        # as a front that has waited a while: Temporal holds its heartbeat naming what it
        # waits for (read without a worker)
        deadline = time.monotonic() + 60
        while not await _front_waits(client, queued.id):
            assert time.monotonic() < deadline, "the front never heartbeated its wait"
            await asyncio.sleep(0.2)
    finally:
        worker.kill()
    try:
        assert queued.queued, queued
        assert waiting.cancel_requested is False, waiting
        cancelled = run_cli("cancel", queued.id, **args)
        assert cancelled.returncode == 0 and "cancel requested" in cancelled.stdout, cancelled
        given = json.loads(run_cli("status", "--json", queued.id, **args).stdout)
        assert given["state"] == "queued" and given["cancel_requested"] is True, given
        said = "a cancel was requested; it takes effect when a worker polls"
        assert said in (given["last_retry_error"] or ""), given
        shown = run_cli("status", queued.id, **args)
        assert shown.returncode == 0 and said in shown.stdout, shown
    finally:
        for workflow_id in (holder, queued.id):
            await client.temporal.get_workflow_handle(workflow_id).terminate("test over")


async def _front_waits(client: StaccatoClient, front: str) -> bool:
    """Whether the front run's pending activity last heartbeated what it waits for."""
    description = await client.temporal.get_workflow_handle(front).describe()
    for pending in description.raw_description.pending_activities:
        if pending.heartbeat_details.payloads:
            (details,) = await client.temporal.data_converter.decode(
                pending.heartbeat_details.payloads, [FrontCheckpoint]
            )
            return isinstance(details, FrontCheckpoint) and details.waiting_for is not None
    return False


def test_a_query_its_worker_failed_is_said_with_the_workers_message() -> None:
    """A worker that took the progress query and failed it (a nondeterminism error
    replaying the run: it runs code that cannot go on with the run either) is named,
    with its message, first: not "no worker answers", not "busy" (0.30.0's replay of a
    local attempt's timeout failed every query so, and status said no worker answers)."""
    from staccato.client import _no_worker_note
    from staccato.models import NO_WORKER_ANSWERS, QUERY_FAILED, WORKER_BUSY

    failure = (
        "[TMPRL1100] Nondeterminism error: Fail workflow machine does not handle this "
        "event: HistoryEvent(id: 35, ActivityTaskScheduled)"
    )
    note = _no_worker_note(
        None, begun=True, cancel_requested=False, polled=True, query_failure=failure
    )
    assert note.startswith(f"{QUERY_FAILED}: {failure}"), note
    assert "nondeterminism" in note and "release that started it" in note, note
    assert NO_WORKER_ANSWERS not in note and WORKER_BUSY not in note, note
