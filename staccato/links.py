"""Endpoint and link names: what limits are set on (pure: no I/O, no clock).

Used by the client (``staccato limit``), by the CLI and inside the transfer workflow
(which names the governors it asks), so one URL always maps to the same name.

An *endpoint* is where bytes live and are served from:

* ``http://host:port`` / ``https://host:port``: the default port written out;
* ``sftp://host:port``: 22 written out, no user (every user of a server shares it);
* ``s3://bucket`` (``s3://bucket?profile=NAME`` when the URL names a profile): the S3
  service endpoint a worker talks to comes from its environment or profile, which the
  client cannot see, so the bucket (and profile) stand for it;
* ``file://``: the local file systems of the site (one site per task queue today).

A *link* is ``SRC_ENDPOINT,DST_ENDPOINT``: one shell word, no quoting needed.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from staccato.errors import InvalidURLError
from staccato.urls import EndpointURL, parse_url

#: the endpoint name of every local path (one site per task queue)
FILE_ENDPOINT = "file://"
#: workflow id prefix of the governor of an endpoint or link
GOVERNOR_ID_PREFIX = "staccato-governor-"
_DEFAULT_PORTS = {"http": 80, "https": 443, "sftp": 22}
#: a DNS name (labels of letters, digits and inner hyphens, RFC 1123 section 2.1, none
#: empty) or a bracketed IPv6 address
_HOST_RE = re.compile(
    r"^[a-z0-9]([a-z0-9\-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9\-]*[a-z0-9])?)*\.?$|^\[[0-9a-f:.]+\]$"
)
_FORMS = (
    "expected an endpoint (http://HOST[:PORT], https://HOST[:PORT], sftp://HOST[:PORT], "
    "s3://BUCKET[?profile=NAME], file://) or a link SRC_ENDPOINT,DST_ENDPOINT"
)


#: the forms of a link alone (``staccato limit learned``: tuning is learned per link)
LINK_FORMS = (
    "expected a link SRC_ENDPOINT,DST_ENDPOINT, each endpoint one of http://HOST[:PORT], "
    "https://HOST[:PORT], sftp://HOST[:PORT], s3://BUCKET[?profile=NAME], file://"
)


def parse_link(text: str) -> LimitTarget:
    """Validate a link (``SRC_ENDPOINT,DST_ENDPOINT``) as typed by a user.

    Raises:
        LimitTargetError: not a link (an endpoint alone, or a malformed one); the
            message names the text and the link's form.
    """
    try:
        target = parse_limit_target(text)
    except LimitTargetError as err:
        raise LimitTargetError(str(err).replace(_FORMS, LINK_FORMS)) from None
    if not target.is_link:
        raise LimitTargetError(
            f"{target.name} is an endpoint: tuning is learned per link; {LINK_FORMS}"
        )
    return target


class LimitTargetError(ValueError):
    """A text that is neither an endpoint nor a link name; the message names it and
    the forms expected."""


@dataclass(frozen=True)
class LimitTarget:
    """An endpoint or a link, by its canonical name.

    Attributes:
        name: ``http://host:80`` or ``sftp://h:22,file://``.
        endpoints: the one endpoint, or the link's (source, destination).
    """

    name: str
    endpoints: tuple[str, ...]

    @property
    def is_link(self) -> bool:
        """Whether this is a (source, destination) pair."""
        return len(self.endpoints) == 2


def endpoint_of(url: EndpointURL | str) -> str:
    """The endpoint name of a URL (see the module docstring for the forms).

    Raises:
        InvalidURLError: ``url`` is text that is not a valid URL or path.
    """
    if isinstance(url, str):
        url = parse_url(url)
    if url.scheme == "file":
        return FILE_ENDPOINT
    if url.scheme == "s3":
        profile = url.params.get("profile")
        return f"s3://{url.bucket}" + (f"?profile={quote(profile, safe='')}" if profile else "")
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{url.scheme}://{host}:{url.port or _DEFAULT_PORTS[url.scheme]}"


#: why a local file source reads no known copy (the workflow and ``find_known_copy``)
LOCAL_ORIGIN_REASON = (
    "a local file source is read from disk: no known copy is cheaper than the origin"
)


def local_origin(source: str) -> bool:
    """Whether ``source`` is a local file, which no copy is cheaper to read than
    (:mod:`staccato.known_copies`; the workflow asks it too, so it lives here).

    Raises:
        InvalidURLError: ``source`` is not a valid URL or path.
    """
    return endpoint_of(source) == FILE_ENDPOINT


def link_of(source: str, destination: str) -> str:
    """The link name ``SRC_ENDPOINT,DST_ENDPOINT`` of a transfer's URLs."""
    return f"{endpoint_of(source)},{endpoint_of(destination)}"


def tuned_link(link: str) -> bool:
    """Whether the per-link optimizer (:mod:`staccato.tuning`) tunes transfers on
    ``link`` (a name from :func:`link_of`): every link but ``file://,file://``.

    A local copy (file -> file) has no link to learn: its streams measure the page
    cache and the disk's flushes, and the optimizer made a default ``staccato cp``
    slower there. Measured 2026-12-07 (1 GiB local copy, load ~12, three alternated
    pairs): tuned 3.42/2.63/2.17 s against the fixed ``--streams 4 --chunk-size 16MiB``
    2.89/2.23/1.81 s (~18 % slower; a newcomer saw 3.9 s against 2.0 s), after the
    link had learned "16 streams x 16 MiB at 778 MiB/s" (page-cache rates). The
    loopback bench's file -> file row runs the fixed 4 x 16 MiB too. So a local copy
    given neither ``--streams`` nor ``--chunk-size`` runs the request's fixed defaults
    and its link learns nothing (``recall_link_tuning`` says tuning is off for it).

    Pure: used by the worker's ``recall_link_tuning``, the client's start memo and
    status.
    """
    return link != f"{FILE_ENDPOINT},{FILE_ENDPOINT}"


def governor_id(name: str) -> str:
    """The workflow id of the governor of ``name`` (an endpoint or link name):
    ``staccato-governor-`` + 32 hex digits of SHA-256 of the name."""
    return GOVERNOR_ID_PREFIX + hashlib.sha256(name.encode()).hexdigest()[:32]


def transfer_governors(source: str, destination: str) -> list[str]:
    """The names a transfer asks, in the order it asks them (sorted: every transfer
    takes them in one global order, so two can never wait for each other)."""
    src, dst = endpoint_of(source), endpoint_of(destination)
    return sorted({src, dst, f"{src},{dst}"})


def parse_endpoint(text: str) -> str:
    """The canonical endpoint name of ``text`` (``HTTP://Host`` -> ``http://host:80``).

    Raises:
        LimitTargetError: not an endpoint form (the message names the text).
    """
    original = text
    text = text.strip()
    if text in ("file://", "file:", "file:///"):
        return FILE_ENDPOINT
    if text.lower().startswith("file:"):
        raise LimitTargetError(
            f"malformed file endpoint {original!r}: the local file systems are one endpoint, "
            "written file:// (no host or path)"
        )
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.\-]*)://(.*)$", text)
    if not match:
        raise LimitTargetError(f"unknown endpoint form {original!r}: {_FORMS}")
    scheme, rest = match.group(1).lower(), match.group(2)
    if scheme == "s3":
        path, _, query = rest.partition("?")
        bucket, _, key = path.partition("/")
        if query and not re.match(r"^profile=[^&=]+$", query):
            raise LimitTargetError(
                f"malformed S3 endpoint {original!r}: the only query understood is ?profile=NAME"
            )
        if key.strip("/"):
            raise LimitTargetError(
                f"malformed S3 endpoint {original!r}: an endpoint is s3://BUCKET[?profile=NAME] "
                "(no key)"
            )
        try:
            # parse_url checks the bucket name (and the profile); the key is a placeholder
            url = parse_url(f"s3://{bucket}/x" + (f"?{query}" if query else ""))
        except (ValueError, InvalidURLError) as err:
            if not bucket:
                why = "no bucket; expected s3://BUCKET[?profile=NAME]"
            elif "bucket" in str(err):
                why = (
                    f"{bucket!r} is not a bucket name (3-63 characters of lowercase letters, "
                    "digits, '.' and '-', starting and ending with a letter or digit)"
                )
            else:
                why = "expected s3://BUCKET[?profile=NAME]"
            raise LimitTargetError(f"malformed S3 endpoint {original!r}: {why}") from None
        return endpoint_of(url)
    if scheme not in _DEFAULT_PORTS:
        raise LimitTargetError(f"unknown endpoint scheme {scheme!r} in {original!r}: {_FORMS}")
    if "/" in rest.rstrip("/") or "?" in rest or "#" in rest or "@" in rest:
        raise LimitTargetError(
            f"malformed endpoint {original!r}: an endpoint is {scheme}://HOST[:PORT] "
            "(no user, path or query)"
        )
    try:
        parts = urlsplit(f"{scheme}://{rest.rstrip('/')}")
        port = _DEFAULT_PORTS[scheme] if parts.port is None else parts.port
    except ValueError as err:
        # urllib's "Port out of range 0-65535" (99999) reads as the port-0 message
        why = "the port must be 1-65535" if "out of range" in str(err) else str(err)
        raise LimitTargetError(f"malformed endpoint {original!r}: {why}") from None
    if not 1 <= port <= 65535:
        raise LimitTargetError(f"malformed endpoint {original!r}: the port must be 1-65535")
    host = (parts.hostname or "").lower()
    shown = f"[{host}]" if ":" in host else host
    if not host or not _HOST_RE.match(shown):
        raise LimitTargetError(f"malformed endpoint {original!r}: no valid host; {_FORMS}")
    return f"{scheme}://{shown}:{port}"


def parse_limit_target(text: str) -> LimitTarget:
    """Validate an endpoint or link as typed by a user.

    Raises:
        LimitTargetError: empty, not one of the forms, or a link without two endpoints;
            the message names the text and the expected forms.
    """
    if not text or not text.strip():
        raise LimitTargetError(f"empty target: {_FORMS}")
    parts = text.split(",")
    if len(parts) > 2 or any(not p.strip() for p in parts):
        raise LimitTargetError(f"malformed link {text!r}: {_FORMS}")
    endpoints = tuple(parse_endpoint(p) for p in parts)
    if len(endpoints) == 2:
        destination = endpoints[1]
        if destination.startswith(("http://", "https://")):
            raise LimitTargetError(
                f"malformed link {text!r}: {destination} cannot be a destination (HTTP "
                "endpoints are read from only), so no transfer would ever use this link"
            )
    return LimitTarget(name=",".join(endpoints), endpoints=endpoints)
