"""Retrying until a deadline (``--retry-for``): an endpoint down for less than the
retry budget is ridden out, one down for longer fails the transfer with a message
naming the deadline and the last error, and ``status`` shows the reason and the next
attempt time while retrying."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from staccato.client import StaccatoClient
from staccato.errors import TransferFailedError
from staccato.models import TransferOptions, TransferState
from tests.helpers import MiB, run_cli, sha256_file, wait_for_status, write_random
from tests.servers.nginx import NginxServer, nginx_fixture

own_nginx = nginx_fixture("http_root", scope="function")


async def test_outage_longer_than_retry_for_fails_naming_deadline_and_cause(
    client: StaccatoClient, own_nginx: NginxServer, http_root: Path, data_dir: Path
) -> None:
    write_random(http_root / "down.bin", 1 * MiB, seed=41)
    url = own_nginx.url("down.bin")
    own_nginx.stop()
    started = time.monotonic()
    transfer = await client.submit(
        url, str(data_dir / "down.bin"), TransferOptions(retry_for_s=8, heartbeat_timeout_s=3)
    )
    status = await wait_for_status(
        client, transfer, lambda s: s.next_attempt_at is not None, timeout_s=60
    )
    print(f"while retrying: {status.last_retry_error} (next attempt {status.next_attempt_at})")
    assert status.state in (TransferState.scheduled, TransferState.running)
    assert status.last_retry_error and "Connection refused" in status.last_retry_error
    next_at = datetime.fromisoformat(status.next_attempt_at or "")
    assert abs((next_at - datetime.now(UTC)).total_seconds()) < 60
    with pytest.raises(TransferFailedError) as failure:
        await asyncio.wait_for(client.wait(transfer), 90)
    elapsed = time.monotonic() - started
    message = str(failure.value)
    print(f"failed after {elapsed:.1f} s: {message}")
    assert "gave up" in message and "--retry-for" in message and "8 s" in message
    assert "Connection refused" in message and "down.bin" in message
    # soon after its 8 s (~10 s quiet), not after the default 24 h: a correctness bound
    # that a machine at load 15 (several times slower) stays within
    assert elapsed < 60


async def test_outage_shorter_than_retry_for_completes(
    client: StaccatoClient, own_nginx: NginxServer, http_root: Path, data_dir: Path
) -> None:
    digest = write_random(http_root / "blip.bin", 1 * MiB, seed=42)
    url = own_nginx.url("blip.bin")
    own_nginx.stop()
    transfer = await client.submit(
        url, str(data_dir / "blip.bin"), TransferOptions(retry_for_s=60, heartbeat_timeout_s=3)
    )
    await wait_for_status(client, transfer, lambda s: s.last_retry_error is not None, timeout_s=60)
    await asyncio.sleep(8)  # down for longer than several backoffs
    own_nginx.start()
    result = await asyncio.wait_for(client.wait(transfer), 60)
    assert result.bytes == 1 * MiB
    assert sha256_file(data_dir / "blip.bin") == digest


def test_cli_retry_for_option(temporal_server, client: StaccatoClient, data_dir: Path) -> None:
    """``--retry-for 90s/30m/24h`` reaches the transfer; a bad value is a usage error."""
    source = data_dir / "cli.bin"
    write_random(source, 1 * MiB, seed=43)
    bad = run_cli(
        "submit",
        str(source),
        str(data_dir / "x.bin"),
        "--retry-for",
        "soon",
        address=temporal_server.address,
        task_queue=client.task_queue,
    )
    assert bad.returncode == 2 and "not a duration" in bad.stderr, bad
    done = run_cli(
        "cp",
        str(source),
        str(data_dir / "cli.out"),
        "--retry-for",
        "30m",
        "-q",
        address=temporal_server.address,
        task_queue=client.task_queue,
    )
    assert done.returncode == 0, done
    assert sha256_file(data_dir / "cli.out") == sha256_file(source)


async def test_source_gone_while_staging_fails_soon_after_retry_for(
    client: StaccatoClient, own_nginx: NginxServer, http_root: Path, data_dir: Path
) -> None:
    """``--stage``, the source's server stopped for good mid-staging, ``--retry-for 4s``:
    ``stage_source`` gives up itself once 4 s passed without an attempt reading source
    bytes, with the workflow's give-up wording. Its schedule-to-close deadline also
    allows the time one attempt may take (600 s and more), so before, the staging
    was retried for ~10 minutes past ``--retry-for``."""
    write_random(http_root / "staged.bin", 64 * MiB, seed=44)
    transfer = await client.submit(
        own_nginx.url("staged.bin"),
        str(data_dir / "staged.bin"),
        # paced (8 MiB/s: about 8 s), so the server stops mid-staging
        TransferOptions(stage=True, retry_for_s=4, heartbeat_timeout_s=3, max_rate=8 * MiB),
    )
    await wait_for_status(client, transfer, lambda s: (s.staged_bytes or 0) > 0, timeout_s=60)
    own_nginx.stop()
    with pytest.raises(TransferFailedError) as failure:
        await asyncio.wait_for(client.wait(transfer), 120)
    message = str(failure.value)
    print(f"failed: {message}")
    assert "gave up: the stage_source step kept failing" in message, message
    assert "--retry-for 4 s without progress;" in message, message
