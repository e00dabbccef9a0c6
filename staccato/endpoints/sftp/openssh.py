"""The OpenSSH transport of the ``sftp`` endpoint: SFTP spoken over the pipes of an
``ssh -s ... sftp`` subprocess (the worker's OpenSSH client), so that the SSH
encryption, MACs and packet work run in OpenSSH's C code, not in paramiko's Python.

Why: an upload over paramiko is CPU-bound on a small machine (every 32 KiB SSH packet
is framed, encrypted and MAC'd through Python calls); ``bench/bench_loopback.py``'s
file->sftp row spent ~4.7 CPU-s per GiB with paramiko against rclone's ~2.9.

What stays the same: the SFTP protocol work (:class:`~staccato.endpoints.sftp.protocol.
StaccatoSFTP`: pipelining, limits, the write fence) runs unchanged over
:class:`PipeChannel`, which offers the part of paramiko's ``Channel`` it uses. Host
keys are checked strictly by OpenSSH against the same known_hosts files
(``StrictHostKeyChecking=yes``, ``UserKnownHostsFile``, ``HostKeyAlias``), keys come
from the same identity files and agent (``IdentitiesOnly``, ``IdentityAgent``), and ssh
never prompts (``BatchMode=yes``, public keys only). The worker's ssh config is not read
by OpenSSH (``-F /dev/null``): Staccato resolved it already (:func:`ssh.resolve`), so
both transports see the same profile.

Failures: when ssh fails before the SFTP session starts (an unknown or changed host
key, no key accepted, a server asking for a password, ...), :mod:`.connection`
connects once with paramiko to say why in the words of that transport (the messages in
``docs/sftp.md``); if paramiko gets through (a key trusted on first use was just
recorded, an OpenSSH-only difference) that paramiko connection is used. A killed or
dying ssh process is end-of-file on its pipes: the connection is lost (retryable).

Processes: each connection owns one ssh process, killed by its PID when the connection
closes (and at the worker's exit). It is the *ControlMaster* of its connection: the
server-side hash (:mod:`.remote_hash`) runs its exec session through that same
connection (``ssh -o ControlPath=...``), as paramiko opens an exec channel on the
pooled transport.

Setting: ``STACCATO_SFTP_TRANSPORT`` = ``auto`` (default: OpenSSH when ``ssh`` is on the
worker's ``PATH``, else paramiko), ``openssh`` or ``paramiko``.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
import queue
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from typing import IO, Any

from staccato import settings
from staccato.endpoints import base
from staccato.endpoints.sftp.ssh import SSHHost
from staccato.errors import PermanentError

log = logging.getLogger("staccato.sftp")

#: bytes per write to ssh's stdin under the write fence (the fence is checked before
#: each): one SFTP write request of OpenSSH's 255 KiB with its header fits one piece
PIECE_BYTES = 256 * 1024 + 64
#: bytes of the pipes to and from ssh (``F_SETPIPE_SZ``; the kernel may give less)
PIPE_BYTES = 1024 * 1024
#: pieces queued for a channel's pump besides the one it writes (bounded memory)
_QUEUED_PIECES = 2
_F_SETPIPE_SZ = 1031  # linux/fcntl.h
#: seconds between checks of the write fence while a stream waits for room in the pipe
FENCE_SLICE_S = 0.1
#: seconds to let ssh leave by itself after its stdin closed, before it is killed
_EXIT_WAIT_S = 0.5
#: ciphers in order of preference: AES-GCM (AES-NI, no separate MAC pass) first
CIPHERS = (
    "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,"
    "aes128-ctr,aes192-ctr,aes256-ctr"
)

#: key exchanges in order of preference: X25519 first, as paramiko (and rclone) use.
#: OpenSSH 9.x's default, sntrup761x25519 (post-quantum hybrid), cost ~70 ms of CPU per
#: connection on each side here (~9 ms with X25519), and a copy opens a connection per
#: stream and per verify activity; it stays offered after X25519.
KEX_ALGORITHMS = (
    "curve25519-sha256,curve25519-sha256@libssh.org,sntrup761x25519-sha512@openssh.com,"
    "ecdh-sha2-nistp256,ecdh-sha2-nistp384,ecdh-sha2-nistp521,"
    "diffie-hellman-group-exchange-sha256,diffie-hellman-group16-sha512,"
    "diffie-hellman-group18-sha512,diffie-hellman-group14-sha256"
)

_LIVE: weakref.WeakSet[SshProcess] = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()


def ssh_binary() -> str | None:
    """The ``ssh`` client to run (on ``PATH``), or None."""
    return shutil.which("ssh")


def wanted() -> bool:
    """Whether new connections use OpenSSH (``STACCATO_SFTP_TRANSPORT``).

    Raises:
        PermanentError: ``openssh`` asked for and no ``ssh`` on the worker's PATH.
    """
    choice = settings.current().sftp_transport
    if choice == "paramiko":
        return False
    found = ssh_binary() is not None
    if choice == "openssh" and not found:
        raise PermanentError(
            "worker setting STACCATO_SFTP_TRANSPORT=openssh, but there is no `ssh` on the "
            "worker's PATH: install the OpenSSH client or set STACCATO_SFTP_TRANSPORT=paramiko"
        )
    return found


_QUERIED: dict[tuple[str, str], str] = {}


def _supported(kind: str, preferred: str) -> str:
    """``preferred`` (a comma-separated list) without what this ssh does not know
    (``ssh -Q KIND``, asked once per process): an unknown name makes ssh refuse to
    start. ``preferred`` as it is if ssh cannot say."""
    binary = ssh_binary() or "ssh"
    key = (binary, kind)
    if key not in _QUERIED:
        try:
            known = subprocess.run(
                [binary, "-Q", kind], capture_output=True, text=True, timeout=10, check=True
            ).stdout.split()
        except (OSError, subprocess.SubprocessError):
            known = []
        names = [n for n in preferred.split(",") if not known or n in known]
        _QUERIED[key] = ",".join(names) or preferred
    return _QUERIED[key]


def _option_value(text: str) -> str:
    """``text`` for an ``-o Key=value`` of ssh: OpenSSH %-expands some options again
    (``ProxyCommand``, ``IdentityFile``, ``UserKnownHostsFile``, ``ControlPath``)."""
    return text.replace("%", "%%")


def _quoted_path(path: str) -> str:
    """A file name for an option that holds a list (``UserKnownHostsFile``): quoted when
    it has spaces (OpenSSH splits such options on white space, honouring quotes)."""
    value = _option_value(path)
    return f'"{value}"' if any(c.isspace() for c in value) else value


def ssh_arguments(target: SSHHost, control_path: str | None, *, master: bool) -> list[str]:
    """The ssh command line's options for ``target`` (without the command): everything
    from the resolved profile, nothing from ssh config files.

    ``master``: this process is the connection's ControlMaster (``control_path`` its
    socket); otherwise a client of that master (falling back to a connection of its
    own, with the same checks, if the master is gone)."""
    binary = ssh_binary() or "ssh"
    known = target.known_hosts or [os.path.expanduser("~/.ssh/known_hosts")]
    options = {
        "BatchMode": "yes",
        "StrictHostKeyChecking": "yes",
        "UserKnownHostsFile": " ".join(_quoted_path(p) for p in known),
        "GlobalKnownHostsFile": "/etc/ssh/ssh_known_hosts",
        "HostKeyAlias": _option_value(target.host_key_name),
        "CheckHostIP": "no",
        "UpdateHostKeys": "no",
        "VerifyHostKeyDNS": "no",
        "HashKnownHosts": "no",
        "PreferredAuthentications": "publickey",
        "PubkeyAuthentication": "yes",
        "PasswordAuthentication": "no",
        "KbdInteractiveAuthentication": "no",
        "GSSAPIAuthentication": "no",
        "HostbasedAuthentication": "no",
        "IdentitiesOnly": "no" if target.use_agent else "yes",
        "ConnectTimeout": str(max(1, int(round(target.connect_timeout_s)))),
        "ServerAliveInterval": "15",
        "ServerAliveCountMax": "4",
        "Ciphers": _supported("cipher", CIPHERS),
        "KexAlgorithms": _supported("kex", KEX_ALGORITHMS),
        "Compression": "no",
        "ForwardAgent": "no",
        "ForwardX11": "no",
        "ClearAllForwardings": "yes",
        "PermitLocalCommand": "no",
        "RequestTTY": "no",
        "EscapeChar": "none",
        "LogLevel": "ERROR",
        "Port": str(target.port),
        "User": target.user,
    }
    if not target.use_agent:
        options["IdentityAgent"] = "none"
    if target.proxy_command:
        options["ProxyCommand"] = _option_value(target.proxy_command)
    if control_path is None:
        options["ControlMaster"] = "no"
        options["ControlPath"] = "none"
    else:
        options["ControlMaster"] = "yes" if master else "no"
        options["ControlPath"] = _option_value(control_path)
    args = [binary, "-F", "/dev/null", "-T", "-x", "-a"]
    for key, value in options.items():
        args += ["-o", f"{key}={value}"]
    for identity in target.identities:
        args += ["-o", f"IdentityFile={_option_value(identity)}"]
    return args


class SshProcess:
    """One running ``ssh`` process with its pipes; :meth:`kill` ends it by its PID.

    Args:
        argv: the command line.
        stdin_pipe: give it a pipe for stdin (else ``/dev/null``: end-of-file at once).
    """

    def __init__(self, argv: list[str], *, stdin_pipe: bool) -> None:
        self.errors: IO[bytes] = tempfile.TemporaryFile(prefix="staccato-ssh-")
        try:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=self.errors,
                bufsize=0,
                close_fds=True,
                start_new_session=True,  # a ^C to the worker's group is not ssh's to get
                env=_environment(),
            )
        except OSError:
            self.errors.close()
            raise
        self.pid = self.process.pid
        with _LIVE_LOCK:
            _LIVE.add(self)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                try:
                    fcntl.fcntl(pipe.fileno(), _F_SETPIPE_SZ, PIPE_BYTES)
                except OSError:
                    pass  # above /proc/sys/fs/pipe-max-size: the default size works too
        if self.process.stdout is not None:
            os.set_blocking(self.process.stdout.fileno(), False)

    def wait(self, timeout_s: float) -> bool:
        """Whether the process ended within ``timeout_s`` seconds (reaped then)."""
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return False
        return True

    def stderr_text(self, limit: int = 2000) -> str:
        """What ssh printed on stderr so far (at most ``limit`` characters, stripped)."""
        try:
            self.errors.seek(0)
            text = self.errors.read(limit).decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""
        return " ".join(line.strip() for line in text.splitlines() if line.strip())

    def kill(self) -> None:
        """End the process (``SIGKILL`` by its PID, if it still runs) and reap it; its
        stdout is closed (its stdin belongs to the :class:`PipeChannel` writing it).
        Idempotent."""
        process = self.process
        try:
            if process.poll() is None:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass  # gone meanwhile (and reaped by wait below)
            process.wait()
        finally:
            if process.stdout is not None:
                try:
                    process.stdout.close()
                except OSError:
                    pass  # already closed
            with _LIVE_LOCK:
                _LIVE.discard(self)

    def close_files(self) -> None:
        """Close the stderr capture (after :meth:`kill`)."""
        try:
            self.errors.close()
        except OSError:
            pass  # already closed


def _environment() -> dict[str, str]:
    """ssh's environment: the worker's, without a display or askpass program (ssh must
    never ask anyone anything; ``BatchMode`` says so too)."""
    env = dict(os.environ)
    for name in ("DISPLAY", "SSH_ASKPASS", "SSH_ASKPASS_REQUIRE"):
        env.pop(name, None)
    return env


@atexit.register
def _kill_all() -> None:
    """At the worker process's exit: no ssh process of it stays behind."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    for proc in live:
        try:
            proc.kill()
        except Exception as err:  # exiting: log and go on with the others
            log.info("killing ssh process %d at exit: %r", proc.pid, err)


def _wait(fd: int, event: int, timeout_s: float | None) -> bool:
    poller = select.poll()
    poller.register(fd, event | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(None if timeout_s is None else max(0, int(timeout_s * 1000))))


def _owned(data: bytes | memoryview) -> bytes:
    """``data`` as bytes nobody changes: ``bytes`` as they are (also a view of a whole
    ``bytes``, as :meth:`StaccatoSFTP._write_fenced` sends a request), else a copy."""
    if isinstance(data, bytes):
        return data
    owner = data.obj
    if isinstance(owner, bytes) and data.nbytes == len(owner):
        return owner
    return bytes(data)


class PipeChannel:
    """The part of paramiko's ``Channel`` :class:`StaccatoSFTP` uses (``send``,
    ``recv``, ``settimeout``, ``closed``, ``out_max_packet_size``, ``close``), over an
    ssh process's stdin and stdout. A wait longer than the timeout raises
    ``TimeoutError`` (as a channel does); end-of-file (ssh exited or was killed) is
    ``b""`` from :meth:`recv` and ``EOFError`` from :meth:`send`."""

    out_max_packet_size = PIECE_BYTES + 64  # StaccatoSFTP sends this less 64 per piece

    def __init__(self, proc: SshProcess) -> None:
        assert proc.process.stdout is not None
        self.proc = proc
        self._stdin = proc.process.stdin  # None: /dev/null, nothing to send
        self._out = proc.process.stdout.fileno()
        self._timeout: float | None = None
        self._read_buffer = bytearray()
        self.closed = False
        self.cut_off = False
        # the pump: one thread per channel writes the pieces into ssh's stdin with
        # blocking writes (the kernel waits for room, not a Python loop: a
        # non-blocking pipe took ~16 KiB per wake-up, as fast as ssh read it)
        self._room = threading.Semaphore(_QUEUED_PIECES)
        self._pieces: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._pump: threading.Thread | None = None
        self._pump_error: BaseException | None = None
        self._input_ended = False

    def _start_pump(self) -> None:
        self._pump = threading.Thread(
            target=self._pump_forever, name=f"staccato-ssh-{self.proc.pid}", daemon=True
        )
        self._pump.start()

    def _pump_forever(self) -> None:
        """Write queued pieces into ssh's stdin until the end mark (None) or an error
        (ssh gone); then close stdin (ssh then ends its session)."""
        assert self._stdin is not None
        fd = self._stdin.fileno()
        try:
            while True:
                piece = self._pieces.get()
                if piece is None:
                    return
                try:
                    view = memoryview(piece)
                    while view:
                        view = view[os.write(fd, view) :]
                except OSError as err:
                    self._pump_error = err
                    self.closed = True
                    return
                finally:
                    self._room.release()
        finally:
            try:
                self._stdin.close()
            except OSError:
                pass  # already closed

    def end_input(self) -> None:
        """No more sends: ssh's stdin is closed once what is queued was written (at
        once if nothing ever was). Idempotent."""
        if self._input_ended:
            return
        self._input_ended = True
        if self._pump is not None:
            self._pieces.put(None)
        elif self._stdin is not None:
            try:
                self._stdin.close()
            except OSError:
                pass  # already closed

    def join_pump(self, timeout_s: float) -> None:
        """Wait (at most ``timeout_s``) for the pump to end (after :meth:`end_input`,
        or after ssh was killed: its write then fails)."""
        if self._pump is not None:
            self._pump.join(timeout_s)

    def settimeout(self, timeout: float | None) -> None:
        self._timeout = timeout

    def _fenced_wait(self, ready: Callable[[float | None], bool]) -> bool:
        """``ready(timeout_s)`` for up to the channel's timeout. In a stream attempt
        the write fence is checked every ``FENCE_SLICE_S`` while it waits, and ssh is
        cut once the fence fails: the bytes already in the pipe and in ssh's buffers
        must not reach the server after the lease ran out (a stalled server fills the
        pipe; on waking, ssh sends what it holds). Without the check, a stream waiting
        for room or for an answer would find out only after those bytes had gone.

        Raises:
            StreamLeaseExpiredError (what the fence raises): the lease ran out.
        """
        if not base.write_fenced():
            return ready(self._timeout)
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while True:
            left = FENCE_SLICE_S if deadline is None else deadline - time.monotonic()
            if ready(max(0.0, min(FENCE_SLICE_S, left))):
                return True
            try:
                base.write_fence()
            except BaseException:
                self.cut()
                raise
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def send(self, data: bytes | memoryview) -> int:
        """Queue all of ``data`` (a copy: the caller may reuse its buffer) for ssh's
        stdin, once the queue has room (``_QUEUED_PIECES`` pieces besides the pipe's
        own buffer); in a stream attempt the write fence is checked while it waits
        (:meth:`_fenced_wait`) and right before the bytes are queued (a thread frozen
        on a full pipe checks it when it wakes). Bytes queued or in the pipe when a writer is frozen may still
        reach the server: the writers directory (:mod:`.writers`) guards publish.

        Raises:
            TimeoutError: no room for the timeout (nothing queued).
            StreamLeaseExpiredError: in a stream attempt, its lease ran out (ssh is cut).
            EOFError: ssh exited.
        """
        if self.closed or self._stdin is None or self._input_ended:
            raise EOFError(f"ssh exited ({self._exit_reason(self._pump_error)})")
        if not self._fenced_wait(lambda wait_s: self._room.acquire(timeout=wait_s)):
            raise TimeoutError("timed out")
        queued = False
        try:
            if self.closed:
                raise EOFError(f"ssh exited ({self._exit_reason(self._pump_error)})")
            if base.write_fenced():
                try:
                    base.write_fence()
                except BaseException:
                    self.cut()
                    raise
            if self._pump is None:
                self._start_pump()
            self._pieces.put(_owned(data))
            queued = True
        finally:
            if not queued:
                self._room.release()
        return len(data)

    def recv(self, size: int) -> bytes:
        """Up to ``size`` bytes from ssh's stdout; ``b""`` once it ended.

        Raises:
            TimeoutError: nothing came for the timeout.
            StreamLeaseExpiredError: in a stream attempt, its lease ran out while it
                waited (ssh is cut: :meth:`_fenced_wait`).
        """
        if self.closed:
            return b""
        if not self._fenced_wait(lambda wait_s: _wait(self._out, select.POLLIN, wait_s)):
            raise TimeoutError("timed out")
        try:
            # into a buffer kept for the channel: os.read(fd, 1 MiB) allocates 1 MiB
            # per call (~11 us here, against ~1 us), and SFTP answers come ~32 KiB at a
            # time (a download) or a few dozen bytes (a write's status)
            if len(self._read_buffer) < size:
                self._read_buffer = bytearray(size)
            got = os.readv(self._out, [memoryview(self._read_buffer)[:size]])
            data = bytes(memoryview(self._read_buffer)[:got])
        except BlockingIOError:
            raise TimeoutError("timed out") from None
        except (ValueError, OSError) as err:
            log.info("reading from ssh failed: %r", err)
            data = b""
        if not data:
            self.closed = True
        return data

    def _exit_reason(self, err: BaseException | None = None) -> str:
        code = self.proc.process.poll()
        text = self.proc.stderr_text(300)
        what = f"exit status {code}" if code is not None else (str(err) if err else "closed")
        return f"{what}: {text}" if text else what

    def exit_reason(self) -> str:
        """Why ssh ended, for a message: its exit status and what it printed."""
        return self._exit_reason()

    def cut(self) -> None:
        """Drop the connection now, with no more bytes sent: kill ssh (SIGKILL by its
        PID; bytes still in the pipe never leave, a request cut in the middle is never
        carried out by the server)."""
        self.cut_off = True
        self.closed = True
        try:
            os.kill(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # already gone

    def close(self) -> None:
        self.closed = True
        self.end_input()

    def get_transport(self) -> Any:  # paramiko's SFTPClient asks; never a Transport
        return None

    def get_name(self) -> str:  # paramiko's SFTPClient._log names the channel
        return f"ssh pid {self.proc.pid}"


#: prefix of a ControlMaster socket's directory in the temp directory; the process
#: id that made it follows (``stc-ssh-<pid>-<random>``)
CONTROL_PREFIX = "stc-ssh-"
#: seconds after which an empty control directory without a process id (made by a
#: release before 0.29.0) is taken as left behind
_LEGACY_CONTROL_AGE_S = 3600.0
_swept = False
_swept_lock = threading.Lock()


def control_directory() -> str:
    """A new private (0700) directory for one connection's ControlMaster socket,
    named after this process (``stc-ssh-<pid>-...`` in the temp directory). The first
    call of a process removes the directories that processes no longer alive left
    (a SIGKILLed worker removes nothing: one per connection it had open)."""
    global _swept
    with _swept_lock:
        if not _swept:
            _swept = True
            try:
                sweep_control_directories()
            except OSError as err:
                log.info("sweeping ssh control directories: %r", err)
    return tempfile.mkdtemp(prefix=f"{CONTROL_PREFIX}{os.getpid()}-")


def sweep_control_directories(root: str | None = None) -> int:
    """Remove the control directories in ``root`` (the temp directory) owned by this
    user whose process is gone, and empty ones without a process id older than
    ``_LEGACY_CONTROL_AGE_S``. Returns how many were removed."""
    root = root or tempfile.gettempdir()
    removed = 0
    uid = os.getuid()
    now = time.time()
    with os.scandir(root) as entries:
        for entry in entries:
            if not entry.name.startswith(CONTROL_PREFIX) or not entry.is_dir(follow_symlinks=False):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if info.st_uid != uid:
                continue
            pid_text, dash, _ = entry.name[len(CONTROL_PREFIX) :].partition("-")
            if dash and pid_text.isdigit():
                if _alive(int(pid_text)):
                    continue
            elif now - info.st_mtime < _LEGACY_CONTROL_AGE_S or os.listdir(entry.path):
                continue
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


class OpenSSHTransport:
    """Stands for paramiko's ``Transport`` in a :class:`~.connection.Connection` whose
    SSH runs in an ssh process: liveness, close, the cipher name for the log, and the
    ControlMaster socket for exec sessions (:meth:`exec_process`)."""

    remote_cipher = "openssh"

    def __init__(self, target: SSHHost) -> None:
        self.target = target
        self._dir = control_directory()
        self.control_path = os.path.join(self._dir, "m")
        argv = ssh_arguments(target, self.control_path, master=True)
        argv += ["-s", "--", target.hostname, "sftp"]
        try:
            self.proc = SshProcess(argv, stdin_pipe=True)
        except OSError:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise
        self.channel = PipeChannel(self.proc)
        self._ended = False
        # the process must end even if this connection is only garbage collected
        self._finalizer = weakref.finalize(self, _finish, self.proc, self.channel, self._dir)

    @property
    def sock(self) -> PipeChannel:
        """The pipe channel (``cut_off`` is read by ``Connection.alive``)."""
        return self.channel

    def is_active(self) -> bool:
        return not self._ended and not self.channel.closed and self.proc.process.poll() is None

    def exec_process(self, command: str) -> SshProcess:
        """An ssh process running ``command`` on the server through this connection
        (its ControlMaster), stdin at end-of-file, stdout a pipe."""
        argv = ssh_arguments(self.target, self.control_path, master=False)
        argv += ["--", self.target.hostname, command]
        return SshProcess(argv, stdin_pipe=False)

    def close(self) -> None:
        """End the ssh process (stdin closed, then killed by its PID) and remove its
        control socket's directory."""
        self._ended = True
        self.channel.closed = True
        self._finalizer()


def _finish(proc: SshProcess, channel: PipeChannel, directory: str) -> None:
    """Close ssh's stdin (after what is queued), give it ``_EXIT_WAIT_S`` to end its
    session, then kill it by its PID; reap it and its pump."""
    try:
        channel.end_input()
        proc.wait(_EXIT_WAIT_S)
        proc.kill()
        channel.join_pump(_EXIT_WAIT_S)
        proc.close_files()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
