"""The embedded default: `staccato up --detach` runs Temporal's dev server (SQLite under
STACCATO_HOME), the UI and a worker; transfers survive `down` + `up`."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

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
        "STACCATO_WORKER_PROCESSES": "1",
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
        assert f"127.0.0.1:{port}" in again.stderr
        # another port is not what runs: refused, naming the port that does
        other = free_port()
        elsewhere = _staccato("up", "--detach", "--port", str(other), env=env)
        assert elsewhere.returncode == 1, elsewhere.stderr
        assert "already up (pid " in elsewhere.stderr
        assert f"Temporal at 127.0.0.1:{port}, not at 127.0.0.1:{other}" in elsewhere.stderr
        later = _staccato(
            "submit", str(source), str(tmp_path / "later.bin"), "--not-before", "1h", env=env
        )
        assert later.returncode == 0, later.stderr
    finally:
        down = _staccato("down", env=env)
        assert down.returncode == 0, down.stderr
    # a transfer still to run is named, and that it goes on with the next up (a tester's
    # down said only "staccato is down")
    later_id = later.stdout.strip()
    assert f"staccato is down; 1 still to run or finish ({later_id})" in down.stdout, down.stdout
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


def _up_env(home: Path, port: int) -> dict[str, str]:
    """The environment of an `up` on ``port`` with its data in ``home`` (one worker
    process; this machine's secret key settings left out)."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("STACCATO_SECRET_KEY")},
        "STACCATO_HOME": str(home),
        "TEMPORAL_ADDRESS": f"127.0.0.1:{port}",
        "STACCATO_WORKER_PROCESSES": "1",
    }


def _up_detached(home: Path) -> tuple[int, dict[str, str], int]:
    """`up --detach` on free ports with its data in ``home``: (its Temporal port, the
    environment its commands use, its pid)."""
    port, ui_port = free_port(), free_port()
    env = _up_env(home, port)
    up = _staccato("up", "--detach", "--port", str(port), "--ui-port", str(ui_port), env=env)
    assert up.returncode == 0, up.stdout + up.stderr
    return port, env, int((home / "up.pid").read_text())


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


def _servers_of(home: Path) -> list[int]:
    """Pids of dev servers running with their SQLite file under ``home``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"start-dev" in command and str(home / "temporal.db").encode() in command:
            if _alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def _without_temporal_config(tmp_path: Path, home: Path, port: int, monkeypatch) -> dict[str, str]:
    """The environment of a user who exported nothing Temporal's (no TEMPORAL_*, no
    Temporal configuration file) and whose STACCATO_HOME is ``home``, for an `up` on
    ``port``; this process's environment (the in-process clients') is made the same."""
    env = {
        **{k: v for k, v in _up_env(home, port).items() if not k.startswith("TEMPORAL_")},
        "XDG_CONFIG_HOME": str(tmp_path / "config"),  # no Temporal configuration file
    }
    env.pop("STACCATO_TEMPORAL_HTTP", None)
    for name in [n for n in os.environ if n.startswith("TEMPORAL_")]:
        monkeypatch.delenv(name)
    for name in ("STACCATO_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(name, env[name])
    monkeypatch.delenv("STACCATO_TEMPORAL_HTTP", raising=False)
    return env


def test_commands_of_its_home_use_a_running_up(tmp_path: Path, monkeypatch) -> None:
    """With no address in Temporal's own configuration (no TEMPORAL_ADDRESS, no profile
    or configuration file), a command run with the STACCATO_HOME of a running `up` uses
    the address that `up` recorded (the light client and the SDK's client alike), and
    still that address, never 127.0.0.1:7233, once it is down or dead (a zombie): a
    command then fails naming that `up` and how to start it (tester65 T2: it fell back
    to 7233, where someone else's Temporal would have been used silently). A tester's
    `up --port 7301` was ignored: the CLI went on with 127.0.0.1:7233 (someone else's
    server, then none), and `up` again said "use 127.0.0.1:7301" without saying how."""
    from staccato import settings
    from staccato.light_client import light_client, plain_temporal_config
    from staccato.workers.devserver import recorded_http_port

    home = tmp_path / "home"
    port, ui_port = free_port(), free_port()
    address = f"127.0.0.1:{port}"
    env = _without_temporal_config(tmp_path, home, port, monkeypatch)
    up = _staccato("up", "--detach", "--port", str(port), "--ui-port", str(ui_port), env=env)
    assert up.returncode == 0, up.stdout + up.stderr
    source, destination = tmp_path / "in.bin", tmp_path / "out.bin"
    try:
        # checked first: the old code would send the copy to whatever runs on 7233
        assert settings.temporal_connect_config()["target_host"] == address
        assert plain_temporal_config() == (address, "default")
        light = light_client()
        assert light is not None and light.port == recorded_http_port(home, port)
        write_random(source, 1024 * 1024 + 5)
        cp = _staccato("cp", str(source), str(destination), env=env)
        assert cp.returncode == 0, cp.stderr
        assert destination.read_bytes() == source.read_bytes()
        status = _staccato("status", str(destination), "--json", env=env)  # the SDK's client
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["state"] == "completed"
        # an explicit address wins
        monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:1")
        assert settings.temporal_connect_config()["target_host"] == "127.0.0.1:1"
        assert plain_temporal_config() == ("127.0.0.1:1", "default")
        monkeypatch.delenv("TEMPORAL_ADDRESS")
        # `up` again, on the default port: refused, saying how to use the one that runs
        again = _staccato("up", "--detach", env=env)
        assert again.returncode == 1, again.stderr
        assert f"Temporal at {address}, not at 127.0.0.1:7233 as asked" in again.stderr
        assert (
            f"commands run with this STACCATO_HOME ({home}) use it, others need "
            f"TEMPORAL_ADDRESS={address}"
        ) in again.stderr, again.stderr
    finally:
        down = _staccato("down", env=env)
        assert down.returncode == 0, down.stderr
    # the `up` it ran on (`up` kept its address after `down`), whatever runs on 7233
    assert settings.temporal_connect_config()["target_host"] == address
    assert plain_temporal_config() == (address, "default")
    status = _staccato("status", str(destination), env=env)
    assert status.returncode == 1, status.stderr
    assert f"STACCATO_HOME ({address}) is not running" in status.stderr, status.stderr
    assert "start it with `staccato up`" in status.stderr, status.stderr
    assert f"cannot reach Temporal at {address}" in status.stderr, status.stderr
    assert "7233" not in status.stderr, status.stderr
    # an explicit address still wins over the stopped `up`'s
    monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:1")
    assert settings.temporal_connect_config()["target_host"] == "127.0.0.1:1"
    monkeypatch.delenv("TEMPORAL_ADDRESS")
    # an `up` killed and never reaped (a zombie) left its files: its address too
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])  # not waited for
    try:
        deadline = time.monotonic() + 30
        while _alive(zombie.pid):
            assert time.monotonic() < deadline, "the child did not exit"
            time.sleep(0.05)
        (home / "up.pid").write_text(str(zombie.pid))
        (home / "up.address").write_text(address)
        assert settings.temporal_connect_config()["target_host"] == address
        assert plain_temporal_config() == (address, "default")
    finally:
        zombie.wait()


def test_down_stops_the_server_of_a_killed_up(tmp_path: Path) -> None:
    """SIGKILL of `staccato up` leaves its dev server running: `down` finds and stops it
    (port closed), and a later `up` starts cleanly on the same port."""
    home = tmp_path / "home"
    port, env, up_pid = _up_detached(home)
    try:
        (server,) = _servers_of(home)
        os.kill(up_pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _alive(up_pid):
            assert time.monotonic() < deadline, "up did not die"
            time.sleep(0.1)
        assert _alive(server)  # the orphan the killed up left
        down = _staccato("down", env=env)
        assert down.returncode == 0, down.stderr
        assert f"stopped the Temporal dev server (pid {server}" in down.stdout, down.stdout
        deadline = time.monotonic() + 30
        while _alive(server):
            assert time.monotonic() < deadline, "the orphaned server still runs"
            time.sleep(0.1)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        assert _staccato("down", env=env).stdout.strip() == "staccato is not running"
    finally:
        for pid in _servers_of(home):
            os.kill(pid, signal.SIGKILL)
        try:
            os.killpg(up_pid, signal.SIGKILL)  # the worker processes the killed up left
        except ProcessLookupError:
            pass


def test_up_after_a_killed_up_says_it_started_its_own_server(tmp_path: Path) -> None:
    """`up --detach` after a SIGKILLed `up` stops the server that one left and starts
    its own: it says where that server's UI is (it said "the existing server's own, if
    any (--ui-port unused: no server started)": the detached parent guessed from the
    port, still held by the orphan; found by a tester)."""
    home = tmp_path / "home"
    port, env, up_pid = _up_detached(home)
    try:
        (orphan,) = _servers_of(home)
        os.kill(up_pid, signal.SIGKILL)  # its server (a session of its own) stays
        deadline = time.monotonic() + 10
        while _alive(up_pid):
            assert time.monotonic() < deadline, "up did not die"
            time.sleep(0.1)
        ui_port = free_port()
        up = _staccato("up", "--detach", "--port", str(port), "--ui-port", str(ui_port), env=env)
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"UI at http://127.0.0.1:{ui_port}" in up.stdout, up.stdout
        assert "no server started" not in up.stdout, up.stdout
        (server,) = _servers_of(home)
        assert server != orphan
        assert _staccato("down", env=env).returncode == 0
    finally:
        for pid in _servers_of(home):
            os.kill(pid, signal.SIGKILL)
        for pid in (
            up_pid,
            *((int((home / "up.pid").read_text()),) if (home / "up.pid").exists() else ()),
        ):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_up_starts_its_killed_server_again(tmp_path: Path) -> None:
    """SIGKILL of the dev server under a running `up` (tester: `up` stayed with no
    server, and `up --detach` said "already up", exit 0): `up` starts it again on the
    same port and SQLite file; a transfer from before is still known and a new one
    completes."""
    home = tmp_path / "home"
    port, env, up_pid = _up_detached(home)
    try:
        source = tmp_path / "in.bin"
        digest = write_random(source, 1024 * 1024 + 7)
        before = _staccato("submit", str(source), str(tmp_path / "before.bin"), env=env)
        assert before.returncode == 0, before.stderr
        first = before.stdout.split()[-1]
        assert _staccato("watch", first, env=env).returncode == 0
        (server,) = _servers_of(home)
        os.kill(server, signal.SIGKILL)
        deadline = time.monotonic() + 90
        restarted: list[int] = []
        while not restarted:
            assert time.monotonic() < deadline, "the dev server was not started again"
            assert _alive(up_pid), "up died with its server"
            restarted = [pid for pid in _servers_of(home) if pid != server]
            time.sleep(0.2)
        while True:  # it answers once its port is open
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the new dev server never answered"
                time.sleep(0.2)
        status = _staccato("status", "--json", first, env=env)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["state"] == "completed"
        cp = _staccato("cp", str(source), str(tmp_path / "after.bin"), env=env)
        assert cp.returncode == 0, cp.stderr
        assert sha256_file(tmp_path / "after.bin") == digest
        assert "starting it again" in (home / "staccato-up.log").read_text()
    finally:
        down = _staccato("down", env=env)
        assert down.returncode == 0, down.stderr
    assert _servers_of(home) == []


async def test_a_server_that_cannot_start_again_stops_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``up``'s dev server dies and its database is unusable (a directory where the
    SQLite file was), so it can never start again: ``up`` used to retry forever, 1 to
    30 s apart, counting deaths only. Failed starts count too: after the death and 5
    failed starts (the real binary exiting with 1 each time) the keeper gives up,
    naming the last failure and the log, and stops ``up`` (which then exits 1 with
    that message). Waits shortened (the counting is the same)."""
    import asyncio

    from staccato.cli import service
    from staccato.workers.devserver import start_dev_server

    monkeypatch.setattr(service, "SERVER_WATCH_S", 0.05)
    monkeypatch.setattr(service, "START_RETRY_FIRST_S", 0.05)
    monkeypatch.setattr(service, "START_RETRY_MAX_S", 0.2)
    home = tmp_path / "home"
    port, ui_port = free_port(), free_port()
    server = start_dev_server(home, port=port, ui_port=ui_port)
    stopped: list[bool] = []
    gave_up: list[str] = []
    try:
        (home / "temporal.db").rename(home / "moved.db")
        (home / "temporal.db").mkdir()
        server.kill()
        server.wait(timeout=30)
        keeper = service.keep_server_up(
            [server], home, port=port, ui_port=ui_port, gave_up=gave_up,
            stop=lambda: stopped.append(True),
        )  # fmt: skip
        await asyncio.wait_for(keeper, timeout=120)  # a bound, not a timing assertion
    finally:
        for pid in _servers_of(home):
            os.kill(pid, signal.SIGKILL)
    assert stopped == [True]
    assert len(gave_up) == 1, gave_up
    why = gave_up[0]
    assert "failed 6 times in 600 s (deaths and failed starts)" in why, why
    assert "last: a start failed: the Temporal dev server exited with 1" in why, why
    assert why.count(str(home / "temporal.log")) == 1, why
    log = (home / "temporal.log").read_text()
    assert log.count("unable to open database file") == 5, log[-2000:]
    assert _servers_of(home) == []


@pytest.mark.parametrize("detach", [True, False], ids=["detached", "foreground"])
def test_up_with_too_little_worker_memory_starts_nothing(tmp_path: Path, detach: bool) -> None:
    """A worker memory setting below what its processes need is refused before the dev
    server starts, naming the setting and the least it may be."""
    from staccato.settings import WORKER_PROCESS_OVERHEAD_BYTES
    from staccato.workers.devserver import port_open

    home = tmp_path / "home"
    port, ui_port = free_port(), free_port()
    env = {
        **os.environ,
        "STACCATO_HOME": str(home),
        "STACCATO_WORKER_PROCESSES": "4",
        "STACCATO_WORKER_MEMORY_BYTES": str(300 * 1024**2),
    }
    args = ["up", "--port", str(port), "--ui-port", str(ui_port)]
    up = _staccato(*args, *(["--detach"] if detach else []), env=env, timeout_s=60)
    floor = 6 * WORKER_PROCESS_OVERHEAD_BYTES + 16 * 1024**2
    assert up.returncode == 2, up.stdout + up.stderr
    assert "STACCATO_WORKER_MEMORY_BYTES=314572800" in up.stderr, up.stderr
    assert f"at least {floor}" in up.stderr, up.stderr
    assert "see " not in up.stderr  # the reason itself, not a pointer to a log
    assert not port_open("127.0.0.1", port)
    assert _servers_of(home) == []
    assert not (home / "temporal.db").exists()
    assert not (home / "up.pid").exists()


def test_a_busy_ui_port_is_refused_naming_it(tmp_path: Path) -> None:
    from staccato.workers.devserver import DevServerError, start_dev_server

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        ui_port = busy.getsockname()[1]
        with pytest.raises(DevServerError, match=f"UI port 127.0.0.1:{ui_port} is already in use"):
            start_dev_server(tmp_path, port=free_port(), ui_port=ui_port, wait_s=20)
        assert not (tmp_path / "temporal.db").exists()


def test_an_unreaped_killed_up_counts_as_not_running(tmp_path: Path) -> None:
    """A SIGKILLed `up` whose new parent never reaps it (a container's init may not)
    stays a zombie with its pid: `down` and `up` must take it for gone, not send it
    SIGTERM and wait, nor say 'already up'."""
    home = tmp_path / "home"
    home.mkdir()
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])  # not waited for: a zombie
    deadline = time.monotonic() + 30
    while _alive(zombie.pid) or not Path(f"/proc/{zombie.pid}").exists():
        assert time.monotonic() < deadline, "the child did not exit"
        time.sleep(0.05)
    try:
        (home / "up.pid").write_text(str(zombie.pid))
        env = {**os.environ, "STACCATO_HOME": str(home)}
        started = time.monotonic()
        down = _staccato("down", env=env)
        assert down.returncode == 0, down.stderr
        assert down.stdout.strip() == "staccato is not running", down.stdout
        assert time.monotonic() - started < 60  # no wait for a process that has exited
        assert not (home / "up.pid").exists()
    finally:
        zombie.wait()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["up", "--port", "70000"], "Invalid value for '--port': '70000' is not a port"),
        (["up", "--port", "-1"], "Invalid value for '--port': '-1' is not a port"),
        (["up", "--port", "0"], "Invalid value for '--port': '0' is not a port"),
        (["up", "--ui-port", "65536"], "Invalid value for '--ui-port': '65536' is not a port"),
        (["up", "--detach", "--ui-port", "0"], "Invalid value for '--ui-port': '0' is not a port"),
        (["codec-server", "--port", "0"], "Invalid value for '--port': '0' is not a port"),
        (["up", "--port", "7300", "--ui-port", "7300"], "'--ui-port': must differ from --port"),
        (["up", "--ui-port", "7233"], "'--ui-port': must differ from --port (both are 7233)"),
    ],
)
def test_port_options_out_of_range_are_usage_errors(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    """Every port option has one range, 1-65535, checked before anything starts (exit
    2 naming the option and the range); ``--ui-port`` equal to ``--port`` likewise
    (``up --port 0`` started a server on a random port, 70000 failed in the server)."""
    home = tmp_path / "home"
    env = {**os.environ, "STACCATO_HOME": str(home), "STACCATO_CODEC_KEY": "k" * 43 + "="}
    try:
        result = _staccato(*args, env=env, timeout_s=60)
        assert result.returncode == 2, result
        assert expected in result.stderr, result.stderr
        if "is not a port" in expected:
            assert "expected a number from 1 to 65535" in result.stderr, result.stderr
        assert _servers_of(home) == []
        assert not (home / "up.pid").exists()
    finally:  # an `up --detach` that started anyway (it did, with --ui-port 0)
        if (home / "up.pid").exists():
            _staccato("down", env=env)


def test_ui_port_of_a_running_temporal_is_refused(tmp_path: Path, temporal_server) -> None:
    """``up --port P --ui-port P`` while another Temporal holds P: refused (exit 2);
    it said it used "the Temporal server already listening", reported success and
    attached its worker to the other server."""
    port = int(temporal_server.address.rsplit(":", 1)[1])
    home = tmp_path / "home"
    env = {**os.environ, "STACCATO_HOME": str(home)}
    args = ["up", "--detach", "--port", str(port), "--ui-port", str(port)]
    try:
        up = _staccato(*args, env=env, timeout_s=120)
        assert up.returncode == 2, up
        assert "must differ from --port" in up.stderr, up.stderr
        assert not (home / "up.pid").exists()
    finally:
        if (home / "up.pid").exists():
            _staccato("down", env=env)


@pytest.mark.parametrize("detach", [False, True])
def test_a_port_taken_by_something_else_than_temporal_is_refused(
    tmp_path: Path, detach: bool
) -> None:
    """``up --port P`` where an HTTP server (not Temporal) listens on P: exit 1 saying
    P is taken by something that does not answer as Temporal and to choose another
    --port; nothing started, nothing left running (it said it used "the Temporal
    server already listening" and then failed with a raw gRPC error)."""
    port, ui_port = free_port(), free_port()
    home = tmp_path / "home"
    env = {**os.environ, "STACCATO_HOME": str(home)}
    http = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    try:
        from staccato.workers.devserver import port_open

        deadline = time.monotonic() + 30
        while not port_open("127.0.0.1", port):
            assert time.monotonic() < deadline and http.poll() is None, "no http.server"
            time.sleep(0.05)
        # the next port is taken too: not offered as the other port to use (a tester
        # was offered the port their own UI held)
        neighbour = socket.socket()
        try:
            neighbour.bind(("127.0.0.1", port + 1))
            neighbour.listen()
        except OSError:
            pass  # someone else's already: taken either way
        args = ["up", "--port", str(port), "--ui-port", str(ui_port)]
        try:
            up = _staccato(*args, *(["--detach"] if detach else []), env=env, timeout_s=120)
        finally:
            neighbour.close()
        assert up.returncode == 1, up
        assert f"--port {port + 1}" not in up.stderr, up.stderr
        assert (
            f"port {port} on 127.0.0.1 is taken by something that does not answer as a "
            "Temporal server" in up.stderr
        ), up.stderr
        assert "choose another port with --port" in up.stderr, up.stderr
        assert "already listening" not in up.stderr, up.stderr
        assert "Traceback" not in up.stderr, up.stderr
        assert _servers_of(home) == []
        assert not (home / "up.pid").exists()
        assert not port_open("127.0.0.1", ui_port)
        assert http.poll() is None  # left alone
    finally:
        http.terminate()
        http.wait(timeout=30)


def test_up_on_a_running_temporal_does_not_claim_a_ui(tmp_path: Path, temporal_server) -> None:
    """``up`` where a Temporal server already listens starts only its worker: it says
    the UI is that server's, not ``--ui-port``'s, where nothing listens (it printed
    "UI at http://127.0.0.1:UI_PORT"; found by a tester)."""
    from staccato.workers.devserver import port_open

    port = int(temporal_server.address.rsplit(":", 1)[1])
    ui_port = free_port()
    home = tmp_path / "home"
    env = {**os.environ, "STACCATO_HOME": str(home)}
    try:
        up = _staccato(
            "up", "--detach", "--port", str(port), "--ui-port", str(ui_port),
            env=env, timeout_s=120,
        )  # fmt: skip
        assert up.returncode == 0, up
        assert f"UI at http://127.0.0.1:{ui_port}" not in up.stdout, up.stdout
        assert "the existing server's own" in up.stdout, up.stdout
        assert not port_open("127.0.0.1", ui_port)
    finally:
        if (home / "up.pid").exists():
            _staccato("down", env=env)


def test_the_http_api_port_is_never_the_ui_port() -> None:
    """The HTTP API takes ``--port`` + 10 unless that is ``--ui-port`` (``up --port
    7300 --ui-port 7310``: the UI failed to bind, "the service exited with 1")."""
    from staccato.workers.devserver import HTTP_PORT_OFFSET, http_port_for

    port = free_port()
    assert http_port_for("127.0.0.1", port, port + HTTP_PORT_OFFSET) != port + HTTP_PORT_OFFSET


def _fill_up(directory: Path) -> None:
    """Write into ``directory`` until its file system has no space left."""
    with open(directory / "filler", "wb") as f:
        for _ in range(64):  # 64 MiB bounds it: the tmpfs holds 8
            try:
                f.write(b"\0" * 1024**2)
                f.flush()
            except OSError:
                return


@pytest.mark.parametrize("detach", [False, True])
def test_up_on_a_full_disk_says_so_and_leaves_no_empty_key(small_fs: Path, detach: bool) -> None:
    """`up` with STACCATO_HOME on a full disk exits 2 with one line naming the path and
    the system's reason (no traceback) and leaves no (empty) secret.key behind, so a
    later `up` on a disk with space starts normally."""
    home = small_fs / "home"
    home.mkdir()
    _fill_up(small_fs)
    port, ui_port = free_port(), free_port()
    env = _up_env(home, port)
    args = ["up", "--port", str(port), "--ui-port", str(ui_port)]
    up = _staccato(*args, *(["--detach"] if detach else []), env=env, timeout_s=60)
    assert up.returncode == 2, up.stdout + up.stderr
    assert "Traceback" not in up.stderr, up.stderr
    assert up.stderr.count("\n") == 1, up.stderr
    assert "No space left on device" in up.stderr, up.stderr
    assert str(home) in up.stderr, up.stderr
    assert [p.name for p in home.iterdir()] == []  # no empty key, no temporary file
    assert _servers_of(home) == []


def test_up_with_home_under_a_file_says_so(tmp_path: Path) -> None:
    """A STACCATO_HOME that cannot be made (here: under a regular file) is one line
    naming it and the system's reason, exit 2."""
    (tmp_path / "file").write_text("")
    home = tmp_path / "file" / "home"
    port, ui_port = free_port(), free_port()
    up = _staccato(
        "up", "--detach", "--port", str(port), "--ui-port", str(ui_port), env=_up_env(home, port)
    )
    assert up.returncode == 2, up.stdout + up.stderr
    assert "Traceback" not in up.stderr, up.stderr
    assert f"cannot prepare STACCATO_HOME {home}" in up.stderr, up.stderr
    assert "Not a directory" in up.stderr, up.stderr


def test_an_empty_key_file_says_to_remove_it(tmp_path: Path) -> None:
    """An empty secret.key (left by an older release on a full disk) is refused saying
    it is empty, that nothing can have been sealed with it, and to remove it."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "secret.key").write_text("")
    port, ui_port = free_port(), free_port()
    up = _staccato(
        "up", "--detach", "--port", str(port), "--ui-port", str(ui_port), env=_up_env(home, port)
    )
    assert up.returncode == 2, up.stdout + up.stderr
    assert f"key file {home / 'secret.key'} is empty" in up.stderr, up.stderr
    assert "nothing can have been sealed with it" in up.stderr, up.stderr
    assert "remove it" in up.stderr, up.stderr
    assert _servers_of(home) == []


def test_commands_keep_to_the_server_of_a_killed_up(tmp_path: Path, monkeypatch) -> None:
    """SIGKILL of `up` leaves its dev server running: commands of its STACCATO_HOME go
    on using that server (they fell back to 127.0.0.1:7233, on a shared machine someone
    else's), and one that would wait for a worker says `up` was killed and to run it
    again; `up` again runs what was submitted meanwhile."""
    from staccato import settings
    from staccato.light_client import plain_temporal_config

    home = tmp_path / "home"
    port, ui_port = free_port(), free_port()
    address = f"127.0.0.1:{port}"
    env = _without_temporal_config(tmp_path, home, port, monkeypatch)
    up = _staccato("up", "--detach", "--port", str(port), "--ui-port", str(ui_port), env=env)
    assert up.returncode == 0, up.stdout + up.stderr
    up_pid = int((home / "up.pid").read_text())
    source, destination = tmp_path / "in.bin", tmp_path / "out.bin"
    write_random(source, 1024 * 1024 + 7)
    try:
        (server,) = _servers_of(home)
        os.kill(up_pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _alive(up_pid):
            assert time.monotonic() < deadline, "up did not die"
            time.sleep(0.1)
        assert _alive(server)  # the server the killed up left
        assert settings.temporal_connect_config()["target_host"] == address
        assert plain_temporal_config() == (address, "default")
        submitted = _staccato("submit", str(source), str(destination), env=env)
        assert submitted.returncode == 0, submitted.stderr
        said = " ".join(submitted.stderr.split())
        assert f"the `staccato up` of STACCATO_HOME {home} was killed" in said, said
        assert f"at {address} still runs, but no worker does" in said, said
        assert "run `staccato up` again" in said, said
        shown = _staccato("status", str(destination), "--json", env=env)
        assert shown.returncode == 0, shown.stderr  # on this home's server, not 7233's
        assert json.loads(shown.stdout)["state"] == "scheduled", shown.stdout
        again = _staccato("up", "--detach", "--port", str(port), "--ui-port", str(ui_port), env=env)
        assert again.returncode == 0, again.stdout + again.stderr
        watched = _staccato("watch", str(destination), env=env)
        assert watched.returncode == 0, watched.stderr
        assert "was killed" not in watched.stderr, watched.stderr
        assert destination.read_bytes() == source.read_bytes()
    finally:
        _staccato("down", env=env)
        for pid in _servers_of(home):
            os.kill(pid, signal.SIGKILL)
        try:
            os.killpg(up_pid, signal.SIGKILL)  # the worker processes the killed up left
        except ProcessLookupError:
            pass


def test_a_cp_following_when_up_is_killed_says_so(tmp_path: Path, monkeypatch) -> None:
    """A ``cp`` that follows its transfer when ``up`` is SIGKILLed says, once, that
    ``up`` was killed and to run it again (tester73: it printed only "no worker
    answers", over and over; a command started after the kill was told at its start),
    and keeps following."""
    home = tmp_path / "home"
    port, ui_port = free_port(), free_port()
    env = _without_temporal_config(tmp_path, home, port, monkeypatch)
    up = _staccato("up", "--detach", "--port", str(port), "--ui-port", str(ui_port), env=env)
    assert up.returncode == 0, up.stdout + up.stderr
    up_pid = int((home / "up.pid").read_text())
    source, destination = tmp_path / "in.bin", tmp_path / "out.bin"
    write_random(source, 64 * 1024 * 1024)
    cp = subprocess.Popen(
        [sys.executable, "-m", "staccato.cli", "cp", str(source), str(destination)]
        + ["--max-rate", "1MiB", "--chunk-size", "1MiB"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        assert cp.stderr is not None
        lines: list[str] = []
        deadline = time.monotonic() + 120
        while not any(line.startswith("running: ") and " at " in line for line in lines):
            assert time.monotonic() < deadline and cp.poll() is None, lines
            lines.append(cp.stderr.readline())
        os.kill(up_pid, signal.SIGKILL)
        while not any("was killed" in line for line in lines):
            assert time.monotonic() < deadline and cp.poll() is None, lines[-5:]
            lines.append(cp.stderr.readline())
        said = " ".join(" ".join(lines).split())
        assert f"the `staccato up` of STACCATO_HOME {home} was killed" in said, said
        assert "run `staccato up` again" in said, said
        assert said.count("was killed") == 1, said
        assert cp.poll() is None, "the cp stopped following"
    finally:
        cp.kill()
        cp.wait(30)
        _staccato("down", env=env)
        for pid in _servers_of(home):
            os.kill(pid, signal.SIGKILL)
        try:
            os.killpg(up_pid, signal.SIGKILL)  # the worker processes the killed up left
        except ProcessLookupError:
            pass
    assert not destination.exists()  # nothing published by the killed run


def test_a_stopped_up_of_its_home_is_named_when_temporal_is_unreachable(
    tmp_path: Path, monkeypatch
) -> None:
    """This STACCATO_HOME recorded an `up` on a port (here a dead one) that no longer
    runs (its pid exited): a command that cannot reach Temporal says that `up` is not
    running and where it ran, and tries that address, not 127.0.0.1:7233 (tester65
    T2: "cannot reach Temporal at 127.0.0.1:7233": had another Temporal listened there,
    the command would have used it), whether TEMPORAL_ADDRESS is unset or set to the
    recorded address."""
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # reaped: its pid names no process
    (home / "up.pid").write_text(str(gone.pid))
    (home / "up.address").write_text(f"127.0.0.1:{port}")
    (home / "up.last-address").write_text(f"127.0.0.1:{port}")
    env = _without_temporal_config(tmp_path, home, port, monkeypatch)
    said = f"the staccato up recorded in STACCATO_HOME (127.0.0.1:{port}) is not running"
    address = f"127.0.0.1:{port}"
    for run_env in (env, {**env, "TEMPORAL_ADDRESS": address}):
        status = _staccato("status", "/tmp/nothing-here.txt", env=run_env)
        assert status.returncode == 1, status.stderr
        assert said in status.stderr and "start it with `staccato up`" in status.stderr
        assert f"cannot reach Temporal at {address}" in status.stderr, status.stderr
        assert "7233" not in status.stderr, status.stderr


def test_the_dev_server_keeps_its_sqlite_state_in_wal_mode(tmp_path: Path) -> None:
    """``up``'s dev server keeps its SQLite file in write-ahead-log mode: with SQLite's
    default rollback journal every write transaction created and unlinked
    ``temporal.db-journal`` (hundreds a second while a dataset runs), and on ext4
    without a journal each file create in that block group (a dataset's temp files)
    then scans past every inode freed in the last 60 s."""
    import sqlite3

    from staccato.workers.devserver import start_dev_server

    home = tmp_path / "home"
    server = start_dev_server(home, port=free_port(), ui_port=free_port())
    try:
        db = sqlite3.connect(f"file:{home / 'temporal.db'}?mode=ro", uri=True)
        try:
            mode = db.execute("pragma journal_mode").fetchone()[0]
        finally:
            db.close()
        assert not (home / "temporal.db-journal").exists()
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert mode == "wal", mode


def test_a_following_cp_r_says_when_its_up_was_killed(tmp_path: Path) -> None:
    """A `cp -r` that follows its dataset when `up` is SIGKILLed says, once its worker
    stops answering, that `up` was killed and to run it again (tester70 MED: it printed
    only "no worker answers" for a minute; a command started after the kill was told at
    its start)."""
    home = tmp_path / "home"
    _port, env, up_pid = _up_detached(home)
    source, destination = tmp_path / "tree", tmp_path / "copy"
    source.mkdir()
    for index in range(40):
        write_random(source / f"f{index:02d}.bin", 64 * 1024)
    follower = subprocess.Popen(
        [sys.executable, "-m", "staccato.cli", "cp", "-r", "--max-rate", "64KiB/s"]
        + [str(source), str(destination)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=REPO,
    )
    lines: queue.Queue[str] = queue.Queue()
    seen: list[str] = []

    def read_lines() -> None:
        assert follower.stderr is not None
        for line in follower.stderr:
            lines.put(line)

    def wait_for(text: str, bound_s: float) -> None:
        deadline = time.monotonic() + bound_s
        while not any(text in line for line in seen):
            assert time.monotonic() < deadline and follower.poll() is None, seen
            with contextlib.suppress(queue.Empty):
                seen.append(lines.get(timeout=1))

    threading.Thread(target=read_lines, daemon=True).start()
    try:
        wait_for("running:", 120)
        assert "was killed" not in "".join(seen), seen
        os.kill(up_pid, signal.SIGKILL)
        wait_for("was killed", 180)
        said = " ".join(" ".join(seen).split())
        assert f"the `staccato up` of STACCATO_HOME {home} was killed" in said, said
        assert "run `staccato up` again" in said, said
    finally:
        follower.kill()
        follower.wait()
        _staccato("down", env=env)
        for pid in _servers_of(home):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(up_pid, signal.SIGKILL)  # the worker processes the killed up left
