"""``staccato.interrupts.deferred``: an interrupt asked for while a thread talks to its
worker's shared state manager (a heartbeat) is raised when that call is done, never
inside it. ci66 failed a transfer with an internal error: the hang watch (or an HTTP
request deadline) raised its exception into a thread in the middle of a heartbeat
``send`` to the manager, leaving the process's connection to it half written; the
next heartbeat failed "TypeError: 'NoneType' object cannot be interpreted as an
integer". Real threads, a real ``multiprocessing`` manager."""

from __future__ import annotations

import contextlib
import multiprocessing
import threading
import time

import pytest

from staccato import interrupts


class Interrupted(Exception):
    pass


def _run_in_thread(body: object) -> tuple[threading.Thread, dict[str, object]]:
    outcome: dict[str, object] = {}
    started = threading.Event()

    def run() -> None:
        started.set()
        try:
            outcome["value"] = body()  # type: ignore[operator]
        except BaseException as err:  # noqa: BLE001 - what the test looks at
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10)
    return thread, outcome


def test_an_interrupt_during_a_deferred_block_is_raised_when_it_ends() -> None:
    inside = threading.Event()
    release = threading.Event()
    steps: list[str] = []

    def body() -> None:
        with interrupts.deferred():
            inside.set()
            # a bounded wait in Python code, where an asynchronous exception lands
            for _ in range(1000):
                if release.is_set():
                    break
                time.sleep(0.01)
            steps.append("block done")
        steps.append("after the block")

    thread, outcome = _run_in_thread(body)
    assert inside.wait(10)
    assert thread.ident is not None
    interrupts.interrupt(thread.ident, Interrupted)
    time.sleep(0.1)  # the thread runs bytecode meanwhile: nothing is raised there
    release.set()
    thread.join(10)
    assert steps == ["block done"]
    assert isinstance(outcome.get("error"), Interrupted)


def test_a_cancelled_interrupt_is_not_raised_after_the_block() -> None:
    inside = threading.Event()
    release = threading.Event()

    def body() -> str:
        with interrupts.deferred():
            inside.set()
            assert release.wait(10)
        return "ended"

    thread, outcome = _run_in_thread(body)
    assert inside.wait(10)
    assert thread.ident is not None
    interrupts.interrupt(thread.ident, Interrupted)
    interrupts.cancel(thread.ident)
    release.set()
    thread.join(10)
    assert outcome == {"value": "ended"}


def test_manager_calls_survive_interrupts_that_land_during_them() -> None:
    """Many interrupts aimed at a thread that calls a manager's shared Event in a
    loop, each call deferred: every interrupt surfaces between calls, and the
    connection stays usable (the next call answers)."""
    with multiprocessing.Manager() as manager:
        event = manager.Event()
        raised = 0
        calls = 0
        stop = threading.Event()
        ready = threading.Event()

        def body() -> None:
            nonlocal raised, calls
            ready.set()
            deadline = time.monotonic() + 30
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    with interrupts.deferred():
                        event.is_set()
                        calls += 1
                except Interrupted:
                    raised += 1

        thread, outcome = _run_in_thread(body)
        assert ready.wait(10)
        assert thread.ident is not None
        for _ in range(200):
            if not thread.is_alive():
                break  # it failed: the outcome says how
            with contextlib.suppress(ValueError):  # it ended meanwhile
                interrupts.interrupt(thread.ident, Interrupted)
            time.sleep(0.005)
        stop.set()
        thread.join(30)
        assert "error" not in outcome, outcome
        assert raised > 0 and calls > 0
        assert event.is_set() is False  # the connection still answers


@pytest.mark.parametrize("nested", [False, True])
def test_the_outermost_block_raises(nested: bool) -> None:
    inside = threading.Event()
    release = threading.Event()
    steps: list[str] = []

    def body() -> None:
        with interrupts.deferred():
            if nested:
                with interrupts.deferred():
                    inside.set()
                    assert release.wait(10)
                steps.append("inner done")
            else:
                inside.set()
                assert release.wait(10)
            steps.append("outer done")

    thread, outcome = _run_in_thread(body)
    assert inside.wait(10)
    assert thread.ident is not None
    interrupts.interrupt(thread.ident, Interrupted)
    release.set()
    thread.join(10)
    assert isinstance(outcome.get("error"), Interrupted)
    assert steps == (["inner done", "outer done"] if nested else ["outer done"])
