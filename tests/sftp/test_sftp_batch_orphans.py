"""abort_batch_orphans on an SFTP root goes on past a file whose directory is gone."""

from __future__ import annotations

import time
from pathlib import Path

from temporalio.testing import ActivityEnvironment

from staccato.activities.dataset import abort_batch_orphans
from staccato.datasets.models import BatchOrphansInput
from staccato.endpoints.file.session import session_paths
from staccato.urls import parse_url


def test_batch_orphans_on_sftp_go_on_past_a_missing_directory(
    driver_env: Path, sftp_url, tmp_path: Path
) -> None:
    """An ended batch's sessions are removed file by file: a file whose directory is
    gone (nothing was written for it) is skipped, and the next file's temp file and
    journal still go. A tester's dataset (sshd killed mid-batch) kept
    ``.f227.dat.….staccato-part``/``-journal`` for good: the clean-up stopped at the
    first file, "destination directory …/d5 does not exist"."""
    root = tmp_path / "root"
    root.mkdir()
    key = "batch-k"
    temp, journal = session_paths(parse_url(f"file://{root}/b"), f"{key}-1")
    Path(temp).write_bytes(b"x" * 10)
    Path(journal).write_bytes(b"")
    request = BatchOrphansInput(
        destination_root=sftp_url(root),
        names=["gone/a", "b"],
        since=time.time() - 10,
        session_key=key,
        sizes=[10, 10],
        chunk_size=1 << 20,
    )
    ActivityEnvironment().run(abort_batch_orphans, request)
    assert sorted(p.name for p in root.iterdir()) == []
