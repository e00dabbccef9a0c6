"""Opening one SFTP connection for the ``sftp`` endpoint: TCP (or ``ProxyCommand``),
SSH handshake, host key check, authentication, the ``sftp`` subsystem, and the
classification of failures on an open connection (:func:`guarded`).

Why one connection per process and host: paramiko does its crypto and packet work in
Python, so several connections in threads of one process share one GIL and do not move
more bytes in total than one pipelined connection (``bench/bench_sftp.py`` compares
them; ``docs/sftp.md`` has the figures). Streams run in threads of several processes
(:mod:`staccato.workers.threaded_pool`); each stream thread opens its own connection
(one connection is not safe for two threads) and caches it in
:mod:`staccato.endpoints.sftp.pool` (key: host, port, user, the known_hosts name its
host key was checked under, and the thread); ``STACCATO_SFTP_MAX_CONNECTIONS`` still
caps them per host.

Throughput settings (RFC 4254 §5.2 flow control):

* channel window ``WINDOW_BYTES`` = 8 MiB: what the server may send before we adjust
  the window; must exceed the read-ahead (``READ_AHEAD_BYTES`` in
  :mod:`staccato.endpoints.sftp.pipeline`) so reads never stall on it.
* maximum packet we accept ``PACKET_BYTES`` = 32 KiB (RFC 4254 §5.1; the size OpenSSH
  sends channel data in).
* ciphers: AES-GCM first (``PREFERRED_CIPHERS`` in :mod:`staccato.endpoints.sftp.ssh`).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import paramiko
from paramiko.sftp import SFTPError

from staccato import sockets
from staccato.endpoints.sftp import openssh
from staccato.endpoints.sftp.auth import authenticate
from staccato.endpoints.sftp.hostkeys import HostKeyCheck
from staccato.endpoints.sftp.openssh import OpenSSHTransport
from staccato.endpoints.sftp.pipeline import learned_in_flight
from staccato.endpoints.sftp.protocol import (
    WAIT_SLICE_S,
    BufferedSocket,
    GarbagePacket,
    StaccatoSFTP,
    StatusError,
)
from staccato.endpoints.sftp.slots import Slot
from staccato.endpoints.sftp.ssh import (
    PREFERRED_CIPHERS,
    REDACT_PROXY_COMMAND,
    SSHHost,
    describe,
    open_socket,
)
from staccato.errors import PermanentError, RetryableError, StaccatoError

log = logging.getLogger("staccato.sftp")

WINDOW_BYTES = 8 * 1024 * 1024
PACKET_BYTES = 32 * 1024


class ConnectionLost(RetryableError):
    """The SSH connection broke (EOF, reset, timeout); the cached connection is dropped."""


class ShellPrints(PermanentError):
    """The remote login shell prints text before the SFTP protocol starts."""


def _excerpt(head: bytes) -> str:
    """The first line received, for a message (at most 60 characters, up to the first
    character that is not printable)."""
    text = head.decode("utf-8", "replace")
    end = next((i for i, c in enumerate(text) if not c.isprintable()), len(text))
    shown = text[: min(end, 60)].strip()
    return f"it sent {shown!r}" if shown else "unprintable bytes"


def is_connection_error(err: BaseException) -> bool:
    """Whether ``err`` means the connection itself failed (EOF, SSH or SFTP framing
    error, timeout, reset), not one request."""
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


@dataclass
class Connection:
    """An authenticated SSH connection with one SFTP channel, holding a slot."""

    target: SSHHost
    transport: paramiko.Transport | OpenSSHTransport
    sftp: StaccatoSFTP
    slot: Slot
    users: int = 0
    leases: int = 0
    idle_since: float = field(default_factory=time.time)
    broken: bool = False

    def alive(self) -> bool:
        return (
            not self.broken
            and not self.sftp.cut_off
            and self.transport.is_active()
            and not self.sftp.sock.closed
            and not getattr(self.transport.sock, "cut_off", False)
        )

    def close(self) -> None:
        """Close the TCP connection, *then* free the slot."""
        try:
            _close_transport(self.transport)
        finally:
            self.slot.release()


def _close_transport(transport: paramiko.Transport | OpenSSHTransport) -> None:
    """Close a transport and its socket for sure. ``shutdown(2)`` sends the FIN at once:
    a plain ``close(2)`` waits for paramiko's reader thread to leave ``recv`` (up to
    0.1 s), during which another process could already hold the freed slot; and
    ``Transport.close`` does nothing for a transport whose handshake failed. An
    OpenSSH transport's ssh process is ended and reaped."""
    if isinstance(transport, OpenSSHTransport):
        try:
            transport.close()
        except Exception as err:
            log.info("closing an sftp connection failed: %s", describe(err))
        return
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


def connect(target: SSHHost, slot: Slot) -> Connection:
    """Open, check and authenticate an SSH connection and start the SFTP subsystem:
    over an ssh process where the worker uses OpenSSH (:mod:`.openssh`,
    ``STACCATO_SFTP_TRANSPORT``), else with paramiko. When ssh fails before SFTP
    starts, paramiko connects once to tell why (its messages, below); if paramiko gets
    through, its connection is used (logged).

    Raises:
        PermanentError: unknown/changed host key, no sftp subsystem.
        PermissionDenied: authentication failed or the server asks for a prompt
            (keyboard-interactive or password, see :mod:`staccato.endpoints.sftp.auth`).
        RetryableError: the network or the server failed (may heal).
    """
    if not openssh.wanted():
        return _connect_paramiko(target, slot)
    try:
        return _connect_openssh(target, slot)
    except _OpenSSHFailed as failed:
        connection = _connect_paramiko(target, slot)
        log.warning(
            "%s: ssh could not start an sftp session (%s); this connection uses paramiko",
            target.label,
            failed.reason,
        )
        return connection


class _OpenSSHFailed(Exception):
    """ssh ended (or could not start) before the SFTP session began: ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _connect_openssh(target: SSHHost, slot: Slot) -> Connection:
    """An SFTP session over an ssh process (:class:`OpenSSHTransport`).

    Raises:
        _OpenSSHFailed: ssh ended before the session started (the caller asks
            paramiko why).
        ShellPrints: the login shell prints text where SFTP's first packet belongs.
        RetryableError: no answer within the connect timeout.
    """
    started = time.monotonic()
    try:
        transport = OpenSSHTransport(target)
    except OSError as err:
        raise _OpenSSHFailed(f"cannot run ssh: {err}") from None
    channel = transport.channel
    try:
        channel.settimeout(min(WAIT_SLICE_S, target.connect_timeout_s))
        try:
            sftp = StaccatoSFTP(channel, timeout_s=target.connect_timeout_s)  # type: ignore[arg-type]
            sftp.setup()
        except GarbagePacket as err:
            raise _shell_prints(target, err) from None
        except TimeoutError:
            raise RetryableError(
                f"SSH handshake with {target.hostname}:{target.port} failed: no SSH session "
                f"with SFTP within {target.connect_timeout_s:g} s "
                "(STACCATO_SFTP_CONNECT_TIMEOUT_S; the host may be hung or overloaded, or a "
                "login shell stalls in its start-up files)"
            ) from None
        except (paramiko.SSHException, EOFError, OSError, SFTPError, StatusError):
            transport.proc.kill()
            reason = redact(channel.exit_reason(), target)
            if "timed out" in reason or time.monotonic() - started >= target.connect_timeout_s:
                # ssh's ConnectTimeout (TCP connect, banner): a paramiko attempt would
                # wait as long again before saying the same
                raise RetryableError(
                    f"SSH handshake with {target.hostname}:{target.port} failed: no answer "
                    f"within {target.connect_timeout_s:g} s (STACCATO_SFTP_CONNECT_TIMEOUT_S; "
                    f"the host may be hung or overloaded; ssh: {reason})"
                ) from None
            raise _OpenSSHFailed(reason) from None
        _tune(sftp, target, channel)
    except BaseException:
        _close_transport(transport)
        raise
    log.debug(
        "sftp connection to %s (slot %d) over ssh (pid %d), extensions %s, request sizes %d/%d",
        target.label,
        slot.index,
        transport.proc.pid,
        sorted(sftp.extensions),
        sftp.read_size,
        sftp.write_size,
    )
    return Connection(target, transport, sftp, slot)


def redact(text: str, target: SSHHost) -> str:
    """``text`` (ssh's stderr) without the ProxyCommand line, which may hold a secret."""
    return describe(Exception(text), target)


def _shell_prints(target: SSHHost, err: GarbagePacket) -> ShellPrints:
    return ShellPrints(
        f"{target.label}: the sftp subsystem started with text instead of the SFTP "
        f"protocol ({_excerpt(err.head)}): the remote account's shell start-up files "
        "(~/.bashrc, ~/.profile, /etc/bash.bashrc, ...) print to stdout also in "
        "non-interactive sessions. Fix it on the server: print only in interactive "
        "shells (e.g. put `[[ $- == *i* ]] || return` at the top of ~/.bashrc, or "
        "send the messages to stderr), or use `Subsystem sftp internal-sftp`; "
        "`ssh HOST true | od -c` shows what is printed"
    )


def _tune(sftp: StaccatoSFTP, target: SSHHost, channel: Any) -> None:
    """The connection's timeouts and learned cap of requests in flight."""
    sftp.io_timeout_s = target.io_timeout_s
    sftp.stall_s = target.stall_s
    sftp.cap_key = (target.hostname, target.port)
    learned = learned_in_flight(sftp.cap_key)
    if learned is not None:
        sftp.max_in_flight = learned
    channel.settimeout(min(WAIT_SLICE_S, target.io_timeout_s))


def _connect_paramiko(target: SSHHost, slot: Slot) -> Connection:
    """Open, check and authenticate an SSH connection with paramiko and start the
    SFTP subsystem.

    Raises:
        PermanentError: unknown/changed host key, no sftp subsystem.
        PermissionDenied: authentication failed or the server asks for a prompt
            (keyboard-interactive or password, see :mod:`staccato.endpoints.sftp.auth`).
        RetryableError: the network or the server failed (may heal).
    """
    check = HostKeyCheck(target)
    sock = open_socket(target)
    if isinstance(sock, socket.socket):
        sock = BufferedSocket(sock)
    # the SSH window, like TCP's, must hold the bandwidth-delay product
    window = max(WINDOW_BYTES, sockets.chosen() or 0)
    transport = paramiko.Transport(
        sock, default_window_size=window, default_max_packet_size=PACKET_BYTES
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
        proxy_hint = (
            "(the profile's ProxyCommand must connect to the server's SSH port and stay "
            "running: check that it works by hand)"
        )
        try:
            transport.start_client(timeout=target.connect_timeout_s)
        except (paramiko.SSHException, EOFError, OSError) as err:
            hint = (
                proxy_hint
                if target.proxy_command
                else "(the server may be restarting or refusing connections beyond MaxStartups)"
            )
            raise RetryableError(
                f"SSH handshake with {target.hostname}:{target.port} failed: "
                f"{describe(err, target)} {hint}"
            ) from None
        if not transport.is_active() or not transport.initial_kex_done:
            # paramiko's start_client returns, without an error, when its timeout ends
            # before the key exchange did (a host that accepts and never answers); its
            # next call raised a bare SSHException("No existing session"), an
            # "internal error" that failed a whole batch, every root's files with it
            if target.proxy_command:
                # a proxy that ended (or never connected) also lands here when paramiko
                # wrote its banner before the proxy closed its input (ci79): the proxy's
                # words, not a hung host's
                raise RetryableError(
                    f"SSH handshake with {target.hostname}:{target.port} failed: the "
                    f"ProxyCommand gave no SSH server within {target.connect_timeout_s:g} s "
                    f"{proxy_hint}"
                )
            raise RetryableError(
                f"SSH handshake with {target.hostname}:{target.port} failed: no answer "
                f"within {target.connect_timeout_s:g} s (STACCATO_SFTP_CONNECT_TIMEOUT_S; "
                "the host may be hung or overloaded)"
            )
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
            raise _shell_prints(target, err) from None
        except (paramiko.SSHException, EOFError, OSError, SFTPError, StatusError) as err:
            reason = "no answer" if isinstance(err, TimeoutError) else describe(err, target)
            raise RetryableError(
                f"{target.label}: the sftp subsystem did not start ({reason}; a login shell that "
                "prints or stalls in its start-up files can cause this)"
            ) from None
        _tune(sftp, target, channel)
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
        if is_connection_error(err) or not connection.alive():
            connection.broken = True
            raise ConnectionLost(
                f"connection to {connection.target.label} lost: {describe(err, connection.target)}"
            ) from None
        raise
