"""A local destination whose missing directories lie below a directory named through a
symbolic link: nothing is made there before the refusal (the local driver made
``elsewhere/new`` through ``dst/link`` and then refused the file), with the words
every driver uses (:func:`staccato.errors.linked_directory_message`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from temporalio.client import WorkflowFailureError

from staccato.client import transfer_id
from staccato.dataset_requests import dataset_id
from staccato.endpoints.file.driver import FileDriver
from staccato.errors import PermanentError, linked_directory_message
from staccato.urls import parse_url
from tests.helpers import WorkerProcess, run_cli
from tests.test_lock import raw_client, raw_input


def _linked(data_dir: Path) -> tuple[Path, Path]:
    """``dst/link -> elsewhere`` (both real directories under ``data_dir``)."""
    root = Path(os.path.realpath(data_dir))
    elsewhere, destination = root / "elsewhere", root / "dst"
    elsewhere.mkdir()
    destination.mkdir()
    (destination / "link").symlink_to(elsewhere, target_is_directory=True)
    return destination, elsewhere


def test_make_parents_refuses_before_making_anything(data_dir: Path) -> None:
    destination, elsewhere = _linked(data_dir)
    target = destination / "link" / "new" / "deeper" / "f.bin"
    with pytest.raises(PermanentError) as refused:
        FileDriver().make_parents(parse_url(str(target)))
    assert str(refused.value) == linked_directory_message(
        str(target), str(elsewhere / "new" / "deeper" / "f.bin")
    )
    assert list(elsewhere.iterdir()) == []


def test_make_parents_still_makes_directories_under_a_real_one(data_dir: Path) -> None:
    destination, _ = _linked(data_dir)
    target = destination / "real" / "new" / "f.bin"
    FileDriver().make_parents(parse_url(str(target)))
    assert (destination / "real" / "new").is_dir()


def test_a_dataset_makes_no_directory_through_a_link_in_its_root(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """``cp -r src dst`` where ``dst/link`` leads elsewhere and the source has
    ``link/new/f``: that file fails naming the link's real path, nothing appears
    elsewhere, the other file is copied."""
    destination, elsewhere = _linked(data_dir)
    source = Path(os.path.realpath(data_dir)) / "src"
    (source / "link" / "new").mkdir(parents=True)
    (source / "link" / "new" / "f.txt").write_bytes(b"through the link")
    (source / "top.txt").write_bytes(b"top")
    done = run_cli(
        "cp", "-r", str(source), str(destination),
        address=temporal_server.address, task_queue=worker.task_queue,
    )  # fmt: skip
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "symbolic link" in done.stderr, done.stderr
    # a dataset's file cannot be named by its real path (a tester was told to): the
    # advice is what a `cp -r` user can do
    assert "name it by its real path" not in done.stderr, done.stderr
    assert "replace the link with a real directory" in done.stderr, done.stderr
    assert f"to the real directory, {elsewhere / 'new'}" in done.stderr, done.stderr
    assert list(elsewhere.iterdir()) == [], list(elsewhere.rglob("*"))
    assert (destination / "top.txt").read_bytes() == b"top"


async def test_a_sync_level_judges_no_file_through_a_linked_directory(
    temporal_server, worker: WorkerProcess, data_dir: Path
) -> None:
    """A transfer (a raw start: the CLI names the real path) with ``--sync-level size``
    to ``dst/link/g``, where ``elsewhere/g`` has the source's size: it fails as publish
    refuses it (it completed "up to date" from the file the link leads to)."""
    destination, elsewhere = _linked(data_dir)
    source = Path(os.path.realpath(data_dir)) / "new-g"
    source.write_bytes(b"new bytes")
    (elsewhere / "g").write_bytes(b"old bytes")  # the same size
    linked = destination / "link" / "g"
    plain = await raw_client(temporal_server.address)
    data = raw_input(str(source), str(elsewhere / "g"), sync_level="size")
    data["destination"] = linked.as_uri()  # what a client that resolves nothing sends
    with pytest.raises(WorkflowFailureError) as failure:
        await plain.execute_workflow(
            "TransferWorkflow", data, id=transfer_id(linked.as_uri()), task_queue=worker.task_queue
        )
    message = getattr(failure.value.cause, "message", str(failure.value.cause))
    assert message.endswith(linked_directory_message(str(linked), str(elsewhere / "g"))), message
    assert (elsewhere / "g").read_bytes() == b"old bytes"


def test_a_dataset_sync_level_judges_no_file_through_a_link_in_its_root(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """``cp -r --sync-level size src dst`` where ``dst/link`` leads elsewhere, holding
    a file of the source's ``link/g`` size: that file fails naming the link (it was
    "up to date"), the other file is copied."""
    destination, elsewhere = _linked(data_dir)
    source = Path(os.path.realpath(data_dir)) / "src"
    (source / "link").mkdir(parents=True)
    (source / "link" / "g").write_bytes(b"new bytes")
    (source / "top.txt").write_bytes(b"top")
    (elsewhere / "g").write_bytes(b"old bytes")
    done = run_cli(
        "cp", "-r", "--sync-level", "size", str(source), str(destination),
        address=temporal_server.address, task_queue=worker.task_queue,
    )  # fmt: skip
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "names its directory through a symbolic link" in done.stderr, done.stderr
    assert (elsewhere / "g").read_bytes() == b"old bytes"
    assert (destination / "top.txt").read_bytes() == b"top"


def test_each_file_through_a_linked_directory_is_named_in_its_own_reason(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """``cp -r src dst`` where ``dst/a`` is a link and the source has ``a/f0..f4``: each
    file's reason names that file (tester72: every one named ``a/f0.dat``, the first
    file whose check the batch remembered for the directory)."""
    destination, elsewhere = _linked(data_dir)
    (destination / "link").rename(destination / "a")
    source = Path(os.path.realpath(data_dir)) / "src"
    (source / "a").mkdir(parents=True)
    names = [f"f{i}.dat" for i in range(5)]
    for name in names:
        (source / "a" / name).write_bytes(name.encode())
    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    done = run_cli("cp", "-r", "-q", str(source), str(destination), **args)
    assert done.returncode == 1, (done.stdout, done.stderr)
    listed = run_cli("status", "--failures", dataset_id(str(destination)), **args)
    assert listed.returncode == 0, listed.stderr
    reasons = dict(line.split("\t") for line in listed.stdout.splitlines())
    assert sorted(reasons) == [f"a/{name}" for name in names], listed.stdout
    for name, reason in reasons.items():
        assert f"destination {destination / name} names" in reason, (name, reason)
    assert list(elsewhere.iterdir()) == []
