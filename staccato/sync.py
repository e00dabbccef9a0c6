"""Sync levels: whether the destination already matches the source, so a transfer
can complete as *up to date* without copying (``--sync-level``, Globus semantics).

Each level includes the ones before it, except that ``checksum`` skips the time
check (as Globus' checksum level and rclone's ``--checksum`` do): a source only
touched, with the same bytes, is up to date at ``checksum``:

* ``exists``: the destination exists.
* ``size``: and its size equals the source's (both from stat).
* ``mtime``: and the destination's modification time is not older than the
  source's. Times are compared like with like: at the coarser of the two endpoints'
  granularities (:data:`MTIME_GRANULARITY_S`), both truncated to whole multiples of
  it, so a local file's nanosecond mtime against an SFTP server's whole seconds
  (SFTP v3 attributes carry seconds, draft-ietf-secsh-filexfer-02 section 5) or an
  HTTP ``Last-Modified`` (an HTTP-date, whole seconds, RFC 9110 section 5.6.7) compares
  seconds with seconds. Equal at that granularity counts as not older (Globus' and
  rsync's rule); so a source rewritten with the same size within the same second
  as the copy was written is not noticed at this level (use ``checksum``). The two
  times come from two clocks (the source's and the destination's): skew between
  them shifts the comparison. An endpoint that tells no time (an HTTP server
  without ``Last-Modified``) never matches: the object is copied. A destination
  written by a transfer is never older than the source it copied: its mtime is set
  when the data is written (a file, SFTP), or for S3 when the multipart upload began
  (S3's ``Last-Modified`` of a multipart object), both after the source's stat, and a
  source modified after that stat fails the copy before publish.
* ``checksum``: sizes equal and the checksums are equal (times not compared). A side that keeps a stored checksum
  comparable with the transfer's is not read: S3 with a full-object CRC32C (the store's,
  or the one Staccato stored in the object's metadata at its PutObject while the
  store's MD5 ETag still vouches for it: ``s3.driver.vouched_metadata_crc32c``), for the
  default ``crc32c`` algorithm (CRC-32C combines across chunks, so any chunking gives
  the same value). Any other side (file, SFTP, HTTP; S3 without a full-object CRC32C,
  or with ``--checksum sha256``) is read once to compute it: a source is then read
  once (no write anywhere), and the destination once (file, SFTP). The size must
  match first, so a size change never costs a read.

Everything before the checksum level reads nothing but the destination's stat (and
what the source's stat already did).
"""

from __future__ import annotations

import math

from staccato import checksums
from staccato.endpoints.base import Driver
from staccato.errors import NotFoundError, PermanentError
from staccato.models import ObjectInfo, SyncLevel, SyncResult
from staccato.urls import EndpointURL

#: how coarse each endpoint's modification times are, seconds (0: as fine as the
#: stat tells, a float). file: ``st_mtime``; sftp: whole seconds (SFTP v3); http(s):
#: ``Last-Modified``, whole seconds; s3: ``Last-Modified``, whole seconds in the
#: HeadObject answer.
MTIME_GRANULARITY_S: dict[str, float] = {
    "file": 0.0,
    "sftp": 1.0,
    "http": 1.0,
    "https": 1.0,
    "s3": 1.0,
}


def mtime_not_older(
    source_mtime: float, source_scheme: str, destination_mtime: float, destination_scheme: str
) -> bool:
    """Whether the destination's mtime is not older than the source's, both truncated
    to the coarser granularity of the two endpoints (:data:`MTIME_GRANULARITY_S`).

    Args:
        source_mtime, destination_mtime: seconds since the epoch, each on its
            endpoint's clock.
        source_scheme, destination_scheme: URL schemes (``file``, ``sftp``...).
    """
    grain = max(
        MTIME_GRANULARITY_S.get(source_scheme, 1.0),
        MTIME_GRANULARITY_S.get(destination_scheme, 1.0),
    )
    if grain > 0:
        return math.floor(destination_mtime / grain) >= math.floor(source_mtime / grain)
    return destination_mtime >= source_mtime


def stored_checksum(driver: Driver, info: ObjectInfo, algorithm: str) -> str | None:
    """The object's checksum in ``algorithm`` from what its stat returned, when the
    endpoint keeps one comparable with a computed one (S3 full-object CRC32C), else
    None."""
    if algorithm == "crc32c" and driver.features.stored_checksum:
        return info.extra.get("crc32c") or None
    return None


def object_checksum(
    driver: Driver, url: EndpointURL, info: ObjectInfo, chunk_size: int, algorithm: str
) -> tuple[str, int]:
    """The object's checksum (hex) as a transfer computes it (chunks of ``chunk_size``
    bytes, one segment), stored where it can be, otherwise read from ``url``
    pinned to ``info``'s version.

    Returns:
        ``(hex digest, bytes read)``; bytes read is 0 for a stored checksum.

    Raises:
        SourceChangedError: the object changed while it was read.
        RetryableError: a read failed.
    """
    stored = stored_checksum(driver, info, algorithm)
    if stored is not None:
        return stored, 0
    if info.size == 0:
        return checksums.combine(algorithm, []), 0
    chunks = -(-info.size // chunk_size)
    digest = driver.segments_checksum(url, info.size, chunk_size, [(0, chunks)], algorithm, info)
    return digest, info.size


def compare(
    level: SyncLevel,
    source_driver: Driver,
    source: EndpointURL,
    source_info: ObjectInfo,
    destination_driver: Driver,
    destination: EndpointURL,
    *,
    chunk_size: int,
    algorithm: str,
    listed: ObjectInfo | None = None,
) -> SyncResult:
    """Whether ``destination`` already matches the source at ``level`` (see the module
    docstring); stops at the first check that differs, so a cheap mismatch costs no
    read.

    Args:
        source_info: the source's stat (from the transfer's stat step).
        chunk_size: bytes per chunk of a checksum computed by reading.
        algorithm: ``crc32c`` or ``sha256``.
        listed: the destination as a listing just found it (a dataset's batch lists
            its S3 range once: :meth:`Driver.listed_objects`), taken instead of its
            stat where it answers the level (exists, size, mtime; sizes that differ
            at checksum); None: stat'ed.

    Raises:
        PermanentError: the destination exists but cannot be compared (a directory,
            a symbolic link, not a regular file, permission denied: what the copy
            would refuse, :meth:`Driver.check_target`, checked first), or its
            directory is named through a symbolic link
            (:meth:`Driver.check_directory_name`); the message names the destination.
        RetryableError, SourceChangedError: as the drivers raise them.
    """
    # what the copy refuses (a symbolic link, a directory, a device) is not up to date
    # either: a stat through a link would judge the file it points to
    destination_driver.check_target(destination)
    # nor one whose directory is named through a symbolic link (publish refuses it)
    destination_driver.check_directory_name(destination)
    try:
        if listed is not None and (level != SyncLevel.checksum or listed.size != source_info.size):
            target = listed
        else:
            target = destination_driver.stat(destination)
    except NotFoundError:
        return SyncResult(up_to_date=False, reason=f"destination {destination} does not exist")
    except PermanentError as err:
        # a stat speaks of a source; the destination's own check names what is wrong
        # with it as a destination (a directory, a symlink, not writable)
        destination_driver.check_destination(destination)
        raise type(err)(
            f"destination {destination} cannot be compared with the source for "
            f"--sync-level {level.value}: {err}"
        ) from None
    if level == SyncLevel.exists:
        return SyncResult(up_to_date=True, reason="destination exists")
    if target.size != source_info.size:
        return SyncResult(
            up_to_date=False,
            reason=f"sizes differ: source {source_info.size} bytes, destination {target.size}",
        )
    if level == SyncLevel.size:
        return SyncResult(up_to_date=True, reason=f"sizes equal ({target.size} bytes)")
    if level == SyncLevel.checksum:
        return _compare_checksums(
            source_driver,
            source,
            source_info,
            destination_driver,
            destination,
            target,
            chunk_size,
            algorithm,
        )
    if source_info.modified_at is None or target.modified_at is None:
        missing = "source" if source_info.modified_at is None else "destination"
        return SyncResult(
            up_to_date=False, reason=f"the {missing} tells no modification time to compare"
        )
    if not mtime_not_older(
        source_info.modified_at, source.scheme, target.modified_at, destination.scheme
    ):
        return SyncResult(
            up_to_date=False,
            reason=(
                f"destination is older: modified {target.modified_at:.3f}, source "
                f"{source_info.modified_at:.3f} (seconds since the epoch)"
            ),
        )
    return SyncResult(up_to_date=True, reason="sizes equal, destination not older")


def _compare_checksums(
    source_driver: Driver,
    source: EndpointURL,
    source_info: ObjectInfo,
    destination_driver: Driver,
    destination: EndpointURL,
    target: ObjectInfo,
    chunk_size: int,
    algorithm: str,
) -> SyncResult:
    """The checksum level's comparison (sizes already equal): stored checksums where
    kept, else each side read once."""
    ours, destination_read = object_checksum(
        destination_driver, destination, target, chunk_size, algorithm
    )
    theirs, source_read = object_checksum(source_driver, source, source_info, chunk_size, algorithm)
    label = checksums.label(algorithm, ours)
    if ours != theirs:
        return SyncResult(
            up_to_date=False,
            reason=f"checksums differ: source {checksums.label(algorithm, theirs)}, "
            f"destination {label}",
            source_bytes_read=source_read,
            destination_bytes_read=destination_read,
        )
    return SyncResult(
        up_to_date=True,
        reason=f"checksums equal ({label})",
        checksum=label,
        source_bytes_read=source_read,
        destination_bytes_read=destination_read,
    )
