"""Verifying an sftp upload by having the server hash its temp file
(:mod:`staccato.endpoints.sftp.remote_hash`) instead of reading it back:

* a file -> sftp copy with the default ``--verify checksum`` reads nothing of the temp
  file back over SFTP (``sftp-server -l INFO`` logs the bytes read per handle) and
  publishes the right bytes;
* a chunk damaged in the temp file after it was written is found by the server's hash
  and sent again (the published file is byte-identical);
* servers where an exec request gets no shell (``ForceCommand internal-sftp``) or one
  that is not POSIX fall back to reading back; a login shell's greeting is skipped;
* journal records without the SHA-256 field (written before it existed) still parse,
  resume, and are verified by reading back.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from staccato import checksums
from staccato.client import StaccatoClient
from staccato.endpoints import get_driver
from staccato.endpoints.sftp import remote_hash
from staccato.endpoints.sftp.journal import (
    CKSUM,
    JOURNAL_RECORD_BYTES,
    SHA256,
    ServerHash,
    hash_record,
    hash_slot,
    journal_record,
    parse_journal,
    parse_marker,
    parse_records,
)
from staccato.endpoints.sftp.journal import (
    _journal_record_text as _record_text,
)
from staccato.endpoints.sftp.pool import POOL
from staccato.endpoints.sftp.ssh import resolve
from staccato.errors import PermanentError
from staccato.models import TransferOptions, TransferState, WriteSession
from staccato.urls import parse_url
from staccato.workflows.transfer import TransferWorkflow
from tests.helpers import MiB, leftovers, sha256_file, wait_for_status, write_random
from tests.servers.nginx import NginxServer
from tests.servers.pacing_proxy import PacingProxy
from tests.servers.sshd import SshdServer
from tests.sftp.conftest import _driver_settings, _server_fixture, known_hosts_lines

_CLOSE = re.compile(r'close "(?P<path>[^"]+)" bytes read (?P<read>\d+) written (?P<written>\d+)')
CHUNK = 256 * 1024


def _exec_as(shell: str) -> str:
    """sshd config: the sftp subsystem as usual (sftp-server), every exec request
    through ``shell`` (a script reading ``$SSH_ORIGINAL_COMMAND``)."""
    return (
        'Match all\n  SetEnv SHLVL=1\n  ForceCommand case "$SSH_ORIGINAL_COMMAND" in '
        "internal-sftp|*sftp-server*) exec /usr/lib/openssh/sftp-server;; esac; " + shell
    )


#: the last chunk of the damaged-temp-chunk test's source (as in tests/test_control.py):
#: 2 MiB after two 12 MiB chunks, so the short segment 1 ends first and is the one
#: damaged
LAST_CHUNK = 2 * MiB
#: a login shell that greets on stdout before running each command
sftp_greeting = _server_fixture(
    lambda d: SshdServer(
        d, extra_config=_exec_as('echo Welcome; exec sh -c "$SSH_ORIGINAL_COMMAND"')
    )
)
#: a shell that understands nothing (as Windows cmd.exe would answer a POSIX script)
sftp_not_posix = _server_fixture(
    lambda d: SshdServer(
        d,
        extra_config=_exec_as(
            "echo \"'$SSH_ORIGINAL_COMMAND' is not recognized as an internal or external "
            'command"; exit 1'
        ),
    )
)


def _cksum_only(directory: Path) -> SshdServer:
    """A server whose exec requests find, first on their PATH, an ``openssl`` and a
    ``sha256sum`` that print a wrong digest (so no SHA-256 can be had from it) and a
    ``cksum`` that logs each run to ``cksum.log`` beside them and then runs the real
    one."""
    tools = Path(directory).resolve() / "bin"
    tools.mkdir(parents=True, exist_ok=True)
    for name in ("openssl", "sha256sum"):
        (tools / name).write_text("#!/bin/sh\ncat >/dev/null\necho " + "0" * 64 + " -\n")
        (tools / name).chmod(0o755)
    real = shutil.which("cksum")
    assert real is not None
    (tools / "cksum").write_text(
        f'#!/bin/sh\necho run >> {tools / "cksum.log"}\nexec {real} "$@"\n'
    )
    (tools / "cksum").chmod(0o755)
    return SshdServer(
        directory, extra_config=_exec_as(f'PATH={tools}:$PATH exec sh -c "$SSH_ORIGINAL_COMMAND"')
    )


#: a server with only ``cksum`` to hash with (:func:`_cksum_only`)
sftp_cksum_only = _server_fixture(_cksum_only)


def _temp_handles(log: Path, offset: int, directory: Path) -> list[tuple[int, int]]:
    """``(bytes read, bytes written)`` of the temp-file handles under ``directory`` that
    sftp-server closed after ``offset`` of its log, once the log stopped growing."""
    deadline = time.monotonic() + 5
    text = log.read_text(errors="replace")
    while time.monotonic() < deadline:
        time.sleep(0.3)
        again = log.read_text(errors="replace")
        if again == text:
            break
        text = again
    return [
        (int(m.group("read")), int(m.group("written")))
        for m in _CLOSE.finditer(text[offset:])
        if m.group("path").startswith(f"{directory}/")
        and m.group("path").endswith(".staccato-part")
    ]


@pytest.fixture
def hash_driver_env(
    monkeypatch: pytest.MonkeyPatch,
    sshd_server: SshdServer,
    sftp_no_rename: SshdServer,
    sftp_greeting: SshdServer,
    sftp_not_posix: SshdServer,
    sftp_exec_logged: SshdServer,
    sftp_cksum_only: SshdServer,
    tmp_path: Path,
) -> Iterator[None]:
    """Staccato's SSH settings for the driver in this process, for these servers; no
    probe remembered from an earlier test."""
    hosts = known_hosts_lines(
        sshd_server,
        sftp_no_rename,
        sftp_greeting,
        sftp_not_posix,
        sftp_exec_logged,
        sftp_cksum_only,
    )
    _driver_settings(monkeypatch, sshd_server, hosts, tmp_path)
    POOL.close_all()
    remote_hash._PROBED.clear()
    yield
    POOL.close_all()
    remote_hash._PROBED.clear()


def _write_session(
    server: SshdServer, directory: Path, data: bytes, key: str, algorithm: str = "crc32c"
) -> tuple[WriteSession, list[str]]:
    """A write session on ``server`` holding every chunk of ``data``; its chunk digests."""
    driver = get_driver("sftp")
    url = parse_url(server.url(str(directory / f"{key}.bin")))
    session = driver.open_session(url, len(data), CHUNK, key)
    chunks = -(-len(data) // CHUNK)
    digests = [
        checksums.checksum_bytes(algorithm, data[i * CHUNK : (i + 1) * CHUNK])
        for i in range(chunks)
    ]
    with driver.open_writer(session) as writer:
        for index in range(chunks):
            view = memoryview(data)[index * CHUNK : (index + 1) * CHUNK]
            writer.write_chunk(index, view, digests[index])
    return session, digests


def _expected(algorithm: str, digests: list[str], data: bytes) -> str:
    parts = [(digest, len(data[i * CHUNK : (i + 1) * CHUNK])) for i, digest in enumerate(digests)]
    return checksums.combine(algorithm, [(checksums.combine(algorithm, parts), len(data))])


@pytest.mark.parametrize(
    ("server_name", "algorithm"),
    [("sftp_exec_logged", "crc32c"), ("sftp_exec_logged", "sha256"), ("sftp_greeting", "crc32c")],
)
def test_server_hashes_the_temp_file(
    hash_driver_env: None,
    request: pytest.FixtureRequest,
    data_dir: Path,
    server_name: str,
    algorithm: str,
) -> None:
    """Every chunk is vouched for by the server's hash (none read back; a greeting
    printed by the login shell is skipped); a damaged chunk hashes differently and is
    read back, so the segment's checksum is the real one, and ``durable_chunks`` drops
    that chunk (it is sent again)."""
    server: SshdServer = request.getfixturevalue(server_name)
    driver = get_driver("sftp")
    data = os.urandom(5 * CHUNK + 1000)
    session, digests = _write_session(server, data_dir, data, f"rh-{algorithm}", algorithm)
    records = parse_records(Path(session.data["journal"]).read_bytes(), len(digests))
    assert all((sha is None) == (algorithm == "sha256") for _, sha in records.values())
    url = parse_url(driver.session_url(session) or "")
    before = dict(remote_hash.stats)
    actual = driver.segments_checksum(url, len(data), CHUNK, [(0, len(digests))], algorithm)
    assert actual == _expected(algorithm, digests, data)
    assert remote_hash.stats["ranges"] - before["ranges"] == len(digests)

    with open(session.data["temp"], "r+b") as temp:  # a stray writer
        temp.seek(2 * CHUNK + 100)
        temp.write(b"\0garbage\0")
    damaged = bytearray(data)
    damaged[2 * CHUNK + 100 : 2 * CHUNK + 109] = b"\0garbage\0"
    real = [
        checksums.checksum_bytes(algorithm, bytes(damaged[i * CHUNK : (i + 1) * CHUNK]))
        for i in range(len(digests))
    ]
    actual = driver.segments_checksum(url, len(data), CHUNK, [(0, len(digests))], algorithm)
    assert actual == _expected(algorithm, real, data) != _expected(algorithm, digests, data)
    durable = driver.durable_chunks(session, 0, len(digests))
    assert sorted(durable) == [i for i in range(len(digests)) if i != 2]
    driver.abort(session)


def test_server_runs_cksum_of_the_records(
    hash_driver_env: None, sftp_cksum_only: SshdServer, data_dir: Path
) -> None:
    """The writer's hash record of each chunk holds the CRC the POSIX ``cksum`` tool
    prints for the chunk's bytes, and the verify has the server run ``cksum`` (this
    server's SHA-256 tools print wrong digests): every chunk vouched for by it, none
    read back. A chunk damaged in the temp file is still caught (its real checksum,
    dropped by ``durable_chunks``); a chunk whose record is an earlier release's
    SHA-256 is read back from a server that cannot compute one."""
    driver = get_driver("sftp")
    data = os.urandom(4 * CHUNK + 99)
    session, digests = _write_session(sftp_cksum_only, data_dir, data, "ck")
    chunks = [data[i * CHUNK : (i + 1) * CHUNK] for i in range(len(digests))]
    by_tool = [
        subprocess.run(["cksum"], input=c, capture_output=True, check=True).stdout.split()[0]
        for c in chunks
    ]
    journal = Path(session.data["journal"])
    records = parse_records(journal.read_bytes(), len(digests))
    assert records == {
        i: (digests[i], ServerHash(CKSUM, by_tool[i].decode())) for i in range(len(digests))
    }
    log = sftp_cksum_only.work_dir / "bin" / "cksum.log"
    runs = log.read_text().count("run") if log.exists() else 0
    url = parse_url(driver.session_url(session) or "")
    before = dict(remote_hash.stats)
    actual = driver.segments_checksum(url, len(data), CHUNK, [(0, len(digests))], "crc32c")
    assert actual == _expected("crc32c", digests, data)
    assert remote_hash.stats["ranges"] - before["ranges"] == len(digests)
    assert log.read_text().count("run") - runs >= len(digests)

    with open(session.data["temp"], "r+b") as temp:  # a stray writer
        temp.seek(CHUNK + 5)
        temp.write(b"\xff\x00\xff")
    actual = driver.segments_checksum(url, len(data), CHUNK, [(0, len(digests))], "crc32c")
    assert actual != _expected("crc32c", digests, data)
    assert sorted(driver.durable_chunks(session)) == [0, 2, 3, 4]

    # chunk 3's hash record as an earlier release wrote it (its SHA-256)
    sha = ServerHash(SHA256, checksums.checksum_bytes("sha256", chunks[3]))
    with open(journal, "r+b") as f:
        f.seek(hash_slot(3, len(digests)) * JOURNAL_RECORD_BYTES)
        f.write(hash_record(3, digests[3], sha))
    before = dict(remote_hash.stats)
    driver.segments_checksum(url, len(data), CHUNK, [(0, len(digests))], "crc32c")
    assert remote_hash.stats["ranges"] - before["ranges"] == len(digests) - 1  # not chunk 3
    driver.abort(session)


def test_small_temp_file_is_read_back(
    hash_driver_env: None, sftp_exec_logged: SshdServer, sftp_exec_log: Path, data_dir: Path
) -> None:
    """A verify of fewer than ``remote_hash.MIN_BYTES`` (a dataset's small file) reads
    the temp file back over SFTP instead of opening an exec channel for the server's
    hash (which cost most of a small file's copy): no range hashed on the server, the
    bytes read back (sftp-server's log), the checksum the real one."""
    driver = get_driver("sftp")
    data = os.urandom(CHUNK // 2 + 7)
    session, digests = _write_session(sftp_exec_logged, data_dir, data, "rh-small")
    url = parse_url(driver.session_url(session) or "")
    offset = len(sftp_exec_log.read_text(errors="replace"))
    before = dict(remote_hash.stats)
    actual = driver.segments_checksum(url, len(data), CHUNK, [(0, 1)], "crc32c")
    assert actual == _expected("crc32c", digests, data)
    assert remote_hash.stats["ranges"] == before["ranges"]
    handles = _temp_handles(sftp_exec_log, offset, data_dir)
    assert sum(read for read, _ in handles) >= len(data), handles
    driver.abort(session)


@pytest.mark.parametrize("server_name", ["sftp_no_rename", "sftp_not_posix"])
def test_no_exec_falls_back_to_reading_back(
    hash_driver_env: None, request: pytest.FixtureRequest, data_dir: Path, server_name: str
) -> None:
    """``ForceCommand internal-sftp`` (an exec request gets an SFTP server, which exits
    at our EOF) and a shell that is not POSIX: no server-side hash, the temp file is
    read back and checks out; a damaged chunk still makes it mismatch."""
    server: SshdServer = request.getfixturevalue(server_name)
    driver = get_driver("sftp")
    data = os.urandom(3 * CHUNK + 5)
    session, digests = _write_session(server, data_dir, data, f"nx-{server_name}")
    url = parse_url(driver.session_url(session) or "")
    before = dict(remote_hash.stats)
    actual = driver.segments_checksum(url, len(data), CHUNK, [(0, len(digests))], "crc32c")
    assert actual == _expected("crc32c", digests, data)
    assert remote_hash.stats == before
    with POOL.lease(resolve(parse_url(server.url(str(data_dir / "x"))))) as connection:
        assert remote_hash.tool_for(connection) is None
    with open(session.data["temp"], "r+b") as temp:
        temp.seek(CHUNK + 7)
        temp.write(b"\xff\x00\xff")
    actual = driver.segments_checksum(url, len(data), CHUNK, [(0, len(digests))], "crc32c")
    assert actual != _expected("crc32c", digests, data)
    driver.abort(session)


def test_old_journal_records_resume(
    hash_driver_env: None, sftp_exec_logged: SshdServer, data_dir: Path
) -> None:
    """A journal written before hash records existed (chunk records only) still counts
    its chunks as durable; they are verified by reading back; a resumed writer adds the
    missing chunk with its hash record and the session publishes. And the other way
    round: the chunk records of a journal with hash records are what an older worker
    reads (``parse_journal``), the publish marker's slot stays free."""
    driver = get_driver("sftp")
    data = os.urandom(4 * CHUNK)
    session, digests = _write_session(sftp_exec_logged, data_dir, data, "old-journal")
    journal = Path(session.data["journal"])
    written = journal.read_bytes()
    assert parse_journal(written, 4) == dict(enumerate(digests))
    assert parse_marker(written, 4) is None
    # an older worker's journal: chunk records of chunks 0-2 only
    journal.write_bytes(written[: 3 * JOURNAL_RECORD_BYTES])
    assert driver.durable_chunks(session) == {i: digests[i] for i in range(3)}
    with driver.open_writer(session) as writer:  # the resumed stream sends chunk 3
        writer.write_chunk(3, memoryview(data)[3 * CHUNK :], digests[3])
    records = parse_records(journal.read_bytes(), 4)
    assert [sha is None for _, sha in records.values()] == [True, True, True, False]
    url = parse_url(driver.session_url(session) or "")
    before = dict(remote_hash.stats)
    actual = driver.segments_checksum(url, len(data), CHUNK, [(0, 4)], "crc32c")
    assert actual == _expected("crc32c", digests, data)
    assert remote_hash.stats["ranges"] - before["ranges"] == 1
    driver.publish(session)
    assert (data_dir / "old-journal.bin").read_bytes() == data
    assert leftovers(data_dir) == []


async def test_upload_verified_without_read_back(
    sftp_client: StaccatoClient, sftp_exec_logged: SshdServer, sftp_exec_log: Path, data_dir: Path
) -> None:
    """file -> sftp with the default ``--verify checksum``: the server hashes the temp
    file, nothing of it is read back over SFTP, the published file is the source."""
    source = data_dir / "up.bin"
    digest = write_random(source, 6 * MiB + 11, seed=31)
    destination = data_dir / "up.out"
    offset = len(sftp_exec_log.read_text(errors="replace"))
    options = TransferOptions(chunk_size=1 * MiB, streams=2)
    transfer = await sftp_client.submit(
        str(source), sftp_exec_logged.url(str(destination)), options
    )
    result = await asyncio.wait_for(sftp_client.wait(transfer), 120)
    assert result.bytes == 6 * MiB + 11
    assert sha256_file(destination) == digest
    handles = _temp_handles(sftp_exec_log, offset, data_dir)
    assert handles, "no temp-file handles logged"
    assert sum(written for _, written in handles) == 6 * MiB + 11
    assert sum(read for read, _ in handles) == 0, handles
    assert leftovers(data_dir) == []


async def test_upload_without_exec_reads_back(
    sftp_client: StaccatoClient, sftp_logged: SshdServer, sftp_log: Path, data_dir: Path
) -> None:
    """The same copy to a server whose ``ForceCommand`` runs ``sftp-server`` for every
    session (no shell): verify reads the temp file back, and the copy completes."""
    source = data_dir / "up.bin"
    digest = write_random(source, 3 * MiB + 5, seed=32)
    destination = data_dir / "up.out"
    offset = len(sftp_log.read_text(errors="replace"))
    options = TransferOptions(chunk_size=1 * MiB, streams=2)
    transfer = await sftp_client.submit(str(source), sftp_logged.url(str(destination)), options)
    await asyncio.wait_for(sftp_client.wait(transfer), 120)
    assert sha256_file(destination) == digest
    handles = _temp_handles(sftp_log, offset, data_dir)
    assert sum(read for read, _ in handles) == 3 * MiB + 5, handles


@pytest.fixture
def paced_nginx(nginx_ranges: NginxServer) -> Iterator[PacingProxy]:
    """``nginx_ranges`` paced at 3 MB/s in all, until a test lifts it."""
    with PacingProxy(nginx_ranges.port, rate_bytes_per_s=3_000_000) as proxy:
        yield proxy


async def test_damaged_temp_chunk_is_sent_again(
    sftp_client: StaccatoClient,
    sftp_exec_logged: SshdServer,
    sftp_exec_log: Path,
    paced_nginx: PacingProxy,
    http_root: Path,
    data_dir: Path,
) -> None:
    """A finished segment's chunk damaged in the temp file while the transfer is paused:
    the verify before publish finds it by the server's hash, the segment is copied
    again (only that chunk is sent again) and the published file is byte-identical.
    The source is paced at 3 MB/s in all until the damage is done, then at full speed."""
    chunk = 12 * MiB
    size = 2 * chunk + LAST_CHUNK
    digest = write_random(http_root / "late-sftp.bin", size, seed=33)
    destination = data_dir / "late.bin"
    # as test_control's test_chunk_damaged_while_paused_is_caught_before_publish: 2
    # streams from a slow source, paused once segment 1 (the short chunk 2) is done
    options = TransferOptions(chunk_size=chunk, streams=2, heartbeat_timeout_s=3)
    offset = len(sftp_exec_log.read_text(errors="replace"))
    transfer = await sftp_client.submit(
        paced_nginx.url("late-sftp.bin"), sftp_exec_logged.url(str(destination)), options
    )
    handle = sftp_client.temporal.get_workflow_handle(transfer)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        progress = await handle.query(TransferWorkflow.progress)
        if progress is not None and progress.segments_done >= 1:
            break
        await asyncio.sleep(0.05)
    assert progress is not None and progress.segments_done == 1, progress
    await sftp_client.pause(transfer)
    await wait_for_status(
        sftp_client, transfer, lambda s: s.state == TransferState.paused, timeout_s=30
    )
    (temp,) = [p for p in data_dir.iterdir() if p.name.endswith(".staccato-part")]
    (journal,) = [p for p in data_dir.iterdir() if p.name.endswith(".staccato-journal")]
    done = sorted(parse_records(journal.read_bytes(), 3))
    assert done
    with open(temp, "r+b") as f:  # damage a chunk of the finished segment
        f.seek(done[-1] * chunk + 100)
        f.write(b"\0garbage\0")
    paced_nginx.rate = 1e12  # paces nothing
    await sftp_client.resume(transfer)
    result = await asyncio.wait_for(sftp_client.wait(transfer), 120)
    assert result.bytes == size
    assert sha256_file(destination) == digest
    handles = _temp_handles(sftp_exec_log, offset, data_dir)
    written = sum(w for _, w in handles)
    # every chunk once, the damaged one once more (and the chunk in flight at the pause)
    damaged = chunk if done[-1] < 2 else LAST_CHUNK
    assert size + damaged <= written <= size + damaged + chunk, handles


def test_torn_hash_records_are_ignored() -> None:
    """A hash record counts only whole, in its own slot, naming its chunk record's
    checksum, of a known kind and well-formed: its CRC covers the hash too. Both kinds
    parse: ``cksum=`` (this release's writers) and ``sha256=`` (earlier releases')."""
    sha = ServerHash(SHA256, "ab" * 32)
    crc = ServerHash(CKSUM, "1219131554")
    chunk = journal_record(0, "1234abcd").ljust(2 * JOURNAL_RECORD_BYTES, b"\0")

    def journal(record: bytes) -> bytes:
        return chunk + record

    good = hash_record(0, "1234abcd", sha)
    assert hash_slot(0, 1) == 2
    assert parse_records(journal(good), 1) == {0: ("1234abcd", sha)}
    assert parse_records(journal(hash_record(0, "1234abcd", crc)), 1) == {0: ("1234abcd", crc)}
    assert parse_records(chunk, 1) == {0: ("1234abcd", None)}
    flipped = good.replace(b"=ab", b"=ac", 1)  # one hash digit changed: its CRC fails
    assert parse_records(journal(flipped), 1) == {0: ("1234abcd", None)}
    torn = good[:40].ljust(JOURNAL_RECORD_BYTES, b"\0")
    assert parse_records(journal(torn), 1) == {0: ("1234abcd", None)}
    other = hash_record(0, "99999999", sha)  # of another write of the chunk
    assert parse_records(journal(other), 1) == {0: ("1234abcd", None)}
    assert parse_records(good.ljust(3 * JOURNAL_RECORD_BYTES, b"\0"), 1) == {}
    # a kind this release does not know (a later one's): read back, never trusted
    unknown = _record_text("0 1234abcd md5=" + "ab" * 16)
    assert parse_records(journal(unknown), 1) == {0: ("1234abcd", None)}
    with pytest.raises(PermanentError, match="does not fit"):
        hash_record(0, "f" * 64, sha)
    with pytest.raises(ValueError, match="not a server hash"):
        hash_record(0, "1234abcd", ServerHash(CKSUM, "4294967296"))


def _exec_sessions(server: SshdServer) -> int:
    """Exec requests the sshd has started (its VERBOSE log: one line each)."""
    return server.sshd_log_path.read_text(errors="replace").count("Starting session: command")


def test_segments_are_hashed_over_one_exec_channel(
    hash_driver_env: None, sftp_exec_logged: SshdServer, data_dir: Path
) -> None:
    """A verify part of several segments (a tuned copy's read-back runs one part per
    stream lane) has the server hash all their chunks over one exec channel, not one
    per segment (a channel costs ~0.5 s on a loaded worker), and the checksum is the
    segments' combined."""
    driver = get_driver("sftp")
    data = os.urandom(6 * CHUNK)
    session, digests = _write_session(sftp_exec_logged, data_dir, data, "rh-segments")
    url = parse_url(driver.session_url(session) or "")
    segments = [(0, 2), (2, 4), (4, 6)]
    # the probe (once per host) is an exec of its own: done before counting
    driver.segments_checksum(url, len(data), CHUNK, [(0, 6)], "crc32c")
    before_ranges = remote_hash.stats["ranges"]
    before = _exec_sessions(sftp_exec_logged)
    actual = driver.segments_checksum(url, len(data), CHUNK, segments, "crc32c")
    assert remote_hash.stats["ranges"] - before_ranges == 6
    assert _exec_sessions(sftp_exec_logged) - before == 1
    expected = checksums.combine(
        "crc32c",
        [
            (
                checksums.combine("crc32c", [(digests[i], CHUNK) for i in range(first, end)]),
                2 * CHUNK,
            )
            for first, end in segments
        ],
    )
    assert actual == expected
    driver.abort(session)
