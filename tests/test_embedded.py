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


def test_up_cp_down_up_keeps_history(tmp_path: Path, nginx_ranges, http_root: Path) -> None:
    port, ui_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("STACCATO_SECRET_KEY")},
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
        # the embedded default shares a sealing key between this machine's client and
        # worker: a presigned-style URL works with no setup, its token kept out of Temporal
        key_file = tmp_path / "home" / "secret.key"
        assert key_file.stat().st_mode & 0o777 == 0o600
        write_random(http_root / "embedded-signed.bin", 100_000, seed=3)
        signed = _staccato(
            "cp",
            nginx_ranges.url("embedded-signed.bin?X-Amz-Signature=embeddedtoken123"),
            str(tmp_path / "signed.bin"),
            env=env,
        )
        assert signed.returncode == 0, signed.stderr
        assert "embeddedtoken123" not in signed.stdout + signed.stderr
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
        assert record["destination"] in [t["destination"] for t in listed]
    finally:
        assert _staccato("down", env=env).returncode == 0
