"""The staging cache on its own (no Temporal): a half-written entry is never served
and is cleared by the next stage of its key, pinned entries are never evicted, and
a damaged chunk is refused before any of its bytes is handed out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from staccato.errors import PermanentError
from staccato.staging import CACHE_CHUNK, StagedEntryLostError, StagingCache, entry_key

MiB = 1024 * 1024


def _fill(data: bytes):
    def fill(write) -> None:
        for start in range(0, len(data), MiB):
            write(data[start : start + MiB])

    return fill


def _read_all(cache: StagingCache, key: str, offset: int, length: int) -> bytes:
    out = bytearray()
    buffer = memoryview(bytearray(300_000))
    with cache.open_reader(key, offset, length) as reader:
        while n := reader.readinto(buffer):
            out += buffer[:n]
    return bytes(out)


def test_a_crashed_stage_leaves_nothing_served_and_the_next_stage_clears_it(
    tmp_path: Path,
) -> None:
    cache = StagingCache(tmp_path, 64 * MiB)
    data = os.urandom(CACHE_CHUNK * 2 + 17)
    key = entry_key("http://user:pw@example.test/a?token=s3cr3t", '"v1"')

    def broken(write) -> None:
        write(data[:MiB])
        raise OSError("connection reset")

    with pytest.raises(OSError):
        cache.stage(key, "http://example.test/a", '"v1"', len(data), "t1", broken)
    assert cache.manifest(key) is None and not cache.path(key).exists()
    # a crash (SIGKILL) mid-stage: data.partial and no manifest
    (cache.path(key)).mkdir()
    (cache.path(key) / "data.partial").write_bytes(data[:100])
    assert cache.manifest(key) is None
    with pytest.raises(StagedEntryLostError):
        cache.open_reader(key, 0, 10)
    manifest, reused = cache.stage(key, "u", '"v1"', len(data), "t1", _fill(data))
    assert not reused and manifest.size == len(data) and len(manifest.crc32c) == 3
    assert not (cache.path(key) / "data.partial").exists()
    assert _read_all(cache, key, 0, len(data)) == data
    assert _read_all(cache, key, CACHE_CHUNK - 5, 10 + MiB) == data[CACHE_CHUNK - 5 :][: 10 + MiB]
    assert cache.stage(key, "u", '"v1"', len(data), "t2", _fill(b""))[1]  # reused, not read


def test_the_key_ignores_secrets_and_follows_the_version() -> None:
    a = entry_key("http://u:p@h/x?token=1", '"v1"')
    assert a == entry_key("http://h/x?token=2", '"v1"')
    assert a != entry_key("http://h/x", '"v2"')


def test_pinned_entries_are_never_evicted(tmp_path: Path) -> None:
    cache = StagingCache(tmp_path, 3 * MiB)
    one, two = os.urandom(2 * MiB), os.urandom(2 * MiB)
    cache.stage("k1", "u1", "v", len(one), "t1", _fill(one))
    with pytest.raises(PermanentError, match="STACCATO_STAGING_MAX_BYTES"):
        cache.stage("k2", "u2", "v", len(two), "t2", _fill(two))
    assert cache.manifest("k1") is not None and not cache.path("k2").exists()
    cache.unpin("k1", "t1")
    cache.stage("k2", "u2", "v", len(two), "t2", _fill(two))
    assert cache.manifest("k1") is None and cache.manifest("k2") is not None
    with pytest.raises(PermanentError, match="STACCATO_STAGING_MAX_BYTES=3145728"):
        cache.stage("k3", "u3", "v", 4 * MiB, "t3", _fill(os.urandom(4 * MiB)))


def test_a_damaged_chunk_is_refused_and_the_entry_dropped(tmp_path: Path) -> None:
    cache = StagingCache(tmp_path, 64 * MiB)
    data = os.urandom(CACHE_CHUNK + 1000)
    cache.stage("k", "u", "v", len(data), "t", _fill(data))
    with open(cache.path("k") / "data", "r+b") as f:
        f.seek(CACHE_CHUNK + 10)
        f.write(bytes([data[CACHE_CHUNK + 10] ^ 1]))
    assert _read_all(cache, "k", 0, CACHE_CHUNK) == data[:CACHE_CHUNK]  # chunk 0 is fine
    with pytest.raises(StagedEntryLostError, match="damaged"):
        _read_all(cache, "k", 0, len(data))
    assert cache.manifest("k") is None and not cache.path("k").exists()


def test_an_unwritable_directory_names_the_setting(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    cache = StagingCache(tmp_path / "file" / "staging", MiB)
    with pytest.raises(PermanentError, match="STACCATO_STAGING_DIR"):
        cache.stage("k", "u", "v", 1, "t", _fill(b"x"))
