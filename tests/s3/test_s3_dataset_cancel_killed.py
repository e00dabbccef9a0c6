"""A dataset to S3 (SeaweedFS) cancelled and then its worker SIGKILLed at once counts
every object its killed batches published after their last heartbeat
(``dataset-count-published-past-checkpoint``; the local-directory case and the why:
``tests/test_dataset_cancel_killed.py``)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from staccato.datasets.models import DatasetState
from tests.dataset_checks import wait_dataset
from tests.helpers import WorkerProcess, write_random
from tests.s3.conftest import queue_client, started_s3_worker
from tests.test_dataset_cancel_killed import (
    _counted_by_batches,
    cancel_until_batches_asked,
    paced_dataset_copying,
)

FILES = 400
SIZE = 32 * 1024


def _whole_objects(s3: Any, bucket: str, prefix: str, source: Path) -> int:
    """Objects under ``prefix`` whose bytes equal their source file's."""
    whole = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", ()):
            name = item["Key"][len(prefix) :]
            data = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            if data == (source / name).read_bytes():
                whole += 1
    return whole


async def test_cancel_then_sigkill_counts_every_object_published(
    temporal_server,
    s3_worker_env: dict[str, str],
    s3: Any,
    bucket: str,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    source = data_dir / "src"
    for i in range(FILES):
        path = source / f"d{i % 8}" / f"f{i:04d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_random(path, SIZE, seed=900 + i)
    prefix = f"cancel-killed-{time.time_ns()}/"
    first = started_s3_worker(temporal_server.address, s3_worker_env, tmp_path, processes=2)
    second: WorkerProcess | None = None
    try:
        client = await queue_client(temporal_server.address, first.task_queue)
        dataset, handle = await paced_dataset_copying(client, source, f"s3://{bucket}/{prefix}")
        await cancel_until_batches_asked(client, dataset, handle)
        first.kill()
        second = started_s3_worker(
            temporal_server.address, s3_worker_env, tmp_path, first.task_queue, processes=2
        )
        final = await wait_dataset(client, dataset, timeout_s=180)
        history = await handle.fetch_history()
    finally:
        first.kill()
        if second is not None:
            second.stop()
    whole = await asyncio.to_thread(_whole_objects, s3, bucket, prefix, source)
    assert final.state == DatasetState.cancelled, final
    assert 0 < whole < FILES, (whole, final)
    by_batches = await _counted_by_batches(client, history)
    if by_batches == whole:
        pytest.skip(
            f"the scene did not arise: the batches' last words count all {whole} objects "
            "there (none was published after a killed batch's last heartbeat)"
        )
    assert final.files_done == whole, (final.files_done, whole, by_batches, final)
    assert final.files_failed == 0 and final.failures == [], final
