"""A fenced SFTP write request goes out in as few SSH packets as paramiko can make:
each send the write fence checks is one full packet (the channel's maximum packet size
less paramiko's 64 bytes of headroom), with the request's header in the first.

Why it matters: every SSH packet costs its own Python work in paramiko (message,
padding, encryption, MAC, a socket send and the fence's poll). Slices of 32 KiB were
each split by paramiko into 32,704 + 64 bytes: twice the packets of an upload and
about 1 s more worker CPU per GiB (file->sftp 0.65x rclone instead of 0.99x).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest

from staccato.activities.stream_lease import leased
from staccato.endpoints.sftp.pipeline import write_at
from staccato.endpoints.sftp.pool import POOL
from staccato.endpoints.sftp.protocol import FXF_WRITE
from staccato.endpoints.sftp.ssh import resolve
from staccato.urls import parse_url
from tests.helpers import MiB

#: bytes of an SSH_FXP_WRITE header besides the handle (length, type, id, handle
#: length, offset, data length)
WRITE_HEADER_BYTES = 4 + 1 + 4 + 4 + 8 + 4


def test_fenced_write_requests_fill_whole_ssh_packets(
    driver_env: Path, sftp_url: Any, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """8 MiB written under a stream's lease through the real sshd: the bytes arrive
    intact, and the SSH packets sent number at most the full packets the requests
    need (plus a few the channel's window may split), not about twice as many.
    (paramiko's packets: the OpenSSH transport makes its own.)"""
    monkeypatch.setenv("STACCATO_SFTP_TRANSPORT", "paramiko")
    temp = data_dir / "packets.part"
    temp.write_bytes(b"")
    data = os.urandom(8 * MiB)
    target = resolve(parse_url(sftp_url(temp)))
    with POOL.lease(target) as connection:
        sftp = connection.sftp
        handle = sftp.open_handle(str(temp), FXF_WRITE)
        packetizer = sftp.sock.get_transport().packetizer
        sent: list[int] = []
        real_send = packetizer.send_message

        def counting(message: Any) -> None:
            sent.append(1)
            real_send(message)

        packetizer.send_message = counting  # counts what really goes out, unchanged
        try:
            with leased(60.0):
                write_at(sftp, handle, 0, memoryview(data))
        finally:
            del packetizer.send_message
        sftp.close_handle(handle)
        per_packet = sftp.sock.out_max_packet_size - 64
        size = sftp.write_size
        header = WRITE_HEADER_BYTES + len(handle)
        requests = [min(size, len(data) - at) for at in range(0, len(data), size)]
        needed = sum(math.ceil((header + n) / per_packet) for n in requests)
    assert temp.read_bytes() == data
    # a send that the channel's window cuts short adds one packet (seen: up to 20 %
    # more on loopback); slices that paramiko splits make about twice as many
    assert len(sent) <= needed * 1.5, (
        f"{len(sent)} SSH packets for {len(requests)} write requests of {size} bytes "
        f"(full packets of {per_packet} bytes: {needed})"
    )
