"""A dataset to an SFTP server that hangs (sshd and its session processes
SIGSTOPped) is cancelled while the server hangs: the write session of the file in
flight (its ``.staccato-part`` temp file, journal and writers directory) cannot be
removed then. Once the server answers again, what the cancelled dataset left is
either removed by its clean-up (still going on) or named in the dataset's status
(``left_behind``) and removed by the next plain run of that dataset: never left
silently.

Before, the cancelled batch's clean-up gave up against the frozen server, the status
said ``cancelled`` and nothing else, and the temp files stayed for good: a later
``cp -r`` (even with ``--sync-level``) did not remove them (tester62). Server:
``sftp_logged``, stopped and resumed (always, in a ``finally``).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

from staccato.client import StaccatoClient
from staccato.dataset_client import cancel_dataset
from staccato.datasets.models import DatasetState
from tests.dataset_checks import wait_dataset
from tests.helpers import WorkerProcess, run_cli
from tests.servers.sshd import SshdServer
from tests.sftp.hung_dataset import dataset_under_way, stopped_mid_file

#: correctness bounds, not speed ones
ENDS_WITHIN_S = 200.0
SETTLES_WITHIN_S = 90.0


def _leftovers(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob(".*") if ".staccato-" in p.name)


def _base(path: Path) -> str:
    """``.f.bin.<16 hex>``: what a temp file, journal and writers directory share."""
    return path.name.split(".staccato-")[0]


def _saved(out: Path, paths: list[Path], to: Path) -> Path:
    """A copy of ``paths`` (under ``out``) under ``to``, as they are now."""
    for path in paths:
        target = to / path.relative_to(out)
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            shutil.copytree(path, target)
        elif path.exists():
            shutil.copy2(path, target)
    return to


def _put_back(saved: Path, path: Path) -> None:
    if saved.is_dir():
        shutil.copytree(saved, path)
    elif saved.exists():
        shutil.copy2(saved, path)


async def _settled(out: Path, named: list[str], within_s: float) -> list[Path]:
    """The leftovers at ``out`` once none is left that ``named`` (status texts) does
    not name, or after ``within_s`` seconds (bounded wait on the condition)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        left = _leftovers(out)
        unnamed = [p for p in left if not any(_base(p) in t for t in named)]
        if not unnamed or loop.time() >= deadline:
            return left
        await asyncio.sleep(1)


async def test_a_dataset_cancelled_while_its_sftp_server_hangs_leaves_nothing_unnamed(
    sftp_client: StaccatoClient,
    sftp_worker: WorkerProcess,
    temporal_server: Any,
    sftp_logged: SshdServer,
    data_dir: Path,
) -> None:
    dataset, out = await dataset_under_way(sftp_client, sftp_logged, data_dir, seed=900)
    source = data_dir / "src"
    root = sftp_logged.url(str(out))
    args: dict[str, Any] = dict(address=temporal_server.address, task_queue=sftp_worker.task_queue)
    async with stopped_mid_file(sftp_logged, out):
        await asyncio.sleep(2)  # the file in flight meets the frozen server
        frozen = _leftovers(out)
        saved = _saved(out, frozen, data_dir / "frozen")
        await cancel_dataset(sftp_client, dataset)
        final = await wait_dataset(sftp_client, dataset, timeout_s=ENDS_WITHIN_S)
        assert final.state == DatasetState.cancelled, final
    # the scenario: the file in flight at the stop had its session open
    assert frozen, "no temp file at the freeze: the server was not stopped mid-file"
    shown = await asyncio.to_thread(run_cli, "status", "--json", dataset, **args)
    status = json.loads(shown.stdout)
    text = (await asyncio.to_thread(run_cli, "status", dataset, **args)).stdout
    named = [f["left_behind"] for f in status.get("failures") or [] if f.get("left_behind")]
    # the server answers again: what is left once things settle is named in status
    left = await _settled(out, named, SETTLES_WITHIN_S)
    print(f"at the freeze: {[p.name for p in frozen]}; left: {[p.name for p in left]}")
    print(f"named: {named}")
    for path in left:
        base = _base(path)
        assert any(base in t for t in named), (path, named, text)
        assert base in text and "left behind" in text, text
    # a named session the clean-up removed as the server woke (its thread blocked on
    # it goes on): put back as the freeze left it (a server that woke later), so the
    # next run's sweep is what removes it
    restored = [p for p in frozen if not p.exists() and any(_base(p) in t for t in named)]
    for path in restored:
        _put_back(saved / path.relative_to(out), path)
    print(f"put back: {[p.name for p in restored]}")
    # the next plain run of the dataset removes what is named, and copies the rest
    again = await asyncio.to_thread(
        run_cli, "cp", "-r", "-q", str(source), root, timeout_s=240, **args
    )
    assert again.returncode == 0, again
    assert _leftovers(out) == [], _leftovers(out)
    if restored:  # removed by the rerun's first step: its sweep of what was named
        history = await sftp_client.temporal.get_workflow_handle(dataset).fetch_history()
        steps = [
            e.activity_task_scheduled_event_attributes.activity_type.name
            for e in history.events
            if e.HasField("activity_task_scheduled_event_attributes")
        ]
        assert steps[0] == "sweep_leftovers", steps[:5]
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        assert (out / path.relative_to(source)).read_bytes() == path.read_bytes(), path
