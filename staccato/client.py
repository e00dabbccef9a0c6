"""``StaccatoClient``: submit, watch and control transfers (async Python API).

    async with await StaccatoClient.connect() as staccato:
        transfer_id = await staccato.submit("/data/in.bin", "/backup/in.bin")
        result = await staccato.wait(transfer_id)

Closing: a client from :meth:`StaccatoClient.connect` runs its Temporal connection on
a Tokio runtime of its own (native threads). Leave the ``async with`` block (or call
:meth:`StaccatoClient.close`) before the process exits, and keep no reference to
``staccato.temporal`` or its workflow handles beyond it: closing drops the last
reference, which stops those threads while Python is fully alive. A runtime still
alive when the interpreter is torn down (Temporal's default one lives until then)
may have a thread handing a reply to Python at that moment, which crashes the exit
(SIGSEGV, or SIGABRT "PyGILState_Release: thread state ... must be current",
temporalio/sdk-python#300).

The client talks only to Temporal; it never touches an endpoint. The Temporal
connection comes from Temporal's environment configuration
(:func:`staccato.settings.temporal_connect_config`).

Exclusivity: the transfer id is derived from the canonical destination URL
(:func:`transfer_id`), and workflows start with ``id_conflict_policy=FAIL``: while a
transfer to a destination runs, an identical submission (same request hash, kept in
the memo) attaches to it and any other is refused with :class:`DestinationBusyError`.

Runs: one transfer id holds every transfer ever made to its destination (one Temporal
run each). The client remembers the run of each transfer it submitted and follows
that run (``wait``, ``follow``), never whichever run is the latest: a later transfer
to the same destination, started by someone else, is another transfer.

Errors: :class:`~staccato.errors.TemporalUnavailableError`,
:class:`~staccato.errors.DestinationBusyError`, :class:`~staccato.errors.TransferNotFoundError`
and :class:`~staccato.errors.TransferFailedError` live in :mod:`staccato.errors` (their
old names stay importable from here). :class:`NotATransferError`: a single transfer's
call (``status``, ``wait``, ``outcome``, ``follow``, ``pause``, ``resume``) given a
dataset's or fan-out group's id (the message names the call that applies to it).

One module, a little over 500 lines: it is the one public class of the client API
plus the transfer id; every method is one Temporal call and its translation into
Staccato's terms, and they share the connection and the runs submitted.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import gc
import json
import re
import weakref
from collections.abc import AsyncIterator, Coroutine, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from temporalio.api.enums.v1 import PendingActivityState
from temporalio.bridge import temporal_sdk_bridge
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode

from staccato import settings, units
from staccato.codec import with_codec
from staccato.core_logs import new_runtime
from staccato.errors import (
    DestinationBusyError,
    InvalidURLError,
    RunEndedError,
    StaccatoError,
    TemporalUnavailableError,
    TransferCancelledError,
    TransferFailedError,
    TransferNotFoundError,
    innermost_message,
)
from staccato.following import read_through_timeouts, rpc_timed_out
from staccato.ids import LOCK_ID_PREFIX, ROOT_LOCK_TYPE, TRANSFER_ID_PREFIX, transfer_id
from staccato.leftovers import (
    TERMINATED_LEAD,
    shown_left_behind,
    terminated_left,
    unanswered_prepare,
)
from staccato.links import governor_id, link_of, tuned_link
from staccato.models import (
    MIN_TUNED_BYTES,
    NO_WORKER_ANSWERS,
    QUERY_FAILED,
    RATE_CURRENT_S,
    WORKER_BUSY,
    Checkpoint,
    FrontCheckpoint,
    GroupStatus,
    IfBusy,
    PrepareResult,
    Progress,
    PublishBeat,
    SlotView,
    StagingProgress,
    TransferOptions,
    TransferRequest,
    TransferResult,
    TransferState,
    TransferStatus,
    VerifyBeat,
    WriteSession,
    iso_utc,
    restarted_text,
)
from staccato.overlaps import overlap_busy, overlapping_writer
from staccato.quantities import TRANSFER_NAME, check_start_time, require_str
from staccato.run_fields import DATASET_TYPE, TRANSFER_TYPE
from staccato.run_states import ended_state
from staccato.settled_query import (
    GOVERNOR_STICKY_S,
    NotSettledError,
    pending_task,
    query_deadline_s,
    settled_query,
)
from staccato.starts import (
    STARTED_BY,
    front_id,
    queue_front,
    queue_place,
    queued_ahead,
    start_front,
    start_or_attach,
)
from staccato.submissions import (
    Submission,
    destination_transfer_id,
    make_request,
    shown_start,
)
from staccato.submissions import completed_status as _completed_status
from staccato.urls import parse_url, resolve_local_directory
from staccato.workflows import search_attributes as sa
from staccato.workflows.calls import LOCAL_ATTEMPT_TIMEOUT, SHORT_TIMEOUT

__all__ = [
    "TRANSFER_ID_PREFIX",
    "NotATransferError",
    "RunEndedError",
    "StaccatoClient",
    "Submission",
    "transfer_id",
]

# The client's errors live in staccato.errors; their names before the rename stay here.
TemporalUnavailable = TemporalUnavailableError
DestinationBusy = DestinationBusyError
TransferNotFound = TransferNotFoundError
TransferFailed = TransferFailedError


#: the name before it was public (``RunEndedError``), kept for callers
_RunEndedError = RunEndedError


_TERMINAL = (TransferState.completed, TransferState.failed, TransferState.cancelled)
#: a fan-out group (``staccato cp SRC DST1 DST2 ...``)
GROUP_TYPE = "FanOutWorkflow"
#: ``TransferWorkflow.progress``, asked by name: the client imports no workflow code
PROGRESS_QUERY = "progress"
#: seconds a status query waits for a worker (at most; see ``STACCATO_CLIENT_WAIT_S``)
QUERY_TIMEOUT_S = 5.0
#: seconds a status query waits for a worker while a command follows a run (``watch``,
#: ``cp`` with its progress): as :data:`staccato.dataset_client.FOLLOW_QUERY_S`. A
#: SIGKILLed worker stays listed as a poller for minutes, so each status waited the
#: whole :data:`QUERY_TIMEOUT_S` and ``watch`` printed no line for ~8 s (tester T9)
FOLLOW_QUERY_S = 1.5
#: the query wait of the status calls made in this context (:func:`following`)
_QUERY_WAIT: ContextVar[float | None] = ContextVar("staccato_query_wait", default=None)
#: describes after a ``progress`` query (each but the last followed by the query again)
#: to find the pending activities of the moment the query answered
#: (:meth:`StaccatoClient._consistent`)
CONSISTENT_TRIES = 3
#: history events of a terminated S3 transfer's run read at most for its upload's id
TERMINATED_EVENTS = 20_000
_T = TypeVar("_T")
#: seconds :meth:`StaccatoClient.close` waits for the connection's last references to go
_CLOSE_WAIT_S = 5.0


def connect_failure(err: BaseException, timeout_s: float) -> str:
    """Why a connect to Temporal failed, in a few words: the operating system's
    reason (``connection refused``) rather than the SDK's transport dump
    (``tonic::transport::Error(Transport, ConnectError(...))``); the first line of
    anything else."""
    if isinstance(err, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    text = str(err)
    found = re.search(r'message: "([^"]+)"', text) or re.search(r'ConnectError\("([^"]+)"', text)
    reason = found.group(1).lower() if found else (text.splitlines()[0] if text else "")
    if "call error after connection" in text or re.search(
        r"(?i)protocol error|transport error|http2", reason
    ):
        # connected, then the first gRPC call failed: a server that answers but not in
        # gRPC, e.g. the Temporal UI's port (an HTTP/2 GOAWAY) or the dev server's HTTP
        # API port (the connection closed; tester74: "transport error")
        return (
            f"{reason or 'transport error'}: something answers there, but not Temporal's "
            "gRPC (is it the Temporal UI's or HTTP API's port? gRPC is `staccato up "
            "--port`, 7233 by default)"
        )
    return reason or type(err).__name__


@dataclass(frozen=True)
class DestinationChoice:
    """Which transfer a destination names (:meth:`StaccatoClient.choose_for_destination`).

    Attributes:
        destination: the canonical destination URL.
        id: the workflow id chosen.
        scheduled: ``(id, starts_at)`` (ISO 8601, UTC) of every scheduled start to the
            destination (front runs delayed by ``--not-before`` that have not begun),
            earliest first.
    """

    destination: str
    id: str
    scheduled: tuple[tuple[str, str], ...]

    def note(self, named: str) -> str | None:
        """What to say when several scheduled starts exist for the destination
        (``named``: as the user named it): how many, their ids and times, which one
        this chose, and how to name another; None otherwise."""
        if len(self.scheduled) < 2:
            return None
        listed = ", ".join(f"{run_id} (at {at})" for run_id, at in self.scheduled)
        return (
            f"note: {len(self.scheduled)} scheduled starts for {named}: {listed}; this "
            f"chose {self.id} (the running transfer, else the earliest start); name "
            "another by its id (`staccato list --state scheduled` lists them)"
        )


#: the newest events of a running transfer's history :meth:`StaccatoClient._told_queued`
#: reads for the governor's last ``limit_queued`` signal (one page; a queued run adds
#: few: no stream reports while it waits)
TOLD_EVENTS = 200


@dataclass(frozen=True)
class Unanswered:
    """Why one ``progress`` query of a running run went unanswered (all unset: it was
    answered, or no worker polls the run's task queue), as :func:`_no_worker_note`
    words it.

    Attributes:
        polled: a worker polls the task queue and still did not answer.
        description: the run's description taken when the query went unanswered (its
            workflow task may have started only after the one the query followed).
        query_failure: the query's failure as its worker reported it (e.g. a
            nondeterminism error replaying the run).
        unsettled: why the query was not sent (:class:`NotSettledError`'s reason: the
            run's worker has not taken its latest workflow task).
    """

    polled: bool = False
    description: Any = None
    query_failure: str | None = None
    unsettled: str | None = None


class StaccatoClient:
    """Client of the transfer service.

    Args:
        client: a Temporal client created with the pydantic data converter.
        task_queue: the workers' task queue (default ``STACCATO_TASK_QUEUE`` or ``staccato``).
    """

    def __init__(self, client: Client, *, task_queue: str | None = None) -> None:
        self.temporal = client
        self.task_queue = task_queue or settings.task_queue()
        #: transfer id -> the run this client submitted (or attached to)
        self._runs: dict[str, str] = {}
        #: destination (canonical, and as named to :meth:`workflow_id`) -> the latest
        #: :meth:`choose_for_destination` of it
        self.choices: dict[str, DestinationChoice] = {}
        #: the Tokio runtime :meth:`connect` made for this client, dropped by :meth:`close`
        self._runtime: Runtime | None = None

    @classmethod
    async def connect(cls, *, timeout_s: float = 10.0, **overrides: Any) -> StaccatoClient:
        """Connect using Temporal's environment configuration (plus ``overrides``,
        e.g. ``target_host="127.0.0.1:7233"``).

        The payload codec (:mod:`staccato.codec`) is on when ``STACCATO_CODEC_KEY`` is set.

        Raises:
            TemporalUnavailableError: nothing answers at the address within ``timeout_s``.
            SecretKeyError: the codec key is malformed.
        """
        config = settings.temporal_connect_config()
        config.update(overrides)
        converter = with_codec(
            pydantic_data_converter
        )  # a bad key fails here, not as "unreachable"
        target = config["target_host"]
        # a runtime of its own, which close() can stop (see the module docstring)
        config.setdefault("runtime", new_runtime())
        try:
            client = await asyncio.wait_for(
                Client.connect(data_converter=converter, **config),
                timeout_s,
            )
        except Exception as err:  # the SDK raises RuntimeError for connection failures
            tried = (
                f"cannot reach Temporal at {target} (namespace {config['namespace']}): "
                f"{connect_failure(err, timeout_s)}"
            )
            stopped = settings.stopped_up_note(target)
            if stopped is not None:  # this home's `up` ran elsewhere: say so first
                raise TemporalUnavailableError(f"{stopped}; {tried}") from None
            raise TemporalUnavailableError(
                f"{tried}. Start the embedded server with "
                "`staccato up --detach`, or point TEMPORAL_ADDRESS at a running Temporal."
            ) from None
        settings.note_connected(target)
        connected = cls(client)
        connected._runtime = config["runtime"]
        return connected

    async def close(self) -> None:
        """Close the Temporal connection and stop its runtime's threads now.

        After this the client cannot be used (``temporal`` is gone). Idempotent. The
        threads stop only once nothing else refers to the connection: keep no
        ``staccato.temporal`` or workflow handle of it past this call. A client built
        around a caller's own ``Client`` (``StaccatoClient(client)``) leaves that
        connection to its owner.
        """
        runtime, self._runtime = self._runtime, None
        if runtime is None:
            return
        self.__dict__.pop("temporal", None)
        released = weakref.ref(runtime)
        del runtime
        # Release every last reference, so the runtime's threads stop here and not at
        # interpreter teardown: the SDK's client objects hold reference cycles (gc),
        # and objects a Tokio thread let go of without the GIL (a failed call's error,
        # whose traceback holds the connection) wait in PyO3's queue of deferred
        # releases until PyO3 next runs with the GIL. Bounded: a caller that keeps a
        # handle keeps the runtime (see the module docstring).
        deadline = asyncio.get_running_loop().time() + _CLOSE_WAIT_S
        while True:
            _release_deferred()
            gc.collect()
            if released() is None or asyncio.get_running_loop().time() >= deadline:
                break
            await asyncio.sleep(0.01)

    async def __aenter__(self) -> StaccatoClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @staticmethod
    def make_request(
        source: str, destination: str, options: TransferOptions | None = None
    ) -> TransferRequest:
        """Validate and canonicalise a transfer request
        (:func:`staccato.submissions.make_request`).

        Raises:
            InvalidURLError: a URL is malformed, unknown, or cannot play its role, or the
                source has a query (a token) and no key to seal it is configured.
            SecretKeyError: a configured key is malformed.
        """
        return make_request(source, destination, options)

    async def submit(
        self,
        source: str,
        destination: str,
        options: TransferOptions | None = None,
        *,
        not_before: datetime | timedelta | None = None,
    ) -> str:
        """Start a transfer and return its id (see :meth:`start`).

        Raises:
            InvalidURLError: bad URLs.
            DestinationBusyError: a different transfer to this destination is running
                and ``options.if_busy`` is ``fail``.
        """
        return (await self.start(source, destination, options, not_before=not_before)).id

    async def start(
        self,
        source: str,
        destination: str,
        options: TransferOptions | None = None,
        *,
        not_before: datetime | timedelta | None = None,
    ) -> Submission:
        """Start a transfer; say whether it attached, queued or starts later.

        The destination's transfer id is its lock: an identical request to a
        destination whose transfer is running attaches to it (same id returned; options
        outside the request hash that differ from the running one's are named in
        ``ignored``: they do not apply to it). A different running transfer (also the
        same source with other copy options: the message names them, requested vs
        running) makes it fail with :class:`DestinationBusyError`
        (``options.if_busy = fail``, the default), or (``wait``) starts a front run
        ``<transfer id>-<8 hex>`` that waits, state ``queued``, and runs when the
        destination is free. ``not_before`` (a time, or a delay from now) starts a
        front run with Temporal's start delay: the destination is locked only from
        then on, and ``if_busy`` applies at that time. It is checked as ``submit
        --not-before`` checks it (:func:`staccato.quantities.check_start_time`): a
        time without tzinfo is local time; one in the past (a negative delay) or more
        than 30 days ahead is refused.

        Raises:
            ValueError: ``not_before`` in the past or more than 30 days ahead (the
                message names it); TypeError: neither a datetime nor a timedelta.
            InvalidURLError: bad URLs.
            DestinationBusyError: busy and ``if_busy`` is ``fail``; or, whatever
                ``if_busy``, a running dataset's root encloses the destination (a
                client-side check, not made for ``not_before``: :mod:`staccato.overlaps`).
        """
        request = self.make_request(source, destination, options)
        if not_before is not None:
            now = datetime.now(UTC)
            delay = max(start_time(not_before, now) - now, timedelta(0))
            workflow_id = front_id(request)
            run_id = await start_front(
                self.temporal,
                request,
                task_queue=self.task_queue,
                workflow_id=workflow_id,
                start_delay=delay,
            )
            self._runs[workflow_id] = run_id
            # the start time Temporal stored (its own clock: the start plus the delay),
            # which ``status`` shows; this client's ``now + delay`` can be a second off
            starts_at = now + delay
            try:
                stored = await self.temporal.get_workflow_handle(
                    workflow_id, run_id=run_id
                ).describe()
                info = stored.raw_description.workflow_execution_info
                if info.HasField("execution_time"):
                    starts_at = info.execution_time.ToDatetime(tzinfo=UTC)
            except RPCError:
                pass  # started all the same: the time asked for
            return Submission(workflow_id, run_id, starts_at=starts_at)
        # a dataset whose root encloses the destination (client side: staccato.overlaps)
        nested = await overlapping_writer(
            self.temporal,
            [request.destination],
            own=transfer_id(request.destination),
            below=False,
        )
        if nested is not None:
            raise overlap_busy(nested, kind="transfer")
        try:
            started = await start_or_attach(self.temporal, request, task_queue=self.task_queue)
        except DestinationBusyError:
            if request.options.if_busy != IfBusy.wait:
                raise
            # an identical request queued already is joined (staccato.starts.queue_front)
            queued = await queue_front(self.temporal, request, task_queue=self.task_queue)
            self._runs[queued.workflow_id] = queued.run_id
            return Submission(
                queued.workflow_id,
                queued.run_id,
                attached=queued.attached,
                queued=True,
                ignored=queued.ignored,
            )
        self._runs[started.workflow_id] = started.run_id
        return Submission(
            started.workflow_id,
            started.run_id,
            attached=started.attached,
            ignored=started.ignored,
        )

    # -- fan-out: one source to several destinations (staccato.fanout_client) ----------

    async def fan_out(
        self, source: str, destinations: Sequence[str], options: TransferOptions | None = None
    ) -> str:
        """Start a fan-out group: ``source`` read once (staged), written to every one of
        ``destinations`` (2 or more) by a transfer each; returns the group id
        (``staccato-group-...``). An identical group running is attached to.

        Raises:
            InvalidURLError: a bad URL, a destination given twice or equal to the
                source, fewer than 2 (a single str is one destination).
            TypeError: a destination that is not a str.
            DestinationBusyError: the same group runs with other options.
        """
        from staccato.fanout_client import make_fan_out_request, start_group

        request = make_fan_out_request(source, destinations, options)
        return (await start_group(self, request)).id

    async def group_status(self, group: str) -> GroupStatus:
        """A fan-out group's state and one row per destination (see
        :func:`staccato.fanout_client.group_status`)."""
        from staccato.fanout_client import group_status

        return await group_status(self, group)

    async def wait_group(self, group: str) -> GroupStatus:
        """Wait for a fan-out group to end; its final status (never raises for a
        destination that failed: its row says so)."""
        from staccato.fanout_client import wait_group

        return await wait_group(self, group)

    def adopt(self, submitted: Submission) -> None:
        """Follow ``submitted`` (started by another client, e.g. the light one:
        :mod:`staccato.light_client`) as if this client had started it: ``wait``,
        ``follow`` and ``outcome`` follow its run."""
        self._runs[submitted.id] = submitted.run_id

    def submitted_run(self, transfer: str) -> str | None:
        """The run id of the transfer this client submitted under ``transfer`` (an id or
        a destination), or None if it submitted none.

        Raises:
            TypeError: ``transfer`` is not a str.
        """
        require_str(transfer, "transfer", TRANSFER_NAME)
        if transfer in self._runs:
            return self._runs[transfer]
        try:
            return self._runs.get(destination_transfer_id(transfer))
        except InvalidURLError:
            return None

    async def _memo(self, handle: WorkflowHandle[Any, Any]) -> dict[str, Any]:
        description = await handle.describe()
        return dict(await description.memo())

    async def workflow_id(self, transfer: str) -> str:
        """The workflow id ``transfer`` names: a transfer id (``staccato-...``), any
        existing ``TransferWorkflow``'s id (a Schedule's run, ``manual-1``), else a
        destination URL or path (the transfer :meth:`choose_for_destination` chooses,
        remembered in :attr:`choices` under ``transfer``).

        Raises:
            TransferNotFoundError: neither an existing workflow id nor a valid
                destination.
            TypeError: ``transfer`` is not a str (every method taking a transfer
                comes here, or to :meth:`submitted_run`, first).
        """
        require_str(transfer, "transfer", TRANSFER_NAME)
        if not transfer.strip():
            # Temporal answers an empty workflow id with a raw RPCError (tester59 T11)
            raise TransferNotFoundError(
                f"no transfer {transfer!r}: give a transfer id or a destination URL or path"
            )
        if transfer.startswith(TRANSFER_ID_PREFIX) or transfer in self._runs:
            return transfer
        try:
            await self.temporal.get_workflow_handle(transfer).describe()
            return transfer
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
        try:
            destination = resolve_local_directory(parse_url(transfer)).canonical
        except InvalidURLError as err:
            raise TransferNotFoundError(
                f"no transfer {transfer!r}: no workflow has this id, and it is not a "
                f"destination URL or path ({err})"
            ) from None
        choice = await self.choose_for_destination(destination)
        self.choices[transfer] = choice  # under the name given too (the CLI's notes)
        return choice.id

    async def choose_for_destination(self, destination: str) -> DestinationChoice:
        """Which transfer a destination (canonical URL) names: the one rule of
        ``status``, ``watch``, ``cancel``, ``pause`` and ``resume``.

        1. its transfer id while a run of it is running;
        2. else a front run to it that has begun (queued behind a busy destination,
           or starting the transfer; ``<transfer id>-<8 hex>``): the earliest begun;
        3. else the earliest scheduled start (a front run delayed by ``--not-before``,
           by the time it starts; the id breaks a tie);
        4. else, when the transfer id has no run at all, the newest front run whatever
           its state (a delayed start cancelled before its time); else the transfer id.

        The choice also lists every scheduled start to the destination (``scheduled``),
        so that a command can say when it chose one of several. It is remembered in
        :attr:`choices` under the destination.
        """
        own = transfer_id(destination)
        exists = True
        running = False
        try:
            description = await self.temporal.get_workflow_handle(own).describe()
            running = description.status == WorkflowExecutionStatus.RUNNING
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            exists = False
        value = sa.keyword(destination)
        quote = "'" if "'" not in value else '"' if '"' not in value else None
        if quote is None:  # no string literal of the query language can hold it
            return self._chosen(DestinationChoice(destination, own, ()))
        query = (
            f"WorkflowType = '{TRANSFER_TYPE}' AND {sa.DESTINATION.name} = {quote}{value}{quote}"
        )
        if exists:
            query += " AND ExecutionStatus = 'Running'"
        now = datetime.now(UTC)
        #: (rank, time, id): 0 begun, 1 scheduled (by start time), 2 ended (newest first)
        ranked: list[tuple[int, float, str]] = []
        scheduled: list[tuple[datetime, str]] = []
        async for execution in self.temporal.list_workflows(query):
            if not execution.id.startswith(f"{own}-"):
                continue
            starts = execution.execution_time or execution.start_time
            if execution.status != WorkflowExecutionStatus.RUNNING:
                ranked.append((2, -execution.start_time.timestamp(), execution.id))
            elif starts > now:
                ranked.append((1, starts.timestamp(), execution.id))
                scheduled.append((starts, execution.id))
            else:
                ranked.append((0, starts.timestamp(), execution.id))
        listed = tuple((run_id, iso_utc(at) or "") for at, run_id in sorted(scheduled))
        if running or not ranked:
            return self._chosen(DestinationChoice(destination, own, listed))
        return self._chosen(DestinationChoice(destination, min(ranked)[2], listed))

    def _chosen(self, choice: DestinationChoice) -> DestinationChoice:
        """Remember ``choice`` (:attr:`choices`) and return it."""
        self.choices[choice.destination] = choice
        return choice

    async def _handle(self, transfer: str, run_id: str | None = None) -> WorkflowHandle[Any, Any]:
        """A handle from a transfer id, a workflow id or a destination URL/path (its
        latest run unless ``run_id`` names one)."""
        return self.temporal.get_workflow_handle(
            await self.workflow_id(transfer), run_id=run_id, result_type=TransferResult
        )

    async def status(self, transfer: str, *, run_id: str | None = None) -> TransferStatus:
        """Current status of a transfer (by id or destination).

        A transfer id names a destination's transfers; the status is of the latest one
        (a Temporal run), or of the run ``run_id``.
        ``bytes_done`` adds the running streams' last heartbeats (sent every ~1 s)
        to the committed segments, so it moves while data moves. Only a running run
        is queried (at most min(5 s, ``STACCATO_CLIENT_WAIT_S``)): a closed one's
        state, result or failure come from Temporal without a worker (a failed or
        cancelled run's byte counts are those it wrote into its memo as it ended).

        ``started_at`` is when the run named started (a front run: its own start);
        ``ended_at`` when it closed (None while it runs).

        Raises:
            TransferNotFoundError: no such transfer.
            NotATransferError: ``transfer`` is a dataset or fan-out group id (the
                message names the call for it: ``dataset_status``, ``group_status``),
                or another workflow's.
        """
        handle, description = await self._described(transfer, run_id, call="status")
        found = await self._status(handle, description)
        ended = description.close_time
        return found.model_copy(
            update={
                "started_at": iso_utc(description.start_time),
                "ended_at": iso_utc(ended) if ended is not None else None,
            }
        )

    async def _parent_cancel(self, description: Any) -> tuple[str, str | None] | None:
        """For a running child transfer (a dataset's large file, a group's
        destination; ``description``: its run's) whose own run has no cancel request:
        the cancel asked of its parent (or root) run that has not reached it yet (its
        parent's worker passes it down; a frozen one does not), as ``(parent id, when
        it was asked: ISO 8601, UTC, or None when its history did not say)``; None
        when it has no parent, none has a cancel pending, or a parent cannot be
        described (one describe per parent, a history read for the time).
        Rule: :func:`cancel_requested_of`, :func:`cancel_requested_at`."""
        ups = [
            (description.parent_id, description.parent_run_id),
            (description.root_id, description.root_run_id),
        ]
        for up, run in dict.fromkeys(ups):  # the parent first, then the root
            if not isinstance(up, str) or not up or up == description.id:
                continue
            try:
                parent = await self.temporal.get_workflow_handle(up, run_id=run or None).describe()
            except RPCError:
                continue
            if cancel_requested_of(parent):
                return up, await cancel_requested_at(self.temporal, up, parent.run_id)
        return None

    async def _described(
        self, transfer: str, run_id: str | None, *, call: str
    ) -> tuple[WorkflowHandle[Any, Any], Any]:
        """The handle of the transfer ``transfer`` names (:meth:`_handle`) and its
        description, checked to be a single transfer's (``call``: the method asked,
        which a refusal names).

        Raises:
            TransferNotFoundError: no such workflow.
            NotATransferError: a dataset, a fan-out group or another workflow type.
        """
        handle = await self._handle(transfer, run_id)
        try:
            description = await handle.describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                raise TransferNotFoundError(f"no transfer {transfer!r}") from None
            raise
        require_type(handle.id, description, (TRANSFER_TYPE,), call=call)
        return handle, description

    async def _status(
        self, handle: WorkflowHandle[Any, Any], description: Any, described_again: bool = False
    ) -> TransferStatus:
        """:meth:`status` of the run ``handle`` names, once described.

        ``described_again``: ``description`` was taken after a query found the run
        ended (it is not described a third time)."""
        status = description.status
        memo = await description.memo()
        runs_as = _runs_as(handle.id, memo)
        if status == WorkflowExecutionStatus.COMPLETED:
            completed = _completed_status(handle.id, await handle.result())
            return completed.model_copy(update={"runs_as": runs_as, "untuned": _untuned(memo)})
        starts_at = _delayed_start(description)
        if starts_at is not None and status == WorkflowExecutionStatus.RUNNING:
            return _scheduled_status(handle.id, memo, runs_as, starts_at)
        if runs_as is not None and status == WorkflowExecutionStatus.RUNNING:
            front = await self._front_status(handle.id, runs_as, description)
            if front is not None and front.state == TransferState.queued:
                if cancel_requested_of(description):
                    # cancelled while it waits: a worker ends it (a tester read "queued"
                    # with no word of the cancel while none ran)
                    answered = (await self._answered(handle, description))[0] is not None
                    note = _no_worker_note(description, begun=True, cancel_requested=True)
                    front = front.model_copy(
                        update={
                            "cancel_requested": True,
                            "cancel_requested_at": await cancel_requested_at(
                                self.temporal, handle.id, description.run_id
                            ),
                            "last_retry_error": None if answered else note,
                        }
                    )
            if front is not None:
                return front
        progress: Progress | None = None
        unanswered = Unanswered()
        capacity_wait: str | None = None  # a stream waiting for its worker's memory
        if status == WorkflowExecutionStatus.RUNNING:
            progress, unanswered = await self._answered(handle, description)
            if progress is not None and not described_again and _ended_since(progress):
                # the run ended between the describe and the query (its last workflow
                # task sets the state, writes the memo's ``left_behind`` and ends it):
                # the memo read above predates that (ci, stop 39: "cancelled" with no
                # ``left_behind`` while the run had written it)
                return await self._status(handle, await handle.describe(), True)
        # the streams that ended between the describe and the query: their bytes are
        # the query's, no segment counts both committed and in flight
        ended_since: set[str] = set()
        if progress is not None:
            progress, ended_since = await self._consistent(handle, description, progress)
        chunk_size = progress.chunk_size if progress else int(memo.get("chunk_size", 0))
        streams = progress.streams if progress else int(memo.get("streams", 0))
        bytes_total = progress.bytes_total if progress else None
        bytes_done = progress.bytes_committed if progress else 0
        # durable at the destination (journaled: a resume does not send it again): the
        # committed segments, the stopped or retried segments' durable chunks, and the
        # running streams' (their checkpoints' ``bytes_durable``)
        durable_in: dict[int, int] = dict(progress.durable) if progress else {}
        durable_known = True
        if progress is None and status == WorkflowExecutionStatus.RUNNING:
            # no worker answered (e.g. after a worker's crash): the size and the
            # committed segments' bytes the run keeps in its memo (patch progress-memo)
            bytes_total = _memo_int(memo, "bytes_total")
            bytes_done = _memo_int(memo, "bytes_committed") or 0
            if description.typed_search_attributes.get(sa.STATE) == TransferState.paused.value:
                # what its last pause stopped at (patch paused-bytes-memo): the stopped
                # streams' chunks are in the workflow's state, which only a worker reads
                bytes_done = max(bytes_done, _memo_int(memo, "bytes_paused") or 0)
        committed = bytes_done
        if progress is None and status != WorkflowExecutionStatus.RUNNING:
            # a failed or cancelled run wrote its counts into its memo as it ended
            # (runs of release 0.8 and earlier did not: 0 and unknown then; the
            # durable bytes, runs before 0.25.0 did not: unknown)
            # terminated: no end was written; its committed segments' bytes (patch
            # progress-memo) are the last known (it said 0 B after ~12 MB: tester t68)
            bytes_done = _end_bytes(
                memo,
                _memo_int(memo, "bytes_committed") or 0
                if status == WorkflowExecutionStatus.TERMINATED
                else 0,
            )
            committed = _memo_int(memo, "bytes_durable") or 0
            durable_known = _memo_int(memo, "bytes_durable") is not None
            total = memo.get("bytes_total")
            bytes_total = int(total) if total is not None else None
        in_segments: dict[int, int] = dict(progress.partial) if progress else {}
        rate: float | None = None
        cleanup: str | None = None
        last_retry: str | None = None
        next_attempt: str | None = None
        error: str | None = progress.error if progress else None
        if error is None and status == WorkflowExecutionStatus.RUNNING:
            # failed, still removing its partial data, and no worker answered: the
            # reason its memo holds (runs of 0.19 and later)
            error = memo.get("error") if isinstance(memo.get("error"), str) else None
        checksum = progress.checksum if progress else None
        staged_bytes: int | None = None
        staging_rate: float | None = None
        # a cancel asked of the running run, not yet taken effect (a dead worker's
        # until one polls): said in the JSON (``cancel_requested``, as a dataset's)
        cancel_requested = cancel_requested_of(description)
        # a dataset's (or group's) child: the cancel asked of its parent, which its
        # worker has not passed down yet (tester71: the child said ``running``)
        parent_cancel = (
            await self._parent_cancel(description)
            if not cancel_requested and status == WorkflowExecutionStatus.RUNNING
            else None
        )
        cancel_requested = cancel_requested or parent_cancel is not None
        copy_begun = False  # some stream has heartbeated (seen with no worker)
        cleaned_up = False  # a failed run, still running, whose clean-up is over
        idle_since: str | None = None
        stalled_step: str | None = None  # the short step whose attempt waits (idle_since)
        stalled_heartbeat: bool | None = None  # that step's heartbeats are overdue
        # phase verify: bytes read back of the size, rate (bytes/s) and ETA (s)
        verifying: tuple[int, int, float | None, float | None] | None = None
        # phase publish writing a fresh copy: bytes written, of total, rate while moving
        publishing: tuple[int, int | None, float | None] | None = None
        # a publish waiting for its store while its worker heartbeats: since, parts
        publish_waits: tuple[datetime, int | None] | None = None
        if status == WorkflowExecutionStatus.RUNNING:
            no_worker: str | None = None
            # the query said cancelled, but the server has not recorded it (the state
            # search attribute, written in the workflow task that ends the clean-up and
            # writes ``left_behind``): the answer ran ahead of the run's history (ci99 at
            # load: "cancelled", no ``left_behind``, the cleanup attempt still pending
            # and giving up 15 s later), so the clean-up is not over
            cleanup_unrecorded = False
            if progress is not None:
                state = progress.state
                recorded = description.typed_search_attributes.get(sa.STATE)
                if state == TransferState.cancelled and recorded != state.value:
                    cleanup_unrecorded = True
                    state = (
                        TransferState(recorded) if recorded in _STATES else TransferState.running
                    )
            else:
                # No worker answered the query: the state the workflow last recorded in
                # visibility, and say why the rest is missing.
                recorded = description.typed_search_attributes.get(sa.STATE)
                state = TransferState(recorded) if recorded in _STATES else TransferState.scheduled
                no_worker = last_retry = _no_worker_note(
                    description,
                    begun=state != TransferState.scheduled,
                    cancel_requested=cancel_requested,
                    polled=unanswered.polled,
                    later=unanswered.description,
                    query_failure=unanswered.query_failure,
                    unsettled=unanswered.unsettled,
                )
            rate_sum = 0.0
            verify_live, verify_rate = 0, 0.0  # the running verify attempts' read-back
            now = datetime.now(UTC)
            moved_last: float | None = None  # a running stream last moved a byte (Unix s)
            # a short step's attempt that waits for its endpoint, and since when
            step_waits: tuple[str, datetime] | None = None
            # a stream between segments: its attempt started and has not heartbeated
            # its details yet, or it ended between the describe and the query (the
            # rate is then held: :func:`held_rate`)
            stream_between = False
            for pending in description.raw_description.pending_activities:
                # what the retry of an attempt that then moves bytes said is history
                said_before = (last_retry, next_attempt)
                retrying = await self.retry_of(
                    pending,
                    " and ".join(str(memo.get(k)) for k in ("source", "destination") if memo.get(k))
                    or None,
                )
                if retrying is not None:
                    retried, next_attempt = retrying
                    # no worker: that stays said first (nothing moves until one polls)
                    last_retry = f"{no_worker}; {retried}" if no_worker else retried
                waits_since = step_waiting_since(pending, now)
                if waits_since is not None:
                    step_waits = (pending.activity_type.name, waits_since)
                if not pending.heartbeat_details.payloads:
                    stream_between = stream_between or _stream_starting(pending, now)
                    continue
                # whether this attempt moves bytes now (a stream's, or the staging
                # read's: retry_is_over's rule); a retried one that does is no longer
                # retrying, said once below for both
                moves_again = False
                if pending.activity_type.name == "stage_source":
                    # the source read into the staging cache (phase "staging"): its rate
                    # is current only while this attempt reads (tester65 T14: "attempt 2:
                    # the worker's heartbeat channel ... is gone" on every line of the
                    # retried staging, 0 -> 178 MiB)
                    staged = await staging_figures(self.temporal, pending, now)
                    if staged is not None:
                        staged_bytes, staging_rate = staged
                        moves_again = staging_rate is not None
                elif pending.activity_type.name == "publish":
                    # a publish says when it last moved bytes, and the fresh copy it
                    # writes (SFTP after an earlier worker life): moving, not waiting
                    # for its server (tester73 M3: 25 s of "stalled: publish" as it grew)
                    heard = await _publish_heard(self.temporal, pending)
                    if heard is not None:
                        if _stalled(heard.moved_at, now):
                            since = datetime.fromtimestamp(heard.moved_at, UTC)
                            if _moving(pending, now):
                                # its worker heartbeats: it waits for its store (an S3
                                # CompleteMultipartUpload may take minutes; a ~6 s one
                                # read "stalled: publish"), within the step's timeout
                                publish_waits = (since, heard.assembling_parts)
                            else:  # its heartbeats are overdue: its worker stopped
                                step_waits = ("publish", since)
                                stalled_heartbeat = True
                        if heard.fresh_bytes_done is not None:
                            current = _moving(pending, now, heard.moved_at)
                            publishing = (
                                heard.fresh_bytes_done,
                                heard.fresh_bytes_total,
                                heard.fresh_rate_bytes_per_s if current else None,
                            )
                    continue
                elif pending.activity_type.name == "verify":
                    # the verify (phase "verify"): when it last heard from the
                    # destination, under the copy's rule below (a frozen server's
                    # verify read "100%" with no word for 73 s: tester62)
                    beat = await _verify_heard(self.temporal, pending)
                    if beat is not None:
                        moved_last = max(moved_last or 0.0, beat.moved_at)
                        if pending.activity_id not in ended_since:
                            # its bytes read back so far (those of the parts that
                            # ended are the query's ``verify_done``)
                            verify_live += beat.bytes_done or 0
                            if beat.rate_bytes_per_s and _moving(pending, now, beat.moved_at):
                                verify_rate += beat.rate_bytes_per_s
                    continue
                else:
                    try:
                        (details,) = await self.temporal.data_converter.decode(
                            pending.heartbeat_details.payloads, [Checkpoint]
                        )
                    except Exception:
                        continue
                    if not isinstance(details, Checkpoint):
                        continue
                    if pending.activity_id in ended_since:
                        # ended before the query answered: counted there (committed,
                        # or kept as its segment's partial bytes)
                        copy_begun = stream_between = True
                        continue
                    copy_begun = True
                    started = pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
                    if details.waiting and started:
                        capacity_wait = details.waiting
                    in_segments[details.segment] = max(
                        in_segments.get(details.segment, 0), details.bytes_done
                    )
                    if details.bytes_durable is not None:
                        durable_in[details.segment] = max(
                            durable_in.get(details.segment, 0), details.bytes_durable
                        )
                    if details.moved_at is not None and started:
                        moved_last = max(moved_last or 0.0, details.moved_at)
                    moves_again = retry_is_over(pending, now, details.moved_at)
                    if moves_again:
                        rate_sum += details.rate_bytes_per_s
                    if details.rate_bytes_per_s <= 0:
                        # its first heartbeat (rate 0): a segment's stream just begun
                        stream_between = stream_between or _stream_starting(pending, now)
                if moves_again and no_worker is None:
                    # a retried attempt that moves bytes: no longer retrying (a tester
                    # saw "attempt 2: Heartbeat timeout" to the end)
                    last_retry, next_attempt = said_before
            bytes_done += sum(in_segments.values())
            committed += sum(durable_in.values())
            if (
                progress is not None
                and progress.phase == "verify"
                and progress.verify_total is not None
                and state == TransferState.running
            ):
                # the read-back's own figures (a tester saw none for the whole
                # ``--verify full`` read-back): the finished parts' (the query's) and
                # the running ones' heartbeats
                checked = min(progress.verify_total, (progress.verify_done or 0) + verify_live)
                if (
                    verify_rate <= 0
                    and not _stalled(moved_last, now)
                    and last_retry is None
                    and no_worker is None
                ):
                    # no running part's heartbeat says a rate (parts shorter than the
                    # heartbeat interval, a server-side hash): the read-back's average
                    # (tester73 M1: none for a whole 1 GiB read-back)
                    verify_rate = (
                        held_rate(
                            0.0,
                            since=progress.verify_started_at,
                            moved=checked,
                            now=now.timestamp(),
                        )
                        or 0.0
                    )
                pace = round(verify_rate, 1) if verify_rate > 0 and not cancel_requested else None
                left = units.eta(progress.verify_total - checked, pace)
                verifying = (
                    checked,
                    progress.verify_total,
                    pace,
                    round(left, 1) if left is not None else None,
                )
            if state == TransferState.paused and progress is None:
                # what the pause stopped at: the stopped streams' chunks, durable
                committed = max(committed, _memo_int(memo, "bytes_paused") or 0)
            # a cancel requested: the streams are stopping, their last rate is history
            stopping = cancel_requested
            # the one place a rate is decided: the streams' own, while a worker answers
            # (else its heartbeats are history) and some stream moves bytes (none: no
            # rate, so no ETA, rather than a rate of the past)
            # a tuned copy's many short segments (a new attempt each): the attempts'
            # own rates read low, so the whole copy's figures (tester74 H)
            tuned = (
                tuned_copy_rate(
                    rate_sum,
                    measured=progress.tuning.rate_bytes_per_s,
                    since=progress.copy_started_at,
                    moved=bytes_done - (progress.copy_started_bytes or 0),
                    now=now.timestamp(),
                )
                if progress is not None
                and progress.phase == "copy"
                and progress.tuning is not None
                and (rate_sum > 0 or stream_between)
                else None
            )
            if (
                state == TransferState.running
                and not stopping
                and no_worker is None
                and rate_sum > 0
            ):
                rate = tuned or rate_sum
            if (
                state == TransferState.running
                and not stopping
                and no_worker is None
                and rate is None
                and capacity_wait is None
                and last_retry is None
                and progress is not None
                and progress.phase == "copy"
                and stream_between
            ):
                # every stream between two segments (one ended, the next has not said
                # its rate yet): the last rate reported, or the copy's average, not no
                # rate (tester73 M2: lines at segment boundaries with none)
                rate = tuned or held_rate(
                    rate_sum,
                    reported=progress.reported_rate,
                    reported_at=progress.reported_rate_at,
                    since=progress.copy_started_at,
                    moved=bytes_done - (progress.copy_started_bytes or 0),
                    now=now.timestamp(),
                )
            if (
                state == TransferState.running
                and not stopping
                and no_worker is None
                and rate is None
                and capacity_wait is None  # waiting for the worker's memory: said so
                and moved_last is not None
                and now.timestamp() - moved_last >= RATE_CURRENT_S
            ):
                # every running stream (or the verify) waits (a hung server, before its
                # I/O timeout or the hang watch ends the attempt): said, not a silent
                # "no rate" (a tester saw a frozen SFTP server's transfer so for 60 s:
                # tester60 #6)
                idle_since = iso_utc(datetime.fromtimestamp(moved_last, UTC))
            if step_waits is not None and no_worker is None and state != TransferState.paused:
                # a short step (stat, prepare, publish, ...) waits for its endpoint: said
                # as the copy's streams' stall is, with the step (a SIGSTOPped S3 server's
                # prepare read "scheduled / phase prepare" for 110 s with no word of it)
                stalled_step = step_waits[0]
                idle_since = iso_utc(step_waits[1])
            if no_worker is not None or state == TransferState.paused:
                publish_waits = None  # said by the worker's absence, or the pause
            if state == TransferState.failed:
                # failed; the run goes on only to remove the partial data (its clean-up
                # may retry against a server that is down: ``last_retry_error`` then
                # says so); the bytes moved are those the run wrote into its memo
                cleanup = _cleanup_note(progress.cleanup if progress else None)
                # the bytes its ended status says (one figure, the run's own: its
                # streams' last heartbeats, sent into a frozen server's socket, may
                # be above it; tester F5)
                bytes_done = _end_bytes(memo, bytes_done)
                committed = max(committed, _memo_int(memo, "bytes_durable") or 0)
                if (progress is not None and progress.cleanup is None) or memo.get("left_behind"):
                    # its clean-up is over (the run goes on only to release what it
                    # held): the rule of an ended run below, nothing kept (64 MiB
                    # showed durable for a failed run whose temp file was removed)
                    cleaned_up = True
            elif progress is not None and (progress.cleanup is not None or cleanup_unrecorded):
                # a cancelled run removing its partial data (it ends cancelled once
                # that is done or given up): where it is, as a failed run's status says,
                # and the bytes its ended status will say (a `cp` read 112 MiB on its
                # `cancelling` lines, then `status` 64 MiB: tester F5; or 0 B once the
                # streams had stopped)
                cleanup = _cleanup_note(progress.cleanup)
                bytes_done = _end_bytes(memo, bytes_done)
            elif state == TransferState.cancelled:
                # cancelled, the run still closing (giving back its slots or its
                # staged entry's pin): a follow takes this status for the last one, so
                # it says the ended run's bytes too
                bytes_done = _end_bytes(memo, bytes_done)
        else:
            # the one rule for an ended run (a front run whose destination's transfer
            # was cancelled ended FAILED but shows cancelled, with that reason)
            state = ended_state(status, description.typed_search_attributes.get(sa.STATE))
            if error is None:
                error = await failure_reason(
                    handle, cancelled=status == WorkflowExecutionStatus.CANCELED
                )
        # a tuned run whose copy has begun while no worker answers: the streams its
        # tuner chose are in the workflow's state, which only a worker reads
        begun = progress is None and (copy_begun or bytes_done > 0)
        eta = None
        if bytes_total is not None:
            seconds = units.eta(bytes_total - bytes_done, rate)
            eta = round(seconds, 1) if seconds is not None else None
        if bytes_total is not None:
            bytes_done = min(bytes_done, bytes_total)
        # never above the bytes moved (which count the chunks in flight besides)
        bytes_durable = min(committed, bytes_done) if durable_known else None
        if runs_as is not None and status in _ENDED_NOT_COMPLETED:
            # a front run that ended failed or cancelled wrote no counts of its own: the
            # destination's run it started did (a cancelled schedule run read "0 B / ?")
            ran = await self._ended_front_run(handle.id, description, runs_as)
            if ran is not None:
                bytes_done, bytes_total = ran.bytes_done, ran.bytes_total
        if status in _ENDED_NOT_COMPLETED or cleaned_up:
            # a failed or cancelled run's clean-up removed its partial data (what it
            # could not remove, ``left_behind`` names; no run resumes from it): nothing
            # is kept that a new transfer would not send again (a tester read "8.0 MiB
            # durable when it ended" with the temp file gone)
            bytes_durable = 0
        terminated_left_behind = (
            await self._terminated_left(handle.id, description, memo.get("destination"))
            if status == WorkflowExecutionStatus.TERMINATED
            and runs_as is None
            and not isinstance(memo.get("left_behind"), str)
            else None
        )
        return TransferStatus(
            id=handle.id,
            state=state,
            source=memo.get("source", ""),
            destination=memo.get("destination", ""),
            bytes_total=bytes_total,
            bytes_done=bytes_done,
            bytes_durable=bytes_durable,
            rate_bytes_per_s=round(rate, 1) if rate is not None else None,
            eta_s=eta,
            streams=streams,
            chunk_size=chunk_size,
            checksum=checksum,
            error=error,
            last_retry_error=last_retry,
            next_attempt_at=next_attempt,
            phase=progress.phase if progress else None,
            verified_bytes=verifying[0] if verifying else None,
            verify_bytes_total=verifying[1] if verifying else None,
            verify_rate_bytes_per_s=verifying[2] if verifying else None,
            verify_eta_s=verifying[3] if verifying else None,
            publish_copied_bytes=publishing[0] if publishing else None,
            publish_bytes_total=publishing[1] if publishing else None,
            publish_rate_bytes_per_s=publishing[2] if publishing else None,
            publish_waiting_since=iso_utc(publish_waits[0]) if publish_waits else None,
            publish_waiting_s=(
                round((now - publish_waits[0]).total_seconds(), 1) if publish_waits else None
            ),
            publish_waiting_parts=publish_waits[1] if publish_waits else None,
            tuning=progress.tuning if progress else None,
            staged_bytes=(
                staged_bytes if staged_bytes is not None or not _staging(progress) else 0
            ),
            staging_rate_bytes_per_s=staging_rate if _staging(progress) else None,
            runs_as=runs_as,
            reason=(
                await self._front_reason(description, runs_as, memo.get("destination", ""))
                if state == TransferState.queued and runs_as
                # waiting for an endpoint or link limit (staccato.workflows.governor)
                else await self._limit_reason(progress)
                if state == TransferState.queued and progress
                # its worker did not answer: what its governor last told it (tester
                # t68 5b: the reason line dropped)
                else await self._told_queued(handle)
                if state == TransferState.queued and status == WorkflowExecutionStatus.RUNNING
                else capacity_wait
                if state == TransferState.running
                else None
            ),
            up_to_date=True if progress and progress.up_to_date else None,
            sync_level=progress.up_to_date if progress else None,
            read_from=progress.read_from if progress else None,
            read_from_reason=progress.read_from_reason if progress else None,
            cleanup=cleanup,
            # failed after it published (patch failed-after-publish-memo): no clean-up
            # touched the object the run put at the destination
            published=(
                True if state == TransferState.failed and memo.get("published") is True else None
            ),
            # what its clean-up left, while it may still be there: a local temp file
            # deleted by hand, or by a later transfer, is no longer said (tester T14)
            left_behind=shown_left_behind(
                memo["left_behind"]
                if isinstance(memo.get("left_behind"), str)
                # terminated: no clean-up ran and no memo says what (tester F4)
                else terminated_left_behind
            )
            or (
                unanswered_prepare(memo.get("destination", ""), error)
                if state in (TransferState.failed, TransferState.cancelled)
                else None
            ),
            tuner_chooses=_tuner_chooses(memo, progress, state, bytes_total, begun=begun),
            untuned=_untuned(memo),
            streams_unknown=True
            if _tuner_chooses(memo, None, state, bytes_total) and begun
            else None,
            cancel_requested=cancel_requested,
            cancel_requested_at=(
                parent_cancel[1]
                if parent_cancel is not None
                else await cancel_requested_at(self.temporal, handle.id, description.run_id)
                if cancel_requested
                else None
            ),
            idle_since=idle_since,
            stalled_step=stalled_step,
            stalled_heartbeat=stalled_heartbeat if stalled_step else None,
            restarted=(
                restarted_text(
                    memo.get("destination", ""),
                    progress.sessions_lost,
                    progress.session_lost_reason,
                )
                if progress is not None
                else None
            ),
        )

    async def _terminated_left(
        self, workflow_id: str, description: Any, destination: object
    ) -> str | None:
        """The ``left_behind`` of a transfer's run (``description``) to ``destination``
        (a canonical URL) that was terminated: no clean-up ran and no memo says what
        was left. A file or SFTP session's temp file follows from the run's session key
        (:func:`staccato.leftovers.terminated_left`); an S3 multipart upload's id is
        only in the run's history, as its last ``prepare``'s result (an upload the run
        completed or aborted since is not named): read here, at most
        :data:`TERMINATED_EVENTS` events (tester t68 1a: the upload stayed and
        ``status`` said nothing of it). None when nothing is known to be left (or the
        history could not be read)."""
        in_a_dataset = _in_a_dataset(description)
        if not isinstance(destination, str) or not destination.startswith("s3://"):
            return terminated_left(
                destination, workflow_id, description.run_id, in_a_dataset=in_a_dataset
            )
        handle = self.temporal.get_workflow_handle(workflow_id, run_id=description.run_id)
        prepares: set[int] = set()
        session: WriteSession | None = None
        try:
            count = 0
            async for event in handle.fetch_history_events():
                count += 1
                if count > TERMINATED_EVENTS:
                    return None
                if event.HasField("activity_task_scheduled_event_attributes"):
                    name = event.activity_task_scheduled_event_attributes.activity_type.name
                    if name == "prepare":
                        prepares.add(event.event_id)
                    elif name in ("publish", "cleanup") and session is not None:
                        # publish completes the upload, cleanup aborts it: only one
                        # opened after is named (a completed publish or abort with it)
                        prepares.add(-event.event_id)
                elif event.HasField("marker_recorded_event_attributes"):
                    # a local activity's attempt (prepare's first): its type in the
                    # marker's data, its result beside it
                    found = await self._local_prepare(event.marker_recorded_event_attributes)
                    if found is not None:
                        session = found
                elif event.HasField("activity_task_completed_event_attributes"):
                    done = event.activity_task_completed_event_attributes
                    if done.scheduled_event_id in prepares:
                        (prepared,) = await self.temporal.data_converter.decode(
                            done.result.payloads, [PrepareResult]
                        )
                        session = prepared.session if isinstance(prepared, PrepareResult) else None
                    elif -done.scheduled_event_id in prepares:
                        session = None
        except Exception:  # noqa: BLE001 - best effort: nothing named
            return None
        if session is None:
            return None
        from staccato.workflows.failures import left_behind

        return TERMINATED_LEAD + left_behind(session, in_a_dataset)

    async def _local_prepare(self, marker: Any) -> WriteSession | None:
        """The write session a local ``prepare`` attempt's marker (``marker``: a
        ``MarkerRecorded`` event's attributes) holds as its result; None for another
        marker, a failed attempt, or one that does not decode."""
        data = marker.details.get("data")
        result = marker.details.get("result")
        if data is None or result is None or not result.payloads:
            return None
        try:
            described = json.loads(data.payloads[0].data)
        except (ValueError, IndexError):
            return None
        if not isinstance(described, dict) or described.get("activity_type") != "prepare":
            return None
        (prepared,) = await self.temporal.data_converter.decode(result.payloads, [PrepareResult])
        return prepared.session if isinstance(prepared, PrepareResult) else None

    async def _consistent(
        self, handle: WorkflowHandle[Any, Any], description: Any, progress: Progress
    ) -> tuple[Progress, set[str]]:
        """The ``progress`` query's answer, and the activities of ``description`` (the
        run described before the query) that had ended by then: ``status`` adds the
        streams' heartbeats to the segments the query counts committed, and a stream
        that ended between the describe and the query counted twice (its segment
        committed, its last heartbeat still pending). After a crash, with a worker
        slow to answer, ``bytes_done`` read 200 MiB (100 %) and then 142.5 MiB
        (tester65 MED-2).

        The run is described again after the query: an activity pending before and
        not after ended meanwhile, and its bytes are the query's (committed, or kept
        in ``partial`` and ``durable``), not its heartbeat's. That holds when no
        activity ended between the describe just before the query and the one after
        it (else one that ended after the query counts nowhere); when one did, the
        query is asked again, at most :data:`CONSISTENT_TRIES` times. A describe or
        query that fails keeps what was read.

        Returns:
            (the query's answer, the ids of ``description``'s pending activities whose
            heartbeats do not count).
        """
        first = before = _activity_ids(description)
        ended: set[str] = set()
        for tries in range(CONSISTENT_TRIES):
            try:
                after = await handle.describe()
            except RPCError:
                break
            now = _activity_ids(after)
            ended = first - now
            if before <= now or after.status != WorkflowExecutionStatus.RUNNING:
                break  # none ended between the describe before the query and this one
            if tries + 1 == CONSISTENT_TRIES:
                break
            try:
                # asked only once settled (staccato.settled_query): else what was read
                again = await settled_query(
                    handle, PROGRESS_QUERY, result_type=Progress, description=after
                )
            except Exception:  # noqa: BLE001 - the last answer and what ended before it
                break
            before, progress = now, again
        return progress, ended

    async def _answered(
        self, handle: WorkflowHandle[Any, Any], description: Any
    ) -> tuple[Progress | None, Unanswered]:
        """The running run's ``progress`` query (``handle``, ``description``: its
        description), asked only when a worker may answer (:meth:`may_answer`) and for
        at most min(5 s, ``STACCATO_CLIENT_WAIT_S``); None when none answers, with why
        (an :class:`Unanswered` of this call's own: ``list`` reads several runs'
        statuses at once on one client, and what one run's query met must not be said
        of another's). A closed run is not queried: a query replays its whole history
        on a worker (seconds, or the query's timeout when none can); its state and
        failure come from Temporal."""
        if _never_begun(description):
            if await self.may_answer(description.task_queue):
                # a worker polls and has not taken the first workflow task yet (a busy
                # machine: seconds): not "no worker answers" (CI, at load 10)
                task = pending_task(description)
                unsettled = NotSettledError(
                    description.id, task[0] if task else None, bool(task and task[1]), description
                )
                return None, Unanswered(True, description, None, unsettled.reason)
            return None, Unanswered()
        if not await self.may_answer(description.task_queue):
            return None, Unanswered()
        try:
            # not while the run has a workflow task its worker has not taken: see
            # staccato.settled_query and docs/architecture.md "Queries and replay"
            progress = await settled_query(
                handle, PROGRESS_QUERY, result_type=Progress, description=description
            )
            return progress, Unanswered()
        except NotSettledError as err:
            return None, Unanswered(True, err.description, None, err.reason)
        except WorkflowQueryFailedError as err:
            # a worker took the query and failed it: it cannot run this run's code
            return None, Unanswered(True, None, str(err), None)
        except Exception:  # no worker polling: fall back to visibility
            # a worker polls the queue (or it could not be described) and still did
            # not answer: say so, not "no worker" (a worker saturated with streams)
            later = None
            with contextlib.suppress(RPCError):
                later = await handle.describe()
            return None, Unanswered(True, later, None, None)

    async def _is_paused(self, transfer: str) -> bool:
        """Whether ``transfer``'s latest run is paused (its state search attribute);
        False when it cannot be described."""
        try:
            description = await self.temporal.get_workflow_handle(transfer).describe()
        except RPCError:
            return False
        return description.typed_search_attributes.get(sa.STATE) == TransferState.paused.value

    async def _front_reason(self, description: Any, runs_as: str, destination: str) -> str:
        """Why a front run is queued: the destination's transfer ``runs_as`` writes it,
        or transfers queued for it earlier run first (:func:`staccato.starts.queued_ahead`,
        the one rule of their order)."""
        ahead = await queued_ahead(self.temporal, destination, place=queue_place(description))
        if not ahead:
            if await self._is_paused(runs_as):
                return (
                    f"destination busy: waiting for transfer {runs_as}, which is paused: "
                    "it holds the destination until it is resumed (`staccato resume "
                    f"{runs_as}`) and ends, or is cancelled"
                )
            return f"destination busy: waiting for transfer {runs_as}, which is writing it"
        more = f" and {len(ahead) - 1} more" if len(ahead) > 1 else ""
        return (
            f"destination busy: waiting for {ahead[0]}{more}, queued for it earlier, to "
            f"run first (as the destination's transfer {runs_as})"
        )

    async def _limit_reason(self, progress: Progress) -> str | None:
        """Why a transfer waits for a limit, with its place in line now (asked of the
        governor, :func:`~staccato.settled_query.settled_query`: at most
        :data:`~staccato.settled_query.SETTLE_S` for it to settle and 1.5 s for its
        answer); what the governor last told the transfer when it cannot answer, and
        that it did not (tester F2: 30 s, the query had no deadline, and no word why)."""
        if progress.queued_for and progress.queued_ticket:
            from staccato.workflows.governor import SLOT_QUERY

            wait_s = query_deadline_s(sticky_timeout_s=GOVERNOR_STICKY_S)
            try:
                view = await settled_query(
                    self.temporal.get_workflow_handle(governor_id(progress.queued_for)),
                    SLOT_QUERY,
                    progress.queued_ticket,
                    result_type=SlotView,
                    sticky_timeout_s=GOVERNOR_STICKY_S,
                )
                if view.reason:
                    return view.reason
            except NotSettledError as err:
                return _governor_unanswered(progress.queued_reason, f"{err.reason}, not asked")
            except (RPCError, WorkflowQueryFailedError):
                return _governor_unanswered(
                    progress.queued_reason, f"it did not answer within {wait_s:g} s"
                )
        return progress.queued_reason

    async def _told_queued(self, handle: WorkflowHandle[Any, Any]) -> str | None:
        """Why a running transfer waits for a limit, when its worker does not answer:
        the reason its governor last signalled it (``limit_queued``,
        :data:`~staccato.workflows.governor.LIMIT_QUEUED_SIGNAL`), read from the run's
        history newest first (no worker needed: the signal's input is an event of the
        run), with a word that it is the governor's last word; None when no such signal
        is among the newest :data:`TOLD_EVENTS` events (a front run's queue, a run not
        queued at a limit) or the history cannot be read. The transfer's state
        (``queued``) is the one it recorded, so the last such signal is the wait it is
        in: a grant moves the state on (``TransferWorkflow._acquire_slots``)."""
        from temporalio.api.enums.v1 import EventType

        from staccato.workflows.governor import LIMIT_QUEUED_SIGNAL

        events = await newest_events(self.temporal, handle.id, handle.run_id, TOLD_EVENTS)
        signalled = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
        try:
            for event in events or ():
                attrs = event.workflow_execution_signaled_event_attributes
                if event.event_type != signalled or attrs.signal_name != LIMIT_QUEUED_SIGNAL:
                    continue
                (why,) = await self.temporal.data_converter.decode(attrs.input.payloads, [str])
                if not isinstance(why, str) or not why:
                    return None
                return f"{why} (as its governor last said; its worker did not answer now)"
        except Exception:  # noqa: BLE001 - not known: no reason line, as before
            return None
        return None

    async def _front_checkpoint(self, description: Any) -> FrontCheckpoint | None:
        """A running front run's last ``FrontCheckpoint`` (its activity's heartbeat)."""
        for pending in description.raw_description.pending_activities:
            if not pending.heartbeat_details.payloads:
                continue
            try:
                (details,) = await self.temporal.data_converter.decode(
                    pending.heartbeat_details.payloads, [FrontCheckpoint]
                )
            except Exception:
                continue
            if isinstance(details, FrontCheckpoint):
                return details
        return None

    async def _front_status(
        self, front: str, canonical: str, description: Any
    ) -> TransferStatus | None:
        """A running front run's status: the canonical run's live progress under the
        front's id (``runs_as`` names it), or ``queued`` with the reason while it waits
        for a busy destination; None before its activity has reported anything."""
        details = await self._front_checkpoint(description)
        if details is not None:
            if details.run_id:
                try:
                    inner = await self.status(details.transfer_id, run_id=details.run_id)
                except TransferNotFoundError:
                    return None
                return inner.model_copy(update={"id": front, "runs_as": canonical})
            if details.waiting_for:
                memo = await description.memo()
                return _waiting_status(
                    front,
                    memo,
                    TransferState.queued,
                    runs_as=canonical,
                    reason=details.waiting_for,
                )
        return None

    async def _ended_front_run(
        self, front: str, description: Any, canonical: str
    ) -> TransferStatus | None:
        """The status of the run of the destination's transfer ``canonical`` that the
        front run ``front`` (``description``: it has ended) started: the one whose memo
        ``started_by`` names the front's run, as the front's activity finds it
        (:mod:`staccato.activities.front`). None when there is none: the front ended
        before it started one, or attached to a run someone else started. One
        visibility list (at most :data:`_FRONT_RUNS_LISTED` runs started since the
        front) and one status."""
        started_by = f"{front}/{description.run_id}"
        since = description.start_time.astimezone(UTC).isoformat(timespec="microseconds")
        query = f"WorkflowId = '{canonical}' AND StartTime >= '{since}'"
        try:
            async for execution in self.temporal.list_workflows(query, limit=_FRONT_RUNS_LISTED):
                if dict(await execution.memo()).get(STARTED_BY) == started_by:
                    return await self.status(canonical, run_id=execution.run_id)
        except (RPCError, TransferNotFoundError):
            return None
        return None

    async def retry_of(
        self, pending: Any, where: str | None = None
    ) -> tuple[str, str | None] | None:
        """A pending activity's retry (``pending``, a ``PendingActivityInfo``) as
        ``status`` says it: ``attempt N: <its last failure>`` and when the next attempt
        is due (ISO 8601, UTC; None: it runs now, or its time has passed and it waits
        for a worker to take it: a dead worker's run showed a time in the past); None
        for a first attempt or one with no failure. Read without a worker (a transfer's
        and a fan-out group's). ``where``: the endpoints the activity talks to, named
        when its last attempt was timed out for want of heartbeats (Temporal says only
        "activity Heartbeat timeout")."""
        if pending.attempt <= 1 or not pending.HasField("last_failure"):
            return None
        message = await self._message(pending)
        if _heartbeat_timed_out(pending.last_failure):
            # canonical URLs (spaces percent-encoded): " and " only joins them
            servers = [u for u in (where or "").split(" and ") if u and not u.startswith("file:")]
            frozen = "its worker process was frozen, overloaded or killed"
            gone = await self._worker_gone(pending)
            if gone is not None:
                # a fact, said first: the worker that ran it polls no more (tester65
                # T9 read a killed `up`'s timeout blamed on its S3 endpoint first)
                cause = (
                    f"its worker ({gone}) no longer polls Temporal (killed, stopped or "
                    "frozen), so the endpoints are not known to be at fault"
                )
            elif servers or not where:
                on = f" on {' and '.join(servers)}" if servers else ""
                cause = (
                    f"it was blocked{on} (a server that accepts connections and does not "
                    f"answer), or {frozen}"
                )
            else:  # local files only (tester59 T8 read them blamed as hung servers)
                cause = frozen
            message = (
                f"the last attempt of {pending.activity_type.name} sent no heartbeat for its "
                f"heartbeat timeout: {cause}; Temporal runs it again"
            )
        retried = f"attempt {pending.attempt}: {message}"
        if pending.HasField("next_attempt_schedule_time"):
            at = pending.next_attempt_schedule_time.ToDatetime(tzinfo=UTC)
        elif pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED:
            at = pending.scheduled_time.ToDatetime(tzinfo=UTC)
        else:
            at = None  # the attempt is running now
        if at is not None and at <= datetime.now(UTC):
            at = None  # due already: it starts when a worker takes it
        return retried, at.isoformat(timespec="seconds") if at else None

    async def _worker_gone(self, pending: Any) -> str | None:
        """The identity of the worker that ran the last attempt of the pending activity
        ``pending`` (a ``PendingActivityInfo``) when Temporal lists it no more among the
        pollers of the activity's task queue (it was killed or stopped, or Temporal
        restarted since and it has not polled again); None when it is listed (a
        worker Temporal lists for minutes after its last poll), or the identity, the
        task queue or the listing is not known."""
        identity = pending.last_worker_identity
        options = pending.activity_options if pending.HasField("activity_options") else None
        if not identity or options is None or not options.task_queue.name:
            return None
        try:
            identities = await self._poller_identities(options.task_queue.name, activities=True)
        except Exception:  # not known: the wording that names both causes
            return None
        if identity in identities:
            return None
        return str(identity)

    async def _message(self, pending: Any) -> str:
        """A pending activity's last failure message, decrypted when the payload codec
        encrypted it (the raw message then reads "Encoded failure")."""
        failure = type(pending.last_failure)()
        failure.CopyFrom(pending.last_failure)
        try:
            decoded = await self.temporal.data_converter.decode_failure(failure)
        except Exception:  # a key this client lacks: show what Temporal holds
            return str(pending.last_failure.message)
        message = str(getattr(decoded, "message", None) or decoded)
        if _POOL_BROKEN in message:  # concurrent.futures' BrokenProcessPool, for people
            return (
                "the worker process running it died (killed, or out of memory); the worker "
                "restarted its processes and Temporal runs the step again"
            )
        return message

    async def list(
        self, *, state: TransferState | None = None, limit: int = 50
    ) -> list[TransferStatus]:
        """Recent transfers, newest first by start time (exactly ``limit`` when that
        many exist), optionally in one state (:func:`staccato.listing.list_rows`).

        One row per workflow id: a destination's transfer (its latest run; with
        ``state`` only when that run is in the state, as ``status`` shows it: a
        destination whose earlier run failed and latest completed is listed under
        ``completed``, not ``failed``), or a front run
        (a Schedule's run, a start under another id). Every ``TransferWorkflow`` in the
        namespace is considered; one whose status cannot be read (odd input, memo or
        id made by someone else) is skipped, never an error. A closed run is never
        queried (see :meth:`status`), so no row waits for a worker.
        """
        from staccato.listing import list_rows

        rows = await list_rows(
            self,
            types=(TRANSFER_TYPE,),
            state=None if state is None else state.value,
            limit=limit,
        )
        return [row for row in rows if isinstance(row, TransferStatus)]

    async def cancel(self, transfer: str) -> str | bool:
        """Cancel a transfer (or a dataset): streams stop, temp data is removed, the
        destination is untouched.

        A transfer that failed already and whose run only removes its partial data
        (state ``failed``, ``cleanup`` set) is not cancelled but ends failed at once:
        the cancel stops that clean-up, and the run records what it left
        (``left_behind``). This waits (``_CANCEL_CLEANUP_WAIT_S`` s at most) for that
        run to end.

        Returns:
            True for a plain cancel request; False when it was cancelled already
            (idempotent, as :meth:`pause` and :meth:`resume`: ``if await
            client.cancel(id):`` is "this call cancelled it"); for a failed
            transfer's clean-up, what happened (stopped, and what was left; or
            removed meanwhile), a non-empty string.

        Raises:
            TransferNotFoundError: no such workflow.
            RunEndedError: it ended otherwise (completed, failed: the message says
                which; ``.state``).
            StaccatoError: it is not Staccato's (another workflow type).
        """
        handle = await self._handle(transfer)
        try:
            await self._require(
                handle,
                kinds=(TRANSFER_TYPE, DATASET_TYPE, GROUP_TYPE),
                named=transfer,
                call="cancel",
            )
        except RunEndedError as err:
            if err.state == TransferState.cancelled:
                return False
            raise
        description = await handle.describe()
        failed = (
            description.workflow_type == TRANSFER_TYPE
            and description.typed_search_attributes.get(sa.STATE) == TransferState.failed.value
        )
        if not failed and cancel_requested_of(description):
            return False  # asked already, not taken effect yet (tester59 T10: True twice)
        await handle.cancel()
        if not failed:
            return True
        # a failed run removing its partial data: the cancel stops that; wait for its end
        try:
            await asyncio.wait_for(handle.result(), _CANCEL_CLEANUP_WAIT_S)
        except TimeoutError:
            return (
                f"the failed transfer {handle.id} was asked to stop removing its partial "
                "data; it has not ended yet (no worker running it?): `staccato status "
                f"{handle.id}` says what it leaves once it ends"
            )
        except Exception:  # noqa: BLE001 - it ends failed (that is its outcome)
            pass
        ended = await self.status(handle.id)
        if ended.left_behind:
            return (
                f"the failed transfer {handle.id} stopped removing its partial data and "
                f"ended failed; left behind: {ended.left_behind}"
            )
        return (
            f"the failed transfer {handle.id} ended failed; its partial data was removed "
            "(nothing left behind)"
        )

    async def pause(self, transfer: str) -> bool:
        """Pause a running transfer (streams stop where they are); idempotent.

        Returns:
            True when it paused it, False when it was already paused.

        Raises:
            RunEndedError: the transfer has ended (the message says how; ``.state``).
            StaccatoError: the transfer cannot be paused (staging, in its verify or
                publish step: the message says which).
        """
        from staccato.workflows import TransferWorkflow

        return await self._update(transfer, TransferWorkflow.pause, already=_ALREADY_PAUSED)

    async def resume(self, transfer: str) -> bool:
        """Resume a paused transfer; idempotent.

        Returns:
            True when it resumed it, False when it was already running.

        Raises:
            RunEndedError: the transfer has ended (the message says how; ``.state``).
            StaccatoError: the transfer is neither paused nor running (queued,
                scheduled: the message says which).
        """
        from staccato.workflows import TransferWorkflow

        return await self._update(transfer, TransferWorkflow.resume, already=_ALREADY_RUNNING)

    async def _require(
        self,
        handle: WorkflowHandle[Any, Any],
        *,
        kinds: tuple[str, ...] = (TRANSFER_TYPE,),
        named: str | None = None,
        call: str,
    ) -> None:
        """Check that ``handle``'s run is one of ``kinds`` (workflow types) and running
        (``call``: the method asked, which a refusal names).

        Raises:
            TransferNotFoundError: no such workflow.
            StaccatoError: another workflow type, or the run is not running.
        """
        try:
            description = await handle.describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                # the name the user gave (a destination's id is not what they typed)
                raise TransferNotFoundError(f"no transfer {named or handle.id!r}") from None
            raise
        require_type(handle.id, description, kinds, call=call)
        if description.status != WorkflowExecutionStatus.RUNNING:
            state = ended_state(
                description.status, description.typed_search_attributes.get(sa.STATE)
            )
            kind = {DATASET_TYPE: "dataset", GROUP_TYPE: "group"}.get(
                description.workflow_type, "transfer"
            )
            shown = state.value
            if kind != "transfer" and state == TransferState.completed:
                # a dataset or group that completed with errors says so in its state
                # search attribute (its workflow completed either way)
                if description.typed_search_attributes.get(sa.STATE) == "completed_with_errors":
                    shown = "completed_with_errors"
            raise RunEndedError(f"{kind} {handle.id} is already {shown}", state)

    async def _update(self, transfer: str, update: Any, *, already: str) -> bool:
        """Send ``update`` to the transfer (or the one a front run runs as); False when
        the workflow refused it with ``already`` (what it asks for already holds)."""
        call = getattr(update, "__name__", "update")
        handle = await self._handle(transfer)
        await self._require(handle, named=transfer, call=call)
        # a front run pauses and resumes the transfer it runs as
        description = await handle.describe()
        starts_at = _delayed_start(description)
        if starts_at is not None:  # no worker runs it before then (not even a signal:
            # one would start it at once)
            raise StaccatoError(_scheduled_not_running(transfer, call, starts_at))
        runs_as = _runs_as(handle.id, await description.memo())
        if runs_as is not None:
            details = await self._front_checkpoint(description)
            if details is None or not details.run_id:
                raise StaccatoError(_front_not_running(handle.id, update, details))
            handle = self.temporal.get_workflow_handle(runs_as, run_id=details.run_id)
            await self._require(handle, call=call)
        wait_s = settings.current().client_wait_s
        try:
            # bounded: an update to a run no worker polls for would wait for minutes
            await handle.execute_update(update, rpc_timeout=timedelta(seconds=wait_s))
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            message = getattr(cause, "message", None) or str(cause)
            if message == already:
                return False
            raise StaccatoError(message) from None
        except RPCError as err:
            # the run closed (it failed, completed or was cancelled) between the check
            # above and the update: Temporal aborts the update ("aborted by closing
            # workflow", NOT_FOUND)
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            await self._require(handle, call=call)
            raise
        except WorkflowUpdateRPCTimeoutOrCancelledError:
            # an update no worker accepted is dropped (a worker that comes back later
            # never sees it): the same request goes as a signal, which Temporal keeps
            # in the transfer's history until a worker runs it
            from staccato.workflows.transfer import CONTROL_SIGNAL

            await handle.signal(CONTROL_SIGNAL, call)
            raise StaccatoError(
                f"no worker took the {call} of transfer {handle.id} within "
                f"{wait_s:g} s (STACCATO_CLIENT_WAIT_S): is a worker polling task queue "
                f"{description.task_queue!r}? (`staccato up --detach` or `staccato worker`); "
                f"the {call} is recorded and applies when a worker picks the transfer up "
                f"(unless it is no longer {_NEEDS[call]} by then): `staccato status "
                f"{transfer}` tells"
            ) from None
        return True

    async def pollers(self, task_queue: str | None = None) -> int:
        """How many workers recently polled ``task_queue`` (default: this client's) for
        workflow tasks (for "is anyone there?" hints). Temporal lists a poller for a few
        minutes after its last poll, so a worker that just died still counts."""
        return len(await self._poller_identities(task_queue or self.task_queue))

    async def _poller_identities(
        self, task_queue: str, activities: bool = False
    ) -> builtins.list[str]:
        """The identities of the workers Temporal lists as recently polling
        ``task_queue`` for workflow tasks (``activities``: for activity tasks); one
        DescribeTaskQueue, waited for :func:`query_wait_s` seconds.

        Raises:
            RPCError: Temporal did not answer, or refused.
        """
        from temporalio.api.enums.v1 import TaskQueueType
        from temporalio.api.taskqueue.v1 import TaskQueue
        from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

        response = await self.temporal.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=self.temporal.namespace,
                task_queue=TaskQueue(name=task_queue),
                task_queue_type=(
                    TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY
                    if activities
                    else TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW
                ),
            ),
            timeout=timedelta(seconds=query_wait_s()),
        )
        return [poller.identity for poller in response.pollers]

    async def may_answer(self, task_queue: str) -> bool:
        """Whether a query to a workflow on ``task_queue`` can be answered: False only
        when Temporal lists no worker polling it, so a ``status`` of a transfer no worker
        runs answers from visibility at once instead of after the query's 5 s timeout.
        True when the task queue cannot be described (the query then tells)."""
        try:
            return await self.pollers(task_queue) > 0
        except Exception:
            return True

    async def follow(
        self, transfer: str, *, interval_s: float = 0.5
    ) -> AsyncIterator[TransferStatus]:
        """Yield the status every ``interval_s`` seconds until the transfer ends
        (the last status yielded is the final one, yielded as soon as it ends; an
        ended state is yielded once: a failed run still removing its partial data in
        the clean-up's first attempt is not yielded, its final status is).

        Follows the run this client submitted under that id if any (see
        :meth:`submitted_run`), else the latest run.

        Raises (when iterated):
            TransferNotFoundError: no such transfer.
            NotATransferError: ``transfer`` is a dataset or fan-out group id (the
                message names what follows one:
                :func:`staccato.dataset_client.follow_dataset`,
                :func:`staccato.fanout_client.follow_group`), or another workflow's.
        """
        run_id = self.submitted_run(transfer)
        handle, _ = await self._described(transfer, run_id, call="follow")
        ended = asyncio.ensure_future(handle.result())
        ended.add_done_callback(lambda task: task.cancelled() or task.exception())
        asked: asyncio.Future[TransferStatus] | None = None
        try:
            while True:
                if _completed(ended):
                    # completed: the result says it all (no query replaying the history)
                    yield _completed_status(handle.id, ended.result())
                    return
                # a status takes a describe and a query that a busy worker may answer
                # late: the run's end, seen meanwhile, is not kept waiting behind it;
                # its query waits FOLLOW_QUERY_S, so a dead worker is said promptly
                # a status that times out at Temporal is asked again a while (an
                # overloaded server: the run goes on; tester65 T12)
                asked = following(
                    read_through_timeouts(lambda: self.status(handle.id, run_id=run_id))
                )
                await asyncio.wait({asked, ended}, return_when=asyncio.FIRST_COMPLETED)
                if _completed(ended):
                    continue
                if ended.done() and not ended.cancelled() and rpc_timed_out(ended.exception()):
                    # the wait for its result timed out at Temporal: waited for again
                    # (else each wait below would return at once)
                    ended = asyncio.ensure_future(handle.result())
                    ended.add_done_callback(lambda task: task.cancelled() or task.exception())
                current = await asked
                if current.state in _TERMINAL and not final(current):
                    # failed, its clean-up in its first attempt: the final status
                    # comes soon; yielded once, as that (it was yielded twice, the
                    # same state, a tester's "['failed', 'failed']")
                    await asyncio.wait({ended}, timeout=interval_s)
                    continue
                yield current
                if final(current):
                    return
                await asyncio.wait({ended}, timeout=interval_s)
        finally:
            ended.cancel()
            if asked is not None:
                asked.cancel()

    async def outcome(self, transfer: str) -> TransferStatus:
        """The transfer's final status, once it ends, asking nothing while it runs
        (what :meth:`follow` yields last, without its status every ``interval_s``:
        a completed run's status is its result; a failed or cancelled one's is asked
        once, at the end).

        Follows the run this client submitted under that id if any (see
        :meth:`submitted_run`), else the latest run.

        Raises:
            TransferNotFoundError: no such transfer.
            NotATransferError: ``transfer`` is a dataset or fan-out group id (the
                message names the call that waits for one:
                :func:`staccato.dataset_client.await_dataset_end`,
                :meth:`wait_group`), or another workflow's.
        """
        run_id = self.submitted_run(transfer)
        handle, _ = await self._described(transfer, run_id, call="outcome")
        try:
            early = await self._result_or_failed(handle)
        except Exception:  # failed, cancelled, or the wait broke: the status says which
            return await self.status(handle.id, run_id=run_id)
        if isinstance(early, TransferStatus):
            return early
        return _completed_status(handle.id, early)

    async def wait(self, transfer: str) -> TransferResult:
        """Wait for the transfer to end.

        Waits for the run this client submitted under that id if any (see
        :meth:`submitted_run`), else for the latest run.

        Single transfers only: a dataset id (``staccato-dataset-...``) or a fan-out
        group id (``staccato-group-...``) is refused at once, whatever its state, with
        the call that waits for it (:func:`staccato.dataset_client.await_dataset_end`,
        :meth:`wait_group`); they end with a status of their own (counts of files, a
        row per destination), not a :class:`TransferResult`, so this does not
        dispatch to them.

        Raises:
            TransferNotFoundError: no such transfer (id or destination).
            NotATransferError: a dataset or fan-out group id, or another workflow's.
            TransferCancelledError: it was cancelled (a TransferFailedError; the
                message names the transfer and how far it got: :func:`cancelled_text`).
            TransferFailedError: it failed (message = reason).
        """
        run_id = self.submitted_run(transfer)
        handle, _ = await self._described(transfer, run_id, call="wait")
        try:
            ended = await self._result_or_failed(handle, follow_runs=False)
        except WorkflowFailureError:
            current = await self.status(handle.id, run_id=run_id)
            if current.state == TransferState.cancelled:
                raise TransferCancelledError(cancelled_text(current), current.state) from None
            raise TransferFailedError(current.error or "failed", current.state) from None
        if isinstance(ended, TransferStatus):  # failed; its clean-up goes on
            raise TransferFailedError(ended.error or "failed", ended.state)
        return ended

    async def _result_or_failed(
        self, handle: WorkflowHandle[Any, Any], *, follow_runs: bool = True
    ) -> TransferResult | TransferStatus:
        """The run's result once it completes, or its status once it has failed while
        it still runs to remove its partial data and that clean-up's first attempt
        failed (state ``failed`` in its search attribute, read by a describe every
        :data:`_FAILED_POLL_S` seconds, then its status: :func:`final`).

        Raises:
            WorkflowFailureError: the run ended failed or cancelled.
        """
        result = asyncio.ensure_future(handle.result(follow_runs=follow_runs))
        failed = asyncio.ensure_future(self._failed_while_running(handle))
        try:
            await asyncio.wait({result, failed}, return_when=asyncio.FIRST_COMPLETED)
            if result.done() or not failed.done() or failed.exception() is not None:
                return await result  # type: ignore[no-any-return]
            return failed.result()
        finally:
            for task in (result, failed):
                if not task.done():
                    task.cancel()
            await asyncio.gather(result, failed, return_exceptions=True)

    async def _failed_while_running(self, handle: WorkflowHandle[Any, Any]) -> TransferStatus:
        """Wait until the run ``handle`` names records state ``failed`` while it
        still runs and its status is :func:`final` (the clean-up's first attempt
        failed: it goes on in the run); that status."""
        while True:
            description = await handle.describe()
            if description.status != WorkflowExecutionStatus.RUNNING:
                await asyncio.Event().wait()  # ended: the result tells
            if description.typed_search_attributes.get(sa.STATE) == TransferState.failed.value:
                found = await self._status(handle, description)
                if found.state == TransferState.failed and final(found):
                    return found
            await asyncio.sleep(_FAILED_POLL_S)


_STATES = {state.value for state in TransferState}
#: seconds between two looks (a describe each) for a run that has failed but still
#: removes its partial data (:meth:`StaccatoClient._result_or_failed`)
_FAILED_POLL_S = 1.0


#: phases of a transfer before its copy (a tuned one's optimizer has not chosen yet)
_BEFORE_COPY = frozenset({"scheduled", "queued", "stat", "sync-check", "look-up"})


def _local_copy(memo: Any) -> bool:
    """Whether a run's memo names a file -> file copy (never tuned); False when its
    URLs are missing or not valid."""
    try:
        return not tuned_link(link_of(memo.get("source", ""), memo.get("destination", "")))
    except InvalidURLError:
        return False


def _untuned(memo: Any) -> str | None:
    """Why a run's start memo says it is not tuned (``untuned``: ``max_rate``, a
    rate-capped copy, :func:`staccato.run_fields.rate_capped_untuned`); None when it
    says nothing (tuned, given ``--streams``/``--chunk-size``, or older runs)."""
    value = memo.get("untuned")
    return value if isinstance(value, str) else None


def _tuner_chooses(
    memo: Any,
    progress: Progress | None,
    state: TransferState,
    size: int | None,
    *,
    begun: bool = False,
) -> bool | None:
    """True for a tuned transfer whose optimizer has not chosen yet: asked for (its
    start memo, or the ``progress`` query), nothing chosen, not begun copying (``begun``:
    with no ``progress``, its streams have heartbeated or moved bytes), not ended, and
    not too small to be tuned (:data:`staccato.models.MIN_TUNED_BYTES`), nor a local
    copy, which is never tuned (:func:`staccato.links.tuned_link`; its progress still
    says ``tuned``: the request asked, the worker's recall turned it off)."""
    asked = bool(memo.get("tuning")) or (progress is not None and progress.tuned)
    if asked and _local_copy(memo):
        return None
    waiting = (progress is None and not begun) or (
        progress is not None and progress.tuning is None and progress.phase in _BEFORE_COPY
    )
    small = size is not None and size < MIN_TUNED_BYTES
    return True if asked and waiting and state not in _TERMINAL and not small else None


def cancelled_text(status: TransferStatus) -> str:
    """What a cancelled transfer's end says (``wait``'s
    :class:`~staccato.errors.TransferCancelledError`, ``cp``/``watch``'s last line):
    that it was cancelled, by a cancel request, and how far it had got (it said only
    "cancelled", and the CLI "cancelled: cancelled")."""
    total = units.size(status.bytes_total) if status.bytes_total is not None else "?"
    return (
        f"transfer {status.id} was cancelled (by a cancel request: `staccato cancel`, "
        f"Ctrl-C of its cp, or a cancel of its group or dataset) after "
        f"{units.size(status.bytes_done)} of {total}"
    )


#: how long ``cancel`` waits for a failed run, whose clean-up it stopped, to end (s)
_CANCEL_CLEANUP_WAIT_S = 30.0


def _heartbeat_timed_out(failure: Any) -> bool:
    """Whether a Temporal ``Failure`` (proto) is an activity's heartbeat timeout (itself,
    or as the cause of Temporal's "activity Heartbeat timeout" wrapper)."""
    from temporalio.api.enums.v1 import TimeoutType

    while failure is not None:
        if (
            failure.HasField("timeout_failure_info")
            and failure.timeout_failure_info.timeout_type == TimeoutType.TIMEOUT_TYPE_HEARTBEAT
        ):
            return True
        failure = failure.cause if failure.HasField("cause") else None
    return False


def _no_worker_note(
    description: Any,
    *,
    begun: bool,
    cancel_requested: bool,
    what: str = "transfer",
    polled: bool = False,
    later: Any = None,
    query_failure: str | None = None,
    unsettled: str | None = None,
) -> str:
    """What ``status`` says of a running transfer (``what``: or a fan-out ``"group"``)
    no worker answers for: a cancel that waits for a worker; a run that has not begun
    (its recorded state still scheduled: a delayed start, or one no worker has picked
    up) that starts then; else its last heartbeats as its progress. ``polled``: a
    worker polls the task queue but did not answer the progress query in time (busy,
    e.g. saturated with streams): said so, not "no worker"; ``later``: the run's
    description taken when the query went unanswered (the workflow task the query
    waited behind may have started after ``description`` was taken, or ended before
    ``later`` was: either shows it). ``query_failure``: a worker took the query and
    failed it (its message, cut to 300 characters): said first, as that worker cannot
    go on with the run either (a nondeterminism error: the worker runs workflow code
    that does not replay the run's history). ``unsettled``: the query was not sent,
    the run's worker has not taken (or finished) its latest workflow task
    (:class:`~staccato.settled_query.NotSettledError`'s reason): said, with the
    inline step that may hold a task taken."""
    if query_failure is not None:
        return (
            f"{QUERY_FAILED}: {query_failure[:300]}; a worker that fails to replay "
            f"the {what}'s history cannot go on with it either (a nondeterminism error: "
            f"run the workers on the release that started it); shown: the {what}'s "
            "last recorded state"
        )
    inline = None
    if polled:
        inline = _inline_step_since(later) or _inline_step_since(description)
    if unsettled is not None:
        hint = (
            f" (a first stat, prepare or check attempt may run inside it, waiting for "
            f"its endpoint for at most {LOCAL_ATTEMPT_TIMEOUT.total_seconds():g} s)"
            if inline is not None
            else ""
        )
        lead = (
            f"{WORKER_BUSY} or stopped: {unsettled}{hint}; it was not asked for "
            "progress meanwhile (a query now could replay events it has not handled)"
        )
        if cancel_requested:
            return f"{lead}: a cancel was requested; it takes effect when a worker polls"
        if not begun:
            return f"{lead}: the {what} has not begun; it starts when a worker takes it"
        return f"{lead}; shown: the {what}'s last recorded state"
    if inline is not None:
        # a worker runs the run's workflow task (a short step's first attempt, e.g. a
        # stat or prepare waiting for a hung endpoint): the query waits behind it. Not
        # "no worker answers" (a tester read that while the worker ran: T12)
        return (
            f"{WORKER_BUSY}: it runs a step of the {what} inside its workflow task since "
            f"{inline} (a first stat, prepare or check attempt, which waits for its "
            f"endpoint for at most {LOCAL_ATTEMPT_TIMEOUT.total_seconds():g} s before it "
            f"is retried as a regular activity) and did not answer within "
            f"{query_wait_s():g} s; shown: the {what}'s last recorded state"
        )
    queue = f"{NO_WORKER_ANSWERS} on task queue {description.task_queue!r}"
    if polled:
        queue += (
            f" within {query_wait_s():g} s, though one polled it lately (it may be busy, "
            "e.g. saturated with streams, or have just stopped)"
        )
    if cancel_requested:
        return f"{queue}: a cancel was requested; it takes effect when a worker polls"
    if not begun:
        at = _start_time(description)
        if at is not None:
            return f"{queue}: the {what} has not begun; it starts at {at} when a worker polls"
        return f"{queue}: the {what} has not begun; it starts when a worker polls"
    heartbeats = "the streams' last heartbeats" if what == "transfer" else "the last heartbeats"
    return f"{queue}: progress is {heartbeats}; the {what} goes on when a worker polls"


def _governor_unanswered(last_told: str | None, why: str) -> str:
    """A queued transfer's reason when its governor's worker did not answer the slot
    query (``why``): what the governor last told the transfer (``last_told``; its
    place in line may have changed since), and that it did not answer."""
    told = last_told or "waiting for a limit"
    return f"{told} (as its governor last said; the governor's worker did not answer now: {why})"


def _inline_step_since(description: Any) -> str | None:
    """When (ISO 8601, UTC, seconds) the workflow task a worker holds for the described
    run was first scheduled, while one is started and not completed (a local activity
    runs inside it: the worker heartbeats the task, which keeps its first scheduled
    time); None when none is, or the description does not say. A task scheduled and
    not started does not count, even one whose ``original_scheduled_time`` is older
    than its ``scheduled_time``: a dead worker's sticky task moved to the normal queue
    is one too."""
    task = pending_task(description)
    if task is None or not task[1] or task[0] is None:
        return None
    return task[0].strftime("%Y-%m-%dT%H:%M:%SZ")


def no_worker_note(
    description: Any, *, begun: bool, cancel_requested: bool, what: str = "transfer"
) -> str:
    """:func:`_no_worker_note`, for the other clients (a fan-out group's status)."""
    return _no_worker_note(description, begun=begun, cancel_requested=cancel_requested, what=what)


def cancel_requested_of(description: Any) -> bool:
    """Whether a cancel was asked of the described run while it runs and has not taken
    effect yet (a dead worker's run: until one polls): ``cancel_requested`` in
    ``status``, for a transfer, a front run queued for its destination and a group."""
    return bool(
        description.status == WorkflowExecutionStatus.RUNNING
        and description.raw_description.workflow_extended_info.cancel_requested
    )


#: the newest events of a running run's history :func:`cancel_requested_at` reads for
#: its cancel request (one page: a run adds few events once cancelled, a stream's
#: heartbeat timeout and its clean-up's steps)
CANCEL_EVENTS = 1000


async def cancel_requested_at(temporal: Client, workflow_id: str, run_id: str | None) -> str | None:
    """When (ISO 8601, UTC, as ``started_at``) a cancel was asked of the run ``workflow_id``
    (``run_id``; None: its latest): its ``WorkflowExecutionCancelRequested`` event,
    read from the run's history newest first, without a worker (its description says
    only that one was asked: :func:`cancel_requested_of`). None when no such event is
    among the newest :data:`CANCEL_EVENTS` events or the history cannot be read
    (within ``STACCATO_CLIENT_WAIT_S``): the status then says the cancel without its
    time, as before (tester69: a cancel waiting for a frozen worker showed ``running``
    and no word of when it was asked)."""
    from temporalio.api.enums.v1 import EventType

    asked = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED
    for event in await newest_events(temporal, workflow_id, run_id, CANCEL_EVENTS) or ():
        if event.event_type == asked:
            return iso_utc(event.event_time.ToDatetime(tzinfo=UTC))
    return None


async def newest_events(
    temporal: Client, workflow_id: str, run_id: str | None, count: int
) -> Sequence[Any] | None:
    """The newest ``count`` events of the run ``workflow_id`` (``run_id``; None: its
    latest), newest first (GetWorkflowExecutionHistoryReverse: no worker needed);
    None when the history cannot be read within ``STACCATO_CLIENT_WAIT_S``."""
    from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryReverseRequest

    request = GetWorkflowExecutionHistoryReverseRequest(
        namespace=temporal.namespace, maximum_page_size=count
    )
    request.execution.workflow_id = workflow_id
    if run_id:
        request.execution.run_id = run_id
    try:
        page = await temporal.workflow_service.get_workflow_execution_history_reverse(
            request, timeout=timedelta(seconds=settings.current().client_wait_s)
        )
    except Exception:  # noqa: BLE001 - not known: the caller says less, as before
        return None
    return list(page.history.events)


def _cleanup_note(where: str | None) -> str:
    """``status``' note of a failed run still removing its partial data: where that is."""
    return f"{where or 'the partial data'} is still being removed (the run ends once that is done)"


def start_time(not_before: datetime | timedelta, now: datetime) -> datetime:
    """When a start given ``not_before`` (a time, or a delay from ``now``) is due, as an
    aware UTC datetime, checked as ``submit --not-before`` is
    (:func:`staccato.quantities.check_start_time`).

    Raises:
        ValueError: in the past (also a negative delay: before, it started at once)
            or more than 30 days ahead; the message names ``not_before``.
        TypeError: neither a datetime nor a timedelta.
    """
    if isinstance(not_before, timedelta):
        shown = f"not_before (a delay of {not_before.total_seconds():g} s)"
        return check_start_time(now + not_before, now, shown)
    if isinstance(not_before, datetime):
        return check_start_time(not_before, now, f"not_before {not_before.isoformat()}")
    raise TypeError(
        f"not_before: expected a datetime (without tzinfo: local time) or a timedelta "
        f"(a delay from now), not {type(not_before).__name__} {not_before!r}"
    )


def final(status: TransferStatus) -> bool:
    """Whether ``status`` is a transfer's last word for a waiting client: it ended, or
    it failed and its run, still removing the partial data, either has nothing left
    to remove or saw the clean-up's first attempt fail (``last_retry_error``: its
    server may be down for long; the clean-up goes on in the run). A clean-up still in
    its first attempt is waited for, so that in the usual case a failed ``cp`` leaves
    no temp data behind when it exits."""
    if status.state not in _TERMINAL:
        return False
    return not (
        status.state == TransferState.failed
        and status.cleanup is not None
        and status.last_retry_error is None
    )


#: what concurrent.futures says when a worker's activity process died mid-call
_POOL_BROKEN = "process pool was terminated abruptly"


def _completed(ended: asyncio.Future[Any]) -> bool:
    """Whether the run's result (``handle.result()``) came back: it completed."""
    return ended.done() and not ended.cancelled() and ended.exception() is None


def _release_deferred() -> None:
    """Have PyO3 apply the reference releases it deferred (objects Temporal's native
    threads dropped without holding the GIL); PyO3 does so whenever Python calls into
    the native module. The call: ``raise_in_thread`` for thread id 0, which matches
    no thread (CPython's ``PyThreadState_SetAsyncExc`` then changes nothing)."""
    try:
        temporal_sdk_bridge.raise_in_thread(0, RuntimeError)
    except Exception:  # another SDK build: the collector's loop still bounds close()
        pass


def _staging(progress: Progress | None) -> bool:
    """Whether the transfer is in its ``staging`` phase (the source read into the cache)."""
    return progress is not None and progress.phase == "staging"


#: how a run that did not complete ends (a completed front run has its result)
_ENDED_NOT_COMPLETED = frozenset(
    {
        WorkflowExecutionStatus.FAILED,
        WorkflowExecutionStatus.CANCELED,
        WorkflowExecutionStatus.TERMINATED,
        WorkflowExecutionStatus.TIMED_OUT,
    }
)
#: runs of a destination's transfer started since a front run began that are looked
#: at for the one it started (:meth:`StaccatoClient._ended_front_run`)
_FRONT_RUNS_LISTED = 20


def _front_not_running(front: str, update: Any, details: FrontCheckpoint | None) -> str:
    """Why a pause or resume (``update``) of the front run ``front`` cannot be done:
    it has no copy of its own yet (``details``: its last checkpoint, None before its
    first). A front waiting behind the transfer writing its destination (``submit
    --if-busy wait``) holds no pause: unlike a transfer queued for an endpoint or link
    limit, which is its own run and leaves the queue when paused, it has nothing to
    pause until it runs as the destination's transfer."""
    action = getattr(update, "__name__", "pause")
    if details is not None and details.waiting_for:
        why = (
            f"it has no copy of its own to {action} until the one writing its "
            f"destination ends ({details.waiting_for})"
        )
    else:
        why = f"it has no copy of its own to {action} yet (it is starting)"
    return (
        f"cannot {action} transfer {front}: {why}; cancel it instead "
        f"(`staccato cancel {front}`), or {action} it once it runs (`staccato status "
        f"{front}` says when)"
    )


def _scheduled_not_running(transfer: str, action: str, starts_at: str) -> str:
    """Why a pause or resume (``action``) of ``transfer``, whose start is delayed
    until ``starts_at`` (``submit --not-before``), cannot be done."""
    if action == "resume":
        why = "it is not paused: it starts by itself then"
    else:
        why = (
            "nothing of it runs before then, so there is nothing to pause; to start it "
            f"later, cancel it (`staccato cancel {transfer}`) and submit it again with a "
            "later --not-before, or pause it once it runs"
        )
    return f"cannot {action} transfer {transfer}: it is scheduled to start at {starts_at}; {why}"


def _in_a_dataset(description: Any) -> bool:
    """Whether the described transfer run is a dataset's large file: its parent or
    root workflow has the datasets' id prefix (the workflow's own rule,
    ``staccato.workflows.transfer._in_a_dataset``, from its description)."""
    ups = (description.parent_id, description.root_id)
    return any(isinstance(up, str) and up.startswith(LOCK_ID_PREFIX) for up in ups)


def _ended_since(progress: Progress) -> bool:
    """Whether ``progress`` (a query's answer) says the run has reached its end: it
    completed or was cancelled (the last workflow task sets that state), or it failed
    and its clean-up is over (it ends once it released what it held)."""
    if progress.state in (TransferState.completed, TransferState.cancelled):
        return True
    return progress.state == TransferState.failed and progress.cleanup is None


def _runs_as(workflow_id: str, memo: Any) -> str | None:
    """The destination's transfer id a front run runs as (None for a canonical run,
    or a run whose memo names no valid destination)."""
    destination = memo.get("destination") if hasattr(memo, "get") else None
    if not isinstance(destination, str):
        return None
    try:
        canonical = transfer_id(destination)
    except InvalidURLError:
        return None
    return canonical if canonical != workflow_id else None


#: the transfer workflow's refusals (its update validators) of a pause of a paused
#: transfer and a resume of a running one: what was asked for already holds
_ALREADY_PAUSED = f"cannot pause a transfer that is {TransferState.paused.value}"
_ALREADY_RUNNING = f"cannot resume a transfer that is {TransferState.running.value}, not paused"
#: what a pause or resume sent as a signal needs to apply (the workflow ignores it
#: otherwise)
_NEEDS = {"pause": "running", "resume": "paused"}


#: how long a stream's last heartbeat counts as current when its activity has no
#: heartbeat timeout of its own (the transfer workflow's default)
_HEARTBEAT_CURRENT = timedelta(seconds=20)


#: the short steps whose attempt, a regular activity that heartbeats no details while
#: it runs (:func:`staccato.activities.liveness.heartbeating`), ``status`` shows as
#: waiting for its endpoint once it has run :data:`~staccato.models.RATE_CURRENT_S`
#: (:func:`step_waiting_since`)
WAITING_STEPS = frozenset({"stat", "prepare", "sync_check", "publish", "verify", "cleanup"})


def step_waiting_since(pending: Any, now: datetime) -> datetime | None:
    """When the attempt of the pending short step ``pending`` (a
    ``PendingActivityInfo`` of :data:`WAITING_STEPS`) started, if it has run
    :data:`~staccato.models.RATE_CURRENT_S` seconds or more by ``now`` without
    returning while its worker heartbeats (a heartbeat of this attempt: its process
    runs): such a step waits for its endpoint, a server that accepts connections and
    says nothing (a healthy stat or prepare takes milliseconds), the rule of the
    copy's stalled streams. None otherwise: another activity, one with heartbeat
    details (a verify that says when it last heard from the destination: its own
    rule), an attempt not running (waiting for a worker or its retry), or none of
    its heartbeats yet (a worker process frozen from the start: its heartbeat timeout
    then says so), or one scheduled with a start-to-close timeout above the short
    steps' (:data:`~staccato.workflows.calls.SHORT_TIMEOUT`: a sync check that reads
    the data, whose heartbeats say nothing of motion)."""
    if pending.activity_type.name not in WAITING_STEPS or pending.heartbeat_details.payloads:
        return None
    options = pending.activity_options if pending.HasField("activity_options") else None
    if (
        options is not None
        and options.HasField("start_to_close_timeout")
        and options.start_to_close_timeout.ToTimedelta() > SHORT_TIMEOUT
    ):
        # a long one (a sync check at level checksum reads both sides whole, its
        # heartbeats say nothing of motion): busy, not known to wait
        return None
    if pending.state != PendingActivityState.PENDING_ACTIVITY_STATE_STARTED:
        return None
    if not (pending.HasField("last_started_time") and pending.HasField("last_heartbeat_time")):
        return None
    started = pending.last_started_time.ToDatetime(tzinfo=UTC)
    if pending.last_heartbeat_time.ToDatetime(tzinfo=UTC) < started:
        return None
    if (now - started).total_seconds() < RATE_CURRENT_S:
        return None
    return started


def retry_is_over(pending: Any, now: datetime, moved_at: float | None) -> bool:
    """Whether an attempt of the pending activity ``pending`` (a
    ``PendingActivityInfo``) moves bytes now (:func:`_moving`; ``moved_at``: when its
    heartbeat details say it last moved a byte, Unix seconds, None: not said): a
    retried attempt that does is no longer retrying, and its last failure is history,
    not a ``retrying:`` note. The one rule of a transfer's status (its streams) and a
    dataset's (its batches: ``cp -r``'s line kept the last retry error while the
    retried batch copied again, issue 11)."""
    return _moving(pending, now, moved_at)


def _moving(pending: Any, now: datetime, moved_at: float | None = None) -> bool:
    """Whether the pending activity ``pending`` (a ``PendingActivityInfo``: a stream,
    or a staging read) moves bytes now, so its heartbeat's rate is current: its attempt
    is running (not waiting to start, nor between attempts after a failure), its last
    heartbeat came from this attempt (a retried attempt keeps the details, and the
    rate, of the one before), and both that heartbeat and the last time it moved bytes
    (``moved_at``, Unix seconds, from its details: ``Checkpoint.moved_at``,
    ``StagingProgress.progress_at``; None: not said) are within
    :data:`~staccato.models.RATE_CURRENT_S` of ``now`` (or its heartbeat timeout, if
    shorter). A stream waiting on a hung server heartbeats on (the drivers'
    ``keepalive``) with its attempt's average rate, which never falls to 0, and a
    killed worker's last heartbeat stays until its timeout: either showed a rate and
    an ETA while nothing moved (a tester saw them 40 s into a hung S3 server, and for
    12-20 s after a worker's SIGKILL). Compares the worker's clock with this one's: a
    skew between them moves the cut by as much."""
    if pending.state != PendingActivityState.PENDING_ACTIVITY_STATE_STARTED:
        return False
    if not pending.HasField("last_heartbeat_time"):
        return False
    beat = pending.last_heartbeat_time.ToDatetime(tzinfo=UTC)
    if pending.HasField("last_started_time") and beat < pending.last_started_time.ToDatetime(
        tzinfo=UTC
    ):
        return False
    current = _HEARTBEAT_CURRENT
    options = pending.activity_options if pending.HasField("activity_options") else None
    if options is not None and options.HasField("heartbeat_timeout"):
        current = options.heartbeat_timeout.ToTimedelta() or current
    current = min(current, timedelta(seconds=RATE_CURRENT_S))
    if moved_at is not None and now.timestamp() - moved_at > current.total_seconds():
        return False
    return now - beat <= current


async def staging_figures(
    temporal: Client, pending: Any, now: datetime
) -> tuple[int, float | None] | None:
    """What a pending ``stage_source`` activity (``pending``, a ``PendingActivityInfo``)
    last heartbeated: bytes staged so far, and its rate (bytes/s) while it is current
    (:func:`_moving`: None once it has read nothing for
    :data:`~staccato.models.RATE_CURRENT_S`, or its worker is gone); None when it has
    not heartbeated or its details are not a ``StagingProgress``. Read without a
    worker (Temporal's description): a transfer's and a fan-out group's ``status``."""
    if not pending.heartbeat_details.payloads:
        return None
    try:
        (details,) = await temporal.data_converter.decode(
            pending.heartbeat_details.payloads, [StagingProgress]
        )
        staging = StagingProgress.model_validate(details)
    except Exception:  # not ours to read: no figure
        return None
    current = staging.rate_bytes_per_s > 0 and _moving(pending, now, staging.progress_at)
    return staging.bytes_staged, staging.rate_bytes_per_s if current else None


#: seconds a rate the progress reporter signalled is held across segment boundaries
#: (:func:`held_rate`): two of its report periods
#: (:data:`staccato.workers.progress_reporter.MIN_PERIOD_S`) and some
HELD_RATE_FOR_S = 20.0


def held_rate(
    live: float,
    *,
    reported: float | None = None,
    reported_at: float | None = None,
    since: float | None = None,
    moved: int = 0,
    now: float,
) -> float | None:
    """The rate (bytes/s) ``status`` says of a running copy or read-back that moves
    bytes: ``live``, the running streams' (or verify parts') summed heartbeat rate,
    when above 0; else the rate a worker last ``reported`` (bytes/s, at
    ``reported_at``, Unix seconds) if within :data:`HELD_RATE_FOR_S` of ``now``
    (Unix seconds); else the average since the phase began: ``moved`` bytes since
    ``since`` (Unix seconds). None when none is known (nothing moved yet).

    Held only across a gap the caller tells (every stream between two segments, a
    verify part too short to heartbeat its rate): a segment's stream ends and the
    next one's first heartbeat says rate 0 for about a second, which left lines at
    segment boundaries with no rate and no ETA (tester73 M2); README "Status JSON"
    allows no rate only while paused, cancelling, retrying or with no worker."""
    if live > 0:
        return live
    if reported and reported_at is not None and 0 <= now - reported_at <= HELD_RATE_FOR_S:
        return reported
    if since is not None and moved > 0 and now > since:
        return moved / (now - since)
    return None


def tuned_copy_rate(
    live: float,
    *,
    measured: float | None,
    since: float | None,
    moved: int,
    now: float,
) -> float | None:
    """The rate (bytes/s) ``status`` says of a tuned copy whose streams move bytes (or
    are between two segments): the optimizer's moving average at the streams running
    now (``measured``, bytes/s: its windows' bytes over the seconds their segments
    took, start to end as the workflow saw them), else the copy's average, ``moved``
    bytes since ``since`` (Unix seconds) to ``now`` (Unix seconds); never below
    ``live``, the running attempts' summed heartbeat rate. None when neither is known
    (the caller keeps ``live``).

    A tuned copy runs many short segments (64 MiB, or 2 s each on a warm link), a new
    activity each: an attempt's own rate is over its time so far, its start-up
    (connection, first chunk) in it, and the server keeps an attempt's early heartbeat
    until the SDK's throttle lets a later one through, so the sum over the running
    ones read 3-7x below the bytes moved (tester74 H: 13.4 MiB/s shown while the bytes
    went 512 -> 864 MiB in 3.9 s, and the optimizer said 90.9 MiB/s)."""
    best = measured or None  # 0.0: nothing measured yet
    if best is None and since is not None and moved > 0 and now > since:
        best = moved / (now - since)
    if best is None:
        return None
    return max(best, live)


def _stream_starting(pending: Any, now: datetime) -> bool:
    """Whether the pending activity ``pending`` (a ``PendingActivityInfo``) is a
    segment's stream that has just begun: a first attempt, scheduled (or started)
    less than :data:`~staccato.models.RATE_CURRENT_S` before ``now``, that has not
    heartbeated its details yet (the next segment of a lane: the copy's rate is held
    over it, :func:`held_rate`). An older one is not (no worker takes it, or its
    process hangs): no rate is held for it."""
    if pending.activity_type.name != "copy_stream" or pending.attempt > 1:
        return False
    started = pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
    field = "last_started_time" if started else "scheduled_time"
    if not pending.HasField(field):
        return False
    since = getattr(pending, field).ToDatetime(tzinfo=UTC)
    return (now - since).total_seconds() < RATE_CURRENT_S


def _stalled(moved_last: float | None, now: datetime) -> bool:
    """Whether the last motion a running activity heartbeated (``moved_last``, Unix
    seconds; None: none said) is :data:`~staccato.models.RATE_CURRENT_S` or more
    before ``now``: nothing moves (a hung server), so no rate is held."""
    return moved_last is not None and now.timestamp() - moved_last >= RATE_CURRENT_S


async def _verify_heard(temporal: Client, pending: Any) -> VerifyBeat | None:
    """What a running ``verify`` activity (``pending``, a ``PendingActivityInfo``)
    last heartbeated: when it last heard from the destination (``moved_at``, Unix
    seconds, the worker's clock), the bytes it read back and their rate; None when
    its attempt is not running, its last heartbeat is an earlier attempt's, or it
    sent no such details (a worker before them)."""
    return await _heard(temporal, pending, VerifyBeat)


async def _publish_heard(temporal: Client, pending: Any) -> PublishBeat | None:
    """What a running ``publish`` activity (``pending``, a ``PendingActivityInfo``)
    last heartbeated (:class:`~staccato.models.PublishBeat`): when it last moved bytes
    (``moved_at``, Unix seconds, the worker's clock) and the fresh copy it writes;
    None as :func:`_verify_heard` (a worker before 0.38 sends no details: its publish
    is then :func:`step_waiting_since`'s)."""
    return await _heard(temporal, pending, PublishBeat)


_Beat = TypeVar("_Beat", VerifyBeat, PublishBeat)


async def _heard(temporal: Client, pending: Any, model: type[_Beat]) -> _Beat | None:
    """The heartbeat details of ``pending``'s running attempt as ``model``; None when
    its attempt is not running, its last heartbeat is an earlier attempt's, or its
    details are not a ``model``."""
    if pending.state != PendingActivityState.PENDING_ACTIVITY_STATE_STARTED:
        return None
    if pending.HasField("last_started_time") and pending.HasField("last_heartbeat_time"):
        started = pending.last_started_time.ToDatetime(tzinfo=UTC)
        if pending.last_heartbeat_time.ToDatetime(tzinfo=UTC) < started:
            return None
    try:
        (details,) = await temporal.data_converter.decode(
            pending.heartbeat_details.payloads, [model]
        )
        return model.model_validate(details)
    except Exception:  # not ours to read: nothing said
        return None


def _activity_ids(description: Any) -> set[str]:
    """The ids of the run's pending activities (a retried attempt keeps its id; a
    segment scheduled again gets a new one)."""
    return {p.activity_id for p in description.raw_description.pending_activities}


def _end_bytes(memo: dict[str, Any], otherwise: int) -> int:
    """The bytes moved that a failed or cancelled run wrote into its memo as it
    stopped (``bytes_done``, ``TransferWorkflow._record_end_bytes``, before its
    clean-up): what its status says from then on, while the clean-up runs and once the
    run has ended, so a ``cp``'s lines and its last line agree with ``status`` (tester
    F5). ``otherwise`` (bytes) when the memo has none (a run before 0.9, or a
    describe taken just before the run wrote it)."""
    recorded = _memo_int(memo, "bytes_done")
    return otherwise if recorded is None else recorded


def _memo_int(memo: dict[str, Any], key: str) -> int | None:
    """An integer a run wrote into its memo; None: absent or not an integer."""
    value = memo.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _never_begun(description: Any) -> bool:
    """Whether no worker has run the run's first workflow task yet: its history holds
    only its start and that task's scheduling (2 events). Its workflow has no progress
    to answer a query with, and a query would wait its whole timeout for a worker that
    a dead worker's listing as a poller promises (``watch`` printed no line for 10 s)."""
    length = getattr(description, "history_length", None)
    return isinstance(length, int) and 0 < length <= 2


def query_wait_s() -> float:
    """Seconds a status query (of a transfer or a fan-out group) waits for a worker:
    min(5, ``STACCATO_CLIENT_WAIT_S``); in a status a follow asks
    (:func:`following`), at most :data:`FOLLOW_QUERY_S`."""
    wait = min(QUERY_TIMEOUT_S, settings.current().client_wait_s)
    following_wait = _QUERY_WAIT.get()
    return wait if following_wait is None else min(wait, following_wait)


def following(status: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
    """``status`` (a coroutine asking a run's status) as a task whose queries wait at
    most :data:`FOLLOW_QUERY_S` for a worker (:func:`query_wait_s`): a follow asks
    again every second or two, and says "no worker answers" after that wait, not
    after the 5 s a lone ``status`` gives a busy worker. The caller's own context is
    left as it was (the task runs in a copy)."""
    token = _QUERY_WAIT.set(FOLLOW_QUERY_S)
    try:
        return asyncio.ensure_future(status)
    finally:
        _QUERY_WAIT.reset(token)


class NotATransferError(StaccatoError):
    """The id names a workflow that is not a single transfer: a dataset, a fan-out
    group, or a workflow Staccato did not start. The message names the id, the call
    made, and (for a dataset or group) the call that applies to it instead."""


#: for a dataset (or its root lock) and a fan-out group: what to call instead of the
#: single transfer's ``status``, ``wait``, ``outcome`` and ``follow`` (ID: the id given)
_INSTEAD = {
    "dataset": {
        "status": "staccato.dataset_client.dataset_status(client, ID)",
        "wait": "staccato.dataset_client.await_dataset_end(client, ID)",
        "outcome": "staccato.dataset_client.await_dataset_end(client, ID)",
        "follow": "staccato.dataset_client.follow_dataset(client, ID)",
    },
    "group": {
        "status": "StaccatoClient.group_status(ID)",
        "wait": "StaccatoClient.wait_group(ID)",
        "outcome": "StaccatoClient.wait_group(ID)",
        "follow": "staccato.fanout_client.follow_group(client, ID)",
    },
}
#: the command that does the same as a call, on the command line
_COMMAND = {"status": "status", "wait": "watch", "outcome": "watch", "follow": "watch"}


def require_type(workflow_id: str, description: Any, kinds: tuple[str, ...], *, call: str) -> None:
    """Refuse a workflow of another type than ``kinds``: a dataset or fan-out group
    where only single transfers apply, or a workflow Staccato did not start (another
    type shares the namespace). ``call``: the call made (``status``, ``wait``,
    ``outcome``, ``follow``, ``pause``, ``resume``), which the message names with
    what applies instead.

    Raises:
        NotATransferError: ``description``'s workflow type is not in ``kinds``.
    """
    kind = description.workflow_type
    if kind in kinds:
        return
    shown = {DATASET_TYPE: "dataset", GROUP_TYPE: "group"}.get(kind)
    if kind == ROOT_LOCK_TYPE and DATASET_TYPE not in kinds:
        shown = "dataset"  # a root's lock: its id is a dataset id
    instead = _INSTEAD.get(shown or "", {}).get(call)
    what = "a Staccato dataset" if shown == "dataset" else "a fan-out group"
    if instead is not None:
        raise NotATransferError(
            f"{workflow_id} is {what}, not a single transfer: StaccatoClient.{call}() "
            f"applies to single transfers; call {instead.replace('ID', repr(workflow_id))} "
            f"instead (on the command line: `staccato {_COMMAND[call]} {workflow_id}`)"
        )
    if shown == "dataset":
        raise NotATransferError(
            f"{workflow_id} is a Staccato dataset, not a single transfer: {call} applies "
            f"to single transfers (a dataset has no {call} of its own); `staccato status "
            f"{workflow_id}` and `staccato cancel {workflow_id}` work on datasets"
        )
    if shown == "group":
        raise NotATransferError(
            f"{workflow_id} is a fan-out group, not a single transfer: {call} applies to "
            "single transfers; a group is paused "
            "and resumed by pausing and resuming its destinations' transfers (`staccato "
            f"pause DESTINATION`; `staccato status {workflow_id}` lists them), which start "
            "once the group has staged the source (while it stages, there is no transfer "
            f"to pause yet); `staccato cancel {workflow_id}` stops every destination, "
            "staging included"
        )
    raise NotATransferError(f"{workflow_id} is not a Staccato transfer (workflow type {kind})")


async def failure_reason(handle: WorkflowHandle[Any, Any], *, cancelled: bool) -> str:
    """Why a closed run did not complete: "cancelled", or its failure's innermost
    message (an activity's error under the workflow's), read from Temporal's result
    without any worker."""
    if cancelled:
        return "cancelled"
    try:
        await handle.result()
    except WorkflowFailureError as err:
        return innermost_message(err.cause)
    except Exception as err:
        return str(err)
    return "failed"


def _scheduled_status(
    workflow_id: str, memo: Any, runs_as: str | None, starts_at: str
) -> TransferStatus:
    """The status of a run started with a delay that has not begun yet."""
    return _waiting_status(
        workflow_id, memo, TransferState.scheduled, runs_as=runs_as, starts_at=starts_at
    )


def _waiting_status(
    workflow_id: str,
    memo: Any,
    state: TransferState,
    *,
    runs_as: str | None,
    reason: str | None = None,
    starts_at: str | None = None,
) -> TransferStatus:
    """The status of a run that has not begun copying (``scheduled`` to start later,
    ``queued`` behind a busy destination): what its memo says, nothing moved yet."""
    return TransferStatus(
        id=workflow_id,
        state=state,
        source=memo.get("source", ""),
        destination=memo.get("destination", ""),
        bytes_total=None,
        bytes_done=0,
        bytes_durable=0,
        rate_bytes_per_s=None,
        eta_s=None,
        streams=int(memo.get("streams", 0)),
        chunk_size=int(memo.get("chunk_size", 0)),
        checksum=None,
        error=None,
        phase=state.value,
        reason=reason,
        runs_as=runs_as,
        starts_at=starts_at,
        tuner_chooses=True if memo.get("tuning") else None,
        untuned=_untuned(memo),
    )


def _start_time(description: Any) -> str | None:
    """When a run started with a start delay (``--not-before``) is due (ISO 8601,
    UTC, :func:`staccato.submissions.shown_start`), ahead or past; None for a run
    started at once."""
    info = description.raw_description.workflow_execution_info
    if not info.HasField("execution_time"):
        return None
    at = info.execution_time.ToDatetime(tzinfo=UTC)
    if at <= description.start_time:
        return None
    return shown_start(at)


def _delayed_start(description: Any) -> str | None:
    """When a run started with a start delay begins (ISO 8601, UTC), while that is
    still ahead; else None."""
    info = description.raw_description.workflow_execution_info
    if not info.HasField("execution_time"):
        return None
    at = info.execution_time.ToDatetime(tzinfo=UTC)
    if at <= datetime.now(UTC):
        return None
    return shown_start(at)
