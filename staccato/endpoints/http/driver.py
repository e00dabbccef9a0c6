"""The ``http``/``https`` driver: stat (``HEAD``, a one-byte ranged ``GET``), with
httpx, and reads through :class:`~staccato.endpoints.http.read.HTTPReader`."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import httpx

from staccato.endpoints.base import Driver, Features, Reader
from staccato.endpoints.http.bounded_io import CONNECT_TIMEOUT_S, READ_TIMEOUT_S, time_limit
from staccato.endpoints.http.messages import (
    CONTENT_RANGE,
    CREDENTIAL_HEADERS,
    MAX_REDIRECTS,
    UNSATISFIED_RANGE,
    RedactURLs,
    freshness,
    origin_of,
    status_error,
    transport_error,
    version_of,
)
from staccato.endpoints.http.read import HTTPReader
from staccato.errors import InvalidURLError, PermanentError
from staccato.models import ObjectInfo
from staccato.urls import EndpointURL, redact

#: seconds one whole stat request may take, headers included
REQUEST_DEADLINE_S = 60.0
_TIMEOUT = httpx.Timeout(
    connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S, write=READ_TIMEOUT_S, pool=READ_TIMEOUT_S
)


logging.getLogger("httpx").addFilter(RedactURLs())


class HTTPDriver(Driver):
    """Driver for ``http://`` and ``https://`` sources."""

    scheme = "http"
    features = Features()  # a source only

    def __init__(self, origin_headers: Mapping[str, Mapping[str, str]] | None = None) -> None:
        """Args:
        origin_headers: request headers per origin (``"https://host[:port]"``), e.g. an
            ``Authorization`` configured on the worker for one server; sent to that
            origin only, and credentials among them never follow a redirect to another
            origin."""
        self._origin_headers = {
            origin_of(origin): dict(headers) for origin, headers in (origin_headers or {}).items()
        }
        self._client = httpx.Client(
            timeout=_TIMEOUT, follow_redirects=False, headers={"User-Agent": "staccato"}
        )

    def _request(self, method: str, url: str, headers: Mapping[str, str]) -> httpx.Response:
        """Send ``method url`` with its body unread, following up to ``MAX_REDIRECTS``
        redirects; on the way to another origin than ``url``'s, ``Authorization``,
        ``Proxy-Authorization`` and ``Cookie`` are dropped (RFC 9110 section 15.4; httpx
        alone keeps ``Authorization`` on an http -> https upgrade of the same host).
        The caller closes the response.

        Raises:
            httpx.HTTPError: transport failures.
            PermanentError: too many redirects.
            InvalidURLError: a redirect to a URL with a port out of range.
        """
        origin = origin_of(url)
        request = self._client.build_request(
            method, url, headers={**self._origin_headers.get(origin, {}), **headers}
        )
        for _ in range(MAX_REDIRECTS + 1):
            response = self._client.send(request, stream=True, follow_redirects=False)
            following = response.next_request
            if following is None:
                return response
            response.close()
            try:
                elsewhere = origin_of(following.url) != origin
            except ValueError as err:  # a port out of range: every try would fail
                raise InvalidURLError(
                    f"cannot read {redact(url)}: it redirects to the malformed URL "
                    f"{redact(str(following.url))}: {err}"
                ) from None
            if elsewhere:
                for name in CREDENTIAL_HEADERS:
                    following.headers.pop(name, None)
            request = following
        raise PermanentError(f"{redact(url)} redirects more than {MAX_REDIRECTS} times")

    def stat(self, url: EndpointURL) -> ObjectInfo:
        """``HEAD`` first; if it advertises ``Accept-Ranges: bytes``, a ranged ``GET``
        of one byte confirms it (some servers and proxies advertise ranges and ignore
        them). A refused ``HEAD`` (405, 501, and 401/403: a presigned URL signed for
        ``GET`` only) falls back to the ranged ``GET`` (tests/test_http_cases.py
        ``test_head_refused``). Each request, redirects included, must end within
        ``REQUEST_DEADLINE_S``.

        Raises:
            NotFoundError, PermissionDeniedError: 404/410, 401/403 (to the ``GET``).
            RetryableError: 5xx, 408, 429 (with ``retry_after_s`` from ``Retry-After``
                on 429/503), transport errors, a request over its deadline.
        """
        try:
            return self._stat(url.canonical)
        finally:
            self._client.cookies.clear()  # no cookie of one transfer reaches another

    def _stat(self, url: str) -> ObjectInfo:
        shown = redact(url)
        try:
            with time_limit(
                REQUEST_DEADLINE_S,
                f"HEAD {shown} took longer than {REQUEST_DEADLINE_S:.0f} s; retrying",
            ):
                head = self._request("HEAD", url, {"Accept-Encoding": "identity"})
                head.close()
        except (httpx.HTTPError, httpx.InvalidURL) as err:
            raise transport_error(err, url) from None
        code = head.status_code
        # 401/403 to HEAD alone is no answer yet: a presigned URL (S3 SigV4/SigV2, GCS,
        # Azure SAS) signs its method, so one made for GET is refused to HEAD; the
        # ranged GET below asks with the method it was made for (and a refusal of that
        # is the source's answer)
        if code in (404, 410) or code >= 500 or code in (408, 429):
            raise status_error(code, url, head.headers)
        if code == 200:
            length = head.headers.get("content-length", "")
            advertises_ranges = "bytes" in head.headers.get("accept-ranges", "").lower()
            if length.isdigit() and (int(length) == 0 or not advertises_ranges):
                return self._info_from_probe(head, url)
        try:
            with time_limit(
                REQUEST_DEADLINE_S,
                f"GET {shown} (Range bytes=0-0) took longer than {REQUEST_DEADLINE_S:.0f} s; "
                "retrying",
            ):
                response = self._request(
                    "GET", url, {"Range": "bytes=0-0", "Accept-Encoding": "identity"}
                )
            try:
                return self._info_from_probe(response, url)
            finally:
                response.close()
        except (httpx.HTTPError, httpx.InvalidURL) as err:
            raise transport_error(err, url) from None

    def _info_from_probe(self, response: httpx.Response, url: str) -> ObjectInfo:
        code = response.status_code
        extra = {
            key: response.headers[header]
            for key, header in (("etag", "etag"), ("last_modified", "last-modified"))
            if header in response.headers
        }
        content_type = response.headers.get("content-type")
        if code == 206:
            match = CONTENT_RANGE.match(response.headers.get("content-range", ""))
            if match and match.group(1) == "0" and match.group(3) != "*":
                size = int(match.group(3))
                return ObjectInfo(
                    size=size,
                    version=version_of(response.headers, size),
                    supports_ranges=True,
                    content_type=content_type,
                    extra=extra,
                    **freshness(response.headers),
                )
            raise PermanentError(
                f"{redact(url)} answered a range probe with a malformed Content-Range"
            )
        if code == 416:
            match = UNSATISFIED_RANGE.match(response.headers.get("content-range", ""))
            if match and match.group(1) == "0":
                return ObjectInfo(
                    size=0,
                    version=version_of(response.headers, 0),
                    supports_ranges=True,
                    content_type=content_type,
                    extra=extra,
                    **freshness(response.headers),
                )
        if code == 200:
            length = response.headers.get("content-length")
            if length is None or not length.isdigit():
                raise PermanentError(
                    f"{redact(url)} sends no Content-Length and no byte ranges; its size cannot be known "
                    "(the staging cache needs the size before it reads)"
                )
            size = int(length)
            return ObjectInfo(
                size=size,
                version=version_of(response.headers, size),
                supports_ranges=False,
                content_type=content_type,
                extra=extra,
                **freshness(response.headers),
            )
        raise status_error(code, url, response.headers)

    def open_read(self, url: EndpointURL, info: ObjectInfo, offset: int, length: int) -> Reader:
        return HTTPReader(
            url.canonical, info, offset, length, self._origin_headers.get(origin_of(url.canonical))
        )
