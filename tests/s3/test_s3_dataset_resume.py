"""A large file in flight inside a dataset (its child transfer) resumes from its
checkpoint after the worker is SIGKILLed: the source sends the object once more at
most by one chunk per stream (the bound of the single-file crash tests).

Counted at the server: the dataset's source is an S3 prefix on SeaweedFS reached
through nginx (a reverse proxy sending at most 2 MB/s per connection, so the copy
lasts long enough to be killed mid-file, and logging each request's body bytes).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from staccato.dataset_client import submit_dataset
from staccato.datasets.models import BatchCheckpoint, DatasetState
from staccato.errors import TransferNotFoundError
from staccato.models import TransferOptions, TransferState
from tests.dataset_checks import MiB, tree, tree_difference, wait_dataset
from tests.helpers import WorkerProcess, child_pids, pid_alive, write_random
from tests.s3.conftest import (
    MeteredSeaweedS3,
    _start_without_inherited_aws,
    queue_client,
    started_s3_worker,
)
from tests.servers.nginx import NginxServer

SIZE = 32 * MiB
CHUNK = 2 * MiB
STREAMS = 4
OPTIONS = TransferOptions(chunk_size=CHUNK, streams=STREAMS, heartbeat_timeout_s=3)
SMALL = 20


@pytest.fixture
def s3_proxy(s3_server: MeteredSeaweedS3, bucket: str, http_root: Path) -> Iterator[NginxServer]:
    """nginx proxying ``/BUCKET`` to ``s3_server`` at 2 MB/s per connection (the
    ``Host`` header passed on as signed), with its JSON access log."""
    proxy = NginxServer(
        http_root,
        extra_server_config=f"""
        location /{bucket} {{
            proxy_pass http://127.0.0.1:{s3_server.s3_port};
            proxy_set_header Host $http_host;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_max_temp_file_size 0;
            limit_rate 2m;
        }}
""",
    )
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


async def test_large_file_in_a_dataset_resumes_from_its_checkpoint_after_worker_kill(
    temporal_server,
    s3_server: MeteredSeaweedS3,
    s3_worker_env: dict[str, str],
    s3_proxy: NginxServer,
    s3: Any,
    bucket: str,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    source, destination = data_dir / "src", data_dir / "dst"
    source.mkdir()
    write_random(source / "big.bin", SIZE, seed=21)
    (source / "small").mkdir()
    for i in range(SMALL):
        write_random(source / f"small/f{i:02d}", 1000 + i, seed=i)
    for path in source.rglob("*"):
        if path.is_file():
            s3.upload_file(str(path), bucket, f"run/{path.relative_to(source)}")
    env = {**s3_worker_env, "AWS_ENDPOINT_URL_S3": s3_proxy.base_url}
    # 2 activity processes: their threads run the 4 streams at once (4 processes were
    # ~1.3 CPU-s more per start, twice)
    first = WorkerProcess(temporal_server.address, processes=2, env=env, log_dir=tmp_path)
    _start_without_inherited_aws(first)
    second: WorkerProcess | None = None
    try:
        client = await queue_client(temporal_server.address, first.task_queue)
        dataset = await submit_dataset(
            client, f"s3://{bucket}/run/", str(destination), OPTIONS, small_file_max=1 * MiB
        )
        # kill once the child transfer of big.bin has heartbeated 40 % of its bytes
        child = str(destination / "big.bin")
        deadline = time.monotonic() + 60
        done = 0
        while time.monotonic() < deadline:
            try:
                status = await client.status(child)
            except TransferNotFoundError:  # the child is not started yet
                status = None
            if status is not None:
                assert status.state != TransferState.completed, "killed too late"
                done = status.bytes_done
                if done >= SIZE * 0.4:
                    break
            await asyncio.sleep(0.05)
        assert done >= SIZE * 0.4, f"the child never got to 40 % ({done} bytes)"
        pool = child_pids(first.process.pid)
        first.kill()
        while any(pid_alive(p) for p in pool) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        second = WorkerProcess(
            temporal_server.address,
            task_queue=first.task_queue,
            processes=2,
            env=env,
            log_dir=tmp_path,
        )
        _start_without_inherited_aws(second)
        final = await wait_dataset(client, dataset, timeout_s=90)
        assert final.state == DatasetState.completed, final
        assert final.files_done == SMALL + 1 and final.files_failed == 0
        differ = tree_difference(tree(destination), tree(source))
        assert differ == [], f"{len(differ)} files differ: {differ[:20]}"
    finally:
        first.kill()
        if second is not None:
            second.stop()
    # nginx logs a request once it ended (the killed worker's too, with what was sent)
    deadline = time.monotonic() + 10
    requests: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        requests = [
            r
            for r in s3_proxy.requests()
            if r["method"] == "GET" and r["uri"].startswith(f"/{bucket}/run/big.bin")
        ]
        if sum(r["body_bytes_sent"] for r in requests) >= SIZE:
            break
        await asyncio.sleep(0.1)
    sent = sum(r["body_bytes_sent"] for r in requests)
    print(
        f"big.bin killed at {done} bytes: the source sent {sent} bytes for {SIZE} in "
        f"{len(requests)} GETs: re-sent {sent - SIZE} (bound {2 * STREAMS * CHUNK})"
    )
    # nginx counts what it handed to the kernel: the killed streams' chunk in flight
    # and, on a busy machine, up to about as much again in the loopback socket buffers
    # they never read (11 MiB against 8 once)
    assert SIZE <= sent <= SIZE + 2 * STREAMS * CHUNK, f"re-sent {sent - SIZE} bytes"


#: files of the batch: ~240 KB at :data:`BATCH_RATE`, ~7 s, so the kill (3.5 s into
#: the batch) comes with about half of it to go on any machine (it was 2,400 unpaced
#: files, as many S3 PUTs, where a quiet machine publishes a few hundred a second)
BATCH = 600
BATCH_RATE = 32 * 1024


async def test_a_killed_batch_to_s3_resumes_past_its_first_file(
    temporal_server,
    s3_worker_env: dict[str, str],
    s3: Any,
    bucket: str,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    """The heartbeat details a retried batch starts from (what the server holds after
    the worker's SIGKILL) are the batch's checkpoint, past its first file: the steps of
    each file (the check after publish reads the object back from S3) heartbeat through
    the batch, never with details of their own."""
    source = data_dir / "src"
    source.mkdir()
    for i in range(BATCH):
        write_random(source / f"f{i:04d}", 100 + i, seed=i)
    prefix = f"killed-batch-{time.time_ns()}/"
    first = started_s3_worker(temporal_server.address, s3_worker_env, tmp_path)
    second: WorkerProcess | None = None
    try:
        client = await queue_client(temporal_server.address, first.task_queue)
        dataset = await submit_dataset(
            client,
            str(source),
            f"s3://{bucket}/{prefix}",
            TransferOptions(chunk_size=1 * MiB, heartbeat_timeout_s=2, max_rate=BATCH_RATE),
            batch_files=BATCH,
            max_batches=1,
        )
        handle = client.temporal.get_workflow_handle(dataset)

        def published() -> int:
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            return sum(page.get("KeyCount", 0) for page in pages)

        # kill once the batch has run for two of the SDK's heartbeat intervals (0.8 x
        # the 2 s timeout) and the server has recorded two of its heartbeats since its
        # first file was published (a busy machine's worker sends them late: once,
        # killed on time alone before any reached the server, the test read no
        # details), and while no more than three quarters of the batch is published, so
        # it cannot finish between the count and the kill (paced: ~85 files a second)
        deadline = time.monotonic() + 60
        started: float | None = None
        count = 0
        beats_since_start = 0
        last_beat: object = None
        while time.monotonic() < deadline:
            count = await asyncio.to_thread(published)
            if count and started is None:
                started = time.monotonic()
            if started is not None:
                beats = [
                    p.last_heartbeat_time.ToNanoseconds()
                    for p in (await handle.describe()).raw_description.pending_activities
                    if p.activity_type.name == "copy_batch" and p.HasField("last_heartbeat_time")
                ]
                if beats and beats[0] != last_beat:
                    beats_since_start += last_beat is not None
                    last_beat = beats[0]
                if time.monotonic() - started >= 3.5 and beats_since_start >= 2:
                    break
            if count >= BATCH * 3 // 4:
                break
            await asyncio.sleep(0.1)
        pool = child_pids(first.process.pid)
        first.kill()
        assert 0 < count < BATCH, f"killed at {count} of {BATCH} files published"
        while any(pid_alive(p) for p in pool) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        description = await handle.describe()
        pending = [
            p
            for p in description.raw_description.pending_activities
            if p.activity_type.name == "copy_batch"
        ]
        assert len(pending) == 1, pending
        assert pending[0].heartbeat_details.payloads, "the batch's checkpoint was overwritten"
        (checkpoint,) = await client.temporal.data_converter.decode(
            pending[0].heartbeat_details.payloads, [BatchCheckpoint]
        )
        # the checkpoint never points past a file that is not published (the count taken
        # after the kill: files went on being published between the last count and it)
        settled = await asyncio.to_thread(published)
        assert 0 < checkpoint.next_index <= settled, (checkpoint, settled)
        second = started_s3_worker(
            temporal_server.address, s3_worker_env, tmp_path, first.task_queue
        )
        final = await wait_dataset(client, dataset, timeout_s=120)
        assert final.state == DatasetState.completed, final
        assert final.files_done == BATCH and final.files_failed == 0
        assert await asyncio.to_thread(published) == BATCH
    finally:
        first.kill()
        if second is not None:
            second.stop()
