"""A temp file changed after its last journaled chunk, in the worker life that wrote it,
is read back before publish (local file destination; docs/architecture.md, "Chunks
changed after the last journal line").

Tester's case: every chunk journaled, the worker SIGSTOPped before publish, bytes of
chunk 0 and the last 50 bytes of the temp file overwritten by another process,
SIGCONT: the old code published the temp file as it was (``completed``, ``cmp``
differing at byte 101): the chunks were of this worker life, vouched for by
verify-on-write. Now publish sees the temp file's ctime later than the journal's
mtime (every write of ours precedes a journal append) and reads every chunk back; the
changed ones are copied again from the source. An untampered transfer reads nothing
back.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from staccato import checksums
from staccato.client import StaccatoClient
from staccato.endpoints import get_driver
from staccato.endpoints.file.session import changed_after_journal, recheck_earlier_chunks
from staccato.models import TransferOptions, TransferState, WriteSession
from staccato.urls import parse_url
from tests.helpers import (
    MiB,
    WorkerProcess,
    at_rest,
    child_pids,
    journaled_chunks,
    sha256_file,
    signal_all,
    wait_for_status,
    write_random,
)
from tests.servers.temporal_server import TemporalDevServer

# a clock tick of the kernel's coarse time stamps is 1-10 ms: a change within the tick
# of the last journal append carries the same stamp and is not seen (documented)
_PAST_A_TICK_S = 0.05


def _tamper(temp: Path) -> None:
    """The tester's change: 20 bytes at offset 100 and 50 bytes before the end
    overwritten with ``Z``, the temp file's mtime put back (its ctime cannot be)."""
    st = temp.stat()
    with open(temp, "r+b") as handle:
        for offset in (100, st.st_size - 50):
            handle.seek(offset)
            handle.write(b"Z" * 20)
    os.utime(temp, ns=(st.st_atime_ns, st.st_mtime_ns))


CHUNK = 64 * 1024
CHUNKS = 6


def _written_session(tmp_path: Path, data: bytes) -> WriteSession:
    driver = get_driver("file")
    session = driver.open_session(
        parse_url(str(tmp_path / "out.bin")), len(data), CHUNK, "t-changed"
    )
    with driver.open_writer(session) as writer:
        for index in range(CHUNKS):
            chunk = memoryview(data)[index * CHUNK : (index + 1) * CHUNK]
            writer.write_chunk(index, chunk, checksums.checksum_bytes("crc32c", chunk))
    return session


def test_untouched_temp_is_not_read_back_and_a_changed_one_is(tmp_path: Path) -> None:
    """In one life (this process's): nothing read back after the writes, past a clock
    tick too; after the tester's change, every chunk is read and the two changed ones
    reported; a change that left the bytes as they were (rewritten alike) costs one
    read back, after which the owner records' append vouches again."""
    data = os.urandom(CHUNK * CHUNKS)
    session = _written_session(tmp_path, data)
    assert recheck_earlier_chunks(session) == ({}, 0)
    time.sleep(_PAST_A_TICK_S)
    assert changed_after_journal(session) is None
    assert recheck_earlier_chunks(session) == ({}, 0)

    temp = Path(session.session_id)
    _tamper(temp)
    assert changed_after_journal(session) is not None
    damaged, reread = recheck_earlier_chunks(session)
    assert sorted(damaged) == [0, CHUNKS - 1]
    assert reread == CHUNK * CHUNKS

    # bytes rewritten as they were: read back once, found equal, vouched for again
    fixed = tmp_path / "fixed"
    fixed.mkdir()
    session = _written_session(fixed, data)
    time.sleep(_PAST_A_TICK_S)
    with open(session.session_id, "r+b") as handle:
        handle.write(data[:10])
    assert recheck_earlier_chunks(session) == ({}, CHUNK * CHUNKS)
    assert changed_after_journal(session) is None
    assert recheck_earlier_chunks(session) == ({}, 0)


SIZE = 64 * MiB
# two fixed streams (no tuning: two segments, both started at once), 4 MiB chunks,
# 16 MiB/s: each stream writes its 8 chunks in ~4 s; the heartbeat timeout outlasts
# the worker's main process being stopped meanwhile
OPTIONS = TransferOptions(streams=2, chunk_size=4 * MiB, max_rate=16 * MiB, heartbeat_timeout_s=120)


@pytest.mark.parametrize("tampered", [True, False], ids=["tampered", "untampered"])
async def test_temp_changed_while_worker_stopped_before_publish(
    temporal_server: TemporalDevServer, data_dir: Path, tmp_path: Path, tampered: bool
) -> None:
    """Every chunk journaled, publish not yet run, the worker (main and activity
    processes) stopped: ``tampered``, the tester's change to the temp file, then
    SIGCONT: the destination equals the source (the old code: ``completed`` with the
    changed bytes). ``untampered``: the same stop, no change: publish reads nothing
    back."""
    source = data_dir / "src.bin"
    digest = write_random(source, SIZE, seed=68)
    at_rest(source)
    out = data_dir / "out"
    out.mkdir()
    destination = out / "dst.bin"
    worker = WorkerProcess(temporal_server.address, processes=2, log_dir=tmp_path).start()
    assert worker.process is not None
    main = worker.process.pid
    stopped: list[int] = []
    try:
        client = await StaccatoClient.connect(
            target_host=temporal_server.address, namespace="default"
        )
        client.task_queue = worker.task_queue
        transfer = await client.submit(str(source), str(destination), OPTIONS)
        chunks = SIZE // OPTIONS.chunk_size
        half = chunks // 2

        # both segments' streams have begun (a chunk line in each half): stop the
        # main process, so no stream's end reaches Temporal and publish cannot start;
        # the activity processes write on
        deadline = time.monotonic() + 120
        journal: Path | None = None
        while True:
            assert time.monotonic() < deadline, "the streams did not start in 120 s"
            found = sorted(out.glob(".*.staccato-journal"))
            journal = found[0] if found else None
            lines = journaled_chunks(journal) if journal else set()
            if any(i < half for i in lines) and any(i >= half for i in lines):
                break
            await asyncio.sleep(0.02)
        assert journal is not None
        os.kill(main, signal.SIGSTOP)
        stopped.append(main)
        assert len(lines) < chunks, "every chunk was journaled before the stop"
        while len(journaled_chunks(journal)) < chunks:
            assert time.monotonic() < deadline, sorted(journaled_chunks(journal))
            await asyncio.sleep(0.05)
        pool = child_pids(main)
        signal_all(pool, signal.SIGSTOP)
        stopped[:0] = pool
        assert not destination.exists()

        temp = journal.with_name(journal.name.replace("-journal", "-part"))
        await asyncio.sleep(_PAST_A_TICK_S)
        if tampered:
            _tamper(temp)
        signal_all(stopped, signal.SIGCONT)
        stopped.clear()

        result = await asyncio.wait_for(client.wait(transfer), 180)
        assert result.bytes == SIZE
        assert sha256_file(destination) == digest, "published bytes differ from the source"
        done = await wait_for_status(
            client, transfer, lambda s: s.state == TransferState.completed, timeout_s=30
        )
        assert done.state == TransferState.completed
        log = worker.log_path.read_text(errors="replace")
        if tampered:
            assert "reading back every chunk" in log, worker.log_tail()
            assert "copied again" in log, worker.log_tail()
        else:
            assert "read back" not in log and "reading back" not in log, worker.log_tail()
    finally:
        signal_all(stopped, signal.SIGCONT)
        worker.stop()
