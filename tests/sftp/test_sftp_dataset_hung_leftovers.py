"""A dataset to an SFTP server that hangs (sshd and its session processes
SIGSTOPped) and stays hung past the dataset's end: the write session of the file in
flight (its ``.staccato-part`` temp file and journal) cannot be removed, and the
dataset's status names what is left and where (``failures[].left_behind``,
``files_left_behind``, the text's ``left behind`` line); once the server answers
again, ``cp -r --retry-failed`` (the status' advice) removes them and copies the
failed files.

Before, the batch's clean-up (``abort_batch_orphans``) blocked on the hung server
until Temporal timed it out, nothing said the temp file and journal were there, and
no dataset run removed them (tester T15). Server: ``sftp_logged``, stopped and resumed (always, in a ``finally``).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from staccato.client import StaccatoClient
from staccato.datasets.models import DatasetState
from tests.dataset_checks import wait_dataset
from tests.helpers import WorkerProcess, run_cli
from tests.servers.sshd import SshdServer
from tests.sftp.hung_dataset import dataset_under_way, stopped_mid_file

#: a correctness bound, not a speed one
ENDS_WITHIN_S = 200.0


def _leftovers(out: Path) -> list[Path]:
    return sorted(
        p for p in out.rglob(".*") if p.name.endswith((".staccato-part", ".staccato-journal"))
    )


async def test_sessions_left_by_a_hung_sftp_server_are_named_then_removable(
    sftp_client: StaccatoClient,
    sftp_worker: WorkerProcess,
    temporal_server: Any,
    sftp_logged: SshdServer,
    data_dir: Path,
) -> None:
    dataset, out = await dataset_under_way(sftp_client, sftp_logged, data_dir, seed=700)
    source = data_dir / "src"
    root = sftp_logged.url(str(out))
    args: dict[str, Any] = dict(address=temporal_server.address, task_queue=sftp_worker.task_queue)
    async with stopped_mid_file(sftp_logged, out):
        final = await wait_dataset(sftp_client, dataset, timeout_s=ENDS_WITHIN_S)
        assert final.state in (DatasetState.completed_with_errors, DatasetState.failed), final
        left = _leftovers(out)
        # the scenario: the file in flight at the stop kept its session
        assert left, "no temp file was left: the server was not stopped mid-file"
        shown = await asyncio.to_thread(run_cli, "status", "--json", dataset, **args)
        status = json.loads(shown.stdout)
        text = (await asyncio.to_thread(run_cli, "status", dataset, **args)).stdout
    named = [f for f in status["failures"] if f.get("left_behind")]
    print(f"left: {[str(p) for p in left]}; named: {named}")
    assert named and status.get("files_left_behind") == len(named), status
    for path in left:  # each temp file and journal is named, with its full path
        assert any(str(path) in f["left_behind"] for f in named), (path, named)
        assert str(path) in text and "left behind" in text, text
    # the server answers again: the retry of the failed files removes what they left
    # (its first run sweeps them: DatasetRequest.sweep), then copies them
    retried = await asyncio.to_thread(
        run_cli, "cp", "-r", "-q", "--retry-failed", str(source), root, timeout_s=240, **args
    )
    assert retried.returncode == 0, retried
    assert _leftovers(out) == [], _leftovers(out)
    # (the abort_batch_orphans call blocked on the hung server may have removed them
    # as the server answered again; the retry swept whatever was left)
    history = await sftp_client.temporal.get_workflow_handle(dataset).fetch_history()
    steps = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert steps[0] == "sweep_leftovers", steps[:5]
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        assert (out / path.relative_to(source)).read_bytes() == path.read_bytes(), path
