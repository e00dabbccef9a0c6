"""What each process a worker spawns (its activity processes and its multiprocessing
manager) runs first: it ties its life to the worker's, so a killed worker (SIGKILL,
the OOM killer) leaves no process behind, and none that could go on writing a
destination while Temporal retries its stream elsewhere.

On Linux the process asks the kernel to SIGKILL it when its parent dies
(``PR_SET_PDEATHSIG``, prctl(2)). Three traps, each handled here:

- The request takes effect when the child makes it, not at the spawn: a worker killed
  before that (while its pool starts, or while it rebuilds one) never signals the
  child. Such a child would wait forever on the pool's call queue, whose write end it
  holds itself (it lived on for more than 20 minutes). So after the request the child
  compares ``getppid()`` with the pid of the process that spawned it, and exits if
  they differ: the parent died first.
- A spawned child imports whatever unpickling its target and arguments needs before
  it runs any of it. This module and the pool's entry
  (:mod:`staccato.workers.threaded_pool`) import the standard library only, and the
  rest (temporalio, pydantic, the drivers: seconds on a loaded machine) is imported
  after the lifeline is set, so an orphan exits within a second or two, not after its
  imports.
- The "parent" is the thread that spawned the child, not its process: when that
  thread exits, the child is killed though the worker lives. The worker spawns its
  processes from the thread that builds the pool (its event loop's), which lives as
  long as the worker.

Elsewhere (no prctl), and if the request fails, a thread of the child waits on
multiprocessing's parent sentinel (a pipe whose other end only the parent holds) and
ends the process when it closes.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import pickle
import signal
import sys
import threading
from collections.abc import MutableMapping
from typing import Any

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent() -> None:
    """Arrange for this process to end when the process that spawned it does (see
    the module), and leave SIGINT and SIGTERM to the worker: a signal sent to the whole
    process group must not kill a stream mid-chunk; the worker's graceful shutdown
    cancels it. Ends this process at once if its parent is already gone. A no-op for
    the lifeline in a process not started by :mod:`multiprocessing`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    armed = False
    if sys.platform.startswith("linux"):
        try:
            armed = ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent.pid:  # reparented: the parent died before the prctl
        os._exit(1)
    if not armed:
        threading.Thread(target=_end_with, args=(parent,), name="parent-watch", daemon=True).start()


def _end_with(parent: multiprocessing.process.BaseProcess) -> None:
    parent.join()  # returns when the parent's end of the sentinel pipe closes: it died
    os._exit(1)


#: a proxy of the worker's manager registered in this process for its whole life
#: (:func:`hold_manager_registration`)
_registered: Any = None


def hold_manager_registration(proxy: Any) -> None:
    """Keep a registered copy of ``proxy`` (a proxy of an object of the worker's
    multiprocessing manager that nothing else in the process holds a proxy of) for the
    process's life, so its set of registered proxies of that manager never empties
    (the set holds referents' ids: a collected copy of a proxy the process holds
    elsewhere would take its id out).

    ``multiprocessing`` closes a thread's connection to a manager when the process
    holds no more registered proxies of it (``BaseProxy._decref``: "no more proxies
    so closing conn"), in whichever thread drops the last one, and a garbage
    collection can run that in the middle of another call of the same thread, whose
    connection is then closed under it: the call fails "TypeError: 'NoneType' object
    cannot be interpreted as an integer" (ci66 in a heartbeat send, ci68 in the
    pacer's board: transfers failed as internal errors). The proxies a spawned process
    gets in its initializer's arguments are not registered (unpickled while the
    process bootstraps, ``RebuildProxy`` skips the incref), so the set held only the
    proxies Temporal passes with each activity (its heartbeat queue, cancel events),
    and emptied whenever the last of those was collected. A copy unpickled now is
    registered, and kept."""
    global _registered
    _registered = pickle.loads(pickle.dumps(proxy))


def start_activity_process(
    rate_board: MutableMapping[str, float],
    buffer_budget: int,
    flags: Any = None,
    registration: Any = None,
) -> None:
    """The initializer of each activity process: :func:`die_with_parent`, its open-files
    limit raised (:func:`raise_open_files_limit`), then URL
    secrets scrubbed from log lines, the worker's rate board for the streams' pacing
    (:mod:`staccato.activities.pacing`), the process's memory budget for chunk
    buffers (bytes, :mod:`staccato.activities.capacity`), the worker's shared array
    of cancel events (:mod:`staccato.workers.flags`; None: none), a proxy of a
    manager object of its own that it keeps registered
    (:func:`hold_manager_registration`; None: none), and every driver
    imported before the process's activity threads start
    (:func:`staccato.endpoints.import_drivers` says why)."""
    die_with_parent()
    raise_open_files_limit()
    from staccato.loading import imports_frozen

    with imports_frozen():  # ~0.15 CPU-s less per process (staccato.loading)
        from staccato.activities.capacity import install_budget
        from staccato.activities.pacing import install_board
        from staccato.endpoints import import_drivers
        from staccato.secrets import install_log_scrubber
        from staccato.workers.flags import install_flags

    install_log_scrubber()  # a library's log line may quote a URL's token
    if registration is not None:
        hold_manager_registration(registration)
    install_board(rate_board)
    install_budget(buffer_budget)
    install_flags(flags)
    import_drivers()


#: the open-files (soft) limit an activity process asks for, at most its hard limit:
#: a dataset batch to a local file system holds an fd per file staged and not yet
#: committed (up to 2 x ``GROUP_FILES``, 256) and a process may run several batches,
#: which a common soft limit of 1,024 would cut short ("Too many open files")
OPEN_FILES_WANTED = 65536


def raise_open_files_limit() -> int:
    """Raise this process's soft ``RLIMIT_NOFILE`` to :data:`OPEN_FILES_WANTED`, or to
    its hard limit when that is lower; never lowers it.

    Returns:
        The soft limit now (unchanged where the platform or the hard limit refuses).
    """
    try:
        import resource
    except ImportError:  # not POSIX
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = OPEN_FILES_WANTED if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES_WANTED)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (OSError, ValueError):
            return soft
        return wanted
    return soft


def start_manager_process() -> None:
    """The initializer of the worker's multiprocessing manager (it carries heartbeats
    and the rate board): :func:`die_with_parent`, then URL secrets scrubbed from log
    lines."""
    die_with_parent()
    from staccato.loading import imports_frozen

    with imports_frozen():
        from staccato.scrubbing import install_log_scrubber  # not secrets: no pydantic

    install_log_scrubber()
