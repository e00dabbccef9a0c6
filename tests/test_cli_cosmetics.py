"""What the CLI says, read line by line against the session's real Temporal dev server
and worker: an immediate ``cp`` never reads "scheduled", ``schedule describe`` does not
contradict itself, ``limit list TARGET``, and ``up --detach`` says why its service exited
(a bare bucket URL: tests/s3/test_s3_cli.py)."""

from __future__ import annotations

import asyncio
import json
import os
import selectors
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from tests.helpers import REPO, WorkerProcess, run_cli

#: seconds to wait for a line the CLI prints at once (bounded; not a timed assertion)
LINE_S = 60.0
#: bound on a one-off schedule's run starting (Temporal's scheduler, under load)
SCHEDULED_RUN_S = 180.0


def _lines_until(process: subprocess.Popen[str], marker: str) -> list[str]:
    """stderr lines of ``process`` until one contains ``marker`` (at most LINE_S s)."""
    assert process.stderr is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stderr, selectors.EVENT_READ)
    lines: list[str] = []
    deadline = time.monotonic() + LINE_S
    while time.monotonic() < deadline:
        if not selector.select(timeout=1.0):
            continue
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line)
        if marker in line:
            break
    return lines


async def test_cp_of_an_immediate_transfer_never_says_scheduled(
    temporal_server, data_dir: Path
) -> None:
    """Before a worker begins it, an immediate transfer's state is ``scheduled``; cp's
    progress reads ``starting`` (``scheduled`` is for starts that wait for their time).
    No worker polls this queue, so the transfer stays there while cp follows it."""
    source = data_dir / "now.bin"
    source.write_bytes(b"n" * 4096)
    queue = f"nobody-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": temporal_server.address,
        "TEMPORAL_NAMESPACE": "default",
        "STACCATO_TASK_QUEUE": queue,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "staccato.cli", "cp", str(source), str(data_dir / "now.out")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        lines = _lines_until(process, "0 B / ?")
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    shown = "".join(lines)
    assert "starting: 0 B / ?" in shown, shown
    assert "scheduled" not in shown, shown
    plain = await temporal_server.client()
    transfer = shown.split()[1].rstrip(":")
    await plain.get_workflow_handle(transfer).terminate("test over")


def _no_bare_dash_beside_a_run_left(text: str) -> dict[str, str]:
    """``schedule describe``'s ``text`` as {label: value}; fails if a run is left with
    neither a time it is due nor one running (a bare "-" for both)."""
    lines = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    if "1 left" in lines["runs"]:
        assert lines["next runs"].strip() != "-" or lines["running"].strip() != "-", text
    return lines


async def _describe_until_done(address: str, name: str) -> None:
    """Read schedule ``name``'s describe lines (as the CLI prints them) every 0.5 s,
    each checked by :func:`_no_bare_dash_beside_a_run_left`, until it has no run left
    (at most SCHEDULED_RUN_S seconds: the caller's assertions then fail)."""
    from staccato.cli.schedule import _describe_lines
    from staccato.client import StaccatoClient
    from staccato.schedules import Schedules

    client = await StaccatoClient.connect(target_host=address, namespace="default")
    try:
        deadline = time.monotonic() + SCHEDULED_RUN_S
        while time.monotonic() < deadline:
            text = "\n".join(_describe_lines(await Schedules(client).describe(name)))
            if "0 left" in _no_bare_dash_beside_a_run_left(text)["runs"]:
                return
            await asyncio.sleep(0.5)
    finally:
        await client.close()


def test_schedule_describe_does_not_contradict_itself(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """Read every line: a tuned schedule's options named a chunk size and streams
    beside "tuned per link", and a local copy's said "tuned per link" though a local
    copy is not tuned; a one-off whose run has started read "active" beside "0
    left" and no next run. The ``--at`` leaves Temporal's scheduler 10 s to take the
    schedule: a time that passes before it does is never run (with 2 s, at load ~20,
    it read "1 left" and "next runs: -" for 3 minutes)."""
    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    source = data_dir / "sched.bin"
    source.write_bytes(b"s" * 2048)
    name = f"once-{uuid.uuid4().hex[:8]}"
    made = run_cli(
        "schedule", "create", name, str(source), str(data_dir / "sched.out"), "--at", "10s",
        **args,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    try:
        # Temporal's scheduler starts the run late on a loaded machine (once not
        # within 60 s at load ~20): every look reads the lines `schedule describe`
        # prints (its _describe_lines of the view), in this process (a CLI process per
        # look cost ~0.5 CPU-s); the last look is the CLI's own
        asyncio.run(_describe_until_done(temporal_server.address, name))
        shown = run_cli("schedule", "describe", name, **args)
        assert shown.returncode == 0, shown.stderr
        lines = _no_bare_dash_beside_a_run_left(shown.stdout)
        assert "0 left" in lines["runs"] and lines["next runs"].strip() == "-", shown.stdout
        assert lines["state"].strip() == "done", shown.stdout
        options = lines["options"]
        # a local copy is not tuned (links.tuned_link): its runs run the fixed 4 x
        # 16 MiB, and describe says so (it said "tuned per link")
        assert "chunk 16.0 MiB, 4 streams" in options and "tuned" not in options, options
        local = json.loads(run_cli("schedule", "describe", name, "--json", **args).stdout)
        assert local["options"]["tuning"] is False, local
        assert local["options"]["streams"] == 4, local
        # a tuned link's (HTTP -> file; paused, never run): chosen per link
        remote = f"tuned-{uuid.uuid4().hex[:8]}"
        made = run_cli(
            "schedule", "create", remote, "http://127.0.0.1:9/sched.bin",
            str(data_dir / "remote.out"), "--every", "1d", "--paused", **args,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        try:
            options = run_cli("schedule", "describe", remote, **args).stdout
            options = next(x for x in options.splitlines() if x.startswith("options"))
            assert "tuned per link" in options, options
            assert "chunk" not in options.replace("chunk size tuned", ""), options
            assert " streams" not in options.replace("streams and chunk", ""), options
            # --json as well: a tuned schedule's 4 x 16 MiB are only the fallback
            # (tester: they read as fixed beside "tuning": true); each run's status
            # says its choice
            described = run_cli("schedule", "describe", remote, "--json", **args)
            tuned = json.loads(described.stdout)["options"]
            assert tuned["tuning"] is True, tuned
            assert tuned["streams"] is None and tuned["chunk_size"] is None, tuned
        finally:
            run_cli("schedule", "delete", remote, **args)
        listed = run_cli("schedule", "list", **args)
        row = next(line for line in listed.stdout.splitlines() if line.startswith(name))
        assert row.split()[1] == "done", row
        # fixed streams and chunk size are shown as they are
        fixed = f"fixed-{uuid.uuid4().hex[:8]}"
        made = run_cli(
            "schedule", "create", fixed, str(source), str(data_dir / "fixed.out"), "--every",
            "1d", "--streams", "2", "--chunk-size", "1MiB", **args,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        text = run_cli("schedule", "describe", fixed, **args).stdout
        assert "chunk 1.0 MiB, 2 streams" in text and "tuned" not in text, text
        given = json.loads(run_cli("schedule", "describe", fixed, "--json", **args).stdout)
        assert given["options"]["streams"] == 2, given
        assert given["options"]["chunk_size"] == 1 << 20, given
        assert given["options"]["tuning"] is False, given
        assert "state:        active" in text, text
        run_cli("schedule", "delete", fixed, **args)
    finally:
        run_cli("schedule", "delete", name, **args)


def test_limit_list_takes_a_target(worker: WorkerProcess, temporal_server) -> None:
    """``limit list TARGET`` shows that endpoint's or link's row alone (it was refused
    as an extra argument); one with no limits exits 1 naming it, a bad form exits 2."""
    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    port = 20000 + uuid.uuid4().int % 20000
    mine, other = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"
    link = f"{mine},file://"  # HTTP is a source only: a link from it
    for target, option in (
        (mine, "--max-active"),
        (other, "--max-streams"),
        (link, "--max-active"),
    ):
        done = run_cli("limit", "set", target, option, "3", **args)
        assert done.returncode == 0, done.stderr
    try:
        shown = run_cli("limit", "list", mine, **args)
        assert shown.returncode == 0, shown.stderr
        rows = shown.stdout.splitlines()
        assert len(rows) == 1 and rows[0].startswith(f"{mine}  max-active 3"), shown.stdout
        as_json = run_cli("limit", "list", "--json", link, **args)
        assert as_json.returncode == 0, as_json.stderr
        assert [row["target"] for row in json.loads(as_json.stdout)] == [link], as_json.stdout
        everything = run_cli("limit", "list", **args).stdout
        assert mine in everything and other in everything, everything
        unknown = f"http://127.0.0.1:{port + 2}"
        missing = run_cli("limit", "list", unknown, **args)
        assert missing.returncode == 1, missing
        assert f"no limits are set on {unknown}" in missing.stderr, missing.stderr
        bad = run_cli("limit", "list", "ftp://somewhere", **args)
        assert bad.returncode == 2 and "TARGET: unknown endpoint scheme 'ftp'" in bad.stderr, (
            bad.stderr
        )
    finally:
        for target in (mine, other, link):
            run_cli("limit", "unset", target, **args)


def test_up_detach_says_why_the_service_exited(tmp_path: Path) -> None:
    """``up --detach`` where the port answers TCP but is no Temporal says why, not
    only "see the log": since 0.13.0 it is refused before the background service
    starts (it was "the service exited with 1: cannot reach Temporal at ...")."""
    import socket

    from tests.servers.temporal_server import free_port

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(8)
        port = taken.getsockname()[1]
        env = {
            "STACCATO_HOME": str(tmp_path / "home"),
            "STACCATO_WORKER_PROCESSES": "2",
        }
        done = run_cli(
            "up", "--detach", "--port", str(port), "--ui-port", str(free_port()),
            address=f"127.0.0.1:{port}", env=env,
        )  # fmt: skip
    assert done.returncode == 1, done
    message = " ".join(done.stderr.split())
    assert (
        f"port {port} on 127.0.0.1 is taken by something that does not answer as a "
        "Temporal server" in message
    ), message
    assert "nothing was started" in message, message
    assert not (tmp_path / "home" / "up.pid").exists()


def test_schedule_describe_says_why_a_run_left_is_not_due() -> None:
    """A one-off with its run left but no time due and none running (its time passed
    before Temporal's scheduler started it) said "next runs: -" beside "1 left"."""
    from staccato.cli.schedule import _describe_lines
    from staccato.schedules import ScheduleView

    view = ScheduleView(
        name="once", id="staccato-schedule-once", source="file:///a", destination="file:///b",
        timing="at 2026-01-01T00:00:00+00:00", paused=False, remaining_runs=1,
    )  # fmt: skip
    lines = dict(line.split(":", 1) for line in _describe_lines(view) if ":" in line)
    assert "1 left" in lines["runs"], lines
    assert lines["next runs"].strip() == "- (its time has passed and no run has started)", lines
    done = dict(
        line.split(":", 1)
        for line in _describe_lines(view.model_copy(update={"remaining_runs": 0}))
        if ":" in line
    )
    assert done["next runs"].strip() == "-", done
