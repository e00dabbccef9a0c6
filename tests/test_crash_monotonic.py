"""``bytes_done`` across a crash of the worker and of Temporal (tester65 MED-2): read by
``status`` at short intervals from the restart to the end, it never falls (a tester saw
92.5 -> 85.2 MiB, and 200.0 MiB (100 %) -> 142.5 MiB), and the copy is whole.

The fall came from a segment counted twice: ``status`` described the run (the streams'
last heartbeats), then asked the workflow's progress query (the committed segments); a
worker slow to answer after the restart answered after a stream had committed its
segment, which then counted both committed and in flight."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from staccato.client import StaccatoClient
from staccato.models import TransferOptions, TransferState
from tests.helpers import MiB, WorkerProcess, child_pids, pid_alive, sha256_file, write_random
from tests.servers.temporal_server import TemporalDevServer

CHUNK = 2 * MiB
# 22 chunks in 4 segments: 12, 12, 12 and 8 MiB (the short one commits while the others
# still copy), paced so the copy lasts ~15 s
SIZE = 22 * CHUNK
OPTIONS = TransferOptions(chunk_size=CHUNK, streams=4, max_rate=3 * MiB, heartbeat_timeout_s=3)


def _slow_answers(client: StaccatoClient) -> None:
    """Make ``client``'s status ask the progress query only once the run's pending
    activities differ from those of the description the status took (or after 1 s):
    the query then answers for a later moment than the describe, as a worker slow to
    answer (a tester's, after a restart at load 66) made it."""
    real = client._answered

    async def answered(handle: Any, description: Any) -> Any:
        ids = {p.activity_id for p in description.raw_description.pending_activities}
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline:
            now = await handle.describe()
            if {p.activity_id for p in now.raw_description.pending_activities} != ids:
                break
            await asyncio.sleep(0.05)
        return await real(handle, description)

    client._answered = answered  # type: ignore[method-assign]


async def test_bytes_done_never_falls_across_worker_and_temporal_kill(
    data_dir: Path, tmp_path: Path
) -> None:
    """SIGKILL the worker and the Temporal dev server mid-copy, start both again: every
    ``bytes_done`` read from then until the transfer completes is at least the one
    before it, at most ``bytes_total``; the destination equals the source."""
    server = TemporalDevServer(tmp_path / "temporal.db")
    server.start()
    source = data_dir / "mono.bin"
    destination = data_dir / "mono-copy.bin"
    digest = write_random(source, SIZE, seed=65)
    first = WorkerProcess(server.address, processes=1, log_dir=tmp_path)
    second: WorkerProcess | None = None
    seen: list[tuple[float, str, int]] = []
    try:
        first.start()
        client = await StaccatoClient.connect(target_host=server.address)
        client.task_queue = first.task_queue
        transfer = await client.submit(str(source), str(destination), OPTIONS)
        deadline = time.monotonic() + 120
        while (before := await client.status(transfer)).bytes_done < SIZE // 5:
            assert before.state == TransferState.running or before.bytes_done == 0, before
            assert time.monotonic() < deadline, before
            await asyncio.sleep(0.2)
        pool = child_pids(first.process.pid)  # type: ignore[union-attr]
        first.kill()
        server.kill()
        deadline = time.monotonic() + 10
        while any(pid_alive(p) for p in pool) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        server.start()  # same port, same SQLite file
        client = await StaccatoClient.connect(target_host=server.address)
        client.task_queue = first.task_queue
        second = WorkerProcess(
            server.address, task_queue=first.task_queue, processes=1, log_dir=tmp_path
        )
        second.start()
        # after a restart, at load, a worker answers the progress query seconds after
        # the run was described: as such a worker, each query here waits until the
        # run's pending activities changed since the describe (a stream's segment
        # committed, a new step began), at most 1 s
        _slow_answers(client)
        started = time.monotonic()
        deadline = started + 180
        for _ in range(3000):  # bounded: ~0.2 s apart, at most 180 s
            try:
                status = await client.status(transfer)
            except Exception as err:  # noqa: BLE001 - a status that failed tells nothing
                seen.append((time.monotonic() - started, f"error {err!r}", -1))
                await asyncio.sleep(0.2)
                continue
            seen.append((time.monotonic() - started, status.state.value, status.bytes_done))
            assert status.bytes_total in (None, SIZE), status
            assert status.bytes_done <= SIZE, status
            if status.state != TransferState.running or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        result = await asyncio.wait_for(client.wait(transfer), 120)
    finally:
        first.kill()
        if second is not None:
            second.kill()
        server.stop()
    assert result.bytes == SIZE
    assert sha256_file(destination) == digest
    readings = [done for _, _, done in seen if done >= 0]
    print("bytes_done after the restart (MiB):", [round(d / MiB, 1) for d in readings])
    falls = [(a, b) for a, b in zip(readings, readings[1:], strict=False) if b < a]
    assert len(readings) >= 5, seen
    assert not falls, f"bytes_done fell: {falls}; seen {seen}"
