"""A running copy's rate (and ETA) holds across segment boundaries (tester73 M2):
``cp --max-rate 50MiB`` of a tuned transfer showed ``running: 384.0 MiB / 1.0 GiB
(37%)`` with no rate or ETA on the lines where a stream's segment ended and the next
began (the next stream's first heartbeat says rate 0, and an ended one's is gone),
between lines ``at 50.0 MiB/s, ETA ...``. README "Status JSON" allows no rate only
while paused, cancelling, retrying or with no worker."""

from __future__ import annotations

import asyncio
from pathlib import Path

from staccato.client import HELD_RATE_FOR_S, StaccatoClient, held_rate
from staccato.models import TransferOptions, TransferState, TransferStatus
from tests.helpers import MiB, sha256_file, write_random
from tests.servers.nginx import NginxServer


def test_the_rate_is_held_across_a_segment_boundary() -> None:
    """Recorded figures of a lane crossing a boundary (tester73: 50 MiB/s, one stream
    ended at 384 MiB, the next heartbeating rate 0): the rate a worker reported 4 s
    earlier, else the copy's average since it began; a live rate always wins; none
    when nothing is known."""
    now = 1_765_000_000.0
    rate = 52428800.0
    assert held_rate(rate, reported=1.0, reported_at=now, now=now) == rate
    assert held_rate(0.0, reported=rate, reported_at=now - 4, now=now) == rate
    # a report too old: the average of the copy (384 MiB in 7.68 s)
    old = now - HELD_RATE_FOR_S - 1
    average = held_rate(
        0.0, reported=1.0, reported_at=old, since=now - 7.68, moved=384 * MiB, now=now
    )
    assert average is not None and abs(average - rate) < 1, average
    assert held_rate(0.0, since=now - 7.68, moved=0, now=now) is None
    assert held_rate(0.0, now=now) is None


async def test_a_tuned_paced_copy_shows_its_rate_at_every_segment_boundary(
    client: StaccatoClient, nginx_ranges: NginxServer, http_root: Path, data_dir: Path
) -> None:
    """A tuned copy of 256 MiB paced at 48 MiB/s, cut into 64 MiB segments (the tuner
    changes its streams between them): every ``status`` of the running copy from its
    first rate to its last byte has a rate and an ETA (the old code had none for ~2 s
    at 128 MiB, as the tuner's next streams started). An HTTP source: a local copy
    is not tuned."""
    size = 256 * MiB
    digest = write_random(http_root / "segments.bin", size, seed=73)
    destination = data_dir / "segments-out.bin"
    transfer = await client.submit(
        nginx_ranges.url("segments.bin"),
        str(destination),
        TransferOptions(tuning=True, max_rate=48 * MiB),
    )
    seen: list[TransferStatus] = []
    while (status := await client.status(transfer)).state not in (
        TransferState.completed,
        TransferState.failed,
        TransferState.cancelled,
    ):
        if status.phase == "copy" and status.state == TransferState.running:
            seen.append(status)
        await asyncio.sleep(0.1)
    assert status.state == TransferState.completed, status
    assert sha256_file(destination) == digest
    rated = [i for i, s in enumerate(seen) if s.rate_bytes_per_s is not None]
    assert rated, "no rate shown while it copied"
    middle = [
        s
        for s in seen[rated[0] :]
        if s.bytes_done < size and not s.last_retry_error and not s.idle_since
    ]
    shown = [(s.bytes_done // MiB, s.rate_bytes_per_s, s.eta_s) for s in middle]
    assert len(middle) > 10, shown
    assert all(s.rate_bytes_per_s is not None and s.eta_s is not None for s in middle), shown
