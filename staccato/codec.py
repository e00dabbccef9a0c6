"""An AES-GCM ``PayloadCodec``: everything Staccato sends through Temporal encrypted.

Off by default. Turn it on when whoever can read the Temporal namespace (its
operators, the UI's users, a hosted Temporal's staff, backups of its database) must
not read transfer inputs and results: URLs and paths, object versions, failure
messages. Set ``STACCATO_CODEC_KEY`` (base64 of 32 random bytes; several separated
by commas to rotate: the first encrypts, all decrypt) or ``STACCATO_CODEC_KEY_FILE``
on every client and worker; to read payloads in the Temporal UI run
``staccato codec-server`` and set it as the UI's codec endpoint.

What stays readable without the key: workflow ids (a hash of the destination),
search attribute values (Temporal indexes them in clear: Staccato stores the
destination, the redacted source and the state there) and memo keys. A source URL's
query is sealed separately whether or not the codec is on (:mod:`staccato.secrets`).

Encoded payload: metadata ``encoding: binary/encrypted`` and
``encryption-key-id: <8 hex digits>``; data ``nonce (12 bytes) || AES-256-GCM(
serialised original Payload)`` with a random nonce per payload (NIST SP 800-38D
8.2.2: at most 2^32 payloads per key with random nonces).
"""

from __future__ import annotations

import base64
import dataclasses
import os
from collections.abc import Sequence

from temporalio.api.common.v1 import Payload
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

from staccato import settings
from staccato.secrets import NONCE_BYTES, Key, SecretKeyError, keys_from

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"


def codec_keys() -> list[Key]:
    """The payload codec's keys (``STACCATO_CODEC_KEY`` or ``STACCATO_CODEC_KEY_FILE``);
    empty when the codec is off.

    Raises:
        KeySettingError (a SecretKeyError): a key is malformed or its file unreadable.
    """
    config = settings.current()
    return keys_from("STACCATO_CODEC_KEY", config.codec_key, config.codec_key_file, None)


class EncryptionCodec(PayloadCodec):
    """Encrypts each payload with AES-256-GCM under ``keys[0]``; decrypts with the
    key its metadata names. Payloads without ``binary/encrypted`` pass through, so
    histories written before the codec was turned on stay readable.

    Raises (decode):
        SecretKeyError: no key has the payload's key id (the message names it and the
            variables to set), or the payload was altered.
    """

    def __init__(self, keys: Sequence[Key]) -> None:
        if not keys:
            raise SecretKeyError("the payload codec needs at least one key")
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._encrypt_id = keys[0].key_id
        self._ciphers = {key.key_id: AESGCM(key.material) for key in keys}

    @property
    def key_ids(self) -> list[str]:
        """Ids of the keys it decrypts with (the first one encrypts)."""
        return list(self._ciphers)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encode_one(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decode_one(p) for p in payloads]

    def encode_one(self, payload: Payload) -> Payload:
        """Encrypt one payload (synchronous, for the codec server)."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self._encrypt_id].encrypt(nonce, payload.SerializeToString(), None)
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID_METADATA: self._encrypt_id.encode()},
            data=nonce + sealed,
        )

    def decode_one(self, payload: Payload) -> Payload:
        """Decrypt one payload (synchronous); others are returned unchanged."""
        from cryptography.exceptions import InvalidTag

        if payload.metadata.get("encoding") != ENCODING:
            return payload
        key_id = payload.metadata.get(KEY_ID_METADATA, b"").decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise SecretKeyError(
                f"a payload is encrypted with codec key {key_id or '(none)'} and this process "
                f"has key(s) {', '.join(self._ciphers)}: set STACCATO_CODEC_KEY (or "
                "STACCATO_CODEC_KEY_FILE) to include that key"
            )
        try:
            plain = cipher.decrypt(payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:], None)
        except InvalidTag:
            raise SecretKeyError(
                f"a payload encrypted with codec key {key_id} does not decrypt: it was altered"
            ) from None
        return Payload.FromString(plain)


def with_codec(converter: DataConverter) -> DataConverter:
    """``converter`` with the :class:`EncryptionCodec` when ``STACCATO_CODEC_KEY`` (or
    its file) is set, failure messages and stack traces encrypted too; else unchanged.

    Raises:
        SecretKeyError: a configured key is malformed.
    """
    keys = codec_keys()
    if not keys:
        return converter
    return dataclasses.replace(
        converter,
        payload_codec=EncryptionCodec(keys),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def key_text(key: Key) -> str:
    """A key as the base64 text the settings take."""
    return base64.b64encode(key.material).decode()
