"""A dataset's status while some of its files fail (tester T4/T18): the bytes read of
a file that then fails left ``bytes_done`` (it fell between two polls), and a rate
was shown while no byte moved. Real worker, Temporal and file systems; the batch is
paced (``max_rate``) so each file takes seconds."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from staccato.cli.datasets import progress_text
from staccato.client import StaccatoClient
from staccato.dataset_client import dataset_status, submit_dataset
from staccato.datasets.models import DatasetState, DatasetStatus
from staccato.models import TransferOptions
from tests.dataset_checks import MiB, wait_dataset
from tests.helpers import mounted_tmpfs, write_random

FILES = 4
SIZE = 300_000
#: bytes per second: each file takes ~3 s
RATE = 100_000


async def test_bytes_done_never_falls_when_a_file_read_in_part_fails(
    client: StaccatoClient, temporal_server, data_dir: Path
) -> None:
    source, destination = data_dir / "src", data_dir / "dst"
    source.mkdir()
    for i in range(FILES):
        write_random(source / f"f{i}.bin", SIZE, seed=i)
        past = time.time() - 3600
        os.utime(source / f"f{i}.bin", (past, past))
    options = TransferOptions(chunk_size=1 * MiB, streams=1, max_rate=RATE)
    dataset = await submit_dataset(client, str(source), str(destination), options, max_batches=1)
    seen: list[DatasetStatus] = []
    changed = False
    deadline = time.monotonic() + 120
    while True:
        status = await dataset_status(client, dataset)
        seen.append(status)
        if status.state not in (DatasetState.running, DatasetState.scheduled):
            break
        if not changed and status.current and "f1.bin" in status.current:
            # the second file is read: change its source under the copy (it fails)
            await asyncio.sleep(1.0)
            write_random(source / "f1.bin", SIZE, seed=99)
            changed = True
        assert time.monotonic() < deadline, f"not ended in 120 s: {seen[-3:]}"
        await asyncio.sleep(0.1)
    final = await wait_dataset(client, dataset, timeout_s=120)
    assert final.state == DatasetState.completed_with_errors, final
    assert [f.name for f in final.failures] == ["f1.bin"], final
    assert final.files_done == FILES - 1 and final.bytes_done == (FILES - 1) * SIZE, final
    # what is done never fell, through the failed file (it fell by the bytes read of
    # f1.bin: 820712 then 640298)
    done = [s.bytes_done for s in [*seen, final]]
    assert all(a <= b for a, b in zip(done, done[1:], strict=False)), done
    files = [s.files_done for s in [*seen, final]]
    assert all(a <= b for a, b in zip(files, files[1:], strict=False)), files
    # bytes moved while files were read: said apart, not as done
    running = [s for s in seen if s.state == DatasetState.running]
    assert any(s.files_done == 0 and (s.bytes_moving or 0) > 0 for s in running), running
    assert all(s.bytes_done + (s.bytes_moving or 0) <= FILES * SIZE for s in running), running


async def test_no_rate_while_a_full_disk_stalls_the_dataset(
    client: StaccatoClient, data_dir: Path
) -> None:
    """A batch on a full local disk (a 6 MiB tmpfs, needs root) is retried, then gives
    up at ``--retry-for``: nothing moves meanwhile, and a rate must not say otherwise."""
    source = data_dir / "src"
    source.mkdir()
    for i in range(12):
        write_random(source / f"f{i:02d}.bin", 1 * MiB, seed=i)
    with mounted_tmpfs(data_dir / "small", "6m") as small:
        destination = small / "dst"
        options = TransferOptions(chunk_size=1 * MiB, retry_for_s=12, heartbeat_timeout_s=5)
        dataset = await submit_dataset(
            client, str(source), str(destination), options, batch_files=64, max_batches=1
        )
        seen: list[DatasetStatus] = []
        deadline = time.monotonic() + 120
        while True:
            status = await dataset_status(client, dataset)
            seen.append(status)
            if status.state not in (DatasetState.running, DatasetState.scheduled):
                break
            assert time.monotonic() < deadline, f"not ended in 120 s: {seen[-3:]}"
            await asyncio.sleep(0.2)
        final = await wait_dataset(client, dataset, timeout_s=120)
    assert final.state == DatasetState.completed_with_errors, final
    assert final.files_failed > 0 and final.files_done > 0, final
    running = [s for s in seen if s.state == DatasetState.running]
    # the disk filled: from the first status that says a step retries on, no byte
    # moved again (the batch retried, then gave up and its files failed), so no
    # status had a rate nor an ETA (they stayed, falling, "11.0 files/s" to "0.48",
    # and came back once the files had failed)
    # (the first retry for the full disk: at load a heartbeat may time out before it, a
    # retry while bytes still moved)
    stalled = next(i for i, s in enumerate(running) if "space" in (s.last_retry_error or ""))
    after = running[stalled:]
    assert all(s.bytes_done == after[0].bytes_done for s in after), after
    assert [
        (s.rate_files_per_s, s.rate_bytes_per_s, s.eta_s)
        for s in after
        if s.rate_files_per_s is not None or s.rate_bytes_per_s is not None or s.eta_s
    ] == [], after
    assert [progress_text(s) for s in after if "files/s" in progress_text(s)] == [], after
