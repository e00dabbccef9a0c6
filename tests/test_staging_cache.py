"""The staging cache on its own (no Temporal): a half-written entry is never served
and is cleared by the next stage of its key, pinned entries are never evicted, and
a damaged chunk is refused before any of its bytes is handed out."""

from __future__ import annotations

import os
import threading
import time
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


def test_a_stream_opening_an_entry_dropped_as_damaged_says_it_was_damaged(
    tmp_path: Path,
) -> None:
    """Another stream that opens the entry after one dropped it as damaged, and the
    log of the stage that reads the source again, say it was found damaged (tester69:
    logged as "not in the staging cache"); staged again, it is served again."""
    cache = StagingCache(tmp_path, 64 * MiB)
    data = os.urandom(2 * CACHE_CHUNK)
    cache.stage("k", "u", "v", len(data), "t", _fill(data))
    with open(cache.path("k") / "data", "r+b") as f:
        f.seek(10)
        f.write(bytes([data[10] ^ 1]))
    with pytest.raises(StagedEntryLostError, match="found damaged: cache chunk 0"):
        _read_all(cache, "k", 0, len(data))
    with pytest.raises(StagedEntryLostError) as later:
        cache.open_reader("k", CACHE_CHUNK, CACHE_CHUNK)
    assert "found damaged: cache chunk 0" in str(later.value), later.value
    assert "not in the staging cache" not in str(later.value), later.value
    assert "found damaged" in (cache.damage_note("k") or "")
    cache.stage("k", "u", "v", len(data), "t", _fill(data))
    assert cache.damage_note("k") is None
    assert _read_all(cache, "k", 0, len(data)) == data


def test_an_unwritable_directory_names_the_setting(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    cache = StagingCache(tmp_path / "file" / "staging", MiB)
    with pytest.raises(PermanentError, match="STACCATO_STAGING_DIR"):
        cache.stage("k", "u", "v", 1, "t", _fill(b"x"))


def test_an_evicted_or_failed_entry_leaves_no_lock_file(tmp_path: Path) -> None:
    cache = StagingCache(tmp_path, 3 * MiB)
    first, second, third = (entry_key(f"http://h/{n}", "v1") for n in "abc")
    cache.stage(first, "http://h/a", "v1", 2 * MiB, "t1", _fill(os.urandom(2 * MiB)))
    cache.unpin(first, "t1")
    cache.stage(second, "http://h/b", "v1", 2 * MiB, "t2", _fill(os.urandom(2 * MiB)))
    assert not cache.path(first).exists()
    assert not (tmp_path / f"{first}.lock").exists()  # evicted with its entry

    def broken(write) -> None:
        write(b"x" * 100)
        raise OSError("the source went away")

    with pytest.raises(OSError):
        cache.stage(third, "http://h/c", "v1", MiB, "t3", broken)
    assert not (tmp_path / f"{third}.lock").exists()
    # the remaining entry's lock still works after the others' files went
    found, reused = cache.stage(second, "http://h/b", "v1", 2 * MiB, "t4", _fill(b""))
    assert reused and found.size == 2 * MiB


def test_a_stage_waiting_for_another_reports_the_bytes_it_staged(tmp_path: Path) -> None:
    cache = StagingCache(tmp_path, 64 * MiB)
    key = entry_key("http://h/shared", "v1")
    data = os.urandom(4 * MiB)
    half_written = threading.Event()
    go_on = threading.Event()

    def slow(write) -> None:
        write(data[: 3 * MiB])
        half_written.set()
        assert go_on.wait(30)
        write(data[3 * MiB :])

    seen: list[int] = []
    results: dict[str, bool] = {}

    def waiter() -> None:
        assert half_written.wait(30)
        results["waiter"] = cache.stage(
            key, "http://h/shared", "v1", len(data), "t2", _fill(data), waiting=seen.append
        )[1]

    first = threading.Thread(
        target=lambda: results.update(first=cache.stage(key, "u", "v1", len(data), "t1", slow)[1])
    )
    second = threading.Thread(target=waiter)
    first.start()
    second.start()
    deadline = time.monotonic() + 30
    while 3 * MiB not in seen and time.monotonic() < deadline:
        time.sleep(0.05)
    go_on.set()
    first.join(30)
    second.join(30)
    assert 3 * MiB in seen, seen
    assert results == {"first": False, "waiter": True}


def test_a_source_larger_than_the_free_space_is_refused_before_reading(small_fs: Path) -> None:
    cache = StagingCache(small_fs / "staging", 64 * MiB)
    read: list[int] = []

    def fill(write) -> None:
        read.append(1)
        _fill(os.urandom(16 * MiB))(write)

    with pytest.raises(PermanentError) as raised:
        cache.stage(entry_key("http://h/big", "v1"), "http://h/big", "v1", 16 * MiB, "t", fill)
    message = str(raised.value)
    assert "STACCATO_STAGING_DIR" in message and str(small_fs / "staging") in message, message
    assert str(16 * MiB) in message and "free" in message, message
    assert read == []  # the source was never read


def test_running_out_of_space_while_staging_names_the_setting(small_fs: Path) -> None:
    cache = StagingCache(small_fs / "staging", 64 * MiB)
    key = entry_key("http://h/mid", "v1")

    def fill(write) -> None:
        # something else fills the file system after the free-space check
        (small_fs / "other").write_bytes(b"\0" * 5 * MiB)
        _fill(os.urandom(6 * MiB))(write)

    with pytest.raises(PermanentError) as raised:
        cache.stage(key, "http://h/mid", "v1", 6 * MiB, "t", fill)
    message = str(raised.value)
    assert "STACCATO_STAGING_DIR" in message and "ran out" in message, message
    assert not cache.path(key).exists()
