"""A Staccato worker: runs ``TransferWorkflow`` and its activities.

Activities run in a pool of processes (``spawn``), so parallel streams use several
cores instead of one GIL. Each pool process (and the multiprocessing manager that
carries heartbeats) asks the kernel to SIGKILL it when the worker dies
(``PR_SET_PDEATHSIG``), so a killed worker leaves no stale writer behind.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import multiprocessing
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from datetime import timedelta
from multiprocessing.managers import SyncManager

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.worker import SharedStateManager, Worker

from staccato import settings
from staccato.activities import ALL_ACTIVITIES
from staccato.workflows import TransferWorkflow
from staccato.workflows import search_attributes as sa

log = logging.getLogger("staccato.worker")

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the worker's to handle


def _warm_up() -> int:
    import staccato.activities  # noqa: F401 - import drivers' common code once per process

    return 0


async def ensure_search_attributes(client: Client) -> None:
    """Register Staccato's Keyword search attributes if the namespace lacks them.

    Raises:
        RuntimeError: they are missing and cannot be registered here; the message
            says which ``temporal operator search-attribute create`` commands to run.
    """
    wanted = {key.name for key in sa.ALL}
    existing = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    missing = wanted - set(existing.custom_attributes)
    if not missing:
        return
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=client.namespace,
                search_attributes={
                    name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for name in sorted(missing)
                },
            )
        )
        log.info("registered search attributes %s", ", ".join(sorted(missing)))
    except RPCError as err:
        commands = "\n".join(
            f"  temporal operator search-attribute create --namespace {client.namespace} "
            f"--name {name} --type Keyword"
            for name in sorted(missing)
        )
        raise RuntimeError(
            f"namespace {client.namespace!r} lacks Staccato's search attributes and they "
            f"could not be registered ({err.message}); ask an operator to run:\n{commands}"
        ) from err


class StaccatoWorker:
    """A worker and its activity process pool; use as an async context manager.

    Args:
        client: a connected client (with the pydantic data converter).
        task_queue: the task queue to poll.
        processes: activity processes (= concurrent activities).
    """

    def __init__(self, client: Client, *, task_queue: str, processes: int) -> None:
        self._client = client
        self._task_queue = task_queue
        self._processes = processes
        context = multiprocessing.get_context("spawn")
        self._manager = SyncManager(ctx=context)
        self._executor: ProcessPoolExecutor | None = None
        self._context = context
        self.worker: Worker | None = None

    async def __aenter__(self) -> StaccatoWorker:
        self._manager.start(die_with_parent)
        self._executor = ProcessPoolExecutor(
            max_workers=self._processes, mp_context=self._context, initializer=die_with_parent
        )
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(self._executor, _warm_up) for _ in range(self._processes))
        )
        self.worker = Worker(
            self._client,
            task_queue=self._task_queue,
            workflows=[TransferWorkflow],
            activities=ALL_ACTIVITIES,
            activity_executor=self._executor,
            shared_state_manager=SharedStateManager.create_from_multiprocessing(self._manager),
            max_concurrent_activities=self._processes,
            graceful_shutdown_timeout=timedelta(seconds=10),
            max_heartbeat_throttle_interval=timedelta(seconds=1),
            default_heartbeat_throttle_interval=timedelta(seconds=1),
        )
        return self

    async def run(self) -> None:
        """Poll until shut down (``shutdown()`` or cancellation)."""
        assert self.worker is not None
        await self.worker.run()

    async def shutdown(self) -> None:
        """Stop polling; running activities get the graceful-shutdown time to heartbeat."""
        if self.worker is not None:
            await self.worker.shutdown()

    async def __aexit__(self, *exc: object) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._manager.shutdown()


async def run_worker(
    client: Client, *, task_queue: str, processes: int, ready: asyncio.Event | None = None
) -> None:
    """Run a worker until SIGINT/SIGTERM, then shut it down gracefully.

    Raises:
        RuntimeError: a worker setting is invalid (the message names it).
    """
    try:  # streams read these: refuse a bad value at start, not in every stream
        settings.min_rate_bytes_per_s()
        settings.min_rate_window_s()
    except ValueError as err:
        raise RuntimeError(str(err)) from None
    await ensure_search_attributes(client)
    async with StaccatoWorker(
        client, task_queue=task_queue, processes=processes
    ) as staccato_worker:
        assert staccato_worker.worker is not None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        run_task = asyncio.create_task(staccato_worker.run())
        log.info(
            "worker polling task queue %r on %s (namespace %s), %d activity processes",
            task_queue,
            client.service_client.config.target_host,
            client.namespace,
            processes,
        )
        if ready is not None:
            ready.set()
        stop_task = asyncio.create_task(stop.wait())
        await asyncio.wait({run_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        if not run_task.done():
            log.info("shutting down: letting streams send their last heartbeat")
            await staccato_worker.shutdown()
        await run_task
