"""Following something that runs until it ends: a dataset's or a fan-out group's
status read every few seconds (a transfer's own follow also wakes at its result:
:meth:`staccato.client.StaccatoClient.follow`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Container
from typing import Any, Protocol, TypeVar


class _HasState(Protocol):
    @property
    def state(self) -> Any: ...


S = TypeVar("S", bound=_HasState)


async def follow_until_ended(
    read: Callable[[], Awaitable[S]], ended: Container[Any], interval_s: float
) -> AsyncIterator[S]:
    """Yield ``await read()`` every ``interval_s`` seconds until its ``state`` is one
    of ``ended`` (the last one yielded is the final status)."""
    while True:
        current = await read()
        yield current
        if current.state in ended:
            return
        await asyncio.sleep(interval_s)
