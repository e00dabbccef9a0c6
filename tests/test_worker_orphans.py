"""A SIGKILLed worker leaves no process behind: its activity processes, its
multiprocessing manager and multiprocessing's resource tracker all exit within a bound,
whenever the kill lands, including while the activity processes are still starting
(at the worker's start, and while it rebuilds a pool after one of them died). A process
that outlived its worker would hold memory and, if it ran a stream, could go on
writing while Temporal retries that stream elsewhere."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.helpers import WORKER_START_S, WorkerProcess, child_pids, pid_alive
from tests.servers.temporal_server import TemporalDevServer

PROCESSES = 2
# Seconds every process of the killed worker gets to exit (a few on a quiet machine:
# the kernel kills them at once; a loaded one needs longer to tear them down).
GONE_BOUND_S = 15.0


def _started(pid: int) -> int | None:
    """The start time of ``pid`` (clock ticks since boot), or None if it is gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (FileNotFoundError, IndexError, ValueError):
        return None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return "(gone)"


def _descendants(pid: int) -> dict[int, int | None]:
    """Every process below ``pid`` (children, theirs, ...) -> its start time."""
    found: dict[int, int | None] = {}
    for child in child_pids(pid):
        found[child] = _started(child)
        try:
            found.update(_descendants(child))
        except FileNotFoundError:
            continue
    return found


def _spawned(pid: int) -> set[int]:
    """Children of ``pid`` started by multiprocessing's ``spawn`` (the manager and the
    activity processes; not the resource tracker)."""
    try:
        children = child_pids(pid)
    except FileNotFoundError:
        return set()
    return {child for child in children if "spawn_main" in _cmdline(child)}


def _wait_spawned(worker: WorkerProcess, count: int, old: set[int]) -> set[int]:
    """Poll (every few milliseconds) until the worker has ``count`` spawned children not
    in ``old``; return them. The kill that follows lands while the last one is still
    starting its interpreter: it has not yet run a line of Staccato's code."""
    assert worker.process is not None
    deadline = time.monotonic() + WORKER_START_S
    while True:
        assert worker.process.poll() is None, worker.log_tail()
        new = _spawned(worker.process.pid) - old
        if len(new) >= count:
            return new
        assert time.monotonic() < deadline, f"{len(new)} of {count} processes spawned"
        time.sleep(0.003)


def _kill_and_expect_no_survivor(worker: WorkerProcess) -> None:
    """SIGKILL the worker; every process below it at that moment must be gone (exited;
    a zombie counts as gone) within ``GONE_BOUND_S`` seconds."""
    assert worker.process is not None
    below = _descendants(worker.process.pid)
    worker.process.send_signal(signal.SIGKILL)
    worker.process.wait(30)
    killed_at = time.monotonic()
    assert len(below) >= 2 + PROCESSES, f"tracker, manager and pool expected: {below}"

    def alive() -> list[int]:
        return [p for p, start in below.items() if pid_alive(p) and _started(p) == start]

    try:
        while alive() and time.monotonic() - killed_at < GONE_BOUND_S:
            time.sleep(0.1)
        survivors = alive()
        assert not survivors, (
            f"{GONE_BOUND_S:.0f} s after the worker's SIGKILL these of its processes live on: "
            + "; ".join(f"{p}: {_cmdline(p)[:160]}" for p in survivors)
        )
        print(
            f"all {len(below)} processes gone {time.monotonic() - killed_at:.2f} s after the kill"
        )
    finally:
        for pid in alive():  # never leave them to the rest of the suite
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("moment", ["starting", "rebuilding"])
def test_sigkilled_worker_leaves_no_process(
    moment: str, temporal_server: TemporalDevServer, tmp_path: Path
) -> None:
    """``starting``: the kill lands as the worker's last activity process is spawned;
    ``rebuilding``: as the last process of the pool that replaces a killed one is."""
    worker = WorkerProcess(temporal_server.address, log_dir=tmp_path, processes=PROCESSES)
    try:
        if moment == "starting":
            worker.start(wait=False)
            _wait_spawned(worker, 1 + PROCESSES, set())  # manager + pool
        else:
            worker.start()
            assert worker.process is not None
            first = _spawned(worker.process.pid)
            assert len(first) == 1 + PROCESSES, first
            os.kill(max(first, key=lambda p: _started(p) or 0), signal.SIGKILL)
            _wait_spawned(worker, 1 + PROCESSES, first)  # the new manager + pool
        _kill_and_expect_no_survivor(worker)
    finally:
        worker.kill()
