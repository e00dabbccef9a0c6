"""SSH side of the ``sftp`` endpoint: worker settings and ``~/.ssh/config`` resolved into
a :class:`SSHHost`, the TCP socket (or ``ProxyCommand``), and keeping secrets out of
messages and paramiko's log lines. Host keys are checked in
:mod:`staccato.endpoints.sftp.hostkeys`, authentication is in
:mod:`staccato.endpoints.sftp.auth`; no SFTP here.

Worker settings (environment of ``staccato worker``; read at every new connection):

===================================  =====================================================
``STACCATO_SSH_CONFIG``              ssh_config file (default ``~/.ssh/config``; ``none``
                                     for none). Its ``Host`` blocks are the worker's named
                                     *profiles*: ``sftp://ALIAS/path`` uses ``HostName``,
                                     ``User``, ``Port``, ``IdentityFile``,
                                     ``IdentitiesOnly``, ``IdentityAgent none``,
                                     ``UserKnownHostsFile``, ``HostKeyAlias``,
                                     ``StrictHostKeyChecking``, ``ConnectTimeout``,
                                     ``ProxyCommand`` of the matching blocks.
``STACCATO_SSH_KNOWN_HOSTS``         known_hosts files (``:``-separated) used *instead of*
                                     ``UserKnownHostsFile`` / ``~/.ssh/known_hosts``;
                                     ``/etc/ssh/ssh_known_hosts`` is always read too.
``STACCATO_SSH_IDENTITY``            private key files (``:``-separated) tried before the
                                     config's ``IdentityFile``\\ s.
``STACCATO_SFTP_TRUST_NEW_HOSTS``    ``1``: accept the key of a host that has none in
                                     known_hosts and record it there (trust on first use).
                                     Default off. Per profile: ``StrictHostKeyChecking
                                     accept-new`` (``no`` and ``off`` mean the same here).
                                     A *changed* key is never accepted.
``STACCATO_SFTP_CONNECT_TIMEOUT_S``  TCP connect + SSH handshake + auth, seconds (15).
``STACCATO_SFTP_IO_TIMEOUT_S``       a request without an answer for this long drops the
                                     connection (retryable), seconds (60).
``STACCATO_SFTP_STALL_S``            no answer at all for this long while several requests
                                     are in flight: the server is taken to ignore requests
                                     beyond a cap it does not advertise; requests in flight
                                     are halved and the unanswered ones sent again,
                                     seconds (10; at most the I/O timeout).
``SSH_AUTH_SOCK``                    the ssh-agent, as for OpenSSH.
===================================  =====================================================

(Connection-cap settings are in :mod:`staccato.endpoints.sftp.slots`.)
"""

from __future__ import annotations

import base64
import errno
import getpass
import hashlib
import logging
import os
import re
import shlex
import socket
from dataclasses import dataclass, field

import paramiko

from staccato import settings, sockets
from staccato.errors import PermanentError, RetryableError
from staccato.urls import EndpointURL

DEFAULT_CONNECT_TIMEOUT_S = 15.0
DEFAULT_IO_TIMEOUT_S = 60.0
DEFAULT_IDENTITIES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")

# Ciphers in order of preference. AES-GCM (RFC 5647, aes128-gcm@openssh.com) needs no
# separate MAC pass and uses AES-NI through `cryptography`: on a CPU with AES-NI the
# fastest cipher paramiko offers (no separate HMAC pass as with aes128-ctr).
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr")


def _truthy(text: str | None) -> bool:
    return (text or "").strip().lower() in ("1", "yes", "true", "on")


def describe(err: BaseException, target: SSHHost | None = None) -> str:
    """``err`` in words for a message or log line, without secrets: paramiko's
    ``ProxyCommandFailure`` (and anything that quotes it) carries the whole
    ``ProxyCommand`` line, which may hold a password or token (``sshpass -p ...``); it
    is replaced by ``<ProxyCommand>``. paramiko's other exceptions name protocol
    events, never key material or passphrases (keys are only ever loaded from files or
    the agent, and Staccato passes no passphrase or password to paramiko)."""
    if isinstance(err, paramiko.ProxyCommandFailure):
        text = f"the ProxyCommand failed ({err.error})"
    else:
        text = _PROXY_COMMAND_QUOTED.sub("<ProxyCommand>", str(err) or type(err).__name__)
    command = target.proxy_command if target is not None else None
    if command:
        try:
            split = " ".join(shlex.split(command))
        except ValueError:
            split = command
        for form in {command, split}:
            if form.strip():
                text = text.replace(form, "<ProxyCommand>")
    return text


_PROXY_COMMAND_QUOTED = re.compile(r'ProxyCommand\(".*"\)(?= returned nonzero exit status)')


class RedactProxyCommand(logging.Filter):
    """A filter for paramiko's loggers: its transport thread logs every exception at
    ERROR with its traceback, and a ``ProxyCommandFailure`` quotes the whole command line
    (``ProxyCommand("...") returned nonzero exit status: ...``); the command is replaced
    by ``<ProxyCommand>`` in the message and in an attached traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "ProxyCommand(" in text:
            record.msg, record.args = _PROXY_COMMAND_QUOTED.sub("<ProxyCommand>", text), ()
        if record.exc_info:
            trace = logging.Formatter().formatException(record.exc_info)
            record.exc_text = _PROXY_COMMAND_QUOTED.sub("<ProxyCommand>", trace)
            record.exc_info = None
        return True


REDACT_PROXY_COMMAND = RedactProxyCommand()
for _name in ("paramiko", "paramiko.transport", "paramiko.transport.sftp"):
    logging.getLogger(_name).addFilter(REDACT_PROXY_COMMAND)


def fingerprint(key: paramiko.PKey) -> str:
    """``TYPE SHA256:base64`` as ``ssh-keygen -l`` prints it."""
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    return f"{key.get_name()} SHA256:{digest}"


@dataclass
class SSHHost:
    """Where and how to connect, resolved from the URL, the ssh config and settings.

    Attributes:
        alias: the host as written in the URL (ssh config ``Host`` pattern).
        hostname: the host to connect to (``HostName``).
        port: TCP port.
        user: login name.
        host_key_name: the known_hosts name (``HostKeyAlias``, ``host`` or ``[host]:port``).
        identities: key files to try, in order.
        use_agent: whether ssh-agent keys are tried (not with ``IdentitiesOnly yes`` or
            ``IdentityAgent none``).
        known_hosts: user known_hosts files (the first receives trusted new keys).
        trust_new: accept and record the key of an unknown host.
        connect_timeout_s: seconds for connect + handshake + auth.
        io_timeout_s: seconds without an answer before the connection is dropped.
        stall_s: seconds without any answer, with several requests in flight, before
            the requests in flight are lowered (at most ``io_timeout_s``).
        proxy_command: ``ProxyCommand`` (already %-expanded by paramiko), or None.
    """

    alias: str
    hostname: str
    port: int
    user: str
    host_key_name: str
    identities: list[str] = field(default_factory=list)
    use_agent: bool = True
    known_hosts: list[str] = field(default_factory=list)
    trust_new: bool = False
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    io_timeout_s: float = DEFAULT_IO_TIMEOUT_S
    stall_s: float = DEFAULT_IO_TIMEOUT_S
    proxy_command: str | None = None

    @property
    def key(self) -> tuple[str, int, str, str]:
        """Connection cache key: host, port, user, and the known_hosts name the host
        key was checked under (so a profile with its own HostKeyAlias gets its own check)."""
        return (self.hostname, self.port, self.user, self.host_key_name)

    @property
    def label(self) -> str:
        """``user@host:port`` for messages."""
        return f"{self.user}@{self.hostname}:{self.port}"


def _ssh_config_path() -> str | None:
    value = (settings.current().ssh_config or "").strip()
    if value.lower() == "none":
        return None
    if value:
        path = os.path.expanduser(value)
        if not os.path.isfile(path):
            raise PermanentError(
                f"worker setting STACCATO_SSH_CONFIG names {path}, which is not a file"
            )
        return path
    path = os.path.expanduser("~/.ssh/config")
    return path if os.path.isfile(path) else None


def _config_error(err: BaseException, path: str) -> str:
    """paramiko's ssh config error without the text it quotes: ``Unparsable line LINE``
    repeats the whole line, which may hold a secret (e.g. a ProxyCommand's password);
    the line number is shown instead."""
    text = describe(err)
    for prefix in ("Unparsable line ", "Unparsable host "):
        if text.startswith(prefix):
            quoted = text[len(prefix) :].strip()
            number = "?"
            try:
                with open(path, encoding="utf-8", errors="replace") as handle:
                    for index, line in enumerate(handle, 1):
                        if quoted and quoted in line:
                            number = str(index)
                            break
            except OSError:
                pass  # the number is only a hint
            return (
                f"line {number} is not `Keyword value` as ssh_config(5) wants "
                "(its text is not shown: it may hold a secret)"
            )
    return text


def resolve(url: EndpointURL) -> SSHHost:
    """Resolve an ``sftp://`` URL into a :class:`SSHHost` (ssh config + worker settings).

    Precedence as in OpenSSH: the URL's user/port, then the config, then defaults
    (local user name, port 22).

    Raises:
        PermanentError: a bad setting or an unsupported config option (``ProxyJump``).
    """
    options: dict[str, object] = {}
    config_path = _ssh_config_path()
    if config_path:
        try:
            config = paramiko.SSHConfig.from_path(config_path)
            options = dict(config.lookup(url.host))
        except Exception as err:  # paramiko raises several kinds for a bad file
            raise PermanentError(
                f"cannot read ssh config {config_path}: {_config_error(err, config_path)}"
            ) from None
    if options.get("proxyjump"):
        raise PermanentError(
            f"ssh config {config_path}: ProxyJump (for {url.host}) is not supported by Staccato's "
            "sftp driver; use an equivalent ProxyCommand, e.g. ProxyCommand ssh -W %h:%p JUMPHOST"
        )
    hostname = str(options.get("hostname") or url.host)
    try:
        port = url.port or int(str(options.get("port") or 22))
    except ValueError:
        raise PermanentError(f"ssh config {config_path}: bad Port for {url.host}") from None
    user = url.user or str(options.get("user") or "") or getpass.getuser()
    alias = options.get("hostkeyalias")
    host_key_name = str(alias) if alias else (hostname if port == 22 else f"[{hostname}]:{port}")

    config = settings.current()
    identities = list(config.ssh_identity)
    configured = options.get("identityfile") or []
    files = [configured] if isinstance(configured, str) else list(configured)  # type: ignore[call-overload]
    identities += [os.path.expanduser(str(p)) for p in files]
    if not identities:
        identities = [os.path.expanduser(p) for p in DEFAULT_IDENTITIES]
    use_agent = not _truthy(str(options.get("identitiesonly", ""))) and (
        str(options.get("identityagent", "")).lower() != "none"
    )

    known_hosts = list(config.ssh_known_hosts)
    if not known_hosts:
        configured_kh = options.get("userknownhostsfile")
        if configured_kh:
            known_hosts = [os.path.expanduser(p) for p in str(configured_kh).split() if p]
        else:
            known_hosts = [
                os.path.expanduser("~/.ssh/known_hosts"),
                os.path.expanduser("~/.ssh/known_hosts2"),
            ]
    strict = str(options.get("stricthostkeychecking", "")).lower()
    trust_new = config.sftp_trust_new_hosts or strict in (
        "accept-new",
        "no",
        "off",
    )

    connect_timeout = config.sftp_connect_timeout_s
    if options.get("connecttimeout"):
        try:
            connect_timeout = float(str(options["connecttimeout"]))
        except ValueError:
            pass
    proxy = options.get("proxycommand")
    io_timeout = config.sftp_io_timeout_s
    stall = min(config.sftp_stall_s, io_timeout)
    return SSHHost(
        alias=url.host,
        hostname=hostname,
        port=port,
        user=user,
        host_key_name=host_key_name,
        identities=identities,
        use_agent=use_agent,
        known_hosts=known_hosts,
        trust_new=trust_new,
        connect_timeout_s=connect_timeout,
        io_timeout_s=io_timeout,
        stall_s=stall,
        proxy_command=str(proxy) if proxy and str(proxy).lower() != "none" else None,
    )


def open_socket(target: SSHHost) -> socket.socket | paramiko.ProxyCommand:
    """TCP connection (or ``ProxyCommand``) to the target.

    Raises:
        PermanentError: the host name does not resolve.
        RetryableError: refused, unreachable, timed out (the server may come back).
    """
    if target.proxy_command:
        try:
            return paramiko.ProxyCommand(target.proxy_command)
        except Exception as err:
            raise RetryableError(
                f"ProxyCommand for {target.alias} failed: {describe(err, target)}"
            ) from None
    try:
        sock = socket.create_connection(
            (target.hostname, target.port), timeout=target.connect_timeout_s
        )
    except socket.gaierror as err:
        if err.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
            raise PermanentError(
                f"unknown host {target.hostname!r} (from sftp://{target.alias}): it does not resolve; "
                "check the URL or the HostName in the worker's ssh config"
            ) from None
        raise RetryableError(f"cannot resolve {target.hostname}: {err.strerror}") from None
    except TimeoutError:
        raise RetryableError(f"connecting to {target.hostname}:{target.port} timed out") from None
    except OSError as err:
        reason = err.strerror or str(err)
        if err.errno == errno.ECONNREFUSED:
            reason = "connection refused (is sshd running?)"
        raise RetryableError(
            f"cannot connect to {target.hostname}:{target.port}: {reason}"
        ) from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sockets.apply(sock)  # buffers sized to the link (staccato.sockets)
    return sock
