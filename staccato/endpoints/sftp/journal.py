"""The journal of an ``sftp`` write session and the proof of publish.

Journal (``.NAME.<key>.staccato-journal`` beside the target): each durable chunk has a
fixed-size record at ``index x JOURNAL_RECORD_BYTES`` holding ``index checksum crc32``
(positional writes, so no reliance on a server honouring ``SSH_FXF_APPEND``; the
record's own CRC-32 and index discard torn or stray bytes), so a resumed stream
re-sends only missing chunks. Beside it, in the slots after the publish marker's
(:func:`hash_slot`), a *hash record* ``index checksum cksum=<decimal> crc32``: the CRC
POSIX ``cksum`` prints for the bytes written (:func:`staccato.checksums.posix_cksum`),
computed from the very buffer the checksum was computed on, which the server can
recompute over an exec channel (:mod:`staccato.endpoints.sftp.remote_hash`) instead of
sending the chunk back. Earlier releases wrote ``sha256=<hex>`` (the SHA-256)
there; such records are still read and verified with the server's SHA-256, and a
worker of such a version ignores a ``cksum=`` record (it matches only ``sha256=``) and
reads that chunk back. No hash record is written where the checksum already is a
SHA-256 (``--checksum sha256``). Chunk records keep their form, so a worker of an
older version (a fleet being redeployed) still reads the journal; a journal without
hash records (written by one) is verified by reading back. Tests: ``test_journal_resume_and_torn_records`` in
``tests/sftp/test_sftp_cases.py``, ``test_old_journal_records_resume`` and
``test_torn_hash_records_are_ignored`` in ``tests/sftp/test_sftp_remote_hash.py``.

Partial records: a paused stream keeps the bytes it read of its chunk in flight
(:meth:`~staccato.endpoints.sftp.streams.SFTPChunkWriter.write_partial`): written and
fsynced, then a record ``p index length checksum crc32`` in the chunk's *partial slot*
(:func:`partial_slot`, after the hash slots, where an older worker never looks). The
resumed stream reads that prefix back and checks it against the checksum before it
builds on it (``SFTPDriver.partial_chunk``).

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
from typing import NamedTuple

from staccato.endpoints.sftp.files import read_all, stat_or_none
from staccato.endpoints.sftp.protocol import StaccatoSFTP, StatusError
from staccato.errors import PermanentError

JOURNAL_RECORD_BYTES = 128  # per chunk: index (<= 20), checksum (<= 64 hex), crc32 (8)
_MARKER = "published-mtime"
#: the kinds of server hash a hash record holds, and the tool the server runs for each
SHA256 = "sha256"
CKSUM = "cksum"
_DECIMAL_MAX = 2**32 - 1


class ServerHash(NamedTuple):
    """A chunk's hash as the server can recompute it: ``kind`` :data:`CKSUM` (``value``
    the CRC POSIX ``cksum`` prints, in decimal) or :data:`SHA256` (``value`` 64 lower
    hex digits)."""

    kind: str
    value: str


def valid_hash(kind: str, value: str) -> bool:
    """Whether ``value`` is a well-formed hash of ``kind`` (:class:`ServerHash`)."""
    if kind == SHA256:
        return len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    if kind == CKSUM:
        return value.isdigit() and len(value) <= 10 and int(value) <= _DECIMAL_MAX
    return False


def journal_record(index: int, checksum: str) -> bytes:
    """The journal record of chunk ``index``: ``index checksum crc32``, space-padded to
    ``JOURNAL_RECORD_BYTES`` with a final newline (readable with ``cat``)."""
    if len(f"{index} {checksum} 00000000") >= JOURNAL_RECORD_BYTES:
        raise PermanentError(f"checksum {checksum!r} does not fit a journal record")
    return _journal_record_text(f"{index} {checksum}")


def hash_slot(index: int, chunks: int) -> int:
    """The slot of chunk ``index``'s hash record: after the chunk records and the
    publish marker's slot (``chunks``), where a reader of chunk records only (an older
    worker) never looks."""
    return chunks + 1 + index


def partial_slot(index: int, chunks: int) -> int:
    """The slot of chunk ``index``'s partial record: after the hash slots
    (:func:`hash_slot`), where a reader of chunk and hash records never looks."""
    return 2 * chunks + 1 + index


def partial_record(index: int, length: int, checksum: str) -> bytes:
    """The partial record of chunk ``index``: ``p index length checksum crc32``, its
    first ``length`` bytes kept by a paused stream, ``checksum`` theirs.

    Raises:
        PermanentError: the record would not fit ``JOURNAL_RECORD_BYTES``.
    """
    body = f"p {index} {length} {checksum}"
    if len(f"{body} 00000000") >= JOURNAL_RECORD_BYTES:
        raise PermanentError(f"checksum {checksum!r} does not fit a partial record")
    return _journal_record_text(body)


def parse_partial(data: bytes, chunks: int, index: int) -> tuple[int, str] | None:
    """Chunk ``index``'s partial record from journal bytes: (bytes kept, their
    checksum), or None when there is none valid (its CRC-32 and index checked)."""
    parts = _fields(data, partial_slot(index, chunks))
    if (
        len(parts) != 5
        or parts[0] != "p"
        or parts[1] != str(index)
        or not parts[2].isdigit()
        or not parts[3]
        or f"{zlib.crc32(' '.join(parts[:4]).encode()):08x}" != parts[4]
    ):
        return None
    return int(parts[2]), parts[3]


def hash_record(index: int, checksum: str, server_hash: ServerHash) -> bytes:
    """The hash record of chunk ``index``: ``index checksum KIND=VALUE crc32``: the
    server-recomputable hash (:class:`ServerHash`) of the chunk's bytes as written,
    beside the checksum computed on the same buffer.

    Raises:
        PermanentError: the record would not fit ``JOURNAL_RECORD_BYTES``.
        ValueError: ``server_hash`` is not well-formed (:func:`valid_hash`).
    """
    if not valid_hash(*server_hash):
        raise ValueError(f"not a server hash: {server_hash!r}")
    body = f"{index} {checksum} {server_hash.kind}={server_hash.value}"
    if len(f"{body} 00000000") >= JOURNAL_RECORD_BYTES:
        raise PermanentError(f"checksum {checksum!r} does not fit a hash record")
    return _journal_record_text(body)


def parse_journal(data: bytes, chunks: int) -> dict[int, str]:
    """Durable chunks from journal bytes: valid records in their own slots only (holes
    of never-written slots read as zero bytes and are skipped)."""
    durable: dict[int, str] = {}
    for slot in range(min(chunks, len(data) // JOURNAL_RECORD_BYTES)):
        parts = _fields(data, slot)
        if len(parts) != 3 or parts[0] != str(slot) or not parts[1]:
            continue
        if f"{zlib.crc32(f'{parts[0]} {parts[1]}'.encode()):08x}" == parts[2]:
            durable[slot] = parts[1]
    return durable


def parse_records(data: bytes, chunks: int) -> dict[int, tuple[str, ServerHash | None]]:
    """Durable chunks from journal bytes: index -> (checksum, the server-recomputable
    hash of the bytes written, or None). The hash is taken from the chunk's hash record
    only where that record is valid (its CRC), well-formed, of a known kind
    (``cksum=``, or the ``sha256=`` of earlier releases) and names the same checksum as
    the chunk record (journals written before hash records existed have none)."""
    records: dict[int, tuple[str, ServerHash | None]] = {}
    for index, checksum in parse_journal(data, chunks).items():
        parts = _fields(data, hash_slot(index, chunks))
        found: ServerHash | None = None
        if (
            len(parts) == 4
            and parts[0] == str(index)
            and parts[1] == checksum
            and f"{zlib.crc32(' '.join(parts[:3]).encode()):08x}" == parts[3]
        ):
            kind, _, value = parts[2].partition("=")
            if valid_hash(kind, value):
                found = ServerHash(kind, value)
        records[index] = (checksum, found)
    return records


def _fields(data: bytes, slot: int) -> list[str]:
    record = data[slot * JOURNAL_RECORD_BYTES : (slot + 1) * JOURNAL_RECORD_BYTES]
    return record.decode("ascii", "replace").split()


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


#: the largest journal a session writes: a chunk, a hash and a partial record per
#: chunk (at most 100,000 chunks: ``activities.transfer.MAX_CHUNKS``) and the marker's slot
LARGEST_JOURNAL_BYTES = (3 * 100_000 + 1) * JOURNAL_RECORD_BYTES


def written_by_staccato(sftp: StaccatoSFTP, path: str) -> bool:
    """Whether the file at ``path`` is a write session's journal: empty (no chunk
    journaled yet), or at most :data:`LARGEST_JOURNAL_BYTES` holding at least one valid
    record of any kind in its slot (:func:`holds_a_record`: a chunk, hash or partial
    record, or the publish marker; its CRC-32 checked). The leftover sweep removes a
    temp file and its journal only then: a user's files of the pattern (a copied tree)
    were removed as leftovers (a tester's case). False when it is missing, not a
    regular file, or cannot be read.

    Why any kind: a stream stopped in its first chunk (a dataset's cancel) journals
    only that chunk's partial record (:func:`partial_record`, past the hash slots), and
    a stream stopped between a chunk's two records only its hash record; with chunk
    records alone such a journal was not "Staccato's", so the next run's sweep kept
    the session's temp file, journal and writers directory (ci110: after a ``cp -r``
    that exited 0)."""
    try:
        attrs = stat_or_none(sftp, path)
        if attrs is None or not stat_module.S_ISREG(attrs.st_mode or 0):
            return False
        size = attrs.st_size or 0
        if size == 0:
            return True
        if size > LARGEST_JOURNAL_BYTES:
            return False
        data = read_all(sftp, path)
    except (OSError, StatusError):
        return False
    if not data:
        return False
    return holds_a_record(data)


def holds_a_record(data: bytes) -> bool:
    """Whether journal bytes ``data`` hold at least one whole record of any kind in
    its fixed-size slot: ``BODY CRC`` with CRC the 8 lower hex digits of the CRC-32 of
    BODY, space-padded to :data:`JOURNAL_RECORD_BYTES` with a final newline (what
    every record writer here writes: chunk, hash, partial and marker records)."""
    for slot in range(len(data) // JOURNAL_RECORD_BYTES):
        record = data[slot * JOURNAL_RECORD_BYTES : (slot + 1) * JOURNAL_RECORD_BYTES]
        if not record.endswith(b"\n"):
            continue
        body, _, crc = record[:-1].decode("ascii", "replace").rstrip(" ").rpartition(" ")
        if body.strip() and crc == f"{zlib.crc32(body.encode()):08x}":
            return True
    return False
