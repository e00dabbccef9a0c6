"""Helpers of the dataset tests: build source trees, compare trees by names, sizes and
checksums, run a dataset to its end."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Callable
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
    order (staggered: ``staccato.datasets.workflow``): a first page of the ramp's
    first batch (``dataset-short-first-page``), then pages twice as long up to
    ``page_size``; a run's first ``max_batches`` batches ramp up to ``batch_files``
    (a batch ends with its page); the last page's batches shrink."""
    from staccato.datasets.workflow import first_page_entries, ramp_files, tail_files

    sizes: list[int] = []
    limit = min(page_size, first_page_entries(batch_files, max_batches))
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


def links_into(work: Path) -> tuple[Path, Path, dict[str, tuple[int, str]]]:
    """``work/src`` (three real files) and symbolic links into ``work/dst`` (not
    made): to the root (``back``), to a directory and a file inside it (``inner``,
    ``peek``), and to ``work`` itself (``work``: the walk would reach the root below
    it, and ``work/src`` is a loop); returns the source, the destination and the
    source's real files (:func:`tree`)."""
    source, destination = work / "src", work / "dst"
    (source / "a").mkdir(parents=True)
    (source / "b").mkdir()
    (source / "a" / "one").write_bytes(b"one")
    (source / "b" / "two").write_bytes(b"two" * 100)
    (source / "top").write_bytes(b"top")
    real_files = tree(source)
    os.symlink(destination, source / "back")
    os.symlink(destination / "a", source / "inner")
    os.symlink(destination / "top", source / "peek")
    os.symlink(work, source / "work")
    return source, destination, real_files


def check_links_into(
    source: str,
    destination: Path,
    shown: str,
    real_files: dict[str, tuple[int, str]],
    *,
    root_made_first: bool = False,
    **args: str,
) -> None:
    """``cp -r SOURCE DESTINATION`` (``shown``: the destination's URL) of a tree made
    by :func:`links_into`, twice: each run exits 1, the destination holds the real
    files once (no nested copy), and ``status --failures`` names each link into the
    destination (the second run also ``work/dst/``, which exists then; the first too
    with ``root_made_first``: an SFTP root is made before the listing) with a reason
    naming the root; ``work/src/`` stays a link loop. Then ``--retry-failed``: the
    file link ``peek`` fails again for that reason (not copied)."""
    from staccato.dataset_requests import dataset_id
    from tests.helpers import run_cli

    for run in ("first", "second"):
        done = run_cli("cp", "-r", "-q", source, shown, **args)
        assert done.returncode == 1, (run, done.stdout, done.stderr)
        assert tree(destination) == real_files, run
        listed = run_cli("status", "--failures", dataset_id(shown), **args)
        assert listed.returncode == 0, (listed.stdout, listed.stderr)
        reasons = dict(line.split("\t", 1) for line in listed.stdout.splitlines())
        # a link to a directory not made yet is named as a file (``back``, not ``back/``)
        expected = {"back", "inner", "peek", "work/src"}
        if run == "second" or root_made_first:
            expected.add("work/dst")
        assert {name.rstrip("/") for name in reasons} == expected, (run, reasons)
        for name, why in reasons.items():
            if name == "work/src/":
                assert why == "symbolic link loop", (name, why)
                continue
            assert f"destination root {shown}" in why, (run, name, why)
            assert "copy the copy" in why and "not followed" in why, (run, name, why)
    # --retry-failed copies the failed names again: the file link into the root too
    again = run_cli("cp", "-r", "-q", "--retry-failed", source, shown, **args)
    assert again.returncode == 1, (again.stdout, again.stderr)
    assert tree(destination) == real_files
    listed = run_cli("status", "--failures", dataset_id(shown), **args)
    reasons = dict(line.split("\t", 1) for line in listed.stdout.splitlines())
    assert f"destination root {shown}" in reasons["peek"], reasons
    assert sorted(os.listdir(destination)) == ["a", "b", "top"]


async def status_when(
    client: StaccatoClient,
    dataset: str,
    done: Callable[[DatasetStatus], bool],
    timeout_s: float,
) -> DatasetStatus:
    """The dataset's first status for which ``done(status)`` holds, or that has ended
    (polled every 0.3 s); fails the test after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = await dataset_status(client, dataset)
        if done(status) or status.state not in (DatasetState.running, DatasetState.scheduled):
            return status
        assert time.monotonic() < deadline, f"no such status in {timeout_s} s: {status}"
        await asyncio.sleep(0.3)


def tree_with_temp_names(root: Path) -> dict[str, bytes]:
    """A source tree of 4 files (two directories) beside the temp files and journals
    write sessions name there (``.NAME.<16 hex>.staccato-part`` / ``-journal``: another
    transfer's in flight to that directory, or one left; and an SFTP session's writers
    directory and fresh copy), one of them large enough to
    be a child transfer of its own if listed; returns the 4 files' relative names and
    bytes (what a dataset of ``root`` must copy, and nothing else)."""
    from staccato.temp_names import (
        FRESH_SUFFIX,
        JOURNAL_SUFFIX,
        TEMP_SUFFIX,
        WRITERS_SUFFIX,
        session_stem,
    )

    files: dict[str, bytes] = {}
    for i, name in enumerate(["a.bin", "sub/b.bin", "sub/c.txt", "z.bin"]):
        data = bytes([i + 1]) * (1000 + i)
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files[name] = data
    for directory, target, key in [("", "a.bin", "t1"), ("sub", "b.bin", "t2"), ("", "x", "t3")]:
        stem = session_stem(str(root / directory), target, key)
        Path(stem + TEMP_SUFFIX).write_bytes(b"\0" * (2 * 1024 * 1024))
        Path(stem + JOURNAL_SUFFIX).write_bytes(b"")
        # an SFTP session's writers directory (one writer's entry) and publish's copy
        (Path(stem + WRITERS_SUFFIX) / "w1").mkdir(parents=True)
        Path(stem + FRESH_SUFFIX).write_bytes(b"f" * 100)
    return files
