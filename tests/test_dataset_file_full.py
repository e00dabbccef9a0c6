"""A dataset batch writing small files to a local file system that fills up (a tmpfs
mounted by the test; needs root): as on an SFTP destination
(tests/sftp/test_sftp_dataset_full.py), a full disk is transient, so the batch is
retried and gives up at its ``--retry-for``; the files it published are counted
copied, only the others failed (in the workflow's give-up words, naming the free
space), and ``--retry-failed`` (with room again) copies just those. Before, each file
meeting the full disk failed at once, without a retry."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from staccato.client import StaccatoClient
from staccato.datasets.models import DatasetState
from staccato.models import TransferOptions
from tests.dataset_checks import run_dataset
from tests.helpers import MiB, leftovers, mounted_tmpfs

FILES = 30
FILE_SIZE = 2 * MiB
#: a 40 MiB file system holds fewer than FILES files of FILE_SIZE (60 MiB)
OPTIONS = TransferOptions(chunk_size=1 * MiB, retry_for_s=15, heartbeat_timeout_s=5)


@pytest.fixture
def small_fs(data_dir: Path) -> Iterator[Path]:
    """A 40 MiB tmpfs under ``data_dir`` (unmounted after the test)."""
    with mounted_tmpfs(data_dir / "small", "40m") as small:
        yield small


def _source(root: Path) -> dict[str, bytes]:
    root.mkdir()
    files = {f"f{i:02d}.bin": os.urandom(FILE_SIZE) for i in range(1, FILES + 1)}
    for name, data in files.items():
        (root / name).write_bytes(data)
    return files


async def test_a_batch_on_a_full_local_disk_gives_up_at_retry_for(
    client: StaccatoClient, data_dir: Path, small_fs: Path
) -> None:
    source = data_dir / "ds1"
    files = _source(source)
    destination = small_fs / "sm"
    kwargs = dict(
        options=OPTIONS, small_file_max=4 * MiB, batch_files=64, max_batches=1, timeout_s=180
    )
    first = await run_dataset(client, str(source), str(destination), **kwargs)
    assert first.state == DatasetState.completed_with_errors, first
    published = {
        name
        for name, data in files.items()
        if (destination / name).is_file() and (destination / name).read_bytes() == data
    }
    failed = {f.name for f in first.failures}
    assert 0 < len(published) < FILES, (published, first)
    assert failed == set(files) - published, (sorted(failed), sorted(published))
    assert first.files_done == len(published), first
    assert first.files_failed == FILES - len(published), first
    # the batch retried the full disk and gave up itself, --retry-for after its last
    # file, with the free space as its last error (before: each file failed at once)
    # the error is one file's (its path, the space it needs): that file's reason; the
    # others name that file as the one their batch failed on, never as their own
    # (tester75: f0088 failed with "not enough space for .../f0080.bin")
    own = [f for f in first.failures if "its batch failed: gave up" in f.reason]
    assert len(own) == 1, [f.reason for f in first.failures]
    assert f"{destination / own[0].name}" in own[0].reason, own[0]
    for failure in first.failures:
        assert "gave up: the copy_batch step" in failure.reason, failure
        assert "--retry-for 15 s without progress" in failure.reason, failure
        assert f"mounted at {small_fs}" in failure.reason, failure
        assert "bytes free" in failure.reason, failure
        if failure is not own[0]:
            lead = f"its batch failed on another of its files, {own[0].name}: gave up"
            assert failure.reason.startswith(lead), failure
        others = [name for name in files if name != failure.name and name != own[0].name]
        assert not any(f"/{name}" in failure.reason for name in others), failure
    assert leftovers(destination) == []

    # room again: --retry-failed copies only the files that failed
    subprocess.run(["mount", "-o", "remount,size=200m", str(small_fs)], check=True)
    again = await run_dataset(client, str(source), str(destination), retry_failed=True, **kwargs)
    assert again.state == DatasetState.completed, again
    assert again.files_done == len(failed) and again.files_skipped == 0, again
    assert {
        name: (destination / name).read_bytes() == data for name, data in files.items()
    } == dict.fromkeys(files, True)
