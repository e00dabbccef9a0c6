"""A dataset batch that fails for good after publishing some of its files: an SFTP
destination on a small file system (a tmpfs mounted by the test; needs root) fills up
under the batch, the server answers every further write with a bare ``Failure`` (a
transient error for Staccato) and the batch gives up at its ``--retry-for``. The files
it published are counted copied, only the others failed, and ``--retry-failed`` (with
room again) copies just those."""

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
from tests.helpers import MiB, mounted_tmpfs

FILES = 30
FILE_SIZE = 512 * 1024
#: a 10 MiB file system holds fewer than FILES files of FILE_SIZE (15 MiB; it was 30 of
#: 2 MiB on 40 MiB: four times the SFTP copying for the same checks)
#: ``--retry-for`` 3 s: once the disk is full every attempt fails at once, at the first
#: failure + 1, 3, 7, 15 s (backoffs of 1, 2, 4, 8 s), and the batch gives up in the
#: first attempt started 3 s after its last file handled (``retry_deadline``): the one
#: at + 3 s (or + 7 s); with 15 s, the one at + 15 s (the test's 42 s in CI). Attempt 1
#: never gives up (it started before the deadline), nor does an attempt that handles
#: files, so the files before the disk filled are published as before.
#: The heartbeat timeout is the default 20 s, not 5 s: the batch's hang watch gives an
#: attempt past ``--retry-for`` 0.6 x the heartbeat timeout without a byte moved (3 s
#: with 5 s), and at load 12-17 the first attempt's SSH connection took longer than
#: that, so ci99's batch gave up as hung ("the server did not answer: no byte moved")
#: before any file was published; 12 s rides that out (nothing here hangs: the full
#: disk fails each write at once)
OPTIONS = TransferOptions(chunk_size=1 * MiB, retry_for_s=3, heartbeat_timeout_s=20)


@pytest.fixture
def small_fs(data_dir: Path) -> Iterator[Path]:
    """A 10 MiB tmpfs under ``data_dir`` (unmounted after the test)."""
    with mounted_tmpfs(data_dir / "small", "10m") as small:
        yield small


def _source(root: Path) -> dict[str, bytes]:
    root.mkdir()
    files = {f"f{i:02d}.bin": os.urandom(FILE_SIZE) for i in range(1, FILES + 1)}
    for name, data in files.items():
        (root / name).write_bytes(data)
    return files


async def test_a_batch_failed_for_good_counts_the_files_it_published(
    sftp_client: StaccatoClient, sftp_url, data_dir: Path, small_fs: Path
) -> None:
    source = data_dir / "ds1"
    files = _source(source)
    destination = small_fs / "sm"
    kwargs = dict(
        options=OPTIONS, small_file_max=4 * MiB, batch_files=64, max_batches=1, timeout_s=180
    )
    first = await run_dataset(sftp_client, str(source), sftp_url(destination), **kwargs)
    assert first.state == DatasetState.completed_with_errors, first
    published = {
        name
        for name, data in files.items()
        if (destination / name).is_file() and (destination / name).read_bytes() == data
    }
    failed = {f.name for f in first.failures}
    assert 0 < len(published) < FILES, (published, first)
    # every published file is counted copied, every other one failed (before: the whole
    # batch was failed, published files included)
    assert failed == set(files) - published, (sorted(failed), sorted(published))
    assert first.files_done == len(published), first
    assert first.files_failed == FILES - len(published), first
    # the batch gave up itself, --retry-for after its last file, in the workflow's
    # words with its last error (before: that error alone, when Temporal's deadline,
    # --retry-for from the batch's start, left no time for a next attempt)
    # The file the batch failed on keeps that error as its own; the batch's other
    # files name it (patch dataset-failed-file-named; before, every file was given the
    # error, which named the one file's temp path)
    own = [f for f in first.failures if f.reason.startswith("its batch failed: gave up")]
    assert len(own) == 1, [f.reason for f in first.failures]
    (failed_on,) = own
    for failure in first.failures:
        assert "gave up: the copy_batch step" in failure.reason, failure
        assert "--retry-for 3 s without progress" in failure.reason, failure
        if failure is not failed_on:
            assert failure.reason.startswith(
                f"its batch failed on another of its files, {failed_on.name}: gave up"
            ), failure

    # room again: --retry-failed copies only the files that failed
    subprocess.run(["mount", "-o", "remount,size=200m", str(small_fs)], check=True)
    # (with the --retry-for of before, 15 s: a transient error here is ridden out as it was)
    again = await run_dataset(
        sftp_client,
        str(source),
        sftp_url(destination),
        retry_failed=True,
        **{**kwargs, "options": OPTIONS.model_copy(update={"retry_for_s": 15})},
    )
    assert again.state == DatasetState.completed, again
    assert again.files_done == len(failed) and again.files_skipped == 0, again
    assert {
        name: (destination / name).read_bytes() == data for name, data in files.items()
    } == dict.fromkeys(files, True)
