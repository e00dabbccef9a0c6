"""A part of the transfer's open multipart upload replaced while no worker runs (same
upload id and part number, the same size, 10 bytes changed, sent with boto3
``upload_part``: a tester's case) is never completed into the object.

The scene, on SeaweedFS (the suite's S3) and on moto (what ``scripts/try-endpoints``
runs): a good object is at the key; a paced transfer to that key is SIGKILLed with its
worker once parts are listed; the test replaces the first listed part; a new worker
resumes. The transfer must end ``completed`` with the object equal to the source (the
resumed stream re-reads each listed part's chunk from the source, compares it with what
ListParts says of the part, and uploads the replaced one again), or fail with the old
object still at the key. Before, the replaced part was completed into the object: the
full-object CRC32C compared after publish failed the transfer with the corrupt object
left at the key in place of the good one.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from staccato.models import TransferOptions, TransferState
from tests.helpers import MiB, WorkerProcess, child_pids, pid_alive, write_random
from tests.s3.conftest import _start_without_inherited_aws, queue_client
from tests.s3.s3util import listed_part_sizes, object_digest, open_uploads, replace_part

SIZE = 40 * MiB
CHUNK = 5 * MiB
# paced: parts appear about one a second, so the kill lands mid-upload
OPTIONS = TransferOptions(chunk_size=CHUNK, streams=1, max_rate=5 * MiB, heartbeat_timeout_s=3)
KEY = "ab2.bin"


@pytest.mark.slow
@pytest.mark.parametrize("store", ["seaweedfs", "moto"])
async def test_a_part_replaced_while_down_is_never_published(
    store: str,
    temporal_server,
    s3_server: Any,
    s3_worker_env: dict[str, str],
    moto_s3: Any,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    if store == "moto":
        s3 = moto_s3.client()
        env = {**moto_s3.subprocess_env(), "AWS_EC2_METADATA_DISABLED": "true"}
    else:
        s3 = s3_server.client()
        env = s3_worker_env
    bucket = f"repl-{time.time_ns()}"
    s3.create_bucket(Bucket=bucket)
    old = data_dir / "old.bin"
    old_digest = write_random(old, 3 * MiB, seed=40)
    s3.put_object(Bucket=bucket, Key=KEY, Body=old.read_bytes())
    source = data_dir / "big.bin"
    digest = write_random(source, SIZE, seed=41)

    first = WorkerProcess(temporal_server.address, processes=1, env=env, log_dir=tmp_path)
    _start_without_inherited_aws(first)
    second: WorkerProcess | None = None
    try:
        client = await queue_client(temporal_server.address, first.task_queue)
        transfer = await client.submit(str(source), f"s3://{bucket}/{KEY}", OPTIONS)
        deadline = time.monotonic() + 90
        upload_id = None
        while time.monotonic() < deadline:
            uploads = [u for u in open_uploads(s3, bucket) if u["Key"] == KEY]
            if uploads:
                upload_id = uploads[0]["UploadId"]
                if len(listed_part_sizes(s3, bucket, KEY, upload_id)) >= 2:
                    break
            await asyncio.sleep(0.05)
        assert upload_id, "the multipart upload never started"
        pool = child_pids(first.process.pid)
        first.kill()
        while any(pid_alive(p) for p in pool) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # let the store drop the dead worker's half-sent part

        listed = listed_part_sizes(s3, bucket, KEY, upload_id)
        assert 2 <= len(listed) < SIZE // CHUNK, f"kill should land mid-upload: {listed}"
        number = min(listed)
        length = replace_part(
            s3, bucket, KEY, upload_id, number, source, CHUNK, with_crc32c=store != "moto"
        )
        assert listed_part_sizes(s3, bucket, KEY, upload_id)[number] == length

        second = WorkerProcess(
            temporal_server.address,
            task_queue=first.task_queue,
            processes=1,
            env=env,
            log_dir=tmp_path,
        )
        _start_without_inherited_aws(second)
        try:
            await asyncio.wait_for(client.wait(transfer), 150)
        except Exception as err:  # a failure is allowed, a corrupt object is not
            print(f"transfer ended with {err!r}")
        status = await client.status(transfer)
        at_key = object_digest(s3, bucket, KEY)
        print(f"{store}: replaced part {number} of {sorted(listed)}; ended {status.state.value}")
        if status.state == TransferState.completed:
            assert at_key == digest, "completed with an object that is not the source"
        else:
            assert status.state == TransferState.failed, status
            assert at_key == old_digest, "failed, and the object at the key was replaced"
        # the scene this test is about must complete on both stores (a part that does
        # not match is uploaded again, not given up on)
        assert status.state == TransferState.completed, status
    finally:
        first.kill()
        if second is not None:
            second.stop()
