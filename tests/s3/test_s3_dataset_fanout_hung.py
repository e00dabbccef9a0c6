"""A dataset to two roots, one of them a hung S3 server (SIGSTOPped: it accepts
connections and answers nothing): the batch to both roots (``copy_batch_to_many``)
gives up soon after ``--retry-for`` with the hang watch's words ("the server did not
answer", naming the roots, and the one whose call it interrupted), its status shows no since-start rate while nothing moves,
and the local root keeps whole files only (no temp file).

Before, ``copy_batch_to_many`` had no hang watch: its file thread stayed blocked on
the stopped server while its own thread kept heartbeating, and the dataset stayed
``running`` past ``--retry-for`` with no reason. Its heartbeat said nothing of when a
byte last moved either, so its status never claimed idle. Server: the session's
SeaweedFS, stopped and resumed (always, in a ``finally``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from staccato.client import StaccatoClient
from staccato.dataset_client import submit_dataset
from staccato.datasets.models import DatasetState
from staccato.models import TransferOptions
from tests.dataset_checks import status_when, wait_dataset
from tests.helpers import MiB, stopped_process_tree, write_random
from tests.s3.conftest import MeteredSeaweedS3

FILES = 200
FILE_BYTES = 20 * 1024
#: paced so the dataset lasts ~20 s and the server can be stopped mid-dataset
OPTIONS = TransferOptions(
    chunk_size=1 * MiB, streams=1, max_rate=200_000, retry_for_s=12, heartbeat_timeout_s=5
)
#: a correctness bound, not a speed one: the old code stayed running
GIVES_UP_WITHIN_S = 150.0


async def test_hung_s3_root_of_two_fails_the_dataset_soon_after_retry_for(
    s3_client: StaccatoClient, s3_server: MeteredSeaweedS3, s3: Any, bucket: str, data_dir: Path
) -> None:
    source = data_dir / "fan-hung-src"
    for i in range(FILES):
        path = source / f"d{i % 2}" / f"f{i:03d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_random(path, FILE_BYTES, seed=700 + i)
    local = data_dir / "fan-hung-out"
    hung_root = f"s3://{bucket}/fan-hung"
    dataset = await submit_dataset(s3_client, str(source), [str(local), hung_root], OPTIONS)
    before = await status_when(s3_client, dataset, lambda s: s.files_done >= 30, 120)
    assert before.state == DatasetState.running, before  # still copying: stop it now
    with stopped_process_tree(server_pid(s3_server)):
        stopped_at = time.monotonic()
        # nothing moves: the fan-out batch's heartbeat says since when (moved_at)
        still = await status_when(
            s3_client, dataset, lambda s: s.idle_since is not None, GIVES_UP_WITHIN_S
        )
        assert still.state == DatasetState.running, f"never idle while hung: {still}"
        assert still.rate_files_per_s is None and still.eta_s is None, still
        final = await wait_dataset(s3_client, dataset, timeout_s=GIVES_UP_WITHIN_S)
        took = time.monotonic() - stopped_at
    print(f"the dataset ended {final.state.value} {took:.1f} s after the server stopped")
    assert final.state in (DatasetState.completed_with_errors, DatasetState.failed), final
    reasons = [f.reason for f in final.failures] + ([final.error] if final.error else [])
    hung = [r for r in reasons if "did not answer" in r]
    assert hung, reasons
    print(f"a reason: {hung[-1]}")
    # the root that did not answer is told apart from the healthy one
    assert all(f"(no answer from {hung_root})" in r for r in hung), hung
    assert final.files_done >= before.files_done, (before, final)
    assert final.files_done + final.files_failed == FILES, final
    # the local root holds whole files of the source only: no temp file left
    found = sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file())
    assert len(found) >= final.files_done, found
    for name in found:
        assert (local / name).read_bytes() == (source / name).read_bytes(), name


def server_pid(server: MeteredSeaweedS3) -> int:
    assert server.pid is not None, "the S3 server is not running"
    return server.pid
