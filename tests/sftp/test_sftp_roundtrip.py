"""Round trips through the sftp endpoint against a real OpenSSH sshd on 127.0.0.1:
file->sftp, sftp->file, http->sftp, sftp->sftp, byte-identical, sizes preserved, no
temp or journal file left behind. The SFTP driver's chunk edge sizes (0, 1, a chunk
less a byte, ...) are its driver contract (tests/contract); here each pair runs an
empty object, two chunks' worth, and 100 MiB where both directions' pipelines or the
connection pool are under load."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from staccato.client import StaccatoClient
from staccato.models import TransferOptions
from tests.helpers import MiB, leftovers, pair_sizes, sha256_file, write_random

CHUNK = 1 * MiB
SIZES = pair_sizes(CHUNK) + [100 * MiB]


def _options(size: int) -> TransferOptions:
    return TransferOptions(chunk_size=CHUNK if size < 100 * MiB else 8 * MiB, streams=4)


async def _copy(client: StaccatoClient, source: str, destination: str, size: int) -> None:
    transfer = await client.submit(source, destination, _options(size))
    result = await client.wait(transfer)
    assert result.bytes == size


@pytest.mark.parametrize("size", SIZES)
async def test_file_to_sftp(
    sftp_client: StaccatoClient, sftp_url, data_dir: Path, size: int
) -> None:
    source = data_dir / "src.bin"
    digest = write_random(source, size, seed=size + 10)
    destination = data_dir / "out" / "dst.bin"
    destination.parent.mkdir()
    await _copy(sftp_client, str(source), sftp_url(destination), size)
    assert os.path.getsize(destination) == size
    assert sha256_file(destination) == digest
    assert leftovers(destination.parent) == []


@pytest.mark.parametrize("size", SIZES)
async def test_sftp_to_file(
    sftp_client: StaccatoClient, sftp_url, data_dir: Path, size: int
) -> None:
    source = data_dir / "src.bin"
    digest = write_random(source, size, seed=size + 11)
    destination = data_dir / "dst.bin"
    await _copy(sftp_client, sftp_url(source), str(destination), size)
    assert sha256_file(destination) == digest
    assert leftovers(data_dir) == []


@pytest.mark.parametrize("size", pair_sizes(CHUNK))  # 100 MiB into sftp: file -> sftp
async def test_http_to_sftp(
    sftp_client: StaccatoClient, sftp_url, nginx_ranges, http_root: Path, data_dir: Path, size: int
) -> None:
    name = f"sftp-rt-{size}.bin"
    digest = write_random(http_root / name, size, seed=size + 12)
    destination = data_dir / "dst.bin"
    await _copy(sftp_client, nginx_ranges.url(name), sftp_url(destination), size)
    assert os.path.getsize(destination) == size
    assert sha256_file(destination) == digest
    assert leftovers(data_dir) == []


@pytest.mark.parametrize("size", SIZES)
async def test_sftp_to_sftp(
    sftp_client: StaccatoClient, sftp_url, data_dir: Path, size: int
) -> None:
    source = data_dir / "src.bin"
    digest = write_random(source, size, seed=size + 13)
    destination = data_dir / "copy.bin"
    await _copy(sftp_client, sftp_url(source), sftp_url(destination), size)
    assert os.path.getsize(destination) == size
    assert sha256_file(destination) == digest
    assert leftovers(data_dir) == []


async def test_profile_from_ssh_config(sftp_client: StaccatoClient, data_dir: Path) -> None:
    """``sftp://staccato-test/...``: HostName, Port and User come from the worker's
    ~/.ssh/config (a named profile), the key from its default ~/.ssh/id_ed25519."""
    source = data_dir / "src.bin"
    digest = write_random(source, 3 * MiB + 7, seed=5)
    destination = data_dir / "via-profile.bin"
    await _copy(sftp_client, str(source), f"sftp://staccato-test{destination}", 3 * MiB + 7)
    assert sha256_file(destination) == digest
    copy_back = data_dir / "back.bin"
    await _copy(sftp_client, f"sftp://staccato-test{destination}", str(copy_back), 3 * MiB + 7)
    assert sha256_file(copy_back) == digest
