"""TCP send and receive buffers of the streams' connections (HTTP, S3, SFTP).

A TCP flow moves at most one window per round trip, so a connection needs buffers of
at least the bandwidth-delay product: ``BDP = rate x RTT`` (bytes/s x s = bytes;
RFC 7323 section 1.1, "long fat networks"). Linux sizes buffers by itself
(autotuning, up to ``net.ipv4.tcp_rmem``/``tcp_wmem``'s maximum, 6 MiB / 4 MiB by
default), which suffices unless the BDP is larger; a size set with ``SO_RCVBUF``/
``SO_SNDBUF`` turns autotuning off for that socket and is capped by
``net.core.rmem_max``/``wmem_max`` (raise them, e.g. ``sysctl -w
net.core.rmem_max=33554432``, for larger ones). The kernel doubles the value asked
for (half is bookkeeping: ``man 7 socket``), so ``getsockopt`` reads back twice it.

What a new connection gets (:func:`chosen`):

* the worker setting ``STACCATO_SOCKET_BUFFER_BYTES`` when set (clamped as below);
* else, for a stream of a tuned transfer, the BDP of its expected rate (the
  optimizer's measured rate per stream, with :data:`HEADROOM`) and the connection's
  RTT (``TCP_INFO``, measured by the kernel on connect), clamped to
  [:data:`MIN_BUFFER`, :data:`MAX_BUFFER`] and the kernel's maximum, and applied only
  when it exceeds what autotuning may reach by itself;
* else nothing: the kernel's autotuning.

The stream activity says what it expects with :func:`use` (per thread: a worker
process runs streams in threads); drivers call :func:`apply` on each new socket, which
also registers it with :mod:`staccato.interrupts` (a stuck stream's guard shuts it down).
"""

from __future__ import annotations

import socket
import struct
import threading
from pathlib import Path

from staccato import interrupts

MIN_BUFFER = 64 * 1024
MAX_BUFFER = 16 * 1024 * 1024
#: the rate a stream is sized for, over the rate measured (room to grow)
HEADROOM = 2.0
#: .expected: what this thread's stream expects: (explicit size, rate per stream in bytes/s)
_local = threading.local()


def use(size: int | None, rate: float | None) -> None:
    """Set what the next connections of this thread are sized for: an explicit
    ``size`` (bytes) or the stream's expected ``rate`` (bytes/s); both None: nothing."""
    _local.expected = (size, rate)


def kernel_max(kind: str) -> int | None:
    """``net.core.rmem_max`` (``kind="r"``) or ``wmem_max`` (``"w"``) in bytes; None
    where it cannot be read."""
    try:
        return int(Path(f"/proc/sys/net/core/{kind}mem_max").read_text())
    except (OSError, ValueError):
        return None


def autotune_max(kind: str) -> int | None:
    """The largest buffer autotuning reaches (``net.ipv4.tcp_rmem``/``tcp_wmem``'s third
    value), in bytes; None where it cannot be read."""
    try:
        return int(Path(f"/proc/sys/net/ipv4/tcp_{kind}mem").read_text().split()[2])
    except (OSError, ValueError, IndexError):
        return None


def bdp(rate: float, rtt_s: float) -> int:
    """The bandwidth-delay product (bytes) of ``rate`` bytes/s over ``rtt_s`` seconds,
    clamped to [:data:`MIN_BUFFER`, :data:`MAX_BUFFER`]."""
    return int(min(MAX_BUFFER, max(MIN_BUFFER, rate * rtt_s)))


def rtt(sock: socket.socket) -> float | None:
    """The connection's smoothed round-trip time in seconds (Linux ``TCP_INFO``
    ``tcpi_rtt``, microseconds); None where the kernel does not say."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except (OSError, AttributeError):
        return None
    if len(info) < 72:
        return None
    # struct tcp_info: 8 one-byte fields, then u32s; tcpi_rtt is the 16th u32
    (micros,) = struct.unpack_from("I", info, 8 + 15 * 4)
    return micros / 1e6 if micros else None


def chosen(sock: socket.socket | None = None) -> int | None:
    """The buffer size (bytes) for a new connection (see the module docstring); None:
    leave it to the kernel."""
    from staccato import settings

    fixed = settings.current().socket_buffer_bytes
    size, rate = getattr(_local, "expected", (None, None))
    if fixed is None:
        fixed = size
    if fixed is not None:
        return max(MIN_BUFFER, min(fixed, MAX_BUFFER))
    if rate is None or sock is None:
        return None
    measured = rtt(sock)
    if measured is None:
        return None
    wanted = bdp(rate * HEADROOM, measured)
    ceiling = autotune_max("r")
    return wanted if ceiling is None or wanted > ceiling else None


def apply(sock: socket.socket, size: int | None = None) -> int | None:
    """Set ``SO_SNDBUF`` and ``SO_RCVBUF`` of ``sock`` to ``size`` (default
    :func:`chosen`), no more than the kernel allows (it clamps silently to
    ``rmem_max``/``wmem_max``). Returns the size asked for, None when left alone.
    A socket that refuses (not TCP) is left alone. Registers ``sock`` with
    :func:`staccato.interrupts.register_socket`."""
    interrupts.register_socket(sock)
    size = chosen(sock) if size is None else size
    if size is None:
        return None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    except OSError:
        return None
    return size
