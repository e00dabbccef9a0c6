"""A dataset root nothing can be written under is refused up front, in the words of a
single transfer there: a root on /proc (mkdir fails ENOENT, which no ``mkdir -p``
fixes) fails the dataset before any file is tried (state failed, no file listed as
failed, no advice to retry), and with several roots fails that root's files alone,
with its reason and no ``--retry-failed`` advice (which can never help there), while
the other roots are written. Before, the source was listed and every file failed
"destination directory /proc/xx: no such file or directory", ending
``completed_with_errors`` with the advice to copy the failed files again."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

from staccato.dataset_requests import fan_out_dataset_id
from tests.helpers import WorkerProcess, run_cli

#: what every message about a file system with no capacity says (errors.no_capacity_message)
NO_CAPACITY = (
    "has no capacity (a virtual file system such as /proc or /sys): it cannot hold files; "
    "choose a destination on a disk"
)


def _source(data_dir: Path) -> Path:
    source = data_dir / "src"
    for i in range(6):
        (source / f"d{i % 2}").mkdir(parents=True, exist_ok=True)
        (source / f"d{i % 2}" / f"f{i}").write_bytes(b"z" * (i + 1))
    return source


def test_a_dataset_root_on_proc_fails_up_front_as_a_single_file_there(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    source = _source(data_dir)
    root = f"/proc/staccato-test-{uuid.uuid4().hex[:8]}"
    single = run_cli("cp", "-q", str(source / "d0" / "f0"), f"{root}-file", **args)
    assert single.returncode == 1, single
    assert f"destination {root}-file: the file system mounted at /proc {NO_CAPACITY}" in (
        single.stderr
    ), single.stderr
    done = run_cli("cp", "-r", "-q", str(source), root, **args)
    assert done.returncode == 1, done
    assert f"destination directory {root}: the file system mounted at /proc {NO_CAPACITY}" in (
        done.stderr
    ), done.stderr
    assert "--retry-failed" not in done.stderr and "Traceback" not in done.stderr
    shown = json.loads(run_cli("status", "--json", root, **args).stdout)
    assert shown["state"] == "failed", shown
    assert NO_CAPACITY in shown["error"], shown
    assert shown["files_failed"] == 0 and shown["failures"] == [], shown


def test_a_root_on_proc_among_several_fails_alone_without_retry_advice(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    source = _source(data_dir)
    good = data_dir / "good"
    bad = f"/proc/staccato-test-{uuid.uuid4().hex[:8]}"
    done = run_cli("cp", "-r", "-q", str(source), str(good), bad, **args)
    assert done.returncode == 1, done
    assert "--retry-failed" not in done.stderr, done.stderr
    assert sorted(p.name for p in good.rglob("f*")) == [f"f{i}" for i in range(6)]
    dataset = fan_out_dataset_id(f"file://{source}", [f"file://{good}", f"file://{bad}"])
    shown = json.loads(run_cli("status", "--json", dataset, **args).stdout)
    assert shown["state"] == "completed_with_errors", shown
    assert len(shown["failures"]) == 6, shown
    for failure in shown["failures"]:
        assert failure["destination"] == f"file://{bad}", failure
        assert (
            f"destination directory {bad}: the file system mounted at /proc {NO_CAPACITY}"
            in failure["reason"]
        ), failure


def test_a_root_under_a_file_among_several_fails_alone_naming_the_file(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """The rule of one root (``cp -r src afile/sub`` fails naming the file) for one
    root of several: its files fail with that reason, the other root is written."""
    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    source = _source(data_dir)
    good, blocker = data_dir / "good", data_dir / "a-file"
    blocker.write_bytes(b"not a directory")
    done = run_cli("cp", "-r", "-q", str(source), str(good), str(blocker / "sub"), **args)
    assert done.returncode == 1, done
    assert sorted(p.name for p in good.rglob("f*")) == [f"f{i}" for i in range(6)]
    dataset = fan_out_dataset_id(f"file://{source}", [f"file://{good}", f"file://{blocker}/sub"])
    shown = json.loads(run_cli("status", "--json", dataset, **args).stdout)
    assert len(shown["failures"]) == 6, shown
    for failure in shown["failures"]:
        assert f"{blocker} is a file, not a directory" in failure["reason"], failure
    assert blocker.read_bytes() == b"not a directory"


def test_a_root_that_exists_but_cannot_be_written_fails_up_front(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """``chattr +i dst`` (or no write permission): the dataset fails once, before any
    file, naming the root (tester72: it ended completed_with_errors with one "is not
    writable" line per file)."""
    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    source = _source(data_dir)
    root = data_dir / "dstp"
    root.mkdir()
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(root)], check=True)
    else:
        root.chmod(0o555)
    try:
        done = run_cli("cp", "-r", "-q", str(source), str(root), **args)
        assert done.returncode == 1, done
        assert f"destination directory {root} is not writable" in done.stderr, done.stderr
        assert "--retry-failed" not in done.stderr and "Traceback" not in done.stderr
        shown = json.loads(run_cli("status", "--json", str(root), **args).stdout)
        assert shown["state"] == "failed", shown
        assert shown["files_failed"] == 0 and shown["failures"] == [], shown
        assert list(root.iterdir()) == []
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(root)], check=True)
        else:
            root.chmod(0o755)
