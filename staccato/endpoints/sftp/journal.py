"""The journal of an ``sftp`` write session and the proof of publish.

Journal (``.NAME.<key>.staccato-journal`` beside the target): each durable chunk has a
fixed-size record at ``index x JOURNAL_RECORD_BYTES`` holding ``index checksum
sha256=<hex> crc32`` (positional writes, so no reliance on a server honouring
``SSH_FXF_APPEND``; the record's own CRC-32 over everything before it and the index
discard torn or stray bytes), so a resumed stream re-sends only missing chunks. The
``sha256=`` field is the SHA-256 of the bytes written (the very buffer the checksum was
computed on), which the server can recompute over an exec channel
(:mod:`staccato.endpoints.sftp.remote_hash`) instead of sending the chunk back; it is
left out where the checksum already is a SHA-256 (``--checksum sha256``), and records
written before it existed (``index checksum crc32``) still parse (their chunks are read
back to verify). Tests: ``test_journal_resume_and_torn_records`` in
``tests/sftp/test_sftp_cases.py``, ``test_old_journal_records_resume`` in
``tests/sftp/test_sftp_remote_hash.py``.

Proof of publish: SFTP v3 attributes carry no inode, so a publish retried after its
rename cannot tell this session's file from an older one of the same size by its
attributes alone. Before the rename, publish records a *marker* in the journal's slot
after the chunk records: the mtime (seconds) the published file will have.
:func:`published` accepts a missing temp file as published only when the journal holds
the marker and the target has that mtime and the session's size. Test:
``test_publish_retried_after_rename`` in ``tests/sftp/test_sftp_faults.py``.
"""

from __future__ import annotations

import stat as stat_module
import zlib

from staccato.endpoints.sftp.files import read_all, stat_or_none
from staccato.endpoints.sftp.protocol import StaccatoSFTP
from staccato.errors import PermanentError

# per chunk: index (<= 6 digits: MAX_CHUNKS), checksum (<= 64 hex), sha256=<64 hex>
# (only beside a checksum of 8 hex digits, CRC-32C), crc32 (8), 3 spaces, newline
JOURNAL_RECORD_BYTES = 128
_MARKER = "published-mtime"
_SHA_FIELD = "sha256="


def journal_record(index: int, checksum: str, sha256: str | None = None) -> bytes:
    """The journal record of chunk ``index``: ``index checksum [sha256=HEX] crc32``,
    space-padded to ``JOURNAL_RECORD_BYTES`` with a final newline (readable with
    ``cat``). ``sha256``: the SHA-256 (hex) of the chunk's bytes as written, if known.

    Raises:
        PermanentError: the record would not fit ``JOURNAL_RECORD_BYTES``.
    """
    body = f"{index} {checksum}" + (f" {_SHA_FIELD}{sha256}" if sha256 else "")
    if len(f"{body} 00000000") >= JOURNAL_RECORD_BYTES:
        raise PermanentError(f"checksum {checksum!r} does not fit a journal record")
    return _journal_record_text(body)


def parse_journal(data: bytes, chunks: int) -> dict[int, str]:
    """Durable chunks from journal bytes: index -> checksum (see :func:`parse_records`)."""
    return {index: checksum for index, (checksum, _) in parse_records(data, chunks).items()}


def parse_records(data: bytes, chunks: int) -> dict[int, tuple[str, str | None]]:
    """Durable chunks from journal bytes: index -> (checksum, SHA-256 hex of the bytes
    written or None where the record has none). Valid records in their own slots only
    (holes of never-written slots read as zero bytes and are skipped); both record
    forms, with and without the ``sha256=`` field."""
    durable: dict[int, tuple[str, str | None]] = {}
    for slot in range(min(chunks, len(data) // JOURNAL_RECORD_BYTES)):
        record = data[slot * JOURNAL_RECORD_BYTES : (slot + 1) * JOURNAL_RECORD_BYTES]
        parts = record.decode("ascii", "replace").split()
        if len(parts) not in (3, 4) or parts[0] != str(slot) or not parts[1]:
            continue
        sha: str | None = None
        if len(parts) == 4:
            if not parts[2].startswith(_SHA_FIELD):
                continue
            sha = parts[2][len(_SHA_FIELD) :]
            if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
                continue
        body = " ".join(parts[:-1])
        if f"{zlib.crc32(body.encode()):08x}" == parts[-1]:
            durable[slot] = (parts[1], sha)
    return durable


def marker_record(mtime: int) -> bytes:
    """The publish marker record: the mtime (seconds) the published file will have."""
    return _journal_record_text(f"{_MARKER} {mtime}")


def _journal_record_text(body: str) -> bytes:
    text = f"{body} {zlib.crc32(body.encode()):08x}"
    return (text.ljust(JOURNAL_RECORD_BYTES - 1) + "\n").encode()


def parse_marker(data: bytes, chunks: int) -> int | None:
    """The publish marker's mtime from journal bytes (the slot after the last chunk's),
    or None if there is no valid marker."""
    record = data[chunks * JOURNAL_RECORD_BYTES : (chunks + 1) * JOURNAL_RECORD_BYTES]
    parts = record.decode("ascii", "replace").split()
    if len(parts) != 3 or parts[0] != _MARKER or not parts[1].isdigit():
        return None
    if f"{zlib.crc32(f'{parts[0]} {parts[1]}'.encode()):08x}" != parts[2]:
        return None
    return int(parts[1])


def published(sftp: StaccatoSFTP, paths: dict[str, str], size: int, chunks: int) -> bool:
    """Whether the target provably is this session's temp file, renamed: the journal
    holds the publish marker and the target has its mtime and the session's size."""
    journal = read_all(sftp, paths["journal"])
    if journal is None:
        return False
    marker = parse_marker(journal, chunks)
    if marker is None:
        return False
    target = stat_or_none(sftp, paths["path"])
    return (
        target is not None
        and stat_module.S_ISREG(target.st_mode or 0)
        and target.st_size == size
        and target.st_mtime == marker
    )
