"""HTTP message semantics the driver relies on (RFC 9110): status codes to errors,
``Retry-After``, ``Content-Range``, validators and what they pin, origins and the
headers that carry credentials, and keeping URLs' query values out of messages."""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Mapping
from email.message import Message
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from staccato.errors import (
    IncompleteReadError,
    InvalidURLError,
    NotFoundError,
    PermanentError,
    PermissionDeniedError,
    RetryableError,
    StaccatoError,
)
from staccato.models import ObjectInfo
from staccato.urls import redact

CONTENT_RANGE = re.compile(r"^bytes\s+(\d+)-(\d+)/(\d+|\*)$")
UNSATISFIED_RANGE = re.compile(r"^bytes\s+\*/(\d+)$")
MAX_REDIRECTS = 10
#: request headers that carry credentials: never sent to another origin (RFC 9110 section 15.4)
CREDENTIAL_HEADERS = ("authorization", "proxy-authorization", "cookie")


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (RFC 9110 section 10.2.3): a
    non-negative integer of seconds, or an HTTP-date (then the time until it, at least 0).

    Args:
        value: the header's value, or None when absent.
        now: the current Unix time (for tests); default ``time.time()``.

    Returns:
        Seconds, or None when absent or unparsable (the retry policy's backoff applies).
    """
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP-date is always GMT (RFC 9110 section 5.6.7)
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def status_error(
    code: int, url: str, headers: Mapping[str, str] | Message | None = None
) -> StaccatoError:
    shown = redact(url)
    if code == 404 or code == 410:
        return NotFoundError(f"source not found: {shown} (HTTP {code})")
    if code in (401, 403):
        return PermissionDeniedError(f"source refused: {shown} (HTTP {code})")
    if code in (408, 425, 429) or code >= 500:
        delay = (
            retry_after_s(headers.get("retry-after"))
            if headers is not None and code in (429, 503)
            else None
        )
        if delay is not None:
            return RetryableError(
                f"source unavailable: {shown} (HTTP {code}, Retry-After {delay:.0f} s)",
                retry_after_s=delay,
            )
        return RetryableError(f"source unavailable: {shown} (HTTP {code})")
    return PermanentError(f"unexpected response from {shown}: HTTP {code}")


def scrubbed(text: str, *urls: str) -> str:
    """``text`` (an exception's message) with each of ``urls`` and its query string
    replaced by the redacted form: httpx and http.client put request URLs in some of
    their messages."""
    for url in urls:
        if not url:
            continue
        text = text.replace(url, redact(url))
        query = urlsplit(url).query
        if query:
            text = text.replace(query, "REDACTED")
    return text


def transport_error(err: httpx.HTTPError | httpx.InvalidURL, url: str) -> StaccatoError:
    """The Staccato error for an httpx failure of a request to ``url``: a URL httpx
    refuses as malformed or of an unsupported scheme (``url`` itself or where a
    redirect led) is :class:`InvalidURLError` (permanent: every try would fail the
    same way), a connection broken mid-response :class:`IncompleteReadError`, the
    rest :class:`RetryableError`; every message names the URL, query values redacted."""
    shown = redact(url)
    urls = [url]
    with contextlib.suppress(RuntimeError, AttributeError):  # no request attached
        urls.append(str(err.request.url))  # type: ignore[union-attr]
    detail = scrubbed(str(err), *urls)
    if isinstance(err, httpx.InvalidURL | httpx.UnsupportedProtocol):
        return InvalidURLError(f"cannot read {shown}: the URL is malformed: {detail}")
    if isinstance(err, httpx.RemoteProtocolError):
        return IncompleteReadError(f"connection to {shown} broke mid-response: {detail}")
    return RetryableError(f"cannot read {shown}: {type(err).__name__}: {detail}")


class RedactURLs(logging.Filter):
    """Redacts the query values of URLs in httpx's log records (its INFO line
    ``HTTP Request: GET <url> ...`` shows the whole URL, token included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact(str(arg))
                if isinstance(arg, httpx.URL) or (isinstance(arg, str) and "://" in arg)
                else arg
                for arg in record.args
            )
        return True


def origin_of(url: str | httpx.URL) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the default port filled in (RFC 6454 section 4)."""
    parts = urlsplit(str(url))
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def without_credentials(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in CREDENTIAL_HEADERS}


def if_range_validator(info: ObjectInfo) -> str | None:
    """The If-Range value: a strong ETag or a Last-Modified date (RFC 9110 §13.1.5)."""
    etag = info.extra.get("etag")
    if etag and not etag.startswith("W/"):
        return etag
    return info.extra.get("last_modified")


def freshness(headers: Mapping[str, str] | Message) -> dict[str, Any]:
    """``ObjectInfo`` fields saying how far the version can be trusted.

    ``Last-Modified`` has a resolution of one second (RFC 9110 section 8.8.2), and
    common servers derive their ETag from it (nginx: mtime and size), so a source
    modified within that second of the copy may change without a new version. Without
    ``Last-Modified`` a strong ETag is trusted; with neither, nothing pins the version.
    """
    modified = http_date(headers.get("last-modified"))
    if modified is not None:
        # the server's Date (RFC 9110 section 6.6.1) is on the same clock as its mtimes
        return {
            "modified_at": modified,
            "mtime_resolution_s": 1.0,
            "endpoint_time": http_date(headers.get("date")),
        }
    etag = headers.get("etag")
    if etag and not etag.startswith("W/"):
        return {}
    return {"modified_at": None, "mtime_resolution_s": 1.0}


def http_date(value: str | None) -> float | None:
    """An HTTP-date (RFC 9110 section 5.6.7) as seconds since the epoch, or None."""
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


def version_of(headers: Mapping[str, str] | Message, size: int) -> str:
    etag = headers.get("etag")
    if etag and not etag.startswith("W/"):
        return f"etag={etag}"
    modified = headers.get("last-modified")
    if modified:
        return f"last_modified={modified};size={size}"
    return f"size={size}"
