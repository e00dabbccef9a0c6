"""The rate board: each running stream's share of its governors' ``max_rate``.

A governor (:mod:`staccato.workflows.governor`) divides its ``max_rate`` equally
among the streams its holders were granted (query ``rates``: ticket -> bytes per
second per stream). The worker's main process has the Temporal client; its activity
processes, where the streams read, do not. So :class:`RateBoard` (in the main
process):

* records, through a worker interceptor, which slot tickets and governors the
  ``copy_stream``, ``stage_source``, ``copy_batch`` and ``copy_batch_to_many`` (a
  dataset's batch of small files: one stream, its ticket its ``key``) attempts running on this worker have
  (from their input);
* every :data:`TICK_S` asks each of those governors once (a query: no history
  event) and writes ticket -> the lowest per-stream rate of its governors into a dict
  shared with the activity processes through the worker's multiprocessing manager
  (:mod:`staccato.activities.pacing` reads it).

A cap changed with ``staccato limit set`` thus reaches running streams within
``TICK_S`` + the pacer's refresh (about 1.5 s). A governor that cannot be asked (it
ended, the server is away) leaves the last rate in place until the next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, MutableMapping
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from staccato.datasets.models import BatchInput, FanOutBatchInput
from staccato.links import governor_id
from staccato.models import StageInput, StreamInput
from staccato.workflows.governor import RATES_QUERY

log = logging.getLogger("staccato.rates")

#: seconds between two rounds of questions to the governors
TICK_S = 1.0
STREAM_ACTIVITY = "copy_stream"
#: the activities whose reads are paced (a copy stream, the staging read, a dataset's
#: batch of small files)
PACED_ACTIVITIES = frozenset({STREAM_ACTIVITY, "stage_source", "copy_batch", "copy_batch_to_many"})


class RateBoard:
    """Publishes the per-stream rates of the streams running on this worker.

    Args:
        client: the worker's client.
        board: returns the current shared dict (the worker replaces it when it
            rebuilds its manager), or None while there is none.
    """

    def __init__(
        self, client: Client, board: Callable[[], MutableMapping[str, float] | None]
    ) -> None:
        self._client = client
        self._board = board
        # ticket -> (governors, streams of it running here)
        self._tickets: dict[str, tuple[tuple[str, ...], int]] = {}
        self._new = asyncio.Event()  # a ticket arrived: publish now

    @contextlib.contextmanager
    def _running(self, ticket: str, governors: tuple[str, ...]) -> Any:
        _, count = self._tickets.get(ticket, (governors, 0))
        self._tickets[ticket] = (governors, count + 1)
        if count == 0:
            self._new.set()
        try:
            yield
        finally:
            _, count = self._tickets[ticket]
            if count <= 1:
                del self._tickets[ticket]
            else:
                self._tickets[ticket] = (governors, count - 1)

    def interceptor(self) -> Interceptor:
        return _Interceptor(self)

    async def rates(self) -> dict[str, float]:
        """Ticket -> bytes per second per stream (``inf``: none of its governors has
        a ``max_rate``), for the tickets running here whose governors all answered."""
        names = sorted({n for governors, _ in self._tickets.values() for n in governors})

        async def ask(name: str) -> dict[str, float] | None:
            try:
                return await self._client.get_workflow_handle(governor_id(name)).query(
                    RATES_QUERY, result_type=dict[str, float]
                )
            except Exception as err:  # ended, or the server is away: next tick
                log.debug("rates of %s: %s", name, err)
                return None

        answers: dict[str, dict[str, float] | None] = dict(
            zip(names, await asyncio.gather(*(ask(n) for n in names)), strict=True)
        )
        out: dict[str, float] = {}
        for ticket, (governors, _) in list(self._tickets.items()):
            got = [answers.get(n) for n in governors]
            if any(a is None for a in got):
                continue  # keep what the board says until every governor answers
            out[ticket] = min([a[ticket] for a in got if a and ticket in a] or [float("inf")])
        return out

    async def publish(self) -> None:
        """One round: ask, then replace the board's contents."""
        rates = await self.rates() if self._tickets else {}
        board = self._board()
        if board is None:
            return
        try:
            for ticket in [t for t in board.keys() if t not in self._tickets]:
                board.pop(ticket, None)
            board.update(rates)
        except (OSError, EOFError) as err:  # the manager is being rebuilt
            log.debug("rate board: %s", err)

    async def run(self, tick_s: float = TICK_S) -> None:
        """Publish every ``tick_s`` until cancelled."""
        while True:
            self._new.clear()
            try:
                await self.publish()
            except Exception:  # never take the worker down
                log.exception("rate board round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), tick_s)


class _Interceptor(Interceptor):
    def __init__(self, board: RateBoard) -> None:
        self._board = board

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Inbound(next, self._board)


class _Inbound(ActivityInboundInterceptor):
    """Runs in the worker's main process, around the pool process's activity call."""

    def __init__(self, next: ActivityInboundInterceptor, board: RateBoard) -> None:
        super().__init__(next)
        self._board = board

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        slot = (
            _slot(input.args[0])
            if input.args and activity.info().activity_type in PACED_ACTIVITIES
            else None
        )
        if slot is None:
            return await super().execute_activity(input)
        with self._board._running(*slot):
            return await super().execute_activity(input)


def _slot(arg: object) -> tuple[str, tuple[str, ...]] | None:
    """The ticket and governors a paced activity's input holds a slot with (None:
    none, or not a paced input)."""
    if isinstance(arg, StreamInput | StageInput):
        ticket = arg.ticket
    elif isinstance(arg, BatchInput | FanOutBatchInput):
        ticket = arg.key  # a batch's slot is asked for under its key
    else:
        return None
    if ticket is None or not arg.governors:
        return None
    return ticket, tuple(arg.governors)
