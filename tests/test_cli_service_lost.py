"""A command that loses the service it was using: ``staccato down`` while a ``cp``
follows a transfer. The command says in one line which address it used, that the
transfer goes on, and how to follow it again; the SDK core's own log lines (ANSI
coloured, ``temporalio_client::retry``) do not reach the user's terminal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO, MiB, write_random
from tests.servers.temporal_server import free_port


def _env(tmp_path: Path, home: Path) -> dict[str, str]:
    """A user's environment with nothing of Temporal's exported (no TEMPORAL_*, no
    Temporal configuration file): the address is the one `up` of ``home`` recorded."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TEMPORAL_", "STACCATO_SECRET_KEY")) and k != "STACCATO_TEMPORAL_HTTP"
    }
    env.update(
        STACCATO_HOME=str(home),
        STACCATO_WORKER_PROCESSES="1",
        XDG_CONFIG_HOME=str(tmp_path / "config"),
    )
    return env


def _staccato(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "staccato.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=REPO,
    )


def test_a_followed_cp_that_loses_the_service_says_where_and_what_goes_on(
    tmp_path: Path,
) -> None:
    """A tester's `cp` following a transfer when `down` stopped the `up --port 7600`
    it used printed five ANSI-coloured Rust log lines (``WARN temporalio_client::retry:
    gRPC call describe_workflow_execution retried 8 times``), then "Temporal at
    127.0.0.1:7233 is unavailable" (the address re-read after `down` removed the
    record), and nothing of the transfer, which goes on at the next `up`."""
    home = tmp_path / "home"
    port, ui_port = free_port(), free_port()
    env = _env(tmp_path, home)
    up = _staccato("up", "--detach", "--port", str(port), "--ui-port", str(ui_port), env=env)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        source, destination = tmp_path / "in.bin", tmp_path / "out.bin"
        write_random(source, 64 * MiB, seed=81)
        process = subprocess.Popen(
            [sys.executable, "-m", "staccato.cli", "cp", "--max-rate", "1MB/s"]
            + [str(source), str(destination)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO,
        )
        assert process.stderr is not None
        first = process.stderr.readline()  # following: a progress line
        assert first.strip(), first
        down = _staccato("down", env=env)
        assert down.returncode == 0, down.stdout + down.stderr
        _, rest = process.communicate(timeout=180)
        err = first + rest
    finally:
        _staccato("down", env=env)
    assert process.returncode == 1, (process.returncode, err)
    assert "temporalio_client" not in err and "\x1b[" not in err, err
    assert f"127.0.0.1:{port}" in err and "127.0.0.1:7233" not in err, err
    assert "goes on" in err and "staccato watch " in err and "staccato up" in err, err
    assert "Traceback" not in err, err
    # `status` of it while the service is down: one line naming the address, no
    # transport dump ("tonic::transport::Error(Transport, ConnectError(...))")
    transfer = first.split(":", 1)[0].removeprefix("transfer ")
    status = _staccato("status", transfer, env={**env, "TEMPORAL_ADDRESS": f"127.0.0.1:{port}"})
    assert status.returncode == 1, status
    assert f"127.0.0.1:{port}" in status.stderr and "connection refused" in status.stderr, status
    assert "tonic" not in status.stderr and len(status.stderr.splitlines()) == 1, status


async def test_the_sdk_cores_warnings_go_to_python_logging_not_the_terminal(
    tmp_path: Path, capfd, caplog
) -> None:
    """A Temporal call retried while the server is gone: the SDK core's warnings
    (``WARN temporalio_client::retry: gRPC call describe_workflow_execution retried 8
    times``, ANSI coloured) were written straight to the process's stderr, under a
    command's own message. They now reach Python logging (a worker's log shows them)
    and not the terminal."""
    import asyncio
    import logging
    import time

    from temporalio.service import RPCError

    from staccato.client import StaccatoClient
    from staccato.workers.devserver import start_dev_server, stop_recorded_server

    home = tmp_path / "server"
    home.mkdir()
    port = free_port()
    start_dev_server(home, port=port, ui_port=free_port())
    try:
        client = await StaccatoClient.connect(target_host=f"127.0.0.1:{port}", namespace="default")
        handle = client.temporal.get_workflow_handle("any-id")
        stop_recorded_server(home)
        caplog.set_level(logging.WARNING, logger="staccato.temporal_core")
        try:
            await handle.describe()  # retried by the core while the server is down
        except RPCError:
            pass
        deadline = time.monotonic() + 30
        while not any("retried" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, caplog.records
            await asyncio.sleep(0.1)  # the core forwards its logs in batches
        await client.close()
    finally:
        stop_recorded_server(home)
    err = capfd.readouterr().err
    assert "temporalio_client" not in err and "\x1b[" not in err, err
    assert any(r.name.startswith("staccato.temporal_core") for r in caplog.records)
