"""An activity executor of processes x threads: ``processes`` spawned processes, each
running up to ``threads`` activities at once in threads.

Streams are I/O-bound (they wait on sockets and disks most of the time), so a process
per stream caps a worker at a few concurrent streams for no gain; a thread per stream
in a few processes serves hundreds, and the processes still spread the CPU work
(checksums, TLS, SSH crypto) over several cores.

It is :class:`concurrent.futures.ProcessPoolExecutor` with another function run in
its processes: all of the pool's machinery is kept (a process that dies breaks the
pool, ``BrokenProcessPool``, which the worker notices and rebuilds; shutdown; the
``initializer``), and the Temporal ``Worker`` treats it as it treats any
non-thread executor (heartbeats and cancellation through the shared state manager).
Each process takes a call off the pool's call queue only while it has a free thread,
and the busier it is the later it comes back for one, so calls spread over the
processes.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures import process as _process
from multiprocessing.context import BaseContext
from typing import Any

#: seconds per running call a process waits before it takes the next one
_BACK_OFF_S = 0.002
#: seconds a process's finishing threads get on shutdown (the pool kills it later)
_THREADS_EXIT_S = 5.0


class ThreadedProcessPool(ProcessPoolExecutor):
    """``processes`` processes x ``threads`` threads (see the module).

    Args:
        processes: processes (spawned through ``mp_context`` at once, by the calling
            thread: it must outlive the pool where the initializer asks for a
            parent-death signal).
        threads: concurrent calls per process.
        mp_context, initializer, initargs: as for ``ProcessPoolExecutor``.
    """

    def __init__(
        self,
        processes: int,
        threads: int,
        *,
        mp_context: BaseContext,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
    ) -> None:
        super().__init__(
            max_workers=processes,
            mp_context=mp_context,
            initializer=initializer,
            initargs=initargs,
        )
        self.threads = threads
        # room for every call the processes may run at once: the pool's manager thread
        # moves submitted calls into this queue only when woken (a submit, a result)
        self._call_queue = _process._SafeQueue(  # type: ignore[attr-defined]
            max_size=processes * threads + _process.EXTRA_QUEUED_CALLS,
            ctx=mp_context,
            pending_work_items=self._pending_work_items,  # type: ignore[attr-defined]
            shutdown_lock=self._shutdown_lock,  # type: ignore[attr-defined]
            thread_wakeup=self._executor_manager_thread_wakeup,  # type: ignore[attr-defined]
        )
        self._call_queue._ignore_epipe = True  # type: ignore[attr-defined]
        # all spawned here, by the thread that builds the pool, rather than on demand by
        # whichever thread submits: Linux's parent-death signal (which the processes'
        # initializer may ask for) follows the thread that spawned a process, not its
        # process, so that thread must live as long as the pool
        for _ in range(processes):
            self._spawn_process()

    def _spawn_process(self) -> None:
        process = self._mp_context.Process(  # type: ignore[attr-defined,union-attr]
            target=_threaded_worker,
            args=(
                self._call_queue,
                self._result_queue,  # type: ignore[attr-defined]
                self._initializer,  # type: ignore[attr-defined]
                self._initargs,  # type: ignore[attr-defined]
                self.threads,
            ),
        )
        process.start()
        self._processes[process.pid] = process  # type: ignore[attr-defined]


def _threaded_worker(
    call_queue: Any,
    result_queue: Any,
    initializer: Callable[..., object] | None,
    initargs: tuple[Any, ...],
    threads: int,
) -> None:
    """A pool process: run the queue's calls in up to ``threads`` threads, sending
    each result (or exception) back as ``ProcessPoolExecutor``'s own processes do;
    on the pool's shutdown sentinel (None), let the running calls finish and exit."""
    if initializer is not None:
        try:
            initializer(*initargs)
        except BaseException:
            _process._base.LOGGER.critical("Exception in initializer:", exc_info=True)  # type: ignore[attr-defined]
            return  # the pool sees the process gone and breaks
    free = threading.Semaphore(threads)
    running = ThreadPoolExecutor(threads, thread_name_prefix="activity")

    def run(call_item: Any) -> None:
        try:
            try:
                result = call_item.fn(*call_item.args, **call_item.kwargs)
            except BaseException as err:
                failure: Any = _process._ExceptionWithTraceback(err, err.__traceback__)  # type: ignore[attr-defined,arg-type]
                _process._sendback_result(result_queue, call_item.work_id, exception=failure)
            else:
                _process._sendback_result(result_queue, call_item.work_id, result=result)
        finally:
            free.release()

    while True:
        free.acquire()
        # a busy process comes back for the next call a little later than an idle one,
        # so calls spread over the processes (and their GILs)
        time.sleep(_BACK_OFF_S * (threads - free._value))  # type: ignore[attr-defined]
        call_item = call_queue.get(block=True)
        if call_item is None:
            finisher = threading.Thread(target=running.shutdown, daemon=True)
            finisher.start()
            finisher.join(_THREADS_EXIT_S)
            result_queue.put(os.getpid())  # wakes the pool's manager thread
            return
        running.submit(run, call_item)
