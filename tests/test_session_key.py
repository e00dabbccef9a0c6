"""Two runs of one destination never share a write session's temp data.

Temporal's run ids are time-ordered (UUID version 7): runs started within about a
minute share their first 8 hex digits, so a session key built from a run-id prefix gave
consecutive transfers to one destination the same temp file and journal.
"""

from __future__ import annotations

from pathlib import Path

from staccato.client import StaccatoClient
from staccato.models import TransferOptions, TransferState
from tests.helpers import MiB, leftovers, wait_for_phase, wait_for_status, write_random
from tests.servers.nginx import NginxServer, nginx_fixture

slow_source = nginx_fixture("http_root", scope="module", extra_server_config="limit_rate 2m;")


async def _temp_name_of_a_run(
    client: StaccatoClient, url: str, destination: Path, data_dir: Path
) -> str:
    """Start a transfer, wait until its temp data exists, note its name, cancel it."""
    options = TransferOptions(chunk_size=1 * MiB, streams=1)
    transfer = await client.submit(url, str(destination), options)
    await wait_for_phase(client, transfer, ("copy",))
    await wait_for_status(client, transfer, lambda s: s.bytes_done > 0, timeout_s=60)
    temps = [name for name in leftovers(data_dir) if name.endswith(".staccato-part")]
    assert len(temps) == 1, temps
    await client.cancel(transfer)
    await wait_for_status(client, transfer, lambda s: s.state == TransferState.cancelled)
    return temps[0]


async def test_consecutive_runs_of_one_destination_use_distinct_temp_data(
    client: StaccatoClient, slow_source: NginxServer, http_root: Path, data_dir: Path
) -> None:
    write_random(http_root / "session-key.bin", 32 * MiB, seed=11)
    url = f"{slow_source.base_url}/session-key.bin"
    destination = data_dir / "dst.bin"
    first = await _temp_name_of_a_run(client, url, destination, data_dir)
    second = await _temp_name_of_a_run(client, url, destination, data_dir)
    assert first != second, f"two runs of one destination wrote the same temp file {first}"
    assert leftovers(data_dir) == []
