"""A local destination whose directory's name is taken by a file: one wording with the
SFTP driver's ("cannot create directory … a file of that name exists …"), wherever
it is found (making the directory, checking the target before a comparison), never a
bare "Not a directory"."""

from __future__ import annotations

from pathlib import Path

import pytest

from staccato.endpoints.file.driver import FileDriver
from staccato.errors import NotAFileError
from staccato.urls import parse_url
from tests.helpers import WorkerProcess, run_cli


def file_in_the_way_message(directory: str, target: str) -> str:
    """The SFTP driver's words (docs/sftp.md), which the local driver now says too."""
    return (
        f"cannot create directory {directory} for {target}: a file of that name exists "
        "(another file of the dataset, or one there already); it is not replaced"
    )


def test_the_local_driver_says_what_the_sftp_driver_says(data_dir: Path) -> None:
    (data_dir / "dstA").mkdir()
    (data_dir / "dstA" / "sub").write_bytes(b"a file")
    target = data_dir / "dstA" / "sub" / "g"
    expected = file_in_the_way_message(str(data_dir / "dstA" / "sub"), str(target))
    url = parse_url(str(target))
    with pytest.raises(NotAFileError) as checked:
        FileDriver().check_target(url)
    assert str(checked.value) == expected
    with pytest.raises(NotAFileError) as made:
        FileDriver().make_parents(url)
    assert str(made.value) == expected
    assert (data_dir / "dstA" / "sub").read_bytes() == b"a file"


def test_a_dataset_with_a_sync_level_names_the_file_in_the_way(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """The tester's layout: ``cp -r --sync-level size`` into a destination where
    ``sub`` is a file: ``sub/g`` fails in the shared words (it said ``destination
    …/dstA/sub/g: Not a directory``), the other file is handled, the file is kept."""
    source, destination = data_dir / "srcA", data_dir / "dstA"
    (source / "sub").mkdir(parents=True)
    (source / "f").write_bytes(b"a")
    (source / "sub" / "g").write_bytes(b"b")
    destination.mkdir()
    (destination / "sub").write_bytes(b"a file")
    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    done = run_cli("cp", "-r", "--sync-level", "size", str(source), str(destination), **args)
    assert done.returncode == 1, done
    expected = file_in_the_way_message(str(destination / "sub"), str(destination / "sub" / "g"))
    assert f"sub/g: {expected}" in done.stderr, done.stderr
    assert "Not a directory" not in done.stderr, done.stderr
    assert (destination / "f").read_bytes() == b"a"
    assert (destination / "sub").read_bytes() == b"a file"
