"""SFTP v3 protocol for the ``sftp`` endpoint: paramiko's SFTP client with the server's
extensions, raw-handle operations, a response parser fed by large channel reads, and
the request primitives the pipelines in :mod:`staccato.endpoints.sftp.pipeline` use.

This is the only module that touches paramiko's private surface; if a paramiko upgrade
changes it, ``tests/sftp/test_paramiko_surface.py`` fails (instead of a transfer
hanging or desynchronising). The names it relies on (paramiko 3.x-5.x):

* ``SFTPClient`` methods it overrides: ``_read_packet``, ``_read_response``,
  ``_send_version`` (called once by ``SFTPClient.__init__``) and ``BaseSFTP._write_all``;
* ``SFTPClient`` members it calls or changes: ``_async_request``, ``_request``,
  ``_send_packet``, ``_convert_status``, ``_lock``, ``_expecting`` (request id ->
  receiver), ``request_number``, and receivers' ``_async_response(t, msg, num)``;
* ``SFTPAttributes._from_msg``;
* ``Transport.stop_thread`` reads ``sock._closed`` (see :class:`BufferedSocket`).

Request sizes (draft-ietf-secsh-filexfer-02 §6): the server's ``limits@openssh.com``
max-read/max-write-length (OpenSSH: 261,120 bytes), capped at ``MAX_REQUEST_BYTES``
(256 KiB); ``DEFAULT_REQUEST_BYTES`` (32 KiB) if the server does not say (the draft's
guaranteed minimum is ~32 KiB: "servers SHOULD support at least 34000 bytes").

Waits: every wait for an answer or for the channel's window is cut into slices of at
most ``WAIT_SLICE_S`` (1 s), between which :func:`staccato.endpoints.base.keepalive`
is called, so a long transfer keeps its activity heartbeating and can be cancelled. A
request without an answer for ``io_timeout_s`` raises ``TimeoutError`` (the caller
drops the connection); inside :meth:`StaccatoSFTP.waiting_in_flight` no answer at all
for ``stall_s`` raises :class:`Stalled` (see the pipeline module).

Parsing: responses are parsed from ``RECV_BYTES`` (1 MiB) channel reads, and
paramiko's socket reads are buffered (:class:`BufferedSocket`): per 32 KiB SSH packet
paramiko would otherwise do two ``recv`` syscalls and several copies.
"""

from __future__ import annotations

import itertools
import logging
import select
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

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
    CMD_NAME,
    CMD_OPEN,
    CMD_OPENDIR,
    CMD_READ,
    CMD_READDIR,
    CMD_REALPATH,
    CMD_STATUS,
    CMD_VERSION,
    CMD_WRITE,
    SFTPError,
    int64,
)
from paramiko.sftp_attr import SFTPAttributes

from staccato.endpoints import base

log = logging.getLogger("staccato.sftp")

MAX_REQUEST_BYTES = 256 * 1024
DEFAULT_REQUEST_BYTES = 32 * 1024
SOCKET_BUFFER_BYTES = 256 * 1024  # see BufferedSocket
RECV_BYTES = 1024 * 1024  # channel read size of the response parser
MAX_PACKET_BYTES = 16 * 1024 * 1024  # larger SFTP packets are garbage (paramiko's rule)
WAIT_SLICE_S = 1.0  # longest blocking channel read between keepalive calls
#: bytes: paramiko sends at most a channel's maximum packet size less this much of data
#: in one SSH packet (``Channel._wait_for_send_window``), to leave room for the headers
PACKET_HEADROOM_BYTES = 64

# SFTP v3 status codes (draft-ietf-secsh-filexfer-02 §7)
FX_OK, FX_EOF, FX_NO_SUCH_FILE, FX_PERMISSION_DENIED, FX_FAILURE = 0, 1, 2, 3, 4
FX_OP_UNSUPPORTED = 8
# SSH_FXF_* open flags (draft-ietf-secsh-filexfer-02 §6.3)
FXF_READ, FXF_WRITE, FXF_APPEND, FXF_CREAT, FXF_TRUNC, FXF_EXCL = 1, 2, 4, 8, 0x10, 0x20


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


@dataclass(frozen=True)
class FileSystem:
    """A server's file system as ``statvfs@openssh.com`` says: its size in blocks
    (``f_blocks``: 0 for /proc, /sys and the like, which hold no file), the bytes an
    unprivileged user may still write (``f_bavail`` x ``f_frsize``), whether it is
    mounted read-only (``SSH2_FXE_STATVFS_ST_RDONLY``), and the bytes it can ever
    give an unprivileged writer (``capacity``: its blocks less those reserved for
    root, ``f_blocks - (f_bfree - f_bavail)``, times ``f_frsize``; 0 when unknown)."""

    blocks: int
    free: int
    read_only: bool
    capacity: int = 0


class Responses:
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
    its ``limits@openssh.com``, ``fsync@openssh.com``, raw-handle operations and the
    primitives of pipelined positional reads and writes (:meth:`send_reads`,
    :meth:`send_read`, :meth:`send_write`, :meth:`read_one`, :meth:`forget`; the
    pipelines themselves are in :mod:`staccato.endpoints.sftp.pipeline`).

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
    # learned cap of requests in flight (None: ours); see pipeline.lower_in_flight
    max_in_flight: int | None = None
    cap_key: tuple[str, int] | None = None  # (host, port) the cap is learned for
    _stall_wait: bool = False
    cut_off: bool = False  # see cut()

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
            EOFError: the channel closed (also paramiko's ``OSError("Socket is
                closed")`` from a closed channel).
        """
        view = memoryview(out)
        started = time.monotonic()
        while view:
            try:
                sent = self.sock.send(view)
            except OSError as err:
                if isinstance(err, TimeoutError):
                    waited = time.monotonic() - started
                    if waited >= self.io_timeout_s:
                        raise TimeoutError(
                            f"the sftp server accepted no data for {waited:.0f} s "
                            "(STACCATO_SFTP_IO_TIMEOUT_S)"
                        ) from None
                    base.keepalive()
                    continue
                if getattr(self.sock, "closed", False):
                    # paramiko's "Socket is closed" (an OSError with no errno, the
                    # shape of a server's status answer): the connection, not a file
                    raise EOFError(f"connection closed ({err})") from None
                raise
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

    def send_read(self, receiver: Responses, handle: bytes, offset: int, length: int) -> int:
        """One SSH_FXP_READ of ``length`` bytes at ``offset`` (bytes); returns its
        request id (the answer goes to ``receiver``)."""
        return self._async_request(receiver, CMD_READ, handle, int64(offset), length)

    def read_one(self) -> None:
        """Read one response and hand it to its receiver (answers to forgotten
        requests are dropped).

        Raises:
            Stalled, TimeoutError, paramiko.SSHException: see :meth:`_recv`.
        """
        self._read_response()

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
            if type(receiver) is Responses:
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

    def free_bytes(self, path: str) -> int | None:
        """Bytes an unprivileged user may still write on the file system holding
        ``path`` (``statvfs@openssh.com``: ``f_bavail`` x ``f_frsize``); None when the
        server does not offer the extension or refuses it.

        Raises:
            SFTPError, OSError: the connection failed (as any request's).
        """
        fs = self.file_system(path)
        return None if fs is None else fs.free

    def file_system(self, path: str) -> FileSystem | None:
        """What ``statvfs@openssh.com`` says of the file system holding ``path``; None
        when the server does not offer the extension or refuses it.

        Raises:
            SFTPError, OSError: the connection failed (as any request's).
        """
        if "statvfs@openssh.com" not in self.extensions:
            return None
        try:
            kind, msg = self._status_request(
                CMD_EXTENDED, "statvfs@openssh.com", path.encode("utf-8")
            )
        except StatusError:
            return None
        if kind != CMD_EXTENDED_REPLY:
            return None
        # f_bsize, f_frsize, f_blocks, f_bfree, f_bavail, f_files, f_ffree, f_favail,
        # f_fsid, f_flag, f_namemax (PROTOCOL, OpenSSH)
        bsize, frsize, blocks, bfree, bavail, _f, _ff, _fa, _fsid, flag = (
            msg.get_int64() for _ in range(10)
        )
        block = frsize or bsize
        return FileSystem(
            blocks=blocks,
            free=int(bavail * block),
            read_only=bool(flag & 1),
            capacity=max(blocks - (bfree - bavail), 0) * block,
        )

    def _status_request(self, t: int, *args: Any) -> tuple[int, Message]:
        """A synchronous request whose failures come back as :class:`StatusError`."""
        receiver = Responses()
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

    def read_dir(self, path: str) -> list[tuple[bytes, SFTPAttributes]]:
        """SSH_FXP_OPENDIR, then SSH_FXP_READDIR until EOF (draft §6.7): each name as
        the server's raw bytes (a name need not be UTF-8; paramiko's ``listdir_attr``
        would fail on it) with its attributes as READDIR reports them (OpenSSH: those
        of ``lstat``, so a symbolic link shows as a link). ``.`` and ``..`` left out.

        Raises:
            StatusError: the directory cannot be opened or read.
        """
        kind, handle = self._status_request(CMD_OPENDIR, path.encode("utf-8"))
        if kind != CMD_HANDLE:
            raise SFTPError("Expected handle")
        found: list[tuple[bytes, SFTPAttributes]] = []
        try:
            while True:
                try:
                    kind, msg = self._status_request(CMD_READDIR, handle)
                except StatusError as err:
                    if err.code == FX_EOF:
                        return found
                    raise
                if kind != CMD_NAME:
                    raise SFTPError("Expected name response")
                for _ in range(msg.get_int()):
                    name = msg.get_string()
                    msg.get_string()  # longname (ls -l text)
                    attrs = SFTPAttributes._from_msg(msg)
                    if name not in (b".", b".."):
                        found.append((name, attrs))
                base.moved()  # the server answered (a listing's hang watch)
                base.keepalive()
        finally:
            self.close_handle(handle)

    def real_path(self, path: str) -> str:
        """SSH_FXP_REALPATH (draft §6.11): the absolute path with symbolic links
        resolved (OpenSSH: ``realpath(3)``).

        Raises:
            StatusError: it cannot be resolved (missing, a link loop...).
        """
        kind, msg = self._status_request(CMD_REALPATH, path.encode("utf-8"))
        if kind != CMD_NAME or msg.get_int() != 1:
            raise SFTPError("Expected one name")
        return str(msg.get_string().decode("utf-8", "surrogateescape"))

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

    def send_reads(
        self, receiver: Responses, handle: bytes, ranges: list[tuple[int, int]]
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

    def _packet_data_bytes(self) -> int:
        """Bytes of channel data paramiko puts in one SSH packet: the channel's maximum
        packet size (the server's, OpenSSH: 32 KiB) less :data:`PACKET_HEADROOM_BYTES`,
        as ``Channel._wait_for_send_window`` computes it."""
        return max(1, self.sock.out_max_packet_size - PACKET_HEADROOM_BYTES)

    def _write_fenced(self, header: bytes, data: memoryview) -> None:
        """:meth:`_write_all` of ``header`` then ``data`` with :func:`base.write_fence`
        checked before each channel send (one SSH packet each), not only before the
        request: a stream frozen while waiting for the channel's window (or for the
        socket) would, once woken, send the rest of its request, and the server would
        carry it out on a handle that may now lead to the published file. If the fence
        fails, the connection is cut at once (:meth:`cut`): the request it was sending
        stays incomplete, and the server never carries out an incomplete request (it
        closes the session on EOF).

        Each send is one full SSH packet (:meth:`_packet_data_bytes`; the header rides
        in the first): slices of another size cost a second, small packet each (32 KiB
        slices were 32,704 + 64 bytes: twice the packets, ~1 s more CPU per GiB)."""
        packet = self._packet_data_bytes()
        room = max(0, packet - len(header))
        first = memoryview(b"".join((header, data[:room])))  # one copy, not two
        pieces = itertools.chain(
            (first[i : i + packet] for i in range(0, len(first), packet)),
            (data[i : i + packet] for i in range(room, len(data), packet)),
        )
        for piece in pieces:
            try:
                base.write_fence()
            except BaseException:
                self.cut()
                raise
            try:
                self._write_all(piece)
            except EOFError:
                base.write_fence()  # the socket's fence cut it (BufferedSocket.send): say so
                raise

    def cut(self) -> None:
        """Drop the connection now, with no more bytes sent: ``shutdown(2)`` of its
        socket (paramiko's reader thread then sees EOF and ends the transport). The
        connection is dead afterwards (:attr:`cut_off`)."""
        self.cut_off = True
        own_cut = getattr(self.sock, "cut", None)
        if own_cut is not None:  # an ssh process's pipes (openssh.PipeChannel)
            own_cut()
            return
        transport = self.sock.get_transport()
        sock = getattr(transport, "sock", None)
        if isinstance(sock, BufferedSocket):
            sock.cut()
        elif sock is not None:
            try:
                sock.close()
            except Exception as err:  # a ProxyCommand that already ended
                log.info("cutting an sftp connection: %r", err)

    def send_write(self, receiver: Responses, handle: bytes, offset: int, data: memoryview) -> int:
        """SSH_FXP_WRITE without copying ``data`` into a paramiko Message; the request's
        bytes go out under the write fence (:meth:`_write_fenced`)."""
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
        self._write_fenced(header, data)
        return num


def _writable(sock: socket.socket, timeout_s: float | None) -> bool:
    """Whether ``sock`` can take bytes, waiting up to ``timeout_s`` seconds (None: as
    long as it takes)."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLOUT)
    return bool(poller.poll(None if timeout_s is None else int(timeout_s * 1000)))


class BufferedSocket:
    """A TCP socket for paramiko's ``Transport`` whose ``recv(n)`` is served from a
    buffer filled by one large ``recv_into``: paramiko reads every SSH packet with two
    exact-size ``recv`` calls (length, then the rest), i.e. two syscalls and two GIL
    hand-overs per 32 KiB packet (OpenSSH sends channel data in packets of at most
    32 KiB); this makes it one per ``SOCKET_BUFFER_BYTES``. Only paramiko's reader
    thread calls ``recv``; everything else is passed through."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.cut_off = False
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
        """Send from paramiko's packetizer, in the calling thread. In a stream attempt
        (:func:`base.write_fenced`) the socket is first waited on until it is writable
        (up to its timeout, then ``TimeoutError``, which paramiko retries), then the
        fence is checked, then the bytes go out: a thread frozen while the socket was
        full checks the fence when it wakes, before it sends. If the fence fails the
        socket is cut (:meth:`cut`) so that the SSH packet being sent is never
        completed (the server drops an incomplete packet with the connection)."""
        if base.write_fenced():
            timeout = self._sock.gettimeout()
            if not _writable(self._sock, timeout):
                raise TimeoutError("timed out")
            try:
                base.write_fence()
            except BaseException:
                self.cut()
                raise
        return self._sock.send(data)

    def cut(self) -> None:
        """Shut the socket down in both directions at once (no more bytes leave; the
        reader thread sees EOF); marks it :attr:`cut_off`."""
        self.cut_off = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # not connected any more

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
