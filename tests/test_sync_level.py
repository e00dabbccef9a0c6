"""Sync levels (``--sync-level``): a destination that already matches its source at the
level completes the transfer as up to date without reading the source's data; a
source changed at that level is copied again.

Source: a real nginx (its JSON access log counts the body bytes it served, after the
log settles); destination: a local file. Every run stats the HTTP source with a HEAD
and a one-byte range probe (``bytes=0-0``), sync level or not; "data bytes" are the
body bytes of every other GET.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from temporalio.client import WorkflowFailureError

from staccato.client import StaccatoClient
from staccato.errors import InvalidURLError
from staccato.models import SyncLevel, TransferOptions, TransferRequest
from staccato.sync import mtime_not_older
from tests.helpers import MiB, leftovers, run_cli, sha256_file, write_random
from tests.servers.nginx import NginxServer
from tests.sync_checks import data_bytes_served, only_stat_requests, run, settled_requests

SIZE = 3 * MiB + 123


def _options(level: SyncLevel) -> TransferOptions:
    return TransferOptions(chunk_size=1 * MiB, streams=2, sync_level=level)


def _source(http_root: Path, nginx: NginxServer, seed: int) -> tuple[Path, str, str]:
    """A fresh object served by nginx: its path, URL and URI."""
    name = f"sync-{uuid.uuid4().hex[:8]}.bin"
    path = http_root / name
    write_random(path, SIZE, seed=seed)
    return path, nginx.url(name), f"/{name}"


def _rewrite_same_size(path: Path, seed: int) -> str:
    """New bytes, same size; returns their sha256."""
    return write_random(path, path.stat().st_size, seed=seed)


async def test_exists_copies_a_missing_destination_then_reads_nothing(
    client: StaccatoClient, nginx_ranges: NginxServer, http_root: Path, data_dir: Path
) -> None:
    source, url, uri = _source(http_root, nginx_ranges, seed=1)
    destination = data_dir / "dst.bin"
    first = await run(client, url, str(destination), _options(SyncLevel.exists))
    assert not first.up_to_date and first.bytes == SIZE
    assert sha256_file(destination) == sha256_file(source)
    kept = sha256_file(destination)

    # exists ignores everything else: a longer source leaves the destination as it is
    with open(source, "ab") as f:
        f.write(b"more")
    before = len(settled_requests(nginx_ranges, uri))
    second = await run(client, url, str(destination), _options(SyncLevel.exists))
    assert second.up_to_date and second.sync_level == SyncLevel.exists
    served = settled_requests(nginx_ranges, uri)[before:]
    assert only_stat_requests(served) and data_bytes_served(served) == 0, served
    assert sha256_file(destination) == kept
    assert leftovers(data_dir) == []


async def test_size_up_to_date_reads_nothing_and_a_new_size_is_copied(
    client: StaccatoClient, nginx_ranges: NginxServer, http_root: Path, data_dir: Path
) -> None:
    source, url, uri = _source(http_root, nginx_ranges, seed=2)
    destination = data_dir / "dst.bin"
    assert not (await run(client, url, str(destination), _options(SyncLevel.size))).up_to_date
    for _ in range(2):  # the second and third runs
        before = len(settled_requests(nginx_ranges, uri))
        again = await run(client, url, str(destination), _options(SyncLevel.size))
        assert again.up_to_date and again.sync_level == SyncLevel.size
        served = settled_requests(nginx_ranges, uri)[before:]
        assert only_stat_requests(served) and data_bytes_served(served) == 0, served

    digest = write_random(source, SIZE + 1, seed=3)  # a new size
    before = len(settled_requests(nginx_ranges, uri))
    changed = await run(client, url, str(destination), _options(SyncLevel.size))
    assert not changed.up_to_date and changed.bytes == SIZE + 1
    assert sha256_file(destination) == digest
    assert data_bytes_served(settled_requests(nginx_ranges, uri)[before:]) >= SIZE + 1


async def test_mtime_up_to_date_reads_nothing_and_a_newer_source_is_copied(
    client: StaccatoClient, nginx_ranges: NginxServer, http_root: Path, data_dir: Path
) -> None:
    source, url, uri = _source(http_root, nginx_ranges, seed=4)
    destination = data_dir / "dst.bin"
    assert not (await run(client, url, str(destination), _options(SyncLevel.mtime))).up_to_date
    before = len(settled_requests(nginx_ranges, uri))
    again = await run(client, url, str(destination), _options(SyncLevel.mtime))
    assert again.up_to_date and again.sync_level == SyncLevel.mtime
    served = settled_requests(nginx_ranges, uri)[before:]
    assert only_stat_requests(served) and data_bytes_served(served) == 0, served

    # same size, new bytes, modified two whole seconds after the destination was
    # written (Last-Modified has whole seconds): size would call it up to date
    digest = _rewrite_same_size(source, seed=5)
    newer = destination.stat().st_mtime + 2
    os.utime(source, (newer, newer))
    changed = await run(client, url, str(destination), _options(SyncLevel.mtime))
    assert not changed.up_to_date
    assert sha256_file(destination) == digest


async def test_checksum_reads_the_source_once_and_writes_nothing(
    client: StaccatoClient, nginx_ranges: NginxServer, http_root: Path, data_dir: Path
) -> None:
    source, url, uri = _source(http_root, nginx_ranges, seed=6)
    destination = data_dir / "dst.bin"
    assert not (await run(client, url, str(destination), _options(SyncLevel.checksum))).up_to_date
    st = destination.stat()
    before = len(settled_requests(nginx_ranges, uri))
    again = await run(client, url, str(destination), _options(SyncLevel.checksum))
    assert again.up_to_date and again.sync_level == SyncLevel.checksum
    assert again.checksum.startswith("crc32c:")
    served = settled_requests(nginx_ranges, uri)[before:]
    # nginx keeps no checksum: the source is read exactly once to compute one
    assert data_bytes_served(served) == SIZE, served
    after = destination.stat()
    assert (after.st_ino, after.st_mtime_ns) == (st.st_ino, st.st_mtime_ns)  # not written
    assert leftovers(data_dir) == []

    # touched only (same bytes, a newer mtime): the checksum level compares no times
    later = destination.stat().st_mtime + 3600  # newer than the copy
    os.utime(source, (later, later))
    touched = await run(client, url, str(destination), _options(SyncLevel.checksum))
    assert touched.up_to_date, "a source only touched was copied again at --sync-level checksum"
    after = destination.stat()
    assert (after.st_ino, after.st_mtime_ns) == (st.st_ino, st.st_mtime_ns)

    # new bytes, same size, the old mtime back: only the checksum can tell
    old = source.stat()
    digest = _rewrite_same_size(source, seed=7)
    os.utime(source, ns=(old.st_atime_ns, old.st_mtime_ns))
    changed = await run(client, url, str(destination), _options(SyncLevel.checksum))
    assert not changed.up_to_date
    assert sha256_file(destination) == digest


def test_cli_says_up_to_date(
    temporal_server, worker, nginx_ranges: NginxServer, http_root: Path, data_dir: Path
) -> None:
    _, url, _ = _source(http_root, nginx_ranges, seed=8)
    destination = str(data_dir / "dst.bin")

    def cli(*args: str):
        return run_cli(*args, address=temporal_server.address, task_queue=worker.task_queue)

    # not -q: that prints nothing but errors
    first = cli("cp", "--sync-level", "size", url, destination)
    assert first.returncode == 0, first.stderr
    assert "completed:" in first.stderr
    second = cli("cp", "--sync-level", "size", url, destination)
    assert second.returncode == 0, second.stderr
    # said once: by the last progress line, not again at the end
    assert second.stderr.count("up to date (size): nothing copied") == 1, second.stderr
    status = cli("status", "--json", destination)
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert shown["state"] == "completed"
    assert shown["up_to_date"] is True and shown["sync_level"] == "size"


@pytest.mark.parametrize("command", ["cp", "submit"])
def test_bad_sync_level_is_refused(temporal_server, data_dir: Path, command: str) -> None:
    source = data_dir / "src.bin"
    write_random(source, 10)
    result = run_cli(
        command,
        "--sync-level",
        "sometimes",
        str(source),
        str(data_dir / "dst.bin"),
        address=temporal_server.address,
    )
    assert result.returncode == 2
    assert "--sync-level" in result.stderr and "'sometimes'" in result.stderr
    for level in ("exists", "size", "mtime", "checksum"):
        assert level in result.stderr
    assert not (data_dir / "dst.bin").exists()


async def test_bad_sync_level_in_the_workflow_input_fails_naming_it(
    client: StaccatoClient, data_dir: Path
) -> None:
    source = data_dir / "src.bin"
    write_random(source, 10)
    request = StaccatoClient.make_request(str(source), str(data_dir / "dst.bin")).model_dump(
        mode="json"
    )
    request["options"]["sync_level"] = "sometimes"
    handle = await client.temporal.start_workflow(
        "TransferWorkflow",
        request,
        id=f"raw-sync-{uuid.uuid4().hex[:8]}",
        task_queue=client.task_queue,
    )
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    message = str(failure.value.cause)
    assert "sync_level" in message and "exists" in message and "checksum" in message, message
    assert not (data_dir / "dst.bin").exists()


def test_mtimes_are_compared_at_the_coarser_granularity() -> None:
    # a local file's fraction of a second against SFTP's or HTTP's whole seconds
    assert mtime_not_older(100.7, "file", 100.0, "sftp")
    assert mtime_not_older(100.7, "http", 100.2, "file")
    assert not mtime_not_older(101.0, "http", 100.9, "file")
    # two local files keep their fractions
    assert not mtime_not_older(100.7, "file", 100.2, "file")
    assert mtime_not_older(100.2, "file", 100.2, "file")


async def test_a_directory_at_the_destination_fails_naming_it(
    client: StaccatoClient, data_dir: Path
) -> None:
    source = data_dir / "src.bin"
    write_random(source, 10)
    destination = data_dir / "dir"
    destination.mkdir()
    # the client refuses it before starting (exit 2 in the CLI)
    with pytest.raises(InvalidURLError, match=f"destination {destination} is a directory"):
        await run(client, str(source), str(destination), _options(SyncLevel.size))
    # and the worker, for any other Temporal client (a sync level compares it first)
    request = TransferRequest(
        source=f"file://{source}",
        destination=f"file://{destination}",
        options=_options(SyncLevel.size),
    )
    handle = await client.temporal.start_workflow(
        "TransferWorkflow", request, id=f"raw-{uuid.uuid4().hex[:12]}", task_queue=client.task_queue
    )
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    assert f"destination {destination} is a directory" in str(failure.value.cause)


@pytest.mark.parametrize("level", ["exists", "size", "mtime", "checksum"])
def test_a_destination_symlink_is_refused_at_every_level(
    temporal_server, worker, data_dir: Path, level: str
) -> None:
    """A destination that is a symbolic link is refused with a sync level as without
    one (tester: `--sync-level size` said "up to date" for a link to another file of the
    same size; the copy refuses the link). Nothing is written, the link is kept."""
    source = data_dir / "a.txt"
    source.write_bytes(b"the source's bytes")
    other = data_dir / "other.txt"
    other.write_bytes(b"x" * len(source.read_bytes()))  # same size, other bytes
    future = 1_900_000_000  # 2030: newer than the source, for mtime
    os.utime(other, (future, future))
    link = data_dir / "link.txt"
    link.symlink_to(other)
    before = sha256_file(other)
    done = run_cli(
        "cp", "--sync-level", level, str(source), str(link),
        address=temporal_server.address, task_queue=worker.task_queue,
    )  # fmt: skip
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "is a symbolic link" in done.stderr, done.stderr
    assert link.is_symlink() and os.readlink(link) == str(other)
    assert sha256_file(other) == before
    assert leftovers(data_dir) == []


def test_an_up_to_date_destination_still_loses_earlier_runs_leftovers(
    temporal_server, worker, data_dir: Path
) -> None:
    """A failed run's temp file and journal (its clean-up gave up: ``left_behind`` says
    the next transfer removes them) go also when the next transfer finds the destination
    up to date and copies nothing: before, only ``prepare`` removed them, which an up to
    date destination never runs (a tester's 50 MB ``.s5.bin.….staccato-part`` stayed
    while status said completed)."""
    source = data_dir / "src.bin"
    digest = write_random(source, 1 * MiB, seed=14)
    destination = data_dir / "dst.bin"
    destination.write_bytes(source.read_bytes())
    left = [
        data_dir / ".dst.bin.0123456789abcdef.staccato-part",
        data_dir / ".dst.bin.0123456789abcdef.staccato-journal",
    ]
    left[0].write_bytes(b"an earlier run's")
    left[1].write_bytes(b"0 364b3fb7\n")  # a journal as a run writes it
    done = run_cli(
        "cp", "--sync-level", "size", str(source), str(destination),
        address=temporal_server.address, task_queue=worker.task_queue,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "up to date (size): nothing copied" in done.stderr, done.stderr
    assert sha256_file(destination) == digest
    assert [path for path in left if path.exists()] == []
    assert leftovers(data_dir) == []
