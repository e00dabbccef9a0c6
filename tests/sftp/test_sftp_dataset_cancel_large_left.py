"""A dataset with large files (child transfers) to an SFTP server that hangs (sshd
and its session processes SIGSTOPped), cancelled while it hangs: each large file's
transfer cannot remove its temp file, journal and writers directory, and says so in
its own status (``left_behind``). Tester t68 (2b): the dataset's status and ``cp -r``'s
end named only a batch's file, while the large files' ``.staccato-part``, journal and
writers directory were in the destination, named only in each child transfer's
status. Now the dataset's status names what its child transfers left (read from its
last run's history: the children it started, then each one's status).

The second test is one way to ci110's leak (a ``cp -r`` that exited 0 with L2's temp
file, journal and writers directory in the destination, under the cancelled run's
key): that run's requests still reach the server after the next run's first sweep,
e.g. a late ``prepare`` of a large file (an attempt the frozen server held) opens its
session again. (The other way, a journal with only a partial record that the sweep
did not take for Staccato's, is ``tests/sftp/test_sftp_leftovers.py``.) The test plays that late prepare itself (the driver's
``open_session`` with the old transfer's key, on the real server) once the sweep
removed them; the next run sweeps again before it ends
(``DATASET_SWEEP_AT_END_PATCH``).

Real Temporal, real worker, real sshd (``sftp_logged``: stopped and resumed, always,
in a ``finally``). No timing asserts: waits are bounded by conditions.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType

from staccato.client import StaccatoClient
from staccato.dataset_client import cancel_dataset, submit_dataset
from staccato.datasets.models import DatasetState
from staccato.models import TransferOptions
from staccato.temp_names import session_temp
from staccato.workflows.calls import run_session_key
from tests.dataset_checks import wait_dataset
from tests.helpers import MiB, WorkerProcess, run_cli, stopped_process_tree, write_random
from tests.servers.sshd import SshdServer

#: correctness bounds, not speed ones
ENDS_WITHIN_S = 200.0
STARTS_WITHIN_S = 120.0
LARGE = ("L1.bin", "L2.bin")
#: the large files: several chunks each, paced so they are mid-copy at the stop. The
#: production clean-up window (30 s): with the suite's 5 s one (HUNG_CLEANUP_FOR_S),
#: ci98 at load found L2's temp file, journal and writers directory after the next
#: run's sweep (not explained yet)
OPTIONS = TransferOptions(
    chunk_size=1 * MiB, streams=1, max_rate=600_000, retry_for_s=12, heartbeat_timeout_s=15
)


def _leftovers(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob(".*") if ".staccato-" in p.name)


async def _cancelled_while_the_server_hangs(
    client: StaccatoClient,
    worker: WorkerProcess,
    temporal_server: Any,
    server: SshdServer,
    data_dir: Path,
    every: bool = True,
) -> tuple[Path, Path, str, list[Path], dict[str, Any]]:
    """The scene: a dataset (6 small files, the two large ones) to ``server``, cancelled
    while the server's process tree is stopped once both large files' write sessions
    are open; its status checked to name what each large file's transfer left
    (``every``: both must have left their session; else at least one).

    Returns:
        (source directory, destination directory, the dataset's id, what its large
        files' transfers left, the CLI's address arguments).
    """
    source, out = data_dir / "src", data_dir / "out"
    source.mkdir()
    out.mkdir()
    for i in range(6):
        write_random(source / f"s{i}.bin", 64 * 1024, seed=300 + i)
    for i, name in enumerate(LARGE):
        write_random(source / name, 6 * MiB, seed=310 + i)
    dataset = await submit_dataset(
        client, str(source), server.url(str(out)), OPTIONS, small_file_max=1 * MiB
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTS_WITHIN_S
    # both large files' transfers have their temp files open (a chunk written)
    while not all(
        any(
            p.name.startswith(f".{name}.") and p.name.endswith(".staccato-part")
            for p in _leftovers(out)
        )
        and any(p.name.startswith(f".{name}.") for p in out.glob(".*.staccato-journal"))
        for name in LARGE
    ):
        assert loop.time() < deadline, f"large files not under way: {_leftovers(out)}"
        await asyncio.sleep(0.3)
    args: dict[str, Any] = dict(address=temporal_server.address, task_queue=worker.task_queue)
    assert server.pid is not None
    with stopped_process_tree(server.pid):
        await cancel_dataset(client, dataset)
        final = await wait_dataset(client, dataset, timeout_s=ENDS_WITHIN_S)
        assert final.state == DatasetState.cancelled, final
        left = _leftovers(out)
        shown = await asyncio.to_thread(run_cli, "status", "--json", dataset, **args)
        text = (await asyncio.to_thread(run_cli, "status", dataset, **args)).stdout
    status = json.loads(shown.stdout)
    named = {f["name"]: f["left_behind"] for f in status["failures"] if f.get("left_behind")}
    print(f"left: {[p.name for p in left]}\nnamed: {json.dumps(named, indent=1)}\n{text}")
    assert any(p.name.startswith(".L") for p in left), f"the scene did not happen ({left})"
    for name in LARGE:
        mine = [p for p in left if p.name.startswith(f".{name}.")]
        if not every and not mine:
            continue
        assert mine, f"{name}'s transfer left nothing: the scene did not happen ({left})"
        # the dataset names what its large file's transfer left: temp file, journal and
        # writers directory (it named only a batch's file: tester t68 2b)
        assert name in named, (name, named)
        for path in mine:
            assert str(path) in named[name], (path, named[name])
        assert f"left behind: {name}" in text.replace("left behind        ", "left behind: "), text
    if every:
        assert status.get("files_left_behind", 0) >= len(LARGE), status
    return source, out, dataset, left, args


def _same_files(source: Path, out: Path) -> None:
    for path in sorted(p for p in source.iterdir() if p.is_file()):
        assert (out / path.name).read_bytes() == path.read_bytes(), path


async def test_a_cancelled_datasets_large_files_left_behind_are_named_in_its_status(
    sftp_client: StaccatoClient,
    sftp_worker: WorkerProcess,
    temporal_server: Any,
    sftp_logged: SshdServer,
    data_dir: Path,
) -> None:
    source, out, _, _, args = await _cancelled_while_the_server_hangs(
        sftp_client, sftp_worker, temporal_server, sftp_logged, data_dir
    )
    # the server answers again: the next plain run of the dataset removes what they
    # left (its first step sweeps the names its last run's status gives) and copies all
    again = await asyncio.to_thread(
        run_cli, "cp", "-r", "-q", str(source), sftp_logged.url(str(out)), timeout_s=240, **args
    )
    assert again.returncode == 0, again
    assert _leftovers(out) == [], _leftovers(out)
    _same_files(source, out)


async def _old_session_keys(client: StaccatoClient, dataset: str) -> dict[str, str]:
    """The write session key (attempt 0) of each large file's transfer the dataset
    ``dataset``'s last run started: temp file name -> key (read from its history: the
    children it started, as :func:`staccato.workflows.calls.session_key` makes it)."""
    handle = client.temporal.get_workflow_handle(dataset)
    keys: list[str] = []
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED:
            child = event.child_workflow_execution_started_event_attributes.workflow_execution
            keys.append(run_session_key(child.workflow_id, child.run_id))
    return {Path(session_temp("/x/" + name, key)).name: key for key in keys for name in LARGE}


def _late_prepare(
    server: SshdServer, tmp_path: Path, url: str, key: str
) -> subprocess.CompletedProcess[str]:
    """What the cancelled run's late ``prepare`` does at ``server``: open the write
    session keyed ``key`` for ``url`` (the driver's ``open_session``: temp file,
    journal, writers directory), in a process of its own with Staccato's SSH settings
    (the server's client key and known hosts)."""
    code = (
        "import sys\n"
        "from staccato.endpoints.sftp.driver import SFTPDriver\n"
        "from staccato.urls import parse_url\n"
        "SFTPDriver().open_session(parse_url(sys.argv[1]), int(sys.argv[2]), "
        "int(sys.argv[3]), sys.argv[4])\n"
    )
    env = {
        **os.environ,
        "STACCATO_SSH_CONFIG": "none",
        "STACCATO_SSH_IDENTITY": str(server.client_key_path),
        "STACCATO_SSH_KNOWN_HOSTS": str(server.known_hosts_path),
        "STACCATO_SFTP_LOCK_DIR": str(tmp_path / "locks"),
        "SSH_AUTH_SOCK": "",
    }
    args = [url, str(6 * MiB), str(OPTIONS.chunk_size), key]
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120
    )


async def test_a_late_prepare_of_the_cancelled_run_leaves_nothing_after_the_next_run(
    sftp_client: StaccatoClient,
    sftp_worker: WorkerProcess,
    temporal_server: Any,
    sftp_logged: SshdServer,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    """ci110: after ``cp -r`` exited 0, L2's temp file, journal and writers directory
    were in the destination under the cancelled run's key. One way: that run's late
    ``prepare`` (held by the frozen server) opens the session again after the next
    run's sweep. Here the test opens it again itself, as that prepare does (``open_session`` with the
    old key), as soon as the sweep removed it, while the next run copies (paced)."""
    source, out, dataset, left, args = await _cancelled_while_the_server_hangs(
        sftp_client, sftp_worker, temporal_server, sftp_logged, data_dir, every=False
    )
    keys = await _old_session_keys(sftp_client, dataset)
    # a large file's temp file the cancelled run left (the server held its transfer)
    old = next(p for p in left if p.name in keys)
    # the next run, paced so that it is still copying when the late prepare lands
    run = asyncio.ensure_future(
        asyncio.to_thread(
            run_cli,
            "cp",
            "-r",
            "-q",
            "--max-rate",
            "1M",
            str(source),
            sftp_logged.url(str(out)),
            timeout_s=240,
            **args,
        )
    )
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STARTS_WITHIN_S
        while old.exists():  # the next run's first step sweeps it
            assert not run.done(), (run.result(), _leftovers(out))
            assert loop.time() < deadline, f"not swept: {_leftovers(out)}"
            await asyncio.sleep(0.05)
        assert not run.done(), "the next run ended before the late prepare could land"
        name = next(n for n in LARGE if old.name.startswith(f".{n}."))
        late = await asyncio.to_thread(
            _late_prepare, sftp_logged, tmp_path, sftp_logged.url(str(out / name)), keys[old.name]
        )
        assert late.returncode == 0 and old.exists(), late
        again = await run
    finally:
        if not run.done():
            await asyncio.wait([run])
    assert again.returncode == 0, again
    # nothing of the old session is left, nor of the new run's
    assert _leftovers(out) == [], _leftovers(out)
    _same_files(source, out)
