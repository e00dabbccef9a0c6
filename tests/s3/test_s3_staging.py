"""A source that cannot serve ranges (nginx with ``max_ranges 0``) is staged once into
the worker's staging cache; failures at the S3 destination afterwards (the store down
for 5 s, the worker SIGKILLed) are recovered from the cache, and nginx serves the
object exactly once (its access log's body bytes).

The store here is the module's own SeaweedFS (it is stopped and started again),
reached through a relay that slows the upload, so the outage and the kill land
mid-upload.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from staccato.client import StaccatoClient
from staccato.models import TransferOptions, TransferState
from tests.helpers import MiB, WorkerProcess, sha256_file, write_random
from tests.s3.conftest import SlowLink, _start_without_inherited_aws
from tests.servers.nginx import NginxServer
from tests.servers.seaweedfs import SeaweedS3, seaweed_s3_fixture

SIZE = 96 * MiB
OPTIONS = TransferOptions(chunk_size=8 * MiB, streams=4, heartbeat_timeout_s=3)
#: bytes/s per connection of the upload relay: 4 streams upload 96 MiB in ~6 s (each
#: 8 MiB chunk ~2 s): the outage and the kill land once the first chunks are up, with
#: ~4 s of upload still to go (256 MiB at 8 MiB/s left ~7 s, for 2.7x the data to
#: write, stage, upload and read back)
UPLINK_RATE = 4 * MiB

staging_s3 = seaweed_s3_fixture(scope="module")


class _Relay(SlowLink):
    """:class:`SlowLink` that outlives its store: a connection made while the store is
    down is closed (the client sees a reset) instead of ending the relay."""

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            threading.Thread(
                target=self._pump, args=(client, upstream, self.rate), daemon=True
            ).start()
            threading.Thread(target=self._pump, args=(upstream, client, 0), daemon=True).start()


#: the outage test's options: a stream whose connection hangs (rather than resets) when
#: the store goes away is retried only after its heartbeat timeout, so that stays
#: short; but at 3 s (its lease ends 2.25 s after a heartbeat) a loaded machine's late
#: heartbeats failed attempts on their own (at load 27, 25 of 28 failed attempts: 282 s)
OUTAGE_OPTIONS = OPTIONS.model_copy(update={"heartbeat_timeout_s": 8})
#: seconds the store is down: the 15 s the read-once promise is stated for (the
#: upload's connections break when it goes, reset at once or hung until the heartbeat
#: timeout; the test checks that a stream attempt did fail)
OUTAGE_S = 15.0


async def _stream_attempts(client: StaccatoClient, transfer: str) -> list[int]:
    """The attempt number of each ``copy_stream`` run of ``transfer`` (its history's
    ActivityTaskStarted events: Temporal records the last attempt of each)."""
    handle = client.temporal.get_workflow_handle(transfer)
    scheduled: set[int] = set()
    attempts: list[int] = []
    async for event in handle.fetch_history_events():
        if event.activity_task_scheduled_event_attributes.activity_type.name == "copy_stream":
            scheduled.add(event.event_id)
        started = event.activity_task_started_event_attributes
        if event.HasField("activity_task_started_event_attributes") and (
            started.scheduled_event_id in scheduled
        ):
            attempts.append(started.attempt)
    return attempts


@pytest.fixture(scope="module")
def relay(staging_s3: SeaweedS3) -> Iterator[_Relay]:
    link = _Relay(staging_s3.s3_port, UPLINK_RATE)
    try:
        yield link
    finally:
        link.close()


@pytest.fixture(scope="module")
def staging_env(
    staging_s3: SeaweedS3, relay: _Relay, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    return {
        **staging_s3.subprocess_env(),
        "AWS_ENDPOINT_URL_S3": relay.endpoint_url,
        "AWS_EC2_METADATA_DISABLED": "true",
        "STACCATO_STAGING_DIR": str(tmp_path_factory.mktemp("staging-cache")),
    }


@pytest.fixture
def bucket(staging_s3: SeaweedS3) -> str:
    name = f"stage-{os.urandom(6).hex()}"
    staging_s3.client().create_bucket(Bucket=name)
    return name


def _worker(address: str, env: dict[str, str], task_queue: str | None = None) -> WorkerProcess:
    """A started worker (the caller stops or kills it), with the tests' default 2
    activity processes (their threads run the 4 streams at once; 4 processes cost
    ~1 s more per start)."""
    process = WorkerProcess(address, env=env, task_queue=task_queue)
    _start_without_inherited_aws(process)
    return process


@contextlib.contextmanager
def _running_worker(
    address: str, env: dict[str, str], task_queue: str | None = None
) -> Iterator[WorkerProcess]:
    process = _worker(address, env, task_queue)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
async def client(temporal_server) -> AsyncIterator[StaccatoClient]:
    yield await StaccatoClient.connect(target_host=temporal_server.address, namespace="default")


def _source(http_root: Path, name: str) -> str:
    digest = write_random(http_root / name, SIZE, seed=len(name))
    old = time.time() - 3600  # at rest: its Last-Modified second is long past
    os.utime(http_root / name, (old, old))
    return digest


def _served(nginx: NginxServer, name: str) -> tuple[int, int]:
    """(GET requests of ``name``, their body bytes) from nginx's access log."""
    gets = [r for r in nginx.requests() if r["method"] == "GET" and r["uri"].endswith(f"/{name}")]
    return len(gets), sum(int(r["body_bytes_sent"]) for r in gets)


async def _wait_copying(
    client: StaccatoClient, transfer: str, timeout_s: float = 120.0
) -> list[str]:
    """Poll status until the copy has sent bytes (staging is over); returns the phases
    seen on the way."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = await client.status(transfer)
        if status.phase and (not seen or seen[-1] != status.phase):
            seen.append(status.phase)
        if status.phase == "staging":  # its progress: the bytes read into the cache
            assert status.staged_bytes is not None and status.staged_bytes <= SIZE, status
        assert status.state not in (TransferState.failed, TransferState.completed), status
        if status.phase == "copy" and status.bytes_done > 0:
            assert status.bytes_done < SIZE, "the upload ended before the test could act"
            return seen
        await asyncio.sleep(0.1)
    raise TimeoutError(f"no copy progress in {timeout_s} s; phases seen: {seen}")


async def test_store_down_mid_upload_the_source_is_read_once(
    temporal_server,
    client: StaccatoClient,
    staging_s3: SeaweedS3,
    staging_env: dict[str, str],
    nginx_no_ranges: NginxServer,
    http_root: Path,
    bucket: str,
    data_dir: Path,
) -> None:
    name = "staged-outage.bin"
    digest = _source(http_root, name)
    nginx_no_ranges.clear_log()
    with _running_worker(temporal_server.address, staging_env) as worker:
        client.task_queue = worker.task_queue
        transfer = await client.submit(
            nginx_no_ranges.url(name), f"s3://{bucket}/{name}", OUTAGE_OPTIONS
        )
        seen = await _wait_copying(client, transfer)
        staging_s3.kill()  # the store goes away mid-upload
        try:
            await asyncio.sleep(OUTAGE_S)  # the outage itself, not a wait for a condition
        finally:
            staging_s3.start()
        result = await asyncio.wait_for(client.wait(transfer), timeout=240)
        retried = await _stream_attempts(client, transfer)
    assert max(retried) > 1, f"no stream attempt failed in the outage: {retried}"
    assert result.bytes == SIZE
    staging_s3.client().download_file(bucket, name, str(data_dir / "back.bin"))
    assert sha256_file(data_dir / "back.bin") == digest
    assert _served(nginx_no_ranges, name) == (1, SIZE), nginx_no_ranges.requests()
    assert "staging" in seen, seen  # status showed the staging phase


async def test_worker_killed_after_staging_the_next_one_uses_the_cache(
    temporal_server,
    client: StaccatoClient,
    staging_s3: SeaweedS3,
    staging_env: dict[str, str],
    nginx_no_ranges: NginxServer,
    http_root: Path,
    bucket: str,
    data_dir: Path,
) -> None:
    name = "staged-kill.bin"
    digest = _source(http_root, name)
    nginx_no_ranges.clear_log()
    first = _worker(temporal_server.address, staging_env)
    try:
        client.task_queue = first.task_queue
        transfer = await client.submit(nginx_no_ranges.url(name), f"s3://{bucket}/{name}", OPTIONS)
        await _wait_copying(client, transfer)
    finally:
        first.kill()
    with _running_worker(temporal_server.address, staging_env, task_queue=first.task_queue):
        result = await asyncio.wait_for(client.wait(transfer), timeout=240)
    assert result.bytes == SIZE
    staging_s3.client().download_file(bucket, name, str(data_dir / "back.bin"))
    assert sha256_file(data_dir / "back.bin") == digest
    assert _served(nginx_no_ranges, name) == (1, SIZE), nginx_no_ranges.requests()
