"""A cancel requested while no worker ran, of a transfer whose ``prepare`` hangs on a
frozen S3 server, takes effect soon after a worker is back, while the server is still
frozen (tester64 F6: ``kill -STOP`` moto, ``submit`` to S3, SIGKILL the worker while
prepare hangs, ``cancel``, ``up`` again: the run stayed ``scheduled / prepare /
cancel_requested yes`` for ~125 s, until the hung prepare attempt's start-to-close
timeout, 2 min).

The workflow waited for prepare to end after the cancel (so that the multipart upload
it may open is never lost); a prepare that has not answered now gets a bounded wait,
then the run ends cancelled, saying in ``left_behind`` that an upload may be opened on
the key when the server answers. Such an upload is aborted by the prepare attempt
itself (its result reaches no one) or by the next transfer to the key. Server: the
session's moto, SIGSTOPped and resumed; workers: real processes, one SIGKILLed.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from staccato.models import TransferOptions, TransferState
from tests.helpers import MiB, WorkerProcess, stopped_process_tree, write_random
from tests.prepare_cancel_checks import cancelled_while_no_worker, until
from tests.s3.conftest import queue_client, started_s3_worker
from tests.s3.s3util import object_digest, settled_uploads_on_key, uploads_on_key

pytestmark = pytest.mark.slow

#: the next transfer, the server awake (a correctness bound)
_COMPLETES_WITHIN_S = 150.0
#: for a late prepare attempt to abort what it opened (a correctness bound)
_SETTLES_WITHIN_S = 60.0


async def test_cancel_asked_without_a_worker_ends_soon_after_one_is_back(
    temporal_server,
    profile_worker: WorkerProcess,
    moto_s3: Any,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    s3 = moto_s3.client()
    bucket = "prepare-cancel-no-worker"
    key = "c1.bin"
    with contextlib.suppress(Exception):
        s3.create_bucket(Bucket=bucket)
    source = data_dir / "prepare-cancel-no-worker.bin"
    digest = write_random(source, 6 * MiB, seed=64)
    destination = f"s3://{bucket}/{key}?profile=moto"
    first = started_s3_worker(temporal_server.address, profile_worker.env, tmp_path)
    more: list[WorkerProcess] = []
    client = await queue_client(temporal_server.address, first.task_queue)
    try:
        assert moto_s3.pid is not None, "moto is not running"
        with stopped_process_tree(moto_s3.pid):
            transfer = await client.submit(
                str(source), destination, TransferOptions(retry_for_s=600)
            )
            await cancelled_while_no_worker(
                client,
                transfer,
                first,
                lambda: started_s3_worker(
                    temporal_server.address, profile_worker.env, tmp_path, first.task_queue
                ),
                more,
            )
            status = await client.status(transfer)
            assert status.state == TransferState.cancelled, status
            # it says an upload may be opened on the key, and what removes it
            assert status.left_behind and f"s3://{bucket}/{key}" in status.left_behind, status
            assert "next transfer" in status.left_behind, status.left_behind
        # the server woke: the requests it read are answered (the prepare attempts'
        # CreateMultipartUpload: the dead worker's never aborted)
        await settled_uploads_on_key(s3, bucket, key)
        again = await client.submit(str(source), destination, TransferOptions())
        result = await asyncio.wait_for(client.wait(again), _COMPLETES_WITHIN_S)
        assert result.bytes == 6 * MiB
        assert object_digest(s3, bucket, key) == digest

        # none open: the next transfer aborted those the dead worker's attempts opened,
        # and the new worker's attempt, answered once moto woke, aborts its own (it
        # knows of the cancel: its run is over), maybe after that (bounded)
        async def none_open() -> bool:
            return uploads_on_key(s3, bucket, key) == []

        await until(none_open, _SETTLES_WITHIN_S, "an upload stays open on the key")
    finally:
        first.stop()
        for worker in more:
            worker.stop()
