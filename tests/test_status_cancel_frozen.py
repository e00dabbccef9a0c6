"""``status`` of a transfer cancelled while its worker is frozen (SIGSTOP: the
process is there, holds its polls, answers nothing) says the cancel was requested,
when, and that it waits for a worker (tester69 LOW: it said ``running`` with no
word of the cancel)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from staccato.client import StaccatoClient
from staccato.errors import TransferNotFoundError
from staccato.models import TransferOptions, TransferState
from tests.helpers import (
    MiB,
    WorkerProcess,
    at_rest,
    run_cli,
    spawned_children,
    wait_for_status,
    write_random,
)
from tests.servers.nginx import NginxServer, nginx_fixture
from tests.servers.temporal_server import TemporalDevServer, _descendants

paced_nginx = nginx_fixture("http_root", scope="function", extra_server_config="limit_rate 2m;")


@pytest.mark.parametrize("frozen", ["worker", "streams"])
async def test_a_cancel_while_the_worker_is_frozen_is_said_with_its_time(
    frozen: str,
    temporal_server: TemporalDevServer,
    paced_nginx: NginxServer,
    http_root: Path,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    """Frozen: the whole worker (no query answered), or only its activity processes
    (the workflow answers, the streams never take the cancel). Either way ``status``
    and ``--json`` say when the cancel was asked and that it waits for a worker."""
    write_random(http_root / "frozen.bin", 80 * MiB, seed=15)
    at_rest(http_root / "frozen.bin")
    worker = WorkerProcess(temporal_server.address, processes=1, log_dir=tmp_path).start()
    assert worker.process is not None
    client = await StaccatoClient.connect(target_host=temporal_server.address)
    client.task_queue = worker.task_queue
    args = {"address": temporal_server.address, "task_queue": worker.task_queue}
    stopped: list[int] = []
    transfer = ""
    try:
        transfer = await client.submit(
            paced_nginx.url("frozen.bin"),
            str(data_dir / "frozen.bin"),
            TransferOptions(chunk_size=4 * MiB, streams=2),
        )
        await wait_for_status(client, transfer, lambda s: s.bytes_done > 0, timeout_s=120)
        root = worker.process.pid
        if frozen == "worker":
            stopped = [root, *(pid for pid, _ in _descendants(root))]
        else:
            stopped = spawned_children(root)[1:]  # the activity processes
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        cancelled = run_cli("cancel", transfer, **args)
        assert cancelled.returncode == 0, cancelled
        asked = (await client.temporal.get_workflow_handle(transfer).describe()).start_time
        given = json.loads(run_cli("status", "--json", transfer, **args).stdout)
        assert given["state"] == TransferState.running.value, given
        assert given["cancel_requested"] is True, given
        # when it was asked: after the run started, not in the future
        at = datetime.fromisoformat(given["cancel_requested_at"])
        assert asked <= at <= datetime.now(UTC), given
        shown = run_cli("status", transfer, **args)
        assert shown.returncode == 0, shown.stderr
        said = (
            f"cancel_requested   yes, requested at {given['cancel_requested_at']} (not taken "
            "effect yet: it waits for a worker to stop the run"
        )
        assert said in shown.stdout, shown.stdout
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        if transfer:
            await client.temporal.get_workflow_handle(transfer).terminate("test over")
        worker.kill()


async def test_a_dataset_childs_status_says_the_datasets_pending_cancel_with_its_time(
    temporal_server: TemporalDevServer,
    paced_nginx: NginxServer,
    http_root: Path,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    """tester71 LOW: a dataset's large file (a child transfer) whose dataset was
    cancelled while the worker is frozen said ``running`` with no word of the cancel
    (its own run has none: the dataset's worker passes it down). Now its status says
    ``cancel_requested`` and when the dataset's cancel was asked, as a single
    transfer's."""
    from staccato.dataset_client import dataset_status, submit_dataset
    from staccato.ids import transfer_id

    source = data_dir / "tree"
    source.mkdir()
    write_random(source / "large.bin", 80 * MiB, seed=16)
    at_rest(source / "large.bin")
    destination = data_dir / "copy"
    worker = WorkerProcess(temporal_server.address, processes=1, log_dir=tmp_path).start()
    assert worker.process is not None
    client = await StaccatoClient.connect(target_host=temporal_server.address)
    client.task_queue = worker.task_queue
    args = {"address": temporal_server.address, "task_queue": worker.task_queue}
    stopped: list[int] = []
    dataset = ""
    try:
        dataset = await submit_dataset(
            client,
            str(source),
            str(destination),
            TransferOptions(chunk_size=4 * MiB, streams=2, max_rate=2 * MiB),
            small_file_max=1 * MiB,  # large.bin is copied by a child transfer
        )
        child = transfer_id(str(destination / "large.bin"))
        deadline = time.monotonic() + 120
        while True:  # the dataset lists its source, then starts the child
            assert time.monotonic() < deadline, "the child copied nothing in 120 s"
            try:
                if (await client.status(child)).bytes_done > 0:
                    break
            except TransferNotFoundError:
                pass
            await asyncio.sleep(0.2)
        root = worker.process.pid
        stopped = [root, *(pid for pid, _ in _descendants(root))]
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        cancelled = run_cli("cancel", dataset, **args)
        assert cancelled.returncode == 0, cancelled
        waiting = await dataset_status(client, dataset)
        assert waiting.cancel_requested is True and waiting.cancel_requested_at, waiting
        given = json.loads(run_cli("status", "--json", child, **args).stdout)
        assert given["state"] == TransferState.running.value, given
        assert given["cancel_requested"] is True, given
        assert given["cancel_requested_at"] == waiting.cancel_requested_at, given
        shown = run_cli("status", child, **args)
        assert shown.returncode == 0, shown.stderr
        said = f"cancel_requested   yes, requested at {given['cancel_requested_at']} (not taken"
        assert said in shown.stdout, shown.stdout
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        if dataset:
            await client.temporal.get_workflow_handle(dataset).terminate("test over")
        worker.kill()
