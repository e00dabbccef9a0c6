"""``status`` of a transfer whose stream waits on a hung server: no rate and no ETA
once the stream has not moved a byte for its heartbeat timeout (a tester saw
``rate 5.7 MiB/s, eta 2 min 15 s`` 30-40 s into a hung S3 server).

A stream waiting on a silent server keeps heartbeating (the HTTP and S3 drivers wait
in slices and call ``keepalive`` between them, so the attempt is not timed out while
the connection may still answer), and each of those heartbeats carried the attempt's
average rate since its start, which never falls to 0: ``status`` took it for a
moving stream's. The checkpoint now says when the stream last moved bytes
(``moved_at``), and the rate counts only within the heartbeat timeout of that.

The hung server here: a proxy in front of nginx that stops relaying mid-body. The
tests run on the session worker (its staging directory serves the staged one): each
ends its transfer, and none kills or configures a worker, so a worker start of their
own (~3 CPU-s each) bought nothing."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import PendingActivityState

from staccato.client import StaccatoClient
from staccato.models import RATE_CURRENT_S, Checkpoint, TransferOptions, TransferState
from tests.helpers import MiB, at_rest, write_random
from tests.servers.holding_proxy import HoldingProxy
from tests.servers.nginx import NginxServer, nginx_fixture

SIZE = 64 * MiB
HEARTBEAT_TIMEOUT_S = 4.0
# one stream, held inside its second chunk (chunk bytes in flight)
OPTIONS = TransferOptions(chunk_size=16 * MiB, streams=1, heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S)

held_nginx = nginx_fixture("http_root", scope="function")


async def _stream(client: StaccatoClient, transfer: str) -> tuple[Any, Checkpoint | None]:
    """The transfer's pending ``copy_stream`` activity (a ``PendingActivityInfo``, or
    None) and its heartbeat details."""
    description = await client.temporal.get_workflow_handle(transfer).describe()
    for pending in description.raw_description.pending_activities:
        if pending.activity_type.name != "copy_stream":
            continue
        if not pending.heartbeat_details.payloads:
            return pending, None
        (details,) = await client.temporal.data_converter.decode(
            pending.heartbeat_details.payloads, [Checkpoint]
        )
        return pending, details if isinstance(details, Checkpoint) else None
    return None, None


async def test_no_rate_while_a_stream_waits_on_a_hung_source(
    client: StaccatoClient,
    held_nginx: NginxServer,
    http_root: Path,
    data_dir: Path,
) -> None:
    source = http_root / "stalled-rate.bin"
    write_random(source, SIZE, seed=53)
    at_rest(source)
    proxy = HoldingProxy(held_nginx.port, hold_after=int(SIZE * 0.4)).start()
    try:
        transfer = await client.submit(
            proxy.url("stalled-rate.bin"), str(data_dir / "stalled-rate.bin"), OPTIONS
        )
        await asyncio.to_thread(proxy.wait_held, 120)
        # the stream has stopped moving: its heartbeats at the server say the same
        # bytes twice, 2 s apart (the SDK sends them every second)
        deadline = time.monotonic() + 60
        still_since: float | None = None
        last: tuple[int, int] | None = None
        while True:
            assert time.monotonic() < deadline, "the stream's bytes never stood still"
            pending, details = await _stream(client, transfer)
            assert pending is not None, "no stream pending"
            now = time.time()
            seen = (details.bytes_done, details.bytes_read) if details else None
            if seen is None or seen != last:
                last, still_since = seen, now
            elif still_since is not None and now - still_since >= 2.0:
                break
            await asyncio.sleep(0.2)
        attempt = pending.attempt
        # the heartbeat timeout passes since it last moved a byte, while it waits on
        # the silent source, heartbeating (its attempt is not timed out)
        while time.time() < still_since + HEARTBEAT_TIMEOUT_S + 0.5:
            await asyncio.sleep(0.1)
        status = await client.status(transfer)
        pending, details = await _stream(client, transfer)
        assert pending is not None and pending.attempt == attempt, pending
        assert pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED, pending
        assert status.state == TransferState.running, status
        assert 0 < status.bytes_done < SIZE, status
        assert status.rate_bytes_per_s is None, status
        assert status.eta_s is None, status
        # the source answers again: the stream moves, and its rate is back
        proxy.release()
        deadline = time.monotonic() + 60
        while True:
            status = await client.status(transfer)
            if status.rate_bytes_per_s or status.state != TransferState.running:
                break
            assert time.monotonic() < deadline, status
            await asyncio.sleep(0.2)
        await asyncio.wait_for(client.wait(transfer), 180)
    finally:
        proxy.release()
        proxy.stop()


async def _still_since(probe: Any, what: str, *, timeout_s: float = 60.0) -> float:
    """Poll ``probe()`` (the figure a stalled read stops changing) until it has stood
    still for 2 s; return when (Unix seconds) it last changed.

    Raises:
        AssertionError: it kept changing for ``timeout_s`` seconds (names ``what``).
    """
    deadline = time.monotonic() + timeout_s
    last: Any = None
    since: float | None = None
    while True:
        assert time.monotonic() < deadline, f"{what} never stood still"
        seen = await probe()
        now = time.time()
        if seen is None or seen != last:
            last, since = seen, now
        elif since is not None and now - since >= 2.0:
            return since
        await asyncio.sleep(0.2)


async def test_a_stalled_streams_rate_goes_within_seconds_not_its_heartbeat_timeout(
    client: StaccatoClient,
    held_nginx: NginxServer,
    http_root: Path,
    data_dir: Path,
) -> None:
    """With the default heartbeat timeout (20 s), a stream that stops moving bytes
    (here: its source hangs; a killed worker's last heartbeat is as still) shows no
    rate once :data:`~staccato.models.RATE_CURRENT_S` passed since it last moved (it
    showed its last rate, then an average decaying, for the heartbeat timeout: a
    tester read "at 4.2 MiB/s, ETA 31 s" 12-20 s after a worker's SIGKILL)."""
    source = http_root / "stalled-default.bin"
    write_random(source, SIZE, seed=54)
    at_rest(source)
    proxy = HoldingProxy(held_nginx.port, hold_after=int(SIZE * 0.4)).start()
    options = TransferOptions(chunk_size=16 * MiB, streams=1)  # the default timeout
    try:
        transfer = await client.submit(
            proxy.url("stalled-default.bin"), str(data_dir / "stalled-default.bin"), options
        )
        await asyncio.to_thread(proxy.wait_held, 120)

        async def bytes_seen() -> tuple[int, int] | None:
            _, details = await _stream(client, transfer)
            return (details.bytes_done, details.bytes_read) if details else None

        still_since = await _still_since(bytes_seen, "the stream's bytes")
        while time.time() < still_since + RATE_CURRENT_S + 1.0:
            await asyncio.sleep(0.1)
        status = await client.status(transfer)
        pending, _ = await _stream(client, transfer)
        assert pending is not None and pending.attempt == 1, pending  # not timed out
        assert status.state == TransferState.running, status
        assert status.rate_bytes_per_s is None and status.eta_s is None, status
        proxy.release()
        await asyncio.wait_for(client.wait(transfer), 180)
    finally:
        proxy.release()
        proxy.stop()


async def test_a_hung_staging_reads_rate_goes_as_a_streams(
    client: StaccatoClient,
    held_nginx: NginxServer,
    http_root: Path,
    data_dir: Path,
) -> None:
    """A staged source (``--stage``) whose server stops sending: the staging line
    shows no rate once :data:`~staccato.models.RATE_CURRENT_S` passed since the read
    last staged bytes (it showed the attempt's average, decaying, for 30 s), by the
    same rule as a stream's."""
    source = http_root / "stalled-staging.bin"
    write_random(source, SIZE, seed=55)
    at_rest(source)
    proxy = HoldingProxy(held_nginx.port, hold_after=int(SIZE * 0.4)).start()
    options = TransferOptions(chunk_size=16 * MiB, streams=1, stage=True)
    try:
        transfer = await client.submit(
            proxy.url("stalled-staging.bin"), str(data_dir / "stalled-staging.bin"), options
        )
        await asyncio.to_thread(proxy.wait_held, 120)
        moving = await client.status(transfer)
        assert moving.phase == "staging", moving

        async def staged() -> int | None:
            return (await client.status(transfer)).staged_bytes

        still_since = await _still_since(staged, "the staged bytes")
        while time.time() < still_since + RATE_CURRENT_S + 1.0:
            await asyncio.sleep(0.1)
        status = await client.status(transfer)
        assert status.phase == "staging" and status.staged_bytes, status
        assert status.staging_rate_bytes_per_s is None, status
        proxy.release()
        await asyncio.wait_for(client.wait(transfer), 180)
    finally:
        proxy.release()
        proxy.stop()
