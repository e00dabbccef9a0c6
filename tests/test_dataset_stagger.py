"""A dataset's batches are staggered (``dataset-staggered-batches``): a run's first
``max_batches`` batches ramp up to ``batch_files`` files, the listing's first pages are
short (the ramp's first batch's entries, then twice as many, up to ``page_size``:
``dataset-short-first-page``), and the last
page is cut into shrinking batches, so batches do not all end together and no slot
idles while a round is dispatched. Against the session's real worker and Temporal:
every file arrives once, whole; the batches, read from the run's history (the
``copy_batch`` and ``list_entries`` inputs), are the sizes the rule gives and cover
the names in order, each once; and the history replays with the current code."""

from __future__ import annotations

import json
from pathlib import Path

from temporalio.api.enums.v1 import EventType

from staccato.client import StaccatoClient
from staccato.dataset_client import make_dataset_request, submit_dataset
from staccato.datasets.models import BATCH_FILES as BATCH_FILES_DEFAULT
from staccato.datasets.models import FAN_OUT_BATCH_FILES, DatasetState
from staccato.datasets.workflow import (
    DATASET_SHORT_FIRST_PAGE_PATCH,
    DATASET_STAGGER_PATCH,
    DatasetWorkflow,
)
from staccato.models import TransferOptions
from tests.dataset_checks import MiB, batch_sizes, tree, tree_difference, wait_dataset
from tests.helpers import replayer_of

FILES = 230
BATCH_FILES = 16
MAX_BATCHES = 4
PAGE_SIZE = 64


def _small_tree(root: Path, files: int) -> list[str]:
    """``files`` files of a few hundred bytes, 10 per directory; their relative names
    in listing order (bytewise)."""
    names = []
    for i in range(files):
        name = f"d{i // 10:03d}/f{i:05d}"
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes([i % 251]) * (100 + i))
        names.append(name)
    return sorted(names, key=lambda n: n.encode())


def _inputs(events: list, activity: str) -> list[dict]:
    """The JSON inputs of every ``activity`` scheduled, in history order."""
    found = []
    for event in events:
        if event.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            continue
        attrs = event.activity_task_scheduled_event_attributes
        if attrs.activity_type.name == activity:
            found.append(json.loads(attrs.input.payloads[0].data))
    return found


async def test_batches_ramp_up_and_shrink_and_every_file_arrives_once(
    client: StaccatoClient, data_dir: Path
) -> None:
    source, destination = data_dir / "src", data_dir / "dst"
    names = _small_tree(source, FILES)
    dataset = await submit_dataset(
        client,
        str(source),
        str(destination),
        options=TransferOptions(chunk_size=1 * MiB),
        batch_files=BATCH_FILES,
        max_batches=MAX_BATCHES,
        page_size=PAGE_SIZE,
    )
    final = await wait_dataset(client, dataset, timeout_s=180)
    assert final.state == DatasetState.completed, final
    assert final.files_done == FILES and final.files_failed == 0, final
    assert tree_difference(tree(destination), tree(source)) == []

    history = await client.temporal.get_workflow_handle(dataset).fetch_history()
    events = list(history.events)
    patches = [
        json.loads(e.marker_recorded_event_attributes.details["patch-data"].payloads[0].data)["id"]
        for e in events
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
        and e.marker_recorded_event_attributes.marker_name == "core_patch"
    ]
    assert DATASET_STAGGER_PATCH in patches, patches
    assert DATASET_SHORT_FIRST_PAGE_PATCH in patches, patches
    # pages: the ramp's first batch first (4 entries: copying starts after a short
    # listing), then doubling up to 64 (before: 40, 64, 64)
    limits = [i["limit"] for i in _inputs(events, "list_entries")]
    assert limits[:6] == [4, 8, 16, 32, 64, 64], limits
    batches = [[f["name"] for f in i["files"]] for i in _inputs(events, "copy_batch")]
    sizes = [len(b) for b in batches]
    # the ramp (4, 8, 12, 16), a batch ending with its page: pages of 4, 8, 16 and 32
    # entries give 4 | 8 | 12, 4 | 16, 16
    assert sizes[:6] == [4, 8, 12, 4, 16, 16], sizes
    assert sizes == batch_sizes(
        FILES, batch_files=BATCH_FILES, max_batches=MAX_BATCHES, page_size=PAGE_SIZE
    ), sizes
    # the last page's batches shrink (what is left / 4, at least 16 / 4)
    assert sizes[-3:] == sorted(sizes[-3:], reverse=True) and max(sizes[-3:]) < BATCH_FILES
    # every name once, in listing order
    assert [n for b in batches for n in b] == names

    # the run's history replays with this code (the patched path is deterministic)
    replayer = replayer_of(DatasetWorkflow)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure


def test_default_batch_size_single_root_and_several(data_dir: Path) -> None:
    """A request's batches hold up to 2,048 files by default (fewer batches: each costs
    its activity, workflow task and slot gap whatever its size; 1,024 cost ~15-20 % more
    CPU over all processes for 10,000 files of 64 KiB file->file); a dataset to several
    roots, whose batches write each file to every root, keeps 256; a request's own
    ``batch_files`` wins."""
    source = data_dir / "src"
    source.mkdir()
    one = make_dataset_request(str(source), str(data_dir / "a"))
    assert one.batch_files == BATCH_FILES_DEFAULT == 2048
    several = make_dataset_request(str(source), [str(data_dir / "a"), str(data_dir / "b")])
    assert several.batch_files == FAN_OUT_BATCH_FILES == 256
    assert make_dataset_request(str(source), str(data_dir / "a"), batch_files=7).batch_files == 7
    several = make_dataset_request(
        str(source), [str(data_dir / "a"), str(data_dir / "b")], batch_files=9
    )
    assert several.batch_files == 9
