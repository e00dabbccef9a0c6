"""Workflows Staccato did not start share the namespace: the transfer commands refuse
them quickly and leave them alone; calls that need a worker give up with a message."""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
from pathlib import Path

import pytest
from temporalio.client import WorkflowExecutionStatus

from staccato.client import StaccatoClient
from staccato.errors import DestinationBusyError, TransferFailedError
from staccato.models import TransferOptions, TransferState
from tests.helpers import WorkerProcess, run_cli, write_random


@pytest.mark.parametrize("command", ["cancel", "pause", "resume", "status", "watch"])
async def test_a_foreign_workflow_is_refused_and_left_alone(
    client: StaccatoClient, temporal_server, command: str
) -> None:
    foreign = f"foreign ☃ id {secrets.token_hex(4)}"
    handle = await client.temporal.start_workflow(
        "SomethingElse", id=foreign, task_queue=f"other-{secrets.token_hex(4)}"
    )
    try:
        started = time.monotonic()
        result = run_cli(
            command,
            foreign,
            address=temporal_server.address,
            task_queue=client.task_queue,
            timeout_s=60,
        )
        elapsed = time.monotonic() - started
        assert result.returncode == 1, result
        assert (
            f"{foreign} is not a Staccato transfer (workflow type SomethingElse)" in result.stderr
        ), result.stderr
        # refused, not hung (the old pause hung for minutes): a CLI at load 15 takes
        # several times its quiet seconds, and run_cli gives up at 60 s
        assert elapsed < 50, elapsed
        description = await handle.describe()
        assert description.status == WorkflowExecutionStatus.RUNNING
        assert not description.raw_description.workflow_extended_info.cancel_requested
    finally:
        await handle.terminate("test over")


async def test_pause_of_a_dataset_says_it_is_a_dataset(
    client: StaccatoClient, temporal_server
) -> None:
    dataset = f"staccato-dataset-{secrets.token_hex(16)}"
    handle = await client.temporal.start_workflow(
        "DatasetWorkflow", id=dataset, task_queue=f"nobody-{secrets.token_hex(4)}"
    )
    try:
        result = run_cli(
            "pause", dataset, address=temporal_server.address, task_queue=client.task_queue
        )
        assert result.returncode == 1, result
        assert f"{dataset} is a Staccato dataset, not a single transfer" in result.stderr
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
    finally:
        await handle.terminate("test over")


@pytest.mark.parametrize("command", ["pause", "resume"])
async def test_pause_of_a_group_says_to_pause_its_destinations(
    client: StaccatoClient, temporal_server, command: str
) -> None:
    """A fan-out group has no pause of its own: the refusal says to pause its
    destinations' transfers (it said "not a Staccato transfer")."""
    group = f"staccato-group-{secrets.token_hex(12)}"
    handle = await client.temporal.start_workflow(
        "FanOutWorkflow", id=group, task_queue=f"nobody-{secrets.token_hex(4)}"
    )
    try:
        result = run_cli(
            command, group, address=temporal_server.address, task_queue=client.task_queue
        )
        assert result.returncode == 1, result
        said = " ".join(result.stderr.split())
        assert f"{group} is a fan-out group, not a single transfer" in said, said
        assert "pausing and resuming its destinations' transfers" in said, said
        assert "not a Staccato transfer" not in said, said
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
    finally:
        await handle.terminate("test over")


async def test_pause_without_a_worker_gives_up_with_a_message(
    temporal_server, data_dir: Path
) -> None:
    """A transfer on a task queue no worker polls: the pause (an update, which needs a
    worker) ends within STACCATO_CLIENT_WAIT_S, saying why."""
    source = data_dir / "src.bin"
    write_random(source, 1024)
    queue = f"nobody-{secrets.token_hex(4)}"
    async with await StaccatoClient.connect(target_host=temporal_server.address) as alone:
        alone.task_queue = queue
        transfer = await alone.submit(str(source), str(data_dir / "dst.bin"), TransferOptions())
        try:
            started = time.monotonic()
            result = run_cli(
                "pause",
                transfer,
                address=temporal_server.address,
                task_queue=queue,
                env={"STACCATO_CLIENT_WAIT_S": "2"},
                timeout_s=60,
            )
            elapsed = time.monotonic() - started
            assert result.returncode == 1, result
            assert "no worker took the pause" in result.stderr, result.stderr
            assert repr(queue) in result.stderr
            # STACCATO_CLIENT_WAIT_S (2 s), not minutes: a CLI at load 15 takes several
            # times its quiet seconds to start, and run_cli gives up at 60 s
            assert elapsed < 50, elapsed
        finally:
            await alone.temporal.get_workflow_handle(transfer).terminate("test over")


async def test_list_and_status_of_closed_runs_wait_for_no_worker(
    client: StaccatoClient, temporal_server, data_dir: Path
) -> None:
    """Closed runs on a task queue whose worker polls but cannot answer (stopped with
    SIGSTOP): a query on each would wait its whole timeout; status and list do not
    query closed runs."""
    with WorkerProcess(temporal_server.address, processes=1) as stuck:
        async with await StaccatoClient.connect(target_host=temporal_server.address) as own:
            own.task_queue = stuck.task_queue
            failed = [
                await own.submit(str(data_dir / "missing.bin"), str(data_dir / f"bad-{i}.bin"))
                for i in range(12)
            ]
            for transfer in failed:
                with pytest.raises(TransferFailedError):
                    await asyncio.wait_for(own.wait(transfer), 60)
        assert stuck.process is not None
        stuck.process.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            closed = await asyncio.wait_for(client.status(failed[0]), 60)
            assert time.monotonic() - started < 4.5  # a query would wait 5 s
            assert closed.state == TransferState.failed
            assert closed.error and "missing.bin" in closed.error
            started = time.monotonic()
            rows = await asyncio.wait_for(client.list(state=TransferState.failed, limit=12), 120)
            assert time.monotonic() - started < 30  # 12 queries would wait 60 s
            assert len(rows) == 12
            assert set(failed) <= {r.id for r in rows}
        finally:
            stuck.process.send_signal(signal.SIGCONT)


async def test_destination_busy_names_the_option_for_every_kind_of_start(
    temporal_server, data_dir: Path
) -> None:
    """A transfer holding the destination (here on a task queue no worker polls): a
    different start is refused with the CLI option and the input field to wait."""
    write_random(data_dir / "a.bin", 1024, seed=1)
    write_random(data_dir / "b.bin", 1024, seed=2)
    destination = str(data_dir / "busy.bin")
    async with await StaccatoClient.connect(target_host=temporal_server.address) as alone:
        alone.task_queue = f"nobody-{secrets.token_hex(4)}"
        holder = await alone.submit(str(data_dir / "a.bin"), destination)
        try:
            with pytest.raises(DestinationBusyError) as busy:
                await alone.submit(str(data_dir / "b.bin"), destination)
            message = str(busy.value)
            assert "--if-busy wait" in message, message
            assert '"options": {"if_busy": "wait"}' in message, message
        finally:
            await alone.temporal.get_workflow_handle(holder).terminate("test over")
