"""Recorded workflow histories (transfers, datasets, fan-out groups, governors) replay with the current code.

Every ``tests/workflow/histories/<release>/<scenario>.json`` is a real history
recorded by ``scripts/record-histories`` against real servers with that release's
code (completed, paused and resumed, cancelled, failed, a stream retried after a
worker was killed, SFTP and S3 destinations, a source read twice before publish, a
source rewritten in place mid-copy; since 0.2.0 also front runs that completed,
waited, failed on a busy destination and were cancelled, sync runs up to date and
copied, and a transfer that received progress reports). Replaying it runs the workflow code of this checkout over the recorded events: a
change to the commands the workflow issues (an activity, a timer, a search-attribute
upsert added, removed or reordered) that is not behind ``workflow.patched`` raises a
nondeterminism error here, the error a running transfer would hit on the next
worker deploy. Histories of older releases are kept so they keep replaying.
A few were captured by hand from a test's run, for a fault no scenario records:
``0.30.0/prepare-local-attempt-timed-out.json`` (moto SIGSTOPped: the local first
attempt of ``prepare`` timed out and the step went on as a regular activity, whose
replay failed the workflow before 0.31.0).
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory

from staccato.datasets.workflow import DatasetWorkflow
from staccato.ids import transfer_id
from staccato.workers.worker import WORKFLOW_RUNNER
from staccato.workflows.fanout import FanOutWorkflow
from staccato.workflows.governor import GovernorWorkflow
from staccato.workflows.transfer import TransferWorkflow
from tests.helpers import replayer_of
from tests.workflow.record_histories import SCENARIOS, release

HISTORIES = Path(__file__).resolve().parent / "histories"
FIXTURES = sorted(HISTORIES.glob("*/*.json"))
#: every workflow a fixture may hold (the replayer picks by the recorded type)
WORKFLOWS = [TransferWorkflow, DatasetWorkflow, FanOutWorkflow, GovernorWorkflow]


def _name(path: Path) -> str:
    return str(path.relative_to(HISTORIES))


def test_there_are_histories_to_replay() -> None:
    """The replay test cannot pass by finding nothing."""
    assert FIXTURES, f"no recorded histories under {HISTORIES}; run scripts/record-histories"


def _release_key(folder: Path) -> tuple[int, ...]:
    """``0.10.0`` sorts after ``0.9.1``: a release folder's name as numbers.

    Raises:
        AssertionError: naming the folder whose name is not a release ``X.Y.Z``.
    """
    parts = folder.name.split(".")
    assert all(part.isdigit() for part in parts), f"{folder}: not a release folder (X.Y.Z)"
    return tuple(int(part) for part in parts)


def test_every_scenario_has_a_recorded_history() -> None:
    """A scenario added to the recorder is recorded (and so replayed) before it counts:
    the newest release's folder holds every scenario (older ones keep what their
    release recorded)."""
    releases = sorted((p for p in HISTORIES.iterdir() if p.is_dir()), key=_release_key)
    assert releases, f"no release folder under {HISTORIES}; run scripts/record-histories"
    newest = releases[-1]
    assert newest.name == release(), (
        f"the newest recorded release is {newest.name}, the installed one {release()}: "
        f"run scripts/record-histories for {release()}"
    )
    recorded = {path.stem for path in newest.glob("*.json")}
    missing = sorted(set(SCENARIOS) - recorded)
    assert not missing, (
        f"{newest.name} has no recorded history of {missing}; run scripts/record-histories"
    )


def recorded_history(fixture: Path) -> WorkflowHistory:
    """The fixture's history under the workflow id it ran with.

    The workflow reads its own id (a run under another id than its destination's
    transfer id is a front run), so replaying under any other id would take other
    paths than the recorded run did. Fixtures since 0.2.0 carry ``workflowId``, and so
    does 0.1.0's ``raw_start_own_id`` (a plain-client start under ``manual-raw-1``,
    which 0.1.0 ran as a transfer writing itself: it keeps the front-run and
    visible-at-start guards honest); the other 0.1.0 ones were started by
    ``StaccatoClient.submit``, under the destination's transfer id, derived here from
    the start event's input.
    """
    data = json.loads(fixture.read_text())
    workflow_id = data.pop("workflowId", None)
    if workflow_id is None:
        started = data["events"][0]["workflowExecutionStartedEventAttributes"]
        request = json.loads(base64.b64decode(started["input"]["payloads"][0]["data"]))
        workflow_id = transfer_id(request["destination"])
    return WorkflowHistory.from_json(workflow_id, data)


#: the release folders, each replayed as one group: one replay worker per release
#: rather than one per history (680 workers cost ~0.3 s each; the histories replay
#: the same, each on its own run, and a failure names every history that failed)
RELEASES = sorted({fixture.parent for fixture in FIXTURES}, key=_release_key)


@pytest.mark.parametrize("folder", RELEASES, ids=lambda folder: folder.name)
async def test_recorded_histories_replay(folder: Path) -> None:
    """Every history of one release replays with the current workflow code."""
    fixtures = sorted(folder.glob("*.json"))
    assert fixtures, f"{folder}: no recorded history"
    histories: list[WorkflowHistory] = []
    names: dict[str, list[str]] = {}
    for fixture in fixtures:
        history = recorded_history(fixture)
        assert history.events, f"{_name(fixture)}: empty history"
        histories.append(history)
        names.setdefault(history.run_id, []).append(_name(fixture))

    async def each() -> AsyncIterator[WorkflowHistory]:
        for history in histories:
            yield history

    # two histories of one run id would share one entry of the failures: none do
    shared = {run_id: both for run_id, both in names.items() if len(both) > 1}
    assert not shared, f"histories recorded under one run id: {shared}"
    replayer = replayer_of(*WORKFLOWS, workflow_runner=WORKFLOW_RUNNER)
    results = await replayer.replay_workflows(each(), raise_on_replay_failure=False)
    failures = [
        f"{names[run_id][0]}: {type(failure).__name__}: {failure}"
        for run_id, failure in sorted(
            results.replay_failures.items(), key=lambda item: names[item[0]][0]
        )
    ]
    if failures:
        pytest.fail(
            f"{len(failures)} of {len(histories)} histories of {folder.name} no longer "
            f"replay with the current workflow code (a command added, removed or "
            f"reordered outside workflow.patched?):\n" + "\n".join(failures)
        )
