"""The worker's heartbeat forwarding outlives a heartbeat its event loop did not take
in time (ci87: two "zombie" tests' thawed workers never heard their batch's lease
end, their logs holding temporalio's "Failed during multiprocess queue poll for
heartbeat ... TimeoutError").

temporalio's multiprocess shared state forwards the heartbeats every activity process
queues in one thread, which ends at the first exception of a forwarding call
(temporalio/sdk-python issue #476) and is started again only when no activity runs
any more: from then on no heartbeat of the worker reached Temporal. The call that
raised there waits 10 s for the worker's event loop (a frozen, thawed or overloaded
worker). Here the real shared state (a real multiprocessing manager, Temporal's own
class, wrapped as the worker wraps it) forwards to a function that fails once as that
call did: the heartbeats queued after it must still be forwarded.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from typing import Any

from temporalio.worker import SharedStateManager

from staccato.workers.worker import _GuardedSharedState


async def test_heartbeats_are_forwarded_after_one_that_timed_out() -> None:
    manager = multiprocessing.Manager()
    try:
        shared = _GuardedSharedState(
            SharedStateManager.create_from_multiprocessing(manager), threading.Event()
        )
        forwarded: list[tuple[Any, ...]] = []

        def heartbeat(*details: Any) -> None:
            if not forwarded:
                forwarded.append(("timed out",))
                # what run_coroutine_threadsafe(...).result(10) raised in CI
                raise TimeoutError()
            forwarded.append(details)

        token = b"task-token"
        sender = await shared.register_heartbeater(token, heartbeat)
        sender.send_heartbeat(token, "first")
        for n in range(3):
            sender.send_heartbeat(token, f"after-{n}")
        deadline = time.monotonic() + 30
        while len(forwarded) < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert forwarded == [("timed out",), ("after-0",), ("after-1",), ("after-2",)], (
            f"heartbeats forwarded after one that timed out: {forwarded[1:]}"
        )
        await shared.unregister_heartbeater(token)
    finally:
        manager.shutdown()
