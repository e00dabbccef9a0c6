"""The rate board: each running stream's share of its governors' ``max_rate`` and of
its transfer's own ``max_rate``.

A governor (:mod:`staccato.workflows.governor`) divides its ``max_rate`` equally
among the streams its holders were granted and publishes the result in its memo
(key ``rates``: ticket -> bytes per second per stream; the ``rates`` query answers
the same); a transfer divides its own ``max_rate`` over its copy streams
running now (query ``stream_share``, :data:`STREAM_SHARE_QUERY`: the workflow's count,
whichever workers its streams run on). The worker's main process has the Temporal
client; its activity processes, where the streams read, do not. So
:class:`RateBoard` (in the main process):

* records, through a worker interceptor, which slot tickets and governors the
  ``copy_stream``, ``stage_source``, ``copy_batch`` and ``copy_batch_to_many`` (a
  dataset's batch of small files: one stream, its ticket its ``key``) attempts running on this worker have
  (from their input);
  and which transfers the ``copy_stream`` attempts with an own ``max_rate`` belong to
  (the staging read keeps its start-time share, the transfer's whole ``max_rate``);
  and which dataset a batch or a large file's stream or staging read shares the own
  ``max_rate`` of (its input's ``rate_group``);
* every :data:`TICK_S` reads each of those governors' memo (one ``describe``:
  :func:`governor_rates`; a governor that has not published, e.g. one an older
  release started, is asked the ``rates`` query) and asks each of those transfers
  once (a query: no history event), and writes :func:`~staccato.activities.pacing.slot_key`
  (ticket and the governors pacing the read) -> the lowest per-stream rate of those governors and
  :func:`~staccato.activities.pacing.own_key` (transfer) -> its own per-stream share
  and :func:`~staccato.activities.pacing.group_key` (dataset) -> the dataset's
  per-stream share (:meth:`RateBoard.group_shares`) into a dict shared with the activity processes through the worker's
  multiprocessing manager (:mod:`staccato.activities.pacing` reads it).

A cap changed with ``staccato limit set`` thus reaches running streams within
``TICK_S`` + the pacer's refresh (about 1.5 s), and so does a stream's end to the
others of its transfer. A governor or transfer that cannot be asked (it ended, the
server is away, a run from before the query) leaves the last rate in place until the
next tick (a stream whose transfer never answered keeps its start-time share).

Why the memo and not a query for governors: a query that reaches a stalled worker can
leave a history that no longer replays (docs/architecture.md, "Queries and replay"),
and a query per governor per second from every worker was the governors' main
trigger; ``describe`` is answered by the server alone. The queries left (to
transfers and datasets with their own ``max_rate``, and to a governor that has not
published) go through :func:`staccato.settled_query.settled_query`: not while the run
has a workflow task its worker has not taken (the last share stays), and within a
deadline below its workers' sticky timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, MutableMapping
from typing import Any

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from staccato.activities.pacing import group_key, own_key, slot_key
from staccato.datasets.models import RATE_GROUP_QUERY, BatchInput, FanOutBatchInput, RateGroup
from staccato.links import governor_id
from staccato.models import StageInput, StreamInput
from staccato.settled_query import GOVERNOR_STICKY_S, settled_query
from staccato.workflows.governor import RATES_MEMO, RATES_QUERY
from staccato.workflows.transfer import STREAM_SHARE_QUERY, STREAMS_RUNNING_QUERY

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
        # board key (:func:`slot_key`) -> (ticket, governors, streams of it running here)
        self._tickets: dict[str, tuple[str, tuple[str, ...], int]] = {}
        # transfer id -> its copy streams with an own max_rate running here
        self._transfers: dict[str, int] = {}
        # dataset id -> its paced batches and large files' streams running here
        self._groups: dict[str, int] = {}
        # a dataset's large file's transfer id -> its copy streams, as it last answered
        self._child_streams: dict[str, int] = {}
        # dataset id -> (max_rate, readers of its source, writers of a root) as last
        # counted (while one runs here; equal but for a dataset to several roots)
        self._last_group: dict[str, tuple[float, int, int]] = {}
        self._new = asyncio.Event()  # a ticket arrived: publish now

    @contextlib.contextmanager
    def _running(self, ticket: str, governors: tuple[str, ...]) -> Any:
        key = slot_key(ticket, governors)
        _, _, count = self._tickets.get(key, (ticket, governors, 0))
        self._tickets[key] = (ticket, governors, count + 1)
        if count == 0:
            self._new.set()
        try:
            yield
        finally:
            _, _, count = self._tickets[key]
            if count <= 1:
                del self._tickets[key]
            else:
                self._tickets[key] = (ticket, governors, count - 1)

    @contextlib.contextmanager
    def _sharing(self, transfer_id: str) -> Any:
        """While a copy stream of ``transfer_id`` with an own ``max_rate`` runs here."""
        count = self._transfers.get(transfer_id, 0)
        self._transfers[transfer_id] = count + 1
        if count == 0:
            self._new.set()  # its share at once
        try:
            yield
        finally:
            count = self._transfers[transfer_id]
            if count <= 1:
                del self._transfers[transfer_id]
            else:
                self._transfers[transfer_id] = count - 1

    @contextlib.contextmanager
    def _grouped(self, dataset_id: str) -> Any:
        """While a batch of ``dataset_id``, or a copy stream of one of its large files'
        transfers, that shares the dataset's own ``max_rate`` runs here. Each start
        has the dataset's share published again at once (the share published before
        may count one reader fewer); meanwhile the board holds ``max_rate`` over the
        readers last counted plus this one (so the new reader and those running here
        slow down at once, not a second later), or, for a dataset not asked yet, no
        share (the new reader's pacer waits for the first); so for its shares per
        reader of its source and per writer of a root (:func:`_group_keys`)."""
        count = self._groups.get(dataset_id, 0)
        self._groups[dataset_id] = count + 1
        board = self._board()
        last = self._last_group.get(dataset_id)
        if board is not None:
            with contextlib.suppress(OSError, EOFError, KeyError):  # being rebuilt
                if last is None:
                    for key in _group_keys(dataset_id):
                        board.pop(key, None)
                else:
                    rate, readers, writers = last
                    board.update(_shares(dataset_id, rate, readers + 1, writers + 1))
        self._new.set()  # its share at once
        try:
            yield
        finally:
            count = self._groups[dataset_id]
            if count <= 1:
                del self._groups[dataset_id]
            else:
                self._groups[dataset_id] = count - 1

    def _keys(self) -> set[str]:
        """The board's keys of what runs here now."""
        return {
            *self._tickets,
            *(own_key(t) for t in self._transfers),
            *(k for d in self._groups for k in _group_keys(d)),
        }

    def interceptor(self) -> Interceptor:
        return _Interceptor(self)

    async def rates(self) -> dict[str, float]:
        """:func:`~staccato.activities.pacing.slot_key` (ticket and the governors that
        pace the read) -> bytes per second per stream, the lowest of those governors'
        shares for the ticket (``inf``: none has a ``max_rate``), for the tickets
        running here whose governors' rates were all read (:func:`governor_rates`);
        and :func:`~staccato.activities.pacing.own_key` (transfer id) -> bytes per
        second per stream of the transfer's own ``max_rate`` (:meth:`own_shares`)."""
        names = sorted({n for _, governors, _ in self._tickets.values() for n in governors})
        shares = asyncio.ensure_future(self.own_shares())
        groups = asyncio.ensure_future(self.group_shares())

        answers: dict[str, dict[str, float] | None] = dict(
            zip(
                names,
                await asyncio.gather(*(governor_rates(self._client, n) for n in names)),
                strict=True,
            )
        )
        out: dict[str, float] = {}
        for key, (ticket, governors, _) in list(self._tickets.items()):
            got = [answers.get(n) for n in governors]
            if any(a is None for a in got):
                continue  # keep what the board says until every governor answers
            out[key] = min([a[ticket] for a in got if a and ticket in a] or [float("inf")])
        out.update(await shares)
        out.update(await groups)
        return out

    async def own_shares(self) -> dict[str, float]:
        """:func:`~staccato.activities.pacing.own_key` (transfer id) -> bytes per second
        each of its streams may read of its own ``max_rate`` now (query
        ``stream_share``), for the transfers with a paced stream running here that
        answered with a rate."""
        ids = sorted(self._transfers)

        async def ask(transfer_id: str) -> float | None:
            try:
                # once settled, within a deadline (staccato.settled_query)
                share = await settled_query(
                    self._client.get_workflow_handle(transfer_id), STREAM_SHARE_QUERY
                )
                return float(share) if isinstance(share, int | float) else None
            except Exception as err:  # ended, older code, the server away: next tick
                log.debug("stream share of %s: %s", transfer_id, err)
                return None

        answers = await asyncio.gather(*(ask(t) for t in ids))
        return {own_key(t): a for t, a in zip(ids, answers, strict=True) if a is not None and a > 0}

    async def group_shares(self) -> dict[str, float]:
        """:func:`~staccato.activities.pacing.group_key` (dataset id) -> bytes per
        second each of its streams may read of the dataset's own ``max_rate`` now: the
        dataset tells its ``max_rate``, its batches reading and its large files'
        transfers in flight (query ``rate_group``), each of those how many copy
        streams it runs (query ``streams_running``), and ``max_rate`` is divided over
        the batches (one stream each) plus those streams, so their sum stays within
        it. ``inf`` for a dataset that shares no ``max_rate`` (a run from before it
        did: its batches keep the whole rate); none for one that did not answer (the
        last share stays). A transfer that does not answer counts as many streams as
        it last said (one before it ever answered).

        With several roots (``fan_outs``: a large file's fan-out group each) the
        dataset reads its source within ``max_rate`` and writes each root within it,
        as its batches do (one read of a file, written to every root): a group's
        staging read counts among the readers of the source only (it writes no
        root; the group's ``streams_running``), its transfers' streams among the
        writers of a root only (they read the staged copy; the busiest transfer's
        streams, :meth:`_root_writers`), a batch or a large file's transfer to one
        root among both; each of those reads at most its share
        (:func:`_shares`, keys :func:`_group_keys`)."""
        ids = sorted(self._groups)

        async def ask(dataset_id: str) -> RateGroup | None | bool:
            """Its answer (None: it shares no max_rate; False: it did not answer)."""
            try:
                answer = await settled_query(
                    self._client.get_workflow_handle(dataset_id), RATE_GROUP_QUERY
                )
                return None if answer is None else RateGroup.model_validate(answer)
            except Exception as err:  # ended, older code, the server away: next tick
                log.debug("rate group of %s: %s", dataset_id, err)
                return False

        async def streams(workflow_id: str) -> None:
            try:
                count = await settled_query(
                    self._client.get_workflow_handle(workflow_id), STREAMS_RUNNING_QUERY
                )
            except Exception as err:  # not started yet, ended, older code
                log.debug("streams running of %s: %s", workflow_id, err)
                return
            if isinstance(count, int):
                self._child_streams[workflow_id] = count

        groups = dict(zip(ids, await asyncio.gather(*(ask(d) for d in ids)), strict=True))
        answered = [g for g in groups.values() if isinstance(g, RateGroup)]
        children = sorted(
            {c for g in answered for c in g.children}
            | {w for g in answered for f, ts in g.fan_outs.items() for w in (f, *ts)}
        )
        await asyncio.gather(*(streams(c) for c in children))
        self._child_streams = {c: n for c, n in self._child_streams.items() if c in children}
        out: dict[str, float] = {}
        self._last_group = {d: v for d, v in self._last_group.items() if d in self._groups}
        for dataset_id, group in groups.items():
            if group is False:
                continue
            if not isinstance(group, RateGroup):
                out.update(dict.fromkeys(_group_keys(dataset_id), float("inf")))
                continue
            both = group.batches + sum(self._child_streams.get(c, 1) for c in group.children)
            # each fan-out group's staging read (1 before it answered)
            readers = both + sum(self._child_streams.get(f, 1) for f in group.fan_outs)
            writers = both + sum(self._root_writers(ts) for ts in group.fan_outs.values())
            out.update(_shares(dataset_id, group.max_rate, readers, writers))
            self._last_group[dataset_id] = (group.max_rate, max(1, readers), max(1, writers))
        return out

    def _root_writers(self, transfers: list[str]) -> int:
        """The writers of a root a dataset's large file's fan-out group counts as: the
        copy streams of the busiest of its transfers (one per root, each writing its
        own root from the staged copy), as each last answered (0 before any did:
        none runs before the group's staging read ends, and a transfer's first stream
        has the share published again at once)."""
        return max((self._child_streams.get(t, 0) for t in transfers), default=0)

    async def publish(self) -> None:
        """One round: ask, then replace the board's contents."""
        rates = await self.rates() if self._tickets or self._transfers or self._groups else {}
        board = self._board()
        if board is None:
            return
        keys = self._keys()  # what still runs after the questions
        try:
            for key in [k for k in board.keys() if k not in keys]:
                board.pop(key, None)
            board.update({k: v for k, v in rates.items() if k in keys})
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


async def governor_rates(client: Client, name: str) -> dict[str, float] | None:
    """The rates governor ``name`` (an endpoint or link name) publishes: its holders'
    tickets -> bytes per second per stream (empty: no ``max_rate``), read from its
    memo (:data:`~staccato.workflows.governor.RATES_MEMO`) with one ``describe`` of
    its current run, which the server answers without a worker. A run that has not
    published them (started by an older release, or before its first workflow task)
    is asked the ``rates`` query instead. None: it could not be read (it ended, or
    the server is away; the caller keeps the last rate). Raises nothing."""
    handle = client.get_workflow_handle(governor_id(name))
    try:
        described = await handle.describe()
        if described.status != WorkflowExecutionStatus.RUNNING:
            return None  # ended (or continued as new meanwhile): next tick
        published = await described.memo_value(RATES_MEMO, None, type_hint=dict[str, float])
        if published is not None:
            return {str(k): float(v) for k, v in published.items()}
        return await settled_query(  # type: ignore[no-any-return]
            handle,
            RATES_QUERY,
            result_type=dict[str, float],
            description=described,
            sticky_timeout_s=GOVERNOR_STICKY_S,
        )
    except Exception as err:  # not found, or the server is away: next tick
        log.debug("rates of %s: %s", name, err)
        return None


def _group_keys(dataset_id: str) -> tuple[str, str, str]:
    """The board's keys of a dataset's shares: per stream that reads its source and
    writes (a batch, a large file's transfer to one root), per reader of its source
    alone (a fan-out group's staging read), per writer of a root alone (a fan-out
    group's transfers' streams)."""
    return (
        group_key(dataset_id),
        group_key(dataset_id, "read"),
        group_key(dataset_id, "write"),
    )


def _shares(dataset_id: str, max_rate: float, readers: int, writers: int) -> dict[str, float]:
    """A dataset's shares (bytes/s) of its ``max_rate`` by :func:`_group_keys`: over
    its ``readers`` of its source, over its ``writers`` of a root, and the lower of
    the two for a stream that does both. One root: readers = writers, every share
    equal. Several roots: the dataset reads its source, and writes each root, within
    ``max_rate`` (a batch reads a file once and writes it to every root)."""
    read = max_rate / max(1, readers)
    write = max_rate / max(1, writers)
    both, read_key, write_key = _group_keys(dataset_id)
    return {both: min(read, write), read_key: read, write_key: write}


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
        kind = activity.info().activity_type
        slot = _slot(input.args[0]) if input.args and kind in PACED_ACTIVITIES else None
        shared = _own_share(input.args[0]) if input.args and kind == STREAM_ACTIVITY else None
        group = _rate_group(input.args[0]) if input.args and kind in PACED_ACTIVITIES else None
        with contextlib.ExitStack() as running:
            if slot is not None:
                running.enter_context(self._board._running(*slot))
            if shared is not None:
                running.enter_context(self._board._sharing(shared))
            if group is not None:
                running.enter_context(self._board._grouped(group))
            return await super().execute_activity(input)


def _own_share(arg: object) -> str | None:
    """The transfer whose own ``max_rate`` a copy stream's input shares (None: no own
    rate, or not a stream's input)."""
    if isinstance(arg, StreamInput) and arg.max_rate is not None:
        return arg.transfer_id
    return None


def _rate_group(arg: object) -> str | None:
    """The dataset whose own ``max_rate`` a paced activity's input shares (a batch of
    it, a copy stream of one of its large files' transfers); None: none."""
    if isinstance(arg, StreamInput | StageInput) and arg.max_rate is not None:
        return arg.rate_group
    if isinstance(arg, BatchInput | FanOutBatchInput) and arg.options.max_rate is not None:
        return arg.rate_group
    return None


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
