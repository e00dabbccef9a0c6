"""A worker SIGKILLed while a dataset's batch uploads files to S3 by multipart upload
(files over one chunk, under ``small_file_max``) leaves no multipart upload behind.

A multipart upload cannot be found again by its key (S3 returns no metadata in
ListMultipartUploads), and a killed worker aborts nothing: the retried batch finds
the uploads its earlier attempt started on the files that may have been in flight
(by key and start time, under the dataset's lock) and aborts them. Counted at the
store: ListMultipartUploads under the dataset's prefix is empty once it completes (the
old code left each in-flight file's upload open: storage billed, invisible).

A dataset cancelled while such a batch waits for its retry never runs the batch
again: its cancel aborts them instead (the batch's keys, from when it was first
scheduled; the old code ended the dataset with the uploads still open).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowExecutionStatus
from temporalio.worker import Worker

from staccato.client import StaccatoClient
from staccato.dataset_client import cancel_dataset, submit_dataset
from staccato.datasets.models import DatasetState
from staccato.models import TransferOptions
from staccato.workers.worker import TASK_QUEUE_WORKFLOWS, WORKFLOW_RUNNER
from tests.dataset_checks import MiB, wait_dataset
from tests.helpers import WorkerProcess, child_pids, pid_alive, write_random
from tests.s3.conftest import queue_client, started_s3_worker

FILES = 10
SIZE = 6 * MiB  # two parts of a 5 MiB chunk: a multipart upload each
# the batch reads as one stream at this rate, so it lasts ~8 s: a kill finds uploads open
OPTIONS = TransferOptions(chunk_size=5 * MiB, heartbeat_timeout_s=2, max_rate=8 * MiB)


def _open_uploads(s3: Any, bucket: str, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix)
    return [u["Key"] for page in pages for u in page.get("Uploads", [])]


async def _kill_with_an_upload_open(
    worker: WorkerProcess, s3: Any, bucket: str, prefix: str, timeout_s: float = 60
) -> list[str]:
    """SIGKILL ``worker`` once a multipart upload under ``prefix`` is open at the store
    (bounded by ``timeout_s``), then wait until its activity processes are gone;
    returns the keys whose uploads were open at the kill."""
    deadline = time.monotonic() + timeout_s
    open_at_kill: list[str] = []
    while time.monotonic() < deadline and not open_at_kill:
        open_at_kill = await asyncio.to_thread(_open_uploads, s3, bucket, prefix)
        if not open_at_kill:
            await asyncio.sleep(0.05)
    pool = child_pids(worker.process.pid)
    worker.kill()
    assert open_at_kill, f"no multipart upload was seen open within {timeout_s} s"
    while any(pid_alive(p) for p in pool) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return open_at_kill


async def test_a_killed_batch_leaves_no_multipart_upload(
    temporal_server,
    s3_worker_env: dict[str, str],
    s3: Any,
    bucket: str,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    source = data_dir / "src"
    source.mkdir()
    digests = {
        f"f{i:02d}": write_random(source / f"f{i:02d}", SIZE, seed=40 + i) for i in range(FILES)
    }
    prefix = f"orphans-{time.time_ns()}/"
    first = started_s3_worker(temporal_server.address, s3_worker_env, tmp_path)
    second: WorkerProcess | None = None
    try:
        client = await queue_client(temporal_server.address, first.task_queue)
        dataset = await submit_dataset(
            client,
            str(source),
            f"s3://{bucket}/{prefix}",
            OPTIONS,
            small_file_max=16 * MiB,
            batch_files=FILES,
            max_batches=1,
        )
        open_at_kill = await _kill_with_an_upload_open(first, s3, bucket, prefix)
        second = started_s3_worker(
            temporal_server.address, s3_worker_env, tmp_path, first.task_queue
        )
        final = await wait_dataset(client, dataset, timeout_s=120)
        assert final.state == DatasetState.completed, final
        assert final.files_done == FILES and final.files_failed == 0
        left = await asyncio.to_thread(_open_uploads, s3, bucket, prefix)
        assert left == [], f"multipart uploads left open (open at the kill: {open_at_kill})"
        for name, digest in digests.items():
            body = s3.get_object(Bucket=bucket, Key=f"{prefix}{name}")["Body"].read()
            assert hashlib.sha256(body).hexdigest() == digest, name
    finally:
        first.kill()
        if second is not None:
            second.stop()


def _published_digests(s3: Any, bucket: str, prefix: str) -> dict[str, str]:
    """SHA-256 of each object under ``prefix``, by its name below it."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    return {
        key[len(prefix) :]: hashlib.sha256(
            s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        ).hexdigest()
        for key in keys
    }


async def test_a_cancelled_dataset_aborts_its_killed_batch_uploads(
    temporal_server,
    s3_worker_env: dict[str, str],
    s3: Any,
    bucket: str,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    """Kill the worker mid-batch, cancel the dataset while no worker runs activities
    (a worker of workflows only takes the cancel: the batch is cancelled, never
    retried), then start a full worker: nothing is left open at the store, and every
    object published is whole."""
    source = data_dir / "src"
    source.mkdir()
    digests = {
        f"f{i:02d}": write_random(source / f"f{i:02d}", SIZE, seed=60 + i) for i in range(FILES)
    }
    prefix = f"cancel-orphans-{time.time_ns()}/"
    first = started_s3_worker(temporal_server.address, s3_worker_env, tmp_path)
    second: WorkerProcess | None = None
    try:
        client = await queue_client(temporal_server.address, first.task_queue)
        dataset = await submit_dataset(
            client,
            str(source),
            f"s3://{bucket}/{prefix}",
            OPTIONS,
            small_file_max=16 * MiB,
            batch_files=FILES,
            max_batches=1,
        )
        open_at_kill = await _kill_with_an_upload_open(first, s3, bucket, prefix)
        await cancel_dataset(client, dataset)
        handle = client.temporal.get_workflow_handle(dataset)
        async with Worker(
            client.temporal,
            task_queue=first.task_queue,
            workflows=TASK_QUEUE_WORKFLOWS,
            workflow_runner=WORKFLOW_RUNNER,
        ):
            # the batch's activity ends (cancelled, or timed out after the cancel):
            # it never runs again
            batch_pending = True
            deadline = time.monotonic() + 120
            while batch_pending and time.monotonic() < deadline:
                description = await handle.describe()
                batch_pending = description.status == WorkflowExecutionStatus.RUNNING and any(
                    a.activity_type.name == "copy_batch"
                    for a in description.raw_description.pending_activities
                )
                if batch_pending:
                    await asyncio.sleep(0.1)
            assert not batch_pending, "the cancelled batch's activity did not end within 120 s"
        second = started_s3_worker(
            temporal_server.address, s3_worker_env, tmp_path, first.task_queue
        )
        final = await wait_dataset(client, dataset, timeout_s=120)
        assert final.state == DatasetState.cancelled, final
        left = await asyncio.to_thread(_open_uploads, s3, bucket, prefix)
        assert left == [], f"multipart uploads left open (open at the kill: {open_at_kill})"
        published = await asyncio.to_thread(_published_digests, s3, bucket, prefix)
        wrong = sorted(name for name, digest in published.items() if digests.get(name) != digest)
        assert wrong == [], f"objects published not whole or not from the source: {wrong}"
    finally:
        first.kill()
        if second is not None:
            second.stop()


# moto: the batch reads at half the rate above, so each of its four files in flight
# takes ~6 s and an upload is still open a few heartbeats after it was first seen
MOTO_OPTIONS = TransferOptions(chunk_size=5 * MiB, heartbeat_timeout_s=2, max_rate=4 * MiB)


async def _kill_once_beaten_past_an_upload(
    worker: WorkerProcess, client: StaccatoClient, dataset: str, s3: Any, bucket: str
) -> list[str]:
    """SIGKILL ``worker`` once an upload open at the store now was first seen open
    before the batch's last two heartbeats the Temporal server recorded (its
    ``last_heartbeat_time`` changed twice since: the second of them was sent at least
    one heartbeat throttle after the upload began, so a worker that heartbeats its
    uploads' ids has them at the server), bounded by 90 s; then wait until its
    activity processes are gone. Returns the upload ids open at the kill."""
    handle = client.temporal.get_workflow_handle(dataset)
    first_seen: dict[str, int] = {}  # upload id -> heartbeat changes seen before it
    changes = 0
    last_beat: object = None
    ready: list[str] = []
    deadline = time.monotonic() + 90
    while not ready and time.monotonic() < deadline:
        page = await asyncio.to_thread(s3.list_multipart_uploads, Bucket=bucket)
        open_now = [u["UploadId"] for u in page.get("Uploads", [])]
        for upload_id in open_now:
            first_seen.setdefault(upload_id, changes)
        description = await handle.describe()
        beats = [
            a.last_heartbeat_time.ToNanoseconds()
            for a in description.raw_description.pending_activities
            if a.activity_type.name == "copy_batch" and a.HasField("last_heartbeat_time")
        ]
        if beats and beats[0] != last_beat:
            if last_beat is not None:
                changes += 1
            last_beat = beats[0]
        ready = [u for u in open_now if changes - first_seen[u] >= 2]
        if not ready:
            await asyncio.sleep(0.05)
    pool = child_pids(worker.process.pid)
    worker.kill()
    assert ready, "no upload stayed open for two of the batch's heartbeats within 90 s"
    while any(pid_alive(p) for p in pool) and time.monotonic() < deadline + 30:
        await asyncio.sleep(0.05)
    return ready


def _tree(s3: Any, bucket: str, prefix: str) -> dict[str, tuple[int, str]]:
    """Each object under ``prefix``: its name below it -> (size, SHA-256)."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    tree = {}
    for page in pages:
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            tree[item["Key"][len(prefix) :]] = (len(body), hashlib.sha256(body).hexdigest())
    return tree


async def test_a_killed_batch_leaves_no_multipart_upload_on_moto(
    temporal_server, moto_s3, data_dir: Path, tmp_path: Path
) -> None:
    """The same kill on moto, which answers ListMultipartUploads with one fixed
    ``Initiated`` date (2010) for every upload: the uploads cannot be found by their
    start time, so the retried batch aborts those its killed attempt recorded in its
    checkpoint, by id. The old code found none of them and left them open (tester62:
    3 per kill); the destination tree and the counts are the source's."""
    s3 = moto_s3.client()
    bucket = f"orph-{time.time_ns()}"
    s3.create_bucket(Bucket=bucket)
    source = data_dir / "src"
    source.mkdir()
    digests = {
        f"f{i:02d}": write_random(source / f"f{i:02d}", SIZE, seed=80 + i) for i in range(FILES)
    }
    prefix = "moto-orphans/"
    env = {**moto_s3.subprocess_env(), "AWS_EC2_METADATA_DISABLED": "true"}
    first = started_s3_worker(temporal_server.address, env, tmp_path)
    second: WorkerProcess | None = None
    try:
        client = await queue_client(temporal_server.address, first.task_queue)
        dataset = await submit_dataset(
            client,
            str(source),
            f"s3://{bucket}/{prefix}",
            MOTO_OPTIONS,
            small_file_max=16 * MiB,
            batch_files=FILES,
            max_batches=1,
        )
        open_at_kill = await _kill_once_beaten_past_an_upload(first, client, dataset, s3, bucket)
        second = started_s3_worker(temporal_server.address, env, tmp_path, first.task_queue)
        final = await wait_dataset(client, dataset, timeout_s=180)
        assert final.state == DatasetState.completed, final
        assert (final.files_done, final.files_skipped, final.files_failed) == (FILES, 0, 0), final
        assert final.bytes_done == FILES * SIZE, final
        left = await asyncio.to_thread(s3.list_multipart_uploads, Bucket=bucket)
        still_open = [(u["Key"], u["UploadId"]) for u in left.get("Uploads", [])]
        assert still_open == [], f"multipart uploads left open (open at the kill: {open_at_kill})"
        tree = await asyncio.to_thread(_tree, s3, bucket, prefix)
        assert tree == {name: (SIZE, digest) for name, digest in digests.items()}
    finally:
        first.kill()
        if second is not None:
            second.stop()


async def _until_batch_ended(client: StaccatoClient, dataset: str, task_queue: str) -> None:
    """Run a worker of workflows only on ``task_queue`` until the dataset's
    ``copy_batch`` activity is no longer pending (cancelled, or timed out after the
    cancel), at most 120 s."""
    handle = client.temporal.get_workflow_handle(dataset)
    async with Worker(
        client.temporal,
        task_queue=task_queue,
        workflows=TASK_QUEUE_WORKFLOWS,
        workflow_runner=WORKFLOW_RUNNER,
    ):
        batch_pending = True
        deadline = time.monotonic() + 120
        while batch_pending and time.monotonic() < deadline:
            description = await handle.describe()
            batch_pending = description.status == WorkflowExecutionStatus.RUNNING and any(
                a.activity_type.name == "copy_batch"
                for a in description.raw_description.pending_activities
            )
            if batch_pending:
                await asyncio.sleep(0.1)
        assert not batch_pending, "the cancelled batch's activity did not end within 120 s"


async def test_a_cancelled_dataset_aborts_its_killed_batch_uploads_on_moto(
    temporal_server, moto_s3, data_dir: Path, tmp_path: Path
) -> None:
    """The cancel of a dataset whose batch was killed with uploads open, on moto, taken
    within the batch's heartbeat timeout (10 s here, 20 s by default: a user who
    cancels soon after a crash): the batch's activity ends by that timeout after the
    cancel, never retried, its last heartbeat details in the timeout, and
    ``abort_batch_orphans`` aborts the uploads its last checkpoint names, by id (moto's
    fixed ``Initiated`` date hid them from the time scan: the old code left them
    open). Every object published is whole."""
    s3 = moto_s3.client()
    bucket = f"orph-{time.time_ns()}"
    s3.create_bucket(Bucket=bucket)
    source = data_dir / "src"
    source.mkdir()
    digests = {
        f"f{i:02d}": write_random(source / f"f{i:02d}", SIZE, seed=100 + i) for i in range(FILES)
    }
    prefix = "moto-cancel-orphans/"
    env = {**moto_s3.subprocess_env(), "AWS_EC2_METADATA_DISABLED": "true"}
    first = started_s3_worker(temporal_server.address, env, tmp_path)
    second: WorkerProcess | None = None
    try:
        client = await queue_client(temporal_server.address, first.task_queue)
        dataset = await submit_dataset(
            client,
            str(source),
            f"s3://{bucket}/{prefix}",
            MOTO_OPTIONS.model_copy(update={"heartbeat_timeout_s": 10}),
            small_file_max=16 * MiB,
            batch_files=FILES,
            max_batches=1,
        )
        open_at_kill = await _kill_once_beaten_past_an_upload(first, client, dataset, s3, bucket)
        await cancel_dataset(client, dataset)
        # a worker of workflows only takes the cancel: the batch is never retried
        await _until_batch_ended(client, dataset, first.task_queue)
        second = started_s3_worker(temporal_server.address, env, tmp_path, first.task_queue)
        final = await wait_dataset(client, dataset, timeout_s=180)
        assert final.state == DatasetState.cancelled, final
        left = await asyncio.to_thread(s3.list_multipart_uploads, Bucket=bucket)
        still_open = [(u["Key"], u["UploadId"]) for u in left.get("Uploads", [])]
        assert still_open == [], f"multipart uploads left open (open at the kill: {open_at_kill})"
        tree = await asyncio.to_thread(_tree, s3, bucket, prefix)
        wrong = sorted(name for name, (size, digest) in tree.items() if digests.get(name) != digest)
        assert wrong == [], f"objects published not whole or not from the source: {wrong}"
    finally:
        first.kill()
        if second is not None:
            second.stop()
