"""A dataset's batches of small files are paced like copy streams: by the dataset's
own ``--max-rate`` and by an endpoint's ``--max-rate`` (set with ``staccato limit``),
shared with the streams on that endpoint, and a cap lowered mid-run reaches a running
batch. Measured at the destination: the bytes it holds over time (each bound is a
lower bound on time or an upper bound on rate, which load can only make safer)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from staccato import governors
from staccato.client import StaccatoClient
from staccato.dataset_client import submit_dataset
from staccato.datasets.models import DatasetState, DatasetStatus
from staccato.links import parse_limit_target
from staccato.models import TransferOptions
from tests.dataset_checks import tree, tree_difference, wait_dataset
from tests.helpers import MiB, run_cli, write_random
from tests.test_limits import (  # noqa: F401  (the ``limits`` fixture)
    GrowthLog,
    client_address,
    governor_ends,
    limits,
)

OPTIONS = TransferOptions(chunk_size=1 * MiB, streams=1, heartbeat_timeout_s=8, owner="t")
FILES = 16


def small_files(root: Path, count: int = FILES, size: int = 1 * MiB) -> int:
    """``count`` random files of ``size`` bytes under ``root`` (two directories); their
    total bytes."""
    for i in range(count):
        path = root / f"d{i % 2}" / f"f{i:02d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_random(path, size, seed=i + 11)
    return count * size


async def run_and_watch(
    client: StaccatoClient, source: Path, target: Path, options: TransferOptions
) -> tuple[DatasetStatus, GrowthLog]:
    """Run the dataset ``source`` -> ``target`` to its end, sampling the bytes ``target``
    holds every 0.1 s; fails at 60 s."""
    dataset = await submit_dataset(client, str(source), str(target), options=options)
    done = asyncio.ensure_future(wait_dataset(client, dataset, timeout_s=60))
    growth = GrowthLog(target)
    while not done.done():
        growth.sample()
        await asyncio.sleep(0.1)
    growth.sample()
    return await done, growth


def arrival_span(growth: GrowthLog, first: int, total: int) -> float:
    """Seconds between the destination holding ``first`` bytes and holding ``total``."""
    start = next(t for t, b in growth.samples if b >= first)
    end = next(t for t, b in growth.samples if b >= total)
    return end - start


def check_copied(final: DatasetStatus, source: Path, target: Path, files: int = FILES) -> None:
    assert final.state == DatasetState.completed, final
    assert final.files_done == files and final.files_failed == 0, final
    assert tree_difference(tree(target), tree(source)) == []


async def test_dataset_max_rate_paces_its_small_file_batch(
    client: StaccatoClient, tmp_path: Path, data_dir: Path
) -> None:
    """cp -r --max-rate 2MB/s of 16 x 1 MiB small files (one batch, file -> file: the
    group-committed staging path): after the first file, the other 15 MiB reach the
    destination no faster than the rate allows (>= 80 % of 15 MiB / 2 MB/s, ~6.3 s)."""
    rate = 2_000_000
    source = tmp_path / "src"
    total = small_files(source)
    target = data_dir / "paced"
    final, growth = await run_and_watch(
        client, source, target, OPTIONS.model_copy(update={"max_rate": rate})
    )
    check_copied(final, source, target)
    span = arrival_span(growth, 1 * MiB, total)
    print(f"15 MiB arrived in {span:.1f} s under --max-rate 2MB/s ({15 * MiB / rate:.1f} s due)")
    assert span >= 0.8 * (total - MiB) / rate, f"{span:.1f} s: the batch was not paced"


async def test_endpoint_max_rate_set_by_limit_command_paces_batches(
    client: StaccatoClient, tmp_path: Path, data_dir: Path
) -> None:
    """``staccato limit set file:// --max-rate 2MB/s``: a dataset's batch (which holds
    one stream's slot there) reads at that rate: the 15 MiB after the first file take
    >= 80 % of 15 MiB / 2 MB/s at the destination."""
    rate = 2_000_000
    address = client_address(client)
    queue = client.task_queue
    try:
        done = run_cli(
            "limit", "set", "file://", "--max-rate", "2MB/s", address=address, task_queue=queue
        )
        assert done.returncode == 0, done.stderr
        listed = json.loads(
            run_cli("limit", "list", "--json", address=address, task_queue=queue).stdout
        )
        (view,) = [v for v in listed if v["target"] == "file://"]
        assert view["limits"]["max_rate"] == rate, view
        source = tmp_path / "src"
        total = small_files(source)
        target = data_dir / "endpoint-paced"
        final, growth = await run_and_watch(client, source, target, OPTIONS)
    finally:
        await governors.unset_limits(client.temporal, parse_limit_target("file://"), [])
        await governor_ends(client, "file://")
    check_copied(final, source, target)
    span = arrival_span(growth, 1 * MiB, total)
    print(f"15 MiB arrived in {span:.1f} s under file:// --max-rate 2MB/s")
    assert span >= 0.8 * (total - MiB) / rate, f"{span:.1f} s: the batch was not paced"


async def test_lowered_endpoint_max_rate_reaches_a_running_batch(
    client: StaccatoClient,
    limits: Any,  # noqa: F811
    tmp_path: Path,
    data_dir: Path,
) -> None:
    """file:// --max-rate 4MiB/s while a batch of 96 x 256 KiB copies; lowered to
    1MiB/s once 4 MiB arrived: 2-8 s after the change the destination grows at most
    1.25 MiB/s (on the old cap it would be ~4)."""
    await limits("file://", max_rate=4 * MiB)
    source = tmp_path / "src"
    files = 96
    total = small_files(source, count=files, size=256 * 1024)
    target = data_dir / "lowered"
    dataset = await submit_dataset(client, str(source), str(target), options=OPTIONS)
    done = asyncio.ensure_future(wait_dataset(client, dataset, timeout_s=90))
    growth = GrowthLog(target)
    deadline = time.monotonic() + 30
    while growth.sample() < 4 * MiB:
        assert not done.done(), f"the dataset ended before 4 MiB were seen: {done.result()}"
        assert time.monotonic() < deadline, "the batch did not start copying"
        await asyncio.sleep(0.1)
    await limits("file://", max_rate=1 * MiB)
    changed = time.monotonic()
    while time.monotonic() < changed + 8:
        assert not done.done(), f"the dataset ended at the old cap: {done.result()}"
        growth.sample()
        await asyncio.sleep(0.1)
    rate = growth.rate(changed + 2, changed + 8)
    print(f"{rate / MiB:.2f} MiB/s 2-8 s after lowering 4 -> 1 MiB/s", end=" ")
    print(f"(0-2 s after: {growth.rate(changed, changed + 2) / MiB:.2f})")
    assert rate <= 1.25 * MiB, f"{rate / MiB:.2f} MiB/s after lowering the cap to 1 MiB/s"
    await limits("file://", max_rate=64 * MiB)  # finish fast
    final = await done
    check_copied(final, source, target, files)
    assert final.bytes_done == total, final


async def test_dataset_max_rate_paces_batches_to_several_roots(
    client: StaccatoClient, tmp_path: Path, data_dir: Path
) -> None:
    """cp -r --max-rate 2MB/s of 24 x 1 MiB small files to two roots (each file read
    once, written to both; 4 files in flight): each root holds all 24 no sooner than
    80 % of 24 MiB / 2 MB/s (10 s) after the submission (timed from it: with files in
    flight, a first file slowed by load would shorten a span from the first file)."""
    rate = 2_000_000
    source = tmp_path / "src"
    total = small_files(source, count=24)
    roots = [data_dir / "one", data_dir / "two"]
    submitted = time.monotonic()
    dataset = await submit_dataset(
        client,
        str(source),
        [str(r) for r in roots],
        options=OPTIONS.model_copy(update={"max_rate": rate}),
    )
    done = asyncio.ensure_future(wait_dataset(client, dataset, timeout_s=60))
    growth = [GrowthLog(r) for r in roots]
    while not done.done():
        for g in growth:
            g.sample()
        await asyncio.sleep(0.1)
    for g in growth:
        g.sample()
    final = await done
    assert final.state == DatasetState.completed and final.files_done == 24, final
    for root, g in zip(roots, growth, strict=True):
        assert tree_difference(tree(root), tree(source)) == []
        took = next(t for t, b in g.samples if b >= total) - submitted
        print(f"{root.name}: 24 MiB landed {took:.1f} s after submission under 2MB/s")
        assert took >= 0.8 * total / rate, f"{took:.1f} s: the batch was not paced"
