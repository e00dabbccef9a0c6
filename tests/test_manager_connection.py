"""An activity process's connection to the worker's multiprocessing manager is never
closed under a call in progress (``staccato.workers.lifeline.hold_manager_registration``).

``multiprocessing`` closes a thread's connection to a manager when the process holds no
more registered proxies of it, in whichever thread drops the last one; a garbage
collection that runs inside another call of that thread closes the connection under
it. ci66 and ci68 failed transfers as internal errors so ("TypeError: 'NoneType'
object cannot be interpreted as an integer", in a heartbeat send and in the pacer's
board). The proxies a spawned process gets in its initializer's arguments are not
registered, so in an activity process the set emptied whenever the last per-activity
proxy was collected. Here: a real manager, a real spawned process; the collection is
made to run inside the call (pickling its argument collects a registered copy left in
a reference cycle, as a finished activity's proxies in its traceback are)."""

from __future__ import annotations

import gc
import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.managers import SyncManager
from typing import Any

import pytest

from staccato.workers import lifeline

_board: Any = None


def _start(board: Any, registration: Any) -> None:
    global _board
    _board = board
    if registration is not None:
        lifeline.hold_manager_registration(registration)


class _CollectsWhenPickled:
    """An argument whose pickling runs a garbage collection (inside the call's send)."""

    def __reduce__(self) -> tuple[Any, ...]:
        gc.collect()
        return (int, (0,))


def _call_while_a_copy_is_collected() -> str:
    global _board
    if _board is None:  # started as the worker starts its activity processes
        from staccato.activities import pacing

        _board = pacing._board
    copy = pickle.loads(pickle.dumps(_board))  # registered, like an activity's proxies
    cycle: list[Any] = [copy]
    cycle.append(cycle)  # garbage only a collection frees
    del copy, cycle
    _board["opened"] = 1.0  # this thread's connection to the manager
    try:
        _board.get(_CollectsWhenPickled())
    except TypeError as err:
        return f"TypeError: {err}"
    return "answered"


@pytest.mark.parametrize("start", ["worker", "unheld"])
def test_a_collection_inside_a_call_leaves_its_connection_open(start: str) -> None:
    """``worker``: the process started as the worker starts its activity processes
    (``lifeline.start_activity_process`` with the worker's arguments); ``unheld``:
    with the board alone, as before."""
    hold = start == "worker"
    context = multiprocessing.get_context("spawn")  # as the worker's pool
    manager = SyncManager(ctx=context)
    manager.start()
    try:
        board = manager.dict()
        initializer: Any = lifeline.start_activity_process if hold else _start
        initargs = (board, 1 << 20, None, manager.dict()) if hold else (board, None)
        with ProcessPoolExecutor(
            1, mp_context=context, initializer=initializer, initargs=initargs
        ) as pool:
            outcome = pool.submit(_call_while_a_copy_is_collected).result(timeout=120)
    finally:
        manager.shutdown()
    if hold:
        assert outcome == "answered", outcome
    else:
        # what multiprocessing does without the held registration: the fault itself
        assert outcome.startswith("TypeError: 'NoneType' object cannot be interpreted"), outcome
