"""What a dataset's status shows while a slow dataset runs and after it is cancelled
(a tester's findings): the file rate is files done over the time since the start
(8.0 files/s was shown for ~0.3 files/s: the elapsed time was the workflow's clock,
which stands still while a batch copies), bytes move while a batch copies (they stayed
"0 B" until the batch counted a file), and an ended dataset's count is final (a
cancelled 3-file tree showed "3+ files"). Real worker, Temporal and file systems; the
batch paced (``max_rate``) so each file takes seconds."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from staccato.cli.datasets import progress_text
from staccato.client import StaccatoClient
from staccato.dataset_client import cancel_dataset, dataset_status, submit_dataset
from staccato.datasets.models import DatasetState, DatasetStatus
from staccato.errors import StaccatoError
from staccato.models import TransferOptions, TransferState
from tests.dataset_checks import MiB, wait_dataset
from tests.helpers import run_cli, write_random

FILES = 3
SIZE = 300_000
#: bytes per second: each file takes ~3 s
RATE = 100_000
#: a large file's size (bytes)
BIG = 1280 * 1024


def _published(root: Path) -> dict[str, int]:
    """Relative name -> size of every file at ``root`` but temp and journal files."""
    return {
        str(p.relative_to(root)): p.stat().st_size
        for p in root.rglob("*")
        if p.is_file() and ".staccato" not in p.name
    }


async def test_slow_dataset_status_rate_bytes_and_final_count(
    client: StaccatoClient, temporal_server, data_dir: Path
) -> None:
    source, destination = data_dir / "src", data_dir / "dst"
    source.mkdir()
    for i in range(FILES):
        write_random(source / f"f{i}.bin", SIZE, seed=i)
    options = TransferOptions(chunk_size=1 * MiB, streams=1, max_rate=RATE)
    dataset = await submit_dataset(client, str(source), str(destination), options)
    seen: list[DatasetStatus] = []
    deadline = time.monotonic() + 120
    while True:
        status = await dataset_status(client, dataset)
        assert status.state in (DatasetState.running, DatasetState.scheduled), status
        seen.append(status)
        if status.files_done >= 1:
            break
        assert time.monotonic() < deadline, f"no file done in 120 s: {seen[-3:]}"
        await asyncio.sleep(0.1)
    # bytes moved before the first file was counted (the batch's heartbeat), said
    # apart from the bytes done (which never fall: a file read may still fail)
    moving = [s for s in seen if s.files_done == 0 and (s.bytes_moving or 0) > 0]
    assert moving, [(s.files_done, s.bytes_done, s.bytes_moving) for s in seen]
    assert all(s.bytes_done == 0 for s in seen if s.files_done == 0), seen
    assert "in flight" in progress_text(moving[-1]), progress_text(moving[-1])
    assert all(s.bytes_done <= s.bytes_total or not s.listing_done for s in seen), seen
    # the rate: a file takes >= SIZE / RATE = 3 s less the pacer's 0.2 s burst from the
    # batch's start (after the dataset's), so no more than 1 / 2.8 files/s can be true
    running = await dataset_status(client, dataset)
    assert running.state == DatasetState.running, running
    assert running.rate_files_per_s is not None, running
    assert 0 < running.rate_files_per_s <= 1 / 2.8, running
    assert running.rate_bytes_per_s is not None and running.rate_bytes_per_s <= RATE * 1.1
    # the listing is over: the count has no "+" while it runs
    assert running.listing_done and running.files_total == FILES, running
    assert f"/{FILES} files" in progress_text(running), progress_text(running)

    await cancel_dataset(client, dataset)
    final = await wait_dataset(client, dataset, timeout_s=120)
    assert final.state == DatasetState.cancelled, final
    published = _published(destination)
    assert final.files_done == len(published) >= 1, (final, published)
    assert final.bytes_done == sum(published.values()), (final, published)
    assert final.files_total == FILES and final.listing_done, final
    # ended: nothing moves, so no rate and no ETA (they fell and grew after the cancel)
    assert final.rate_files_per_s is None and final.eta_s is None, final
    text = progress_text(final)
    assert "files/s" not in text and "eta" not in text, text
    assert f"/{FILES} files" in text and "+" not in text, text
    # as `status` shows it
    args = {"address": temporal_server.address, "task_queue": client.task_queue}
    shown = run_cli("status", dataset, **args)
    assert shown.returncode == 0, shown.stderr
    assert f"/{FILES} files" in shown.stdout and f"{FILES}+" not in shown.stdout, shown.stdout
    data = json.loads(run_cli("status", "--json", dataset, **args).stdout)
    assert data["listing_done"] is True and data["files_total"] == FILES, data


async def test_large_files_transfer_bytes_and_pause_show_in_the_dataset_status(
    client: StaccatoClient, temporal_server, data_dir: Path
) -> None:
    """A large file goes as a child transfer: its bytes count while it copies (a
    dataset of a few large files showed 0 B until the first ended), and a pause of it
    shows (the dataset said ``running`` and waited with no word while it was paused)."""
    source, destination = data_dir / "src", data_dir / "dst"
    source.mkdir()
    # above small_file_max (1 MiB): a child transfer, paced: ~6.5 s
    write_random(source / "big.bin", BIG, seed=7)
    options = TransferOptions(chunk_size=256 * 1024, streams=1, max_rate=200_000)
    dataset = await submit_dataset(
        client, str(source), str(destination), options, small_file_max=1 * MiB
    )
    seen: list[DatasetStatus] = []
    deadline = time.monotonic() + 120
    while not seen or not seen[-1].bytes_moving:
        assert time.monotonic() < deadline, f"no bytes moving in 120 s: {seen[-3:]}"
        await asyncio.sleep(0.1)
        seen.append(await dataset_status(client, dataset))
        # scheduled until the run's first task: a poll at load can come before it
        assert seen[-1].state in (DatasetState.scheduled, DatasetState.running), seen[-1]
    # moving, not done: the file may still fail
    assert seen[-1].files_done == 0 and seen[-1].bytes_done == 0, seen[-1]
    assert 0 < (seen[-1].bytes_moving or 0) < BIG, seen[-1]

    child = (await client.status(str(destination / "big.bin"))).id
    await client.pause(child)
    deadline = time.monotonic() + 120
    while (paused := await dataset_status(client, dataset)).paused_transfers is None:
        assert time.monotonic() < deadline, f"no paused transfer shown in 120 s: {paused}"
        await asyncio.sleep(0.1)
    assert paused.paused_transfers == [child], paused
    assert f"waits for paused transfer {child} (staccato resume {child})" in progress_text(paused)
    args = {"address": temporal_server.address, "task_queue": client.task_queue}
    shown = json.loads(run_cli("status", "--json", dataset, **args).stdout)
    assert shown["paused_transfers"] == [child], shown

    await client.resume(child)
    final = await wait_dataset(client, dataset, timeout_s=120)
    assert final.state == DatasetState.completed, final
    assert final.paused_transfers is None and final.bytes_done == BIG, final
    assert (destination / "big.bin").read_bytes() == (source / "big.bin").read_bytes()


async def test_a_large_files_group_to_two_roots_shows_in_the_dataset_status(
    client: StaccatoClient, temporal_server, data_dir: Path
) -> None:
    """With two roots a large file goes as a fan-out group: its staging read and copies
    count in the dataset's bytes (they stayed at the small files' bytes), a paused
    root's transfer shows, and a cancel of the dataset fails no file (it listed the
    group's copies as failed: "Cancelled")."""
    source, roots = data_dir / "src", [data_dir / "dst-a", data_dir / "dst-b"]
    source.mkdir()
    write_random(source / "big.bin", 2 * BIG, seed=8)
    options = TransferOptions(chunk_size=256 * 1024, streams=1, max_rate=200_000)
    dataset = await submit_dataset(
        client, str(source), [str(r) for r in roots], options, small_file_max=1 * MiB
    )
    deadline = time.monotonic() + 120
    while not (shown := await dataset_status(client, dataset)).bytes_moving:
        # scheduled until the run's first task: a poll at load can come before it
        assert shown.state in (DatasetState.scheduled, DatasetState.running), shown
        assert time.monotonic() < deadline, f"no bytes moving in 120 s: {shown}"
        await asyncio.sleep(0.1)
    assert shown.files_done == 0 and shown.bytes_done == 0, shown
    assert 0 < (shown.bytes_moving or 0) < 2 * BIG, shown

    # once the group copies to the roots, pause the first root's transfer
    deadline = time.monotonic() + 120
    while True:
        assert time.monotonic() < deadline, "the first root's copy never ran"
        try:
            child = await client.status(str(roots[0] / "big.bin"))
        except StaccatoError:
            child = None
        if child is not None and child.state == TransferState.running:
            try:
                await client.pause(child.id)
                break
            except StaccatoError as err:  # not copying yet: starting
                assert "has no copy of its own" in str(err), err
        await asyncio.sleep(0.2)
    deadline = time.monotonic() + 120
    while (paused := await dataset_status(client, dataset)).paused_transfers is None:
        assert time.monotonic() < deadline, f"no paused transfer shown in 120 s: {paused}"
        await asyncio.sleep(0.1)
    assert paused.paused_transfers == [child.id] and paused.eta_s is None, paused

    await cancel_dataset(client, dataset)
    final = await wait_dataset(client, dataset, timeout_s=120)
    assert final.state == DatasetState.cancelled, final
    assert final.files_failed == 0 and final.failures == [], final
    assert not (roots[0] / "big.bin").exists()  # paused, then cancelled
    # the other root's copy went on: cancelled too, or completed before the cancel
    if (roots[1] / "big.bin").exists():
        assert (roots[1] / "big.bin").read_bytes() == (source / "big.bin").read_bytes()
    assert [p for r in roots for p in r.rglob("*") if ".staccato-" in p.name] == []


async def test_a_large_file_ended_after_the_progress_query_counts_its_bytes(
    client: StaccatoClient, temporal_server, data_dir: Path
) -> None:
    """A dataset's status reads its progress (query), then its description for what is
    in flight: a large file's transfer still pending in that description had not been
    counted by the query, even when it has completed by the time its own status is
    read (Temporal records a child's end in the parent's history before the parent
    counts it; after a Temporal restart that lag lasted long enough for a tester's
    `status --json` to fall from 232.7 to 146.7 MB while files done rose). Here the
    description is one read while the file still copied, and the file's transfer has
    completed since: its bytes count (they counted 0)."""
    from staccato.dataset_client import _children_progress

    source, destination = data_dir / "src", data_dir / "dst"
    source.mkdir()
    write_random(source / "big.bin", BIG, seed=8)
    options = TransferOptions(chunk_size=256 * 1024, streams=1, max_rate=400_000)
    dataset = await submit_dataset(
        client, str(source), str(destination), options, small_file_max=1 * MiB
    )
    handle = client.temporal.get_workflow_handle(dataset)
    deadline = time.monotonic() + 120
    while True:  # the description while the large file's transfer is in flight
        in_flight = await handle.describe()
        if in_flight.raw_description.pending_children:
            break
        assert time.monotonic() < deadline, "no large file in flight in 120 s"
        await asyncio.sleep(0.1)
    final = await wait_dataset(client, dataset, timeout_s=120)
    assert final.state == DatasetState.completed and final.bytes_done == BIG, final
    (child,) = await _children_progress(client, in_flight)
    assert child.bytes == BIG, child
