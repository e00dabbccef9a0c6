"""``status`` across a worker crash: the bytes known durable before a SIGKILL and the
object's size stay in the status while no worker answers, while a new one replays the
run and while its streams resume (a tester saw ``0 B / 300 MiB`` and a lost total)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from staccato.client import StaccatoClient
from staccato.models import TransferOptions, TransferState, TransferStatus
from tests.helpers import (
    MiB,
    WorkerProcess,
    at_rest,
    child_pids,
    no_worker_waits,
    pid_alive,
    status_json,
    wait_for_status,
    write_random,
)
from tests.servers.holding_proxy import HoldingProxy
from tests.servers.nginx import NginxServer, nginx_fixture
from tests.servers.temporal_server import TemporalDevServer
from tests.test_crash import _heartbeated_bytes

SIZE = 96 * MiB
# the default chunk size: the streams are held inside their first chunk, which their
# checkpoints count (in flight) but which is not durable yet: a resumed stream sends it
# again, and status still shows the bytes it showed (it fell to 0 B)
CHUNK = 16 * MiB
OPTIONS = TransferOptions(chunk_size=CHUNK, streams=2, heartbeat_timeout_s=3)

slow_nginx = nginx_fixture("http_root", scope="function", extra_server_config="limit_rate 16m;")


async def _watch(client: StaccatoClient, transfer: str, seen: list[TransferStatus]) -> None:
    """Every status the client can get, until cancelled (each call is itself bounded
    by the client's query wait)."""
    while True:
        try:
            seen.append(await client.status(transfer))
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a status that failed tells nothing here
            pass
        await asyncio.sleep(0.1)  # pacing of the poll, not a wait for a condition


async def test_status_keeps_durable_bytes_and_total_across_worker_kill(
    temporal_server: TemporalDevServer,
    slow_nginx: NginxServer,
    http_root: Path,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    """Kill the worker mid-copy, start a new one: every status from the kill until the
    transfer ends keeps ``bytes_total`` and reports at least the bytes checkpointed
    (heartbeated to the server, or committed) before the kill."""
    write_random(http_root / "crash-status.bin", SIZE, seed=31)
    at_rest(http_root / "crash-status.bin")
    destination = data_dir / "crash-status.bin"
    proxy = HoldingProxy(slow_nginx.port, hold_after=int(SIZE * 0.25)).start()
    # one activity process per worker: its threads run the 2 streams (the kill is of
    # the whole worker; a second process is ~0.65 CPU-s per start)
    first = WorkerProcess(temporal_server.address, processes=1, log_dir=tmp_path)
    seen: list[TransferStatus] = []
    watcher: asyncio.Task[None] | None = None
    try:
        first.start()
        client = await StaccatoClient.connect(target_host=temporal_server.address)
        client.task_queue = first.task_queue
        transfer = await client.submit(proxy.url("crash-status.bin"), str(destination), OPTIONS)
        await asyncio.to_thread(proxy.wait_held, 120)
        # the streams' checkpoints at the server catch up with the hold (the SDK sends
        # them every 2.4 s): the chunks in flight are in them, not yet durable
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if await _heartbeated_bytes(client, transfer) >= SIZE * 0.15:
                break
            await asyncio.sleep(0.1)
        # the bytes known before the kill: the streams' checkpoints (what status said
        # while the worker answered)
        before = await client.status(transfer)
        assert before.state == TransferState.running, before
        known = before.bytes_done
        assert 0 < known < SIZE, before
        pool = child_pids(first.process.pid)  # type: ignore[union-attr]
        first.kill()
        deadline = time.monotonic() + 10
        while any(pid_alive(p) for p in pool) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        with no_worker_waits():  # until a worker starts again
            watcher = asyncio.create_task(_watch(client, transfer, seen))
            # statuses while no worker answers
            deadline = time.monotonic() + 30
            while len(seen) < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            # the command says the same while no worker answers
            orphaned = await status_json(
                transfer, address=temporal_server.address, task_queue=first.task_queue
            )
            assert orphaned["bytes_total"] == SIZE, orphaned
            assert orphaned["bytes_done"] >= known, (known, orphaned)
        proxy.release()
        with WorkerProcess(
            temporal_server.address, task_queue=first.task_queue, processes=1, log_dir=tmp_path
        ):
            result = await asyncio.wait_for(client.wait(transfer), 180)
    finally:
        if watcher is not None:
            watcher.cancel()
        first.kill()
        proxy.release()
        proxy.stop()
    assert result.bytes == SIZE
    running = [s for s in seen if s.state != TransferState.completed]
    assert len(running) >= 3, seen
    print(
        f"known before the kill: {known}; seen after: "
        + ", ".join(f"{s.bytes_done}/{s.bytes_total}" for s in running)
    )
    for status in running:
        assert status.bytes_total == SIZE, (known, status)
        assert status.bytes_done >= known, (known, status)


paced_nginx = nginx_fixture("http_root", scope="function", extra_server_config="limit_rate 4m;")


async def test_a_retried_stream_that_moves_bytes_is_not_shown_retrying(
    temporal_server: TemporalDevServer,
    paced_nginx: NginxServer,
    http_root: Path,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    """After a worker's SIGKILL the stream's second attempt carries the first one's
    failure (a heartbeat timeout) to its end: once it moves bytes on a new worker,
    status no longer says it retries (a tester saw "retrying: attempt 2: activity
    Heartbeat timeout" for the rest of the run)."""
    size = 32 * MiB
    write_random(http_root / "retried.bin", size, seed=33)
    at_rest(http_root / "retried.bin")
    options = TransferOptions(chunk_size=2 * MiB, streams=1, heartbeat_timeout_s=3)
    first = WorkerProcess(temporal_server.address, processes=1, log_dir=tmp_path)
    try:
        first.start()
        client = await StaccatoClient.connect(target_host=temporal_server.address)
        client.task_queue = first.task_queue
        transfer = await client.submit(
            paced_nginx.url("retried.bin"), str(data_dir / "retried.bin"), options
        )
        deadline = time.monotonic() + 60
        while (before := await client.status(transfer)).bytes_done < 4 * MiB:
            assert time.monotonic() < deadline, before
            await asyncio.sleep(0.1)
        first.kill()
        with WorkerProcess(
            temporal_server.address, task_queue=first.task_queue, processes=1, log_dir=tmp_path
        ):
            deadline = time.monotonic() + 120
            retried_seen = False
            while True:  # the second attempt runs and moves bytes: a rate again
                now = await client.status(transfer)
                retried_seen = retried_seen or bool(now.last_retry_error)
                if now.state == TransferState.running and now.rate_bytes_per_s and retried_seen:
                    break
                assert now.state != TransferState.completed, "ended before it was seen moving"
                assert time.monotonic() < deadline, now
                await asyncio.sleep(0.1)
            assert now.last_retry_error is None, now
            result = await asyncio.wait_for(client.wait(transfer), 120)
    finally:
        first.kill()
    assert result.bytes == size


async def test_a_local_copy_whose_worker_died_blames_no_server(
    temporal_server: TemporalDevServer, data_dir: Path, tmp_path: Path
) -> None:
    """file -> file, its worker SIGKILLed: the stream's heartbeat timeout is said to be
    its worker's (frozen, overloaded or killed), not "blocked on file:///a and
    file:///b (a server that accepts connections and does not answer)" (tester59 T8:
    two local files blamed as hung servers)."""
    write_random(data_dir / "local.bin", 32 * MiB, seed=34)
    options = TransferOptions(max_rate=2 * MiB, streams=1, heartbeat_timeout_s=3)
    worker = WorkerProcess(temporal_server.address, processes=1, log_dir=tmp_path)
    client = await StaccatoClient.connect(target_host=temporal_server.address)
    client.task_queue = worker.task_queue
    try:
        worker.start()
        transfer = await client.submit(
            str(data_dir / "local.bin"), str(data_dir / "local-copy.bin"), options
        )
        await wait_for_status(client, transfer, lambda s: s.bytes_done > 0, timeout_s=60)
        worker.kill()
        with no_worker_waits():  # no worker starts again
            said = await wait_for_status(
                client,
                transfer,
                lambda s: "sent no heartbeat" in (s.last_retry_error or ""),
                timeout_s=60,
            )
        reason = said.last_retry_error or ""
        assert "frozen, overloaded or killed" in reason, reason
        assert "does not answer" not in reason and "blocked on" not in reason, reason
    finally:
        worker.kill()
        await client.temporal.get_workflow_handle(transfer).terminate("test over")


#: a source without byte ranges, paced: it is staged (read whole into the staging
#: cache, phase "staging") at 2 MiB/s, so a retried staging read lasts seconds
paced_no_ranges = nginx_fixture(
    "http_root", ranges=False, scope="function", extra_server_config="limit_rate 2m;"
)


async def test_a_retried_staging_read_that_moves_bytes_is_not_shown_retrying(
    temporal_server: TemporalDevServer,
    paced_no_ranges: NginxServer,
    http_root: Path,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    """A source without byte ranges is staged (activity ``stage_source``); its worker
    SIGKILLed mid-read, the read is retried from the start on a new worker. Once that
    retried read moves bytes, status no longer says it retries, as a retried stream's
    does (tester65 T14: "retrying: attempt 2: ..." on every cp line while the retried
    staging read moved 0 -> 178 MiB; it went only when the copy phase began)."""
    size = 24 * MiB
    write_random(http_root / "staged-retried.bin", size, seed=35)
    at_rest(http_root / "staged-retried.bin")
    options = TransferOptions(chunk_size=4 * MiB, streams=1, heartbeat_timeout_s=3)
    env = {"STACCATO_STAGING_DIR": str(tmp_path / "staging")}
    first = WorkerProcess(temporal_server.address, processes=1, log_dir=tmp_path, env=env)
    try:
        first.start()
        client = await StaccatoClient.connect(target_host=temporal_server.address)
        client.task_queue = first.task_queue
        transfer = await client.submit(
            paced_no_ranges.url("staged-retried.bin"), str(data_dir / "staged-retried.bin"), options
        )
        await wait_for_status(
            client,
            transfer,
            lambda s: (s.staged_bytes or 0) >= 2 * MiB or s.state != TransferState.scheduled,
            timeout_s=60,
            interval_s=0.1,
        )
        first.kill()
        # no worker yet: the read timed out for want of heartbeats and waits to be
        # retried, which status says (each status waits 1 s, not 5, for a worker)
        with no_worker_waits():  # until a worker starts again
            await wait_for_status(
                client,
                transfer,
                lambda s: "attempt 2" in (s.last_retry_error or ""),
                timeout_s=60,
                interval_s=0.2,
            )
        with WorkerProcess(
            temporal_server.address,
            task_queue=first.task_queue,
            processes=1,
            log_dir=tmp_path,
            env=env,
        ):
            deadline = time.monotonic() + 120
            while True:  # the retried staging read runs and moves bytes: a rate again
                now = await client.status(transfer)
                assert now.phase != "copy" and now.state != TransferState.completed, (
                    f"staging ended before its retried read was seen moving: {now}"
                )
                if now.phase == "staging" and now.staging_rate_bytes_per_s:
                    break
                assert time.monotonic() < deadline, now
                await asyncio.sleep(0.1)
            assert now.last_retry_error is None, now
            assert now.next_attempt_at is None, now
            result = await asyncio.wait_for(client.wait(transfer), 120)
    finally:
        first.kill()
    assert result.bytes == size


async def test_a_timeout_of_a_worker_that_polls_no_more_names_the_worker_first(
    paced_nginx: NginxServer, http_root: Path, data_dir: Path, tmp_path: Path
) -> None:
    """The worker and the Temporal server SIGKILLed mid-copy (a killed `staccato up`),
    the server started again: the stream's heartbeat timeout is said to be its
    worker's, which Temporal no longer lists as polling, not first "blocked on
    http://... (a server that accepts connections and does not answer)" (tester65 T9:
    the S3 endpoint, which was fine, was blamed first). The server is this test's
    own (not the session's)."""
    write_random(http_root / "gone-worker.bin", 32 * MiB, seed=36)
    at_rest(http_root / "gone-worker.bin")
    options = TransferOptions(chunk_size=2 * MiB, streams=1, heartbeat_timeout_s=3)
    server = TemporalDevServer(tmp_path / "temporal.db", headless=True)
    server.start()
    worker = WorkerProcess(server.address, processes=1, log_dir=tmp_path)
    try:
        worker.start()
        client = await StaccatoClient.connect(target_host=server.address)
        client.task_queue = worker.task_queue
        transfer = await client.submit(
            paced_nginx.url("gone-worker.bin"), str(data_dir / "gone-worker.bin"), options
        )
        await wait_for_status(client, transfer, lambda s: s.bytes_done > 0, timeout_s=60)
        worker.kill()
        server.kill()
        server.start()
        client = await StaccatoClient.connect(target_host=server.address)
        client.task_queue = worker.task_queue
        said = await wait_for_status(
            client,
            transfer,
            lambda s: "sent no heartbeat" in (s.last_retry_error or ""),
            timeout_s=90,
            interval_s=0.5,
        )
        note = said.last_retry_error or ""
        assert "no longer polls Temporal" in note, note
        assert "blocked on" not in note, note
    finally:
        worker.kill()
        server.stop()
