"""Running out of space on a file destination: a small real file system (tmpfs with
``size=``, mounted by the test; needs root) fills up under the transfer. The error is
permanent, names the file system, the bytes needed and free and the fix, and the
free-space check also runs when a retry finds its temp file already there."""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import time
from pathlib import Path

import pytest

from staccato import checksums
from staccato.client import StaccatoClient
from staccato.endpoints import get_driver
from staccato.errors import PermanentError, StaccatoError, TransferFailedError
from staccato.models import TransferOptions, TransferState
from staccato.urls import parse_url
from tests.helpers import MiB, leftovers, mount_tmpfs, wait_for_status, write_random
from tests.servers.nginx import NginxServer, nginx_fixture

# nginx sending at most 8 MB/s per connection, so a transfer lasts a few seconds.
slow_nginx = nginx_fixture("http_root", scope="function", extra_server_config="limit_rate 8m;")


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


def test_disk_full_mid_write_is_permanent(small_fs: Path) -> None:
    driver = get_driver("file")
    url = parse_url(str(small_fs / "out.bin"))
    session = driver.open_session(url, 6 * MiB, MiB, "t-full")  # fits: 8 MiB free
    _fill(small_fs, 3 * MiB)  # someone else takes the space while we copy
    with pytest.raises(PermanentError) as caught:
        _write(session, range(6), MiB)
    print(caught.value)
    _assert_names_the_cause(str(caught.value), small_fs)


def test_free_space_is_checked_on_a_retry_counting_the_temp(small_fs: Path) -> None:
    driver = get_driver("file")
    url = parse_url(str(small_fs / "out.bin"))
    session = driver.open_session(url, 6 * MiB, MiB, "t-retry")
    _write(session, range(3), MiB)  # the temp holds 3 MiB of the 6
    _fill(small_fs, 3 * MiB + 512 * 1024)
    driver.open_session(url, 6 * MiB, MiB, "t-retry")  # 3 MiB more needed: fits
    _fill(small_fs, 2 * MiB)
    with pytest.raises(PermanentError) as caught:  # 3 MiB more needed, 2 MiB free
        driver.open_session(url, 6 * MiB, MiB, "t-retry")
    print(caught.value)
    _assert_names_the_cause(str(caught.value), small_fs)
    assert "3145728 more bytes needed" in str(caught.value)


async def test_transfer_onto_a_disk_that_fills_up_fails_at_once(
    client: StaccatoClient,
    slow_nginx: NginxServer,
    http_root: Path,
    tmp_path: Path,
) -> None:
    """A 24 MiB download into a 32 MiB file system that someone else fills (to 2 MiB
    free) while the transfer is under way: it fails within seconds of running into the
    full disk, with the cause, no retries, nothing left."""
    small = tmp_path / "small32"
    mount_tmpfs(small, "32m")
    try:
        write_random(http_root / "fill.bin", 24 * MiB, seed=21)
        options = TransferOptions(chunk_size=MiB, streams=2, heartbeat_timeout_s=3)
        transfer = await client.submit(slow_nginx.url("fill.bin"), str(small / "fill.bin"), options)
        # paused while someone else fills the disk, so the transfer cannot outrun the
        # filler however slow the machine (it holds at most its first chunks then)
        await client.pause(transfer)
        await wait_for_status(client, transfer, lambda s: s.state == TransferState.paused)
        _fill(small, 2 * MiB)
        filled = time.monotonic()
        try:
            await client.resume(transfer)
        except StaccatoError as err:
            # a stream the pause stopped may meet the full disk first: then the run
            # fails before the resume lands, and resume says so
            assert "already failed" in str(err), err
        with pytest.raises(TransferFailedError) as caught:
            await asyncio.wait_for(client.wait(transfer), 60)
        took = time.monotonic() - filled
        print(f"disk full: transfer failed {took:.1f} s after the disk filled: {caught.value}")
        _assert_names_the_cause(str(caught.value), small)
        assert took < 20, f"took {took:.1f} s: retried?"
        assert leftovers(small) == []
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


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
