"""The read side of the driver contract, for every endpoint: ``stat`` (size, version,
range support), reads of byte ranges pinned to the version seen at ``stat``, a source
changed or removed between ``stat`` and the read, missing objects, 0- and 1-byte
objects and names at the endpoint's length limit."""

from __future__ import annotations

import os

import pytest

from staccato import checksums
from staccato.errors import NotFoundError, PermanentError, SourceChangedError, UnsupportedError
from staccato.models import ObjectInfo
from staccato.urls import EndpointURL
from tests.contract.adapters import EndpointAdapter


def read_range(
    adapter: EndpointAdapter,
    url: EndpointURL,
    info: ObjectInfo,
    offset: int,
    length: int,
    piece: int = 1 << 20,
) -> bytes:
    """Bytes ``[offset, offset+length)`` read through the driver in reads of at most
    ``piece`` bytes; checks the reader ends exactly at the range's end."""
    out = bytearray()
    buffer = memoryview(bytearray(max(1, piece)))
    with adapter.driver.open_read(url, info, offset, length) as reader:
        while len(out) < length:
            n = reader.readinto(buffer[: min(piece, length - len(out))])
            assert n > 0, f"reader ended after {len(out)} of {length} bytes"
            out += buffer[:n]
        assert reader.readinto(buffer) == 0  # the range is over
        assert reader.bytes_read >= length  # counts bytes discarded to reach the offset too
    return bytes(out)


def test_adapter_agrees_with_the_driver(endpoint: EndpointAdapter) -> None:
    """The suite's idea of the endpoint (destination or not) is the driver's."""
    assert endpoint.driver.features.write is endpoint.writable


@pytest.mark.parametrize("size", [0, 1, 100_000])
def test_stat_reports_size_version_and_ranges(endpoint: EndpointAdapter, size: int) -> None:
    url = endpoint.put("obj.bin", os.urandom(size))
    info = endpoint.driver.stat(url)
    assert info.size == size
    assert isinstance(info.version, str) and info.version
    if size:  # an empty object has no range to read: either answer will do
        assert info.supports_ranges is endpoint.supports_ranges
    assert endpoint.driver.stat(url).version == info.version  # stable while unchanged
    assert ObjectInfo.model_validate_json(info.model_dump_json()) == info  # goes through Temporal


@pytest.mark.parametrize("size", [0, 1, 2, 200_003])
def test_whole_object_read(endpoint: EndpointAdapter, size: int) -> None:
    data = os.urandom(size)
    url = endpoint.put("obj.bin", data)
    info = endpoint.driver.stat(url)
    assert read_range(endpoint, url, info, 0, size) == data


def test_pinned_ranged_reads(endpoint: EndpointAdapter) -> None:
    """Any range of the pinned version, read in pieces of any size."""
    data = os.urandom(300_007)
    url = endpoint.put("obj.bin", data)
    info = endpoint.driver.stat(url)
    size = len(data)
    for offset, length, piece in [
        (0, 1, 1),
        (size - 1, 1, 7),
        (1, size - 1, 65_536),
        (131_072, 131_072, 4096),
        (12_345, 100_000, 777),
        (0, size, 1 << 20),
    ]:
        got = read_range(endpoint, url, info, offset, length, piece)
        assert got == data[offset : offset + length], (offset, length)


@pytest.mark.parametrize("new_size", ["same_size", "longer", "shorter"])
def test_source_changed_between_stat_and_read(endpoint: EndpointAdapter, new_size: str) -> None:
    """A source rewritten after ``stat`` is never read as if it were the pinned one."""
    data = os.urandom(100_000)
    url = endpoint.put("obj.bin", data)
    info = endpoint.driver.stat(url)
    grown = {"same_size": 0, "longer": 10, "shorter": -10}[new_size]
    endpoint.rewrite("obj.bin", os.urandom(len(data) + grown))
    assert endpoint.driver.stat(url).version != info.version
    with pytest.raises(SourceChangedError):
        read_range(endpoint, url, info, 50_000, 20_000)
    with pytest.raises(SourceChangedError):
        read_range(endpoint, url, info, 0, len(data))


def test_source_removed_between_stat_and_read(endpoint: EndpointAdapter) -> None:
    url = endpoint.put("obj.bin", os.urandom(10_000))
    info = endpoint.driver.stat(url)
    endpoint.delete("obj.bin")
    with pytest.raises(SourceChangedError):
        read_range(endpoint, url, info, 0, 10_000)


def test_missing_object_is_not_found(endpoint: EndpointAdapter) -> None:
    with pytest.raises(NotFoundError):
        endpoint.driver.stat(endpoint.url("no-such-object.bin"))


@pytest.mark.parametrize("alphabet", ["ascii", "utf-8"])
def test_read_names_at_the_length_limit(endpoint: EndpointAdapter, alphabet: str) -> None:
    name = endpoint.long_name(alphabet)
    data = os.urandom(1000)
    url = endpoint.put(name, data)
    info = endpoint.driver.stat(url)
    assert info.size == 1000
    assert read_range(endpoint, url, info, 0, 1000) == data


def test_name_over_the_limit_is_a_permanent_error(endpoint: EndpointAdapter) -> None:
    """A name one byte too long is refused for good (no retries), naming the object."""
    name = endpoint.long_name("ascii", extra=1)
    with pytest.raises(PermanentError):
        endpoint.driver.stat(endpoint.url(name))


def test_read_only_endpoint_refuses_to_write(read_only: EndpointAdapter) -> None:
    """An endpoint that is only a source says so when asked to write."""
    url = read_only.url("dst.bin")
    with pytest.raises(UnsupportedError):
        read_only.driver.check_destination(url)
    with pytest.raises(UnsupportedError):
        read_only.driver.open_session(url, 1, read_only.chunk_size, "contract")


def expected_checksum(
    data: bytes, chunk_size: int, segments: list[tuple[int, int]], algorithm: str
) -> str:
    """The object checksum a transfer computes: per chunk, combined per segment
    ``(first_chunk, end_chunk)``, then over the segments."""
    digests = []
    for first, end in segments:
        parts = []
        for index in range(first, end):
            piece = data[index * chunk_size : (index + 1) * chunk_size]
            parts.append((checksums.checksum_bytes(algorithm, piece), len(piece)))
        digests.append((checksums.combine(algorithm, parts), sum(n for _, n in parts)))
    return checksums.combine(algorithm, digests)


@pytest.mark.parametrize("algorithm", ["crc32c", "sha256"])
def test_object_checksum_of_a_source(endpoint: EndpointAdapter, algorithm: str) -> None:
    """What ``verify`` asks of a published object, computed the transfer's way."""
    chunk = 64 * 1024
    data = os.urandom(5 * chunk + 3)
    url = endpoint.put("obj.bin", data)
    segments = [(0, 2), (2, 5), (5, 6)]
    expected = expected_checksum(data, chunk, segments, algorithm)
    driver = endpoint.driver
    assert driver.object_checksum(url, len(data), chunk, segments, algorithm) == expected
    assert driver.segments_checksum(url, len(data), chunk, [(2, 5)], algorithm) == (
        expected_checksum(data, chunk, [(2, 5)], algorithm)
    )
