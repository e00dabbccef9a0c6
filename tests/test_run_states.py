"""The one rule for an ended transfer run's state (staccato.run_states): Temporal's
execution status, except a run that ended Failed having recorded StaccatoState
``cancelled`` (a front run whose destination's transfer was cancelled), and the
visibility condition that selects the same runs for ``list --state``. Against the real
servers: tests/test_schedule.py::test_a_run_whose_destination_was_cancelled_shows_cancelled."""

from __future__ import annotations

import pytest
from temporalio.client import WorkflowExecutionStatus as Status

from staccato.models import TransferState as State
from staccato.run_states import ended_condition, ended_state


@pytest.mark.parametrize(
    ("status", "recorded", "shown"),
    [
        (Status.COMPLETED, "completed", State.completed),
        (Status.FAILED, "failed", State.failed),
        (Status.FAILED, None, State.failed),
        (Status.FAILED, "running", State.failed),  # failed before it recorded its end
        (Status.FAILED, "cancelled", State.cancelled),  # the front run's case
        (Status.CANCELED, "scheduled", State.cancelled),  # cancelled before its delayed start
        (Status.TERMINATED, "cancelled", State.failed),  # terminated: failed, whatever it said
        (Status.TIMED_OUT, None, State.failed),
        (None, None, State.failed),
    ],
)
def test_ended_state(status: Status | None, recorded: str | None, shown: State) -> None:
    assert ended_state(status, recorded) is shown


def test_ended_condition_follows_the_rule() -> None:
    """``cancelled`` takes the Failed runs that recorded cancelled, ``failed`` leaves
    them out (also when no state was recorded: IS NULL); no ended run is running."""
    cancelled = ended_condition("cancelled")
    failed = ended_condition("failed")
    assert cancelled is not None and failed is not None
    assert "ExecutionStatus = 'Canceled'" in cancelled
    assert "ExecutionStatus = 'Failed' AND StaccatoState = 'cancelled'" in cancelled
    assert "StaccatoState IS NULL OR StaccatoState != 'cancelled'" in failed
    assert "'Terminated'" in failed and "'TimedOut'" in failed
    assert ended_condition("completed") == "ExecutionStatus = 'Completed'"
    assert ended_condition("running") is None and ended_condition("nonsense") is None
