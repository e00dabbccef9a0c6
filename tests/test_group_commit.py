"""A dataset's small files to a local file system, staged and published by group commit
(``staccato.endpoints.file.group``), on a real file system (no mocks; ``os.pread``,
``os.fdatasync`` and ``os.rename`` are only wrapped to record their calls, and once
to make one ``fdatasync`` fail as a failing disk would).

* A staged file is written from the bytes in memory and not read back (as a stream's
  chunk written from its own buffer): no ``pread`` of a temp file, and the bytes at
  the final name are the source's.
* Nothing is published before the commit; the commit makes every temp file durable
  before the first rename, renames each once, then ``fsync``s the directory.
* A temp file a killed attempt left is rewritten whole (``O_TRUNC``), never trusted.
* A local source changed between staging and the commit is not published (its temp
  file removed, the reason given); the others of the group are.
* An ``fdatasync`` that fails fails the commit: nothing renamed, every other temp
  file still synced and left for the retry.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from staccato.activities.small_copy import stage_small_url
from staccato.endpoints.file import group as group_module
from staccato.endpoints.file.group import LocalGroup, StagedFile
from staccato.endpoints.file.session import TEMP_SUFFIX, session_paths
from staccato.errors import SourceChangedError, StaccatoError
from staccato.models import TransferOptions
from staccato.urls import parse_url

SIZE = 64 * 1024 + 3


def _sources(root: Path, count: int) -> dict[str, bytes]:
    """``count`` random files under ``root`` (two directories), modified an hour ago
    (so their version proves them stable and no second read is needed)."""
    bodies = {f"d{i % 2}/f{i:02d}": os.urandom(SIZE + i) for i in range(count)}
    past = time.time() - 3600
    for name, body in bodies.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        os.utime(path, (past, past))
    return bodies


def _stage_all(
    group: LocalGroup, source: Path, destination: Path, names: list[str]
) -> list[StagedFile]:
    staged = []
    for index, name in enumerate(names):
        item = stage_small_url(
            parse_url(str(source / name)),
            parse_url(str(destination / name)),
            TransferOptions(),  # --verify checksum, the default
            f"group-test-{index}",
            (source / name).stat().st_size,
            group,
        )
        assert item is not None, f"{name} was not staged"
        staged.append(item)
    return staged


def _record(
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    calls: list[tuple[str, str]] | None = None,
    fail: Callable[[str], bool] | None = None,
) -> list[tuple[str, str]]:
    """Wrap ``os.<name>`` (fd or path first) to append (name, path) to ``calls`` (a new
    list unless given: several wrappers may share one) per call, in the order they
    happen across threads; ``fail(path)`` true: raise EIO instead of calling it."""
    recorded_calls: list[tuple[str, str]] = [] if calls is None else calls
    original = getattr(os, name)

    def recorded(target: int | str, *args: object) -> object:
        path = os.readlink(f"/proc/self/fd/{target}") if isinstance(target, int) else target
        with _LOCK:
            recorded_calls.append((name, str(path)))
        if fail is not None and fail(str(path)):
            raise OSError(errno.EIO, "Input/output error")
        return original(target, *args)

    monkeypatch.setattr(os, name, recorded)
    return recorded_calls


_LOCK = threading.Lock()


def test_staged_files_are_written_from_memory_not_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bodies = _sources(tmp_path / "src", 6)
    destination = tmp_path / "dst"
    preads = _record(monkeypatch, "pread")
    group = LocalGroup()
    try:
        staged = _stage_all(group, tmp_path / "src", destination, sorted(bodies))
        # staged: the whole bytes under the temp name, nothing at the final name yet
        for item, name in zip(staged, sorted(bodies), strict=True):
            assert item.temp.endswith(TEMP_SUFFIX)
            assert Path(item.temp).read_bytes() == bodies[name]
            assert not (destination / name).exists()
        assert group.commit(staged) == [None] * len(staged)
    finally:
        group.close()
    read_temps = [path for _, path in preads if path.endswith(TEMP_SUFFIX)]
    assert read_temps == [], f"temp files read back: {read_temps}"
    assert {path for _, path in preads} <= {str(tmp_path / "src" / n) for n in bodies}
    for name, body in bodies.items():
        assert (destination / name).read_bytes() == body
    assert not [p for p in destination.rglob("*") if p.name.endswith(TEMP_SUFFIX)]


def test_commit_syncs_every_file_before_the_first_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bodies = _sources(tmp_path / "src", 20)  # > SYNC_THREADS: several files per thread
    assert len(bodies) > group_module.SYNC_THREADS
    destination = tmp_path / "dst"
    group = LocalGroup()
    try:
        staged = _stage_all(group, tmp_path / "src", destination, sorted(bodies))
        temps = sorted(item.temp for item in staged)
        calls: list[tuple[str, str]] = []
        for name in ("fdatasync", "rename", "fsync"):
            _record(monkeypatch, name, calls)
        assert group.commit(staged) == [None] * len(staged)
    finally:
        group.close()
    kinds = [kind for kind, _ in calls]
    synced = sorted(path for kind, path in calls if kind == "fdatasync")
    renamed = sorted(path for kind, path in calls if kind == "rename")
    assert synced == temps, "each temp file fdatasync-ed exactly once"
    assert renamed == temps, "each temp file renamed exactly once"
    last_sync = max(i for i, kind in enumerate(kinds) if kind == "fdatasync")
    first_rename = kinds.index("rename")
    last_rename = max(i for i, kind in enumerate(kinds) if kind == "rename")
    first_fsync = kinds.index("fsync")
    assert last_sync < first_rename, "a file renamed before every file was durable"
    assert last_rename < first_fsync, "a directory fsync-ed before its renames"
    assert {path for kind, path in calls if kind == "fsync"} == {
        str(destination / "d0"),
        str(destination / "d1"),
    }
    for name, body in bodies.items():
        assert (destination / name).read_bytes() == body


def test_a_temp_file_left_by_a_killed_attempt_is_rewritten_whole(tmp_path: Path) -> None:
    bodies = _sources(tmp_path / "src", 1)
    (name,) = bodies
    destination = tmp_path / "dst"
    temp, _ = session_paths(parse_url(str(destination / name)), "group-test-0")
    Path(temp).parent.mkdir(parents=True)
    Path(temp).write_bytes(b"left by a killed attempt " * 10_000)  # longer than the file
    group = LocalGroup()
    try:
        staged = _stage_all(group, tmp_path / "src", destination, [name])
        assert staged[0].temp == temp, "the retry writes the same temp name"
        assert group.commit(staged) == [None]
    finally:
        group.close()
    assert (destination / name).read_bytes() == bodies[name]
    assert not Path(temp).exists()


def test_a_source_changed_before_the_commit_is_not_published(tmp_path: Path) -> None:
    bodies = _sources(tmp_path / "src", 3)
    names = sorted(bodies)
    destination = tmp_path / "dst"
    group = LocalGroup()
    try:
        staged = _stage_all(group, tmp_path / "src", destination, names)
        (tmp_path / "src" / names[1]).write_bytes(b"rewritten after it was read")
        results = group.commit(staged)
    finally:
        group.close()
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], SourceChangedError)
    assert "source changed during the transfer" in str(results[1])
    assert "nothing was published" in str(results[1])
    assert not (destination / names[1]).exists()
    assert not Path(staged[1].temp).exists()
    for name in (names[0], names[2]):
        assert (destination / name).read_bytes() == bodies[name]


def test_a_failed_fdatasync_fails_the_commit_and_publishes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bodies = _sources(tmp_path / "src", 12)
    names = sorted(bodies)
    destination = tmp_path / "dst"
    group = LocalGroup()
    try:
        staged = _stage_all(group, tmp_path / "src", destination, names)
        failing = staged[0].temp  # the first of a thread's slice: the rest still synced
        calls = _record(monkeypatch, "fdatasync", fail=lambda path: path == failing)
        renames = _record(monkeypatch, "rename")
        with pytest.raises(StaccatoError, match="making the written files durable"):
            group.commit(staged)
    finally:
        group.close()
    assert renames == []
    assert sorted(path for _, path in calls) == sorted(item.temp for item in staged)
    for item, name in zip(staged, names, strict=True):
        assert not (destination / name).exists()
        assert Path(item.temp).read_bytes() == bodies[name], "left for the retry"
    assert group_module.SYNC_THREADS < len(staged)


def test_a_staged_source_is_read_again_only_while_its_mtime_cannot_prove_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local source modified within its mtime's resolution (here: a file system whose
    mtimes are taken as 2 s coarse) is read twice before it is staged, one modified
    long before is read once: as ``stat_source`` + ``needs_second_read`` decide for
    a single transfer (the batch decides it from the ``fstat`` without building an
    ``ObjectInfo``)."""
    from staccato.activities import small_copy

    monkeypatch.setattr(small_copy, "mtime_resolution_of", lambda kind: 2.0)
    reads: list[int] = []
    real_read = small_copy._read_fd

    def counted(fd: int, size: int) -> bytes:
        reads.append(size)
        return real_read(fd, size)

    monkeypatch.setattr(small_copy, "_read_fd", counted)
    fresh, old = tmp_path / "fresh.bin", tmp_path / "old.bin"
    fresh.write_bytes(b"f" * 100)
    old.write_bytes(b"o" * 100)
    past = time.time() - 3600
    os.utime(old, (past, past))
    assert small_copy._read_local(str(fresh), 1000) is not None
    assert len(reads) == 2
    reads.clear()
    assert small_copy._read_local(str(old), 1000) is not None
    assert len(reads) == 1


@pytest.mark.parametrize("listed", [True, False])
def test_a_target_that_is_not_a_regular_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listed: bool
) -> None:
    """What is at a target name is checked as a single transfer checks it (a
    directory, a link, a FIFO refused; a regular file replaced), from one ``scandir``
    of the directory (``listed``) or, for a directory over the listing limit, an
    ``lstat`` per file; a directory made at a name after the batch first wrote there
    is refused by the rename."""
    from staccato.errors import NotAFileError, PermanentError

    if not listed:
        monkeypatch.setattr(group_module, "LISTED_DIRECTORY_MAX", 0)
    out = tmp_path / "out"
    out.mkdir()
    (out / "dir").mkdir()
    (out / "link").symlink_to(out / "nowhere")
    os.mkfifo(out / "pipe")
    (out / "old").write_bytes(b"old")
    group = LocalGroup()
    try:
        staged = [group.stage(parse_url(str(out / "new")), "k-new", b"new")]
        with pytest.raises(NotAFileError, match="is a directory"):
            group.stage(parse_url(str(out / "dir")), "k-dir", b"x")
        with pytest.raises(PermanentError, match="symbolic link"):
            group.stage(parse_url(str(out / "link")), "k-link", b"x")
        with pytest.raises(PermanentError, match="not a regular file"):
            group.stage(parse_url(str(out / "pipe")), "k-pipe", b"x")
        staged.append(group.stage(parse_url(str(out / "old")), "k-old", b"replaced"))
        staged.append(group.stage(parse_url(str(out / "late")), "k-late", b"late"))
        (out / "late").mkdir()  # made after the check: the rename refuses it
        errors = group.commit(staged)
    finally:
        group.close()
    assert errors[:2] == [None, None], errors
    assert isinstance(errors[2], NotAFileError), errors
    assert (out / "new").read_bytes() == b"new"
    assert (out / "old").read_bytes() == b"replaced"
    assert (out / "late").is_dir() and (out / "link").is_symlink()
    assert not [p for p in out.iterdir() if TEMP_SUFFIX in p.name]
