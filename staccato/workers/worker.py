"""A Staccato worker: runs ``TransferWorkflow`` and its activities.

Activities run in a pool of processes (``spawn``), so parallel streams use several
cores instead of one GIL, each running up to ``STACCATO_WORKER_THREADS`` activities in
threads (:mod:`staccato.workers.threaded_pool`: streams are I/O-bound), their chunk
buffers held within ``STACCATO_WORKER_MEMORY_BYTES`` (:mod:`staccato.activities.capacity`). Each pool process (and the multiprocessing manager that
carries heartbeats) ends when the worker dies, however early in its start
(:mod:`staccato.workers.lifeline`), so a killed worker leaves no stale writer behind.

Stopping: SIGTERM or SIGINT may reach the whole process group (systemd's
``KillMode=control-group``, ``docker stop``, Kubernetes, Ctrl-C in a terminal). Pool
and manager processes ignore both, so no stream dies mid-chunk without its last
heartbeat; the main process handles either by a graceful shutdown: it stops polling,
gives running activities ``STACCATO_WORKER_SHUTDOWN_TIMEOUT_S`` to finish, cancels
the rest (a cancelled stream heartbeats its progress and fails its attempt with the
retryable ``WorkerStopping``: the attempt stays pending with it, and the next worker
resumes it at once), then stops the pool and exits.
Every step is bounded, so the worker exits even if an activity never yields.

A dead pool process (the OOM killer, a crash) or a dead manager does not take the
worker down: the worker kills what is left of that pool and manager, builds a fresh
manager, pool and Temporal ``Worker`` and goes on polling; Temporal retries the
interrupted activities (they resume from the destination's durable chunks). At most
``_MAX_REBUILDS`` rebuilds per ``_REBUILD_WINDOW_S`` seconds of polling (the time
the rebuilds themselves take does not count: 10-20 s each on a loaded machine, they
spread a crash loop's deaths beyond any wall-clock window); one more means a crash
loop, and the worker exits with an error saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import queue
import signal
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, MutableMapping
from datetime import timedelta
from multiprocessing.managers import SyncManager
from typing import Any

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.worker import (
    PollerBehaviorSimpleMaximum,
    SharedHeartbeatSender,
    SharedStateManager,
    Worker,
)
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from staccato import settings
from staccato.activities import ALL_ACTIVITIES
from staccato.activities.front import FrontActivities
from staccato.activities.known_copies import KnownCopyActivities
from staccato.activities.limits import LimitActivities
from staccato.activities.link_tuning import LinkTuningActivities
from staccato.activities.start_lookup import StartLookupActivities
from staccato.activities.stream_bytes import StreamBytesActivities
from staccato.activities.stream_lease import HEARTBEAT_THROTTLE_S
from staccato.datasets.locks import DatasetRootLockWorkflow
from staccato.datasets.workflow import DatasetWorkflow
from staccato.endpoints import import_drivers
from staccato.errors import RetryableError
from staccato.secrets import install_log_scrubber
from staccato.settled_query import GOVERNOR_STICKY_S
from staccato.worker_life import start_worker_life
from staccato.workers.build_id import BUILD_ID
from staccato.workers.failure_size import BoundedFailures
from staccato.workers.flags import FlagEvents
from staccato.workers.lifeline import start_activity_process, start_manager_process
from staccato.workers.progress_reporter import ProgressReporter, RunningStreams
from staccato.workers.rates import RateBoard
from staccato.workers.threaded_pool import ThreadedProcessPool
from staccato.workers.workflow_thread import WorkflowThread
from staccato.workflows import TransferWorkflow
from staccato.workflows import search_attributes as sa
from staccato.workflows.fanout import FanOutWorkflow
from staccato.workflows.front import control_queue
from staccato.workflows.governor import GOVERNOR_QUEUE, GovernorWorkflow
from staccato.workflows.link_tuning import LinkTuningWorkflow

log = logging.getLogger("staccato.worker")

# Seconds, after the graceful shutdown time, that cancelled activities get to return
# (they see the cancel at their next heartbeat, every 0.5-1 s) before the worker stops
# waiting for them; and that idle pool processes get to exit before they are killed.
_CANCEL_GRACE_S = 5.0
_POOL_EXIT_S = 3.0

# Rebuilds of the activity pool and manager allowed per window (seconds) before the
# worker gives up as in a crash loop; how often (seconds) their processes are checked.
_MAX_REBUILDS = 5
_REBUILD_WINDOW_S = 60.0
_CHECK_INTERVAL_S = 0.25
# Front runs' activities served at once by one worker process (each only awaits
# Temporal calls, in the main process's event loop).
CONTROL_CONCURRENCY = 1000
# Seconds a failed Temporal Worker gets to finish its own shutdown before it is cancelled.
_FAILED_WORKER_EXIT_S = 10.0

#: How the worker runs workflow code: in Temporal's sandbox, with Staccato's own modules
#: (workflows included) passed through, imported once per process instead of once per
#: workflow run. The sandbox re-imports every module not passed through for each new
#: run (and each run evicted from the cache), compiling it from source where no
#: bytecode is cached (``PYTHONDONTWRITEBYTECODE``, set in the image): with 50
#: transfers starting at once that took most of the worker's main process and held
#: its event loop for seconds, so workflow tasks timed out and were retried. Workflow
#: modules keep no state between runs; the test suite's workers and the replay test
#: keep the default sandbox, so non-deterministic workflow code is still caught there.

WORKFLOW_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules("staccato")
)

#: How many polls for tasks a worker keeps open (Temporal's default, 5, left many
#: transfers started at once waiting for a poll: each workflow task waited seconds in
#: the queue while the worker idled). Used for the control queue's activities.
POLLERS = PollerBehaviorSimpleMaximum(maximum=20)

#: Polls for workflow tasks on the worker's own task queue. A poll hands out one task
#: and, while the machine is busy copying, its round trip takes ~0.2-1 s, so the
#: polls bound how many transfers start per second.
WORKFLOW_POLLERS = PollerBehaviorSimpleMaximum(maximum=50)

#: Share of :data:`WORKFLOW_POLLERS` that may poll the normal queue (a new run's first
#: workflow task) rather than the worker's sticky queue (the runs it has cached).
#: Temporal's default, 0.2, left 4 polls for the first tasks: with 50 transfers
#: submitted at once the last one's first task waited 4.5 s for a poll (bench_capacity,
#: in a CPU cgroup of its own); at 0.5 (25 polls) it waited under 1 s.
NONSTICKY_POLL_RATIO = 0.5

#: Polls for stream activities. Each running transfer wants its streams at once (50
#: transfers x 4 streams = 200 tasks); with 20 polls and the machine busy copying,
#: the server handed out ~25 tasks/s and a late transfer's first stream waited 4-7 s
#: behind earlier transfers' other streams; with 100 polls it waited at most 1.4-2 s
#: (bench_capacity, same run). Polls are long polls: idle ones cost the server a
#: goroutine each, no CPU.
ACTIVITY_POLLERS = PollerBehaviorSimpleMaximum(maximum=100)

#: the workflows a worker runs on its own task queue
TASK_QUEUE_WORKFLOWS = [
    TransferWorkflow,
    DatasetWorkflow,
    GovernorWorkflow,
    FanOutWorkflow,
    DatasetRootLockWorkflow,
]

# Cancel events made ahead for activity starts (see _GuardedSharedState).
_READY_EVENTS = 32

# Errors a proxy of the multiprocessing manager raises once the manager process is gone.
_CHANNEL_ERRORS = (OSError, EOFError)


#: seconds between two probes of the manager (:class:`_ManagerProbe`)
_PROBE_EVERY_S = 2.0


class _ManagerProbe:
    """Asks the multiprocessing manager a trivial question (the length of a dict it
    holds) every :data:`_PROBE_EVERY_S` seconds from a thread of its own; a second
    thread kills the manager's process once a question has gone unanswered for
    ``silent_s`` seconds. A dead manager is seen by its process; a stopped or
    deadlocked one is alive and answers nothing: every heartbeat through it blocks, as
    does a call Temporal's worker makes to it in the event loop (so nothing there can
    notice), and each retried attempt blocks again (a tester's SIGSTOP of the manager
    held every transfer of the worker for 11 minutes, until SIGCONT). Killed, every
    blocked call fails and the worker rebuilds as for a dead manager.

    Args:
        board: a proxy of a dict the manager holds (the question's subject).
        process: the manager's process.
        silent_s: seconds without an answer before it is killed.
    """

    def __init__(
        self, board: Any, process: multiprocessing.process.BaseProcess, silent_s: float
    ) -> None:
        self._board = board
        self._process = process
        self._silent_s = silent_s
        self._asked_at: float | None = None  # monotonic time of the question in flight
        self._stopped = threading.Event()
        #: why the manager was killed, once it was
        self.killed_because: str | None = None
        for target, name in ((self._ask, "manager-probe"), (self._watch, "manager-watch")):
            threading.Thread(target=target, name=name, daemon=True).start()

    def _ask(self) -> None:
        while not self._stopped.is_set():
            self._asked_at = time.monotonic()
            try:
                len(self._board)
            except _CHANNEL_ERRORS:
                return  # gone: its process tells it
            finally:
                self._asked_at = None
            self._stopped.wait(_PROBE_EVERY_S)

    def _watch(self) -> None:
        while not self._stopped.wait(_PROBE_EVERY_S / 2):
            asked = self._asked_at
            silent = 0.0 if asked is None else time.monotonic() - asked
            if silent > self._silent_s and self._process.is_alive():
                self.killed_because = (
                    f"the multiprocessing manager process {self._process.pid} that carries "
                    f"heartbeats answered nothing for {silent:.0f} s (stopped or hung; "
                    "STACCATO_WORKER_MANAGER_SILENT_S), so it was killed"
                )
                log.error("%s", self.killed_because)
                self._process.kill()
                return

    def stop(self) -> None:
        """No more questions nor watching (a question in flight stays blocked until the
        manager ends)."""
        self._stopped.set()


class WorkerChannelLost(RetryableError):
    """The worker's heartbeat channel (its multiprocessing manager process) is gone:
    the worker is rebuilding it, and Temporal retries the attempt. Not an endpoint
    error."""

    TYPE = "WorkerChannelLost"


def _channel_lost(err: BaseException) -> WorkerChannelLost:
    return WorkerChannelLost(
        "the worker's heartbeat channel (its multiprocessing manager process) is gone "
        f"({type(err).__name__}: {err}); the worker is rebuilding its activity processes "
        "and this attempt is retried; the endpoints are not at fault"
    )


class _GuardedHeartbeatSender(SharedHeartbeatSender):
    """Sends heartbeats from a pool process; a dead manager raises
    :class:`WorkerChannelLost` instead of a connection error that reads like an
    endpoint's."""

    def __init__(self, inner: SharedHeartbeatSender) -> None:
        self._inner = inner

    def send_heartbeat(self, task_token: bytes, *details: Any) -> None:
        try:
            self._inner.send_heartbeat(task_token, *details)
        except _CHANNEL_ERRORS as err:
            raise _channel_lost(err) from None


#: seconds between two warnings of heartbeats the worker's event loop did not take in
#: time (:func:`forwarding_survives_errors`)
_LATE_BEAT_WARN_S = 60.0
_late_beat_warned = [0.0]  # time.monotonic() of the last such warning


def forwarding_survives_errors(heartbeat: Callable[..., None]) -> Callable[..., None]:
    """``heartbeat`` (the function Temporal's multiprocess shared state calls, in its
    one heartbeat-forwarding thread, for each heartbeat an activity process queued)
    made to never raise: any error is logged (at most one warning a minute) and the
    heartbeat counts as late, not as the end of forwarding.

    Why: temporalio's ``_MultiprocessingSharedStateManager._heartbeat_processor`` ends
    its thread at the first exception (temporalio/sdk-python issue #476), and starts
    it again only when the worker's running activities drop to none. Its call hands
    the heartbeat to the worker's event loop and waits 10 s for it
    (``run_coroutine_threadsafe(...).result(10)``): an event loop held up 10 s (a
    worker frozen and thawed, a machine at load 30+) ended it, and from then on no
    heartbeat of any activity process reached Temporal until every activity ended,
    so every running attempt timed out (seen in CI: a thawed worker's batch never
    heard its lease end). The heartbeat handed over still runs once the loop takes
    it (a timed-out ``result`` does not cancel it)."""

    def forward(*details: Any) -> None:
        try:
            heartbeat(*details)
        except Exception as err:  # noqa: BLE001 - see above: never end the thread
            now = time.monotonic()
            if now - _late_beat_warned[0] >= _LATE_BEAT_WARN_S:
                _late_beat_warned[0] = now
                log.warning(
                    "a heartbeat was not taken by the worker's event loop in time "
                    "(%s: %s); forwarding goes on (the worker is overloaded, or was "
                    "frozen)",
                    type(err).__name__,
                    err,
                )

    return forward


class _GuardedSharedState(SharedStateManager):
    """Temporal's multiprocessing shared state, whose connection errors (the manager
    process is gone) become :class:`WorkerChannelLost` and wake the worker's watch."""

    def __init__(
        self, inner: SharedStateManager, lost: threading.Event, flags: FlagEvents | None = None
    ) -> None:
        self._inner = inner
        self._lost = lost
        # cancel events in shared memory (staccato.workers.flags); the manager's own
        # (made ahead by a thread, below) only when every slot is taken
        self._flags = flags
        # Temporal asks for a cancel event (a manager proxy: a new connection to the
        # manager, its authentication and a call) in the worker's event loop for each
        # activity it starts; a thread makes them ahead, so many starts at once do
        # not hold the loop (and the workflow tasks behind it)
        self._ready: queue.Queue[threading.Event] = queue.Queue()
        self._wanted = threading.Event()
        self._closed = False
        # started by the first activity: none are made for a worker that runs none
        self._filler: threading.Thread | None = None

    def _fill(self) -> None:
        while not self._closed:
            while self._ready.qsize() < _READY_EVENTS and not self._closed:
                try:
                    self._ready.put(self._inner.new_event())
                except _CHANNEL_ERRORS:
                    self._lost.set()
                    return
            self._wanted.wait(1.0)
            self._wanted.clear()

    def new_event(self) -> threading.Event:
        if self._flags is not None:
            flag = self._flags.new_event()
            if flag is not None:
                # not an Event, but has what Temporal calls of one
                return flag  # type: ignore[return-value]
        try:
            event = self._ready.get_nowait()
        except queue.Empty:
            event = None
        if self._filler is None and not self._closed:
            self._filler = threading.Thread(target=self._fill, name="cancel-events", daemon=True)
            self._filler.start()
        elif self._ready.qsize() < _READY_EVENTS // 2:
            self._wanted.set()
        if event is not None:
            return event
        try:
            return self._inner.new_event()
        except _CHANNEL_ERRORS as err:
            self._lost.set()
            raise _channel_lost(err) from None

    async def register_heartbeater(
        self, task_token: bytes, heartbeat: Callable[..., None]
    ) -> SharedHeartbeatSender:
        try:
            sender = await self._inner.register_heartbeater(
                task_token, forwarding_survives_errors(heartbeat)
            )
        except _CHANNEL_ERRORS as err:
            self._lost.set()
            raise _channel_lost(err) from None
        return _GuardedHeartbeatSender(sender)

    async def unregister_heartbeater(self, task_token: bytes) -> None:
        try:
            await self._inner.unregister_heartbeater(task_token)
        except _CHANNEL_ERRORS as err:
            self._lost.set()
            raise _channel_lost(err) from None

    def close(self) -> None:
        """Forget every heartbeater: Temporal's queue-poller thread loops while any is
        registered, and with the manager gone it would loop (and log) forever."""
        self._closed = True
        self._wanted.set()
        heartbeats = getattr(self._inner, "_heartbeats", None)
        if isinstance(heartbeats, dict):
            heartbeats.clear()


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

    The pool, the multiprocessing manager and the Temporal ``Worker`` using them form
    one generation; :meth:`run` replaces a generation whose pool process or manager
    died (see the module docstring).

    Args:
        client: a connected client (with the pydantic data converter).
        task_queue: the task queue to poll.
        processes: activity processes.
        threads: concurrent activities per process (default
            ``STACCATO_WORKER_THREADS``).
        shutdown_timeout_s: seconds running activities get to finish on shutdown
            (default: ``STACCATO_WORKER_SHUTDOWN_TIMEOUT_S``).
        workflows: its Temporal ``Worker`` runs the workflows as well; False: the
            activities only (the workflows then run in a :class:`WorkflowThread`).
    """

    def __init__(
        self,
        client: Client,
        *,
        task_queue: str,
        processes: int,
        threads: int | None = None,
        shutdown_timeout_s: float | None = None,
        workflows: bool = True,
    ) -> None:
        self._client = client
        self._workflows = workflows
        # a new worker life, inherited by the activity processes spawned from here on:
        # chunks journaled in an earlier life are read back before publish
        start_worker_life()
        self._shutdown_timeout_s = (
            settings.current().worker_shutdown_timeout_s
            if shutdown_timeout_s is None
            else shutdown_timeout_s
        )
        self._probe: _ManagerProbe | None = None
        self._task_queue = task_queue
        self._processes = processes
        config = settings.current()
        self._manager_silent_s = config.worker_manager_silent_s
        #: activities per process (streams are I/O-bound: threads, see threaded_pool)
        self.threads = config.worker_threads if threads is None else threads
        #: bytes of chunk buffers each process may hold (the worker's memory cap)
        self.buffer_budget = config.buffer_budget_bytes(processes)
        self._context = multiprocessing.get_context("spawn")
        self._manager: SyncManager | None = None
        self._executor: ThreadedProcessPool | None = None
        self._shared: SharedStateManager | None = None
        self._channel_lost = threading.Event()
        self._stopping = False
        # when the pool died, on the polling clock (:meth:`_polling_clock`)
        self._rebuilds: deque[float] = deque()
        self._rebuilding_s = 0.0  # seconds spent in rebuilds, off the polling clock
        self.worker: Worker | None = None
        #: the streams running here, for the progress reporter (kept across rebuilds)
        self.streams = RunningStreams()
        #: ticket -> bytes/s per stream, shared with the pool (a new one per rebuild)
        self.rate_board: MutableMapping[str, float] | None = None
        self.rates = RateBoard(client, lambda: self.rate_board)

    async def __aenter__(self) -> StaccatoWorker:
        await self._build()
        return self

    async def _build(self) -> None:
        """Start a manager, a warmed-up pool and a Temporal ``Worker`` using them."""
        self._channel_lost = threading.Event()
        self._manager = SyncManager(ctx=self._context)
        self._manager.start(start_manager_process)
        self.rate_board = self._manager.dict()
        manager_process = getattr(self._manager, "_process", None)
        if manager_process is not None:
            self._probe = _ManagerProbe(self.rate_board, manager_process, self._manager_silent_s)
        flags = FlagEvents(self._context)
        self._executor = ThreadedProcessPool(
            self._processes,
            self.threads,
            mp_context=self._context,
            initializer=start_activity_process,
            # a dict only each process's lifeline.hold_manager_registration holds
            initargs=(self.rate_board, self.buffer_budget, flags.array, self._manager.dict()),
        )
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(self._executor, _warm_up) for _ in range(self._processes))
        )
        self._shared = _GuardedSharedState(
            SharedStateManager.create_from_multiprocessing(self._manager),
            self._channel_lost,
            flags,
        )
        with warnings.catch_warnings():
            # it compares with the processes only; each runs ``threads`` activities
            warnings.filterwarnings("ignore", message="Worker max_concurrent_activities")
            self.worker = self._temporal_worker()

    def _temporal_worker(self) -> Worker:
        return Worker(
            self._client,
            build_id=BUILD_ID,
            task_queue=self._task_queue,
            workflows=TASK_QUEUE_WORKFLOWS if self._workflows else [],
            workflow_runner=WORKFLOW_RUNNER,
            workflow_task_poller_behavior=WORKFLOW_POLLERS,
            nonsticky_to_sticky_poll_ratio=NONSTICKY_POLL_RATIO,
            activity_task_poller_behavior=ACTIVITY_POLLERS,
            # a workflow runs its start lookups here first, as a local activity (async:
            # in this loop, not the pool)
            activities=ALL_ACTIVITIES
            + ([StartLookupActivities(self._client).look_up_start] if self._workflows else []),
            activity_executor=self._executor,
            shared_state_manager=self._shared,
            max_concurrent_activities=self._processes * self.threads,
            graceful_shutdown_timeout=timedelta(seconds=self._shutdown_timeout_s),
            # a stream's lease (staccato.activities.stream_lease) allows for this
            max_heartbeat_throttle_interval=timedelta(seconds=HEARTBEAT_THROTTLE_S),
            default_heartbeat_throttle_interval=timedelta(seconds=HEARTBEAT_THROTTLE_S),
            interceptors=[
                BoundedFailures(),
                self.streams.interceptor(),
                self.rates.interceptor(),
            ],
        )

    def _pool_processes(self) -> list[multiprocessing.process.BaseProcess]:
        for _ in range(3):  # the executor's own thread may change the dict meanwhile
            try:
                return list((getattr(self._executor, "_processes", None) or {}).values())
            except RuntimeError:
                continue
        return []

    def _fault(self) -> str | None:
        """What broke this generation (a dead manager or pool process), or None."""
        manager_process = getattr(self._manager, "_process", None)
        if manager_process is not None and not manager_process.is_alive():
            if self._probe is not None and self._probe.killed_because:
                return self._probe.killed_because
            return (
                f"the multiprocessing manager process {manager_process.pid} that carries "
                f"heartbeats died (exit code {manager_process.exitcode})"
            )
        if self._channel_lost.is_set():
            return "the heartbeat channel to the multiprocessing manager process failed"

        # a broken pool tells its idle processes to exit (code 0): name the one that died
        dead = sorted(
            (p for p in self._pool_processes() if not p.is_alive()), key=lambda p: p.exitcode == 0
        )
        if dead:
            return f"activity process {dead[0].pid} died (exit code {dead[0].exitcode})"
        if getattr(self._executor, "_broken", False):
            return f"the activity process pool is broken ({self._executor._broken})"  # type: ignore[union-attr]
        return None

    async def run(self) -> None:
        """Poll until shut down (``shutdown()`` or cancellation), rebuilding the pool,
        manager and Temporal ``Worker`` when a pool process or the manager dies.

        Raises:
            RuntimeError: more than ``_MAX_REBUILDS`` rebuilds within
                ``_REBUILD_WINDOW_S`` seconds (a crash loop), or the Temporal
                ``Worker`` failed for another reason (its error is chained).
        """
        while not self._stopping:
            assert self.worker is not None
            run_task = asyncio.create_task(self.worker.run())
            fault = None
            while not run_task.done() and not self._stopping:
                fault = self._fault()
                if fault is not None:
                    break
                await asyncio.wait({run_task}, timeout=_CHECK_INTERVAL_S)
            if fault is None and (self._stopping or run_task.done()):
                fault = None if self._stopping else self._fault()
                if fault is None:
                    await run_task  # a clean stop, or a failure not of the pool: raise it
                    return
            assert fault is not None
            await self._rebuild(fault, run_task)

    def _polling_clock(self) -> float:
        """Monotonic seconds less those spent in rebuilds: the crash-loop window runs
        only while the worker polls."""
        return time.monotonic() - self._rebuilding_s

    async def _rebuild(self, fault: str, run_task: asyncio.Task[None]) -> None:
        """Replace a broken generation by a fresh one (bounded, see :meth:`run`)."""
        began = time.monotonic()
        try:
            await self._replace(fault, run_task, self._polling_clock())
        finally:
            self._rebuilding_s += time.monotonic() - began

    async def _replace(self, fault: str, run_task: asyncio.Task[None], died: float) -> None:
        """The body of :meth:`_rebuild`; ``died``: when the fault was seen, on the
        polling clock."""
        log.error(
            "%s; restarting the activity processes, the manager and polling (interrupted "
            "activities are retried by Temporal and resume from the destination)",
            fault,
        )
        # No process of the broken pool may go on writing while Temporal retries its
        # activity elsewhere; they ignore SIGTERM, so SIGKILL.
        for process in self._pool_processes():
            if process.is_alive():
                process.kill()
        if self._probe is not None:
            self._probe.stop()
        if isinstance(self._shared, _GuardedSharedState):
            self._shared.close()
        if not run_task.done() and self.worker is not None:
            # Wait for run() only: with the manager gone, the Worker's shutdown fails
            # to set its manager-backed event, and shutdown() would wait forever.
            stopping = asyncio.create_task(self.worker.shutdown())
            await asyncio.wait({run_task}, timeout=_FAILED_WORKER_EXIT_S)
            stopping.cancel()
        if not run_task.done():
            run_task.cancel()
        try:
            await run_task
        except (Exception, asyncio.CancelledError) as err:
            log.info("the Temporal worker of the broken pool stopped: %s", err)
        await self._teardown()
        now = died
        while self._rebuilds and now - self._rebuilds[0] > _REBUILD_WINDOW_S:
            self._rebuilds.popleft()
        if len(self._rebuilds) >= _MAX_REBUILDS:
            message = (
                f"activity processes or their manager died {len(self._rebuilds) + 1} times "
                f"within {_REBUILD_WINDOW_S:.0f} s of polling (last: {fault}); the worker "
                "stops rather "
                "than restart them in a loop: look for the cause (out of memory: see the "
                "kernel log, e.g. `dmesg`; a crash: see the lines above)"
            )
            log.error(message)
            raise RuntimeError(message)
        self._rebuilds.append(now)
        if self._stopping:
            return
        await self._build()
        log.info("activity processes and manager restarted; worker polling again")

    async def shutdown(self) -> None:
        """Stop polling; running activities get the graceful-shutdown time to finish,
        then are cancelled (a stream heartbeats its progress and fails its attempt, to be
        resumed by the next worker). Gives up
        waiting ``_CANCEL_GRACE_S`` after that (the pool is then killed on exit)."""
        self._stopping = True
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

    async def _teardown(self) -> None:
        """Stop the pool (idle processes get ``_POOL_EXIT_S`` seconds) and the manager."""
        if self._executor is not None:
            pool = self._pool_processes()
            self._executor.shutdown(wait=False, cancel_futures=True)
            await asyncio.to_thread(_stop_processes, pool, _POOL_EXIT_S)
            self._executor = None
        if isinstance(self._shared, _GuardedSharedState):
            self._shared.close()  # its event maker stops before the manager does
        if self._probe is not None:
            self._probe.stop()
            self._probe = None
        if self._manager is not None:
            await asyncio.to_thread(self._manager.shutdown)
            self._manager = None

    async def __aexit__(self, *exc: object) -> None:
        await self._teardown()


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


def control_worker(
    client: Client,
    *,
    task_queue: str,
    streams_at_once: int | None = None,
    buffer_bytes: int | None = None,
) -> Worker:
    """The Temporal ``Worker`` of the control task queue ``<task_queue>-control``:
    front runs' async activity (:mod:`staccato.activities.front`) and the limits'
    (:mod:`staccato.activities.limits`) in this process, with this worker's client;
    canonical runs and governors it starts go to ``task_queue``. ``streams_at_once`` and
    ``buffer_bytes``: the stream worker's capacity, told to the optimizer (None: from
    the settings)."""
    activities = FrontActivities(client, task_queue=task_queue)
    limits = LimitActivities(client)
    link_tuning = LinkTuningActivities(
        client, streams_at_once=streams_at_once, buffer_bytes=buffer_bytes
    )
    copies = KnownCopyActivities(client)  # a transfer's known-copy lookup and check
    return Worker(
        client,
        build_id=BUILD_ID,
        task_queue=control_queue(task_queue),
        activities=[
            activities.run_as_destination_transfer,
            activities.cancel_front_transfer,  # a front's cancel its dead attempt missed
            limits.find_governors,
            limits.start_governor,
            limits.find_ended,  # of governors started on a stream queue by an older release
            link_tuning.recall_link_tuning,
            link_tuning.record_link_tuning,
            copies.find_known_copy,
            # the three lookups above a transfer makes before its first stream, at once
            StartLookupActivities(client).look_up_start,
            # the streams' heartbeated bytes, read by a transfer before it cancels them
            StreamBytesActivities(client).streams_moved,
        ],
        max_concurrent_activities=CONTROL_CONCURRENCY,
        interceptors=[BoundedFailures()],
        activity_task_poller_behavior=POLLERS,
        graceful_shutdown_timeout=timedelta(0),
        max_heartbeat_throttle_interval=timedelta(seconds=1),
        default_heartbeat_throttle_interval=timedelta(seconds=1),
    )


#: how long a governor's next workflow task waits for the worker that ran it last
#: (:data:`staccato.settled_query.GOVERNOR_STICKY_S`: queries to governors stay below it)
GOVERNOR_STICKY_TIMEOUT = timedelta(seconds=GOVERNOR_STICKY_S)


def governor_worker(client: Client) -> Worker:
    """The Temporal ``Worker`` of :data:`GOVERNOR_QUEUE`, polled by every Staccato
    worker whatever its own task queue: the governors and their ``find_ended``
    activity (in this process, with this worker's client)."""
    limits = LimitActivities(client)
    return Worker(
        client,
        build_id=BUILD_ID,
        task_queue=GOVERNOR_QUEUE,
        workflows=[GovernorWorkflow, LinkTuningWorkflow],
        workflow_runner=WORKFLOW_RUNNER,
        activities=[limits.find_ended],
        max_concurrent_activities=CONTROL_CONCURRENCY,
        interceptors=[BoundedFailures()],
        graceful_shutdown_timeout=timedelta(0),
        # a governor cached by a worker that died gets its next task elsewhere after
        # this (default 10 s): every transfer on the endpoint waits meanwhile
        sticky_queue_schedule_to_start_timeout=GOVERNOR_STICKY_TIMEOUT,
    )


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
    settings.checked()  # every setting, the start-only ones too
    install_log_scrubber()
    # drivers imported before any workflow task runs beside the control activities'
    # threads (staccato.endpoints.import_drivers says why)
    import_drivers()
    await ensure_search_attributes(client)
    # workflow tasks on a loop of their own, not behind the streams' (see
    # staccato.workers.workflow_thread)
    workflows = WorkflowThread(
        client,
        task_queue=task_queue,
        workflows=TASK_QUEUE_WORKFLOWS,
        runner=WORKFLOW_RUNNER,
        pollers=WORKFLOW_POLLERS,
        nonsticky_poll_ratio=NONSTICKY_POLL_RATIO,
        sticky_timeout_s=settings.current().worker_sticky_timeout_s,
        local_activities=ALL_ACTIVITIES,
        # the start lookups' first attempt, without a control-queue round trip
        client_local_activities=lambda own: [StartLookupActivities(own).look_up_start],
    )
    async with StaccatoWorker(
        client, task_queue=task_queue, processes=processes, workflows=False
    ) as staccato_worker:
        assert staccato_worker.worker is not None
        workflows.start()
        workflow_task = asyncio.create_task(workflows.ended())
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        run_task = asyncio.create_task(staccato_worker.run())
        # live progress in the Temporal UI (see staccato.workers.progress_reporter)
        reporter = asyncio.create_task(ProgressReporter(client, staccato_worker.streams).run())
        # the streams' shares of their endpoints' and links' --max-rate
        rates = asyncio.create_task(staccato_worker.rates.run())
        control = control_worker(
            client,
            task_queue=task_queue,
            streams_at_once=processes * staccato_worker.threads,
            buffer_bytes=processes * staccato_worker.buffer_budget,
        )
        control_task = asyncio.create_task(control.run())
        governing = governor_worker(client)
        governor_task = asyncio.create_task(governing.run())
        log.info(
            "worker polling task queue %r (and %r, %r) on %s (namespace %s), %d activity processes"
            " x %d threads, %d bytes of chunk buffers each",
            task_queue,
            control_queue(task_queue),
            GOVERNOR_QUEUE,
            client.service_client.config.target_host,
            client.namespace,
            processes,
            staccato_worker.threads,
            staccato_worker.buffer_budget,
        )
        await workflows.ready()
        if ready is not None:
            ready.set()
        stop_task = asyncio.create_task(stop.wait())
        await asyncio.wait(
            {run_task, stop_task, control_task, governor_task, workflow_task},
            return_when=asyncio.FIRST_COMPLETED,
        )
        for other, task in ((control, control_task), (governing, governor_task)):
            if not task.done():
                # its activities only wait on Temporal: cancelled at once, retried elsewhere
                await other.shutdown()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await task
        if not run_task.done():
            log.info("shutting down: letting streams send their last heartbeat")
            await staccato_worker.shutdown()
            if not run_task.done():
                run_task.cancel()
        await workflows.shutdown()
        reporter.cancel()
        rates.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
        with contextlib.suppress(asyncio.CancelledError):
            await rates
        with contextlib.suppress(asyncio.CancelledError):
            await run_task
        if control_task.done() and not control_task.cancelled() and control_task.exception():
            raise RuntimeError(
                f"the control worker (task queue {control_queue(task_queue)!r}, front runs) "
                f"failed: {control_task.exception()}"
            ) from control_task.exception()
        if workflow_task.done() and not workflow_task.cancelled() and workflow_task.exception():
            raise RuntimeError(
                f"the workflow worker (task queue {task_queue!r}) failed: "
                f"{workflow_task.exception()}"
            ) from workflow_task.exception()
        if governor_task.done() and not governor_task.cancelled() and governor_task.exception():
            raise RuntimeError(
                f"the governor worker (task queue {GOVERNOR_QUEUE!r}) failed: "
                f"{governor_task.exception()}"
            ) from governor_task.exception()
