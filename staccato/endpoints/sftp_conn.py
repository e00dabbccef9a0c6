"""SFTP connections for the ``sftp`` endpoint: one per worker process and host, capped
per host across all processes, with pipelined reads and writes.

Why one connection per process: paramiko does its crypto and packet work in Python,
so several connections in threads of one process share one GIL (measured with paramiko
5.1 on loopback: several connections in threads of one process 14-45 MB/s in total,
while one connection with the pipeline below reads ~300-500 MB/s and writes ~250-300
MB/s). Streams already run in separate processes (process-pool activities), so each
stream process opens its own connection and caches it (key: host, port, user, and the
known_hosts name its host key was checked under).

Connection cap (user pain point 7: OpenSSH ``MaxStartups 10:30:100`` drops
unauthenticated connections beyond 10, NAS boxes fall over with many sessions): at most
``STACCATO_SFTP_MAX_CONNECTIONS`` (default 4) connections per ``host:port`` are open
at once from all processes sharing ``STACCATO_SFTP_LOCK_DIR`` (default
``$TMPDIR/staccato-sftp-<uid>``: every worker of this user on this machine). A
connection holds one of N slot files locked with ``flock(2)``; the kernel releases the
lock when the process dies, even by SIGKILL. A process that finds no free slot waits,
calling :func:`staccato.endpoints.base.keepalive` so its activity keeps heartbeating,
and touches a ``wanted`` file; idle cached connections in other processes see it and
close at once (else after ``STACCATO_SFTP_IDLE_TIMEOUT_S``, default 10 s).
``STACCATO_SFTP_SLOT_WAIT_S`` (default 600 s, 60 s outside a heartbeating activity)
bounds the wait; then the operation fails as retryable ("all N connections busy").

Throughput tuning (RFC 4254 §5.2 flow control; draft-ietf-secsh-filexfer-02 §6):

* channel window ``WINDOW_BYTES`` = 8 MiB: what the server may send before we adjust
  the window; must exceed the read-ahead so reads never stall on it.
* maximum packet we accept ``PACKET_BYTES`` = 32 KiB (RFC 4254 §5.1; larger packets
  measured slower with paramiko).
* request size: the server's ``limits@openssh.com`` max-read/max-write-length
  (OpenSSH: 261,120 bytes), capped at 256 KiB; 32 KiB if the server does not say (the
  draft's guaranteed minimum is ~32 KiB: "servers SHOULD support at least 34000 bytes").
* ``READ_AHEAD_BYTES`` = 2 MiB and ``WRITE_BEHIND_BYTES`` = 4 MiB of requests in flight
  per stream (OpenSSH's ``sftp`` keeps 64 x 32 KiB = 2 MiB; more read-ahead measured
  slower here). Read requests are sent in batches (one SSH packet per refill).
* A server may cap the requests it handles at once below ours without saying so (no
  ``limits@openssh.com``) and ignore the rest: with several requests in flight and no
  answer at all for ``STACCATO_SFTP_STALL_S`` (default 10 s) the pipeline halves its
  requests in flight (down to 1), sends the unanswered ones again (reads and
  positional writes are idempotent; late answers to the old ones are ignored) and
  goes on; the lowered depth is kept for that host in this process for 10 minutes. A single request
  without an answer for ``STACCATO_SFTP_IO_TIMEOUT_S`` drops the connection.
* Every wait for an answer is cut into slices of at most ``WAIT_SLICE_S`` (1 s),
  between which :func:`staccato.endpoints.base.keepalive` is called, and a pipelined
  write calls it after every ``PIECE_BYTES`` (8 MiB): a chunk of any size (up to
  5 GiB) keeps its activity heartbeating and can be cancelled.
* Responses are parsed from 1 MiB channel reads, and paramiko's socket reads are
  buffered (:class:`BufferedSocket`): per 32 KiB SSH packet paramiko would otherwise do
  two ``recv`` syscalls and several copies.

Memory per stream beyond its chunk buffer: the requests in flight (<= 4 MiB), the
socket buffer (256 KiB) and paramiko's channel buffer (bounded by the read-ahead).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import re
import socket
import struct
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import paramiko
from paramiko.message import Message
from paramiko.sftp import (
    CMD_ATTRS,
    CMD_CLOSE,
    CMD_DATA,
    CMD_EXTENDED,
    CMD_EXTENDED_REPLY,
    CMD_FSETSTAT,
    CMD_FSTAT,
    CMD_HANDLE,
    CMD_INIT,
    CMD_OPEN,
    CMD_READ,
    CMD_STATUS,
    CMD_VERSION,
    CMD_WRITE,
    SFTPError,
    int64,
)
from paramiko.sftp_attr import SFTPAttributes

from staccato import settings
from staccato.endpoints import base
from staccato.endpoints.sftp_ssh import (
    PREFERRED_CIPHERS,
    REDACT_PROXY_COMMAND,
    HostKeyCheck,
    Target,
    authenticate,
    describe,
    open_socket,
)
from staccato.errors import (
    NotFound,
    PermanentError,
    PermissionDenied,
    RetryableError,
    StaccatoError,
    Unsupported,
)

log = logging.getLogger("staccato.sftp")
T = TypeVar("T")

WINDOW_BYTES = 8 * 1024 * 1024
PACKET_BYTES = 32 * 1024
MAX_REQUEST_BYTES = 256 * 1024
DEFAULT_REQUEST_BYTES = 32 * 1024
READ_AHEAD_BYTES = 2 * 1024 * 1024
WRITE_BEHIND_BYTES = 4 * 1024 * 1024
DEFAULT_SLOT_WAIT_S = 600.0
SLOT_WAIT_WITHOUT_KEEPALIVE_S = 60.0
_REAPER_INTERVAL_S = 0.2
SOCKET_BUFFER_BYTES = 256 * 1024  # see BufferedSocket
RECV_BYTES = 1024 * 1024  # channel read size of the response parser
MAX_PACKET_BYTES = 16 * 1024 * 1024  # larger SFTP packets are garbage (paramiko's rule)
WAIT_SLICE_S = 1.0  # longest blocking channel read between keepalive calls
PIECE_BYTES = 8 * 1024 * 1024  # pipelined bytes between keepalive calls
# requests in flight learned per (host, port) in this process (servers that drop excess):
# (cap, time.monotonic() when learned); kept for LEARNED_IN_FLIGHT_S, then tried afresh
# (a server that was only slow for a while gets its full pipeline back)
_LEARNED_IN_FLIGHT: dict[tuple[str, int], tuple[int, float]] = {}
LEARNED_IN_FLIGHT_S = 600.0

# SFTP v3 status codes (draft-ietf-secsh-filexfer-02 §7)
FX_OK, FX_EOF, FX_NO_SUCH_FILE, FX_PERMISSION_DENIED, FX_FAILURE = 0, 1, 2, 3, 4
FX_OP_UNSUPPORTED = 8
# SSH_FXF_* open flags (draft-ietf-secsh-filexfer-02 §6.3)
FXF_READ, FXF_WRITE, FXF_APPEND, FXF_CREAT, FXF_TRUNC, FXF_EXCL = 1, 2, 4, 8, 0x10, 0x20


class ConnectionLost(RetryableError):
    """The SSH connection broke (EOF, reset, timeout); the cached connection is dropped."""


class Stalled(Exception):
    """No answer at all for the stall bound while several requests were in flight."""


class GarbagePacket(SFTPError):
    """Bytes that are not an SFTP packet (``head``: the first bytes received)."""

    def __init__(self, message: str, head: bytes) -> None:
        super().__init__(message)
        self.head = head


class StatusError(Exception):
    """An SFTP status other than OK, with its code (draft §7)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def status_error(err: StatusError | OSError, what: str) -> StaccatoError:
    """Map an SFTP failure to a Staccato error naming ``what``."""
    code = err.code if isinstance(err, StatusError) else None
    number = getattr(err, "errno", None)
    text = err.message if isinstance(err, StatusError) else (err.strerror or str(err))
    if code == FX_NO_SUCH_FILE or number == errno.ENOENT:
        return NotFound(f"{what}: no such file or directory")
    if code == FX_PERMISSION_DENIED or number == errno.EACCES:
        return PermissionDenied(f"{what}: permission denied by the server")
    if code == FX_OP_UNSUPPORTED or text == "Operation unsupported":
        return Unsupported(f"{what}: the server does not support this operation")
    # SSH_FX_FAILURE covers ENOSPC, EIO, quota...: it may heal.
    return RetryableError(f"{what}: the server reports failure ({text or 'no reason given'})")


class ShellPrints(PermanentError):
    """The remote login shell prints text before the SFTP protocol starts."""


def _excerpt(head: bytes) -> str:
    """The first line received, for a message (at most 60 characters, up to the first
    character that is not printable)."""
    text = head.decode("utf-8", "replace")
    end = next((i for i, c in enumerate(text) if not c.isprintable()), len(text))
    shown = text[: min(end, 60)].strip()
    return f"it sent {shown!r}" if shown else "unprintable bytes"


def _connection_error(err: BaseException) -> bool:
    return isinstance(
        err,
        (
            EOFError,
            paramiko.SSHException,
            SFTPError,
            TimeoutError,
            ConnectionError,
            BrokenPipeError,
        ),
    )


# -- SFTP client with extensions and pipelines ----------------------------------------


class _Responses:
    """Receives asynchronous SFTP responses routed by paramiko's ``_read_response``:
    request id -> ``(type, value)`` with DATA -> bytes, STATUS -> ``(code, text)``,
    HANDLE -> handle bytes, ATTRS -> ``SFTPAttributes``, others -> the message."""

    def __init__(self) -> None:
        self.replies: dict[int, tuple[int, Any]] = {}

    def _async_response(self, t: int, msg: Message, num: int) -> None:
        value: Any
        if t == CMD_DATA:
            value = msg.get_string()
        elif t == CMD_STATUS:
            code = msg.get_int()
            try:
                text = msg.get_text()
            except Exception:
                text = ""
            value = (code, text)
        elif t == CMD_HANDLE:
            value = msg.get_binary()
        elif t == CMD_ATTRS:
            value = SFTPAttributes._from_msg(msg)
        else:
            value = msg
        self.replies[num] = (t, value)

    def take(self, t: int, num: int, body: memoryview) -> None:
        """Like ``_async_response`` but from the raw payload after the request id,
        without a paramiko ``Message`` (DATA stays a zero-copy view)."""
        if t == CMD_DATA:
            (length,) = struct.unpack_from(">I", body)
            self.replies[num] = (t, body[4 : 4 + length])
        elif t == CMD_STATUS:
            (code,) = struct.unpack_from(">I", body)
            text = ""
            if len(body) >= 8:
                (text_length,) = struct.unpack_from(">I", body, 4)
                text = bytes(body[8 : 8 + text_length]).decode("utf-8", "replace")
            self.replies[num] = (t, (code, text))
        else:
            self._async_response(t, Message(bytes(body)), num)


class StaccatoSFTP(paramiko.SFTPClient):
    """paramiko's SFTP client plus: the server's extensions (draft §4 version packet),
    its ``limits@openssh.com``, ``fsync@openssh.com``, raw-handle operations and
    pipelined positional reads and writes.

    Pipelining uses paramiko's request machinery (``_async_request`` /
    ``_read_response``), which routes each response by request id to a receiver object.
    """

    extensions: dict[str, bytes]
    read_size: int
    write_size: int

    # Responses are parsed from our own buffer, filled by large channel reads: paramiko's
    # per-packet reads copy each response several times and its channel buffer moves
    # its whole remaining content for every read from the front (quadratic in the
    # read-ahead). These override paramiko's SFTPClient._read_packet/_read_response
    # (same contracts; tied to paramiko's SFTP client internals, 3.x-5.x).
    _rbuf: bytes = b""
    _rpos: int = 0
    io_timeout_s: float = 60.0  # no answer for this long: TimeoutError (connection lost)
    stall_s: float = 60.0  # see ``waiting_in_flight``
    max_in_flight: int | None = None  # learned cap of requests in flight (None: ours)
    cap_key: tuple[str, int] | None = None
    _stall_wait: bool = False

    def __init__(self, sock: paramiko.Channel, timeout_s: float = 60.0) -> None:
        """Start the SFTP session on ``sock`` (INIT/VERSION), waiting up to
        ``timeout_s`` seconds for each answer."""
        self.io_timeout_s = self.stall_s = timeout_s
        super().__init__(sock)

    def _write_all(self, out: bytes | memoryview) -> None:  # paramiko hook (BaseSFTP)
        """Send everything, waiting for the channel's window in slices of at most
        ``WAIT_SLICE_S`` with :func:`base.keepalive` between them (a ``send`` that times
        out has sent nothing).

        Raises:
            TimeoutError: the window stayed shut for ``io_timeout_s``.
            EOFError: the channel closed.
        """
        view = memoryview(out)
        started = time.monotonic()
        while view:
            try:
                sent = self.sock.send(view)
            except TimeoutError:
                waited = time.monotonic() - started
                if waited >= self.io_timeout_s:
                    raise TimeoutError(
                        f"the sftp server accepted no data for {waited:.0f} s "
                        "(STACCATO_SFTP_IO_TIMEOUT_S)"
                    ) from None
                base.keepalive()
                continue
            if sent <= 0:
                raise EOFError("connection closed")
            view = view[sent:]
            started = time.monotonic()

    def _recv(self, need: int) -> bytes:
        """One channel read, waited for in slices of at most ``WAIT_SLICE_S`` with
        :func:`base.keepalive` between them (the channel's timeout is the slice).

        Raises:
            Stalled: nothing came for ``stall_s`` inside :meth:`waiting_in_flight`.
            TimeoutError: nothing came for ``io_timeout_s``.
        """
        started = time.monotonic()
        while True:
            try:
                return self.sock.recv(need)
            except TimeoutError:
                waited = time.monotonic() - started
                if self._stall_wait and waited >= self.stall_s:
                    raise Stalled() from None
                if waited >= self.io_timeout_s:
                    raise TimeoutError(
                        f"no answer from the sftp server for {waited:.0f} s "
                        "(STACCATO_SFTP_IO_TIMEOUT_S)"
                    ) from None
                base.keepalive()

    @contextmanager
    def waiting_in_flight(self, in_flight: int) -> Iterator[None]:
        """Inside the block, with more than one request in flight, a wait without any
        answer for ``stall_s`` raises :class:`Stalled` (instead of waiting for the I/O
        timeout)."""
        previous = self._stall_wait
        self._stall_wait = in_flight > 1
        try:
            yield
        finally:
            self._stall_wait = previous

    def in_flight_cap(self, ours: int) -> int:
        """Requests to keep in flight: ``ours``, or less where a stall taught us."""
        return max(1, min(ours, self.max_in_flight or ours))

    def lower_in_flight(self, depth: int, what: str) -> int:
        """After a stall at ``depth`` requests in flight: halve it (at least 1), for this
        connection and later ones to the same host in this process; returns it."""
        lowered = max(1, depth // 2)
        self.max_in_flight = lowered
        if self.cap_key is not None:
            _LEARNED_IN_FLIGHT[self.cap_key] = (lowered, time.monotonic())
        log.warning(
            "sftp server %s answered none of %d %s requests in flight for %.1f s and does not "
            "advertise its limits (limits@openssh.com): it seems to ignore requests beyond a "
            "cap; sending the unanswered ones again with %d in flight",
            f"{self.cap_key[0]}:{self.cap_key[1]}" if self.cap_key else "?",
            depth,
            what,
            self.stall_s,
            lowered,
        )
        return lowered

    def forget(self, nums: list[int]) -> None:
        """Stop expecting answers to these requests (late ones are then ignored)."""
        with self._lock:
            for num in nums:
                self._expecting.pop(num, None)

    def _buffer_at_least(self, need: int) -> None:
        while len(self._rbuf) - self._rpos < need:
            chunk = self._recv(max(need, RECV_BYTES))
            if not chunk:
                raise EOFError("connection closed")
            self._rbuf = self._rbuf[self._rpos :] + chunk if self._rpos < len(self._rbuf) else chunk
            self._rpos = 0

    def _next_packet(self) -> tuple[int, memoryview]:
        """The next SFTP packet: its type and payload (a view; valid while referenced)."""
        self._buffer_at_least(4)
        (size,) = struct.unpack_from(">I", self._rbuf, self._rpos)
        if size == 0 or size > MAX_PACKET_BYTES:
            head = self._rbuf[self._rpos : self._rpos + 64]
            raise GarbagePacket(f"Garbage packet received (length {size})", head)
        self._buffer_at_least(4 + size)
        start = self._rpos + 4
        self._rpos = start + size
        view = memoryview(self._rbuf)[start : start + size]
        return view[0], view[1:]

    def _read_packet(self) -> tuple[int, bytes]:  # paramiko hook (used by _send_version)
        t, payload = self._next_packet()
        return t, bytes(payload)

    def _read_response(self, waitfor: int | None = None) -> tuple[int | None, Message | None]:
        while True:
            try:
                t, payload = self._next_packet()
            except EOFError as err:
                raise paramiko.SSHException(f"Server connection dropped: {err}") from None
            (num,) = struct.unpack_from(">I", payload)
            with self._lock:
                if num not in self._expecting:
                    if waitfor is None:
                        return None, None
                    continue  # an answer for a file closed before it came back
                receiver = self._expecting[num]
                del self._expecting[num]
            if num == waitfor:
                message = Message(bytes(payload[4:]))
                if t == CMD_STATUS:
                    self._convert_status(message)
                return t, message
            if type(receiver) is _Responses:
                receiver.take(t, num, payload[4:])
            elif receiver is not type(None):
                receiver._async_response(t, Message(bytes(payload[4:])), num)
            if waitfor is None:
                return None, None

    def _send_version(self) -> int:  # paramiko hook: called once by __init__
        message = Message()
        message.add_int(3)
        self._send_packet(CMD_INIT, message)
        t, data = self._read_packet()
        if t != CMD_VERSION:
            raise GarbagePacket("Incompatible sftp protocol", bytes([t]) + data[:63])
        reply = Message(data)
        version = reply.get_int()
        self.extensions = {}
        try:
            while reply.get_remainder():
                name = reply.get_text()
                self.extensions[name] = reply.get_string()
        except Exception as err:
            # a malformed extension list: treat the rest as absent
            log.info(
                "malformed SFTP extension list after %s (%r): ignoring the rest",
                sorted(self.extensions),
                err,
            )
        return version

    def setup(self) -> None:
        """Learn the server's request size limits (``limits@openssh.com``)."""
        self.read_size = self.write_size = DEFAULT_REQUEST_BYTES
        if "limits@openssh.com" in self.extensions:
            t, msg = self._request(CMD_EXTENDED, "limits@openssh.com")
            if t == CMD_EXTENDED_REPLY:
                msg.get_int64()  # max packet length
                max_read, max_write = msg.get_int64(), msg.get_int64()
                if max_read:
                    self.read_size = min(max_read, MAX_REQUEST_BYTES)
                if max_write:
                    self.write_size = min(max_write, MAX_REQUEST_BYTES)

    @property
    def has_posix_rename(self) -> bool:
        return "posix-rename@openssh.com" in self.extensions

    @property
    def has_fsync(self) -> bool:
        return "fsync@openssh.com" in self.extensions

    def _status_request(self, t: int, *args: Any) -> tuple[int, Message]:
        """A synchronous request whose failures come back as :class:`StatusError`."""
        receiver = _Responses()
        num = self._async_request(receiver, t, *args)
        while num not in receiver.replies:
            self._read_response()
        kind, value = receiver.replies.pop(num)
        if kind == CMD_STATUS:
            code, text = value
            if code != FX_OK:
                raise StatusError(code, text)
        return kind, value

    def open_handle(self, path: str, flags: int, mode: int = 0o644) -> bytes:
        """SSH_FXP_OPEN with raw SSH_FXF flags (draft §6.3); returns the handle."""
        attrs = SFTPAttributes()
        if flags & FXF_CREAT:
            attrs.st_mode = mode
        kind, value = self._status_request(CMD_OPEN, path.encode("utf-8"), flags, attrs)
        if kind != CMD_HANDLE:
            raise SFTPError("Expected handle")
        return value

    def close_handle(self, handle: bytes) -> None:
        self._status_request(CMD_CLOSE, handle)

    def fstat_handle(self, handle: bytes) -> SFTPAttributes:
        kind, value = self._status_request(CMD_FSTAT, handle)
        if kind != CMD_ATTRS:
            raise SFTPError("Expected attributes")
        return value

    def truncate_handle(self, handle: bytes, size: int) -> None:
        attrs = SFTPAttributes()
        attrs.st_size = size
        self._status_request(CMD_FSETSTAT, handle, attrs)

    def fsync_handle(self, handle: bytes) -> bool:
        """``fsync@openssh.com``: the server fsyncs the file. False if not offered."""
        if not self.has_fsync:
            return False
        try:
            self._status_request(CMD_EXTENDED, "fsync@openssh.com", handle)
        except StatusError as err:
            if err.code in (FX_OP_UNSUPPORTED, FX_PERMISSION_DENIED):
                log.info(
                    "fsync@openssh.com refused (%s): chunks are durable once acknowledged", err
                )
                self.extensions.pop("fsync@openssh.com", None)  # refused by policy: stop asking
                return False
            raise
        return True

    def write_at(self, handle: bytes, offset: int, data: memoryview) -> None:
        """Write ``data`` at ``offset`` with up to ``WRITE_BEHIND_BYTES`` of SSH_FXP_WRITE
        requests in flight (fewer after a stall, see :meth:`waiting_in_flight`); returns
        when the server acknowledged every one. Calls :func:`base.keepalive` after every
        ``PIECE_BYTES`` acknowledged.

        Raises:
            StatusError: the first failed write.
        """
        size = self.write_size
        depth = self.in_flight_cap(max(1, WRITE_BEHIND_BYTES // size))
        receiver = _Responses()
        pending: deque[tuple[int, int]] = deque()  # (request id, position)
        position = 0
        total = len(data)
        failure: StatusError | None = None
        acknowledged = 0
        while position < total or pending:
            while position < total and len(pending) < depth and failure is None:
                piece = data[position : position + size]
                pending.append(
                    (self._send_write(receiver, handle, offset + position, piece), position)
                )
                position += len(piece)
            num, at = pending[0]
            try:
                with self.waiting_in_flight(len(pending)):
                    while num not in receiver.replies:
                        self._read_response()
            except Stalled:
                # the server ignored requests: send everything unacknowledged again
                depth = self.lower_in_flight(len(pending), "write")
                self.forget([n for n, _ in pending])
                receiver.replies.clear()
                pending.clear()
                position = at if failure is None else total
                continue
            pending.popleft()
            kind, value = receiver.replies.pop(num)
            if kind != CMD_STATUS:
                raise SFTPError("Expected status")
            if value[0] != FX_OK and failure is None:
                failure = StatusError(*value)
                position = total  # send no more; collect what is in flight
            acknowledged += size
            if acknowledged >= PIECE_BYTES:
                acknowledged = 0
                base.keepalive()
        if failure is not None:
            raise failure

    def send_reads(
        self, receiver: _Responses, handle: bytes, ranges: list[tuple[int, int]]
    ) -> list[int]:
        """Send SSH_FXP_READ requests for ``(offset, length)`` ranges in one write."""
        with self._lock:
            first = self.request_number
            self.request_number += len(ranges)
            for num in range(first, first + len(ranges)):
                self._expecting[num] = receiver
        prefix = struct.pack(f">I{len(handle)}s", len(handle), handle)
        packets = b"".join(
            struct.pack(">IBI", 1 + 4 + len(prefix) + 8 + 4, CMD_READ, num)
            + prefix
            + struct.pack(">QI", offset, length)
            for num, (offset, length) in zip(range(first, first + len(ranges)), ranges, strict=True)
        )
        self._write_all(packets)
        return list(range(first, first + len(ranges)))

    def _send_write(
        self, receiver: _Responses, handle: bytes, offset: int, data: memoryview
    ) -> int:
        """SSH_FXP_WRITE without copying ``data`` into a paramiko Message."""
        with self._lock:
            num = self.request_number
            self._expecting[num] = receiver
            self.request_number += 1
        header = struct.pack(
            f">IBII{len(handle)}sQI",
            1 + 4 + 4 + len(handle) + 8 + 4 + len(data),
            CMD_WRITE,
            num,
            len(handle),
            handle,
            offset,
            len(data),
        )
        self._write_all(header)
        self._write_all(data)
        return num

    def reader(self, handle: bytes, offset: int, end: int, probe_eof: bool) -> ReadPipeline:
        return ReadPipeline(self, handle, offset, end, probe_eof)


class SourceEnded(Exception):
    """The file ended before the requested range did (``at`` = first missing byte)."""

    def __init__(self, at: int) -> None:
        super().__init__(at)
        self.at = at


class SourceLonger(Exception):
    """There are bytes beyond the expected end of the file (C10: a wrong stat size)."""


class ReadPipeline:
    """Sequential reads of ``[offset, end)`` with up to ``READ_AHEAD_BYTES`` of
    SSH_FXP_READ requests in flight (responses kept in request order).

    With ``probe_eof`` one more 1-byte read at ``end`` must answer SSH_FX_EOF (C10:
    the stat size is not trusted alone; the bytes actually there decide).
    """

    def __init__(
        self, sftp: StaccatoSFTP, handle: bytes, offset: int, end: int, probe_eof: bool
    ) -> None:
        self._sftp = sftp
        self._handle = handle
        self._next = offset  # next offset to request
        self._end = end
        self._probe = probe_eof
        self._size = sftp.read_size
        self._depth = sftp.in_flight_cap(max(1, READ_AHEAD_BYTES // self._size))
        self._pending: deque[tuple[int, int, int]] = deque()  # (request id, offset, length)
        self._receiver = _Responses()
        self._leftover = memoryview(b"")
        self.position = offset  # next byte handed to the caller

    def _request(self, offset: int, length: int) -> tuple[int, int, int]:
        num = self._sftp._async_request(
            self._receiver, CMD_READ, self._handle, int64(offset), length
        )
        return (num, offset, length)

    def _fill(self) -> None:
        """Top the requests in flight up to the read-ahead once half of them were
        answered, sending the new ones together (one SSH packet, not one each: fewer
        sends and less contention with paramiko's reader thread for the GIL)."""
        if len(self._pending) > self._depth // 2:
            return
        ranges: list[tuple[int, int]] = []
        while self._next < self._end and len(self._pending) + len(ranges) < self._depth:
            length = min(self._size, self._end - self._next)
            ranges.append((self._next, length))
            self._next += length
        if self._probe and self._next >= self._end:
            ranges.append((self._end, 1))
            self._probe = False
            self._next = self._end + 1
        if ranges:
            nums = self._sftp.send_reads(self._receiver, self._handle, ranges)
            self._pending.extend(
                (num, offset, length) for num, (offset, length) in zip(nums, ranges, strict=True)
            )

    def _take(self) -> tuple[int, int, int, int, Any]:
        """The answer to the oldest request; after a stall, the pipeline starts again
        from that request's offset with fewer requests in flight.

        Raises:
            Connection errors; TimeoutError after ``io_timeout_s`` with one in flight.
        """
        replies = self._receiver.replies
        while True:
            num, offset, length = self._pending[0]
            try:
                with self._sftp.waiting_in_flight(len(self._pending)):
                    while num not in replies:
                        self._sftp._read_response()
            except Stalled:
                self._depth = self._sftp.lower_in_flight(len(self._pending), "read")
                self._restart()
                self._fill()
                continue
            self._pending.popleft()
            kind, value = replies.pop(num)
            return num, offset, length, kind, value

    def _restart(self) -> None:
        """Forget every request in flight (answered or not) and request again from the
        oldest one's offset (the EOF probe too, if it was among them)."""
        head = self._pending[0][1]
        probe = any(offset >= self._end for _, offset, _ in self._pending)
        self._sftp.forget([num for num, _, _ in self._pending])
        self._receiver.replies.clear()
        self._pending.clear()
        self._next = min(head, self._end)
        self._probe = self._probe or probe

    def readinto(self, buffer: memoryview) -> int:
        """Fill ``buffer`` as far as the range allows; 0 at the end of the range.

        Raises:
            SourceEnded, SourceLonger, StatusError, and connection errors.
        """
        filled = 0
        want = len(buffer)
        beat = PIECE_BYTES
        while filled < want:
            if filled >= beat:
                beat += PIECE_BYTES
                base.keepalive()
            if self._leftover:
                n = min(len(self._leftover), want - filled)
                buffer[filled : filled + n] = self._leftover[:n]
                self._leftover = self._leftover[n:]
                filled += n
                self.position += n
                continue
            if self.position >= self._end and not self._pending and not self._probe:
                break
            self._fill()
            if not self._pending:
                break
            num, offset, length, kind, value = self._take()
            if offset >= self._end:  # the EOF probe
                if kind == CMD_DATA and value:
                    raise SourceLonger()
                if kind == CMD_STATUS and value[0] not in (FX_OK, FX_EOF):
                    raise StatusError(*value)
                continue
            if kind == CMD_STATUS:
                if value[0] == FX_EOF:
                    raise SourceEnded(offset)
                raise StatusError(*value)
            data = value
            if len(data) < length:
                if not data:
                    raise SourceEnded(offset)
                # A short read (allowed by the draft): ask for the rest before anything else.
                self._pending.appendleft(self._request(offset + len(data), length - len(data)))
            self._leftover = memoryview(data)
        return filled

    def drain(self) -> None:
        """Collect the answers still in flight (before the handle is closed)."""
        while self._pending:
            self._take()


# -- connection slots -------------------------------------------------------------------


def lock_dir() -> str:
    """``STACCATO_SFTP_LOCK_DIR`` or ``$TMPDIR/staccato-sftp-<uid>``."""
    return settings.current().sftp_lock_dir or os.path.join(
        tempfile.gettempdir(), f"staccato-sftp-{os.getuid()}"
    )


class Slot:
    """One of ``max_connections`` flock-ed files for a ``host:port``."""

    def __init__(self, directory: str, index: int, fd: int) -> None:
        self.directory = directory
        self.index = index
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = -1


def _slot_directory(hostname: str, port: int) -> str:
    readable = re.sub(r"[^A-Za-z0-9.\-]", "_", hostname)[:60]
    digest = hashlib.sha256(f"{hostname}:{port}".encode()).hexdigest()[:12]
    return os.path.join(lock_dir(), f"{readable}_{port}_{digest}")


def acquire_slot(target: Target) -> Slot:
    """Wait for a free connection slot for ``target``'s host and port.

    Raises:
        RetryableError: none came free within ``STACCATO_SFTP_SLOT_WAIT_S``.
    """
    config = settings.current()
    cap = config.sftp_max_connections
    wait_s = config.sftp_slot_wait_s or (
        DEFAULT_SLOT_WAIT_S if base.has_keepalive() else SLOT_WAIT_WITHOUT_KEEPALIVE_S
    )
    directory = _slot_directory(target.hostname, target.port)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as err:
        raise PermanentError(
            f"cannot create the sftp lock directory {directory}: {err.strerror}"
        ) from None
    wanted = os.path.join(directory, "wanted")
    deadline = time.monotonic() + wait_s
    delay = 0.02
    announced = False
    while True:
        for index in range(cap):
            path = os.path.join(directory, f"slot-{index}")
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as err:
                raise PermanentError(
                    f"cannot open the sftp connection slot {path}: {err.strerror}"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return Slot(directory, index, fd)
        if time.monotonic() > deadline:
            raise RetryableError(
                f"all {cap} sftp connections to {target.hostname}:{target.port} are busy "
                f"(STACCATO_SFTP_MAX_CONNECTIONS={cap}); waited {wait_s:.0f} s"
            )
        if not announced:
            log.info(
                "waiting for one of %d sftp connection slots to %s:%d",
                cap,
                target.hostname,
                target.port,
            )
            announced = True
        # Ask idle connections in other processes to let go (see Pool._reap).
        with open(wanted, "a"):
            pass
        os.utime(wanted)
        base.keepalive()
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def _wanted_since(directory: str) -> float:
    try:
        return os.stat(os.path.join(directory, "wanted")).st_mtime
    except OSError:
        return 0.0


# -- connections and the per-process pool ----------------------------------------------


class BufferedSocket:
    """A TCP socket for paramiko's ``Transport`` whose ``recv(n)`` is served from a
    buffer filled by one large ``recv_into``: paramiko reads every SSH packet with two
    exact-size ``recv`` calls (length, then the rest), i.e. two syscalls and two GIL
    hand-overs per 32 KiB packet (OpenSSH sends channel data in packets of at most
    32 KiB); this makes it one per ``SOCKET_BUFFER_BYTES``. Only paramiko's reader
    thread calls ``recv``; everything else is passed through."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = memoryview(bytearray(SOCKET_BUFFER_BYTES))
        self._start = 0
        self._end = 0

    def recv(self, size: int) -> bytes:
        if self._start == self._end:
            got = self._sock.recv_into(
                self._buffer
            )  # socket.timeout propagates, as paramiko expects
            if not got:
                return b""
            self._start, self._end = 0, got
        take = min(size, self._end - self._start)
        data = bytes(self._buffer[self._start : self._start + take])
        self._start += take
        return data

    def send(self, data: bytes) -> int:
        return self._sock.send(data)

    def settimeout(self, timeout: float | None) -> None:
        self._sock.settimeout(timeout)

    def shutdown(self, how: int) -> None:
        self._sock.shutdown(how)

    def close(self) -> None:
        self._sock.close()

    @property
    def _closed(self) -> bool:  # read by paramiko's Transport.stop_thread
        return self._sock._closed  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


@dataclass
class Connection:
    """An authenticated SSH connection with one SFTP channel, holding a slot."""

    target: Target
    transport: paramiko.Transport
    sftp: StaccatoSFTP
    slot: Slot
    users: int = 0
    leases: int = 0
    idle_since: float = field(default_factory=time.time)
    broken: bool = False

    def alive(self) -> bool:
        return not self.broken and self.transport.is_active() and not self.sftp.sock.closed

    def close(self) -> None:
        """Close the TCP connection, *then* free the slot."""
        try:
            _close_transport(self.transport)
        finally:
            self.slot.release()


def _close_transport(transport: paramiko.Transport) -> None:
    """Close a transport and its socket for sure. ``shutdown(2)`` sends the FIN at once:
    a plain ``close(2)`` waits for paramiko's reader thread to leave ``recv`` (up to
    0.1 s), during which another process could already hold the freed slot; and
    ``Transport.close`` does nothing for a transport whose handshake failed."""
    try:
        sock = transport.sock
        if hasattr(sock, "shutdown"):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # not connected any more: nothing to shut down
        transport.close()
        sock.close()
        if transport.is_alive() and transport is not threading.current_thread():
            transport.join(2.0)
    except Exception as err:
        log.info("closing an sftp connection failed: %s", describe(err))


def connect(target: Target, slot: Slot) -> Connection:
    """Open, check and authenticate an SSH connection and start the SFTP subsystem.

    Raises:
        PermanentError: unknown/changed host key, no sftp subsystem.
        PermissionDenied: authentication failed or needs a prompt (C9).
        RetryableError: the network or the server failed (may heal).
    """
    check = HostKeyCheck(target)
    sock = open_socket(target)
    if isinstance(sock, socket.socket):
        sock = BufferedSocket(sock)
    transport = paramiko.Transport(
        sock, default_window_size=WINDOW_BYTES, default_max_packet_size=PACKET_BYTES
    )
    transport.logger.addFilter(REDACT_PROXY_COMMAND)  # its log channel may differ
    try:
        transport.banner_timeout = target.connect_timeout_s
        transport.handshake_timeout = target.connect_timeout_s
        transport.auth_timeout = target.connect_timeout_s
        options = transport.get_security_options()
        offered = tuple(options.ciphers)
        options.ciphers = tuple(c for c in PREFERRED_CIPHERS if c in offered) + tuple(
            c for c in offered if c not in PREFERRED_CIPHERS
        )
        options.key_types = check.preferred_key_types(tuple(options.key_types))
        try:
            transport.start_client(timeout=target.connect_timeout_s)
        except (paramiko.SSHException, EOFError, OSError) as err:
            raise RetryableError(
                f"SSH handshake with {target.hostname}:{target.port} failed: {describe(err, target)} "
                "(the server may be restarting or refusing connections beyond MaxStartups)"
            ) from None
        check.check(transport.get_remote_server_key())
        authenticate(transport, target)
        transport.set_keepalive(15)
        try:
            channel = transport.open_session(
                window_size=WINDOW_BYTES,
                max_packet_size=PACKET_BYTES,
                timeout=target.connect_timeout_s,
            )
        except (paramiko.SSHException, EOFError, OSError) as err:
            raise RetryableError(
                f"{target.label}: cannot open a session channel: {describe(err, target)}"
            ) from None
        try:
            channel.invoke_subsystem("sftp")
        except paramiko.SSHException as err:
            if transport.is_active():
                raise PermanentError(
                    f"{target.label} does not offer the sftp subsystem ({describe(err, target)})"
                ) from None
            raise RetryableError(f"{target.label}: connection dropped starting sftp") from None
        channel.settimeout(min(WAIT_SLICE_S, target.connect_timeout_s))
        try:
            sftp = StaccatoSFTP(channel, timeout_s=target.connect_timeout_s)
            sftp.setup()
        except GarbagePacket as err:
            raise ShellPrints(
                f"{target.label}: the sftp subsystem started with text instead of the SFTP "
                f"protocol ({_excerpt(err.head)}): the remote account's shell start-up files "
                "(~/.bashrc, ~/.profile, /etc/bash.bashrc, ...) print to stdout also in "
                "non-interactive sessions. Fix it on the server: print only in interactive "
                "shells (e.g. put `[[ $- == *i* ]] || return` at the top of ~/.bashrc, or "
                "send the messages to stderr), or use `Subsystem sftp internal-sftp`; "
                "`ssh HOST true | od -c` shows what is printed"
            ) from None
        except (paramiko.SSHException, EOFError, OSError, SFTPError, StatusError) as err:
            reason = "no answer" if isinstance(err, TimeoutError) else describe(err, target)
            raise RetryableError(
                f"{target.label}: the sftp subsystem did not start ({reason}; a login shell that "
                "prints or stalls in its start-up files can cause this)"
            ) from None
        sftp.io_timeout_s = target.io_timeout_s
        sftp.stall_s = target.stall_s
        sftp.cap_key = (target.hostname, target.port)
        learned = _LEARNED_IN_FLIGHT.get(sftp.cap_key)
        if learned is not None and time.monotonic() - learned[1] < LEARNED_IN_FLIGHT_S:
            sftp.max_in_flight = learned[0]
        channel.settimeout(min(WAIT_SLICE_S, target.io_timeout_s))
    except BaseException:
        _close_transport(transport)
        raise
    log.debug(
        "sftp connection to %s (slot %d): cipher %s, extensions %s, request sizes %d/%d",
        target.label,
        slot.index,
        transport.remote_cipher,
        sorted(sftp.extensions),
        sftp.read_size,
        sftp.write_size,
    )
    return Connection(target, transport, sftp, slot)


@contextmanager
def guarded(connection: Connection) -> Iterator[None]:
    """Turn a connection failure inside the block into :class:`ConnectionLost` and mark
    the connection broken (it is closed when released). SFTP status errors and
    Staccato errors pass through unchanged."""
    try:
        yield
    except StaccatoError:
        raise
    except BaseException as err:
        if _connection_error(err) or not connection.alive():
            connection.broken = True
            raise ConnectionLost(
                f"connection to {connection.target.label} lost: {describe(err, connection.target)}"
            ) from None
        raise


class Pool:
    """This process's connections, one per (host, port, user); idle ones are closed by
    a reaper thread when another process waits for a slot or after the idle timeout."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: dict[tuple[str, int, str, str], Connection] = {}
        self._reaper: threading.Thread | None = None

    @contextmanager
    def lease(self, target: Target) -> Iterator[Connection]:
        """A connection for ``target``, shared by this process's users of that target;
        errors inside the block are classified by :func:`guarded`."""
        connection = self.acquire(target)
        try:
            with guarded(connection):
                yield connection
        finally:
            self.release(connection)

    def acquire(self, target: Target) -> Connection:
        """The cached connection for ``target`` or a new one (waiting for a slot);
        give it back with :meth:`release`."""
        with self._lock:
            existing = self._connections.get(target.key)
            if existing is not None:
                if existing.alive():
                    existing.users += 1
                    existing.leases += 1
                    return existing
                if existing.users == 0:
                    self._connections.pop(target.key, None)
                    existing.close()
        slot = acquire_slot(target)
        try:
            connection = connect(target, slot)
        except BaseException:
            slot.release()
            raise
        with self._lock:
            connection.users = 1
            connection.leases = 1
            replaced = self._connections.get(target.key)
            self._connections[target.key] = connection
            self._start_reaper()
        if replaced is not None and replaced.users == 0:
            replaced.close()
        return connection

    def release(self, connection: Connection) -> None:
        """Give a connection back; a broken one is closed (its slot freed) at once."""
        with self._lock:
            connection.users -= 1
            if connection.users > 0:
                return
            connection.idle_since = time.time()
            if connection.alive():
                return
            if self._connections.get(connection.target.key) is connection:
                del self._connections[connection.target.key]
        connection.close()

    def discard(self, target: Target) -> None:
        """Close the cached connection to ``target`` if nobody uses it."""
        with self._lock:
            connection = self._connections.get(target.key)
            if connection is None or connection.users:
                return
            del self._connections[target.key]
        connection.close()

    def _start_reaper(self) -> None:
        if self._reaper is None or not self._reaper.is_alive():
            self._reaper = threading.Thread(
                target=self._reap_forever, name="staccato-sftp-reaper", daemon=True
            )
            self._reaper.start()

    def _reap_forever(self) -> None:
        while True:
            time.sleep(_REAPER_INTERVAL_S)
            try:
                self._reap()
            except Exception:  # never let the reaper die
                log.exception("sftp connection reaper")

    def _reap(self) -> None:
        idle_timeout = settings.current().sftp_idle_timeout_s
        now = time.time()
        closing: list[Connection] = []
        with self._lock:
            for key, connection in list(self._connections.items()):
                if connection.users:
                    continue
                if (
                    not connection.alive()
                    or now - connection.idle_since > idle_timeout
                    or _wanted_since(connection.slot.directory) > connection.idle_since
                ):
                    del self._connections[key]
                    closing.append(connection)
        for connection in closing:
            connection.close()

    def close_all(self) -> None:
        with self._lock:
            connections = list(self._connections.values())
            self._connections.clear()
        for connection in connections:
            connection.close()


POOL = Pool()


def run(target: Target, fn: Callable[[StaccatoSFTP], T]) -> T:
    """Run ``fn`` (an idempotent operation) on a pooled connection; if a *reused*
    connection turns out to be dead (e.g. the server restarted while it sat idle), run
    it once more on a fresh one."""
    for attempt in (1, 2):
        with POOL.lease(target) as connection:
            reused = connection.leases > 1
            try:
                return fn(connection.sftp)
            except BaseException as err:
                if attempt == 1 and reused and (_connection_error(err) or not connection.alive()):
                    connection.broken = True
                    continue
                raise
    raise AssertionError("unreachable")
