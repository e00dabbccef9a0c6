"""Known copies as sources: a second transfer of the same source version reads the
verified copy the first one wrote instead of the origin, and says so in ``status``; an
altered copy (a byte flipped, its mtime put back; or only touched) is noticed and the
origin read; ``--from-origin`` reads the origin.

Real nginx behind a loopback proxy that caps the origin at ~20 MB/s over all
connections (:mod:`tests.servers.pacing_proxy`), a real worker; the origin's bytes
are counted in nginx's access log. Timings are measured by
``bench/bench_known_copies.py``, not asserted here.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from staccato.activities.known_copies import records_query
from staccato.client import StaccatoClient
from staccato.models import TransferOptions, TransferState
from tests.helpers import MiB, at_rest, run_cli, sha256_file, write_random
from tests.servers.nginx import NginxServer
from tests.servers.pacing_proxy import PacingProxy
from tests.sync_checks import LOG_QUIET_S

#: the origin's cap, bytes per second over all connections
ORIGIN_RATE = 20_000_000
OPTIONS = TransferOptions(chunk_size=4 * MiB, streams=4)


@pytest.fixture(scope="module")
def slow_origin(nginx_ranges: NginxServer) -> Iterator[PacingProxy]:
    """nginx (ranges on) behind a proxy capped at ~20 MB/s in total."""
    with PacingProxy(nginx_ranges.port, ORIGIN_RATE) as proxy:
        yield proxy


def _source(http_root: Path, name: str, size: int) -> str:
    """Write ``name`` (random bytes, at rest: its Last-Modified second is long past);
    returns its sha256."""
    digest = write_random(http_root / name, size, seed=size + len(name))
    at_rest(http_root / name)
    return digest


def _origin_bytes(nginx: NginxServer, name: str) -> int:
    """Body bytes nginx sent for GETs of ``name`` since its log was last cleared."""
    return sum(
        int(r["body_bytes_sent"])
        for r in nginx.requests()
        if r["method"] == "GET" and r["uri"].endswith(f"/{name}")
    )


def _settled_origin_bytes(nginx: NginxServer, name: str, timeout_s: float = 10.0) -> int:
    """:func:`_origin_bytes` once it has not changed for ``LOG_QUIET_S`` (nginx logs a
    request when it ends, at load a second after), or after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    seen = _origin_bytes(nginx, name)
    while time.monotonic() < deadline:
        time.sleep(LOG_QUIET_S)
        again = _origin_bytes(nginx, name)
        if again == seen:
            break
        seen = again
    return seen


def _assert_origin_read_once(nginx: NginxServer, name: str, size: int) -> None:
    """The origin served the whole object once: ``size`` bytes, plus the one-byte probes
    of stat and of the publish re-check, plus at most one chunk per stream re-read by
    streams retried at load (DESIGN's re-send bound; CI once saw one 4 MiB chunk)."""
    served = _settled_origin_bytes(nginx, name)
    bound = size + OPTIONS.streams * OPTIONS.chunk_size + 16
    assert size <= served <= bound, f"the origin served {served} bytes of {name} ({size} long)"


async def _copy(client: StaccatoClient, source: str, destination: Path, **options: object):
    """Run one transfer to its end; returns (transfer id, its final status)."""
    transfer = await client.submit(
        source, str(destination), OPTIONS.model_copy(update=options) if options else OPTIONS
    )
    await client.wait(transfer)
    return transfer, await client.status(transfer)


async def _recorded(client: StaccatoClient, source: str, transfer: str) -> None:
    """Wait (at most 20 s) until visibility lists ``transfer`` as a completed transfer
    of ``source``: a record the next transfer can find (visibility is eventually
    consistent)."""
    query = records_query(source)
    assert query is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        async for execution in client.temporal.list_workflows(query):
            if execution.id == transfer:
                return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{transfer} never showed in visibility as a completed copy")


def _flip_byte_keeping_mtime(path: Path, offset: int) -> None:
    """Flip one byte in place and put the mtime back: same size, inode and mtime (the
    version a file copy is recorded by), other content."""
    before = path.stat()
    with open(path, "r+b") as data:
        data.seek(offset)
        byte = data.read(1)
        data.seek(offset)
        data.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_mtime_ns == before.st_mtime_ns


async def test_a_second_transfer_reads_the_first_ones_verified_copy(
    client: StaccatoClient,
    slow_origin: PacingProxy,
    nginx_ranges: NginxServer,
    http_root: Path,
    data_dir: Path,
    temporal_server,
    worker,
) -> None:
    name, size = "known-copies-64m.bin", 64 * MiB
    digest = _source(http_root, name, size)
    source = slow_origin.url(name)
    nginx_ranges.clear_log()

    first, one = await _copy(client, source, data_dir / "d1.bin")
    assert one.state == TransferState.completed, one
    assert one.read_from == "origin", one
    assert "no verified copy" in (one.read_from_reason or ""), one
    await _recorded(client, source, first)
    # what the first read (more than the object when a stream was retried at load: CI
    # once served 1.11x for both), once nginx's log stops growing
    first_served = _settled_origin_bytes(nginx_ranges, name)

    second, two = await _copy(client, source, data_dir / "d2.bin")
    assert two.state == TransferState.completed, two
    assert sha256_file(data_dir / "d2.bin") == digest
    served = _settled_origin_bytes(nginx_ranges, name) - first_served
    assert served <= 0.1 * size, f"the origin served {served} bytes to the second transfer"
    d1 = (data_dir / "d1.bin").as_uri()
    assert two.read_from == d1, two
    assert first in (two.read_from_reason or ""), two

    # the CLI shows it, human and --json
    shown = run_cli(
        "status", second, "--json", address=temporal_server.address, task_queue=worker.task_queue
    )
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["read_from"] == d1 and "verified copy" in status["read_from_reason"]
    human = run_cli("status", second, address=temporal_server.address, task_queue=worker.task_queue)
    assert human.returncode == 0, human.stderr
    assert any(line.startswith("read_from") and d1 in line for line in human.stdout.splitlines()), (
        human.stdout
    )


@pytest.mark.parametrize("alteration", ["flip-a-byte", "touch"])
async def test_an_altered_copy_is_noticed_and_the_origin_read(
    alteration: str,
    client: StaccatoClient,
    slow_origin: PacingProxy,
    nginx_ranges: NginxServer,
    http_root: Path,
    data_dir: Path,
) -> None:
    name, size = f"known-copies-{alteration}.bin", 16 * MiB
    digest = _source(http_root, name, size)
    source = slow_origin.url(name)
    first, _ = await _copy(client, source, data_dir / "d1.bin")
    await _recorded(client, source, first)
    d1 = data_dir / "d1.bin"
    if alteration == "flip-a-byte":
        _flip_byte_keeping_mtime(d1, size // 2 + 12345)
        # its ctime moved with the write: the version tells, before any checksum
        why = "changed since it was recorded"
    else:
        later = time.time() + 5
        os.utime(d1, (later, later))
        why = "changed since it was recorded"
    _settled_origin_bytes(nginx_ranges, name)  # the first transfer's requests, all logged
    nginx_ranges.clear_log()

    _, third = await _copy(client, source, data_dir / "d3.bin")
    assert third.state == TransferState.completed, third
    assert sha256_file(data_dir / "d3.bin") == digest
    assert third.read_from == "origin", third
    assert why in (third.read_from_reason or "") and d1.as_uri() in (
        third.read_from_reason or ""
    ), third
    _assert_origin_read_once(nginx_ranges, name, size)


async def test_from_origin_reads_the_origin(
    client: StaccatoClient,
    slow_origin: PacingProxy,
    nginx_ranges: NginxServer,
    http_root: Path,
    data_dir: Path,
    temporal_server,
    worker,
) -> None:
    name, size = "known-copies-from-origin.bin", 16 * MiB
    digest = _source(http_root, name, size)
    source = slow_origin.url(name)
    first, _ = await _copy(client, source, data_dir / "d1.bin")
    await _recorded(client, source, first)
    _settled_origin_bytes(nginx_ranges, name)  # the first transfer's requests, all logged
    nginx_ranges.clear_log()

    copied = run_cli(
        "cp", source, str(data_dir / "d2.bin"), "--from-origin", "-q", "--chunk-size", "4M",
        address=temporal_server.address, task_queue=worker.task_queue,
    )  # fmt: skip
    assert copied.returncode == 0, copied.stderr
    second = await client.status(str(data_dir / "d2.bin"))
    assert second.state == TransferState.completed, second
    assert sha256_file(data_dir / "d2.bin") == digest
    assert second.read_from == "origin", second
    assert "--from-origin" in (second.read_from_reason or ""), second
    _assert_origin_read_once(nginx_ranges, name, size)


def test_from_origin_is_refused_with_r(temporal_server, data_dir: Path) -> None:
    """``--from-origin`` names one object's read: with -r it is a usage error."""
    refused = run_cli(
        "cp", "-r", str(data_dir), str(data_dir.parent / "out"), "--from-origin",
        address=temporal_server.address,
    )  # fmt: skip
    assert refused.returncode == 2, (refused.stdout, refused.stderr)
    assert "--from-origin applies to one object, not to -r" in refused.stderr, refused.stderr


def test_candidates_are_tried_cheapest_first_never_the_own_destination() -> None:
    """Files first, then the destination's kind, then the rest; newest first within
    each; one record per copy (its newest); the transfer's own destination never."""
    from staccato.known_copies import Record, order

    def record(url: str, at: float) -> Record:
        return Record(
            transfer_id=f"t-{at}", url=url, version="v", checksum="crc32c:0", closed_at=at
        )

    records = [
        record("sftp://h/x", 5),
        record("s3://bucket/old", 1),
        record("file:///a", 2),
        record("s3://bucket/new", 3),
        record("file:///b", 4),
        record("file:///a", 6),  # a newer record of the same copy
        record("s3://bucket/mine", 9),  # the transfer's own destination
    ]
    ordered = order(records, "s3://bucket/mine")
    assert [(r.url, r.closed_at) for r in ordered] == [
        ("file:///a", 6),
        ("file:///b", 4),
        ("s3://bucket/new", 3),
        ("s3://bucket/old", 1),
        ("sftp://h/x", 5),
    ]


def test_no_candidate_is_on_the_origins_endpoint_nor_any_for_a_local_origin() -> None:
    """A copy in the origin's own bucket (or on its own server) is no cheaper than the
    origin: never a candidate; a local file origin has none at all (its disk is the
    cheapest read), whatever copies are recorded."""
    from staccato.known_copies import Record, order

    def record(url: str, at: float) -> Record:
        return Record(
            transfer_id=f"t-{at}", url=url, version="v", checksum="crc32c:0", closed_at=at
        )

    records = [
        record("s3://origin-bucket/copy", 1),
        record("s3://other-bucket/copy", 2),
        record("http://h:8080/copy", 3),
        record("file:///a", 4),
    ]
    from_s3 = order(records, "file:///dest", "s3://origin-bucket/object")
    assert [r.url for r in from_s3] == ["file:///a", "http://h:8080/copy", "s3://other-bucket/copy"]
    from_http = order(records, "file:///dest", "http://h:8080/object")
    assert [r.url for r in from_http] == [
        "file:///a",
        "s3://other-bucket/copy",
        "s3://origin-bucket/copy",
    ]
    assert order(records, "file:///dest", "file:///origin") == []


async def test_a_source_rewritten_with_its_mtime_put_back_is_read_again(
    client: StaccatoClient, data_dir: Path, tmp_path: Path
) -> None:
    """A local source rewritten in place (same size and inode) with its mtime put back
    (``touch -r``): its version moves (ctime), so neither the known copy of the old
    bytes nor a staged entry of them is used; every destination gets the new bytes."""
    source = tmp_path / "rewritten.bin"
    write_random(source, 6 * MiB, seed=77)
    at_rest(source)
    first, _ = await _copy(client, str(source), data_dir / "rw-1.bin")
    await _copy(client, str(source), data_dir / "rw-2.bin", stage=True)  # a staged entry
    await _recorded(client, source.as_uri(), first)
    _flip_byte_keeping_mtime(source, 3 * MiB + 5)  # same size, inode and mtime
    digest = sha256_file(source)
    _, status = await _copy(client, str(source), data_dir / "rw-3.bin")
    assert sha256_file(data_dir / "rw-3.bin") == digest, status
    assert status.read_from == "origin", status
    _, status = await _copy(client, str(source), data_dir / "rw-4.bin", stage=True)
    assert sha256_file(data_dir / "rw-4.bin") == digest, status


def test_an_ended_transfer_that_recorded_nothing_says_why() -> None:
    """``status``'s tuning line of a tuned transfer that read a copy: no ``learned``
    (the link kept nothing), the reason, and its last setting with its chunk size."""
    from staccato.cli.render import tuning_text
    from staccato.models import TuningView

    why = "the streams read the known copy s3://b/x, not the origin"
    view = TuningView(
        link="http://h:80,file://", streams=8, chunk_size=16 * MiB, max_streams=16, not_recorded=why
    )
    text = tuning_text(view, ended=True)
    assert text.startswith(
        f"nothing learned for the link ({why}); last set to 8 streams x 16.0 MiB"
    )
    assert "learned 8" not in text
