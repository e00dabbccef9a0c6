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

A process frozen (SIGSTOP, a VM paused, swapped out) keeps its flocks: the other
workers of the machine then waited for its slots for as long as it stayed frozen,
though the server was fine (tester61 B: every SFTP transfer to that server stalled;
its streams' attempts had been handed to the healthy worker long before). So each
process touches the slot files it holds every :data:`TOUCH_S` seconds (a thread of
its own, which runs while the process's other threads wait for a hung server; a
frozen process's does not). A waiter that finds every slot locked and one untouched
for :data:`STALE_SLOT_S` seconds borrows it: it takes the slot's ``.stale`` companion
lock (flock, one borrower per stale slot) and connects beyond the cap, which stays at
most twice the cap while holders are frozen (a worker of a release before this one
holds without touching: its slots are borrowed after that time too). Test:
``test_a_frozen_holders_slot_is_borrowed`` in ``tests/sftp/test_sftp_cases.py``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import tempfile
import threading
import time

from staccato import settings
from staccato.endpoints import base
from staccato.endpoints.sftp.ssh import SSHHost
from staccato.errors import PermanentError, RetryableError

log = logging.getLogger("staccato.sftp")

DEFAULT_SLOT_WAIT_S = 600.0
SLOT_WAIT_WITHOUT_KEEPALIVE_S = 60.0
#: seconds between touches of the slot files a process holds
TOUCH_S = 2.0
#: seconds a locked slot file may go untouched before a waiter borrows it (its holder
#: is frozen: a live holder touches it every :data:`TOUCH_S`, also on a loaded machine)
STALE_SLOT_S = 30.0

#: slot files this process holds (paths), touched by :func:`_touch_held`
_held: set[str] = set()
_held_lock = threading.Lock()
_toucher: threading.Thread | None = None


def _touch_held() -> None:
    """Touch (mtime) every slot file this process holds, every :data:`TOUCH_S`."""
    while True:
        time.sleep(TOUCH_S)
        with _held_lock:
            paths = list(_held)
        for path in paths:
            try:
                os.utime(path)
            except OSError:
                continue


def _hold(path: str) -> None:
    """Count ``path`` as held: touched now and every :data:`TOUCH_S` until released."""
    global _toucher
    with _held_lock:
        _held.add(path)
        if _toucher is None or not _toucher.is_alive():
            _toucher = threading.Thread(target=_touch_held, name="sftp-slot-touch", daemon=True)
            _toucher.start()
    try:
        os.utime(path)
    except OSError:
        pass


def lock_dir() -> str:
    """``STACCATO_SFTP_LOCK_DIR`` or ``$TMPDIR/staccato-sftp-<uid>``."""
    return settings.current().sftp_lock_dir or os.path.join(
        tempfile.gettempdir(), f"staccato-sftp-{os.getuid()}"
    )


class Slot:
    """One of ``max_connections`` flock-ed files for a ``host:port``."""

    def __init__(self, directory: str, index: int, fd: int, path: str | None = None) -> None:
        self.directory = directory
        self.index = index
        self._fd = fd
        #: the slot file held (touched while held); None for a borrowed slot (its
        #: ``.stale`` companion is locked instead: nothing to touch)
        self.path = path
        if path is not None:
            _hold(path)

    def release(self) -> None:
        if self._fd >= 0:
            if self.path is not None:
                with _held_lock:
                    _held.discard(self.path)
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
    with contextlib.ExitStack() as waiting:
        return _acquire(target, directory, cap, wait_s, wanted, waiting)


def _acquire(
    target: SSHHost,
    directory: str,
    cap: int,
    wait_s: float,
    wanted: str,
    waiting: contextlib.ExitStack,
) -> Slot:
    """The loop of :func:`acquire_slot`; ``waiting`` holds the wait's motion context.

    Raises:
        RetryableError: none came free within ``wait_s`` seconds.
    """
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
            return Slot(directory, index, fd, path)
        borrowed = _borrow_stale(directory, cap, target)
        if borrowed is not None:
            return borrowed
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
            # waiting for our own slot, not for a hung server: the hang watch does not
            # count it, and no byte moves meanwhile (status: the slot holders, stuck on
            # a frozen server, left a dataset showing a rate; tester61 H)
            waiting.enter_context(base.moving_elsewhere())
        # Ask idle connections in other processes to let go (see Pool._reap).
        with open(wanted, "a"):
            pass
        os.utime(wanted)
        base.keepalive()
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def _borrow_stale(directory: str, cap: int, target: SSHHost) -> Slot | None:
    """A slot whose holder has not touched it for :data:`STALE_SLOT_S` (frozen),
    borrowed: its ``.stale`` companion flock-ed by this process; None when no slot is
    stale or each stale one is borrowed already."""
    now = time.time()
    for index in range(cap):
        path = os.path.join(directory, f"slot-{index}")
        try:
            untouched = now - os.stat(path).st_mtime
        except OSError:
            continue
        if untouched < STALE_SLOT_S:
            continue
        try:
            fd = os.open(f"{path}.stale", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        log.warning(
            "sftp connection slot %d to %s:%d is held by a process that has not touched "
            "it for %.0f s (frozen?): connecting beyond STACCATO_SFTP_MAX_CONNECTIONS=%d "
            "in its stead",
            index,
            target.hostname,
            target.port,
            untouched,
            cap,
        )
        return Slot(directory, index, fd)
    return None


def wanted_since(directory: str) -> float:
    try:
        return os.stat(os.path.join(directory, "wanted")).st_mtime
    except OSError:
        return 0.0
