"""Control and integrity: exclusivity, cancel, pause/resume, source changes,
live progress, and a small workflow history."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType

from staccato.client import StaccatoClient
from staccato.errors import DestinationBusyError, TransferFailedError
from staccato.models import TransferOptions, TransferState
from staccato.workflows.transfer import TransferWorkflow
from tests.helpers import (
    MiB,
    leftovers,
    run_cli,
    settled,
    sha256_file,
    wait_for_status,
    write_random,
)
from tests.servers.holding_proxy import HoldingProxy
from tests.servers.nginx import NginxServer, nginx_fixture
from tests.servers.pacing_proxy import PacingProxy

SIZE = 48 * MiB
#: the last chunk of the damaged-while-paused test's source: 2 MiB after two 12 MiB
#: chunks, so the short segment 1 ends first and is the one damaged
LAST_CHUNK = 2 * MiB
OPTIONS = TransferOptions(chunk_size=2 * MiB, streams=4, heartbeat_timeout_s=3)
#: a :class:`PacingProxy` rate (bytes/s) that paces nothing
FULL_SPEED = 1e12


# nginx sending at most 3 MB/s per connection: a 48 MiB transfer lasts ~4 s.
slow_nginx = nginx_fixture("http_root", scope="function", extra_server_config="limit_rate 3m;")
#: 4 MB/s for 4 streams: a 96 MiB copy lasts ~25 s, so the cancel has ~17 s from 10 %
#: to stop it before 80 % are read (at 12 MB/s it had ~5.5 s, which a cancel's way
#: through a query, a workflow task and a stream's next heartbeat can take at load 15)
slower_nginx = nginx_fixture("http_root", scope="function", extra_server_config="limit_rate 1m;")


def _started(fraction: float = 0.1):
    return lambda s: (
        s.state != TransferState.scheduled
        and (
            s.state != TransferState.running
            or (s.bytes_total and s.bytes_done >= s.bytes_total * fraction)
        )
    )


async def test_one_transfer_per_destination(
    client: StaccatoClient,
    paced_nginx: PacingProxy,
    http_root: Path,
    data_dir: Path,
    temporal_server,
) -> None:
    """The winner is paced (~100 s for its bytes) until the CLI's refusal has been
    checked, then lifted: the destination is still busy however long the loaded machine
    takes to start the CLI (ci53 at load ~28: the winner, ~4 s at nginx's limit_rate,
    had completed before the CLI asked, so the CLI's submit rightly started)."""
    paced_nginx.rate = 500_000
    write_random(http_root / "busy-a.bin", SIZE, seed=1)
    write_random(http_root / "busy-b.bin", SIZE, seed=2)
    destination = data_dir / "busy.bin"
    a, b = paced_nginx.url("busy-a.bin"), paced_nginx.url("busy-b.bin")
    outcomes = await asyncio.gather(
        client.submit(a, str(destination), OPTIONS),
        client.submit(b, str(destination), OPTIONS),
        return_exceptions=True,
    )
    ids = [o for o in outcomes if isinstance(o, str)]
    busy = [o for o in outcomes if isinstance(o, DestinationBusyError)]
    assert len(ids) == 1 and len(busy) == 1, outcomes
    assert "destination busy" in str(busy[0]) and ids[0] in str(busy[0])
    winner = a if outcomes[0] == ids[0] else b
    loser = b if winner == a else a
    # identical re-submission attaches to the running transfer
    assert await client.submit(winner, str(destination), OPTIONS) == ids[0]
    # the CLI exits non-zero, naming the running transfer
    cli = run_cli(
        "submit",
        loser,
        str(destination),
        "--chunk-size",
        "2MiB",
        address=temporal_server.address,
        task_queue=client.task_queue,
    )
    assert cli.returncode == 1, cli
    assert "destination busy" in cli.stderr and ids[0] in cli.stderr
    paced_nginx.rate = FULL_SPEED
    await asyncio.wait_for(client.wait(ids[0]), 120)
    assert sha256_file(destination) == sha256_file(http_root / os.path.basename(winner))


async def test_cancel_keeps_existing_destination(
    client: StaccatoClient, slower_nginx: NginxServer, http_root: Path, data_dir: Path
) -> None:
    write_random(http_root / "cancel.bin", 2 * SIZE, seed=3)
    destination = data_dir / "cancel.bin"
    destination.write_bytes(b"precious old content")
    slower_nginx.clear_log()
    transfer = await client.submit(slower_nginx.url("cancel.bin"), str(destination), OPTIONS)
    await wait_for_status(client, transfer, _started(0.1), timeout_s=60)
    assert leftovers(data_dir), "a running transfer should have a temp file"
    await client.cancel(transfer)
    status = await wait_for_status(
        client, transfer, lambda s: s.state == TransferState.cancelled, timeout_s=60
    )
    assert status.state == TransferState.cancelled
    with pytest.raises(TransferFailedError):
        await client.wait(transfer)
    assert destination.read_bytes() == b"precious old content"
    assert leftovers(data_dir) == []
    sent = sum(r["body_bytes_sent"] for r in slower_nginx.requests() if r["method"] == "GET")
    assert sent < 2 * SIZE * 0.8, f"cancel let the copy run on: {sent} of {2 * SIZE} bytes read"


@pytest.fixture
def paced_nginx(nginx_ranges: NginxServer) -> Iterator[PacingProxy]:
    """``nginx_ranges`` paced at 12 MB/s in all (as ``slow_nginx`` for 4 streams) or at
    the ``rate`` a test sets, until it lifts it (``rate = FULL_SPEED``)."""
    proxy = PacingProxy(nginx_ranges.port, rate_bytes_per_s=12_000_000).start()
    try:
        yield proxy
    finally:
        proxy.stop()


async def test_pause_then_resume(
    client: StaccatoClient,
    temporal_server,
    paced_nginx: PacingProxy,
    http_root: Path,
    data_dir: Path,
) -> None:
    """Paced until the pause has been checked; the resumed copy runs at full speed.
    A resume of the running transfer and a second pause are idempotent (exit 0,
    `already running`, `already paused`; they exited 1 "cannot pause a transfer that is
    paused")."""
    digest = write_random(http_root / "pause.bin", 2 * SIZE, seed=4)
    destination = data_dir / "pause.bin"
    # ~33 s in all: the copy cannot end before the pause on a loaded machine (at
    # 12 MB/s it ended while the `resume` command below started, at load 12)
    paced_nginx.rate = 3_000_000
    transfer = await client.submit(paced_nginx.url("pause.bin"), str(destination), OPTIONS)
    await wait_for_status(client, transfer, _started(0.1), timeout_s=60)

    def cli(command: str) -> Any:
        return run_cli(
            command,
            transfer,
            address=temporal_server.address,
            task_queue=client.task_queue,
            timeout_s=60,
        )

    running = await asyncio.to_thread(cli, "resume")
    assert running.returncode == 0, running.stderr
    assert running.stdout.strip() == f"already running: {transfer}", running.stdout
    assert await client.pause(transfer) is True
    await wait_for_status(client, transfer, lambda s: s.state == TransferState.paused, timeout_s=30)
    again = await asyncio.to_thread(cli, "pause")
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"already paused: {transfer}", again.stdout
    assert await client.pause(transfer) is False
    # streams stop at their next heartbeat: bytes_done settles below the total
    previous = -1
    for _ in range(40):
        await asyncio.sleep(1)
        paused = await client.status(transfer)
        if paused.bytes_done == previous:
            break
        previous = paused.bytes_done
    assert paused.state == TransferState.paused
    assert paused.bytes_done == previous, "bytes kept moving while paused"
    assert 0 < paused.bytes_done < 2 * SIZE
    assert not destination.exists()
    paced_nginx.rate = FULL_SPEED
    await client.resume(transfer)
    result = await asyncio.wait_for(client.wait(transfer), 120)
    assert result.bytes == 2 * SIZE
    assert sha256_file(destination) == digest
    assert leftovers(data_dir) == []


async def test_progress_moves_every_two_seconds(
    client: StaccatoClient, slow_nginx: NginxServer, http_root: Path, data_dir: Path
) -> None:
    write_random(http_root / "progress.bin", SIZE, seed=5)
    options = TransferOptions(chunk_size=2 * MiB, streams=2, heartbeat_timeout_s=3)  # ~6 MB/s: ~8 s
    transfer = await client.submit(slow_nginx.url("progress.bin"), str(data_dir / "p.bin"), options)
    await wait_for_status(
        client,
        transfer,
        lambda s: s.state != TransferState.scheduled and s.bytes_done > 0,
        timeout_s=60,
    )
    samples: list[tuple[float, int, TransferState]] = []
    for _ in range(40):
        status = await client.status(transfer)
        if status.state != TransferState.running or status.bytes_done == status.bytes_total:
            break  # copied: what follows (a second read of a just-written source) is no copy
        samples.append((time.monotonic(), status.bytes_done, status.state))
        assert status.rate_bytes_per_s is not None
        await asyncio.sleep(0.25)
    running = [(t, b) for t, b, state in samples if state == TransferState.running]
    assert len(running) >= 4, samples
    for t0, b0 in running:
        later = [b for t, b in running if t0 < t <= t0 + 2.0]
        if later and running[-1][0] >= t0 + 2.0:
            assert max(later) > b0, f"bytes_done stuck at {b0} for 2 s: {samples}"
    await asyncio.wait_for(client.wait(transfer), 120)


async def test_source_file_changed_during_transfer(client: StaccatoClient, data_dir: Path) -> None:
    """A source appended to while it is copied fails with `source changed`."""
    source = data_dir / "grow.bin"
    with open(source, "wb") as f:
        f.truncate(2048 * MiB)  # sparse, but 2 GiB to copy: a few seconds
    destination = data_dir / "grow.out"
    transfer = await client.submit(str(source), str(destination), OPTIONS)
    await wait_for_status(
        client,
        transfer,
        lambda s: s.state != TransferState.scheduled and s.bytes_done > 0,
        timeout_s=60,
    )
    with open(source, "ab") as f:
        f.write(b"appended while copying")
    with pytest.raises(TransferFailedError) as failure:
        await asyncio.wait_for(client.wait(transfer), 60)
    assert "source changed" in str(failure.value)
    assert not destination.exists()
    assert [n for n in leftovers(data_dir)] == []


async def test_http_source_changed_during_transfer(
    client: StaccatoClient, slow_nginx: NginxServer, http_root: Path, data_dir: Path
) -> None:
    """The ETag/Last-Modified pinned at stat time no longer matches: never a mixed object."""
    source = http_root / "etag.bin"
    write_random(source, SIZE, seed=7)
    destination = data_dir / "etag.bin"
    transfer = await client.submit(slow_nginx.url("etag.bin"), str(destination), OPTIONS)
    await wait_for_status(client, transfer, _started(0.2), timeout_s=60)
    time.sleep(1.1)  # a new Last-Modified second, so the ETag changes
    write_random(source, SIZE, seed=8)
    with pytest.raises(TransferFailedError) as failure:
        await asyncio.wait_for(client.wait(transfer), 120)
    assert "source changed" in str(failure.value)
    assert not destination.exists()
    assert leftovers(data_dir) == []


async def test_history_stays_small(client: StaccatoClient, data_dir: Path) -> None:
    """1 GiB in 1 MiB chunks records fewer than 200 events."""
    source = data_dir / "big.bin"
    with open(source, "wb") as f:
        f.truncate(1024 * MiB)  # sparse: reads fast, still 1,024 chunks to copy and checksum
    destination = data_dir / "big.out"
    transfer = await client.submit(
        str(source), str(destination), TransferOptions(chunk_size=1 * MiB, streams=4, verify="size")
    )
    result = await asyncio.wait_for(client.wait(transfer), 300)
    assert result.bytes == 1024 * MiB
    history = await client.temporal.get_workflow_handle(transfer).fetch_history()
    events = history.events
    print(f"history: {len(events)} events for 1 GiB in 1 MiB chunks")
    assert len(events) < 200
    assert events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED
    destination.unlink()


async def test_corrupted_temp_chunk_is_sent_again(
    client: StaccatoClient, slow_nginx: NginxServer, http_root: Path, data_dir: Path
) -> None:
    """Journaled chunks whose bytes no longer match their checksum (torn write, OS crash,
    stray writer) are not trusted: a resumed stream copies them again, and a segment that
    had completed is caught by the verify before publish and copied again."""
    digest = write_random(http_root / "torn.bin", SIZE, seed=10)
    destination = data_dir / "torn.bin"
    # held at 30 % until the pause is asked for (a poll for 30 % of a copy from a local
    # nginx saw it completed on a busy machine), then a trickle until it lands
    proxy = HoldingProxy(slow_nginx.port, hold_after=int(SIZE * 0.3)).start()
    try:
        transfer = await client.submit(proxy.url("torn.bin"), str(destination), OPTIONS)
        await asyncio.to_thread(proxy.wait_held, 60)
        await client.pause(transfer)
        proxy.rate = 2 * MiB
        proxy.release()
        await wait_for_status(
            client, transfer, lambda s: s.state == TransferState.paused, timeout_s=30
        )
    finally:
        proxy.rate = 10e9
        proxy.release()
    (temp,) = [p for p in data_dir.iterdir() if p.name.endswith(".staccato-part")]
    (journal,) = [p for p in data_dir.iterdir() if p.name.endswith(".staccato-journal")]
    # streams stop at their next heartbeat: once the journal stopped growing (a fixed
    # 3 s could end, at load, before a stream's last chunk was journaled)
    await settled(lambda: journal.read_bytes(), quiet_s=3, timeout_s=60)
    # chunk lines `INDEX CHECKSUM`, and a paused stream's kept start of its chunk
    # `p INDEX LENGTH CHECKSUM`: both must be checked before a resume builds on them
    # (owner records `o INDEX LIFE` name the same chunks)
    journaled = [
        int(fields[1] if fields[0] in ("p", "o") else fields[0])
        for fields in (line.split() for line in journal.read_text().splitlines())
    ]
    assert journaled
    with open(temp, "r+b") as f:  # damage every chunk written so far, done segments included
        for index in journaled:
            f.seek(index * OPTIONS.chunk_size + 100)
            f.write(b"\0garbage\0")
    await client.resume(transfer)
    try:
        result = await asyncio.wait_for(client.wait(transfer), 120)
    finally:
        proxy.stop()
    assert result.bytes == SIZE
    assert sha256_file(destination) == digest


async def test_chunk_damaged_while_paused_is_caught_before_publish(
    client: StaccatoClient, paced_nginx: PacingProxy, http_root: Path, data_dir: Path
) -> None:
    """A segment that finished (its chunks verified as written) and was then damaged
    while the transfer was paused is caught by the read-back before publish and copied
    again: the published file is byte-identical. The source is paced at 3 MB/s in all
    until the damage is done, then served at full speed."""
    paced_nginx.rate = 3_000_000
    chunk = 12 * MiB
    size = 2 * chunk + LAST_CHUNK
    digest = write_random(http_root / "late.bin", size, seed=12)
    destination = data_dir / "late.bin"
    # 2 streams sharing 3 MB/s: segment 0 = chunks 0-1 (~8.8 s), segment 1 = the short
    # chunk 2 (~1.4 s): the pause has ~7.4 s to land between the two (three 4 MiB chunks
    # at 3 MB/s each left 1.4 s, and at load 40 the copy ended first; three 16 MiB
    # chunks left 5.6 s), and the damaged chunk 2 is quick to copy again
    options = TransferOptions(chunk_size=chunk, streams=2, heartbeat_timeout_s=3)
    transfer = await client.submit(paced_nginx.url("late.bin"), str(destination), options)
    handle = client.temporal.get_workflow_handle(transfer)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        progress = await handle.query(TransferWorkflow.progress)
        if progress is not None and progress.segments_done >= 1:
            break
        await asyncio.sleep(0.05)
    assert progress is not None and progress.segments_done == 1, progress
    await client.pause(transfer)
    await wait_for_status(client, transfer, lambda s: s.state == TransferState.paused, timeout_s=30)
    (temp,) = [p for p in data_dir.iterdir() if p.name.endswith(".staccato-part")]
    with open(temp, "r+b") as f:  # damage the finished segment's chunk
        f.seek(2 * chunk + 100)
        f.write(b"\0garbage\0")
    paced_nginx.rate = FULL_SPEED
    await client.resume(transfer)
    result = await asyncio.wait_for(client.wait(transfer), 120)
    assert result.bytes == size
    assert sha256_file(destination) == digest


@pytest.mark.parametrize("tamper", ["delete both", "delete journal", "truncate temp"])
async def test_temp_data_tampered_with_mid_transfer(
    client: StaccatoClient, slow_nginx: NginxServer, http_root: Path, data_dir: Path, tamper: str
) -> None:
    """The temp file or its journal removed or truncated by hand (a cleaner script)
    mid-copy, with an older file of the same size at the destination: the transfer opens
    a new write session, copies again and completes byte-identical, without retrying for
    minutes."""
    digest = write_random(http_root / "gone.bin", SIZE, seed=14)
    destination = data_dir / "gone.bin"
    destination.write_bytes(b"\0" * SIZE)  # same size: must not pass for published
    transfer = await client.submit(slow_nginx.url("gone.bin"), str(destination), OPTIONS)
    await wait_for_status(client, transfer, _started(0.2), timeout_s=60)
    (temp,) = [p for p in data_dir.iterdir() if p.name.endswith(".staccato-part")]
    (journal,) = [p for p in data_dir.iterdir() if p.name.endswith(".staccato-journal")]
    if tamper == "delete both":
        temp.unlink()
        journal.unlink()
    elif tamper == "delete journal":
        journal.unlink()
    else:
        os.truncate(temp, 0)
    started = time.monotonic()
    # status says the copy started again, and why (tester69: no status said so)
    again = await wait_for_status(
        client, transfer, lambda s: s.restarted is not None, timeout_s=120
    )
    assert (again.restarted or "").startswith("write session restarted 1 time ("), again
    result = await asyncio.wait_for(client.wait(transfer), 120)
    assert result.bytes == SIZE and result.sessions_lost == 1, result
    assert sha256_file(destination) == digest
    assert leftovers(data_dir) == []
    print(f"{tamper}: completed {time.monotonic() - started:.1f} s later")
    ended = await client.status(transfer)
    assert ended.restarted is not None and "write session restarted 1 time" in ended.restarted
    assert result.session_lost_reason and result.session_lost_reason in ended.restarted, ended


async def test_destination_directory_removed_mid_transfer(
    client: StaccatoClient, slow_nginx: NginxServer, http_root: Path, data_dir: Path
) -> None:
    """The destination directory removed mid-copy: a clear failure naming it, soon."""
    write_random(http_root / "nodir.bin", SIZE, seed=15)
    directory = data_dir / "vanishing"
    directory.mkdir()
    transfer = await client.submit(
        slow_nginx.url("nodir.bin"), str(directory / "nodir.bin"), OPTIONS
    )
    await wait_for_status(client, transfer, _started(0.2), timeout_s=60)
    for path in directory.iterdir():
        path.unlink()
    directory.rmdir()
    with pytest.raises(TransferFailedError) as failure:
        await asyncio.wait_for(client.wait(transfer), 60)
    assert f"destination directory {directory} does not exist" in str(failure.value)
    assert not directory.exists()


async def test_pause_right_after_submit_holds(client: StaccatoClient, data_dir: Path) -> None:
    """A pause accepted while the transfer is still scheduled is not lost when it starts."""
    source = data_dir / "early.bin"
    digest = write_random(source, 8 * MiB, seed=11)
    destination = data_dir / "early.out"
    transfer = await client.submit(str(source), str(destination), OPTIONS)
    await client.pause(transfer)
    await asyncio.sleep(2)
    status = await client.status(transfer)
    assert status.state == TransferState.paused, status
    assert not destination.exists()
    await client.resume(transfer)
    await asyncio.wait_for(client.wait(transfer), 60)
    assert sha256_file(destination) == digest


async def test_list_by_state_goes_by_the_latest_run(client: StaccatoClient, data_dir: Path) -> None:
    """A destination whose first transfer failed and second completed: `list` and
    `status` show it completed, so `list --state completed` shows it and `--state
    failed` does not (it showed the earlier failed run's row there)."""
    source = data_dir / "flip.src"
    destination = data_dir / "flip.out"
    failed = await client.submit(str(source), str(destination), OPTIONS)  # no source yet
    with pytest.raises(TransferFailedError):
        await asyncio.wait_for(client.wait(failed), 60)
    write_random(source, 1 * MiB, seed=16)
    done = await client.submit(str(source), str(destination), OPTIONS)
    await asyncio.wait_for(client.wait(done), 60)
    assert failed == done  # one transfer id per destination

    deadline = time.monotonic() + 20  # visibility is eventually consistent
    while not (
        completed := [s for s in await client.list(state=TransferState.completed) if s.id == done]
    ):
        assert time.monotonic() < deadline, "the completed transfer is not listed"
        await asyncio.sleep(0.2)
    assert completed[0].bytes_done == 1 * MiB, completed
    listed = [s for s in await client.list(state=TransferState.failed) if s.id == done]
    assert listed == [], listed


async def test_wait_follows_the_run_it_submitted(
    client: StaccatoClient,
    temporal_server,
    slow_nginx: NginxServer,
    http_root: Path,
    data_dir: Path,
) -> None:
    """A transfer that ended, then another one to the same destination started by
    someone else: `wait` and `follow` on the first client report its own transfer, not
    the newer run under the same id."""
    first_source = data_dir / "mine.bin"
    write_random(first_source, 1 * MiB, seed=17)
    write_random(http_root / "theirs.bin", SIZE, seed=18)
    destination = data_dir / "shared.bin"
    mine = await client.submit(str(first_source), str(destination), OPTIONS)
    await asyncio.wait_for(client.wait(mine), 60)
    other = await StaccatoClient.connect(target_host=temporal_server.address)
    other.task_queue = client.task_queue
    theirs = await other.submit(slow_nginx.url("theirs.bin"), str(destination), OPTIONS)
    assert theirs == mine  # one id per destination, two runs
    # its own (ended) run, not the newer one: the source below tells them apart
    result = await asyncio.wait_for(client.wait(mine), 30)
    assert result.source == f"file://{first_source}" and result.bytes == 1 * MiB
    statuses = [s async for s in client.follow(mine)]
    assert statuses[-1].state == TransferState.completed
    assert statuses[-1].source == f"file://{first_source}"
    await asyncio.wait_for(other.wait(theirs), 120)
