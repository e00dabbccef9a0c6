"""The embedded default: `staccato up --detach` runs Temporal's dev server (SQLite under
STACCATO_HOME), the UI and a worker; transfers survive `down` + `up`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO, sha256_file, write_random
from tests.servers.temporal_server import free_port


def _staccato(
    *args: str, env: dict[str, str], timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "staccato.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout_s,
        cwd=REPO,
    )


def test_up_cp_down_up_keeps_history(tmp_path: Path) -> None:
    port, ui_port = free_port(), free_port()
    env = {
        **os.environ,
        "STACCATO_HOME": str(tmp_path / "home"),
        "TEMPORAL_ADDRESS": f"127.0.0.1:{port}",
        "STACCATO_TASK_QUEUE": "staccato",
        "STACCATO_WORKER_PROCESSES": "2",
    }
    up = _staccato("up", "--detach", "--port", str(port), "--ui-port", str(ui_port), env=env)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        assert f"127.0.0.1:{port}" in up.stdout
        with socket.create_connection(("127.0.0.1", ui_port), timeout=5):
            pass  # the Temporal UI answers
        source = tmp_path / "in.bin"
        digest = write_random(source, 3 * 1024 * 1024 + 3)
        destination = tmp_path / "out.bin"
        cp = _staccato("cp", str(source), str(destination), "--chunk-size", "1M", env=env)
        assert cp.returncode == 0, cp.stderr
        assert sha256_file(destination) == digest
        again = _staccato("up", "--detach", "--port", str(port), env=env)
        assert again.returncode == 0 and "already up" in again.stderr  # idempotent
    finally:
        down = _staccato("down", env=env)
        assert down.returncode == 0, down.stderr
    assert (tmp_path / "home" / "temporal.db").exists()
    up = _staccato("up", "--detach", "--port", str(port), "--ui-port", str(ui_port), env=env)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        status = _staccato("status", str(destination), "--json", env=env)
        assert status.returncode == 0, status.stderr
        record = json.loads(status.stdout)
        assert record["state"] == "completed"
        assert record["bytes_done"] == 3 * 1024 * 1024 + 3
        listed = json.loads(_staccato("list", "--json", env=env).stdout)
        assert [t["destination"] for t in listed] == [record["destination"]]
    finally:
        assert _staccato("down", env=env).returncode == 0
