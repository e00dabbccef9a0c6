"""Transfers queued for one destination (``--if-busy wait``) run in the order they were
submitted, also after the worker was SIGKILLed while they waited: the last submitted
source's bytes end up at the destination."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowExecutionStatus

from staccato.client import StaccatoClient, transfer_id
from staccato.models import IfBusy, TransferOptions, TransferState
from staccato.starts import (
    NAMED_AHEAD,
    STARTED_BY,
    front_id,
    queued_ahead,
    start_front,
    start_or_attach,
)
from tests.helpers import (
    MiB,
    WorkerProcess,
    at_rest,
    run_cli,
    sha256_file,
    wait_for_status,
    write_random,
)
from tests.servers.nginx import NginxServer
from tests.servers.pacing_proxy import PacingProxy

OPTIONS = TransferOptions(chunk_size=1 * MiB, streams=1, heartbeat_timeout_s=3)
WAIT = OPTIONS.model_copy(update={"if_busy": IfBusy.wait})
#: a :class:`PacingProxy` rate (bytes/s) that paces nothing
FULL_SPEED = 1e12


async def _until(probe: Any, what: str, *, timeout_s: float = 60.0) -> Any:
    """Await ``probe()`` until it returns something truthy; return it.

    Raises:
        AssertionError: not so within ``timeout_s`` seconds (names ``what``).
    """
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value = await probe()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: not so within {timeout_s} s (last: {value!r})")
        await asyncio.sleep(0.2)


async def _retried(client: StaccatoClient, front: str) -> bool:
    """Whether the front's activity runs again in an attempt after the first (the
    worker that ran it was killed) or the front has ended."""
    description = await client.temporal.get_workflow_handle(front).describe()
    if description.status != WorkflowExecutionStatus.RUNNING:
        return True
    pending = description.raw_description.pending_activities
    return any(p.attempt > 1 for p in pending)


async def test_queued_transfers_keep_submission_order_across_a_worker_kill(
    temporal_server,
    nginx_ranges: NginxServer,
    http_root: Path,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    """A paced transfer holds the destination (paused: it holds it however slow the
    starts below are); three different transfers are queued behind it, one after the
    other; the worker is SIGKILLed while they wait and a new one takes over (every
    front's activity retries at once). Then: the destination holds the last submitted
    source's bytes, and the fronts started the destination's transfer in submission
    order (the canonical runs' start times and ``started_by`` memo)."""
    write_random(http_root / "ohold.bin", 8 * MiB, seed=701)
    at_rest(http_root / "ohold.bin")
    digests = []
    for n in range(3):
        digests.append(write_random(http_root / f"oq{n}.bin", 2 * MiB, seed=710 + n))
        at_rest(http_root / f"oq{n}.bin")
    destination = data_dir / "order.out"
    paced = PacingProxy(nginx_ranges.port, rate_bytes_per_s=2_000_000).start()
    first = WorkerProcess(temporal_server.address, processes=2, log_dir=tmp_path).start()
    second = WorkerProcess(
        temporal_server.address, task_queue=first.task_queue, processes=2, log_dir=tmp_path
    )
    try:
        client = await StaccatoClient.connect(
            target_host=temporal_server.address, namespace="default"
        )
        client.task_queue = first.task_queue
        holder = await client.submit(paced.url("ohold.bin"), str(destination), OPTIONS)
        await client.pause(holder)
        fronts = []
        for n in range(3):
            queued = await client.start(paced.url(f"oq{n}.bin"), str(destination), WAIT)
            assert queued.queued, queued
            fronts.append(queued.id)
        for front in fronts:
            await wait_for_status(
                client, front, lambda s: s.state == TransferState.queued, timeout_s=60
            )
        first.kill()  # while all three wait
        second.start()
        for front in fronts:
            await _until(lambda f=front: _retried(client, f), f"{front} retried", timeout_s=90)
        paced.rate = FULL_SPEED
        await client.resume(holder)
        results = [await asyncio.wait_for(client.wait(f), 180) for f in fronts]
    finally:
        first.kill()
        second.kill()
        paced.stop()
    assert [r.source for r in results] == [paced.url(f"oq{n}.bin") for n in range(3)]
    canonical = transfer_id(str(destination))

    async def closed_runs() -> list[Any]:
        runs = [e async for e in client.temporal.list_workflows(f"WorkflowId = '{canonical}'")]
        done = [r for r in runs if r.close_time is not None]
        return done if len(done) == len(runs) == 4 else []

    runs = await _until(closed_runs, "4 closed canonical runs")
    by_start = sorted(runs, key=lambda r: r.start_time)
    starters = [str((await r.memo()).get(STARTED_BY, "")).split("/")[0] for r in by_start]
    assert starters == ["", *fronts], (
        f"canonical runs in start order were started by {starters}; submitted: {fronts}"
    )
    assert sha256_file(destination) == digests[-1], "the destination holds not the last submitted"


async def test_a_start_never_jumps_a_transfer_queued_earlier(
    client: StaccatoClient, worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """While a transfer queued for a destination waits (here one no worker serves: it
    waits until it is terminated), the destination is not free for a later start,
    even with no transfer writing it: `submit` (the light client, and the SDK's client
    it hands over to) fails as busy naming the queued one; `--if-busy wait` queues
    behind it and runs once it has left the queue."""
    first = data_dir / "early.bin"
    write_random(first, 64 * 1024, seed=721)
    later = data_dir / "later.bin"
    later_digest = write_random(later, 96 * 1024, seed=722)
    destination = data_dir / "jump.out"
    request = client.make_request(str(first), str(destination), WAIT)
    early = front_id(request)
    await start_front(
        client.temporal, request, task_queue=f"noworker-{uuid.uuid4().hex[:8]}", workflow_id=early
    )
    query = f"WorkflowId = '{early}' AND ExecutionStatus = 'Running'"
    await _until(
        lambda: _ids(client.temporal.list_workflows(query)), f"{early} listed", timeout_s=30
    )
    env = {"STACCATO_TEMPORAL_HTTP": temporal_server.http_address}
    for light in ("1", "0"):
        out = run_cli(
            "submit",
            str(later),
            str(destination),
            address=temporal_server.address,
            task_queue=worker.task_queue,
            env={**env, "STACCATO_LIGHT_CLIENT": light},
        )
        assert out.returncode == 1, (light, out)
        assert "queued for it earlier" in out.stderr and early in out.stderr, out.stderr
    assert not destination.exists()
    queued = await client.start(str(later), str(destination), WAIT)
    assert queued.queued, queued
    waiting = await wait_for_status(
        client, queued.id, lambda s: s.state == TransferState.queued, timeout_s=60
    )
    assert early in (waiting.reason or ""), waiting
    await client.temporal.get_workflow_handle(early).terminate("left the queue (test)")
    result = await asyncio.wait_for(client.wait(queued.id), 60)
    assert result.bytes == 96 * 1024
    assert sha256_file(destination) == later_digest


async def _ids(executions: Any) -> list[str]:
    return [e.id async for e in executions]


async def test_a_busy_refusal_names_the_transfers_queued_behind_the_running_one(
    client: StaccatoClient, worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """A plain ``submit`` to a destination a transfer writes, with transfers queued for
    it (``--if-busy wait``): the refusal names the queued ones too (they run before a
    start queued now), the first few by id and the rest counted; it named only the
    running one. Here nothing runs them: a task queue no worker polls."""
    source = data_dir / "busy-src.bin"
    write_random(source, 64 * 1024, seed=731)
    destination = data_dir / "busy.out"
    queue = f"noworker-{uuid.uuid4().hex[:8]}"
    holder = client.make_request(str(source), str(destination), OPTIONS)
    running = await start_or_attach(client.temporal, holder, task_queue=queue)
    fronts = []
    for n in range(5):  # the same destination, each from a source of its own
        other = data_dir / f"busy-src-{n}.bin"
        write_random(other, 1024, seed=740 + n)
        request = client.make_request(str(other), str(destination), WAIT)
        fronts.append(front_id(request))
        await start_front(client.temporal, request, task_queue=queue, workflow_id=fronts[-1])
    try:
        query = " OR ".join(f"WorkflowId = '{f}'" for f in fronts)

        async def all_listed() -> bool:
            return len(await _ids(client.temporal.list_workflows(query))) == len(fronts)

        await _until(all_listed, "the queued fronts listed", timeout_s=30)
        out = run_cli(
            "submit",
            str(data_dir / "busy-src-0.bin"),
            str(destination),
            address=temporal_server.address,
            task_queue=worker.task_queue,
        )
        assert out.returncode == 1, out
        assert running.workflow_id in out.stderr, out.stderr
        ahead = await queued_ahead(client.temporal, holder.destination)
        assert len(ahead) == len(fronts), ahead
        named = f"transfers {', '.join(ahead[:NAMED_AHEAD])} and {len(ahead) - NAMED_AHEAD} more"
        assert named in out.stderr, out.stderr
        assert "queued for it (--if-busy wait)" in out.stderr, out.stderr
    finally:
        for workflow_id in (running.workflow_id, *fronts):
            await client.temporal.get_workflow_handle(workflow_id).terminate("test over")


async def test_cp_on_a_pipe_says_once_why_its_transfer_is_queued(
    client: StaccatoClient, worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """``cp --if-busy wait`` whose transfer is queued, stderr not a terminal: it says
    why (the reason ``status`` gives, naming the transfer it waits for) once, not on
    each progress line, and the ``queued: 0 B / ?`` lines go on (they said no reason).
    The destination's writer here: a transfer no worker runs, terminated once the
    reason was said."""
    source = data_dir / "piped-src.bin"
    digest = write_random(source, 96 * 1024, seed=751)
    holder_source = data_dir / "piped-holder.bin"
    write_random(holder_source, 1024, seed=752)
    destination = data_dir / "piped.out"
    holder = client.make_request(str(holder_source), str(destination), OPTIONS)
    running = await start_or_attach(
        client.temporal, holder, task_queue=f"noworker-{uuid.uuid4().hex[:8]}"
    )
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": temporal_server.address,
        "TEMPORAL_NAMESPACE": "default",
        "STACCATO_TASK_QUEUE": worker.task_queue,
    }
    cp = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "staccato.cli", "cp", "--if-busy", "wait", str(source),
        str(destination), env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert cp.stderr is not None
    lines: list[str] = []

    def reason(line: str) -> bool:  # the reason status gives, naming the writer
        return line.startswith("queued: destination busy: ") and running.workflow_id in line

    try:
        progress_after = 0  # progress lines after the reason was said
        deadline = time.monotonic() + 90
        while progress_after < 3:
            assert time.monotonic() < deadline, lines
            line = await asyncio.wait_for(cp.stderr.readline(), 60)
            assert line, f"cp ended early: {lines}"
            lines.append(line.decode().rstrip("\n"))
            if any(reason(x) for x in lines) and lines[-1].startswith("queued: 0 B"):
                progress_after += 1
        await client.temporal.get_workflow_handle(running.workflow_id).terminate("test over")
        rest, _ = await asyncio.wait_for(cp.communicate(), 120)
        assert cp.returncode == 0, (lines, rest)
    finally:
        if cp.returncode is None:
            cp.kill()
            await cp.wait()
    said = [x for x in lines if reason(x)]
    # said once, again only when it changes: the front's first words ("which is
    # writing it") may give way once to status's fuller ones (ci61); never repeated
    assert 1 <= len(said) <= 2 and len(set(said)) == len(said), lines
    assert sha256_file(destination) == digest
