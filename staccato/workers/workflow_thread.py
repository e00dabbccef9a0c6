"""Workflow tasks apart from the streams: the worker's workflows polled and run in a
thread of their own, with its own asyncio event loop and its own connection to
Temporal.

The worker's main event loop carries the stream activities' starts, completions and
heartbeats (from the activity processes, through the multiprocessing manager), the
control activities, the progress reporter and the rate board. With 50 transfers
starting at once, a workflow task that shared that loop waited behind all of it: it
was picked up late (the poll's answer sat in the loop's queue) and took long to
complete. Here the workflow ``Worker`` runs on a loop no stream touches, so a
transfer's next command goes out while streams run. The two loops still share one
interpreter (the GIL): this keeps workflow tasks from queueing behind the main
loop's callbacks, not from sharing the CPU.

Temporal hands workflow tasks and activity tasks of one task queue to separate polls:
the workflow ``Worker`` here polls workflow tasks only (``no_remote_activities``), the
main one activity tasks only. A workflow's local activities (the short first attempts
of ``stat``, ``prepare``, ``sync_check``, ``cleanup``) run on the worker that runs the
workflow: here, in a pool of threads of this process (they are short and I/O-bound);
those that call Temporal (the first attempt of ``look_up_start``) are made with the
thread's own client and run on its loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.service import ServiceClient
from temporalio.worker import PollerBehavior, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from staccato.workers.build_id import BUILD_ID

log = logging.getLogger("staccato.worker")

#: seconds :meth:`WorkflowThread.shutdown` waits for the thread's worker to stop (a
#: workflow task in flight is finished or left to time out and be retried)
_STOP_S = 10.0


class WorkflowThread:
    """The workflow ``Worker`` of ``task_queue`` in a thread with its own event loop.

    Args:
        client: the worker's client; the thread connects a client of its own with the
            same settings (target, TLS, namespace, data converter).
        task_queue: the task queue whose workflow tasks it polls.
        workflows: the workflow classes.
        runner: how workflow code runs (the sandbox).
        pollers: how many workflow-task polls it keeps open.
        nonsticky_poll_ratio: the share of them that may poll the normal queue (new
            runs' first tasks) rather than the sticky one (Temporal's
            ``nonsticky_to_sticky_poll_ratio``).
        sticky_timeout_s: seconds a run's next task waits for this worker (which
            caches the run) before another worker may take it (Temporal's
            ``sticky_queue_schedule_to_start_timeout``).
        local_activities: the activities its workflows may run as local activities.
        client_local_activities: makes more of them from the thread's own client
            (async activities calling Temporal: they run on the thread's loop).
        local_threads: threads running local activities at once.
    """

    def __init__(
        self,
        client: Client,
        *,
        task_queue: str,
        workflows: Sequence[type],
        runner: SandboxedWorkflowRunner,
        pollers: PollerBehavior,
        nonsticky_poll_ratio: float = 0.2,
        sticky_timeout_s: float = 10.0,
        local_activities: Sequence[Callable[..., Any]] = (),
        client_local_activities: Callable[[Client], Sequence[Callable[..., Any]]] | None = None,
        local_threads: int = 32,
    ) -> None:
        self._local_activities = list(local_activities)
        self._client_local_activities = client_local_activities
        self._local_threads = local_threads
        self._client = client
        self._task_queue = task_queue
        self._workflows = list(workflows)
        self._runner = runner
        self._pollers = pollers
        self._nonsticky_poll_ratio = nonsticky_poll_ratio
        self._sticky_timeout = timedelta(seconds=sticky_timeout_s)
        self._done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._main, name="workflows", daemon=True)

    def start(self) -> None:
        """Start the thread (it connects and polls; :meth:`ended` reports its end)."""
        self._thread.start()

    async def ready(self, timeout_s: float = 60.0) -> None:
        """Wait until the thread's worker polls.

        Raises:
            RuntimeError: it ended (its error chained) or did not start within
                ``timeout_s`` seconds.
        """
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not self._ready.is_set():
            if self._done.done():
                await self.ended()
                raise RuntimeError("the workflow worker ended before it polled")
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"the workflow worker did not start within {timeout_s:.0f} s")
            await asyncio.sleep(0.05)

    async def ended(self) -> None:
        """Return when the thread's worker ended; raise its error if it failed."""
        await asyncio.wrap_future(self._done)

    async def shutdown(self) -> None:
        """Stop polling and wait (at most ``_STOP_S`` seconds) for the worker to stop."""
        self._stopping = True
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not self._done.done():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # its loop closed meanwhile
                pass
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(self._done)), _STOP_S)
        except TimeoutError:
            log.warning("the workflow worker did not stop within %.0f s", _STOP_S)
        except Exception as err:  # reported by ended() to whoever waits on it
            log.info("the workflow worker stopped: %s", err)

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as err:  # noqa: BLE001 - handed to the main loop
            self._done.set_exception(err)
        else:
            self._done.set_result(None)

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        config: Any = self._client.config()
        config["service_client"] = await ServiceClient.connect(self._client.service_client.config)
        client = Client(**config)
        local = concurrent.futures.ThreadPoolExecutor(
            self._local_threads, thread_name_prefix="local-activity"
        )
        activities = list(self._local_activities)
        if self._client_local_activities is not None:
            activities += self._client_local_activities(client)
        worker = Worker(
            client,
            build_id=BUILD_ID,
            task_queue=self._task_queue,
            workflows=self._workflows,
            workflow_runner=self._runner,
            workflow_task_poller_behavior=self._pollers,
            nonsticky_to_sticky_poll_ratio=self._nonsticky_poll_ratio,
            sticky_queue_schedule_to_start_timeout=self._sticky_timeout,
            activities=activities,
            activity_executor=local if activities else None,
            no_remote_activities=True,
            graceful_shutdown_timeout=timedelta(0),
        )
        try:
            if not self._stopping:
                await self._poll(worker)
        finally:
            local.shutdown(wait=False, cancel_futures=True)

    async def _poll(self, worker: Worker) -> None:
        assert self._stop is not None
        run = asyncio.create_task(worker.run())
        stop = asyncio.create_task(self._stop.wait())
        self._ready.set()
        await asyncio.wait({run, stop}, return_when=asyncio.FIRST_COMPLETED)
        if not run.done():
            await worker.shutdown()
        stop.cancel()
        await run
