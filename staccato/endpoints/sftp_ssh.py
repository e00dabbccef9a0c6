"""SSH side of the ``sftp`` endpoint: worker settings, ``~/.ssh/config``, host keys and
authentication (with paramiko). No SFTP here; see :mod:`staccato.endpoints.sftp_conn`.

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
                                     accept-new``. A *changed* key is never accepted.
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

(Connection-cap settings are in :mod:`staccato.endpoints.sftp_conn`.)

Authentication is public-key only (agent keys, then key files), the way OpenSSH's
``BatchMode yes`` works: a worker has no terminal, so it never prompts and never reads
stdin. A server that wants ``keyboard-interactive`` or ``password`` (alone, or as a
second factor after the key: case C9) fails the transfer at once, not retried, naming
what the server asked for. Encrypted key files are not decrypted (no passphrase can be
asked for): load them into ssh-agent.

Host keys (RFC 4251 §4.1, OpenSSH ``StrictHostKeyChecking yes``): the server's key must
be in known_hosts under ``HostKeyAlias`` or ``HOST`` (port 22) / ``[HOST]:PORT``
(hashed names, wildcards and ``!`` negations are understood; ``@revoked`` keys are
refused; ``@cert-authority`` lines are ignored: host certificates are not supported).
Fingerprints are shown as OpenSSH shows them: ``SHA256:`` + unpadded base64.
"""

from __future__ import annotations

import base64
import binascii
import errno
import fcntl
import getpass
import hashlib
import logging
import os
import re
import shlex
import socket
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
from paramiko.hostkeys import HostKeys

from staccato import settings
from staccato.errors import PermanentError, PermissionDenied, RetryableError
from staccato.urls import EndpointURL

DEFAULT_CONNECT_TIMEOUT_S = 15.0
DEFAULT_IO_TIMEOUT_S = 60.0
GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
DEFAULT_IDENTITIES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")

# Ciphers in order of preference. AES-GCM (RFC 5647, aes128-gcm@openssh.com) needs no
# separate MAC pass and uses AES-NI through `cryptography`: the fastest paramiko offers
# (measured here ~1.3-1.5x aes128-ctr + hmac-sha2-256 per connection).
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr")
# known_hosts key type -> the host key algorithms that prove it (RFC 8332 for RSA).
_HOST_KEY_ALGORITHMS = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")}


def _truthy(text: str | None) -> bool:
    return (text or "").strip().lower() in ("1", "yes", "true", "on")


def describe(err: BaseException, target: Target | None = None) -> str:
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
class Target:
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


def resolve(url: EndpointURL) -> Target:
    """Resolve an ``sftp://`` URL into a :class:`Target` (ssh config + worker settings).

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
    return Target(
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


# -- known_hosts ------------------------------------------------------------------------


@dataclass
class _KnownKey:
    path: str
    line: int
    patterns: list[str]
    key: paramiko.PKey
    marker: str | None


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """An ssh pattern (``*`` and ``?`` wildcards only; ``[`` is literal, as in
    ``[host]:port``) as a regular expression."""
    return re.compile(
        "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    )


def _name_matches(patterns: list[str], name: str) -> bool:
    """OpenSSH known_hosts host matching: hashed names, wildcards, ``!`` negation."""
    matched = False
    lowered = name.lower()
    for pattern in patterns:
        if pattern.startswith("|1|"):
            try:
                if HostKeys.hash_host(name, pattern) == pattern:
                    matched = True
            except (binascii.Error, ValueError, IndexError):
                continue
            continue
        negate = pattern.startswith("!")
        body = (pattern[1:] if negate else pattern).lower()
        if _pattern_regex(body).fullmatch(lowered):
            if negate:
                return False
            matched = True
    return matched


def _load_known_keys(paths: list[str]) -> list[_KnownKey]:
    keys: list[_KnownKey] = []
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                lines = handle.readlines()
        except FileNotFoundError:
            continue
        except OSError as err:
            raise PermanentError(f"cannot read known_hosts file {path}: {err.strerror}") from None
        for number, raw in enumerate(lines, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            marker = None
            if line.startswith("@"):
                marker, _, line = line.partition(" ")
                line = line.strip()
            fields = line.split()
            if len(fields) < 3:
                continue
            try:
                key = paramiko.PKey.from_type_string(fields[1], base64.b64decode(fields[2]))
            except Exception:  # unknown key types and bad base64 lines are skipped, as OpenSSH does
                continue
            keys.append(_KnownKey(path, number, fields[0].split(","), key, marker))
    return keys


class HostKeyCheck:
    """The known_hosts entries for one target, and the check of the key a server shows."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.files = list(target.known_hosts) + [
            p for p in GLOBAL_KNOWN_HOSTS if p not in target.known_hosts
        ]
        self.keys = _load_known_keys(self.files)
        self.for_host = [
            k
            for k in self.keys
            if k.marker is None and _name_matches(k.patterns, target.host_key_name)
        ]

    def preferred_key_types(self, offered: tuple[str, ...]) -> tuple[str, ...]:
        """Host key algorithms with the types already known for this host first (as
        OpenSSH orders ``HostKeyAlgorithms``), so a host known by its RSA key is not
        asked for an unknown ed25519 key."""
        known: list[str] = []
        for entry in self.for_host:
            for name in _HOST_KEY_ALGORITHMS.get(entry.key.get_name(), (entry.key.get_name(),)):
                if name in offered and name not in known:
                    known.append(name)
        return tuple(known) + tuple(t for t in offered if t not in known)

    def check(self, key: paramiko.PKey) -> None:
        """Accept ``key`` or raise.

        Raises:
            PermanentError: the key is revoked, different from the known one, or unknown
                and trusting new hosts is off; the message shows the fingerprint.
        """
        name = self.target.host_key_name
        blob = key.asbytes()
        for entry in self.keys:
            if entry.marker == "@revoked" and entry.key.asbytes() == blob:
                raise PermanentError(
                    f"host key of {name} is REVOKED ({fingerprint(key)}; {entry.path} line "
                    f"{entry.line}): refusing to connect"
                )
        if any(entry.key.asbytes() == blob for entry in self.for_host):
            return
        same_type = [e for e in self.for_host if e.key.get_name() == key.get_name()]
        if same_type:
            known = same_type[0]
            raise PermanentError(
                f"HOST KEY CHANGED for {name}: the server shows {fingerprint(key)} but "
                f"{known.path} line {known.line} has {fingerprint(known.key)}. Someone may be "
                "intercepting the connection, or the server was reinstalled. If the change is "
                f"expected, remove the old key (ssh-keygen -R '{name}' -f {known.path}) and add "
                "the new one; Staccato never accepts a changed key by itself"
            )
        if self.target.trust_new and not self.for_host:
            self._record(key)
            return
        first = self.target.known_hosts[0] if self.target.known_hosts else "~/.ssh/known_hosts"
        also = (
            f" (known_hosts has only {', '.join(sorted({e.key.get_name() for e in self.for_host}))} "
            "keys for it)"
            if self.for_host
            else ""
        )
        raise PermanentError(
            f"unknown host key for {name}: the server shows {fingerprint(key)}{also}. Check that "
            "fingerprint with the server's administrator (ssh-keygen -lf on the server's host key), "
            f"then add this line to the worker's known_hosts ({first}): "
            f"`{name} {key.get_name()} {key.get_base64()}`; or let the worker trust new hosts on "
            "first use (STACCATO_SFTP_TRUST_NEW_HOSTS=1, or StrictHostKeyChecking accept-new for "
            "this host in its ssh config)"
        )

    def _record(self, key: paramiko.PKey) -> None:
        """Append the key to the first user known_hosts file (trust on first use)."""
        if not self.target.known_hosts:
            return
        path = Path(self.target.known_hosts[0])
        line = f"{self.target.host_key_name} {key.get_name()} {key.get_base64()}\n"
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with open(path, "a+", encoding="utf-8") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                handle.seek(0)
                if line not in handle.read():
                    handle.write(line)
        except OSError as err:
            raise PermanentError(
                f"trusting new host {self.target.host_key_name}: cannot record its key in {path}: "
                f"{err.strerror}"
            ) from None


# -- authentication ---------------------------------------------------------------------

_SECOND_FACTOR = ("keyboard-interactive", "password")


def _refuse_prompting(
    target: Target, methods: list[str], after_key: str | None
) -> PermissionDenied:
    """C9: the server wants a method that needs a human: fail now, never prompt."""
    asked = ", ".join(methods) or "nothing Staccato can offer"
    if after_key:
        intro = (
            f"{target.label} accepted the key {after_key} but then asks for {asked} "
            "authentication as well (a second factor: a password or one-time code)"
        )
    else:
        intro = f"{target.label} does not accept public keys; it asks for {asked} authentication"
    return PermissionDenied(
        f"{intro}. Staccato workers never prompt and never read stdin: give this account "
        "key-only access for the worker (e.g. an sshd `Match User` block with "
        "AuthenticationMethods publickey), or use another account"
    )


def _candidate_keys(target: Target, notes: list[str]) -> list[tuple[str, paramiko.PKey]]:
    """Agent keys, then key files; ``notes`` collects why some could not be used."""
    keys: list[tuple[str, paramiko.PKey]] = []
    agent: paramiko.Agent | None = None
    if target.use_agent:
        if os.environ.get("SSH_AUTH_SOCK"):
            try:
                agent = paramiko.Agent()
                for key in agent.get_keys():
                    keys.append((f"agent key {fingerprint(key)}", key))
                if not keys:
                    notes.append("ssh-agent has no keys")
            except (paramiko.SSHException, OSError) as err:
                notes.append(f"ssh-agent unusable ({describe(err)})")
        else:
            notes.append("no ssh-agent (SSH_AUTH_SOCK unset)")
    for path in target.identities:
        try:
            key = paramiko.PKey.from_path(path)
        except FileNotFoundError:
            notes.append(f"{path}: no such key file")
            continue
        except paramiko.PasswordRequiredException:
            notes.append(f"{path}: encrypted; load it into ssh-agent (ssh-add {path})")
            continue
        except PermissionError:
            notes.append(f"{path}: not readable by the worker")
            continue
        except Exception as err:  # unknown type, corrupt file, a directory...
            notes.append(f"{path}: not a usable private key ({type(err).__name__})")
            continue
        keys.append((path, key))
    seen: set[bytes] = set()
    unique = []
    for label, key in keys:
        blob = key.asbytes()
        if blob not in seen:
            seen.add(blob)
            unique.append((label, key))
    return unique


def authenticate(transport: paramiko.Transport, target: Target) -> None:
    """Public-key authentication (RFC 4252 §7), never interactive.

    Raises:
        PermissionDenied: no key accepted, or the server wants a prompt (C9).
        RetryableError: the connection dropped before any key could be tried.
    """
    user = target.user
    allowed: list[str] | None = None
    try:
        transport.auth_none(user)
        return  # the server lets this user in without authentication
    except paramiko.BadAuthenticationType as err:
        allowed = list(err.allowed_types)
    except paramiko.AuthenticationException:
        allowed = None
    except (paramiko.SSHException, EOFError, OSError) as err:
        raise RetryableError(
            f"connection to {target.label} dropped during authentication: {describe(err, target)}"
        ) from None
    if not transport.is_active():
        raise RetryableError(f"connection to {target.label} dropped during authentication")
    if allowed is not None and "publickey" not in allowed:
        raise _refuse_prompting(target, allowed, None)
    notes: list[str] = []
    keys = _candidate_keys(target, notes)
    refused: list[str] = []
    for label, key in keys:
        try:
            remaining = transport.auth_publickey(user, key)
        except paramiko.BadAuthenticationType as err:
            raise _refuse_prompting(target, list(err.allowed_types), None) from None
        except paramiko.AuthenticationException:
            if not transport.is_active():
                if not refused:
                    raise RetryableError(
                        f"connection to {target.label} dropped during authentication"
                    ) from None
                refused.append(label)
                notes.append(
                    f"the server closed the connection after {len(refused)} refused keys (MaxAuthTries)"
                )
                break
            refused.append(label)
            continue
        except (paramiko.SSHException, EOFError, OSError) as err:
            raise RetryableError(
                f"connection to {target.label} dropped during authentication: {describe(err, target)}"
            ) from None
        if not remaining:
            return
        if "publickey" in remaining:  # e.g. AuthenticationMethods publickey,publickey
            continue
        raise _refuse_prompting(target, list(remaining), label)
    tried = "; ".join([f"{label}: refused" for label in refused] + notes) or "no keys"
    raise PermissionDenied(
        f"authentication failed for {target.label}: the server accepted none of the worker's "
        f"keys ({tried}). Check the user name and that the worker's public key is in that "
        "user's authorized_keys; keys come from ssh-agent, STACCATO_SSH_IDENTITY and "
        "IdentityFile in the worker's ssh config"
    )


def open_socket(target: Target) -> socket.socket | paramiko.ProxyCommand:
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
    return sock
