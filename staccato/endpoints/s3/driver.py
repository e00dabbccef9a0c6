"""``S3Driver``: the ``s3://bucket/key[?profile=NAME]`` endpoint.

Source: stat (HeadObject) and ranged reads (:mod:`.read`). Destination: write sessions
(a multipart upload per non-empty object, one empty PutObject at publish for a 0-byte
object), the parts S3 already holds (ListParts), publish (CompleteMultipartUpload) and
abort (AbortMultipartUpload, repeated until the upload is gone); the parts themselves
are written by :mod:`.write`. The package docstring (:mod:`staccato.endpoints.s3`)
describes the whole driver; ``docs/architecture.md`` the contract it implements.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import os
import threading
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import crc32c as _crc32c
from botocore.exceptions import BotoCoreError, ClientError

from staccato import checksums, sockets
from staccato.endpoints.base import (
    ORPHAN_CLOCK_SLACK_S,
    ChunkWriter,
    Driver,
    Features,
    Reader,
    WholeReads,
    assembling,
    keepalive,
    moved,
    parts_digest,
    session_ended,
    session_opened,
    write_fence,
)
from staccato.endpoints.s3.checksums import _EMPTY_CRC32C, _b64_to_hex, _crc_b64, _is_crc32c_hex
from staccato.endpoints.s3.client import _Endpoint, _make_endpoint
from staccato.endpoints.s3.errors import _code, _explain_head, _s3_error, _scrub, _status
from staccato.endpoints.s3.lean import LeanS3, SentGet
from staccato.endpoints.s3.parts import LIST_PARTS_PAGE, collect_parts, plan_part_size
from staccato.endpoints.s3.read import S3Reader
from staccato.endpoints.s3.write import S3ChunkWriter, UploadGone, _UploadDestination
from staccato.errors import (
    ChecksumMismatch,
    DestinationMissing,
    IncompleteRead,
    InvalidURL,
    PermanentError,
    RetryableError,
    WriteSessionLost,
)
from staccato.models import ListEntry, ListPage, ObjectInfo, WriteSession
from staccato.plan import chunk_bounds, chunk_count
from staccato.urls import EndpointURL, directory_prefix, parse_url

log = logging.getLogger("staccato.s3")

#: user-metadata key marking objects written by a Staccato session
MARKER = "staccato-transfer"
#: user-metadata keys of the CRC32C and MD5 (hex) Staccato computed over a PutObject's
#: body, sent with it to a store that does not answer our CRC32C (:meth:`S3Driver.put_whole`)
META_CRC32C = "staccato-crc32c"
META_MD5 = "staccato-md5"
_ABORT_ROUNDS = 5
_ORPHAN_LIST_PAGES = 10  # ListMultipartUploads pages read to find orphans
_BUCKET_TTL_S = 60.0  # seconds a bucket HeadBucket found is not asked about again
_ABORT_PAUSE_S = 0.5


#: what :meth:`S3Driver.durable_chunks` reports of a listed part starts with this
_LISTED = "part:"


def _listed_part(part: Mapping[str, Any]) -> str:
    """A ListParts entry as :meth:`S3Driver.durable_chunks` reports it:
    ``part:<CRC32C, 8 hex digits, or "">:<ETag without quotes>`` (never a checksum in
    any algorithm, so the stream re-reads the chunk from the source)."""
    etag = str(part.get("ETag") or "").strip('"').lower()
    return f"{_LISTED}{_b64_to_hex(part.get('ChecksumCRC32C'))}:{etag}"


def _is_md5_hex(value: str) -> bool:
    """Whether ``value`` (an ETag without quotes) is a plain MD5: 32 hex digits."""
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)


def _object_info(head: Mapping[str, Any], size: int) -> ObjectInfo:
    """:class:`ObjectInfo` from HeadObject's or GetObject's response: ETag (+ VersionId)
    and size as the version, the full-object CRC32C where the store keeps one."""
    etag = head.get("ETag") or ""
    version_id = head.get("VersionId")
    extra = {"etag": etag}
    version = f"etag={etag};size={size}"
    if version_id and version_id != "null":
        extra["version_id"] = version_id
        version += f";version_id={version_id}"
    crc = _b64_to_hex(head.get("ChecksumCRC32C"))
    if crc and head.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT":
        extra["crc32c"] = crc
    else:
        ours = vouched_metadata_crc32c(head, size)
        if ours:
            extra["crc32c"] = ours
            extra["crc32c_from"] = "metadata"
    modified = head.get("LastModified")  # whole seconds (an HTTP-date); for sync levels
    return ObjectInfo(
        size=size,
        version=version,
        supports_ranges=True,
        content_type=head.get("ContentType"),
        extra=extra,
        modified_at=modified.timestamp() if modified is not None else None,
    )


def vouched_metadata_crc32c(head: Mapping[str, Any], size: int) -> str:
    """The CRC32C Staccato stored in an object's user metadata at its PutObject
    (:meth:`S3Driver.put_whole`: ``x-amz-meta-staccato-crc32c`` with
    ``x-amz-meta-staccato-md5``, both computed over the bytes sent), when the store's
    own answer vouches that the object holds exactly those bytes; else ``""``.

    Trusted only when all hold: the object carries Staccato's marker
    (:data:`MARKER`), both values are well formed, and the store's ETag (HeadObject's
    or GetObject's ``head``) is exactly the recorded MD5. A single-part object's ETag
    is the MD5 the store computed over the bytes it stores (S3, moto, SeaweedFS,
    MinIO), so ETag == our MD5 means the stored bytes are the bytes whose CRC32C we
    recorded (an accidental MD5 collision is out of reach). Any other object (bytes
    damaged on the way to a store that does not check our CRC32C, an object replaced
    by another writer keeping or copying the metadata onto other bytes, a multipart
    ETag ``"...-N"``, an ETag that is not an MD5: SSE-KMS, SSE-C) fails the match and
    is read back, as before. ``size`` is the object's size (the MD5 covers it).
    """
    metadata = head.get("Metadata") or {}
    crc = str(metadata.get(META_CRC32C) or "")
    md5 = str(metadata.get(META_MD5) or "")
    etag = str(head.get("ETag") or "").strip('"')
    if (
        size < 0
        or not metadata.get(MARKER)
        or not _is_crc32c_hex(crc)
        or len(md5) != 32
        or any(c not in "0123456789abcdef" for c in md5)
        or etag != md5
    ):
        return ""
    return crc


def _listed(
    endpoint: _Endpoint,
    bucket: str,
    prefix: str,
    cursor: str | None,
    max_keys: int,
    role: str,
) -> Mapping[str, Any]:
    """One ListObjectsV2 answer: up to ``max_keys`` (at most 1,000, the S3 API's page)
    keys under ``prefix`` after the key ``cursor`` (``StartAfter``; None: from the
    start). ``role``: ``"source"`` or ``"destination"``, for the error's words.

    Raises:
        NotFoundError (no such bucket), PermissionDeniedError, RetryableError: as
        :func:`_s3_error` maps the store's answer.
    """
    request: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": max_keys}
    if cursor is not None:
        request["StartAfter"] = cursor
    try:
        answer = endpoint.client.list_objects_v2(**request)
    except (ClientError, BotoCoreError) as err:
        raise _s3_error(err, endpoint, bucket, prefix, role=role, action="ListObjectsV2") from None
    moved()  # the store answered (a listing's hang watch)
    return answer  # type: ignore[no-any-return]


def _checked_whole(
    url: EndpointURL, response: Mapping[str, Any], data: bytes
) -> tuple[ObjectInfo, bytes]:
    """A whole object's info (GetObject's fields) and bytes, checked against the
    store's full-object CRC32C where it keeps one.

    Raises:
        IncompleteRead: the bytes have another CRC32C (read again).
    """
    info = _object_info(response, len(data))
    stored = info.extra.get("crc32c")
    if stored and checksums.checksum_bytes("crc32c", data) != stored:
        raise IncompleteRead(
            f"GetObject of s3://{url.bucket}/{url.key}: the bytes received have another "
            f"CRC32C than the store's ({stored}); reading again"
        )
    return info, data


def _lean_whole(
    url: EndpointURL, got: tuple[Mapping[str, Any], bytes], max_size: int
) -> tuple[ObjectInfo, bytes] | None:
    """:meth:`S3Driver.read_whole`'s answer from a lean GetObject's fields and body."""
    fields, data = got
    return None if fields["ContentLength"] > max_size else _checked_whole(url, fields, data)


class _ReadsAhead(WholeReads):
    """GetObjects sent ahead (:meth:`LeanS3.send_get`), read in the order asked for;
    each checked as :meth:`S3Driver.read_whole` checks its answer (the bytes against
    the store's CRC32C, one response holding one version). A read that could not be
    sent ahead, or whose answer is not a plain ``200``, is made by
    :meth:`S3Driver.read_whole` when asked for (which reports the error)."""

    def __init__(self, driver: S3Driver, max_size: int) -> None:
        self._driver = driver
        self._max_size = max_size
        #: (profile, bucket, key) -> (the endpoint's lean client, the GET in flight)
        self._sent: dict[tuple[str | None, str, str], tuple[LeanS3, SentGet]] = {}

    @staticmethod
    def _name(url: EndpointURL) -> tuple[str | None, str, str]:
        return url.params.get("profile"), url.bucket, url.key

    def send(self, url: EndpointURL) -> None:
        name = self._name(url)
        if not url.key or name in self._sent:
            return
        lean = self._driver._lean_for(url, self._driver.endpoint(url))
        sent = lean.send_get(url.bucket, url.key) if lean is not None else None
        if lean is not None and sent is not None:
            self._sent[name] = (lean, sent)

    def read(self, url: EndpointURL) -> tuple[ObjectInfo, bytes] | None:
        found = self._sent.pop(self._name(url), None)
        if found is None:
            return self._driver.read_whole(url, self._max_size)
        lean, sent = found
        got = lean.finish_get(sent, self._max_size)
        if got is not None:
            return _lean_whole(url, got, self._max_size)
        # not a plain 200 (or the exchange broke): asked again through boto3, which
        # reports what the store says
        return self._driver._boto_whole(url, self._driver.endpoint(url), self._max_size)

    def drop(self, url: EndpointURL) -> None:
        found = self._sent.pop(self._name(url), None)
        if found is not None:
            found[1].drop()

    def close(self) -> None:
        sent, self._sent = self._sent, {}
        for _, request in sent.values():
            request.drop()


#: seconds a process trusts its last look at the shared config and credentials files
#: (:func:`_configuration`): a batch of small files asks for its client per file
FILES_RECHECK_S = 1.0
#: (when, the raw environment then, what :func:`_configuration` found then)
_seen: tuple[float, object, tuple[object, ...]] | None = None


def _configuration() -> tuple[object, ...]:
    """What an S3 client is made from, cheaply compared: the ``AWS_*`` environment
    variables, the size, mtime (ns) and inode of the shared config and credentials
    files (``AWS_CONFIG_FILE``, ``AWS_SHARED_CREDENTIALS_FILE``, else ``~/.aws/config``
    and ``~/.aws/credentials``; None where missing), and the socket buffer size new
    connections get (:func:`staccato.sockets.chosen`).

    The first two are looked at again when the environment changed or
    :data:`FILES_RECHECK_S` has passed (an edited file is seen within a second): the
    look costs ~0.2 ms of CPU (every variable decoded, two ``stat`` calls), which a
    dataset's batch would otherwise pay per file. The environment is compared as
    :func:`staccato.settings.current` compares it: CPython's raw dict of bytes
    (``os.environ._data``), a C-level comparison."""
    global _seen
    now = time.monotonic()
    data = getattr(os.environ, "_data", None)
    raw: object = data if isinstance(data, dict) else None
    seen = _seen
    if seen is None or raw is None or seen[1] != raw or not 0 <= now - seen[0] < FILES_RECHECK_S:
        files: list[tuple[int, int, int] | None] = []
        for variable, default in (
            ("AWS_CONFIG_FILE", "~/.aws/config"),
            ("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"),
        ):
            try:
                st = os.stat(os.path.expanduser(os.environ.get(variable) or default))
                files.append((st.st_size, st.st_mtime_ns, st.st_ino))
            except OSError:
                files.append(None)
        environment = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))
        # a copy: the environment may change after this call
        seen = _seen = (
            now,
            dict(raw) if isinstance(raw, dict) else None,
            (environment, tuple(files)),
        )
    return (*seen[2], sockets.chosen())


def _listed_after(key: str, cursor: str) -> bool:
    """Whether ``key`` may follow ``cursor`` in a listing: greater in UTF-8 byte order
    (AWS S3) or in file-tree order, where ``/`` sorts before every other character
    (stores keeping keys in a file tree: SeaweedFS lists ``d/x`` before ``d-x``)."""
    a, b = key.encode("utf-8"), cursor.encode("utf-8")
    return a > b or a.replace(b"/", b"\0") > b.replace(b"/", b"\0")


class S3Driver(Driver):
    """Driver for ``s3://bucket/key[?profile=NAME]`` URLs."""

    scheme = "s3"
    # no readable unpublished data (a multipart upload); a stored full-object CRC32C;
    # UploadPartCopy within one endpoint
    # one-request reads and writes of small objects (GetObject; PutObject with its CRC32C)
    features = Features(
        write=True, stored_checksum=True, server_side_copy=True, whole_get=True, whole_put=True
    )

    def __init__(self) -> None:
        #: profile -> (its client, the configuration it was made from)
        self._endpoints: dict[str | None, tuple[_Endpoint, tuple[object, ...]]] = {}
        #: (profile, bucket) -> when HeadBucket last found it (monotonic seconds)
        self._buckets: dict[tuple[str | None, str], float] = {}
        self._lock = threading.Lock()
        #: profile -> (the endpoint it serves, its lean GetObject/PutObject or None)
        self._lean: dict[str | None, tuple[_Endpoint, LeanS3 | None]] = {}
        #: (profile, endpoint URL) -> whether its PutObject answers our CRC32C
        self._answers_crc32c: dict[tuple[str | None, str], bool] = {}

    # -- configuration

    def endpoint(self, url: EndpointURL) -> _Endpoint:
        """The client for the URL's profile: one per process, kept for as long as the
        worker's AWS configuration is the same (:func:`_configuration`: the ``AWS_*``
        environment, the config and credentials files' size and mtime, the socket
        buffer size), so that a worker picks up edited config/credentials files (e.g.
        after a wrong key was fixed) without a restart, and only then pays for a new
        client (~0.1-0.2 s of CPU, its connection pool emptied). Refreshable
        credentials (roles, SSO) refresh anyway."""
        profile = url.params.get("profile")
        configuration = _configuration()
        with self._lock:
            cached = self._endpoints.get(profile)
            if cached is None or cached[1] != configuration:
                cached = self._endpoints[profile] = (_make_endpoint(profile), configuration)
            return cached[0]

    def target(self, session: WriteSession) -> _UploadDestination:
        url = parse_url(session.url)
        return _UploadDestination(url, self.endpoint(url), session)

    def adjust_chunk_size(self, size: int, chunk_size: int) -> tuple[int, str | None]:
        """S3 part-size rules (see :func:`staccato.endpoints.s3.parts.plan_part_size`)."""
        return plan_part_size(size, chunk_size)

    def can_copy_from(self, source: EndpointURL, destination: EndpointURL) -> bool:
        """Same endpoint URL and same access key: the store can copy (CopyObject /
        UploadPartCopy) with the destination's credentials."""
        if source.scheme != "s3" or destination.scheme != "s3":
            return False
        a, b = self.endpoint(source), self.endpoint(destination)
        return a.endpoint_url == b.endpoint_url and a.identity == b.identity

    # -- source

    def stat(self, url: EndpointURL) -> ObjectInfo:
        """HeadObject (``ChecksumMode=ENABLED``): size, ETag (+ VersionId) as the
        version, Content-Type and the full-object CRC32C where the store keeps one.

        A HEAD error has no body, hence no S3 error code: a 404 is told apart
        (NoSuchBucket vs NoSuchKey) with HeadBucket, a 403/400 with a one-byte GET.
        """
        if not url.key:
            raise InvalidURL(f"{url} names a bucket, not an object: add the key, s3://BUCKET/KEY")
        endpoint = self.endpoint(url)
        try:
            head = endpoint.client.head_object(
                Bucket=url.bucket, Key=url.key, ChecksumMode="ENABLED"
            )
        except ClientError as err:
            seen = (url.params.get("profile"), url.bucket)
            raise _explain_head(
                err,
                endpoint,
                url.bucket,
                url.key,
                role="source",
                action="HeadObject",
                bucket_known=lambda: self._bucket_known(seen),
                bucket_found=lambda: self._bucket_seen(seen),
            ) from None
        except BotoCoreError as err:
            raise _s3_error(
                err, endpoint, url.bucket, url.key, role="source", action="HeadObject"
            ) from None
        return _object_info(head, int(head["ContentLength"]))

    #: ``LastModified`` is whole seconds (truncated: up to 1 s early) on the store's
    #: clock, which may differ from the worker's and the Temporal server's by a few
    #: seconds (as ``ORPHAN_CLOCK_SLACK_S`` of the dataset batch allows): 1 + 5 s
    change_time_slack_s = 6.0

    def changed_at(self, url: EndpointURL) -> float | None:
        """HeadObject's ``LastModified``: when the object now under the key was
        stored (a PutObject's time; a multipart upload's is when it began, before any
        of its parts), so an object stored by a copy is never dated before the copy
        began. See :meth:`Driver.changed_at`."""
        return self.stat(url).modified_at

    def read_whole(self, url: EndpointURL, max_size: int) -> tuple[ObjectInfo, bytes] | None:
        """One GetObject (``ChecksumMode=ENABLED``): the object's info from the response
        headers (as :meth:`stat` builds it from HeadObject) and its bytes, checked
        against the store's full-object CRC32C where it keeps one. One response carries
        one version, so the bytes cannot mix versions. None when the object is larger
        than ``max_size`` bytes (the body is closed unread).

        Raises:
            NotFoundError, PermissionDeniedError, RetryableError (a short body, or bytes
            that differ from the stored CRC32C: read again).
        """
        if not url.key:
            raise InvalidURL(f"{url} names a bucket, not an object: add the key, s3://BUCKET/KEY")
        endpoint = self.endpoint(url)
        lean = self._lean_for(url, endpoint)
        got = lean.get(url.bucket, url.key, max_size) if lean is not None else None
        if got is not None:
            return _lean_whole(url, got, max_size)
        return self._boto_whole(url, endpoint, max_size)

    def _boto_whole(
        self, url: EndpointURL, endpoint: _Endpoint, max_size: int
    ) -> tuple[ObjectInfo, bytes] | None:
        """:meth:`read_whole` through boto3 (which reports every error)."""
        try:
            response = endpoint.client.get_object(
                Bucket=url.bucket, Key=url.key, ChecksumMode="ENABLED"
            )
        except (ClientError, BotoCoreError) as err:
            raise _s3_error(
                err, endpoint, url.bucket, url.key, role="source", action="GetObject"
            ) from None
        body = response["Body"]
        try:
            size = int(response["ContentLength"])
            if size > max_size:
                return None
            data = body.read(size + 1) if size else b""
        except (BotoCoreError, OSError) as err:
            raise IncompleteRead(
                f"GetObject of s3://{url.bucket}/{url.key} broke: {_scrub(str(err), None)}"
            ) from None
        finally:
            body.close()
        if len(data) != size:
            raise IncompleteRead(
                f"GetObject of s3://{url.bucket}/{url.key} gave {len(data)} bytes, "
                f"Content-Length said {size}"
            )
        return _checked_whole(url, response, data)

    def whole_reads(self, root: EndpointURL, max_size: int) -> WholeReads | None:
        """GetObjects of small objects under ``root`` sent ahead on connections of
        their own (:class:`_ReadsAhead`), where the lean path applies to ``root``'s
        endpoint (:mod:`staccato.endpoints.s3.lean`); else None."""
        if self._lean_for(root, self.endpoint(root)) is None:
            return None
        return _ReadsAhead(self, max_size)

    def _lean_for(self, url: EndpointURL, endpoint: _Endpoint) -> LeanS3 | None:
        """The lean GetObject/PutObject of ``url``'s endpoint where it applies
        (:mod:`staccato.endpoints.s3.lean`), made once per endpoint client."""
        profile = url.params.get("profile")
        known = self._lean.get(profile)
        if known is None or known[0] is not endpoint:
            with self._lock:
                known = self._lean.get(profile)
                if known is None or known[0] is not endpoint:
                    usable = LeanS3.usable(endpoint.endpoint_url, endpoint.is_aws, endpoint.client)
                    getter = (
                        LeanS3(endpoint.endpoint_url, endpoint.region, endpoint.credentials)
                        if usable
                        else None
                    )
                    known = self._lean[profile] = (endpoint, getter)
        return known[1]

    def open_read(self, url: EndpointURL, info: ObjectInfo, offset: int, length: int) -> Reader:
        return S3Reader(self, url, info, offset, length)

    def root_exists(self, root: EndpointURL) -> bool:
        """Whether some key starts with ``root``'s prefix, a folder marker included (one
        ListObjectsV2 of one key): S3 has no directories, so a prefix no key starts
        with is not there, while a prefix holding only folder markers is an empty
        "folder" (the S3 console makes one so). A whole bucket (``s3://b/``) is there
        once listed.

        Raises:
            NotFoundError (no such bucket), PermissionDeniedError, RetryableError.
        """
        prefix = directory_prefix(root)
        if not prefix:
            return True
        endpoint = self.endpoint(root)
        try:
            answer = endpoint.client.list_objects_v2(Bucket=root.bucket, Prefix=prefix, MaxKeys=1)
        except (ClientError, BotoCoreError) as err:
            raise _s3_error(
                err, endpoint, root.bucket, prefix, role="source", action="ListObjectsV2"
            ) from None
        return bool(answer.get("Contents"))

    def list_page(
        self,
        root: EndpointURL,
        after: str | None,
        limit: int,
        *,
        fence: Sequence[EndpointURL] = (),
    ) -> ListPage:
        """The objects under the prefix of ``root`` (``s3://b/run`` and ``s3://b/run/``
        both list ``run/...``; ``s3://b/`` the whole bucket): ListObjectsV2 with
        ``StartAfter`` = prefix + ``after``, as many requests of up to 1,000 keys as it
        takes to fill ``limit`` (:func:`keepalive` between them). Names are the keys minus
        the prefix, byte for byte (botocore asks for ``EncodingType=url`` and decodes, so
        keys with control characters survive the XML). Folder markers (0-byte keys
        ending in ``/``) are skipped. Order: the store's, strictly increasing and
        consistent with its ``StartAfter``: UTF-8 byte order on AWS S3; file-tree order
        (``/`` before every other character) on stores that keep keys in a file tree
        (SeaweedFS, whose keys are also paths: it stores ``a//b`` as ``a/b``). A prefix with no keys is an empty listing: S3 has
        no directories. Memory: one response (1,000 keys) + one page. ``fence`` is
        unused: S3 has no symbolic links (a destination prefix inside the source
        prefix is refused before a dataset starts: ``make_dataset_request``).

        Raises:
            NotFoundError (no such bucket), PermissionDeniedError, RetryableError.
            RetryableError: the store answered keys out of order (no usable cursor).
        """
        if limit < 1:
            raise PermanentError(f"a listing page holds at least 1 entry, not {limit}")
        prefix = directory_prefix(root)
        endpoint = self.endpoint(root)
        entries: list[ListEntry] = []
        cursor = prefix + after if after is not None else None
        while True:
            answer = _listed(
                endpoint, root.bucket, prefix, cursor, min(1000, limit - len(entries)), "source"
            )
            for item in answer.get("Contents") or []:
                key = item["Key"]
                if not key.startswith(prefix) or (
                    cursor is not None and not _listed_after(key, cursor)
                ):
                    raise RetryableError(
                        f"listing {root}: the store answered key {key!r} after {cursor!r}, "
                        "out of order (S3 lists keys in increasing order after StartAfter)"
                    )
                cursor = key
                name = key[len(prefix) :]
                size = int(item.get("Size") or 0)
                if not name or (name.endswith("/") and size == 0):
                    continue  # the prefix's own marker, or a folder marker
                modified = item.get("LastModified")
                entries.append(
                    ListEntry(
                        name=name,
                        size=size,
                        modified_at=modified.timestamp() if modified is not None else None,
                    )
                )
            if not answer.get("IsTruncated"):
                return ListPage(entries=entries)
            if len(entries) >= limit:
                return ListPage(entries=entries, next_after=entries[-1].name)
            keepalive()

    def listed_objects(
        self, root: EndpointURL, names: Sequence[str], max_keys: int
    ) -> dict[str, ObjectInfo] | None:
        """The objects of ``names`` under ``root``'s prefix that exist, each with the
        info a HeadObject would give but its checksum (size, ETag as the version,
        ``LastModified``; :func:`_object_info` of the listed item): ListObjectsV2 from just
        before the first of them to just past the last (pages of up to 1,000 keys,
        :func:`keepalive` between them), instead of a HeadObject each.

        The store lists in UTF-8 byte order (AWS) or in file-tree order (``/`` first:
        SeaweedFS, which walks its directories: a ``StartAfter`` naming a directory
        skips all of it), so the range is taken to hold in both: ``Prefix`` is the
        deepest directory holding every name, ``StartAfter`` (in it) a proper prefix
        of every name's remainder there, one character short, so never a directory
        any name is in; the listing stops at a key past the last name in both orders
        (so past it in the store's). Folder markers are keys like any other here (a
        name never ends in ``/``).

        Returns:
            Name -> info of those found; None when the range holds more
            than ``max_keys`` keys (other objects between the names: a stat each is
            cheaper) or ``names`` is empty.

        Raises:
            NotFoundError (no such bucket), PermissionDeniedError (no s3:ListBucket),
            RetryableError.
        """
        if not names:
            return None
        prefix = directory_prefix(root)

        def tree(name: str) -> bytes:
            return name.encode("utf-8").replace(b"/", b"\0")

        last_bytes = max(n.encode("utf-8") for n in names)
        last_tree = max(tree(n) for n in names)
        common = os.path.commonprefix(list(names))  # a prefix of every name
        directory = common[: common.rfind("/") + 1]
        rest = common[len(directory) :][:-1]  # no "/"; shorter than every name's
        prefix += directory
        names = [name[len(directory) :] for name in names]
        last_bytes = last_bytes[len(directory.encode("utf-8")) :]
        last_tree = last_tree[len(directory.encode("utf-8")) :]
        wanted = set(names)
        found: dict[str, ObjectInfo] = {}
        endpoint = self.endpoint(root)
        cursor = prefix + rest if rest else None
        listed = 0
        while True:
            answer = _listed(endpoint, root.bucket, prefix, cursor, 1000, "destination")
            contents = answer.get("Contents") or []
            for item in contents:
                key = item["Key"]
                if not key.startswith(prefix):
                    continue
                name = key[len(prefix) :]
                if name.encode("utf-8") > last_bytes and tree(name) > last_tree:
                    return found
                if name in wanted:
                    found[directory + name] = _object_info(item, int(item.get("Size") or 0))
            listed += len(contents)
            if not answer.get("IsTruncated"):
                return found
            if not contents or listed > max_keys:
                return None  # (a truncated page without keys: no cursor to go on)
            cursor = contents[-1]["Key"]
            keepalive()

    # -- destination

    def check_destination(self, url: EndpointURL) -> None:
        """The key names an object (not ``dir/``) and the bucket exists (HeadBucket;
        some stores would silently create a missing bucket on the first PUT). A bucket
        found is not asked about again for a minute
        (``_BUCKET_TTL_S``): a dataset writes many objects into one bucket."""
        if not url.key or url.key.endswith("/"):
            raise InvalidURL(
                f"destination {url} ends with '/': S3 keys ending in '/' are folder markers; "
                "name the object to write, e.g. s3://BUCKET/PREFIX/NAME"
            )
        self._check_bucket(url)

    def check_destination_root(self, root: EndpointURL) -> None:
        """The bucket of the destination prefix ``root`` exists (HeadBucket, as
        :meth:`check_destination`).

        Raises:
            DestinationMissingError: no such bucket (named).
            PermissionDeniedError, RetryableError: as the store reports.
        """
        self._check_bucket(root)

    def _check_bucket(self, url: EndpointURL) -> None:
        """HeadBucket of ``url``'s bucket (a bucket found is not asked about again for
        ``_BUCKET_TTL_S``); a 403 passes (maybe only s3:ListBucket is missing)."""
        endpoint = self.endpoint(url)
        seen = (url.params.get("profile"), url.bucket)
        if self._bucket_known(seen):
            return
        try:
            endpoint.client.head_bucket(Bucket=url.bucket)
            self._bucket_seen(seen)
        except ClientError as err:
            if _status(err) == 404:
                raise _s3_error(
                    ClientError({"Error": {"Code": "NoSuchBucket"}}, "HeadBucket"),
                    endpoint,
                    url.bucket,
                    None,
                    role="destination",
                    action="HeadBucket",
                ) from None
            if _status(err) in (301, 400):
                raise _s3_error(
                    err, endpoint, url.bucket, None, role="destination", action="HeadBucket"
                ) from None
            # 403: maybe only s3:ListBucket is missing; the write itself will tell.
        except BotoCoreError as err:
            raise _s3_error(
                err, endpoint, url.bucket, None, role="destination", action="HeadBucket"
            ) from None

    def _bucket_known(self, seen: tuple[str | None, str]) -> bool:
        """Whether HeadBucket found the bucket ``seen`` (profile, bucket) within the
        last ``_BUCKET_TTL_S`` seconds."""
        with self._lock:
            found = self._buckets.get(seen)
        return found is not None and 0 <= time.monotonic() - found <= _BUCKET_TTL_S

    def _bucket_seen(self, seen: tuple[str | None, str]) -> None:
        """Remember that HeadBucket found the bucket ``seen`` (profile, bucket) now."""
        with self._lock:
            self._buckets[seen] = time.monotonic()

    def put_whole(self, url: EndpointURL, data: bytes, crc32c: str, marker: str) -> str:
        """One PutObject carrying ``x-amz-checksum-crc32c``: S3 (and SeaweedFS) compute
        the CRC32C of the body received and reject it (``BadDigest``, nothing stored)
        when it differs; a PutObject is atomic (the key shows the old object or the
        whole new one, never a part). Sent by :mod:`staccato.endpoints.s3.lean` where it
        applies (a plain ``200`` answer), else (or when that answers otherwise) by boto3.
        The object carries ``marker`` as a multipart session's object does.

        A store not known to answer our CRC32C (the first PutObjects to an endpoint,
        and every one to a store that answered none: moto, which neither checks nor
        keeps it) also gets the CRC32C and the MD5 of the body in the object's user
        metadata (:data:`META_CRC32C`, :data:`META_MD5`): its answer's ETag, the MD5
        it computed over the body it received, then proves the bytes arrived whole
        (no read-back), and a later ``--sync-level checksum`` finds the CRC32C in the
        HeadObject (:func:`vouched_metadata_crc32c`: only while the ETag still equals
        that MD5). A store that answers our CRC32C keeps one itself: no MD5 is
        computed for it (~0.15 ms of CPU per 100 KB).

        Returns:
            The CRC32C the store answered (8 hex digits); else ``crc32c`` when its ETag
            is the MD5 of ``data`` (the same bytes are stored); else ``""`` (the
            caller reads the object back).

        Raises:
            RetryableError: ``BadDigest`` (the body was damaged on the way) or a transient
                failure; PermissionDeniedError, NotFoundError (no such bucket).
        """
        content_type = mimetypes.guess_type(url.key, strict=False)[0] or "application/octet-stream"
        endpoint = self.endpoint(url)
        store = (url.params.get("profile"), endpoint.endpoint_url)
        metadata = {MARKER: marker}
        md5 = ""
        if not self._answers_crc32c.get(store, False):
            md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
            metadata[META_CRC32C] = crc32c
            metadata[META_MD5] = md5
        lean = self._lean_for(url, endpoint)
        if lean is not None:
            fields = lean.put(
                url.bucket,
                url.key,
                data,
                {
                    "content-type": content_type,
                    "x-amz-checksum-crc32c": _crc_b64(int(crc32c, 16)),
                    **{f"x-amz-meta-{name}": value for name, value in metadata.items()},
                },
            )
            if fields is not None:
                return self._vouched(store, fields, crc32c, md5)
        # a dataset batch's write: under its lease (the lean path checks right before each
        # send; botocore's attempts each check too: client._fenced_send)
        write_fence()
        try:
            answer = endpoint.client.put_object(
                Bucket=url.bucket,
                Key=url.key,
                Body=data,
                ContentLength=len(data),
                ChecksumCRC32C=_crc_b64(int(crc32c, 16)),
                ContentType=content_type,
                Metadata=metadata,
            )
        except (ClientError, BotoCoreError) as err:
            raise _s3_error(
                err, endpoint, url.bucket, url.key, role="destination", action="PutObject"
            ) from None
        return self._vouched(store, answer, crc32c, md5)

    def _vouched(
        self, store: tuple[str | None, str], answer: Mapping[str, Any], crc32c: str, md5: str
    ) -> str:
        """:meth:`put_whole`'s result from the PutObject's answer; remembers whether
        ``store`` (profile, endpoint URL) answers our CRC32C."""
        answered = _b64_to_hex(answer.get("ChecksumCRC32C"))
        self._answers_crc32c[store] = bool(answered)
        if answered:
            return answered
        etag = str(answer.get("ETag") or "").strip('"')
        return crc32c if md5 and etag == md5 else ""

    def open_session(
        self, url: EndpointURL, size: int, chunk_size: int, session_key: str
    ) -> WriteSession:
        """CreateMultipartUpload, for every non-empty object (even one part): nothing
        reaches the destination key before publish. A 0-byte object's session creates
        nothing (its one empty PutObject is sent at publish)."""
        content_type = mimetypes.guess_type(url.key, strict=False)[0] or "application/octet-stream"
        data = {"marker": session_key, "content_type": content_type}
        if size == 0:
            return WriteSession(
                url=url.canonical,
                size=size,
                chunk_size=chunk_size,
                session_id=f"put:{session_key}",
                data={**data, "mode": "put", **self._key_condition(url)},
            )
        endpoint = self.endpoint(url)
        asked_at = time.time()
        try:
            created = endpoint.client.create_multipart_upload(
                Bucket=url.bucket,
                Key=url.key,
                ContentType=content_type,
                Metadata={MARKER: session_key},
                ChecksumAlgorithm="CRC32C",
                ChecksumType="FULL_OBJECT",
            )
        except (ClientError, BotoCoreError) as err:
            raise _s3_error(
                err,
                endpoint,
                url.bucket,
                url.key,
                role="destination",
                action="CreateMultipartUpload",
            ) from None
        # recorded before anything else can fail: a batch heartbeats it, so the upload
        # is found again by its id if this worker dies before it ends
        session_opened(url.canonical, created["UploadId"])
        log.info("s3://%s/%s: multipart upload started (%d bytes)", url.bucket, url.key, size)
        if created.get("ResponseMetadata", {}).get("RetryAttempts"):
            # botocore sent the request again (a lost answer, a reset connection): the
            # store may have started an upload for an earlier send, which no one would
            # find again (ListMultipartUploads shows no metadata): abort those. The key
            # is this transfer's under its destination's lock
            self.abort_orphaned_sessions(
                [url],
                asked_at - ORPHAN_CLOCK_SLACK_S,
                time.time() + ORPHAN_CLOCK_SLACK_S,
                keep={created["UploadId"]},
            )
        return WriteSession(
            url=url.canonical,
            size=size,
            chunk_size=chunk_size,
            session_id=created["UploadId"],
            data={**data, "mode": "multipart"},
        )

    def open_writer(self, session: WriteSession) -> ChunkWriter:
        return S3ChunkWriter(self, session)

    def _key_condition(self, url: EndpointURL) -> dict[str, str]:
        """What a 0-byte object's publish requires of its key (kept in the session):
        ``{"if_match": ETAG}`` (the object at the key when the session was opened),
        ``{"if_none_match": "*"}`` (no object then), or nothing when HeadObject cannot
        tell (denied: the PutObject is sent without a condition, as before 0.13.0).
        A multipart upload needs none: a late CompleteMultipartUpload of an upload
        another attempt completed gets ``NoSuchUpload``; one empty PutObject would
        replace whatever is at the key."""
        endpoint = self.endpoint(url)
        try:
            head = endpoint.client.head_object(Bucket=url.bucket, Key=url.key)
        except ClientError as err:
            return {"if_none_match": "*"} if _status(err) == 404 else {}
        except BotoCoreError:
            return {}
        etag = head.get("ETag")
        return {"if_match": str(etag)} if etag else {}

    def _put_empty(self, target: _UploadDestination) -> Mapping[str, Any] | None:
        """The 0-byte object's one PutObject, conditional on the key being as the
        session found it (S3's conditional writes: ``If-Match`` / ``If-None-Match``,
        answered ``412 PreconditionFailed`` otherwise). A publish whose PutObject is
        late (its process was frozen while another attempt published and a newer
        object replaced it) thus never puts the old empty object back; a refused put
        whose key holds this session's object is an earlier attempt's success.

        Returns:
            HeadObject of the published object, None when it cannot be read yet.

        Raises:
            WriteSessionLost: the key changed since the session was opened (the
                workflow opens a new session, which replaces it if this transfer is
                still the current one).
        """
        session = target.session
        condition: dict[str, str] = {}
        if session.data.get("if_match"):
            condition["IfMatch"] = session.data["if_match"]
        elif session.data.get("if_none_match"):
            condition["IfNoneMatch"] = session.data["if_none_match"]
        request = {
            "Bucket": target.bucket,
            "Key": target.key,
            "Body": b"",
            "ContentLength": 0,
            "ChecksumCRC32C": _EMPTY_CRC32C,
            "ContentType": session.data["content_type"],
            "Metadata": {MARKER: target.marker},
        }
        client = target.endpoint.client
        try:
            try:
                client.put_object(**request, **condition)
            except ClientError as err:
                if not condition or _code(err) not in ("NotImplemented", "InvalidArgument"):
                    raise
                # a store without conditional writes: as before them
                client.put_object(**request)
        except ClientError as err:
            if _code(err) == "PreconditionFailed" or _status(err) == 412:
                head = self._own_object(target)
                if head is not None:
                    return head
                raise WriteSessionLost(
                    f"s3://{target.bucket}/{target.key} changed since its write session "
                    "was opened (another writer, or a newer transfer after this one); "
                    "this 0-byte object was not put over it"
                ) from None
            raise target.error(err, "PutObject") from None
        except BotoCoreError as err:
            raise target.error(err, "PutObject") from None
        return self._own_object(target)

    def _parts(
        self, target: _UploadDestination, client: Any = None, conflicts: set[int] | None = None
    ) -> dict[int, Mapping[str, Any]]:
        """ListParts, paged to the end (an upload with more than 1,000 parts spans pages;
        see :func:`staccato.endpoints.s3.parts.collect_parts`), with ``client`` (the
        endpoint's main client when None); part numbers listed twice with different
        ETags go into ``conflicts`` (given).

        Raises:
            RetryableError: the upload no longer exists.
        """
        client = client or target.endpoint.client

        def fetch(marker: int) -> Mapping[str, Any]:
            try:
                return client.list_parts(
                    Bucket=target.bucket,
                    Key=target.key,
                    UploadId=target.upload_id,
                    MaxParts=LIST_PARTS_PAGE,
                    PartNumberMarker=marker,
                )
            except ClientError as err:
                if _code(err) == "NoSuchUpload":
                    raise target.gone() from None
                raise target.error(err, "ListParts") from None
            except BotoCoreError as err:
                raise target.error(err, "ListParts") from None

        return collect_parts(fetch, conflicts=conflicts)

    def _own_object(self, target: _UploadDestination) -> Mapping[str, Any] | None:
        """HeadObject of the destination if it is this session's object, else None."""
        try:
            head = target.endpoint.client.head_object(
                Bucket=target.bucket, Key=target.key, ChecksumMode="ENABLED"
            )
        except ClientError as err:
            if _status(err) == 404:
                return None
            raise _explain_head(
                err,
                target.endpoint,
                target.bucket,
                target.key,
                role="destination",
                action="HeadObject",
            ) from None
        except BotoCoreError as err:
            raise target.error(err, "HeadObject") from None
        if (head.get("Metadata") or {}).get(MARKER) != target.marker:
            return None
        return head

    def durable_chunks(
        self, session: WriteSession, first_chunk: int = 0, end_chunk: int | None = None
    ) -> dict[int, str]:
        """Parts S3 holds whose size is the chunk's: index -> what ListParts says of the
        part (:func:`_listed_part`: ``part:<CRC32C hex or "">:<ETag>``), never a
        checksum. A listed part is not shown to hold this transfer's bytes: anyone with
        the upload id can replace it (same part number, other bytes of the same size)
        while no worker runs, and its listed CRC32C (AWS) is the stored bytes', not the
        source's. So the stream re-reads every listed chunk from the source and
        :meth:`durable_chunk_matches` compares it with the part; a part that does not
        match, or that nothing listed can vouch for, is uploaded again (a tester's
        replaced part was completed into the object before)."""
        target = self.target(session)
        target.check_not_legacy()
        if target.empty_put:
            return {}
        chunks = chunk_count(session.size, session.chunk_size)
        durable: dict[int, str] = {}
        for number, part in self._parts(target).items():
            index = number - 1
            if (
                0 <= index < chunks
                and int(part.get("Size", -1))
                == chunk_bounds(index, session.size, session.chunk_size)[1]
            ):
                durable[index] = _listed_part(part)
        return durable

    def durable_chunk_matches(
        self, session: WriteSession, index: int, data: memoryview, reported: str
    ) -> bool:
        """Whether part ``index + 1``, as ListParts listed it (``reported``, from
        :meth:`durable_chunks`), holds ``data`` (the chunk read from the source):

        * its ``ChecksumCRC32C`` where the store lists one (AWS S3: every part of an
          upload created with ``ChecksumAlgorithm=CRC32C``) equals the CRC32C of
          ``data``;
        * else its ETag, where it is a plain MD5 (32 hex digits: the MD5 of the part's
          bytes on AWS without SSE-KMS/SSE-C, SeaweedFS, moto, MinIO), equals the MD5
          of ``data``;
        * else (no CRC32C and an ETag that is no MD5) nothing vouches for the part:
          False, it is uploaded again (S3 cannot read an unpublished part back).

        Any other ``reported`` (a part this attempt copied server-side: ``""``) is
        this attempt's own and True. The rule's source: a tester's part replaced with
        boto3 ``upload_part`` while the service was down was completed into the
        object (docs/s3.md, "Resume")."""
        if not reported.startswith(_LISTED):
            return True
        crc, _, etag = reported[len(_LISTED) :].partition(":")
        if crc:
            return bool(f"{_crc32c.crc32c(data):08x}" == crc)
        if _is_md5_hex(etag):
            return hashlib.md5(data, usedforsecurity=False).hexdigest() == etag
        return False

    def listed_tag(self, reported: str) -> str | None:
        """The ETag (no quotes, lower case) in what :meth:`durable_chunks` reported of
        a part (``part:<CRC32C>:<ETag>``); None for anything else or no ETag."""
        if not reported.startswith(_LISTED):
            return None
        return reported[len(_LISTED) :].partition(":")[2] or None

    def publish(
        self, session: WriteSession, parts: Sequence[tuple[int, int, str]] | None = None
    ) -> None:
        """CompleteMultipartUpload (or, for a 0-byte object, one empty PutObject), then
        read the object's size back (an S3-compatible store is not trusted to have stored
        what it acknowledged). Idempotent. Published: the upload is no longer open
        (:func:`~staccato.endpoints.base.session_ended`).

        ``parts``: (first chunk, end chunk, digest) per segment whose stream recorded
        the ETag of each part it uploaded or accepted on resume
        (:func:`~staccato.endpoints.base.parts_digest`). The digest of the same parts
        as ListParts lists them now must be the same, else a part was replaced under
        the upload after its stream ended (anyone holding the upload id can, with the
        same part number and size): the upload is never completed. The ETags listed
        are the ones sent with CompleteMultipartUpload, so a part replaced after this
        listing fails the completion (AWS, moto: ``InvalidPart``) rather than being
        completed. The rule's source: a tester's part replaced after every part was
        uploaded and before CompleteMultipartUpload was completed into the object,
        which replaced the good one at the key (README: a transfer that fails before
        publish keeps the old object).

        Raises:
            PermanentError: a part is missing or has the wrong size.
            WriteSessionLost: a part number is listed more than once with different
                ETags (SeaweedFS keeps a part replaced under the upload beside ours;
                which one the store would complete cannot be told), or a segment's
                parts are listed with ETags other than ``parts`` recorded, or
                CompleteMultipartUpload answers ``InvalidPart`` (a part replaced after
                the listing): never completed, the transfer copies again into a new
                upload."""
        self._publish(session, recorded=parts)
        session_ended(session.session_id)

    def _publish(
        self, session: WriteSession, recorded: Sequence[tuple[int, int, str]] | None = None
    ) -> None:
        target = self.target(session)
        client = target.endpoint.client
        if target.empty_put:
            if session.size > 0:
                # an older worker's single-PutObject session: published if its object is
                # there, else lost (copied again into a multipart upload)
                head = self._own_object(target)
                if head is None:
                    target.check_not_legacy()
            else:
                write_fence()  # a dataset batch publishes under its lease
                head = self._put_empty(target)
            if head is None:
                raise RetryableError(
                    f"s3://{target.bucket}/{target.key} is not readable right after PutObject"
                )
            self._check_size(target, head)
            return
        chunks = chunk_count(session.size, session.chunk_size)
        conflicts: set[int] = set()
        try:
            parts = self._parts(target, conflicts=conflicts)
        except UploadGone:
            head = self._own_object(target)
            if head is not None:  # completed by an earlier attempt of this activity
                self._check_size(target, head)
                return
            raise
        listed: list[dict[str, Any]] = []
        for index in range(chunks):
            part = parts.get(index + 1)
            length = chunk_bounds(index, session.size, session.chunk_size)[1]
            if part is None or int(part.get("Size", -1)) != length:
                missing = sum(1 for i in range(chunks) if (i + 1) not in parts)
                raise PermanentError(
                    f"refusing to publish s3://{target.bucket}/{target.key}: part {index + 1} "
                    f"is missing or has the wrong size ({missing} of {chunks} parts missing)"
                )
            entry = {"PartNumber": index + 1, "ETag": part["ETag"]}
            if part.get("ChecksumCRC32C"):
                entry["ChecksumCRC32C"] = part["ChecksumCRC32C"]
            listed.append(entry)
        twice = sorted(n for n in conflicts if n <= chunks)
        if twice:
            # a store that keeps every upload of a part number (SeaweedFS) lists a part
            # replaced under the upload beside ours: which one CompleteMultipartUpload
            # takes cannot be told, so this upload is never completed
            raise WriteSessionLost(
                f"refusing to publish s3://{target.bucket}/{target.key}: part(s) "
                f"{', '.join(map(str, twice[:5]))} of the multipart upload are listed more "
                "than once with different ETags (a part was replaced under the upload); "
                "copying again into a new upload"
            )
        replaced = _replaced_segments(recorded or (), listed, chunks)
        if replaced:
            # a part's ETag is not the one its stream uploaded or accepted: its bytes
            # are someone else's; nothing in an upload others write into is trusted,
            # so the transfer copies again into a new upload (a new upload id)
            first, end = replaced[0]
            raise WriteSessionLost(
                f"refusing to publish s3://{target.bucket}/{target.key}: "
                f"{len(replaced)} segment(s) of the multipart upload (first: parts "
                f"{first + 1}-{end}) list a part whose ETag is not the one its stream "
                "uploaded (a part was replaced under the upload); copying again into a new "
                "upload"
            )
        write_fence()  # a dataset batch publishes under its lease
        try:
            with assembling(len(listed)):  # may take minutes (status says so)
                client.complete_multipart_upload(
                    Bucket=target.bucket,
                    Key=target.key,
                    UploadId=target.upload_id,
                    MultipartUpload={"Parts": listed},
                )
        except ClientError as err:
            if _code(err) == "NoSuchUpload":
                head = self._own_object(target)
                if head is not None:
                    self._check_size(target, head)
                    return
                raise target.gone() from None
            if _code(err) == "InvalidPart" and recorded:
                # every part was listed with the ETag sent: one changed since the
                # listing (replaced under the upload); the store completed nothing
                raise WriteSessionLost(
                    f"refusing to publish s3://{target.bucket}/{target.key}: "
                    "CompleteMultipartUpload found a part whose ETag changed after it was "
                    "listed (a part was replaced under the upload); copying again into a "
                    "new upload"
                ) from None
            raise target.error(err, "CompleteMultipartUpload") from None
        except BotoCoreError as err:
            raise target.error(err, "CompleteMultipartUpload") from None
        head = self._own_object(target)
        if head is None:
            raise RetryableError(
                f"s3://{target.bucket}/{target.key} is not readable right after "
                "CompleteMultipartUpload"
            )
        self._check_size(target, head)

    def _check_size(self, target: _UploadDestination, head: Mapping[str, Any]) -> None:
        if int(head["ContentLength"]) != target.session.size:
            raise ChecksumMismatch(
                f"s3://{target.bucket}/{target.key} has {head['ContentLength']} bytes after "
                f"upload, expected {target.session.size}"
            )

    def abort_orphaned_sessions(
        self,
        urls: Iterable[EndpointURL],
        since: float,
        until: float,
        keep: Collection[str] = (),
    ) -> int:
        """ListMultipartUploads under the keys' common prefix (per bucket, at most
        ``_ORPHAN_LIST_PAGES`` pages of 1,000) and AbortMultipartUpload for each upload
        on exactly one of these keys initiated in ``[since, until]`` (the store's
        ``Initiated`` time, Unix seconds): a multipart upload cannot be found again by
        the marker in its metadata (ListMultipartUploads does not return metadata), so
        its key and start time identify it, under the caller's lock. Uploads on other
        keys under the prefix (a dataset's large files, running as their own
        transfers) are left alone. Errors are logged, not raised: the copy goes on.

        Returns:
            How many uploads were aborted.
        """
        wanted: dict[tuple[str, str | None], set[str]] = {}
        first: dict[tuple[str, str | None], EndpointURL] = {}
        for url in urls:
            group = (url.bucket, url.params.get("profile"))
            wanted.setdefault(group, set()).add(url.key)
            first.setdefault(group, url)
        aborted = 0
        for group, keys in wanted.items():
            bucket = group[0]
            endpoint = self.endpoint(first[group])
            client = endpoint.client
            prefix = os.path.commonprefix(sorted(keys))
            try:
                pages = client.get_paginator("list_multipart_uploads").paginate(
                    Bucket=bucket,
                    Prefix=prefix,
                    PaginationConfig={"MaxItems": 1000 * _ORPHAN_LIST_PAGES},
                )
                for page in pages:
                    for upload in page.get("Uploads", []):
                        initiated = upload["Initiated"].timestamp()
                        if upload["Key"] not in keys or not since <= initiated <= until:
                            continue
                        if upload["UploadId"] in keep:
                            continue
                        try:
                            client.abort_multipart_upload(
                                Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                            )
                        except ClientError as err:
                            if _code(err) != "NoSuchUpload":
                                raise
                        aborted += 1
                        log.info(
                            "s3://%s/%s: aborted the multipart upload an earlier attempt "
                            "left (initiated %.0f s before this attempt)",
                            bucket,
                            upload["Key"],
                            until - initiated,
                        )
            except (ClientError, BotoCoreError) as err:
                log.warning(
                    "s3://%s/%s: could not abort the multipart uploads an earlier attempt left: %s",
                    bucket,
                    prefix,
                    _scrub(str(err), endpoint),
                )
        return aborted

    def abort(self, session: WriteSession) -> None:
        """AbortMultipartUpload until ListParts says ``NoSuchUpload`` (a part upload in
        flight can outlive one abort). Idempotent. Never deletes or alters the object at
        the key: before publish it is the one that was there before (this session wrote
        nothing there), after publish it is the transfer's result; a 0-byte object's
        session has nothing to abort. Its requests use the endpoint's brief client
        (:attr:`~staccato.endpoints.s3.client._Endpoint.brief`): against a hung server
        an attempt gives up within seconds, not minutes, and the clean-up's retries
        stay within its window. Aborted (or gone): the upload is no longer open
        (:func:`~staccato.endpoints.base.session_ended`)."""
        self._abort(session)
        session_ended(session.session_id)

    def _abort(self, session: WriteSession) -> None:
        target = self.target(session)
        client = target.endpoint.brief
        if target.empty_put:
            return
        for _ in range(_ABORT_ROUNDS):
            try:
                client.abort_multipart_upload(
                    Bucket=target.bucket, Key=target.key, UploadId=target.upload_id
                )
            except ClientError as err:
                if _code(err) == "NoSuchBucket":
                    return  # the bucket, and every upload in it, is gone
                if _code(err) != "NoSuchUpload":
                    raise target.error(err, "AbortMultipartUpload") from None
            except BotoCoreError as err:
                raise target.error(err, "AbortMultipartUpload") from None
            try:
                remaining = self._parts(target, client)
            except (UploadGone, DestinationMissing):
                return
            log.info(
                "s3://%s/%s: %d parts still listed after abort; aborting again",
                target.bucket,
                target.key,
                len(remaining),
            )
            time.sleep(_ABORT_PAUSE_S)
        raise RetryableError(
            f"multipart upload of s3://{target.bucket}/{target.key} still lists parts after "
            f"{_ABORT_ROUNDS} aborts"
        )

    def object_checksum(
        self,
        url: EndpointURL,
        size: int,
        chunk_size: int,
        segments: Iterable[tuple[int, int]],
        algorithm: str,
        info: ObjectInfo | None = None,
    ) -> str:
        """The object's full-object CRC32C from its HeadObject (``ChecksumMode=ENABLED``;
        ``info`` when the caller has it, else asked): the store's, or the one Staccato
        stored in the object's metadata where the store's MD5 ETag vouches for it
        (:func:`_object_info`); otherwise (composite or no checksum, or SHA-256) the
        object is read back, pinned to that HeadObject's version. The ETag alone is
        never used as the checksum: a multipart ETag (``"...-N"``) is not an MD5 of
        the object."""
        if algorithm == "crc32c":
            info = info or self.stat(url)
            if info.extra.get("crc32c"):
                return info.extra["crc32c"]
        return super().object_checksum(url, size, chunk_size, segments, algorithm, info)


def _replaced_segments(
    parts: Iterable[tuple[int, int, str]], listed: Sequence[Mapping[str, Any]], chunks: int
) -> list[tuple[int, int]]:
    """The segments ``(first chunk, end chunk)`` of ``parts`` (first chunk, end chunk,
    :func:`~staccato.endpoints.base.parts_digest` the stream recorded) whose parts, as
    ``listed`` (CompleteMultipartUpload's ``Parts``, part ``i + 1`` at index ``i`` of
    ``chunks``), give another digest. A segment out of range counts as replaced (the
    record does not fit this upload)."""
    replaced: list[tuple[int, int]] = []
    for first, end, digest in parts:
        if not 0 <= first < end <= chunks:
            replaced.append((first, end))
            continue
        tags = (
            (index + 1, str(listed[index]["ETag"]).strip('"').lower())
            for index in range(first, end)
        )
        if parts_digest(tags) != digest:
            replaced.append((first, end))
    return sorted(replaced)
