"""Known copies: destinations that earlier transfers wrote and verified, used as
sources for a later transfer of the same source version (the idea of BitTorrent's
peers, for an origin that is slow or far).

The record of a copy is the result of a completed ``TransferWorkflow``
(:class:`~staccato.models.TransferResult`: source URL, source version, size, checksum,
destination URL and the destination's version read right after publish). Nothing is
kept on disk: the records are found through Temporal's visibility (transfers with
search attributes ``StaccatoSource`` = the source and ``StaccatoState`` =
``completed``), so they live as long as the namespace keeps closed workflows (its
retention period).

A record is used only when the copy still is what was recorded, checked here before
any byte of it is read by a stream:

1. its version now (ETag, or size + mtime + inode of a file) equals the recorded
   destination version, and its size the source's;
2. its CRC32C equals the recorded checksum: a file is read whole (on this machine,
   at disk speed); an S3 object's stored full-object CRC32C is compared without
   reading; any other copy (SFTP) is not checked, so not used (reading it whole over
   the network to check it costs about what reading the origin does).

A copy is read only where it can be cheaper than the origin: a local file origin is
never replaced by a copy (the workflow does not look one up, and the activity finds
none), and a copy on the origin's own endpoint (the same S3 bucket, the same HTTP or
SFTP server) is never a candidate (the same server over the same link: nothing
saved). Candidates are tried cheapest first: files (on the worker's machine), then
copies of the destination's kind, then copies of any other kind (in practice S3: SFTP
copies are never used, see 2.), newest record first within each; the transfer's own
destination never. No Temporal import here: the activity
(:mod:`staccato.activities.known_copies`) finds the records and calls :func:`check_copy`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from staccato import sync
from staccato.endpoints import get_driver
from staccato.errors import StaccatoError
from staccato.links import endpoint_of, local_origin
from staccato.models import ObjectInfo, same_version
from staccato.urls import parse_url

#: the only checksum a record is compared in: CRC-32C is the same whatever the
#: chunking (a SHA-256 object checksum depends on the transfer's plan)
ALGORITHM = "crc32c"


@dataclass(frozen=True)
class Record:
    """A verified copy, as a completed transfer's result records it.

    Attributes:
        transfer_id: the workflow id of the transfer that wrote it.
        url: the copy (that transfer's destination URL).
        version: the copy's version read right after publish.
        checksum: ``"<algorithm>:<hex>"`` of the object.
        closed_at: when that transfer ended, seconds since the epoch (newer first).
    """

    transfer_id: str
    url: str
    version: str
    checksum: str
    closed_at: float


def order(records: Iterable[Record], destination: str, source: str | None = None) -> list[Record]:
    """The candidates to try, cheapest first: one per copy URL (the newest record),
    never ``destination`` itself nor a copy on ``source``'s endpoint (the same
    bucket or server: no cheaper than the origin), none at all for a local file
    ``source``; files first, then copies of the destination's scheme, then the
    others; newest first within each group."""
    if source is not None and local_origin(source):
        return []
    origin = None if source is None else endpoint_of(source)
    newest: dict[str, Record] = {}
    for record in records:
        if record.url == destination or endpoint_of(record.url) == origin:
            continue
        known = newest.get(record.url)
        if known is None or record.closed_at > known.closed_at:
            newest[record.url] = record
    scheme = parse_url(destination).scheme

    def cost(record: Record) -> tuple[int, float]:
        kind = parse_url(record.url).scheme
        rank = 0 if kind == "file" else 1 if kind == scheme else 2
        return rank, -record.closed_at

    return sorted(newest.values(), key=cost)


@dataclass(frozen=True)
class Check:
    """The outcome of :func:`check_copy`.

    Attributes:
        info: the copy's stat when it matches its record (pin it for the reads);
            None when it does not.
        why: what matched, or what differed (for the transfer's ``read_from_reason``).
        bytes_read: bytes of the copy read to checksum it.
    """

    info: ObjectInfo | None
    why: str
    bytes_read: int = 0


def check_copy(record: Record, size: int, chunk_size: int) -> Check:
    """Whether the copy of ``record`` still holds the recorded object of ``size`` bytes.

    Reads a file copy whole (CRC-32C in ``chunk_size`` pieces, each read pinned to
    the version just stat'ed); an S3 copy's stored CRC-32C is compared without
    reading. Never raises for the copy's own failures (gone, unreadable): they are
    the ``why`` of a copy that cannot be used.
    """
    algorithm, _, recorded = record.checksum.partition(":")
    if algorithm != ALGORITHM or not recorded:
        return Check(None, f"its record has no {ALGORITHM} checksum ({record.checksum!r})")
    url = parse_url(record.url)
    driver = get_driver(url.scheme)
    try:
        info = driver.stat(url)
    except StaccatoError as err:
        return Check(None, f"it cannot be read now ({err})")
    if not same_version(record.version, info.version) or info.size != size:
        return Check(
            None,
            f"it changed since it was recorded (version {record.version!r} -> "
            f"{info.version!r}, {info.size} bytes)",
        )
    stored = sync.stored_checksum(driver, info, algorithm)
    if stored is None and url.scheme != "file":
        return Check(
            None,
            f"a {url.scheme} copy keeps no checksum to compare without reading it whole "
            "over the network",
        )
    try:
        digest, read = sync.object_checksum(driver, url, info, chunk_size, algorithm)
    except StaccatoError as err:
        return Check(None, f"reading it to check its checksum failed ({err})")
    if digest != recorded:
        return Check(
            None,
            f"its {algorithm} is {digest}, not the recorded {recorded} (altered since "
            "it was recorded)",
            read,
        )
    how = "read whole" if read else "stored"
    return Check(
        info,
        f"version and {algorithm} ({how}) match the record of transfer {record.transfer_id}",
        read,
    )
