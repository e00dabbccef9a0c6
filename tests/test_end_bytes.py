"""A failed or cancelled transfer keeps its byte counts: ``status`` (and ``status
--json``) of the closed run says how many bytes it had moved (it said 0: a closed
run is not queried, and the counts lived only in the workflow's memory). Real
worker, Temporal and file system; the copy paced (``max_rate``) so the cancel or the
failure lands mid-copy."""

from __future__ import annotations

import json
import os
from pathlib import Path

from staccato.client import StaccatoClient
from staccato.models import TransferOptions, TransferState
from tests.helpers import MiB, WorkerProcess, run_cli, wait_for_status, write_random

SIZE = 8 * MiB
#: 512 KiB/s: 16 s in all, so a cancel or a change of the source after 2 MiB lands
#: ~12 s before the end (at 1 MiB/s it had ~6 s, less the lag of the durable count,
#: which a cancel's path at load 15 could outlast: then the copy completed)
OPTIONS = TransferOptions(chunk_size=1 * MiB, streams=1, max_rate=512 * 1024)


def _moving(status) -> bool:  # noqa: ANN001
    assert status.state not in (TransferState.completed, TransferState.failed), status
    return status.bytes_done >= 2 * MiB


def _shown(worker: WorkerProcess, temporal_server, destination: Path) -> dict:  # noqa: ANN001
    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    text = run_cli("status", "--json", str(destination), **args)
    assert text.returncode == 0, text
    human = run_cli("status", str(destination), **args)
    shown = json.loads(text.stdout)
    shown["human"] = human.stdout
    return shown


async def test_cancelled_transfer_keeps_its_bytes(
    client: StaccatoClient, worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    source, destination = data_dir / "src.bin", data_dir / "dst.bin"
    write_random(source, SIZE, seed=3)
    transfer = await client.submit(str(source), str(destination), OPTIONS)
    before = await wait_for_status(client, transfer, _moving, timeout_s=120)
    await client.cancel(transfer)
    final = await wait_for_status(
        client, transfer, lambda s: s.state == TransferState.cancelled, timeout_s=120
    )
    assert before.bytes_done - OPTIONS.chunk_size <= final.bytes_done < SIZE, (before, final)
    assert final.bytes_done > 0, final
    assert final.bytes_total == SIZE, final
    shown = _shown(worker, temporal_server, destination)
    assert shown["state"] == "cancelled" and shown["bytes_done"] == final.bytes_done, shown
    assert "MiB" in shown["human"], shown["human"]


async def test_failed_transfer_keeps_its_bytes(
    client: StaccatoClient, worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    source, destination = data_dir / "src.bin", data_dir / "dst.bin"
    write_random(source, SIZE, seed=4)
    transfer = await client.submit(str(source), str(destination), OPTIONS)
    before = await wait_for_status(client, transfer, _moving, timeout_s=120)
    with open(source, "r+b") as f:  # the source changes under the copy: it fails
        f.truncate(SIZE // 2)
    os.utime(source, (1_000_000_000, 1_000_000_000))
    final = await wait_for_status(
        client,
        transfer,
        lambda s: s.state in (TransferState.failed, TransferState.completed),
        timeout_s=120,
    )
    assert final.state == TransferState.failed, final
    # the bytes durable at the failure: the last whole chunks written (the status
    # before it also counted the chunk being written)
    assert before.bytes_done - OPTIONS.chunk_size <= final.bytes_done <= SIZE, (before, final)
    assert final.bytes_done >= 2 * MiB - OPTIONS.chunk_size > 0, final
    assert final.bytes_total == SIZE, final
    shown = _shown(worker, temporal_server, destination)
    assert shown["state"] == "failed" and shown["bytes_done"] == final.bytes_done, shown
