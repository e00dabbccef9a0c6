"""What ``status`` says of a fan-out group no worker answers for, read as a single
transfer's status reads it (a tester's MED report): killed while it stages its source,
``status GROUP`` lost the staging line (``staged_bytes`` and ``phase`` null), said
nothing of the missing worker, and a ``cancel GROUP`` then ("cancel requested", exit
0) left it "running" with no word of the cancel. Now: the staging line from the
staging read's last heartbeat and the size the group keeps in its memo, the "no
worker answers" note (``last_retry_error``), and ``cancel_requested`` with the note
that the cancel takes effect when a worker polls."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from staccato.client import StaccatoClient
from staccato.models import GroupState, GroupStatus, TransferOptions
from tests.helpers import NO_WORKER_ENV, MiB, WorkerProcess, at_rest, run_cli, write_random
from tests.servers.nginx import NginxServer
from tests.servers.temporal_server import TemporalDevServer

SIZE = 24 * MiB
#: the staging read paced at 1 MiB/s: ~24 s of staging to kill the worker in
OPTIONS = TransferOptions(chunk_size=4 * MiB, streams=2, max_rate=1 * MiB)


async def test_a_staging_group_whose_worker_is_gone_says_so_and_keeps_its_figures(
    temporal_server: TemporalDevServer,
    nginx_ranges: NginxServer,
    http_root: Path,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    write_random(http_root / "group-staged.bin", SIZE, seed=91)
    at_rest(http_root / "group-staged.bin")
    env = {"STACCATO_STAGING_DIR": str(tmp_path / "staging")}
    worker = WorkerProcess(temporal_server.address, processes=1, env=env, log_dir=tmp_path)
    worker.start()
    client = await StaccatoClient.connect(target_host=temporal_server.address)
    client.task_queue = worker.task_queue
    destinations = [str(data_dir / "a.bin"), str(data_dir / "b.bin")]
    group = await client.fan_out(nginx_ranges.url("group-staged.bin"), destinations, OPTIONS)
    # for the CLIs run once the worker is killed (NO_WORKER_ENV)
    args: dict[str, Any] = {"address": temporal_server.address, "task_queue": worker.task_queue}
    args |= {"env": NO_WORKER_ENV}
    try:
        deadline = time.monotonic() + 120
        while True:  # staging, some bytes read
            current = await client.group_status(group)
            if current.phase == "staging" and (current.staged_bytes or 0) > 2 * MiB:
                break
            # before staging, the group stats its source (phase "stat": under load
            # that can be seen)
            assert current.phase in (None, "stat", "staging"), current
            assert time.monotonic() < deadline, current
            await asyncio.sleep(0.2)
        worker.kill()
        given = json.loads(run_cli("status", "--json", group, **args).stdout)
        assert given["state"] == "running" and given["phase"] == "staging", given
        assert given["bytes_total"] == SIZE, given
        assert 0 < given["staged_bytes"] < SIZE, given
        assert given["staging_rate_bytes_per_s"] is None, given  # nothing moves
        assert "no worker answers" in (given["last_retry_error"] or ""), given
        assert given["cancel_requested"] is False, given  # a boolean, not null
        shown = run_cli("status", group, **args)
        assert shown.returncode == 0, shown.stderr
        assert "  staging the source: " in shown.stdout and " / 24.0 MiB" in shown.stdout, (
            shown.stdout
        )
        assert "no worker answers on task queue" in shown.stdout, shown.stdout
        assert "the group goes on when a worker polls" in shown.stdout, shown.stdout

        cancelled = run_cli("cancel", group, **args)
        assert cancelled.returncode == 0 and "cancel requested" in cancelled.stdout, cancelled
        given = json.loads(run_cli("status", "--json", group, **args).stdout)
        assert given["state"] == "running" and given["cancel_requested"] is True, given
        said = "a cancel was requested; it takes effect when a worker polls"
        assert said in given["last_retry_error"], given
        shown = run_cli("status", group, **args)
        assert said in shown.stdout, shown.stdout
        # said on the group's own line, whatever the phase (not only in `retrying:`),
        # with its time, as a single transfer's (tester71: no time)
        assert given["cancel_requested_at"] > given["started_at"], given
        header = f"group {group}: running, cancel requested at {given['cancel_requested_at']}, 0/2"
        assert header in shown.stdout, shown.stdout
    finally:
        # a worker again on the queue: the cancelled group ends
        worker = WorkerProcess(
            temporal_server.address, processes=1, env=env, task_queue=worker.task_queue,
            log_dir=tmp_path,
        )  # fmt: skip
        worker.start()
        try:
            await client.cancel(group)
            final = await asyncio.wait_for(client.wait_group(group), 120)
            assert final.state == GroupState.cancelled, final
        finally:
            worker.stop()


async def test_a_fan_out_cancelled_while_staging_leaves_no_lock_file(
    temporal_server: TemporalDevServer,
    nginx_ranges: NginxServer,
    http_root: Path,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    """A fan-out cancelled while it stages its source: once the group has ended, its
    staging cache holds nothing of it, no entry and no lock file (a 0-byte
    ``<key>.lock`` stayed: releasing the group's pin took the entry's lock again,
    which made the file anew)."""
    write_random(http_root / "group-cancelled.bin", SIZE, seed=92)
    at_rest(http_root / "group-cancelled.bin")
    staging = tmp_path / "staging"
    env = {"STACCATO_STAGING_DIR": str(staging)}
    with WorkerProcess(temporal_server.address, processes=1, env=env, log_dir=tmp_path) as worker:
        client = await StaccatoClient.connect(target_host=temporal_server.address)
        client.task_queue = worker.task_queue
        destinations = [str(data_dir / "a.bin"), str(data_dir / "b.bin")]
        group = await client.fan_out(nginx_ranges.url("group-cancelled.bin"), destinations, OPTIONS)
        deadline = time.monotonic() + 120
        while True:  # staging, some bytes read
            current = await client.group_status(group)
            if current.phase == "staging" and (current.staged_bytes or 0) > 1 * MiB:
                break
            assert time.monotonic() < deadline, current
            await asyncio.sleep(0.2)
        assert list(staging.glob("*.lock")), "staging holds no lock while it stages"
        await client.cancel(group)
        final = await asyncio.wait_for(client.wait_group(group), 120)
        assert final.state == GroupState.cancelled, final
    assert sorted(p.name for p in staging.iterdir()) == [], list(staging.iterdir())


def test_a_groups_pending_cancel_is_said_whatever_the_phase() -> None:
    """A group a worker answers for, copying, with a cancel not yet taken effect: the
    header says so (before, only the no-worker ``retrying:`` line said it)."""
    from staccato.fanout_client import status_lines

    for phase in ("stat", "staging", "copy"):
        current = GroupStatus(
            id="g1",
            state=GroupState.running,
            source="http://127.0.0.1/x",
            phase=phase,
            destinations=[],
            cancel_requested=True,
        )
        assert status_lines(current)[0].startswith("group g1: running, cancel requested,")
