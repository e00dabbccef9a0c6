"""Host key checks for the ``sftp`` endpoint (RFC 4251 §4.1, OpenSSH
``StrictHostKeyChecking yes``): the server's key must be in known_hosts under
``HostKeyAlias`` or ``HOST`` (port 22) / ``[HOST]:PORT`` (hashed names, wildcards and
``!`` negations are understood; ``@revoked`` keys are refused; ``@cert-authority``
lines are ignored: host certificates are not supported). A key of an unknown host is
accepted and recorded only when trusting new hosts is on (trust on first use); a
*changed* key is never accepted. Fingerprints are shown as OpenSSH shows them:
``SHA256:`` + unpadded base64. Tests: ``test_unknown_host_key``,
``test_changed_host_key`` (``tests/sftp/test_sftp_errors.py``),
``test_trust_new_host_per_profile`` and ``test_trust_new_hosts_setting``
(``tests/sftp/test_sftp_cases.py``).
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import re
from dataclasses import dataclass
from pathlib import Path

import paramiko
from paramiko.hostkeys import HostKeys

from staccato.endpoints.sftp.ssh import SSHHost, fingerprint
from staccato.errors import PermanentError

GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
# known_hosts key type -> the host key algorithms that prove it (RFC 8332 for RSA).
_HOST_KEY_ALGORITHMS = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")}


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

    def __init__(self, target: SSHHost) -> None:
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
