"""A workflow whose worker is frozen (SIGSTOP of the whole worker) and that has a
workflow task pending is not queried (:mod:`staccato.settled_query`): ``status``
answers from what Temporal recorded, saying that the worker has not taken (or
finished) the run's latest workflow task, and sends no query (counted by a client
interceptor); a queued transfer's ``status``, ``list`` and its limit's reason say
the same of it and of its governor (tester F2: ``status`` and ``list`` of a queued
transfer with a frozen worker waited for the query's whole deadline, saying nothing
of why). See docs/architecture.md, "Queries and replay"."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Interceptor, OutboundInterceptor, QueryWorkflowInput

from staccato import governors
from staccato.client import PROGRESS_QUERY, StaccatoClient
from staccato.links import endpoint_of, governor_id, parse_limit_target
from staccato.listing import list_rows
from staccato.models import (
    NO_WORKER_ANSWERS,
    WORKER_BUSY,
    Limits,
    Progress,
    TransferOptions,
    TransferState,
)
from staccato.settled_query import pending_task
from staccato.workflows.front import FRONT_STATE_SIGNAL
from tests.helpers import MiB, WorkerProcess, run_cli, write_random
from tests.servers.nginx import NginxServer
from tests.servers.pacing_proxy import PacingProxy
from tests.servers.temporal_server import temporal_server_fixture

#: a server of this module's own: only its workers poll the governors' queue, so the
#: frozen worker is the one that runs the governor too
own_server = temporal_server_fixture(scope="module", headless=True)
OPTIONS = TransferOptions(chunk_size=1 * MiB, streams=1, heartbeat_timeout_s=3, owner="t")
#: bytes per second the source is paced at: 16 MiB last ~64 s, the whole test
PACE = 256 * 1024
#: bound on a call that should answer at once, only to stop a hang
HANG_S = 120
#: how a row of a run whose worker does not answer begins its note: none polls or
#: none answered, or it holds (or has not taken) the run's workflow task
UNANSWERED = (NO_WORKER_ANSWERS, WORKER_BUSY)


class CountingQueries(Interceptor):
    """A client interceptor that records every query the client sends (workflow id,
    query name)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        #: the queries sent and not answered (or failed) yet, and the most at once
        self.in_flight: set[int] = set()
        self.peak: dict[str, int] = {}

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        counting = self

        class Outbound(OutboundInterceptor):
            async def query_workflow(self, input: QueryWorkflowInput) -> Any:
                counting.sent.append((input.id, input.query))
                token = id(input)
                counting.in_flight.add(token)
                counting.peak[input.query] = max(
                    counting.peak.get(input.query, 0), len(counting.in_flight)
                )
                try:
                    return await super().query_workflow(input)
                finally:
                    counting.in_flight.discard(token)

        return Outbound(next)


async def until(probe: Any, what: str, timeout_s: float = 60.0) -> Any:
    """Await ``probe()`` every 0.2 s until truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout_s} s: {what}")
        await asyncio.sleep(0.2)


@pytest.fixture
def proxy(nginx_ranges: NginxServer) -> Iterator[PacingProxy]:
    """nginx paced at :data:`PACE` bytes per second."""
    paced = PacingProxy(nginx_ranges.port, PACE).start()
    try:
        yield paced
    finally:
        paced.stop()


@pytest.fixture
async def setup(
    own_server: Any, data_dir: Path
) -> AsyncIterator[tuple[StaccatoClient, CountingQueries, WorkerProcess]]:
    """A worker (own process group) and a client counting its queries."""
    worker = WorkerProcess(own_server.address, processes=1, log_dir=data_dir, own_group=True)
    worker.start()
    counting = CountingQueries()
    client = await StaccatoClient.connect(
        target_host=own_server.address, namespace="default", interceptors=[counting]
    )
    client.task_queue = worker.task_queue
    try:
        yield client, counting, worker
    finally:
        if worker.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.process.pid, signal.SIGCONT)
        worker.kill_group()
        await client.close()


@contextlib.contextmanager
def frozen(worker: WorkerProcess) -> Iterator[None]:
    """SIGSTOP the worker's whole process group for the block; SIGCONT after."""
    assert worker.process is not None
    os.killpg(worker.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(worker.process.pid, signal.SIGCONT)


async def has_pending_task(client: StaccatoClient, workflow_id: str) -> bool:
    """Whether the run of ``workflow_id`` has a workflow task pending (scheduled or
    taken, not completed)."""
    description = await client.temporal.get_workflow_handle(workflow_id).describe()
    return pending_task(description) is not None


async def nudge_until_pending(client: StaccatoClient, transfer: str) -> None:
    """Signal ``transfer`` (``front_state``: ignored by a run that is not a front
    run, no command) so that it has a workflow task its frozen worker cannot take."""
    await client.temporal.get_workflow_handle(transfer).signal(FRONT_STATE_SIGNAL, "running")
    await until(lambda: has_pending_task(client, transfer), f"{transfer} has a pending task")


async def test_status_of_a_frozen_workers_run_with_a_pending_task_sends_no_query(
    setup: Any, proxy: PacingProxy, http_root: Path, data_dir: Path
) -> None:
    client, counting, worker = setup
    write_random(http_root / "frozen.bin", 16 * MiB)
    started = await client.start(proxy.url("frozen.bin"), str(data_dir / "frozen.bin"), OPTIONS)

    async def copying() -> bool:
        status = await client.status(started.id)
        return status.state == TransferState.running and status.bytes_done > 0

    await until(copying, "the transfer copies")
    with frozen(worker):
        await nudge_until_pending(client, started.id)
        counting.sent.clear()
        status = await asyncio.wait_for(client.status(started.id), HANG_S)
        asked = [q for q in counting.sent if q[0] == started.id]
        assert not asked, f"queried a run with a pending task: {asked}"
        assert status.state == TransferState.running, status
        note = status.last_retry_error or ""
        assert "its worker has not" in note and "latest workflow task since" in note, note
        assert "not asked for progress" in note, note


async def test_queued_transfer_with_a_frozen_worker_says_the_worker_did_not_answer(
    setup: Any, proxy: PacingProxy, http_root: Path, data_dir: Path
) -> None:
    """F2: ``status`` and ``list`` of a transfer queued at a limit, its worker (and
    its governor's) frozen: they say the worker has not taken the run's task, and the
    limit's reason says its governor's worker did not answer (as it last said)."""
    client, counting, worker = setup
    endpoint = endpoint_of(proxy.url("x"))
    await governors.set_limits(client.temporal, parse_limit_target(endpoint), Limits(max_active=1))
    for name in ("holder.bin", "queued.bin"):
        write_random(http_root / name, 16 * MiB)
    holder = await client.start(proxy.url("holder.bin"), str(data_dir / "holder.bin"), OPTIONS)

    async def holding() -> bool:
        return (await client.status(holder.id)).bytes_done > 0

    await until(holding, "the first transfer holds the slot and copies")
    queued = await client.start(proxy.url("queued.bin"), str(data_dir / "queued.bin"), OPTIONS)

    async def waits() -> Progress | None:
        progress = await client.temporal.get_workflow_handle(queued.id).query(
            PROGRESS_QUERY, result_type=Progress
        )
        return progress if progress.queued_ticket and progress.queued_reason else None

    progress = await until(waits, "the second transfer is queued at the limit")
    with frozen(worker):
        await nudge_until_pending(client, queued.id)
        # the governor's next check (every 5 s) is a task its frozen worker cannot take
        await until(
            lambda: has_pending_task(client, governor_id(endpoint)), "the governor waits too"
        )
        status = await asyncio.wait_for(client.status(queued.id), HANG_S)
        assert status.state == TransferState.queued, status
        note = status.last_retry_error or ""
        assert "its worker has not" in note and "latest workflow task since" in note, note
        rows = await asyncio.wait_for(list_rows(client), HANG_S)
        (row,) = [r for r in rows if r.id == queued.id]
        assert "its worker has not" in (getattr(row, "last_retry_error", None) or ""), row
        reason = await asyncio.wait_for(client._limit_reason(progress), HANG_S)
        assert reason is not None and reason.startswith(progress.queued_reason or ""), reason
        assert "the governor's worker did not answer" in reason, reason


async def test_a_run_no_listed_worker_has_taken_yet_is_not_said_to_have_no_worker(
    setup: Any, data_dir: Path
) -> None:
    """A transfer started while the task queue lists a poller that has not taken its
    first workflow task (here a worker just SIGKILLed, which Temporal lists for
    minutes; in CI at load 10, a busy one): ``status`` says the worker has not taken
    the run's workflow task, not "no worker answers", and sends no query."""
    from staccato.models import NO_WORKER_ANSWERS

    client, counting, worker = setup
    write_random(data_dir / "first.bin", 1 * MiB)
    worker.kill_group()
    if not await client.pollers():
        pytest.skip("the killed worker's poller was no longer listed")
    started = await client.start(str(data_dir / "first.bin"), str(data_dir / "first.out"), OPTIONS)
    counting.sent.clear()
    status = await asyncio.wait_for(client.status(started.id), HANG_S)
    note = status.last_retry_error or ""
    assert not note.startswith(NO_WORKER_ANSWERS), note
    assert "its worker has not taken its latest workflow task" in note, note
    assert "has not begun" in note, note
    assert not [q for q in counting.sent if q[0] == started.id], counting.sent


async def test_list_of_a_frozen_workers_runs_asks_them_at_once_and_keeps_the_queued_reason(
    setup: Any, own_server: Any, proxy: PacingProxy, http_root: Path, data_dir: Path
) -> None:
    """Tester t68 5b: the worker (and the governor's) SIGSTOPped with no workflow task
    pending, a transfer holding an endpoint's ``max-active 1`` slot and one queued for
    it: ``list`` asks both runs at once (their progress queries in flight together,
    counted by the client's interceptor; before, each row's read began only once the
    closed runs listed after it placed it: one deadline after another, 21-31 s), and
    ``list`` and ``status`` of the queued transfer print why it waits (the governor's
    last ``limit_queued`` signal, read from the run's history: the reason line was
    dropped) and that its worker does not answer. A transfer that ended between the
    two starts is what made the rows readable one at a time."""
    client, counting, worker = setup
    endpoint = endpoint_of(proxy.url("x"))
    await governors.set_limits(client.temporal, parse_limit_target(endpoint), Limits(max_active=1))
    for name in ("holder5b.bin", "queued5b.bin"):
        write_random(http_root / name, 16 * MiB)
    holder = await client.start(proxy.url("holder5b.bin"), str(data_dir / "holder5b.bin"), OPTIONS)

    async def holding() -> bool:
        return (await client.status(holder.id)).bytes_done > 0

    await until(holding, "the first transfer holds the slot and copies")
    small = data_dir / "small5b.bin"
    small.write_bytes(b"x" * 1000)
    ended = await client.submit(str(small), str(data_dir / "small5b.copy"), OPTIONS)
    assert (await asyncio.wait_for(client.wait(ended), HANG_S)).bytes == 1000
    queued = await client.start(proxy.url("queued5b.bin"), str(data_dir / "queued5b.bin"), OPTIONS)

    async def waits() -> Progress | None:
        progress = await client.temporal.get_workflow_handle(queued.id).query(
            PROGRESS_QUERY, result_type=Progress
        )
        return progress if progress.queued_ticket and progress.queued_reason else None

    progress = await until(waits, "the second transfer is queued at the limit")
    told = progress.queued_reason or ""

    async def idle() -> bool:
        return not any([await has_pending_task(client, t) for t in (holder.id, queued.id)])

    await until(idle, "neither run has a workflow task pending")
    args = dict(address=own_server.address, task_queue=worker.task_queue)
    with frozen(worker):
        counting.sent.clear()
        counting.peak.clear()
        rows = await asyncio.wait_for(list_rows(client), HANG_S)
        asked = {q[0] for q in counting.sent if q[1] == PROGRESS_QUERY}
        assert {holder.id, queued.id} <= asked, counting.sent
        # both unanswered progress queries were in flight at once
        assert counting.peak.get(PROGRESS_QUERY, 0) >= 2, (counting.peak, counting.sent)
        by_id = {row.id: row for row in rows}
        for transfer in (holder.id, queued.id):
            note = getattr(by_id[transfer], "last_retry_error", None) or ""
            assert note.startswith(UNANSWERED), (transfer, note)
        assert by_id[queued.id].state == TransferState.queued, by_id[queued.id]
        assert (by_id[queued.id].reason or "").startswith(told), by_id[queued.id]

        # the CLI's own output (seconds and load printed: the measurement, not asserted)
        timed: dict[str, float] = {}
        shown: dict[str, str] = {}
        for name, cli_args in (
            ("list", ("list",)),
            ("list --state queued", ("list", "--state", "queued")),
            ("status", ("status", queued.id)),
        ):
            begun = time.monotonic()
            done = await asyncio.to_thread(run_cli, *cli_args, **args)
            timed[name] = round(time.monotonic() - begun, 1)
            assert done.returncode == 0, done.stderr
            shown[name] = done.stdout
        print(f"\nfrozen worker: {timed}; load average {os.getloadavg()}")
        for name in ("list", "list --state queued"):
            lines = shown[name].splitlines()
            (row,) = [i for i, line in enumerate(lines) if line.startswith(queued.id)]
            assert any(lead in lines[row] for lead in UNANSWERED), shown[name]
            assert lines[row + 1].strip().startswith(f"queued: {told}"), shown[name]
            assert "as its governor last said" in lines[row + 1], shown[name]
        assert any(
            line.startswith(holder.id) and any(lead in line for lead in UNANSWERED)
            for line in shown["list"].splitlines()
        ), shown["list"]
        assert told in shown["status"], shown["status"]
        assert any(lead in shown["status"] for lead in UNANSWERED), shown["status"]


async def test_list_of_a_dataset_with_a_frozen_worker_shows_its_last_known_counts_and_why(
    setup: Any, own_server: Any, data_dir: Path
) -> None:
    """Tester69 MED 4: a running dataset's worker SIGSTOPped, ``list`` showed its row as
    ``running 0/0+ files, 0 B`` (the zeros of a status holding no counts) or its memo's
    counts as if they were live, with no note, while ``status`` said no worker answers.
    Its row now says what ``status`` says: the progress is unknown now and why, then
    the last known counts (the memo's, written as a batch ended), with no rate."""
    from staccato.dataset_client import cancel_dataset, start_dataset

    client, _counting, worker = setup
    source, destination = data_dir / "dsrc", data_dir / "ddst"
    for i in range(200):
        path = source / f"d{i % 10}" / f"f{i:04d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(2048))
    for name in ("large1.bin", "large2.bin"):  # each its own transfer, in flight
        (source / name).write_bytes(os.urandom(512 * 1024))
    # ~1.4 MB at 20 KB/s in batches of 10 files: it runs on while the worker is frozen
    options = TransferOptions(max_rate=20_000, owner="t")
    started = await start_dataset(
        client, str(source), str(destination), options, batch_files=10, small_file_max=64 * 1024
    )
    handle = client.temporal.get_workflow_handle(started.id)

    async def counted() -> bool:
        description = await handle.describe()
        counts = dict(await description.memo()).get("counts")
        return (
            isinstance(counts, dict)
            and int(counts.get("files_done") or 0) > 0
            and len(description.raw_description.pending_children) > 0
        )

    await until(counted, "a batch ended (the memo's counts), a large file in flight", 90)
    args = dict(address=own_server.address, task_queue=worker.task_queue)
    try:
        with frozen(worker):
            begun = time.monotonic()
            done = await asyncio.to_thread(run_cli, "list", **args)
            print(
                f"\nlist, dataset's worker frozen: {time.monotonic() - begun:.1f} s; "
                f"load average {os.getloadavg()}"
            )
            assert done.returncode == 0, done.stderr
            (row,) = [line for line in done.stdout.splitlines() if line.startswith(started.id)]
            print(row)
            assert "running" in row, row
            assert "progress unknown now: " in row, row
            assert any(lead in row for lead in UNANSWERED + ("no worker answered",)), row
            known = row.split("; last known: ", 1)[1]
            assert not known.startswith("0/0"), row
            assert "files/s" not in row and " eta " not in row, row
    finally:
        await cancel_dataset(client, started.id)
