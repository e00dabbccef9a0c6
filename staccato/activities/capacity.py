"""A worker process's memory budget for chunk buffers.

Each stream holds one chunk-sized buffer (``chunk_size`` bytes) while it runs. A worker
runs many streams in threads of a few processes
(:mod:`staccato.workers.threaded_pool`), so the buffers, not the streams, are what
fills its memory: each process gets an equal share of the worker's memory cap
(``STACCATO_WORKER_MEMORY_BYTES``, :meth:`staccato.settings.Settings.buffer_budget_bytes`),
and a stream reserves its buffer against that share before it allocates it. One that
cannot waits, heartbeating (its transfer's status says "waiting for worker capacity").

Order: waiting streams are served by lane (a transfer's first stream before any
transfer's second), then first come first served, so with many transfers each gets
a stream going before any gets its second. A request larger than the whole share is
granted when nothing else is reserved (it could never fit otherwise), with a warning
in the worker's log: the worker may then hold one such buffer per process, above the
cap (tester74: two 512 MiB-chunk transfers under a 1.2 GiB cap peaked at 2.4 GiB).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import threading
from collections.abc import Callable, Iterator

from staccato import units

#: seconds between the waiting stream's calls of its ``wait`` callback (heartbeats)
WAIT_SLICE_S = 0.5


log = logging.getLogger("staccato.capacity")


def over_share_message(nbytes: int, capacity: int) -> str:
    """The warning for a chunk buffer of ``nbytes`` larger than its process's whole
    share ``capacity`` (bytes): it runs alone in the process, and the worker may then
    hold one such buffer per process, above ``STACCATO_WORKER_MEMORY_BYTES``."""
    return (
        f"a chunk buffer of {units.size(nbytes)} is larger than this activity process's "
        f"whole share of STACCATO_WORKER_MEMORY_BYTES ({units.size(capacity)}): it runs "
        "alone in the process, and the worker may hold one such buffer per process, "
        "above the cap; use a smaller --chunk-size, or raise the cap"
    )


class MemoryBudget:
    """Bytes of buffers the streams of one process may hold at once.

    Args:
        capacity: bytes.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._changed = threading.Condition()
        self._queue: list[tuple[int, int]] = []  # (lane, arrival) of the waiting streams
        self._arrivals = itertools.count()

    def _fits(self, nbytes: int) -> bool:
        return self.used + nbytes <= self.capacity or self.used == 0

    @contextlib.contextmanager
    def reserved(self, nbytes: int, lane: int, wait: Callable[[str], None]) -> Iterator[None]:
        """Hold ``nbytes`` of the budget for the block; while they are not free, call
        ``wait(reason)`` every :data:`WAIT_SLICE_S` (it heartbeats; it may raise to
        stop waiting, e.g. on a cancel)."""
        ticket = (lane, next(self._arrivals))
        with self._changed:
            heapq.heappush(self._queue, ticket)
        try:
            while True:
                with self._changed:
                    if self._queue[0] == ticket and self._fits(nbytes):
                        heapq.heappop(self._queue)
                        self.used += nbytes
                        self._changed.notify_all()
                        if nbytes > self.capacity:
                            log.warning(over_share_message(nbytes, self.capacity))
                        break
                    self._changed.wait(WAIT_SLICE_S)
                    reason = (
                        f"waiting for worker capacity: chunk buffers "
                        f"{units.size(self.used)} of {units.size(self.capacity)} in use in "
                        f"its worker process, {units.counted(len(self._queue), 'stream')} waiting "
                        "(STACCATO_WORKER_MEMORY_BYTES)"
                    )
                wait(reason)
        except BaseException:
            with self._changed:
                if ticket in self._queue:
                    self._queue.remove(ticket)
                    heapq.heapify(self._queue)
                    self._changed.notify_all()
            raise
        try:
            yield
        finally:
            with self._changed:
                self.used -= nbytes
                self._changed.notify_all()


_budget: MemoryBudget | None = None


def install_budget(capacity: int) -> None:
    """Give this process its budget (the worker's pool initializer does)."""
    global _budget
    _budget = MemoryBudget(capacity)


def reserved(
    nbytes: int, lane: int, wait: Callable[[str], None]
) -> contextlib.AbstractContextManager[None]:
    """:meth:`MemoryBudget.reserved` of this process's budget; no budget (outside a
    worker's pool): nothing to wait for."""
    budget = _budget
    return budget.reserved(nbytes, lane, wait) if budget is not None else contextlib.nullcontext()
