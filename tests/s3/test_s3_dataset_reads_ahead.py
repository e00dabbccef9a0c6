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
