"""Every setting Staccato reads from the environment, in one model (pydantic-settings).

A worker validates them all when it starts (``staccato worker`` exits 2 naming a bad
variable; ``staccato worker --check`` prints the effective values with secrets
masked); clients read the few they need. Each variable is ``STACCATO_`` + the field
name in capitals; see :class:`Settings` for meanings, units and defaults.

The Temporal connection is not here: it comes from Temporal's own environment
configuration (``TEMPORAL_ADDRESS``, ``TEMPORAL_NAMESPACE``, ``TEMPORAL_PROFILE``, TLS,
API key; ``temporalio.envconfig``). When that names no address: the one the
``staccato up`` of STACCATO_HOME recorded (running or not: a stopped one's is named
when it cannot be reached), else ``127.0.0.1:7233`` (:func:`default_address`);
namespace ``default``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
from pydantic import BeforeValidator, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# SettingsError is defined in staccato.errors and stays importable from here.
from staccato.errors import SettingsError
from staccato.quantities import byte_count

DEFAULT_ADDRESS = "127.0.0.1:7233"
DEFAULT_NAMESPACE = "default"
DEFAULT_UI_PORT = 8233
ENV_PREFIX = "STACCATO_"

#: bytes: the resident memory of one idle worker process (Python, temporalio, the
#: drivers), measured ~70-150 MiB; what the memory cap keeps aside per process
WORKER_PROCESS_OVERHEAD_BYTES = 160 * 1024**2

PathList = Annotated[list[str], NoDecode]  # ``:``-separated in the environment


def _byte_count(value: Any) -> Any:
    """A ``*_BYTES`` setting's text as bytes: plain bytes or a unit (``4MiB``,
    ``2G``), the words of every size on the command line
    (:func:`staccato.quantities.byte_count`); anything else is left to the field's
    own check (tester74: ``STACCATO_SOCKET_BUFFER_BYTES=4MiB`` was refused while
    ``--chunk-size 4MiB`` is taken)."""
    if isinstance(value, str) and value.strip():
        return byte_count(value.strip(), "a byte count (bytes, or a unit such as 4MiB)")
    return value


#: bytes, given as an integer or with a unit
Bytes = Annotated[int, BeforeValidator(_byte_count)]


#: the source-sealing key's file in ``$STACCATO_HOME`` when no key setting names one
DEFAULT_SECRET_KEY_FILE = "secret.key"


class Settings(BaseSettings):
    """Staccato's environment settings. Durations are seconds, sizes bytes.

    Attributes:
        task_queue: task queue of workflows and activities.
        home: state of the embedded default (SQLite file, logs, pid file, secret key).
        worker_processes: activity processes per worker (= concurrent streams);
            default max(4, CPUs).
        worker_threads: stream threads per activity process: a worker runs up to
            processes x threads activities at once (streams are I/O-bound: a thread
            waiting on a socket or a disk costs no CPU); default 64.
        worker_memory_bytes: the worker's memory cap (all its processes): streams
            reserve their chunk buffers (``chunk_size`` bytes each) against it less
            ``WORKER_PROCESS_OVERHEAD_BYTES`` per process; a stream that cannot
            reserve waits (its transfer's status says "waiting for worker
            capacity"); default 2 GiB.
        worker_shutdown_timeout_s: on SIGTERM/SIGINT, how long running activities get
            to finish before they are cancelled (inside ``docker stop``'s 10 s).
        worker_manager_silent_s: how long the multiprocessing manager that carries
            heartbeats may leave a probe (one call every few seconds) unanswered before
            the worker takes it for hung (stopped, deadlocked), kills it and rebuilds its
            activity processes, as it does when the manager dies; default 60.
        worker_sticky_timeout_s: how long a workflow's next task waits for the worker
            that ran its last one (and holds it in its cache) before any worker of the
            task queue may take it (Temporal's ``sticky_queue_schedule_to_start_timeout``,
            whose default is 10 s): after that worker died, its transfers' workflows
            go on elsewhere this much later; a live worker slower than this to poll
            costs a replay of the workflow's history (CPU), not an error.
        min_rate_bytes_per_s: a stream whose source delivers less than this, averaged
            over ``min_rate_window_s``, fails its attempt (retryable); 0 turns it off.
        min_rate_window_s: the window of that average.
        clock_skew_s: how far a remote endpoint's clock (an SFTP server, an NFS server)
            may be from the worker's: a source whose mtime is within this of the
            worker's "now" is read a second time before publish, since a rewrite in
            place within its mtime's resolution would go unseen.
        ssh_config: ssh_config file of the SFTP profiles (``none`` for none);
            default ``~/.ssh/config``.
        ssh_known_hosts: known_hosts files used instead of the config's.
        ssh_identity: private key files tried before the config's ``IdentityFile``.
        sftp_trust_new_hosts: accept (and record) the key of an unknown host.
        sftp_connect_timeout_s: TCP connect + SSH handshake + authentication.
        sftp_io_timeout_s: a request without an answer for this long drops the connection.
        sftp_stall_s: no answer at all while several requests are in flight for this
            long: the server caps requests in flight; send fewer (at most the I/O timeout).
        sftp_max_connections: connections per ``host:port`` from all the worker's processes.
        sftp_lock_dir: where those processes coordinate; default ``$TMPDIR/staccato-sftp-<uid>``.
        sftp_idle_timeout_s: an idle pooled connection closes after this long.
        sftp_slot_wait_s: longest wait for a free connection slot; default 600 inside
            a heartbeating activity, 60 elsewhere.
        sftp_remote_hash: verify an upload's temp file by having the server hash it
            (an SSH exec channel running ``cksum``) instead of reading
            it back, where the server allows it (default on; off: always read back).
        sftp_transport: how SSH is spoken: ``openssh`` runs the worker's ``ssh``
            client and speaks SFTP over its pipes (encryption in OpenSSH's C code),
            ``paramiko`` in Python; ``auto`` (default): ``openssh`` where ``ssh`` is on
            the worker's PATH.
        secret_key: base64 of 32 random bytes sealing URL query tokens (comma-separated
            to rotate: the first seals, all open); same on clients and workers.
        secret_key_file: a file holding that key; default ``$STACCATO_HOME/secret.key``
            when it exists (``staccato up`` creates it).
        codec_key: turns on the payload codec (AES-256-GCM of every payload); same
            format and rotation as ``secret_key``.
        codec_key_file: a file holding the codec key.
        client_wait_s: how long a client (the CLI, the Python API) waits for a worker to
            take an update (pause, resume) before it gives up with a message; a status
            query waits at most min(5, this).
        file_roots: ``:``-separated absolute directories that file endpoints (sources
            and destinations) must lie in, each resolved (symlinks, ``..``); empty (the
            default): no restriction.
        staging_dir: the staging cache's directory (sources read once, kept for
            the destination writes); default ``$STACCATO_HOME/staging``; absolute,
            a directory if it exists.
        staging_max_bytes: the cap on the bytes the staging cache holds (least
            recently used entries not in use are evicted to make room); at least 1.
        tuning: let the per-link optimizer choose streams and chunk size for a transfer
            given neither ``--streams`` nor ``--chunk-size`` (default on; ``0`` turns it
            off: on a client, its transfers use the fixed defaults; on a worker, every
            transfer it runs does).
        tuning_memory_bytes: the bytes of stream buffers one tuned transfer may hold
            (streams x chunk x 2); the optimizer never runs more streams than fit.
        temporal_http: ``HOST:PORT`` (or ``http://HOST:PORT``) of Temporal's HTTP API
            (the frontend's ``--http-port``): lets a plain ``staccato cp`` / ``submit``
            start and wait through it without loading Temporal's SDK (see
            :mod:`staccato.light_client`); default: the port ``staccato up``'s
            server records, when ``TEMPORAL_ADDRESS`` is that server.
        light_client: allow that light client at all (``0``: always the SDK's).
        hang_s: past ``--retry-for``, an attempt that moves no byte for this many
            seconds (or 0.6 x its heartbeat timeout when shorter) gives up: its server
            is taken as hung (:mod:`staccato.activities.retry_deadline`); default 30.
        cleanup_for_s: the clean-up window (seconds, >= 1) the command line's starts
            give their transfers (``TransferOptions.cleanup_for_s``): how long a failed
            or cancelled transfer keeps retrying to remove its partial data from an
            endpoint that fails or hangs (a failed one: ``--retry-for`` when longer).
            None (the default, the safe value): the workflow's 30 s. A knob for test
            suites that hang servers on purpose.
        owner: the owner a client's transfers are submitted as when ``--owner`` is not
            given (the fair share between owners); default the OS user; at most 64
            characters, as ``--owner``.
        socket_buffer_bytes: SO_SNDBUF/SO_RCVBUF of HTTP, S3 and SFTP connections (and
            the SSH window); None (the default): sized per link to the bandwidth-delay
            product when a transfer is tuned, else left to the kernel's autotuning.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", validate_default=True, env_ignore_empty=True
    )

    task_queue: str = Field("staccato", min_length=1, pattern=r"^\S(.*\S)?$")
    home: Path = Field(default_factory=lambda: Path(platformdirs.user_data_dir("staccato")))
    worker_processes: int | None = Field(None, ge=1, le=1024)
    worker_threads: int = Field(64, ge=1, le=1024)
    worker_memory_bytes: Bytes = Field(2 * 1024**3, ge=256 * 1024**2)
    worker_shutdown_timeout_s: float = Field(5.0, ge=0, le=3600)
    worker_manager_silent_s: float = Field(60.0, ge=1, le=3600, allow_inf_nan=False)
    worker_sticky_timeout_s: float = Field(10.0, ge=1, le=3600, allow_inf_nan=False)
    min_rate_bytes_per_s: float = Field(1024.0, ge=0, allow_inf_nan=False)
    min_rate_window_s: float = Field(60.0, gt=0, allow_inf_nan=False)
    clock_skew_s: float = Field(120.0, ge=0, le=86400 * 366, allow_inf_nan=False)
    ssh_config: str | None = None
    ssh_known_hosts: PathList = Field(default_factory=list)
    ssh_identity: PathList = Field(default_factory=list)
    sftp_trust_new_hosts: bool = False
    sftp_connect_timeout_s: float = Field(15.0, gt=0, allow_inf_nan=False)
    sftp_io_timeout_s: float = Field(60.0, gt=0, allow_inf_nan=False)
    sftp_stall_s: float = Field(10.0, gt=0, allow_inf_nan=False)
    sftp_max_connections: int = Field(4, ge=1)
    sftp_lock_dir: str | None = None
    sftp_idle_timeout_s: float = Field(10.0, gt=0, allow_inf_nan=False)
    sftp_slot_wait_s: float | None = Field(None, gt=0, allow_inf_nan=False)
    sftp_remote_hash: bool = True
    sftp_transport: Literal["auto", "openssh", "paramiko"] = "auto"
    secret_key: SecretStr | None = None
    secret_key_file: Path | None = None
    codec_key: SecretStr | None = None
    codec_key_file: Path | None = None
    file_roots: PathList = Field(default_factory=list)
    client_wait_s: float = Field(10.0, gt=0, le=600, allow_inf_nan=False)
    staging_dir: Path | None = None
    staging_max_bytes: Bytes = Field(20 * 1024**3, ge=1)
    tuning: bool = True
    tuning_memory_bytes: Bytes = Field(2 * 1024**3, ge=8 * 1024**2)
    socket_buffer_bytes: Bytes | None = Field(None, ge=4096, le=1024**3)
    temporal_http: str | None = Field(None, pattern=r"^(http://)?[^\s/:]+:\d{1,5}/?$")
    light_client: bool = True
    hang_s: float = Field(30.0, ge=1, le=86400, allow_inf_nan=False)
    cleanup_for_s: float | None = Field(None, ge=1, le=86400, allow_inf_nan=False)
    owner: str = ""

    @property
    def effective_secret_key_file(self) -> Path | None:
        """The file the source-sealing key is read from: ``secret_key_file``, else
        ``<home>/secret.key`` when it exists (``staccato up`` creates it); None when
        ``secret_key`` is set (no file is read) or neither file is there
        (:func:`staccato.secrets.seal_keys` is the rule)."""
        if self.secret_key is not None:
            return None
        if self.secret_key_file is not None:
            return self.secret_key_file
        default = self.home / DEFAULT_SECRET_KEY_FILE
        return default if default.exists() else None

    @property
    def effective_staging_dir(self) -> Path:
        """``staging_dir`` or its default, ``<home>/staging``."""
        return self.staging_dir or self.home / "staging"

    @field_validator("owner", mode="before")
    @classmethod
    def _owner_fits(cls, value: Any) -> Any:
        # cutting a longer one would merge owners the fair share keeps apart
        if isinstance(value, str):
            value = value.strip()
            if len(value) > 64:
                raise ValueError(f"has {len(value)} characters: expected at most 64 (as --owner)")
        return value

    @field_validator("home")
    @classmethod
    def _home_is_a_directory(cls, value: Path) -> Path:
        if value.exists() and not value.is_dir():
            raise ValueError(f"{value} exists and is not a directory")
        return value

    @field_validator("staging_dir")
    @classmethod
    def _staging_dir_is_absolute(cls, value: Path | None) -> Path | None:
        # a relative directory would depend on the worker's working directory
        if value is not None and not value.is_absolute():
            raise ValueError(
                f"expected an absolute directory, got the relative path {str(value)!r}"
            )
        if value is not None and value.exists() and not value.is_dir():
            raise ValueError(f"{value} exists and is not a directory")
        return value

    @field_validator("ssh_known_hosts", "ssh_identity", mode="before")
    @classmethod
    def _split_paths(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [os.path.expanduser(p) for p in value.split(os.pathsep) if p.strip()]
        return value

    @field_validator("file_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        roots: list[str] = []
        for entry in value.split(":"):
            if not entry:
                continue
            if not os.path.isabs(entry):
                raise ValueError(
                    f"expected ':'-separated absolute directories, got the relative entry {entry!r}"
                )
            resolved = os.path.realpath(entry)
            if not os.path.isdir(resolved):
                raise ValueError(f"{entry!r} is not an existing directory (resolved: {resolved!r})")
            roots.append(resolved)
        return roots

    def buffer_budget_bytes(self, processes: int) -> int:
        """Bytes of chunk buffers one of ``processes`` activity processes may hold:
        ``worker_memory_bytes`` less the processes' own memory (the activity processes,
        the worker's main process and its manager, ``WORKER_PROCESS_OVERHEAD_BYTES``
        each), shared equally; at least one 16 MiB chunk.

        Raises:
            SettingsError: the memory cap does not even cover the processes.
        """
        spare = self.worker_memory_bytes - (processes + 2) * WORKER_PROCESS_OVERHEAD_BYTES
        if spare <= 0:
            raise SettingsError(
                f"STACCATO_WORKER_MEMORY_BYTES={self.worker_memory_bytes} does not cover "
                f"{processes} activity processes and the worker's own two (about "
                f"{WORKER_PROCESS_OVERHEAD_BYTES // 1024**2} MiB each): raise it to at least "
                f"{(processes + 2) * WORKER_PROCESS_OVERHEAD_BYTES + 16 * 1024**2} or use "
                "fewer processes (--processes)"
            )
        return max(spare // processes, 16 * 1024**2)

    @property
    def effective_worker_processes(self) -> int:
        """``worker_processes`` or its default, max(4, CPUs)."""
        return self.worker_processes or max(4, os.cpu_count() or 1)

    def shown(self) -> dict[str, str]:
        """``STACCATO_*`` name -> effective value as text, secrets masked (``**********``);
        defaulted values show the default in use (worker processes, staging directory,
        the key file read: :attr:`effective_secret_key_file`)."""
        shown: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, list):
                text = os.pathsep.join(value)
            elif value is None:
                text = ""
            else:
                text = str(value)  # SecretStr prints as **********
            shown[ENV_PREFIX + name.upper()] = text
        shown[ENV_PREFIX + "WORKER_PROCESSES"] = str(self.effective_worker_processes)
        shown[ENV_PREFIX + "STAGING_DIR"] = str(self.effective_staging_dir)
        key_file = self.effective_secret_key_file  # the default file, when it is the one read
        shown[ENV_PREFIX + "SECRET_KEY_FILE"] = "" if key_file is None else str(key_file)
        return shown


#: the settings only a command that starts transfers (``cp``, ``submit``,
#: ``schedule create``, ...) and the worker read: a bad value of one is refused by those
#: (:func:`checked`), while the commands that only look at or stop runs (``status``,
#: ``list``, ``cancel``, ``down``) read :func:`current` and go on (tester71: a bad
#: STACCATO_CLEANUP_FOR_S made every command exit 2)
START_ONLY = frozenset({"cleanup_for_s", "owner", "tuning"})

#: the environment the last :func:`current` was built from, what it built, and the
#: problems (one message each) of its start-only variables left at their defaults
_last: tuple[object, Settings, tuple[str, ...]] | None = None
#: variables besides STACCATO_* that defaults read (platformdirs' data directory)
_DEFAULTS_FROM = ("HOME", "XDG_DATA_HOME")
#: every variable the settings are built from: the key of :func:`current`'s cache where
#: the environment's own dict cannot be compared
_READ_FROM = tuple(ENV_PREFIX + name.upper() for name in Settings.model_fields) + _DEFAULTS_FROM


#: what a yes/no setting accepts (pydantic's boolean parsing, any case)
BOOL_WORDS = ("1", "0", "true", "false", "yes", "no", "on", "off")


def current() -> Settings:
    """The settings as the environment has them now: rebuilt whenever the environment
    differs from the last call's, else the last ones again (building them costs ~5 ms, and a
    dataset batch asks several times per file; tests change the environment).

    A bad value of a start-only setting (:data:`START_ONLY`) is not refused here: that
    setting has its default in what is returned, and :func:`checked` (what the readers
    of those settings call) refuses it. Any other bad value is refused here.

    Raises:
        SettingsError: a variable other than a start-only one is invalid; the message
            names each invalid one (start-only ones too), its value and what it must be.
    """
    return _built()[0]


def checked() -> Settings:
    """:func:`current`, every setting validated: what a command that starts transfers
    and the worker read (they use the start-only settings, :data:`START_ONLY`).

    Raises:
        SettingsError: any variable is invalid; the message names each one, its value
            and what it must be (e.g. ``STACCATO_CLEANUP_FOR_S='abc': ...``).
    """
    built, problems = _built()
    if problems:
        raise SettingsError("invalid settings: " + "; ".join(problems))
    return built


def _built() -> tuple[Settings, tuple[str, ...]]:
    """The settings of the environment now (cached, see :func:`current`) and the
    problems of the start-only variables left at their defaults in them."""
    global _last
    # CPython's os.environ keeps the environment in a plain dict of bytes (every
    # os.environ change goes through it): comparing that dict is a C-level pass, far
    # cheaper than reading the variables back through os.environ's decoding
    data = getattr(os.environ, "_data", None)
    key: object = (
        data if isinstance(data, dict) else tuple(os.environ.get(name) for name in _READ_FROM)
    )
    if _last is not None and _last[0] == key:
        return _last[1], _last[2]
    if isinstance(key, dict):
        key = dict(key)  # a copy: the environment may change after this call
    problems: dict[str, str] = {}
    try:
        built = Settings()
    except ValidationError as err:
        problems = _problems(err)
        if not problems.keys() <= START_ONLY:
            raise SettingsError("invalid settings: " + "; ".join(problems.values())) from None
        # only start-only ones: their defaults (given as init values, which the
        # environment does not override); the commands that read them call checked()
        defaults = {name: Settings.model_fields[name].get_default() for name in problems}
        built = Settings(**defaults)
    _last = (key, built, tuple(problems.values()))
    return built, _last[2]


def _problems(err: ValidationError) -> dict[str, str]:
    """Field name -> ``STACCATO_NAME='value': what is wrong`` for each invalid field."""
    problems: dict[str, str] = {}
    for error in err.errors():
        field = ".".join(str(p) for p in error["loc"][:1])
        name = ENV_PREFIX + field.upper()
        value = os.environ.get(name, "")
        message = error["msg"]
        if error["type"] == "bool_parsing":  # pydantic's own words do not list them
            message = f"expected one of {', '.join(BOOL_WORDS)}"
        problem = f"{name}={value!r}: {message}"
        problems[field] = f"{problems[field]}, {message}" if field in problems else problem
    return problems


def task_queue() -> str:
    """The task queue (``STACCATO_TASK_QUEUE``, default ``staccato``)."""
    return current().task_queue


def home() -> Path:
    """Directory of the embedded default's state (``STACCATO_HOME``)."""
    return current().home


def worker_processes() -> int:
    """Activity processes per worker (``STACCATO_WORKER_PROCESSES``, default max(4, CPUs))."""
    return current().effective_worker_processes


def file_roots() -> tuple[str, ...] | None:
    """Directories file endpoints are confined to (``STACCATO_FILE_ROOTS``), each
    resolved (symlinks, ``..``); None when unset (no restriction).

    Raises:
        SettingsError: an entry is not an absolute path of an existing directory.
    """
    return tuple(current().file_roots) or None


def default_address() -> str:
    """Temporal's address (``host:port``) when Temporal's own configuration names none
    (no ``TEMPORAL_ADDRESS``, no address in a profile or configuration file): the one
    the ``staccato up`` running with this STACCATO_HOME recorded (its ``up.pid`` names
    a live process), so that its commands use the server it runs; else, when that
    ``up`` was killed and the dev server it started still runs (the same process its
    record names), that server's; else, when this home recorded an ``up`` that no
    longer runs (``down``, or killed with its server), that ``up``'s address, so a
    command fails naming it (:func:`stopped_up_note`) and never talks to whatever else
    listens on 7233 (tester65 T2); else :data:`DEFAULT_ADDRESS`: never another server
    than this home's (on a shared machine 7233 may be someone else's). The one rule of the SDK's client (:func:`temporal_connect_config`) and the light
    client (:func:`staccato.light_client.plain_temporal_config`).

    Raises:
        SettingsError: a STACCATO_* variable is invalid (STACCATO_HOME is read with them).
    """
    from staccato.workers.devserver import (
        orphaned_server,
        running_up_address,
        stopped_up_address,
    )

    state = home()
    address = running_up_address(state)
    if address is not None:
        return address
    orphan = orphaned_server(state)
    if orphan is not None:
        return f"127.0.0.1:{orphan[1]}"
    return stopped_up_address(state) or DEFAULT_ADDRESS


#: the Temporal address this process's client connected to last (see note_connected)
_connected: str | None = None


def note_connected(address: str) -> None:
    """Record that a client of this process connected to Temporal at ``address``
    (``host:port``), so that a later failure names it (:func:`address_in_use`)."""
    global _connected
    _connected = address


def address_in_use() -> str:
    """The Temporal address this process uses: the one its client connected to
    (:func:`note_connected`), else the configured one (:func:`temporal_connect_config`).
    Not configured again after a connect: `staccato down` removes the record of the
    `up` whose address a command used, and the address read then would be another.

    Raises:
        SettingsError: no client connected, no address is configured and a STACCATO_*
            variable is invalid.
    """
    if _connected is not None:
        return _connected
    return str(temporal_connect_config()["target_host"])


def stopped_up_note(target: str) -> str | None:
    """What to say when Temporal at ``target`` cannot be reached and the ``staccato
    up`` this STACCATO_HOME recorded no longer runs (``down``, or killed): that it is
    not running, its address, and to start it; None when one runs, none was recorded,
    or ``target`` is not its address (another server was configured on purpose; with
    none configured, ``target`` is that address: :func:`default_address`)."""
    from staccato.workers.devserver import stopped_up_address

    try:
        recorded = stopped_up_address(home())
    except SettingsError:
        return None
    if recorded is None or target != recorded:
        return None
    return (
        f"the staccato up recorded in STACCATO_HOME ({recorded}) is not running: start "
        "it with `staccato up` (or `staccato up --detach`), or point TEMPORAL_ADDRESS at "
        "a running Temporal"
    )


def temporal_connect_config() -> dict[str, Any]:
    """Keyword arguments for ``temporalio.client.Client.connect`` from Temporal's
    standard environment configuration, with Staccato's defaults filled in (the
    address: :func:`default_address`).

    Raises:
        SettingsError: no address is configured and a STACCATO_* variable is invalid.
    """
    from temporalio.envconfig import ClientConfig

    config: dict[str, Any] = dict(ClientConfig.load_client_connect_config())
    if not config.get("target_host"):
        config["target_host"] = default_address()
    config.setdefault("namespace", DEFAULT_NAMESPACE)
    return config


#: STACCATO_* variables that are not settings but are set by Staccato itself
_INTERNAL_VARIABLES = frozenset({"STACCATO_UP_READY_FILE"})


def unknown_variables() -> list[str]:
    """``STACCATO_*`` variables in the environment that no setting reads (typos)."""
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields} | _INTERNAL_VARIABLES
    return sorted(n for n in os.environ if n.startswith(ENV_PREFIX) and n not in known)
