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
from typing import Any

from temporalio.api.enums.v1 import EventType

from staccato.client import StaccatoClient
from staccato.dataset_client import submit_dataset
from staccato.datasets.models import (
    BatchCheckpoint,
    DatasetState,
    FanOutBatchCheckpoint,
    FanOutBatchInput,
)
from staccato.datasets.workflow import FIRST_PAGE_ENTRIES
from staccato.models import SyncLevel, TransferOptions
from tests.dataset_checks import MiB, batch_sizes, tree, tree_difference, wait_dataset
from tests.helpers import WorkerProcess, spawned_children

FILES = 300
BATCH_FILES = 300
#: the first files in listing order, of 200-499 bytes (the others: 20-29 bytes);
#: each test kills its worker within them (at least 120 files to go)
PACED_FILES = 150


def _names(root: Path) -> list[str]:
    """Relative names of the files under ``root``, in the listing's order."""
    return sorted(
        (str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()),
        key=lambda name: name.encode(),
    )


def _sizes() -> dict[str, int]:
    """Relative name -> size of the ``FILES`` files of a test tree (10 directories),
    in listing order: the first ``PACED_FILES`` 200-499 bytes (the paced part of the
    batch, in which the test catches it under way and kills its worker), the rest
    20-29 bytes (at least 120 files, 60 of them unchanged, past any kill point: a
    resume window to go; they cost the retry little time at the rate)."""
    names = sorted(
        (f"d{i % 10:02d}/f{i:05d}" for i in range(FILES)), key=lambda name: name.encode()
    )
    return {
        name: 200 + (k * 7) % 300 if k < PACED_FILES else 20 + k % 10
        for k, name in enumerate(names)
    }


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
    for name, size in _sizes().items():
        path = source / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
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


def _settled(read: Callable[[], set[Any]], quiet_s: float = 1.0, limit_s: float = 15.0) -> set[Any]:
    """``read()`` once it gave the same answer for ``quiet_s`` seconds (at most
    ``limit_s`` in all): what the destination holds after the writers stopped."""
    last, since, until = read(), time.monotonic(), time.monotonic() + limit_s
    while time.monotonic() - since < quiet_s and time.monotonic() < until:
        time.sleep(0.1)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
    return last


def _sessions_ended(server_pid: int | None, limit_s: float = 30.0) -> None:
    """Wait until the session processes the server ``server_pid`` ran at the call (an
    sshd: one per connection of the killed worker) have exited (at most ``limit_s``):
    a session runs the requests its client sent before it died, then exits. Only then
    is what the destination holds what the retry finds (ci111 at load: two files the
    killed attempt published showed after the 1 s quiet of :func:`_settled`). No-op
    for ``None`` (a local destination)."""
    if server_pid is None:
        return
    from tests.servers.temporal_server import _descendants

    sessions = [pid for pid, _ in _descendants(server_pid)]
    until = time.monotonic() + limit_s

    def alive(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return False

    while any(alive(pid) for pid in sessions) and time.monotonic() < until:
        time.sleep(0.1)


def _wake(worker: WorkerProcess) -> None:
    """SIGCONT what :func:`_hold_still` froze (the worker's activity processes)."""
    assert worker.process is not None
    for pid in spawned_children(worker.process.pid)[1:]:
        os.kill(pid, signal.SIGCONT)


async def _sync_rerun(
    client: StaccatoClient,
    source: Path,
    destination: str | list[str],
    max_rate: int = 2 * 1024,
    files: int = FILES,
) -> str:
    """Submit the sync re-run at ``--sync-level checksum`` of ``source`` (``files``
    files) to ``destination`` (one root or several), in one batch, paced at
    ``max_rate`` bytes/s: the ~18 KB of changed files among the first ``PACED_FILES``
    the batch copies take ~9 s at 2 KiB/s, so it is under way with files found up to
    date counted in its checkpoint. Returns the dataset id."""
    return await submit_dataset(
        client,
        str(source),
        destination,
        TransferOptions(
            chunk_size=1 * MiB,
            heartbeat_timeout_s=2,
            max_rate=max_rate,
            sync_level=SyncLevel.checksum,
        ),
        batch_files=max(BATCH_FILES, files),
        max_batches=1,
        page_size=max(FILES, files),
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
    change_time: bool = True,
    server_pid: int | None = None,
) -> None:
    """A sync re-run to ``url_of(data_dir / "dst")`` (a worker with ``env``; the
    destination's server ``server_pid``, waited for after the kill), its
    worker SIGKILLed while a batch with skipped files is under way: only the changed
    files are written, and counted as a run without the crash counts them (where the
    destination keeps no change time, ``change_time`` False: SFTP, but for the files
    the killed attempt copied past its last checkpoint, counted as up to date)."""
    source, destination = data_dir / "src", data_dir / "dst"
    names, changed = _changed_tree(source, destination)
    copied_at = time.time()
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
        await _written_before(copied_at)
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
        worker.kill()
        # what the retry starts from, read after the kill: the last checkpoint the
        # server holds, and the destination once settled (an SFTP server finishes
        # the requests it was sent after the client froze; at load a freeze that
        # missed the activity process let it publish on until the kill)
        checkpoint = await _checkpoint(client, handle) or checkpoint
        assert checkpoint.current
        batch = next(b for b in batches if checkpoint.current in b)
        await asyncio.to_thread(_sessions_ended, server_pid)
        rewritten_at_kill = _settled(
            lambda: {n for n in names if _mark(destination / n) != marks[n]}
        )
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
        # counted as a run without the crash does: the files copied past the last
        # checkpoint too, by their change time; without one (SFTP) they count as up
        # to date (unknowable after the kill)
        unseen = 0 if change_time else len(copied_unseen)
        assert (final.files_done, final.files_skipped, final.files_failed) == (
            len(changed) - unseen,
            FILES - len(changed) + unseen,
            0,
        ), (final, len(copied_unseen))
        assert await _retried(handle), "no batch was interrupted by the kill"
    finally:
        worker.stop()


async def _written_before(copied_at: float) -> None:
    """Wait until the destination a test wrote at ``copied_at`` (time.time()) is older
    than the local change-time slack (1 s; the worker's start usually takes longer):
    files changed within it before a retried batch was scheduled count as copied by
    it (:mod:`staccato.activities.resume_counts`)."""
    from staccato.endpoints.file.driver import FileDriver

    while time.time() < copied_at + FileDriver.change_time_slack_s + 0.1:
        await asyncio.sleep(0.1)


async def test_sync_to_empty_destination_worker_killed_counts_every_file_copied(
    temporal_server, data_dir: Path
) -> None:
    await empty_destination_with_kill(temporal_server, data_dir)


async def empty_destination_with_kill(
    temporal_server,
    data_dir: Path,
    url_of: Callable[[Path], str] = str,
    env: Mapping[str, str] | None = None,
    change_time: bool = True,
    held: Callable[[], dict[str, tuple[int, str]]] | None = None,
    start: Callable[[WorkerProcess], object] = WorkerProcess.start,
    server_pid: int | None = None,
) -> None:
    """A dataset at ``--sync-level checksum`` to an empty destination
    ``url_of(data_dir / "dst")`` (a worker with ``env``; the destination's server
    ``server_pid``, waited for after the kill), its worker frozen then
    SIGKILLed while its batch is under way, with files published past its last
    delivered checkpoint: every file was written by this run, so all count as copied,
    none as up to date (tester: an empty destination, a worker SIGSTOPped 70 s: 25,669
    copied, 331 up to date: the retry counted the files the frozen attempt published
    past its checkpoint as up to date). Where the destination keeps no change time
    (``change_time`` False: SFTP) those files still count as up to date. ``held``:
    what the destination holds (:func:`tree`'s shape; default: the local directory
    ``data_dir / "dst"``); ``start``: how the worker is started."""
    source, destination = data_dir / "src", data_dir / "dst"
    held = held or (lambda: tree(destination) if destination.exists() else {})
    sizes = _sizes()
    for name, size in sizes.items():
        path = source / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
    names = _names(source)
    worker = WorkerProcess(temporal_server.address, processes=1, log_dir=data_dir, env=env)
    start(worker)
    client = await StaccatoClient.connect(target_host=temporal_server.address, namespace="default")
    client.task_queue = worker.task_queue
    try:
        # ~52 KB in the first PACED_FILES at 4 KiB/s: ~13 s, so the kill comes with
        # most of the batch to go
        dataset = await _sync_rerun(client, source, url_of(destination), max_rate=4 * 1024)
        handle = client.temporal.get_workflow_handle(dataset)
        deadline = time.monotonic() + 120
        checkpoint: BatchCheckpoint | None = None
        while time.monotonic() < deadline:
            checkpoint = await _checkpoint(client, handle)
            if (
                checkpoint is not None
                and checkpoint.done >= 10
                and checkpoint.next_index <= FILES - 120
            ):
                break
            checkpoint = None
            await asyncio.sleep(0.05)
        assert checkpoint is not None, "no batch with copied files was seen under way"
        # the files the frozen attempt published past its last delivered checkpoint
        # (its heartbeats are throttled): what the retry finds there and must count.
        # A freeze right after a heartbeat leaves none (seen once in three at load
        # 12): wake the worker until a few more files are delivered, freeze again
        published_unseen: list[str] = []
        for _ in range(5):
            checkpoint = await _hold_still(client, handle, worker, checkpoint)
            assert checkpoint is not None and checkpoint.skipped == 0, checkpoint
            there = held()
            published_unseen = [n for n in names[checkpoint.next_index :] if n in there]
            if published_unseen:
                break
            _wake(worker)
            moved_from, until = checkpoint.next_index, time.monotonic() + 30
            while time.monotonic() < until:
                again = await _checkpoint(client, handle)
                if again is not None and again.next_index >= moved_from + 3:
                    checkpoint = again
                    break
                await asyncio.sleep(0.05)
        assert published_unseen, "no file was published past the last checkpoint"
        worker.kill()
        # what the retry finds, read after the kill: the last checkpoint the server
        # holds, and the destination once settled (an SFTP server finishes the writes
        # it was sent after the client froze: a -n 6 run at load ~30 counted 2 files
        # up to date where the read while frozen had seen 1 published)
        checkpoint = await _checkpoint(client, handle) or checkpoint
        await asyncio.to_thread(_sessions_ended, server_pid)
        there = _settled(lambda: set(held()))
        published_unseen = [n for n in names[checkpoint.next_index :] if n in there]
        assert published_unseen, "no file was published past the last checkpoint"

        start(worker)
        final = await wait_dataset(client, dataset, timeout_s=240)
        assert final.state == DatasetState.completed, final
        differ = tree_difference(held(), tree(source))
        assert differ == [], f"{len(differ)} files differ: {differ[:20]}"
        assert await _retried(handle), "no batch was interrupted by the kill"
        unseen = 0 if change_time else len(published_unseen)
        unseen_bytes = 0 if change_time else sum(sizes[n] for n in published_unseen)
        assert (final.files_done, final.files_skipped, final.files_failed) == (
            FILES - unseen,
            unseen,
            0,
        ), (final, len(published_unseen))
        assert final.bytes_done == sum(sizes.values()) - unseen_bytes, final
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


async def _ends_as_without_a_crash(
    client: StaccatoClient,
    handle,
    source: Path,
    roots: list[Path],
    names: list[str],
    changed: set[str],
    marks: dict,
    why: object,
) -> None:
    """The sync re-run to ``roots`` completes as a run without a crash does: each root
    equal to ``source``, only the ``changed`` files rewritten there (``marks``: each
    (root, name)'s mark before), each root's and the dataset's counts ``changed``
    copied and the others up to date; a batch was retried. ``why``: shown on a
    failed count."""
    final = await wait_dataset(client, handle.id, timeout_s=240)
    assert final.state == DatasetState.completed, final
    for r in roots:
        rewritten = {n for n in names if _mark(r / n) != marks[(r, n)]}
        assert rewritten == changed, (r, len(rewritten - changed), len(changed - rewritten))
        differ = tree_difference(tree(r), tree(source))
        assert differ == [], f"{r}: {len(differ)} files differ: {differ[:20]}"
    assert final.destinations is not None
    counts = [(d.files_done, d.files_skipped, d.files_failed) for d in final.destinations]
    expected = (len(changed), len(names) - len(changed), 0)
    assert counts == [expected for _ in roots], (counts, why)
    assert (final.files_done, final.files_skipped, final.files_failed) == expected, (final, why)
    assert await _retried(handle), "no batch was interrupted by the kill"


async def test_sync_rerun_to_two_roots_worker_sigkill_counts_up_to_date_as_skipped(
    temporal_server, data_dir: Path
) -> None:
    """The same with two destination roots (``copy_batch_to_many``): each root's
    counts, and the files', are those of a run without the crash (the pairs the
    killed attempt wrote past its checkpoint included: their roots' change times)."""
    source = data_dir / "src"
    roots = [data_dir / "d1", data_dir / "d2"]
    names, changed = _changed_tree(source, roots)
    copied_at = time.time()
    marks = {(r, n): _mark(r / n) for r in roots for n in names}
    worker = WorkerProcess(temporal_server.address, processes=1, log_dir=data_dir)
    worker.start()
    client = await StaccatoClient.connect(target_host=temporal_server.address, namespace="default")
    client.task_queue = worker.task_queue
    kw = {"kind": "copy_batch_to_many", "model": FanOutBatchCheckpoint}
    try:
        await _written_before(copied_at)
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
        worker.kill()
        # read after the kill, as in sync_rerun_with_kill
        checkpoint = await _checkpoint(client, handle, **kw) or checkpoint
        assert checkpoint.current
        batch = await _fanout_batch(client, handle, checkpoint.current)
        rewritten_at_kill = _settled(
            lambda: {(r, n) for (r, n), m in marks.items() if _mark(r / n) != m}
        )
        past_checkpoint = set(batch[checkpoint.next_index :])
        # per root, the changed files the killed attempt wrote there past its
        # checkpoint: the retry finds them changed since the batch began (ctime), so
        # copied (through 0.23 they counted as up to date there)
        unseen = {r: {n for (q, n) in rewritten_at_kill if q == r} & past_checkpoint for r in roots}
        assert all(u <= changed for u in unseen.values())
        assert len(past_checkpoint - changed) > 60, "too few unchanged files left to resume"

        worker.start()
        await _ends_as_without_a_crash(
            client,
            handle,
            source,
            roots,
            names,
            changed,
            marks,
            why={str(r): len(u) for r, u in unseen.items()},
        )
    finally:
        worker.stop()


#: files of the two-kills test: the dataset's first listing page (its first batch) is
#: ``FIRST_PAGE_ENTRIES`` long, the next page one batch of the rest, in which the
#: test kills its worker twice; its retried attempt's resume scan of ~4,200 files
#: (two roots: 0.45 ms a file in one process at load 8, ~2 ms in the worker at load
#: 10) runs long enough to be seen in a heartbeat (sent at most every 1.6 s with a
#: 2 s heartbeat timeout): seen at 1,230-1,462 files in each of 8 runs at load 9-12
RESUME_FILES = 5000


def _two_page_tree(source: Path, roots: list[Path]) -> tuple[list[str], set[str]]:
    """``RESUME_FILES`` files under ``source``, copied to each of ``roots`` (cp -a),
    then every 3rd of the ``PACED_FILES`` (200-499 bytes) that start the second
    listing page changed in place at the source; the others (20-29 bytes) are
    unchanged, up to date at both roots: a retried attempt's resume scan matches
    them all, to the batch's end. Returns the names in listing order and the changed
    ones."""
    names = sorted(
        (f"d{i % 10:02d}/f{i:05d}" for i in range(RESUME_FILES)), key=lambda n: n.encode()
    )
    paced = range(FIRST_PAGE_ENTRIES, FIRST_PAGE_ENTRIES + PACED_FILES)
    past = time.time() - 3600
    for k, name in enumerate(names):
        path = source / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(200 + (k * 7) % 300 if k in paced else 20 + k % 10))
        os.utime(path, (past, past))
    for root in roots:
        shutil.copytree(source, root)
    changed = {names[k] for k in paced[::3]}
    for name in changed:
        with open(source / name, "r+b") as f:
            f.seek(10)
            f.write(os.urandom(6))
    return names, changed


async def test_sync_rerun_to_two_roots_killed_during_resume_scan_counts_each_pair_once(
    temporal_server, data_dir: Path
) -> None:
    """A sync re-run to two roots, its worker SIGKILLed mid-batch, restarted, then
    SIGKILLed again while the retried attempt's heartbeat shows its resume scan well
    past its checkpoint's ``next_index`` (pairs found up to date, or written by the
    first attempt, there), or its pass under way after the scan (where no heartbeat
    fell in the scan), short of the matched files: the next attempt scans them again
    from the same ``next_index`` and each pair counts once, as a run without the
    crash counts it.
    Through 0.29 the scan counted its matches in the checkpoint at once, so they
    counted twice (seen at load as a flake of the test above: 374-390 skipped of 300
    files per root)."""
    source = data_dir / "src"
    roots = [data_dir / "d1", data_dir / "d2"]
    names, changed = _two_page_tree(source, roots)
    second_page = set(names[FIRST_PAGE_ENTRIES:])
    copied_at = time.time()
    marks = {(r, n): _mark(r / n) for r in roots for n in names}
    worker = WorkerProcess(temporal_server.address, processes=1, log_dir=data_dir)
    worker.start()
    client = await StaccatoClient.connect(target_host=temporal_server.address, namespace="default")
    client.task_queue = worker.task_queue
    kw = {"kind": "copy_batch_to_many", "model": FanOutBatchCheckpoint}
    try:
        await _written_before(copied_at)
        dataset = await _sync_rerun(client, source, [str(r) for r in roots], files=RESUME_FILES)
        handle = client.temporal.get_workflow_handle(dataset)
        # the first kill: the second page's batch under way (paced), most of it to go
        deadline, first = time.monotonic() + 120, None
        while time.monotonic() < deadline:
            checkpoint = await _checkpoint(client, handle, **kw)
            if checkpoint is not None and checkpoint.current in second_page:
                if checkpoint.skipped >= 10:
                    first = checkpoint
                    break
            await asyncio.sleep(0.05)
        assert first is not None and first.current, "no batch with skipped files under way"
        worker.kill()
        first = await _checkpoint(client, handle, **kw) or first
        batch = await _fanout_batch(client, handle, first.current)
        assert batch == names[FIRST_PAGE_ENTRIES:], (len(batch), batch[:2])
        assert first.next_index < PACED_FILES, first

        # the second kill: once the retried attempt's heartbeat shows its resume scan
        # well past the checkpoint (each file there matched at both roots: up to date,
        # or written by the first attempt), before its pass counted them. Where the
        # scan ends between two heartbeats (~4,000 files at ~0.4 ms each on an idle
        # machine, heartbeats 1.6 s apart), the first heartbeat of its pass (paced:
        # ~7 s to go in the changed files, the scan's matches past them not counted)
        worker.start()
        deadline, seen, scene = time.monotonic() + 120, None, ""
        while time.monotonic() < deadline:
            checkpoint = await _checkpoint(client, handle, **kw)
            if checkpoint is not None and checkpoint.current in batch:
                at = batch.index(checkpoint.current)
                if at >= checkpoint.next_index + 100:
                    seen, scene = checkpoint, f"scanning at {at}"
                elif checkpoint.next_index > first.next_index:
                    seen, scene = checkpoint, "its pass under way after the scan"
                if seen is not None:
                    break
            await asyncio.sleep(0.05)
        assert seen is not None, "no retried attempt was seen"
        worker.kill()
        assert seen.next_index < PACED_FILES, (seen.next_index, scene)
        scene += f", next_index {seen.next_index} (the first attempt's {first.next_index})"

        worker.start()
        await _ends_as_without_a_crash(
            client, handle, source, roots, names, changed, marks, why=scene
        )
    finally:
        worker.stop()
