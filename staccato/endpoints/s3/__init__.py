"""The ``s3`` endpoint: Amazon S3 and S3-compatible stores, with boto3.

Configuration is the worker's standard AWS configuration, exactly as the AWS CLI and
SDKs read it: environment variables (``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``,
``AWS_ENDPOINT_URL_S3`` ...), the shared config and credentials files, and profiles
(``s3://bucket/key?profile=NAME``; a profile's ``endpoint_url`` or ``services``
section points it at an S3-compatible store). Only bucket, key and profile *name*
travel through Temporal; keys and secrets stay on the worker.

An S3-compatible store on a custom endpoint: path-style addressing, and botocore's
``request_checksum_calculation`` / ``response_checksum_validation`` set to
``when_required`` (the SDK's default checksum trailers are refused or mangled by some
stores), unless the profile or environment sets them. Staccato sends its own
CRC32C per request in a plain ``x-amz-checksum-crc32c`` header instead, which the
store verifies (``BadDigest`` otherwise).

Source (GetObject): ranged GETs pinned to the ETag seen at stat time (``If-Match``)
and to the VersionId where the bucket is versioned; ``412 PreconditionFailed``, a
different ETag, a different total size or a missing key mean ``SourceChanged``. A 0-byte
object is never read (a ranged GET of it is ``416``).

Destination: nothing touches the destination key before publish, on any path, so a
cancel or a failure leaves the object that was there before intact:

* a non-empty object is always a multipart upload whose upload id is the write
  session, even when it fits in one part (a sole, or last, part may be smaller than
  5 MiB); chunk ``i`` is part ``i + 1``; publish is CompleteMultipartUpload, which
  makes the whole object appear at once; a resumed stream asks ListParts (paged past
  1,000 parts, tolerating a stuck page marker) which parts S3 already holds and sends only the others;
* a 0-byte object is one empty PutObject, sent at publish (a Complete with no parts
  is rejected), conditional on the key as the session found it (``If-Match`` /
  ``If-None-Match``: a late publish never puts it over a newer object);
* cancel or permanent failure aborts the upload, repeated until ListParts answers
  ``NoSuchUpload`` (a part upload still in flight can outlive one abort). Abort never
  deletes an object: whatever the key holds was either there before or published.

Objects Staccato writes carry ``x-amz-meta-staccato-transfer: <session key>``, so a
retried publish or abort recognises its own object. Content-Type is guessed from the
destination key (``mimetypes``), else ``application/octet-stream`` (the upload is
created before the source's own Content-Type is at hand).

S3 -> S3 on one endpoint with the same credentials: server-side copy (UploadPartCopy
per part), pinned with ``x-amz-copy-source-if-match``;
no object bytes pass through the worker. Across endpoints the bytes are streamed.

Integrity: every UploadPart carries the chunk's CRC32C (computed from the
source bytes), multipart uploads are created with ``ChecksumAlgorithm=CRC32C``,
``ChecksumType=FULL_OBJECT``, and verification compares the store's full-object
CRC32C (HeadObject ``ChecksumMode=ENABLED``) with the CRC32C combined from the
source-side chunk checksums. ETags are only ever version tokens: a multipart ETag
(``"...-N"``) is never taken for an MD5. Without a store checksum, verification
reads the object back. After publish the object's size is read back (an S3-compatible store
is not trusted to have stored what it acknowledged).

Errors: botocore's ``standard`` retry mode (unless configured otherwise) retries
throttling (``503 SlowDown``) and 5xx with exponential backoff and jitter; what is
still failing becomes a :class:`RetryableError`, so Temporal backs off further. A
throttling answer with ``Retry-After`` (RFC 9110 section 10.2.3; S3-compatible stores
send it) is not retried inside botocore: its delay goes to Temporal as the next
attempt's (``retry_after_s``, capped by the activities). Permanent errors
(``NoSuchBucket``, ``NoSuchKey``, ``AccessDenied``, ``InvalidAccessKeyId``,
``SignatureDoesNotMatch``, ``RequestTimeTooSkewed`` (the worker's clock), a bucket in
another region (``301 PermanentRedirect`` with ``x-amz-bucket-region``,
``AuthorizationHeaderMalformed``, ``IllegalLocationConstraintException``), an archived
object, a key over 1,024 bytes, an unusable AWS configuration ...) become
:class:`PermanentError` subclasses whose message names the bucket/key, the endpoint and
what to fix. Every text taken from botocore is scrubbed of the access key id, secret,
session token and request signatures before it reaches a message.

The driver contract these modules implement, and the invariants they keep, are in
``docs/architecture.md``; the user's view (configuration, permissions, limits) is in
``docs/s3.md``.

Modules, each one concern; each imports only modules above it in this list (and
:class:`S3Driver` for annotations only):

* :mod:`.parts`: S3 limits, part-size planning, ListParts paging (pure, no network);
* :mod:`.checksums`: CRC32C as S3 carries it (base64) and as Staccato does (hex);
* :mod:`.errors`: botocore exceptions -> Staccato errors, credential scrubbing,
  ``Retry-After``;
* :mod:`.client`: the boto3 client of a profile (settings for AWS vs. an
  S3-compatible store, credentials in use);
* :mod:`.read`: :class:`S3Reader`, ranged GETs pinned to one version;
* :mod:`.write`: :class:`S3ChunkWriter`, parts of a multipart upload (UploadPart,
  UploadPartCopy);
* :mod:`.driver`: :class:`S3Driver`, stat, write sessions (open, durable chunks,
  publish, abort) and the per-profile client cache.
"""

from __future__ import annotations

from staccato.endpoints.s3.checksums import _b64_to_hex as _b64_to_hex
from staccato.endpoints.s3.client import warm_imports
from staccato.endpoints.s3.driver import MARKER, S3Driver
from staccato.endpoints.s3.errors import _scrub as _scrub
from staccato.endpoints.s3.read import S3Reader
from staccato.endpoints.s3.write import S3ChunkWriter, UploadGone
from staccato.endpoints.s3.write import _ViewBody as _ViewBody

__all__ = ["MARKER", "S3ChunkWriter", "S3Driver", "S3Reader", "UploadGone", "warm_imports"]
