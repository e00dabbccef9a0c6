"""Schedules (made by `staccato schedule` and by plain Temporal APIs) and `staccato
submit`s of different sources race for one destination: one writer at a time, the file
equals exactly one source, and every run's reported outcome agrees with the file.

The race lasts ``STACCATO_RACE_S`` seconds (default 12 in the suite: each schedule
fires 4 times, ~8 CLI submits, ~8 canonical runs; run it with 60 for the one-minute
race by hand).
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.client import (
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    WorkflowExecutionStatus,
)

from staccato import checksums
from staccato.client import StaccatoClient
from staccato.models import TransferResult
from tests.helpers import MiB, WorkerProcess, at_rest, run_cli, sha256_file, write_random
from tests.servers.nginx import NginxServer, nginx_fixture
from tests.test_lock import canonical_runs, no_overlap, raw_client, raw_input

race_source = nginx_fixture("http_root", scope="module", extra_server_config="limit_rate 4m;")
SIZE = 4 * MiB  # about 1 s per copy at 4 MiB/s
RACE_S = float(os.environ.get("STACCATO_RACE_S", "12"))


def _crc32c_label(path: Path) -> str:
    """The transfer's checksum of a whole file (CRC-32C combines across chunks)."""
    data = path.read_bytes()
    parts = [
        (checksums.checksum_bytes("crc32c", data[i : i + MiB]), len(data[i : i + MiB]))
        for i in range(0, len(data), MiB)
    ]
    return checksums.label("crc32c", checksums.combine("crc32c", parts))


async def _runs(client: StaccatoClient, query: str) -> list[Any]:
    return [e async for e in client.temporal.list_workflows(query)]


async def test_schedules_and_submits_race_for_one_destination(
    client: StaccatoClient,
    worker: WorkerProcess,
    temporal_server,
    race_source: NginxServer,
    http_root: Path,
    data_dir: Path,
) -> None:
    names = ("sched-a", "plain-b", "submit-c")
    files = {}
    for seed, name in enumerate(names, start=401):
        files[name] = http_root / f"{name}.bin"
        write_random(files[name], SIZE, seed=seed)
        at_rest(files[name])
    url = {name: race_source.url(f"{name}.bin") for name in names}
    sha = {url[name]: sha256_file(files[name]) for name in names}
    crc = {url[name]: _crc32c_label(files[name]) for name in names}
    destination = data_dir / "raced.bin"

    def cli(*args: str):
        return run_cli(*args, address=temporal_server.address, task_queue=worker.task_queue)

    made = cli("schedule", "create", "race-a", url["sched-a"], str(destination), "--every", "3s")
    assert made.returncode == 0, made.stderr
    plain = await raw_client(temporal_server.address)
    plain_schedule = await plain.create_schedule(
        "plain-race-b",
        Schedule(
            action=ScheduleActionStartWorkflow(
                "TransferWorkflow",
                raw_input(url["plain-b"], str(destination)),
                id="plain-race-b",
                task_queue=worker.task_queue,
            ),
            spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(seconds=3))]),
            policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
        ),
    )

    temps: set[str] = set()
    most_temps = 0
    racing = True

    async def sample() -> None:
        nonlocal most_temps
        while racing:
            now = {p.name for p in data_dir.iterdir() if p.name.endswith(".staccato-part")}
            temps.update(now)
            most_temps = max(most_temps, len(now))
            await asyncio.sleep(0.01)

    sampler = asyncio.create_task(sample())
    submits: list[tuple[int, str]] = []
    deadline = time.monotonic() + RACE_S
    # the race lasts RACE_S, and on until a submit has won once (bounded): on a loaded
    # machine one CLI start can take the whole RACE_S (ci53, load ~28: one submit, busy)
    last_chance = deadline + 120
    while time.monotonic() < deadline or not any(code == 0 for code, _ in submits):
        assert time.monotonic() < last_chance, f"no submit started in the race: {submits}"
        done = await asyncio.to_thread(cli, "submit", url["submit-c"], str(destination))
        submits.append((done.returncode, done.stdout + done.stderr))
        await asyncio.sleep(1.0)
    # no schedule starts another run; the runs they started last end (asked of each run,
    # not of the visibility store: at load it listed a run started just before the
    # delete as running after its query for running runs had come back empty, ci110)
    schedules = [client.temporal.get_schedule_handle("staccato-schedule-race-a"), plain_schedule]
    end = time.monotonic() + 180
    for schedule in schedules:
        await schedule.pause()
    for schedule in schedules:
        for action in (await schedule.describe()).info.running_actions:
            run = client.temporal.get_workflow_handle(
                action.workflow_id, run_id=action.first_execution_run_id
            )
            while (await run.describe()).status == WorkflowExecutionStatus.RUNNING:
                assert time.monotonic() < end, f"{action.workflow_id} still running after 180 s"
                await asyncio.sleep(0.5)
    gone = cli("schedule", "delete", "race-a")
    assert gone.returncode == 0, gone.stderr
    await plain_schedule.delete()

    # every run of the race has ended (bounded: each copy takes about a second)
    query = f"StaccatoDestination = '{destination.as_uri()}'"
    while await _runs(client, f"{query} AND ExecutionStatus = 'Running'"):
        assert time.monotonic() < end, "runs of the race still going after 180 s"
        await asyncio.sleep(0.5)
    racing = False
    await sampler

    assert most_temps <= 1, f"two write sessions at once: {sorted(temps)}"
    final = sha256_file(destination)
    assert final in sha.values(), "the destination holds no source's bytes"

    # the destination's own transfer ran one run at a time; its last completed run
    # copied what the file holds, and each completed run reported its source's checksum
    canonical = [r for r in await canonical_runs(client, destination) if r.close_time]
    no_overlap(canonical)
    completed = [r for r in canonical if r.status == WorkflowExecutionStatus.COMPLETED]
    assert completed
    results: list[TransferResult] = []
    for run in completed:
        handle = client.temporal.get_workflow_handle(
            run.id, run_id=run.run_id, result_type=TransferResult
        )
        results.append(await handle.result())
    for result in results:
        assert result.checksum == crc[result.source], result
    last = max(zip(completed, results, strict=True), key=lambda pair: pair[0].close_time)[1]
    assert sha[last.source] == final, "the last completed run's source is not what the file holds"

    # every front run (both schedules' runs) reports what the destination's transfer did
    fronts = [r for r in await _runs(client, query) if r.id != canonical[0].id]
    by_kind = {"staccato-schedule-race-a": 0, "plain-race-b": 0}
    for run in fronts:
        kind = next((k for k in by_kind if run.id.startswith(k)), None)
        if kind is None:
            continue
        handle = client.temporal.get_workflow_handle(run.id, run_id=run.run_id)
        status = (await handle.describe()).status  # the run's own word, not the list's
        if status == WorkflowExecutionStatus.COMPLETED:
            outcome = await handle.result()
            source = outcome["source"]
            assert source == url["sched-a" if kind.startswith("staccato") else "plain-b"]
            assert outcome["checksum"] == crc[source]
            assert outcome in [r.model_dump(mode="json") for r in results] or any(
                r.source == source and r.checksum == outcome["checksum"] for r in results
            )
            by_kind[kind] += 1
        else:
            # the plain schedule's runs default to --if-busy fail
            assert status == WorkflowExecutionStatus.FAILED, (run.id, status)
            assert kind == "plain-race-b", (run.id, status)
    assert by_kind["staccato-schedule-race-a"] > 0 and by_kind["plain-race-b"] >= 0, by_kind
    started = [text for code, text in submits if code == 0]
    busy = [text for code, text in submits if code != 0]
    assert all("destination busy" in text for text in busy), busy
    assert started, submits
    print(
        f"race {RACE_S:.0f}s: canonical runs {len(canonical)} ({len(completed)} completed), "
        f"front runs completed {by_kind}, submits started {len(started)} busy {len(busy)}, "
        f"temp files {len(temps)}"
    )
