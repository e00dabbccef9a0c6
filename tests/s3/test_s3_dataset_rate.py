"""A dataset's small files through S3 are paced by ``--max-rate``: the one-request
paths (a whole PutObject per file, several files at once; a whole GetObject per file
staged for a local group commit) draw from their batch's pacer. Measured where the
bytes land: the objects the store holds over time, the bytes a local destination
holds over time (a lower bound on the time taken: load can only lengthen it)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from staccato import governors
from staccato.client import StaccatoClient
from staccato.dataset_client import submit_dataset
from staccato.datasets.models import DatasetState, DatasetStatus
from staccato.links import parse_limit_target
from staccato.models import Limits, TransferOptions
from tests.dataset_checks import tree, wait_dataset
from tests.helpers import MiB, write_random
from tests.s3.s3util import keys, put_with_crc32c
from tests.test_limits import governor_ends, written

OPTIONS = TransferOptions(chunk_size=1 * MiB, streams=1, heartbeat_timeout_s=8, owner="t")
FILES = 16
RATE = 2_000_000


def small_files(root: Path, count: int = FILES) -> int:
    """``count`` random files of 1 MiB under ``root``; their total bytes."""
    for i in range(count):
        path = root / f"d{i % 2}" / f"f{i:02d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_random(path, MiB, seed=i + 23)
    return count * MiB


async def watch(
    client: StaccatoClient, dataset: str, landed: Callable[[], int]
) -> tuple[DatasetStatus, list[tuple[float, int]]]:
    """Wait for the dataset's end (60 s at most), sampling ``landed()`` (bytes at the
    destination) every 0.1 s; returns its final status and the samples."""
    done = asyncio.ensure_future(wait_dataset(client, dataset, timeout_s=60))
    samples: list[tuple[float, int]] = []
    while not done.done():
        samples.append((time.monotonic(), await asyncio.to_thread(landed)))
        await asyncio.sleep(0.1)
    samples.append((time.monotonic(), landed()))
    return await done, samples


def span(samples: list[tuple[float, int]], first: int, total: int) -> float:
    """Seconds between ``first`` bytes and ``total`` bytes landed."""
    start = next(t for t, b in samples if b >= first)
    end = next(t for t, b in samples if b >= total)
    return end - start


async def test_endpoint_max_rate_paces_whole_object_puts(
    s3_client: StaccatoClient, s3: Any, bucket: str, tmp_path: Path
) -> None:
    """--max-rate 2MB/s on ``s3://BUCKET``; a dataset of 24 x 1 MiB local files to it
    (one PutObject each, 4 at once): the store holds all 24 no sooner than 80 % of
    24 MiB / 2 MB/s (10 s) after the dataset was submitted. (Timed from the submission, not
    from the first object: 4 files are in flight, and a first PutObject slowed by load
    would shorten a span from it without the rate being broken.)"""
    target = parse_limit_target(f"s3://{bucket}")
    await governors.set_limits(s3_client.temporal, target, Limits(max_rate=RATE))
    try:
        source = tmp_path / "src"
        total = small_files(source, 24)
        submitted = time.monotonic()
        dataset = await submit_dataset(s3_client, str(source), f"s3://{bucket}/up", options=OPTIONS)
        final, samples = await watch(s3_client, dataset, lambda: len(keys(s3, bucket)) * MiB)
    finally:
        await governors.unset_limits(s3_client.temporal, target, [])
        await governor_ends(s3_client, target.name)
    assert final.state == DatasetState.completed and final.files_done == 24, final
    took = next(t for t, b in samples if b >= total) - submitted
    print(
        f"24 objects landed {took:.1f} s after submission under s3://bucket --max-rate 2MB/s"
        f" (23 after the first: {span(samples, MiB, total):.1f} s)"
    )
    assert took >= 0.8 * total / RATE, f"{took:.1f} s: the PutObjects were not paced"


async def test_dataset_max_rate_paces_whole_object_gets(
    s3_client: StaccatoClient, s3: Any, bucket: str, tmp_path: Path
) -> None:
    """cp -r --max-rate 2MB/s of 16 x 1 MiB objects to a local directory (one
    GetObject each, staged for the group commit): after the first file, the other
    15 MiB reach the destination >= 80 % of 15 MiB / 2 MB/s later."""
    source = tmp_path / "src"
    total = small_files(source)
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        put_with_crc32c(s3, bucket, f"down/{path.relative_to(source)}", path)
    destination = tmp_path / "down"
    dataset = await submit_dataset(
        s3_client,
        f"s3://{bucket}/down/",
        str(destination),
        options=OPTIONS.model_copy(update={"max_rate": RATE}),
    )
    final, samples = await watch(s3_client, dataset, lambda: written(destination))
    assert final.state == DatasetState.completed and final.files_done == FILES, final
    assert tree(destination) == tree(source)
    took = span(samples, MiB, total)
    print(f"15 MiB of GetObjects landed in {took:.1f} s under --max-rate 2MB/s")
    assert took >= 0.8 * (total - MiB) / RATE, f"{took:.1f} s: the GetObjects were not paced"
