"""Ctrl-C (SIGINT) and SIGTERM on the commands that start or follow a run: every follow
(transfer, dataset, fan-out group; ``cp`` or ``watch``) and a start or attach under way
says the run goes on and how to follow or cancel it, exit 130 / 143; an interrupt
while the command loads says nothing was started, without a traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, MiB, write_random


def _env(temporal_server, worker) -> dict[str, str]:
    return {
        **os.environ,
        "TEMPORAL_ADDRESS": temporal_server.address,
        "TEMPORAL_NAMESPACE": "default",
        "STACCATO_TASK_QUEUE": worker.task_queue,
    }


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "staccato.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=env,
    )


def _popen(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "staccato.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )


def _state(run_id: str, env: dict[str, str]) -> str:
    shown = _cli("status", run_id, "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    return str(json.loads(shown.stdout)["state"])


def _paced_dataset(data_dir: Path, env: dict[str, str], name: str) -> tuple[Path, Path, str]:
    """A dataset running for a while (one 128 MiB file at 1 MB/s, ~134 s; each test
    cancels it): (source, root, id). With 8 MiB (~8 s), ci42 at load ~20 saw the
    dataset end before a ``cp -r`` started after it had connected; with 32 MiB (~33 s)
    a full run at load ~20 saw it end before the ``cp -r -q`` that was to attach."""
    source = data_dir / f"{name}-src"
    source.mkdir()
    write_random(source / "big.bin", 128 * MiB, seed=71)
    root = data_dir / f"{name}-dst"
    started = _cli(
        "submit", "-r", "--small-file-max", "1MiB", "--max-rate", "1MB/s",
        str(source), str(root), env=env,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    return source, root, started.stdout.strip()


def _assert_goes_on(err: str, run_id: str, kind: str) -> None:
    assert f"{kind} {run_id}" in err and "goes on without you" in err, err
    assert f"staccato watch {run_id}" in err and f"staccato cancel {run_id}" in err, err
    assert "error" not in err.split("goes on", 1)[1], err


def _cancel(run_id: str, env: dict[str, str]) -> None:
    """Cancel ``run_id`` unless it has ended (it may end between the look and the
    cancel: "already completed")."""
    if _state(run_id, env) in ("scheduled", "running", "queued"):
        cancelled = _cli("cancel", run_id, env=env)
        assert cancelled.returncode == 0 or "already" in cancelled.stderr, cancelled


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_watch_of_a_dataset_says_it_goes_on(
    temporal_server, worker, data_dir: Path, sig: signal.Signals, code: int
) -> None:
    """``watch DATASET_ID`` stopped by Ctrl-C or SIGTERM: the hint ``cp -r`` and ``watch
    TRANSFER_ID`` give, and 130 / 143 (it said only ``error: interrupted``)."""
    env = _env(temporal_server, worker)
    _, _, dataset = _paced_dataset(data_dir, env, "watched")
    process = _popen("watch", dataset, env=env)
    assert process.stderr is not None
    first = process.stderr.readline()  # following: a progress line
    assert first.startswith(("scheduled", "running")), first
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)
    assert process.returncode == code, (process.returncode, err)
    _assert_goes_on(err, dataset, "dataset")
    assert _state(dataset, env) in ("scheduled", "running", "completed")  # it went on
    _cancel(dataset, env)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_watch_of_a_group_says_it_goes_on(
    temporal_server, worker, data_dir: Path, sig: signal.Signals, code: int
) -> None:
    """``watch GROUP_ID`` stopped by Ctrl-C or SIGTERM: the same hint, naming the group."""
    env = _env(temporal_server, worker)
    source = data_dir / "fan.bin"
    write_random(source, 8 * MiB, seed=72)
    started = _cli(
        "submit", "--max-rate", "1MB/s", str(source), str(data_dir / "a.bin"),
        str(data_dir / "b.bin"), env=env,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    group = started.stdout.strip()
    process = _popen("watch", group, env=env)
    assert process.stderr is not None
    first = process.stderr.readline()  # following: the group's lines
    assert first.strip(), first
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)
    assert process.returncode == code, (process.returncode, err)
    _assert_goes_on(err, group, "group")
    _cancel(group, env)


def _connected(pid: int, port: int) -> bool:
    """Whether process ``pid`` has a TCP connection to 127.0.0.1:``port``."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        lines = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        remote, inode = fields[2], fields[9]
        if inode in inodes and int(remote.split(":")[1], 16) == port:
            return True
    return False


def test_sigterm_while_cp_r_q_attaches_says_it_goes_on(
    temporal_server, worker, data_dir: Path
) -> None:
    """SIGTERM to ``cp -r -q`` while it attaches to the same dataset running (the SDK's
    client connected to Temporal's gRPC port, the attach under way or just done): the
    hint naming the dataset and 143, never a bare ``error: terminated (SIGTERM)``."""
    env = _env(temporal_server, worker)
    source, root, dataset = _paced_dataset(data_dir, env, "attached")
    port = int(temporal_server.address.rsplit(":", 1)[1])
    process = _popen(
        "cp", "-r", "-q", "--small-file-max", "1MiB", "--max-rate", "1MB/s",
        str(source), str(root), env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not _connected(process.pid, port) and process.poll() is None:
        assert time.monotonic() < deadline, "cp -r never connected to Temporal"
        time.sleep(0.002)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, (process.returncode, err)
    _assert_goes_on(err, dataset, "dataset")
    assert _state(dataset, env) in ("running", "completed")
    _cancel(dataset, env)


def _loaded(pid: int, library: str) -> bool:
    try:
        return library in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def _interrupt_while_loading(process: subprocess.Popen[str]) -> tuple[str, str]:
    """Ctrl-C to ``process`` once it has pydantic mapped (still importing: its start
    is a few hundred ms away); its stdout and stderr once it ended."""
    deadline = time.monotonic() + 60
    while not _loaded(process.pid, "_pydantic_core") and process.poll() is None:
        assert time.monotonic() < deadline, "the command never loaded pydantic"
        time.sleep(0.001)
    process.send_signal(signal.SIGINT)
    return process.communicate(timeout=60)


@pytest.mark.parametrize("command", ["cp -r -q", "cp -q", "submit"])
def test_ctrl_c_while_loading_says_nothing_was_started(
    temporal_server, worker, data_dir: Path, command: str
) -> None:
    """Ctrl-C while the command still loads (its imports: pydantic is mapped, the
    start is a few hundred ms away): one line, exit 130, no traceback, and nothing
    started (it printed a ``KeyboardInterrupt`` traceback from some import)."""
    env = _env(temporal_server, worker)
    source = data_dir / "src"
    source.mkdir()
    write_random(source / "f.bin", MiB, seed=73)
    recursive = "-r" in command.split()
    target = data_dir / "dst"
    process = _popen(
        *command.split(), str(source if recursive else source / "f.bin"), str(target), env=env
    )
    out, err = _interrupt_while_loading(process)
    assert process.returncode == 130, (process.returncode, err)
    assert err.strip() == "staccato: interrupted; nothing was started", err
    assert out == "", out
    assert not target.exists()
    shown = _cli("status", str(target), env=env)  # no transfer nor dataset there
    assert shown.returncode == 1 and "no " in shown.stderr.lower(), shown


def test_ctrl_c_while_watch_loads_does_not_say_nothing_was_started(
    temporal_server, worker, data_dir: Path
) -> None:
    """A `watch` stopped while it loads starts nothing either way, and what it
    watches goes on: it says "interrupted", not "nothing was started" (which read as
    if the transfer were not running; found by a tester)."""
    env = _env(temporal_server, worker)
    process = _popen("watch", str(data_dir / "any"), env=env)
    out, err = _interrupt_while_loading(process)
    assert process.returncode == 130, (process.returncode, err)
    assert err.strip() == "staccato: interrupted", err
    assert "Traceback" not in err and out == "", (out, err)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_watch_q_says_nothing_when_stopped(
    temporal_server, worker, data_dir: Path, sig: signal.Signals, code: int
) -> None:
    """``watch -q TRANSFER_ID`` stopped by Ctrl-C or SIGTERM: quiet means quiet, no
    three-line note (the user named the id), only the exit code; the transfer goes
    on. Its ``-h`` says nothing of a submit (tester75: "submit still prints the id")."""
    env = _env(temporal_server, worker)
    source = data_dir / "quiet.bin"
    write_random(source, 8 * MiB, seed=75)
    started = _cli("submit", "--max-rate", "1MB/s", str(source), str(data_dir / "q.out"), env=env)
    assert started.returncode == 0, started.stderr
    transfer = started.stdout.strip()
    port = int(temporal_server.address.rsplit(":", 1)[1])
    process = _popen("watch", "-q", transfer, env=env)
    deadline = time.monotonic() + 60
    while not _connected(process.pid, port) and process.poll() is None:
        assert time.monotonic() < deadline, "watch -q never connected to Temporal"
        time.sleep(0.002)
    process.send_signal(sig)
    out, err = process.communicate(timeout=60)
    assert process.returncode == code, (process.returncode, err)
    assert (out, err) == ("", ""), (out, err)
    assert _state(transfer, env) in ("scheduled", "running", "completed")  # it went on
    _cancel(transfer, env)
    shown = _cli("watch", "-h", env=env)
    assert shown.returncode == 0, shown
    assert "submit" not in shown.stdout and "-q" in shown.stdout, shown.stdout
