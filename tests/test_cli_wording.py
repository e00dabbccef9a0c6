"""What pause says of a transfer scheduled to start later (tester57 F8: "it has no
copy of its own to pause yet (it is starting)"), and what a transfer queued behind a
paused one says it waits for (F19: "waiting for it to end", not that it is paused)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from staccato.client import StaccatoClient
from staccato.models import IfBusy, TransferOptions, TransferState
from tests.helpers import MiB, WorkerProcess, run_cli, wait_for_status, write_random


async def test_pause_of_a_scheduled_transfer_says_when_it_starts(
    client: StaccatoClient, temporal_server, data_dir: Path
) -> None:
    source = data_dir / "later.bin"
    write_random(source, 1024)
    submitted = await client.start(
        str(source),
        str(data_dir / "later-dst.bin"),
        TransferOptions(),
        not_before=timedelta(minutes=10),
    )
    try:
        result = run_cli(
            "pause",
            submitted.id,
            address=temporal_server.address,
            task_queue=client.task_queue,
            env={"STACCATO_CLIENT_WAIT_S": "3"},
            timeout_s=60,
        )
        assert result.returncode == 1, result
        assert "it is scheduled to start at " in result.stderr, result.stderr
        assert "it is starting" not in result.stderr, result.stderr
        assert f"staccato cancel {submitted.id}" in result.stderr, result.stderr
        # nothing started it early
        assert (await client.status(submitted.id)).state == TransferState.scheduled
    finally:
        await client.cancel(submitted.id)


async def test_a_transfer_queued_behind_a_paused_one_says_it_is_paused(
    client: StaccatoClient, data_dir: Path
) -> None:
    first, second = data_dir / "first.bin", data_dir / "second.bin"
    write_random(first, 16 * MiB, seed=1)
    write_random(second, 1024, seed=2)
    destination = str(data_dir / "held.bin")
    slow = TransferOptions(chunk_size=1 * MiB, streams=1, max_rate=1 * MiB)
    holder = await client.submit(str(first), destination, slow)
    waiting = None
    try:
        await wait_for_status(client, holder, lambda s: s.state == TransferState.running)
        await client.pause(holder)
        waiting = await client.submit(
            str(second), destination, TransferOptions(if_busy=IfBusy.wait)
        )
        queued = await wait_for_status(
            client, waiting, lambda s: s.state == TransferState.queued and bool(s.reason)
        )
        assert holder in (queued.reason or ""), queued
        assert "which is paused" in (queued.reason or ""), queued
        assert f"staccato resume {holder}" in (queued.reason or ""), queued
    finally:
        if waiting is not None:
            await client.cancel(waiting)
        await client.cancel(holder)


async def test_watch_of_a_transfer_no_worker_began_reads_starting(
    temporal_server, data_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    """The only worker polling was SIGKILLed (Temporal still lists it as a poller for
    minutes) before the transfer was submitted: its status answers from visibility
    without asking its workflow (which no worker began: a query would wait its whole
    timeout), and ``watch`` prints the documented ``starting`` line (tester57 F17: no
    line in 8 s: two status queries of 5 s each came first)."""
    from temporalio.client import WorkflowHandle

    gone = WorkerProcess(temporal_server.address, processes=1, log_dir=tmp_path)
    gone.start()
    source = data_dir / "nobody.bin"
    write_random(source, 1024)
    client = await StaccatoClient.connect(target_host=temporal_server.address)
    client.task_queue = gone.task_queue
    # the worker ran a transfer (so Temporal lists it as a poller after its death)
    await client.wait(
        await client.submit(str(source), str(data_dir / "before.bin"), TransferOptions())
    )
    gone.kill()
    assert await client.pollers() > 0  # the dead worker, still listed
    transfer = await client.submit(str(source), str(data_dir / "nobody-dst.bin"), TransferOptions())
    asked: list[str] = []
    real_query = WorkflowHandle.query

    async def recorded(self, *args, **kwargs):  # the real query, noted
        asked.append(self.id)
        return await real_query(self, *args, **kwargs)

    monkeypatch.setattr(WorkflowHandle, "query", recorded)
    watcher = subprocess.Popen(
        [sys.executable, "-m", "staccato.cli", "watch", transfer],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={
            **os.environ,
            "TEMPORAL_ADDRESS": temporal_server.address,
            "TEMPORAL_NAMESPACE": "default",
            "STACCATO_TASK_QUEUE": gone.task_queue,
        },
    )
    try:
        status = await client.status(transfer)
        assert status.state == TransferState.scheduled, status
        assert asked == [], asked  # nothing to ask a run no worker began
        lines: list[str] = []
        assert watcher.stderr is not None
        line = await asyncio.wait_for(asyncio.to_thread(watcher.stderr.readline), 60)
        while line and "starting" not in line:
            lines.append(line)
            line = await asyncio.wait_for(asyncio.to_thread(watcher.stderr.readline), 60)
        assert "starting" in line, lines
    finally:
        watcher.kill()
        watcher.wait(10)
        await client.temporal.get_workflow_handle(transfer).terminate("test over")
