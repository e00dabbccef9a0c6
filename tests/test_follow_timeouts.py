"""``cp -r`` follows its dataset through a Temporal that stops answering for a
few seconds (tester65 T12: at load 66 one slow answer made ``cp -r`` quit with exit 1,
"Temporal at ... did not answer in time (Timeout expired)", while its dataset ran on
fine). The follow reads its status again for up to a minute of such timeouts in a
row; the command then ends as the run does (exit 0, every byte equal). (A single
transfer's ``cp`` follows through the same rule, :func:`staccato.following.
read_through_timeouts`; its describe has no 1 s bound, so a stop of seconds does not
make it time out, and no test of it here could fail on the old code.)

The Temporal dev server is one this test starts itself (not the session's), stopped
(SIGSTOP, it and its children: connections stay open, nothing answers) for a few
seconds, far shorter than the follow's bound, while the command follows. The client
waits at most 1 s for a describe (``STACCATO_CLIENT_WAIT_S=1``), so reads asked
during the stop time out (the old code quit at the first).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import (
    REPO,
    MiB,
    WorkerProcess,
    sha256_file,
    stopped_process_tree,
    write_random,
)
from tests.servers.temporal_server import TemporalDevServer

#: seconds the server is stopped: several 1 s describe timeouts, well inside the
#: follow's bound (staccato.following.TIMEOUTS_FOR_S, 60 s)
STOPPED_S = 6.0
#: correctness bounds, not speed ones
STARTS_WITHIN_S = 60.0
ENDS_WITHIN_S = 180.0


@pytest.fixture
def own_temporal(tmp_path: Path):
    server = TemporalDevServer(tmp_path / "temporal.db", headless=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _cp(args: list[str], *, server: TemporalDevServer, task_queue: str, log: Path):
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": server.address,
        "TEMPORAL_NAMESPACE": "default",
        "STACCATO_TASK_QUEUE": task_queue,
        "STACCATO_CLIENT_WAIT_S": "1",
        "STACCATO_LIGHT_CLIENT": "0",
    }
    env.pop("STACCATO_TEMPORAL_HTTP", None)
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "staccato.cli", "cp", *args],
            stdout=subprocess.DEVNULL,
            stderr=out,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=REPO,
        )


def _wait_copying(cp: subprocess.Popen, destination: Path, log: Path) -> None:
    """Until something is written under ``destination`` (the copy runs) while ``cp``
    still follows it."""
    deadline = time.monotonic() + STARTS_WITHIN_S
    while not (destination.exists() and any(destination.iterdir())):
        assert cp.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)


def _stop_then_finish(
    server: TemporalDevServer, cp: subprocess.Popen, log: Path
) -> subprocess.Popen:
    assert server.pid is not None
    with stopped_process_tree(server.pid):
        time.sleep(STOPPED_S)  # the outage itself (no assertion on time)
        assert cp.poll() is None, "cp ended while Temporal was stopped:\n" + log.read_text()
    try:
        cp.wait(ENDS_WITHIN_S)
    finally:
        if cp.poll() is None:
            cp.kill()
            cp.wait(10)
    return cp


def test_cp_r_follows_through_a_temporal_that_stops_answering_a_few_seconds(
    own_temporal: TemporalDevServer, data_dir: Path, tmp_path: Path
) -> None:
    source, destination = data_dir / "t12-src", data_dir / "t12-dst"
    source.mkdir()
    digests = {
        f"f{i}.bin": write_random(source / f"f{i}.bin", 2 * MiB, seed=1200 + i) for i in range(6)
    }
    log = tmp_path / "cp-r.log"
    with WorkerProcess(own_temporal.address, processes=1, log_dir=tmp_path) as worker:
        # paced: 12 MiB at 1 MiB/s, so the copy runs through the stop
        cp = _cp(
            ["-r", f"{source}/", f"{destination}/", "--max-rate", "1MiB"],
            server=own_temporal,
            task_queue=worker.task_queue,
            log=log,
        )
        _wait_copying(cp, destination, log)
        _stop_then_finish(own_temporal, cp, log)
    said = log.read_text()
    assert cp.returncode == 0, said
    assert "did not answer in time" not in said, said
    assert {p.name: sha256_file(p) for p in destination.iterdir()} == digests, said
