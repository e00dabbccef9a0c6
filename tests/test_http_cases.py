"""HTTP cases from users' reports (shared/cases): C1 ranges advertised but ignored,
C11 body shorter than Content-Length, C12 HEAD refused."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from staccato.client import StaccatoClient
from staccato.models import TransferOptions
from tests.helpers import MiB, leftovers, sha256_file, write_random
from tests.servers.nginx import NginxServer

OPTIONS = TransferOptions(chunk_size=1 * MiB, streams=4, heartbeat_timeout_s=5)


class QuirkyServer(ThreadingHTTPServer):
    """A real HTTP/1.1 server on 127.0.0.1 that misbehaves the way some servers do.

    Args:
        data: the one resource, served at any path.
        ignore_ranges: advertise ``Accept-Ranges: bytes`` but answer every Range with
            200 and the whole body (C1, as proxies that strip ranges do).
        truncate_first: the first N GET responses end halfway through their announced
            Content-Length and the connection is closed (C11).
    """

    def __init__(
        self, data: bytes, *, ignore_ranges: bool = False, truncate_first: int = 0
    ) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.data = data
        self.ignore_ranges = ignore_ranges
        self.truncate_left = truncate_first
        self.gets: list[str] = []
        self.lock = threading.Lock()

    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/object.bin"


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

    def do_HEAD(self) -> None:
        self._headers(200, len(self.server.data), {})

    def do_GET(self) -> None:
        data = self.server.data
        match = re.match(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
        with self.server.lock:
            self.server.gets.append(self.headers.get("Range", ""))
            probe = self.headers.get("Range") == "bytes=0-0"
            truncate = self.server.truncate_left > 0 and not probe
            if truncate:
                self.server.truncate_left -= 1
        if match and not self.server.ignore_ranges:
            start, end = int(match.group(1)), min(int(match.group(2)), len(data) - 1)
            body = data[start : end + 1]
            self._headers(206, len(body), {"Content-Range": f"bytes {start}-{end}/{len(data)}"})
        else:
            body = data
            self._headers(200, len(body), {})
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


def _serve(servers: list[QuirkyServer], server: QuirkyServer) -> QuirkyServer:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    servers.append(server)
    return server


async def test_ranges_advertised_but_ignored(
    client: StaccatoClient, quirky, data_dir: Path
) -> None:
    """C1: 200 + whole body to a Range request: detected, read in one stream, never
    written at a chunk's offset."""
    source = data_dir / "c1.bin"
    digest = write_random(source, 5 * MiB + 3)
    server = _serve(quirky, QuirkyServer(source.read_bytes(), ignore_ranges=True))
    destination = data_dir / "c1.out"
    result = await client.wait(await client.submit(server.url(), str(destination), OPTIONS))
    assert result.bytes == 5 * MiB + 3
    assert sha256_file(destination) == digest
    assert (
        len([g for g in server.gets if g != "bytes=0-0"]) == 1
    )  # one whole read, not one per stream


async def test_body_shorter_than_content_length(
    client: StaccatoClient, quirky, data_dir: Path
) -> None:
    """C11: a response that ends early is retried from a validated Range; never a short file."""
    source = data_dir / "c11.bin"
    digest = write_random(source, 6 * MiB + 1)
    server = _serve(quirky, QuirkyServer(source.read_bytes(), truncate_first=2))
    destination = data_dir / "c11.out"
    result = await client.wait(await client.submit(server.url(), str(destination), OPTIONS))
    assert result.bytes == 6 * MiB + 1
    assert sha256_file(destination) == digest
    assert server.truncate_left == 0, (
        "the server never truncated a response: the test proved nothing"
    )
    assert leftovers(data_dir) == []


async def test_head_refused(client: StaccatoClient, http_root: Path, data_dir: Path) -> None:
    """C12: a server answering HEAD with 405 still serves GET: stat falls back to a ranged GET."""
    server = NginxServer(
        http_root, extra_server_config="if ($request_method = HEAD) { return 405; }"
    )
    server.start()
    try:
        digest = write_random(http_root / "c12.bin", 3 * MiB + 7)
        destination = data_dir / "c12.out"
        result = await client.wait(
            await client.submit(server.url("c12.bin"), str(destination), OPTIONS)
        )
        assert result.bytes == 3 * MiB + 7
        assert sha256_file(destination) == digest
        assert any(r["method"] == "HEAD" and r["status"] == 405 for r in server.requests())
    finally:
        server.stop()
