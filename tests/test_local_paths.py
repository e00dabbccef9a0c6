"""Local paths with ``..`` after a symbolic link: resolved as the kernel (and GNU cp)
resolves them, the link first; paths without ``..`` keep their canonical form (and
transfer ids)."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from staccato.ids import transfer_id
from staccato.urls import parse_url
from tests.helpers import run_cli, sha256_file, write_random


@pytest.fixture
def linked(tmp_path: Path) -> Path:
    """``tmp/src/sub2`` -> ``tmp/elsewhere/d`` (a symbolic link to a directory
    elsewhere); returns ``tmp``."""
    (tmp_path / "src").mkdir()
    (tmp_path / "elsewhere" / "d").mkdir(parents=True)
    (tmp_path / "src" / "sub2").symlink_to(tmp_path / "elsewhere" / "d")
    return tmp_path


def test_dot_dot_after_a_link_is_resolved_through_the_link(linked: Path) -> None:
    """``src/sub2/../z2`` names ``elsewhere/z2`` (the link's parent), not ``src/z2``
    (a textual collapse, which is where the command wrote it)."""
    real = str(linked / "elsewhere" / "z2")
    assert parse_url("src/sub2/../z2", cwd=str(linked)).path == real
    assert parse_url(str(linked / "src/sub2/../z2")).path == real
    assert parse_url(f"file://{linked}/src/sub2/../z2").path == real
    # as the kernel sees it: the file created through the path is there
    (linked / "src/sub2/../z2").write_bytes(b"x")
    assert (linked / "elsewhere" / "z2").exists() and not (linked / "src" / "z2").exists()
    # no link before the `..`: as before
    assert parse_url("src/x/../y", cwd=str(linked)).path == str(linked / "src" / "y")


@pytest.mark.parametrize("slashes", ["/", "//", "///"])
def test_slashes_after_dot_dot_stay_under_the_parent(linked: Path, slashes: str) -> None:
    """``..//w`` is ``../w`` (POSIX: consecutive slashes are one), never the root's
    ``/w``: through the link and without one (a tester's ``cp x out/dlink/..//w``
    created ``/w``, and ``src/link/..//etc/hostname`` read the machine's)."""
    (linked / "src" / "sub").mkdir()
    assert parse_url(f"src/sub2/..{slashes}w", cwd=str(linked)).path == str(
        linked / "elsewhere" / "w"
    )
    assert parse_url(f"src/sub/..{slashes}x", cwd=str(linked)).path == str(linked / "src" / "x")
    assert parse_url(f"{linked}/src/sub2/..{slashes}etc/hostname").path == str(
        linked / "elsewhere" / "etc" / "hostname"
    )


def test_paths_without_dot_dot_keep_their_canonical_form_and_id(linked: Path) -> None:
    """The resolution applies to ``..`` only: an ordinary path (through the link or
    not) keeps its canonical text, so its transfer id is unchanged."""
    assert parse_url("/data/x.bin").canonical == "file:///data/x.bin"
    assert parse_url("/data/./a//b.bin").canonical == "file:///data/a/b.bin"
    through = parse_url(str(linked / "src" / "sub2" / "f"))
    assert through.path == str(linked / "src" / "sub2" / "f")  # the link is kept here
    assert transfer_id("/data/x.bin") == transfer_id("file:///data/x.bin")
    # the id 0.12.0 gave this path (sha256 of file:///data/x.bin)
    assert (
        transfer_id("/data/x.bin")
        == "staccato-" + hashlib.sha256(b"file:///data/x.bin").hexdigest()[:32]
    )


def test_cp_writes_where_gnu_cp_writes(temporal_server, worker, linked: Path) -> None:
    """``staccato cp`` to ``src/sub2/../z2`` writes ``elsewhere/z2``, the file GNU cp
    writes for the same argument; ``src/z2`` is never created."""
    source = linked / "source.bin"
    digest = write_random(source, 256 * 1024, seed=81)
    subprocess.run(["cp", str(source), "src/sub2/../gnu"], cwd=linked, check=True)
    assert (linked / "elsewhere" / "gnu").exists()
    done = run_cli(
        "cp", "-q", str(source), "src/sub2/../z2",
        address=temporal_server.address, task_queue=worker.task_queue, cwd=linked,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sha256_file(linked / "elsewhere" / "z2") == digest
    assert not (linked / "src" / "z2").exists()
