"""How many acquire+release cycles per second one governor sustains, and how many
history events a transfer gains from asking its governors.

A private dev server and one worker (it runs the governor); this process runs
``--clients`` ``BenchHolder`` workflows, each asking the governor for a slot the way a
transfer does (``acquire`` signal, waits for ``slot_granted``, ``release`` signal),
``--cycles`` times; the governor has ``--max-active`` slots.

    python -m bench.bench_governor [--clients 20] [--cycles 10] [--max-active 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path

from temporalio import workflow
from temporalio.worker import Worker

from bench.common import Service
from staccato import governors
from staccato.client import StaccatoClient
from staccato.links import governor_id, parse_limit_target
from staccato.models import Limits, SlotGrant, SlotRelease, SlotRequest
from staccato.workflows.governor import ACQUIRE_SIGNAL, RELEASE_SIGNAL, SLOT_GRANTED_SIGNAL


@workflow.defn(name="BenchHolder", sandboxed=False)
class BenchHolder:
    """Acquire and release a slot at one governor ``cycles`` times."""

    def __init__(self) -> None:
        self._granted: set[str] = set()

    @workflow.run
    async def run(self, name: str, cycles: int, owner: str) -> None:
        info = workflow.info()
        governor = workflow.get_external_workflow_handle(governor_id(name))
        for i in range(cycles):
            ticket = f"{info.workflow_id}/{info.run_id}/{i}"
            await governor.signal(
                ACQUIRE_SIGNAL,
                SlotRequest(
                    ticket=ticket, workflow_id=info.workflow_id, run_id=info.run_id, owner=owner
                ),
            )
            await workflow.wait_condition(lambda t=ticket: t in self._granted)  # type: ignore[misc]
            await governor.signal(RELEASE_SIGNAL, SlotRelease(ticket=ticket))

    @workflow.signal(name=SLOT_GRANTED_SIGNAL)
    def slot_granted(self, grant: SlotGrant) -> None:
        self._granted.add(SlotGrant.model_validate(grant).ticket)

    @workflow.signal(name="limit_queued")
    def limit_queued(self, why: str) -> None:
        pass


async def events_per_transfer(client: StaccatoClient, data: Path, limit: bool) -> int:
    """History length of one 1 MiB file->file transfer (with or without a limit set
    on its link)."""
    source = data / f"src-{limit}.bin"
    source.write_bytes(os.urandom(1024 * 1024))
    if limit:
        await governors.set_limits(
            client.temporal,
            parse_limit_target("file://,file://"),
            Limits(max_active=10),
        )
    transfer = await client.submit(str(source), str(data / f"dst-{limit}.bin"))
    await client.wait(transfer)
    history = await client.temporal.get_workflow_handle(transfer).fetch_history()
    return len(history.events)


async def main(args: argparse.Namespace) -> None:
    service = Service(processes=2).start()
    try:
        client = await StaccatoClient.connect(target_host=f"127.0.0.1:{service.port}")
        client.task_queue = "bench"
        with tempfile.TemporaryDirectory() as tmp:
            plain = await events_per_transfer(client, Path(tmp), limit=False)
            limited = await events_per_transfer(client, Path(tmp), limit=True)
        print(f"events per transfer: {plain} without limits, {limited} with a limit on its link")
        name = "http://bench.invalid:80"
        await governors.set_limits(
            client.temporal,
            parse_limit_target(name),
            Limits(max_active=args.max_active),
        )
        queue = f"bench-holders-{uuid.uuid4().hex[:6]}"
        async with Worker(client.temporal, task_queue=queue, workflows=[BenchHolder]):
            started = time.monotonic()
            handles = [
                await client.temporal.start_workflow(
                    BenchHolder.run,
                    args=[name, args.cycles, str(n % 3)],
                    id=f"bench-holder-{n}-{uuid.uuid4().hex[:6]}",
                    task_queue=queue,
                )
                for n in range(args.clients)
            ]
            await asyncio.gather(*(h.result() for h in handles))
            elapsed = time.monotonic() - started
        total = args.clients * args.cycles
        history = await client.temporal.get_workflow_handle(governor_id(name)).fetch_history()
        print(
            f"{total / elapsed:.1f} acquire+release/s ({total} cycles by {args.clients} "
            f"holders in {elapsed:.1f} s, max-active {args.max_active}); governor run "
            f"history now {len(history.events)} events"
        )
    finally:
        service.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--max-active", type=int, default=4)
    asyncio.run(main(parser.parse_args()))
