"""Cancel versus publish on an SFTP destination holding an older file (see
tests/test_commit.py): the outcome reported always matches what the server holds."""

from __future__ import annotations

from pathlib import Path

from staccato.client import StaccatoClient
from staccato.models import TransferOptions
from tests.cancel_checks import cancel_at_random_points, cancel_once_publish_began
from tests.helpers import MiB, leftovers, write_random
from tests.servers.nginx import NginxServer, nginx_fixture

own_nginx = nginx_fixture("http_root", scope="function")


async def test_cancel_at_random_points_file_to_sftp(
    sftp_client: StaccatoClient, sftp_url, data_dir: Path
) -> None:
    source = data_dir / "src.bin"
    write_random(source, 24 * MiB, seed=32)
    destination = data_dir / "out" / "dst.bin"
    destination.parent.mkdir()
    options = TransferOptions(chunk_size=1 * MiB, streams=2, heartbeat_timeout_s=3)
    # 10 rounds (half of them aimed at publish's start), not 16: each round is a whole
    # SFTP transfer (~1.3 s quiet, ~2 s in a loaded suite)
    outcomes = await cancel_at_random_points(
        sftp_client, source, destination, sftp_url(destination), options, rounds=10, seed=2
    )
    assert outcomes["cancelled"] > 0


async def test_cancel_after_publish_began_completes_sftp(
    sftp_client: StaccatoClient,
    sftp_url,
    own_nginx: NginxServer,
    http_root: Path,
    data_dir: Path,
) -> None:
    destination = data_dir / "out" / "committed.bin"
    destination.parent.mkdir()
    await cancel_once_publish_began(
        sftp_client,
        own_nginx,
        http_root,
        destination,
        sftp_url(destination),
        128 * MiB,
        lambda: leftovers(destination.parent),
    )
