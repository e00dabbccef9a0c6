"""A publish waiting for its store is not a stall while its worker heartbeats: S3
documents that completing a multipart upload "could take several minutes" (AWS S3 API
reference, CompleteMultipartUpload), and a ~6 s one on moto read "stalled: publish:
waiting for ..." (the 5 s rule of a copy's stalled streams). ``status`` says the
publish waits for the store to assemble its parts, and says it stalled once its
heartbeats stop (its worker's activity process frozen: the worker answers queries).

The window is hit deterministically: the worker reaches SeaweedFS through a relay
(profile ``gated``) that holds the CompleteMultipartUpload request (the store not
answering yet, as a store assembling a large object), released at the end.
"""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path
from typing import Any

from staccato.cli import render
from staccato.client import StaccatoClient
from staccato.models import MiB, TransferOptions, TransferState
from tests.helpers import WorkerProcess, signal_all, wait_for_status, write_random
from tests.s3.conftest import GatedLink
from tests.servers.temporal_server import _descendants

ENDED = (TransferState.completed, TransferState.cancelled, TransferState.failed)
#: 3 parts of 5 MiB (the last one 2 MiB)
SIZE = 12 * MiB
OPTIONS = TransferOptions(chunk_size=5 * MiB, streams=2)
#: a correctness bound, not a speed one: status polls until it says what it should
SAID_WITHIN_S = 90.0


async def test_a_publish_waiting_for_the_store_is_not_stalled_until_its_worker_stops(
    profile_client: StaccatoClient,
    profile_worker: WorkerProcess,
    gated_link: GatedLink,
    s3: Any,
    bucket: str,
    tmp_path: Path,
) -> None:
    source = tmp_path / "assembled.bin"
    write_random(source, SIZE, seed=41)
    key = "assembled.bin"
    where = f"s3://{bucket}/{key}"
    path = re.escape(f"/{bucket}/{key}".encode())
    gated_link.arm(rb"^POST " + path + rb"\?[^ ]*uploadId=")  # CompleteMultipartUpload
    assert profile_worker.process is not None, "the worker is not running"
    try:
        transfer = await profile_client.submit(str(source), f"{where}?profile=gated", OPTIONS)
        held = await asyncio.to_thread(gated_link.held.wait, 60)
        assert held, "the CompleteMultipartUpload request never came"
        # the store "assembles" (the request held) while the worker heartbeats: past
        # the 5 s rule, status says the publish waits for it, not that it stalled
        status = await wait_for_status(
            profile_client,
            transfer,
            lambda s: (
                s.state in ENDED
                or ", publishing: " in render.plain_line(s)
                or "stalled" in render.plain_line(s)
            ),
            timeout_s=SAID_WITHIN_S,
        )
        line = render.plain_line(status)
        assert "stalled" not in line, line
        assert status.phase == "publish" and status.stalled_step is None, status
        assert (
            f"publishing: waiting for {where}?profile=gated (the destination) to assemble "
            "3 parts into the object since "
        ) in line, line
        (said,) = [x for x in render.status_lines(status) if x.startswith("publishing")]
        assert "not stalled" in said and "3 parts" in said, said
        assert status.publish_waiting_parts == 3, status
        # its worker's activity processes frozen (the worker itself answers queries):
        # the publish's heartbeats stop, and the wait is no longer the store's
        frozen = [pid for pid, _ in _descendants(profile_worker.process.pid)]
        assert frozen, "the worker has no activity process"
        signal_all(frozen, signal.SIGSTOP)
        try:
            status = await wait_for_status(
                profile_client,
                transfer,
                lambda s: s.state in ENDED or s.stalled_step is not None,
                timeout_s=SAID_WITHIN_S,
            )
        finally:
            signal_all(frozen, signal.SIGCONT)
        line = render.plain_line(status)
        assert status.state == TransferState.running, status
        assert status.stalled_step == "publish" and status.stalled_heartbeat, status
        assert status.publish_waiting_since is None, status
        assert "stalled: publish: no heartbeat from its worker process" in line, line
        assert "publishing: waiting" not in line, line
    finally:
        gated_link.release()
    status = await wait_for_status(
        profile_client, transfer, lambda s: s.state in ENDED, timeout_s=SAID_WITHIN_S
    )
    assert status.state == TransferState.completed, status
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == source.read_bytes()
