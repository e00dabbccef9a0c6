"""Shared benchmark plumbing: a private Temporal dev server and Staccato worker,
timing helpers, and worker memory (peak RSS of the worker and its activity processes).

Benchmarks are run by hand (`make bench`), never by the test suite. Quote medians and
ratios against a peer tool measured in the same run: a shared machine is noisy, so
absolute times from different runs do not compare.
"""

from __future__ import annotations

import importlib.util
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from staccato.workers.devserver import recorded_http_port, start_dev_server  # noqa: E402
from tests.servers.temporal_server import free_port  # noqa: E402

MiB = 1024 * 1024
GiB = 1024 * MiB


class Service:
    """A Temporal dev server (temp SQLite) and one `staccato worker` subprocess."""

    def __init__(
        self,
        processes: int = 4,
        env: dict[str, str] | None = None,
        repo: Path = REPO,
        dynamic_config: dict[str, object] | None = None,
    ) -> None:
        self.repo = repo  # the checkout whose staccato runs (another release: compare)
        self.dynamic_config = dynamic_config  # the server's (start_dev_server's)
        self.home = Path(tempfile.mkdtemp(prefix="staccato-bench-"))
        self.port = free_port()
        self.processes = processes
        self.extra_env = env or {}
        self.server: subprocess.Popen[bytes] | None = None
        #: the server's HTTP API port (the light client's: staccato.light_client)
        self.http_port: int | None = None
        self.worker: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "TEMPORAL_ADDRESS": f"127.0.0.1:{self.port}",
            "STACCATO_TASK_QUEUE": "bench",
            **({"STACCATO_TEMPORAL_HTTP": f"127.0.0.1:{self.http_port}"} if self.http_port else {}),
            **self.extra_env,
        }

    def start(self) -> Service:
        self.server = self._server_starter()(
            self.home, port=self.port, ui_port=free_port(), dynamic_config=self.dynamic_config
        )
        self.http_port = recorded_http_port(self.home, self.port)
        self.start_worker()
        return self

    def _server_starter(self) -> Callable[..., subprocess.Popen[bytes]]:
        """The ``start_dev_server`` that starts this service's Temporal dev server."""
        return start_dev_server

    def start_worker(self) -> None:
        # The tree's bytecode, written now: with PYTHONDONTWRITEBYTECODE set (as in
        # some shells here) an editable checkout never gets its .pyc files, and every
        # command would compile each staccato module it imports again (~40 ms of a
        # `cp`'s start); an installed package has them from its install.
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", str(self.repo / "staccato")],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        log = open(self.home / "worker.log", "ab")
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "staccato.cli", "worker", "--processes", str(self.processes)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.repo,
        )
        deadline = time.monotonic() + 300  # a loaded machine spawns slowly
        while b"worker polling" not in (self.home / "worker.log").read_bytes():
            if time.monotonic() > deadline or self.worker.poll() is not None:
                raise RuntimeError((self.home / "worker.log").read_text()[-3000:])
            time.sleep(0.1)

    def stop_worker(self) -> None:
        if self.worker and self.worker.poll() is None:
            self.worker.terminate()
            self.worker.wait(30)

    def worker_peak_rss_bytes(self) -> int:
        """Sum of VmHWM (peak resident set) over the worker and its child processes."""
        assert self.worker is not None
        pids = [self.worker.pid] + _children(self.worker.pid)
        total = 0
        for pid in pids:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1]) * 1024
            except FileNotFoundError:
                continue
        return total

    def staccato(self, *args: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "staccato.cli", *args],
            env=self.env,
            check=True,
            cwd=self.repo,
            stdout=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        self.stop_worker()
        if self.server and self.server.poll() is None:
            self.server.terminate()
            self.server.wait(30)
        shutil.rmtree(self.home, ignore_errors=True)


class OtherService(Service):
    """A Service whose worker and CLI are another checkout's (its own venv's python,
    its own source tree): an A/B of two releases in one run."""

    def __init__(self, checkout: Path, **kwargs: Any) -> None:
        super().__init__(repo=checkout, **kwargs)
        self.checkout = checkout

    def _run_there(self, run: Callable[[], object]) -> object:
        saved = sys.executable  # Service runs ``sys.executable`` (cwd: the checkout)
        sys.executable = str(self.checkout / ".venv/bin/python")
        try:
            return run()
        finally:
            sys.executable = saved

    def _server_starter(self) -> Callable[..., subprocess.Popen[bytes]]:
        """The other checkout's own ``start_dev_server`` (its module loaded from its
        file; what it imports comes from this checkout), so an A/B of a change to
        the dev server's flags (its SQLite journal...) starts each server as that
        release does: before, both were this checkout's."""
        path = self.checkout / "staccato" / "workers" / "devserver.py"
        spec = importlib.util.spec_from_file_location("_other_devserver", path)
        assert spec is not None and spec.loader is not None, path
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.start_dev_server  # type: ignore[no-any-return]

    def start_worker(self) -> None:
        self._run_there(super().start_worker)

    def staccato(self, *args: str) -> None:
        self._run_there(lambda: Service.staccato(self, *args))


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:
            pass
    return found + [g for c in found for g in _children(c)]


_TICK = os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    return [pid, *_children(pid)]


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """utime + stime (seconds) per process of ``pids`` (its threads included), plus
    cutime + cstime: its children that ended and were waited for (an activity
    process's ``ssh`` subprocesses with the OpenSSH transport of SFTP, which end within
    a run and would otherwise go uncounted); ``/proc/PID/stat`` fields 14-17. A process
    gone is left out."""
    found: dict[int, float] = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        found[pid] = sum(int(f) for f in fields[11:15]) / _TICK
    return found


def children_cpu_seconds() -> float:
    """user + system seconds of this process's children that ended and were waited for
    (a ``staccato`` CLI command, a peer tool: what ``subprocess.run`` started)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """CPU seconds (user + system) each named group of processes spends during one run.

    ``groups``: name -> a callable giving the group's pids now (read before and after
    the run; a process that starts during the run counts from 0, one that ends during
    it is lost). ``command``: the processes this one started and waited for during the
    run (the ``staccato`` CLI, the peer tool).

    Use::

        meter = CpuMeter({"worker": lambda: process_tree(pid)})
        with meter:
            run()
        meter.seconds  # {"command": 0.8, "worker": 3.1}
    """

    def __init__(self, groups: dict[str, Callable[[], list[int]]]) -> None:
        self.groups = groups
        self.seconds: dict[str, float] = {}
        self._before: dict[str, dict[int, float]] = {}
        self._children = 0.0

    def __enter__(self) -> CpuMeter:
        self._before = {name: cpu_seconds(pids()) for name, pids in self.groups.items()}
        self._children = children_cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = {"command": children_cpu_seconds() - self._children}
        for name, pids in self.groups.items():
            before = self._before[name]
            after = cpu_seconds(sorted(set(pids()) | set(before)))
            self.seconds[name] = sum(after[pid] - before.get(pid, 0.0) for pid in after)

    def line(self) -> str:
        """``name cpu S`` for each group, and the 1-minute load average."""
        parts = [f"{name} cpu {value:5.2f} s" for name, value in self.seconds.items()]
        return "  ".join(parts) + f"  load {os.getloadavg()[0]:.1f}"


def server_pids(server: Any) -> list[int]:
    """The process tree of a server started as a subprocess: a ``Popen`` or a test
    server (``tests.servers``: its ``_proc``); none when not running."""
    proc = server if isinstance(server, subprocess.Popen) else getattr(server, "_proc", None)
    return process_tree(proc.pid) if proc is not None and proc.poll() is None else []


def timed(run: Callable[[], object]) -> float:
    """Wall seconds of one call."""
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def round_robin(
    rounds: int,
    cases: dict[str, Callable[[], object]],
    before: Callable[[], object] | None = None,
) -> dict[str, float]:
    """Median wall seconds per case; each round runs every case once, so a slow spell
    of the machine hits all of them, and each round starts one case later, so no case
    always follows the same one (``before`` runs untimed before each)."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            if before:
                before()
            times[name].append(timed(cases[name]))
    for name, values in times.items():
        print(f"{name}: " + " ".join(f"{v:.2f}" for v in values), flush=True)
    return {name: statistics.median(values) for name, values in times.items()}


def random_file(path: Path, size: int) -> Path:
    """``size`` random bytes at ``path`` (kept between runs), then read once to warm the cache."""
    if not path.exists() or path.stat().st_size != size:
        with open(path, "wb") as out:
            block = os.urandom(64 * MiB)
            for offset in range(0, size, len(block)):
                out.write(
                    block[: min(len(block), size - offset)]
                    if offset % (256 * MiB)
                    else os.urandom(min(len(block), size - offset))
                )
        path.chmod(0o644)
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)
    return path


def table(rows: list[tuple[str, str, float, float]]) -> str:
    """Markdown table of (case, peer, peer_s, staccato_s) with MB/s and ratios."""
    lines = [
        "| case | size | peer | peer s | peer MB/s | staccato s | staccato MB/s | ratio (peer s / staccato s) |",
        "| --- | --: | --- | --: | --: | --: | --: | --: |",
    ]
    for case, peer, peer_s, ours_s in rows:
        size = GiB
        lines.append(
            f"| {case} | 1 GiB | {peer} | {peer_s:.2f} | {size / peer_s / 1e6:.0f} | {ours_s:.2f} | "
            f"{size / ours_s / 1e6:.0f} | {peer_s / ours_s:.2f}x |"
        )
    return "\n".join(lines)


def rclone_s3_remote(name: str, seaweed: Any) -> dict[str, str]:
    """rclone remote ``name`` (upper case) for a SeaweedFS S3 store, in environment
    variables (``RCLONE_CONFIG_<NAME>_*``): no config file needed."""
    prefix = f"RCLONE_CONFIG_{name}_"
    return {
        prefix + "TYPE": "s3",
        prefix + "PROVIDER": "SeaweedFS",
        prefix + "ENDPOINT": seaweed.endpoint_url,
        prefix + "ACCESS_KEY_ID": seaweed.access_key,
        prefix + "SECRET_ACCESS_KEY": seaweed.secret_key,
        prefix + "REGION": seaweed.region,
        prefix + "FORCE_PATH_STYLE": "true",
    }


def rclone_s3_env(seaweed: Any, work: Path, name: str = "S3") -> dict[str, str]:
    """The environment for rclone against a SeaweedFS store: the store's subprocess
    environment (no CA bundle: plain http), an empty config file in ``work`` and remote
    ``name`` (:func:`rclone_s3_remote`)."""
    config = work / "rclone.conf"
    config.write_text("")
    env = {k: v for k, v in seaweed.subprocess_env().items() if k != "AWS_CA_BUNDLE"}
    return {**env, "RCLONE_CONFIG": str(config), **rclone_s3_remote(name, seaweed)}


def rclone_sftp_remote(name: str, sshd: Any) -> dict[str, str]:
    """rclone remote ``name`` (upper case) for the test sshd (its client key and
    known_hosts), in environment variables."""
    prefix = f"RCLONE_CONFIG_{name}_"
    return {
        prefix + "TYPE": "sftp",
        prefix + "HOST": "127.0.0.1",
        prefix + "PORT": str(sshd.port),
        prefix + "USER": sshd.user,
        prefix + "KEY_FILE": str(sshd.client_key_path),
        prefix + "KNOWN_HOSTS_FILE": str(sshd.known_hosts_path),
    }


def sftp_worker_env(sshd: Any, work: Path) -> dict[str, str]:
    """A worker's settings for the test sshd: its key and known_hosts, no ssh config
    or agent, SFTP connection locks under ``work``."""
    return {
        "STACCATO_SSH_CONFIG": "none",
        "STACCATO_SSH_IDENTITY": str(sshd.client_key_path),
        "STACCATO_SSH_KNOWN_HOSTS": str(sshd.known_hosts_path),
        "STACCATO_SFTP_LOCK_DIR": str(work / "locks"),
        "SSH_AUTH_SOCK": "",
    }
