"""The OpenSSH transport (``staccato.endpoints.sftp.openssh``): SFTP over the pipes of
an ``ssh`` process, the default where ``ssh`` is on the worker's PATH.

What matters: the bytes arrive intact through a real sshd; the ssh process is gone
(killed by its PID and reaped) once its connection closes, also when the connection
failed to start; a killed ssh process is a lost connection (retryable) and the next
lease gets a working one; ``STACCATO_SFTP_TRANSPORT=paramiko`` still uses paramiko;
and host keys stay strict (an unknown host fails as before, and no ssh is left).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import paramiko
import pytest

from staccato.client import StaccatoClient
from staccato.endpoints.sftp.connection import ConnectionLost
from staccato.endpoints.sftp.openssh import (
    CONTROL_PREFIX,
    OpenSSHTransport,
    sweep_control_directories,
)
from staccato.endpoints.sftp.pipeline import write_at
from staccato.endpoints.sftp.pool import POOL
from staccato.endpoints.sftp.protocol import FXF_CREAT, FXF_WRITE
from staccato.endpoints.sftp.ssh import resolve
from staccato.errors import PermanentError, RetryableError
from staccato.models import TransferOptions
from staccato.urls import parse_url
from tests.helpers import (
    MiB,
    WorkerProcess,
    leftovers,
    pid_alive,
    run_cli,
    sha256_file,
    write_random,
)
from tests.servers.sshd import SshdServer


def _gone(pid: int) -> bool:
    """Whether no process ``pid`` exists (a zombie would still be there: reaped too)."""
    return not Path(f"/proc/{pid}").exists()


def test_openssh_is_the_default_and_writes_intact_bytes(
    driver_env: Path, sftp_url: Any, data_dir: Path
) -> None:
    """8 MiB written over the default transport arrive intact; the connection's ssh
    process runs while it is open and is gone once the pool closes it."""
    temp = data_dir / "openssh.bin"
    data = os.urandom(8 * MiB + 12345)
    target = resolve(parse_url(sftp_url(temp)))
    with POOL.lease(target) as connection:
        assert isinstance(connection.transport, OpenSSHTransport)
        pid = connection.transport.proc.pid
        assert not _gone(pid)
        sftp = connection.sftp
        handle = sftp.open_handle(str(temp), FXF_WRITE | FXF_CREAT)
        write_at(sftp, handle, 0, memoryview(data))
        sftp.close_handle(handle)
    assert temp.read_bytes() == data
    POOL.close_all()
    assert _gone(pid)


def test_paramiko_when_the_setting_says_so(
    driver_env: Path, sftp_url: Any, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``STACCATO_SFTP_TRANSPORT=paramiko``: paramiko's transport, bytes intact."""
    monkeypatch.setenv("STACCATO_SFTP_TRANSPORT", "paramiko")
    temp = data_dir / "paramiko.bin"
    data = os.urandom(MiB)
    with POOL.lease(resolve(parse_url(sftp_url(temp)))) as connection:
        assert isinstance(connection.transport, paramiko.Transport)
        handle = connection.sftp.open_handle(str(temp), FXF_WRITE | FXF_CREAT)
        write_at(connection.sftp, handle, 0, memoryview(data))
        connection.sftp.close_handle(handle)
    assert temp.read_bytes() == data


def test_openssh_asked_for_without_ssh_fails_naming_the_setting(
    driver_env: Path, sftp_url: Any, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``openssh`` with no ``ssh`` on PATH: a permanent error naming the setting."""
    monkeypatch.setenv("STACCATO_SFTP_TRANSPORT", "openssh")
    monkeypatch.setenv("PATH", str(data_dir))  # no ssh there
    with pytest.raises(PermanentError, match="STACCATO_SFTP_TRANSPORT"):
        with POOL.lease(resolve(parse_url(sftp_url(data_dir / "x")))):
            pass


@pytest.mark.parametrize("command", [["worker", "--check"], ["worker"]])
def test_openssh_asked_for_without_ssh_stops_the_worker_before_it_starts(
    data_dir: Path, command: list[str]
) -> None:
    """``worker --check`` and ``worker`` (``up`` checks the same) with ``openssh`` and no ``ssh`` on
    PATH: exit 2 naming the setting, before anything starts (it exited 0 and
    the first SFTP transfer failed)."""
    done = run_cli(
        *command,
        address="127.0.0.1:1",
        env={
            "STACCATO_SFTP_TRANSPORT": "openssh",
            "PATH": str(data_dir),  # no ssh there
            "STACCATO_HOME": str(data_dir / "home"),
        },
        timeout_s=60,
    )
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "STACCATO_SFTP_TRANSPORT" in done.stderr and "ssh" in done.stderr, done.stderr
    assert not (data_dir / "home" / "up.pid").exists()


def test_a_killed_ssh_is_a_lost_connection_and_the_next_lease_works(
    driver_env: Path, sftp_url: Any, data_dir: Path
) -> None:
    """SIGKILL of the connection's ssh process: the next request raises
    :class:`ConnectionLost` (retryable), the connection is dropped, and a new lease
    opens a new ssh process that writes intact bytes."""
    temp = data_dir / "killed.bin"
    target = resolve(parse_url(sftp_url(temp)))
    with pytest.raises(ConnectionLost) as raised:
        with POOL.lease(target) as connection:
            assert isinstance(connection.transport, OpenSSHTransport)
            first = connection.transport.proc.pid
            os.kill(first, signal.SIGKILL)
            handle = connection.sftp.open_handle(str(temp), FXF_WRITE | FXF_CREAT)
            write_at(connection.sftp, handle, 0, memoryview(os.urandom(4 * MiB)))
    assert isinstance(raised.value, RetryableError)
    assert _gone(first)
    data = os.urandom(2 * MiB)
    with POOL.lease(target) as connection:
        assert isinstance(connection.transport, OpenSSHTransport)
        assert connection.transport.proc.pid != first
        handle = connection.sftp.open_handle(str(temp), FXF_WRITE | FXF_CREAT)
        write_at(connection.sftp, handle, 0, memoryview(data))
        connection.sftp.close_handle(handle)
    assert temp.read_bytes()[: len(data)] == data


def test_unknown_host_key_still_fails_and_leaves_no_ssh(
    driver_env: Path,
    sftp_url: Any,
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A known_hosts without the server's key: the connection fails permanently with
    the usual message (the key's fingerprint and the line to add), and no ssh process
    of this one is left running."""
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    monkeypatch.setenv("STACCATO_SSH_KNOWN_HOSTS", str(empty))
    before = _ssh_children()
    with pytest.raises(PermanentError, match="unknown host key"):
        with POOL.lease(resolve(parse_url(sftp_url(data_dir / "x")))):
            pass
    assert _ssh_children() <= before
    assert empty.read_text() == ""  # strict: nothing recorded


def _ssh_children() -> set[int]:
    """PIDs of this process's child processes running ``ssh``."""
    found: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            try:
                argv0 = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if os.path.basename(argv0) == b"ssh":
                found.add(int(child))
    return found


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (``/proc/PID/task/*/children``)."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found + [g for c in found for g in _descendants(c)]


def _ssh_below(root: int, port: int) -> set[int]:
    """PIDs of ``ssh`` processes below ``root`` talking to ``port``."""
    found: set[int] = set()
    for pid in _descendants(root):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if os.path.basename(argv[0]) == b"ssh" and f"Port={port}".encode() in argv:
            found.add(pid)
    return found


async def test_killed_ssh_mid_transfer_is_retried_and_none_is_left(
    temporal_server,
    sshd_server: SshdServer,
    env_worker_env: dict[str, str],
    data_dir: Path,
    tmp_path: Path,
) -> None:
    """A ``cp`` to SFTP whose ssh processes are SIGKILLed mid-transfer: the streams'
    attempts fail retryably and the transfer completes with the source's bytes and
    no temp file; once the worker stopped, none of its ssh processes is left."""
    size = 96 * MiB
    source = data_dir / "src.bin"
    digest = write_random(source, size, seed=7)
    out = data_dir / "out"
    out.mkdir()
    destination = out / "killed-ssh.bin"
    worker = WorkerProcess(
        temporal_server.address, processes=2, env=env_worker_env, log_dir=tmp_path
    ).start()
    seen: set[int] = set()
    try:
        client = await StaccatoClient.connect(
            target_host=temporal_server.address, namespace="default"
        )
        client.task_queue = worker.task_queue
        options = TransferOptions(
            chunk_size=8 * MiB, streams=2, max_rate=24 * MiB, heartbeat_timeout_s=5
        )
        transfer = await client.submit(str(source), sshd_server.url(str(destination)), options)
        deadline = time.monotonic() + 60
        while not _journal_lines(out) >= 2:
            assert time.monotonic() < deadline, "the transfer made no progress"
            await asyncio.sleep(0.02)
        assert worker.process is not None
        killed = _ssh_below(worker.process.pid, sshd_server.port)
        assert killed, "no ssh process runs the transfer"
        seen |= killed
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        assert _journal_lines(out) < size // (8 * MiB), "the transfer finished before the kill"
        result = await asyncio.wait_for(client.wait(transfer), 120)
        seen |= _ssh_below(worker.process.pid, sshd_server.port)
    finally:
        worker.stop()
    assert result.bytes == size
    assert sha256_file(destination) == digest
    assert leftovers(out) == []
    deadline = time.monotonic() + 30
    while any(pid_alive(pid) for pid in seen) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not any(pid_alive(pid) for pid in seen), "ssh processes outlived the worker"


def _journal_lines(directory: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in directory.glob(".*.staccato-journal"))


_HOLD_A_CONNECTION = """
import sys, time
from staccato.endpoints.sftp.pool import POOL
from staccato.endpoints.sftp.ssh import resolve
from staccato.urls import parse_url
connection = POOL.acquire(resolve(parse_url(sys.argv[1])))
print(connection.transport.control_path, flush=True)
time.sleep(120)
"""


def test_control_directories_a_killed_process_left_are_swept(
    driver_env: Path, sftp_url: Any, data_dir: Path
) -> None:
    """A process SIGKILLed with an OpenSSH connection open leaves its ControlMaster
    socket's directory in the temp directory (one per connection, for good, before
    0.29.0); the directory is named after its process, and the sweep a process runs
    before its first connection removes it, and leaves a live process's alone."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_A_CONNECTION, sftp_url(data_dir / "any")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        left = Path(holder.stdout.readline().strip()).parent
        assert left.name.startswith(f"{CONTROL_PREFIX}{holder.pid}-"), left
    finally:
        holder.kill()
        holder.wait(30)
    assert left.is_dir(), "the killed process's control directory is not there to sweep"
    target = resolve(parse_url(sftp_url(data_dir / "any")))
    with POOL.lease(target) as connection:
        assert isinstance(connection.transport, OpenSSHTransport)
        mine = Path(connection.transport.control_path).parent
        sweep_control_directories()
        assert not left.exists(), f"{left} outlived the sweep"
        assert mine.is_dir(), "the sweep removed a live process's control directory"
