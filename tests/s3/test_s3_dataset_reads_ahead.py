"""A batch of small files from S3 to a local file system (``copy_batch``) reads ahead:
the GETs of the next :data:`staccato.activities.dataset.READ_AHEAD` files are in
flight, each on a connection of its own, while the batch's one thread writes the
current file (no file threads: they only contended for the GIL). Every file still
goes to its temp name (from its CRC32C-checked bytes in memory, not read back), is
made durable and published by the group commit;
a file whose object is gone fails alone, with the store's reason.

Run in Temporal's ``ActivityEnvironment`` (the real activity, in this process), so
the S3 driver's connection pool can be looked at after the batch."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import ActivityEnvironment

from staccato.activities import dataset
from staccato.datasets.models import BatchFile, BatchInput, BatchResult
from staccato.endpoints import get_driver
from staccato.endpoints.s3.driver import S3Driver
from staccato.models import TransferOptions
from staccato.urls import parse_url
from tests.s3.conftest import MeteredSeaweedS3, settled
from tests.servers.holding_proxy import HoldingProxy

FILES = 40
SIZE = 64 * 1024


def test_a_batch_from_s3_reads_ahead_in_its_own_thread(
    s3_env: MeteredSeaweedS3,
    s3: Any,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bodies = {f"d{i % 3}/f{i:03d}": os.urandom(SIZE) for i in range(FILES)}
    for name, body in bodies.items():
        s3.put_object(Bucket=bucket, Key=f"run/{name}", Body=body)
    gone = "d1/f010"
    s3.delete_object(Bucket=bucket, Key=f"run/{gone}")  # listed, then removed
    destination = tmp_path / "dst"
    driver = get_driver("s3")
    assert isinstance(driver, S3Driver)
    root = parse_url(f"s3://{bucket}/run/")
    lean = driver._lean_for(root, driver.endpoint(root))
    assert lean is not None
    lean._idle.clear()
    gets_before = s3_env.request_count(bucket, "GET")

    # the threads alive at each heartbeat (one per loop of the batch)
    monkeypatch.setattr(dataset, "_HEARTBEAT_EVERY_S", 0.0)
    threads: set[str] = set()
    environment = ActivityEnvironment()
    environment.on_heartbeat = lambda *_: threads.update(t.name for t in threading.enumerate())
    batch = BatchInput(
        source_root=f"s3://{bucket}/run",
        destination_root=f"file://{destination}",
        files=[BatchFile(name=name, size=SIZE) for name in sorted(bodies)],
        options=TransferOptions(),
        key="reads-ahead-test",
    )
    result = environment.run(dataset.copy_batch, batch)

    assert isinstance(result, BatchResult)
    assert (result.done, result.skipped) == (FILES - 1, 0)
    assert [f.name for f in result.failures] == [gone]
    assert "no such key" in result.failures[0].reason
    for name, body in bodies.items():
        path = destination / name
        assert path.exists() == (name != gone)
        if name != gone:
            assert path.read_bytes() == body
    leftovers = [p.name for p in destination.rglob("*") if p.is_file() and p.name.startswith(".")]
    assert leftovers == []
    assert not [name for name in threads if name.startswith("batch-file")], threads
    # READ_AHEAD requests were in flight at once, each on its own connection, all
    # read to their end and kept alive (threads held one each: FILES_IN_FLIGHT)
    assert len(lean._idle) > dataset.FILES_IN_FLIGHT
    assert len(lean._idle) >= dataset.READ_AHEAD
    # each object asked for once (the gone one: the lean GET, then boto3's)
    gets = settled(lambda: s3_env.request_count(bucket, "GET", code=None), 0)
    assert gets - gets_before == FILES + 1


def test_a_batch_waiting_for_a_held_answer_heartbeats(
    s3_env: MeteredSeaweedS3,
    s3: Any,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The batch's one thread waits for an answer sent ahead (a slow store): it keeps
    heartbeating meanwhile, so the attempt is not timed out and retried (a 20 s stall
    of a dataset was a batch's first attempt timed out at its heartbeat timeout). The
    store's answers pass a proxy that holds them once a few files went through, until
    the test has seen the batch heartbeat while one is held."""
    files = 12
    bodies = {f"f{i:02d}": os.urandom(SIZE) for i in range(files)}
    for name, body in bodies.items():
        s3.put_object(Bucket=bucket, Key=f"held/{name}", Body=body)
    heartbeats: list[float] = []
    environment = ActivityEnvironment()
    environment.on_heartbeat = lambda *_: heartbeats.append(time.monotonic())
    destination = tmp_path / "dst"
    batch = BatchInput(
        source_root=f"s3://{bucket}/held",
        destination_root=f"file://{destination}",
        files=[BatchFile(name=name, size=SIZE) for name in sorted(bodies)],
        options=TransferOptions(),
        key="held-answer-test",
    )
    with (
        HoldingProxy(s3_env.s3_port, hold_after=4 * SIZE) as proxy,
        ThreadPoolExecutor(1) as runner,
    ):
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{proxy.port}")
        running = runner.submit(environment.run, dataset.copy_batch, batch)
        try:
            proxy.wait_held(60)
            held_at = time.monotonic()
            # bounded by beats, not by time: the old code sent none while it waited
            deadline = held_at + 20
            while time.monotonic() < deadline and not running.done():
                if len([t for t in heartbeats if t > held_at]) >= 4:
                    break
                time.sleep(0.05)
            during = [t for t in heartbeats if t > held_at]
            assert proxy.held_ports(), "the answer was not held while the test looked"
            assert len(during) >= 4, f"{len(during)} heartbeats while an answer was held"
        finally:
            proxy.release()
        result = running.result(timeout=120)
    assert isinstance(result, BatchResult)
    assert (result.done, result.skipped, result.failures) == (files, 0, [])
    for name, body in bodies.items():
        assert (destination / name).read_bytes() == body
    assert not [p for p in destination.rglob(".*") if p.is_file()]
