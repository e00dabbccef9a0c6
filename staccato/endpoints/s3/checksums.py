"""CRC32C values as S3 carries them: base64 of 4 big-endian bytes in
``x-amz-checksum-crc32c`` / ``ChecksumCRC32C``, 8 hex digits in Staccato."""

from __future__ import annotations

import base64

_EMPTY_CRC32C = base64.b64encode(b"\0\0\0\0").decode()


def _crc_b64(value: int) -> str:
    """A CRC32C value as S3 carries it: base64 of its 4 big-endian bytes."""
    return base64.b64encode(value.to_bytes(4, "big")).decode()


def _b64_to_hex(value: str | None) -> str:
    """``ChecksumCRC32C`` (base64 of 4 bytes) as 8 hex digits; ``""`` if absent or
    composite (``"...-N"``, a checksum of part checksums, not of the bytes)."""
    if not value or "-" in value:
        return ""
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:
        return ""
    return raw.hex() if len(raw) == 4 else ""


def _is_crc32c_hex(value: str) -> bool:
    """Whether ``value`` is a CRC32C as Staccato writes it: 8 lower-case hex digits."""
    return len(value) == 8 and all(c in "0123456789abcdef" for c in value)
