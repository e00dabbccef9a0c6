"""How the command learns that a transfer ended: ``cp --quiet`` asks no status while
the transfer runs (its end is the run's result), and following with progress sees
the end as soon as the run ends, even while a status it asked is still unanswered
(a busy worker answers a progress query late). Real Temporal server and worker."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from staccato.cli import render
from staccato.client import StaccatoClient
from staccato.models import TransferOptions, TransferState, TransferStatus
from tests.helpers import MiB, write_random
from tests.servers.holding_proxy import HoldingProxy
from tests.servers.nginx import NginxServer, nginx_fixture

OPTIONS = TransferOptions(chunk_size=1 * MiB, streams=2, heartbeat_timeout_s=3)

# nginx sending at most 1 MB/s per connection: an 8 MiB source lasts seconds
slow_nginx = nginx_fixture("http_root", scope="function", extra_server_config="limit_rate 1m;")


def _count_status(client: StaccatoClient, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every ``client.status`` call (the transfer asked), passing it through."""
    asked: list[str] = []
    real = client.status

    async def status(transfer: str, **kwargs: Any) -> TransferStatus:
        asked.append(transfer)
        return await real(transfer, **kwargs)

    monkeypatch.setattr(client, "status", status)
    return asked


async def test_a_quiet_follow_asks_no_status_while_the_transfer_runs(
    client: StaccatoClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, destination = tmp_path / "src.bin", tmp_path / "dst.bin"
    write_random(source, 2 * MiB, seed=41)
    transfer = await client.submit(str(source), str(destination), OPTIONS)
    asked = _count_status(client, monkeypatch)
    final = await asyncio.wait_for(render.follow(client, transfer, quiet=True), 60)
    assert final.state == TransferState.completed
    assert final.bytes_done == 2 * MiB and final.checksum
    assert asked == []  # each would be a describe and a query the worker answers
    assert destination.read_bytes() == source.read_bytes()


async def test_a_quiet_follow_of_a_cancelled_transfer_says_cancelled(
    client: StaccatoClient,
    slow_nginx: NginxServer,
    http_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run that does not complete: its status is asked once, at the end."""
    write_random(http_root / "slow.bin", 8 * MiB, seed=42)
    transfer = await client.submit(slow_nginx.url("slow.bin"), str(tmp_path / "dst.bin"), OPTIONS)
    asked = _count_status(client, monkeypatch)
    following = asyncio.ensure_future(render.follow(client, transfer, quiet=True))
    await client.cancel(transfer)
    final = await asyncio.wait_for(following, 60)
    assert final.state == TransferState.cancelled
    assert asked == [transfer]
    assert not (tmp_path / "dst.bin").exists()


async def test_following_sees_the_end_while_a_status_is_unanswered(
    client: StaccatoClient,
    slow_nginx: NginxServer,
    http_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every status after the first hangs (a worker that never answers its query): the
    follow still ends with the completed status once the run completes.

    The source is held after 1 MiB until the first status has been answered, so that
    status is the run's, not its end's (CI at load ~5 saw a 2 MiB local copy end
    before the first status was asked)."""
    write_random(http_root / "follow.bin", 2 * MiB, seed=43)
    destination = tmp_path / "dst.bin"
    proxy = HoldingProxy(slow_nginx.port, hold_after=1 * MiB).start()
    try:
        transfer = await client.submit(proxy.url("follow.bin"), str(destination), OPTIONS)
        await asyncio.to_thread(proxy.wait_held, 60)
        real = client.status
        never = asyncio.Event()
        calls = 0

        async def status(transfer: str, **kwargs: Any) -> TransferStatus:
            nonlocal calls
            calls += 1
            if calls > 1:
                await never.wait()
            answered = await real(transfer, **kwargs)
            proxy.release()
            return answered

        monkeypatch.setattr(client, "status", status)

        async def follow() -> list[TransferStatus]:
            return [s async for s in client.follow(transfer, interval_s=0.05)]

        statuses = await asyncio.wait_for(follow(), 60)
    finally:
        proxy.release()
        proxy.stop()
    assert statuses[0].state == TransferState.running
    assert statuses[-1].state == TransferState.completed
    assert statuses[-1].bytes_done == 2 * MiB
    assert calls >= 2  # it did wait on an unanswered status when the run ended
    assert destination.read_bytes() == (http_root / "follow.bin").read_bytes()


def test_the_progress_query_is_asked_by_the_workflows_name() -> None:
    """The client asks ``progress`` by name (it imports no workflow code): the name is
    the workflow's."""
    from temporalio import workflow

    from staccato.client import PROGRESS_QUERY
    from staccato.workflows.transfer import TransferWorkflow

    defn = workflow._Definition.must_from_class(TransferWorkflow)
    assert PROGRESS_QUERY in defn.queries
    assert defn.queries[PROGRESS_QUERY].fn.__name__ == "progress"
