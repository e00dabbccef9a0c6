"""S3 errors: botocore exceptions translated into Staccato errors, and credentials
scrubbed out of every text taken from botocore.

:func:`_s3_error` maps one exception of one S3 call to a :class:`PermanentError`
subclass (wrong bucket or key, access denied, bad credentials, the worker's clock, a
bucket in another region, an archived object, an unusable AWS configuration ...) or
a :class:`RetryableError` (throttling, 5xx, a dropped connection), with a message
naming the object, the endpoint and the fix. :func:`_changed_or` tells a read of a
pinned version that failed because the source moved on (``SourceChanged``).
:class:`_RetryAfter` carries a throttling answer's ``Retry-After`` (RFC 9110 section
10.2.3) from the client's retry hook to :class:`RetryableError` ``retry_after_s``.

This module imports nothing else of the S3 package at run time (the endpoint type is
only for annotations), so :mod:`.client` can use :func:`_scrub`.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
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

from staccato.endpoints.s3.parts import MAX_KEY_BYTES
from staccato.errors import (
    STORE_REFUSES_KEY,
    AuthenticationRefusedError,
    DestinationMissing,
    IncompleteRead,
    InvalidURL,
    NotFound,
    PermanentError,
    PermissionDenied,
    RetryableError,
    SourceChanged,
    StaccatoError,
)
from staccato.models import ObjectInfo
from staccato.urls import EndpointURL

if TYPE_CHECKING:
    from staccato.endpoints.s3.client import _Endpoint

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
#: the calls that create an object (or a part of one): a 404 to one of them is no
#: missing key
_WRITES = frozenset({"PutObject", "CreateMultipartUpload", "UploadPart"})
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
#: query parameters and headers of signed requests that carry credentials or signatures
_SECRET_PARAMS = re.compile(
    r"(?i)((?:X-Amz-(?:Credential|Signature|Security-Token)|AWSAccessKeyId|Signature|"
    r"x-amz-security-token|Credential)\s*[=:]\s*)[^&\s,;'\"]+"
)
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]+@")


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
    if code in ("404", "NotFound") and action in _WRITES:
        # a write creates its key: a 404 to it is no missing object but the store
        # refusing this key or path (moto answers 404 to a key holding a newline)
        return PermanentError(
            f"{action} of {what}: {endpoint.where} answered 404 Not Found to the write "
            f"({message or code}): {STORE_REFUSES_KEY} or its path (some stores "
            "refuse keys with control characters such as a newline); trying again "
            "cannot help"
        )
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
        return AuthenticationRefusedError(
            f"{action} of {what} refused: the access key id is not known to {endpoint.where} "
            f"(InvalidAccessKeyId); fix {endpoint.credentials_hint}",
            f"the worker's access key at {endpoint.where}",
        )
    if code == "SignatureDoesNotMatch":
        return AuthenticationRefusedError(
            f"{action} of {what} refused: the secret access key does not match the access key "
            f"id (SignatureDoesNotMatch at {endpoint.where}); fix {endpoint.credentials_hint}",
            f"the worker's access key at {endpoint.where}",
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
    err: ClientError,
    endpoint: _Endpoint,
    bucket: str,
    key: str,
    *,
    role: str,
    action: str,
    bucket_known: Callable[[], bool] | None = None,
    bucket_found: Callable[[], None] | None = None,
) -> StaccatoError:
    """Name the error of a HEAD, which has no body and hence no S3 error code: a 404 is
    told apart (NoSuchBucket vs NoSuchKey) with HeadBucket, a 400/403 with a one-byte
    GET, whose error body has the code (InvalidAccessKeyId, SignatureDoesNotMatch...).
    ``bucket_known()`` true: the bucket was found moments ago (the driver's HeadBucket
    cache), a 404 is NoSuchKey without asking (a dataset's sync check of many missing
    keys asked HeadBucket once per key); ``bucket_found()`` is called when HeadBucket
    found it."""
    code, status = _code(err), _status(err)
    if not (code.isdigit() or code in ("NotFound", "Forbidden", "BadRequest")):
        return _s3_error(err, endpoint, bucket, key, role=role, action=action)
    client = endpoint.client
    try:
        if status == 404:
            if bucket_known is None or not bucket_known():
                client.head_bucket(Bucket=bucket)
                if bucket_found is not None:
                    bucket_found()
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
