"""HTTP servers as users met them: a server that answers a Range request with 200 and
the whole body, a body that ends before its Content-Length, a server that refuses
HEAD; and servers that are slow, busy or redirect elsewhere."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import select
import socket
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from staccato.client import StaccatoClient
from staccato.endpoints.http import HTTPDriver
from staccato.errors import (
    InvalidURLError,
    NotFoundError,
    RetryableError,
    StaccatoError,
    TransferFailedError,
)
from staccato.models import TransferOptions, TransferState
from staccato.urls import parse_url
from tests.helpers import MiB, WorkerProcess, leftovers, sha256_file, wait_for_status, write_random
from tests.servers.nginx import NginxServer

OPTIONS = TransferOptions(chunk_size=1 * MiB, streams=4, heartbeat_timeout_s=5)

#: seconds within which a read of headers dripped one byte every 0.2 s must end at its
#: 1 s deadline: the headers (76 bytes) take 15 s; 3 s was within reach of a machine at
#: load 15 (a correctness bound, not a speed one)
DRIPPED_WITHIN_S = 8.0


class QuirkyServer(ThreadingHTTPServer):
    """A real HTTP/1.1 server on 127.0.0.1 that misbehaves the way some servers do.

    Args:
        data: the one resource, served at any path.
        ignore_ranges: advertise ``Accept-Ranges: bytes`` but answer every Range with
            200 and the whole body (as proxies that strip ranges do).
        ignore_larger_ranges: as ``ignore_ranges``, but the one-byte probe
            (``bytes=0-0``) is answered 206 as asked.
        truncate_first: the first N GET responses end halfway through their announced
            Content-Length and the connection is closed.
        drip_every_s: GETs other than the one-byte range probe get their headers, then
            one byte of body every this many seconds, until the client goes away.
        unavailable_first: the first N requests of method ``unavailable_method`` (a
            ``GET`` range probe does not count) are answered ``503`` with
            ``Retry-After: <retry_after>``.
        redirect_to: answer every request with ``302`` to this URL.
        not_found: answer every request with ``404``.
        drip_headers_s: answer every request by sending its status line and headers
            one byte every this many seconds.
    """

    def __init__(
        self,
        data: bytes,
        *,
        ignore_ranges: bool = False,
        ignore_larger_ranges: bool = False,
        truncate_first: int = 0,
        drip_every_s: float | None = None,
        unavailable_first: int = 0,
        unavailable_method: str = "GET",
        retry_after: str = "2",
        redirect_to: str | None = None,
        not_found: bool = False,
        drip_headers_s: float | None = None,
    ) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.data = data
        self.ignore_ranges = ignore_ranges
        self.ignore_larger_ranges = ignore_larger_ranges
        self.truncate_left = truncate_first
        self.drip_every_s = drip_every_s
        self.unavailable_left = unavailable_first
        self.unavailable_method = unavailable_method
        self.retry_after = retry_after
        self.redirect_to = redirect_to
        self.not_found = not_found
        self.drip_headers_s = drip_headers_s
        self.gets: list[str] = []
        #: every request: (monotonic time, method, Range, headers, answered status)
        self.requests: list[tuple[float, str, str, dict[str, str], int]] = []
        self.drips_started = 0
        self.drips_open = 0  # drip responses whose client has not gone away yet
        self.stopping = threading.Event()
        self.lock = threading.Lock()

    scheme = "http"  # "https" once the listening socket is wrapped (see the tls fixture)

    def url(self, path: str = "/object.bin") -> str:
        return f"{self.scheme}://127.0.0.1:{self.server_address[1]}{path}"

    def shutdown(self) -> None:
        self.stopping.set()
        super().shutdown()

    def handle_error(self, request: object, client_address: object) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client that closed with a body unread: expected here
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: QuirkyServer

    def log_message(self, *args: object) -> None:
        pass

    def _headers(self, status: int, length: int, extra: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        self.send_header("ETag", '"v1"')
        self.send_header("Accept-Ranges", "bytes")
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()

    def _special(self, method: str) -> bool:
        """Record the request; answer it here if it is to be refused or redirected."""
        server = self.server
        probe = self.headers.get("Range") == "bytes=0-0"
        with server.lock:
            status = 0
            if server.drip_headers_s is not None:
                status = 1
            elif server.redirect_to:
                status = 302
            elif server.not_found:
                status = 404
            elif server.unavailable_left > 0 and method == server.unavailable_method and not probe:
                server.unavailable_left -= 1
                status = 503
            server.requests.append(
                (
                    time.monotonic(),
                    method,
                    self.headers.get("Range", ""),
                    dict(self.headers),
                    status,
                )
            )
        if status == 1:
            assert server.drip_headers_s is not None
            head = (
                f"HTTP/1.1 200 OK\r\nContent-Length: {len(server.data)}\r\n"
                'ETag: "v1"\r\nAccept-Ranges: bytes\r\n\r\n'
            ).encode()
            self.close_connection = True
            for i in range(len(head)):
                try:
                    readable, _, _ = select.select([self.connection], [], [], server.drip_headers_s)
                    if server.stopping.is_set() or (readable and not self.connection.recv(1)):
                        break
                    self.wfile.write(head[i : i + 1])
                    self.wfile.flush()
                except OSError:
                    break
        elif status == 302:
            assert server.redirect_to is not None
            self._headers(302, 0, {"Location": server.redirect_to})
        elif status == 503:
            self._headers(503, 0, {"Retry-After": server.retry_after})
        elif status == 404:
            self._headers(404, 0, {})
        return status != 0

    def _drip(self, status: int, body: bytes, extra: dict[str, str]) -> None:
        """Headers, then one byte every ``drip_every_s`` until the client closes."""
        server = self.server
        assert server.drip_every_s is not None
        self._headers(status, len(body), extra)
        self.wfile.flush()
        with server.lock:
            server.drips_started += 1
            server.drips_open += 1
        try:
            for i in range(len(body)):
                readable, _, _ = select.select([self.connection], [], [], server.drip_every_s)
                if server.stopping.is_set() or (readable and not self.connection.recv(1)):
                    return  # the client went away (or the test ends)
                self.wfile.write(body[i : i + 1])
                self.wfile.flush()
        except OSError:
            return
        finally:
            self.close_connection = True
            with server.lock:
                server.drips_open -= 1

    def do_HEAD(self) -> None:
        if self._special("HEAD"):
            return
        self._headers(200, len(self.server.data), {})

    def do_GET(self) -> None:
        if self._special("GET"):
            return
        data = self.server.data
        match = re.match(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
        with self.server.lock:
            self.server.gets.append(self.headers.get("Range", ""))
            probe = self.headers.get("Range") == "bytes=0-0"
            truncate = self.server.truncate_left > 0 and not probe
            if truncate:
                self.server.truncate_left -= 1
        ignored = self.server.ignore_ranges or (self.server.ignore_larger_ranges and not probe)
        if match and not ignored:
            start, end = int(match.group(1)), min(int(match.group(2)), len(data) - 1)
            body = data[start : end + 1]
            extra = {"Content-Range": f"bytes {start}-{end}/{len(data)}"}
            status = 206
        else:
            body = data
            extra = {}
            status = 200
        if self.server.drip_every_s is not None and not probe:
            self._drip(status, body, extra)
            return
        self._headers(status, len(body), extra)
        if truncate:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def quirky() -> Iterator[list[QuirkyServer]]:
    servers: list[QuirkyServer] = []
    yield servers
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Makes a QuirkyServer speak HTTPS with a self-signed certificate for 127.0.0.1,
    trusted by this process through ``SSL_CERT_FILE`` (create drivers afterwards)."""
    import ssl
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        # an EC key: generated at once, where an RSA key's prime search took over 60 s on
        # a CI machine at load average 69
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        + ["-nodes", "-days", "1"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
        timeout=300,
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    def secure(server: QuirkyServer) -> QuirkyServer:
        server.socket = context.wrap_socket(server.socket, server_side=True)
        server.scheme = "https"
        return server

    return secure


def _serve(servers: list[QuirkyServer], server: QuirkyServer) -> QuirkyServer:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    servers.append(server)
    return server


async def test_ranges_advertised_but_ignored(
    client: StaccatoClient, quirky, data_dir: Path
) -> None:
    """A server that answers a Range request with 200 and the whole body: detected, read in one stream, never
    written at a chunk's offset."""
    source = data_dir / "ignored-ranges.bin"
    digest = write_random(source, 5 * MiB + 3)
    server = _serve(quirky, QuirkyServer(source.read_bytes(), ignore_ranges=True))
    destination = data_dir / "ignored-ranges.out"
    result = await client.wait(await client.submit(server.url(), str(destination), OPTIONS))
    assert result.bytes == 5 * MiB + 3
    assert sha256_file(destination) == digest
    assert (
        len([g for g in server.gets if g != "bytes=0-0"]) == 1
    )  # one whole read, not one per stream


async def test_larger_ranges_ignored_after_an_honoured_probe(
    client: StaccatoClient, quirky, data_dir: Path
) -> None:
    """A server that answers the one-byte probe with 206 but bigger ranges with 200 and
    the whole, unchanged object (same ETag): the transfer fails saying the server
    ignores ranges and how to copy it, not that the source changed (a tester saw
    "source changed during the transfer" for a source nobody touched); nothing is
    written."""
    source = data_dir / "probe-only.bin"
    write_random(source, 3 * MiB + 1)
    server = _serve(quirky, QuirkyServer(source.read_bytes(), ignore_larger_ranges=True))
    destination = data_dir / "probe-only.out"
    with pytest.raises(TransferFailedError) as failure:
        await client.wait(await client.submit(server.url(), str(destination), OPTIONS))
    message = str(failure.value)
    assert "ignores byte ranges" in message and "--stage" in message, message
    assert "source changed" not in message, message
    assert not destination.exists() and leftovers(data_dir) == []


async def test_body_shorter_than_content_length(
    client: StaccatoClient, quirky, data_dir: Path
) -> None:
    """A body that ends before its Content-Length is retried from a validated Range; never a short file."""
    source = data_dir / "short-body.bin"
    digest = write_random(source, 6 * MiB + 1)
    server = _serve(quirky, QuirkyServer(source.read_bytes(), truncate_first=2))
    destination = data_dir / "short-body.out"
    result = await client.wait(await client.submit(server.url(), str(destination), OPTIONS))
    assert result.bytes == 6 * MiB + 1
    assert sha256_file(destination) == digest
    assert server.truncate_left == 0, (
        "the server never truncated a response: the test proved nothing"
    )
    assert leftovers(data_dir) == []


async def test_head_refused(client: StaccatoClient, http_root: Path, data_dir: Path) -> None:
    """A server that refuses HEAD (405) still serves GET: stat falls back to a ranged GET."""
    server = NginxServer(
        http_root, extra_server_config="if ($request_method = HEAD) { return 405; }"
    )
    server.start()
    try:
        digest = write_random(http_root / "head-refused.bin", 3 * MiB + 7)
        destination = data_dir / "head-refused.out"
        result = await client.wait(
            await client.submit(server.url("head-refused.bin"), str(destination), OPTIONS)
        )
        assert result.bytes == 3 * MiB + 7
        assert sha256_file(destination) == digest
        assert any(r["method"] == "HEAD" and r["status"] == 405 for r in server.requests())
    finally:
        server.stop()


async def _until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s} s")
        await asyncio.sleep(0.1)


async def test_slow_drip_source_fails_its_attempt_and_frees_its_process(
    temporal_server, quirky, data_dir: Path, tmp_path: Path
) -> None:
    """A source sending one byte every 0.5 s: the minimum-rate watchdog (shortened to
    a 2 s window) fails each attempt with a reason naming the source, the rate and the
    setting; each attempt lets go of its connection and its process, so the transfer
    keeps retrying on a 2-process worker and another transfer on that worker completes
    meanwhile. A cancel then stops the stream waiting on the drip within seconds."""
    drip = _serve(quirky, QuirkyServer(os.urandom(256 * 1024), drip_every_s=0.5))
    source = data_dir / "other.bin"
    digest = write_random(source, 1 * MiB + 17)
    other = _serve(quirky, QuirkyServer(source.read_bytes()))
    env = {"STACCATO_MIN_RATE_BYTES_PER_S": "1024", "STACCATO_MIN_RATE_WINDOW_S": "2"}
    with WorkerProcess(temporal_server.address, processes=2, env=env, log_dir=tmp_path) as worker:
        client = await StaccatoClient.connect(
            target_host=temporal_server.address, namespace="default"
        )
        client.task_queue = worker.task_queue
        options = TransferOptions(chunk_size=1 * MiB, streams=1, heartbeat_timeout_s=5)
        dripping = await client.submit(drip.url(), str(data_dir / "drip.out"), options)
        try:
            # More attempts than the worker has processes: were an attempt left blocked
            # in its read, the third could never start.
            await _until(lambda: drip.drips_started >= 3, 60, "third drip attempt")
            status = await wait_for_status(
                client,
                dripping,
                lambda s: bool(s.last_retry_error and "too slow" in s.last_retry_error),
                timeout_s=30,
            )
            reason = status.last_retry_error or ""
            assert drip.url() in reason, reason
            assert "bytes/s" in reason and "STACCATO_MIN_RATE_BYTES_PER_S" in reason, reason
            # at the server: earlier attempts closed their connections
            await _until(lambda: drip.drips_open <= 1, 10, "earlier drip connections closed")

            second = await client.submit(other.url(), str(data_dir / "other.out"), options)
            # the bound is a correctness one: with its processes held by drips the
            # worker never runs it; a 1 MiB copy at load 15 takes several times its
            # quiet second or two
            result = await asyncio.wait_for(client.wait(second), timeout=60)
            assert result.bytes == 1 * MiB + 17
            assert sha256_file(data_dir / "other.out") == digest
            still = await client.status(dripping)
            assert still.state == TransferState.running, still

            # a cancel reaches the stream waiting on the drip within seconds
            started = time.monotonic()
            await client.cancel(dripping)
            await wait_for_status(
                client, dripping, lambda s: s.state == TransferState.cancelled, timeout_s=30
            )
            await _until(lambda: drip.drips_open == 0, 10, "drip connection closed on cancel")
            assert time.monotonic() - started < 10
        finally:
            with contextlib.suppress(Exception):
                await client.cancel(dripping)


@pytest.mark.parametrize("method", ["HEAD", "GET"])
async def test_retry_after_is_honoured(
    client: StaccatoClient, quirky, data_dir: Path, method: str
) -> None:
    """Three 503s with ``Retry-After: 2`` (to stat's HEAD, or to the stream's GET): the
    server sees each next attempt at least 2 s after the 503, and the transfer completes."""
    source = data_dir / "busy.bin"
    digest = write_random(source, 1 * MiB + 5)
    server = _serve(
        quirky,
        QuirkyServer(
            source.read_bytes(), unavailable_first=3, unavailable_method=method, retry_after="2"
        ),
    )
    destination = data_dir / "busy.out"
    options = TransferOptions(chunk_size=1 * MiB, streams=1, heartbeat_timeout_s=5)
    transfer = await client.submit(server.url(), str(destination), options)
    result = await asyncio.wait_for(client.wait(transfer), timeout=60)
    assert result.bytes == 1 * MiB + 5
    assert sha256_file(destination) == digest
    attempts = [
        (at, status)
        for at, m, range_, _, status in server.requests
        if m == method and range_ != "bytes=0-0"
    ]
    assert [status for _, status in attempts[:4]] == [503, 503, 503, 0], attempts
    gaps = [
        later[0] - earlier[0] for earlier, later in zip(attempts[:3], attempts[1:4], strict=True)
    ]
    assert all(gap >= 2.0 for gap in gaps), gaps


def test_redirect_to_another_origin_drops_credentials(quirky) -> None:
    """Credentials configured for a source's origin (Authorization, Cookie) reach that
    origin only: neither stat nor the bulk read sends them to the server a redirect
    leads to (another port is another origin), nor to a source there. The redirect target (a presigned URL
    with its token) is not kept in what stat returns (that goes to workflow history):
    each read follows the redirect itself."""
    data = os.urandom(300_000)
    target = _serve(quirky, QuirkyServer(data))
    redirector = _serve(
        quirky, QuirkyServer(b"", redirect_to=target.url("/object.bin?sig=s3cret-sig"))
    )
    secret = "Bearer s3cret-value"
    driver = HTTPDriver(
        origin_headers={
            redirector.url("/"): {"Authorization": secret, "Cookie": "session=s3cret-value"}
        }
    )
    url = parse_url(redirector.url())
    info = driver.stat(url)
    assert info.size == len(data)
    assert "s3cret" not in info.model_dump_json()
    with driver.open_read(url, info, 1000, len(data) - 1000) as reader:
        buffer = memoryview(bytearray(len(data) - 1000))
        assert reader.readinto_full(buffer) == len(data) - 1000
    assert bytes(buffer) == data[1000:]
    assert redirector.requests and all(
        headers.get("Authorization") == secret for _, _, _, headers, _ in redirector.requests
    )
    driver.stat(parse_url(target.url()))  # an origin with no headers configured
    seen = [(m, r, h) for _, m, r, h, _ in target.requests]
    assert {m for m, _, _ in seen} >= {"HEAD", "GET"}, seen
    for _, _, headers in seen:
        names = {name.lower() for name in headers}
        assert not names & {"authorization", "cookie", "proxy-authorization"}, headers


def test_error_messages_hide_query_values(quirky) -> None:
    """A URL with ``?token=abc``: 503, 404 and a refused connection at stat, 503 and a
    refused connection
    on the bulk read: no message shows ``abc``, each still names the URL."""
    data = os.urandom(10_000)
    driver = HTTPDriver()
    busy = _serve(quirky, QuirkyServer(data, unavailable_first=1, unavailable_method="HEAD"))
    url = parse_url(busy.url("/object.bin?token=abc"))
    with pytest.raises(RetryableError) as unavailable:
        driver.stat(url)
    info = driver.stat(url)
    missing = _serve(quirky, QuirkyServer(data, not_found=True))
    with pytest.raises(NotFoundError) as not_found:
        driver.stat(parse_url(missing.url("/gone.bin?token=abc")))
    errors: list[StaccatoError] = [unavailable.value, not_found.value]

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with pytest.raises(RetryableError) as refused:
        driver.stat(parse_url(f"http://127.0.0.1:{closed_port}/x?token=abc"))
    errors.append(refused.value)
    busy_reads = _serve(quirky, QuirkyServer(data, unavailable_first=1, unavailable_method="GET"))
    with pytest.raises(RetryableError) as read_unavailable:
        driver.open_read(parse_url(busy_reads.url("/o?token=abc")), info, 0, 100)
    errors.append(read_unavailable.value)
    refused_info = info.model_copy(update={"extra": {}})
    with pytest.raises(RetryableError) as read_refused:
        driver.open_read(
            parse_url(f"http://127.0.0.1:{closed_port}/x?token=abc"), refused_info, 0, 100
        )
    errors.append(read_refused.value)
    for error in errors:
        assert "abc" not in str(error), error
        assert "token=REDACTED" in str(error), error


def test_httpx_log_lines_hide_query_values(quirky, caplog: pytest.LogCaptureFixture) -> None:
    """httpx logs each request's URL at INFO: the token in its query is not shown."""
    server = _serve(quirky, QuirkyServer(os.urandom(1000)))
    with caplog.at_level(logging.INFO, logger="httpx"):
        HTTPDriver().stat(parse_url(server.url("/object.bin?token=abc")))
    lines = [record.getMessage() for record in caplog.records if record.name == "httpx"]
    assert lines and all("abc" not in line for line in lines), lines
    assert any("token=REDACTED" in line for line in lines), lines


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_dripping_headers_are_bounded(
    quirky, monkeypatch: pytest.MonkeyPatch, tls, scheme: str
) -> None:
    """A server that sends its response headers one byte every 0.2 s (no read ever
    times out; over TLS, one record per byte):
    stat gives up at its request deadline (shortened to 1 s) with a retryable error; the
    bulk read keeps calling keepalive while it waits (the stream heartbeats, sees a
    cancel, and runs its minimum-rate watchdog there)."""
    from staccato.endpoints.base import keepalive_hook
    from staccato.endpoints.http import driver as http_driver

    monkeypatch.setattr(http_driver, "REQUEST_DEADLINE_S", 1.0)
    data = os.urandom(50_000)
    server = QuirkyServer(data, drip_headers_s=0.2)
    server = _serve(quirky, tls(server) if scheme == "https" else server)
    driver = HTTPDriver()
    url = parse_url(server.url("/slow.bin?token=abc"))
    started = time.monotonic()
    with pytest.raises(RetryableError) as late:
        driver.stat(url)
    # the dripped headers (76 bytes) take 15 s: a bound far from them, above 1 s at load
    assert time.monotonic() - started < DRIPPED_WITHIN_S
    assert "took longer than 1 s" in str(late.value) and "abc" not in str(late.value)

    class Stop(Exception):
        pass

    calls: list[float] = []

    def hook() -> None:
        calls.append(time.monotonic())
        if len(calls) >= 4:
            raise Stop

    plain = QuirkyServer(data)
    info = driver.stat(parse_url(_serve(quirky, tls(plain) if scheme == "https" else plain).url()))
    started = time.monotonic()
    with keepalive_hook(hook), pytest.raises(Stop):
        driver.open_read(url, info, 0, len(data))
    assert time.monotonic() - started < DRIPPED_WITHIN_S


def test_server_without_ranges_read_from_an_offset(quirky) -> None:
    """A server that ignores ranges, read from an offset: the bytes before it are
    skipped on the first read (counted in ``bytes_read``), the range is exact."""
    data = os.urandom(3 * 1024 * 1024 + 11)
    server = _serve(quirky, QuirkyServer(data, ignore_ranges=True))
    driver = HTTPDriver()
    url = parse_url(server.url())
    info = driver.stat(url)
    assert not info.supports_ranges
    offset, length = 1024 * 1024 + 5, 2 * 1024 * 1024
    buffer = memoryview(bytearray(length))
    with driver.open_read(url, info, offset, length) as reader:
        assert reader.readinto_full(buffer) == length
        assert reader.bytes_read == offset + length
    assert bytes(buffer) == data[offset : offset + length]


def test_https_source_read_through_tls(quirky, tls) -> None:
    """The bulk path over TLS (bytes already decrypted wait in the TLS layer, not the
    socket): a self-signed server trusted through ``SSL_CERT_FILE``; every range read
    exactly, with no dropped or repeated byte."""
    data = os.urandom(3 * 1024 * 1024 + 333)
    server = _serve(quirky, tls(QuirkyServer(data)))
    driver = HTTPDriver()
    url = parse_url(server.url())
    assert url.scheme == "https"
    info = driver.stat(url)
    assert info.size == len(data) and info.supports_ranges
    for offset, length in ((0, len(data)), (1, 1), (1024 * 1024 - 7, 2 * 1024 * 1024 + 9)):
        buffer = memoryview(bytearray(length))
        with driver.open_read(url, info, offset, length) as reader:
            assert reader.readinto_full(buffer) == length
        assert bytes(buffer) == data[offset : offset + length]


async def test_transfer_through_a_redirect(client: StaccatoClient, quirky, data_dir: Path) -> None:
    """A source URL that redirects to a presigned-style URL on another server: each
    stream follows the redirect; the copy is exact."""
    source = data_dir / "redirected.bin"
    digest = write_random(source, 4 * MiB + 9)
    target = _serve(quirky, QuirkyServer(source.read_bytes()))
    redirector = _serve(
        quirky, QuirkyServer(b"", redirect_to=target.url("/object.bin?sig=s3cret-sig"))
    )
    destination = data_dir / "redirected.out"
    result = await asyncio.wait_for(
        client.wait(await client.submit(redirector.url(), str(destination), OPTIONS)), 60
    )
    assert result.bytes == 4 * MiB + 9
    assert sha256_file(destination) == digest
    ranged = [r for _, m, r, _, _ in target.requests if m == "GET" and r != "bytes=0-0"]
    assert len(ranged) >= 2, target.requests  # several streams, each redirected


def test_dripping_headers_are_bounded_in_a_thread(quirky, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stat deadline holds in a thread too (a worker process runs its activities in
    threads, where no SIGALRM reaches them): headers dripped one byte every 0.2 s, the
    deadline shortened to 1 s, a retryable error long before the headers end; a stat that ends in time is
    not interrupted afterwards."""
    from staccato.endpoints.http import driver as http_driver

    monkeypatch.setattr(http_driver, "REQUEST_DEADLINE_S", 1.0)
    data = os.urandom(50_000)
    slow = _serve(quirky, QuirkyServer(data, drip_headers_s=0.2))
    fast = _serve(quirky, QuirkyServer(data))
    outcome: list[object] = []

    def stat_both() -> None:
        driver = HTTPDriver()
        started = time.monotonic()
        try:
            driver.stat(parse_url(slow.url("/slow.bin")))
        except RetryableError as err:
            outcome.append((time.monotonic() - started, str(err)))
        info = driver.stat(parse_url(fast.url()))
        time.sleep(1.5)  # past the deadline of the stat that ended
        outcome.append(info.size)

    thread = threading.Thread(target=stat_both)
    thread.start()
    thread.join(30)
    assert not thread.is_alive()
    assert len(outcome) == 2, outcome
    elapsed, message = outcome[0]  # type: ignore[misc]
    assert elapsed < DRIPPED_WITHIN_S and "took longer than 1 s" in message
    assert outcome[1] == len(data)


def test_redirect_location_with_a_space_and_a_bad_port(quirky) -> None:
    """A server's ``Location`` holding a space: httpx (stat) sent it as ``%20``, the
    reads (http.client) raised ``InvalidURL``, retried as transient for 24 h (tester75);
    now the reads encode it as the stat did and read the data. A ``Location`` no URL
    library can use (port 99999) is an ``InvalidURLError`` (permanent, naming the URL)
    at stat and at the read, not a retry and not an internal error."""
    data = os.urandom(200_000)
    target = _serve(quirky, QuirkyServer(data))
    spaced = _serve(quirky, QuirkyServer(b"", redirect_to=target.url("/a dir/with space.bin")))
    driver = HTTPDriver()
    url = parse_url(spaced.url())
    info = driver.stat(url)
    assert info.size == len(data)
    with driver.open_read(url, info, 7, len(data) - 7) as reader:
        buffer = memoryview(bytearray(len(data) - 7))
        assert reader.readinto_full(buffer) == len(data) - 7
    assert bytes(buffer) == data[7:]
    assert {r for _, m, r, _, _ in target.requests if m == "GET"} >= {f"bytes=7-{len(data) - 1}"}

    broken = _serve(quirky, QuirkyServer(b"", redirect_to="http://127.0.0.1:99999/x.bin"))
    with pytest.raises(InvalidURLError) as at_stat:
        driver.stat(parse_url(broken.url()))
    assert broken.url() in str(at_stat.value), at_stat.value
    with pytest.raises(InvalidURLError) as at_read:
        driver.open_read(parse_url(broken.url()), info.model_copy(update={"extra": {}}), 0, 100)
    assert "127.0.0.1:99999/x.bin" in str(at_read.value), at_read.value
    assert not at_read.value.retryable
