"""The way from a transfer's start to its first stream, counted in its history on a
real worker: the control lookups (link tuning memory, known copy, governors) are one
activity and one workflow task, not one each."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType

from staccato import tuning
from staccato.client import StaccatoClient
from staccato.models import TransferOptions
from tests.helpers import MiB, sha256_file, write_random


async def _before_first_stream(client: StaccatoClient, transfer: str) -> tuple[list[str], int]:
    """The activities scheduled and the workflow tasks started before the first
    ``copy_stream`` was scheduled."""
    activities: list[str] = []
    tasks = 0
    async for event in client.temporal.get_workflow_handle(transfer).fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            if name == "copy_stream":
                return activities, tasks
            activities.append(name)
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            tasks += 1
    raise AssertionError(f"{transfer} scheduled no copy_stream")


@pytest.mark.parametrize("tuned", [False, True], ids=["fixed", "tuned"])
async def test_one_control_activity_before_the_first_stream(
    client: StaccatoClient, nginx_ranges, http_root: Path, data_dir: Path, tuned: bool
) -> None:
    size = tuning.MIN_TUNED_BYTES if tuned else 3 * MiB
    name = f"start-path-{tuned}.bin"
    digest = write_random(http_root / name, size, seed=7)
    destination = data_dir / f"start-path-{tuned}.bin"
    options = TransferOptions(tuning=True) if tuned else TransferOptions(chunk_size=MiB)
    transfer = await client.submit(nginx_ranges.url(name), str(destination), options)
    result = await client.wait(transfer)
    assert sha256_file(destination) == digest
    assert result.read_from == "origin"
    assert (result.tuning is not None) == tuned
    activities, tasks = await _before_first_stream(client, transfer)
    # before: find_known_copy and find_governors (and recall_link_tuning when tuned),
    # each with a workflow task of its own
    assert activities == ["look_up_start"], activities
    assert tasks == 2, tasks
