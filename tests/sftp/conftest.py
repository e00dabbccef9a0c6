"""SFTP test fixtures: extra OpenSSH servers with special behaviour, and workers
configured the way SSH users configure things.

Servers (all real OpenSSH ``sshd`` on 127.0.0.1, each also authorizing the client key
of the shared ``sshd_server`` fixture, so one key logs in everywhere):

* ``sshd_server`` (shared, tests/servers): stock ``internal-sftp`` (posix-rename,
  fsync, limits extensions).
* ``sftp_no_rename``: ``internal-sftp -P posix-rename,fsync``: refuses both OpenSSH
  extensions (a server without posix-rename; no server-side fsync).
* ``sftp_readonly``: ``internal-sftp -R -P read``: refuses every write and read
  (permission denied).
* ``sftp_second_factor``: ``AuthenticationMethods publickey,keyboard-interactive``
  (a server that asks for keyboard-interactive): the key is accepted, then a second
  factor is wanted.
* ``sftp_capped``: OpenSSH's ``sftp-server`` behind ``sftp_proxy.py`` (a relay run by
  ``ForceCommand``) that answers at most 32 requests in flight, drops the others and
  hides ``limits@openssh.com``; the relay's log (``proxy.log`` in its ``work_dir``)
  lists every dropped request.
* ``sftp_hand_removed``: ``sftp-server`` behind the relay with a trigger file
  (``remove-temp-at`` in its ``work_dir``): it removes a temp file just before publish.
* ``sftp_paced_fresh``: ``sftp-server`` behind the relay writing the fresh copy an
  SFTP publish makes after an earlier worker life (``*.staccato-fresh``) at
  :data:`PACED_FRESH_BYTES_PER_S` (4 MiB/s), every other request at full speed.
* ``sftp_shell_prints``: a login that prints a greeting before starting
  ``sftp-server`` (a shell start-up file that prints in non-interactive sessions).
* ``sftp_logged``: the standalone ``sftp-server -l INFO`` (``internal-sftp`` logs only
  to syslog) whose log (``sftp_log``)
  records ``close "PATH" bytes read R written W`` for every handle, also for handles
  left open by a killed client: the server-side count of bytes written. Run by
  ``ForceCommand``, so an exec request gets an SFTP server too (no server-side hashing).
* ``sftp_exec_logged``: the same logging ``sftp-server`` as the ``sftp`` subsystem
  (``Subsystem sftp ...``), log ``sftp_exec_log``; exec requests run commands (the
  server-side hashing of :mod:`staccato.endpoints.sftp.remote_hash` works).

Workers:

* ``sftp_worker`` / ``sftp_client``: HOME is a temp dir whose ``~/.ssh`` holds the
  client key as ``id_ed25519`` (a default identity), ``known_hosts`` (all servers
  above, plus a *wrong* key for the alias ``changed.staccato.test``) and ``config``
  with profiles: ``staccato-test`` (HostName/Port/User), ``nokey`` (an IdentityFile
  that does not exist, IdentitiesOnly), ``unknownkey`` / ``changedkey`` (HostKeyAlias
  with no / a wrong known key), ``trusting`` (``StrictHostKeyChecking accept-new``).
  No ssh-agent (``SSH_AUTH_SOCK`` empty).
* ``env_worker_env``: the environment for a worker configured with Staccato's own
  settings instead (``STACCATO_SSH_CONFIG=none``, ``STACCATO_SSH_IDENTITY``,
  ``STACCATO_SSH_KNOWN_HOSTS``), used by tests that start their own workers.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from staccato.client import StaccatoClient
from staccato.endpoints.sftp.pool import POOL
from tests.helpers import SESSION_WORKER_PROCESSES, WorkerProcess
from tests.servers.sshd import SshdServer

#: sftp-server logging every handle's close (with bytes read and written), started with
#: SIGPIPE ignored (``env --ignore-signal``, GNU coreutils: a shell's ``trap '' PIPE``
#: loses its quotes in a ``Subsystem`` line). sshd starts it with SIGPIPE at its default, and
#: when a client is SIGKILLed the per-connection sshd can exit while sftp-server still
#: answers requests from its pipe; its next reply then killed it by SIGPIPE before it
#: logged the closes of the handles the client left open (4 of 60 in 15 kills here;
#: a CI run saw 22 opens but 20 closes). Ignored, the write fails with EPIPE and
#: sftp-server exits through its clean-up, which logs them.
_LOGGED_SFTP_SERVER = "exec env --ignore-signal=PIPE /usr/lib/openssh/sftp-server -e -l INFO"


class ExecLoggedSshd(SshdServer):
    """sshd whose ``sftp`` subsystem is ``sftp-server -l INFO`` logging to ``sftp.log``
    in its work dir; exec requests run as on a stock server."""

    def _before_start(self) -> None:
        super()._before_start()
        log = self.work_dir / "sftp.log"
        text = self.config_path.read_text().replace(
            "Subsystem sftp internal-sftp",
            f"Subsystem sftp {_LOGGED_SFTP_SERVER} 2>>{log}",
        )
        self.config_path.write_text(text + "Match all\n  SetEnv SHLVL=1\n")
        self.validate_config()


class SecondFactorSshd(SshdServer):
    """sshd that wants a public key *and* keyboard-interactive (a second factor)."""

    def _before_start(self) -> None:
        super()._before_start()
        text = self.config_path.read_text().replace(
            "KbdInteractiveAuthentication no", "KbdInteractiveAuthentication yes"
        )
        self.config_path.write_text(text + "AuthenticationMethods publickey,keyboard-interactive\n")
        self.validate_config()


def _started(server: SshdServer, main: SshdServer) -> SshdServer:
    """Authorize ``main``'s client key too, then start."""
    main_pub = (main.work_dir / "id_ed25519.pub").read_text().strip()
    with open(server.authorized_keys_path, "a") as keys:
        keys.write(main_pub + "\n")
    server.start()
    return server


@pytest.fixture
def own_server(
    sshd_server: SshdServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SshdServer]:
    """An sshd of the test's own (it accepts the shared server's client key too), so
    only the worker under test connects to it and the test may stop it; stopped at the
    end."""
    server = _started(SshdServer(tmp_path_factory.mktemp("sshd-own")), sshd_server)
    try:
        yield server
    finally:
        server.stop()


def _server_fixture(factory):
    @pytest.fixture(scope="session")
    def fixture(
        sshd_server: SshdServer, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[SshdServer]:
        server = _started(factory(tmp_path_factory.mktemp("sshd-extra")), sshd_server)
        try:
            yield server
        finally:
            server.stop()

    return fixture


sftp_no_rename = _server_fixture(
    lambda d: SshdServer(
        d, extra_config="Match all\n  ForceCommand internal-sftp -P posix-rename,fsync"
    )
)
sftp_readonly = _server_fixture(
    lambda d: SshdServer(d, extra_config="Match all\n  ForceCommand internal-sftp -R -P read")
)
sftp_second_factor = _server_fixture(lambda d: SecondFactorSshd(d))
sftp_exec_logged = _server_fixture(lambda d: ExecLoggedSshd(d))
# The standalone sftp-server runs through the login shell (ForceCommand), and a bash
# started by sshd sources ~/.bashrc when its shell level is below 2: SHLVL=1 keeps the
# machine's shell start-up files (which may be slow or print) out of the test server.
sftp_logged = _server_fixture(
    lambda d: SshdServer(
        d,
        extra_config=(
            f"Match all\n  SetEnv SHLVL=1\n  ForceCommand {_LOGGED_SFTP_SERVER} "
            f"2>>{Path(d).resolve() / 'sftp.log'}"
        ),
    )
)


_PROXY = Path(__file__).resolve().parent / "sftp_proxy.py"


def _relay(directory: str, options: str) -> str:
    """sshd config running ``sftp_proxy.py OPTIONS`` in front of sftp-server."""
    work = Path(directory).resolve()
    return (
        "Match all\n  SetEnv SHLVL=1\n"
        f"  ForceCommand {sys.executable} {_PROXY} --log {work / 'proxy.log'} {options}"
    )


sftp_capped = _server_fixture(
    lambda d: SshdServer(d, extra_config=_relay(d, "--max-in-flight 32 --hide-limits"))
)
sftp_hand_removed = _server_fixture(
    lambda d: SshdServer(
        d,
        extra_config=_relay(d, f"--remove-temp-trigger {Path(d).resolve() / 'remove-temp-at'}"),
    )
)
#: bytes a second the ``sftp_paced_fresh`` server writes a publish's fresh copy at
PACED_FRESH_BYTES_PER_S = 4 * 1024 * 1024
sftp_paced_fresh = _server_fixture(
    lambda d: SshdServer(d, extra_config=_relay(d, f"--pace-fresh {PACED_FRESH_BYTES_PER_S}"))
)
sftp_shell_prints = _server_fixture(
    lambda d: SshdServer(
        d,
        extra_config=(
            "Match all\n  SetEnv SHLVL=1\n"
            "  ForceCommand echo 'Welcome to the build box'; exec /usr/lib/openssh/sftp-server"
        ),
    )
)


@pytest.fixture(scope="session")
def sftp_log(sftp_logged: SshdServer) -> Path:
    """The ``sftp-server -l INFO`` log of ``sftp_logged`` (empty before its first
    session)."""
    log = sftp_logged.work_dir / "sftp.log"
    log.touch()
    return log


@pytest.fixture(scope="session")
def sftp_exec_log(sftp_exec_logged: SshdServer) -> Path:
    """The ``sftp-server -l INFO`` log of ``sftp_exec_logged`` (empty before its first
    session)."""
    log = sftp_exec_logged.work_dir / "sftp.log"
    log.touch()
    return log


def known_hosts_lines(*servers: SshdServer) -> str:
    return "".join(server.known_hosts_path.read_text() for server in servers)


@pytest.fixture(scope="session")
def sftp_home(
    tmp_path_factory: pytest.TempPathFactory,
    sshd_server: SshdServer,
    sftp_no_rename: SshdServer,
    sftp_readonly: SshdServer,
    sftp_second_factor: SshdServer,
    sftp_logged: SshdServer,
    sftp_exec_logged: SshdServer,
) -> Path:
    """A HOME with ``~/.ssh/{id_ed25519,known_hosts,config}`` (see module docstring)."""
    home = tmp_path_factory.mktemp("home")
    ssh = home / ".ssh"
    ssh.mkdir(mode=0o700)
    key = ssh / "id_ed25519"
    key.write_bytes(sshd_server.client_key_path.read_bytes())
    key.chmod(0o600)
    other_key = (sftp_no_rename.work_dir / "ssh_host_ed25519_key.pub").read_text().split()
    (ssh / "known_hosts").write_text(
        known_hosts_lines(
            sshd_server,
            sftp_no_rename,
            sftp_readonly,
            sftp_second_factor,
            sftp_logged,
            sftp_exec_logged,
        )
        + f"changed.staccato.test {other_key[0]} {other_key[1]}\n"
    )
    port, user = sshd_server.port, sshd_server.user
    (ssh / "config").write_text(
        f"""# profiles of the sftp test worker
Host staccato-test
  HostName 127.0.0.1
  Port {port}
  User {user}

Host nokey
  HostName 127.0.0.1
  Port {port}
  User {user}
  IdentityFile {ssh}/missing_key
  IdentitiesOnly yes

Host unknownkey
  HostName 127.0.0.1
  Port {port}
  User {user}
  HostKeyAlias unknown.staccato.test

Host changedkey
  HostName 127.0.0.1
  Port {port}
  User {user}
  HostKeyAlias changed.staccato.test

Host trusting
  HostName 127.0.0.1
  Port {port}
  User {user}
  HostKeyAlias trusting.staccato.test
  StrictHostKeyChecking accept-new
"""
    )
    return home


@pytest.fixture(scope="session")
def sftp_worker(
    temporal_server, sftp_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """A worker whose only SSH configuration is its HOME's ``~/.ssh``."""
    process = WorkerProcess(
        temporal_server.address,
        processes=SESSION_WORKER_PROCESSES,
        env={
            "HOME": str(sftp_home),
            "SSH_AUTH_SOCK": "",
            "STACCATO_SFTP_LOCK_DIR": str(tmp_path_factory.mktemp("sftp-locks")),
            "STACCATO_SFTP_IDLE_TIMEOUT_S": "2",
        },
        log_dir=tmp_path_factory.mktemp("sftp-worker"),
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
async def sftp_client(temporal_server, sftp_worker: WorkerProcess) -> AsyncIterator[StaccatoClient]:
    """A client on ``sftp_worker``'s task queue."""
    client = await StaccatoClient.connect(target_host=temporal_server.address, namespace="default")
    client.task_queue = sftp_worker.task_queue
    yield client


@pytest.fixture
def env_worker_env(
    sshd_server: SshdServer, sftp_logged: SshdServer, tmp_path: Path
) -> dict[str, str]:
    """Environment for a worker configured only by STACCATO_SSH_* settings (no ssh config,
    an empty HOME, no agent), with its own lock directory."""
    return _settings_only_env(tmp_path, sshd_server, sftp_logged)


def _settings_only_env(
    base: Path, sshd_server: SshdServer, sftp_logged: SshdServer
) -> dict[str, str]:
    """:func:`env_worker_env`'s environment, its files under ``base``."""
    known_hosts = base / "known_hosts"
    known_hosts.write_text(known_hosts_lines(sshd_server, sftp_logged))
    home = base / "empty-home"
    home.mkdir()
    return {
        "HOME": str(home),
        "SSH_AUTH_SOCK": "",
        "STACCATO_SSH_CONFIG": "none",
        "STACCATO_SSH_IDENTITY": str(sshd_server.client_key_path),
        "STACCATO_SSH_KNOWN_HOSTS": str(known_hosts),
        "STACCATO_SFTP_LOCK_DIR": str(base / "locks"),
    }


@pytest.fixture(scope="session")
def settings_env(
    sshd_server: SshdServer, sftp_logged: SshdServer, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """``env_worker_env`` for the session's shared worker of that configuration
    (:func:`settings_worker`): tests add their own sshd's host key to its known_hosts
    file, read at each connection."""
    return _settings_only_env(tmp_path_factory.mktemp("settings-worker"), sshd_server, sftp_logged)


@pytest.fixture(scope="session")
def settings_worker(
    temporal_server, settings_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """One 2-process worker of ``settings_env`` for the session's tests (of any module)
    that neither kill it nor change its settings, each against an sshd of its own: a
    worker start per test (then per module) cost ~3 CPU-s. A test using it ends every
    transfer it starts, clean-up included (a failed one's clean-up against a server
    stopped for good goes on after it: such a test keeps a worker of its own)."""
    with WorkerProcess(
        temporal_server.address,
        processes=2,
        env=settings_env,
        log_dir=tmp_path_factory.mktemp("settings-worker-log"),
    ) as worker:
        yield worker


def _driver_settings(
    monkeypatch: pytest.MonkeyPatch, sshd_server: SshdServer, hosts: str, tmp_path: Path
) -> Path:
    """Set Staccato's SSH settings for the driver in this process (``sshd_server``'s
    client key, the known_hosts lines ``hosts``); returns the known_hosts path."""
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(hosts)
    monkeypatch.setenv("STACCATO_SSH_CONFIG", "none")
    monkeypatch.setenv("STACCATO_SSH_IDENTITY", str(sshd_server.client_key_path))
    monkeypatch.setenv("STACCATO_SSH_KNOWN_HOSTS", str(known_hosts))
    monkeypatch.setenv("STACCATO_SFTP_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setenv("SSH_AUTH_SOCK", "")
    return known_hosts


@pytest.fixture
def driver_env(
    monkeypatch: pytest.MonkeyPatch, sshd_server: SshdServer, tmp_path: Path
) -> Iterator[Path]:
    """Staccato's SSH settings for the driver in this process; returns the known_hosts path."""
    known_hosts = _driver_settings(
        monkeypatch, sshd_server, sshd_server.known_hosts_path.read_text(), tmp_path
    )
    POOL.close_all()
    yield known_hosts
    POOL.close_all()


@pytest.fixture
def logged_driver_env(
    monkeypatch: pytest.MonkeyPatch,
    sshd_server: SshdServer,
    sftp_logged: SshdServer,
    tmp_path: Path,
) -> Iterator[Path]:
    """:func:`driver_env` for ``sftp_logged`` too (whose sftp-server is a process of
    its own per connection)."""
    known_hosts = _driver_settings(
        monkeypatch, sshd_server, known_hosts_lines(sshd_server, sftp_logged), tmp_path
    )
    POOL.close_all()
    yield known_hosts
    POOL.close_all()


@pytest.fixture
def sftp_url(sshd_server: SshdServer):
    """``path -> sftp://user@127.0.0.1:port/path`` on the shared server."""
    return lambda path: sshd_server.url(str(path))
