"""The ``s3`` endpoint: Amazon S3 and S3-compatible stores, with boto3.

Configuration is the worker's standard AWS configuration, exactly as the AWS CLI and
SDKs read it: environment variables (``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``,
``AWS_ENDPOINT_URL_S3`` ...), the shared config and credentials files, and profiles
(``s3://bucket/key?profile=NAME``; a profile's ``endpoint_url`` or ``services``
section points it at an S3-compatible store). Only bucket, key and profile *name*
travel through Temporal; keys and secrets stay on the worker.

Non-AWS endpoints (C6): path-style addressing, and botocore's
``request_checksum_calculation`` / ``response_checksum_validation`` set to
``when_required`` (the SDK's default checksum trailers are refused or mangled by some
stores), unless the profile or environment sets them. Staccato sends its own
CRC32C per request in a plain ``x-amz-checksum-crc32c`` header instead, which the
store verifies (``BadDigest`` otherwise).

Source (GetObject): ranged GETs pinned to the ETag seen at stat time (``If-Match``)
and to the VersionId where the bucket is versioned; ``412 PreconditionFailed``, a
different ETag, a different total size or a missing key mean ``SourceChanged``. A 0-byte
object is never read (a ranged GET of it is ``416``, C3).

Destination: nothing touches the destination key before publish, on any path, so a
cancel or a failure leaves the object that was there before intact:

* a non-empty object is always a multipart upload whose upload id is the write
  session, even when it fits in one part (a sole, or last, part may be smaller than
  5 MiB); chunk ``i`` is part ``i + 1``; publish is CompleteMultipartUpload, which
  makes the whole object appear at once; a resumed stream asks ListParts (paged, C4)
  which parts S3 already holds and sends only the others;
* a 0-byte object is one empty PutObject, sent at publish (a Complete with no parts
  is rejected, C3);
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
(``"...-N"``) is never taken for an MD5 (C7). Without a store checksum, verification
reads the object back. After publish the object's size is read back (C6).

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
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import logging
import mimetypes
import os
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3
import botocore.session
import crc32c as _crc32c
import urllib3.exceptions
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    IncompleteReadError,
    InvalidConfigError,
    InvalidEndpointConfigurationError,
    InvalidRetryConfigurationError,
    InvalidS3AddressingStyleError,
    LoginError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
    RefreshWithMFAUnsupportedError,
    ResponseStreamingError,
    SSLError,
    SSOError,
    UnknownSignatureVersionError,
    UnsupportedSignatureVersionError,
    ValidationError,
)

from staccato.endpoints.base import ChunkWriter, Driver, Reader, keepalive
from staccato.endpoints.s3_plan import (
    LIST_PARTS_PAGE,
    MAX_KEY_BYTES,
    collect_parts,
    plan_part_size,
)
from staccato.errors import (
    ChecksumMismatch,
    DestinationMissing,
    IncompleteRead,
    InvalidURL,
    NotFound,
    PermanentError,
    PermissionDenied,
    RetryableError,
    SourceChanged,
    StaccatoError,
    WriteSessionLost,
)
from staccato.models import ObjectInfo, WriteSession
from staccato.plan import chunk_bounds, chunk_count
from staccato.urls import EndpointURL, parse_url

log = logging.getLogger("staccato.s3")

#: user-metadata key marking objects written by a Staccato session
MARKER = "staccato-transfer"
_EMPTY_CRC32C = base64.b64encode(b"\0\0\0\0").decode()
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_AWS_HOST = re.compile(r"(^|\.)amazonaws\.com(\.cn)?$")
_ABORT_ROUNDS = 5
_ENDPOINT_TTL_S = 60.0  # seconds a profile's client (and credentials) are reused
_ABORT_PAUSE_S = 0.5
_SEND_PIECE = 1 << 20  # bytes handed to the socket per write while sending a chunk
#: the IAM permission each S3 call needs (for AccessDenied messages)
_PERMISSIONS = {
    "HeadObject": "s3:GetObject",
    "GetObject": "s3:GetObject",
    "HeadBucket": "s3:ListBucket",
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "UploadPartCopy": "s3:PutObject (and s3:GetObject on the source)",
    "ListParts": "s3:ListMultipartUploadParts",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
}
_RETRYABLE_CODES = {
    "SlowDown",
    "ServiceUnavailable",
    "InternalError",
    "RequestTimeout",
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "TooManyRequests",
    "TooManyRequestsException",
    "OperationAborted",
    "BadDigest",
    "XAmzContentChecksumMismatch",
    "XAmzContentSHA256Mismatch",
    "InvalidDigest",
    "IncompleteBody",
    "RequestTimeoutException",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
}
#: botocore errors of the worker's configuration (profile, environment): permanent
_CONFIG_ERRORS = (
    NoRegionError,
    InvalidConfigError,
    InvalidEndpointConfigurationError,
    InvalidRetryConfigurationError,
    InvalidS3AddressingStyleError,
    UnknownSignatureVersionError,
    UnsupportedSignatureVersionError,
    ValidationError,
    ProfileNotFound,
)
#: throttling answers whose ``Retry-After`` header (RFC 9110 section 10.2.3) is honoured
_THROTTLING_STATUS = (429, 503)
#: query parameters and headers of signed requests that carry credentials or signatures
_SECRET_PARAMS = re.compile(
    r"(?i)((?:X-Amz-(?:Credential|Signature|Security-Token)|AWSAccessKeyId|Signature|"
    r"x-amz-security-token|Credential)\s*[=:]\s*)[^&\s,;'\"]+"
)
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]+@")


# ---------------------------------------------------------------------------- checksums


def _crc_b64(value: int) -> str:
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
    return len(value) == 8 and all(c in "0123456789abcdef" for c in value)


# ---------------------------------------------------------------------------- endpoints


@dataclass(frozen=True)
class _Endpoint:
    """One profile's client, created once per process. Never logged or serialised."""

    client: Any = field(repr=False)
    endpoint_url: str
    is_aws: bool
    #: access key id: compared in-process (server-side copy), never shown
    identity: str = field(repr=False)
    profile: str | None
    #: the region requests are signed for
    region: str = ""
    #: botocore's credentials object, only to scrub its values out of messages
    credentials: Any = field(default=None, repr=False)

    @property
    def where(self) -> str:
        """Where requests go, for messages (no credentials)."""
        source = (
            f"profile {self.profile!r}"
            if self.profile
            else "the worker's default AWS configuration"
        )
        url = _URL_USERINFO.sub(r"\1***@", self.endpoint_url)
        return f"{url} ({source})"

    def secrets(self) -> list[str]:
        """The credential values in use (access key id, secret, session token), read
        without triggering a refresh; for :func:`_scrub` only."""
        values = [self.identity]
        if self.credentials is not None:
            found = vars(self.credentials)
            for name in (
                "access_key",
                "secret_key",
                "token",
                "_access_key",
                "_secret_key",
                "_token",
            ):
                if isinstance(found.get(name), str):
                    values.append(found[name])
        return [v for v in values if v and len(v) >= 8]  # not a short test name

    @property
    def credentials_hint(self) -> str:
        if self.profile:
            return (
                f"aws_access_key_id / aws_secret_access_key of profile {self.profile!r} "
                "in the worker's ~/.aws/credentials (or AWS_SHARED_CREDENTIALS_FILE)"
            )
        return (
            "the worker's AWS credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, "
            "AWS_PROFILE, or ~/.aws/credentials)"
        )


def _scrub(text: str, endpoint: _Endpoint | None) -> str:
    """``text`` without credentials: the endpoint's access key id, secret and session
    token, signed-request parameters (``X-Amz-Signature=``, ``X-Amz-Credential=``,
    ``X-Amz-Security-Token=``, ``Signature=``, ``AWSAccessKeyId=``) and URL user info."""
    if endpoint is not None:
        for secret in endpoint.secrets():
            text = text.replace(secret, "***")
    text = _SECRET_PARAMS.sub(r"\1***", text)
    return _URL_USERINFO.sub(r"\1***@", text)


class _RetryAfter(BotoCoreError):
    """A throttling answer (429, 503, ``SlowDown``) with a ``Retry-After`` header: not
    retried inside botocore (whose backoff ignores the header), but handed to Temporal
    as the next attempt's delay (``RetryableError.retry_after_s``)."""

    fmt = "throttled ({reason}); retry after {seconds} s"

    def __init__(self, *, seconds: float, reason: str) -> None:
        super().__init__(seconds=seconds, reason=reason)
        self.seconds = seconds
        self.reason = reason


def _retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delay-seconds or an HTTP-date,
    RFC 9110 section 10.2.3), at least 0; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _honour_retry_after(response: Any = None, **_: Any) -> None:
    """``needs-retry`` handler, registered before botocore's own retry handler: a
    throttling answer carrying ``Retry-After`` stops botocore's retries and becomes
    :class:`_RetryAfter` (the activity then waits as asked, capped by the activity's
    bound, instead of botocore's few-second backoff).

    Raises:
        _RetryAfter: the answer was a 429 / 503 / SlowDown with ``Retry-After``.
    """
    if not response or response[0] is None:
        return
    http_response, parsed = response
    code = str((parsed or {}).get("Error", {}).get("Code", ""))
    if http_response.status_code not in _THROTTLING_STATUS and code != "SlowDown":
        return
    seconds = _retry_after_s(http_response.headers.get("retry-after"))
    if seconds is not None:
        raise _RetryAfter(seconds=seconds, reason=f"{http_response.status_code} {code}".rstrip())


def _configured(scoped: Mapping[str, Any], name: str, env: str) -> Any:
    """A setting the user configured (environment or profile), or None."""
    return os.environ.get(env) or scoped.get(name)


def _make_endpoint(profile: str | None) -> _Endpoint:
    """Build the boto3 client of ``profile`` (None: the default chain).

    Raises:
        PermanentError: the profile does not exist on this worker, or its settings
            (region, endpoint_url, retry mode...) are not usable.
    """
    try:
        return _build_endpoint(profile)
    except PermanentError:
        raise
    except (BotoCoreError, ValueError) as err:
        where = f"AWS profile {profile!r}" if profile else "the worker's default AWS configuration"
        raise PermanentError(
            f"{where} cannot make an S3 client: {type(err).__name__}: "
            f"{_scrub(str(err), None)}; fix it in the worker's ~/.aws/config (or the AWS_* "
            "environment variables)"
        ) from None


def _build_endpoint(profile: str | None) -> _Endpoint:
    try:
        core = botocore.session.Session(profile=profile)
        scoped = core.get_scoped_config()
    except ProfileNotFound:
        raise PermanentError(
            f"AWS profile {profile!r} (from ?profile= in the URL) is not configured on this "
            "worker: add it to the worker's ~/.aws/config (or AWS_CONFIG_FILE)"
        ) from None
    # Resolve the endpoint the way boto3 does (AWS_ENDPOINT_URL_S3, profile
    # endpoint_url / services section, else AWS) before choosing the client settings.
    session = boto3.session.Session(botocore_session=core)
    probe = session.client("s3")
    endpoint_url = probe.meta.endpoint_url
    probe.close()
    host = re.sub(r"^[a-z]+://", "", endpoint_url).split("/")[0].split(":")[0].lower()
    is_aws = bool(_AWS_HOST.search(host))
    scoped_s3 = scoped.get("s3") or {}
    s3_options: dict[str, Any] = {}
    if "payload_signing_enabled" not in scoped_s3:
        # No SHA-256 pass over every body (x-amz-content-sha256: UNSIGNED-PAYLOAD):
        # each PutObject/UploadPart carries its CRC32C, which the store verifies.
        s3_options["payload_signing_enabled"] = False
    if not is_aws and "addressing_style" not in scoped_s3:
        s3_options["addressing_style"] = "path"  # C6: no bucket DNS names off AWS
    settings: dict[str, Any] = {
        "s3": s3_options,
        "connect_timeout": 10,
        "read_timeout": 60,
        "max_pool_connections": 16,
        "retries": {
            "mode": _configured(scoped, "retry_mode", "AWS_RETRY_MODE") or "standard",
            # total attempts, like AWS_MAX_ATTEMPTS
            "total_max_attempts": int(_configured(scoped, "max_attempts", "AWS_MAX_ATTEMPTS") or 5),
        },
        "user_agent_extra": "staccato",
    }
    if not is_aws:
        for name, env in (
            ("request_checksum_calculation", "AWS_REQUEST_CHECKSUM_CALCULATION"),
            ("response_checksum_validation", "AWS_RESPONSE_CHECKSUM_VALIDATION"),
        ):
            settings[name] = _configured(scoped, name, env) or "when_required"
    client = session.client("s3", config=Config(**settings))
    client.meta.events.register_first("needs-retry.s3", _honour_retry_after)
    credentials: Any = None
    try:
        credentials = session.get_credentials()
        identity = credentials.get_frozen_credentials().access_key if credentials else ""
    except BotoCoreError:  # the first request reports it, with a message
        identity = ""
    return _Endpoint(
        client,
        endpoint_url,
        is_aws,
        identity,
        profile,
        region=client.meta.region_name or "",
        credentials=credentials,
    )


# ---------------------------------------------------------------------------- errors


def _code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def _status(err: ClientError) -> int:
    return int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def _s3_error(
    err: Exception, endpoint: _Endpoint, bucket: str, key: str | None, *, role: str, action: str
) -> StaccatoError:
    """Map a botocore exception to a Staccato error naming the object and the fix.

    ``role`` is ``"source"`` or ``"destination"``; ``action`` the S3 API call. Every
    text taken from botocore passes :func:`_scrub`, so no access key id, secret,
    session token or signature reaches a message.
    """
    mapped = _classify(err, endpoint, bucket, key, role=role, action=action)
    cleaned = _scrub(str(mapped), endpoint)
    if cleaned != str(mapped):
        mapped.args = (cleaned,)
    return mapped


def _classify(
    err: Exception, endpoint: _Endpoint, bucket: str, key: str | None, *, role: str, action: str
) -> StaccatoError:
    what = f"s3://{bucket}/{key}" if key is not None else f"bucket {bucket!r}"
    if isinstance(err, _RetryAfter):
        return RetryableError(
            f"{action} of {what}: {endpoint.where} is throttling ({err.reason}) and asked to "
            f"retry after {err.seconds:g} s",
            retry_after_s=err.seconds,
        )
    if isinstance(err, (NoCredentialsError, PartialCredentialsError)):
        return PermissionDenied(
            f"no AWS credentials for {what}: configure {endpoint.credentials_hint}"
        )
    if isinstance(err, (SSOError, LoginError, RefreshWithMFAUnsupportedError)):
        return PermissionDenied(
            f"{action} of {what}: the worker's AWS login cannot give credentials "
            f"({type(err).__name__}: {err}); log in again on the worker (aws sso login / "
            f"aws login) or configure {endpoint.credentials_hint}"
        )
    if isinstance(err, (IncompleteReadError, ResponseStreamingError)):
        return IncompleteRead(f"{action} of {what} broke mid-body: {err}")
    if isinstance(err, SSLError) and "CERTIFICATE_VERIFY_FAILED" in str(err):
        return PermanentError(
            f"{action} of {what}: the TLS certificate of {endpoint.where} is not trusted "
            f"({err}); give the worker the CA that signed it (AWS_CA_BUNDLE, or ca_bundle "
            "in the profile)"
        )
    if isinstance(err, (EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError)):
        return RetryableError(f"cannot reach the S3 endpoint {endpoint.where} for {what}: {err}")
    if isinstance(err, ReadTimeoutError):
        return RetryableError(f"{action} of {what} timed out at {endpoint.where}")
    if isinstance(err, _CONFIG_ERRORS):
        return PermanentError(
            f"{action} of {what}: the worker's AWS configuration for {endpoint.where} is not "
            f"usable ({type(err).__name__}: {err}); fix it in the profile or the AWS_* "
            "environment of the worker"
        )
    if isinstance(err, ParamValidationError):
        return PermanentError(
            f"{action} of {what}: the request was refused before it was sent ({err})"
        )
    if not isinstance(err, ClientError):
        if isinstance(err, BotoCoreError):
            return RetryableError(f"{action} of {what} failed: {type(err).__name__}: {err}")
        return PermanentError(f"{action} of {what} failed: {type(err).__name__}: {err}")
    code = _code(err)
    status = _status(err)
    message = str(err.response.get("Error", {}).get("Message", ""))[:200]
    if code == "NoSuchBucket" or (code == "404" and key is None):
        text = f"bucket {bucket!r} does not exist at {endpoint.where}; check the bucket name" + (
            " or create it first" if role == "destination" else ""
        )
        return DestinationMissing(text) if role == "destination" else NotFound(text)
    if code in ("NoSuchKey", "404", "NotFound"):
        return NotFound(f"no such key {key!r} in bucket {bucket!r} at {endpoint.where} ({what})")
    wrong_place = _wrong_region(err, endpoint, what, action)
    if wrong_place is not None:
        return wrong_place
    if code == "RequestTimeTooSkewed":
        detail = err.response.get("Error", {})
        times = ""
        if detail.get("RequestTime") and detail.get("ServerTime"):
            times = (
                f" (the worker said {detail['RequestTime']}, the server's clock says "
                f"{detail['ServerTime']})"
            )
        return PermanentError(
            f"{action} of {what} refused by {endpoint.where}: the worker's clock is off from "
            f"the server's by more than S3 allows (RequestTimeTooSkewed, 15 minutes){times}. "
            "Requests are signed with the worker's time, so retrying cannot help: sync the "
            "worker's clock (NTP: chrony, systemd-timesyncd, `timedatectl set-ntp true`), "
            "then submit again"
        )
    if code == "InvalidAccessKeyId":
        return PermissionDenied(
            f"{action} of {what} refused: the access key id is not known to {endpoint.where} "
            f"(InvalidAccessKeyId); fix {endpoint.credentials_hint}"
        )
    if code == "SignatureDoesNotMatch":
        return PermissionDenied(
            f"{action} of {what} refused: the secret access key does not match the access key "
            f"id (SignatureDoesNotMatch at {endpoint.where}); fix {endpoint.credentials_hint}"
        )
    if code in ("ExpiredToken", "TokenRefreshRequired", "InvalidToken", "InvalidSecurity"):
        return PermissionDenied(
            f"{action} of {what} refused: the session token is expired or invalid ({code}); "
            f"refresh {endpoint.credentials_hint}"
        )
    if code in ("AccountProblem", "NotSignedUp", "InvalidPayer"):
        return PermissionDenied(
            f"{action} of {what} refused by {endpoint.where}: {code}: {message}; the AWS "
            "account behind the worker's credentials cannot use S3 as it is: see the account's "
            "billing and status"
        )
    if code in ("AccessDenied", "AllAccessDisabled", "403", "Forbidden"):
        needed = _PERMISSIONS.get(action.split()[0], "access")
        return PermissionDenied(
            f"access denied: {action} of {what} at {endpoint.where}; the credentials "
            f"({endpoint.credentials_hint}) need {needed} on this bucket/key"
        )
    if code == "InvalidObjectState":
        return PermanentError(
            f"{action} of {what} refused: the object is archived (InvalidObjectState: "
            f"{message}); restore it first (RestoreObject, S3 Glacier / Deep Archive), then "
            "submit again"
        )
    if code.startswith("KMS.") and "Throttl" not in code:
        return PermanentError(
            f"{action} of {what} refused by {endpoint.where}: the object's KMS key cannot be "
            f"used ({code}: {message}); check the key's state and the credentials' kms:Decrypt "
            "/ kms:GenerateDataKey permissions"
        )
    if code == "InvalidBucketName":
        return InvalidURL(f"invalid S3 bucket name {bucket!r} ({message or code})")
    if code == "KeyTooLongError":
        return InvalidURL(_key_too_long(key or ""))
    if code in _RETRYABLE_CODES or "Throttl" in code or status >= 500 or status in (408, 429):
        return RetryableError(
            f"{action} of {what} failed at {endpoint.where}: {code or status} {message}".rstrip()
        )
    if code in ("EntityTooSmall", "EntityTooLarge", "InvalidPart", "InvalidPartOrder"):
        return PermanentError(f"{action} of {what} refused by S3: {code}: {message}")
    hint = ""
    if key is not None and len(key.encode("utf-8")) > MAX_KEY_BYTES:
        hint = f" ({_key_too_long(key)})"
    elif key is not None and any(part in ("", ".", "..") for part in key.split("/")):
        hint = " (some S3-compatible stores refuse keys with '.', '..' or empty path segments)"
    return PermanentError(
        f"{action} of {what} refused by {endpoint.where}: {code or status}: {message}{hint}"
    )


def _key_too_long(key: str) -> str:
    return (
        f"the S3 key is {len(key.encode('utf-8'))} bytes long; S3 keys are at most "
        f"{MAX_KEY_BYTES} bytes of UTF-8 (S3 API limit): use a shorter key"
    )


def _wrong_region(
    err: ClientError, endpoint: _Endpoint, what: str, action: str
) -> PermanentError | None:
    """The bucket lives in another region (or behind another endpoint) than the one the
    worker's configuration sends requests to: ``301 PermanentRedirect`` / ``307``
    (the region in the ``x-amz-bucket-region`` header), ``AuthorizationHeaderMalformed``
    with the expected ``Region``, ``IllegalLocationConstraintException`` (an opt-in
    region), ``InvalidRegion``. botocore follows such a redirect once on its own; what
    is still failing cannot heal by retrying. None if ``err`` is none of these."""
    code, status = _code(err), _status(err)
    detail = err.response.get("Error", {})
    headers = err.response.get("ResponseMetadata", {}).get("HTTPHeaders", {}) or {}
    region = headers.get("x-amz-bucket-region") or detail.get("Region") or ""
    redirect = code in ("301", "307", "PermanentRedirect", "TemporaryRedirect", "Redirect") or (
        status in (301, 307) and not code
    )
    malformed = code == "AuthorizationHeaderMalformed" and (region or "region" in str(detail))
    if not (
        redirect
        or malformed
        or code in ("IllegalLocationConstraintException", "InvalidRegion")
        or (status == 400 and region and code in ("400", "BadRequest"))
    ):
        return None
    told = f"the bucket is in region {region!r}" if region else "the bucket is in another region"
    if detail.get("Endpoint"):
        told += f" (the server names endpoint {str(detail['Endpoint'])[:200]!r})"
    profile = (
        f"profile {endpoint.profile!r}"
        if endpoint.profile
        else "the worker's default AWS configuration"
    )
    fix = (
        f"set region = {region} in {profile} (or AWS_REGION)"
        if region
        else f"set the bucket's region in {profile} (or AWS_REGION)"
    )
    return PermanentError(
        f"{action} of {what}: {endpoint.where} answered {code or status}: {told}, and requests "
        f"were sent to {endpoint.endpoint_url} signed for region {endpoint.region!r}; {fix}, "
        "or point endpoint_url (AWS_ENDPOINT_URL_S3) at the endpoint that serves this bucket"
    )


def _explain_head(
    err: ClientError, endpoint: _Endpoint, bucket: str, key: str, *, role: str, action: str
) -> StaccatoError:
    """Name the error of a HEAD, which has no body and hence no S3 error code: a 404 is
    told apart (NoSuchBucket vs NoSuchKey) with HeadBucket, a 400/403 with a one-byte
    GET, whose error body has the code (InvalidAccessKeyId, SignatureDoesNotMatch...)."""
    code, status = _code(err), _status(err)
    if not (code.isdigit() or code in ("NotFound", "Forbidden", "BadRequest")):
        return _s3_error(err, endpoint, bucket, key, role=role, action=action)
    client = endpoint.client
    try:
        if status == 404:
            client.head_bucket(Bucket=bucket)
            no_key = ClientError({"Error": {"Code": "NoSuchKey"}}, action)
            return _s3_error(no_key, endpoint, bucket, key, role=role, action=action)
        if status in (400, 403):
            client.get_object(Bucket=bucket, Key=key, Range="bytes=0-0")["Body"].close()
    except ClientError as detail:
        detail_code = _code(detail)
        if status == 404 and _status(detail) == 404:
            detail = ClientError({"Error": {"Code": "NoSuchBucket"}}, "HeadBucket")
        elif detail_code.isdigit() or detail_code in ("InvalidRange", "NoSuchKey"):
            return _s3_error(err, endpoint, bucket, key, role=role, action=action)
        return _s3_error(detail, endpoint, bucket, key, role=role, action=action)
    except BotoCoreError:
        pass
    return _s3_error(err, endpoint, bucket, key, role=role, action=action)


# ---------------------------------------------------------------------------- reading


class S3Reader(Reader):
    """One ranged GetObject of the pinned version, streamed into caller buffers."""

    def __init__(
        self, driver: S3Driver, url: EndpointURL, info: ObjectInfo, offset: int, length: int
    ) -> None:
        self._remaining = length
        self._body: Any = None
        if length <= 0:
            return  # C3: never a ranged GET of an empty range (416 on a 0-byte object)
        self._what = f"s3://{url.bucket}/{url.key}"
        endpoint = driver.endpoint(url)
        params: dict[str, Any] = {
            "Bucket": url.bucket,
            "Key": url.key,
            "Range": f"bytes={offset}-{offset + length - 1}",
        }
        etag = info.extra.get("etag")
        if etag:
            params["IfMatch"] = etag
        if info.extra.get("version_id"):
            params["VersionId"] = info.extra["version_id"]
        try:
            response = endpoint.client.get_object(**params)
        except ClientError as err:
            raise _changed_or(err, endpoint, url, info, offset, length, "GetObject") from None
        except (BotoCoreError, OSError) as err:
            raise _s3_error(
                err, endpoint, url.bucket, url.key, role="source", action="GetObject"
            ) from None
        self._body = response["Body"]
        try:
            _check_range(response, self._what, info, offset, length)
        except BaseException:
            self.close()
            raise

    def readinto(self, buffer: memoryview) -> int:
        if self._remaining <= 0:
            return 0
        want = min(len(buffer), self._remaining)
        try:
            n = self._body.readinto(buffer[:want])
        except (IncompleteReadError, ResponseStreamingError, ReadTimeoutError, OSError) as err:
            raise IncompleteRead(
                f"GetObject of {self._what} broke with {self._remaining} bytes left: "
                f"{_scrub(str(err), None)}"
            ) from None
        if not n:
            raise IncompleteRead(f"GetObject of {self._what} ended {self._remaining} bytes early")
        self._remaining -= n
        self.bytes_read += n
        return n

    def close(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None


def _changed_or(
    err: ClientError,
    endpoint: _Endpoint,
    url: EndpointURL,
    info: ObjectInfo,
    offset: int,
    length: int,
    action: str,
) -> StaccatoError:
    """A failed read of the pinned version: ``SourceChanged`` when the object moved on."""
    code, status = _code(err), _status(err)
    what = f"s3://{url.bucket}/{url.key}"
    if code in ("PreconditionFailed", "412") or status == 412:
        return SourceChanged(
            f"source changed during the transfer: {what} no longer has ETag "
            f"{info.extra.get('etag')} (it was overwritten); nothing was published"
        )
    if code in ("NoSuchKey", "NoSuchVersion") or (status == 404 and code != "NoSuchBucket"):
        return SourceChanged(f"source changed: {what} was deleted during the transfer")
    if code == "InvalidRange" or status == 416:
        return SourceChanged(
            f"source changed: {what} is now shorter than {offset + length} bytes (was {info.size})"
        )
    return _s3_error(err, endpoint, url.bucket, url.key, role="source", action=action)


def _check_range(
    response: Mapping[str, Any], what: str, info: ObjectInfo, offset: int, length: int
) -> None:
    """The body must be exactly the range asked for, of the pinned version."""
    match = _CONTENT_RANGE.match(response.get("ContentRange") or "")
    if not match or (int(match.group(1)), int(match.group(2))) != (offset, offset + length - 1):
        raise SourceChanged(
            f"{what} answered Range bytes={offset}-{offset + length - 1} with Content-Range "
            f"{response.get('ContentRange')!r}"
        )
    if match.group(3) != "*" and int(match.group(3)) != info.size:
        raise SourceChanged(
            f"source changed: {what} is now {match.group(3)} bytes (was {info.size})"
        )
    pinned = info.extra.get("etag")
    if pinned and response.get("ETag") and response["ETag"] != pinned:
        # for servers that ignore If-Match
        raise SourceChanged(f"source changed during the transfer: {what} has a new ETag")


# ---------------------------------------------------------------------------- writing


class _ViewBody:
    """A seekable, read-only file over a memoryview: botocore streams it (and rewinds it
    to retry) without copying the chunk; reads hand out slices of at least 1 MiB so
    the socket is fed in large writes."""

    def __init__(self, view: memoryview) -> None:
        self._view = view
        self._position = 0

    def __len__(self) -> int:
        return len(self._view)

    def read(self, size: int | None = -1) -> memoryview | bytes:
        if self._position >= len(self._view):
            return b""
        if size is None or size < 0:
            end = len(self._view)
        else:
            end = min(len(self._view), self._position + max(size, _SEND_PIECE))
        piece = self._view[self._position : end]
        self._position = end
        # A large part can take longer to send than the heartbeat timeout: heartbeat
        # (rate-limited) while sending. If the stream was cancelled this raises, the
        # request is abandoned and the part is simply not there.
        keepalive()
        return piece

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._position, 2: len(self._view)}[whence]
        self._position = max(0, min(len(self._view), base + offset))
        return self._position

    def tell(self) -> int:
        return self._position

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True


class UploadGone(WriteSessionLost):
    """The multipart upload no longer exists: completed or aborted (by another attempt
    of this transfer, by hand, or by a lifecycle rule). A stale writer stops here; a
    live transfer opens a new upload and copies again."""


def _reraise_keepalive(err: Exception) -> None:
    """botocore wraps an exception raised while it sends a body (``HTTPClientError``);
    one from :func:`keepalive` (the stream was cancelled or paused) is not an S3 error:
    let it through unwrapped."""
    inner = getattr(err, "kwargs", {}).get("error") if isinstance(err, HTTPClientError) else None
    if isinstance(inner, Exception) and not isinstance(
        inner, (OSError, http.client.HTTPException, urllib3.exceptions.HTTPError, StaccatoError)
    ):
        raise inner


@dataclass(frozen=True)
class _Target:
    """The destination of a session, rebuilt from its (serialised) WriteSession."""

    url: EndpointURL
    endpoint: _Endpoint
    session: WriteSession

    @property
    def bucket(self) -> str:
        return self.url.bucket

    @property
    def key(self) -> str:
        return self.url.key

    @property
    def empty_put(self) -> bool:
        """A 0-byte object: no upload, one empty PutObject at publish."""
        return self.session.data.get("mode") == "put"

    def check_not_legacy(self) -> None:
        """A ``put`` session of a non-empty object comes from an older Staccato that
        wrote small objects with one PutObject before publish: treat it as lost, so the
        workflow opens a new (multipart) session and copies again.

        Raises:
            WriteSessionLost: the session is such an old one.
        """
        if self.empty_put and self.session.size > 0:
            raise WriteSessionLost(
                f"write session {self.session.session_id!r} of s3://{self.bucket}/{self.key} "
                "is a single-PutObject session of an older worker; copying again into a "
                "multipart upload"
            )

    @property
    def upload_id(self) -> str:
        return self.session.session_id

    @property
    def marker(self) -> str:
        return self.session.data["marker"]

    def error(self, err: Exception, action: str) -> StaccatoError:
        return _s3_error(
            err, self.endpoint, self.bucket, self.key, role="destination", action=action
        )

    def gone(self) -> UploadGone:
        return UploadGone(
            f"multipart upload {self.upload_id[:16]}... of s3://{self.bucket}/{self.key} no longer "
            "exists (completed or aborted by another attempt, or by a lifecycle rule)"
        )


class S3ChunkWriter(ChunkWriter):
    """Writes chunks as UploadPart (multipart) or as the one PutObject (small objects)."""

    def __init__(self, driver: S3Driver, session: WriteSession) -> None:
        self._driver = driver
        self._target = driver.target(session)

    def write_chunk(self, index: int, data: memoryview, checksum: str) -> None:
        target = self._target
        crc = checksum if _is_crc32c_hex(checksum) else f"{_crc32c.crc32c(data):08x}"
        crc_b64 = _crc_b64(int(crc, 16))
        client = target.endpoint.client
        target.check_not_legacy()
        if target.empty_put:
            raise PermanentError(f"chunk {index} of a 0-byte object's session (bug)")
        try:
            response = client.upload_part(
                Bucket=target.bucket,
                Key=target.key,
                UploadId=target.upload_id,
                PartNumber=index + 1,
                Body=_ViewBody(data),
                ContentLength=len(data),
                ChecksumCRC32C=crc_b64,
            )
        except ClientError as err:
            if _code(err) == "NoSuchUpload":
                raise target.gone() from None  # a stale writer stops here
            raise target.error(err, f"UploadPart {index + 1}") from None
        except BotoCoreError as err:
            _reraise_keepalive(err)
            raise target.error(err, f"UploadPart {index + 1}") from None
        echoed = response.get("ChecksumCRC32C")
        if echoed and echoed != crc_b64:
            raise RetryableError(
                f"s3://{target.bucket}/{target.key} part {index + 1}: the store computed CRC32C "
                f"{echoed}, the source bytes have {crc_b64}"
            )

    def copy_chunk(
        self,
        index: int,
        source: EndpointURL,
        info: ObjectInfo,
        offset: int,
        length: int,
        algorithm: str,
    ) -> str:
        target = self._target
        copy_source: dict[str, str] = {"Bucket": source.bucket, "Key": source.key}
        if info.extra.get("version_id"):
            copy_source["VersionId"] = info.extra["version_id"]
        pinned: dict[str, str] = {}
        if info.extra.get("etag"):
            pinned["CopySourceIfMatch"] = info.extra["etag"]
        client = target.endpoint.client
        source_endpoint = self._driver.endpoint(source)
        target.check_not_legacy()
        try:
            response = client.upload_part_copy(
                Bucket=target.bucket,
                Key=target.key,
                UploadId=target.upload_id,
                PartNumber=index + 1,
                CopySource=copy_source,
                CopySourceRange=f"bytes={offset}-{offset + length - 1}",
                **pinned,
            )
            result = response.get("CopyPartResult") or {}
        except ClientError as err:
            code = _code(err)
            if code == "NoSuchUpload":
                raise target.gone() from None
            if code in ("PreconditionFailed", "NoSuchKey", "NoSuchVersion", "InvalidRange"):
                raise _changed_or(
                    err, source_endpoint, source, info, offset, length, "UploadPartCopy"
                ) from None
            raise target.error(err, "UploadPartCopy") from None
        except BotoCoreError as err:
            raise target.error(err, "UploadPartCopy") from None
        if algorithm != "crc32c":
            return ""  # the stream reads the range to compute another algorithm
        return _b64_to_hex(result.get("ChecksumCRC32C"))


# ---------------------------------------------------------------------------- driver


class S3Driver(Driver):
    """Driver for ``s3://bucket/key[?profile=NAME]`` URLs."""

    scheme = "s3"

    def __init__(self) -> None:
        self._endpoints: dict[str | None, tuple[_Endpoint, float]] = {}
        self._lock = threading.Lock()

    # -- configuration

    def endpoint(self, url: EndpointURL) -> _Endpoint:
        """The client for the URL's profile, cached for at most a minute, so that a
        worker picks up edited config/credentials files (e.g. after a wrong key was
        fixed) without a restart. Refreshable credentials (roles, SSO) refresh anyway."""
        profile = url.params.get("profile")
        now = time.monotonic()
        with self._lock:
            cached = self._endpoints.get(profile)
            if cached is None or now - cached[1] > _ENDPOINT_TTL_S:
                cached = self._endpoints[profile] = (_make_endpoint(profile), now)
            return cached[0]

    def target(self, session: WriteSession) -> _Target:
        url = parse_url(session.url)
        return _Target(url, self.endpoint(url), session)

    def adjust_chunk_size(self, size: int, chunk_size: int) -> tuple[int, str | None]:
        """S3 part-size rules (see :func:`staccato.endpoints.s3_plan.plan_part_size`)."""
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
            raise _explain_head(
                err, endpoint, url.bucket, url.key, role="source", action="HeadObject"
            ) from None
        except BotoCoreError as err:
            raise _s3_error(
                err, endpoint, url.bucket, url.key, role="source", action="HeadObject"
            ) from None
        etag = head.get("ETag") or ""
        version_id = head.get("VersionId")
        size = int(head["ContentLength"])
        extra = {"etag": etag}
        version = f"etag={etag};size={size}"
        if version_id and version_id != "null":
            extra["version_id"] = version_id
            version += f";version_id={version_id}"
        crc = _b64_to_hex(head.get("ChecksumCRC32C"))
        if crc and head.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT":
            extra["crc32c"] = crc
        return ObjectInfo(
            size=size,
            version=version,
            supports_ranges=True,
            content_type=head.get("ContentType"),
            extra=extra,
        )

    def open_read(self, url: EndpointURL, info: ObjectInfo, offset: int, length: int) -> Reader:
        return S3Reader(self, url, info, offset, length)

    # -- destination

    def check_destination(self, url: EndpointURL) -> None:
        """The key names an object (not ``dir/``) and the bucket exists (HeadBucket;
        some stores would silently create a missing bucket on the first PUT)."""
        if not url.key or url.key.endswith("/"):
            raise InvalidURL(
                f"destination {url} ends with '/': S3 keys ending in '/' are folder markers; "
                "name the object to write, e.g. s3://BUCKET/PREFIX/NAME"
            )
        endpoint = self.endpoint(url)
        try:
            endpoint.client.head_bucket(Bucket=url.bucket)
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

    def open_session(
        self, url: EndpointURL, size: int, chunk_size: int, transfer_id: str
    ) -> WriteSession:
        """CreateMultipartUpload, for every non-empty object (even one part): nothing
        reaches the destination key before publish. A 0-byte object's session creates
        nothing (its one empty PutObject is sent at publish)."""
        content_type = mimetypes.guess_type(url.key, strict=False)[0] or "application/octet-stream"
        data = {"marker": transfer_id, "content_type": content_type}
        if size == 0:
            return WriteSession(
                url=url.canonical,
                size=size,
                chunk_size=chunk_size,
                session_id=f"put:{transfer_id}",
                data={**data, "mode": "put"},
            )
        endpoint = self.endpoint(url)
        try:
            created = endpoint.client.create_multipart_upload(
                Bucket=url.bucket,
                Key=url.key,
                ContentType=content_type,
                Metadata={MARKER: transfer_id},
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
        log.info("s3://%s/%s: multipart upload started (%d bytes)", url.bucket, url.key, size)
        return WriteSession(
            url=url.canonical,
            size=size,
            chunk_size=chunk_size,
            session_id=created["UploadId"],
            data={**data, "mode": "multipart"},
        )

    def open_writer(self, session: WriteSession) -> ChunkWriter:
        return S3ChunkWriter(self, session)

    def _parts(self, target: _Target) -> dict[int, Mapping[str, Any]]:
        """ListParts, paged to the end (C4).

        Raises:
            RetryableError: the upload no longer exists.
        """
        client = target.endpoint.client

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

        return collect_parts(fetch)

    def _own_object(self, target: _Target) -> Mapping[str, Any] | None:
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
        """Parts S3 holds whose size is the chunk's: index -> CRC32C (hex) where
        ListParts reports it (AWS does), else ``""`` (SeaweedFS, moto: the stream then
        re-reads those chunks from the source to checksum them, without re-sending)."""
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
                durable[index] = _b64_to_hex(part.get("ChecksumCRC32C"))
        return durable

    def publish(self, session: WriteSession) -> None:
        """CompleteMultipartUpload (or, for a 0-byte object, one empty PutObject), then
        read the object's size back (C6). Idempotent."""
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
                try:
                    client.put_object(
                        Bucket=target.bucket,
                        Key=target.key,
                        Body=b"",
                        ContentLength=0,
                        ChecksumCRC32C=_EMPTY_CRC32C,
                        ContentType=session.data["content_type"],
                        Metadata={MARKER: target.marker},
                    )
                except (ClientError, BotoCoreError) as err:
                    raise target.error(err, "PutObject") from None
                head = self._own_object(target)
            if head is None:
                raise RetryableError(
                    f"s3://{target.bucket}/{target.key} is not readable right after PutObject"
                )
            self._check_size(target, head)
            return
        chunks = chunk_count(session.size, session.chunk_size)
        try:
            parts = self._parts(target)
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
        try:
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

    def _check_size(self, target: _Target, head: Mapping[str, Any]) -> None:
        if int(head["ContentLength"]) != target.session.size:
            raise ChecksumMismatch(
                f"s3://{target.bucket}/{target.key} has {head['ContentLength']} bytes after "
                f"upload, expected {target.session.size}"
            )

    def abort(self, session: WriteSession) -> None:
        """AbortMultipartUpload until ListParts says ``NoSuchUpload`` (a part upload in
        flight can outlive one abort). Idempotent. Never deletes or alters the object at
        the key: before publish it is the one that was there before (this session wrote
        nothing there), after publish it is the transfer's result; a 0-byte object's
        session has nothing to abort."""
        target = self.target(session)
        client = target.endpoint.client
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
                remaining = self._parts(target)
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
    ) -> str:
        """The store's full-object CRC32C (HeadObject ``ChecksumMode=ENABLED``) when it
        has one; otherwise (composite or no checksum, or SHA-256) the object is read back.
        The ETag is never used: a multipart ETag is not an MD5 of the object (C7)."""
        if algorithm == "crc32c":
            info = self.stat(url)
            if info.extra.get("crc32c"):
                return info.extra["crc32c"]
        return super().object_checksum(url, size, chunk_size, segments, algorithm)


__all__ = ["MARKER", "S3ChunkWriter", "S3Driver", "S3Reader", "UploadGone"]
