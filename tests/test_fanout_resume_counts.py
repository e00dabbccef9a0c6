"""A retried ``copy_batch_to_many`` (two local roots, a ``--sync-level`` re-run over
files up to date at both) counts the pairs its resume scan finds matching with their
file's group, when the checkpoint moves past it: every checkpoint it heartbeats
counts the files before its ``next_index`` only, so an attempt started from any of
them counts each pair once. Through 0.29 the scan counted them at once, so an
attempt killed after heartbeating them had them counted again by the next (a sync
re-run to two roots killed twice under load: 374-390 skipped of 300 files per root).
A cancel before the pass reached them still counts them at their roots (they hold
them), as before.

Run in Temporal's ``ActivityEnvironment`` (the real activity, its attempt and
checkpoint set as a retry's; every heartbeat captured) so each checkpoint can start
an attempt; the crash with a real worker: ``tests/test_dataset_sync_crash.py``."""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.testing import ActivityEnvironment

from staccato.activities import dataset, dataset_fanout
from staccato.datasets.models import (
    FanOutBatchCheckpoint,
    FanOutBatchFile,
    FanOutBatchInput,
    FanOutBatchResult,
)
from staccato.endpoints.file.driver import FileDriver
from staccato.models import SyncLevel, TransferOptions

FILES = 200


@activity.defn(name="copy_batch_to_many_as_in_a_process_pool", no_thread_cancel_exception=True)
def copy_batch_to_many_as_in_a_process_pool(batch: FanOutBatchInput) -> FanOutBatchResult:
    """``copy_batch_to_many`` as the worker runs it in its process pool: a cancel only
    sets the activity's cancelled event (nothing is raised into the running thread)."""
    return dataset_fanout.copy_batch_to_many(batch)


def _batch(tmp_path: Path) -> FanOutBatchInput:
    """``FILES`` small files, copied to two roots more than the local change-time
    slack ago (up to date at both: a resume finds every pair skipped)."""
    source = tmp_path / "src"
    source.mkdir()
    names = [f"f{i:04d}" for i in range(FILES)]
    for name in names:
        (source / name).write_bytes(os.urandom(100))
    roots = [tmp_path / "d1", tmp_path / "d2"]
    for root in roots:
        shutil.copytree(source, root)
    time.sleep(FileDriver.change_time_slack_s + 0.2)
    return FanOutBatchInput(
        source_root=source.as_uri() + "/",
        destination_roots=[r.as_uri() + "/" for r in roots],
        files=[FanOutBatchFile(name=n, size=100, targets=[0, 1]) for n in names],
        options=TransferOptions(sync_level=SyncLevel.checksum),
        key="resume-counts",
    )


def _attempt(
    batch: FanOutBatchInput,
    checkpoint: dict[str, Any],
    number: int,
    beats: list[FanOutBatchCheckpoint],
    cancel_when: Callable[[list[FanOutBatchCheckpoint]], bool] | None = None,
) -> FanOutBatchResult:
    """Attempt ``number`` of ``batch`` from ``checkpoint`` (the heartbeat details the
    server hands a retry); each heartbeat it sends is added to ``beats`` (a copy);
    the dataset's cancel lands with the first heartbeat for which ``cancel_when(beats)``
    holds."""
    environment = ActivityEnvironment()
    now = datetime.now(UTC)
    environment.info = dataclasses.replace(
        environment.info,
        activity_type="copy_batch_to_many",
        attempt=number,
        heartbeat_details=[checkpoint],
        heartbeat_timeout=timedelta(seconds=30),
        scheduled_time=now,
        started_time=now,
        start_to_close_timeout=timedelta(minutes=5),
    )

    def beat(*details: object) -> None:
        assert isinstance(details[0], FanOutBatchCheckpoint)
        beats.append(details[0].model_copy(deep=True))
        if cancel_when is not None and cancel_when(beats):
            environment.cancel()

    environment.on_heartbeat = beat
    return environment.run(copy_batch_to_many_as_in_a_process_pool, batch.model_copy(deep=True))


def _per_root(counts: FanOutBatchResult) -> list[tuple[int, int, int]]:
    return [(d.files_done, d.files_skipped, d.files_failed) for d in counts.destinations]


def test_each_checkpoint_of_a_retry_counts_each_pair_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dataset, "_HEARTBEAT_EVERY_S", 0.0)  # every beat is sent
    batch = _batch(tmp_path)
    start = FanOutBatchCheckpoint().model_dump(mode="json")  # the first attempt's first beat
    beats: list[FanOutBatchCheckpoint] = []
    result = _attempt(batch, start, 2, beats)
    assert _per_root(result) == [(0, FILES, 0), (0, FILES, 0)]
    assert (result.done, result.skipped, result.failed) == (0, FILES, 0)
    # an attempt killed after its scan heartbeated, before its pass counted a group:
    # the next one counts each pair once
    after_scan = next(
        b for b in reversed(beats) if b.next_index == 0 and b.current == batch.files[0].name
    )
    again = _attempt(batch, after_scan.model_dump(mode="json"), 3, [])
    assert _per_root(again) == [(0, FILES, 0), (0, FILES, 0)], after_scan
    assert (again.done, again.skipped, again.failed) == (0, FILES, 0)
    # what each checkpoint counts is the files before its next_index (none deferred):
    # the scan's matches past it are not in it
    scanning = [
        b for b in beats if b.next_index < FILES and b.current != batch.files[b.next_index].name
    ]
    assert len(scanning) > FILES / 2, len(scanning)  # the scan heartbeated its files
    wrong = [
        (b.next_index, b.current, _per_root(b))
        for b in beats
        if any(sum(counts) != b.next_index for counts in _per_root(b))
    ]
    assert wrong == [], f"{len(wrong)} checkpoints of {len(beats)}: {wrong[:3]}"


def test_a_cancel_before_the_pass_reached_them_counts_the_resumed_roots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dataset, "_HEARTBEAT_EVERY_S", 0.0)
    batch = _batch(tmp_path)
    start = FanOutBatchCheckpoint().model_dump(mode="json")
    # the cancel lands with the pass's first beat (the first file's again, after the
    # scan's last), its first group in flight
    first = batch.files[0].name
    last = batch.files[-1].name
    beats: list[FanOutBatchCheckpoint] = []
    result = _attempt(
        batch,
        start,
        2,
        beats,
        lambda seen: seen[-1].current == first and any(b.current == last for b in seen),
    )
    assert [b.current for b in beats].count(last) >= 1
    # the roots hold every file (the resume found them there): counted at each root;
    # the files the pass did not count are named (the cancel's, not handled)
    assert _per_root(result) == [(0, FILES, 0), (0, FILES, 0)]
    assert result.not_handled is not None
    counted = FILES - len(result.not_handled)
    assert counted < FILES and (result.done, result.skipped, result.failed) == (0, counted, 0)
