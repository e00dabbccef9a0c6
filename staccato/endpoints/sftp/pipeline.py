"""Pipelined reads and writes over one :class:`~staccato.endpoints.sftp.protocol.StaccatoSFTP`,
and what a pipeline does when the server stalls.

Depth (draft-ietf-secsh-filexfer-02 §6; RFC 4254 §5.2 flow control):
``READ_AHEAD_BYTES`` = 2 MiB and ``WRITE_BEHIND_BYTES`` = 4 MiB of requests in flight
per stream (OpenSSH's ``sftp`` keeps 64 x 32 KiB = 2 MiB). The channel window
(``WINDOW_BYTES`` in :mod:`staccato.endpoints.sftp.connection`) exceeds the read-ahead,
so reads never wait for a window adjust. Read requests are sent in batches (one SSH
packet per refill).

Stalls: a server may cap the requests it handles at once below ours without saying so
(no ``limits@openssh.com``) and ignore the rest. With several requests in flight and no
answer at all for ``STACCATO_SFTP_STALL_S`` (default 10 s) a pipeline halves its
requests in flight (down to 1), sends the unanswered ones again (reads and positional
writes are idempotent; late answers to the old ones are ignored) and goes on; the
lowered depth is kept for that host in this process for ``LEARNED_IN_FLIGHT_S`` (10
minutes). A single request without an answer for ``STACCATO_SFTP_IO_TIMEOUT_S`` drops
the connection. Tests: ``test_capped_server_read_and_write`` and
``test_capped_server_transfers`` in ``tests/sftp/test_sftp_faults.py`` (a proxy that
ignores requests beyond a cap and hides ``limits@openssh.com``).

Keepalive: a pipelined write calls :func:`staccato.endpoints.base.keepalive` after
every ``PIECE_BYTES`` (8 MiB) acknowledged, a read after every ``PIECE_BYTES`` handed
over: a chunk of any size (up to 5 GiB) keeps its activity heartbeating.

Memory per stream beyond its chunk buffer: the requests in flight (<= 4 MiB), the
socket buffer (256 KiB) and paramiko's channel buffer (bounded by the read-ahead).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

from paramiko.sftp import CMD_DATA, CMD_STATUS, SFTPError

from staccato.endpoints import base
from staccato.endpoints.sftp.protocol import (
    FX_EOF,
    FX_OK,
    Responses,
    StaccatoSFTP,
    Stalled,
    StatusError,
)

log = logging.getLogger("staccato.sftp")

READ_AHEAD_BYTES = 2 * 1024 * 1024
WRITE_BEHIND_BYTES = 4 * 1024 * 1024
PIECE_BYTES = 8 * 1024 * 1024  # pipelined bytes between keepalive calls
# requests in flight learned per (host, port) in this process (servers that drop excess):
# (cap, time.monotonic() when learned); kept for LEARNED_IN_FLIGHT_S, then tried afresh
# (a server that was only slow for a while gets its full pipeline back)
_LEARNED_IN_FLIGHT: dict[tuple[str, int], tuple[int, float]] = {}
LEARNED_IN_FLIGHT_S = 600.0


def learned_in_flight(key: tuple[str, int]) -> int | None:
    """The cap of requests in flight learned for ``(host, port)`` in this process in the
    last ``LEARNED_IN_FLIGHT_S`` seconds, or None."""
    learned = _LEARNED_IN_FLIGHT.get(key)
    if learned is not None and time.monotonic() - learned[1] < LEARNED_IN_FLIGHT_S:
        return learned[0]
    return None


def in_flight_cap(sftp: StaccatoSFTP, ours: int) -> int:
    """Requests to keep in flight: ``ours``, or less where a stall taught us."""
    return max(1, min(ours, sftp.max_in_flight or ours))


def lower_in_flight(sftp: StaccatoSFTP, depth: int, what: str) -> int:
    """After a stall at ``depth`` requests in flight: halve it (at least 1), for this
    connection and later ones to the same host in this process; returns it."""
    lowered = max(1, depth // 2)
    sftp.max_in_flight = lowered
    if sftp.cap_key is not None:
        _LEARNED_IN_FLIGHT[sftp.cap_key] = (lowered, time.monotonic())
    log.warning(
        "sftp server %s answered none of %d %s requests in flight for %.1f s and does not "
        "advertise its limits (limits@openssh.com): it seems to ignore requests beyond a "
        "cap; sending the unanswered ones again with %d in flight",
        f"{sftp.cap_key[0]}:{sftp.cap_key[1]}" if sftp.cap_key else "?",
        depth,
        what,
        sftp.stall_s,
        lowered,
    )
    return lowered


def write_at(sftp: StaccatoSFTP, handle: bytes, offset: int, data: memoryview) -> None:
    """Write ``data`` at ``offset`` with up to ``WRITE_BEHIND_BYTES`` of SSH_FXP_WRITE
    requests in flight (fewer after a stall, see :meth:`StaccatoSFTP.waiting_in_flight`); returns
    when the server acknowledged every one. Calls :func:`base.keepalive` after every
    ``PIECE_BYTES`` acknowledged.

    Raises:
        StatusError: the first failed write.
    """
    size = sftp.write_size
    depth = in_flight_cap(sftp, max(1, WRITE_BEHIND_BYTES // size))
    receiver = Responses()
    pending: deque[tuple[int, int]] = deque()  # (request id, position)
    position = 0
    total = len(data)
    failure: StatusError | None = None
    acknowledged = 0
    while position < total or pending:
        while position < total and len(pending) < depth and failure is None:
            piece = data[position : position + size]
            base.write_fence()
            pending.append((sftp.send_write(receiver, handle, offset + position, piece), position))
            position += len(piece)
        num, at = pending[0]
        try:
            with sftp.waiting_in_flight(len(pending)):
                while num not in receiver.replies:
                    sftp.read_one()
        except Stalled:
            # the server ignored requests: send everything unacknowledged again
            depth = lower_in_flight(sftp, len(pending), "write")
            sftp.forget([n for n, _ in pending])
            receiver.replies.clear()
            pending.clear()
            position = at if failure is None else total
            continue
        pending.popleft()
        base.moved()
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


def write_records(sftp: StaccatoSFTP, handle: bytes, records: list[tuple[int, bytes]]) -> None:
    """Write a few small ``(offset, bytes)`` records (journal records) with all their
    SSH_FXP_WRITE requests in flight at once: one round trip. Returns when the server
    acknowledged every one.

    Raises:
        StatusError: the first failed write.
    """
    receiver = Responses()
    nums = []
    for offset, data in records:
        base.write_fence()
        nums.append(sftp.send_write(receiver, handle, offset, memoryview(data)))
    failure: StatusError | None = None
    with sftp.waiting_in_flight(1):
        for num in nums:
            while num not in receiver.replies:
                sftp.read_one()
            kind, value = receiver.replies.pop(num)
            if kind != CMD_STATUS:
                raise SFTPError("Expected status")
            if value[0] != FX_OK and failure is None:
                failure = StatusError(*value)
    if failure is not None:
        raise failure


class SourceEnded(Exception):
    """The file ended before the requested range did (``at`` = first missing byte)."""

    def __init__(self, at: int) -> None:
        super().__init__(at)
        self.at = at


class SourceLonger(Exception):
    """There are bytes beyond the expected end of the file (a file whose stat size is
    wrong, e.g. under ``/proc``)."""


class ReadPipeline:
    """Sequential reads of ``[offset, end)`` with up to ``READ_AHEAD_BYTES`` of
    SSH_FXP_READ requests in flight (responses kept in request order).

    With ``probe_eof`` one more 1-byte read at ``end`` must answer SSH_FX_EOF (the
    stat size is not trusted alone, files under ``/proc`` report size 0: the bytes
    actually there decide).
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
        self._depth = in_flight_cap(sftp, max(1, READ_AHEAD_BYTES // self._size))
        self._pending: deque[tuple[int, int, int]] = deque()  # (request id, offset, length)
        self._receiver = Responses()
        self._leftover = memoryview(b"")
        self.position = offset  # next byte handed to the caller

    def _send_range(self, offset: int, length: int) -> tuple[int, int, int]:
        num = self._sftp.send_read(self._receiver, self._handle, offset, length)
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
                        self._sftp.read_one()
            except Stalled:
                self._depth = lower_in_flight(self._sftp, len(self._pending), "read")
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
                self._pending.appendleft(self._send_range(offset + len(data), length - len(data)))
            self._leftover = memoryview(data)
        return filled

    def drain(self) -> None:
        """Collect the answers still in flight (before the handle is closed)."""
        while self._pending:
            self._take()
