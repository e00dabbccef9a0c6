"""What pause says of a transfer scheduled to start later (tester57 F8: "it has no
copy of its own to pause yet (it is starting)"), and what a transfer queued behind a
paused one says it waits for (F19: "waiting for it to end", not that it is paused)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from staccato.client import StaccatoClient
from staccato.models import IfBusy, TransferOptions, TransferState
from tests.helpers import MiB, run_cli, wait_for_status, write_random


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
