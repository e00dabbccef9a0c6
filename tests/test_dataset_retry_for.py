"""A dataset's ``--retry-for`` is the time its batches may go on *without progress*,
not a deadline on their work: a healthy batch of small files that keeps copying for
several times ``--retry-for`` (paced by ``--max-rate``) is never cut off. Before, its
activity's schedule-to-close timeout was ``--retry-for`` alone, so every batch still
copying after it failed with Temporal's "Not enough time to schedule next retry"."""

from __future__ import annotations

from pathlib import Path

from staccato.client import StaccatoClient
from staccato.dataset_client import submit_dataset
from staccato.datasets.models import DatasetState
from staccato.models import TransferOptions
from tests.dataset_checks import tree, tree_difference, wait_dataset
from tests.helpers import MiB, write_random

KiB = 1024

FILES = 24


async def test_paced_batches_outlast_a_short_retry_for(
    client: StaccatoClient, tmp_path: Path, data_dir: Path
) -> None:
    """cp -r of 24 x 256 KiB small files at --max-rate 1MB/s (about 6 s of copying)
    with --retry-for 2s: every file is copied, bytes equal, the dataset completed."""
    source = tmp_path / "src"
    for i in range(FILES):
        path = source / f"d{i % 3}" / f"f{i:02d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_random(path, 256 * KiB, seed=i + 5)
    target = data_dir / "paced-retry-for"
    options = TransferOptions(
        chunk_size=1 * MiB,
        streams=1,
        heartbeat_timeout_s=8,
        owner="t",
        max_rate=1_000_000,
        retry_for_s=2,
    )
    dataset = await submit_dataset(client, str(source), str(target), options=options)
    final = await wait_dataset(client, dataset, timeout_s=60)
    assert final.state == DatasetState.completed, final
    assert final.files_done == FILES and final.files_failed == 0, final
    assert tree_difference(tree(target), tree(source)) == []
