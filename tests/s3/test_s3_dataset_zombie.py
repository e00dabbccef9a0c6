"""A dataset batch frozen past its heartbeat timeout writes nothing when it wakes.

A batch of small files from a local directory to S3 (one PutObject per file, paced so
that it lasts ~8 s) runs on a first worker. Once part of it is at the store, that
worker's whole process tree is frozen (SIGSTOP); a second worker on the same task
queue takes the batch over once its heartbeat timeout passed and the dataset
completes. Then a newer version of each file the frozen batch had not reached yet is
written to the store (as a later write by someone else would), and the frozen tree is
woken (SIGCONT). Before batches ran under the stream lease, the woken batch went on
with its list and put its stale copies over the newer versions; now it stops before
its next PutObject (``StreamLeaseExpired``): after the wake the store ends at most the
PutObject requests in flight at the freeze (counted at SeaweedFS), each of the bytes
the file already has. Runs on a Temporal server of its own that lets an
open task poll expire after 5 s (``tests.zombie_checks.POLL_EXPIRY``), so the frozen
worker's polls stop taking tasks soon.

With the frozen worker's polls open for 18 s instead (``s3-retry-to-frozen``), the
batch's retries are handed to the frozen worker's open polls (each lost after its
heartbeat timeout) before one reaches the second worker; the frozen worker runs them
when it wakes. Each must stop before writing: its lease runs from the attempt's
start on the server, not from when the woken worker runs it (before, with a fresh
lease, those stale attempts put 3-4 stale copies over newer versions: the failure of
the ``s3`` case in CI at load ~20, whose history showed the batch's attempt 2 missing,
attempt 3 on the second worker).

The same for a fan-out batch (``copy_batch_to_many``) to the S3 prefix and a local
directory: no newer version replaced at either root, no PutObject after the wake, no
temp file left in the directory.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from staccato.activities.dataset import FILES_IN_FLIGHT
from staccato.client import StaccatoClient
from staccato.models import TransferOptions
from tests.dataset_checks import MiB, tree
from tests.helpers import leftovers
from tests.s3.conftest import MeteredSeaweedS3, settled, started_s3_worker
from tests.zombie_checks import (
    POLL_EXPIRY,
    freeze,
    names_ahead,
    old_files,
    published_names,
    replaced_files,
    short_poll_server,
    submit_one_batch,
    thaw,
    wait_completed,
    woken_batch_end,
    write_newer,
)

FILES = 120
SIZE = 2000
HEARTBEAT_TIMEOUT_S = 4
#: bytes/s the batch reads at most: its ~240 KB last ~8 s, a fifth of them (the freeze)
#: ~1.5 s, and the second worker copies the rest in ~6 s (at 16 KiB/s: 12 s)
RATE = 32 * 1024
OPTIONS = TransferOptions(
    chunk_size=1 * MiB, heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S, max_rate=RATE
)
PREFIX = "dst/"


def _keys(s3: Any, bucket: str) -> set[str]:
    keys: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=PREFIX):
        keys.update(item["Key"] for item in page.get("Contents", ()))
    return keys


def _objects(s3: Any, bucket: str, leave_out: set[str]) -> dict[str, bytes]:
    """The objects under the prefix but those of ``leave_out``: ``{key: bytes}``."""
    return {
        key: s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        for key in _keys(s3, bucket) - leave_out
    }


def _replaced(s3: Any, bucket: str, newer: dict[str, bytes]) -> list[str]:
    """The keys of ``newer`` whose object is no longer the newer version."""
    return [
        key
        for key, data in newer.items()
        if s3.get_object(Bucket=bucket, Key=key)["Body"].read() != data
    ]


#: how long the frozen worker's polls stay open in the ``s3-retry-to-frozen`` case.
#: Its polls were opened when it started polling or took its last task (the batch's),
#: ~2.5 s before the freeze on a quiet machine (a fifth of the batch at its pace is
#: ~1.5 s), and each takes a retry until it expires; the retries come at the freeze
#: + ~5 s (the 4 s heartbeat timeout, a 1 s backoff), + ~11, + ~19, + ~31 (backoffs of
#: 2, 4, 8 s). 18 s keeps them open past the first retry unless the freeze came 13 s
#: after they were opened, and lets the third or fourth retry reach the second worker;
#: 30 s held the fourth too, so that the batch went on only with its fifth attempt,
#: 34 s after it started (the case took 52-56 s, the other two 35 s)
LONG_POLL_EXPIRY = "18s"


def _stale_attempts_refused(log: str) -> bool:
    """Whether the worker's log shows a retry of the batch (attempt 2 or later)
    stopped at its lease."""
    return any(
        "'attempt': 1," not in record and "StreamLeaseExpired" in record
        for record in log.split("Completing activity as failed")[1:]
    )


@pytest.mark.parametrize(
    ("fan_out", "poll_expiry"),
    [(False, POLL_EXPIRY), (True, POLL_EXPIRY), (False, LONG_POLL_EXPIRY)],
    ids=["s3", "s3-and-local", "s3-retry-to-frozen"],
)
async def test_frozen_batch_writes_nothing_after_losing_its_batch(
    s3_server: MeteredSeaweedS3,
    s3_worker_env: dict[str, str],
    s3: Any,
    bucket: str,
    data_dir: Path,
    tmp_path: Path,
    fan_out: bool,
    poll_expiry: str,
) -> None:
    """To the S3 prefix; with ``fan_out`` (``copy_batch_to_many``) to a local directory
    too (each file written to the S3 prefix, then to the directory); with a long
    ``poll_expiry``, the retries the frozen worker took stop too."""
    local = data_dir / "local" if fan_out else None
    source = data_dir / "src"
    old_files(source, FILES, SIZE)
    roots = [f"s3://{bucket}/{PREFIX}"] + ([str(local)] if local is not None else [])
    with short_poll_server(tmp_path, poll_expiry) as temporal_server:
        # one activity process each: a batch is one activity, run in a thread (a
        # process's threads are its slots, so the frozen worker's polls still take
        # the retries in the s3-retry-to-frozen case); a second process was ~0.65 CPU-s
        # per start and ran nothing
        first = started_s3_worker(temporal_server.address, s3_worker_env, tmp_path, processes=1)
        second = None
        frozen: list[int] = []
        try:
            async with await StaccatoClient.connect(target_host=temporal_server.address) as client:
                client.task_queue = first.task_queue
                dataset = await submit_one_batch(
                    client, source, roots if local is not None else roots[0], OPTIONS, FILES
                )
                deadline = time.monotonic() + 60
                while len(_keys(s3, bucket)) < FILES // 5 and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                frozen = freeze(first)
                written = _keys(s3, bucket) | (published_names(local) if local else set())
                # the files the frozen batch would write next (past those in flight)
                names = names_ahead({w.rsplit("/", 1)[-1] for w in written}, FILES, gap=8)
                ahead = [PREFIX + name for name in names]
                second = started_s3_worker(
                    temporal_server.address,
                    s3_worker_env,
                    tmp_path,
                    task_queue=first.task_queue,
                    processes=1,
                )
                await wait_completed(client, dataset, FILES)
                if local is not None:
                    assert tree(local) == tree(source)
                newer = {key: b"newer version of " + key.encode() for key in ahead}
                for key, data in newer.items():
                    s3.put_object(Bucket=bucket, Key=key, Body=data)
                newer_local = write_newer(local, names) if local is not None else {}

                def replaced() -> list[str]:
                    at_local = replaced_files(local, newer_local) if local is not None else []
                    return _replaced(s3, bucket, newer) + at_local

                def puts() -> int:
                    return s3_server.request_count(bucket, "PUT")

                # SeaweedFS counts a request after it answered: the last of ours
                # above may not be counted yet
                puts_before = settled(puts, 0, timeout_s=10)
                thaw(frozen)
                # the woken batch ends: it stops at its lease, or (before the fix) it
                # goes on and replaces newer versions
                stopped = await woken_batch_end(first, replaced)
                if poll_expiry == LONG_POLL_EXPIRY and stopped:
                    # a retry it took while frozen ran on waking, and stopped
                    deadline = time.monotonic() + 30
                    while not _stale_attempts_refused(first.log_tail(200000)) and not replaced():
                        assert time.monotonic() < deadline, (
                            f"no retry of the batch ran on the woken worker:\n{first.log_tail(4000)}"
                        )
                        await asyncio.sleep(0.2)
                puts_after = settled(puts, 0, timeout_s=10)
                print(
                    f"woken batch: {len(replaced())} of {len(newer) + len(newer_local)} newer "
                    f"versions replaced, {puts_after - puts_before} PutObject after the wake"
                )
                assert replaced() == [], f"the woken batch replaced {len(replaced())} newer files"
                assert stopped, f"the woken batch did not stop:\n{first.log_tail(4000)}"
                # a PutObject the freeze caught with its request partly sent ends when
                # it wakes (one of the files in flight, the same bytes); none starts
                # after the wake
                assert puts_after - puts_before <= FILES_IN_FLIGHT, (
                    f"{puts_after - puts_before} PutObject after the wake"
                )
                assert _objects(s3, bucket, set(newer)) == {
                    PREFIX + path.name: path.read_bytes()
                    for path in source.iterdir()
                    if PREFIX + path.name not in newer
                }
                if local is not None:
                    assert leftovers(local) == []
        finally:
            thaw(frozen)
            first.stop()
            if second is not None:
                second.stop()
