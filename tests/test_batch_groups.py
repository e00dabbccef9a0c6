"""A batch of small local files (``copy_batch``) commits them in groups of at least
``GROUP_MIN_FILES`` (the last group of the batch aside), not in whatever was staged
while the previous commit ran: that made the first group one file and the next ones
~8-10 (each directory ``fsync``-ed, each group handed to the sync threads, that often:
10,000 files of 64 KiB file->file made 1,240 directory ``fsync`` calls).

Run in Temporal's ``ActivityEnvironment`` (the real activity) on a real file system;
``LocalGroup.commit`` is only wrapped to record the size of each group it is given.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from staccato.activities import dataset
from staccato.datasets.models import BatchFile, BatchInput, BatchResult
from staccato.endpoints.file.group import LocalGroup, StagedFile
from staccato.errors import StaccatoError
from staccato.models import TransferOptions

FILES = 200
SIZE = 64 * 1024


def test_a_batch_commits_groups_of_at_least_the_minimum(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, destination = tmp_path / "src", tmp_path / "dst"
    bodies = {f"d{i // 100}/f{i:04d}": os.urandom(SIZE) for i in range(FILES)}
    past = time.time() - 3600
    for name, body in bodies.items():
        path = source / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        os.utime(path, (past, past))
    # the rule by count only: a loaded machine may take longer than the hold to stage
    # a group, which would commit a smaller one (as it should, for a slow source)
    monkeypatch.setattr(dataset, "GROUP_HOLD_S", 3600.0)
    groups: list[int] = []
    commit = LocalGroup.commit

    def recorded(self: LocalGroup, staged: list[StagedFile]) -> list[StaccatoError | None]:
        groups.append(len(staged))
        return commit(self, staged)

    monkeypatch.setattr(LocalGroup, "commit", recorded)
    batch = BatchInput(
        source_root=f"file://{source}",
        destination_root=f"file://{destination}",
        files=[BatchFile(name=name, size=SIZE) for name in sorted(bodies)],
        options=TransferOptions(),
        key="batch-groups-test",
    )
    result = ActivityEnvironment().run(dataset.copy_batch, batch)
    assert result == BatchResult(done=FILES, bytes=FILES * SIZE), result
    assert sum(groups) == FILES, groups
    assert all(size >= dataset.GROUP_MIN_FILES for size in groups[:-1]), groups
    assert all(size <= dataset.GROUP_FILES for size in groups), groups
    for name, body in bodies.items():
        assert (destination / name).read_bytes() == body, name
    left = [p for p in destination.rglob("*") if ".staccato-" in p.name]
    assert left == [], left
