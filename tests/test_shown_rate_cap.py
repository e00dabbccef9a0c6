"""The rate a transfer paced by its ``--max-rate`` shows never exceeds the cap: each
stream showed its durable bytes over the seconds since its attempt began, which its
pacer's start credit and first read made more than its share (tester57 F5: 4.34 MiB/s
shown for ``--max-rate 4MiB``, 22 MiB/s for 16 MiB/s, with the average at the cap)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from staccato.client import StaccatoClient
from staccato.models import TransferOptions, TransferState
from tests.helpers import MiB, sha256_file, write_random

CAP = 4 * MiB


async def test_the_shown_rate_of_a_paced_transfer_stays_within_its_max_rate(
    client: StaccatoClient, data_dir: Path
) -> None:
    source = data_dir / "paced.bin"
    digest = write_random(source, 32 * MiB, seed=5)
    destination = data_dir / "paced-out.bin"
    # 2 streams of 2 MiB chunks at 2 MiB/s each (the old code showed 4.04 MiB/s)
    transfer = await client.submit(
        str(source),
        str(destination),
        TransferOptions(chunk_size=2 * MiB, streams=2, max_rate=CAP),
    )
    shown: list[float] = []
    while (status := await client.status(transfer)).state not in (
        TransferState.completed,
        TransferState.failed,
        TransferState.cancelled,
    ):
        if status.rate_bytes_per_s is not None:
            shown.append(status.rate_bytes_per_s)
        await asyncio.sleep(0.2)
    assert status.state == TransferState.completed, status
    assert sha256_file(destination) == digest
    assert shown, "no rate shown while it ran"
    assert max(shown) <= CAP, [round(r / MiB, 2) for r in shown]
