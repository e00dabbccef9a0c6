"""A small object copied in as few requests as its endpoints allow: the fast path of
:func:`staccato.activities.object_copy.copy_object` for a dataset's small files.

Taken when the object fits in one chunk (and in ``SMALL_OBJECT_MAX`` bytes, so it is
held in memory whole), no ``--sync-level`` check is asked for (or the caller made it
and found the destination not up to date: ``compared``), and one of the two sides can
move the whole object in one request:

* an S3 destination (``Features.whole_put``): one PutObject carrying the CRC32C of the
  bytes read from the source. The store computes the CRC32C of the body it received
  and rejects a body that differs (``BadDigest``, nothing stored; SeaweedFS and AWS S3
  both do, ``tests/s3/test_s3_small_objects.py`` sends a wrong one), and a PutObject
  is atomic: the key shows the old object or the whole new one. So nothing is
  published unverified and a failure leaves the destination untouched, without a
  multipart upload. The CRC32C the store answers is compared with ours (``--verify
  checksum``); a store answering none (moto) got our CRC32C and MD5 as metadata, and
  its ETag (the MD5 it computed over the body) equal to ours proves the bytes
  (:meth:`staccato.endpoints.s3.driver.S3Driver.put_whole`); an answer proving
  neither is checked by HeadObject + a read-back after, as a single transfer does. One request per file instead of nine (HeadBucket is asked once per
  bucket and minute, :meth:`staccato.endpoints.s3.driver.S3Driver.check_destination`).
* an S3 source (``Features.whole_get``): one GetObject gives the bytes and the
  version (ETag, size) in one response, checked against the store's full-object
  CRC32C. One response holds one version, so the bytes cannot mix versions, which is
  what the single transfer's version re-check before publish guards against for a
  copy read in several requests: no HeadObject before or after. The destination
  (file, SFTP) is written as always: temp name, fdatasync, read back, rename (a
  dataset's batch to a local file system stages it instead, :func:`stage_small`).

A file or SFTP source is read as a single transfer reads it: stat, one read of the
pinned version, a second read when its mtime cannot prove it unchanged, and its
version re-checked before publish.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from staccato import checksums, secrets, settings
from staccato.activities.copy import _check_read_back
from staccato.activities.transfer import (
    check_after_publish,
    check_file_roots,
    mtime_needs_second_read,
    open_write_session,
    stat_source,
    verify_object,
)
from staccato.endpoints import get_driver
from staccato.endpoints.base import Driver, WholeReads, keepalive_past_stop
from staccato.endpoints.file.fs import PSEUDO_FILE_SYSTEMS, file_system_type, mtime_resolution_of
from staccato.endpoints.file.group import LocalGroup, StagedFile
from staccato.endpoints.file.read import file_version
from staccato.errors import (
    ChecksumMismatchError,
    PermanentError,
    SourceChangedError,
    StaccatoError,
)
from staccato.models import (
    ObjectInfo,
    PrepareInput,
    TransferOptions,
    VerifyInput,
    VerifyMode,
    WriteSession,
    same_version,
)
from staccato.plan import chunk_count
from staccato.urls import EndpointURL, parse_url

#: bytes: the largest object copied whole in memory (per thread of a batch)
SMALL_OBJECT_MAX = 8 * 1024 * 1024

log = logging.getLogger("staccato.activities")


def copy_small(
    source: str,
    destination: str,
    options: TransferOptions,
    session_key: str,
    listed_size: int,
    pace: Callable[[int], None] | None = None,
    *,
    compared: bool = False,
) -> int | None:
    """Copy a small object (see the module docstring).

    Args:
        listed_size: the object's size as listed (bytes); decides whether to try.
        pace: called with the bytes read from the source once they are read, before
            they are written (a batch's rate: :func:`staccato.activities.pacing.paced_by`;
            it sleeps while they are over it); None: not paced.
        compared: the caller compared the destination at ``options.sync_level``
            already and found it not up to date (else a sync level makes this path
            not apply).

    Returns:
        The bytes written, or None when this path does not apply (nothing was written:
        the caller copies the object the usual way).

    Raises:
        PermanentError: this object cannot be copied (missing, changed during the
            copy...); the destination name is untouched.
        RetryableError: a transient failure.
    """
    limit = min(options.chunk_size, SMALL_OBJECT_MAX)
    if (options.sync_level is not None and not compared) or listed_size > limit:
        return None
    src = secrets.source_url(source, None)
    dst = parse_url(destination)
    source_driver = get_driver(src.scheme)
    destination_driver = get_driver(dst.scheme)
    whole_get = source_driver.features.whole_get
    if not (whole_get or destination_driver.features.whole_put):
        return None
    check_file_roots(source, destination)
    if whole_get:
        got = source_driver.read_whole(src, limit)
        if got is None:
            return None
        info, data = got
    else:
        info = stat_source(source)
        if info.size > limit:
            return None
        data = _read(source_driver, src, info)
        if info.reread_before_publish and data != _read(source_driver, src, info):
            raise SourceChangedError(
                f"source changed during the copy: {source} read differently a second "
                "time (rewritten in place, size and mtime unchanged); nothing was published"
            )
        if not same_version(info.version, source_driver.stat(src).version):
            raise SourceChangedError(
                f"source changed during the transfer: {source} was modified; nothing was published"
            )
    if pace is not None:
        pace(len(data))
    if destination_driver.features.whole_put:
        _put(destination_driver, dst, data, options, session_key)
    else:
        _write_and_publish(destination_driver, dst, data, info, options, session_key)
    return len(data)


def _object_digest(algorithm: str, data: bytes) -> str:
    """The object checksum a transfer computes for ``data`` held in one chunk: the
    chunk's digest combined into its segment's, then into the object's."""
    if not data:
        return checksums.combine(algorithm, [])
    segment = checksums.combine(algorithm, [(checksums.checksum_bytes(algorithm, data), len(data))])
    return checksums.combine(algorithm, [(segment, len(data))])


def _read(driver: Driver, url: EndpointURL, info: ObjectInfo) -> bytes:
    """The whole object, of the version pinned in ``info``."""
    buffer = bytearray(info.size)
    if info.size:
        with driver.open_read(url, info, 0, info.size) as reader:
            reader.readinto_full(memoryview(buffer))
    return bytes(buffer)


def _put(
    driver: Driver, url: EndpointURL, data: bytes, options: TransferOptions, marker: str
) -> None:
    """One atomic write checked by the store against our CRC32C, then compared with the
    CRC32C its answer vouches for (:meth:`Driver.put_whole`: the one it answers, or
    ours when its MD5 ETag proves the same bytes stored); read back (one HeadObject,
    one GetObject pinned to it) only when the answer proves neither."""
    driver.check_destination(url)
    crc = checksums.checksum_bytes("crc32c", data)
    stored = driver.put_whole(url, data, crc, marker)
    if options.verify == VerifyMode.none or stored == crc:
        return
    if stored:
        raise ChecksumMismatchError(
            f"after publish: {url} has CRC32C {stored}, the source's bytes {crc}"
        )
    algorithm = options.checksum.value
    with keepalive_past_stop():  # published: a stop now must not hide it
        verify_object(
            VerifyInput(
                url=url.canonical,
                size=len(data),
                chunk_size=options.chunk_size,
                segments=[(0, chunk_count(len(data), options.chunk_size))],
                checksum=options.checksum,
                expected=_object_digest(algorithm, data),
                mode=options.verify,
                whole_object=True,
            )
        )


def _write_and_publish(
    driver: Driver,
    url: EndpointURL,
    data: bytes,
    info: ObjectInfo,
    options: TransferOptions,
    session_key: str,
) -> None:
    """A write session holding one chunk (temp name), read back where the destination
    can (else the temp data is read once before publish), published, size checked.
    A failure before publish removes the temp data unless it is worth a retry."""
    algorithm = options.checksum
    size = len(data)
    driver.make_parents(url)
    prepared = open_write_session(
        PrepareInput(
            destination=url.canonical,
            size=size,
            chunk_size=options.chunk_size,
            session_key=session_key,
        )
    )
    session = prepared.session
    chunks = chunk_count(size, session.chunk_size)
    digest = checksums.checksum_bytes(algorithm.value, data)
    expected = _object_digest(algorithm.value, data)
    checking = options.verify.compares_checksums
    try:
        verified = not size
        if size:
            if chunks != 1:
                raise PermanentError(
                    f"{url}: {size} bytes do not fit in one chunk of {session.chunk_size}"
                )
            with driver.open_writer(session) as writer:
                view = memoryview(bytearray(data))
                writer.write_chunk(0, view, digest)
                if checking and driver.features.read_back:
                    _check_read_back(writer, 0, view, algorithm.value, digest)
                    verified = True
        if checking and not verified and prepared.session_url is not None:
            verify_object(
                VerifyInput(
                    url=prepared.session_url,
                    size=size,
                    chunk_size=session.chunk_size,
                    segments=[(0, chunks)],
                    checksum=algorithm,
                    expected=expected,
                    mode=VerifyMode.checksum,
                    whole_object=False,
                )
            )
            verified = True
        driver.publish(session)
    except StaccatoError as err:
        drop_session(driver, session, err)
        raise
    with keepalive_past_stop():  # published: a stop now must not hide it
        check_after_publish(
            session, size, [(0, chunks)], algorithm, expected, verified, options.verify
        )


def drop_session(driver: Driver, session: WriteSession, err: StaccatoError) -> None:
    """Abort ``session`` after ``err`` ended its copy, unless a retry will find it again
    (a transient error on a destination whose sessions reopen by key: its temp data is
    kept for the retry). A session that cannot be found again (an S3 multipart upload)
    is always aborted, or it would be left behind; if that abort fails too, it is
    logged and ``err`` is what the caller raises."""
    if err.retryable and driver.features.reopens_by_key:
        return
    try:
        driver.abort(session)
    except StaccatoError as abort_error:
        if not err.retryable:
            raise
        log.warning("%s: the write session was not aborted: %s", session.url, abort_error)


def stage_small(
    source: str,
    destination: str,
    options: TransferOptions,
    session_key: str,
    listed_size: int,
    group: LocalGroup,
) -> StagedFile | None:
    """Write a small object to a local file destination under its temp name, to be
    published by ``group``'s next commit (:mod:`staccato.endpoints.file.group`).

    Taken when the destination is a local file, the object fits in one chunk (and in
    ``SMALL_OBJECT_MAX``), no ``--sync-level`` check is asked for, and the source is
    a local file (read whole: one open, ``fstat``, read; re-read when its mtime
    cannot prove it unchanged; its version, ``stat`` by path, re-checked before
    publish: a change during the read moves it) or can
    be read whole in one request (``Features.whole_get``: S3 GetObject, its bytes
    checked against the store's CRC32C).

    Returns:
        The staged file, or None when this path does not apply (nothing was written:
        the caller copies the object the usual way, which also reports any problem of
        the source with its usual message).

    Raises:
        PermanentError: the destination cannot take the file (a directory or link at
            its name, a file larger than the whole file system...); nothing is left
            under its temp name.
        RetryableError: a transient failure of the source, or no space left on the
            destination's file system (space may be freed: retried for
            ``--retry-for``); nothing is left under its temp name.
    """
    limit = min(options.chunk_size, SMALL_OBJECT_MAX)
    if options.sync_level is not None or listed_size > limit:
        return None
    dst = parse_url(destination)
    if dst.scheme != "file":
        return None
    src = secrets.source_url(source, None)
    check_file_roots(source, destination)
    return stage_small_url(src, dst, options, session_key, listed_size, group)


def stage_small_url(
    src: EndpointURL,
    dst: EndpointURL,
    options: TransferOptions,
    session_key: str,
    listed_size: int,
    group: LocalGroup,
    pace: Callable[[int], None] | None = None,
    reads: WholeReads | None = None,
) -> StagedFile | None:
    """:func:`stage_small` of URLs already parsed (a dataset's batch builds each file's
    URLs once, from its roots; the caller checks them against ``STACCATO_FILE_ROOTS``);
    ``dst`` a ``file`` URL; ``pace`` as :func:`copy_small`'s (called before the bytes
    are staged); ``reads``: the source's reads sent ahead by the caller
    (:meth:`staccato.endpoints.base.Driver.whole_reads`), which this read takes from
    (the same request and checks as ``read_whole``, only sent earlier).

    Returns, raises: as :func:`stage_small`.
    """
    limit = min(options.chunk_size, SMALL_OBJECT_MAX)
    if options.sync_level is not None or listed_size > limit:
        return None
    source_path: str | None = None
    version: str | None = None
    if src.scheme == "file":
        local = _read_local(src.path, limit)
        if local is None:
            return None
        data, version = local
        source_path = src.path
    else:
        driver = get_driver(src.scheme)
        if not driver.features.whole_get:
            return None
        got = reads.read(src) if reads is not None else driver.read_whole(src, limit)
        if got is None:
            return None
        data = got[1]
    if pace is not None:
        pace(len(data))
    return group.stage(dst, session_key, data, source_path, version)


def _read_local(path: str, limit: int) -> tuple[bytes, str] | None:
    """A local regular file of at most ``limit`` bytes read whole, and the version
    (:func:`staccato.endpoints.file.read.file_version`) its bytes are of: the same
    before and after the read (``fstat``), and read a second time when its mtime is
    too recent to prove a rewrite in place would move it (as ``stat_source`` decides).
    None for anything else (missing, not a regular file, unreadable, on a kernel
    pseudo file system, larger, changing while read): the usual path reports it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not (st.st_mode & 0o170000 == 0o100000) or st.st_size > limit:
            return None
        kind = file_system_type(path, st.st_dev)
        if kind in PSEUDO_FILE_SYSTEMS:
            return None
        data = _read_fd(fd, st.st_size)
        version = file_version(st)
        if len(data) != st.st_size:
            return None  # changing while read
        resolution = mtime_resolution_of(kind)
        local = resolution < 1.0
        # as stat_source decides it, without building its ObjectInfo (per small file;
        # the settings are read only for a file system whose clock is remote)
        if mtime_needs_second_read(
            st.st_mtime,
            resolution,
            time.time(),
            local=local,
            clock_skew_s=0.0 if local else settings.current().clock_skew_s,
        ):
            if _read_fd(fd, st.st_size) != data:
                raise SourceChangedError(
                    f"source changed during the copy: {path} read differently a second "
                    "time (rewritten in place, size and mtime unchanged); nothing was published"
                )
        return data, version
    except OSError:
        return None
    finally:
        os.close(fd)


def _read_fd(fd: int, size: int) -> bytes:
    """Up to ``size + 1`` bytes of a regular file from offset 0 (one more than
    expected: a file that grew reads longer). A read of a regular file returns fewer
    bytes than asked only at its end (read(2)), so one read usually does."""
    parts: list[bytes] = []
    got = 0
    while got <= size:
        wanted = size + 1 - got
        part = os.pread(fd, wanted, got)
        parts.append(part)
        got += len(part)
        if len(part) < wanted:
            break  # short read: the end of the file
    return parts[0] if len(parts) == 1 else b"".join(parts)


# -- one read, several destinations (a dataset with several destination roots) --------


def read_whole_source(source: str, limit: int) -> tuple[ObjectInfo, bytes]:
    """Read a small source object whole, once, with the guarantees :func:`copy_small`
    gives its bytes: one GetObject where the source can (its CRC32C checked), else
    stat, one read of the pinned version (a second when its mtime cannot prove it
    unchanged) and the version re-checked after.

    Returns:
        The version read (``ObjectInfo``) and its bytes (at most ``limit``).

    Raises:
        PermanentError: missing, larger than ``limit`` bytes (grew since listed), or
            changed while read.
        RetryableError: a transient failure of the source.
    """
    src = secrets.source_url(source, None)
    driver = get_driver(src.scheme)
    if driver.features.whole_get:
        got = driver.read_whole(src, limit)
        if got is None:
            raise PermanentError(f"{source} is larger than {limit} bytes now (grew since listed)")
        return got
    info = stat_source(source)
    if info.size > limit:
        raise PermanentError(f"{source} is larger than {limit} bytes now (grew since listed)")
    data = _read(driver, src, info)
    if info.reread_before_publish and data != _read(driver, src, info):
        raise SourceChangedError(
            f"source changed during the copy: {source} read differently a second "
            "time (rewritten in place, size and mtime unchanged); nothing was published"
        )
    if not same_version(info.version, driver.stat(src).version):
        raise SourceChangedError(
            f"source changed during the transfer: {source} was modified; nothing was published"
        )
    return info, data


def write_whole(
    destination: str, data: bytes, info: ObjectInfo, options: TransferOptions, session_key: str
) -> None:
    """Write ``data`` (one chunk at most, read by :func:`read_whole_source`) to
    ``destination`` as :func:`copy_small` does: one checked PutObject to S3, else a
    write session under a temp name, read back, published.

    Raises:
        PermanentError: the destination cannot take it (nothing published).
        ChecksumMismatchError, WriteSessionLostError: the write proved bad (retry it
            under a new session key).
        RetryableError: a transient failure of the destination.
    """
    dst = parse_url(destination)
    driver = get_driver(dst.scheme)
    if driver.features.whole_put:
        _put(driver, dst, data, options, session_key)
    else:
        _write_and_publish(driver, dst, data, info, options, session_key)
