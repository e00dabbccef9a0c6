"""The Python API's refusals and ends, as a newcomer found them (tester 57):
``submit_dataset`` of a missing source directory returned an id (``cp -r`` refuses it,
exit 2) and its ``options`` were not type-checked; ``dataset_status`` of a transfer id
hashed it as a destination root ("no dataset ..."); ``pause`` of a completed transfer
raised the private ``_RunEndedError``; ``wait`` of a cancelled transfer raised
``TransferFailedError("cancelled")``; ``follow`` of a transfer that failed at once
yielded ``failed`` twice."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from temporalio.service import RPCError, RPCStatusCode

from staccato.client import RunEndedError, StaccatoClient
from staccato.dataset_client import NotADatasetError, dataset_status, submit_dataset
from staccato.dataset_requests import dataset_id
from staccato.errors import (
    SourceRootNotADirectoryError,
    SourceRootNotFoundError,
    StaccatoError,
    TransferCancelledError,
    TransferFailedError,
    TransferNotFoundError,
)
from staccato.models import TransferOptions, TransferState
from tests.dataset_checks import wait_dataset
from tests.helpers import MiB, run_cli, write_random
from tests.servers.temporal_server import TemporalDevServer


async def _not_started(client: StaccatoClient, root: Path) -> None:
    """No dataset was started to ``root``."""
    with pytest.raises(RPCError) as raised:
        await client.temporal.get_workflow_handle(dataset_id(str(root))).describe()
    assert raised.value.status == RPCStatusCode.NOT_FOUND


async def test_submit_dataset_runs_the_checks_cp_r_runs(
    client: StaccatoClient, temporal_server: TemporalDevServer, data_dir: Path
) -> None:
    missing, target = data_dir / "nonexistent", data_dir / "x"
    with pytest.raises(SourceRootNotFoundError) as raised:
        await submit_dataset(client, str(missing), str(target), TransferOptions())
    assert f"source directory {str(missing)!r} does not exist" in str(raised.value)
    await _not_started(client, target)
    # the CLI says the same words (one check)
    cli = run_cli(
        "submit", "-r", str(missing), str(target),
        task_queue=client.task_queue, address=temporal_server.address,
    )  # fmt: skip
    assert cli.returncode == 2 and str(raised.value) in cli.stderr, cli.stderr
    a_file = data_dir / "a.bin"
    a_file.write_bytes(b"x")
    with pytest.raises(SourceRootNotADirectoryError):
        await submit_dataset(client, str(a_file), str(target), TransferOptions())
    await _not_started(client, target)
    for wrong in ({"streams": 2}, 2):
        with pytest.raises(TypeError, match="options must be a staccato.models.TransferOptions"):
            await submit_dataset(client, str(data_dir), str(target), wrong)  # type: ignore[arg-type]
    await _not_started(client, target)
    # None: the defaults (as documented)
    source = data_dir / "tree"
    source.mkdir()
    (source / "f").write_bytes(b"hello")
    started = await submit_dataset(client, str(source), str(target), None)
    final = await wait_dataset(client, started, timeout_s=120)
    assert final.state.value == "completed" and final.files_done == 1, final


async def test_dataset_calls_on_a_transfer_id_name_the_transfer_call(
    client: StaccatoClient, data_dir: Path
) -> None:
    write_random(data_dir / "s.bin", 1024, seed=3)
    transfer = await client.submit(str(data_dir / "s.bin"), str(data_dir / "d.bin"))
    await client.wait(transfer)
    with pytest.raises(NotADatasetError) as raised:
        await dataset_status(client, transfer)
    message = str(raised.value)
    assert f"{transfer} is a single transfer, not a dataset" in message, message
    assert f"StaccatoClient.status({transfer!r})" in message, message
    assert "staccato-dataset-" not in message, message  # not hashed as a root
    assert isinstance(raised.value, TransferNotFoundError)  # what it raised before


async def test_pause_of_a_completed_transfer_raises_a_public_error(
    client: StaccatoClient, data_dir: Path
) -> None:
    write_random(data_dir / "s.bin", 1024, seed=4)
    transfer = await client.submit(str(data_dir / "s.bin"), str(data_dir / "d.bin"))
    await client.wait(transfer)
    for call in (client.pause, client.resume):
        with pytest.raises(RunEndedError) as raised:
            await call(transfer)
        assert type(raised.value).__name__ == "RunEndedError"
        assert isinstance(raised.value, StaccatoError)
        assert raised.value.state == TransferState.completed
        assert f"transfer {transfer} is already completed" in str(raised.value)


async def test_wait_of_a_cancelled_transfer_says_it_was_cancelled(
    client: StaccatoClient, temporal_server: TemporalDevServer, data_dir: Path
) -> None:
    write_random(data_dir / "big.bin", 32 * MiB, seed=5)
    transfer = await client.submit(
        str(data_dir / "big.bin"), str(data_dir / "c.bin"), TransferOptions(max_rate=2 * MiB)
    )
    async for current in client.follow(transfer):
        if current.bytes_done > 0:
            break
    # True: this call cancelled it (G6: None, beside False for "cancelled already")
    assert await client.cancel(transfer) is True
    # asked again before it took effect: already asked (tester59 T10: True twice)
    assert await client.cancel(transfer) is False
    with pytest.raises(TransferNotFoundError, match="give a transfer id"):
        await client.cancel("")  # (T11: Temporal's raw RPCError)
    with pytest.raises(TransferCancelledError) as raised:
        await asyncio.wait_for(client.wait(transfer), 120)
    assert isinstance(raised.value, TransferFailedError)  # existing catches hold
    assert raised.value.state == TransferState.cancelled
    assert await client.cancel(transfer) is False  # cancelled already
    message = str(raised.value)
    assert message.startswith(f"transfer {transfer} was cancelled (by a cancel request"), message
    assert " of 32.0 MiB" in message, message
    # the CLI's end says the same (it said "cancelled: cancelled")
    watched = run_cli(
        "watch", transfer, address=temporal_server.address, task_queue=client.task_queue
    )
    assert watched.returncode == 1, watched
    assert f"transfer {transfer} was cancelled (by a cancel request" in watched.stderr, watched


async def test_follow_of_a_transfer_that_fails_at_once_yields_failed_once(
    client: StaccatoClient, data_dir: Path
) -> None:
    write_random(data_dir / "s.bin", 4 * MiB, seed=6)
    gone = data_dir / "gone"  # a destination directory that is not there
    transfer = await client.submit(str(data_dir / "s.bin"), str(gone / "d.bin"))
    states = [s.state async for s in client.follow(transfer, interval_s=0.1)]
    assert states[-1] == TransferState.failed, states
    assert states.count(TransferState.failed) == 1, states
