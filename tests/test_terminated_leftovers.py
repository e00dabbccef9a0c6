"""A transfer terminated by hand (``temporal workflow terminate``, the SDK's
``terminate()``) runs no workflow code after it, so its clean-up never runs: its temp
file and journal stay beside the destination (tester F4: and ``status`` said
nothing). ``status`` of the terminated run names them (``left_behind``) while they are
there, and the next transfer to the destination removes them (it does not resume from
them: a new run's session key). Real worker, Temporal and file system; the copy
paced (``max_rate``) so the terminate lands mid-copy. The SFTP case:
``tests/sftp/test_sftp_terminated_leftovers.py``."""

from __future__ import annotations

import json
from pathlib import Path

from staccato.cli import render
from staccato.client import StaccatoClient
from staccato.models import TransferOptions, TransferState
from tests.helpers import (
    MiB,
    WorkerProcess,
    leftovers,
    run_cli,
    sha256_file,
    wait_for_status,
    write_random,
)

SIZE = 8 * MiB
#: 512 KiB/s: 16 s in all, so a terminate after 2 MiB lands well before the end
OPTIONS = TransferOptions(chunk_size=1 * MiB, streams=1, max_rate=512 * 1024)


def _moving(status) -> bool:  # noqa: ANN001
    assert status.state not in (TransferState.completed, TransferState.failed), status
    return status.bytes_done >= 2 * MiB


async def test_terminated_transfer_names_its_temp_file_and_next_one_sweeps_it(
    client: StaccatoClient, worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    source = data_dir / "terminated.bin"
    write_random(source, SIZE, seed=171)
    out = data_dir / "out"
    out.mkdir()
    target = out / "terminated.bin"
    transfer = await client.submit(str(source), str(target), OPTIONS)
    moving = await wait_for_status(client, transfer, _moving, timeout_s=120)
    run_id = client.submitted_run(transfer)
    assert run_id is not None
    await client.temporal.get_workflow_handle(transfer, run_id=run_id).terminate("test: F4")
    # the terminated run's part file and journal stay (no workflow code runs)
    left = leftovers(out)
    assert any(name.endswith(".staccato-part") for name in left), left
    assert any(name.endswith(".staccato-journal") for name in left), left
    ended = await client.status(transfer, run_id=run_id)
    assert ended.state == TransferState.failed, ended
    assert ended.left_behind is not None, (ended, left)
    for name in left:
        if name.endswith((".staccato-part", ".staccato-journal")):
            assert str(out / name) in ended.left_behind, (name, ended.left_behind)
    assert "terminated" in ended.left_behind, ended.left_behind
    assert "next transfer to this destination removes it" in ended.left_behind
    assert "terminated, so no clean-up" in render.durable_text(ended), ended
    # the CLI's status says it too (one implementation)
    shown = run_cli(
        "status",
        "--json",
        str(target),
        address=temporal_server.address,
        task_queue=worker.task_queue,
    )
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["left_behind"] == ended.left_behind, shown.stdout
    assert moving.bytes_done >= 2 * MiB

    # the same transfer again: it completes and sweeps the terminated run's files
    again = await client.submit(
        str(source), str(target), OPTIONS.model_copy(update={"max_rate": None})
    )
    await client.wait(again)
    assert sha256_file(target) == sha256_file(source)
    assert leftovers(out) == [], leftovers(out)
    # and the terminated run's status no longer says they are left
    after = await client.status(transfer, run_id=run_id)
    assert after.left_behind is None, after
