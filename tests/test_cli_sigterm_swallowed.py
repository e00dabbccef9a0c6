"""SIGTERM to a command whose coroutine swallows the cancel (Python 3.11's
``asyncio.wait_for`` does when the awaited call ends as the cancel comes, gh-86296:
the client's connect to Temporal is awaited so). ci66: ``cp -r -q`` signalled the
moment it connected went on following its dataset and did not exit within 60 s.
The command must still end, 143, whatever swallowed the first cancel. A real signal
to this process, a real event loop."""

from __future__ import annotations

import asyncio
import os
import signal
import threading

import pytest
import typer

from staccato.cli import common


async def _swallows_the_first_cancel() -> str:
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        pass  # swallowed, as wait_for's race does
    await asyncio.sleep(60)  # goes on: a second cancel must end it
    return "went on"


def test_sigterm_ends_a_command_whose_first_cancel_was_swallowed() -> None:
    common._terminated.clear()
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        with pytest.raises(typer.Exit) as ended:
            common.run(_swallows_the_first_cancel)
    finally:
        timer.cancel()
        common._terminated.clear()
    assert ended.value.exit_code == common.EXIT_TERMINATED
