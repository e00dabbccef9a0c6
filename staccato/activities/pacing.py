"""Read pacing of copy streams: a token bucket per stream, at the stream's rate.

A stream's rate is the lower of its share of its transfer's own ``max_rate`` and its
share of the ``max_rate`` of the endpoints and links whose slots its transfer holds.
Both change while the stream runs: the own share is ``max_rate`` over the transfer's
streams running now (a stream that ends hands its share to the others; the start-time
share, :attr:`~staccato.models.StreamInput.max_rate`, holds until the board has one),
the governors' share moves with a cap set or changed, another transfer starting or
ending. The worker's main process asks the transfers (query ``stream_share``) and the
governors (query ``rates``) every second and publishes the per-stream rates on the
rate board, a dict shared with the activity processes through the worker's
multiprocessing manager (:mod:`staccato.workers.rates`): ticket -> the governors'
share, :func:`own_key` of the transfer -> its own share, :func:`group_key` of a
dataset -> its per-stream share of the dataset's own ``max_rate`` (for its batches
and its large files' streams, which the stream reads at most too; with several roots
also a share per reader of its source and one per writer of a root, for its fan-out
groups' staging reads and their transfers' streams). The pacer looks at
it every :data:`REFRESH_S`. A change thus reaches the bytes within about 2 s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from staccato.endpoints.base import moved

#: seconds between two looks at the rate board
REFRESH_S = 0.5
#: credit a stream may build up while it does not read (seconds at its rate): small,
#: so that a stream that waited on its destination does not then burst
BURST_S = 0.2
#: longest sleep between two heartbeats while a stream waits for its tokens
SLEEP_STEP_S = 0.2
#: longest a stream with a ticket waits for the board's first word on it (seconds);
#: the worker publishes a new ticket's rate at once, so this only bounds a hiccup
FIRST_WAIT_S = 5.0
#: read size bounds while paced (bytes): about a tenth of a second of the rate
MIN_STEP = 16 * 1024
MAX_STEP = 1024 * 1024

# this activity process's view of the rate board (ticket -> bytes/s per stream), or
# None outside a worker's pool (set by the pool's initializer)
_board: Mapping[str, float] | None = None


def own_key(transfer_id: str) -> str:
    """The rate board's key of a transfer's own per-stream share (bytes/s): distinct
    from any slot ticket (``workflow/run/n``) or batch key."""
    return f"{transfer_id}#own"


#: :func:`group_key` parts of a dataset to several roots: a read of its source that
#: writes no root (a large file's fan-out group staging it), a stream that writes one
#: root from the staged copy (one of that group's transfers)
RATE_PARTS = ("read", "write")


def group_key(dataset_id: str, part: str | None = None) -> str:
    """The rate board's key of the per-stream share (bytes/s) of a dataset's own
    ``max_rate``, which its batches and its large files' transfers' streams share
    (:data:`staccato.datasets.models.RATE_GROUP_QUERY`): distinct from a ticket, a
    batch key and :func:`own_key`. ``part`` (one of :data:`RATE_PARTS`): the share of
    a read that only reads the source (``read``) or only writes a root (``write``),
    which the worker divides over the dataset's source readers or over its writers
    of a root alone (:meth:`staccato.workers.rates.RateBoard.group_shares`)."""
    return f"{dataset_id}#dataset" if part is None else f"{dataset_id}#dataset-{part}"


def slot_key(ticket: str, governors: Sequence[str]) -> str:
    """The rate board's key of a paced read's share of its governors' ``max_rate``
    (bytes/s per stream): its slot ticket and the governors that pace this read. One
    ticket can have two: a transfer that stages its source is paced by the source's
    endpoint and the link in its staging read, and by the destination's endpoint alone
    in the streams that copy the staged entry (each cap paces the bytes that cross its
    endpoint or link once; :meth:`staccato.workflows.transfer.TransferWorkflow._stream_rate`)."""
    return f"{ticket}|{','.join(sorted(governors))}"


def install_board(board: Mapping[str, float] | None) -> None:
    """Called in each activity process at its start: the worker's shared rate board."""
    global _board
    _board = board


class Pacer:
    """Paces one stream's reads.

    Args:
        own_rate: bytes per second of the stream's own share (None: none).
        ticket: the slot ticket its governors' shares are published under (None: the
            transfer holds no slot).
        board: ticket -> bytes per second per stream (default: the process's board).
        own_key: the board's key of the transfer's own per-stream share
            (:func:`own_key`), which replaces ``own_rate`` once the board has it (None:
            ``own_rate`` holds to the end). Ignored without ``own_rate``.
        group_key: the board's key of the per-stream share of the dataset's own
            ``max_rate`` the stream is part of (:func:`group_key`: a dataset's batch,
            a stream of one of its large files' transfers); the stream reads at most
            that share too once the board has it (None: not part of a dataset).
            Ignored without ``own_rate`` (the dataset's ``max_rate`` is its own).
        ticket_streams: how many of the ticket's per-stream shares this reader takes
            (the staging read, its transfer's only reader, takes those of every
            stream its governors count: :attr:`~staccato.models.StageInput.ticket_streams`);
            1 for a copy stream or a batch.
    """

    def __init__(
        self,
        own_rate: float | None,
        ticket: str | None,
        board: Mapping[str, float] | None = None,
        own_key: str | None = None,
        group_key: str | None = None,
        ticket_streams: int = 1,
    ) -> None:
        self._own = own_rate
        self._ticket = ticket
        self._ticket_streams = max(1, ticket_streams)
        self._board = board if board is not None else _board
        self._own_key = own_key if own_rate is not None else None
        self._group_key = group_key if own_rate is not None else None
        self._shared: float | None = None
        self._group: float | None = None  # the dataset's per-stream share
        self._looked = -REFRESH_S
        self._t: float | None = None  # when the bytes taken so far are paid for
        self._started = False
        #: bytes read through this pacer so far (paced or not), for progress
        self.taken = 0
        #: when (monotonic) the paced bytes' window began: the first paced read less
        #: its start credit (:data:`BURST_S`); None until a read was paced. The bytes
        #: :meth:`paid` over the time since then never exceed the rate (a rate shown
        #: from the bytes read over the time since the read began did: the start
        #: credit and the step read ahead of its wait, 8.2 MiB/s under a 7.63 MiB/s
        #: cap early in a staging read, tester69)
        self.since: float | None = None
        self._rate_taken: float | None = None  # the rate the last bytes were put at

    @property
    def active(self) -> bool:
        """Whether the stream can be paced at all (a cap of its own or a ticket)."""
        return self._own is not None or (self._ticket is not None and self._board is not None)

    def start(self, wait: Callable[[float], Any]) -> None:
        """Before the first read: wait (bounded by :data:`FIRST_WAIT_S`, through
        ``wait(seconds)``) until the board has a rate for the ticket and for the
        dataset's share (``group_key``), so that a capped stream does not read unpaced
        (or at its start-time share, above the dataset's) before the worker asked its
        governors and its dataset."""
        self._started = True
        keys = [k for k in (self._ticket, self._group_key) if k is not None]
        if not keys or self._board is None:
            return
        deadline = time.monotonic() + FIRST_WAIT_S
        while time.monotonic() < deadline:
            try:
                if all(k in self._board for k in keys):
                    return
            except (OSError, EOFError):
                return
            wait(0.05)

    def rate(self) -> float | None:
        """Bytes per second now (None: not paced; the board says ``inf`` for a ticket
        none of whose governors has a ``max_rate``)."""
        looks = (self._ticket, self._own_key, self._group_key)
        if any(k is not None for k in looks) and self._board is not None:
            now = time.monotonic()
            if now - self._looked >= REFRESH_S:
                self._looked = now
                try:
                    if self._ticket is not None:
                        shared = self._board.get(self._ticket)
                        self._shared = None if shared is None else shared * self._ticket_streams
                    if self._own_key is not None:
                        own = self._board.get(self._own_key)
                        if own is not None and own > 0:
                            self._own = own
                    if self._group_key is not None:
                        group = self._board.get(self._group_key)
                        if group is not None and group > 0:  # gone: keep the last
                            self._group = group
                except (OSError, EOFError):  # the manager is gone: keep the last rate
                    pass
        rates = [
            r for r in (self._own, self._shared, self._group) if r is not None and r != float("inf")
        ]
        return min(rates) if rates else None

    def step(self, wait: Callable[[float], Any]) -> int | None:
        """How many bytes to read at most before the next :meth:`take` (None: any);
        the first call waits as :meth:`start`."""
        if not self._started:
            self.start(wait)
        rate = self.rate()
        if rate is None:
            return None
        return int(min(MAX_STEP, max(MIN_STEP, rate / 10)))

    def take(self, n: int, wait: Callable[[float], Any]) -> None:
        """Account for ``n`` bytes read; wait (through ``wait(seconds)``, which
        heartbeats and may raise to stop) until they are within the rate."""
        until = self._reserve(n)
        if until is None:
            return
        while True:
            left = until - time.monotonic()
            if left <= 0:
                return
            wait(min(left, SLEEP_STEP_S))

    def paid(self) -> int:
        """Bytes taken so far whose time has come (a small file is read whole, then
        waits for its bytes' time: it counts as it is paid for, at the rate, not at once)."""
        if self._t is None or not self._rate_taken:
            return self.taken
        owed = max(0.0, self._t - time.monotonic()) * self._rate_taken
        return max(0, int(self.taken - owed))

    def _reserve(self, n: int) -> float | None:
        """Put ``n`` bytes on the bucket: the monotonic time they are paid for (None:
        not paced now)."""
        self.taken += n
        rate = self.rate()
        now = time.monotonic()
        self._rate_taken = rate
        if rate is None:
            self._t = None
            return None
        if self._t is None or self._t < now - BURST_S:
            self._t = now - BURST_S
        if self.since is None:
            self.since = self._t
        self._t += n / rate
        return self._t

    def average(self, began: float, now: float | None = None) -> float:
        """Bytes per second read through this pacer since ``began`` (monotonic: when
        the read began), as a progress line shows it: the bytes paid for over the time
        since the earlier of ``began`` and :attr:`since`, so never above the pacing
        rate (an unpaced read: the bytes taken over the time since ``began``)."""
        now = time.monotonic() if now is None else now
        start = began if self.since is None else min(began, self.since)
        return self.paid() / max(now - start, 1e-6)


class SharedPacer(Pacer):
    """One token bucket that several threads draw from: the files in flight of a
    dataset's batch (``copy_batch``), which holds one slot (one stream's share of its
    governors' ``max_rate``) and one stream's share of the dataset's own ``max_rate``
    (``group_key``; the whole ``max_rate`` until the board has it, or for a batch
    scheduled before the dataset shared it). Each thread waits for its own bytes (through its own ``wait``), after
    those the others took before it, so the batch's bytes together keep the rate.

    :meth:`start` is meant to be called once, before the threads start (it may wait
    up to :data:`FIRST_WAIT_S` for the board); later calls return at once.
    """

    def __init__(
        self,
        own_rate: float | None,
        ticket: str | None,
        board: Mapping[str, float] | None = None,
        group_key: str | None = None,
    ) -> None:
        super().__init__(own_rate, ticket, board, group_key=group_key)
        self._lock = threading.RLock()

    def start(self, wait: Callable[[float], Any]) -> None:
        if self._started:
            return
        with self._lock:
            if not self._started:
                super().start(wait)

    def rate(self) -> float | None:
        with self._lock:
            return super().rate()

    def _reserve(self, n: int) -> float | None:
        with self._lock:
            return super()._reserve(n)

    def paid(self) -> int:
        with self._lock:
            return super().paid()


def beating_wait(beat: Callable[[], Any]) -> Callable[[float], None]:
    """A ``wait(seconds)`` for :meth:`Pacer.take`: sleeps, then calls ``beat`` (which
    heartbeats and may raise to stop)."""

    def wait(seconds: float) -> None:
        time.sleep(seconds)
        # waiting for our own rate, not for an endpoint: not a hang (the retry
        # deadline's hang watch, a dataset status' rate)
        moved()
        beat()

    return wait


def paced_by(pacer: Pacer, beat: Callable[[], Any]) -> Callable[[int], None]:
    """``take(n)``: account ``n`` bytes read with ``pacer``, sleeping (calling ``beat``,
    which heartbeats and may raise to stop, between sleeps of at most
    :data:`SLEEP_STEP_S`) until they are within its rate."""
    wait = beating_wait(beat)

    def take(n: int) -> None:
        pacer.take(n, wait)

    return take
