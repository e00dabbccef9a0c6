"""A dataset to several roots cancelled while a file is between its roots: the roots
written before the stop are published, so they must be counted (a cancelled dataset's
per-root counts equal the files at that root; CI once saw 104 counted against 108
published, one file per thread in flight)."""

from __future__ import annotations

from pathlib import Path

import pytest

from staccato.activities.dataset_fanout import (
    _copy_file,
    _count,
    _Down,
    _StoppedBetweenRoots,
)
from staccato.activities.stream_progress import StreamStopped
from staccato.datasets.models import (
    DestinationCounts,
    FanOutBatchCheckpoint,
    FanOutBatchFile,
    FanOutBatchInput,
)
from staccato.models import TransferOptions
from staccato.urls import parse_url


def test_a_file_stopped_between_its_roots_counts_the_root_written(tmp_path: Path) -> None:
    source, one, two = tmp_path / "src", tmp_path / "one", tmp_path / "two"
    for d in (source, one, two):
        d.mkdir()
    (source / "f").write_bytes(b"x" * 3000)
    request = FanOutBatchInput(
        source_root=source.as_uri() + "/",
        destination_roots=[one.as_uri() + "/", two.as_uri() + "/"],
        files=[FanOutBatchFile(name="f", size=3000, targets=[0, 1])],
        options=TransferOptions(),
        key="k",
    )
    beats = 0

    def beat() -> None:  # the dataset's cancel lands after the first root's write
        nonlocal beats
        beats += 1
        if beats > 1:
            raise StreamStopped("batch stopped")

    roots = [parse_url(r) for r in request.destination_roots]
    with pytest.raises(_StoppedBetweenRoots) as stopped:
        _copy_file(request, 0, parse_url(request.source_root), roots, [0, 1], _Down(), beat)
    assert (one / "f").read_bytes() == b"x" * 3000 and not (two / "f").exists()
    assert sorted(p.name for p in two.iterdir()) == []  # no temp file left either
    end = stopped.value.end
    assert end.outcomes[0] == ("c", "") and end.outcomes[1][0] == "d"
    state = FanOutBatchCheckpoint(
        destinations=[DestinationCounts(destination=r) for r in request.destination_roots]
    )
    _count(request, state, 0, end)
    assert state.destinations[0].files_done == 1 and state.destinations[0].bytes_done == 3000
    assert state.destinations[1].files_done == 0
    # the file itself is not done (a root is missing): it stays named as not handled
    assert state.done == 0 and [0, 1] in state.deferred
