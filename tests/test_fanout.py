"""Fan-out: one source to several destinations, the source read once.

Real nginx (ranges on; its access log counts the bytes served), a real S3 store
(SeaweedFS), a real sshd, real workers. A 512 MiB source (48 MiB in the suite,
STACCATO_TEST_FULL_SIZE=1 for the full size) goes to two files, one S3
object and one SFTP file: all four byte-identical, nginx served at most 1.1 x the
source, which was staged once and whose pin the group released. A destination whose
server is down the whole run (an SFTP URL at a port nothing listens on) fails with
its reason while the others complete: exit 1. A missing source fails the group before
any destination starts; a cancelled group cancels every destination (temp data
removed). A destination given twice, or equal to the source, is refused (exit 2)
before anything starts.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError

from staccato.client import StaccatoClient
from staccato.errors import StaccatoError
from staccato.models import GroupState, TransferOptions, TransferState
from staccato.urls import parse_url
from tests.helpers import (
    NO_WORKER_ENV,
    SESSION_WORKER_PROCESSES,
    MiB,
    WorkerProcess,
    leftovers,
    run_cli,
    sha256_file,
    write_random,
)
from tests.servers.nginx import NginxServer
from tests.servers.seaweedfs import SeaweedS3
from tests.servers.sshd import SshdServer
from tests.servers.temporal_server import free_port

#: the read-once fan-out's source: 512 MiB with STACCATO_TEST_FULL_SIZE=1 (the size a
#: user would send); scaled down in the suite, where the size is not the point (the
#: source is still cut into several segments per destination: 3 of 16 MiB; 96 MiB
#: only doubled the staging, S3, SFTP and hashing work)
FULL_SIZE = os.environ.get("STACCATO_TEST_FULL_SIZE") == "1"
BIG = (512 if FULL_SIZE else 48) * MiB
SMALL = 16 * MiB
#: the source of the groups acted on mid-copy (bytes; 0.5 MB/s: ~17 s per phase)
SLOW_GROUP_SIZE = 8 * MiB
OPTIONS = TransferOptions(chunk_size=16 * MiB, streams=4, heartbeat_timeout_s=5)


@pytest.fixture(scope="module")
def fanout_env(
    seaweed_s3: SeaweedS3, sshd_server: SshdServer, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """A worker's environment: the S3 store, the sshd (key and known_hosts), a staging
    cache that holds the big source."""
    ssh = tmp_path_factory.mktemp("fanout-ssh")
    known_hosts = ssh / "known_hosts"
    known_hosts.write_text(sshd_server.known_hosts_path.read_text())
    home = ssh / "home"
    home.mkdir()
    return {
        **seaweed_s3.subprocess_env(),
        "AWS_EC2_METADATA_DISABLED": "true",
        "HOME": str(home),
        "SSH_AUTH_SOCK": "",
        "STACCATO_SSH_CONFIG": "none",
        "STACCATO_SSH_IDENTITY": str(sshd_server.client_key_path),
        "STACCATO_SSH_KNOWN_HOSTS": str(known_hosts),
        "STACCATO_SFTP_LOCK_DIR": str(ssh / "locks"),
        "STACCATO_STAGING_DIR": str(tmp_path_factory.mktemp("fanout-staging")),
        "STACCATO_STAGING_MAX_BYTES": str(BIG + 64 * MiB),
    }


@pytest.fixture(scope="module")
def fanout_worker(temporal_server, fanout_env: dict[str, str]) -> Iterator[WorkerProcess]:
    # 2 activity processes, as the session workers: 2 x STACCATO_WORKER_THREADS still
    # run every stream and batch of a test at once, and each process more cost ~1 CPU-s
    # of imports per start (a module worker starts once per xdist process)
    process = WorkerProcess(
        temporal_server.address, processes=SESSION_WORKER_PROCESSES, env=fanout_env
    )
    with pytest.MonkeyPatch.context() as patch:  # no AWS_* of this process leaks in
        for key in [k for k in os.environ if k.startswith("AWS_")]:
            patch.delenv(key)
        process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
async def fanout_client(
    temporal_server, fanout_worker: WorkerProcess
) -> AsyncIterator[StaccatoClient]:
    client = await StaccatoClient.connect(target_host=temporal_server.address, namespace="default")
    client.task_queue = fanout_worker.task_queue
    yield client


@pytest.fixture
def bucket(seaweed_s3: SeaweedS3) -> str:
    name = f"fan-{uuid.uuid4().hex[:12]}"
    seaweed_s3.client().create_bucket(Bucket=name)
    return name


def _source(http_root: Path, name: str, size: int) -> str:
    digest = write_random(http_root / name, size, seed=size % 997 + len(name))
    old = time.time() - 3600  # at rest: its Last-Modified second is long past
    os.utime(http_root / name, (old, old))
    return digest


def _served(nginx: NginxServer, name: str, expected: int, timeout_s: float = 5.0) -> int:
    """Body bytes nginx sent for ``name`` (GETs), once the log stops growing or holds
    ``expected`` bytes (a request is logged when it ends)."""
    deadline = time.monotonic() + timeout_s
    last = -1
    while True:
        served = sum(
            int(r["body_bytes_sent"])
            for r in nginx.requests()
            if r["method"] == "GET" and r["uri"].endswith(f"/{name}")
        )
        if served >= expected and served == last or time.monotonic() > deadline:
            return served
        last = served
        time.sleep(0.2)


def _s3_sha256(seaweed_s3: SeaweedS3, bucket: str, key: str) -> str:
    body: Any = seaweed_s3.client().get_object(Bucket=bucket, Key=key)["Body"]
    digest = hashlib.sha256()
    for block in iter(lambda: body.read(8 * MiB), b""):
        digest.update(block)
    return digest.hexdigest()


async def test_a_source_goes_to_four_destinations_read_once(
    fanout_client: StaccatoClient,
    fanout_env: dict[str, str],
    nginx_ranges: NginxServer,
    http_root: Path,
    data_dir: Path,
    seaweed_s3: SeaweedS3,
    bucket: str,
    sshd_server: SshdServer,
) -> None:
    name = f"fan-{uuid.uuid4().hex[:8]}.bin"
    digest = _source(http_root, name, BIG)
    (data_dir / "sftp").mkdir()
    destinations = [
        str(data_dir / "one.bin"),
        str(data_dir / "two.bin"),
        f"s3://{bucket}/copies/three.bin",
        sshd_server.url(str(data_dir / "sftp" / "four.bin")),
    ]
    group = await fanout_client.fan_out(nginx_ranges.url(name), destinations, OPTIONS)
    assert group.startswith("staccato-group-")
    final = await fanout_client.wait_group(group)
    assert final.state == GroupState.completed, final
    assert [d.state for d in final.destinations] == [TransferState.completed] * 4, final
    assert sha256_file(data_dir / "one.bin") == digest
    assert sha256_file(data_dir / "two.bin") == digest
    assert _s3_sha256(seaweed_s3, bucket, "copies/three.bin") == digest
    assert sha256_file(data_dir / "sftp" / "four.bin") == digest
    # the group's history is small and does not grow with the size
    history = await fanout_client.temporal.get_workflow_handle(group).fetch_history()
    print(f"fan-out to 4: group history {len(history.events)} events")
    assert len(history.events) < 100
    # staged once, and the group's pin released at its end
    staging = Path(fanout_env["STACCATO_STAGING_DIR"])
    manifests = [json.loads(m.read_text()) for m in staging.glob("*/manifest.json")]
    assert [m["size"] for m in manifests if m["url"].endswith(f"/{name}")] == [BIG]
    assert list(staging.glob("*/pins/*")) == []
    served = _served(nginx_ranges, name, BIG)
    print(f"fan-out to 4: nginx served {served} bytes of {BIG} ({served / BIG:.3f} x)")
    assert BIG <= served <= 1.1 * BIG, f"nginx served {served} bytes of a {BIG}-byte source"


def test_a_dead_destination_fails_alone_with_its_reason(
    temporal_server,
    fanout_worker: WorkerProcess,
    nginx_ranges: NginxServer,
    http_root: Path,
    data_dir: Path,
    seaweed_s3: SeaweedS3,
    bucket: str,
    sshd_server: SshdServer,
) -> None:
    name = f"fan-dead-{uuid.uuid4().hex[:8]}.bin"
    digest = _source(http_root, name, SMALL)
    (data_dir / "sftp").mkdir()
    dead = f"sftp://{sshd_server.user}@127.0.0.1:{free_port()}{data_dir}/dead.bin"
    destinations = [
        str(data_dir / "one.bin"),
        f"s3://{bucket}/three.bin",
        sshd_server.url(str(data_dir / "sftp" / "four.bin")),
        dead,
    ]
    done = run_cli(
        "cp", "--retry-for", "10s", "--streams", "2", "--chunk-size", "4MiB", nginx_ranges.url(name),
        *destinations, address=temporal_server.address, task_queue=fanout_worker.task_queue,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    for written in (data_dir / "one.bin", data_dir / "sftp" / "four.bin"):
        assert written.exists() and sha256_file(written) == digest, done.stderr
    assert _s3_sha256(seaweed_s3, bucket, "three.bin") == digest, done.stderr
    assert not (data_dir / "dead.bin").exists()
    group = next(word for word in done.stderr.split() if word.startswith("staccato-group-")).rstrip(
        ":"
    )
    shown = run_cli(
        "status", "--json", group, address=temporal_server.address,
        task_queue=fanout_worker.task_queue,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["kind"] == "group" and status["state"] == "completed_with_errors", status
    states = {d["destination"]: d for d in status["destinations"]}
    canonical = [parse_url(d).canonical for d in destinations]
    assert [states[d]["state"] for d in canonical[:3]] == ["completed"] * 3, status
    assert states[canonical[3]]["state"] == "failed", status
    # the reason names the unreachable server
    assert "connection refused" in states[canonical[3]]["error"], status
    assert f"failed: {dead}" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    human = run_cli(
        "status", group, address=temporal_server.address, task_queue=fanout_worker.task_queue
    )
    assert f"group {group}: completed_with_errors, 3/4" in human.stdout, human.stdout
    # the bytes its transfer got to, as a failed single transfer's status keeps them
    assert "failed  0 B / 16.0 MiB (0%): gave up: the prepare step" in human.stdout, human.stdout
    listed = run_cli(
        "list", "--json", address=temporal_server.address, task_queue=fanout_worker.task_queue
    )
    rows = [r for r in json.loads(listed.stdout) if r.get("id") == group]
    assert rows and rows[0]["kind"] == "group", listed.stdout
    served = _served(nginx_ranges, name, SMALL)
    assert served <= 1.1 * SMALL, served


@pytest.mark.parametrize(
    "second",
    ["{dir}/a.bin", "file://{dir}/a.bin", "{dir}/./a.bin"],
    ids=["same-path", "file-url", "dot-segment"],
)
def test_the_same_destination_twice_is_refused(
    temporal_server, data_dir: Path, second: str
) -> None:
    done = run_cli(
        "cp", "http://127.0.0.1:9/src.bin", f"{data_dir}/a.bin", second.format(dir=data_dir),
        address=temporal_server.address,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "given twice" in done.stderr and f"{data_dir}/a.bin" in done.stderr, done.stderr


def test_a_destination_equal_to_the_source_is_refused(temporal_server, data_dir: Path) -> None:
    source = data_dir / "src.bin"
    done = run_cli(
        "cp", str(source), str(data_dir / "a.bin"), f"file://{source}",
        address=temporal_server.address,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "source and destination are the same object" in done.stderr, done.stderr
    assert str(source) in done.stderr, done.stderr
    assert not (data_dir / "a.bin").exists()


def test_a_missing_source_fails_the_group_before_any_destination_starts(
    temporal_server, fanout_worker: WorkerProcess, nginx_ranges: NginxServer, data_dir: Path
) -> None:
    missing = nginx_ranges.url(f"absent-{uuid.uuid4().hex[:8]}.bin")
    done = run_cli(
        "cp", missing, str(data_dir / "a.bin"), str(data_dir / "b.bin"),
        address=temporal_server.address, task_queue=fanout_worker.task_queue,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "reading the source failed" in done.stderr and "404" in done.stderr, done.stderr
    assert done.stderr.count("reading the source failed") == 1, done.stderr  # said once
    assert "Traceback" not in done.stderr, done.stderr
    assert not (data_dir / "a.bin").exists() and not (data_dir / "b.bin").exists()


async def _slow_group(
    client: StaccatoClient, nginx: NginxServer, http_root: Path, data_dir: Path, what: str
) -> str:
    """A group of an 8 MiB source to ``a.bin`` and ``b.bin`` at 0.5 MB/s per transfer:
    its staging read lasts ~17 s and its copies as long, long enough to act on mid-way
    at load 40 (at 2 MB/s a 16 MiB copy once ended before a pause and two status
    commands had run); its tests cancel it. Returns the group id."""
    name = f"fan-{what}-{uuid.uuid4().hex[:8]}.bin"
    _source(http_root, name, SLOW_GROUP_SIZE)
    destinations = [str(data_dir / "a.bin"), str(data_dir / "b.bin")]
    slow = OPTIONS.model_copy(update={"max_rate": 500_000, "chunk_size": MiB})
    return await client.fan_out(nginx.url(name), destinations, slow)


async def test_cancelling_the_group_cancels_every_destination(
    fanout_client: StaccatoClient, nginx_ranges: NginxServer, http_root: Path, data_dir: Path
) -> None:
    group = await _slow_group(fanout_client, nginx_ranges, http_root, data_dir, "cancel")
    deadline = time.monotonic() + 60
    while True:
        current = await fanout_client.group_status(group)
        if any((d.bytes_done or 0) > 0 for d in current.destinations):
            break
        assert time.monotonic() < deadline, current
        await asyncio.sleep(0.2)
    await fanout_client.cancel(group)
    final = await fanout_client.wait_group(group)
    assert final.state == GroupState.cancelled, final
    assert [d.state for d in final.destinations] == [TransferState.cancelled] * 2, final
    assert not (data_dir / "a.bin").exists() and not (data_dir / "b.bin").exists()
    assert leftovers(data_dir) == []  # each transfer removed its temp data


async def test_a_paused_destination_shows_paused_in_the_group(
    temporal_server,
    fanout_client: StaccatoClient,
    fanout_worker: WorkerProcess,
    nginx_ranges: NginxServer,
    http_root: Path,
    data_dir: Path,
) -> None:
    group = await _slow_group(fanout_client, nginx_ranges, http_root, data_dir, "pause")
    deadline = time.monotonic() + 60
    while True:  # pause the first destination once its copy runs
        current = await fanout_client.group_status(group)
        paused = current.destinations[0]
        if paused.state == TransferState.running and paused.run_id:
            try:
                await fanout_client.pause(paused.transfer_id)
                break
            except StaccatoError as err:  # not copying yet: starting
                assert "has no copy of its own" in str(err), err
        assert time.monotonic() < deadline, current
        await asyncio.sleep(0.2)
    try:
        while True:
            current = await fanout_client.group_status(group)
            if current.destinations[0].state == TransferState.paused:
                break
            assert time.monotonic() < deadline, current
            await asyncio.sleep(0.2)
        assert current.destinations[1].state == TransferState.running, current
        shown = run_cli(
            "status", "--json", group, address=temporal_server.address,
            task_queue=fanout_worker.task_queue,
        )  # fmt: skip
        states = [d["state"] for d in json.loads(shown.stdout)["destinations"]]
        assert states == ["paused", "running"], shown.stdout
        human = run_cli(
            "status", group, address=temporal_server.address, task_queue=fanout_worker.task_queue
        )
        assert f"{paused.destination}  paused" in human.stdout, human.stdout
    finally:
        await fanout_client.cancel(group)
        await fanout_client.wait_group(group)


def test_cp_shows_the_staging_progress_of_a_group(
    temporal_server,
    fanout_worker: WorkerProcess,
    nginx_ranges: NginxServer,
    http_root: Path,
    data_dir: Path,
) -> None:
    """A fan-out's source staged at 4 MB/s (its --max-rate paces the staging read too):
    `cp` shows the bytes staged growing, with the rate, from the staging heartbeats."""
    name = f"fan-staging-{uuid.uuid4().hex[:8]}.bin"
    _source(http_root, name, SMALL)
    done = run_cli(
        "cp", "--max-rate", "4MB", "--chunk-size", "4MiB", nginx_ranges.url(name),
        str(data_dir / "a.bin"), str(data_dir / "b.bin"),
        address=temporal_server.address, task_queue=fanout_worker.task_queue,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    staging = [line for line in done.stderr.splitlines() if "staging the source" in line]
    staged = {line.split(":", 1)[1].split("/")[0].strip() for line in staging}
    assert staged - {"0 B"}, done.stderr  # it grows while it runs
    assert any(re.search(r"\) at [0-9.]+ [KM]iB/s, ETA", line) for line in staging), done.stderr


async def test_a_malformed_raw_start_fails_naming_the_field(
    fanout_client: StaccatoClient,
) -> None:
    handle = await fanout_client.temporal.start_workflow(
        "FanOutWorkflow",
        {"source": "http://127.0.0.1:9/a.bin", "destinations": ["file:///tmp/only-one.bin"]},
        id=f"raw-fan-out-{uuid.uuid4().hex[:8]}",
        task_queue=fanout_client.task_queue,
    )
    with pytest.raises(WorkflowFailureError) as failed:
        await asyncio.wait_for(handle.result(), 60)
    message = str(failed.value.cause)
    assert "invalid FanOutWorkflow input: destinations:" in message, message


async def test_a_group_whose_worker_is_gone_shows_each_destinations_own_run(
    temporal_server,
    fanout_env: dict[str, str],
    nginx_ranges: NginxServer,
    http_root: Path,
    data_dir: Path,
) -> None:
    """With its worker SIGKILLed, a group's status reads each destination's own run
    (tester, 2 of 2: `status GROUP` said 0/2 completed and every destination waiting,
    with no bytes, while one destination's transfer had completed and the other had
    copied most of its bytes). Destination a completes; b is paused mid-copy (so it is
    still running, with durable bytes, when the worker dies)."""
    worker = WorkerProcess(temporal_server.address, processes=2, env=fanout_env)
    with pytest.MonkeyPatch.context() as patch:  # no AWS_* of this process leaks in
        for key in [k for k in os.environ if k.startswith("AWS_")]:
            patch.delenv(key)
        worker.start()
    client = await StaccatoClient.connect(target_host=temporal_server.address, namespace="default")
    client.task_queue = worker.task_queue
    name = f"fan-dead-{uuid.uuid4().hex[:8]}.bin"
    size = SLOW_GROUP_SIZE // 2  # ~8 s per phase at 0.5 MB/s
    _source(http_root, name, size)
    destinations = [str(data_dir / "a.bin"), str(data_dir / "b.bin")]
    # as _slow_group's, in 256 KiB chunks: a chunk is durable early in b's copy
    slow = OPTIONS.model_copy(update={"max_rate": 500_000, "chunk_size": 256 * 1024})
    group = await client.fan_out(nginx_ranges.url(name), destinations, slow)
    try:
        deadline = time.monotonic() + 120
        paused = False
        while True:  # pause b once it copies, then wait for a to complete
            current = await client.group_status(group)
            a, b = current.destinations
            # past 1 MiB, one of its 4 streams has made a 256 KiB chunk durable
            if not paused and b.state == TransferState.running and (b.bytes_done or 0) > 1.5 * MiB:
                try:
                    paused = await client.pause(b.transfer_id) or True
                except StaccatoError as err:  # not copying yet: starting
                    assert "has no copy of its own" in str(err), err
            assert b.state != TransferState.completed, "b completed before it was paused"
            if paused and a.state == TransferState.completed:
                break
            assert time.monotonic() < deadline, current
            await asyncio.sleep(0.2)
        worker.kill()
        shown = run_cli(
            "status", "--json", group, address=temporal_server.address,
            task_queue=worker.task_queue, env=NO_WORKER_ENV,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        rows = json.loads(shown.stdout)["destinations"]
        assert rows[0]["state"] == "completed", rows
        assert rows[0]["bytes_done"] == rows[0]["bytes_total"] == size, rows
        assert rows[0]["checksum"], rows
        assert rows[1]["state"] in ("running", "paused"), rows
        assert rows[1]["run_id"] and rows[1]["bytes_total"] == size, rows
        # what b's pause stopped at (its memo: patch paused-bytes-memo)
        assert 0 < rows[1]["bytes_done"] < size, rows
    finally:
        # a worker again on the queue: the group is cancelled and ends
        worker = WorkerProcess(
            temporal_server.address, processes=2, env=fanout_env, task_queue=worker.task_queue
        )
        with pytest.MonkeyPatch.context() as patch:
            for key in [k for k in os.environ if k.startswith("AWS_")]:
                patch.delenv(key)
            worker.start()
        try:
            await client.cancel(group)
            await asyncio.wait_for(client.wait_group(group), 120)
        finally:
            worker.stop()
