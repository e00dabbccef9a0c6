"""Helpers of the dataset tests: build source trees, compare trees by names, sizes and
checksums, run a dataset to its end."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path

from staccato.client import StaccatoClient
from staccato.dataset_client import dataset_status, submit_dataset
from staccato.datasets.models import DatasetState, DatasetStatus
from tests.helpers import MiB, at_rest, write_random

#: names that must round-trip byte for byte on a file system
ODD_NAMES = [
    "plus+sign",
    "percent%2Bencoded",
    "with space",
    "caf\u00e9-nfc",
    "cafe\u0301-nfd",
    "semi;colon",
    "#hash",
    "?question",
]


def make_tree(root: Path, *, large: int = 0, small: int = 5) -> dict[str, int]:
    """A tree with nested directories, 0-byte files, odd names, ``small`` extra small
    files and one file of ``large`` bytes (when > 0); returns name -> size."""
    files: dict[str, int] = {
        "empty.bin": 0,
        "a/b/c/deep.txt": 1234,
        "a/b/zero": 0,
        "a/one": 1,
        "z/last.dat": 70_000,
    }
    for name in ODD_NAMES:
        files[f"odd/{name}"] = 100 + len(name)
    for i in range(small):
        files[f"many/f{i:04d}"] = 500 + i
    if large:
        files["big/large.bin"] = large
    for seed, (name, size) in enumerate(sorted(files.items())):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_random(path, size, seed=seed)
        at_rest(path)
    (root / "empty-dir").mkdir(exist_ok=True)
    return files


def tree(root: Path) -> dict[str, tuple[int, str]]:
    """Relative name -> (size, sha256) of every regular file under ``root`` (temp and
    journal files included, so leftovers show)."""
    found: dict[str, tuple[int, str]] = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory) / name
            if not path.exists():
                continue  # a broken symbolic link
            data = path.read_bytes()
            found[str(path.relative_to(root))] = (len(data), hashlib.sha256(data).hexdigest())
    return found


async def run_dataset(
    client: StaccatoClient, source: str, destination: str, *, timeout_s: float = 120, **kwargs
) -> DatasetStatus:
    """Submit a dataset and wait for its end (bounded); returns its final status."""
    dataset = await submit_dataset(client, source, destination, **kwargs)
    return await wait_dataset(client, dataset, timeout_s=timeout_s)


async def wait_dataset(client: StaccatoClient, dataset: str, *, timeout_s: float) -> DatasetStatus:
    """Poll :func:`dataset_status` until the dataset ends (``timeout_s`` seconds at
    most). A describe that Temporal does not answer within the client's wait (a busy
    machine) is asked again, not a failure."""
    from temporalio.service import RPCError, RPCStatusCode

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            status = await dataset_status(client, dataset)
        except RPCError as err:
            # the client's rpc_timeout ends a call as (CANCELLED, "Timeout expired")
            timed_out = err.status == RPCStatusCode.DEADLINE_EXCEEDED or (
                "timeout" in err.message.lower()
            )
            if not timed_out or time.monotonic() > deadline:
                raise
            continue
        if status.state not in (DatasetState.running, DatasetState.scheduled):
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"dataset not done in {timeout_s} s: {status}")
        await asyncio.sleep(0.2)


def batch_sizes(files: int, *, batch_files: int, max_batches: int, page_size: int) -> list[int]:
    """The sizes of the batches a one-root dataset of ``files`` small files runs, in
    order (staggered: ``staccato.datasets.workflow``): pages of the ramp's entries,
    then twice as many up to ``page_size``; a run's first ``max_batches`` batches ramp
    up to ``batch_files``; the last page's batches shrink."""
    from staccato.datasets.workflow import ramp_entries, ramp_files, tail_files

    sizes: list[int] = []
    limit = min(page_size, ramp_entries(batch_files, max_batches))
    start = 0
    while start < files:
        page = min(limit, files - start)
        last = start + limit >= files
        position = 0
        while position < page:
            cap = ramp_files(batch_files, max_batches, len(sizes))
            if last:
                cap = min(cap, tail_files(batch_files, max_batches, page - position))
            size = min(cap, page - position)
            sizes.append(size)
            position += size
        start += limit
        limit = min(page_size, limit * 2)
    return sizes


def tree_difference(
    copied: dict[str, tuple[int, str]], original: dict[str, tuple[int, str]]
) -> list[str]:
    """What differs between two :func:`tree` results, one line per name, sorted:
    ``missing NAME``, ``extra NAME`` (a temp or journal file, or a stray), or
    ``differs NAME: (size, sha256) != (size, sha256)``."""
    lines = [f"missing {name}" for name in original if name not in copied]
    lines += [f"extra {name}" for name in copied if name not in original]
    lines += [
        f"differs {name}: {copied[name]} != {original[name]}"
        for name in original
        if name in copied and copied[name] != original[name]
    ]
    return sorted(lines)


__all__ = [
    "MiB",
    "batch_sizes",
    "ODD_NAMES",
    "make_tree",
    "run_dataset",
    "tree",
    "tree_difference",
    "wait_dataset",
]
