"""A dataset to several roots keeps its own ``--max-rate`` whole, large files included.

``cp -r SRC D1 D2 --max-rate R`` reads each file once and writes it under every root:
the cap is what the dataset reads of its source, and so what it writes to each root
(a batch reads a file once, paced, and writes it to every root). A large file is a
fan-out group (staged once, then one transfer per root reading the staged copy).
Before, a group was paced on its own: its staging read at the whole ``--max-rate``,
then each root's transfer at the whole ``--max-rate`` again, beside the batches'
share, so while large files moved the dataset read, and wrote each root, several
times faster than its cap. Now the dataset passes its id to each group
(``FanOutRequest.rate_group``; the group hands it to its staging read and, through
``StagedFromGroup.rate_group``, to its transfers' streams) and lists its groups under
``fan_outs`` in its ``rate_group`` answer; the worker's rate board counts a group as
the most of its staging read and its transfers' streams.

Every timing bound is a lower bound on time (an upper bound on the average rate), which
load can only make safer.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from staccato.client import StaccatoClient
from staccato.dataset_client import submit_dataset
from staccato.datasets.models import DatasetState
from staccato.models import TransferOptions
from tests.dataset_checks import tree, tree_difference, wait_dataset
from tests.helpers import MiB, write_random
from tests.test_limits import GrowthLog

RATE = 3_000_000  # bytes per second, the dataset's --max-rate
SMALL = 8  # 1 MiB files (one chunk: small with several roots): 2 batches of 4
LARGE = 4  # 8 MiB files, each a fan-out group of 2 transfers of 2 streams
LARGE_SIZE = 8 * MiB
OPTIONS = TransferOptions(
    chunk_size=1 * MiB, streams=2, heartbeat_timeout_s=8, owner="t", max_rate=RATE
)


def dataset_tree(root: Path) -> int:
    """:data:`SMALL` 1 MiB files and :data:`LARGE` files of :data:`LARGE_SIZE` under
    ``root``; their total bytes."""
    for i in range(SMALL):
        path = root / "small" / f"s{i:02d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_random(path, 1 * MiB, seed=500 + i)
    for i in range(LARGE):
        path = root / "large" / f"l{i}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_random(path, LARGE_SIZE, seed=600 + i)
    return SMALL * MiB + LARGE * LARGE_SIZE


async def test_dataset_to_several_roots_counts_its_large_files_in_its_max_rate(
    client: StaccatoClient, tmp_path: Path, data_dir: Path
) -> None:
    """cp -r SRC D1 D2 --max-rate 3MB/s of 8 x 1 MiB small files and 4 x 8 MiB large
    files (4 fan-out groups at once), file -> file: 40 MiB read, 40 MiB written to each
    root. Capped whole, the dataset takes at least 80 % of 40 MiB / 3 MB/s (14 s) by
    its own clock, and each root gets its last byte no sooner after the submission;
    with each group paced on its own (before), the four groups staged at 3 MB/s each
    and then wrote each root at 3 MB/s each, and the whole ran in about half that.

    The dataset's ``rate_group`` answer (asked here as the workers do) lists its
    groups in flight under ``fan_outs``, several at once. (Imports only what the code
    before had, so that on it this test fails on its time bound.)"""
    source = tmp_path / "src"
    total = dataset_tree(source)
    roots = [data_dir / "fan-rate-a", data_dir / "fan-rate-b"]
    submitted = time.monotonic()
    dataset = await submit_dataset(
        client,
        str(source),
        [str(r) for r in roots],
        options=OPTIONS,
        small_file_max=1 * MiB,
        batch_files=4,
    )
    done = asyncio.ensure_future(wait_dataset(client, dataset, timeout_s=180))
    growths = [GrowthLog(r) for r in roots]
    answers: list[dict[str, Any]] = []
    deadline = time.monotonic() + 180
    while not done.done():
        assert time.monotonic() < deadline, "the dataset did not end in time"
        for growth in growths:
            growth.sample()
        try:
            answer = await client.temporal.get_workflow_handle(dataset).query("rate_group")
        except Exception as err:  # noqa: BLE001  (a run not begun, an answer lost to load)
            answer = {"error": str(err)}
        if answer is not None:
            answers.append(answer)
        await asyncio.sleep(0.1)
    for growth in growths:
        growth.sample()
    final = await done
    assert final.state == DatasetState.completed, final
    assert final.files_failed == 0, final
    for root in roots:
        assert tree_difference(tree(root), tree(source)) == [], root
    described = await client.temporal.get_workflow_handle(dataset).describe()
    assert described.close_time is not None and described.start_time is not None
    duration = (described.close_time - described.start_time).total_seconds()
    due = total / RATE
    landed = [next(t for t, b in g.samples if b >= total) - submitted for g in growths]
    shared = [a for a in answers if "max_rate" in a]
    fan_outs = max((len(a.get("fan_outs", {})) for a in shared), default=0)
    print(
        f"40 MiB to 2 roots under --max-rate 3MB/s: {duration:.1f} s by the dataset's "
        f"clock ({total / duration / 1e6:.2f} MB/s read), each root's last byte "
        f"{', '.join(f'{t:.1f}' for t in landed)} s after the submission "
        f"({', '.join(f'{total / t / 1e6:.2f}' for t in landed)} MB/s); {due:.1f} s due "
        f"at the cap; at most {fan_outs} fan-out groups counted at once"
    )
    assert duration >= 0.8 * due, f"{duration:.1f} s: the dataset read above its --max-rate"
    for root, t in zip(roots, landed, strict=True):
        assert t >= 0.8 * due, f"{t:.1f} s to {root}'s last byte: written above the --max-rate"
    assert shared and all(a["max_rate"] == RATE for a in shared), answers[-3:]
    assert fan_outs >= 2, f"at most {fan_outs} fan-out groups counted at once"
