"""Socket buffers sized to the link: the BDP rule, and the sizes read back with
getsockopt on real connections (the kernel doubles what is asked: man 7 socket)."""

from __future__ import annotations

import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from staccato import sockets
from staccato.endpoints.http.driver import HTTPDriver
from staccato.endpoints.http.read import HTTPReader
from staccato.endpoints.sftp.ssh import open_socket
from staccato.urls import parse_url
from tests.helpers import MiB, write_random

ASKED = 1 * MiB


def expected_readback(asked: int, kind: str) -> int:
    """What getsockopt reads back: twice the size asked for, the size capped first at
    ``net.core.{r,w}mem_max`` (a process without CAP_NET_ADMIN cannot pass it)."""
    cap = sockets.kernel_max(kind)
    return 2 * (asked if cap is None else min(asked, cap))


def test_bdp_rule() -> None:
    # 100 MB/s over 50 ms: 5 MB in flight
    assert sockets.bdp(100e6, 0.05) == 5_000_000
    assert sockets.bdp(1e6, 0.0001) == sockets.MIN_BUFFER
    assert sockets.bdp(10e9, 1.0) == sockets.MAX_BUFFER


def test_nothing_set_leaves_autotuning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STACCATO_SOCKET_BUFFER_BYTES", raising=False)
    sockets.use(None, None)
    assert sockets.chosen() is None
    # a loopback RTT makes a BDP far below what autotuning reaches: left alone
    with socket.create_server(("127.0.0.1", 0)) as server:
        with socket.create_connection(server.getsockname()) as client:
            sockets.use(None, 100e6)
            try:
                assert sockets.chosen(client) is None
            finally:
                sockets.use(None, None)


def test_http_connection_gets_the_buffers(
    nginx_ranges: Any, http_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STACCATO_SOCKET_BUFFER_BYTES", str(ASKED))
    write_random(http_root / "sockets.bin", 64 * 1024, seed=7)
    url = f"http://127.0.0.1:{nginx_ranges.port}/sockets.bin"
    info = HTTPDriver().stat(parse_url(url))
    reader = HTTPReader(url, info, 0, 64 * 1024)
    try:
        sock = reader._connection.sock  # type: ignore[union-attr]
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == expected_readback(ASKED, "r")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == expected_readback(ASKED, "w")
    finally:
        reader.close()


def test_a_streams_size_applies_to_an_sftp_connection(sshd_server: Any) -> None:
    sockets.use(ASKED // 2, None)  # what a stream's input asked for
    target = SimpleNamespace(
        proxy_command=None, hostname="127.0.0.1", port=sshd_server.port, connect_timeout_s=5.0
    )
    try:
        sock = open_socket(target)  # type: ignore[arg-type]
    finally:
        sockets.use(None, None)
    assert isinstance(sock, socket.socket)
    with sock:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == expected_readback(
            ASKED // 2, "r"
        )
