"""The ``http``/``https`` endpoint (sources only), with httpx.

Stat sends ``HEAD``; when that advertises ranges (or is refused: some servers
answer 405) a ranged ``GET`` for ``bytes=0-0`` decides: a ``206`` with a
matching ``Content-Range`` (RFC 9110 §14.4) proves range support and gives the size;
a ``200`` means the server ignores ranges (it answers a Range request with 200 and
the whole body, as proxies that strip ranges do); a ``416`` with ``bytes */0`` is an
empty object. The version pinned is the strong ``ETag``, or
else ``Last-Modified`` (RFC 9110 §8.8).

Reads send ``Range`` with ``If-Range`` (RFC 9110 §13.1.5) holding the pinned
validator, and accept only a ``206`` whose ``Content-Range`` is exactly the range asked
for; a ``200`` then means the representation changed -> ``SourceChangedError``. A server
without range support is read from byte 0 in one stream (earlier bytes discarded).
A body that ends before its ``Content-Length`` is a retryable error
(tests/test_http_cases.py ``test_body_shorter_than_content_length``).

Time bounds: every wait for the server is bounded. The bulk read path waits for each
piece of the response (headers and body) in slices of at most a second, calling
:func:`staccato.endpoints.base.keepalive` between slices (the stream heartbeats, and
notices a cancel or a source below its minimum rate), and gives up after
``READ_TIMEOUT_S`` of silence. Stat bounds each whole request, headers included, to
``REQUEST_DEADLINE_S`` (a server that drips one byte every few seconds never trips a
per-read timeout).

Retry-After: a ``503`` or ``429`` with ``Retry-After`` (RFC 9110 section 10.2.3, seconds
or an HTTP-date) raises a :class:`RetryableError` with ``retry_after_s``, which the
activity turns into Temporal's next retry delay.

Credentials: request headers a worker is configured with for an origin
(``HTTPDriver(origin_headers=)``) go to that origin only. On a redirect to another origin
``Authorization``, ``Proxy-Authorization`` and ``Cookie`` are dropped (RFC 9110 section
15.4), and the bulk path sends them only when it reads from the source's own origin.
Messages never show a URL's query values (:func:`staccato.urls.redact`): presigned
URLs carry their token there.

Modules: :mod:`.driver` (:class:`HTTPDriver`: stat), :mod:`.read` (:class:`HTTPReader`:
ranged reads, redirects), :mod:`.bounded_io` (connections and reads that never wait
unbounded), :mod:`.messages` (RFC 9110 semantics: statuses, validators, origins).
"""

from staccato.loading import import_without

import_without("httpx", "httpx._main")  # its command-line client, unused (staccato.loading)

from staccato.endpoints.http.bounded_io import CONNECT_TIMEOUT_S, READ_TIMEOUT_S  # noqa: E402
from staccato.endpoints.http.driver import REQUEST_DEADLINE_S, HTTPDriver  # noqa: E402
from staccato.endpoints.http.messages import retry_after_s  # noqa: E402
from staccato.endpoints.http.read import HTTPReader  # noqa: E402

__all__ = [
    "CONNECT_TIMEOUT_S",
    "READ_TIMEOUT_S",
    "REQUEST_DEADLINE_S",
    "HTTPDriver",
    "HTTPReader",
    "retry_after_s",
]
