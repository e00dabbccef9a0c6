"""Datasets (``cp -r``) and symbolic links that lead into the destination: a source
link to the destination root (or into it, or to a directory above it) would copy
the copy, one level deeper each run, without end. Such a link fails for its entry,
naming the link and the root; the rest is copied. A destination root inside the
source root is refused up front, unless an exclude leaves it out."""

from __future__ import annotations

import os
from pathlib import Path

from tests.dataset_checks import check_links_into, links_into, tree
from tests.helpers import WorkerProcess, run_cli


def test_a_link_into_the_destination_root_is_not_followed(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """``src/back -> dst``, ``src/inner -> dst/a``, ``src/peek -> dst/top`` and
    ``src/work -> work`` (dst's parent), copied to ``dst`` twice: each run copies the
    three real files once and fails each link into the destination naming it and the
    root (the second run used to copy ``dst`` into ``dst/back``, ``dst/inner`` and
    ``dst/work/dst``: one level deeper each run), exit 1."""
    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    work = Path(os.path.realpath(data_dir)) / "work"
    source, destination, real_files = links_into(work)
    check_links_into(str(source), destination, str(destination), real_files, **args)


def test_a_destination_inside_the_source_is_refused_unless_excluded(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """``cp -r src src/backup``: the copy would list its own output. Refused before
    anything is written (exit 2, both URLs named, the exclude that would make it safe
    suggested); with ``--exclude 'backup/*'`` it runs, copies the rest and never walks
    into the destination, also the second time."""
    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    source = Path(os.path.realpath(data_dir)) / "src"
    (source / "a").mkdir(parents=True)
    (source / "a" / "one").write_bytes(b"one")
    (source / "top").write_bytes(b"top")
    backup = source / "backup"
    refused = run_cli("cp", "-r", "-q", str(source), str(backup), **args)
    assert refused.returncode == 2, (refused.stdout, refused.stderr)
    assert str(source) in refused.stderr and str(backup) in refused.stderr, refused.stderr
    assert "--exclude 'backup/*'" in refused.stderr, refused.stderr
    assert not backup.exists()
    narrow = run_cli("cp", "-r", "-q", "--exclude", "a/*", str(source), str(backup), **args)
    assert narrow.returncode == 2, (narrow.stdout, narrow.stderr)
    assert not backup.exists()
    for run in ("first", "second"):
        done = run_cli(
            "cp", "-r", "-q", "--exclude", "backup/*", str(source), str(backup), **args
        )  # fmt: skip
        assert done.returncode == 0, (run, done.stdout, done.stderr)
        assert sorted(tree(backup)) == ["a/one", "top"], run


async def test_a_fan_out_fences_every_destination_root(client, data_dir: Path) -> None:
    """``cp -r src d1 d2`` with ``src/one -> d1`` and ``src/two -> d2/sub``: the same
    rule for each root (each link fails naming its root), twice; both roots hold the
    real files once (the second run used to copy d1 into d1/one and d2, and d1 into
    d2/one)."""
    from staccato.datasets.models import DatasetState
    from tests.dataset_checks import run_dataset

    work = Path(os.path.realpath(data_dir))
    source, first, second = work / "src", work / "d1", work / "d2"
    (source / "a").mkdir(parents=True)
    (source / "a" / "f").write_bytes(b"f" * 10)
    (source / "top").write_bytes(b"top")
    real_files = tree(source)
    os.symlink(first, source / "one")
    os.symlink(second / "sub", source / "two")
    for run in ("first", "second"):
        done = await run_dataset(client, str(source), [str(first), str(second)])
        assert done.state == DatasetState.completed_with_errors, (run, done)
        assert tree(first) == real_files == tree(second), run
        reasons: dict[str, set[str]] = {}
        for failure in done.failures:
            reasons.setdefault(failure.name.rstrip("/"), set()).add(failure.reason)
        assert set(reasons) == {"one", "two"}, (run, done.failures)
        assert all(f"destination root {first}" in why for why in reasons["one"]), reasons
        assert all(f"destination root {second}" in why for why in reasons["two"]), reasons


def test_which_excludes_leave_out_a_destination_inside_the_source() -> None:
    """A glob ``P*`` whose head matches a prefix of ``backup/`` leaves out every name
    under it (as ``--exclude`` matches: ``*`` also matches ``/``); a glob that leaves
    out only some names (or none ending in ``*``) does not, and is refused."""
    from staccato.dataset_requests import excluded_below

    for glob in ("backup/*", "back*", "*", "b?ckup/*", "[ab]ackup*"):
        assert excluded_below("backup", ["x", glob]) == glob, glob
    for glob in ("backup", "backup/", "backup/*.log", "*.log", "a/*", "backupx*"):
        assert excluded_below("backup", [glob]) is None, glob
    assert excluded_below("a/b", ["a/*"]) == "a/*"
