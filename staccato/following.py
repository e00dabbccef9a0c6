"""Following something that runs until it ends: a dataset's or a fan-out group's
status read every few seconds (a transfer's own follow also wakes at its result:
:meth:`staccato.client.StaccatoClient.follow`), each read going on through Temporal's
transient timeouts (:func:`read_through_timeouts`)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Container
from typing import Any, Protocol, TypeVar


class _HasState(Protocol):
    @property
    def state(self) -> Any: ...


S = TypeVar("S", bound=_HasState)
T = TypeVar("T")

#: seconds: how long a follow reads again while every read of a status times out at
#: Temporal (an overloaded server, or one stopped a while), before it gives up with
#: that timeout (a tester's `cp -r` quit with exit 1 on one slow answer at load 66
#: while its dataset ran on: tester65 T12)
TIMEOUTS_FOR_S = 60.0
#: seconds between a read that timed out and the next one
_AGAIN_AFTER_S = 1.0
#: the most reads in a row that time out (each waits at least _AGAIN_AFTER_S)
_MOST_TIMEOUTS = int(TIMEOUTS_FOR_S / _AGAIN_AFTER_S) + 1


def rpc_timed_out(err: BaseException | None) -> bool:
    """Whether ``err`` is a Temporal call that did not answer in time (a
    ``temporalio.service.RPCError`` with status ``DEADLINE_EXCEEDED``, or whose
    message says it timed out, e.g. "Timeout expired"). The one rule of what a
    follow reads again and of how the CLI words such a failure. Imports nothing: an
    RPCError exists only once ``temporalio.service`` is loaded."""
    service = sys.modules.get("temporalio.service")
    if service is None or not isinstance(err, service.RPCError):
        return False
    detail = err.message or err.status.name
    return err.status == service.RPCStatusCode.DEADLINE_EXCEEDED or "timeout" in detail.lower()


async def read_through_timeouts(
    read: Callable[[], Awaitable[T]], *, for_s: float = TIMEOUTS_FOR_S
) -> T:
    """``await read()``, read again (1 s apart) while it fails because Temporal did
    not answer in time (:func:`rpc_timed_out`), for at most ``for_s`` seconds of such
    failures in a row (and :data:`_MOST_TIMEOUTS` reads); then that last timeout is
    raised (the CLI's message for it says so). Any other error is raised at once
    (Temporal unavailable, e.g. after ``staccato down``: no wait).

    Raises:
        Exception: what ``read`` raised last.
    """
    first_timeout: float | None = None
    for _ in range(_MOST_TIMEOUTS):
        try:
            return await read()
        except Exception as err:
            if not rpc_timed_out(err):
                raise
            now = time.monotonic()
            if first_timeout is None:
                first_timeout = now
            if now - first_timeout >= for_s:
                raise
        await asyncio.sleep(_AGAIN_AFTER_S)
    return await read()  # the last one: what it raises is raised


async def follow_until_ended(
    read: Callable[[], Awaitable[S]], ended: Container[Any], interval_s: float
) -> AsyncIterator[S]:
    """Yield ``await read()`` every ``interval_s`` seconds until its ``state`` is one
    of ``ended`` (the last one yielded is the final status); a read that times out at
    Temporal is read again for a while (:func:`read_through_timeouts`)."""
    while True:
        current = await read_through_timeouts(read)
        yield current
        if current.state in ended:
            return
        await asyncio.sleep(interval_s)
