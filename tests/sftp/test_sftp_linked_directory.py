"""A destination directory named through a symbolic link, on an SFTP server: refused
as a local one is (``staccato.endpoints.file.driver.check_parent``), naming the real
path, for a dataset's small files (written by its batches), its large files (child
transfers) and a single transfer; nothing is written through the link (a tester's
dataset overwrote a file outside its destination root). The check costs one REALPATH
per directory and batch, not one per file."""

from __future__ import annotations

import os
from pathlib import Path

from staccato.activities.object_copy import copy_object
from staccato.client import StaccatoClient
from staccato.datasets.models import DatasetState
from staccato.endpoints.sftp.protocol import StaccatoSFTP
from staccato.models import TransferOptions
from tests.dataset_checks import MiB, run_dataset
from tests.helpers import run_cli

OPTIONS = TransferOptions(chunk_size=1 * MiB, streams=2)
LINKED = "names its directory through a symbolic link"


def _victim(work: Path) -> tuple[Path, dict[str, bytes]]:
    """A directory outside the destination root holding files a dataset must not touch."""
    victim = work / "victimdir"
    victim.mkdir()
    held = {"g": b"precious", "big": b"precious big"}
    for name, data in held.items():
        (victim / name).write_bytes(data)
    return victim, held


def _contents(directory: Path) -> dict[str, bytes]:
    """Every entry under ``directory`` (recursively), files with their bytes."""
    found: dict[str, bytes] = {}
    for base, dirs, files in os.walk(directory):
        for name in dirs:
            found[os.path.relpath(os.path.join(base, name), directory) + "/"] = b""
        for name in files:
            path = os.path.join(base, name)
            found[os.path.relpath(path, directory)] = Path(path).read_bytes()
    return found


async def test_a_dataset_to_sftp_fails_the_files_under_a_linked_directory(
    sftp_client: StaccatoClient, sftp_url, data_dir: Path
) -> None:
    """A link in the destination root to a directory outside it: its small file, its
    large file and a file in a directory that would be made inside it each fail
    naming the real path; the files outside the root keep their bytes (no directory
    made there either); the other files are copied."""
    work = Path(os.path.realpath(data_dir))
    source, destination = work / "srcA", work / "dstB"
    (source / "sub" / "deeper").mkdir(parents=True)
    (source / "other").mkdir()
    (source / "f").write_bytes(b"a")
    (source / "other" / "h").write_bytes(b"h" * 100)
    (source / "sub" / "g").write_bytes(b"b")
    (source / "sub" / "big").write_bytes(os.urandom(3 * MiB + 1))
    (source / "sub" / "deeper" / "k").write_bytes(b"k")
    victim, held = _victim(work)
    before = _contents(victim)
    destination.mkdir()
    os.symlink(victim, destination / "sub")
    final = await run_dataset(
        sftp_client, str(source), sftp_url(destination), options=OPTIONS, small_file_max=1 * MiB
    )
    assert final.state == DatasetState.completed_with_errors, final
    reasons = {f.name: f.reason for f in final.failures}
    assert sorted(reasons) == ["sub/big", "sub/deeper/k", "sub/g"], final.failures
    for name, reason in reasons.items():
        real = sftp_url((victim / name.removeprefix("sub/")).parent)
        assert LINKED in reason and reason.endswith(f"to the real directory, {real}"), reason
    assert _contents(victim) == before  # bytes equal, no temp file, no directory made
    assert (victim / "g").read_bytes() == held["g"]
    assert (destination / "f").read_bytes() == b"a"
    assert (destination / "other" / "h").read_bytes() == b"h" * 100
    assert final.files_done == 2, final


def test_a_single_cp_to_sftp_through_a_linked_directory_is_refused(
    temporal_server, sftp_worker, sftp_url, data_dir: Path
) -> None:
    """``cp FILE sftp://…/dstB/sub/g`` where ``dstB/sub`` links to a directory: exit 1
    naming the real path, nothing written there (the file keeps its bytes, no temp
    file); the real path itself is copied to."""
    args = dict(address=temporal_server.address, task_queue=sftp_worker.task_queue)
    work = Path(os.path.realpath(data_dir))
    (work / "new-g").write_bytes(b"b")
    victim, _ = _victim(work)
    before = _contents(victim)
    (work / "dstB").mkdir()
    os.symlink(victim, work / "dstB" / "sub")
    done = run_cli("cp", "-q", str(work / "new-g"), sftp_url(work / "dstB" / "sub" / "g"), **args)
    assert done.returncode == 1, done
    assert LINKED in done.stderr, done.stderr
    assert f"by its real path, {sftp_url(victim / 'g')}," in done.stderr, done.stderr
    assert _contents(victim) == before
    real = run_cli("cp", "-q", str(work / "new-g"), sftp_url(victim / "g"), **args)
    assert real.returncode == 0, real
    assert (victim / "g").read_bytes() == b"b"
    # a path spelled with '//' names no link: not refused
    url = sftp_url(victim / "g2")
    slash = url.index("/", len("sftp://"))
    spelled = run_cli("cp", "-q", str(work / "new-g"), url[:slash] + "/" + url[slash:], **args)
    assert spelled.returncode == 0, spelled
    assert (victim / "g2").read_bytes() == b"b"


def test_a_batch_asks_the_real_path_once_per_directory(
    driver_env, sftp_url, data_dir: Path, monkeypatch
) -> None:
    """The cost of the check: files copied into two directories within one
    ``directory_memo`` block (a dataset's batch) ask REALPATH once per directory, not
    per file; a lone transfer's prepare asks it once."""
    from staccato.endpoints.base import directory_memo  # new with the check

    asked: list[str] = []
    real_path = StaccatoSFTP.real_path

    def counting(self: StaccatoSFTP, path: str) -> str:
        asked.append(path)
        return real_path(self, path)

    monkeypatch.setattr(StaccatoSFTP, "real_path", counting)
    work = Path(os.path.realpath(data_dir))
    (work / "src").mkdir()
    (work / "dst" / "one").mkdir(parents=True)
    (work / "dst" / "two").mkdir()
    options = TransferOptions(chunk_size=1 * MiB, streams=1)
    with directory_memo():
        for i in range(8):
            source = work / "src" / f"f{i}"
            source.write_bytes(b"x" * i)
            target = work / "dst" / ("one" if i % 2 else "two") / f"f{i}"
            copy_object(f"file://{source}", sftp_url(target), options, f"key-{i}", lambda: None)
    assert sorted(asked) == [str(work / "dst" / "one"), str(work / "dst" / "two")], asked
    assert (work / "dst" / "one" / "f7").read_bytes() == b"x" * 7
    asked.clear()
    copy_object(
        f"file://{work / 'src' / 'f1'}", sftp_url(work / "dst" / "f1"), options, "k", lambda: None
    )
    assert asked == [str(work / "dst")], asked


async def test_a_dataset_to_an_sftp_root_named_through_a_link_fails_once(
    sftp_client: StaccatoClient, sftp_url, data_dir: Path
) -> None:
    """A destination root that is a link (or under one) fails the dataset up front,
    naming the real root, instead of each of its files; nothing is written there."""
    work = Path(os.path.realpath(data_dir))
    source = work / "src"
    (source / "d").mkdir(parents=True)
    for name in ("a", "b", "d/c"):
        (source / name).write_bytes(name.encode())
    real = work / "real"
    real.mkdir()
    os.symlink(real, work / "link")
    final = await run_dataset(
        sftp_client, str(source), sftp_url(work / "link" / "dst"), options=OPTIONS
    )
    assert final.state == DatasetState.failed, final
    assert LINKED in (final.error or ""), final
    assert f"by its real path, {sftp_url(real / 'dst')}," in (final.error or ""), final
    assert not final.failures, final.failures
    assert list(real.iterdir()) == []


def test_a_sync_level_judges_no_file_through_a_linked_directory(
    temporal_server, sftp_worker, sftp_url, data_dir: Path
) -> None:
    """``cp --sync-level size FILE sftp://…/dstB/sub/g`` where ``dstB/sub`` links to a
    directory holding a ``g`` of the same size: refused as the copy refuses it (it
    said "up to date" from the file where the link leads); that file is untouched."""
    args = dict(address=temporal_server.address, task_queue=sftp_worker.task_queue)
    work = Path(os.path.realpath(data_dir))
    (work / "new-g").write_bytes(b"new bytes")
    victim, _ = _victim(work)
    (victim / "g").write_bytes(b"old bytes")  # the same size
    before = _contents(victim)
    (work / "dstB").mkdir()
    os.symlink(victim, work / "dstB" / "sub")
    for level in ("exists", "size"):
        done = run_cli(
            "cp", "--sync-level", level, str(work / "new-g"), sftp_url(work / "dstB" / "sub" / "g"),
            **args,
        )  # fmt: skip
        assert done.returncode == 1, (level, done.stdout, done.stderr)
        assert LINKED in done.stderr, done.stderr
        assert f"by its real path, {sftp_url(victim / 'g')}," in done.stderr, done.stderr
        assert "up to date" not in done.stderr, done.stderr
    assert _contents(victim) == before
