"""The SFTP connection pool across a process's threads (``staccato.endpoints.sftp.pool``).

Activities run on whichever thread of a worker process is free, so a tuned copy's
segments (one ``copy_stream`` each) and its verify parts mostly land on a thread
other than the last one's. What matters: an idle connection serves the next thread
instead of that thread logging in again (counted at a real sshd, in its log: before,
every new thread opened a connection of its own, 37 logins for a 20-segment copy),
and a connection in use by one thread is never handed to another.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from staccato import interrupts
from staccato.endpoints.sftp.connection import Connection
from staccato.endpoints.sftp.pool import POOL
from staccato.endpoints.sftp.ssh import resolve
from staccato.urls import parse_url
from tests.servers.sshd import SshdServer


def _logins(server: SshdServer) -> int:
    """Logins the sshd accepted so far (it logs one before it answers the client)."""
    return server.sshd_log_path.read_text(errors="replace").count("Accepted publickey")


def _raw(connection: Connection) -> object:
    """The TCP socket of a paramiko connection (inside its read buffer)."""
    sock = connection.transport.sock
    return getattr(sock, "_sock", sock)


def _in_thread(fn) -> object:  # type: ignore[no-untyped-def]
    """``fn()`` run in a new thread, its result (or its exception raised here)."""
    out: dict[str, object] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller
            out["error"] = err

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(120)
    assert not thread.is_alive()
    if "error" in out:
        raise out["error"]  # type: ignore[misc]
    return out["value"]


def test_an_idle_connection_serves_the_next_thread(
    driver_env: Path, own_server: SshdServer, data_dir: Path
) -> None:
    """Three threads one after another, each leasing a connection and using it: one
    login at the server, the same connection each time."""
    driver_env.write_text(driver_env.read_text() + own_server.known_hosts_path.read_text())
    (data_dir / "x").write_bytes(b"x")
    target = resolve(parse_url(own_server.url(str(data_dir / "x"))))
    before = _logins(own_server)

    def use() -> Connection:
        with POOL.lease(target) as connection:
            assert connection.sftp.stat(str(data_dir / "x")).st_size == 1
            return connection

    used = [_in_thread(use) for _ in range(3)]
    assert _logins(own_server) - before == 1
    assert used[0] is used[1] is used[2]


def test_a_connection_in_use_is_not_handed_to_another_thread(
    driver_env: Path, own_server: SshdServer, data_dir: Path
) -> None:
    """While one thread holds a lease, another thread gets a connection of its own."""
    driver_env.write_text(driver_env.read_text() + own_server.known_hosts_path.read_text())
    target = resolve(parse_url(own_server.url(str(data_dir / "x"))))
    with POOL.lease(target) as held:
        other = _in_thread(lambda: POOL.acquire(target))
        try:
            assert other is not held
        finally:
            assert isinstance(other, Connection)
            POOL.release(other)


def test_a_cached_connection_is_interruptible_in_each_later_activity(
    driver_env: Path,
    own_server: SshdServer,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """paramiko's transport (a TCP socket of its own): a connection cached for a later
    activity, of the same thread or of another that takes it over, has its socket
    registered with that thread again, so the stream guard's interrupt of the thread
    shuts it down (the registration made when it opened ended with that activity:
    before, a reused connection was not registered)."""
    monkeypatch.setenv("STACCATO_SFTP_TRANSPORT", "paramiko")
    driver_env.write_text(driver_env.read_text() + own_server.known_hosts_path.read_text())
    target = resolve(parse_url(own_server.url(str(data_dir / "x"))))

    def one_activity() -> None:
        POOL.release(POOL.acquire(target))
        interrupts.forget_sockets()

    def two_activities() -> bool:
        one_activity()
        connection = POOL.acquire(target)  # the next activity of this thread
        try:
            return _raw(connection) in interrupts._sockets.get(threading.get_ident(), ())
        finally:
            POOL.release(connection)
            interrupts.forget_sockets()

    assert _in_thread(two_activities) is True

    # a thread whose activity still runs after it gave the connection back
    ready, done = threading.Event(), threading.Event()
    before: dict[str, object] = {}

    def previous_user() -> None:
        connection = POOL.acquire(target)
        before["connection"] = connection
        before["ident"] = threading.get_ident()
        POOL.release(connection)
        ready.set()
        done.wait(60)
        interrupts.forget_sockets()

    earlier = threading.Thread(target=previous_user)
    earlier.start()
    assert ready.wait(60)

    def adopt() -> bool:  # another thread takes the idle connection over
        connection = POOL.acquire(target)
        try:
            assert connection is before["connection"]
            # an interrupt of the earlier thread would not shut it down
            assert _raw(connection) not in interrupts._sockets.get(before["ident"], ())  # type: ignore[call-overload]
            return _raw(connection) in interrupts._sockets.get(threading.get_ident(), ())
        finally:
            POOL.release(connection)
            interrupts.forget_sockets()

    try:
        assert _in_thread(adopt) is True
    finally:
        done.set()
        earlier.join(60)
