"""``status`` of a ``--retry-failed`` run against the session's real worker and
Temporal: besides the retry's own counts (the files it retried), the run it retried
(``retry_of``) and the whole dataset (``whole_dataset``): how many files in all, how
many copied before, how many the retry fixed, how many still failed. Before, status
said only "2 files, 1 done" of a 3-file dataset after its retry (issue 11)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from staccato.dataset_requests import dataset_id
from tests.helpers import WorkerProcess, run_cli


def test_status_of_a_retry_gives_the_earlier_run_and_the_whole_dataset(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """``ok`` copies, the broken links ``a`` and ``b`` fail; ``a`` is mended and a
    retry fixes it (``b`` fails again); ``b`` is mended and a retry of the retry fixes
    it. Each retry's status names the run it retried and counts the whole dataset."""
    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    source, destination = data_dir / "src", data_dir / "dst"
    source.mkdir()
    (source / "ok").write_bytes(b"ok")
    os.symlink(source / "nowhere", source / "a")
    os.symlink(source / "nowhere", source / "b")
    first = run_cli("cp", "-r", "-q", str(source), str(destination), **args)
    assert first.returncode == 1, first.stderr
    shown = json.loads(run_cli("status", "--json", str(destination), **args).stdout)
    assert "retry_of" not in shown and "whole_dataset" not in shown, shown  # not a retry
    target = data_dir / "target"
    target.write_bytes(b"target")
    (source / "a").unlink()
    os.symlink(target, source / "a")

    retry = run_cli("cp", "-r", "-q", "--retry-failed", str(source), str(destination), **args)
    assert retry.returncode == 1, retry.stderr
    assert (destination / "a").read_bytes() == b"target"
    assert not (destination / "b").exists()
    shown = json.loads(run_cli("status", "--json", str(destination), **args).stdout)
    # the retry's own counts stay as they were (the JSON contract): what it retried
    assert (shown["files_total"], shown["files_done"], shown["files_failed"]) == (2, 1, 1), shown
    earlier = shown["retry_of"]
    assert earlier["state"] == "completed_with_errors" and earlier["run_id"], earlier
    assert earlier["ended_at"], earlier
    counts = ("files_total", "files_done", "files_skipped", "files_failed")
    assert [earlier[k] for k in counts] == [3, 1, 0, 2], earlier
    assert [shown["whole_dataset"][k] for k in counts] == [3, 2, 0, 1], shown
    text = run_cli("status", dataset_id(str(destination)), **args).stdout
    lines = {line[:18].strip(): line[18:].strip() for line in text.splitlines()}
    assert lines["retry of"] == (
        f"run {earlier['run_id']} (completed_with_errors, ended {earlier['ended_at']}): "
        "3 files, 1 copied, 0 up to date, 2 failed"
    ), text
    assert lines["whole dataset"] == (
        "3 files: 2 copied, 0 up to date, 1 failed (this retry fixed 1 of 2)"
    ), text

    (source / "b").unlink()
    os.symlink(target, source / "b")
    again = run_cli("cp", "-r", "--retry-failed", str(source), str(destination), **args)
    assert again.returncode == 0, again.stderr
    # its end says the dataset as a whole too, after the retry's own line
    said = again.stderr.splitlines()
    assert "completed: 1 file copied" in said[-2], said
    assert said[-1] == (
        "whole dataset: 3 files: 3 copied, 0 up to date, 0 failed (this retry fixed 1 of 1)"
    ), said
    assert (destination / "b").read_bytes() == b"target"
    shown = json.loads(run_cli("status", "--json", str(destination), **args).stdout)
    assert (shown["files_total"], shown["files_done"], shown["files_failed"]) == (1, 1, 0), shown
    # a retry of a retry: the run it retried counted as the whole dataset then
    assert shown["retry_of"]["run_id"] not in (None, earlier["run_id"]), shown
    assert [shown["retry_of"][k] for k in counts] == [3, 2, 0, 1], shown
    assert [shown["whole_dataset"][k] for k in counts] == [3, 3, 0, 0], shown
