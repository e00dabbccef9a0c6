"""Per-link tuning end to end: `staccato cp` given neither --streams nor --chunk-size
is tuned on a real worker, says so, shows the optimizer's choice in `status --json`,
and the link remembers it in Temporal (`staccato limit learned`, `limit list`); a
user's --streams, or STACCATO_TUNING=0, leaves the transfer untuned, and so does a
local copy (file -> file: no link to tune, the fixed 4 x 16 MiB run). The tuned
transfers read an HTTP source (nginx): a local copy is not tuned."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.helpers import MiB, WorkerProcess, run_cli, sha256_file, write_random
from tests.servers.nginx import NginxServer, nginx_fixture

SIZE = 80 * MiB  # above the smallest object the optimizer tunes (64 MiB)
#: a local copy's link: never tuned (staccato.links.tuned_link)
LOCAL_LINK = "file://,file://"
#: an HTTP source's nginx, one per test (its port makes the link this test's own)
source_nginx = nginx_fixture("http_root", scope="function")


def _link(server: NginxServer) -> str:
    """The link of a copy from ``server`` to a local file."""
    return f"http://127.0.0.1:{server.port},file://"


def _status(
    temporal_server: Any, worker: WorkerProcess | dict[str, str], destination: Path
) -> dict[str, Any]:
    queue = worker["task_queue"] if isinstance(worker, dict) else worker.task_queue
    shown = run_cli(
        "status", str(destination), "--json",
        address=temporal_server.address, task_queue=queue,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    status: dict[str, Any] = json.loads(shown.stdout)
    return status


def test_cp_without_streams_is_tuned_and_the_link_remembers(
    temporal_server: Any,
    worker: WorkerProcess,
    data_dir: Path,
    source_nginx: NginxServer,
    http_root: Path,
) -> None:
    args = {"address": temporal_server.address, "task_queue": worker.task_queue}
    link = _link(source_nginx)
    digest = write_random(http_root / "src.bin", SIZE, seed=14)
    done = run_cli("cp", source_nginx.url("src.bin"), str(data_dir / "tuned.bin"), **args)
    assert done.returncode == 0, done.stderr
    assert sha256_file(data_dir / "tuned.bin") == digest
    assert "tuned: " in done.stderr and "streams x 16.0 MiB" in done.stderr, done.stderr
    tuned = _status(temporal_server, worker, data_dir / "tuned.bin")["tuning"]
    assert tuned["link"] == link and tuned["chunk_size"] == 16 * MiB
    assert 1 <= tuned["streams"] <= tuned["max_streams"] <= 16
    assert tuned["reasons"] and tuned["decisions"] >= 1

    # the memory is in Temporal: recorded before the transfer completed
    deadline = time.monotonic() + 30
    while True:
        learned = run_cli("limit", "learned", link, "--json", **args)
        assert learned.returncode == 0, learned.stderr
        memories = json.loads(learned.stdout)
        if memories or time.monotonic() > deadline:
            break
        time.sleep(1.0)  # a CLI process per look
    (memory,) = memories
    assert memory["link"] == link and memory["transfers"] >= 1 and memory["reasons"]
    listed = run_cli("limit", "list", **args)
    assert f"{link}  learned {memory['streams']} streams x 16.0 MiB" in listed.stdout
    # the JSON carries what the table shows (it printed [] beside the learned line)
    for extra in ((), (link,)):
        as_json = run_cli("limit", "list", "--json", *extra, **args)
        assert as_json.returncode == 0, as_json.stderr
        (row,) = [r for r in json.loads(as_json.stdout) if r["target"] == link]
        assert row["learned"] == memory, row
        assert row["active"] == 0 and row["queued"] == 0, row
    # the completed transfer tells what the link learned, not the optimizer's next step
    assert tuned["learned_streams"] == memory["streams"], (tuned, memory)
    shown = run_cli("status", str(data_dir / "tuned.bin"), **args)
    line = next(x for x in shown.stdout.splitlines() if x.startswith("tuning"))
    assert f"learned {memory['streams']} streams x 16.0 MiB" in line, line
    assert "trying" not in line and "last:" not in line, line

    # (a warm start from it: tests/workflow/test_tuning_workflow.py)
    # forgotten: the next transfer would start cold
    forgot = run_cli("limit", "learned", link, "--forget", **args)
    assert forgot.returncode == 0 and "forgotten" in forgot.stdout, forgot.stderr
    gone = run_cli("limit", "learned", link, "--json", **args)
    assert json.loads(gone.stdout) == []
    again = run_cli("limit", "learned", link, "--forget", "--json", **args)
    assert json.loads(again.stdout) == {"link": link, "forgotten": False}, again.stdout


def test_user_streams_or_tuning_off_are_not_tuned(
    temporal_server: Any, worker: WorkerProcess, data_dir: Path
) -> None:
    args = {"address": temporal_server.address, "task_queue": worker.task_queue}
    source = data_dir / "src.bin"
    write_random(source, SIZE, seed=15)
    given = run_cli("cp", "--streams", "3", str(source), str(data_dir / "given.bin"), **args)
    assert given.returncode == 0, given.stderr
    assert "tuned:" not in given.stderr
    status = _status(temporal_server, worker, data_dir / "given.bin")
    assert status["tuning"] is None and status["streams"] == 3
    off = run_cli(
        "cp", str(source), str(data_dir / "off.bin"), env={"STACCATO_TUNING": "0"}, **args
    )
    assert off.returncode == 0, off.stderr
    status = _status(temporal_server, worker, data_dir / "off.bin")
    assert status["tuning"] is None and status["streams"] == 4


def test_a_default_local_copy_is_not_tuned_and_its_link_learns_nothing(
    temporal_server: Any, worker: WorkerProcess, data_dir: Path
) -> None:
    """``staccato cp`` of a local file to a local file, given neither --streams nor
    --chunk-size, runs the fixed 4 streams x 16 MiB: no ``tuned:`` line, no ``tuning``
    in status, and ``limit learned file://,file://`` learns nothing (before: the
    optimizer tuned it on page-cache rates, a default local copy ~18 % slower)."""
    args = {"address": temporal_server.address, "task_queue": worker.task_queue}
    source = data_dir / "src.bin"
    digest = write_random(source, SIZE, seed=17)
    done = run_cli("cp", str(source), str(data_dir / "local.bin"), **args)
    assert done.returncode == 0, done.stderr
    assert sha256_file(data_dir / "local.bin") == digest
    assert "tuned:" not in done.stderr, done.stderr
    status = _status(temporal_server, worker, data_dir / "local.bin")
    assert status["tuning"] is None and status["tuner_chooses"] is None, status
    assert status["streams"] == 4 and status["chunk_size"] == 16 * MiB, status
    human = run_cli("status", str(data_dir / "local.bin"), **args).stdout
    assert not [x for x in human.splitlines() if x.startswith("tuning")], human
    assert "chosen by the tuner" not in human, human
    # a tuned transfer records its link's memory before it completes: none here
    learned = run_cli("limit", "learned", LOCAL_LINK, "--json", **args)
    assert learned.returncode == 0 and json.loads(learned.stdout) == [], learned.stdout
    said = run_cli("limit", "learned", LOCAL_LINK, **args)
    assert "a local copy is not tuned" in said.stdout, said.stdout


def test_a_rate_capped_cp_is_not_tuned(
    temporal_server: Any,
    worker: WorkerProcess,
    data_dir: Path,
    source_nginx: NginxServer,
    http_root: Path,
) -> None:
    """``cp --max-rate`` of a tuned link (HTTP -> file) runs the fixed 4 streams x
    16 MiB: the cap, not the link, is the bottleneck (before: the optimizer stepped up
    to 14 streams at 50 MiB/s, holding memory and connections for nothing). The cap
    here (8 GiB/s) does not slow the copy; no ``tuned:`` line, ``status`` says why
    (``untuned``: ``max_rate``), and the link learns nothing."""
    args = {"address": temporal_server.address, "task_queue": worker.task_queue}
    digest = write_random(http_root / "capped.bin", SIZE, seed=41)
    destination = data_dir / "capped.bin"
    done = run_cli(
        "cp", "--max-rate", "8GiB/s", source_nginx.url("capped.bin"), str(destination),
        **args,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sha256_file(destination) == digest
    assert "tuned:" not in done.stderr, done.stderr
    status = _status(temporal_server, worker, destination)
    assert status["tuning"] is None and status["tuner_chooses"] is None, status
    assert status["streams"] == 4 and status["chunk_size"] == 16 * MiB, status
    assert status["untuned"] == "max_rate", status  # status says why
    human = run_cli("status", str(destination), **args).stdout
    (line,) = [x for x in human.splitlines() if x.startswith("tuning")]
    assert "off: a rate-capped copy (--max-rate) is not tuned" in line, line
    assert "4 streams x 16.0 MiB" in line, line
    learned = run_cli("limit", "learned", _link(source_nginx), "--json", **args)
    assert learned.returncode == 0 and json.loads(learned.stdout) == [], learned.stdout


def test_status_of_a_tuned_transfer_not_begun_says_the_tuner_chooses(
    temporal_server: Any, data_dir: Path, source_nginx: NginxServer, http_root: Path
) -> None:
    """``submit`` without --streams and --chunk-size to a task queue no worker polls:
        the transfer has not begun, and ``status`` says the optimizer chooses streams and
        chunk size (before: ``streams 4`` and ``chunk_size 16.0 MiB``, the defaults it only
        starts from), and ``--json`` has them null beside ``tuner_chooses`` (it said 4 and
        16777216); with --streams given, status shows the numbers asked for, and so does a
    local copy given neither (never tuned: it said the tuner chooses)."""
    args = {"address": temporal_server.address, "task_queue": f"no-worker-{time.time_ns()}"}
    write_random(http_root / "src.bin", 1 * MiB, seed=16)
    write_random(data_dir / "src.bin", 1 * MiB, seed=16)
    source = source_nginx.url("src.bin")
    for destination, given, origin in (
        ("tuned.bin", [], source),
        ("given.bin", ["--streams", "3"], source),
        ("local.bin", [], str(data_dir / "src.bin")),
    ):
        submitted = run_cli("submit", *given, origin, str(data_dir / destination), **args)
        assert submitted.returncode == 0, submitted.stderr
    tuned = _status(temporal_server, args, data_dir / "tuned.bin")
    assert tuned["state"] == "scheduled" and tuned["tuner_chooses"] is True, tuned
    # not chosen yet: null, as a tuned schedule's describe --json (they said 4, 16 MiB)
    assert tuned["streams"] is None and tuned["chunk_size"] is None, tuned
    human = run_cli("status", str(data_dir / "tuned.bin"), **args).stdout
    chosen = "chosen by the tuner as the copy starts (per-link optimizer)"
    assert f"streams            {chosen}\n" in human, human
    assert f"chunk_size         {chosen}\n" in human, human
    assert "tuner_chooses" not in human, human
    given = _status(temporal_server, args, data_dir / "given.bin")
    assert given["tuner_chooses"] is None and given["streams"] == 3, given
    human = run_cli("status", str(data_dir / "given.bin"), **args).stdout
    assert "streams            3\n" in human and "chunk_size         16.0 MiB\n" in human
    local = _status(temporal_server, args, data_dir / "local.bin")
    assert local["tuner_chooses"] is None and local["streams"] == 4, local
    assert local["chunk_size"] == 16 * MiB, local
    human = run_cli("status", str(data_dir / "local.bin"), **args).stdout
    assert "streams            4\n" in human and "chunk_size         16.0 MiB\n" in human
    assert "chosen by the tuner" not in human, human
    for destination in ("tuned.bin", "given.bin", "local.bin"):
        cancelled = run_cli("cancel", str(data_dir / destination), **args)
        assert cancelled.returncode == 0, cancelled.stderr


async def test_limit_list_shows_a_link_with_limits_and_memory_once(
    temporal_server: Any, worker: WorkerProcess, client: Any
) -> None:
    """A link with a limit (``limit set``) and what tuning learned of it is one row of
    ``limit list`` carrying both, in the table and in ``--json`` (the table showed it
    twice: a ``learned`` line and a limits line)."""
    import uuid

    from staccato.tuning import LinkMemory
    from staccato.workflows.governor import GOVERNOR_QUEUE
    from staccato.workflows.link_tuning import RECORD_SIGNAL, link_tuning_id

    args = {"address": temporal_server.address, "task_queue": worker.task_queue}
    link = f"http://127.0.0.1:{20000 + uuid.uuid4().int % 20000},file://"
    memory = LinkMemory(link=link, streams=6, chunk_size=16 * MiB, transfers=2)
    # what a tuned transfer's end records (the worker's record_link_tuning activity)
    await client.temporal.start_workflow(
        "LinkTuningWorkflow",
        None,
        id=link_tuning_id(link),
        task_queue=GOVERNOR_QUEUE,
        start_signal=RECORD_SIGNAL,
        start_signal_args=[memory],
    )
    try:
        done = run_cli("limit", "set", link, "--max-active", "3", **args)
        assert done.returncode == 0, done.stderr
        for extra in ((), (link,)):
            shown = run_cli("limit", "list", *extra, **args)
            assert shown.returncode == 0, shown.stderr
            rows = [r for r in shown.stdout.splitlines() if r.startswith(link)]
            assert len(rows) == 1, shown.stdout
            assert rows[0].startswith(f"{link}  max-active 3  active 0"), rows
            assert "learned 6 streams x 16.0 MiB (2 transfers)" in rows[0], rows
            as_json = run_cli("limit", "list", "--json", *extra, **args)
            assert as_json.returncode == 0, as_json.stderr
            (row,) = [r for r in json.loads(as_json.stdout) if r["target"] == link]
            assert row["limits"]["max_active"] == 3, row
            assert row["learned"]["streams"] == 6, row
    finally:
        run_cli("limit", "unset", link, **args)
        run_cli("limit", "learned", link, "--forget", **args)
