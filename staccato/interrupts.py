"""Interrupting a thread that is blocked in a call: the stream guard's and the HTTP
stat deadline's way to stop an activity running in a thread of a worker process.

A signal handler runs only in a process's main thread, so ``SIGUSR2``/``SIGALRM``
cannot stop an activity running in another thread. Instead :func:`interrupt`:

1. asks CPython to raise an exception in the thread at its next bytecode
   (``PyThreadState_SetAsyncExc``, the C API's documented way to do so), and
2. shuts down (``shutdown(SHUT_RDWR)``) every socket the thread registered with
   :func:`register_socket` (drivers do, through :func:`staccato.sockets.apply`), so a
   ``recv``/``send``/``select`` blocked in C returns at once and the exception is
   raised as soon as the thread is back in Python.

A call blocked in C on something else (a disk that hangs) is left until it returns;
then the exception is raised. :func:`cancel` takes back an exception not raised yet
(the guarded block ended first), so it cannot surface in the thread's next activity.

A thread holds interrupts off with :func:`deferred` while it talks to its worker's
shared state manager (a heartbeat): an exception raised mid-``send`` left the process's
manager connection half written, and every later heartbeat of the process failed
(ci66: "TypeError: 'NoneType' object cannot be interpreted as an integer" in a
heartbeat ``send``, the transfer failed as an internal error). An interrupt asked for
during the block is raised when it ends.

This module imports nothing from Staccato (drivers and activities both use it).
"""

from __future__ import annotations

import contextlib
import ctypes
import socket
import threading
import weakref
from collections.abc import Iterator

_lock = threading.Lock()
#: thread ident -> the sockets that thread registered (gone with the socket objects)
_sockets: dict[int, weakref.WeakSet[socket.socket]] = {}
#: thread ident -> the error :func:`interrupt` asked for while the thread was in a
#: :func:`deferred` block (None: none yet)
_deferring: dict[int, type[BaseException] | None] = {}

# two function pointers (item access makes a new one each time): one passes an
# exception class, the other NULL
_set_async_exc = ctypes.pythonapi["PyThreadState_SetAsyncExc"]
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)
_set_async_exc.restype = ctypes.c_int
_clear_async_exc = ctypes.pythonapi["PyThreadState_SetAsyncExc"]
_clear_async_exc.argtypes = (ctypes.c_ulong, ctypes.c_void_p)
_clear_async_exc.restype = ctypes.c_int


def register_socket(sock: socket.socket) -> None:
    """Let :func:`interrupt` of the calling thread shut ``sock`` down (a weak
    reference: a closed, collected socket drops out by itself)."""
    ident = threading.get_ident()
    with _lock:
        _sockets.setdefault(ident, weakref.WeakSet()).add(sock)


def claim_socket(sock: socket.socket) -> None:
    """Register ``sock`` with the calling thread only (as :func:`register_socket`),
    dropping it from any other thread's: a pooled connection taken over by another
    thread (``staccato.endpoints.sftp.pool``) is no longer shut down by an
    :func:`interrupt` of the thread that used it before."""
    ident = threading.get_ident()
    with _lock:
        for other, registered in _sockets.items():
            if other != ident:
                registered.discard(sock)
        _sockets.setdefault(ident, weakref.WeakSet()).add(sock)


def forget_sockets() -> None:
    """Drop the calling thread's registered sockets (its activity is over; the next
    one on this thread registers its own)."""
    with _lock:
        _sockets.pop(threading.get_ident(), None)


def interrupt(ident: int, error: type[BaseException]) -> None:
    """Raise ``error()`` (built with no arguments, in the thread) in thread ``ident`` at
    its next bytecode, and shut down the sockets it registered.

    In a :func:`deferred` block the error is raised when the block ends (the sockets
    are shut down at once).

    Raises:
        ValueError: no thread ``ident`` (it ended).
    """
    with _lock:
        held_off = ident in _deferring
        if held_off:
            _deferring[ident] = error
        registered = list(_sockets.get(ident, ()))
    if not held_off and _set_async_exc(ident, error) == 0:
        raise ValueError(f"no thread {ident}")
    for sock in registered:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # closed, or never connected


def cancel(ident: int) -> None:
    """Take back an exception :func:`interrupt` asked for that the thread has not
    raised yet (no-op otherwise)."""
    with _lock:
        if ident in _deferring:
            _deferring[ident] = None
    # a NULL exception clears the thread's pending one
    _clear_async_exc(ident, None)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold :func:`interrupt` of the calling thread off for the block (a call to the
    worker's shared state manager, which an exception raised mid-``send`` would leave
    unusable); one asked for meanwhile is raised when the block ends without an
    exception of its own. Nested blocks: the outermost decides."""
    ident = threading.get_ident()
    with _lock:
        outermost = ident not in _deferring
        if outermost:
            _deferring[ident] = None
    if not outermost:
        yield
        return
    try:
        yield
    finally:
        with _lock:
            error = _deferring.pop(ident, None)
    if error is not None:
        raise error()
