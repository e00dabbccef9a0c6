"""``--retry-failed`` with ``--include``/``--exclude`` against the session's real worker
and Temporal: the failures a filtered retry leaves out stay failed (listed with their
old reason, counted), so the retry ends ``completed_with_errors`` and a later plain
retry copies them; and the advice at the end of a dataset that failed more files than
it kept (``MAX_FAILURES_KEPT``) is the one that works (``--sync-level size``)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from staccato.dataset_requests import dataset_id
from staccato.datasets.models import LEFT_OUT_NOTE, MAX_FAILURES_KEPT
from tests.helpers import WorkerProcess, run_cli


def _broken_source(source: Path) -> None:
    """``ok`` and two broken links ``a`` and ``b`` (each fails when listed)."""
    source.mkdir()
    (source / "ok").write_bytes(b"ok")
    os.symlink(source / "nowhere", source / "a")
    os.symlink(source / "nowhere", source / "b")


def _mend(source: Path, target: Path) -> None:
    """Point ``a`` and ``b`` at the file ``target``: both can be copied now."""
    target.write_bytes(b"target")
    for name in ("a", "b"):
        (source / name).unlink()
        os.symlink(target, source / name)


@pytest.mark.parametrize("filters", [["--include", "a"], ["--exclude", "b"]], ids=lambda f: f[0])
def test_a_filtered_retry_keeps_the_failures_it_leaves_out(
    worker: WorkerProcess, temporal_server, data_dir: Path, filters: list[str]
) -> None:
    """The tester's repro: after ``a`` and ``b`` failed, a retry with ``--include a``
    (or ``--exclude b``) copied ``a`` and forgot ``b``: it ended ``completed`` (exit 0,
    files_total 1) and a later ``--retry-failed`` was refused ("is completed") while
    ``b`` was missing. Now ``b`` stays failed with its old reason (marked not retried),
    the retry ends completed_with_errors (exit 1), and a plain retry copies it."""
    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    source, destination = data_dir / "src", data_dir / "dst"
    _broken_source(source)
    first = run_cli("cp", "-r", "-q", str(source), str(destination), **args)
    assert first.returncode == 1, first.stderr
    _mend(source, data_dir / "some-file")
    retry = [str(source), str(destination)]
    filtered = run_cli("cp", "-r", "-q", "--retry-failed", *filters, *retry, **args)
    assert filtered.returncode == 1, filtered.stderr
    assert "completed_with_errors" in filtered.stderr, filtered.stderr
    assert "copy the failed files again with --retry-failed" in filtered.stderr, filtered.stderr
    shown = json.loads(run_cli("status", "--json", str(destination), **args).stdout)
    assert shown["state"] == "completed_with_errors", shown
    assert (shown["files_done"], shown["files_failed"], shown["files_total"]) == (1, 1, 2), shown
    listed = run_cli("status", "--failures", dataset_id(str(destination)), **args)
    failures = dict(line.split("\t") for line in listed.stdout.splitlines())
    assert failures == {"b": f"broken symbolic link ({LEFT_OUT_NOTE})"}, failures
    assert (destination / "a").read_bytes() == b"target"
    assert not (destination / "b").exists()
    plain = run_cli("cp", "-r", "-q", "--retry-failed", *retry, **args)
    assert plain.returncode == 0, plain.stderr
    assert (destination / "b").read_bytes() == b"target"
    shown = json.loads(run_cli("status", "--json", str(destination), **args).stdout)
    assert shown["state"] == "completed" and shown["files_failed"] == 0, shown
    assert shown["files_done"] == 1 and shown["failures"] == [], shown


def test_a_filtered_retry_to_two_roots_keeps_the_pairs_it_leaves_out(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """The same with two destination roots (a fan-out dataset): the pairs of ``b``
    left out by ``--include a`` stay failed at each root, counted per root."""
    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    source, r1, r2 = data_dir / "src", data_dir / "r1", data_dir / "r2"
    _broken_source(source)
    roots = [str(source), str(r1), str(r2)]
    first = run_cli("cp", "-r", "-q", *roots, **args)
    assert first.returncode == 1, first.stderr
    found = re.search(r"staccato-dataset-[0-9a-f]{32}", first.stderr)
    assert found is not None, first.stderr
    dataset = found.group(0)
    _mend(source, data_dir / "some-file")
    filtered = run_cli("cp", "-r", "-q", "--retry-failed", "--include", "a", *roots, **args)
    assert filtered.returncode == 1, filtered.stderr
    shown = json.loads(run_cli("status", "--json", dataset, **args).stdout)
    assert shown["state"] == "completed_with_errors", shown
    assert shown["files_failed"] == 1, shown
    assert [d["files_failed"] for d in shown["destinations"]] == [1, 1], shown
    assert sorted((f["name"], f["destination"]) for f in shown["failures"]) == [
        ("b", f"file://{r1}"),
        ("b", f"file://{r2}"),
    ], shown
    assert all(LEFT_OUT_NOTE in f["reason"] for f in shown["failures"]), shown
    assert not (r1 / "b").exists() and not (r2 / "b").exists()
    plain = run_cli("cp", "-r", "-q", "--retry-failed", *roots, **args)
    assert plain.returncode == 0, plain.stderr
    assert (r1 / "b").read_bytes() == (r2 / "b").read_bytes() == b"target"
    shown = json.loads(run_cli("status", "--json", dataset, **args).stdout)
    assert shown["state"] == "completed" and shown["failures"] == [], shown


def test_more_failures_than_kept_advise_sync_level_not_retry_failed(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """A dataset that failed more files than it keeps (``MAX_FAILURES_KEPT``) ended
    saying "copy the failed files again with --retry-failed", which then exits 2
    ("failed 1001 files, more than the 1000 whose names it keeps ...: re-run it with
    --sync-level size"). The end
    line and status give the advice that works: the refusal's words."""
    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    source, destination = data_dir / "src", data_dir / "dst"
    source.mkdir()
    (source / "ok").write_bytes(b"ok")
    count = MAX_FAILURES_KEPT + 1
    for i in range(count):
        os.symlink(source / "nowhere", source / f"broken{i:04d}")
    done = run_cli("cp", "-r", "-q", str(source), str(destination), **args)
    assert done.returncode == 1, done.stderr
    said = " ".join(done.stderr.split())
    advice = (
        f"failed {count} files, more than the {MAX_FAILURES_KEPT} whose names it keeps "
        "(status --failures lists those): re-run it with --sync-level size (or checksum) "
        "to copy only what differs"
    )
    assert advice in said, said
    assert "--retry-failed" not in said, said
    status = run_cli("status", str(destination), **args).stdout
    assert advice in " ".join(status.split()), status
    refused = run_cli("cp", "-r", "-q", "--retry-failed", str(source), str(destination), **args)
    assert refused.returncode == 2, refused.stderr
    assert advice in " ".join(refused.stderr.split()), refused.stderr


def test_a_failure_left_out_twice_is_marked_once_and_needs_a_retry_list() -> None:
    """A failure left out by two filtered retries in a row says "not retried" once; a
    request with ``retry_left`` but no ``retry_failed`` is refused."""
    from staccato.datasets.models import DatasetRequest, left_out_reason

    once = left_out_reason("broken symbolic link")
    assert once == f"broken symbolic link ({LEFT_OUT_NOTE})"
    assert left_out_reason(once) == once
    with pytest.raises(ValueError, match="retry_left needs retry_failed"):
        DatasetRequest(
            source_root="file:///src",
            destination_root="file:///dst",
            retry_left=[{"name": "b", "reason": once}],
        )


def test_retry_failed_finds_its_run_after_another_source_was_copied_into_the_root(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """Datasets to one root share its id: after ``src`` failed two files into ``dst``
    and ``other`` was then copied into ``dst`` too, ``--retry-failed src dst`` said
    "nothing to retry: no earlier dataset from src" (tester60). It finds src's run
    now and copies exactly its two failures."""
    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    source, other, destination = data_dir / "src", data_dir / "other", data_dir / "dst"
    _broken_source(source)
    first = run_cli("cp", "-r", "-q", str(source), str(destination), **args)
    assert first.returncode == 1, first.stderr
    other.mkdir()
    (other / "x").write_bytes(b"x" * 100)
    assert run_cli("cp", "-r", "-q", str(other), str(destination), **args).returncode == 0
    _mend(source, data_dir / "some-file")
    retried = run_cli("cp", "-r", "-q", "--retry-failed", str(source), str(destination), **args)
    assert retried.returncode == 0, retried.stderr
    shown = json.loads(run_cli("status", "--json", str(destination), **args).stdout)
    assert shown["source"].endswith("/src") and shown["state"] == "completed", shown
    assert (shown["files_done"], shown["files_total"]) == (2, 2), shown  # a and b only
    assert (destination / "a").read_bytes() == (destination / "b").read_bytes() == b"target"
    assert (destination / "x").read_bytes() == b"x" * 100
