"""Sealing the secret part of a source URL, so it never reaches Temporal in clear.

An http(s) source's query is secret (presigned URLs such as S3's
``?X-Amz-Signature=…``, Azure's ``?sig=…`` or a ``?token=…`` carry their credential
there). The client stores only :func:`staccato.urls.redact` of the URL in the
workflow (input, memo, search attributes, summary, result) and puts the real query,
encrypted with AES-256-GCM under a key shared by clients and workers, in a separate
field (``TransferRequest.source_secret``). Only activities on a worker unseal it, to
build the real URL they hand to the driver; everything they report back is redacted.

Keys (:func:`seal_keys`): ``STACCATO_SECRET_KEY`` (base64 of 32 random bytes; several
separated by commas to rotate: the first seals, all unseal), else the file named by
``STACCATO_SECRET_KEY_FILE``, else ``$STACCATO_HOME/secret.key`` when it exists
(``staccato up`` creates it, mode 0600, so a client and a worker on one machine share
it with no setup). Make a key with ``staccato secret-key`` or
``python -c "import os,base64;print(base64.b64encode(os.urandom(32)).decode())"``.

Sealed text: ``s1.<key id>.<base64url(nonce || ciphertext || tag)>``. The key id is
the first 8 hex digits of a SHA-256 of the key, so a worker with another key says
which key the text needs. The nonce is an HMAC of the plaintext and its context
(a synthetic IV, as in RFC 5297's SIV construction), so sealing the same query of the
same URL twice gives the same text: an identical re-submission is recognised as such
(its request hash does not change). The redacted URL is the associated data: a sealed
query cannot be attached to another host or path by a client that did not seal it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from staccato import settings
from staccato.errors import (
    InvalidURLError,
    KeySettingError,
    SealKeyMissingError,
    SecretKeyError,
)
from staccato.scrubbing import ScrubFilter as ScrubFilter  # re-exported: the API it had
from staccato.scrubbing import install_log_scrubber as install_log_scrubber
from staccato.scrubbing import remember
from staccato.scrubbing import scrub as scrub
from staccato.urls import REDACTED, SOURCE_ONLY_SCHEMES, EndpointURL, parse_url, redact

KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # AES-GCM's standard nonce (NIST SP 800-38D, 8.2)
SEAL_PREFIX = "s1"
DEFAULT_KEY_FILE = settings.DEFAULT_SECRET_KEY_FILE
_PURPOSE_SOURCE_QUERY = b"staccato source query v1\0"


@dataclass(frozen=True)
class Key:
    """One AES-256 key and its public id (8 hex digits)."""

    material: bytes

    @property
    def key_id(self) -> str:
        return hashlib.sha256(b"staccato key id\0" + self.material).hexdigest()[:8]

    def _derive(self, label: bytes) -> bytes:
        return hmac.new(self.material, label, hashlib.sha256).digest()


def parse_keys(text: str, where: str) -> list[Key]:
    """Keys from ``text``: base64 (standard or URL-safe) of 32 bytes each, separated by
    commas or new lines; the first one seals.

    Raises:
        KeySettingError: empty, or an item is not base64 of 32 bytes (``where`` names
            the variable or file, never the key).
    """
    keys: list[Key] = []
    for number, item in enumerate(text.replace("\n", ",").split(","), start=1):
        item = item.strip()
        if not item:
            continue
        try:
            material = base64.b64decode(
                item.replace("-", "+").replace("_", "/") + "=" * (-len(item) % 4), validate=True
            )
        except (binascii.Error, ValueError):
            material = b""
        if len(material) != KEY_BYTES:
            raise KeySettingError(
                f"{where}: key {number} is not base64 of {KEY_BYTES} random bytes; make one "
                'with `python -c "import os,base64;print(base64.b64encode(os.urandom(32)).decode())"`'
            )
        keys.append(Key(material))
    if not keys:
        raise KeySettingError(f"{where} is empty: expected base64 of {KEY_BYTES} random bytes")
    return keys


def _empty_key_advice(path: Path, default: bool) -> str:
    """What an empty key file is, and what to do about it."""
    remedy = (
        "remove it and `staccato up` makes a new one"
        if default
        else "remove it, or write a key into it"
    )
    return (
        f"key file {path} is empty: nothing can have been sealed with it (an earlier "
        f"write of it failed, e.g. on a full disk); {remedy}"
    )


def keys_from(
    variable: str, key: SecretStr | None, key_file: Path | None, default_file: Path | None
) -> list[Key]:
    """The keys in setting ``variable`` (``key``), else in ``key_file`` (setting
    ``variable + "_FILE"``), else in ``default_file`` when it exists."""
    if key is not None:
        return parse_keys(key.get_secret_value(), variable)
    path = key_file or default_file
    if path is None or (key_file is None and not path.exists()):
        return []
    try:
        content = path.read_text()
    except OSError as err:
        raise KeySettingError(
            f"cannot read the key file {path} ({variable + '_FILE' if key_file else 'default'}): "
            f"{err.strerror or err}"
        ) from None
    if not content.strip():
        raise KeySettingError(_empty_key_advice(path, default=key_file is None))
    return parse_keys(content, f"key file {path}")


def seal_keys() -> list[Key]:
    """The keys sealing source secrets (``STACCATO_SECRET_KEY``, ``STACCATO_SECRET_KEY_FILE``
    or ``$STACCATO_HOME/secret.key``); empty when none is configured.

    Raises:
        KeySettingError: a configured key is malformed or its file unreadable.
    """
    config = settings.current()
    return keys_from(
        "STACCATO_SECRET_KEY",
        config.secret_key,
        config.secret_key_file,
        config.home / DEFAULT_KEY_FILE,
    )


def new_key_text() -> str:
    """A fresh random key, as base64 text."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


def ensure_default_key_file() -> Path | None:
    """Create ``$STACCATO_HOME/secret.key`` (mode 0600) unless a key is configured
    otherwise or the file exists; the embedded default's client and worker share it.

    The key is written to a temporary file, synced and then linked into place, so the
    file is whole or absent (a full disk leaves no empty key file behind).

    Returns:
        The file's path when it is the key in use, else None.

    Raises:
        OSError: STACCATO_HOME or the key file cannot be made (no space, no permission).
    """
    config = settings.current()
    if config.secret_key is not None or config.secret_key_file is not None:
        return None
    path = config.home / DEFAULT_KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return path
    # written whole or not at all: a full disk or a crash must not leave an empty or
    # partial key file that every later start refuses
    temporary = path.with_name(f".{DEFAULT_KEY_FILE}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(new_key_text() + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(temporary, path)  # never replaces a key another process made meanwhile
        except FileExistsError:
            pass
    finally:
        temporary.unlink(missing_ok=True)
    try:  # the rename itself made durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return path
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
    return path


def _aesgcm(key: Key):  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(key._derive(b"staccato seal key"))


def seal(plaintext: str, context: str, keys: list[Key]) -> str:
    """Encrypt ``plaintext`` bound to ``context`` (associated data) with ``keys[0]``."""
    key = keys[0]
    data = plaintext.encode()
    aad = _PURPOSE_SOURCE_QUERY + context.encode()
    nonce = hmac.new(
        key._derive(b"staccato nonce key"), aad + b"\0" + data, hashlib.sha256
    ).digest()[:NONCE_BYTES]
    sealed = nonce + _aesgcm(key).encrypt(nonce, data, aad)
    return f"{SEAL_PREFIX}.{key.key_id}.{base64.urlsafe_b64encode(sealed).decode().rstrip('=')}"


def unseal(text: str, context: str, keys: list[Key]) -> str:
    """Decrypt a :func:`seal` text bound to ``context``.

    Raises:
        SealKeyMissingError: no key with its id (the message names both ids and the
            settings).
        SecretKeyError: malformed text, or it was sealed for another URL or altered.
    """
    from cryptography.exceptions import InvalidTag

    prefix, _, rest = text.partition(".")
    key_id, _, body = rest.partition(".")
    if prefix != SEAL_PREFIX or not key_id or not body:
        raise SecretKeyError(f"the sealed query of {context} is malformed (expected s1.KEYID.DATA)")
    by_id = {key.key_id: key for key in keys}
    key = by_id.get(key_id)
    if key is None:
        have = ", ".join(sorted(by_id)) or "none"
        raise SealKeyMissingError(
            f"the query of {context} was sealed with key {key_id}, and this worker has "
            f"key(s) {have}: give the worker the client's key (STACCATO_SECRET_KEY or "
            "STACCATO_SECRET_KEY_FILE; the embedded default uses $STACCATO_HOME/secret.key)",
            key_id,
        )
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        data = _aesgcm(key).decrypt(
            raw[:NONCE_BYTES], raw[NONCE_BYTES:], _PURPOSE_SOURCE_QUERY + context.encode()
        )
    except (InvalidTag, binascii.Error, ValueError):
        raise SecretKeyError(
            f"the sealed query of {context} does not open with key {key_id}: it was sealed "
            "for another URL or altered"
        ) from None
    return data.decode()


def seal_source(canonical: str) -> tuple[str, str | None]:
    """Split a canonical source URL into what Temporal may store and the sealed rest.

    Returns:
        ``(redacted URL, sealed query or None)``; None when nothing is secret.

    Raises:
        InvalidURLError: the URL has a query and no key is configured (the message says
            how to set one).
        SecretKeyError: a configured key is malformed.
    """
    redacted = redact(canonical)
    if redacted == canonical:
        return canonical, None
    scheme = canonical.split("://", 1)[0]
    if scheme not in SOURCE_ONLY_SCHEMES or "?" not in canonical:
        raise InvalidURLError(
            f"refusing {redacted}: it carries a secret that cannot be kept out of Temporal"
        )
    keys = seal_keys()
    if not keys:
        raise InvalidURLError(
            f"the source {redacted} has a query (a token, e.g. a presigned URL's signature), "
            "which Staccato stores only encrypted, and no key is configured: set "
            "STACCATO_SECRET_KEY (base64 of 32 random bytes, the same on clients and "
            "workers) or STACCATO_SECRET_KEY_FILE, or run `staccato up` once, which creates "
            f"{settings.home() / DEFAULT_KEY_FILE} for a client and worker on this machine"
        )
    query = canonical.split("?", 1)[1]
    return redacted, seal(query, redacted, keys)


def source_url(source: str, source_secret: str | None) -> EndpointURL:
    """The real source URL for a driver, on a worker: ``source`` with its sealed query
    put back.

    Raises:
        InvalidURLError: ``source`` shows redacted values but no sealed query came with it,
            or an http(s) query in clear (both: a client that does not seal), or the
            sealed query does not fit it.
        SecretKeyError: no key, or not the key it was sealed with.
    """
    if source_secret is None:
        parsed = parse_url(source)
        if f"={REDACTED}" in source or f"?{REDACTED}" in source:
            raise InvalidURLError(
                f"the source {redact(source)} has redacted query values and no sealed query: "
                "submit the real URL through Staccato's client (it seals the query)"
            )
        if parsed.scheme in SOURCE_ONLY_SCHEMES and redact(parsed.canonical) != parsed.canonical:
            # a client that does not seal (a raw Temporal start): refuse rather than
            # copy its token into results, failures and logs as well
            raise InvalidURLError(
                f"the source {redact(source)} carries its query in clear in the workflow "
                "input, where a token must never be stored: submit it through Staccato's "
                "client or CLI, which store the query only sealed"
            )
        return parsed
    keys = seal_keys()
    if not keys:
        raise SecretKeyError(
            f"the query of {source} is sealed and this worker has no key: set "
            "STACCATO_SECRET_KEY or STACCATO_SECRET_KEY_FILE to the client's key"
        )
    query = unseal(source_secret, source, keys)
    real = parse_url(source.split("?", 1)[0] + "?" + query)
    if redact(real.canonical) != source:
        raise InvalidURLError(f"the sealed query does not fit the source {source}")
    remember(query)
    return real
