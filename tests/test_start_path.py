"""The way from a transfer's start to its first stream, counted in its history on a
real worker: the control lookups (link tuning memory, known copy, governors) are one
local activity in the workflow task that schedules the streams, not an activity and a
workflow task each (nor one control-queue activity and its workflow task)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType

from staccato import tuning
from staccato.client import StaccatoClient
from staccato.models import TransferOptions
from tests.dataset_checks import submit_dataset, wait_dataset
from tests.helpers import MiB, sha256_file, write_random


async def _before_first_stream(
    client: StaccatoClient, transfer: str
) -> tuple[list[str], list[str]]:
    """The activities scheduled and the local activities recorded (their markers)
    before the first ``copy_stream`` was scheduled."""
    activities: list[str] = []
    local: list[str] = []
    async for event in client.temporal.get_workflow_handle(transfer).fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            if name == "copy_stream":
                return activities, local
            activities.append(name)
        elif event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            details = event.marker_recorded_event_attributes.details
            if "data" in details and details["data"].payloads:
                local.append(json.loads(details["data"].payloads[0].data).get("activity_type"))
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
    activities, local = await _before_first_stream(client, transfer)
    # before: look_up_start on the control queue, and a workflow task for its result;
    # earlier still find_known_copy and find_governors (and recall_link_tuning when
    # tuned), each an activity with a workflow task of its own
    assert activities == [], activities
    assert "look_up_start" in local, local


async def test_a_dataset_looks_up_its_governors_beside_its_first_page(
    client: StaccatoClient, data_dir: Path
) -> None:
    """A dataset's first workflow task schedules ``find_governors`` with its first
    ``list_entries``: the first batch waits for the page only (it waited for the
    page, then the lookup and one more workflow task)."""
    source = data_dir / "src"
    source.mkdir()
    for n in range(3):
        (source / f"f{n}").write_bytes(b"x" * n)
    dataset = await submit_dataset(client, str(source), str(data_dir / "dst"))
    result = await wait_dataset(client, dataset, timeout_s=120)
    assert result.files_done == 3, result
    scheduled: dict[int, str] = {}
    first_completed: int | None = None
    async for event in client.temporal.get_workflow_handle(dataset).fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            scheduled[event.event_id] = (
                event.activity_task_scheduled_event_attributes.activity_type.name
            )
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            first_completed = first_completed or event.event_id
    assert first_completed is not None
    before = [name for event_id, name in sorted(scheduled.items()) if event_id < first_completed]
    assert before == ["list_entries", "find_governors"], scheduled
