"""A stream's shown rate (``Checkpoint.rate_bytes_per_s``): a first attempt counts the
chunk it is reading, so a large chunk on a slow link shows a rate before it is
written (a 64 MiB chunk at 1 MB/s showed none for a minute); a retry counts its
durable bytes only, so attempts that each read a chunk and fail to write it (a full
disk) show none.

The object under test is the real :class:`StreamProgress` a ``copy_stream`` attempt
keeps; no server is involved, as the rule is arithmetic on its counters.
"""

from __future__ import annotations

import time

from staccato.activities.stream_progress import StreamProgress

MiB = 1024 * 1024


def _reading(retry: bool) -> StreamProgress:
    progress = StreamProgress(0, 0, 0, None, length=64 * MiB)
    progress.rate_counts_in_flight = not retry
    progress.in_flight = 8 * MiB  # read, not yet written
    return progress


def test_a_first_attempt_shows_the_rate_of_the_chunk_it_reads() -> None:
    progress = _reading(retry=False)
    checkpoint = progress.checkpoint(now=progress._started + 8.0)
    assert checkpoint.rate_bytes_per_s == MiB, checkpoint
    assert checkpoint.bytes_durable == 0 and checkpoint.bytes_done == 8 * MiB, checkpoint


def test_a_retry_that_wrote_nothing_shows_no_rate() -> None:
    progress = _reading(retry=True)
    checkpoint = progress.checkpoint(now=progress._started + 8.0)
    assert checkpoint.rate_bytes_per_s == 0, checkpoint


def test_a_stopped_stream_shows_no_rate() -> None:
    progress = _reading(retry=False)
    assert progress.checkpoint(now=progress._started + 8.0, stopped=True).rate_bytes_per_s == 0


def test_a_retry_that_wrote_a_chunk_shows_its_bytes_rate_from_its_first_read() -> None:
    """tester75: a resumed attempt (a worker killed) spent 4 s on its set-up, then read
    at 16 MiB/s: one 16 MiB chunk durable and 8 MiB of the next read 1.5 s after its
    first read shows 16 MiB/s. Before, 16 MiB over 5.5 s (2.9 MiB/s)."""
    progress = StreamProgress(0, 0, 0, None, length=64 * MiB)
    progress.rate_counts_in_flight = False
    began = time.monotonic()
    progress._started = began - 4.0  # the set-up: connections, the durable chunks, the pacer
    progress.reading(True)
    progress.add(16 * MiB, 16 * MiB)
    progress.in_flight = 8 * MiB
    checkpoint = progress.checkpoint(now=began + 1.5)
    assert abs(checkpoint.rate_bytes_per_s - 16 * MiB) < 0.02 * 16 * MiB, checkpoint
