"""Record workflow histories (``TransferWorkflow``, ``DatasetWorkflow``, ``FanOutWorkflow``) as replay fixtures (run by ``scripts/record-histories``).

Starts what it needs the way the test suite does (``tests/servers``: a Temporal dev
server, nginx, OpenSSH sshd, SeaweedFS; ``tests/helpers.WorkerProcess``: real
``staccato worker`` subprocesses), runs one small transfer per scenario and writes
its history (``WorkflowHandle.fetch_history().to_json()``) to
``tests/workflow/histories/<release>/<scenario>.json``, where ``<release>`` is the
installed ``staccato`` version. Only that release's directory is rewritten: the
histories of earlier releases stay, so ``tests/workflow/test_replay.py`` keeps
replaying them with the current workflow code.

Objects are small (tens of KiB to 1.5 MiB, 16 KiB chunks, 2 streams) so each history
is 8-40 KiB. No payload codec is used (``STACCATO_CODEC_KEY`` is removed from the
workers' environment), and every fixture is checked for the S3 keys and the SSH key
before it is written: no secret ends up in a fixture.

Usage: ``python -m tests.workflow.record_histories [SCENARIO ...]`` (default: all).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError

from staccato import governors
from staccato.client import StaccatoClient
from staccato.errors import TransferFailedError
from staccato.links import endpoint_of, governor_id, parse_limit_target
from staccato.models import IfBusy, Limits, SyncLevel, TransferOptions, TransferState
from tests.helpers import WorkerProcess, at_rest, wait_for_status, write_random
from tests.servers.nginx import NginxServer
from tests.servers.seaweedfs import SeaweedS3
from tests.servers.sshd import SshdServer
from tests.servers.temporal_server import TemporalDevServer

HISTORIES = Path(__file__).resolve().parent / "histories"
KiB = 1024
#: small chunks and two streams: a handful of activities, a history of a few KiB
OPTIONS = TransferOptions(chunk_size=16 * KiB, streams=2, heartbeat_timeout_s=2, retry_for_s=120)
#: bytes/s per connection of the slow nginx: a 256 KiB object takes ~4 s on 2 streams
SLOW_RATE = 32 * KiB
SLOW_SIZE = 256 * KiB
SMALL_SIZE = 64 * KiB
#: a copy that outlasts the worker's progress reporter's first two reports (one per
#: ``MIN_PERIOD_S`` = 9 s, no setting shortens it): 1.5 MiB on 2 streams at 32 KiB/s
#: each is ~24 s
PROGRESS_SIZE = 1536 * KiB
WAIT_S = 90.0  # bound of every wait for a transfer's state (seconds)


@dataclass
class Lab:
    """The servers and workers of one recording session, and the secrets to keep out."""

    root: Path
    temporal: TemporalDevServer
    slow_nginx: NginxServer
    http_root: Path
    client: StaccatoClient
    worker: WorkerProcess
    worker_env: dict[str, str]
    sshd: SshdServer | None = None
    s3: SeaweedS3 | None = None
    #: an nginx without a rate limit over ``http_root`` (the tuned scenario's source)
    fast_nginx: NginxServer | None = None
    bucket: str = "histories"
    secrets: list[str] = field(default_factory=list)

    def data(self, name: str) -> Path:
        """A fresh directory under the session's root."""
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path


Scenario = Callable[[Lab], Awaitable[str]]  # returns the transfer's workflow id


async def _wait(client: StaccatoClient, transfer: str) -> None:
    """Wait for the end of ``transfer``'s run (any outcome), at most ``WAIT_S`` each
    for its outcome and its end: a failed transfer's run goes on removing its partial
    data after ``wait`` says failed (0.19.0), and its history is recorded whole."""
    try:
        await asyncio.wait_for(client.wait(transfer), WAIT_S)
    except TransferFailedError:
        pass
    try:
        await asyncio.wait_for(client.temporal.get_workflow_handle(transfer).result(), WAIT_S)
    except WorkflowFailureError:
        pass


def _copying(s: Any) -> bool:
    """A status with bytes moved but the copy not over (or the transfer ended)."""
    return s.state in (TransferState.failed, TransferState.completed, TransferState.cancelled) or (
        s.state == TransferState.running and s.bytes_done > 0
    )


async def completed_file(lab: Lab) -> str:
    """file -> file, source at rest: stat, prepare, 2 streams (verify on write), publish,
    the final size check."""
    data = lab.data("completed")
    write_random(data / "source.bin", SMALL_SIZE, seed=1)
    at_rest(data / "source.bin")
    transfer = await lab.client.submit(
        str(data / "source.bin"), str(data / "destination.bin"), OPTIONS
    )
    await _wait(lab.client, transfer)
    return transfer


async def paused_resumed(lab: Lab) -> str:
    """http -> file from a slow source: paused mid-copy (streams cancelled), resumed,
    completed (the whole temp object read back before publish after a pause)."""
    write_random(lab.http_root / "pause.bin", SLOW_SIZE, seed=2)
    at_rest(lab.http_root / "pause.bin")
    data = lab.data("paused")
    transfer = await lab.client.submit(
        lab.slow_nginx.url("pause.bin"), str(data / "pause.bin"), OPTIONS
    )
    await wait_for_status(lab.client, transfer, _copying, timeout_s=WAIT_S)
    await lab.client.pause(transfer)
    await wait_for_status(
        lab.client, transfer, lambda s: s.state == TransferState.paused, timeout_s=WAIT_S
    )
    await _settled_streams(lab.client, transfer)
    await lab.client.resume(transfer)
    await _wait(lab.client, transfer)
    return transfer


async def _settled_streams(client: StaccatoClient, transfer: str) -> None:
    """Wait until no stream activity is pending (a pause's cancellations completed)."""
    handle = client.temporal.get_workflow_handle(transfer)
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        description = await handle.describe()
        if not description.raw_description.pending_activities:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{transfer}: streams still pending {WAIT_S} s after pause")


async def cancelled_mid_copy(lab: Lab) -> str:
    """http -> file from a slow source, cancelled mid-copy: streams cancelled, cleanup."""
    write_random(lab.http_root / "cancel.bin", SLOW_SIZE, seed=3)
    at_rest(lab.http_root / "cancel.bin")
    data = lab.data("cancelled")
    transfer = await lab.client.submit(
        lab.slow_nginx.url("cancel.bin"), str(data / "cancel.bin"), OPTIONS
    )
    await wait_for_status(lab.client, transfer, _copying, timeout_s=WAIT_S)
    await lab.client.cancel(transfer)
    await _wait(lab.client, transfer)
    return transfer


async def failed_missing_source(lab: Lab) -> str:
    """file -> file whose source does not exist: stat fails, the transfer fails."""
    data = lab.data("failed")
    transfer = await lab.client.submit(
        str(data / "no-such-source.bin"), str(data / "destination.bin"), OPTIONS
    )
    await _wait(lab.client, transfer)
    return transfer


async def retried_stream_worker_killed(lab: Lab) -> str:
    """http -> file from a slow source on a worker SIGKILLed mid-copy: the streams time
    out (heartbeat) and are retried on a second worker on the same task queue, which also
    takes over the workflow task."""
    write_random(lab.http_root / "kill.bin", SLOW_SIZE, seed=4)
    at_rest(lab.http_root / "kill.bin")
    data = lab.data("killed")
    log_dir = lab.data("killed-logs")
    first = WorkerProcess(
        lab.temporal.address, processes=2, env=lab.worker_env, log_dir=log_dir
    ).start()
    client = await _connect(lab.temporal, first.task_queue)
    try:
        transfer = await client.submit(
            lab.slow_nginx.url("kill.bin"), str(data / "kill.bin"), OPTIONS
        )
        await wait_for_status(client, transfer, _copying, timeout_s=WAIT_S)
    finally:
        first.kill()
    with WorkerProcess(
        lab.temporal.address,
        task_queue=first.task_queue,
        processes=2,
        env=lab.worker_env,
        log_dir=log_dir,
    ):
        await _wait(client, transfer)
    return transfer


async def sftp_destination(lab: Lab) -> str:
    """file -> sftp: the temp data is read back per segment (verify) before publish."""
    assert lab.sshd is not None
    data = lab.data("sftp-source")
    write_random(data / "source.bin", SMALL_SIZE, seed=5)
    at_rest(data / "source.bin")
    remote = lab.data("sftp-destination") / "destination.bin"
    transfer = await lab.client.submit(str(data / "source.bin"), lab.sshd.url(str(remote)), OPTIONS)
    await _wait(lab.client, transfer)
    return transfer


async def s3_destination(lab: Lab) -> str:
    """file -> s3 (multipart upload): publish, then the stored checksum is compared."""
    assert lab.s3 is not None
    data = lab.data("s3-source")
    write_random(data / "source.bin", SMALL_SIZE, seed=6)
    at_rest(data / "source.bin")
    transfer = await lab.client.submit(
        str(data / "source.bin"), f"s3://{lab.bucket}/histories/destination.bin", OPTIONS
    )
    await _wait(lab.client, transfer)
    return transfer


async def source_read_twice(lab: Lab) -> str:
    """http -> file from a source written just now: its ETag and Last-Modified (whole
    seconds) cannot tell a rewrite in place during the copy from the copy's own time, so
    each segment is read a second time (confirm_source) before publish."""
    write_random(lab.http_root / "fresh.bin", SMALL_SIZE, seed=7)  # not at rest
    data = lab.data("read-twice")
    transfer = await lab.client.submit(
        lab.slow_nginx.url("fresh.bin"), str(data / "fresh.bin"), OPTIONS
    )
    await _wait(lab.client, transfer)
    return transfer


async def source_rewritten_in_place(lab: Lab) -> str:
    """http -> file from a source written just now and rewritten in place mid-copy (its
    first and last chunk; size and mtime kept, so ETag and Last-Modified stay): the
    second read (confirm_source) sees the change; the transfer fails, cleanup runs."""
    source = lab.http_root / "rewritten.bin"
    write_random(source, SLOW_SIZE, seed=8)  # not at rest
    data = lab.data("rewritten")
    transfer = await lab.client.submit(
        lab.slow_nginx.url(source.name), str(data / "rewritten.bin"), OPTIONS
    )
    await wait_for_status(lab.client, transfer, _copying, timeout_s=WAIT_S)
    kept = os.stat(source)
    chunk = OPTIONS.chunk_size
    with open(source, "r+b") as f:
        for offset in (0, SLOW_SIZE - chunk):
            f.seek(offset)
            f.write(os.urandom(chunk))
    os.utime(source, ns=(kept.st_atime_ns, kept.st_mtime_ns))
    await _wait(lab.client, transfer)
    return transfer


async def _raw_start(
    lab: Lab, workflow_id: str, source: str, destination: str, **options: Any
) -> str:
    """Start a ``TransferWorkflow`` with a plain temporalio client (default converter, no
    memo, no search attributes) under ``workflow_id``, as ``temporal workflow start`` or
    an SDK start would: a front run unless the id is the destination's transfer id."""
    request = StaccatoClient.make_request(source, destination, OPTIONS)
    data = request.model_dump(mode="json", exclude_none=True)
    data["options"].update(options)
    plain = await Client.connect(lab.temporal.address, namespace="default")
    await plain.start_workflow(
        "TransferWorkflow", data, id=workflow_id, task_queue=lab.worker.task_queue
    )
    return workflow_id


async def _wait_raw(lab: Lab, workflow_id: str) -> None:
    """Wait for the end of the run ``workflow_id`` (any outcome), at most ``WAIT_S``."""
    handle = lab.client.temporal.get_workflow_handle(workflow_id)
    try:
        await asyncio.wait_for(handle.result(), WAIT_S)
    except WorkflowFailureError:
        pass


async def _holder(lab: Lab, name: str, destination: str) -> str:
    """A transfer from the slow source writing ``destination``, copying (bytes moved)."""
    write_random(lab.http_root / name, 2 * SLOW_SIZE, seed=20)  # ~8 s
    at_rest(lab.http_root / name)
    holder = await lab.client.submit(lab.slow_nginx.url(name), destination, OPTIONS)
    await wait_for_status(lab.client, holder, _copying, timeout_s=WAIT_S)
    return holder


async def front_completed(lab: Lab) -> str:
    """A raw start under its own id (not the destination's transfer id): the front
    makes itself visible, runs ``run_as_destination_transfer`` on the control queue
    (which starts the destination's transfer) and completes with its result."""
    data = lab.data("front")
    write_random(data / "source.bin", SMALL_SIZE, seed=9)
    at_rest(data / "source.bin")
    front = await _raw_start(
        lab, "manual-front-1", str(data / "source.bin"), str(data / "destination.bin")
    )
    await _wait_raw(lab, front)
    return front


async def front_waited(lab: Lab) -> str:
    """A raw start with ``if_busy = wait`` while another transfer writes its
    destination: queued (``front_state`` signal), then runs once the holder ended."""
    data = lab.data("front-wait")
    destination = str(data / "destination.bin")
    holder = await _holder(lab, "front-hold.bin", destination)
    write_random(data / "source.bin", SMALL_SIZE, seed=10)
    at_rest(data / "source.bin")
    front = await _raw_start(
        lab, "manual-front-wait", str(data / "source.bin"), destination, if_busy=IfBusy.wait.value
    )
    queued = await wait_for_status(
        lab.client, front, lambda s: s.state != TransferState.scheduled, timeout_s=WAIT_S
    )
    if queued.state != TransferState.queued:
        raise RuntimeError(f"front_waited: the front was {queued.state}, not queued")
    await _wait(lab.client, holder)
    await _wait_raw(lab, front)
    return front


async def front_busy_failed(lab: Lab) -> str:
    """A raw start (``if_busy`` left out: fail) while another transfer writes its
    destination: fails "destination busy" at once."""
    data = lab.data("front-busy")
    destination = str(data / "destination.bin")
    holder = await _holder(lab, "busy-hold.bin", destination)
    write_random(data / "source.bin", SMALL_SIZE, seed=11)
    at_rest(data / "source.bin")
    front = await _raw_start(lab, "manual-front-busy", str(data / "source.bin"), destination)
    await _wait_raw(lab, front)
    await lab.client.cancel(holder)
    await _wait(lab.client, holder)
    return front


async def front_cancelled(lab: Lab) -> str:
    """A raw start from the slow source, cancelled mid-copy: the front cancels the
    destination's transfer it drives and ends cancelled."""
    write_random(lab.http_root / "front-cancel.bin", SLOW_SIZE, seed=12)
    at_rest(lab.http_root / "front-cancel.bin")
    data = lab.data("front-cancel")
    front = await _raw_start(
        lab,
        "manual-front-cancel",
        lab.slow_nginx.url("front-cancel.bin"),
        str(data / "destination.bin"),
    )
    await wait_for_status(lab.client, front, _copying, timeout_s=WAIT_S)
    await lab.client.cancel(front)
    await _wait_raw(lab, front)
    return front


async def sync_up_to_date(lab: Lab) -> str:
    """file -> file at sync level ``size`` whose destination already has the source's
    size (a first run copied it): the sync check says up to date, nothing is copied."""
    data = lab.data("sync-size")
    write_random(data / "source.bin", SMALL_SIZE, seed=13)
    at_rest(data / "source.bin")
    options = OPTIONS.model_copy(update={"sync_level": SyncLevel.size})
    source, destination = str(data / "source.bin"), str(data / "destination.bin")
    first = await lab.client.submit(source, destination, options)
    await _wait(lab.client, first)
    transfer = await lab.client.submit(source, destination, options)
    result = await asyncio.wait_for(lab.client.wait(transfer), WAIT_S)
    if not result.up_to_date:
        raise RuntimeError("sync_up_to_date: the second run copied")
    return transfer


async def sync_copied(lab: Lab) -> str:
    """file -> file at sync level ``checksum`` whose destination has the source's size
    but other bytes: the sync check reads both, they differ, the object is copied."""
    data = lab.data("sync-checksum")
    write_random(data / "source.bin", SMALL_SIZE, seed=14)
    at_rest(data / "source.bin")
    write_random(data / "destination.bin", SMALL_SIZE, seed=15)
    options = OPTIONS.model_copy(update={"sync_level": SyncLevel.checksum})
    transfer = await lab.client.submit(
        str(data / "source.bin"), str(data / "destination.bin"), options
    )
    result = await asyncio.wait_for(lab.client.wait(transfer), WAIT_S)
    if result.up_to_date:
        raise RuntimeError("sync_copied: the destination was taken as up to date")
    return transfer


async def progress_reported(lab: Lab) -> str:
    """http -> file from the slow source for ~24 s: the worker's progress reporter
    signals ``report_progress`` at least twice while the streams copy."""
    write_random(lab.http_root / "progress.bin", PROGRESS_SIZE, seed=16)
    at_rest(lab.http_root / "progress.bin")
    data = lab.data("progress")
    transfer = await lab.client.submit(
        lab.slow_nginx.url("progress.bin"), str(data / "progress.bin"), OPTIONS
    )
    await _wait(lab.client, transfer)
    history = await lab.client.temporal.get_workflow_handle(transfer).fetch_history()
    signals = sum(
        1
        for event in history.events
        if event.HasField("workflow_execution_signaled_event_attributes")
        and event.workflow_execution_signaled_event_attributes.signal_name == "report_progress"
    )
    if signals < 2:
        raise RuntimeError(f"progress_reported: {signals} report_progress signal(s), not 2")
    return transfer


async def staged(lab: Lab) -> str:
    """http -> file with ``--stage``: the source read once into the worker's staging
    cache (stage_source), the streams read the entry, its pin released at the end."""
    write_random(lab.http_root / "staged.bin", SMALL_SIZE, seed=17)
    at_rest(lab.http_root / "staged.bin")
    data = lab.data("staged")
    options = OPTIONS.model_copy(update={"stage": True})
    transfer = await lab.client.submit(
        lab.slow_nginx.url("staged.bin"), str(data / "staged.bin"), options
    )
    await _wait(lab.client, transfer)
    return transfer


async def limited(lab: Lab) -> str:
    """http -> file from an endpoint with ``--max-active 1`` and a ``--max-rate`` (its
    governor grants the slot by signal), with a ``--max-rate`` of its own; the limits
    are cleared after."""
    write_random(lab.http_root / "limited.bin", SMALL_SIZE, seed=18)
    at_rest(lab.http_root / "limited.bin")
    target = parse_limit_target(endpoint_of(lab.slow_nginx.base_url))
    await governors.set_limits(
        lab.client.temporal, target, Limits(max_active=1, max_rate=64 * 1024 * 1024)
    )
    data = lab.data("limited")
    options = OPTIONS.model_copy(update={"max_rate": 32 * 1024 * 1024})
    try:
        transfer = await lab.client.submit(
            lab.slow_nginx.url("limited.bin"), str(data / "limited.bin"), options
        )
        await _wait(lab.client, transfer)
    finally:
        await governors.unset_limits(lab.client.temporal, target, [])
    return transfer


async def known_copy(lab: Lab) -> str:
    """http -> file twice: the second transfer of the same source version reads the
    verified copy the first one wrote (find_known_copy), not the origin."""
    from staccato.activities.known_copies import records_query

    write_random(lab.http_root / "known.bin", SMALL_SIZE, seed=20)
    at_rest(lab.http_root / "known.bin")
    source = lab.slow_nginx.url("known.bin")
    first = await lab.client.submit(source, str(lab.data("known-1") / "known.bin"), OPTIONS)
    await _wait(lab.client, first)
    query = records_query(source)
    assert query is not None
    deadline = time.monotonic() + 30  # visibility lists the first one as completed
    while time.monotonic() < deadline:
        if [e async for e in lab.client.temporal.list_workflows(query) if e.id == first]:
            break
        await asyncio.sleep(0.2)
    transfer = await lab.client.submit(source, str(lab.data("known-2") / "known.bin"), OPTIONS)
    await _wait(lab.client, transfer)
    return transfer


async def fan_out_child(lab: Lab) -> str:
    """A fan-out of one http source to two files (``cp SRC DST1 DST2``): the history of
    one child transfer, which reads the entry its group staged (no stat, no staging of
    its own)."""
    write_random(lab.http_root / "fanned.bin", SMALL_SIZE, seed=19)
    at_rest(lab.http_root / "fanned.bin")
    data = lab.data("fan-out")
    group = await lab.client.fan_out(
        lab.slow_nginx.url("fanned.bin"), [str(data / "a.bin"), str(data / "b.bin")], OPTIONS
    )
    final = await asyncio.wait_for(lab.client.wait_group(group), WAIT_S)
    return final.destinations[0].transfer_id


async def fan_out_group(lab: Lab) -> str:
    """The group's own history of a fan-out to two files: stat, stage once, two child
    transfers, the pin released."""
    write_random(lab.http_root / "group.bin", SMALL_SIZE, seed=21)
    at_rest(lab.http_root / "group.bin")
    data = lab.data("fan-out-group")
    group = await lab.client.fan_out(
        lab.slow_nginx.url("group.bin"), [str(data / "a.bin"), str(data / "b.bin")], OPTIONS
    )
    await asyncio.wait_for(lab.client.wait_group(group), WAIT_S)
    return group


async def tuned(lab: Lab) -> str:
    """http -> file of an object large enough to be tuned (``options.tuning``): the
    link's memory recalled, the optimizer's segments, the memory recorded. (An HTTP
    source, unthrottled: a local copy, file -> file, is not tuned.)"""
    from staccato.tuning import MIN_TUNED_BYTES

    assert lab.fast_nginx is not None
    data = lab.data("tuned")
    write_random(lab.http_root / "tuned.bin", MIN_TUNED_BYTES, seed=22)
    at_rest(lab.http_root / "tuned.bin")
    options = TransferOptions(tuning=True, heartbeat_timeout_s=5, retry_for_s=120)
    transfer = await lab.client.submit(
        lab.fast_nginx.url("tuned.bin"), str(data / "destination.bin"), options
    )
    await _wait(lab.client, transfer)
    return transfer


async def _dataset(lab: Lab, name: str) -> str:
    """A dataset of a small local tree (5 small files in one batch, one file over
    ``small_file_max`` as a child transfer) to a local directory; waits for its end."""
    from staccato.dataset_client import submit_dataset
    from tests.dataset_checks import wait_dataset

    source = lab.data(f"{name}-source")
    for i in range(5):
        write_random(source / f"small-{i}.bin", 1000 + i, seed=30 + i)
        at_rest(source / f"small-{i}.bin")
    write_random(source / "large.bin", SMALL_SIZE, seed=40)
    at_rest(source / "large.bin")
    dataset = await submit_dataset(
        lab.client, str(source), str(lab.data(name)), OPTIONS, small_file_max=32 * KiB
    )
    await wait_dataset(lab.client, dataset, timeout_s=WAIT_S)
    return dataset


async def dataset_files(lab: Lab) -> str:
    """A dataset: a listing page, one batch of small files, one child transfer."""
    return await _dataset(lab, "dataset")


async def dataset_fan_out(lab: Lab) -> str:
    """A dataset to two local roots (``cp -r SRC D1 D2``): a listing page, one
    ``copy_batch_to_many`` of small files, one fan-out group for the large file."""
    from staccato.dataset_client import submit_dataset
    from tests.dataset_checks import wait_dataset

    source = lab.data("dataset-fan-out-source")
    for i in range(5):
        write_random(source / f"small-{i}.bin", 1000 + i, seed=50 + i)
        at_rest(source / f"small-{i}.bin")
    write_random(source / "large.bin", SMALL_SIZE, seed=60)
    at_rest(source / "large.bin")
    roots = [str(lab.data("dataset-fan-out-a")), str(lab.data("dataset-fan-out-b"))]
    dataset = await submit_dataset(lab.client, str(source), roots, OPTIONS, small_file_max=32 * KiB)
    await wait_dataset(lab.client, dataset, timeout_s=WAIT_S)
    return dataset


async def dataset_limited(lab: Lab) -> str:
    """A dataset while the local file systems have ``--max-active 1``: its batch asks
    the governors for a slot and releases it; the limit is cleared after."""
    target = parse_limit_target("file://")
    await governors.set_limits(lab.client.temporal, target, Limits(max_active=1))
    try:
        return await _dataset(lab, "dataset-limited")
    finally:
        await governors.unset_limits(lab.client.temporal, target, [])


async def governor_checked(lab: Lab) -> str:
    """The governor of a link (slow nginx -> local files) with ``--max-active 1`` while
    a transfer of ~8 s holds its slot: it grants the slot by signal and checks its
    holder with ``find_ended`` (every 5 s); once the limits are cleared it ends. The
    fixture is the governor's history (since 0.10.0)."""
    write_random(lab.http_root / "governed.bin", 512 * KiB, seed=19)
    at_rest(lab.http_root / "governed.bin")
    target = parse_limit_target(f"{endpoint_of(lab.slow_nginx.base_url)},file://")
    await governors.set_limits(lab.client.temporal, target, Limits(max_active=1))
    data = lab.data("governor-checked")
    try:
        transfer = await lab.client.submit(
            lab.slow_nginx.url("governed.bin"), str(data / "governed.bin"), OPTIONS
        )
        await _wait(lab.client, transfer)
    finally:
        await governors.unset_limits(lab.client.temporal, target, [])
    governor = governor_id(target.name)
    handle = lab.client.temporal.get_workflow_handle(governor)
    deadline = time.monotonic() + WAIT_S
    while (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the governor {governor} did not end within {WAIT_S} s")
        await asyncio.sleep(0.2)
    return governor


FRONT = "run_as_destination_transfer"  # the front run's one activity
#: scenario name (the fixture's file name) -> what it runs, and what its history must show
SCENARIOS: dict[str, tuple[Scenario, str | tuple[str, ...]]] = {
    "completed_file": (completed_file, "WORKFLOW_EXECUTION_COMPLETED"),
    "paused_resumed": (paused_resumed, "WORKFLOW_EXECUTION_UPDATE_COMPLETED"),
    "cancelled_mid_copy": (cancelled_mid_copy, "WORKFLOW_EXECUTION_CANCELED"),
    "failed_missing_source": (failed_missing_source, "WORKFLOW_EXECUTION_FAILED"),
    # a stream's second attempt (the first one's worker was killed)
    "retried_stream_worker_killed": (retried_stream_worker_killed, '"attempt":2,'),
    "sftp_destination": (sftp_destination, "WORKFLOW_EXECUTION_COMPLETED"),
    "s3_destination": (s3_destination, "WORKFLOW_EXECUTION_COMPLETED"),
    "source_read_twice": (source_read_twice, "confirm_source"),
    "source_rewritten_in_place": (source_rewritten_in_place, "confirm_source"),
    # since 0.2.0
    "front_completed": (front_completed, (FRONT, "WORKFLOW_EXECUTION_COMPLETED")),
    "front_waited": (front_waited, (FRONT, "queued", "WORKFLOW_EXECUTION_COMPLETED")),
    "front_busy_failed": (front_busy_failed, (FRONT, "destination busy")),
    "front_cancelled": (front_cancelled, (FRONT, "WORKFLOW_EXECUTION_CANCELED")),
    "sync_up_to_date": (sync_up_to_date, ("sync-level", "WORKFLOW_EXECUTION_COMPLETED")),
    "sync_copied": (sync_copied, ("sync-level", "copy_stream", "WORKFLOW_EXECUTION_COMPLETED")),
    "progress_reported": (progress_reported, ("report_progress", "WORKFLOW_EXECUTION_COMPLETED")),
    # since 0.4.0
    "staged": (staged, ("stage_source", "release_staged", "WORKFLOW_EXECUTION_COMPLETED")),
    "limited": (limited, ("look_up_start", "WORKFLOW_EXECUTION_COMPLETED")),
    # since 0.5.0
    "known_copy": (
        known_copy,
        ("look_up_start", "a verified copy", "WORKFLOW_EXECUTION_COMPLETED"),
    ),
    "fan_out_child": (fan_out_child, ("fan-out-staged", "WORKFLOW_EXECUTION_COMPLETED")),
    "fan_out_group": (
        fan_out_group,
        (
            "stage_source",
            "START_CHILD_WORKFLOW_EXECUTION_INITIATED",
            "WORKFLOW_EXECUTION_COMPLETED",
        ),
    ),
    "tuned": (
        tuned,
        (
            "look_up_start",
            "tune-sweep",
            "tune-knee",
            "tune-cpu-busy",
            "tune-no-late-probe",
            "record_link_tuning",
            "WORKFLOW_EXECUTION_COMPLETED",
        ),
    ),
    "dataset_files": (
        dataset_files,
        ("list_entries", "copy_batch", "TransferWorkflow", "WORKFLOW_EXECUTION_COMPLETED"),
    ),
    "dataset_limited": (
        dataset_limited,
        ("find_governors", "slot_granted", "copy_batch", "WORKFLOW_EXECUTION_COMPLETED"),
    ),
}
SCENARIOS["governor_checked"] = (  # since 0.10.0
    governor_checked,
    ("GovernorWorkflow", "slot_granted", "find_ended", "WORKFLOW_EXECUTION_COMPLETED"),
)
SCENARIOS["dataset_fan_out"] = (  # since 0.6.0
    dataset_fan_out,
    (
        "dataset-fan-out",
        "dataset-root-locks",
        "DatasetRootLockWorkflow",
        "copy_batch_to_many",
        "FanOutWorkflow",
        "WORKFLOW_EXECUTION_COMPLETED",
    ),
)


async def _connect(temporal: TemporalDevServer, task_queue: str) -> StaccatoClient:
    client = await StaccatoClient.connect(target_host=temporal.address, namespace="default")
    client.task_queue = task_queue
    return client


def _decoded_texts(value: Any) -> Iterator[str]:
    """Every string in a history's JSON, plus the base64-decoded payload ``data``."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "data" and isinstance(item, str):
                try:
                    yield base64.b64decode(item).decode(errors="replace")
                except ValueError:
                    pass
            yield from _decoded_texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _decoded_texts(item)
    elif isinstance(value, str):
        yield value


def check_fixture(
    name: str, text: str, secrets: list[str], expected: str | tuple[str, ...]
) -> None:
    """Refuse a history holding a secret or lacking what its scenario must show
    (``expected``: one string, or several that must all be there).

    Raises:
        RuntimeError: naming the scenario and what was wrong.
    """
    history = json.loads(text)
    for piece in _decoded_texts(history):
        for secret in secrets:
            if secret and secret in piece:
                raise RuntimeError(f"{name}: the history holds a secret; not written")
    for wanted in (expected,) if isinstance(expected, str) else expected:
        if wanted not in text and not any(wanted in piece for piece in _decoded_texts(history)):
            raise RuntimeError(f"{name}: the history shows no {wanted}; scenario did not happen")


@contextmanager
def _started(server: Any) -> Iterator[Any]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def record(names: list[str], out_dir: Path) -> list[Path]:
    """Run the scenarios ``names`` and write their histories into ``out_dir``.

    Returns:
        The files written.
    """
    needs_sftp = "sftp_destination" in names
    needs_s3 = "s3_destination" in names
    root = Path(tempfile.mkdtemp(prefix="staccato-histories-"))
    root.chmod(0o755)
    written: list[Path] = []
    recorded: dict[str, str] = {}
    try:
        with ExitStack() as stack:
            temporal = stack.enter_context(
                _started(TemporalDevServer(root / "temporal" / "temporal.db", headless=True))
            )
            http_root = root / "http"
            http_root.mkdir()
            http_root.chmod(0o755)
            slow_nginx = stack.enter_context(
                _started(
                    NginxServer(
                        http_root,
                        prefix_dir=root / "nginx",
                        extra_server_config=f"limit_rate {SLOW_RATE};",
                    )
                )
            )
            fast_nginx = None
            if "tuned" in names:
                fast_nginx = stack.enter_context(
                    _started(NginxServer(http_root, prefix_dir=root / "fast-nginx"))
                )
            env: dict[str, str] = {}
            secrets: list[str] = []
            sshd = s3 = None
            if needs_sftp:
                (root / "sshd").mkdir()
                sshd = stack.enter_context(_started(SshdServer(root / "sshd")))
                home = root / "home"
                home.mkdir()
                env |= {
                    "HOME": str(home),
                    "SSH_AUTH_SOCK": "",
                    "STACCATO_SSH_CONFIG": "none",
                    "STACCATO_SSH_IDENTITY": str(sshd.client_key_path),
                    "STACCATO_SSH_KNOWN_HOSTS": str(sshd.known_hosts_path),
                    "STACCATO_SFTP_LOCK_DIR": str(root / "sftp-locks"),
                }
                key_lines = sshd.client_key_path.read_text().splitlines()
                secrets += [line for line in key_lines if line and not line.startswith("-----")]
            if needs_s3:
                s3 = stack.enter_context(_started(SeaweedS3(root / "seaweedfs")))
                env |= s3.env() | {"AWS_EC2_METADATA_DISABLED": "true"}
                secrets += [s3.access_key, s3.secret_key]
            worker = WorkerProcess(temporal.address, processes=2, env=env, log_dir=root).start()
            stack.callback(worker.stop)
            client = await _connect(temporal, worker.task_queue)
            lab = Lab(
                root=root,
                temporal=temporal,
                slow_nginx=slow_nginx,
                http_root=http_root,
                client=client,
                worker=worker,
                worker_env=env,
                sshd=sshd,
                s3=s3,
                fast_nginx=fast_nginx,
                secrets=secrets,
            )
            if s3 is not None:
                s3.client().create_bucket(Bucket=lab.bucket)
            out_dir.mkdir(parents=True, exist_ok=True)
            for name in names:
                scenario, expected = SCENARIOS[name]
                began = time.monotonic()
                transfer = await scenario(lab)
                history = await client.temporal.get_workflow_handle(transfer).fetch_history()
                text = history.to_json()
                recorded[name] = compact(text, transfer)
                check_fixture(name, recorded[name], secrets, expected)
                print(
                    f"{name}: {len(history.events)} events, {len(recorded[name])} bytes, "
                    f"{time.monotonic() - began:.1f} s",
                    flush=True,
                )
        # written only once every scenario asked for succeeded; a full run also drops
        # this release's fixtures of scenarios that no longer exist
        if set(names) == set(SCENARIOS):
            for stale in out_dir.glob("*.json"):
                stale.unlink()
        for name, text in recorded.items():
            path = out_dir / f"{name}.json"
            path.write_text(text)
            written.append(path)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return written


def compact(text: str, workflow_id: str) -> str:
    """A history's JSON with one event per line (small, and diffs read per event), and
    the run's ``workflowId`` first: the history's events do not hold it, and the
    workflow reads it (a run under another id than its destination's transfer id is
    a front run), so the replay must run under the recorded id."""
    history = json.loads(text)
    events = ",\n".join(json.dumps(event, separators=(",", ":")) for event in history["events"])
    rest = {key: value for key, value in history.items() if key != "events"}
    if rest:
        raise RuntimeError(f"unexpected top-level keys in a history: {sorted(rest)}")
    return '{"workflowId":' + json.dumps(workflow_id) + ',"events":[\n' + events + "\n]}\n"


def release() -> str:
    """The installed staccato version: the fixture directory's name."""
    return importlib.metadata.version("staccato")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=", ".join(SCENARIOS))
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="directory for the fixtures (default: tests/workflow/histories/<release>)",
    )
    args = parser.parse_args(argv)
    names = args.scenarios or list(SCENARIOS)
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    # workers inherit this environment: no payload codec (the fixtures are replayed with
    # the plain converter) and no AWS settings but those of the recording's own S3 server
    for key in [k for k in os.environ if k == "STACCATO_CODEC_KEY" or k.startswith("AWS_")]:
        del os.environ[key]
    out_dir = args.out or HISTORIES / release()
    written = asyncio.run(record(names, out_dir))
    print(f"wrote {len(written)} histories into {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
