"""An SFTP write request that was held up (by the channel's window or a full socket)
while its stream's lease ran out is never completed: the stream checks its lease right
before every SSH packet and every socket send, not only before each request, and cuts
the connection when the lease is gone, so the server never carries out the rest.

Why it matters: a stream frozen mid-request (SIGSTOP, a suspended VM) and woken after
another attempt published the file would otherwise finish that request on a handle
that now leads to the published file (the CI failure of
``test_frozen_sftp_stream_writes_nothing_after_losing_its_segment``: the published
file's mtime changed after publish).
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from staccato.activities.stream_lease import StreamLeaseExpiredError, leased
from staccato.endpoints.base import write_fence_hook
from staccato.endpoints.sftp.openssh import ssh_binary
from staccato.endpoints.sftp.pipeline import WRITE_BEHIND_BYTES, write_at
from staccato.endpoints.sftp.pool import POOL
from staccato.endpoints.sftp.protocol import FXF_WRITE, BufferedSocket
from staccato.endpoints.sftp.ssh import resolve
from staccato.urls import parse_url
from tests.helpers import MiB
from tests.servers.sshd import SshdServer
from tests.zombie_checks import open_under

HEARTBEAT_TIMEOUT_S = 2.0  # the lease runs out 1.5 s after the last heartbeat
#: OpenSSH's session channel window (CHAN_SES_WINDOW_DEFAULT = 64 x 32 KiB): what
#: the client may send before the server's sftp-server has read any of it
SESSION_WINDOW_BYTES = 2 * MiB


def _holder_of(path: Path) -> int:
    """The pid of the (one) process that has ``path`` open (its sftp-server)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
        for held in open_under(pids, path.parent):
            pid, _, name = held.partition(":")
            if name == str(path):
                return int(pid)
        time.sleep(0.05)
    raise AssertionError(f"no process holds {path} open")


def _gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("transport", ["paramiko", "openssh"])
def test_a_request_held_up_past_the_lease_is_never_completed(
    logged_driver_env: Path,
    sftp_logged: SshdServer,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    transport: str,
) -> None:
    """The server's sftp-server is stopped, so the client's write requests (4 MiB in
    flight) stop at the channel's 2 MiB window, one of them half sent. The lease runs
    out; then the server goes on. The stream stops with ``StreamLeaseExpiredError``
    without sending another byte: the server wrote at most what had reached it before
    the lease ran out (<= the window), not the 4 MiB the requests held (the old code
    finished the half-sent request and every one queued behind it).

    Over OpenSSH the requests past the window wait in ssh's stdin pipe and its
    buffers, which ssh sends once the server wakes: the stream must cut ssh while it
    waits, as soon as its lease runs out (the old code checked only when it next had
    room, after the pipe had drained into the server: 3.5 MiB written)."""
    if transport == "openssh" and ssh_binary() is None:
        pytest.skip("no ssh client on PATH")
    monkeypatch.setenv("STACCATO_SFTP_TRANSPORT", transport)
    assert WRITE_BEHIND_BYTES >= 2 * SESSION_WINDOW_BYTES  # else nothing is held up
    temp = data_dir / "held.part"
    temp.write_bytes(b"")
    target = resolve(parse_url(sftp_logged.url(str(temp))))
    connection = POOL.acquire(target)
    server = None
    try:
        handle = connection.sftp.open_handle(str(temp), FXF_WRITE)
        server = _holder_of(temp)
        os.kill(server, signal.SIGSTOP)
        outcome: list[BaseException | None] = []

        def stream() -> None:
            try:
                with leased(HEARTBEAT_TIMEOUT_S):
                    write_at(connection.sftp, handle, 0, memoryview(os.urandom(8 * MiB)))
                outcome.append(None)
            except BaseException as err:  # noqa: BLE001 - the test inspects it
                outcome.append(err)

        thread = threading.Thread(target=stream, daemon=True)
        thread.start()
        # the lease is time-based: wait past it while the write is held up
        time.sleep(HEARTBEAT_TIMEOUT_S + 0.5)
        assert outcome[:1] != [None], "the write was not held up by the server"
        if transport == "openssh":
            # what waits in ssh's pipe would reach the server once it wakes: the
            # stream must have cut ssh by itself, before the wake
            thread.join(30)
            assert not thread.is_alive(), (
                "the stream still waited on ssh's pipe after its lease ran out"
            )
        os.kill(server, signal.SIGCONT)
        thread.join(30)
        assert not thread.is_alive(), "the stream did not stop"
        assert isinstance(outcome[0], StreamLeaseExpiredError), outcome
        kept = connection.alive()
        if kept:  # one more round trip: the server has carried out every request before it
            connection.sftp.stat(str(temp))
        else:
            assert _gone(server, 30), "the server's sftp-server did not end"
        written = temp.stat().st_size
        assert written <= SESSION_WINDOW_BYTES, (
            f"the server wrote {written} bytes: requests were completed after the lease ran out"
        )
        assert not kept, "the connection with a half-sent request was kept for reuse"
    finally:
        if server is not None:
            try:
                os.kill(server, signal.SIGCONT)
            except ProcessLookupError:
                pass
        POOL.release(connection)


def test_a_socket_send_after_the_lease_cuts_the_connection() -> None:
    """At the socket (what paramiko's packetizer calls from the stream's thread): a
    send after the lease ran out raises, sends nothing and shuts the socket down (the
    peer reads EOF after the bytes sent before), so a half-sent SSH packet is never
    completed; outside a stream (no fence) sends go through."""
    ours, peer = socket.socketpair()
    try:
        ours.settimeout(0.1)
        peer.settimeout(10)
        sock = BufferedSocket(ours)
        assert sock.send(b"before") == 6  # no fence here
        with leased(HEARTBEAT_TIMEOUT_S) as lease:
            assert lease is not None
            assert sock.send(b"fresh") == 5
            lease.renewed -= HEARTBEAT_TIMEOUT_S  # as if frozen for the whole timeout
            with pytest.raises(StreamLeaseExpiredError):
                sock.send(b"late")
        assert sock.cut_off
        received = b""
        while chunk := peer.recv(1024):
            received += chunk
        assert received == b"beforefresh"
    finally:
        ours.close()
        peer.close()


def test_a_send_that_waited_for_a_full_socket_checks_the_fence_again() -> None:
    """A send that finds the socket full waits until it is writable and checks the
    fence after the wait, before it sends: a lease lost during that wait (here: the
    fence fails once the peer starts reading) sends nothing and cuts the socket; the
    peer reads every byte sent before and none of the late send."""
    ours, peer = socket.socketpair()
    try:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        ours.settimeout(0.1)
        sock = BufferedSocket(ours)
        before = 0
        while True:  # fill it (no fence here)
            try:
                sent = ours.send(b"x" * 65536)
            except TimeoutError:
                break
            before += sent
        lost = threading.Event()  # set once the send waits: the lease ran out meanwhile

        def fence() -> None:
            if lost.is_set():
                raise StreamLeaseExpiredError("lease lost while the socket was full")

        outcome: list[BaseException | int] = []

        def late() -> None:
            with write_fence_hook(fence):
                try:
                    outcome.append(sock.send(b"late"))
                except BaseException as err:  # noqa: BLE001
                    outcome.append(err)

        ours.settimeout(60)  # the send's wait lasts until the peer drains
        thread = threading.Thread(target=late)
        thread.start()
        deadline = time.monotonic() + 30
        while not _waits_in_poll(thread) and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _waits_in_poll(thread), f"the send did not wait for the full socket: {outcome}"
        lost.set()
        peer.settimeout(10)
        received = b""
        while chunk := peer.recv(65536):  # drains; EOF once the send cut the socket
            received += chunk
        thread.join(10)
        assert not thread.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], StreamLeaseExpiredError), outcome
        assert sock.cut_off
        assert received == b"x" * before
    finally:
        ours.close()
        peer.close()


def _waits_in_poll(thread: threading.Thread) -> bool:
    """Whether ``thread`` is inside a ``poll``/``ppoll`` system call now (x86-64 and
    arm64 numbers, from ``/proc/self/task/TID/syscall``)."""
    try:
        text = Path(f"/proc/self/task/{thread.native_id}/syscall").read_text()
    except OSError:
        return False
    return text.split()[0] in {"7", "271", "73"}
