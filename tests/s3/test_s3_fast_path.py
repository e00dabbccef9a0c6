"""The S3 driver's per-byte and per-transfer costs, checked for what they must keep:
one client per process and profile (a new one only when the AWS configuration
changes), ranged reads received straight into the caller's buffer on a connection
that goes back to the pool, and the bytes and errors those reads must still give."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from staccato.endpoints.s3 import S3Driver
from staccato.endpoints.s3 import read as s3_read
from staccato.endpoints.s3.driver import FILES_RECHECK_S
from staccato.errors import IncompleteRead, PermanentError
from staccato.urls import parse_url
from tests.s3.conftest import MeteredSeaweedS3


def _credentials(path: Path, key: str, secret: str) -> None:
    path.write_text(f"[fixme]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n")
    later = time.time_ns() + 2_000_000_000  # a later mtime even on a coarse clock
    os.utime(path, ns=(later, later))


def test_client_is_kept_until_the_configuration_changes(
    s3_env: MeteredSeaweedS3, s3: Any, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Minutes apart, the same AWS configuration gives the same client (a new one costs
    ~0.1-0.2 s of CPU per process and its kept-alive connections); a credentials file
    fixed meanwhile gives a new client that uses the fixed key, without a restart, once
    the files are looked at again (at most a second later)."""
    s3.put_object(Bucket=bucket, Key="k", Body=b"data")
    credentials = tmp_path / "credentials"
    _credentials(credentials, "STACCATONOSUCHKEY", "not-the-secret")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    driver = S3Driver()
    url = parse_url(f"s3://{bucket}/k?profile=fixme")
    first = driver.endpoint(url)
    with pytest.raises(PermanentError):
        driver.stat(url)
    real = time.monotonic
    monkeypatch.setattr(time, "monotonic", lambda: real() + 600.0)  # ten minutes later
    assert driver.endpoint(url) is first
    _credentials(credentials, s3_env.access_key, s3_env.secret_key)
    later = real() + 600.0 + FILES_RECHECK_S
    monkeypatch.setattr(time, "monotonic", lambda: later)
    fixed = driver.endpoint(url)
    assert fixed is not first
    assert driver.stat(url).size == 4
    assert driver.endpoint(url) is fixed


def test_ranged_reads_receive_into_the_buffer_and_reuse_the_connection(
    s3_env: MeteredSeaweedS3, s3: Any, bucket: str
) -> None:
    """Ranged reads take http.client's ``readinto`` (no urllib3 copies), give the
    exact bytes of each range, and a range read to its end hands its connection back:
    ten reads in a row use one connection."""
    data = os.urandom(3 * 1024 * 1024 + 17)
    s3.put_object(Bucket=bucket, Key="ranged", Body=data)
    driver = S3Driver()
    url = parse_url(f"s3://{bucket}/ranged")
    info = driver.stat(url)
    pool_manager = driver.endpoint(url).client._endpoint.http_session._manager
    buffer = memoryview(bytearray(1024 * 1024))
    for number in range(10):
        offset = number * 300_001
        length = min(len(data) - offset, 700_003)
        with driver.open_read(url, info, offset, length) as reader:
            assert isinstance(reader, s3_read.S3Reader) and reader._direct is not None
            assert reader.readinto_full(buffer[:length]) == length
        assert bytes(buffer[:length]) == data[offset : offset + length]
    pools = list(pool_manager.pools._container.values())
    assert sum(pool.num_connections for pool in pools) == 1


class _CutLink:
    """A TCP relay on 127.0.0.1 to the S3 server that passes ``limit`` bytes of the
    server's answers per connection, then closes both sides: a connection that breaks
    in the middle of a body."""

    def __init__(self, upstream_port: int, limit: int) -> None:
        self.upstream_port = upstream_port
        self.limit = limit
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint_url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            for source, sink, limit in ((client, upstream, None), (upstream, client, self.limit)):
                threading.Thread(target=self._pump, args=(source, sink, limit), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, limit: int | None) -> None:
        passed = 0
        try:
            while data := source.recv(64 * 1024):
                if limit is not None:
                    data = data[: limit - passed]
                sink.sendall(data)
                passed += len(data)
                if limit is not None and passed >= limit:
                    break
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self) -> None:
        self._listener.close()


def test_a_body_cut_short_on_the_direct_path_is_an_incomplete_read(
    s3_env: MeteredSeaweedS3, s3: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection that breaks in the middle of a ranged body is an IncompleteRead
    (the stream retries it), never a short chunk taken for the whole."""
    s3.put_object(Bucket=bucket, Key="short", Body=os.urandom(400_000))
    link = _CutLink(s3_env.s3_port, limit=100_000)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", link.endpoint_url)
        driver = S3Driver()
        url = parse_url(f"s3://{bucket}/short")
        info = driver.stat(url)
        buffer = memoryview(bytearray(400_000))
        with driver.open_read(url, info, 0, 400_000) as reader:
            assert isinstance(reader, s3_read.S3Reader) and reader._direct is not None
            with pytest.raises(IncompleteRead, match="GetObject of s3://"):
                reader.readinto_full(buffer)
            assert 0 < reader.bytes_read < 100_000
    finally:
        link.close()
