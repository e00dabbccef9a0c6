"""The stream lease: destination writes are fenced once the attempt went without a
heartbeat for its heartbeat timeout less the margin, and a late heartbeat does not
bring the lease back."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from staccato.activities.stream_lease import (
    CLOCK_SLACK_S,
    StreamLeaseExpiredError,
    leased,
    margin_s,
    renew,
)
from staccato.endpoints.base import write_fence


def test_margin_is_the_throttle_and_slack_or_a_quarter_of_a_short_timeout() -> None:
    assert margin_s(20) == 2.0
    assert margin_s(3) == 0.75
    assert margin_s(1) == 0.25


def test_writes_are_fenced_once_the_lease_ran_out_and_stay_fenced() -> None:
    with leased(2.0) as lease:  # expires 1.5 s after the last heartbeat
        assert lease is not None
        write_fence()
        time.sleep(0.6)
        renew(time.monotonic())  # a heartbeat in time: the lease runs from now
        time.sleep(0.6)
        write_fence()
        time.sleep(1.0)  # 1.6 s since the heartbeat
        with pytest.raises(StreamLeaseExpiredError) as expired:
            write_fence()
        assert expired.value.retryable
        assert "heartbeat timeout 2 s" in str(expired.value)
        renew(time.monotonic())  # a late heartbeat does not renew it
        with pytest.raises(StreamLeaseExpiredError):
            write_fence()
    write_fence()  # outside a stream: no fence


def test_without_a_heartbeat_timeout_nothing_is_fenced() -> None:
    with leased(None) as lease:
        assert lease is None
        write_fence()


def test_a_lease_runs_from_the_attempts_start_on_the_server() -> None:
    """An attempt the server started long ago (handed to a poll of a worker that was
    frozen, run only when it woke) starts with its lease run out; one started within
    the clock slack (the server's clock may be behind the worker's) does not."""
    now = datetime.now(UTC)
    with leased(4.0, now - timedelta(seconds=CLOCK_SLACK_S + 3.5)):
        with pytest.raises(StreamLeaseExpiredError, match="clock is ahead of the Temporal"):
            write_fence()  # names the other cause an operator can fix: a skewed clock
    with leased(4.0, now - timedelta(seconds=CLOCK_SLACK_S + 1.0)) as lease:
        write_fence()
        assert lease is not None
        renew(time.monotonic())  # a heartbeat: runs from now
        write_fence()
    with leased(4.0, now + timedelta(seconds=30)):  # the server's clock ahead: from now
        write_fence()
    with leased(4.0, datetime.fromtimestamp(0, UTC)):  # unset (the SDK's test environment)
        write_fence()
