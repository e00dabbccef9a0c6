"""What the workflow tests' stand-in activities assume of the real ones, checked on
the real activities in Temporal's ``ActivityEnvironment`` (no server, no worker)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from staccato.activities import stat
from staccato.models import ObjectInfo


def test_stat_asks_for_a_second_read_of_a_file_modified_just_now(tmp_path: Path) -> None:
    """A file whose mtime is not older than its resolution may be rewritten in place
    without its size+mtime version changing: ``stat`` sets ``reread_before_publish``
    (the mtime is set a few seconds ahead here, as a writer with a fast clock would,
    so the check does not race the file system's 10 ms resolution); a file last
    modified an hour ago does not need it."""
    fresh = tmp_path / "fresh.bin"
    fresh.write_bytes(b"x" * 100)
    ahead = time.time() + 5
    os.utime(fresh, (ahead, ahead))
    old = tmp_path / "old.bin"
    old.write_bytes(b"y" * 100)
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))

    environment = ActivityEnvironment()
    fresh_info: ObjectInfo = environment.run(stat, f"file://{fresh}")
    old_info: ObjectInfo = environment.run(stat, f"file://{old}")

    assert fresh_info.size == 100 and fresh_info.reread_before_publish
    assert old_info.size == 100 and not old_info.reread_before_publish


def test_stat_of_a_missing_file_is_a_non_retryable_not_found(tmp_path: Path) -> None:
    """A missing source is an ``ApplicationError`` of type ``NotFound`` that Temporal
    does not retry (the workflow fails at once, see the permanent-error test)."""
    missing = tmp_path / "missing.bin"
    with pytest.raises(ApplicationError) as caught:
        ActivityEnvironment().run(stat, f"file://{missing}")
    assert caught.value.type == "NotFound" and caught.value.non_retryable
    assert str(missing) in caught.value.message
