"""Commands given twice: a second ``cancel`` of a cancelled transfer, dataset or group
is what was asked for already (exit 0, ``already cancelled: ID``), as a second
``pause`` or ``resume`` is; a cancel of one that ended otherwise exits 1 saying how."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import MiB, run_cli, write_random


def _env(temporal_server, worker) -> dict[str, str]:
    """The service the commands talk to (:func:`tests.helpers.run_cli`'s arguments)."""
    return {"address": temporal_server.address, "task_queue": worker.task_queue}


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, **env)


def _wait_state(run_id: str, state: str, env: dict[str, str], timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    shown = ""
    while time.monotonic() < deadline:
        result = _cli("status", run_id, "--json", env=env)
        assert result.returncode in (0, 1), result.stderr
        shown = json.loads(result.stdout)["state"] if result.stdout.strip() else ""
        if shown == state:
            return
        time.sleep(0.5)  # poll interval of a bounded wait
    raise AssertionError(f"{run_id} is {shown!r}, not {state!r}, after {timeout_s:g} s")


@pytest.mark.parametrize("kind", ["transfer", "dataset", "group"])
def test_a_second_cancel_says_already_cancelled_exit_0(
    temporal_server, worker, data_dir: Path, kind: str
) -> None:
    """A tester's second `cancel` exited 1 "transfer ID is already cancelled", while a
    second `pause` or `resume` exits 0 "already paused" / "already running"."""
    env = _env(temporal_server, worker)
    source = data_dir / f"{kind}-src"
    if kind == "dataset":
        source.mkdir()
        write_random(source / "big.bin", 32 * MiB, seed=91)
        args = ["-r", "--small-file-max", "1MiB", str(source), str(data_dir / f"{kind}-dst")]
    elif kind == "group":
        write_random(source, 32 * MiB, seed=92)
        args = [str(source), str(data_dir / "g1.bin"), str(data_dir / "g2.bin")]
    else:
        write_random(source, 32 * MiB, seed=93)
        args = [str(source), str(data_dir / f"{kind}-dst")]
    started = _cli("submit", "--max-rate", "1MB/s", *args, env=env)
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()
    first = _cli("cancel", run_id, env=env)
    assert first.returncode == 0, first.stderr
    _wait_state(run_id, "cancelled", env)
    again = _cli("cancel", run_id, env=env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"already cancelled: {run_id}", again


def test_a_cancel_of_a_completed_transfer_exits_1_saying_so(
    temporal_server, worker, data_dir: Path
) -> None:
    env = _env(temporal_server, worker)
    source, destination = data_dir / "done.bin", data_dir / "done-dst.bin"
    write_random(source, 1024, seed=94)
    copied = _cli("cp", "-q", str(source), str(destination), env=env)
    assert copied.returncode == 0, copied.stderr
    listed = _cli("status", str(destination), "--json", env=env)
    run_id = json.loads(listed.stdout)["id"]
    cancelled = _cli("cancel", run_id, env=env)
    assert cancelled.returncode == 1, cancelled
    assert f"transfer {run_id} is already completed" in cancelled.stderr, cancelled


def test_pause_of_a_transfer_queued_behind_its_destination_says_why(
    temporal_server, worker, data_dir: Path
) -> None:
    """`pause` of a transfer queued behind the one writing its destination (`submit
    --if-busy wait`) exits 1 saying it has no copy of its own until that ends (a tester
    read "not copying yet (it is queued or starting)", while a transfer queued for an
    endpoint limit pauses: README now says the one rule)."""
    env = _env(temporal_server, worker)
    first, second = data_dir / "first.bin", data_dir / "second.bin"
    write_random(first, 32 * MiB, seed=95)
    write_random(second, 1024, seed=96)
    destination = data_dir / "busy-dst.bin"
    writing = _cli("submit", "--max-rate", "1MB/s", str(first), str(destination), env=env)
    assert writing.returncode == 0, writing.stderr
    holder = writing.stdout.strip()
    try:
        _wait_state(holder, "running", env)
        queued = _cli("submit", "--if-busy", "wait", str(second), str(destination), env=env)
        assert queued.returncode == 0, queued.stderr
        front = queued.stdout.strip()
        _wait_state(front, "queued", env)
        # Until the front's first heartbeat reaches the server it cannot name the
        # transfer it waits for, and says it is starting: each look is refused, and
        # once the heartbeat is there the refusal names that transfer.
        deadline = time.monotonic() + 60
        while True:
            paused = _cli("pause", front, env=env)
            assert paused.returncode == 1, paused
            refusal = f"cannot pause transfer {front}: it has no copy of its own to pause"
            assert refusal in paused.stderr, paused.stderr
            if f"{refusal} until" in paused.stderr or time.monotonic() > deadline:
                break
            time.sleep(0.5)  # pacing of the looks, not a wait for a condition
        assert f"{refusal} until" in paused.stderr, paused.stderr
        assert holder in paused.stderr and f"staccato cancel {front}" in paused.stderr, paused
        _cli("cancel", front, env=env)
    finally:
        _cli("cancel", holder, env=env)
