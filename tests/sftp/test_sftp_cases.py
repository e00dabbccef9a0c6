"""Replacing an existing destination (with and without posix-rename), a file whose
stat size is wrong (/proc), trusting new hosts, and driver-level checks of the
journal, source pinning and the connection-slot wait, against real sshd servers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from staccato import checksums
from staccato.client import StaccatoClient
from staccato.endpoints import get_driver
from staccato.endpoints.sftp.pool import POOL
from staccato.errors import PermanentError, RetryableError, SourceChanged, WriteSessionLost
from staccato.models import TransferOptions
from staccato.urls import parse_url
from tests.helpers import MiB, leftovers, sha256_file, write_random
from tests.servers.sshd import SshdServer

OPTIONS = TransferOptions(chunk_size=1 * MiB, streams=3)


@pytest.mark.parametrize("server_name", ["sshd_server", "sftp_no_rename"])
async def test_existing_destination_is_replaced(
    sftp_client: StaccatoClient, request: pytest.FixtureRequest, data_dir: Path, server_name: str
) -> None:
    """Replacing an existing destination: with posix-rename (stock OpenSSH) and without
    it (sftp-server -P posix-rename, where a plain RENAME onto an existing name fails):
    the destination ends up holding the new bytes, and no temp, journal or backup file
    stays behind."""
    server: SshdServer = request.getfixturevalue(server_name)
    destination = data_dir / "existing.bin"
    destination.write_bytes(b"old content that must be replaced\n" * 1000)
    source = data_dir / "src.bin"
    digest = write_random(source, 5 * MiB + 3, seed=8)
    transfer = await sftp_client.submit(str(source), server.url(str(destination)), OPTIONS)
    await sftp_client.wait(transfer)
    assert sha256_file(destination) == digest
    assert leftovers(data_dir) == []


async def test_wrong_stat_size(sftp_client: StaccatoClient, sftp_url, data_dir: Path) -> None:
    """A file whose stat size is wrong: /proc/version reports size 0 over SFTP but has
    bytes: they are copied."""
    expected = Path("/proc/version").read_bytes()
    assert os.stat("/proc/version").st_size == 0 and expected
    destination = data_dir / "version.txt"
    transfer = await sftp_client.submit(sftp_url("/proc/version"), str(destination), OPTIONS)
    result = await sftp_client.wait(transfer)
    assert destination.read_bytes() == expected
    assert result.bytes == len(expected)


async def test_trust_new_host_per_profile(
    sftp_client: StaccatoClient, sftp_home: Path, data_dir: Path
) -> None:
    """``StrictHostKeyChecking accept-new`` in a profile: the unknown key is accepted
    and recorded in known_hosts; later transfers check against it."""
    known_hosts = sftp_home / ".ssh" / "known_hosts"
    assert "trusting.staccato.test" not in known_hosts.read_text()
    source = data_dir / "src.bin"
    digest = write_random(source, 2 * MiB, seed=9)
    for name in ("first.bin", "second.bin"):
        transfer = await sftp_client.submit(
            str(source), f"sftp://trusting{data_dir / name}", OPTIONS
        )
        await sftp_client.wait(transfer)
        assert sha256_file(data_dir / name) == digest
    assert known_hosts.read_text().count("trusting.staccato.test ssh-ed25519 ") == 1


# -- driver level, in this process -----------------------------------------------------


def test_trust_new_hosts_setting(driver_env: Path, monkeypatch, sftp_url, data_dir: Path) -> None:
    driver = get_driver("sftp")
    source = data_dir / "x.bin"
    source.write_bytes(b"x")
    url = parse_url(sftp_url(source))
    driver_env.write_text("")
    with pytest.raises(PermanentError, match="unknown host key"):
        driver.stat(url)
    monkeypatch.setenv("STACCATO_SFTP_TRUST_NEW_HOSTS", "1")
    assert driver.stat(url).size == 1
    assert "ssh-ed25519" in driver_env.read_text()
    POOL.close_all()
    monkeypatch.delenv("STACCATO_SFTP_TRUST_NEW_HOSTS")
    assert driver.stat(url).size == 1  # now known


def test_source_changed_while_read(driver_env: Path, sftp_url, data_dir: Path) -> None:
    """A source that changes during the transfer, for sftp sources: a file that grows
    after stat fails with SourceChanged, both through the pinned size and through the
    end-of-file check."""
    driver = get_driver("sftp")
    source = data_dir / "grow.bin"
    write_random(source, 2 * MiB, seed=4)
    url = parse_url(sftp_url(source))
    info = driver.stat(url)
    with open(source, "ab") as f:
        f.write(b"more")
    with pytest.raises(SourceChanged, match="source changed"):
        with driver.open_read(url, info, 0, info.size) as reader:
            reader.readinto(memoryview(bytearray(info.size)))


def test_journal_resume_and_torn_records(driver_env: Path, sftp_url, data_dir: Path) -> None:
    """Durable chunks come from the journal; a corrupted or torn record is ignored (its
    chunk is simply re-sent); abort removes everything."""
    from staccato.endpoints.sftp.journal import JOURNAL_RECORD_BYTES

    driver = get_driver("sftp")
    url = parse_url(sftp_url(data_dir / "j.bin"))
    chunk = 64 * 1024
    data = os.urandom(3 * chunk + 10)
    session = driver.open_session(url, len(data), chunk, "t-journal")
    assert driver.open_session(url, len(data), chunk, "t-journal") == session  # idempotent
    digests = [
        checksums.checksum_bytes("crc32c", data[i * chunk : (i + 1) * chunk]) for i in range(4)
    ]
    with driver.open_writer(session) as writer:
        for index in (2, 0):
            writer.write_chunk(
                index, memoryview(data)[index * chunk : (index + 1) * chunk], digests[index]
            )
    assert driver.durable_chunks(session) == {0: digests[0], 2: digests[2]}
    with open(session.data["journal"], "r+b") as journal:
        journal.seek(1 * JOURNAL_RECORD_BYTES)
        journal.write(f"1 {digests[1]} 00000000".encode())  # wrong CRC
        journal.seek(3 * JOURNAL_RECORD_BYTES)
        journal.write(f"3 {digests[3]}".encode())  # torn: no CRC, short
    assert driver.durable_chunks(session) == {0: digests[0], 2: digests[2]}
    with pytest.raises(PermanentError, match="2 chunks are not durable"):
        driver.publish(session)
    driver.abort(session)
    assert leftovers(data_dir) == []
    with pytest.raises(WriteSessionLost, match="is gone"):
        driver.open_writer(session)


def test_a_frozen_holders_slot_is_borrowed(
    driver_env: Path, monkeypatch, sftp_url, data_dir: Path
) -> None:
    """Cap 1, its slot held by another process. Alive (it touches the slot file), it
    keeps the cap: a new connection waits and fails as retryable. Frozen (SIGSTOP),
    its slot goes untouched and, once stale, one waiter borrows it and connects
    beyond the cap; a second waiter does not. Before, every waiter waited for as long
    as the holder stayed frozen (tester61 B: a frozen worker stalled every SFTP
    transfer to that server from the machine)."""
    from staccato.endpoints.sftp import slots
    from staccato.endpoints.sftp.ssh import resolve

    monkeypatch.setenv("STACCATO_SFTP_MAX_CONNECTIONS", "1")
    monkeypatch.setattr(slots, "STALE_SLOT_S", 8.0)
    url = sftp_url(data_dir / "x")
    target = resolve(parse_url(url))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from staccato.endpoints.sftp.slots import acquire_slot\n"
            "from staccato.endpoints.sftp.ssh import resolve\n"
            "from staccato.urls import parse_url\n"
            "slot = acquire_slot(resolve(parse_url(sys.argv[1])))\n"
            "print('held', flush=True)\n"
            "time.sleep(300)\n",
            url,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        # alive: it touches its slot every TOUCH_S, never stale
        monkeypatch.setenv("STACCATO_SFTP_SLOT_WAIT_S", str(slots.STALE_SLOT_S + 4))
        with pytest.raises(RetryableError, match="all 1 sftp connections .* are busy"):
            slots.acquire_slot(target)
        os.kill(holder.pid, signal.SIGSTOP)
        monkeypatch.setenv("STACCATO_SFTP_SLOT_WAIT_S", "60")
        borrowed = slots.acquire_slot(target)  # once the slot is STALE_SLOT_S untouched
        try:
            assert borrowed.index == 0 and borrowed.path is None, vars(borrowed)
            monkeypatch.setenv("STACCATO_SFTP_SLOT_WAIT_S", "1")
            with pytest.raises(RetryableError, match="are busy"):
                slots.acquire_slot(target)  # one borrower per stale slot
        finally:
            borrowed.release()
    finally:
        holder.kill()
        holder.wait(10)
    slots.acquire_slot(target).release()  # the holder's death freed its slot


def test_slot_wait_is_bounded(driver_env: Path, monkeypatch, sftp_url, data_dir: Path) -> None:
    """With every slot of a host held, a new connection waits and then fails as
    retryable, naming the cap (here held by this process's own slots)."""
    from staccato.endpoints.sftp.slots import acquire_slot
    from staccato.endpoints.sftp.ssh import resolve

    monkeypatch.setenv("STACCATO_SFTP_MAX_CONNECTIONS", "2")
    monkeypatch.setenv("STACCATO_SFTP_SLOT_WAIT_S", "0.5")
    target = resolve(parse_url(sftp_url(data_dir / "x")))
    held = [acquire_slot(target), acquire_slot(target)]
    try:
        with pytest.raises(RetryableError, match="all 2 sftp connections .* are busy"):
            acquire_slot(target)
    finally:
        for slot in held:
            slot.release()
    acquire_slot(target).release()
