"""A real OpenSSH sshd with SFTP on 127.0.0.1, for tests.

Everything lives under one directory: config, ed25519 host key, a fresh ed25519 client
key whose public half is the only authorized key, a ``known_hosts`` file naming the
host key for ``[127.0.0.1]:PORT``, the pid file and the log. Only public-key login is
accepted, for the current user. ``connection_count()`` counts established TCP
connections to the server's port, so tests can assert a connection cap.

Units: durations in seconds.
"""

from __future__ import annotations

import getpass
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers.temporal_server import (
    LOCALHOST,
    MissingBinaryError,
    Scope,
    ServerProcess,
    fail_missing,
    find_binary,
    free_port,
)

SSHD_INSTALL_HINT = (
    "OpenSSH is missing: apt-get install -y --no-install-recommends "
    "openssh-server openssh-client (provides /usr/sbin/sshd and ssh-keygen)"
)

_TCP_ESTABLISHED = "01"


def sshd_binary() -> str:
    """Absolute path of sshd (it re-executes itself, so it must be absolute)."""
    return find_binary(["/usr/sbin/sshd", "/usr/local/sbin/sshd"], SSHD_INSTALL_HINT)


def _generate_key(path: Path, comment: str) -> None:
    """Create an unencrypted ed25519 key pair ``path`` / ``path.pub`` with ssh-keygen."""
    keygen = find_binary(["ssh-keygen"], SSHD_INSTALL_HINT)
    subprocess.run(
        [keygen, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
    )
    path.chmod(0o600)


def established_connections(port: int, host: str = LOCALHOST) -> int:
    """Number of ESTABLISHED TCP sockets whose local end is ``host:port``.

    Read from /proc/net/tcp (IPv4, this network namespace): each accepted connection of
    a server listening on ``port`` counts once.
    """
    want_port = f"{port:04X}"
    want_host = "".join(f"{int(part):02X}" for part in reversed(host.split(".")))
    count = 0
    with open("/proc/net/tcp") as table:
        next(table, None)  # header
        for line in table:
            fields = line.split()
            if len(fields) < 4:
                continue
            local_host, local_port = fields[1].split(":")
            if local_port == want_port and local_host == want_host:
                if fields[3] == _TCP_ESTABLISHED:
                    count += 1
    return count


def connection_owners(port: int, host: str = LOCALHOST) -> list[str]:
    """Who holds the client ends of the ESTABLISHED connections to ``host:port``: one
    line per socket, ``pid <pid> <command line>``, and the ``flock`` locks each of
    those processes holds (from /proc/locks), for a test's failure message. Slow (it
    reads every process's descriptors): call it only when something is already wrong."""
    want = f"{''.join(f'{int(part):02X}' for part in reversed(host.split('.')))}:{port:04X}"
    inodes: set[str] = set()
    with open("/proc/net/tcp") as table:
        next(table, None)
        for line in table:
            fields = line.split()
            if len(fields) > 9 and fields[2] == want and fields[3] == _TCP_ESTABLISHED:
                inodes.add(fields[9])
    lines: list[str] = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            descriptors = os.listdir(f"/proc/{pid}/fd")
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:120]
        except OSError:
            continue
        targets = []
        for fd in descriptors:
            try:
                targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:
                continue  # closed meanwhile (the listing's own descriptor, too)
        held = [t for t in targets if t.startswith("socket:[") and t[8:-1] in inodes]
        if held:
            lines.append(f"pid {pid} holds {len(held)}: {command.decode(errors='replace')}")
    try:
        locks = Path("/proc/locks").read_text().splitlines()
    except OSError:
        locks = []
    owners = {line.split()[1] for line in lines}
    lines += [f"lock {lock}" for lock in locks if "FLOCK" in lock and lock.split()[4] in owners]
    return lines


class SshdServer(ServerProcess):
    """OpenSSH sshd on ``127.0.0.1:port`` (``-D`` foreground, ``-E`` log file).

    Config: own ed25519 host key, ``StrictModes no``, public-key auth only
    (``PasswordAuthentication no``, ``KbdInteractiveAuthentication no``),
    ``Subsystem sftp internal-sftp``, ``AuthorizedKeysFile`` = a file in ``tmp_dir``
    holding a freshly generated ed25519 client key. Keys are generated once per
    instance; ``stop()``/``start()`` reuse port, keys and known_hosts.

    ``stop()`` and ``kill()`` also end the per-connection sshd processes, so open SFTP
    sessions drop (as when a host goes away).

    Args:
        tmp_dir: directory for config, keys, known_hosts, pid file and logs.
        port: listening port; picked free if None.
        max_startups: ``MaxStartups`` value (e.g. ``"10:30:100"``, or ``"4"``), None =
            OpenSSH default (10:30:100).
        max_sessions: ``MaxSessions`` (sessions per connection), None = default (10).
        extra_config: raw sshd_config lines appended at the end.
    """

    name = "sshd"
    ready_timeout_s = 60.0  # a readiness wait: quick when quiet, several times that at load
    ready_interval_s = 0.05
    stop_signal = signal.SIGTERM
    stop_grace_s = 5.0

    def __init__(
        self,
        tmp_dir: str | os.PathLike[str],
        port: int | None = None,
        max_startups: str | int | None = None,
        max_sessions: int | None = None,
        extra_config: str = "",
    ) -> None:
        super().__init__(Path(tmp_dir).resolve())
        self.binary = sshd_binary()
        self.port = port or free_port()
        self.max_startups = max_startups
        self.max_sessions = max_sessions
        self.extra_config = extra_config
        self.user = getpass.getuser()
        self.host_key_path = self.work_dir / "ssh_host_ed25519_key"
        self.client_key_path = self.work_dir / "id_ed25519"
        self.authorized_keys_path = self.work_dir / "authorized_keys"
        self.known_hosts_path = self.work_dir / "known_hosts"
        self.config_path = self.work_dir / "sshd_config"
        self.sshd_log_path = self.work_dir / "sshd.log"
        self._make_keys()

    # -- public -------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """Listening address, ``127.0.0.1``."""
        return LOCALHOST

    def url(self, path: str) -> str:
        """``sftp://USER@127.0.0.1:PORT/path`` for an absolute ``path``."""
        return f"sftp://{self.user}@{LOCALHOST}:{self.port}/{path.lstrip('/')}"

    def ssh_options(self) -> list[str]:
        """Options for the OpenSSH ``ssh``/``sftp`` clients to log in to this server."""
        return [
            "-o", f"Port={self.port}",
            "-o", f"User={self.user}",
            "-o", f"IdentityFile={self.client_key_path}",
            "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts_path}",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes",
        ]  # fmt: skip

    def connection_count(self) -> int:
        """Established TCP connections to this server's port right now."""
        return established_connections(self.port)

    # -- ServerProcess ------------------------------------------------------------------

    def _make_keys(self) -> None:
        if not self.host_key_path.exists():
            _generate_key(self.host_key_path, "staccato-test-host")
        if not self.client_key_path.exists():
            _generate_key(self.client_key_path, "staccato-test-client")
        client_pub = (self.work_dir / "id_ed25519.pub").read_text().strip()
        self.authorized_keys_path.write_text(client_pub + "\n")
        self.authorized_keys_path.chmod(0o600)
        host_pub = (self.work_dir / "ssh_host_ed25519_key.pub").read_text().split()
        self.known_hosts_path.write_text(f"[{LOCALHOST}]:{self.port} {host_pub[0]} {host_pub[1]}\n")

    def _before_start(self) -> None:
        # sshd refuses to start without its privilege-separation directory.
        try:
            Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
        except PermissionError as exc:
            raise RuntimeError(
                "sshd needs the directory /run/sshd: create it as root "
                "(mkdir -p /run/sshd && chmod 755 /run/sshd)"
            ) from exc
        lines = [
            f"Port {self.port}",
            f"ListenAddress {LOCALHOST}",
            f"HostKey {self.host_key_path}",
            f"PidFile {self.work_dir / 'sshd.pid'}",
            "StrictModes no",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            f"AuthorizedKeysFile {self.authorized_keys_path}",
            f"AllowUsers {self.user}",
            "PermitRootLogin prohibit-password",
            "Subsystem sftp internal-sftp",
            "X11Forwarding no",
            "PrintMotd no",
            "UseDNS no",
            "LogLevel VERBOSE",
        ]
        if self.max_startups is not None:
            lines.append(f"MaxStartups {self.max_startups}")
        if self.max_sessions is not None:
            lines.append(f"MaxSessions {self.max_sessions}")
        if self.extra_config:
            lines.append(self.extra_config)
        self.config_path.write_text("\n".join(lines) + "\n")
        self.validate_config()

    def validate_config(self) -> None:
        """``sshd -t`` on the config, so a bad option shows up as a clear error rather
        than a start-up timeout.

        Raises:
            RuntimeError: sshd rejected the config (its message included).
        """
        check = subprocess.run(
            [self.binary, "-t", "-f", str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if check.returncode != 0:
            raise RuntimeError(f"sshd config {self.config_path} rejected: {check.stderr}")

    def _argv(self) -> list[str]:
        return [
            self.binary, "-D",
            "-f", str(self.config_path),
            "-E", str(self.sshd_log_path),
        ]  # fmt: skip

    def _is_ready(self) -> bool:
        with socket.create_connection((LOCALHOST, self.port), timeout=1) as sock:
            return sock.recv(64).startswith(b"SSH-")


def sshd_fixture(scope: Scope = "session", **kwargs: Any) -> Any:
    """Build a pytest fixture yielding a started ``SshdServer``.

    ``kwargs`` go to ``SshdServer`` (``max_startups``, ``max_sessions``,
    ``extra_config``). Files live in a fresh ``tmp_path_factory`` dir; the server is
    stopped by PID at teardown.
    """

    @pytest.fixture(scope=scope)
    def _fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdServer]:
        try:
            server = SshdServer(tmp_path_factory.mktemp("sshd"), **kwargs)
        except MissingBinaryError as exc:
            fail_missing(exc)
            raise
        server.start()
        try:
            yield server
        finally:
            server.stop()

    return _fixture


__all__ = ["SshdServer", "established_connections", "sshd_binary", "sshd_fixture"]
