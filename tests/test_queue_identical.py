"""``submit --if-busy wait`` twice with the identical request while another transfer
writes the destination: the second joins the first queued run (exit 0, its id), as an
identical request joins a running transfer; a different request still queues behind
it (a tester's back-to-back submits queued two runs that would both copy)."""

from __future__ import annotations

from pathlib import Path

from staccato.client import StaccatoClient
from staccato.models import TransferState
from tests.helpers import MiB, WorkerProcess, run_cli, wait_for_status, write_random

#: the holder's options: slow enough to hold the destination while the test submits
HOLDER = ("--streams", "1", "--chunk-size", "1MiB", "--max-rate", "64KiB/s")
WAITER = ("--streams", "1", "--chunk-size", "1MiB", "--if-busy", "wait")


async def test_identical_queued_request_joins_the_first(
    client: StaccatoClient, worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    holder_source, waiter_source = data_dir / "holder.bin", data_dir / "waiter.bin"
    other_source = data_dir / "other.bin"
    write_random(holder_source, 8 * MiB, seed=71)
    write_random(waiter_source, 1 * MiB, seed=72)
    write_random(other_source, 1 * MiB, seed=73)
    destination = data_dir / "queued.out"
    started: list[str] = []
    try:
        first = run_cli("submit", *HOLDER, str(holder_source), str(destination), **args)
        assert first.returncode == 0, first.stderr
        holder = first.stdout.strip()
        started.append(holder)
        await client.pause(holder)  # it holds the destination however slow the CLI is
        queued = run_cli("submit", *WAITER, str(waiter_source), str(destination), **args)
        assert queued.returncode == 0, queued.stderr
        waiter = queued.stdout.strip()
        started.append(waiter)
        assert waiter.startswith(holder + "-") and "queued" in queued.stderr, queued
        # the identical request, back to back: the queued run, nothing new
        again = run_cli("submit", *WAITER, str(waiter_source), str(destination), **args)
        assert again.returncode == 0, again.stderr
        assert again.stdout.strip() == waiter, (waiter, again.stdout, again.stderr)
        assert f"attached to queued transfer {waiter} (same request)" in again.stderr, again
        # a different request to the destination queues on its own
        other = run_cli("submit", *WAITER, str(other_source), str(destination), **args)
        assert other.returncode == 0, other.stderr
        behind = other.stdout.strip()
        started.append(behind)
        assert behind.startswith(holder + "-") and behind != waiter, (waiter, behind)
        for run in (waiter, behind):
            status = await wait_for_status(
                client, run, lambda s: s.state == TransferState.queued, timeout_s=30
            )
            assert status.runs_as == holder, status
        # the queued request's runs: one (the identical submit started none)
        fronts = [
            w.id
            async for w in client.temporal.list_workflows(
                f"WorkflowId = '{waiter}' OR WorkflowId = '{behind}'"
            )
        ]
        assert sorted(fronts) == sorted([waiter, behind]), fronts
    finally:
        for run in reversed(started):
            await client.cancel(run)
