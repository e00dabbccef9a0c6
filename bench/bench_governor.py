"""How many acquire+release cycles per second one governor sustains, and how many
history events a transfer gains from asking its governors.

A private dev server and one worker; ``--clients`` concurrent loops each send
``acquire`` (a fresh ticket), wait for the grant (``wait_slot`` update), and send
``release``, for ``--seconds``; the governor has ``--max-active`` slots. Tickets name
the governor's own run as their holder, so its liveness check keeps them.

    python -m bench.bench_governor [--clients 20] [--seconds 20] [--max-active 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from temporalio.service import RPCError

from bench.common import Service
from staccato import governors
from staccato.client import StaccatoClient
from staccato.links import governor_id, parse_limit_target
from staccato.models import Limits, SlotRelease, SlotRequest, SlotView
from staccato.workflows.governor import ACQUIRE_SIGNAL, RELEASE_SIGNAL, WAIT_SLOT_UPDATE


async def cycles(client: StaccatoClient, name: str, clients: int, seconds: float) -> float:
    """acquire+release cycles per second over ``seconds``."""
    handle = client.temporal.get_workflow_handle(governor_id(name))
    run_id = (await handle.describe()).run_id
    done = refused = 0
    stop = time.monotonic() + seconds

    async def loop(n: int) -> None:
        nonlocal done, refused
        i = 0
        while time.monotonic() < stop:
            i += 1
            ticket = f"bench/{n}/{i}"
            await handle.signal(
                ACQUIRE_SIGNAL,
                SlotRequest(ticket=ticket, workflow_id=handle.id, run_id=run_id, owner=str(n % 3)),
            )
            while True:
                try:
                    view = await handle.execute_update(
                        WAIT_SLOT_UPDATE, ticket, result_type=SlotView
                    )
                    if view.granted:
                        break
                except RPCError:
                    refused += 1
                await asyncio.sleep(0.1)
            await handle.signal(RELEASE_SIGNAL, SlotRelease(ticket=ticket))
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(loop(n) for n in range(clients)))
    print(f"calls refused: {refused}")
    return done / (time.monotonic() - started)


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
            task_queue=client.task_queue,
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
            task_queue=client.task_queue,
        )
        rate = await cycles(client, name, args.clients, args.seconds)
        print(
            f"{rate:.1f} acquire+release/s ({args.clients} clients, max-active {args.max_active})"
        )
    finally:
        service.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--max-active", type=int, default=4)
    asyncio.run(main(parser.parse_args()))
