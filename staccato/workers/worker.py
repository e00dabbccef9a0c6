"""A Staccato worker: runs ``TransferWorkflow`` and its activities.

Activities run in a pool of processes (``spawn``), so parallel streams use several
cores instead of one GIL. Each pool process (and the multiprocessing manager that
carries heartbeats) asks the kernel to SIGKILL it when the worker dies
(``PR_SET_PDEATHSIG``), so a killed worker leaves no stale writer behind.

Stopping: SIGTERM or SIGINT may reach the whole process group (systemd's
``KillMode=control-group``, ``docker stop``, Kubernetes, Ctrl-C in a terminal). Pool
and manager processes ignore both, so no stream dies mid-chunk without its last
heartbeat; the main process handles either by a graceful shutdown: it stops polling,
gives running activities ``STACCATO_WORKER_SHUTDOWN_TIMEOUT_S`` to finish, cancels
the rest (a cancelled stream returns its progress), then stops the pool and exits.
Every step is bounded, so the worker exits even if an activity never yields.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import signal
import sys
import time
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
from staccato.secrets import install_log_scrubber
from staccato.workflows import TransferWorkflow
from staccato.workflows import search_attributes as sa

log = logging.getLogger("staccato.worker")

_PR_SET_PDEATHSIG = 1


# Seconds, after the graceful shutdown time, that cancelled activities get to return
# (they see the cancel at their next heartbeat, every 0.5-1 s) before the worker stops
# waiting for them; and that idle pool processes get to exit before they are killed.
_CANCEL_GRACE_S = 5.0
_POOL_EXIT_S = 3.0


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no-op elsewhere), and
    leave SIGINT and SIGTERM to the worker: a signal sent to the whole process group
    must not kill a stream mid-chunk; the worker's graceful shutdown cancels it."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    install_log_scrubber()  # a library's log line may quote a URL's token


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

    def __init__(
        self,
        client: Client,
        *,
        task_queue: str,
        processes: int,
        shutdown_timeout_s: float | None = None,
    ) -> None:
        self._client = client
        self._shutdown_timeout_s = (
            settings.current().worker_shutdown_timeout_s
            if shutdown_timeout_s is None
            else shutdown_timeout_s
        )
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
            graceful_shutdown_timeout=timedelta(seconds=self._shutdown_timeout_s),
            max_heartbeat_throttle_interval=timedelta(seconds=1),
            default_heartbeat_throttle_interval=timedelta(seconds=1),
        )
        return self

    async def run(self) -> None:
        """Poll until shut down (``shutdown()`` or cancellation)."""
        assert self.worker is not None
        await self.worker.run()

    async def shutdown(self) -> None:
        """Stop polling; running activities get the graceful-shutdown time to finish,
        then are cancelled (a stream heartbeats its progress and returns). Gives up
        waiting ``_CANCEL_GRACE_S`` after that (the pool is then killed on exit)."""
        if self.worker is None:
            return
        bound = self._shutdown_timeout_s + _CANCEL_GRACE_S
        try:
            await asyncio.wait_for(asyncio.shield(self.worker.shutdown()), bound)
        except TimeoutError:
            log.warning(
                "activities did not stop within %.0f s of the shutdown; killing them "
                "(their transfers resume from the destination's durable chunks)",
                bound,
            )

    async def __aexit__(self, *exc: object) -> None:
        if self._executor is not None:
            pool = list(getattr(self._executor, "_processes", {}).values())
            self._executor.shutdown(wait=False, cancel_futures=True)
            await asyncio.to_thread(_stop_processes, pool, _POOL_EXIT_S)
        self._manager.shutdown()


def _stop_processes(processes: list[multiprocessing.process.BaseProcess], wait_s: float) -> None:
    """Wait up to ``wait_s`` seconds in all for ``processes`` to exit, then SIGKILL
    the rest (they ignore SIGTERM)."""
    deadline = time.monotonic() + wait_s
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            log.warning("activity process %s did not exit; killing it", process.pid)
            process.kill()
            process.join(1.0)


async def run_worker(
    client: Client, *, task_queue: str, processes: int, ready: asyncio.Event | None = None
) -> None:
    """Run a worker until SIGINT/SIGTERM, then shut it down gracefully.

    Every log line of the worker (and of its activity processes) is scrubbed of URL
    secrets (:func:`staccato.secrets.install_log_scrubber`).

    Raises:
        SettingsError: a worker setting is invalid (the message names it); checked
            here, at start, rather than in every stream.
    """
    settings.current()
    install_log_scrubber()
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
            if not run_task.done():
                run_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run_task
