"""This process's SFTP connections for the ``sftp`` endpoint (:data:`POOL`), and
:func:`run`, which runs an idempotent operation on a pooled connection and once more on
a fresh one if a reused connection turns out to be dead.

One connection per (host, port, user, known_hosts name) and process, shared by that
process's readers and writers (why: :mod:`staccato.endpoints.sftp.connection`). Each
holds a slot (:mod:`staccato.endpoints.sftp.slots`); a reaper thread closes idle ones
after ``STACCATO_SFTP_IDLE_TIMEOUT_S`` or at once when another process waits for a slot.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from staccato import settings
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
                    return existing
                if existing.users == 0:
                    self._connections.pop(key, None)
                    existing.close()
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
