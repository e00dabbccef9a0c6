"""Cancel versus publish on a file destination holding an older file: a cancel before
publish leaves the old file intact; once publish has begun the transfer is committed
and completes with the new file. Never a cancelled transfer with the new file or a
completed one with the old."""

from __future__ import annotations

from pathlib import Path

from staccato.client import StaccatoClient
from staccato.models import TransferOptions
from tests.cancel_checks import cancel_at_random_points, cancel_once_publish_began
from tests.helpers import MiB, leftovers, write_random
from tests.servers.nginx import NginxServer, nginx_fixture

# stopped and started again by the test: its own server
own_nginx = nginx_fixture("http_root", scope="function")


async def test_cancel_at_random_points_file_to_file(client: StaccatoClient, data_dir: Path) -> None:
    source = data_dir / "src.bin"
    write_random(source, 24 * MiB, seed=31)
    destination = data_dir / "out" / "dst.bin"
    destination.parent.mkdir()
    options = TransferOptions(chunk_size=1 * MiB, streams=2, heartbeat_timeout_s=3)
    outcomes = await cancel_at_random_points(
        client, source, destination, str(destination), options, rounds=12, seed=1
    )
    assert outcomes["cancelled"] > 0


async def test_cancel_after_publish_began_completes_file(
    client: StaccatoClient, own_nginx: NginxServer, http_root: Path, data_dir: Path
) -> None:
    destination = data_dir / "committed.bin"
    await cancel_once_publish_began(
        client,
        own_nginx,
        http_root,
        destination,
        str(destination),
        256 * MiB,
        lambda: leftovers(data_dir),
    )
