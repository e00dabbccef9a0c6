"""Sync levels with an SFTP destination (whole-second mtimes, SFTP v3) and an HTTP
source (``Last-Modified``, whole seconds): an up-to-date run reads no data from nginx
and writes nothing on the SFTP server (``sftp-server -l INFO`` logs bytes read and
written per handle); a changed source is copied.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from pathlib import Path

import pytest

from staccato.client import StaccatoClient
from staccato.models import SyncLevel, TransferOptions
from tests.helpers import MiB, leftovers, run_cli, sha256_file, write_random
from tests.servers.nginx import NginxServer
from tests.servers.sshd import SshdServer
from tests.sync_checks import data_bytes_served, only_stat_requests, run, settled_requests

SIZE = 2 * MiB + 7
_CLOSE = re.compile(r'close "(?P<path>[^"]+)" bytes read (?P<read>\d+) written (?P<written>\d+)')


def _options(level: SyncLevel) -> TransferOptions:
    return TransferOptions(chunk_size=1 * MiB, streams=2, sync_level=level)


def _handles(log: Path, offset: int, directory: Path) -> list[tuple[str, int, int]]:
    """``(path, bytes read, bytes written)`` of the handles under ``directory`` that
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
        (m.group("path"), int(m.group("read")), int(m.group("written")))
        for m in _CLOSE.finditer(text[offset:])
        if m.group("path").startswith(f"{directory}/")
    ]


def _source(http_root: Path, nginx: NginxServer, seed: int) -> tuple[Path, str, str]:
    name = f"sftp-sync-{uuid.uuid4().hex[:8]}.bin"
    path = http_root / name
    write_random(path, SIZE, seed=seed)
    return path, nginx.url(name), f"/{name}"


async def test_mtime_into_sftp_compares_whole_seconds(
    sftp_client: StaccatoClient,
    sftp_logged: SshdServer,
    sftp_log: Path,
    nginx_ranges: NginxServer,
    http_root: Path,
    data_dir: Path,
) -> None:
    source, url, uri = _source(http_root, nginx_ranges, seed=21)
    destination = data_dir / "dst.bin"
    target = sftp_logged.url(str(destination))
    assert not (await run(sftp_client, url, target, _options(SyncLevel.mtime))).up_to_date
    for _ in range(2):  # the second and third runs
        offset = len(sftp_log.read_text(errors="replace"))
        before = len(settled_requests(nginx_ranges, uri))
        again = await run(sftp_client, url, target, _options(SyncLevel.mtime))
        assert again.up_to_date and again.sync_level == SyncLevel.mtime
        served = settled_requests(nginx_ranges, uri)[before:]
        assert only_stat_requests(served) and data_bytes_served(served) == 0, served
        assert all(written == 0 for _, _, written in _handles(sftp_log, offset, data_dir))

    # new bytes, same size, two whole seconds newer than the destination: copied
    digest = write_random(source, SIZE, seed=22)
    newer = destination.stat().st_mtime + 2
    os.utime(source, (newer, newer))
    changed = await run(sftp_client, url, target, _options(SyncLevel.mtime))
    assert not changed.up_to_date
    assert sha256_file(destination) == digest
    assert leftovers(data_dir) == []


async def test_checksum_into_sftp_reads_each_side_once_and_writes_nothing(
    sftp_client: StaccatoClient,
    sftp_logged: SshdServer,
    sftp_log: Path,
    nginx_ranges: NginxServer,
    http_root: Path,
    data_dir: Path,
) -> None:
    source, url, uri = _source(http_root, nginx_ranges, seed=23)
    destination = data_dir / "dst.bin"
    target = sftp_logged.url(str(destination))
    assert not (await run(sftp_client, url, target, _options(SyncLevel.checksum))).up_to_date
    offset = len(sftp_log.read_text(errors="replace"))
    before = len(settled_requests(nginx_ranges, uri))
    again = await run(sftp_client, url, target, _options(SyncLevel.checksum))
    assert again.up_to_date and again.sync_level == SyncLevel.checksum
    # neither nginx nor SFTP keeps a checksum: each side is read exactly once
    assert data_bytes_served(settled_requests(nginx_ranges, uri)[before:]) == SIZE
    handles = _handles(sftp_log, offset, data_dir)
    assert all(written == 0 for _, _, written in handles), handles
    # the destination's stat probes one byte past its end (reads 0); the checksum reads it all
    assert sum(read for path, read, _ in handles if path == str(destination)) == SIZE, handles

    # new bytes, same size, the old mtime back: only the checksum tells
    old = source.stat()
    digest = write_random(source, SIZE, seed=24)
    os.utime(source, ns=(old.st_atime_ns, old.st_mtime_ns))
    changed = await run(sftp_client, url, target, _options(SyncLevel.checksum))
    assert not changed.up_to_date
    assert sha256_file(destination) == digest
    assert leftovers(data_dir) == []


@pytest.mark.parametrize("level", ["exists", "size", "mtime", "checksum", None])
def test_a_destination_symlink_is_refused_at_every_level(
    temporal_server, sftp_worker, sftp_url, data_dir: Path, level: str | None
) -> None:
    """An SFTP destination that is a symbolic link on the server is refused as a local
    one is, with every sync level and without one (it was compared through the link:
    ``--sync-level size`` said "up to date" for a link to another file of the same
    size; without a level the link was replaced by a file). Nothing is written, the
    link and the file it points to are kept."""
    source = data_dir / "a.txt"
    source.write_bytes(b"the source's bytes")
    other = data_dir / "other.txt"
    other.write_bytes(b"x" * len(source.read_bytes()))  # same size, other bytes
    future = 1_900_000_000  # 2030: newer than the source, for mtime
    os.utime(other, (future, future))
    link = data_dir / "link.txt"
    link.symlink_to(other)
    before = sha256_file(other)
    levels = ["--sync-level", level] if level else []
    done = run_cli(
        "cp", *levels, str(source), sftp_url(link),
        address=temporal_server.address, task_queue=sftp_worker.task_queue,
    )  # fmt: skip
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "is a symbolic link" in done.stderr, done.stderr
    assert link.is_symlink() and os.readlink(link) == str(other)
    assert sha256_file(other) == before
    assert leftovers(data_dir) == []
