"""A dataset batch's pacer: one token bucket for all its files in flight (threads),
reading the rate board as a stream's pacer does, and none at all when no rate can
apply (an unpaced batch does no pacing work per file)."""

from __future__ import annotations

import threading
import time

from staccato.activities.dataset import batch_pacer
from staccato.activities.pacing import BURST_S, Pacer, SharedPacer
from staccato.datasets.models import BatchFile, BatchInput
from staccato.models import TransferOptions
from tests.helpers import MiB


def batch(max_rate: int | None = None, governors: list[str] | None = None) -> BatchInput:
    return BatchInput(
        source_root="/src",
        destination_root="/dst",
        files=[BatchFile(name="a", size=1)],
        options=TransferOptions(max_rate=max_rate),
        key="ds-run-b1",
        governors=governors or [],
    )


def test_no_pacer_without_a_rate_or_a_slot() -> None:
    assert batch_pacer(batch()) is None
    paced = batch_pacer(batch(max_rate=MiB))
    assert paced is not None and paced.rate() == MiB


def test_threads_of_a_batch_share_one_bucket() -> None:
    """4 threads take 2 MiB each (64 KiB at a time) from a 4 MiB/s board share: the
    8 MiB take >= 8 MiB / 4 MiB/s - the bucket's burst, not a quarter of it."""
    pacer = SharedPacer(None, "ds-run-b1", board={"ds-run-b1": 4 * MiB})
    pacer.start(time.sleep)

    def drain() -> None:
        for _ in range(32):
            pacer.take(64 * 1024, time.sleep)

    threads = [threading.Thread(target=drain) for _ in range(4)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - began
    assert took >= 8 * MiB / (4 * MiB) - BURST_S - 0.05, took


def test_own_rate_and_board_share_the_lower_wins_and_changes_are_seen() -> None:
    board = {"ds-run-b1": 8 * MiB}
    pacer = SharedPacer(2 * MiB, "ds-run-b1", board=board)
    pacer.start(time.sleep)
    assert pacer.rate() == 2 * MiB
    board["ds-run-b1"] = 1 * MiB
    deadline = time.monotonic() + 5
    while pacer.rate() != 1 * MiB:
        assert time.monotonic() < deadline, "the lowered share was not seen"
        time.sleep(0.05)
    board["ds-run-b1"] = float("inf")  # no max_rate at its governors: its own rate
    deadline = time.monotonic() + 5
    while pacer.rate() != 2 * MiB:
        assert time.monotonic() < deadline, "the lifted share was not seen"
        time.sleep(0.05)


def test_a_paced_reads_average_never_exceeds_its_rate() -> None:
    """A staging read's loop (step, read, then wait for the bytes' time) at 8 MB/s:
    the rate it shows (:meth:`Pacer.average`, the bytes paid for since the pacer's
    window began) never exceeds the rate, from its first beat on. The bytes read over
    the time since the read began did early on (tester69: 8.2 MiB/s under a 7.63 MiB/s
    cap): the start credit and the step read ahead of its wait count at once."""
    rate = 8_000_000
    pacer = Pacer(rate, None)
    began = time.monotonic()
    read = 0
    shown: list[float] = []
    read_over_time: list[float] = []
    while read < rate:  # one second of reading
        step = pacer.step(time.sleep)
        assert step is not None
        read += step
        now = time.monotonic()
        shown.append(pacer.average(began, now))
        read_over_time.append(read / (now - began))
        pacer.take(step, time.sleep)
    assert max(shown) <= rate, max(shown)
    # the figure it replaced: above the rate early on (the scene is real)
    assert max(read_over_time) > rate, max(read_over_time)
