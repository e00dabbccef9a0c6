"""Round trips file->file and http->file: destination byte-identical.

file -> file runs every chunk edge size (the workflow's chunk and segment planning);
http -> file a few (the HTTP reader's edge sizes are its driver contract,
tests/contract)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from staccato.client import StaccatoClient
from staccato.models import TransferOptions
from tests.helpers import MiB, edge_sizes, leftovers, pair_sizes, sha256_file, write_random

CHUNK = 1 * MiB


@pytest.mark.parametrize("size", edge_sizes(CHUNK) + [100 * MiB])
async def test_file_to_file_roundtrip(client: StaccatoClient, data_dir: Path, size: int) -> None:
    source = data_dir / "src.bin"
    digest = write_random(source, size, seed=size)
    destination = data_dir / "dst.bin"
    options = TransferOptions(chunk_size=CHUNK if size < 100 * MiB else 8 * MiB, streams=4)
    transfer = await client.submit(str(source), str(destination), options)
    result = await client.wait(transfer)
    assert result.bytes == size
    assert sha256_file(destination) == digest
    assert leftovers(data_dir) == []


@pytest.mark.parametrize("size", pair_sizes(CHUNK) + [100 * MiB])
async def test_http_to_file_roundtrip(
    client: StaccatoClient, nginx_ranges, http_root: Path, data_dir: Path, size: int
) -> None:
    name = f"rt-{size}.bin"
    digest = write_random(http_root / name, size, seed=size + 1)
    destination = data_dir / "dst.bin"
    transfer = await client.submit(
        nginx_ranges.url(name), str(destination), TransferOptions(chunk_size=CHUNK, streams=4)
    )
    result = await client.wait(transfer)
    assert result.bytes == size
    assert sha256_file(destination) == digest
    assert leftovers(data_dir) == []


@pytest.mark.parametrize("size", [0, 1, CHUNK + 1, 20 * MiB])
async def test_http_without_ranges_roundtrip(
    client: StaccatoClient, nginx_no_ranges, http_root: Path, data_dir: Path, size: int
) -> None:
    """A server that answers a Range request with 200 and the whole body is read in one stream."""
    name = f"norange-{size}.bin"
    digest = write_random(http_root / name, size, seed=size + 2)
    # a source at rest: one modified within its Last-Modified second is read a second
    # time before publish (tests/test_source_rewritten.py)
    os.utime(http_root / name, (time.time() - 3600, time.time() - 3600))
    destination = data_dir / "dst.bin"
    nginx_no_ranges.clear_log()
    transfer = await client.submit(
        nginx_no_ranges.url(name), str(destination), TransferOptions(chunk_size=CHUNK, streams=4)
    )
    result = await client.wait(transfer)
    assert result.bytes == size
    assert sha256_file(destination) == digest
    # stat and the publish re-check are HEADs; the object is read once, whole
    gets = [r for r in nginx_no_ranges.requests() if r["method"] == "GET"]
    assert len(gets) == (1 if size else 0)
    assert sum(r["body_bytes_sent"] for r in gets) == size


async def test_sha256_checksum_option(client: StaccatoClient, data_dir: Path) -> None:
    source = data_dir / "src.bin"
    digest = write_random(source, 3 * MiB + 5)
    destination = data_dir / "dst.bin"
    transfer = await client.submit(
        str(source),
        str(destination),
        TransferOptions(chunk_size=CHUNK, streams=2, checksum="sha256"),
    )
    result = await client.wait(transfer)
    assert result.checksum.startswith("sha256-tree:")
    assert sha256_file(destination) == digest


async def test_file_to_file_across_file_systems(client: StaccatoClient, data_dir: Path) -> None:
    """file->file copies in the kernel (copy_file_range); between two file systems
    (tmpfs -> the data directory's) the kernel refuses (EXDEV) and the stream writes
    the bytes itself: the result is byte-identical either way."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == data_dir.stat().st_dev:
        pytest.skip("needs /dev/shm on a file system of its own")
    source = shm / f"staccato-test-{os.getpid()}.bin"
    try:
        digest = write_random(source, 5 * MiB + 7, seed=13)
        destination = data_dir / "cross-fs.bin"
        transfer = await client.submit(
            str(source), str(destination), TransferOptions(chunk_size=1 * MiB, streams=2)
        )
        result = await client.wait(transfer)
        assert result.bytes == 5 * MiB + 7
        assert sha256_file(destination) == digest
        assert leftovers(data_dir) == []
    finally:
        source.unlink(missing_ok=True)
