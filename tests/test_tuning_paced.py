"""A transfer paced by its own ``--max-rate`` teaches its link nothing: its streams
measured the cap, not the link (a tester's ``--max-rate 20MB/s`` left the link "4
streams at 18.8 MiB/s" for every tuned transfer after it)."""

from __future__ import annotations

from pathlib import Path

from staccato.client import StaccatoClient
from staccato.link_memory import forget_link_memory
from staccato.links import link_of
from staccato.models import GiB, TransferOptions, TransferState
from staccato.tuning import MIN_TUNED_BYTES
from tests.helpers import assert_link_learned_nothing, sha256_file, write_random


async def test_a_paced_tuned_transfer_teaches_its_link_nothing(
    client: StaccatoClient, data_dir: Path
) -> None:
    """A tuned file -> file copy with ``--max-rate`` (high enough not to slow it): the
    link's memory stays empty and ``status`` says why. Before, the paced rate was
    stored as the link's."""
    source = data_dir / "paced.bin"
    digest = write_random(source, MIN_TUNED_BYTES, seed=53)
    destination = data_dir / "paced-out.bin"
    link = link_of(str(source), str(destination))
    await forget_link_memory(client.temporal, link)  # another test's file -> file
    transfer = await client.submit(
        str(source), str(destination), TransferOptions(tuning=True, max_rate=8 * GiB)
    )
    await client.wait(transfer)
    status = await client.status(transfer)
    assert status.state == TransferState.completed, status
    assert sha256_file(destination) == digest
    await assert_link_learned_nothing(client, status, link, "--max-rate")
