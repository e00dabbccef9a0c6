"""A dataset that gives up (``--retry-for``) on a hung S3 destination counts as done
every file its batch published, also those that ended past the batch's checkpoint
(its first file not ended), and fails only the others: the state reported matches
what the destination holds.

Before (tester62): a batch copies up to ``FILES_IN_FLIGHT`` files at once and its
checkpoint counts files in order; a small file that ended while large ones before it
were still in flight was published but not counted, and when the batch failed for
good the workflow failed every file from the checkpoint on, that one too ("its batch
failed: ... the server did not answer"), though it was whole at the destination.

Here: three large files first (paced: in flight a long while), then small ones; the
first small file is published beside them, then the server (the session's SeaweedFS)
is stopped (SIGSTOP, resumed always) and the dataset gives up.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import pytest

from staccato.activities.dataset import FILES_IN_FLIGHT
from staccato.client import StaccatoClient
from staccato.dataset_client import submit_dataset
from staccato.datasets.models import DatasetState
from staccato.models import TransferOptions
from tests.dataset_checks import wait_dataset
from tests.helpers import MiB, stopped_process_tree, write_random
from tests.s3.conftest import MeteredSeaweedS3
from tests.s3.s3util import keys

LARGE = ["L1.bin", "L2.bin", "L3.bin"]  # sort first ('L' < 'f'): the batch's first files
#: bytes of the large files per number of roots: with several roots, files up to
#: one chunk are read whole by the batch (larger ones are fan-out groups of their own)
LARGE_BYTES = {1: 8 * MiB, 2: 1 * MiB}
SMALL = [f"f{i:03d}.bin" for i in range(20)]
SMALL_BYTES = 20 * 1024
#: bytes/s: the large files in flight for ~24 s (one root: read a chunk at a time,
#: together) or ~4 s each (two roots: each read whole, one after the other)
RATES = {1: 1 * MiB, 2: 256 * 1024}
#: one batch of every file, paced
OPTIONS = {
    roots: TransferOptions(
        chunk_size=1 * MiB,
        streams=1,
        max_rate=RATES[roots],
        retry_for_s=8,
        heartbeat_timeout_s=5,
    )
    for roots in (1, 2)
}
#: correctness bounds, not speed ones
PUBLISHED_WITHIN_S = 60.0
GIVES_UP_WITHIN_S = 180.0


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _whole(s3: Any, bucket: str, prefix: str, sources: dict[str, str]) -> set[str]:
    """The names whose object under ``prefix`` holds their source's bytes (sha256)."""
    present = {k.removeprefix(prefix) for k in keys(s3, bucket) if k.startswith(prefix)}
    return {
        name
        for name in present & set(sources)
        if _digest(s3.get_object(Bucket=bucket, Key=prefix + name)["Body"].read()) == sources[name]
    }


def _first_small_published(s3: Any, bucket: str, prefix: str, sources: dict[str, str]) -> set[str]:
    """Wait (bounded) until the first small file is whole at the destination while the
    large ones are not there yet; returns what is whole then."""
    deadline = time.monotonic() + PUBLISHED_WITHIN_S
    while True:
        whole = _whole(s3, bucket, prefix, sources)
        if SMALL[0] in whole:
            return whole
        assert time.monotonic() < deadline, f"{SMALL[0]} never published: {whole}"
        time.sleep(0.05)


@pytest.mark.parametrize("roots", [1, 2], ids=["one-root", "two-roots"])
async def test_gave_up_dataset_counts_the_files_published_past_its_checkpoint(
    s3_client: StaccatoClient,
    s3_server: MeteredSeaweedS3,
    s3: Any,
    bucket: str,
    data_dir: Path,
    roots: int,
) -> None:
    """One root (``copy_batch``) and two (``copy_batch_to_many``, whose checkpoint
    moves a group of files at a time: the group's small file ended, not counted)."""
    source = data_dir / "gave-up-src"
    source.mkdir()
    sources = {
        name: write_random(source / name, LARGE_BYTES[roots], seed=i)
        for i, name in enumerate(LARGE)
    }
    sources |= {
        name: write_random(source / name, SMALL_BYTES, seed=100 + i) for i, name in enumerate(SMALL)
    }
    prefixes = [f"gave-up-{r}/" for r in range(roots)]
    destinations = [f"s3://{bucket}/{p}" for p in prefixes]
    dataset = await submit_dataset(
        s3_client,
        f"{source}/",
        destinations[0] if roots == 1 else destinations,
        options=OPTIONS[roots],
        batch_files=64,
        max_batches=1,
    )
    at_freeze = {p: _first_small_published(s3, bucket, p, sources) for p in prefixes}
    for prefix, whole in at_freeze.items():
        # the batch's first files in flight with it: not all ended yet
        if roots > 1 and not set(LARGE) - whole:
            # with two roots the batch may read the large files one after the other,
            # all before the small one (ci77): the scene did not arise, nothing to judge
            pytest.skip(f"{prefix}: the large files ended before {SMALL[0]}: {sorted(whole)}")
        assert set(LARGE) - whole, f"{prefix}: the large files ended too soon: {whole}"
    assert s3_server.pid is not None, "the S3 server is not running"
    with stopped_process_tree(s3_server.pid):
        final = await wait_dataset(s3_client, dataset, timeout_s=GIVES_UP_WITHIN_S)
    print(f"ended {final.state.value}: {final.files_done} done, {final.files_failed} failed")
    assert final.state in (DatasetState.completed_with_errors, DatasetState.failed), final
    failed = {f.name for f in final.failures}
    assert len(failed) == final.files_failed, final
    assert len(final.failures) == final.files_failed * roots, final.failures
    assert any("did not answer" in f.reason for f in final.failures), final.failures
    # every file is accounted for, once
    assert final.files_done + final.files_skipped + final.files_failed == len(sources), final
    assert final.files_skipped == 0, final
    done = set(sources) - failed
    assert final.files_done == len(done), (final, sorted(done))
    assert SMALL[0] in done
    for prefix in prefixes:
        whole = _whole(s3, bucket, prefix, sources)  # the server answers again
        print(f"{prefix} whole at the freeze: {sorted(at_freeze[prefix])}; now: {sorted(whole)}")
        # a file published before the server stopped is never reported failed
        assert not failed & at_freeze[prefix], (
            f"{prefix}: published before the freeze, reported failed: {failed & at_freeze[prefix]}"
        )
        # a failed file that is whole now was in flight at the freeze (its last request
        # answered once the server woke): a few at most
        late = failed & whole
        assert len(late) <= FILES_IN_FLIGHT, f"{prefix}: failed yet whole: {sorted(late)}"
        # every file counted done is whole at the destination
        assert done <= whole, f"{prefix}: counted done, not whole: {sorted(done - whole)}"
