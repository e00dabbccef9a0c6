"""A batch (``copy_batch``) cancelled between two of its heartbeats fails no file: it
used to report every file after the cancel as failed ("write session is gone": each
one's session was removed as soon as it was opened under the cancel). It stops at its
next heartbeat (every 0.5 s; here there is none, so it completes its files).

Run in Temporal's ``ActivityEnvironment`` (the real activity; its cancel delivered as
the worker's process pool delivers it: the cancelled event is set, nothing is raised
into the thread) so the cancel can land at a chosen point between heartbeats."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from temporalio import activity
from temporalio.exceptions import CancelledError
from temporalio.testing import ActivityEnvironment

from staccato.activities import dataset
from staccato.datasets.models import BatchFile, BatchInput, BatchResult
from staccato.models import TransferOptions

FILES = 200


@activity.defn(name="copy_batch_as_in_a_process_pool", no_thread_cancel_exception=True)
def copy_batch_as_in_a_process_pool(batch: BatchInput) -> object:
    """``copy_batch`` as the worker runs it in its process pool: a cancel only sets
    the activity's cancelled event (nothing is raised into the running thread)."""
    return dataset.copy_batch(batch)


def test_cancel_between_heartbeats_fails_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, destination = tmp_path / "src", tmp_path / "dst"
    source.mkdir()
    destination.mkdir()
    for i in range(FILES):
        (source / f"f{i:04d}").write_bytes(os.urandom(64 * 1024))
    past = time.time() - 3600
    for path in source.iterdir():
        os.utime(path, (past, past))
    # one heartbeat at the batch's start, none after: the cancel lands between two
    monkeypatch.setattr(dataset, "_HEARTBEAT_EVERY_S", 3600.0)
    environment = ActivityEnvironment()
    batch = BatchInput(
        source_root=f"file://{source}",
        destination_root=f"file://{destination}",
        files=[BatchFile(name=f"f{i:04d}", size=64 * 1024) for i in range(FILES)],
        options=TransferOptions(),
        key="batch-cancel-test",
    )

    def cancel_after_a_few_files() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if sum(1 for p in destination.iterdir() if ".staccato-" not in p.name) >= 5:
                break
            time.sleep(0.001)
        environment.cancel()

    canceller = threading.Thread(target=cancel_after_a_few_files)
    canceller.start()
    outcome: object
    try:
        outcome = environment.run(copy_batch_as_in_a_process_pool, batch)
    except CancelledError as err:
        outcome = err
    finally:
        canceller.join(timeout=70)
    published = [p.name for p in destination.iterdir() if ".staccato-" not in p.name]
    if not isinstance(outcome, CancelledError):  # no heartbeat came: every file copied
        assert outcome == BatchResult(done=FILES, bytes=FILES * 64 * 1024), outcome
        assert len(published) == FILES
    assert [p.name for p in destination.iterdir() if ".staccato-" in p.name] == []
    for name in published:
        assert (destination / name).read_bytes() == (source / name).read_bytes()
