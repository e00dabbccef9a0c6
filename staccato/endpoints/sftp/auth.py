"""Authentication for the ``sftp`` endpoint: public key only (RFC 4252 §7; agent keys,
then key files), the way OpenSSH's ``BatchMode yes`` works: a worker has no terminal,
so it never prompts and never reads stdin. A server that asks for
``keyboard-interactive`` or ``password`` (alone, or as a second factor after the key)
fails the transfer at once, not retried, naming what the server asked for (test:
``test_second_factor_fails_at_once`` in ``tests/sftp/test_sftp_errors.py``). Encrypted
key files are not decrypted (no passphrase can be asked for): load them into ssh-agent.
"""

from __future__ import annotations

import os

import paramiko

from staccato.endpoints.sftp.ssh import SSHHost, describe, fingerprint
from staccato.errors import AuthenticationRefusedError, PermissionDenied, RetryableError

_SECOND_FACTOR = ("keyboard-interactive", "password")


def _refuse_prompting(
    target: SSHHost, methods: list[str], after_key: str | None
) -> PermissionDenied:
    """The server asks for a method that needs a human (keyboard-interactive, password):
    fail now, never prompt."""
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


def _candidate_keys(target: SSHHost, notes: list[str]) -> list[tuple[str, paramiko.PKey]]:
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


def authenticate(transport: paramiko.Transport, target: SSHHost) -> None:
    """Public-key authentication (RFC 4252 §7), never interactive.

    Raises:
        PermissionDenied: no key accepted, or the server asks for keyboard-interactive or
            password (alone or as a second factor).
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
    raise AuthenticationRefusedError(
        f"authentication failed for {target.label}: the server accepted none of the worker's "
        f"keys ({tried}). Check the user name and that the worker's public key is in that "
        "user's authorized_keys; keys come from ssh-agent, STACCATO_SSH_IDENTITY and "
        "IdentityFile in the worker's ssh config",
        target.label,
    )
