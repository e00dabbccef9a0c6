"""A pause inside a chunk keeps the bytes each stream read of it: the stopped stream
writes them to the temp file, ``fdatasync``-s them and journals them with their
checksum (a partial record), the paused status counts them, and the resumed stream
reads back and checks that prefix and asks the source only for the rest of the chunk.

Before, a pause with 16 MiB chunks lost every stream's chunk in flight: the status
showed the streams' bytes while they ran, then 0 B while paused, and the resume read
each chunk again from its start (a tester's 80 MiB transfer at 4 MiB/s: 23.9 MiB,
then 0 B, then sent again from 0).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from staccato.client import StaccatoClient
from staccato.models import TransferOptions, TransferState
from staccato.temp_names import JOURNAL_SUFFIX
from tests.helpers import (
    IN_FLIGHT_PER_STREAM,
    MiB,
    WorkerProcess,
    at_rest,
    no_worker_waits,
    sha256_file,
    status_json,
    write_random,
)
from tests.servers.nginx import NginxServer, nginx_fixture

CHUNK = 16 * MiB
STREAMS = 4
#: one 16 MiB chunk per stream: nothing of a segment is durable before its chunk ends
SIZE = STREAMS * CHUNK
OPTIONS = TransferOptions(chunk_size=CHUNK, streams=STREAMS, heartbeat_timeout_s=5)
# the workers run one activity process each: its threads run the 4 paced streams at
# once (a second process is ~0.65 CPU-s per start, four starts)
#: the pause comes once the streams together read this much (~4 MiB of each chunk)
PAUSE_AT = 16 * MiB
#: what the source may send again in all: the bytes in the sockets and the readers'
#: buffers when the pause stopped the streams (a chunk per stream was 64 MiB here)
RESENT_BOUND = STREAMS * IN_FLIGHT_PER_STREAM

# each connection at 1 MB/s: a chunk takes ~16 s, so the pause (or stop) asked for at
# ~4 s lands inside it with ~12 s to spare. At 2 MB/s it had ~6 s, which a pause's way
# to the streams (a workflow task, then each stream's next heartbeat, sent at most every
# 0.8 x its 5 s timeout) can take at load 15: then the chunks ended before it
paced_nginx = nginx_fixture("http_root", scope="function", extra_server_config="limit_rate 1m;")


def _kept_in_journal(destination: Path) -> int:
    """Bytes the journal beside ``destination`` records as kept prefixes (the last
    partial record per chunk)."""
    kept: dict[int, int] = {}
    for journal in destination.parent.glob(f".{destination.name}.*{JOURNAL_SUFFIX}"):
        for line in journal.read_text().splitlines():
            fields = line.split()
            if len(fields) == 4 and fields[0] == "p":
                kept[int(fields[1])] = int(fields[2])
    return sum(kept.values())


async def test_a_pause_inside_a_chunk_keeps_what_the_streams_read_of_it(
    temporal_server, paced_nginx: NginxServer, http_root: Path, data_dir: Path, tmp_path: Path
) -> None:
    source = http_root / "keep.bin"
    write_random(source, SIZE, seed=77)
    at_rest(source)
    destination = data_dir / "keep.bin"
    first = WorkerProcess(temporal_server.address, processes=1, log_dir=tmp_path)
    try:
        first.start()
        client = await StaccatoClient.connect(target_host=temporal_server.address)
        client.task_queue = first.task_queue
        transfer = await client.submit(paced_nginx.url("keep.bin"), str(destination), OPTIONS)
        deadline = time.monotonic() + 120
        while (before := await client.status(transfer)).bytes_done < PAUSE_AT:
            assert before.state in (TransferState.scheduled, TransferState.running), before
            assert time.monotonic() < deadline, before
            await asyncio.sleep(0.1)
        await client.pause(transfer)
        handle = client.temporal.get_workflow_handle(transfer)
        deadline = time.monotonic() + 60
        while "bytes_paused" not in (memo := await (await handle.describe()).memo()):
            assert time.monotonic() < deadline, memo
            await asyncio.sleep(0.1)
        held = await client.status(transfer)  # a worker answers
        assert held.state == TransferState.paused, held
        assert held.bytes_done < SIZE, held  # no chunk ended: the pause was inside them
        kept = _kept_in_journal(destination)
        first.kill()
        with no_worker_waits():  # until a worker starts again
            orphaned = await status_json(
                transfer, address=temporal_server.address, task_queue=first.task_queue
            )
        assert orphaned["state"] == "paused", orphaned
        sent_before_resume = paced_nginx.bytes_sent()
        with WorkerProcess(
            temporal_server.address, task_queue=first.task_queue, processes=1, log_dir=tmp_path
        ):
            await client.resume(transfer)
            result = await asyncio.wait_for(client.wait(transfer), 180)
    finally:
        first.kill()
    sent = paced_nginx.bytes_sent()
    resent = sent - SIZE
    numbers = (
        f"before the pause {before.bytes_done} B shown; paused: {held.bytes_done} B (worker), "
        f"{orphaned['bytes_done']} B (no worker), {kept} B kept in the journal; source sent "
        f"{sent_before_resume} B before the resume, {sent} B in all: {resent} B again"
    )
    print(numbers)
    # what each stream had read when the pause came is durable and counted, with a
    # worker and without one
    assert held.bytes_done >= before.bytes_done, numbers
    assert held.bytes_done == memo["bytes_paused"] == orphaned["bytes_done"], numbers
    assert kept == held.bytes_done, numbers
    # the resumed streams asked the source for the rest of their chunks only
    assert result.bytes == SIZE
    assert 0 <= resent <= RESENT_BOUND, numbers
    assert sha256_file(destination) == sha256_file(source)


async def test_a_graceful_worker_stop_inside_a_chunk_keeps_what_the_streams_read_of_it(
    temporal_server, paced_nginx: NginxServer, http_root: Path, data_dir: Path, tmp_path: Path
) -> None:
    """The same for a SIGTERM to the worker (its graceful shutdown cancels the streams,
    which fail their attempts with ``WorkerStopping``): the bytes of the chunks in
    flight are kept and counted while no worker runs, and the next worker's attempts
    read only the rest of each chunk. Before, the status kept the checkpoints' bytes
    but the retries read every chunk again from its start."""
    source = http_root / "stop.bin"
    write_random(source, SIZE, seed=79)
    at_rest(source)
    destination = data_dir / "stop.bin"
    first = WorkerProcess(
        temporal_server.address,
        processes=1,
        env={"STACCATO_WORKER_SHUTDOWN_TIMEOUT_S": "1"},
        log_dir=tmp_path,
    )
    try:
        first.start()
        client = await StaccatoClient.connect(target_host=temporal_server.address)
        client.task_queue = first.task_queue
        transfer = await client.submit(paced_nginx.url("stop.bin"), str(destination), OPTIONS)
        deadline = time.monotonic() + 120
        while (before := await client.status(transfer)).bytes_done < PAUSE_AT:
            assert before.state in (TransferState.scheduled, TransferState.running), before
            assert time.monotonic() < deadline, before
            await asyncio.sleep(0.1)
        await asyncio.to_thread(first.stop)  # SIGTERM: the worker's graceful shutdown
        kept = _kept_in_journal(destination)
        with no_worker_waits():  # until a worker starts again
            orphaned = await status_json(
                transfer, address=temporal_server.address, task_queue=first.task_queue
            )
        sent_before_restart = paced_nginx.bytes_sent()
        with WorkerProcess(
            temporal_server.address, task_queue=first.task_queue, processes=1, log_dir=tmp_path
        ):
            result = await asyncio.wait_for(client.wait(transfer), 180)
    finally:
        first.kill()
    sent = paced_nginx.bytes_sent()
    resent = sent - SIZE
    numbers = (
        f"before the stop {before.bytes_done} B shown; stopped: {orphaned['bytes_done']} B "
        f"(no worker), {kept} B kept in the journal; source sent {sent_before_restart} B "
        f"before the restart, {sent} B in all: {resent} B again"
    )
    print(numbers)
    assert orphaned["bytes_done"] >= before.bytes_done, numbers
    assert kept >= before.bytes_done, numbers
    assert result.bytes == SIZE
    assert 0 <= resent <= RESENT_BOUND, numbers
    assert sha256_file(destination) == sha256_file(source)
