"""A hung S3 server (SIGSTOPped: it accepts connections and answers nothing) during a
dataset: its batches give up soon after ``--retry-for`` with the single transfer's
words ("the server did not answer", naming the destination), the files done before
stay done, and while nothing moves its status shows no since-start rate.

Before the batch's hang watch (``copy_batch`` in staccato/activities/dataset.py, the
single transfer's in staccato/activities/retry_deadline.py), a batch's file threads
stayed blocked on the stopped server while its own thread kept heartbeating: the
dataset stayed ``running`` with no reason, its status showing "file rate 10.3
files/s" a minute into the silence (tester). Server: the session's SeaweedFS, stopped
and resumed (always, in a ``finally``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from staccato.cli.datasets import progress_text
from staccato.client import StaccatoClient
from staccato.dataset_client import submit_dataset
from staccato.datasets.models import DatasetState, DatasetStatus
from staccato.models import TransferOptions
from tests.dataset_checks import status_when, wait_dataset
from tests.helpers import MiB, stopped_process_tree, write_random
from tests.s3.conftest import MeteredSeaweedS3
from tests.s3.s3util import keys, open_uploads, put_with_crc32c

FILES = 300
FILE_BYTES = 20 * 1024
#: paced so the dataset lasts ~15 s and the server can be stopped mid-dataset
OPTIONS = TransferOptions(
    chunk_size=1 * MiB, streams=1, max_rate=400_000, retry_for_s=12, heartbeat_timeout_s=5
)
#: a correctness bound, not a speed one: the old code stayed running for good
GIVES_UP_WITHIN_S = 150.0


def _source(root: Path) -> None:
    for i in range(FILES):
        path = root / f"d{i % 3}" / f"f{i:03d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_random(path, FILE_BYTES, seed=300 + i)


async def _hung_mid_dataset(
    client: StaccatoClient, server: MeteredSeaweedS3, dataset: str, names: str
) -> tuple[DatasetStatus, DatasetStatus]:
    """Stop ``server`` once the dataset copied 40 files; a status a few seconds into the
    silence shows no rate; the dataset ends within :data:`GIVES_UP_WITHIN_S`, failing
    the files left with the hang's words naming ``names`` (a root). Returns the status
    before the stop and the final one."""
    before = await status_when(client, dataset, lambda s: s.files_done >= 40, 120)
    assert before.state == DatasetState.running, before  # still copying: stop it now
    assert server.pid is not None, "the S3 server is not running"
    with stopped_process_tree(server.pid):
        stopped_at = time.monotonic()
        # a few seconds into the silence: no since-start rate that looks alive
        # (rates also go while nothing is in flight or a step retries: the idle
        # status is the one that says since when nothing moved)
        still = await status_when(
            client, dataset, lambda s: s.idle_since is not None, GIVES_UP_WITHIN_S
        )
        assert still.state == DatasetState.running, (
            f"the status never said nothing moves while nothing moved: {still}"
        )
        assert still.rate_files_per_s is None and still.rate_bytes_per_s is None, still
        assert still.eta_s is None, still
        text = progress_text(still)
        assert "nothing moved since" in text and "files/s" not in text, text
        final = await wait_dataset(client, dataset, timeout_s=GIVES_UP_WITHIN_S)
        took = time.monotonic() - stopped_at
    print(f"the dataset ended {final.state.value} {took:.1f} s after the server stopped")
    assert final.state in (DatasetState.completed_with_errors, DatasetState.failed), final
    reasons = [f.reason for f in final.failures] + ([final.error] if final.error else [])
    hung = [r for r in reasons if "did not answer" in r]
    assert hung, reasons
    print(f"while hung: idle since {still.idle_since}; a reason: {hung[-1]}")
    assert all(names in r for r in hung), hung
    # the files done before the hang stay done, every file is accounted for
    assert final.files_done >= before.files_done, (before, final)
    assert final.files_done + final.files_failed == FILES, final
    return before, final


async def test_hung_s3_destination_fails_the_dataset_soon_after_retry_for(
    s3_client: StaccatoClient, s3_server: MeteredSeaweedS3, s3: Any, bucket: str, data_dir: Path
) -> None:
    """The tester's case: local files to S3 (each a PutObject, four at once)."""
    source = data_dir / "hung-src"
    _source(source)
    root = f"s3://{bucket}/hung"
    dataset = await submit_dataset(s3_client, str(source), root, options=OPTIONS)
    _, final = await _hung_mid_dataset(s3_client, s3_server, dataset, root)
    assert len(keys(s3, bucket)) >= final.files_done
    assert open_uploads(s3, bucket) == []


async def test_hung_s3_source_fails_the_dataset_leaving_no_temp_file(
    s3_client: StaccatoClient, s3_server: MeteredSeaweedS3, s3: Any, bucket: str, data_dir: Path
) -> None:
    """S3 objects to a local directory (each a GetObject staged for a group commit):
    the files done are there whole, and no temp file is left beside them."""
    source = data_dir / "up"
    _source(source)
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        put_with_crc32c(s3, bucket, f"src/{path.relative_to(source)}", path)
    out = data_dir / "out"
    root = f"s3://{bucket}/src"
    dataset = await submit_dataset(s3_client, f"{root}/", str(out), options=OPTIONS)
    _, final = await _hung_mid_dataset(s3_client, s3_server, dataset, root)
    found = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert len(found) == final.files_done, found  # no temp file left
    for name in found:
        assert (out / name).read_bytes() == (source / name).read_bytes(), name
