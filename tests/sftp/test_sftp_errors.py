"""Bad input for the sftp endpoint: a clear message naming the problem, exit 1 for a
failed transfer (2 for a usage error), failing at once (not retried), and nothing left
at the destination. Also a server that asks for keyboard-interactive as a second
factor."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import leftovers, mounted_tmpfs, run_cli, write_random
from tests.servers.sshd import SshdServer

# A permanent error fails on the first attempt; a retried one would go on for the
# default --retry-for (24 h), past run_cli's 120 s. A correctness bound, not a speed
# one: a cp at load 15 can take several times its few quiet seconds
FAST_S = 90


def host_fingerprint(server: SshdServer) -> str:
    """``SHA256:...`` of the server's host key, as ``ssh-keygen -l`` prints it."""
    out = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(server.work_dir / "ssh_host_ed25519_key.pub")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return re.search(r"SHA256:\S+", out).group(0)


@pytest.fixture
def cli(temporal_server, sftp_worker):
    def run(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
        started = time.monotonic()
        result = run_cli(
            "cp",
            "-q",
            "--chunk-size",
            "1MiB",
            *args,
            address=temporal_server.address,
            task_queue=sftp_worker.task_queue,
        )
        return result, time.monotonic() - started

    return run


@pytest.fixture
def source(data_dir: Path) -> Path:
    path = data_dir / "src.bin"
    write_random(path, 3 * 1024 * 1024 + 5, seed=3)
    return path


def _failed(outcome, *expected: str, destination: Path | None = None) -> None:
    result, elapsed = outcome
    print(f"[{elapsed:.1f} s] {result.stderr.strip()}")
    assert result.returncode == 1, (result.returncode, result.stderr)
    for text in expected:
        assert text in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert elapsed < FAST_S, f"took {elapsed:.1f} s: was a permanent error retried?"
    if destination is not None:
        assert not destination.exists()
        if destination.parent.is_dir():
            assert leftovers(destination.parent) == []


def test_unknown_host_key(cli, source: Path, data_dir: Path, sshd_server: SshdServer) -> None:
    destination = data_dir / "dst.bin"
    _failed(
        cli(str(source), f"sftp://unknownkey{destination}"),
        "unknown host key for unknown.staccato.test",
        host_fingerprint(sshd_server),
        "STACCATO_SFTP_TRUST_NEW_HOSTS=1",
        destination=destination,
    )


def test_changed_host_key(
    cli, source: Path, data_dir: Path, sshd_server: SshdServer, sftp_no_rename
) -> None:
    destination = data_dir / "dst.bin"
    _failed(
        cli(str(source), f"sftp://changedkey{destination}"),
        "HOST KEY CHANGED for changed.staccato.test",
        host_fingerprint(sshd_server),  # what the server shows
        host_fingerprint(sftp_no_rename),  # what known_hosts holds
        destination=destination,
    )


def test_wrong_user(cli, source: Path, data_dir: Path, sshd_server: SshdServer) -> None:
    destination = data_dir / "dst.bin"
    _failed(
        cli(str(source), f"sftp://nosuchuser@127.0.0.1:{sshd_server.port}{destination}"),
        f"authentication failed for nosuchuser@127.0.0.1:{sshd_server.port}",
        destination=destination,
    )


def test_missing_key(cli, source: Path, data_dir: Path, sftp_home: Path) -> None:
    destination = data_dir / "dst.bin"
    _failed(
        cli(str(source), f"sftp://nokey{destination}"),
        "authentication failed",
        f"{sftp_home}/.ssh/missing_key: no such key file",
        destination=destination,
    )


def test_permission_denied_destination(
    cli, source: Path, data_dir: Path, sftp_readonly: SshdServer
) -> None:
    destination = data_dir / "dst.bin"
    _failed(
        cli(str(source), sftp_readonly.url(str(destination))),
        "permission denied",
        destination=destination,
    )


def test_permission_denied_source(
    cli, source: Path, data_dir: Path, sftp_readonly: SshdServer
) -> None:
    destination = data_dir / "dst.bin"
    _failed(
        cli(sftp_readonly.url(str(source)), str(destination)),
        "permission denied",
        destination=destination,
    )


def test_no_such_file(cli, sftp_url, data_dir: Path) -> None:
    destination = data_dir / "dst.bin"
    _failed(
        cli(sftp_url(data_dir / "nope.bin"), str(destination)),
        "nope.bin: no such file",
        destination=destination,
    )


def test_source_is_a_directory(cli, sftp_url, data_dir: Path) -> None:
    destination = data_dir / "dst.bin"
    _failed(cli(sftp_url(data_dir), str(destination)), "is a directory", destination=destination)


def test_destination_directory_missing(cli, source: Path, sftp_url, data_dir: Path) -> None:
    destination = data_dir / "missing" / "dst.bin"
    _failed(
        cli(str(source), sftp_url(destination)),
        f"destination directory {data_dir}/missing does not exist",
        destination=destination,
    )


def test_a_destination_ending_in_slash_is_a_usage_error(
    cli, source: Path, sftp_url, data_dir: Path
) -> None:
    """As for a local path and an S3 key: exit 2 naming the full name to give; nothing
    written into the directory."""
    (data_dir / "into").mkdir()
    text = sftp_url(data_dir / "into") + "/"
    result, _ = cli(str(source), text)
    assert result.returncode == 2, result
    assert f"destination {text!r} ends in '/'" in result.stderr, result.stderr
    assert f"e.g. {text}src.bin" in result.stderr, result.stderr
    assert list((data_dir / "into").iterdir()) == []


def test_second_factor_fails_at_once(
    cli, source: Path, data_dir: Path, sftp_second_factor: SshdServer
) -> None:
    """A server that asks for keyboard-interactive: key accepted, then a second factor
    wanted: never prompt, not retried."""
    destination = data_dir / "dst.bin"
    _failed(
        cli(str(source), sftp_second_factor.url(str(destination))),
        "asks for keyboard-interactive",
        "never prompt",
        destination=destination,
    )


def test_password_in_url_is_refused(temporal_server, sftp_worker, data_dir: Path) -> None:
    destination = data_dir / "dst.bin"
    result = run_cli(
        "cp",
        "sftp://root:hunter2@127.0.0.1/etc/hostname",
        str(destination),
        address=temporal_server.address,
        task_queue=sftp_worker.task_queue,
    )
    assert result.returncode == 2, result
    assert "refusing a password" in result.stderr
    assert "ssh-agent, key files or ~/.ssh/config" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    assert not destination.exists()


def test_destination_on_a_read_only_file_system_fails_at_once(
    cli, source: Path, sftp_url, data_dir: Path
) -> None:
    """A single file into a directory of a read-only file system on the server: OpenSSH
    answers the bare SSH_FX_FAILURE for EROFS, which was retried for the whole
    --retry-for (tester72); told by statvfs@openssh.com as a dataset's root is, it
    fails at once naming the read-only file system."""
    mount = data_dir / "ro"
    with mounted_tmpfs(mount, "5m"):
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        destination = mount / "dst.bin"
        _failed(
            cli(str(source), sftp_url(destination)),
            f"the file system holding {mount} is read-only",
            destination=destination,
        )
        assert list(mount.iterdir()) == []
