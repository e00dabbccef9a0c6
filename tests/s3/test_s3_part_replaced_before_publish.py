"""A part of the transfer's multipart upload replaced after every part was uploaded
and before CompleteMultipartUpload (same upload id and part number, the same size,
other bytes, sent with boto3 ``upload_part``: a tester's case 7b/7c) is never
completed into the object.

The scene, on moto and on SeaweedFS: a good object is at the key; a transfer from an
HTTP source (nginx behind a :class:`~tests.servers.holding_proxy.HoldingProxy` that
holds HEAD answers once the source's bytes have passed) to that key uploads every
part, then publish's re-stat of the source is held: the exact window between the last
part and CompleteMultipartUpload, however loaded the machine is. The test replaces a
part, then either releases the hold (the worker goes on, as after the tester's
SIGSTOP/SIGCONT) or SIGKILLs the worker's process group and starts a new worker (the
tester's SIGKILL and ``staccato up``) before releasing it.

The key must then hold the source's bytes (publish saw the part's ETag is not the one
its stream uploaded and copied again into a new upload) or, should the transfer fail,
still the old object. Before, moto completed the replaced part into the object: the
transfer failed its check after publish with a corrupt object at the key.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from staccato.models import TransferOptions, TransferState
from tests.helpers import MiB, WorkerProcess, at_rest, write_random
from tests.s3.conftest import _start_without_inherited_aws, queue_client
from tests.s3.s3util import listed_part_sizes, object_digest, open_uploads, replace_part
from tests.servers.holding_proxy import HoldingProxy
from tests.servers.nginx import NginxServer

SIZE = 20 * MiB
CHUNK = 5 * MiB
PARTS = SIZE // CHUNK
REPLACED = 2  # the part number replaced
OPTIONS = TransferOptions(chunk_size=CHUNK, streams=2, heartbeat_timeout_s=3)
KEY = "held.bin"


@pytest.mark.slow
@pytest.mark.parametrize("how", ["resumed", "killed"])
@pytest.mark.parametrize("store", ["moto", "seaweedfs"])
async def test_a_part_replaced_before_complete_is_never_published(
    store: str,
    how: str,
    temporal_server,
    s3_server: Any,
    s3_worker_env: dict[str, str],
    moto_s3: Any,
    nginx_ranges: NginxServer,
    http_root: Path,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    if store == "moto":
        s3 = moto_s3.client()
        env = {**moto_s3.subprocess_env(), "AWS_EC2_METADATA_DISABLED": "true"}
    else:
        s3 = s3_server.client()
        env = s3_worker_env
    bucket = f"held-{time.time_ns()}"
    s3.create_bucket(Bucket=bucket)
    old = data_dir / "old.bin"
    old_digest = write_random(old, 3 * MiB, seed=50)
    s3.put_object(Bucket=bucket, Key=KEY, Body=old.read_bytes())
    name = f"held-{store}-{how}.bin"
    source = http_root / name
    digest = write_random(source, SIZE, seed=51)
    at_rest(source)  # no second read of the source before publish

    # HEAD answers are held once the source's bytes passed: publish's re-stat, which
    # comes after every stream ended and before CompleteMultipartUpload
    proxy = HoldingProxy(nginx_ranges.port, hold_after=SIZE, hold_method="HEAD").start()
    first = WorkerProcess(
        temporal_server.address, processes=1, env=env, log_dir=tmp_path, own_group=True
    )
    _start_without_inherited_aws(first)
    second: WorkerProcess | None = None
    try:
        client = await queue_client(temporal_server.address, first.task_queue)
        transfer = await client.submit(proxy.url(name), f"s3://{bucket}/{KEY}", OPTIONS)
        await asyncio.to_thread(proxy.wait_held, 120)
        (upload,) = [u for u in open_uploads(s3, bucket) if u["Key"] == KEY]
        upload_id = upload["UploadId"]
        listed = listed_part_sizes(s3, bucket, KEY, upload_id)
        assert sorted(listed) == list(range(1, PARTS + 1)), f"not every part uploaded: {listed}"

        if how == "killed":
            first.kill_group()
        replace_part(
            s3, bucket, KEY, upload_id, REPLACED, source, CHUNK, with_crc32c=store != "moto"
        )
        if how == "killed":
            second = WorkerProcess(
                temporal_server.address,
                task_queue=first.task_queue,
                processes=1,
                env=env,
                log_dir=tmp_path,
            )
            _start_without_inherited_aws(second)
        proxy.release()
        try:
            await asyncio.wait_for(client.wait(transfer), 180)
        except Exception as err:  # a failure is allowed, a corrupt object is not
            print(f"transfer ended with {err!r}")
        status = await client.status(transfer)
        at_key = object_digest(s3, bucket, KEY)
        print(f"{store}/{how}: part {REPLACED} replaced; ended {status.state.value}")
        if status.state == TransferState.completed:
            assert at_key == digest, "completed with an object that is not the source"
        else:
            assert status.state == TransferState.failed, status
            assert at_key == old_digest, (
                f"failed ({status.error}), and the object at the key was replaced by "
                "one that is neither the old object nor the source"
            )
        # the upload others wrote into is never completed: the transfer copies again
        # into a new upload and completes
        assert status.state == TransferState.completed, status
        assert [u for u in open_uploads(s3, bucket) if u["Key"] == KEY] == []
        # and says so: the upload restarted, and why (tester69: no status said so)
        assert (status.restarted or "").startswith("upload restarted 1 time ("), status
        assert "a part was replaced under the upload" in status.restarted, status
    finally:
        proxy.release()
        if first.process is not None and first.process.poll() is None:
            first.kill_group()
        if second is not None:
            second.stop()
        proxy.stop()
