"""A local destination whose missing directories lie below a directory named through a
symbolic link: nothing is made there before the refusal (the local driver made
``elsewhere/new`` through ``dst/link`` and then refused the file), with the words
every driver uses (:func:`staccato.errors.linked_directory_message`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from staccato.endpoints.file.driver import FileDriver
from staccato.errors import PermanentError, linked_directory_message
from staccato.urls import parse_url
from tests.helpers import WorkerProcess, run_cli


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
    assert list(elsewhere.iterdir()) == [], list(elsewhere.rglob("*"))
    assert (destination / "top.txt").read_bytes() == b"top"
