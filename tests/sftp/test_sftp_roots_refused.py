"""SFTP roots and destinations refused before anything is written: one server named
with and without a user is one server (host and port as named), so a dataset into
its own source, or a fan-out writing one file twice, is refused (exit 2); a dataset
root on the server's /proc fails the dataset up front in the words of a local one."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.helpers import run_cli
from tests.servers.sshd import SshdServer
from tests.test_unwritable_roots import NO_CAPACITY


def _without_user(server: SshdServer, path: Path | str) -> str:
    """``sftp://127.0.0.1:PORT/path``: the server of ``server.url``, no user named (the
    worker logs in as its own user, the one ``server.url`` names)."""
    return f"sftp://127.0.0.1:{server.port}{path}"


def test_a_dataset_into_its_own_source_is_refused_whoever_is_named(
    temporal_server, sftp_worker, sshd_server: SshdServer, data_dir: Path
) -> None:
    """``cp -r sftp://USER@host/d/src2 sftp://host/d/src2/bk`` ran, writing inside its
    own source (compared as text, the two URLs shared no prefix)."""
    args = dict(address=temporal_server.address, task_queue=sftp_worker.task_queue)
    source = data_dir / "src2"
    source.mkdir()
    (source / "x.txt").write_bytes(b"x")
    for src, dst in [
        (sshd_server.url(str(source)), _without_user(sshd_server, source / "bk")),
        (_without_user(sshd_server, source), sshd_server.url(str(source / "bk"))),
        (_without_user(sshd_server, source / "bk"), sshd_server.url(str(source))),
    ]:
        done = run_cli("cp", "-r", "-q", "--retry-for", "10", src, dst, **args)
        assert done.returncode == 2, (src, dst, done)
        assert f"source {src} and destination {dst} overlap" in done.stderr, done.stderr
        assert sorted(p.name for p in source.iterdir()) == ["x.txt"]


def test_a_fan_out_to_one_file_named_with_and_without_a_user_is_refused(
    temporal_server, sftp_worker, sshd_server: SshdServer, data_dir: Path
) -> None:
    """Two transfers (two locks) would have written one file at once."""
    args = dict(address=temporal_server.address, task_queue=sftp_worker.task_queue)
    (data_dir / "a.txt").write_bytes(b"a")
    named, bare = (
        sshd_server.url(str(data_dir / "b.txt")),
        _without_user(sshd_server, data_dir / "b.txt"),
    )
    done = run_cli("cp", "--retry-for", "10", str(data_dir / "a.txt"), named, bare, **args)
    assert done.returncode == 2, done
    assert f"destinations {named} and {bare} are one file" in done.stderr, done.stderr
    assert sorted(p.name for p in data_dir.iterdir()) == ["a.txt"]


def test_a_dataset_root_on_the_servers_proc_fails_up_front(
    temporal_server, sftp_worker, sshd_server: SshdServer, data_dir: Path
) -> None:
    """It listed the source, then failed every file "destination directory /proc/xx:
    no such file or directory" and advised --retry-failed, which can never help."""
    args = dict(address=temporal_server.address, task_queue=sftp_worker.task_queue)
    source = data_dir / "src"
    source.mkdir()
    for i in range(4):
        (source / f"f{i}").write_bytes(b"p" * (i + 1))
    path = f"/proc/staccato-test-{uuid.uuid4().hex[:8]}"
    root = sshd_server.url(path)
    done = run_cli("cp", "-r", "-q", str(source), root, **args)
    assert done.returncode == 1, done
    expected = f"destination directory {path} on 127.0.0.1: the file system holding /proc"
    assert f"{expected} {NO_CAPACITY}" in done.stderr, done.stderr
    assert "--retry-failed" not in done.stderr and "Traceback" not in done.stderr
    shown = json.loads(run_cli("status", "--json", root, **args).stdout)
    assert shown["state"] == "failed" and NO_CAPACITY in shown["error"], shown
    assert shown["files_failed"] == 0 and shown["failures"] == [], shown


def test_a_root_on_the_servers_proc_among_several_fails_alone(
    temporal_server, sftp_worker, sshd_server: SshdServer, data_dir: Path
) -> None:
    """That root's files fail with its reason (no --retry-failed advice); the local
    root is written."""
    from staccato.dataset_requests import fan_out_dataset_id

    args = dict(address=temporal_server.address, task_queue=sftp_worker.task_queue)
    source, good = data_dir / "src", data_dir / "good"
    source.mkdir()
    for i in range(4):
        (source / f"f{i}").write_bytes(b"q" * (i + 1))
    path = f"/proc/staccato-test-{uuid.uuid4().hex[:8]}"
    root = sshd_server.url(path)
    done = run_cli("cp", "-r", "-q", str(source), str(good), root, **args)
    assert done.returncode == 1, done
    assert "--retry-failed" not in done.stderr, done.stderr
    assert sorted(p.name for p in good.iterdir()) == [f"f{i}" for i in range(4)]
    dataset = fan_out_dataset_id(f"file://{source}", [f"file://{good}", root])
    shown = json.loads(run_cli("status", "--json", dataset, **args).stdout)
    assert shown["state"] == "completed_with_errors", shown
    assert len(shown["failures"]) == 4, shown
    for failure in shown["failures"]:
        assert failure["destination"] == root and NO_CAPACITY in failure["reason"], failure


def test_a_file_copied_onto_itself_named_with_and_without_a_user_is_refused(
    temporal_server, sftp_worker, sshd_server: SshdServer, data_dir: Path
) -> None:
    args = dict(address=temporal_server.address, task_queue=sftp_worker.task_queue)
    (data_dir / "a.txt").write_bytes(b"keep me")
    named, bare = (
        sshd_server.url(str(data_dir / "a.txt")),
        _without_user(sshd_server, data_dir / "a.txt"),
    )
    done = run_cli("cp", "--retry-for", "10", named, bare, **args)
    assert done.returncode == 2, done
    assert f"source and destination are the same object: {bare}" in done.stderr, done.stderr
    assert sorted(p.name for p in data_dir.iterdir()) == ["a.txt"]
    assert (data_dir / "a.txt").read_bytes() == b"keep me"


def test_a_dataset_root_the_server_cannot_make_fails_up_front(
    temporal_server, sftp_worker, sshd_server: SshdServer, data_dir: Path
) -> None:
    """A root under a directory that refuses new entries (chattr +i: even root's
    server) fails the dataset up front naming where, as a local root does: it failed
    each of its files with "permission denied" and advised a re-run."""
    args = dict(address=temporal_server.address, task_queue=sftp_worker.task_queue)
    source = data_dir / "src-ro"
    source.mkdir()
    for i in range(5):
        (source / f"f{i}").write_bytes(b"q" * (i + 1))
    closed = data_dir / "closed"
    closed.mkdir()
    made = subprocess.run(["chattr", "+i", str(closed)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"chattr +i is not available here: {made.stderr.strip()}")
    try:
        root = sshd_server.url(str(closed / "sub"))
        done = run_cli("cp", "-r", "-q", str(source), root, **args)
        shown = json.loads(run_cli("status", "--json", root, **args).stdout)
    finally:
        subprocess.run(["chattr", "-i", str(closed)], check=True)
    assert done.returncode == 1, done
    expected = f"destination directory {closed}/sub on 127.0.0.1 cannot be made: permission denied"
    assert f"{expected} in {closed}" in done.stderr, done.stderr
    assert "--retry-failed" not in done.stderr and "--sync-level" not in done.stderr, done.stderr
    assert shown["state"] == "failed" and "permission denied" in shown["error"], shown
    assert shown["files_failed"] == 0 and shown["failures"] == [], shown
    assert list(closed.iterdir()) == []


def test_a_missing_dataset_root_is_made_before_its_files(
    temporal_server, sftp_worker, sshd_server: SshdServer, data_dir: Path
) -> None:
    """A root that does not exist yet is made (mkdir -p) and the files copied."""
    args = dict(address=temporal_server.address, task_queue=sftp_worker.task_queue)
    source = data_dir / "src-new"
    (source / "d").mkdir(parents=True)
    (source / "d" / "g").write_bytes(b"g" * 10)
    root = data_dir / "a" / "b" / "c"
    done = run_cli("cp", "-r", "-q", str(source), sshd_server.url(str(root)), **args)
    assert done.returncode == 0, done
    assert (root / "d" / "g").read_bytes() == b"g" * 10


def test_files_under_a_read_only_mount_in_a_root_fail_at_once(
    temporal_server, sftp_worker, sshd_server: SshdServer, data_dir: Path
) -> None:
    """A dataset root whose ``ro/`` is a read-only mount on the server: the files under
    it (one in ``ro/``, one in a directory to make there) fail at once naming the
    read-only file system, the rest is copied (OpenSSH's bare SSH_FX_FAILURE for EROFS
    was retried for the whole --retry-for: tester72, for a single file)."""
    from tests.helpers import mounted_tmpfs

    args = dict(address=temporal_server.address, task_queue=sftp_worker.task_queue)
    source, root = data_dir / "src", data_dir / "dst"
    (source / "ro" / "new").mkdir(parents=True)
    (source / "ro" / "f.txt").write_bytes(b"f")
    (source / "ro" / "new" / "g.txt").write_bytes(b"g")
    (source / "top.txt").write_bytes(b"top")
    root.mkdir()
    with mounted_tmpfs(root / "ro", "5m") as mount:
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        done = run_cli("cp", "-r", "-q", str(source), sshd_server.url(str(root)), **args)
        assert done.returncode == 1, done
        said = " ".join(done.stderr.split())
        for name in ("ro/f.txt", "ro/new/g.txt"):
            assert f"failed: {name}:" in said, said
        assert said.count(f"the file system holding {mount}") >= 2, said
        assert list(mount.iterdir()) == []
    assert (root / "top.txt").read_bytes() == b"top"
