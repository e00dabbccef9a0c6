"""A dataset re-run at ``--sync-level`` over a tree where only some files changed, its
worker SIGKILLed while a batch is under way: the retried batch counts the files the
killed attempt found up to date as skipped, not as copied (tester: 924 reported
copied for 668 rewritten), and rewrites only the changed files."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from temporalio.api.enums.v1 import EventType

from staccato.client import StaccatoClient
from staccato.dataset_client import submit_dataset
from staccato.datasets.models import (
    BatchCheckpoint,
    DatasetState,
    FanOutBatchCheckpoint,
    FanOutBatchInput,
)
from staccato.models import SyncLevel, TransferOptions
from tests.dataset_checks import MiB, batch_sizes, tree, tree_difference, wait_dataset
from tests.helpers import WorkerProcess, spawned_children

FILES = 300
BATCH_FILES = 300


def _names(root: Path) -> list[str]:
    """Relative names of the files under ``root``, in the listing's order."""
    return sorted(
        (str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()),
        key=lambda name: name.encode(),
    )


def _mark(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


async def _checkpoint(
    client: StaccatoClient, handle, kind: str = "copy_batch", model=BatchCheckpoint
):
    """The heartbeat details of the ``kind`` batch pending at the server (None: none)."""
    description = await handle.describe()
    for pending in description.raw_description.pending_activities:
        if pending.activity_type.name == kind and pending.heartbeat_details.payloads:
            (details,) = await client.temporal.data_converter.decode(
                pending.heartbeat_details.payloads, [model]
            )
            return details
    return None


def _changed_tree(source: Path, destination: Path | list[Path]) -> tuple[list[str], set[str]]:
    """``FILES`` small files under ``source``, copied to ``destination`` (cp -a: a copy
    made earlier), then every 3rd one changed in place at the source (6 bytes at offset
    10: dd conv=notrunc); returns the names in listing order and the changed ones."""
    for i in range(FILES):
        path = source / f"d{i % 10:02d}" / f"f{i:05d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(200 + i % 300))
        past = time.time() - 3600
        os.utime(path, (past, past))
    for root in destination if isinstance(destination, list) else [destination]:
        shutil.copytree(source, root)
    names = _names(source)
    changed = set(names[::3])
    for name in changed:
        with open(source / name, "r+b") as f:
            f.seek(10)
            f.write(os.urandom(6))
    return names, changed


async def _hold_still(client: StaccatoClient, handle, worker: WorkerProcess, checkpoint, **kw):
    """SIGSTOP the worker's activity process, and the checkpoint at the server once it
    stays unchanged for 4 s (the worker's throttled heartbeats deliver the last one)."""
    assert worker.process is not None
    pool = spawned_children(worker.process.pid)[1:]  # not the heartbeat manager
    assert pool, "no activity process found"
    for pid in pool:
        os.kill(pid, signal.SIGSTOP)
    stable_since, deadline = time.monotonic(), time.monotonic() + 30
    while time.monotonic() - stable_since < 4 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        again = await _checkpoint(client, handle, **kw)
        if again != checkpoint:
            checkpoint, stable_since = again, time.monotonic()
    return checkpoint


async def _sync_rerun(client: StaccatoClient, source: Path, destination: str | list[str]) -> str:
    """Submit the sync re-run at ``--sync-level checksum`` of ``source`` to
    ``destination`` (one root or several), in one batch, paced: the ~35 KB the batch
    copies take ~17 s, so it is under way with files found up to date counted in its
    checkpoint. Returns the dataset id."""
    return await submit_dataset(
        client,
        str(source),
        destination,
        TransferOptions(
            chunk_size=1 * MiB,
            heartbeat_timeout_s=2,
            max_rate=2 * 1024,
            sync_level=SyncLevel.checksum,
        ),
        batch_files=BATCH_FILES,
        max_batches=1,
        page_size=FILES,
    )


async def _retried(handle) -> bool:
    """Whether some activity of the dataset ran a second attempt."""
    return any(
        [
            e
            async for e in handle.fetch_history_events()
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
            and e.activity_task_started_event_attributes.attempt > 1
        ]
    )


async def test_sync_rerun_worker_sigkill_counts_up_to_date_files_as_skipped(
    temporal_server, data_dir: Path
) -> None:
    await sync_rerun_with_kill(temporal_server, data_dir)


async def sync_rerun_with_kill(
    temporal_server,
    data_dir: Path,
    url_of: Callable[[Path], str] = str,
    env: Mapping[str, str] | None = None,
) -> None:
    """A sync re-run to ``url_of(data_dir / "dst")`` (a worker with ``env``), its
    worker SIGKILLed while a batch with skipped files is under way: only the changed
    files are written, and counted as a run without the crash counts them."""
    source, destination = data_dir / "src", data_dir / "dst"
    names, changed = _changed_tree(source, destination)
    marks = {name: _mark(destination / name) for name in names}
    sizes = batch_sizes(FILES, batch_files=BATCH_FILES, max_batches=1, page_size=FILES)
    batches: list[list[str]] = []
    for size in sizes:
        start = sum(len(b) for b in batches)
        batches.append(names[start : start + size])

    worker = WorkerProcess(temporal_server.address, processes=1, log_dir=data_dir, env=env)
    worker.start()
    client = await StaccatoClient.connect(target_host=temporal_server.address, namespace="default")
    client.task_queue = worker.task_queue
    try:
        dataset = await _sync_rerun(client, source, url_of(destination))
        handle = client.temporal.get_workflow_handle(dataset)
        assert worker.process is not None
        deadline = time.monotonic() + 120
        checkpoint: BatchCheckpoint | None = None
        while time.monotonic() < deadline:
            checkpoint = await _checkpoint(client, handle)
            # a batch with skipped files counted, and at least a resume window
            # (68 files) of it still to go
            if checkpoint is not None and checkpoint.skipped >= 10 and checkpoint.current:
                batch = next(b for b in batches if checkpoint.current in b)
                if checkpoint.next_index <= len(batch) - 120:
                    break
            checkpoint = None
            await asyncio.sleep(0.05)
        assert checkpoint is not None, "no batch with skipped files was seen under way"
        # the activity process holds still; its last heartbeat reaches the server
        # (the worker's heartbeats are throttled): the checkpoint the retry starts from
        checkpoint = await _hold_still(client, handle, worker, checkpoint)
        assert checkpoint is not None and checkpoint.current
        batch = next(b for b in batches if checkpoint.current in b)
        rewritten_at_kill = {n for n in names if _mark(destination / n) != marks[n]}
        worker.kill()
        # the changed files the killed attempt published past its checkpoint: the
        # retry finds them up to date and (nothing tells it they were copied) counts
        # them as skipped
        past_checkpoint = set(batch[checkpoint.next_index :])
        copied_unseen = rewritten_at_kill & past_checkpoint
        assert copied_unseen <= changed
        assert len(past_checkpoint - changed) > 60, "too few unchanged files left to resume"

        worker.start()
        final = await wait_dataset(client, dataset, timeout_s=240)
        assert final.state == DatasetState.completed, final
        # exactly the changed files were written, each once
        rewritten = {n for n in names if _mark(destination / n) != marks[n]}
        assert rewritten == changed, (
            f"{len(rewritten - changed)} unchanged files rewritten, "
            f"{len(changed - rewritten)} changed ones not"
        )
        differ = tree_difference(tree(destination), tree(source))
        assert differ == [], f"{len(differ)} files differ: {differ[:20]}"
        # counted as a run without the crash does, but for the files copied past the
        # last checkpoint (unknowable after the kill: they count as up to date)
        assert (final.files_done, final.files_skipped, final.files_failed) == (
            len(changed) - len(copied_unseen),
            FILES - len(changed) + len(copied_unseen),
            0,
        ), (final, len(copied_unseen))
        assert await _retried(handle), "no batch was interrupted by the kill"
    finally:
        worker.stop()


async def _fanout_batch(client: StaccatoClient, handle, current: str) -> list[str]:
    """The names of the ``copy_batch_to_many`` batch (its input, from the history) that
    holds ``current``."""
    async for e in handle.fetch_history_events():
        if e.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            continue
        attributes = e.activity_task_scheduled_event_attributes
        if attributes.activity_type.name != "copy_batch_to_many":
            continue
        (request,) = await client.temporal.data_converter.decode(
            attributes.input.payloads, [FanOutBatchInput]
        )
        batch = [f.name for f in request.files]
        if current in batch:
            return batch
    raise AssertionError(f"no batch holds {current}")


async def test_sync_rerun_to_two_roots_worker_sigkill_counts_up_to_date_as_skipped(
    temporal_server, data_dir: Path
) -> None:
    """The same with two destination roots (``copy_batch_to_many``): each root's
    counts, and the files', are those of a run without the crash."""
    source = data_dir / "src"
    roots = [data_dir / "d1", data_dir / "d2"]
    names, changed = _changed_tree(source, roots)
    marks = {(r, n): _mark(r / n) for r in roots for n in names}
    worker = WorkerProcess(temporal_server.address, processes=1, log_dir=data_dir)
    worker.start()
    client = await StaccatoClient.connect(target_host=temporal_server.address, namespace="default")
    client.task_queue = worker.task_queue
    kw = {"kind": "copy_batch_to_many", "model": FanOutBatchCheckpoint}
    try:
        dataset = await _sync_rerun(client, source, [str(r) for r in roots])
        handle = client.temporal.get_workflow_handle(dataset)
        deadline = time.monotonic() + 120
        checkpoint = None
        while time.monotonic() < deadline:
            checkpoint = await _checkpoint(client, handle, **kw)
            if checkpoint is not None and checkpoint.skipped >= 10 and checkpoint.current:
                batch = await _fanout_batch(client, handle, checkpoint.current)
                if checkpoint.next_index <= len(batch) - 120:
                    break
            checkpoint = None
            await asyncio.sleep(0.05)
        assert checkpoint is not None, "no batch with skipped files was seen under way"
        checkpoint = await _hold_still(client, handle, worker, checkpoint, **kw)
        assert checkpoint is not None and checkpoint.current
        batch = await _fanout_batch(client, handle, checkpoint.current)
        rewritten_at_kill = {(r, n) for (r, n), m in marks.items() if _mark(r / n) != m}
        worker.kill()
        past_checkpoint = set(batch[checkpoint.next_index :])
        # per root, the changed files the killed attempt wrote there past its
        # checkpoint: counted as up to date there by the retry (nothing tells it)
        unseen = {r: {n for (q, n) in rewritten_at_kill if q == r} & past_checkpoint for r in roots}
        assert all(u <= changed for u in unseen.values())
        assert len(past_checkpoint - changed) > 60, "too few unchanged files left to resume"

        worker.start()
        final = await wait_dataset(client, dataset, timeout_s=240)
        assert final.state == DatasetState.completed, final
        for r in roots:
            rewritten = {n for n in names if _mark(r / n) != marks[(r, n)]}
            assert rewritten == changed, (r, len(rewritten - changed), len(changed - rewritten))
            differ = tree_difference(tree(r), tree(source))
            assert differ == [], f"{r}: {len(differ)} files differ: {differ[:20]}"
        assert final.destinations is not None
        counts = [(d.files_done, d.files_skipped, d.files_failed) for d in final.destinations]
        assert counts == [
            (len(changed) - len(unseen[r]), FILES - len(changed) + len(unseen[r]), 0) for r in roots
        ], (counts, {str(r): len(u) for r, u in unseen.items()})
        # a file counts as copied when it was copied to some root the retry saw
        copied_nowhere_seen = unseen[roots[0]] & unseen[roots[1]]
        assert (final.files_done, final.files_skipped, final.files_failed) == (
            len(changed) - len(copied_nowhere_seen),
            FILES - len(changed) + len(copied_nowhere_seen),
            0,
        ), (final, len(copied_nowhere_seen))
        assert await _retried(handle), "no batch was interrupted by the kill"
    finally:
        worker.stop()
