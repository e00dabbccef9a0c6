"""A worker SIGKILLed mid-upload: a new worker completes the multipart upload and sends
only the parts S3 did not hold.

What is measured, on the server (SeaweedFS's Prometheus counters for the test's own
bucket): after the kill the test lists the upload's parts (ListParts); from then on the
store must receive exactly one successful UploadPart per part it did not hold, and
exactly their bytes (``SeaweedFS_s3_bucket_traffic_received_bytes_total``): no part it
already held is uploaded again. (The new worker re-*reads* those held parts from the
file source to checksum them, because SeaweedFS's ListParts reports no part checksums;
that read is local and not counted here.)
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from staccato.client import StaccatoClient
from staccato.models import TransferOptions, TransferState
from staccato.plan import chunk_bounds, chunk_count
from tests.helpers import MiB, WorkerProcess, child_pids, pid_alive, write_random
from tests.s3.conftest import MeteredSeaweedS3, _start_without_inherited_aws, queue_client, settled
from tests.s3.s3util import file_crc32c, object_digest, open_uploads

SIZE = 200 * MiB
CHUNK = 5 * MiB
STREAMS = 2
OPTIONS = TransferOptions(chunk_size=CHUNK, streams=STREAMS, heartbeat_timeout_s=3)


def _parts(s3: Any, bucket: str, key: str, upload_id: str) -> dict[int, str]:
    parts: dict[int, str] = {}
    marker = 0
    while True:
        page = s3.list_parts(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumberMarker=marker, MaxParts=1000
        )
        parts.update({p["PartNumber"]: p["ETag"] for p in page.get("Parts") or []})
        if not page.get("IsTruncated"):
            return parts
        marker = int(page["NextPartNumberMarker"])


@pytest.mark.slow
async def test_resume_after_worker_kill_uploads_only_missing_parts(
    temporal_server,
    s3_server: MeteredSeaweedS3,
    s3_worker_env: dict[str, str],
    s3: Any,
    bucket: str,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    source = data_dir / "big.bin"
    digest = write_random(source, SIZE, seed=11)
    total = chunk_count(SIZE, CHUNK)
    first = WorkerProcess(temporal_server.address, processes=2, env=s3_worker_env, log_dir=tmp_path)
    _start_without_inherited_aws(first)
    client = await queue_client(temporal_server.address, first.task_queue)
    transfer = await client.submit(str(source), f"s3://{bucket}/big.bin", OPTIONS)

    deadline = time.monotonic() + 60
    upload_id = None
    while time.monotonic() < deadline:
        uploads = open_uploads(s3, bucket)
        if uploads:
            upload_id = uploads[0]["UploadId"]
            if len(_parts(s3, bucket, "big.bin", upload_id)) >= 4:
                break
        await asyncio.sleep(0.02)
    assert upload_id, "the multipart upload never started"
    pool = child_pids(first.process.pid)
    first.kill()
    while any(pid_alive(p) for p in pool) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # let the store drop the dead worker's half-sent parts

    held = _parts(s3, bucket, "big.bin", upload_id)
    assert 4 <= len(held) < total, f"kill should land mid-upload ({len(held)}/{total} parts)"
    puts_before = s3_server.request_count(bucket, "PUT")
    received_before = s3_server.received_bytes(bucket)

    second = WorkerProcess(
        temporal_server.address,
        task_queue=first.task_queue,
        processes=2,
        env=s3_worker_env,
        log_dir=tmp_path,
    )
    _start_without_inherited_aws(second)
    try:
        result = await asyncio.wait_for(client.wait(transfer), 120)
    finally:
        second.stop()
    assert result.bytes == SIZE
    assert result.checksum == f"crc32c:{file_crc32c(source)}"
    assert object_digest(s3, bucket, "big.bin") == digest
    assert open_uploads(s3, bucket) == []

    missing = [i for i in range(total) if i + 1 not in held]
    missing_bytes = sum(chunk_bounds(i, SIZE, CHUNK)[1] for i in missing)
    sent_after = settled(lambda: s3_server.request_count(bucket, "PUT") - puts_before, len(missing))
    received_after = settled(
        lambda: s3_server.received_bytes(bucket) - received_before, missing_bytes
    )
    print(
        f"parts held at the kill: {len(held)}/{total}; after restart: {sent_after} UploadPart, "
        f"{received_after} bytes received (missing parts: {len(missing)})"
    )
    assert sent_after == len(missing)
    assert received_after == missing_bytes
    status = await client.status(transfer)
    assert status.state == TransferState.completed


@pytest.mark.slow
async def test_part_slower_than_the_heartbeat_timeout_completes(
    profile_client: StaccatoClient,
    s3_server: MeteredSeaweedS3,
    s3: Any,
    bucket: str,
    data_dir: Path,
) -> None:
    """Two 24 MiB parts over a 2 MB/s uplink take ~12 s each, twice the 6 s heartbeat
    timeout: the stream heartbeats while a part is being sent, so no attempt is timed
    out (every activity ran once: ActivityTaskStarted attempt 1) and each part is
    uploaded exactly once. (The SDK sends a heartbeat 0.8 x the timeout after the
    last one: 6 s leaves 1.2 s for it to reach the server on a loaded machine, where
    3 s left 0.6 s and once missed.)"""
    source = data_dir / "src.bin"
    digest = write_random(source, 48 * MiB, seed=12)
    options = TransferOptions(chunk_size=24 * MiB, streams=2, heartbeat_timeout_s=6)
    transfer = await profile_client.submit(
        str(source), f"s3://{bucket}/slow.bin?profile=slow", options
    )
    result = await asyncio.wait_for(profile_client.wait(transfer), 120)
    assert result.bytes == 48 * MiB
    assert object_digest(s3, bucket, "slow.bin") == digest
    history = await profile_client.temporal.get_workflow_handle(transfer).fetch_history()
    attempts = [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
    ]
    why = [
        str(e.activity_task_started_event_attributes.last_failure.message)
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
        and e.activity_task_started_event_attributes.attempt > 1
    ]
    assert attempts and set(attempts) == {1}, f"retried: attempts {attempts}, because {why}"
    puts = settled(lambda: s3_server.request_count(bucket, "PUT", code=None), 3)
    assert puts == 1 + 2  # CreateBucket + 2 parts
