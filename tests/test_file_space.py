"""Running out of space on a file destination: a small real file system (tmpfs with
``size=``, mounted by the test; needs root) fills up under the transfer. As on an SFTP
destination the error is retryable (space may be freed): the temp file and journal
stay, status shows the reason, the transfer resumes from its checkpoint once there is
room and gives up once ``--retry-for`` passed without progress. A file larger than the
whole file system fails at once. The errors name the file system, the bytes needed and
free and the fix; the free-space check also runs when a retry finds its temp file
already there."""

from __future__ import annotations

import asyncio
import errno
import os
import re
import time
from pathlib import Path

import pytest

from staccato import checksums
from staccato.client import StaccatoClient
from staccato.endpoints import get_driver
from staccato.errors import PermanentError, RetryableError, TransferFailedError
from staccato.models import TransferOptions, TransferState
from staccato.temp_names import JOURNAL_SUFFIX
from staccato.urls import parse_url
from tests.helpers import (
    MiB,
    leftovers,
    mounted_tmpfs,
    sha256_file,
    wait_for_status,
    write_random,
)
from tests.servers.nginx import NginxServer, nginx_fixture


def _free(path: Path) -> int:
    fs = os.statvfs(path)
    return fs.f_bavail * fs.f_frsize


def _fill(path: Path, leave: int) -> None:
    """Write a filler file so that about ``leave`` bytes stay free (less if a transfer
    writes there at the same time: then until the file system is full)."""
    block = b"\1" * (64 * 1024)
    with open(path / "filler", "ab", buffering=0) as filler:
        try:
            while _free(path) - len(block) >= leave:
                filler.write(block)
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise


def _write(session, indexes: range, chunk: int) -> None:
    driver = get_driver("file")
    data = memoryview(os.urandom(chunk))
    with driver.open_writer(session) as writer:
        for index in indexes:
            writer.write_chunk(index, data, checksums.checksum_bytes("crc32c", data))


def _assert_names_the_cause(message: str, mount: Path) -> None:
    assert f"mounted at {mount}" in message, message
    assert "bytes needed" in message and "bytes free" in message, message
    assert "Free at least" in message and "another file system" in message, message
    assert re.search(r"Free at least \d+ bytes \(\d+(\.\d)? [KMG]?i?B\) there", message), message


def test_disk_full_mid_write_is_retryable_and_keeps_the_temp(small_fs: Path) -> None:
    """A write running into a full disk is retryable (space may be freed, as on an
    SFTP destination): the temp file and its journal stay, with the chunks written
    before, so the next attempt resumes from them (before: permanent)."""
    driver = get_driver("file")
    url = parse_url(str(small_fs / "out.bin"))
    session = driver.open_session(url, 6 * MiB, MiB, "t-full")  # fits: 8 MiB free
    _write(session, range(2), MiB)
    _fill(small_fs, 3 * MiB)  # someone else takes the space while we copy
    with pytest.raises(RetryableError) as caught:
        _write(session, range(2, 6), MiB)
    print(caught.value)
    assert not isinstance(caught.value, PermanentError)
    _assert_names_the_cause(str(caught.value), small_fs)
    # no promise of a retry in the words: they end a transfer that gave up too
    assert "retried" not in str(caught.value)
    assert Path(session.session_id).is_file() and Path(session.data["journal"]).is_file()
    assert {0, 1} <= set(driver.durable_chunks(session)), "the chunks before were lost"


def test_free_space_is_checked_on_a_retry_counting_the_temp(small_fs: Path) -> None:
    driver = get_driver("file")
    url = parse_url(str(small_fs / "out.bin"))
    session = driver.open_session(url, 6 * MiB, MiB, "t-retry")
    _write(session, range(3), MiB)  # the temp holds 3 MiB of the 6
    _fill(small_fs, 3 * MiB + 512 * 1024)
    driver.open_session(url, 6 * MiB, MiB, "t-retry")  # 3 MiB more needed: fits
    _fill(small_fs, 2 * MiB)
    with pytest.raises(RetryableError) as caught:  # 3 MiB more needed, 2 MiB free
        driver.open_session(url, 6 * MiB, MiB, "t-retry")
    print(caught.value)
    _assert_names_the_cause(str(caught.value), small_fs)
    assert "3145728 more bytes needed" in str(caught.value)
    assert Path(session.session_id).is_file(), "the temp file must stay for the retry"


def test_a_file_larger_than_the_whole_file_system_is_permanent(small_fs: Path) -> None:
    """No freeing can make 9 MiB fit on an 8 MiB file system: permanent at once, and
    the message says the file exceeds the file system's capacity."""
    driver = get_driver("file")
    url = parse_url(str(small_fs / "huge.bin"))
    with pytest.raises(PermanentError) as caught:
        driver.open_session(url, 9 * MiB, MiB, "t-huge")
    print(caught.value)
    message = str(caught.value)
    assert f"mounted at {small_fs}" in message, message
    assert "can never fit" in message and "whole capacity of 8388608 bytes" in message, message
    assert "larger file system" in message, message


def _journal_lines(directory: Path) -> int:
    """Chunk lines journaled so far by the write session in ``directory`` (0: none yet)."""
    total = 0
    for path in directory.iterdir():
        if path.name.endswith(JOURNAL_SUFFIX):
            try:
                # chunk lines only (``INDEX CHECKSUM``), not their owner records
                total += sum(
                    1
                    for line in path.read_bytes().split(b"\n")
                    if len(line.split()) == 2 and line.split()[0].isdigit()
                )
            except FileNotFoundError:
                pass
    return total


async def _wait_for_journal(directory: Path, chunks: int, within_s: float = 120) -> None:
    deadline = time.monotonic() + within_s
    while _journal_lines(directory) < chunks:
        assert time.monotonic() < deadline, f"fewer than {chunks} chunks in {within_s} s"
        await asyncio.sleep(0.05)


async def _fill_while_paused(
    client: StaccatoClient, transfer: str, directory: Path, journaled: int, leave: int
) -> int:
    """Once ``journaled`` chunks are durable, pause the transfer, fill ``directory``'s
    file system to ``leave`` bytes free (someone else's file), and resume. Paused, so
    the transfer cannot outrun the filler however slow the machine. Returns the bytes
    journaled when the disk filled."""
    await _wait_for_journal(directory, journaled)
    await client.pause(transfer)
    await wait_for_status(client, transfer, lambda s: s.state == TransferState.paused)
    _fill(directory, leave)
    at_fill = _journal_lines(directory)
    await client.resume(transfer)
    return at_fill


#: an nginx sending at most 4 MB/s per connection: a 64 MiB copy in 2 streams lasts
#: some 8 s, time to pause it part-way however slow the machine
paced_nginx = nginx_fixture("http_root", scope="function", extra_server_config="limit_rate 4m;")


async def test_a_disk_filled_mid_copy_then_freed_completes_without_resending(
    client: StaccatoClient, paced_nginx: NginxServer, http_root: Path, tmp_path: Path
) -> None:
    """A 64 MiB download into an 80 MiB file system that someone else fills (to
    256 KiB free) once 20 MiB are durable: the streams retry, status names the free
    space as the retry's reason, the temp file and journal stay; the filler removed
    (within --retry-for), the transfer resumes from its checkpoint and completes
    byte-equal, the source sending the bytes journaled before the fill only once
    (before: the transfer failed at once and its copied bytes were deleted)."""
    size, chunk = 64 * MiB, MiB
    with mounted_tmpfs(tmp_path / "small80", "80m") as small:
        digest = write_random(http_root / "big.bin", size, seed=27)
        # modified an hour ago: the source is read once (a file modified just before
        # is read a second time before publish, which would blur the count below)
        hour_ago = time.time() - 3600
        os.utime(http_root / "big.bin", (hour_ago, hour_ago))
        options = TransferOptions(chunk_size=chunk, streams=2, retry_for_s=120)
        transfer = await client.submit(paced_nginx.url("big.bin"), str(small / "big.bin"), options)
        at_fill = await _fill_while_paused(client, transfer, small, 20, 256 * 1024)
        retrying = await wait_for_status(
            client,
            transfer,
            lambda s: (
                "bytes free" in (s.last_retry_error or "")
                or s.state in (TransferState.failed, TransferState.completed)
            ),
            timeout_s=120,
        )
        reason = retrying.last_retry_error or ""
        print(f"retrying: {reason}")
        assert f"mounted at {small}" in reason and "bytes free" in reason, retrying
        assert leftovers(small), "the temp file and journal must stay while it retries"
        (small / "filler").unlink()  # space freed: the next attempt goes on
        result = await asyncio.wait_for(client.wait(transfer), 180)
        assert result.bytes == size
        assert sha256_file(small / "big.bin") == digest
        assert leftovers(small) == []
        sent = paced_nginx.bytes_sent()
        print(
            f"{at_fill} MiB durable at the fill; source sent {sent / MiB:.1f} MiB of {size // MiB}"
        )
        # re-sent: what the streams held in flight at the pause and at each attempt
        # that met the full disk (a chunk and what the socket held, per stream); sending
        # the chunks journaled before the fill again would cost at least at_fill MiB
        assert at_fill >= 20
        assert sent - size < 14 * MiB <= at_fill * MiB - 6 * MiB, (sent, at_fill)


async def test_a_disk_that_stays_full_fails_after_retry_for_naming_the_space(
    client: StaccatoClient, paced_nginx: NginxServer, http_root: Path, tmp_path: Path
) -> None:
    """The same, the filler never removed, ``--retry-for 3s``: the transfer gives up
    once 3 s passed without progress, in the workflow's words, naming the free space,
    and its clean-up removes the temp file and journal (before: it failed at once)."""
    with mounted_tmpfs(tmp_path / "small32", "32m") as small:
        write_random(http_root / "fill.bin", 24 * MiB, seed=21)
        options = TransferOptions(chunk_size=MiB, streams=2, retry_for_s=3, heartbeat_timeout_s=3)
        transfer = await client.submit(
            paced_nginx.url("fill.bin"), str(small / "fill.bin"), options
        )
        await _fill_while_paused(client, transfer, small, 2, 2 * MiB)
        with pytest.raises(TransferFailedError) as caught:
            await asyncio.wait_for(client.wait(transfer), 120)
        message = str(caught.value)
        print(f"disk stayed full: {message}")
        _assert_names_the_cause(message, small)
        assert "gave up" in message and "--retry-for 3 s without progress" in message, message
        assert leftovers(small) == []


async def test_a_disk_full_before_the_copy_is_retried_until_room_is_made(
    client: StaccatoClient, data_dir: Path, small_fs: Path
) -> None:
    """The free-space check before the copy finds 2 MiB free for a 6 MiB file: the
    transfer waits, status naming the free space, and completes once the filler is
    removed within --retry-for (before: it failed at once)."""
    source = data_dir / "six.bin"
    digest = write_random(source, 6 * MiB, seed=29)
    _fill(small_fs, 2 * MiB)
    options = TransferOptions(chunk_size=MiB, retry_for_s=120)
    transfer = await client.submit(str(source), str(small_fs / "six.bin"), options)
    waiting = await wait_for_status(
        client,
        transfer,
        lambda s: (
            "bytes free" in (s.last_retry_error or "")
            or s.state in (TransferState.failed, TransferState.completed)
        ),
        timeout_s=120,
    )
    print(f"waiting: {waiting.last_retry_error}")
    _assert_names_the_cause(waiting.last_retry_error or "", small_fs)
    (small_fs / "filler").unlink()
    result = await asyncio.wait_for(client.wait(transfer), 120)
    assert result.bytes == 6 * MiB
    assert sha256_file(small_fs / "six.bin") == digest
    assert leftovers(small_fs) == []


async def test_a_disk_full_before_the_copy_fails_after_retry_for(
    client: StaccatoClient, data_dir: Path, small_fs: Path
) -> None:
    """The same, the filler never removed, ``--retry-for 3s``: the transfer fails
    after it, naming the free space, nothing left on the file system."""
    source = data_dir / "six.bin"
    write_random(source, 6 * MiB, seed=30)
    _fill(small_fs, 2 * MiB)
    options = TransferOptions(chunk_size=MiB, retry_for_s=3)
    transfer = await client.submit(str(source), str(small_fs / "six.bin"), options)
    with pytest.raises(TransferFailedError) as caught:
        await asyncio.wait_for(client.wait(transfer), 120)
    message = str(caught.value)
    print(f"prepare gave up: {message}")
    _assert_names_the_cause(message, small_fs)
    assert "gave up: the prepare step" in message and "--retry-for (3 s)" in message, message
    assert leftovers(small_fs) == []


async def test_a_file_larger_than_the_file_system_fails_at_once(
    client: StaccatoClient, data_dir: Path, small_fs: Path
) -> None:
    """12 MiB onto an 8 MiB file system: no retry can help, the transfer fails at once
    (not after --retry-for, 1 hour here), saying the file exceeds its capacity."""
    source = data_dir / "huge.bin"
    write_random(source, 12 * MiB, seed=28)
    options = TransferOptions(chunk_size=MiB, retry_for_s=3600)
    transfer = await client.submit(str(source), str(small_fs / "huge.bin"), options)
    with pytest.raises(TransferFailedError) as caught:
        await asyncio.wait_for(client.wait(transfer), 120)
    message = str(caught.value)
    print(message)
    assert "can never fit" in message and f"mounted at {small_fs}" in message, message
    assert "gave up" not in message, message
    assert leftovers(small_fs) == []


def test_a_destination_on_a_virtual_file_system_says_it_cannot_hold_files() -> None:
    """``cp SRC /proc/x``: not "not enough space ... 0 bytes free, free at least 6
    bytes" (statvfs reports no capacity there), but what the place is."""
    from staccato.endpoints.file.driver import FileDriver
    from staccato.errors import PermanentError
    from staccato.urls import parse_url

    if os.statvfs("/proc").f_blocks != 0:
        pytest.skip("this /proc reports a capacity")
    with pytest.raises(PermanentError, match="no capacity") as caught:
        FileDriver().check_space(parse_url("/proc/staccato-test.bin"), 6)
    assert "not enough space" not in str(caught.value) and "/proc" in str(caught.value)


def test_a_file_the_size_of_the_whole_file_system_is_permanent(small_fs: Path) -> None:
    """8 MiB on an empty 8 MiB file system leaves no block for the journal: it can never
    fit, so it fails at once (a tester's 64 MiB file on a 64 MiB tmpfs was retried for
    --retry-for, 4096 bytes short), before anything is written."""
    driver = get_driver("file")
    url = parse_url(str(small_fs / "exact.bin"))
    with pytest.raises(PermanentError) as caught:
        driver.open_session(url, 8 * MiB, MiB, "t-exact")
    message = str(caught.value)
    assert "can never fit" in message and "its journal" in message, message
    # the number is the file and its journal together, not the journal (tester72)
    assert "the file (8388608 bytes) and its journal together need " in message, message
    assert not any(small_fs.iterdir()), "nothing may be written"
    # one MiB less fits (a retry would make room for it)
    driver.open_session(url, 7 * MiB, MiB, "t-exact-less")
