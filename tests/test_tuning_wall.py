"""The optimizer's measurement (patch ``tune-wall-rate``): a setting rated by what the
link moved per second of workflow time while it ran (``tuning.WallMeter``), against
the stream-seconds of the first segments to finish (the windows before the patch).

No timing: the segments' times are constructed, or simulated in simulated seconds."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from staccato import tuning
from staccato.tuning import Decision, Span, TuningState, WallMeter, Window

MB = 1_000_000
MiB = 1024 * 1024
GiB = 1024 * MiB


# -- the meter on constructed spans ------------------------------------------------------


def test_every_segment_counts_for_its_time_in_the_window() -> None:
    """Two streams, 10 MiB segments. The window opens at the first start (0) and closes
    where the workflow knows every segment's time: the earliest start of the segments
    still running, once two segments' worth moved before it. Segment 2 ran 5..10: 3 of
    its 5 seconds are in the window [0, 8], so 6 MiB of its 10 count."""
    meter = WallMeter()
    meter.started(0, 0.0)
    meter.started(1, 0.0)
    assert not meter.finished(0, Span(0.0, 5.0, 10 * MiB), 2)  # segment 1 (from 0) runs
    meter.started(2, 5.0)
    meter.started(3, 8.0)
    # known up to 5 (segment 2 runs): 10 + 10 x 5/8 MiB moved, less than 20
    assert not meter.finished(1, Span(0.0, 8.0, 10 * MiB), 2)
    assert meter.finished(2, Span(5.0, 10.0, 10 * MiB), 2)  # known up to 8 (segment 3)
    window = meter.window(2, bytes_left=123)
    assert window is not None
    assert window.seconds == 8.0
    assert window.bytes == 10 * MiB + 10 * MiB + 6 * MiB
    assert window.stream_seconds == 5 + 8 + 3 and window.segments == 3
    assert window.bytes_left == 123
    rate = window.bytes / 8.0
    # the rate the optimizer takes is the link's: bytes per second of the window
    _, decision = tuning.observe(tuning.start(None, sweep=True, knee=True)[0], window)
    assert decision.rate == pytest.approx(rate)


def _closed_at_4() -> WallMeter:
    """Two streams: segments 0 and 1 ran 0..4, segments 2 and 3 started at 4 (the
    window [0, 4] closed, its verdict due)."""
    meter = WallMeter()
    meter.started(0, 0.0)
    meter.started(1, 0.0)
    assert not meter.finished(0, Span(0.0, 4.0, 8 * MiB), 2)
    meter.started(2, 4.0)
    assert meter.finished(1, Span(0.0, 4.0, 8 * MiB), 2)
    meter.started(3, 4.0)
    window = meter.window(2)
    assert window is not None and (window.bytes, window.seconds) == (16 * MiB, 4.0)
    return meter


def test_a_change_opens_the_next_window_once_the_old_setting_drained() -> None:
    """A decision that keeps the streams opens the next window where the last one
    closed. After a decision to run other streams, the segments started before it are
    not the new setting's: the next window opens when the last of them ends."""
    held = _closed_at_4()
    held.decided(4.0, 2, 2)
    assert held.opened == 4.0 and held.spans == [] and not held.waiting

    more = _closed_at_4()
    more.decided(4.0, 2, 4)
    assert more.opened is None and more.waiting == {2, 3}
    more.started(4, 4.0)
    more.started(5, 4.0)
    assert not more.finished(2, Span(4.0, 9.0, 8 * MiB), 4)
    assert more.opened is None
    more.started(6, 9.0)
    assert not more.finished(3, Span(4.0, 10.0, 8 * MiB), 4)
    assert more.opened == 10.0 and more.spans == []
    # segments 4, 5 and 6 started under 4 streams before it opened: counted for their
    # time in it
    assert not more.finished(4, Span(4.0, 12.0, 8 * MiB), 4)
    assert more.spans == [Span(4.0, 12.0, 8 * MiB)]


def _first_window_closed() -> WallMeter:
    """Four streams from 0; the first window (not compared) closed at 2 on two segments,
    segments 4 and 5 started then; segments 2 and 3 of the first wave still run."""
    meter = WallMeter()
    for i in range(4):
        meter.started(i, 0.0)
    assert not meter.finished(0, Span(0.0, 2.0, 8 * MiB), 4, warm_up=True)
    meter.started(4, 2.0)
    assert meter.finished(1, Span(0.0, 2.0, 8 * MiB), 4, warm_up=True)
    first = meter.window(4)
    assert first is not None and first.seconds is None  # stream-seconds
    meter.started(5, 2.0)
    return meter


def test_the_first_window_is_not_waited_for_and_its_wave_drains() -> None:
    """The transfer's first window (not compared) closes on its segments as before,
    rated by their stream-seconds; the next opens when the first wave (its start-up in
    it) has ended, not before. Had the first window's errors backed off to fewer
    streams, it waits for every segment running (all started under the old setting)."""
    meter = _first_window_closed()
    meter.decided(2.0, 4, 4)
    assert meter.waiting == {2, 3}  # the first wave, not segments 4 and 5
    assert not meter.finished(2, Span(0.0, 3.0, 8 * MiB), 4)
    assert not meter.finished(3, Span(0.0, 3.5, 8 * MiB), 4)
    assert meter.opened == 3.5
    backed_off = _first_window_closed()
    backed_off.decided(2.0, 4, 3)
    assert backed_off.waiting == {2, 3, 4, 5} and backed_off.opened is None


def test_a_pause_or_a_dropped_segment_discards_the_window_and_the_tail_rates_by_streams() -> None:
    meter = WallMeter()
    meter.started(0, 0.0)
    meter.started(1, 0.0)
    meter.dropped(1)  # stopped by a pause: what it moved in the window is unknown
    assert meter.opened is None and meter.running == {0: 0.0}
    meter.started(1, 3.0)  # resumed: a new window
    assert meter.opened == 3.0
    meter.ran_out()  # a lane found nothing left: fewer streams than the setting run
    # no more may come to fill the window: it closes on two segments that ran in it,
    # without waiting for the known time to pass its bytes
    assert not meter.finished(0, Span(0.0, 4.0, 8 * MiB), 2)
    assert meter.finished(1, Span(3.0, 5.0, 8 * MiB), 2)
    tail = meter.window(2)
    assert tail is not None and tail.seconds is None  # rated as streams x per stream
    assert (tail.bytes, tail.stream_seconds) == (2 * MiB + 8 * MiB, 1.0 + 2.0)


def test_a_window_of_no_time_never_closes() -> None:
    """Segments that took no workflow time (a time-skipping test server): nothing is
    known past the window's opening, so it measures nothing and decides nothing."""
    meter = WallMeter()
    for i in range(2):
        meter.started(i, 1.0)
    assert not meter.finished(0, Span(1.0, 1.0, MiB), 2)
    assert not meter.finished(1, Span(1.0, 1.0, MiB), 2)
    assert meter.closing is None


# -- a tuned transfer simulated lane by lane ---------------------------------------------


@dataclass
class Link:
    """Profile B as the WAN bench builds it: 100 MB/s a connection, the server slowing
    each response as (knee / n)^2 past ``knee`` requests at once, ``total`` in all.
    Each segment costs ``cost`` seconds before its bytes move (the activity's start,
    its connection) and ``end_cost`` after (the last fdatasync, the result); each
    lane's first segment starts up to ``startup`` seconds later still (the worker's
    processes starting), lane by lane."""

    per_connection: float = 100 * MB
    total: float = 372 * MiB
    knee: int = 6
    cost: float = 0.1
    end_cost: float = 0.05
    startup: float = 1.0

    def share(self, n: int) -> float:
        """Bytes/s each of ``n`` transferring streams gets."""
        per = self.per_connection * min(1.0, (self.knee / n) ** 2)
        return min(n * per, self.total) / n


@dataclass
class Run:
    """What a simulated transfer decided and what its link moved."""

    decisions: list[Decision] = field(default_factory=list)
    #: per decision: the streams the window ran and the rate it was rated
    rated: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0
    state: TuningState | None = None


def simulate(
    link: Link,
    *,
    wall: bool,
    size: int = 4 * GiB,
    segment: int = 64 * MiB,
    fixed: int | None = None,
    dt: float = 0.005,
) -> Run:
    """A tuned transfer run as the workflow runs it: lanes, each taking the next
    segment as its last one ends; a lane above the optimizer's streams idles. The
    windows are the workflow's: with ``wall``, :class:`WallMeter` (patch
    ``tune-wall-rate``); without, the windows before it (stream-seconds of the first
    ``max(2, ceil(streams / 2))`` segments started under the current setting alone,
    ``TransferWorkflow._tune_measure``). ``fixed``: no optimizer, that many streams."""
    state, _ = tuning.start(None, sweep=True, knee=True)
    lanes = fixed or state.streams
    queue = list(range(-(-size // segment)))
    running: dict[int, dict[str, float]] = {}
    busy: set[int] = set()
    started: set[int] = set()
    meter = WallMeter()
    epoch, draining, window = 0, set[int](), [0, 0.0, 0]
    run = Run()
    now = 0.0

    def decide(w: Window) -> None:
        nonlocal state, lanes, epoch, draining
        rate = w.bytes / w.seconds if w.seconds else w.bytes / w.stream_seconds * lanes
        state, decision = tuning.observe(state, w)
        run.decisions.append(decision)
        run.rated.append((lanes, rate))
        if decision.streams != lanes:
            epoch += 1
            draining = set(running) if decision.streams < lanes else set()
            lanes = decision.streams

    for _ in range(200_000):  # bounded: 1,000 simulated seconds
        if not queue and not running:
            break
        for lane in range(tuning.MAX_STREAMS):
            if lane in busy or lane >= lanes or not queue:
                continue
            index = queue.pop(0)
            alone = len(running) < lanes and not draining & set(running)
            delay = link.startup * (lane % 8) / 7 if lane not in started else 0.0
            started.add(lane)
            running[index] = {
                "lane": lane,
                "start": now,
                "cost": link.cost + delay,
                "left": min(segment, size - index * segment),
                "end": link.end_cost,
                "epoch": epoch if alone else -1,
            }
            busy.add(lane)
            meter.started(index, now)
        if not queue:
            meter.ran_out()
        moving = [r for r in running.values() if r["cost"] <= 0 < r["left"]]
        for r in moving:
            r["left"] -= link.share(len(moving)) * dt
        for r in running.values():
            if r["cost"] > 0:
                r["cost"] -= dt
            elif r["left"] <= 0:
                r["end"] -= dt
        now += dt
        for index in sorted(i for i, r in running.items() if r["left"] <= 0 and r["end"] <= 0):
            r = running.pop(index)
            busy.discard(int(r["lane"]))
            length = min(segment, size - index * segment)
            left = len(queue) * segment
            if fixed:
                continue
            if wall:
                span = Span(r["start"], now, length)
                if meter.finished(index, span, lanes, warm_up=state.warm_up):
                    before = lanes
                    w = meter.window(lanes, bytes_left=left)
                    assert w is not None
                    decide(w)
                    meter.decided(now, before, lanes)
            elif r["epoch"] == epoch:
                window = [window[0] + length, window[1] + now - r["start"], window[2] + 1]
                if window[2] >= max(2, (state.streams + 1) // 2):
                    w = Window(
                        bytes=int(window[0]),
                        stream_seconds=window[1],
                        segments=int(window[2]),
                        bytes_left=left,
                    )
                    window = [0, 0.0, 0]
                    decide(w)
    run.seconds, run.state = now, state
    return run


def test_a_fixed_cost_per_segment_does_not_make_past_the_knee_look_better() -> None:
    """Profile B (the bench's server: past 6 requests at once each one slows), segments
    of 64 MiB costing 0.4 s each besides their bytes, and the first wave's start-up.
    At fixed settings the link moves less at 12 streams than at 8. The windows before
    the patch rated 8 streams by the slow half of the first wave (about two thirds of
    the link's rate, as the bench saw: 251-276 MiB/s against ~372), so 12 looked
    better by more than it must pay (+30 %), the sweep went on to 16 and the search
    held 12; rated by the link's bytes per second, 8 measures the link's rate and 12
    less, and the search holds 8, the whole copy faster."""
    link = Link(cost=0.3, end_cost=0.1)
    at8 = simulate(link, wall=True, fixed=8).seconds
    at12 = simulate(link, wall=True, fixed=12).seconds
    assert at12 > at8  # the link moves less at 12 streams than at 8

    old = simulate(link, wall=False)
    assert [s for s, _ in old.rated[:3]] == [8, 8, 12], old.rated
    (_, second), (_, at_12) = old.rated[1], old.rated[2]
    assert second < 0.7 * link.total and at_12 > 1.3 * second, old.rated
    assert [d.streams for d in old.decisions[:3]] == [8, 12, 16], old.decisions
    assert old.state is not None and old.state.streams == 12, old.decisions

    new = simulate(link, wall=True)
    assert [s for s, _ in new.rated[:3]] == [8, 8, 12], new.rated
    assert new.rated[1][1] == pytest.approx(link.total, rel=0.05), new.rated
    assert new.rated[2][1] < new.rated[1][1], new.rated
    assert "holding 8" in new.decisions[2].reason, new.decisions[2]
    assert new.state is not None and new.state.streams == 8
    assert max(d.streams for d in new.decisions) == 12
    assert new.seconds < old.seconds
