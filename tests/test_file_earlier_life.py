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
import os
import time
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType

from staccato.client import StaccatoClient
from staccato.errors import TransferFailedError
from staccato.models import StreamResult, TransferOptions, TransferState
from tests.helpers import (
    MiB,
    WorkerProcess,
    at_rest,
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
# a local copy is not tuned (staccato.links.tuned_link): the same plan, fixed, of 16
# streams x 16 MiB (a segment a chunk) on workers that run 8 at once (2 processes x 4
# threads), so the first 8 segments complete at half way as the tuned plan's did
LOCAL_OPTIONS = TransferOptions(
    streams=16, chunk_size=16 * MiB, max_rate=16 * MiB, heartbeat_timeout_s=3
)
LOCAL_WORKER_ENV = {"STACCATO_WORKER_THREADS": "4"}


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


async def _completed_segments(client: StaccatoClient, transfer: str) -> list[int]:
    """Segments whose copy_stream activity the history shows completed."""
    scheduled: set[int] = set()
    completed: list[int] = []
    async for event in client.temporal.get_workflow_handle(transfer).fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attributes = event.activity_task_scheduled_event_attributes
            if attributes.activity_type.name == "copy_stream":
                scheduled.add(event.event_id)
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            attributes = event.activity_task_completed_event_attributes
            if attributes.scheduled_event_id in scheduled:
                (result,) = await client.temporal.data_converter.decode(
                    attributes.result.payloads, [StreamResult]
                )
                if result.complete:
                    completed.append(result.segment)
    return completed


def _invert(path: Path, offset: int) -> None:
    """Invert the 10 bytes of ``path`` at ``offset``, its mtime kept."""
    st = path.stat()
    with open(path, "r+b") as handle:
        handle.seek(offset)
        old = handle.read(10)
        handle.seek(offset)
        handle.write(bytes(b ^ 0xFF for b in old))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize("source_changed", [False, True], ids=["temp", "temp-and-source"])
async def test_chunks_changed_while_no_worker_ran_are_copied_again(
    temporal_server: TemporalDevServer,
    data_dir: Path,
    tmp_path: Path,
    source_changed: bool,
    request: pytest.FixtureRequest,
) -> None:
    """``temp``: a local source; the changed chunks are copied again, the destination
    equals the source. ``temp-and-source``: an HTTP source (nginx's ETag is mtime and
    size), changed the same way in a chunk of a completed segment with its mtime put
    back, so its version cannot tell: that chunk no longer gives its journaled
    checksum, the transfer fails with ``source changed`` and nothing is published."""
    if source_changed:
        http_root: Path = request.getfixturevalue("http_root")
        nginx = request.getfixturevalue("nginx_ranges")
        source = http_root / "earlier-life.bin"
        source_url = nginx.url(source.name)
    else:
        source = data_dir / "src.bin"
        source_url = str(source)
    digest = write_random(source, SIZE, seed=41)
    at_rest(source)  # an mtime old enough to prove it stable: no second read of it
    out = data_dir / "out"
    out.mkdir()
    destination = out / "cor.bin"
    options, env = (OPTIONS, None) if source_changed else (LOCAL_OPTIONS, LOCAL_WORKER_ENV)
    first = WorkerProcess(temporal_server.address, processes=2, log_dir=tmp_path, env=env).start()
    second: WorkerProcess | None = None
    try:
        client = await StaccatoClient.connect(
            target_host=temporal_server.address, namespace="default"
        )
        client.task_queue = first.task_queue
        transfer = await client.submit(source_url, str(destination), options)
        # kill once a segment is complete (its stream returned) and more are running
        deadline = time.monotonic() + 120
        while not (completed := await _completed_segments(client, transfer)):
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
        for index in chunks:
            _invert(temp, index * chunk + 1000)
        if source_changed:
            # a segment of the tuned plan is one 16 MiB chunk here: segment i = chunk i
            assert status.streams and SIZE // chunk <= 2 * 16, status
            _invert(source, completed[0] * chunk + 1000)

        second = WorkerProcess(
            temporal_server.address,
            task_queue=first.task_queue,
            processes=2,
            log_dir=tmp_path,
            env=env,
        ).start()
        if source_changed:
            with pytest.raises(TransferFailedError) as failure:
                await asyncio.wait_for(client.wait(transfer), 180)
            assert "source changed" in str(failure.value), failure.value
            assert not destination.exists()
            source.unlink()
            return
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
