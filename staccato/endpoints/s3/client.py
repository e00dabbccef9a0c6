"""The boto3 S3 client of one AWS profile, configured for AWS or for an S3-compatible
store on a custom endpoint.

The configuration is the worker's standard AWS configuration (environment, shared
config and credentials files, the profile named by ``?profile=``), resolved the way
boto3 does. Off AWS, requests use path-style addressing and botocore's checksum
trailers only when required, unless the profile or the environment says otherwise;
uploads never hash their payload with SHA-256 (each part carries a CRC32C instead).
A throttling answer with ``Retry-After`` is handed to Temporal rather than retried
inside botocore (:func:`_honour_retry_after`).

The driver keeps one :class:`_Endpoint` per profile and process for as long as the AWS
configuration it was made from is unchanged
(:meth:`staccato.endpoints.s3.driver.S3Driver.endpoint`), so an edited config or
credentials file is picked up without restarting the worker.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import boto3
import botocore.session
import botocore.utils
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ProfileNotFound

from staccato import interrupts, sockets
from staccato.endpoints.base import write_fence
from staccato.endpoints.s3.errors import _URL_USERINFO, _retry_after_s, _RetryAfter, _scrub
from staccato.errors import PermanentError

_AWS_HOST = re.compile(r"(^|\.)amazonaws\.com(\.cn)?$")
#: throttling answers whose ``Retry-After`` header (RFC 9110 section 10.2.3) is honoured
_THROTTLING_STATUS = (429, 503)
#: the brief client's bounds (:attr:`_Endpoint.brief`): seconds to connect, seconds
#: a request may wait for an answer, and botocore's attempts (1: the caller retries)
BRIEF_CONNECT_TIMEOUT_S = 5
BRIEF_READ_TIMEOUT_S = 10
BRIEF_ATTEMPTS = 1
_BRIEF_LOCK = threading.Lock()


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
    #: makes :attr:`brief` (once, when first asked for)
    make_brief: Callable[[], Any] | None = field(default=None, repr=False, compare=False)
    _brief: list[Any] = field(default_factory=list, repr=False, compare=False)

    @property
    def brief(self) -> Any:
        """A second client of the same profile and settings whose requests give up
        soon: :data:`BRIEF_CONNECT_TIMEOUT_S` to connect, :data:`BRIEF_READ_TIMEOUT_S`
        for an answer, :data:`BRIEF_ATTEMPTS` attempt (no botocore retry). For the
        clean-up's small requests (AbortMultipartUpload, ListParts), which its caller
        retries: with the main client's 60 s read timeout and botocore's retries, each
        clean-up attempt against a hung server took a minute and more, and a cancelled
        transfer's clean-up 11 minutes (tester63). Made once per endpoint, when first
        used; the main client when none can be made."""
        if self.make_brief is None:
            return self.client
        with _BRIEF_LOCK:
            if not self._brief:
                self._brief.append(self.make_brief())
            return self._brief[0]

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


#: the requests that write to a destination: each checks the running attempt's lease
#: right before botocore sends it (each of its retries too)
_FENCED_OPERATIONS = ("PutObject", "UploadPart", "CompleteMultipartUpload")


def _fenced_send(**_: Any) -> None:
    """``before-send`` handler of the writing requests: :func:`write_fence` between
    signing and sending each of botocore's attempts, so a check made before the call
    does not cover a request sent after botocore's retry backoff or a wait for a
    connection (an attempt's lease may run out meanwhile: its process frozen).

    Raises:
        StreamLeaseExpiredError: the lease ran out; botocore does not retry it and the
            caller gets it as is.
    """
    write_fence()


def _configured(scoped: Mapping[str, Any], name: str, env: str) -> Any:
    """A setting the user configured (environment or profile), or None."""
    return os.environ.get(env) or scoped.get(name)


def register_sockets_per_thread() -> None:
    """Have every botocore connection register its socket with
    :mod:`staccato.interrupts` for the thread that sends on it (idempotent).

    urllib3 keeps connections in a pool shared by a process's threads: one made by a
    stream is reused by another, and nothing registered botocore's sockets at all, so
    a stream blocked sending to or waiting for a hung S3 server (SIGSTOPped: the kernel
    keeps accepting, nothing answers) could not be freed by its guard or its retry
    deadline's hang watch: its thread stayed blocked for botocore's timeouts and
    retries (a minute and more). Registered at each send, the blocked ``send``/``recv``
    returns when the thread is interrupted."""
    from botocore.awsrequest import AWSConnection

    if getattr(AWSConnection, "_staccato_registers_sockets", False):
        return
    original = AWSConnection.send

    def send(self: Any, data: Any) -> Any:
        if getattr(self, "sock", None) is None and getattr(self, "auto_open", False):
            # http.client connects in ``send`` itself: connect here instead, so the
            # new socket is registered before its first request goes out (a GET on a
            # new connection sends once: registered after it, its blocked ``recv``
            # of a stopped server's answer was never shut down)
            self.connect()
        sock = getattr(self, "sock", None)
        if sock is not None:
            interrupts.register_socket(sock)
        return original(self, data)

    AWSConnection.send = send  # type: ignore[method-assign]
    AWSConnection._staccato_registers_sockets = True  # type: ignore[attr-defined]


def _size_socket_buffers(client: Any) -> None:
    """Give the client's new connections the worker's fixed socket buffer size
    (``STACCATO_SOCKET_BUFFER_BYTES``, see :mod:`staccato.sockets`), set before they
    connect. botocore has no public option for it: its urllib3 session keeps the socket
    options in ``_socket_options``, applied to every pool it makes; a botocore without
    it is left as it is."""
    size = sockets.chosen()
    session = getattr(getattr(client, "_endpoint", None), "http_session", None)
    options = getattr(session, "_socket_options", None)
    if size is None or not isinstance(options, list):
        return
    options.extend(
        [(socket.SOL_SOCKET, socket.SO_SNDBUF, size), (socket.SOL_SOCKET, socket.SO_RCVBUF, size)]
    )


def _parse_timestamp(value: Any) -> datetime:
    """A timestamp of an S3 answer as botocore parses it (its default parser,
    ``botocore.utils.parse_timestamp``: dateutil), the ISO 8601 form with a zone S3's
    XML answers carry (``2026-12-02T13:40:01.123Z``) parsed by
    ``datetime.fromisoformat`` first (Python 3.11 reads ``Z``); anything else (an
    RFC 7231 date, epoch seconds, no zone) goes to botocore's parser.

    Raises:
        ValueError, TypeError: as ``botocore.utils.parse_timestamp``.
    """
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed
    return botocore.utils.parse_timestamp(value)  # type: ignore[no-any-return]


def warm_imports() -> None:
    """Import what boto3 imports lazily when a process makes its first client
    (botocore's client, endpoint, HTTP session with urllib3, signers, parsers, retry
    handlers), by making a throwaway client (no request is sent). Each worker process
    calls it (through :func:`staccato.endpoints.import_drivers`) before its activity
    threads start: two threads making their first clients at once import those modules
    together, and a circular import across threads hands one of them a half-initialised
    module (seen: ``AttributeError: module 'urllib3' has no attribute 'util'``, which
    failed a resumed upload as an internal error)."""
    import botocore.client
    import botocore.endpoint
    import botocore.httpsession
    import botocore.retries.standard
    import urllib3.util.ssl_  # noqa: F401  (the module whose half-import was seen)

    try:
        client = boto3.session.Session(botocore_session=botocore.session.Session()).client(
            "s3",
            region_name="us-east-1",
            endpoint_url="http://127.0.0.1:9",
            aws_access_key_id="warm-imports",
            aws_secret_access_key="warm-imports",
            config=Config(retries={"mode": "standard"}),
        )
    except (BotoCoreError, ValueError):  # a broken AWS configuration: the first use says so
        return
    client.close()


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
    # ListObjectsV2 answers one ISO 8601 LastModified per key: parsed by the standard
    # library instead of dateutil (~5 us instead of ~100 us a key)
    core.get_component("response_parser_factory").set_parser_defaults(
        timestamp_parser=_parse_timestamp
    )
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
        s3_options["addressing_style"] = "path"  # an S3-compatible store: no bucket DNS names
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
    brief_settings = {
        **settings,
        "connect_timeout": BRIEF_CONNECT_TIMEOUT_S,
        "read_timeout": BRIEF_READ_TIMEOUT_S,
        "retries": {**settings["retries"], "total_max_attempts": BRIEF_ATTEMPTS},
    }

    def make_brief() -> Any:
        brief = session.client("s3", config=Config(**brief_settings))
        brief.meta.events.register_first("needs-retry.s3", _honour_retry_after)
        return brief

    for operation in _FENCED_OPERATIONS:
        client.meta.events.register(f"before-send.s3.{operation}", _fenced_send)
    _size_socket_buffers(client)
    register_sockets_per_thread()
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
        make_brief=make_brief,
    )
