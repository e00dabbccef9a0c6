"""Freezing a worker whose stream is inside a chunk write (SIGSTOP of its whole process
tree), for the tests that a woken (zombie) stream writes nothing after it lost its
segment. Linux only: reads ``/proc``."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import struct
import termios
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from staccato.client import StaccatoClient
from staccato.dataset_client import submit_dataset
from staccato.datasets.models import DatasetState
from staccato.models import TransferOptions, TransferState
from tests.dataset_checks import wait_dataset
from tests.helpers import WorkerProcess, child_pids, leftovers, sha256_file
from tests.servers.temporal_server import TemporalDevServer

#: how long the zombie tests' Temporal server keeps a task poll open (its default: a
#: minute). Temporal cannot tell a stopped worker's open poll from a live one: each
#: poll the frozen worker held took a task it could not run, a stream retry (lost
#: after its 3 s heartbeat timeout, then a backoff doubling to 10 s) or a publish
#: (lost for its 2-minute start-to-close timeout). Open polls are re-sent when they
#: expire, so only the frozen worker's go away; with a minute's expiry the transfer
#: needed 60-85 s without the frozen worker (the tests' 87-89 s in CI), not the ~10 s
#: its copy takes.
POLL_EXPIRY = "5s"


@contextlib.contextmanager
def short_poll_server(directory: Path, expiry: str = POLL_EXPIRY) -> Iterator[TemporalDevServer]:
    """A Temporal dev server of the test's own (its SQLite file in ``directory``) that
    answers an open task poll after ``expiry`` (default :data:`POLL_EXPIRY`) without a
    task."""
    server = TemporalDevServer(
        directory / "short-poll.db",
        headless=True,
        extra_args=[
            "--dynamic-config-value", f'matching.longPollExpirationInterval="{expiry}"',
        ],
    )  # fmt: skip
    server.start()
    try:
        yield server
    finally:
        server.stop()


#: x86_64 system call number, as ``/proc/PID/task/TID/syscall`` shows a blocked call
FDATASYNC = 75
#: x86_64 system call numbers of poll and ppoll (a server waiting for input)
POLL, PPOLL = 7, 271
#: x86_64 system call number of pwrite64 (a chunk written with direct I/O spends its
#: time here; its fdatasync then has little to flush)
PWRITE64 = 18


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            todo += child_pids(current)
        except FileNotFoundError:
            continue
    return found


def blocked_calls(pid: int) -> set[int]:
    """The system calls ``pid``'s threads are blocked in (running ones show none)."""
    calls = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return calls
    for task in tasks:
        try:
            first = Path(f"/proc/{pid}/task/{task}/syscall").read_text().split()[0]
        except (OSError, IndexError):
            continue
        if first.isdigit():
            calls.add(int(first))
    return calls


def open_under(pids: Iterable[int], directory: Path) -> list[str]:
    """``PID:path`` of every file under ``directory`` one of ``pids`` holds open."""
    held = []
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith(f"{directory}/"):
                held.append(f"{pid}:{target}")
    return held


def _tcp_sockets() -> list[tuple[int, int, int, int, str]]:
    """Established TCP sockets on 127.0.0.1 (``/proc/net/tcp``): ``(local port, remote
    port, send queue, receive queue, inode)``. The queues in bytes: sent and not yet
    acknowledged by the peer's TCP; received and not yet read by the process."""
    found = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] != "01":
            continue
        tx_queue, rx_queue = (int(n, 16) for n in fields[4].split(":"))
        found.append(
            (
                int(fields[1].split(":")[1], 16),
                int(fields[2].split(":")[1], 16),
                tx_queue,
                rx_queue,
                fields[9],
            )
        )
    return found


def sending_connection(pid: int, port: int, queued: int) -> int | None:
    """The local port of a connection of ``pid`` to 127.0.0.1:``port`` with at least
    ``queued`` bytes in its send queue, or None."""
    try:
        inodes = {
            os.readlink(f"/proc/{pid}/fd/{fd}")[len("socket:[") : -1]
            for fd in os.listdir(f"/proc/{pid}/fd")
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:[")
        }
    except OSError:
        return None
    for local, remote, tx_queue, _, inode in _tcp_sockets():
        if remote == port and inode in inodes and tx_queue >= queued:
            return local
    return None


def unread_by_server(client_port: int, port: int) -> int:
    """Bytes the client at ``client_port`` sent to the server at ``port`` that the
    server has not read: in the client's send queue and in the server's receive queue."""
    total = 0
    for local, remote, tx_queue, rx_queue, _ in _tcp_sockets():
        if (local, remote) == (client_port, port):
            total += tx_queue
        elif (local, remote) == (port, client_port):
            total += rx_queue
    return total


def server_side(client_port: int, port: int) -> list[int]:
    """The processes holding the server's end (port ``port``) of the connection from
    ``client_port`` (sshd's processes of that connection), with their descendants."""
    inodes = {
        f"socket:[{inode}]"
        for local, remote, _, _, inode in _tcp_sockets()
        if (local, remote) == (port, client_port)
    }
    holders = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{entry}/fd/{fd}") in inodes:
                    holders.append(int(entry))
                    break
            except OSError:
                continue
    return list(dict.fromkeys(pid for holder in holders for pid in tree(holder)))


async def freeze_a_writer_and_its_server(
    workers: list[WorkerProcess], port: int, queued: int, timeout_s: float = 30
) -> tuple[WorkerProcess, list[int], list[int], int]:
    """Poll the activity processes of ``workers`` until one sends to the server at
    127.0.0.1:``port`` (64 KiB in its send queue: a chunk's write requests); SIGSTOP
    the server's processes of that connection (sshd and the ``sftp-server`` it runs),
    wait until the writer sent ``queued`` bytes more than the server read (up to 5
    s), then SIGSTOP the writer's whole worker. Bytes sent and not read are carried out
    by the server only after it is woken: a writer's requests wholly in the kernel's
    queues when it froze, which no check of its own can call back.

    Returns:
        The frozen worker, its pids stopped, the server's pids stopped (SIGCONT them
        all) and the writer's local port.

    Raises:
        AssertionError: no writer was caught with ``queued`` bytes unread within
            ``timeout_s`` seconds (the server was woken again).
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for worker in workers:
            assert worker.process is not None
            for pid in tree(worker.process.pid)[1:]:
                client = sending_connection(pid, port, 64 * 1024)
                if client is None:
                    continue
                server = server_side(client, port)
                for other in server:
                    os.kill(other, signal.SIGSTOP)
                held = time.monotonic() + 5
                while unread_by_server(client, port) < queued and time.monotonic() < held:
                    await asyncio.sleep(0.01)
                os.kill(pid, signal.SIGSTOP)
                frozen = tree(worker.process.pid)
                for other in frozen:
                    os.kill(other, signal.SIGSTOP)
                unread = unread_by_server(client, port)
                if unread >= queued:
                    print(f"{unread} bytes sent by {pid} are not read by the server")
                    return worker, frozen, server, client
                thaw(server + frozen)
        await asyncio.sleep(0)
    raise AssertionError(f"no writer was caught with {queued} bytes unread in {timeout_s} s")


def _pipe_bytes(pid: int, fd: int) -> int:
    """Bytes waiting in the pipe ``pid`` reads as ``fd`` (``FIONREAD``)."""
    descriptor = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK)
    try:
        return struct.unpack("i", fcntl.ioctl(descriptor, termios.FIONREAD, b"\0" * 4))[0]
    finally:
        os.close(descriptor)


def server_idle(server: list[int], client_port: int, port: int) -> bool:
    """Whether the server's processes ``server`` of the connection from ``client_port``
    carried out all it sent: nothing unread on the connection, every process waiting
    in a system call, and ``sftp-server`` waiting in ``poll`` with nothing in its input
    pipe (it answers each request, so it polls with none whole left in its buffer)."""
    if unread_by_server(client_port, port):
        return False
    for pid in server:
        calls = blocked_calls(pid)
        if not calls:
            return False  # running
        if Path(f"/proc/{pid}/comm").read_text().strip() == "sftp-server":
            if not calls <= {POLL, PPOLL} or _pipe_bytes(pid, 0):
                return False
    return True


async def freeze_a_writer(
    workers: list[WorkerProcess], writing: Callable[[int], bool], timeout_s: float = 30
) -> tuple[WorkerProcess, list[int]]:
    """Poll the activity processes of ``workers`` until ``writing(pid)`` says one is
    inside a chunk write; SIGSTOP it at once, then the rest of its worker's tree.

    Returns:
        The frozen worker and the pids stopped (SIGCONT them).

    Raises:
        AssertionError: none was seen writing within ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for worker in workers:
            assert worker.process is not None
            for pid in tree(worker.process.pid)[1:]:
                if writing(pid):
                    os.kill(pid, signal.SIGSTOP)
                    frozen = tree(worker.process.pid)
                    for other in frozen:
                        os.kill(other, signal.SIGSTOP)
                    return worker, frozen
        await asyncio.sleep(0)
    raise AssertionError(f"no activity process was seen writing within {timeout_s} s")


def thaw(pids: Iterable[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            continue


async def outlast_the_frozen(
    client: StaccatoClient,
    transfer: str,
    frozen: list[int],
    destination: Path,
    *,
    size: int,
    digest: str,
    heartbeat_timeout_s: float,
) -> os.stat_result:
    """The transfer completes without the frozen worker (after its streams' heartbeat
    timeout), exact; then the frozen processes are woken (also on failure).

    Returns:
        The published destination's stat, to compare once the woken streams ended.
    """
    frozen_at = time.monotonic()
    try:
        result = await asyncio.wait_for(client.wait(transfer), 120)
        assert result.bytes == size
        assert time.monotonic() - frozen_at > heartbeat_timeout_s
        published = destination.stat()
        assert sha256_file(destination) == digest
    finally:
        thaw(frozen)
    return published


async def check_nothing_written_after_publish(
    client: StaccatoClient,
    transfer: str,
    destination: Path,
    published: os.stat_result,
    digest: str,
    *,
    let_go: Callable[[], bool],
    temp_dir: Path,
    log: Callable[[], str],
) -> None:
    """Once ``let_go()`` (the woken streams released the destination; waited up to
    30 s): the published file is the same file, untouched (inode, mtime, ctime), exact,
    no temp data is left in ``temp_dir`` and the transfer is completed."""
    deadline = time.monotonic() + 30
    while not let_go() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert let_go(), f"the woken streams still hold the destination:\n{log()}"
    after = destination.stat()
    print(f"woken worker's log:\n{log()}")
    assert (after.st_ino, after.st_mtime_ns, after.st_ctime_ns) == (
        published.st_ino,
        published.st_mtime_ns,
        published.st_ctime_ns,
    ), "the published file was written to after publish"
    assert sha256_file(destination) == digest
    assert leftovers(temp_dir) == []
    status = await client.status(transfer)
    assert status.state == TransferState.completed, status


def old_files(source: Path, count: int, size: int) -> None:
    """``count`` random files of ``size`` bytes, ``f0000``..., in ``source`` (made),
    modified an hour ago (not "just changed" for a dataset's listing)."""
    source.mkdir()
    past = time.time() - 3600
    for i in range(count):
        path = source / f"f{i:04d}"
        path.write_bytes(os.urandom(size))
        os.utime(path, (past, past))


def freeze(worker: WorkerProcess) -> list[int]:
    """SIGSTOP ``worker``'s process tree, its activity processes first.

    Returns:
        The pids stopped (:func:`thaw` them)."""
    assert worker.process is not None
    frozen = tree(worker.process.pid)
    for pid in reversed(frozen):
        os.kill(pid, signal.SIGSTOP)
    return frozen


def published_names(destination: Path) -> set[str]:
    """The names published in the local directory ``destination`` (no temp names)."""
    if not destination.is_dir():
        return set()
    return {p.name for p in destination.iterdir() if ".staccato-" not in p.name}


def write_newer(destination: Path, names: Iterable[str]) -> dict[str, bytes]:
    """A newer version of each of ``names`` in ``destination``, as a later writer would
    put it there (a new file renamed over the old one).

    Returns:
        name -> the newer bytes."""
    newer = {name: b"newer version of " + name.encode() for name in names}
    for name, data in newer.items():
        fresh = destination / f"{name}.newer"
        fresh.write_bytes(data)
        fresh.replace(destination / name)
    return newer


def replaced_files(destination: Path, newer: dict[str, bytes]) -> list[str]:
    """The names of ``newer`` whose file in ``destination`` is no longer the newer version."""
    return [name for name, data in newer.items() if (destination / name).read_bytes() != data]


async def woken_batch_end(
    worker: WorkerProcess, replaced: Callable[[], list[str]], *, timeout_s: float = 60
) -> bool:
    """Wait until the woken batch of ``worker`` stopped at its lease (it logged
    ``StreamLeaseExpired``) or (without the fence) ``replaced()`` names a newer file it
    put a stale copy over; up to ``timeout_s`` seconds.

    Returns:
        Whether it stopped at its lease."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if "StreamLeaseExpired" in worker.log_tail(20000):
            return True
        if replaced():
            return False
        await asyncio.sleep(0.2)
    return False


async def wait_for(condition: Callable[[], bool], timeout_s: float) -> None:
    """Poll ``condition`` (every 10 ms) until it holds.

    Raises:
        AssertionError: it did not hold within ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not reached within {timeout_s} s"
        await asyncio.sleep(0.01)


async def submit_one_batch(
    client: StaccatoClient,
    source: Path,
    destination: str | list[str],
    options: TransferOptions,
    files: int,
) -> str:
    """The dataset ``source`` -> ``destination`` (one root or several), its ``files``
    files in one batch; returns its id."""
    return await submit_dataset(
        client, str(source), destination, options, batch_files=files, max_batches=1
    )


def names_ahead(written: Iterable[str], files: int, gap: int) -> list[str]:
    """The names (``f0000``...) of the files a batch frozen once ``written`` (names or
    keys ending in them) were published would write next: from ``gap`` past the last
    one written (those in flight may be written or staged meanwhile) to the last of its
    ``files``. Checks the freeze came between a fifth and a half of the batch."""
    indexes = [int(name.rsplit("/", 1)[-1][1:]) for name in written]
    assert files // 5 <= len(indexes) < files // 2, len(indexes)
    ahead = [f"f{i:04d}" for i in range(max(indexes) + gap, files)]
    assert len(ahead) >= files // 3, len(ahead)
    return ahead


def second_worker(first: WorkerProcess, address: str, log_dir: Path) -> WorkerProcess:
    """A second worker (started) on ``first``'s task queue, to take its batch over."""
    second = WorkerProcess(address, task_queue=first.task_queue, processes=2, log_dir=log_dir)
    second.start()
    return second


async def wait_completed(client: StaccatoClient, dataset: str, files: int) -> None:
    """The dataset completes (within 2 minutes) with its ``files`` files copied."""
    final = await wait_dataset(client, dataset, timeout_s=120)
    assert final.state == DatasetState.completed, final
    assert final.files_done == files and final.files_failed == 0, final
