"""Resume of a large file->file transfer on a slow disk: the worker is SIGKILLed at
~90 %, the page cache dropped, and the new worker's disk reads throttled to 200 MB/s
(a cgroup v1 blkio limit). Each resumed stream checks what is durable before its
copy goes on; that check must neither outlast the heartbeat timeout nor grow with
the object, so the first retry of every stream succeeds."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType

from staccato.client import StaccatoClient
from staccato.models import TransferOptions, TransferState
from tests.helpers import (
    MiB,
    WorkerProcess,
    child_pids,
    pid_alive,
    sha256_file,
    wait_for_status,
    write_random,
)
from tests.servers.temporal_server import TemporalDevServer

GiB = 1024 * MiB
SIZE = 6 * GiB
OPTIONS = TransferOptions(chunk_size=16 * MiB, streams=4, heartbeat_timeout_s=20)
READ_BPS = 200 * 1000 * 1000  # the resumed worker's disk read rate, bytes/s
BLKIO = Path("/sys/fs/cgroup/blkio")

# 12 GiB of disk and ~2 minutes: run by hand (the suite keeps the fast resume tests in
# tests/test_file_session.py): STACCATO_LARGE_TESTS=1 pytest tests/test_file_resume_large.py
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        os.environ.get("STACCATO_LARGE_TESTS") != "1",
        reason="large-object test: set STACCATO_LARGE_TESTS=1 to run it",
    ),
]


def _device_of(path: Path) -> str:
    """``major:minor`` of the whole disk holding ``path`` (for blkio limits)."""
    dev = os.stat(path).st_dev
    sysfs = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    if (sysfs / "partition").exists():
        return (sysfs.resolve().parent / "dev").read_text().strip()
    return f"{os.major(dev)}:{os.minor(dev)}"


@pytest.fixture
def slow_disk_cgroup(tmp_path: Path) -> Iterator[Path]:
    """A blkio cgroup reading ``tmp_path``'s disk at ``READ_BPS``; skips if not possible."""
    if os.geteuid() != 0 or not (BLKIO / "cgroup.procs").exists():
        pytest.skip("needs root and a cgroup v1 blkio hierarchy to throttle disk reads")
    group = BLKIO / f"staccato-test-{os.getpid()}"
    try:
        group.mkdir()
        (group / "blkio.throttle.read_bps_device").write_text(f"{_device_of(tmp_path)} {READ_BPS}")
    except OSError as err:
        pytest.skip(f"cannot throttle disk reads with a blkio cgroup here: {err}")
    try:
        yield group
    finally:
        for _ in range(50):
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)  # its processes are still exiting


def _drop_page_cache() -> None:
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as err:
        pytest.skip(f"cannot drop the page cache here: {err}")


def _tree(pid: int) -> list[int]:
    pids = [pid]
    for child in child_pids(pid):
        pids += _tree(child)
    return pids


async def _copy_stream_attempts(client: StaccatoClient, transfer: str) -> dict[str, int]:
    """Highest attempt each copy_stream activity was started with (activity id -> attempt)."""
    scheduled: dict[int, str] = {}
    attempts: dict[str, int] = {}
    async for event in client.temporal.get_workflow_handle(transfer).fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attributes = event.activity_task_scheduled_event_attributes
            if attributes.activity_type.name == "copy_stream":
                scheduled[event.event_id] = attributes.activity_id
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            attributes = event.activity_task_started_event_attributes
            activity_id = scheduled.get(attributes.scheduled_event_id)
            if activity_id is not None:
                attempts[activity_id] = max(attempts.get(activity_id, 0), attributes.attempt)
    return attempts


async def test_resume_of_a_large_file_on_a_slow_disk_succeeds_on_the_first_retry(
    temporal_server: TemporalDevServer, tmp_path: Path, slow_disk_cgroup: Path
) -> None:
    free = shutil.disk_usage(tmp_path).free
    if free < 2 * SIZE + 4 * GiB:
        pytest.skip(f"needs {2 * SIZE + 4 * GiB} bytes free in {tmp_path}, has {free}")
    source = tmp_path / "big.bin"
    destination = tmp_path / "out" / "big.bin"
    destination.parent.mkdir()
    try:
        digest = write_random(source, SIZE, seed=3)
        first = WorkerProcess(temporal_server.address, log_dir=tmp_path).start()
        client = await StaccatoClient.connect(
            target_host=temporal_server.address, namespace="default"
        )
        client.task_queue = first.task_queue
        transfer = await client.submit(str(source), str(destination), OPTIONS)
        status = await wait_for_status(
            client,
            transfer,
            # scheduled until its streams start (then running)
            lambda s: (
                s.state not in (TransferState.scheduled, TransferState.running)
                or s.bytes_done >= SIZE * 0.9
            ),
            timeout_s=300,
            interval_s=0.05,
        )
        assert status.state == TransferState.running, status
        pool = child_pids(first.process.pid)
        first.kill()
        print(f"worker killed at {status.bytes_done / SIZE:.0%}")
        deadline = time.monotonic() + 10
        while any(pid_alive(p) for p in pool) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        _drop_page_cache()

        second = WorkerProcess(
            temporal_server.address, task_queue=first.task_queue, log_dir=tmp_path
        ).start()
        try:
            for pid in _tree(second.process.pid):  # the pool was spawned before "polling"
                (slow_disk_cgroup / "cgroup.procs").write_text(str(pid))
            started = time.monotonic()
            waiting = asyncio.create_task(client.wait(transfer))
            # the first retry of each stream must succeed: fail as soon as a third starts
            while not waiting.done():
                attempts = await _copy_stream_attempts(client, transfer)
                if max(attempts.values(), default=0) > 2:
                    waiting.cancel()
                    pytest.fail(f"streams were retried more than once: {attempts}")
                assert time.monotonic() - started < 600, "not done in 600 s"
                await asyncio.wait({waiting}, timeout=1.0)
            result = waiting.result()
            took = time.monotonic() - started
        finally:
            second.stop()
        attempts = await _copy_stream_attempts(client, transfer)
        print(
            f"resumed on a {READ_BPS / 1e6:.0f} MB/s disk: done {took:.1f} s later; attempts {attempts}"
        )
        assert result.bytes == SIZE
        assert attempts and max(attempts.values()) <= 2, attempts
        assert sha256_file(destination) == digest
    finally:
        source.unlink(missing_ok=True)
        shutil.rmtree(destination.parent, ignore_errors=True)
