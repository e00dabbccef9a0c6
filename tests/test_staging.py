"""The staging cache with file destinations: the size cap evicts the least recently
used entry, a damaged entry is detected and the source read again (never published),
``--stage`` stages a source that serves ranges, and bad settings name themselves.

Real nginx (with and without ranges) and real workers; the cache is inspected on disk
(``<STACCATO_STAGING_DIR>/<key>/manifest.json`` and ``data``).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from staccato.client import StaccatoClient
from staccato.models import TransferOptions
from tests.helpers import MiB, WorkerProcess, mount_tmpfs, run_cli, sha256_file, write_random
from tests.servers.nginx import NginxServer, nginx_fixture

#: the cache cap and the sources: the cap holds one source, not two. The suite runs
#: them scaled down; STACCATO_TEST_FULL_SIZE=1 runs the sizes a user would (a 300 MiB
#: cap and 256 MiB sources) by hand.
FULL_SIZE = os.environ.get("STACCATO_TEST_FULL_SIZE") == "1"
CAP = (300 if FULL_SIZE else 48) * MiB
SIZE = (256 if FULL_SIZE else 32) * MiB
OPTIONS = TransferOptions(chunk_size=4 * MiB, streams=2, heartbeat_timeout_s=3)


@pytest.fixture(scope="module")
def staging_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("staging-cache")


@pytest.fixture(scope="module")
def staging_worker(temporal_server, staging_dir: Path) -> Iterator[WorkerProcess]:
    with WorkerProcess(
        temporal_server.address,
        processes=2,
        env={"STACCATO_STAGING_DIR": str(staging_dir), "STACCATO_STAGING_MAX_BYTES": str(CAP)},
    ) as worker:
        yield worker


@pytest.fixture
async def staging_client(temporal_server, staging_worker: WorkerProcess) -> StaccatoClient:
    client = await StaccatoClient.connect(target_host=temporal_server.address, namespace="default")
    client.task_queue = staging_worker.task_queue
    return client


def _source(http_root: Path, name: str, size: int = SIZE) -> str:
    digest = write_random(http_root / name, size, seed=len(name) + size)
    old = time.time() - 3600  # at rest: its Last-Modified second is long past
    os.utime(http_root / name, (old, old))
    return digest


def _entries(staging_dir: Path) -> dict[str, Path]:
    """Complete cache entries: the source URL their manifest names -> the entry."""
    found = {}
    for manifest in staging_dir.glob("*/manifest.json"):
        found[json.loads(manifest.read_text())["url"]] = manifest.parent
    return found


def _get_bytes(nginx: NginxServer, name: str) -> int:
    return sum(
        int(r["body_bytes_sent"])
        for r in nginx.requests()
        if r["method"] == "GET" and r["uri"].endswith(f"/{name}")
    )


async def test_the_cap_evicts_the_least_recently_used_entry(
    staging_client: StaccatoClient,
    staging_dir: Path,
    nginx_no_ranges: NginxServer,
    http_root: Path,
    data_dir: Path,
) -> None:
    first, second = nginx_no_ranges.url("cap-first.bin"), nginx_no_ranges.url("cap-second.bin")
    digests = [_source(http_root, "cap-first.bin"), _source(http_root, "cap-second.bin")]
    for source, digest, target in zip(
        (first, second), digests, ("one.bin", "two.bin"), strict=True
    ):
        transfer = await staging_client.submit(source, str(data_dir / target), OPTIONS)
        await staging_client.wait(transfer)
        assert sha256_file(data_dir / target) == digest
        if source == first:
            assert first in _entries(staging_dir), "the first source was not staged"
    entries = _entries(staging_dir)
    assert second in entries and first not in entries, sorted(entries)
    held = sum((e / "data").stat().st_size for e in entries.values())
    assert held <= CAP


async def test_a_damaged_entry_is_read_again_from_the_source_never_published(
    staging_client: StaccatoClient,
    staging_worker: WorkerProcess,
    staging_dir: Path,
    nginx_no_ranges: NginxServer,
    http_root: Path,
    data_dir: Path,
) -> None:
    name = "damaged.bin"
    digest = _source(http_root, name)
    url = nginx_no_ranges.url(name)
    nginx_no_ranges.clear_log()
    transfer = await staging_client.submit(url, str(data_dir / "a.bin"), OPTIONS)
    await staging_client.wait(transfer)
    assert _get_bytes(nginx_no_ranges, name) == SIZE
    entry = _entries(staging_dir)[url]
    with open(entry / "data", "r+b") as data:  # flip one byte in the middle
        data.seek(SIZE // 2 + 12345)
        byte = data.read(1)
        data.seek(-1, os.SEEK_CUR)
        data.write(bytes([byte[0] ^ 0xFF]))
    # from the origin: a.bin, the first transfer's verified copy, would serve it otherwise
    from_origin = OPTIONS.model_copy(update={"from_origin": True})
    logged = staging_worker.log_path.stat().st_size
    transfer = await staging_client.submit(url, str(data_dir / "b.bin"), from_origin)
    await staging_client.wait(transfer)
    assert sha256_file(data_dir / "b.bin") == digest
    # the transfer's log says the entry was found damaged and is read again (tester69:
    # "lost", or "not in the staging cache")
    with open(staging_worker.log_path, "rb") as log:
        log.seek(logged)
        lines = [x for x in log.read().decode(errors="replace").splitlines() if transfer in x]
    said = [x for x in lines if "WARNING temporalio.workflow" in x]
    assert any("was found damaged" in x and "reading the source again" in x for x in said), said
    # read once for the first transfer and once more after the damage was found
    assert _get_bytes(nginx_no_ranges, name) == 2 * SIZE
    assert sha256_file(_entries(staging_dir)[url] / "data") == digest


async def test_stage_option_stages_a_source_that_serves_ranges(
    temporal_server,
    staging_worker: WorkerProcess,
    staging_dir: Path,
    nginx_ranges: NginxServer,
    http_root: Path,
    data_dir: Path,
) -> None:
    name = "ranged-staged.bin"
    digest = _source(http_root, name, 8 * MiB)
    url = nginx_ranges.url(name)
    nginx_ranges.clear_log()
    done = run_cli(
        "cp", "-q", "--stage", url, str(data_dir / "c.bin"),
        address=temporal_server.address, task_queue=staging_worker.task_queue,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sha256_file(data_dir / "c.bin") == digest
    assert url in _entries(staging_dir)
    gets = [r for r in nginx_ranges.requests() if r["method"] == "GET" and name in r["uri"]]
    # besides one-byte range probes (stat, the check before publish): one whole read
    reads = [r for r in gets if r["range"] != "bytes=0-0"]
    assert [int(r["body_bytes_sent"]) for r in reads] == [8 * MiB], gets


async def test_a_source_over_the_cap_fails_naming_the_setting(
    temporal_server,
    staging_worker: WorkerProcess,
    nginx_ranges: NginxServer,
    http_root: Path,
    data_dir: Path,
) -> None:
    name = "over-cap.bin"
    _source(http_root, name, CAP + MiB)
    done = run_cli(
        "cp", "-q", "--stage", "--retry-for", "10s", nginx_ranges.url(name),
        str(data_dir / "d.bin"),
        address=temporal_server.address, task_queue=staging_worker.task_queue,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "STACCATO_STAGING_MAX_BYTES" in done.stderr, done.stderr
    assert not (data_dir / "d.bin").exists()


def test_stage_with_recursive_is_refused(temporal_server, data_dir: Path) -> None:
    done = run_cli("cp", "-r", "--stage", str(data_dir), str(data_dir / "x"),
                   address=temporal_server.address)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "--stage applies to one object, not to -r" in done.stderr, done.stderr


async def test_an_unwritable_staging_dir_fails_naming_the_setting(
    temporal_server, nginx_no_ranges: NginxServer, http_root: Path, data_dir: Path
) -> None:
    name = "unwritable.bin"
    _source(http_root, name, 1 * MiB)
    bad = data_dir / "staging-gone"
    bad.mkdir()
    with WorkerProcess(
        temporal_server.address, processes=1, env={"STACCATO_STAGING_DIR": str(bad)}
    ) as worker:
        bad.rmdir()
        bad.write_bytes(b"")  # replaced by a regular file after the worker started
        done = run_cli(
            "cp", "-q", nginx_no_ranges.url(name), str(data_dir / "e.bin"),
            address=temporal_server.address, task_queue=worker.task_queue,
        )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "STACCATO_STAGING_DIR" in done.stderr and str(bad) in done.stderr, done.stderr
    assert "is not a directory" in done.stderr, done.stderr
    assert not (data_dir / "e.bin").exists()


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("STACCATO_STAGING_DIR", "{file}", "is not a directory"),
        ("STACCATO_STAGING_DIR", "{file}/staging", "Not a directory"),
        ("STACCATO_STAGING_DIR", "/proc/nope/x", "/proc/nope/x"),
        ("STACCATO_STAGING_DIR", "relative/staging", "absolute"),
        ("STACCATO_STAGING_MAX_BYTES", "0", "greater than or equal to 1"),
    ],
)
def test_worker_check_refuses_a_bad_staging_setting(
    tmp_path: Path, variable: str, value: str, expected: str
) -> None:
    (tmp_path / "a-file").write_bytes(b"")
    value = value.format(file=tmp_path / "a-file")
    done = run_cli("worker", "--check", address="127.0.0.1:1", env={variable: value})
    assert done.returncode == 2, done.stdout + done.stderr
    assert variable in done.stderr and expected in done.stderr, done.stderr


def test_a_staging_dir_without_room_fails_at_once_reading_the_source_at_most_once(
    temporal_server, nginx_no_ranges: NginxServer, http_root: Path, data_dir: Path, tmp_path: Path
) -> None:
    small = tmp_path / "small"
    mount_tmpfs(small, "8m")
    try:
        name = "too-big-for-the-disk.bin"
        _source(http_root, name, 16 * MiB)
        with WorkerProcess(
            temporal_server.address, processes=1, env={"STACCATO_STAGING_DIR": str(small)}
        ) as worker:
            started = time.monotonic()
            done = run_cli(
                "cp", "-q", "--retry-for", "10m", nginx_no_ranges.url(name),
                str(data_dir / "f.bin"),
                address=temporal_server.address, task_queue=worker.task_queue, timeout_s=180,
            )  # fmt: skip
            took = time.monotonic() - started
        assert done.returncode == 1, done.stderr
        assert "STACCATO_STAGING_DIR" in done.stderr and str(small) in done.stderr, done.stderr
        # at once, not retried for its 10 minutes: a correctness bound far from both (a
        # cp at load 15 can take several times its ~5 s quiet; it had 30 s of 60)
        assert took < 120, took
        gets = [r for r in nginx_no_ranges.requests() if r["method"] == "GET" and name in r["uri"]]
        assert len(gets) <= 1, gets
        assert not (data_dir / "f.bin").exists()
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


slow_ranges = nginx_fixture("http_root", scope="function", extra_server_config="limit_rate 4m;")


async def test_a_transfer_waiting_for_anothers_stage_shows_its_staged_bytes(
    staging_client: StaccatoClient, slow_ranges: NginxServer, http_root: Path, data_dir: Path
) -> None:
    name = "shared-stage.bin"
    digest = _source(http_root, name, 32 * MiB)
    options = OPTIONS.model_copy(update={"stage": True})
    transfers = [
        await staging_client.submit(slow_ranges.url(name), str(data_dir / t), options)
        for t in ("w1.bin", "w2.bin")
    ]
    seen: dict[str, int] = {}
    deadline = time.monotonic() + 30
    while len(seen) < 2 and time.monotonic() < deadline:
        for transfer in transfers:
            status = await staging_client.status(transfer)
            if status.phase == "staging" and (status.staged_bytes or 0) > 0:
                seen[transfer] = status.staged_bytes or 0
        await asyncio.sleep(0.2)
    for transfer in transfers:
        await staging_client.wait(transfer)
    assert len(seen) == 2, seen  # both, the one staging and the one waiting for it
    assert sha256_file(data_dir / "w1.bin") == sha256_file(data_dir / "w2.bin") == digest
    gets = [r for r in slow_ranges.requests() if r["method"] == "GET" and r["range"] != "bytes=0-0"]
    assert len(gets) == 1, gets


async def test_staging_read_is_paced_by_the_transfer_max_rate(
    staging_client: StaccatoClient,
    nginx_no_ranges: NginxServer,
    http_root: Path,
    data_dir: Path,
) -> None:
    """cp --max-rate 4MiB/s of a 24 MiB source without ranges (staged): the staging
    GET takes about 6 s at nginx, not the fraction of a second of an unpaced read.
    nginx's clock stops once the last byte is in the kernel's socket buffers, which
    loopback autotuning grows to ~10 MiB (send + receive) on a busy machine: 12 MiB
    of the source are allowed for them (12 MiB once finished in 1.3 s that way)."""
    name = "paced-staging.bin"
    size, cap = 24 * MiB, 4 * MiB
    digest = _source(http_root, name, size)
    nginx_no_ranges.clear_log()
    # a heartbeat timeout a busy machine keeps: a timed-out staging read is retried,
    # from the start (the source has no ranges), which is right but is not what this
    # test is about (at -n 3 one was: a first GET of 7.6 of 24 MiB, then a second)
    options = OPTIONS.model_copy(update={"max_rate": cap, "heartbeat_timeout_s": 15})
    transfer = await staging_client.submit(nginx_no_ranges.url(name), str(data_dir / name), options)
    assert (await staging_client.wait(transfer)).bytes == size
    assert sha256_file(data_dir / name) == digest
    gets = [
        r
        for r in nginx_no_ranges.requests()
        if r["method"] == "GET" and r["uri"].endswith(f"/{name}")
    ]
    assert [r["body_bytes_sent"] for r in gets] == [size], gets
    print(f"staging GET took {gets[0]['request_time']:.1f} s under --max-rate 4MiB/s")
    assert gets[0]["request_time"] >= (size - 12 * MiB) / cap, gets


async def test_the_staging_rate_shown_never_exceeds_the_cap(
    staging_client: StaccatoClient,
    nginx_no_ranges: NginxServer,
    http_root: Path,
    data_dir: Path,
) -> None:
    """--max-rate 4MiB/s of a 16 MiB source without ranges (staged): every staging rate
    ``status`` shows while it stages is at most the cap (tester69: 8.2 MiB/s under a
    7.63 MiB/s cap early on: the bytes read over the time since the read began counted
    the pacer's start credit and the step read ahead of its wait)."""
    name = "rate-staging.bin"
    size, cap = 16 * MiB, 4 * MiB
    _source(http_root, name, size)
    options = OPTIONS.model_copy(update={"max_rate": cap, "heartbeat_timeout_s": 15})
    transfer = await staging_client.submit(nginx_no_ranges.url(name), str(data_dir / name), options)
    shown: list[float] = []
    deadline = time.monotonic() + 120
    while True:
        status = await staging_client.status(transfer)
        if status.staging_rate_bytes_per_s:
            shown.append(status.staging_rate_bytes_per_s)
        if status.state.value in ("completed", "failed", "cancelled") or (
            status.staged_bytes == size and shown
        ):
            break
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.1)
    assert (await staging_client.wait(transfer)).bytes == size
    print(f"staging rates shown (MiB/s): {[round(r / MiB, 2) for r in shown]}")
    assert shown, "no staging rate was shown while it staged"
    assert max(shown) <= cap, [round(r / MiB, 3) for r in shown]


def test_cp_says_why_a_source_without_ranges_is_staged(
    temporal_server,
    staging_worker: WorkerProcess,
    nginx_no_ranges: NginxServer,
    http_root: Path,
    data_dir: Path,
) -> None:
    """``cp`` of a source that serves no byte ranges says once, on stderr, that the
    service stages it and why (tester: it was staged without a word); not when
    ``--stage`` asked for it, nor with ``-q``. The staging read is paced (24 MiB at 4
    MiB/s, ~6 s) so that a progress line every 2 s sees its phase."""
    name = "why-staged.bin"
    digest = _source(http_root, name, 24 * MiB)
    url = nginx_no_ranges.url(name)
    args = dict(address=temporal_server.address, task_queue=staging_worker.task_queue)
    paced = ["--max-rate", "4MiB/s", "--streams", "2", "--chunk-size", "4MiB"]
    done = run_cli("cp", *paced, url, str(data_dir / "a.bin"), **args)
    assert done.returncode == 0, done.stderr
    assert sha256_file(data_dir / "a.bin") == digest
    note = f"staging: {url} does not serve byte ranges, so the worker reads it once"
    assert done.stderr.count(note) == 1, done.stderr
    assert "running: staging " in done.stderr, done.stderr  # the phase it was seen in
    # asked for (the source read again: the first copy is a known copy otherwise)
    again = ["--from-origin", url, str(data_dir / "b.bin")]
    asked = run_cli("cp", *paced, "--stage", *again, **args)
    assert asked.returncode == 0, asked.stderr
    assert "does not serve byte ranges" not in asked.stderr, asked.stderr
    quiet = run_cli("cp", "-q", *paced, "--from-origin", url, str(data_dir / "c.bin"), **args)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
