"""Hashes of byte ranges of a file, computed *on the server*: an SSH exec channel on
the pooled connection runs a POSIX shell script of one line per range, ``dd if=FILE
bs=B skip=S count=C | cksum`` (``tail -c +N FILE | head -c LEN`` where the range is
not a whole number of 64 KiB blocks or ``dd`` misbehaves), printing one line per range,
so a write session's temp file is verified without sending it back (what ``rclone``
does with ``md5sum``/``sha1sum``). The hash is the one the range's hash record holds
(:class:`~staccato.endpoints.sftp.journal.ServerHash`): POSIX ``cksum``'s CRC, which
the writers of this release record, or the SHA-256 that earlier releases recorded
(``openssl dgst -sha256 -r``, ``sha256sum`` where ``openssl`` is missing). Used by
:meth:`~staccato.endpoints.sftp.driver.SFTPDriver.segments_checksum` and
:meth:`~staccato.endpoints.sftp.driver.SFTPDriver.durable_chunks`.

Why ``cksum`` (measured 2026-12-07 on the 2-core test VM, CPU seconds per GiB): on the
server the whole ``dd bs=4M | TOOL`` pipeline (``dd`` and the pipe alone 0.55):
``cksum`` (coreutils 9.1, PCLMUL) 0.56, ``openssl dgst -sha256`` (SHA instructions)
1.6, ``-sha1`` 1.75, ``md5sum`` 2.3, ``b2sum`` 2.2, ``sha256sum`` 5.1; in the worker
``fastcrc``'s CKSUM CRC 0.1 against hashlib's SHA-256 0.69 (SHA-1 0.65, MD5 1.6,
BLAKE2b 1.3). Details: docs/sftp.md, "Verifying an upload". ``cksum`` is in POSIX, so every
POSIX shell account has one (coreutils before 9.0 and busybox compute it a byte at a
time: slower on the server, the same value). What it guards: accidental damage (a
torn or misdirected write, a stray writer, a bad disk), with a 32-bit CRC as strong as
the CRC-32C a read-back verify compares; not an adversary who can write the temp
file, who could forge any of these hashes' outputs on the server anyway.

Availability is probed once per host (and again after ``PROBE_TTL_S``): one exec
channel running a fixed script whose output must be exactly as expected, a marker line
with a fresh nonce and then the ``cksum`` line and the SHA-256 of a known range of a
known string through the same ``tail | head | HASH`` pipeline (and a known range
through ``dd``). Anything else means "not available", logged at
debug, and the caller reads the data back over SFTP as before: a server that refuses
exec requests (SFTP-only accounts), ``ForceCommand internal-sftp`` (the exec channel
gets an SFTP server, which exits at the EOF we send at once), a shell that is not POSIX
(Windows ``cmd``), a missing tool, or no answer within ``PROBE_TIMEOUT_S``. Text a login
shell prints before the script's output is skipped (the marker is looked for). Setting
``STACCATO_SFTP_REMOTE_HASH=0`` turns it off.

Nothing here decides what is correct: a range whose line is missing, malformed or late
is simply not in the result, and its caller reads it back. Paths are quoted with
:func:`shlex.quote`; no secret is in a command or a log line.

Heartbeats: :func:`staccato.endpoints.base.keepalive` is called at least every
``_WAIT_SLICE_S`` while waiting for output.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import shlex
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import paramiko

from staccato import settings
from staccato.checksums import posix_cksum
from staccato.endpoints import base
from staccato.endpoints.sftp.connection import Connection, is_connection_error
from staccato.endpoints.sftp.journal import CKSUM, SHA256, ServerHash
from staccato.endpoints.sftp.openssh import OpenSSHTransport, PipeChannel, SshProcess
from staccato.endpoints.sftp.ssh import describe

log = logging.getLogger("staccato.sftp")

PROBE_TIMEOUT_S = 10.0  # at most (also at most the connect timeout)
PROBE_TTL_S = 600.0  # a probe's answer (either way) is kept this long per host
#: a range's line must arrive within the I/O timeout plus this many seconds per byte
#: hashed (the server reads at >= 10 MiB/s)
_SECONDS_PER_BYTE = 1 / (10 * 1024 * 1024)
_WAIT_SLICE_S = 1.0
_MAX_OUTPUT_BYTES = 1024 * 1024  # more than this without the end marker: not our script
#: ranges per exec channel (a line of <= ~130 bytes each): its command stays far below
#: Linux's 128 KiB limit of one argument (``sh -c COMMAND``)
_RANGES_PER_EXEC = 500
_DD_BLOCK_BYTES = 4 * 1024 * 1024  # dd's largest block size (its buffer on the server)
_DD_MIN_BLOCK_BYTES = 64 * 1024  # below: tail | head (dd would make too many reads)
_PROBE_DATA = b"abc"
#: bytes: a verify of fewer bytes than this reads them back over SFTP instead (a few
#: READs on an open connection) of opening an exec channel (a channel, a login shell
#: and a hashing tool started on the server: 10-300 ms per file measured on loopback
#: by ``bench/sftp_small_requests.py``, the bulk of a small file's copy). Reading back
#: checks the same bytes: see :meth:`SFTPDriver.segments_checksum`.
MIN_BYTES = 1024 * 1024
_PROBE_SHA256 = hashlib.sha256(_PROBE_DATA).hexdigest()
_PROBE_CKSUM = f"{posix_cksum(_PROBE_DATA)} {len(_PROBE_DATA)}"
#: the server's SHA-256 tools, the first that works is used (for earlier releases'
#: hash records and ``--checksum sha256``)
_TOOLS = {
    "openssl": "openssl dgst -sha256 -r",
    "sha256sum": "sha256sum",
}

#: what opening or running an exec channel raises when the server refuses or fails it
_REFUSALS = (paramiko.SSHException, OSError, EOFError)

# (host, port, user, known_hosts name) -> (what it runs or None, time.monotonic() probed)
_PROBED: dict[tuple[str, int, str, str], tuple[RemoteHash | None, float]] = {}
_PROBED_LOCK = threading.Lock()

#: ranges hashed on servers by this process, and their bytes (for tests and benchmarks)
stats = {"ranges": 0, "bytes": 0}


def enabled() -> bool:
    """Whether server-side hashing may be tried (``STACCATO_SFTP_REMOTE_HASH``)."""
    return settings.current().sftp_remote_hash


def forget(connection: Connection) -> None:
    """Forget what was probed for ``connection``'s host (its next use probes again)."""
    with _PROBED_LOCK:
        _PROBED.pop(connection.target.key, None)


class _Exec:
    """One exec channel: the command's stdout, read line by line with a deadline;
    stderr is discarded."""

    def __init__(self, connection: Connection, command: str, timeout_s: float) -> None:
        transport = connection.transport
        if isinstance(transport, OpenSSHTransport):
            # an ssh process through the connection's ControlMaster, stdin at EOF
            self._channel: paramiko.Channel | _ProcessChannel = _ProcessChannel(
                transport.exec_process(command)
            )
            self._buffer = b""
            self._received = 0
            self._eof = False
            return
        self._channel = transport.open_session(timeout=timeout_s)
        try:
            self._channel.settimeout(_WAIT_SLICE_S)
            self._channel.exec_command(command)
            # an SFTP server run in place of the command (ForceCommand internal-sftp)
            # waits for an init packet: EOF makes it exit
            self._channel.shutdown_write()
        except BaseException:
            self._channel.close()
            raise
        self._buffer = b""
        self._received = 0
        self._eof = False

    def line(self, deadline: float) -> str | None:
        """The next line of stdout (without its newline); None at EOF, at the deadline
        (``time.monotonic()``) or past ``_MAX_OUTPUT_BYTES``."""
        while b"\n" not in self._buffer:
            if self._eof or time.monotonic() >= deadline or self._received > _MAX_OUTPUT_BYTES:
                return None
            try:
                data = self._channel.recv(65536)
            except TimeoutError:
                data = None
            if data == b"":
                self._eof = True
            elif data:
                self._received += len(data)
                self._buffer += data
                base.moved()  # the server hashes and answers: it is not hung
            while self._channel.recv_stderr_ready():
                self._channel.recv_stderr(65536)
            base.keepalive()
        text, _, self._buffer = self._buffer.partition(b"\n")
        return text.decode("ascii", "replace").rstrip("\r")

    def close(self) -> None:
        self._channel.close()


class _ProcessChannel:
    """An ssh process's stdout as the part of a paramiko exec channel :class:`_Exec`
    reads (``recv`` with a timeout, no stderr); :meth:`close` kills it by its PID."""

    def __init__(self, proc: SshProcess) -> None:
        self._proc = proc
        self._channel = PipeChannel(proc)
        self._channel.settimeout(_WAIT_SLICE_S)

    def recv(self, size: int) -> bytes:
        return self._channel.recv(size)

    def recv_stderr_ready(self) -> bool:
        return False

    def recv_stderr(self, size: int) -> bytes:
        return b""

    def close(self) -> None:
        try:
            self._proc.kill()
        finally:
            self._proc.close_files()


def _marker(nonce: str, what: str) -> str:
    return f"staccato-{what}-{nonce}"


def _until(run: _Exec, marker: str, deadline: float) -> bool:
    """Skip lines (a login shell's banner) up to the line ``marker``; False if it never
    comes."""
    while True:
        line = run.line(deadline)
        if line is None:
            return False
        if line == marker:
            return True


def _digest(line: str | None) -> str | None:
    """The hex digest at the start of a ``openssl dgst -r`` / ``sha256sum`` line."""
    if not line:
        return None
    head = line.split()[0].lower() if line.split() else ""
    if len(head) == 64 and all(c in "0123456789abcdef" for c in head):
        return head
    return None


def _parsed(line: str | None, kind: str, length: int) -> ServerHash | None:
    """The hash of ``kind`` a range's output line holds, or None: a SHA-256 line
    (:func:`_digest`), or a ``cksum`` line ``CRC LENGTH`` whose length is the range's
    (``length`` bytes)."""
    if kind == SHA256:
        digest = _digest(line)
        return ServerHash(SHA256, digest) if digest is not None else None
    fields = (line or "").split()
    if (
        len(fields) == 2
        and fields[0].isdigit()
        and int(fields[0]) < 2**32
        and fields[1] == str(length)
    ):
        return ServerHash(CKSUM, str(int(fields[0])))
    return None


@dataclass(frozen=True)
class RemoteHash:
    """What a server can run: ``tool`` (a key of ``_TOOLS``, its SHA-256; None: none
    works), whether its ``cksum`` prints POSIX's CRC, and whether its ``dd`` reads a
    range of a file into the pipe directly (``dd bs= skip= count=``, POSIX; one pipe
    stage less than ``tail | head``, ~20 % less server CPU)."""

    tool: str | None
    dd: bool
    cksum: bool = False

    def hashes(self, kind: str) -> bool:
        """Whether this server computes hashes of ``kind`` (``cksum`` or ``sha256``)."""
        return self.cksum if kind == CKSUM else kind == SHA256 and self.tool is not None


def _probe(connection: Connection) -> RemoteHash | None:
    """What this server runs through the exec pipeline, or None."""
    nonce = secrets.token_hex(8)
    sample = shlex.quote("x" + _PROBE_DATA.decode() + "x")
    pipe = f"printf %s {sample} | tail -c +2 2>/dev/null | head -c {len(_PROBE_DATA)} 2>/dev/null"
    lines = [f"echo {_marker(nonce, 'probe')}"]
    lines += [f"echo {_marker(nonce, CKSUM)}", f"{pipe} | cksum 2>/dev/null"]
    for name, tool in _TOOLS.items():
        lines += [f"echo {_marker(nonce, name)}", f"{pipe} | {tool} 2>/dev/null"]
    lines += [
        f"echo {_marker(nonce, 'dd')}",
        f"printf %s {sample} | dd bs=1 skip=1 count={len(_PROBE_DATA)} 2>/dev/null; echo",
        f"echo {_marker(nonce, 'end')}",
    ]
    timeout = min(PROBE_TIMEOUT_S, connection.target.connect_timeout_s)
    deadline = time.monotonic() + timeout
    run = _Exec(connection, "\n".join(lines), timeout)
    try:
        if not _until(run, _marker(nonce, "probe"), deadline):
            return None
        found: dict[str, str | None] = {}
        expected = [CKSUM, *_TOOLS, "dd", "end"]
        current: str | None = None
        for _ in range(16):
            line = run.line(deadline)
            if line is None:
                return None
            names = [n for n in expected if line == _marker(nonce, n)]
            if names:
                if names[0] == "end":
                    break
                current = names[0]
                found[current] = None
            elif current is not None and found[current] is None:
                found[current] = line if current in ("dd", CKSUM) else _digest(line)
        else:
            return None
        dd = found.get("dd") == _PROBE_DATA.decode()
        cksum = (found.get(CKSUM) or "").split() == _PROBE_CKSUM.split()
        sha_tool = next((name for name in _TOOLS if found.get(name) == _PROBE_SHA256), None)
        return RemoteHash(sha_tool, dd, cksum) if sha_tool is not None or cksum else None
    finally:
        run.close()


def tool_for(connection: Connection) -> RemoteHash | None:
    """What ``connection``'s host can run to hash (probed, or cached from a probe in the
    last ``PROBE_TTL_S``), or None where server-side hashing is off or unavailable."""
    if not enabled():
        return None
    key = connection.target.key
    now = time.monotonic()
    with _PROBED_LOCK:
        cached = _PROBED.get(key)
    if cached is not None and now - cached[1] < PROBE_TTL_S:
        return cached[0]
    try:
        found = _probe(connection)
    except _REFUSALS as err:  # refused or failed: read back instead (a stop passes)
        _refused(connection, err, "no exec channel for server-side hashing")
        found = None
    log.debug(
        "%s: server-side hashing %s",
        connection.target.label,
        f"with {found}" if found else "unavailable: verify reads back",
    )
    with _PROBED_LOCK:
        _PROBED[key] = (found, now)
    return found


def _refused(connection: Connection, err: BaseException, what: str) -> None:
    """An exec request that failed: re-raised where the connection itself broke (the
    caller maps it as any operation's), otherwise logged at debug as ``what`` (the
    caller then reads back)."""
    if is_connection_error(err) and not connection.alive():
        raise err
    log.debug("%s: %s (%s)", connection.target.label, what, describe(err, connection.target))


def _block(offset: int, length: int) -> int:
    """The largest power of two up to ``_DD_BLOCK_BYTES`` dividing ``offset`` and
    ``length`` (bytes): ``dd``'s block size for that range."""
    block = _DD_BLOCK_BYTES
    while block > 1 and (offset % block or length % block):
        block //= 2
    return block


def _range_command(remote: RemoteHash, offset: int, length: int, kind: str) -> str:
    """The shell line printing the hash of ``kind`` (``cksum``'s line, or the SHA-256)
    of ``[offset, offset+length)`` of ``$f`` (or ``failed``)."""
    tool = "cksum" if kind == CKSUM else _TOOLS[remote.tool or "openssl"]
    block = _block(offset, length)
    if remote.dd and block >= _DD_MIN_BLOCK_BYTES:
        read = f'dd if="$f" bs={block} skip={offset // block} count={length // block} 2>/dev/null'
    else:
        read = f'tail -c +{offset + 1} "$f" 2>/dev/null | head -c {length} 2>/dev/null'
    return f"{read} | {tool} 2>/dev/null || echo failed"


def hash_ranges(
    connection: Connection, path: str, ranges: Sequence[tuple[int, int, int, str]]
) -> dict[int, ServerHash]:
    """Hashes of ``ranges`` of the server file ``path``, computed on the server over
    one exec channel: ``(key, offset, length, kind)`` (bytes; ``kind`` ``cksum`` or
    ``sha256``) -> ``{key: ServerHash}``. A range the server did not answer for in time
    (or at all), or whose kind it cannot compute, is missing from the result; none at
    all where server-side hashing is unavailable (:func:`tool_for`).

    Raises:
        paramiko.SSHException, OSError, EOFError: the connection itself broke (the
            caller's :func:`~staccato.endpoints.sftp.connection.guarded` maps it).
    """
    found: dict[int, ServerHash] = {}
    remote = tool_for(connection) if ranges else None
    if remote is None:
        return found
    ranges = [r for r in ranges if remote.hashes(r[3])]
    for start in range(0, len(ranges), _RANGES_PER_EXEC):
        batch = ranges[start : start + _RANGES_PER_EXEC]
        remote = tool_for(connection)
        if remote is None:
            break
        got = _hash_batch(connection, remote, path, batch)
        found.update(got)
        if len(got) < len(batch):
            break
    return found


def _hash_batch(
    connection: Connection,
    remote: RemoteHash,
    path: str,
    ranges: Sequence[tuple[int, int, int, str]],
) -> dict[int, ServerHash]:
    """:func:`hash_ranges` for at most ``_RANGES_PER_EXEC`` ranges, one exec channel."""
    nonce = secrets.token_hex(8)
    # after the start marker each range prints one line: its hash, or "failed"
    command = "\n".join(
        [
            f"f={shlex.quote(path)}",
            f"echo {_marker(nonce, 'hash')}",
            *(_range_command(remote, offset, length, kind) for _, offset, length, kind in ranges),
            f"echo {_marker(nonce, 'end')}",
        ]
    )
    io_timeout = connection.target.io_timeout_s
    found: dict[int, ServerHash] = {}
    try:
        run = _Exec(connection, command, io_timeout)
    except _REFUSALS as err:
        _refused(connection, err, "exec for server-side hashing failed")
        forget(connection)
        return {}
    try:
        if not _until(run, _marker(nonce, "hash"), time.monotonic() + io_timeout):
            forget(connection)
            return {}
        for key, _, length, kind in ranges:
            line = run.line(time.monotonic() + io_timeout + length * _SECONDS_PER_BYTE)
            parsed = _parsed(line, kind, length)
            if parsed is None:
                log.debug(
                    "%s: server-side hash of %s stopped at range %r (%r)",
                    connection.target.label,
                    path,
                    key,
                    line,
                )
                break
            found[key] = parsed
            stats["ranges"] += 1
            stats["bytes"] += length
    finally:
        run.close()
    return found
