"""Cancel events in shared memory (``staccato.workers.flags``): an event the worker
sets is seen by an activity process it was pickled to, and the other way round, with
no call to the multiprocessing manager; slots come back once the worker's event is
garbage; with every slot taken the manager's events are used.

End to end (a cancel reaching a running batch, a worker's shutdown reaching its
activities) is covered by ``tests/test_batch_cancel.py``,
``tests/test_dataset_cancel.py`` and ``tests/test_worker_shutdown.py``.
"""

from __future__ import annotations

import gc
import multiprocessing
import pickle
import threading
from typing import Any

from staccato.workers.flags import FlagEvent, FlagEvents, install_flags
from staccato.workers.worker import _GuardedSharedState


def _child(array: Any, events: Any, answers: Any) -> None:
    """An activity process's view: wait for the worker's cancel, then set the other."""
    install_flags(array)
    cancel, other = events.get(timeout=60)
    assert isinstance(cancel, FlagEvent) and isinstance(other, FlagEvent)
    answers.put(("before", cancel.is_set()))
    answers.put(("waited", cancel.wait(60)))
    other.set()


def test_flag_crosses_processes_both_ways() -> None:
    context = multiprocessing.get_context("spawn")
    flags = FlagEvents(context, slots=8)
    cancel, other = flags.new_event(), flags.new_event()
    assert cancel is not None and other is not None and cancel.slot != other.slot
    events, answers = context.Queue(), context.Queue()
    child = context.Process(target=_child, args=(flags.array, events, answers))
    child.start()
    try:
        events.put((cancel, other))  # pickled: slots only
        assert answers.get(timeout=60) == ("before", False)
        cancel.set()
        assert answers.get(timeout=60) == ("waited", True)
        assert other.wait(60)
    finally:
        child.join(60)
    assert child.exitcode == 0


def test_slots_come_back_and_start_cleared() -> None:
    flags = FlagEvents(multiprocessing.get_context("spawn"), slots=2)
    first = flags.new_event()
    assert first is not None
    first.set()
    slot = first.slot
    second = flags.new_event()
    assert second is not None and flags.new_event() is None  # all taken
    del first
    gc.collect()
    again = flags.new_event()
    assert again is not None and again.slot == slot and not again.is_set()
    assert not again.wait(0.05)


def test_pickled_event_needs_the_array() -> None:
    flags = FlagEvents(multiprocessing.get_context("spawn"), slots=1)
    event = flags.new_event()
    install_flags(None)
    try:
        pickle.loads(pickle.dumps(event))
    except RuntimeError:
        pass
    else:
        raise AssertionError("unpickled without an array")


class _Manager:
    """Stands in for Temporal's manager-backed state (counts its events)."""

    def __init__(self) -> None:
        self.made = 0

    def new_event(self) -> threading.Event:
        self.made += 1
        return threading.Event()


def test_shared_state_uses_flags_then_the_manager() -> None:
    manager = _Manager()
    flags = FlagEvents(multiprocessing.get_context("spawn"), slots=2)
    state = _GuardedSharedState(manager, threading.Event(), flags)  # type: ignore[arg-type]
    try:
        kept = [state.new_event(), state.new_event()]
        assert all(isinstance(e, FlagEvent) for e in kept) and manager.made == 0
        third = state.new_event()
        assert not isinstance(third, FlagEvent) and manager.made >= 1
    finally:
        state.close()
