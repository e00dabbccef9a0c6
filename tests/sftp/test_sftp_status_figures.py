"""``staccato status`` of a transfer whose sftp destination's sshd is gone: while its
streams only retry, no rate and no ETA, and the bytes the destination's journal holds
are never taken back (nor in the failed transfer's status)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

from temporalio.api.enums.v1 import PendingActivityState

from staccato.client import StaccatoClient
from staccato.models import TransferOptions, TransferState, TransferStatus
from tests.helpers import MiB, WorkerProcess, write_random
from tests.servers.sshd import SshdServer
from tests.sftp.test_sftp_resilience import _client, _journal_lines, _trust, _wait_for_journal


async def _every_stream_retried(client: StaccatoClient, transfer: str, since: datetime) -> bool:
    """Whether every pending ``copy_stream`` of ``transfer`` is past its first attempt
    and none runs an attempt that started before ``since`` (the outage): a retry
    after a heartbeat timeout at load ~20 started before sshd stopped, and moved bytes
    (its rate was shown) while counted as one that could not."""
    description = await client.temporal.get_workflow_handle(transfer).describe()
    streams = [
        pending
        for pending in description.raw_description.pending_activities
        if pending.activity_type.name == "copy_stream"
    ]
    for pending in streams:
        if pending.attempt <= 1:
            return False
        running = pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        if running and (
            not pending.HasField("last_started_time")
            or pending.last_started_time.ToDatetime(tzinfo=UTC) < since
        ):
            return False
    return bool(streams)


async def test_sshd_gone_status_shows_no_rate_and_keeps_journalled_bytes(
    temporal_server,
    own_server: SshdServer,
    env_worker_env: dict[str, str],
    data_dir: Path,
    tmp_path: Path,
) -> None:
    """sshd stopped for good mid-copy: while every stream attempt fails, ``status`` shows
    no rate and no ETA (it showed the last attempt's rate and an ETA); ``bytes_done``
    never falls, and the failed transfer's keeps the streams' checkpoints (it showed
    0 B: neither a stream's give-up nor a cancel between attempts carried them)."""
    _trust(own_server, env_worker_env)
    size, chunk = 64 * MiB, 4 * MiB
    source = data_dir / "src.bin"
    write_random(source, size, seed=31)
    out = data_dir / "out"
    out.mkdir()
    with WorkerProcess(
        temporal_server.address, processes=2, env=env_worker_env, log_dir=tmp_path
    ) as worker:
        client = await _client(temporal_server, worker.task_queue)
        # --retry-for 5s: the streams' attempts after the outage start at + 1, 3, 7 s,
        # and the one at + 7 s gives up (with 8 s: + 15 s), so every stream runs a
        # retry that fails for some 6 s before the transfer fails
        options = TransferOptions(
            chunk_size=chunk, streams=2, retry_for_s=5, heartbeat_timeout_s=3, max_rate=16 * MiB
        )
        transfer = await client.submit(str(source), own_server.url(str(out / "gone.bin")), options)
        await _wait_for_journal(out, 2)
        own_server.stop()
        stopped_at = datetime.now(UTC)  # its sessions are gone too (ServerProcess.stop)
        journalled = _journal_lines(out) * chunk  # durable at the destination
        assert journalled < size, "the transfer finished before the outage"
        seen: list[TransferStatus] = []
        retrying: list[TransferStatus] = []
        deadline = time.monotonic() + 240
        while not seen or seen[-1].state == TransferState.running:
            assert time.monotonic() < deadline, f"the transfer did not fail; last: {seen[-1]}"
            # every stream retried at least once before this status: none moves since
            retried = await _every_stream_retried(client, transfer, stopped_at)
            seen.append(await client.status(transfer))
            if retried and seen[-1].state == TransferState.running:
                retrying.append(seen[-1])
            await asyncio.sleep(0.1)  # polling interval
        assert retrying, seen
        moving = [s for s in retrying if s.rate_bytes_per_s is not None or s.eta_s is not None]
        assert not moving, [
            (s.rate_bytes_per_s, s.eta_s, s.bytes_done, s.last_retry_error, s.next_attempt_at)
            for s in moving
        ]
        # bytes_done counts the streams' bytes in flight too: never less than before
        shown = [s.bytes_done for s in seen if s.state == TransferState.running]
        assert shown == sorted(shown), shown
        own_server.start()  # the clean-up ends at once
    failed = await client.status(transfer)
    assert failed.state == TransferState.failed, failed
    # the streams' checkpoints when they gave up or were cancelled (it showed 0 B)
    assert 0 < failed.bytes_done <= max(shown), (shown[-1], journalled, failed)
