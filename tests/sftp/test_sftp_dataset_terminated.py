"""A dataset to an SFTP server terminated by hand mid-copy (``temporal workflow
terminate``): no workflow code runs after it, so its batches in flight wrote no
checkpoint, and from the client's host the files they published or left on the
server cannot be told. ``status`` says so (its counts are the last known, and why),
names each file of those batches whose temp file may be left (in ``left behind``
lines: "if its batch had begun this file"), and the next run of the dataset removes
what is there and copies the rest. Before, it said the counts of its memo as final
and named nothing (tester t68 1b, at a local destination: ``files_done 0``).

Real Temporal, real worker, real sshd (``sftp_logged``). No timing asserts.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from staccato.cli.datasets import left_behind_lines, status_lines
from staccato.client import StaccatoClient
from staccato.dataset_client import dataset_status
from staccato.datasets.models import DatasetState
from tests.helpers import WorkerProcess, run_cli
from tests.servers.sshd import SshdServer
from tests.sftp.hung_dataset import dataset_under_way


async def test_a_terminated_sftp_dataset_says_its_counts_are_the_last_known(
    sftp_client: StaccatoClient,
    sftp_worker: WorkerProcess,
    temporal_server: Any,
    sftp_logged: SshdServer,
    data_dir: Path,
) -> None:
    dataset, out = await dataset_under_way(sftp_client, sftp_logged, data_dir, seed=680)
    await sftp_client.temporal.get_workflow_handle(dataset).terminate("test: t68 1b")
    status = await dataset_status(sftp_client, dataset)
    lines = status_lines(status, False)
    print("\n".join(lines))
    assert status.state == DatasetState.failed, status
    # the files its batches in flight published are not known from here: said
    assert status.counts_unknown and "terminated" in status.counts_unknown, status
    assert any(line.startswith("progress") and "terminated" in line for line in lines), lines
    # what they may have left is named, as maybe
    left = left_behind_lines(status)
    assert left, status.failures
    for failure in status.left_behind():
        assert "if its batch had begun this file" in (failure.left_behind or ""), failure
    # the next run removes what is there and copies the rest
    args: dict[str, Any] = dict(address=temporal_server.address, task_queue=sftp_worker.task_queue)
    source = data_dir / "src"
    again = await asyncio.to_thread(
        run_cli, "cp", "-r", "-q", str(source), sftp_logged.url(str(out)), timeout_s=240, **args
    )
    assert again.returncode == 0, again
    assert sorted(p.name for p in out.rglob(".*") if ".staccato-" in p.name) == []
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        assert (out / path.relative_to(source)).read_bytes() == path.read_bytes(), path
