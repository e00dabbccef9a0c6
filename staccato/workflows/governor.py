"""``GovernorWorkflow``: the limits of one endpoint or link, and its permit keeper.

One workflow per name (:func:`staccato.links.governor_id`), on the fixed task queue
:data:`GOVERNOR_QUEUE` that every worker polls whatever its own queue, so a governor
keeps granting when the workers of the queue whose transfer started it are gone
(governors started by an older release on a stream queue move there at their next
continue-as-new). Its state (:class:`~staccato.models.GovernorState`) is the durable store
of the name's limits (``staccato limit set`` signals ``set_limits`` with
signal-with-start) and of who holds and who waits for a slot.

Protocol (signals both ways: nothing polls):

* ``acquire`` (:class:`~staccato.models.SlotRequest`): join the queue; a ticket seen
  before is ignored (a transfer that asks again after a retry re-sends it).
* ``release`` (:class:`~staccato.models.SlotRelease`): give the slot back or leave the
  queue; with ``streams`` set, keep the slot with fewer streams.
* ``running`` (:class:`~staccato.models.SlotRunning`): how many of a holder's streams
  still run (its other lanes have no segment left): ``max_rate`` is divided over
  min(held, running) of each holder, so a finished stream's share goes to the others;
  no grant changes (``max_streams`` counts the streams held), but with ``max_rate``
  the rates published change (below). The transfer sends it at most once per lane end
  per governor.
* ``set_limits`` (:class:`~staccato.models.LimitChange`).
* to the transfer: ``slot_granted`` (:class:`~staccato.models.SlotGrant`) when it gets
  its slot, ``limit_queued`` (the reason) once when it has to wait, or instead
  ``slot_queued`` (:class:`~staccato.models.SlotQueued`: the name, the ticket and the
  reason) to a request with ``named_queued`` (a dataset's batches: several tickets of
  one run wait at once; the choice follows the recorded ``acquire``, so it needs no
  patch and costs the same 2 events). A transfer that
  cannot be signalled (it ended) loses its place. The ``slot`` query tells where a
  ticket stands (``staccato status`` shows the place in line from it).
* to the workers: the memo's :data:`RATES_MEMO` (``rates``: holder ticket -> bytes per
  second per stream, :meth:`GovernorWorkflow.rates`; empty without ``max_rate``),
  upserted when it changes (patch :data:`RATES_MEMO_PATCH`) and carried by
  continue-as-new. Each worker's rate board (:mod:`staccato.workers.rates`) reads it
  every second with ``describe``, which the server answers alone. It queried the
  ``rates`` query before (still answered, for older workers); that query load was
  the main trigger of governor histories that no longer replay (docs/architecture.md,
  "Queries and replay").

Grants: while a slot is free (``max_active``: holders < N; ``max_streams``: streams
held < N, the head of the queue gets ``min(asked, free)``), the queue's best waiter
gets one, with a fencing token that grows with every grant. Best = lowest priority
number (1 = most urgent), then fair share: the owner with the fewest slots held,
then the fewest grants since the queue was last empty, then first come.

A holder or waiter whose workflow run ended without releasing (terminated, reset,
timed out) is found every :data:`CHECK_EVERY` by the ``find_ended`` activity (control
queue) and dropped. The governor ends when it has no limits, no holders and no
waiters; it continues as new (carrying its state) when Temporal suggests it.

History per transfer: the ``acquire`` and ``release`` signals (1 event each), the
``slot_granted`` signal sent (2) and, when it waited, ``limit_queued`` (2), plus the
workflow tasks per wake-up (signals arriving together share them): about 10 events,
plus a ``running`` signal and its workflow task per lane of a holder that runs out of
segments before the others (at most one per lane end; none for a one-segment file);
the check adds about 11 events per 5 s while anyone holds or waits (continue-as-new
keeps it bounded). The check runs when its timer fires (patch
:data:`CHECK_TIMER_PATCH`); runs from before it started a timer per wake-up and
cancelled it, 2 events more each. Publishing the rates adds an upsert (1 event) per
change of them (a grant, a release, a ``running`` signal or a ``set_limits`` that
changes ``max_rate``: the last three in their own workflow task anyway), one when a
governor first starts, and the patch's marker per run (2 events); continue-as-new
passes the memo on (the server does not carry it by itself).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from staccato import units
    from staccato.models import (
        GovernorState,
        HolderRef,
        LimitChange,
        Limits,
        SlotGrant,
        SlotHolder,
        SlotQueued,
        SlotRelease,
        SlotRequest,
        SlotRunning,
        SlotView,
        rate_per_stream,
    )
    from staccato.windows import window_opens

from staccato.workflows.front import control_queue

#: the task queue of every governor and of its ``find_ended`` activity: every worker
#: polls it, whichever task queue it serves
GOVERNOR_QUEUE = "staccato-governors"
#: ``workflow.patched`` id: a governor on another queue continues as new on this one
GOVERNOR_QUEUE_PATCH = "governor-queue"
#: how often holders and waiters are checked for runs that ended without releasing
CHECK_EVERY = timedelta(seconds=5)
#: continue as new after this many events even when Temporal does not suggest it yet
MAX_HISTORY = 8000
FIND_ENDED = "find_ended"
ACQUIRE_SIGNAL = "acquire"
RELEASE_SIGNAL = "release"
RUNNING_SIGNAL = "running"
SET_LIMITS_SIGNAL = "set_limits"
SLOT_QUERY = "slot"
#: signals a governor sends to a transfer
SLOT_GRANTED_SIGNAL = "slot_granted"
LIMIT_QUEUED_SIGNAL = "limit_queued"
#: ``limit_queued`` naming the governor and the ticket (:class:`~staccato.models.SlotQueued`)
SLOT_QUEUED_SIGNAL = "slot_queued"
STATE_QUERY = "state"
RATES_QUERY = "rates"
#: ``workflow.patched`` id: a ``window`` limit holds new grants outside its hours
WINDOW_PATCH = "governor-window"
#: ``workflow.patched`` id: the ended-run check runs when its timer fires
CHECK_TIMER_PATCH = "governor-check-timer"
#: the memo key under which a governor publishes its per-ticket rates (what the
#: ``rates`` query answers: ticket -> bytes per second per stream, empty without
#: ``max_rate``); the rate board reads it with ``describe``, asking no worker
RATES_MEMO = "rates"
#: ``workflow.patched`` id: the governor publishes its rates in its memo
#: (:data:`RATES_MEMO`, an upsert when they change) and a ``running`` signal that
#: changes them wakes the loop; runs recorded before it did neither
RATES_MEMO_PATCH = "governor-rates-memo"


def _activity_queue() -> str:
    """Where the governor's activities run: its own queue, or (a governor started by an
    older release on a stream queue) that queue's control queue."""
    queue = workflow.info().task_queue
    return queue if queue == GOVERNOR_QUEUE else control_queue(queue)


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


@workflow.defn(name="GovernorWorkflow")
class GovernorWorkflow:
    """Keeps the limits of one endpoint or link and grants its slots."""

    @workflow.init
    def __init__(self, state: GovernorState) -> None:
        self._s = GovernorState.model_validate(state)
        self._changed = False
        # signals to transfers being sent (awaited before continue-as-new or the end)
        self._sending = 0
        # whether ``window`` limits hold grants (set by the run loop, not a query)
        self._windows = False
        # the ended-run check: its timer (one at a time) and whether it fired
        self._check_timer: asyncio.Task[None] | None = None
        self._check_due = False
        # the rates in the memo (RATES_MEMO): what this run started with (carried by
        # continue-as-new) or last upserted; None: none yet
        self._published: dict[str, float] | None = workflow.memo_value(
            RATES_MEMO, None, type_hint=dict[str, float]
        )
        # whether this run publishes its rates (RATES_MEMO_PATCH; set by run)
        self._memo = False

    @workflow.run
    async def run(self, state: GovernorState) -> None:
        """Grant slots until nothing is limited, held or waited for.

        Args:
            state: the state to go on from (a fresh one names the endpoint or link).
        """
        s = self._s
        last_check = workflow.now()
        # the check of ended runs follows a timer's firing, not a comparison of
        # workflow.now() with the last check (a replay whose task times differ took
        # the other branch: a nondeterminism error)
        timer_driven = workflow.patched(CHECK_TIMER_PATCH)
        self._memo = workflow.patched(RATES_MEMO_PATCH)
        while True:
            if s.limits.window is not None and not self._windows:
                self._windows = workflow.patched(WINDOW_PATCH)
            for holder in self._grant():
                self._send(
                    holder,
                    SLOT_GRANTED_SIGNAL,
                    SlotGrant(
                        name=s.name,
                        ticket=holder.ticket,
                        token=holder.token,
                        streams=holder.streams,
                        max_rate=s.limits.max_rate,
                    ),
                )
            for waiter in s.waiters:
                if not waiter.told:
                    waiter.told = True
                    why = self.slot(waiter.ticket).reason
                    if waiter.named_queued:
                        queued = SlotQueued(name=s.name, ticket=waiter.ticket, reason=why)
                        self._send(waiter, SLOT_QUEUED_SIGNAL, queued)
                    else:
                        self._send(waiter, LIMIT_QUEUED_SIGNAL, why)
            self._show()
            self._publish()
            if s.limits.empty() and not s.holders and not s.waiters:
                await workflow.wait_condition(lambda: self._sending == 0)
                if self._changed:  # a signal came meanwhile
                    self._changed = False
                    continue
                return
            info = workflow.info()
            if info.is_continue_as_new_suggested() or info.get_current_history_length() > (
                MAX_HISTORY
            ):
                await workflow.wait_condition(
                    lambda: self._sending == 0 and workflow.all_handlers_finished()
                )
                # the next run starts with the rates published (no upsert, no gap:
                # the server does not carry the memo over by itself)
                memo = (
                    {RATES_MEMO: self._published}
                    if self._memo and self._published is not None
                    else None
                )
                if workflow.info().task_queue != GOVERNOR_QUEUE and workflow.patched(
                    GOVERNOR_QUEUE_PATCH
                ):
                    workflow.continue_as_new(s, task_queue=GOVERNOR_QUEUE, memo=memo)
                workflow.continue_as_new(s, memo=memo)
            if (s.holders or s.waiters) and timer_driven:
                if self._check_due:
                    self._check_due = False
                    await self._drop_ended()
                    continue
                if self._check_timer is None or self._check_timer.done():
                    self._check_timer = asyncio.create_task(self._check_after())
                opens = self._closed_until() if s.waiters else None
                if opens is not None:  # wake when the window opens
                    try:
                        await workflow.wait_condition(
                            lambda: self._changed or self._check_due,
                            timeout=max(opens - workflow.now(), timedelta(milliseconds=1)),
                        )
                    except TimeoutError:
                        pass
                else:
                    await workflow.wait_condition(lambda: self._changed or self._check_due)
            elif s.holders or s.waiters:  # histories from before CHECK_TIMER_PATCH
                due = last_check + CHECK_EVERY - workflow.now()
                opens = self._closed_until() if s.waiters else None
                if due <= timedelta(0):
                    await self._drop_ended()
                    last_check = workflow.now()
                    continue
                if opens is not None:  # wake when the window opens
                    due = min(due, max(opens - workflow.now(), timedelta(milliseconds=1)))
                try:
                    await workflow.wait_condition(lambda: self._changed, timeout=due)
                except TimeoutError:
                    pass
            else:
                await workflow.wait_condition(lambda: self._changed)
            self._changed = False

    async def _check_after(self) -> None:
        """Sleep :data:`CHECK_EVERY`, then mark the ended-run check due (the timer's
        firing, an event of the history, decides when the check runs)."""
        await workflow.sleep(CHECK_EVERY)
        self._check_due = True

    async def _drop_ended(self) -> None:
        """Drop holders and waiters whose workflow run has ended (the ``find_ended``
        activity describes them)."""
        s = self._s
        refs = [
            HolderRef(ticket=h.ticket, workflow_id=h.workflow_id, run_id=h.run_id)
            for h in [*s.holders, *s.waiters]
        ]
        ended: list[str] = await workflow.execute_activity(
            FIND_ENDED,
            refs,
            result_type=list[str],
            task_queue=_activity_queue(),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=5)),
        )
        if ended:
            workflow.logger.info("%s: dropping slots of ended runs: %s", s.name, ended)
            self._drop(set(ended))

    def _order(self, w: SlotRequest) -> tuple[int, int, int, int]:
        """Queue order: priority, then slots held by the owner, then the owner's
        grants since the queue was last empty, then arrival."""
        s = self._s
        held = sum(1 for h in s.holders if h.owner == w.owner)
        return (w.priority, held, s.grants_by_owner.get(w.owner, 0), w.seq)

    def _free_streams(self) -> int | None:
        limit = self._s.limits.max_streams
        return None if limit is None else limit - sum(h.streams for h in self._s.holders)

    def _send(self, to: SlotRequest, signal: str, arg: object) -> None:
        """Signal a transfer (in the background); one that cannot be signalled (its
        run ended) loses its slot or place."""

        async def send() -> None:
            try:
                await workflow.get_external_workflow_handle(
                    to.workflow_id, run_id=to.run_id
                ).signal(signal, arg)
            except Exception as err:  # the run ended: no one to hold the slot
                workflow.logger.info("%s: dropping %s: %s", self._s.name, to.ticket, err)
                self._drop({to.ticket})
            finally:
                self._sending -= 1

        self._sending += 1
        asyncio.create_task(send())

    def _drop(self, tickets: set[str]) -> None:
        s = self._s
        s.holders = [h for h in s.holders if h.ticket not in tickets]
        s.waiters = [w for w in s.waiters if w.ticket not in tickets]
        self._changed = True

    def _grant(self) -> list[SlotHolder]:
        """Give free slots to the best waiters (none is skipped for a later one);
        returns the new holders."""
        granted: list[SlotHolder] = []
        s = self._s
        if s.waiters and self._closed_until() is not None:
            return granted  # outside the window: the running ones go on, none starts
        while s.waiters:
            if s.limits.max_active is not None and len(s.holders) >= s.limits.max_active:
                break
            free = self._free_streams()
            if free is not None and free < 1:
                break
            best = min(s.waiters, key=self._order)
            s.waiters.remove(best)
            streams = best.streams if free is None else min(best.streams, free)
            holder = SlotHolder(
                **best.model_dump(exclude={"streams"}), streams=streams, token=s.next_token
            )
            s.holders.append(holder)
            granted.append(holder)
            s.next_token += 1
            s.grants_total += 1
            s.grants_by_owner[best.owner] = s.grants_by_owner.get(best.owner, 0) + 1
        if not s.waiters:
            s.grants_by_owner = {}
        return granted

    def _closed_until(self) -> datetime | None:
        """When the ``window`` limit opens next while it is closed now; None when it is
        open or not set (governors recorded before windows held grant as ever)."""
        window = self._s.limits.window
        if window is None or not self._windows:
            return None
        try:
            with workflow.unsafe.sandbox_unrestricted():  # zoneinfo reads the tz database
                return window_opens(window, workflow.now())
        except ValueError as err:  # validated by the client; another client may not
            workflow.logger.warning("%s: ignoring window %r: %s", self._s.name, window, err)
            return None

    def per_stream_rate(self) -> float | None:
        """Bytes per second each holder stream may read: ``max_rate`` divided equally
        among the streams held that still run (:func:`~staccato.models.rate_per_stream`;
        None: no ``max_rate``)."""
        return rate_per_stream(self._s.limits.max_rate, self._s.holders)

    def _publish(self) -> None:
        """Upsert the memo's :data:`RATES_MEMO` when :meth:`rates` differs from what
        it holds (runs from before :data:`RATES_MEMO_PATCH`: never)."""
        if not self._memo:
            return
        rates = self.rates()
        if rates != self._published:
            workflow.upsert_memo({RATES_MEMO: rates})
            self._published = rates

    def _show(self) -> None:
        """The current-details line: limits, active, queued."""
        s = self._s
        limits = ", ".join(f"{k}={v}" for k, v in s.limits.model_dump().items() if v is not None)
        workflow.set_current_details(
            f"**{s.name}**: {limits or 'no limits'}; {len(s.holders)} active "
            f"({units.counted(sum(h.streams for h in s.holders), 'stream')}), {len(s.waiters)} queued"
        )

    @workflow.signal(name=ACQUIRE_SIGNAL)
    def acquire(self, request: SlotRequest) -> None:
        """Join the queue (a ticket already held or queued is ignored)."""
        s = self._s
        request = SlotRequest.model_validate(request)
        if any(x.ticket == request.ticket for x in [*s.holders, *s.waiters]):
            return
        s.waiters.append(request.model_copy(update={"seq": s.next_seq}))
        s.next_seq += 1
        self._changed = True

    @workflow.signal(name=RELEASE_SIGNAL)
    def release(self, release: SlotRelease) -> None:
        """Give a slot back, leave the queue, or hold fewer streams."""
        s = self._s
        release = SlotRelease.model_validate(release)
        if release.streams is not None:
            for h in s.holders:
                if h.ticket == release.ticket:
                    h.streams = max(1, min(h.streams, release.streams))
        else:
            s.holders = [h for h in s.holders if h.ticket != release.ticket]
            s.waiters = [w for w in s.waiters if w.ticket != release.ticket]
        self._changed = True

    @workflow.signal(name=RUNNING_SIGNAL)
    def running(self, running: SlotRunning) -> None:
        """How many of a holder's streams still run (:meth:`rates` divides
        ``max_rate`` over them). Changes no grant; it wakes the loop only when the
        rates published in the memo change (with ``max_rate``; runs from before
        :data:`RATES_MEMO_PATCH`: never, no command)."""
        running = SlotRunning.model_validate(running)
        for h in self._s.holders:
            if h.ticket == running.ticket:
                h.running = running.streams
        if self._memo and self.rates() != self._published:
            self._changed = True

    @workflow.signal(name=SET_LIMITS_SIGNAL)
    def set_limits(self, change: LimitChange) -> None:
        """Set and clear limits; waiting transfers see the change at once."""
        change = LimitChange.model_validate(change)
        values = self._s.limits.model_dump()
        values.update({k: v for k, v in change.set.model_dump().items() if v is not None})
        for name in change.unset:
            values[name] = None
        self._s.limits = Limits.model_validate(values)
        self._changed = True

    @workflow.query(name=SLOT_QUERY)
    def slot(self, ticket: str) -> SlotView:
        """Where ``ticket`` stands: granted (token, streams) or its place in line and
        why it waits."""
        s = self._s
        for h in s.holders:
            if h.ticket == ticket:
                return SlotView(known=True, granted=True, token=h.token, streams=h.streams)
        ordered = sorted(s.waiters, key=self._order)
        for place, w in enumerate(ordered, start=1):
            if w.ticket == ticket:
                if s.limits.max_active is not None and len(s.holders) >= s.limits.max_active:
                    busy = f"{len(s.holders)}/{s.limits.max_active} active"
                elif s.limits.max_streams is not None:
                    held = sum(h.streams for h in s.holders)
                    busy = f"{held}/{units.counted(s.limits.max_streams, 'stream')} in use"
                else:
                    busy = f"{len(s.holders)} active"
                opens = self._closed_until()
                if opens is not None:
                    busy = (
                        f"outside its window {s.limits.window} (opens "
                        f"{opens.strftime('%Y-%m-%d %H:%M:%S %Z')}), {busy}"
                    )
                return SlotView(
                    known=True,
                    position=place,
                    reason=f"waiting for {s.name}: {busy}, {_ordinal(place)} in line",
                )
        return SlotView(known=False)

    @workflow.query(name=RATES_QUERY)
    def rates(self) -> dict[str, float]:
        """Each holder's ticket -> bytes per second each of its streams may read
        (:meth:`per_stream_rate`); empty without ``max_rate``. Also published in the
        memo (:data:`RATES_MEMO`), which workers read instead (every second, for the
        streams they run: :mod:`staccato.workers.rates`); workers of older releases,
        and new ones for a run from before :data:`RATES_MEMO_PATCH`, ask this."""
        rate = self.per_stream_rate()
        return {} if rate is None else {h.ticket: rate for h in self._s.holders}

    @workflow.query(name=STATE_QUERY)
    def state(self) -> GovernorState:
        """The whole state (``staccato limit list``)."""
        return self._s
