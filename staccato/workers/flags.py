"""Cancel events shared with the activity processes as bytes of shared memory.

Temporal gives each activity run in a process pool a cancel event made by the shared
state manager: a proxy of a ``threading.Event`` living in the worker's multiprocessing
manager process. Each one costs connections to that manager (an HMAC challenge both
ways and a new server thread each): two to create it, one when the activity process
unpickles it, one when that process drops it, one when the worker drops it, and every
``is_set()`` (each heartbeat asks it) is a round trip. For a dataset's batches of small
files that was ~10 % of the worker's CPU (py-spy, 10,000 files).

:class:`FlagEvents` instead keeps one byte per event in an array of shared memory
(``RawArray``) that every activity process inherits when it is spawned (the pool's
initializer: :func:`install_flags`): setting, clearing and reading an event is a
memory access in either process; nothing is created per activity but a slot number.
A slot is given back when the worker's event object is garbage (Temporal keeps it
while its activity runs); when every slot is taken, Temporal's manager event is used.
"""

from __future__ import annotations

import threading
import time
import weakref
from multiprocessing.context import BaseContext
from typing import Any

#: events in flight at once at most (activities running in the pool, and the worker's
#: shutdown event); beyond, the manager's events are used
SLOTS = 4096
#: seconds between two looks at the flag while ``wait`` waits
_WAIT_STEP_S = 0.02

_flags: Any = None  # this activity process's view of the array (install_flags)


def install_flags(array: Any) -> None:
    """Remember the pool's shared array in this activity process (its initializer)."""
    global _flags
    _flags = array


class FlagEvent:
    """A ``threading.Event`` whose state is byte ``slot`` of a shared array: what
    Temporal's activity cancellation uses (``set``, ``is_set``, ``wait``), also
    ``clear``. Pickled as its slot, unpickled in an activity process onto that
    process's array (:func:`install_flags`)."""

    def __init__(self, array: Any, slot: int) -> None:
        self._array = array
        self.slot = slot

    def is_set(self) -> bool:
        return bool(self._array[self.slot])

    def set(self) -> None:
        self._array[self.slot] = 1

    def clear(self) -> None:
        self._array[self.slot] = 0

    def wait(self, timeout: float | None = None) -> bool:
        """Whether the event is set, waiting up to ``timeout`` seconds (None: until it
        is) for it to be."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            if deadline is None:
                time.sleep(_WAIT_STEP_S)
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(_WAIT_STEP_S, left))
        return True

    def __reduce__(self) -> tuple[Any, tuple[int]]:
        return (_in_activity_process, (self.slot,))


def _in_activity_process(slot: int) -> FlagEvent:
    """A :class:`FlagEvent` unpickled in an activity process.

    Raises:
        RuntimeError: this process has no array (not a pool process of the worker).
    """
    if _flags is None:
        raise RuntimeError("a shared cancel event reached a process without the flags array")
    return FlagEvent(_flags, slot)


class FlagEvents:
    """The worker's side: the shared array (hand :attr:`array` to the pool's
    initializer) and its free slots.

    Args:
        context: the pool's multiprocessing context (the array is made from it).
        slots: events at most at once.
    """

    def __init__(self, context: BaseContext, slots: int = SLOTS) -> None:
        self.array = context.RawArray("B", slots)  # type: ignore[attr-defined]
        self._free = list(range(slots - 1, -1, -1))
        self._lock = threading.Lock()

    def new_event(self) -> FlagEvent | None:
        """A cleared event, or None when every slot is taken. Its slot is free again
        once the returned object is garbage."""
        with self._lock:
            if not self._free:
                return None
            slot = self._free.pop()
        self.array[slot] = 0
        event = FlagEvent(self.array, slot)
        weakref.finalize(event, self._release, slot)
        return event

    def _release(self, slot: int) -> None:
        with self._lock:
            self._free.append(slot)

    def free(self) -> int:
        """Slots free now."""
        with self._lock:
            return len(self._free)
