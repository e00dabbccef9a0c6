"""Datasets (``cp -r``) file -> file against the session's real worker and Temporal:
trees round-trip (names, sizes, checksums), small files in batches and a large one
as a child transfer, sync levels, per-file failures, the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from staccato.cli.datasets import status_lines
from staccato.client import StaccatoClient
from staccato.dataset_requests import dataset_id, status_from_result
from staccato.datasets.models import DatasetResult, DatasetState
from staccato.models import SyncLevel, TransferOptions
from tests.dataset_checks import MiB, make_tree, run_dataset, tree
from tests.helpers import WorkerProcess, run_cli

OPTIONS = TransferOptions(chunk_size=1 * MiB, streams=2)


async def test_tree_round_trips_with_batches_and_a_child(
    client: StaccatoClient, data_dir: Path
) -> None:
    source, destination = data_dir / "src", data_dir / "dst"
    source.mkdir()
    files = make_tree(source, large=3 * MiB + 5)
    final = await run_dataset(
        client,
        str(source),
        str(destination),
        options=OPTIONS,
        small_file_max=1 * MiB,
        batch_files=4,
    )
    assert final.state == DatasetState.completed, final
    assert final.files_done == len(files) and final.files_failed == 0
    assert final.bytes_done == sum(files.values())
    assert tree(destination) == tree(source)  # no temp file, no empty dir, same bytes
    # the large file went through its own transfer (a child under its lock)
    child = await client.status(str(destination / "big" / "large.bin"))
    assert child.state.value == "completed" and child.bytes_total == 3 * MiB + 5


async def test_a_directory_at_a_files_name_fails_that_file_in_a_datasets_words(
    client: StaccatoClient, data_dir: Path
) -> None:
    """A directory where a small file (a batch) or a large one (a child transfer) would
    go fails that file, kept as it is, with a dataset's reason: a single transfer's
    advice to "name the file to write, e.g. .../NAME" cannot be taken by a file of a
    dataset (tester: it reached the failure list)."""
    source, destination = data_dir / "src", data_dir / "dst"
    source.mkdir()
    (source / "small.txt").write_bytes(b"small")
    (source / "large.bin").write_bytes(os.urandom(2 * MiB))
    (source / "ok.txt").write_bytes(b"fine")
    for name in ("small.txt", "large.bin"):
        (destination / name).mkdir(parents=True)
        (destination / name / "kept").write_bytes(b"kept")
    final = await run_dataset(
        client, str(source), str(destination), options=OPTIONS, small_file_max=1 * MiB
    )
    assert final.state == DatasetState.completed_with_errors, final
    assert (final.files_done, final.files_failed) == (1, 2), final
    reasons = {f.name: f.reason for f in final.failures}
    assert sorted(reasons) == ["large.bin", "small.txt"], reasons
    for name, why in reasons.items():
        assert f"{destination / name} is a directory; it is not replaced" in why, why
        assert "name the file to write" not in why, why
        assert (destination / name / "kept").read_bytes() == b"kept"
    assert (destination / "ok.txt").read_bytes() == b"fine"


async def test_small_file_max_0_copies_every_file_with_data_as_a_transfer(
    client: StaccatoClient, data_dir: Path
) -> None:
    """``--small-file-max 0``: only empty files go in batches; the tree still round-trips."""
    source, destination = data_dir / "src", data_dir / "dst"
    source.mkdir()
    (source / "a").mkdir()
    files = {"empty.bin": 0, "a/one": 1, "a/two.dat": 70_000}
    for name, size in files.items():
        (source / name).write_bytes(os.urandom(size))
    final = await run_dataset(
        client, str(source), str(destination), options=OPTIONS, small_file_max=0
    )
    assert final.state == DatasetState.completed, final
    assert final.files_done == len(files) and final.files_failed == 0
    assert tree(destination) == tree(source)
    for name in ("a/one", "a/two.dat"):  # each its own transfer, under its lock
        child = await client.status(str(destination / name))
        assert child.state.value == "completed" and child.bytes_total == files[name]


async def test_sync_level_second_run_copies_nothing(client: StaccatoClient, data_dir: Path) -> None:
    source, destination = data_dir / "src", data_dir / "dst"
    source.mkdir()
    files = make_tree(source)
    options = OPTIONS.model_copy(update={"sync_level": SyncLevel.size})
    first = await run_dataset(client, str(source), str(destination), options=options)
    assert first.files_done == len(files)
    inodes = {p: p.stat().st_ino for p in destination.rglob("*") if p.is_file()}
    again = await run_dataset(client, str(source), str(destination), options=options)
    assert again.state == DatasetState.completed
    assert again.files_done == 0 and again.files_skipped == len(files) and again.bytes_done == 0
    # the total is every file listed, copied or up to date (it said 0 for a tree all
    # up to date: the result counted only the bytes copied)
    assert first.bytes_total == first.bytes_done == sum(files.values()), first
    assert again.bytes_total == sum(files.values()), again
    assert again.to_json_dict()["bytes_total"] == sum(files.values()), again
    # a result from a worker before 0.18.0 (no bytes_listed): not known, and said so
    old = status_from_result(
        again.id,
        DatasetResult(
            state=again.state,
            source=again.source,
            destination=again.destination,
            files_done=0,
            files_skipped=len(files),
            files_failed=0,
            bytes_done=0,
            duration_s=1.0,
            runs=1,
        ),
    )
    assert old.bytes_total is None and old.to_json_dict()["bytes_total"] is None, old
    lines = status_lines(old, failures=False)
    unknown = (
        "bytes_total        unknown (the result counts only the bytes copied; "
        f"{len(files)} files were up to date)"
    )
    assert unknown in lines, lines
    assert {p: p.stat().st_ino for p in destination.rglob("*") if p.is_file()} == inodes
    # one file changes size: only it is copied
    (source / "a" / "one").write_bytes(b"two")
    third = await run_dataset(client, str(source), str(destination), options=options)
    assert third.files_done == 1 and third.files_skipped == len(files) - 1
    assert third.bytes_done == 3, third
    assert third.bytes_total == sum(files.values()) - files["a/one"] + 3, third
    assert (destination / "a" / "one").read_bytes() == b"two"


def test_cli_collision_fails_that_file_and_lists_it(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    source, destination = data_dir / "src", data_dir / "dst"
    (source / "d").mkdir(parents=True)
    (source / "d" / "x").write_bytes(b"x")
    (source / "ok").write_bytes(b"fine")
    (source / "plain").write_bytes(b"p")
    # the destination holds a file where the source has a directory: d/x cannot be
    # written without replacing it, and the file there is kept
    destination.mkdir()
    (destination / "d").write_bytes(b"someone else's")
    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    # -q waits for the result without following the progress; same exit and summary
    done = run_cli("cp", "-r", "-q", str(source), str(destination), **args)
    assert done.returncode == 1, done.stderr
    assert "completed_with_errors" in done.stderr and "d/x" in done.stderr
    assert (destination / "d").read_bytes() == b"someone else's"
    assert (destination / "ok").read_bytes() == b"fine"
    assert (destination / "plain").read_bytes() == b"p"
    listed = run_cli("status", "--failures", dataset_id(str(destination)), **args)
    assert listed.returncode == 0, listed.stderr
    (line,) = listed.stdout.splitlines()
    name, reason = line.split("\t")
    assert name == "d/x" and "d" in reason and "not replaced" in reason
    shown = run_cli("status", "--json", dataset_id(str(destination)), **args)
    status = json.loads(shown.stdout)
    assert status["state"] == "completed_with_errors" and status["files_failed"] == 1
    assert status["files_done"] == 2
    # ended: when and how long, as a single transfer says it, and no rate (it showed
    # an average as "rate" long after the end: tester62)
    assert status["started_at"] <= status["ended_at"], status
    assert status["duration_s"] >= 0 and status["rate_bytes_per_s"] is None, status
    assert status["rate_files_per_s"] is None and status["eta_s"] is None, status
    said = run_cli("status", dataset_id(str(destination)), **args).stdout
    assert "ended_at" in said and "duration" in said and "rate" not in said, said
    assert " failed in " in done.stderr, done.stderr  # cp -r's summary: how long it took
    by_root = run_cli("status", str(destination), **args)
    assert "completed_with_errors" in by_root.stdout and "1 failed" in by_root.stdout
    # the root as a relative path, to status and to watch (both looked up a transfer)
    relative = destination.relative_to(destination.parent.parent)
    by_relative = run_cli("status", str(relative), cwd=destination.parent.parent, **args)
    assert "completed_with_errors" in by_relative.stdout, by_relative.stdout + by_relative.stderr
    watched = run_cli("watch", str(relative), cwd=destination.parent.parent, **args)
    assert watched.returncode == 1 and "1 failed" in watched.stderr + watched.stdout, watched
    unknown = run_cli("status", "no/such/thing", **args)
    assert unknown.returncode == 1 and "no transfer" in unknown.stderr, unknown.stderr
    # a file the dataset copied in a batch: no transfer, but the dataset is named
    # (it said only "no transfer": tester)
    small = run_cli("status", str(destination / "plain"), **args)
    assert small.returncode == 1, small
    assert f"under the destination root of dataset {dataset_id(str(destination))}" in (
        " ".join(small.stderr.split())
    ), small.stderr
    # a cancel names its end as its status does (it said "already completed": tester)
    late = run_cli("cancel", dataset_id(str(destination)), **args)
    assert late.returncode == 1, late
    assert "is already completed_with_errors" in late.stderr, late.stderr
    listed_all = run_cli("list", **args)
    assert dataset_id(str(destination)) in listed_all.stdout, listed_all.stdout
    # --retry-failed copies only that file; once the obstacle is gone it succeeds
    (destination / "d").unlink()
    (source / "ok").write_bytes(b"changed, but not retried")
    retried = run_cli("cp", "-r", "--retry-failed", str(source), str(destination), **args)
    assert retried.returncode == 0, retried.stderr
    assert (destination / "d" / "x").read_bytes() == b"x"
    assert (destination / "ok").read_bytes() == b"fine"
    # once it completed there is nothing to retry: a usage error, as with no dataset
    # (it exited 1 here and 2 there: tester)
    again = run_cli("cp", "-r", "--retry-failed", str(source), str(destination), **args)
    assert again.returncode == 2, again
    assert "--retry-failed re-runs the files of a dataset that ended" in again.stderr


def test_cli_destination_under_a_file_fails_once_naming_it(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """A destination directory that cannot be made (a file stands where a directory
    above it would be) fails the dataset once, up front, naming that file: state
    failed, exit 1, no file listed as failed (each file used to fail with the same
    reason), and the file is kept."""
    source = data_dir / "src"
    for i in range(9):
        (source / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (source / f"d{i % 3}" / f"f{i}").write_bytes(b"y" * i)
    blocker = data_dir / "a-file"
    blocker.write_bytes(b"not a directory")
    destination = blocker / "sub" / "dst"
    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    done = run_cli("cp", "-r", "-q", str(source), str(destination), **args)
    assert done.returncode == 1, done
    assert f"{blocker} is a file, not a directory" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    shown = json.loads(run_cli("status", "--json", str(destination), **args).stdout)
    assert shown["state"] == "failed", shown
    assert f"{blocker} is a file" in shown["error"], shown
    assert shown["files_failed"] == 0 and shown["failures"] == [], shown
    assert blocker.read_bytes() == b"not a directory"


def test_cli_without_r_refuses_a_directory_and_dataset_options(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    usage = run_cli("cp", "--include", "*.txt", str(data_dir), str(data_dir / "x"), **args)
    assert usage.returncode == 2 and "add -r" in usage.stderr
    (data_dir / "dir").mkdir()
    plain = run_cli("cp", str(data_dir / "dir"), str(data_dir / "copy"), **args)
    assert plain.returncode == 2 and "add -r" in plain.stderr, plain.stderr
    (data_dir / "gone").symlink_to(data_dir / "nowhere")
    broken = run_cli("cp", "-r", str(data_dir / "dir"), str(data_dir / "gone"), **args)
    assert broken.returncode == 2, broken
    assert "is a broken symbolic link, not a directory" in broken.stderr, broken.stderr


def test_cli_missing_source_root_fails_naming_it(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    missing = data_dir / "no-such-dir"
    done = run_cli("cp", "-r", str(missing), str(data_dir / "out"), **args)
    # a source root that is not there is a usage error, as a mistyped S3 prefix is;
    # a local one is refused before any dataset starts
    assert done.returncode == 2 and "does not exist" in done.stderr, done.stderr
    assert str(missing) in done.stderr
    assert not (data_dir / "out").exists()
    assert "Traceback" not in done.stderr and '"""' not in done.stderr, done.stderr
    assert not done.stderr.startswith("dataset "), done.stderr
    shown = run_cli("status", str(data_dir / "out"), "--json", **args)
    assert "Traceback" not in shown.stdout, shown.stdout
    assert shown.returncode == 1 and "no transfer" in shown.stderr, shown
    http = run_cli("cp", "-r", "https://example.org/x/", str(data_dir / "out"), **args)
    assert http.returncode == 2 and "cp -r needs a file, s3 or sftp" in http.stderr
    # an empty directory is there: an empty dataset (empty directories are not made)
    (data_dir / "empty").mkdir()
    empty = run_cli("cp", "-r", str(data_dir / "empty"), str(data_dir / "out"), **args)
    assert empty.returncode == 0 and "completed: 0 files copied" in empty.stderr, empty.stderr
    assert not (data_dir / "out").exists()


def test_cli_r_of_a_regular_file_is_refused_before_it_starts(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """``cp -r FILE DIR`` (and ``submit -r``): exit 2 naming the file and suggesting
    to drop -r, before any dataset starts (none is there to show afterwards)."""
    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    afile = data_dir / "f.txt"
    afile.write_bytes(b"a file")
    for command in ("cp", "submit"):
        done = run_cli(command, "-r", str(afile), str(data_dir / "dd"), **args)
        assert done.returncode == 2, done
        assert f"{str(afile)!r} is a file" in done.stderr and "drop -r" in done.stderr, done
        assert done.stdout == "" and "Traceback" not in done.stderr, done
        shown = run_cli("status", str(data_dir / "dd"), **args)
        assert shown.returncode == 1 and "no transfer" in shown.stderr, shown
    assert not (data_dir / "dd").exists()


def test_status_of_a_file_under_a_root_of_several_names_the_dataset_id(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """``status ROOT/FILE`` of a small file a dataset to several roots copied in a
    batch names the id ``cp -r`` printed (the one ``status`` takes), not the id of
    the root's lock (it named ``staccato-dataset-...`` of the lock)."""
    import re

    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    source = data_dir / "src"
    source.mkdir()
    (source / "f1").write_bytes(b"one")
    roots = [data_dir / "m1", data_dir / "m2"]
    done = run_cli("cp", "-r", str(source), *map(str, roots), **args)
    assert done.returncode == 0, done
    printed = set(re.findall(r"staccato-dataset-[0-9a-f]+", done.stdout + done.stderr))
    assert len(printed) == 1, done
    (dataset,) = printed
    assert (roots[0] / "f1").read_bytes() == b"one"
    shown = run_cli("status", str(roots[0] / "f1"), **args)
    assert shown.returncode == 1, shown
    named = set(re.findall(r"staccato-dataset-[0-9a-f]+", shown.stderr))
    assert named == {dataset}, (dataset, shown.stderr)
    assert run_cli("status", dataset, **args).returncode == 0


async def test_include_and_exclude_globs(client: StaccatoClient, data_dir: Path) -> None:
    source, destination = data_dir / "src", data_dir / "dst"
    for name in ["a.txt", "keep/b.txt", "keep/tmp/c.txt", "d.log", "keep/e.bin"]:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(name.encode())
    final = await run_dataset(
        client,
        str(source),
        str(destination),
        options=OPTIONS,
        include=["*.txt", "*.bin"],
        exclude=["*/tmp/*"],
    )
    assert final.state == DatasetState.completed, final
    assert sorted(tree(destination)) == ["a.txt", "keep/b.txt", "keep/e.bin"]
    assert final.files_total == 3


async def test_status_says_the_counts_are_unknown_when_no_worker_answers(
    client: StaccatoClient, data_dir: Path
) -> None:
    """A running dataset no worker answers for (here: its task queue has none; after a
    worker SIGKILL: while the new one replays): the status says its counts are unknown
    and why, rather than 0 files done (a tester saw 10,000 done drop to 0 for 20 s)."""
    from staccato.dataset_client import dataset_status, submit_dataset

    source = data_dir / "src"
    source.mkdir()
    (source / "f").write_bytes(b"x")
    lonely = StaccatoClient(client.temporal, task_queue="no-worker-polls-this")
    dataset = await submit_dataset(lonely, str(source), str(data_dir / "dst"), OPTIONS)
    try:
        status = await dataset_status(client, str(dataset))
        assert status.state == DatasetState.running, status
        # no worker polls its queue: said at once, naming the queue (it said "no worker
        # answered the progress query within 5 s", which it had not waited)
        assert status.counts_unknown, status
        assert "no worker polls task queue 'no-worker-polls-this'" in status.counts_unknown
        assert "counts_unknown" in status.to_json_dict()
        # the status lines give no count beside "unknown now" (they said files_done 0)
        from staccato.cli.datasets import status_lines

        lines = status_lines(status, failures=False)
        assert any("unknown now: no worker polls" in line for line in lines), lines
        assert not any(line.split()[0] in ("files_done", "bytes_done") for line in lines), lines
    finally:
        await client.temporal.get_workflow_handle(str(dataset)).terminate("test over")


async def test_status_names_the_step_being_retried(client: StaccatoClient, data_dir: Path) -> None:
    """A dataset whose destination refuses connections makes no progress while its
    steps are retried: the status says which step and why (it said only "running:
    0/16+ files" for minutes), and cancel still ends it."""
    from staccato.dataset_client import cancel_dataset, dataset_status, submit_dataset
    from tests.test_lock import eventually

    source = data_dir / "src"
    source.mkdir()
    (source / "f").write_bytes(b"x" * 100)
    dataset = str(
        await submit_dataset(client, str(source), "sftp://127.0.0.1:1/tmp/nowhere", OPTIONS)
    )
    try:

        async def retrying() -> str | None:
            return (await dataset_status(client, dataset)).last_retry_error

        why = await eventually(retrying, timeout_s=90)
        assert "attempt" in why and "127.0.0.1:1" in why, why
    finally:
        await cancel_dataset(client, dataset)


def test_retry_failed_of_a_link_loop_says_it_is_a_directory(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """A directory that failed as a link loop (as one that cannot be listed does): the
    end line does not advise --retry-failed (it did, and the retry failed it again the
    same way, every time: tester), a --retry-failed is refused (exit 2) saying it lists
    no directory and to run without it; with a file to retry besides, the retry runs and
    the directory's reason says it failed as a directory (it said "empty path segment"
    and named the source root as if it were the destination)."""
    import os

    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    source, destination = data_dir / "src", data_dir / "dst"
    (source / "loop").mkdir(parents=True)
    (source / "f").write_bytes(b"f")
    os.symlink("..", source / "loop" / "up")
    first = run_cli("cp", "-r", str(source), str(destination), **args)
    assert first.returncode == 1, first.stderr
    said = " ".join(first.stderr.split())
    assert "again with --retry-failed" not in said, said
    assert "--retry-failed cannot help: the directory it failed ('loop/up/')" in said, said
    assert "run it again without --retry-failed" in said, said
    refused = run_cli("cp", "-r", "--retry-failed", str(source), str(destination), **args)
    assert refused.returncode == 2, refused.stderr
    said = " ".join(refused.stderr.split())
    assert "nothing to retry: the directory it failed ('loop/up/')" in said, said
    assert "it lists no directory" in said and "without --retry-failed" in said, said
    # a file that failed besides (its destination is a directory): the retry runs
    (destination / "g").mkdir()
    (source / "g").write_bytes(b"g")
    second = run_cli("cp", "-r", "--sync-level", "size", str(source), str(destination), **args)
    assert second.returncode == 1, second.stderr
    said = " ".join(second.stderr.split())
    assert "copy the failed files again with --retry-failed (it lists no directory" in said
    again = run_cli("cp", "-r", "--retry-failed", str(source), str(destination), **args)
    assert again.returncode == 1, again.stderr
    listed = run_cli("status", "--failures", dataset_id(str(destination)), **args)
    reasons = dict(line.split("\t") for line in listed.stdout.splitlines())
    assert "failed as a directory" in reasons["loop/up/"], reasons
    assert "empty path segment" not in reasons["loop/up/"], reasons


def test_retry_failed_of_a_name_that_is_not_utf8_gives_the_real_reason(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """A file whose name is not UTF-8 (bytes b'bad\\xff') fails as such; retried with
    --retry-failed it fails for the same reason (it said "'bad\\\\xff' is no longer at
    the source": the listing's escaped spelling was looked up as a name); so does a
    directory whose name is not UTF-8."""
    import os

    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    source, destination = data_dir / "src", data_dir / "dst"
    source.mkdir()
    (source / "ok").write_bytes(b"fine")
    raw_source = os.fsencode(source)
    with open(os.path.join(raw_source, b"bad\xff"), "wb") as f:
        f.write(b"bad bytes")
    # its escaped spelling is a real name too: both are listed (the first was left out)
    (source / "bad\\xff").write_bytes(b"literal")
    os.makedirs(os.path.join(raw_source, b"dir\xfe"))
    with open(os.path.join(raw_source, b"dir\xfe", b"inner"), "wb") as f:
        f.write(b"inner")
    first = run_cli("cp", "-r", "-q", str(source), str(destination), **args)
    assert first.returncode == 1, first.stderr
    again = run_cli("cp", "-r", "-q", "--retry-failed", str(source), str(destination), **args)
    assert again.returncode == 1, again.stderr
    listed = run_cli("status", "--failures", dataset_id(str(destination)), **args)
    reasons = dict(line.split("\t") for line in listed.stdout.splitlines())
    assert set(reasons) == {"bad\\xff (name not valid UTF-8)", "dir\\xfe"}, reasons
    for name, why in reasons.items():
        assert why.startswith("the name is not valid UTF-8"), (name, why)
        assert "rename it at the source" in why and "no longer" not in why, (name, why)
    assert sorted(os.listdir(os.fsencode(destination))) == [b"bad\\xff", b"ok"]
    assert (destination / "ok").read_bytes() == b"fine"
    assert (destination / "bad\\xff").read_bytes() == b"literal"
    # an ended dataset is named as one (it said "transfer staccato-dataset-...")
    late = run_cli("cancel", str(destination), **args)
    assert late.returncode == 1, late
    assert f"dataset {dataset_id(str(destination))} is already completed" in late.stderr, late


def test_retry_failed_of_broken_links_gives_the_first_runs_reasons(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """A broken symbolic link and a link loop (to files) fail with the listing's
    reasons; retried with --retry-failed they fail with the same reasons (they said
    "'broken_link' is no longer at the source" and "source ...: Too many levels of
    symbolic links")."""
    import os

    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    source, destination = data_dir / "src", data_dir / "dst"
    source.mkdir()
    (source / "ok").write_bytes(b"fine")
    os.symlink(source / "nowhere", source / "broken_link")
    os.symlink(source / "loop2", source / "loop1")
    os.symlink(source / "loop1", source / "loop2")
    first = run_cli("cp", "-r", "-q", str(source), str(destination), **args)
    assert first.returncode == 1, first.stderr
    listed = run_cli("status", "--failures", dataset_id(str(destination)), **args)
    before = dict(line.split("\t") for line in listed.stdout.splitlines())
    assert before == {
        "broken_link": "broken symbolic link",
        "loop1": "symbolic link loop",
        "loop2": "symbolic link loop",
    }, before
    again = run_cli("cp", "-r", "-q", "--retry-failed", str(source), str(destination), **args)
    assert again.returncode == 1, again.stderr
    listed = run_cli("status", "--failures", dataset_id(str(destination)), **args)
    after = dict(line.split("\t") for line in listed.stdout.splitlines())
    assert after == before, after
    assert sorted(os.listdir(destination)) == ["ok"]


def test_failed_names_with_control_characters_stay_on_one_line(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """A failed file whose name holds a newline and a tab (tester: printed raw, so
    `status --failures` lines NAME<TAB>REASON could not be parsed): shown as \\xNN on
    one line by `cp -r` and `status --failures`; `--json` keeps the exact name."""
    source, destination = data_dir / "src", data_dir / "dst"
    source.mkdir()
    (source / "fine").write_bytes(b"fine")
    odd = "bro\nken\tlink"
    (source / odd).symlink_to(source / "nowhere")  # a broken link: fails, named
    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    done = run_cli("cp", "-r", "-q", str(source), str(destination), **args)
    assert done.returncode == 1, done.stderr
    failed = [line for line in done.stderr.splitlines() if line.startswith("failed: ")]
    assert failed and failed[0].startswith("failed: bro\\x0aken\\x09link: "), done.stderr
    listed = run_cli("status", "--failures", dataset_id(str(destination)), **args)
    assert listed.returncode == 0, listed.stderr
    (line,) = listed.stdout.splitlines()
    name, reason = line.split("\t")
    assert name == "bro\\x0aken\\x09link" and "symbolic link" in reason, line
    exact = run_cli("status", "--failures", "--json", dataset_id(str(destination)), **args)
    assert [f["name"] for f in json.loads(exact.stdout)] == [odd], exact.stdout
    assert (destination / "fine").read_bytes() == b"fine"


def test_the_roots_above_a_destination_nearest_first() -> None:
    """The roots ``status`` of a file a dataset wrote looks at: every directory or
    prefix above it, nearest first."""
    from staccato.dataset_client import _roots_above

    assert _roots_above("s3://bkt/a/b/c.bin") == ["s3://bkt/a/b", "s3://bkt/a", "s3://bkt/"]
    assert _roots_above("sftp://h:2222/data/x") == ["sftp://h:2222/data", "sftp://h:2222/"]
    assert _roots_above("/data/run/f.bin") == ["file:///data/run", "file:///data", "file:///"]
    # a key's empty segment is kept, as dataset keys keep it
    assert _roots_above("s3://bkt/a//c") == ["s3://bkt/a/", "s3://bkt/a", "s3://bkt/"]


def test_retry_failed_of_files_no_longer_at_the_source_is_not_advised_again(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """A failed file removed from the source since: --retry-failed finds it gone, and
    the end says nothing is left to copy and to run without --retry-failed (it advised
    --retry-failed again, which failed it again, every time: tester); a further
    --retry-failed is refused (exit 2) naming it; a run without it completes."""
    import os

    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    source, destination = data_dir / "src", data_dir / "dst"
    source.mkdir()
    for name in ("f1", "f2", "f3"):
        (source / name).write_bytes(name.encode())
    os.symlink("/nonexist", source / "gone")
    first = run_cli("cp", "-r", "-q", str(source), str(destination), **args)
    assert first.returncode == 1, first.stderr
    assert "gone: broken symbolic link" in first.stderr, first.stderr
    assert "again with --retry-failed" in first.stderr, first.stderr
    (source / "gone").unlink()
    retried = run_cli("cp", "-r", "--retry-failed", str(source), str(destination), **args)
    assert retried.returncode == 1, retried.stderr
    said = " ".join(retried.stderr.split())
    assert "failed: gone: 'gone' is no longer at the source" in said, said
    assert "again with --retry-failed" not in said, said
    assert "--retry-failed cannot help: the file dataset" in said, said
    assert "('gone') is no longer at the source (nothing is left to copy)" in said, said
    assert "run it again without --retry-failed" in said, said
    again = run_cli("cp", "-r", "--retry-failed", str(source), str(destination), **args)
    assert again.returncode == 2, again
    said = " ".join(again.stderr.split())
    assert f"nothing to retry: the file dataset {dataset_id(str(destination))} failed" in said
    assert "('gone') is no longer at the source" in said, said
    assert "without --retry-failed" in said, said
    plain = run_cli("cp", "-r", "--sync-level", "size", str(source), str(destination), **args)
    assert plain.returncode == 0, plain.stderr
    assert "0 files copied (0 B), 3 up to date, 0 failed" in plain.stderr, plain.stderr


def test_retry_failed_leaves_out_the_files_no_longer_at_the_source(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """Of two failed files, one removed from the source and one whose obstacle at the
    destination stays: the retry fails both, the end advises --retry-failed (one can
    still be copied) and says it leaves the other out; once the obstacle is gone
    --retry-failed copies the one left and completes (exit 0): the file no longer at
    the source is not retried (it failed that retry again: tester)."""
    import os

    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    source, destination = data_dir / "src", data_dir / "dst"
    source.mkdir()
    (source / "ok").write_bytes(b"ok")
    (source / "blocked").write_bytes(b"blocked")
    os.symlink("/nonexist", source / "gone")
    (destination / "blocked").mkdir(parents=True)
    first = run_cli("cp", "-r", "-q", str(source), str(destination), **args)
    assert first.returncode == 1, first.stderr
    (source / "gone").unlink()
    retried = run_cli("cp", "-r", "-q", "--retry-failed", str(source), str(destination), **args)
    assert retried.returncode == 1, retried.stderr
    said = " ".join(retried.stderr.split())
    assert "failed: gone: 'gone' is no longer at the source" in said, said
    assert "copy the failed files again with --retry-failed (it leaves out the 1 no" in said
    (destination / "blocked").rmdir()
    last = run_cli("cp", "-r", "--retry-failed", str(source), str(destination), **args)
    assert last.returncode == 0, last.stderr
    assert "1 file copied" in last.stderr and "0 failed" in last.stderr, last.stderr
    assert (destination / "blocked").read_bytes() == b"blocked"
    shown = json.loads(run_cli("status", "--json", str(destination), **args).stdout)
    assert shown["state"] == "completed" and shown["files_done"] == 1, shown


def test_filters_that_match_no_file_listed_say_so(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """--include/--exclude that leave out every file listed: the dataset completes
    (exit 0) with nothing copied, and cp -r (also with -q), status and status --json
    say that none of the N files listed matched, naming the patterns (it said only
    "completed: 0 files copied", tester). No word for an empty source with filters,
    nor when a file matched."""
    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    source, destination = data_dir / "src", data_dir / "dst"
    (source / "sub").mkdir(parents=True)
    for name in ("sub/a", "sub/b", "c"):
        (source / name).write_bytes(name.encode())
    done = run_cli("cp", "-r", str(source), str(destination), "--include", "/sub/*", **args)
    assert done.returncode == 0, done.stderr
    said = " ".join(done.stderr.split())
    assert "completed: 0 files copied (0 B), 0 up to date, 0 failed" in said, said
    assert (
        "staccato: warning: none of the 3 files listed matched --include '/sub/*': "
        "nothing was copied" in said
    ), said
    assert "never with a leading '/' ('sub/*', not '/sub/*')" in said, said
    assert not destination.exists()
    shown = json.loads(run_cli("status", "--json", str(destination), **args).stdout)
    assert shown["state"] == "completed" and shown["filters_matched_none"] == 3, shown
    assert shown["warning"].startswith("none of the 3 files listed matched"), shown
    text = run_cli("status", str(destination), **args).stdout
    assert "none of the 3 files listed matched --include '/sub/*'" in text, text
    # -q through the light client (Temporal's HTTP API), which waits for the end itself
    other, light = data_dir / "dst2", {"STACCATO_TEMPORAL_HTTP": temporal_server.http_address}
    quiet = run_cli("cp", "-r", "-q", str(source), str(other), "--exclude", "*", env=light, **args)
    assert quiet.returncode == 0, quiet.stderr
    # an exclude that matched every file says it excluded them (it said "none of
    # the 3 files listed matched --exclude '*'", though all 3 did: tester)
    assert quiet.stderr.startswith(
        "staccato: warning: --exclude '*' excluded all 3 files listed: nothing was copied"
    ), quiet.stderr
    shown = json.loads(run_cli("status", "--json", str(other), **args).stdout)
    assert shown["filters_matched_none"] == 3, shown
    assert shown["warning"].startswith("--exclude '*' excluded all 3 files listed"), shown
    both = run_cli(
        "cp", "-r", "-q", str(source), str(data_dir / "d4"),
        "--include", "sub/*", "--exclude", "sub/*", **args,
    )  # fmt: skip
    assert both.returncode == 0, both.stderr
    assert (
        "none of the 3 files listed was selected by --include 'sub/*' --exclude 'sub/*' "
        "(a file is copied when it matches some --include and no --exclude)"
    ) in " ".join(both.stderr.split()), both.stderr
    # an empty source with filters, and filters that match a file: no warning
    (data_dir / "empty").mkdir()
    empty = run_cli(
        "cp", "-r", "-q", str(data_dir / "empty"), str(data_dir / "e2"), "--include", "x", **args
    )
    assert empty.returncode == 0 and empty.stderr == "", empty.stderr
    some = run_cli("cp", "-r", str(source), str(data_dir / "d3"), "--include", "sub/*", **args)
    assert some.returncode == 0 and "warning" not in some.stderr, some.stderr
    assert "completed: 2 files copied" in some.stderr, some.stderr
    shown = json.loads(run_cli("status", "--json", str(data_dir / "d3"), **args).stdout)
    assert "filters_matched_none" not in shown and "warning" not in shown, shown


async def test_retry_failed_whose_filters_leave_out_every_failed_file_is_refused(
    client: StaccatoClient, data_dir: Path
) -> None:
    """A retry's ``--include``/``--exclude`` choose among the failed files before the
    retry starts (the listing keeps the retry list as it is given); leaving out all of
    them is refused, naming the filters, and nothing starts."""
    from staccato.dataset_client import CannotRetryError, submit_dataset

    source, destination = data_dir / "src", data_dir / "dst"
    source.mkdir()
    (source / "a").write_bytes(b"a")
    (source / "b").write_bytes(b"b")
    (destination / "a").mkdir(parents=True)
    first = await run_dataset(client, str(source), str(destination), options=OPTIONS)
    assert first.state == DatasetState.completed_with_errors, first
    with pytest.raises(CannotRetryError, match=r"--include/--exclude \(a\) leave out all 1"):
        await submit_dataset(
            client, str(source), str(destination), OPTIONS, retry_failed=True, exclude=["a"]
        )


async def test_submit_dataset_with_no_destination_says_so(
    client: StaccatoClient, data_dir: Path
) -> None:
    """`submit_dataset(client, SRC, [])` raised a bare IndexError: a ValueError names
    the empty destination list, and nothing starts."""
    from staccato.dataset_client import submit_dataset

    source = data_dir / "nowhere-to-go"
    make_tree(source, small=1)
    with pytest.raises(ValueError, match="destination is an empty list"):
        await submit_dataset(client, str(source), [])


def test_a_source_file_named_like_a_temp_file_is_never_swept(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """A tree holding names like Staccato's temp files (copied from a destination that
    had leftovers): a dataset's listing leaves them out (tester T19:
    tests/test_dataset_temp_names.py), and its large files' transfers never sweep
    those at the destination as leftovers. A tester's ``cp -r`` said ``completed: 8 files`` with
    ``.big.bin.fedcba9876543210.staccato-part`` missing: the child transfer of
    ``big.bin`` removed it in its ``prepare``. Here the destination already holds that
    file, up to date (``--sync-level size``), so the old code's sweep removes it every
    time instead of racing the batch that copies it."""
    source, destination = data_dir / "src", data_dir / "dst"
    source.mkdir()
    destination.mkdir()
    look_alike = {
        ".big.bin.fedcba9876543210.staccato-part": b"USERBIG",
        ".big.bin.0123456789abcdef.staccato-journal": b"USERJOURNAL",
    }
    for name, data in look_alike.items():
        (source / name).write_bytes(data)
        (destination / name).write_bytes(data)
    big = os.urandom(3 * MiB)
    (source / "big.bin").write_bytes(big)
    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    done = run_cli(
        "cp", "-r", "-q", "--small-file-max", "1MiB", "--sync-level", "size",
        str(source), str(destination), **args,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (destination / "big.bin").read_bytes() == big
    for name, data in look_alike.items():
        assert (destination / name).read_bytes() == data, name


def test_a_fifo_that_failed_alone_gets_no_advice_to_copy_it_again(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """A FIFO (and a link to a device) at the source fail as not regular files, which
    no run copies as they are: ``cp -r`` does not advise ``--retry-failed`` when they
    are every failure (tester63: it did), and names them when others failed too."""
    source, destination = data_dir / "src", data_dir / "dst"
    source.mkdir()
    (source / "plain").write_bytes(b"p")
    os.mkfifo(source / "pipe")
    (source / "zero").symlink_to("/dev/zero")
    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    done = run_cli("cp", "-r", "-q", str(source), str(destination), **args)
    assert done.returncode == 1, done.stderr
    assert "not a regular file (a FIFO, socket or device)" in done.stderr, done.stderr
    assert "--retry-failed" not in done.stderr, done.stderr
    assert (destination / "plain").read_bytes() == b"p"
    assert sorted(p.name for p in destination.iterdir()) == ["plain"]


def test_the_exclude_advised_for_a_name_with_glob_characters_leaves_out_that_file(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """A directory where ``x[1].txt`` would go: the reason advises the ``--exclude``
    that leaves out that file alone, its glob characters escaped, and following it
    literally copies the rest (tester72: ``--exclude 'x[1].txt'`` left out
    ``x1.txt`` and copied ``x[1].txt``)."""
    source, destination = data_dir / "src", data_dir / "dst"
    source.mkdir()
    (source / "x[1].txt").write_bytes(b"bracketed")
    (source / "x1.txt").write_bytes(b"plain")
    (destination / "x[1].txt").mkdir(parents=True)
    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    done = run_cli("cp", "-r", "-q", str(source), str(destination), **args)
    assert done.returncode == 1, done.stderr
    listed = run_cli("status", "--failures", dataset_id(str(destination)), **args)
    (line,) = listed.stdout.splitlines()
    name, reason = line.split("\t")
    assert name == "x[1].txt", line
    assert "leave the file out with --exclude 'x[[]1].txt'" in reason, reason
    (destination / "x1.txt").unlink()
    again = run_cli(
        "cp", "-r", "-q", "--exclude", "x[[]1].txt", str(source), str(destination), **args
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert (destination / "x1.txt").read_bytes() == b"plain"
    assert (destination / "x[1].txt").is_dir()


def test_an_exclude_naming_a_directory_is_warned_with_the_pattern_that_does_it(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """``--exclude a`` where ``a`` is a directory of the source matches none of its
    files (patterns match file names): a warning says so and names ``'a/*'``, which
    followed leaves them out (tester72: it silently excluded nothing)."""
    source, destination = data_dir / "src", data_dir / "dst"
    (source / "a").mkdir(parents=True)
    (source / "a" / "in.txt").write_bytes(b"in a")
    (source / "top.txt").write_bytes(b"top")
    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    done = run_cli("cp", "-r", "-q", "--exclude", "a", str(source), str(destination), **args)
    assert done.returncode == 0, done.stderr
    said = " ".join(done.stderr.split())
    assert "warning: --exclude a names a directory of the source" in said, said
    assert "give --exclude 'a/*'" in said, said
    again = run_cli(
        "cp", "-r", "-q", "--exclude", "a/*", str(source), str(data_dir / "dst2"), **args
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "names a directory" not in again.stderr, again.stderr
    assert not (data_dir / "dst2" / "a").exists()
    assert (data_dir / "dst2" / "top.txt").read_bytes() == b"top"


def test_cp_capital_r_copies_and_failures_of_a_clean_dataset_says_none(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """``cp -R`` is ``cp -r`` (as cp(1)'s; tester72: refused without a hint), and
    ``status --failures`` of a dataset with no failed file says so on stderr, its
    stdout (one line per failed file, for scripts) empty (it printed nothing at all)."""
    source, destination = data_dir / "src", data_dir / "dst"
    source.mkdir()
    (source / "f.txt").write_bytes(b"f")
    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    done = run_cli("cp", "-R", "-q", str(source), str(destination), **args)
    assert done.returncode == 0, done.stderr
    assert (destination / "f.txt").read_bytes() == b"f"
    listed = run_cli("status", "--failures", dataset_id(str(destination)), **args)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == "", listed.stdout
    assert "no failures: no file of" in listed.stderr and "(completed)" in listed.stderr, (
        listed.stderr
    )
