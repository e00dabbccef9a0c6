"""This process's SFTP connections for the ``sftp`` endpoint (:data:`POOL`), and
:func:`run`, which runs an idempotent operation on a pooled connection and once more on
a fresh one if a reused connection turns out to be dead.

One connection per (host, port, user, known_hosts name) and thread in use, shared by
that thread's readers and writers (why: :mod:`staccato.endpoints.sftp.connection`); an
idle one (no lease holds it) passes to the next thread of the process that wants one
(:meth:`Pool._adopt_idle`) rather than that thread opening another. Each
holds a slot (:mod:`staccato.endpoints.sftp.slots`); a reaper thread closes idle ones
after ``STACCATO_SFTP_IDLE_TIMEOUT_S`` or at once when another process waits for a slot.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from staccato import interrupts, settings
from staccato.endpoints.sftp.connection import (
    Connection,
    connect,
    guarded,
    is_connection_error,
)
from staccato.endpoints.sftp.protocol import StaccatoSFTP
from staccato.endpoints.sftp.slots import acquire_slot, wanted_since
from staccato.endpoints.sftp.ssh import SSHHost

log = logging.getLogger("staccato.sftp")
T = TypeVar("T")

_REAPER_INTERVAL_S = 0.2


class Pool:
    """This process's connections, one per (host, port, user); idle ones are closed by
    a reaper thread when another process waits for a slot or after the idle timeout."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # key: the target's (host, port, user, known_hosts name) and the thread: a
        # connection is not safe for two threads at once (responses are read by the
        # caller), and a worker runs streams in threads of its processes
        self._connections: dict[tuple[tuple[str, int, str, str], int], Connection] = {}
        self._reaper: threading.Thread | None = None

    @contextmanager
    def lease(self, target: SSHHost) -> Iterator[Connection]:
        """A connection for ``target``, shared by this process's users of that target;
        errors inside the block are classified by :func:`guarded`."""
        connection = self.acquire(target)
        try:
            with guarded(connection):
                yield connection
        finally:
            self.release(connection)

    def acquire(self, target: SSHHost) -> Connection:
        """The cached connection for ``target`` or a new one (waiting for a slot);
        give it back with :meth:`release`."""
        with self._lock:
            key = (target.key, threading.get_ident())
            existing = self._connections.get(key)
            if existing is not None:
                if existing.alive():
                    existing.users += 1
                    existing.leases += 1
                    _interruptible(existing)
                    return existing
                if existing.users == 0:
                    self._connections.pop(key, None)
                    existing.close()
            adopted = self._adopt_idle(target, key)
            if adopted is not None:
                _interruptible(adopted)
                return adopted
        slot = acquire_slot(target)
        try:
            connection = connect(target, slot)
        except BaseException:
            slot.release()
            raise
        with self._lock:
            connection.users = 1
            connection.leases = 1
            replaced = self._connections.get(key)
            self._connections[key] = connection
            self._start_reaper()
        if replaced is not None and replaced.users == 0:
            replaced.close()
        return connection

    def _adopt_idle(
        self, target: SSHHost, key: tuple[tuple[str, int, str, str], int]
    ) -> Connection | None:
        """An idle live connection to ``target`` that another thread of this process
        cached, moved to this thread's ``key`` (caller holds the lock); None if none.

        Why: activities run on whichever of a process's threads is free
        (:mod:`staccato.workers.threaded_pool`), so a tuned copy's next segment (one
        ``copy_stream`` per ~64 MiB) mostly lands on another thread than the last one;
        keyed by thread alone, it opened a connection of its own (an ``ssh`` process,
        key exchange, authentication: 37 logins for a 20-segment 1 GiB copy,
        ``bench/bench_segcost.py``) and, at the per-host cap, waited for another
        process to close its idle one. Handing over an idle connection keeps the rule
        that a connection serves one thread at a time: ``users == 0`` means no lease,
        reader or writer holds it, so no request of another thread is in flight on it.
        Counted as reused (``leases``), so :func:`run` retries once on a fresh one if
        it died while idle."""
        for other_key, other in list(self._connections.items()):
            if other_key[0] != target.key or other_key == key or other.users:
                continue
            if not other.alive():
                continue  # the reaper closes it
            # this thread's own entry, if any, is a dead one still in use (the caller
            # closed an idle dead one): its last release closes it
            del self._connections[other_key]
            self._connections[key] = other
            other.users = 1
            other.leases += 1
            return other
        return None

    def release(self, connection: Connection) -> None:
        """Give a connection back; a broken one is closed (its slot freed) at once."""
        with self._lock:
            connection.users -= 1
            if connection.users > 0:
                return
            connection.idle_since = time.time()
            if connection.alive():
                return
            for key, cached in list(self._connections.items()):
                if cached is connection:
                    del self._connections[key]
        connection.close()

    def discard(self, target: SSHHost) -> None:
        """Close the cached connection to ``target`` if nobody uses it."""
        with self._lock:
            key = (target.key, threading.get_ident())
            connection = self._connections.get(key)
            if connection is None or connection.users:
                return
            del self._connections[key]
        connection.close()

    def _start_reaper(self) -> None:
        if self._reaper is None or not self._reaper.is_alive():
            self._reaper = threading.Thread(
                target=self._reap_forever, name="staccato-sftp-reaper", daemon=True
            )
            self._reaper.start()

    def _reap_forever(self) -> None:
        while True:
            time.sleep(_REAPER_INTERVAL_S)
            try:
                self._reap()
            except Exception:  # never let the reaper die
                log.exception("sftp connection reaper")

    def _reap(self) -> None:
        idle_timeout = settings.current().sftp_idle_timeout_s
        now = time.time()
        closing: list[Connection] = []
        with self._lock:
            for key, connection in list(self._connections.items()):
                if connection.users:
                    continue
                if (
                    not connection.alive()
                    or now - connection.idle_since > idle_timeout
                    or wanted_since(connection.slot.directory) > connection.idle_since
                ):
                    del self._connections[key]
                    closing.append(connection)
        for connection in closing:
            connection.close()

    def close_all(self) -> None:
        with self._lock:
            connections = list(self._connections.values())
            self._connections.clear()
        for connection in connections:
            connection.close()


def _interruptible(connection: Connection) -> None:
    """Register ``connection``'s TCP socket (paramiko's transport; an OpenSSH
    transport has none) with the calling thread only, so the stream guard's
    :func:`staccato.interrupts.interrupt` of this thread shuts it down: a connection
    is registered by the thread that opened it, and that registration ends with the
    activity (``forget_sockets``), so a connection cached for a later activity, of
    this thread or another (:meth:`Pool._adopt_idle`), is registered again; and an
    interrupt of the thread that used it before no longer shuts it down."""
    sock = getattr(connection.transport, "sock", None)
    sock = getattr(sock, "_sock", sock)  # inside protocol.BufferedSocket
    if isinstance(sock, socket.socket):
        interrupts.claim_socket(sock)


POOL = Pool()


def run(target: SSHHost, fn: Callable[[StaccatoSFTP], T]) -> T:
    """Run ``fn`` (an idempotent operation) on a pooled connection; if a *reused*
    connection turns out to be dead (e.g. the server restarted while it sat idle), run
    it once more on a fresh one."""
    for attempt in (1, 2):
        with POOL.lease(target) as connection:
            reused = connection.leases > 1
            try:
                return fn(connection.sftp)
            except BaseException as err:
                if attempt == 1 and reused and (is_connection_error(err) or not connection.alive()):
                    connection.broken = True
                    continue
                raise
    raise AssertionError("unreachable")
