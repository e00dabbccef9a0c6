"""Connection slots for the ``sftp`` endpoint: at most ``STACCATO_SFTP_MAX_CONNECTIONS``
(default 4) connections per ``host:port`` at once from all processes sharing
``STACCATO_SFTP_LOCK_DIR`` (default ``$TMPDIR/staccato-sftp-<uid>``: every worker of
this user on this host).

Why a cap: OpenSSH's ``MaxStartups 10:30:100`` drops unauthenticated connections
beyond 10, and small NAS servers fall over with many sessions. A connection holds one
of N slot files locked with ``flock(2)``; the kernel releases the lock when the process
dies, even by SIGKILL. A process that finds no free slot waits, calling
:func:`staccato.endpoints.base.keepalive` so its activity keeps heartbeating, and
touches a ``wanted`` file; idle cached connections in other processes see it and close
at once (see :meth:`staccato.endpoints.sftp.pool.Pool._reap`; else after
``STACCATO_SFTP_IDLE_TIMEOUT_S``, default 10 s). ``STACCATO_SFTP_SLOT_WAIT_S`` (default
600 s, 60 s outside a heartbeating activity) bounds the wait; then the operation fails
as retryable ("all N connections busy"). Tests: ``test_connection_cap`` in
``tests/sftp/test_sftp_resilience.py``, ``test_slot_wait_is_bounded`` in
``tests/sftp/test_sftp_cases.py``.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import tempfile
import time

from staccato import settings
from staccato.endpoints import base
from staccato.endpoints.sftp.ssh import SSHHost
from staccato.errors import PermanentError, RetryableError

log = logging.getLogger("staccato.sftp")

DEFAULT_SLOT_WAIT_S = 600.0
SLOT_WAIT_WITHOUT_KEEPALIVE_S = 60.0


def lock_dir() -> str:
    """``STACCATO_SFTP_LOCK_DIR`` or ``$TMPDIR/staccato-sftp-<uid>``."""
    return settings.current().sftp_lock_dir or os.path.join(
        tempfile.gettempdir(), f"staccato-sftp-{os.getuid()}"
    )


class Slot:
    """One of ``max_connections`` flock-ed files for a ``host:port``."""

    def __init__(self, directory: str, index: int, fd: int) -> None:
        self.directory = directory
        self.index = index
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = -1


def _slot_directory(hostname: str, port: int) -> str:
    readable = re.sub(r"[^A-Za-z0-9.\-]", "_", hostname)[:60]
    digest = hashlib.sha256(f"{hostname}:{port}".encode()).hexdigest()[:12]
    return os.path.join(lock_dir(), f"{readable}_{port}_{digest}")


def acquire_slot(target: SSHHost) -> Slot:
    """Wait for a free connection slot for ``target``'s host and port.

    Raises:
        RetryableError: none came free within ``STACCATO_SFTP_SLOT_WAIT_S``.
    """
    config = settings.current()
    cap = config.sftp_max_connections
    wait_s = config.sftp_slot_wait_s or (
        DEFAULT_SLOT_WAIT_S if base.has_keepalive() else SLOT_WAIT_WITHOUT_KEEPALIVE_S
    )
    directory = _slot_directory(target.hostname, target.port)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as err:
        raise PermanentError(
            f"cannot create the sftp lock directory {directory}: {err.strerror}"
        ) from None
    wanted = os.path.join(directory, "wanted")
    deadline = time.monotonic() + wait_s
    delay = 0.02
    announced = False
    while True:
        for index in range(cap):
            path = os.path.join(directory, f"slot-{index}")
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as err:
                raise PermanentError(
                    f"cannot open the sftp connection slot {path}: {err.strerror}"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return Slot(directory, index, fd)
        if time.monotonic() > deadline:
            raise RetryableError(
                f"all {cap} sftp connections to {target.hostname}:{target.port} are busy "
                f"(STACCATO_SFTP_MAX_CONNECTIONS={cap}); waited {wait_s:.0f} s"
            )
        if not announced:
            log.info(
                "waiting for one of %d sftp connection slots to %s:%d",
                cap,
                target.hostname,
                target.port,
            )
            announced = True
        # Ask idle connections in other processes to let go (see Pool._reap).
        with open(wanted, "a"):
            pass
        os.utime(wanted)
        base.moved()  # waiting for our own slot, not for a hung server
        base.keepalive()
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def wanted_since(directory: str) -> float:
    try:
        return os.stat(os.path.join(directory, "wanted")).st_mtime
    except OSError:
        return 0.0
