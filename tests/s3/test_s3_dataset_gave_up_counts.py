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
LARGE_BYTES = 8 * MiB
SMALL = [f"f{i:03d}.bin" for i in range(20)]
SMALL_BYTES = 20 * 1024
#: one batch of every file; paced so the large files are in flight for ~24 s
OPTIONS = TransferOptions(
    chunk_size=1 * MiB, streams=1, max_rate=1 * MiB, retry_for_s=8, heartbeat_timeout_s=5
)
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


async def test_gave_up_dataset_counts_the_files_published_past_its_checkpoint(
    s3_client: StaccatoClient, s3_server: MeteredSeaweedS3, s3: Any, bucket: str, data_dir: Path
) -> None:
    source = data_dir / "gave-up-src"
    source.mkdir()
    sources = {
        name: write_random(source / name, LARGE_BYTES, seed=i) for i, name in enumerate(LARGE)
    }
    sources |= {
        name: write_random(source / name, SMALL_BYTES, seed=100 + i) for i, name in enumerate(SMALL)
    }
    prefix = "gave-up/"
    dataset = await submit_dataset(
        s3_client,
        f"{source}/",
        f"s3://{bucket}/{prefix}",
        options=OPTIONS,
        batch_files=64,
        max_batches=1,
    )
    at_freeze = _first_small_published(s3, bucket, prefix, sources)
    assert not set(LARGE) & at_freeze, f"the large files ended too soon: {at_freeze}"
    assert s3_server.pid is not None, "the S3 server is not running"
    with stopped_process_tree(s3_server.pid):
        final = await wait_dataset(s3_client, dataset, timeout_s=GIVES_UP_WITHIN_S)
    print(f"ended {final.state.value}: {final.files_done} done, {final.files_failed} failed")
    assert final.state in (DatasetState.completed_with_errors, DatasetState.failed), final
    failed = {f.name for f in final.failures}
    assert len(failed) == final.files_failed == len(final.failures), final
    assert any("did not answer" in f.reason for f in final.failures), final.failures
    # every file is accounted for, once
    assert final.files_done + final.files_skipped + final.files_failed == len(sources), final
    assert final.files_skipped == 0, final

    whole = _whole(s3, bucket, prefix, sources)  # the server answers again
    print(
        f"whole at the freeze: {sorted(at_freeze)}; now: {sorted(whole)}; failed: {sorted(failed)}"
    )
    # a file published before the server stopped is never reported failed
    assert not failed & at_freeze, (
        f"published before the freeze, reported failed: {failed & at_freeze}"
    )
    # a failed file that is whole now was in flight at the freeze (its last request
    # answered once the server woke): a few at most
    late = failed & whole
    assert len(late) <= FILES_IN_FLIGHT, f"failed yet whole: {sorted(late)}"
    # every file counted done is whole at the destination, and so is every one not failed
    done = set(sources) - failed
    assert done <= whole, f"counted done, not whole: {sorted(done - whole)}"
    assert final.files_done == len(done), (final, sorted(done))
    assert SMALL[0] in done
