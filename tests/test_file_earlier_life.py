"""Chunks an earlier worker life made durable are read back before publish (local file
destination; docs/architecture.md, "Integrity of a written chunk").

A paced transfer is cut into more segments than it runs streams at once (the tuner
chooses), so some segments complete before the worker is SIGKILLed. Bytes of every
journaled chunk of the temp file are then changed (10 bytes at offset 1000 of each
chunk) while no worker runs. A completed segment's chunks are never re-read by a
resumed stream; the old code published them as they were, with the source's checksum
("completed", destination != source). Now publish, in a new worker life, reads back
every chunk the earlier life journaled and copies the changed ones again.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from temporalio.api.enums.v1 import EventType

from staccato.client import StaccatoClient
from staccato.models import TransferOptions, TransferState
from tests.helpers import (
    MiB,
    WorkerProcess,
    child_pids,
    pid_alive,
    sha256_file,
    wait_for_status,
    write_random,
)
from tests.servers.temporal_server import TemporalDevServer

SIZE = 256 * MiB
# tuned (no --streams nor --chunk-size, as the tester's `submit`): 16 MiB chunks, a
# segment each, 8 streams at a cold start, so the first 8 segments complete at half
# way, well before the transfer does; 16 MiB/s: ~16 s in all
OPTIONS = TransferOptions(tuning=True, max_rate=16 * MiB, heartbeat_timeout_s=3)


def _journal(directory: Path) -> Path | None:
    found = sorted(directory.glob(".*.staccato-journal"))
    return found[0] if found else None


def _journaled(journal: Path) -> list[int]:
    """Indexes of the journal's chunk lines (``INDEX CHECKSUM``)."""
    indexes = []
    for line in journal.read_text().splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0].isdigit():
            indexes.append(int(fields[0]))
    return sorted(set(indexes))


async def _completed_streams(client: StaccatoClient, transfer: str) -> int:
    """copy_stream activities the history shows completed."""
    scheduled: set[int] = set()
    completed = 0
    async for event in client.temporal.get_workflow_handle(transfer).fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attributes = event.activity_task_scheduled_event_attributes
            if attributes.activity_type.name == "copy_stream":
                scheduled.add(event.event_id)
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            attributes = event.activity_task_completed_event_attributes
            if attributes.scheduled_event_id in scheduled:
                completed += 1
    return completed


async def test_chunks_changed_while_no_worker_ran_are_copied_again(
    temporal_server: TemporalDevServer, data_dir: Path, tmp_path: Path
) -> None:
    source = data_dir / "src.bin"
    digest = write_random(source, SIZE, seed=41)
    out = data_dir / "out"
    out.mkdir()
    destination = out / "cor.bin"
    first = WorkerProcess(temporal_server.address, processes=2, log_dir=tmp_path).start()
    second: WorkerProcess | None = None
    try:
        client = await StaccatoClient.connect(
            target_host=temporal_server.address, namespace="default"
        )
        client.task_queue = first.task_queue
        transfer = await client.submit(str(source), str(destination), OPTIONS)
        # kill once a segment is complete (its stream returned) and more are running
        deadline = time.monotonic() + 120
        while await _completed_streams(client, transfer) == 0:
            assert time.monotonic() < deadline, "no segment completed in 120 s"
            await asyncio.sleep(0.1)
        status = await client.status(transfer)
        assert status.state == TransferState.running, status
        chunk = status.chunk_size
        pool = child_pids(first.process.pid)
        first.kill()
        deadline = time.monotonic() + 10
        while any(pid_alive(p) for p in pool) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert not any(pid_alive(p) for p in pool)

        journal = _journal(out)
        assert journal is not None, list(out.iterdir())
        temp = journal.with_name(journal.name.replace("-journal", "-part"))
        chunks = _journaled(journal)
        assert chunks, journal.read_text()
        # change 10 bytes at offset 1000 of every journaled chunk (invert them)
        with open(temp, "r+b") as handle:
            for index in chunks:
                handle.seek(index * chunk + 1000)
                old = handle.read(10)
                handle.seek(index * chunk + 1000)
                handle.write(bytes(b ^ 0xFF for b in old))

        second = WorkerProcess(
            temporal_server.address, task_queue=first.task_queue, processes=2, log_dir=tmp_path
        ).start()
        result = await asyncio.wait_for(client.wait(transfer), 180)
        assert result.bytes == SIZE
        assert sha256_file(destination) == digest, "published bytes differ from the source"
        done = await wait_for_status(
            client, transfer, lambda s: s.state == TransferState.completed, timeout_s=30
        )
        assert done.state == TransferState.completed
        log = second.log_path.read_text(errors="replace")
        assert "copied again" in log or "re-read" in log, second.log_tail()
    finally:
        first.stop()
        if second is not None:
            second.stop()
