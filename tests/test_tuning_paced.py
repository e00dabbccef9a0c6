"""A transfer paced by its own ``--max-rate`` teaches its link nothing: its streams
measured the cap, not the link (a tester's ``--max-rate 20MB/s`` left the link "4
streams at 18.8 MiB/s" for every tuned transfer after it)."""

from __future__ import annotations

from pathlib import Path

from staccato import governors
from staccato.client import StaccatoClient
from staccato.link_memory import forget_link_memory
from staccato.links import endpoint_of, link_of, parse_limit_target
from staccato.models import GiB, IfBusy, Limits, TransferOptions, TransferState
from staccato.tuning import MIN_TUNED_BYTES
from tests.helpers import assert_link_learned_nothing, sha256_file, write_random
from tests.servers.nginx import NginxServer


async def test_a_paced_tuned_transfer_teaches_its_link_nothing(
    client: StaccatoClient, nginx_ranges: NginxServer, http_root: Path, data_dir: Path
) -> None:
    """A tuned HTTP -> file copy with ``--max-rate`` (high enough not to slow it): the
    link's memory stays empty and ``status`` says why. Before, the paced rate was
    stored as the link's. (An HTTP source: a local copy is not tuned.)"""
    digest = write_random(http_root / "paced.bin", MIN_TUNED_BYTES, seed=53)
    source = nginx_ranges.url("paced.bin")
    destination = data_dir / "paced-out.bin"
    link = link_of(source, str(destination))
    await forget_link_memory(client.temporal, link)  # another test's on this link
    transfer = await client.submit(
        source, str(destination), TransferOptions(tuning=True, max_rate=8 * GiB)
    )
    await client.wait(transfer)
    status = await client.status(transfer)
    assert status.state == TransferState.completed, status
    assert sha256_file(destination) == digest
    await assert_link_learned_nothing(client, status, link, "--max-rate")


async def test_a_transfer_under_an_endpoint_rate_limit_teaches_its_link_nothing(
    client: StaccatoClient, nginx_ranges: NginxServer, http_root: Path, data_dir: Path
) -> None:
    """The same rule for the streams paced by an endpoint's limit (``staccato limit
    set ENDPOINT --max-rate``; high enough not to slow it): the link learns nothing and
    ``status`` names the limit. Before, a tester's link learned "2.0 MiB/s" under an
    endpoint limit of 4 MiB/s (tester57 F18)."""
    digest = write_random(http_root / "limited.bin", MIN_TUNED_BYTES, seed=57)
    source = nginx_ranges.url("limited.bin")
    destination = data_dir / "limited-out.bin"
    link = link_of(source, str(destination))
    endpoint = parse_limit_target(endpoint_of(source))
    await forget_link_memory(client.temporal, link)
    await governors.set_limits(client.temporal, endpoint, Limits(max_rate=8 * GiB))
    try:
        transfer = await client.submit(
            source, str(destination), TransferOptions(tuning=True, if_busy=IfBusy.wait)
        )
        await client.wait(transfer)
        status = await client.status(transfer)
    finally:
        await governors.unset_limits(client.temporal, endpoint, [])
    assert status.state == TransferState.completed, status
    assert sha256_file(destination) == digest
    await assert_link_learned_nothing(client, status, link, "paced by the limit on")
