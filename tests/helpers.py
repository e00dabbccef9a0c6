"""Test helpers: Staccato workers as real subprocesses, the CLI as a subprocess,
and small file utilities. No mocks: workers talk to the real Temporal dev server."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

REPO = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
#: bytes a paced HTTP source (nginx ``limit_rate``) may count as sent on one stream that
#: the stream never read when a pause or stop ends it: nginx counts what it handed its
#: kernel, so the bytes in both sockets' buffers (its send buffer, the worker's receive
#: buffer) are "sent". On a busy worker the streams read slower than the pace and those
#: buffers fill: ci110 at load lost 1.02 MiB a stream, over the 1 MiB bound then. A pause
#: that kept nothing of a chunk loses what each stream had read of it, 4 MiB or more in
#: the tests that use this.
IN_FLIGHT_PER_STREAM = 2 * MiB
#: ``TransferOptions.cleanup_for_s`` of the scenes that hang (SIGSTOP) a server while a
#: failed or cancelled transfer cleans up: its clean-up gives up against the frozen
#: server after this (plus one 10 s backoff; a failed one's after ``--retry-for`` when
#: longer) rather than the production 30 s, which each such test waited out in full.
#: The behaviour asserted is the same: the clean-up gives up and says what it left
HUNG_CLEANUP_FOR_S = 5.0


async def settled(read: Callable[[], Any], *, quiet_s: float, timeout_s: float) -> Any:
    """``read()`` once it gave the same answer for ``quiet_s`` seconds (or ``timeout_s``
    seconds passed): what a server counts or holds once the requests it was answering
    are counted (SeaweedFS counts a request after its response is sent)."""
    deadline = time.monotonic() + timeout_s
    value, since = read(), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet_s:
        await asyncio.sleep(0.1)
        again = read()
        if again != value:
            value, since = again, time.monotonic()
    return value


def write_random(path: Path, size: int, seed: int = 0) -> str:
    """Write ``size`` pseudo-random bytes to ``path`` (world-readable); return their sha256."""
    digest = hashlib.sha256()
    block = hashlib.sha256(f"{seed}".encode()).digest() * 2048  # 64 KiB pattern seed
    rnd = os.urandom(min(size, 1 << 20)) if size else b""
    with open(path, "wb") as out:
        written = 0
        while written < size:
            piece = rnd if size - written >= len(rnd) else rnd[: size - written]
            if not piece:
                piece = block[: size - written]
            out.write(piece)
            digest.update(piece)
            written += len(piece)
            rnd = (
                hashlib.sha256(rnd[:64]).digest() * 32768 if written < size else rnd
            )  # vary 1 MiB blocks
    os.chmod(path, 0o644)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """SHA-256 hex digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def leftovers(directory: Path) -> list[str]:
    """Staccato temp/journal files left in ``directory``."""
    return sorted(p.name for p in directory.iterdir() if ".staccato-" in p.name)


#: real seconds a worker may take to start polling: ~2 s on a quiet machine; at load 35
#: on 2 cores a worker with 4 activity processes wrote nothing in 60 s (its imports
#: alone took 10 s), and at load ~40 (a CI run and other suites beside) one with 1
#: process did not start in 120 s, in several tests of a run. A bound on a condition:
#: a worker that starts ends the wait
WORKER_START_S = 240.0


#: the environment every test worker starts with (``env`` adds to it and may override
#: it): a run whose worker was killed gets its next workflow task on another worker 2 s
#: later, not after Temporal's default sticky timeout (10 s, a pure wait in every kill
#: test; its histories show WORKFLOW_TASK_TIMED_OUT, SCHEDULE_TO_START, 10 s after the
#: task was scheduled). A live worker always has sticky polls open, so it takes its tasks
#: at once however busy the machine; the governors' workers use 2 s in the product.
WORKER_ENV = {"STACCATO_WORKER_STICKY_TIMEOUT_S": "2"}


#: activity processes of a test worker unless a test asks for more: each one spawned
#: costs ~0.8 CPU-s of imports (temporalio, the drivers, a throwaway S3 client) before
#: it runs anything, and the suite starts ~100 workers, most of which run one or two
#: transfers; 2 processes x ``STACCATO_WORKER_THREADS`` threads still run every
#: stream of a test at once (process accounting of a full run: the activity processes
#: used more CPU than the test processes themselves)
TEST_WORKER_PROCESSES = 2

#: activity processes of each session worker (tests/conftest.py ``worker``, the S3 and
#: SFTP ones): each xdist process starts up to three, so 4 processes each started 48 in
#: a ``-n 4`` run; 2 cost 1.8 CPU-s less per worker start (4.4 against 2.6 CPU-s to
#: start, idle 5 s and stop, measured 2026-12-05) and still run 2 x 64 streams at once
SESSION_WORKER_PROCESSES = 2

#: environment for a CLI a test runs while no worker polls the run's task queue (its
#: worker killed): a status query waits min(5 s, ``STACCATO_CLIENT_WAIT_S``) for a
#: worker before it answers from the run's history and memo (Temporal still lists a
#: killed worker's pollers for minutes, so ``may_answer`` cannot tell). 1 s gives the
#: same answer 4 s sooner, per query. Never for a CLI that a live worker must answer:
#: at load a worker answers a query in more than 1 s
NO_WORKER_ENV = {"STACCATO_CLIENT_WAIT_S": "1"}


@contextlib.contextmanager
def no_worker_waits() -> Iterator[None]:
    """:data:`NO_WORKER_ENV` in this process's environment while the block runs: the
    status queries of its clients, and of the CLIs it runs (they inherit it), wait 1 s
    for a worker. Only around what a test asks while it has killed or stopped every
    worker of the run's queue; leave the block before a worker starts again."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in NO_WORKER_ENV.items():
            patch.setenv(name, value)
        yield


class WorkerProcess:
    """``staccato worker`` as a subprocess (its activity pool are its children).

    A start costs ~3.5 CPU-s (2026-12-07, 2 activity processes, start to "worker
    polling" and stop: the main process ~1.2, each activity process ~1.0 of imports),
    the suite's largest cost after its CLI runs. A test starts a worker of its own only
    when its assertions need one: it kills, stops (SIGSTOP, SIGTERM) or restarts it,
    reads its log, counts its processes, or needs settings no shared worker has (then
    a module or session fixture per distinct environment, as ``settings_worker`` in
    tests/sftp/conftest.py). Otherwise it uses the session's ``worker``/``client``
    (tests/conftest.py) or the S3/SFTP ones, and ends every transfer it starts.

    Args:
        address: Temporal address.
        task_queue: queue to poll (default: a fresh unique one).
        processes: activity processes.
        env: extra environment (e.g. AWS settings for S3 tests).
        own_group: start it as the leader of its own process group (a new session),
            so :meth:`kill_group` can SIGKILL it with all its processes at once.
    """

    def __init__(
        self,
        address: str,
        *,
        task_queue: str | None = None,
        processes: int = TEST_WORKER_PROCESSES,
        env: Mapping[str, str] | None = None,
        log_dir: Path | None = None,
        own_group: bool = False,
    ) -> None:
        self.address = address
        self.own_group = own_group
        self.task_queue = task_queue or f"test-{uuid.uuid4().hex[:12]}"
        self.processes = processes
        self.env = dict(env or {})
        self.log_path = (
            log_dir or Path("/tmp")
        ) / f"staccato-worker-{self.task_queue}-{uuid.uuid4().hex[:6]}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = WORKER_START_S, *, wait: bool = True) -> WorkerProcess:
        """Start and wait until the worker polls (its log says so); ``wait=False``:
        return as soon as the process is started."""
        env = {
            **os.environ,
            "TEMPORAL_ADDRESS": self.address,
            "TEMPORAL_NAMESPACE": "default",
            "STACCATO_TASK_QUEUE": self.task_queue,
            **WORKER_ENV,
            **self.env,
        }
        log = open(self.log_path, "ab")
        offset = self.log_path.stat().st_size
        self.process = subprocess.Popen(
            [sys.executable, "-m", "staccato.cli", "worker", "--processes", str(self.processes)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=REPO,
            start_new_session=self.own_group,
        )
        log.close()
        if not wait:
            return self
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited {self.process.returncode}:\n{self.log_tail()}")
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                if b"worker polling" in f.read():
                    return self
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"worker did not start in {timeout_s} s:\n{self.log_tail()}")

    def log_tail(self, size: int = 6000) -> str:
        """The end of the worker's log."""
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return ""
        return data[-size:].decode(errors="replace")

    def kill(self) -> None:
        """SIGKILL the worker process only; its pool processes die with it (PDEATHSIG)."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def kill_group(self, timeout_s: float = 10.0) -> None:
        """SIGKILL the worker's whole process group (worker, manager, pool) at once and
        wait until none of them is left (``own_group`` workers only).

        Raises:
            AssertionError: started without ``own_group``, or some are alive after
                ``timeout_s`` seconds.
        """
        assert self.own_group and self.process is not None, "kill_group needs own_group=True"
        pgid = self.process.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        self.process.wait(timeout_s)
        deadline = time.monotonic() + timeout_s
        while _group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _group_members(pgid), f"processes of group {pgid} outlived SIGKILL"

    def stop(self) -> None:
        """SIGTERM (graceful shutdown), SIGKILL after 20 s."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def status_json(transfer: str, *, address: str, task_queue: str) -> dict[str, Any]:
    """``staccato status --json TRANSFER`` run as a command (in a thread: the event loop
    goes on); its parsed output.

    Raises:
        AssertionError: the command exited non-zero (its stderr is the message).
    """
    shown = await asyncio.to_thread(
        run_cli, "status", "--json", transfer, address=address, task_queue=task_queue
    )
    assert shown.returncode == 0, shown.stderr
    parsed: dict[str, Any] = json.loads(shown.stdout)
    return parsed


def run_cli(
    *args: str,
    address: str,
    task_queue: str = "staccato",
    env: Mapping[str, str] | None = None,
    timeout_s: float = 120,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``staccato ARGS`` against ``address``; returns the completed process (text)."""
    full_env = {
        **os.environ,
        "TEMPORAL_ADDRESS": address,
        "TEMPORAL_NAMESPACE": "default",
        "STACCATO_TASK_QUEUE": task_queue,
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "staccato.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout_s,
        cwd=cwd or REPO,
    )


async def retried_past_a_wrong_worker(
    client,
    transfer: str,
    workers: tuple[WorkerProcess, WorkerProcess, WorkerProcess],
    *,
    shown: str,
    says: str,
    moved: int,
) -> Any:
    """The scene of a worker that cannot run a transfer's streams, mid-transfer: the
    ``workers`` (first, wrong, last: one task queue, ``first`` started and running
    ``transfer``) take turns. Once ``moved`` bytes are done, ``first`` is killed and
    ``wrong`` started, until the status's ``last_retry_error`` holds ``shown`` (the
    transfer must still run, its error saying ``says``: retried, not failed); then
    ``wrong`` is killed and ``last`` finishes it. Returns the transfer's result.

    Raises:
        AssertionError: the transfer failed instead, or the error lacks ``says``.
    """
    first, wrong, last = workers
    await wait_for_status(client, transfer, lambda s: s.bytes_done >= moved, timeout_s=120)
    first.kill()
    wrong.start()
    retried = await wait_for_status(
        client,
        transfer,
        lambda s: s.state.value == "failed" or shown in (s.last_retry_error or ""),
        timeout_s=90,
    )
    assert retried.state.value == "running", retried
    assert says in (retried.last_retry_error or ""), retried
    wrong.kill()
    last.start()
    return await asyncio.wait_for(client.wait(transfer), 180)


async def wait_for_status(
    client, transfer: str, predicate, *, timeout_s: float = 120.0, interval_s: float = 0.2
):
    """Poll ``client.status(transfer)`` until ``predicate(status)``; return that status.

    Raises:
        TimeoutError: not reached within ``timeout_s`` (message has the last status).
    """
    import asyncio

    deadline = time.monotonic() + timeout_s
    current = None
    while time.monotonic() < deadline:
        current = await client.status(transfer)
        if predicate(current):
            return current
        await asyncio.sleep(interval_s)
    raise TimeoutError(f"status condition not reached in {timeout_s} s; last: {current}")


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return children


def spawned_children(pid: int) -> list[int]:
    """Children of ``pid`` started by multiprocessing's ``spawn`` (the heartbeat manager
    and the activity pool, not the resource tracker), oldest first: the manager is
    started (and ready) before the pool."""
    found = []
    for child in child_pids(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            started = int(Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[19])
        except (FileNotFoundError, IndexError, ValueError):
            continue
        if b"spawn_main" in cmdline:
            found.append((started, child))
    return [child for _, child in sorted(found)]


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid`` (Linux /proc)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(stat.parent.name))
    return members


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def edge_sizes(chunk_size: int) -> list[int]:
    """Object sizes (bytes) at the edges of chunking: empty, one byte, a chunk less a
    byte, one chunk, a chunk and a byte.

    Every driver meets these at driver level in the contract suite
    (``tests/contract/test_write_contract.py::test_write_round_trip``); end-to-end,
    file -> file runs them all (the workflow's own chunk and segment planning) and the
    other endpoint pairs pick a few (:func:`pair_sizes`)."""
    return [0, 1, chunk_size - 1, chunk_size, chunk_size + 1]


def pair_sizes(chunk_size: int) -> list[int]:
    """Sizes (bytes) an end-to-end test of one endpoint pair runs: an empty object (no
    stream at all, publish only) and two chunks' worth (two streams, a short last
    chunk). The other chunk edges are each driver's contract, held at driver level."""
    return [0, chunk_size + 1]


def at_rest(path: Path) -> None:
    """Date ``path``'s mtime an hour back: a source at rest, as most are. A source
    modified within its mtime's resolution of the copy is read a second time before
    publish (tests/test_source_rewritten.py), which tests counting the bytes a server
    sent must not mistake for re-sent chunks."""
    past = time.time() - 3600
    os.utime(path, (past, past))


async def wait_for_phase(
    client,
    transfer: str,
    phases: tuple[str, ...],
    *,
    timeout_s: float = 120.0,
    interval_s: float = 0.05,
) -> str | None:
    """Query the workflow's progress until its phase is one of ``phases`` (or the
    deadline passes); returns the last phase seen (None if none was reported)."""
    import asyncio

    from staccato.workflows.transfer import TransferWorkflow

    handle = client.temporal.get_workflow_handle(transfer)
    deadline = time.monotonic() + timeout_s
    phase = None
    while time.monotonic() < deadline:
        progress = await handle.query(TransferWorkflow.progress)
        phase = progress.phase if progress else None
        if phase in phases:
            break
        await asyncio.sleep(interval_s)
    return phase


@contextlib.contextmanager
def mounted_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (:func:`mount_tmpfs`) for the ``with``
    block, unmounted (lazily: a process still in it does not keep it) after it."""
    mount_tmpfs(path, size)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def mount_tmpfs(path: Path, size: str) -> None:
    """Mount a tmpfs of ``size`` (mount(8) syntax, e.g. ``"8m"``) at ``path`` (created);
    skips the test where mounting is not permitted (not root, a container)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {done.stderr.strip()}")


def replayer_of(*workflows: type, workflow_runner: Any = None) -> Replayer:
    """A ``Replayer`` of these workflow classes with Staccato's data converter and
    Temporal's deadlock detection off (``debug_mode``; the sandbox stays). A replay
    test checks determinism, not time; the SDK fails an activation that does not yield
    within 2 s as a deadlock, which one activation can exceed on a loaded 2-core machine
    (two replays of tests/workflow failed so at load average ~23, then passed alone).
    ``workflow_runner``: the worker's own (``staccato.workers.worker.WORKFLOW_RUNNER``)
    to replay as a deployed worker runs; None: the SDK's default sandbox."""
    if workflow_runner is None:
        return Replayer(
            workflows=list(workflows), data_converter=pydantic_data_converter, debug_mode=True
        )
    return Replayer(
        workflows=list(workflows),
        data_converter=pydantic_data_converter,
        debug_mode=True,
        workflow_runner=workflow_runner,
    )


async def assert_link_learned_nothing(client: Any, status: Any, link: str, why: str) -> None:
    """A tuned transfer's ``status`` (a ``TransferStatus``) shows that its link learned
    nothing, saying ``why`` (in ``tuning.not_recorded``), and the link's memory in
    Temporal (``client``: a ``StaccatoClient``) holds nothing for ``link``."""
    from staccato.link_memory import read_link_memory

    assert status.tuning is not None, status
    assert status.tuning.learned_streams is None, status.tuning
    assert why in (status.tuning.not_recorded or ""), status.tuning
    assert await read_link_memory(client.temporal, link) is None


@contextlib.contextmanager
def stopped_process_tree(root: int) -> Iterator[None]:
    """SIGSTOP process ``root`` and its descendants for the block (a hung server: it
    accepts connections and answers nothing); SIGCONT them after, always."""
    from tests.servers.temporal_server import _descendants

    # a process forked while the tree was scanned (sshd starting a session for a
    # connection it just accepted) is not in that scan: scanned again until a scan finds
    # none new (stopped processes fork no more). With one scan, a session's sftp-server
    # started as the scene stopped sshd kept answering: its streams journaled a partial
    # record and its transfer cleaned up, under a "frozen" server (ci110's scene)
    pids = [root]
    os.kill(root, signal.SIGSTOP)
    for _ in range(20):
        new = [pid for pid, _ in _descendants(root) if pid not in pids]
        if not new:
            break
        for pid in new:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        pids += new
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def journaled_chunks(journal: Path) -> set[int]:
    """The chunk indexes a local write session's journal (``.NAME.<16 hex>.staccato-
    journal``) has lines for (``<index> <checksum>``; an owner record or a torn last
    line is not one); empty when the journal is gone."""
    try:
        text = journal.read_text()
    except FileNotFoundError:
        return set()
    return {
        int(fields[0])
        for line in text.splitlines()
        if len(fields := line.split()) == 2 and fields[0].isdigit()
    }


def signal_all(pids: list[int], sig: signal.Signals) -> None:
    """Send ``sig`` to each of ``pids``, skipping those that exited."""
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
