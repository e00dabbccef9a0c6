"""Starting transfers: the one way a destination's transfer (its canonical run) is
started, used by :class:`staccato.client.StaccatoClient` and by the front runs'
activity (:mod:`staccato.activities.front`).

The canonical workflow id (:func:`staccato.ids.transfer_id`) is the destination's
lock: the start uses ``id_conflict_policy=FAIL``, so while a transfer to the
destination runs, an identical request (same request hash, kept in the memo)
attaches to it, and a different one is refused with :class:`DestinationBusyError`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from pydantic import BaseModel
from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
)
from temporalio.common import (
    Priority,
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from staccato import run_fields, units
from staccato.errors import DestinationBusyError, InvalidURLError
from staccato.ids import transfer_id
from staccato.links import link_of, tuned_link
from staccato.models import (
    RUN_ONLY_OPTIONS,
    IfBusy,
    TransferOptions,
    TransferRequest,
    TransferState,
)
from staccato.overlaps import visibility_string
from staccato.run_fields import TRANSFER_TYPE, summary
from staccato.workflows import search_attributes as sa

M = TypeVar("M", bound=BaseModel)

#: memo key of a canonical run started by a front run: ``<front id>/<front run id>``
STARTED_BY = "started_by"


@dataclass(frozen=True)
class Started:
    """A canonical run started or attached to.

    Attributes:
        workflow_id: the destination's transfer id.
        run_id: the run.
        attached: an identical transfer was already running (nothing new started).
    """

    workflow_id: str
    run_id: str
    attached: bool
    #: attached with options of the request that differ from the running transfer's and
    #: so do not apply to it (``--max-rate 5.0 MiB/s requested, none running``): those
    #: the request hash leaves out (how to start or read, not what to write)
    ignored: tuple[str, ...] = ()


def search_attributes(request: TransferRequest, state: TransferState) -> TypedSearchAttributes:
    """StaccatoSource, StaccatoDestination and StaccatoState of a transfer run
    (:func:`staccato.run_fields.search_attributes`)."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(SearchAttributeKey.for_keyword(name), value)
            for name, value in run_fields.search_attributes(request, state).items()
        ]
    )


async def start_or_attach(
    client: Client,
    request: TransferRequest,
    *,
    task_queue: str,
    started_by: str | None = None,
    place: QueuePlace | None = None,
) -> Started:
    """Start the destination's transfer (its canonical run), or attach to the running
    one when it is the identical request.

    The queue's order (:func:`queued_ahead`): while no transfer to the destination
    runs, a start is refused as busy when a front run queued for it earlier waits
    (``place``: the starting front's; None: a start now, behind every waiting one).

    Args:
        client: a Temporal client with Staccato's data converter.
        request: a validated request.
        task_queue: the workers' task queue.
        started_by: ``<front id>/<front run id>`` of the front run starting it (kept
            in the memo so a retried front finds the run it started).
        place: the starting front run's place in the destination's queue.

    Raises:
        DestinationBusyError: a different transfer to this destination is running
            (the message names it and its source), or a transfer queued for it
            earlier waits (the message names it).
    """
    workflow_id = transfer_id(request.destination)
    # a running transfer is met without a start: a start decided on a description
    # that said "running" could succeed once that run has ended, ahead of the queue
    description = await _latest(client, workflow_id)
    if description is not None and description.status == WorkflowExecutionStatus.RUNNING:
        return await _attach_or_refuse(client, request, description, description.run_id)
    ahead = await queued_ahead(client, request.destination, place=place)
    if ahead:
        raise queued_busy(request.destination, ahead)
    run_memo = sa.start_memo(request)
    if started_by:
        run_memo[STARTED_BY] = started_by
    try:
        # by name: the workflow takes its input as a raw payload and validates it
        handle = await client.start_workflow(
            TRANSFER_TYPE,
            request,
            id=workflow_id,
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            memo=run_memo,
            search_attributes=search_attributes(request, TransferState.scheduled),
            static_summary=summary(request),
            # Temporal's task priority: the transfer's activities inherit it
            priority=Priority(priority_key=request.options.priority),
        )
    except WorkflowAlreadyStartedError as err:
        description = await client.get_workflow_handle(workflow_id).describe()
        return await _attach_or_refuse(
            client, request, description, err.run_id or description.run_id
        )
    return Started(workflow_id, handle.first_execution_run_id or handle.result_run_id or "", False)


async def _attach_or_refuse(
    client: Client, request: TransferRequest, description: WorkflowExecutionDescription, run_id: str
) -> Started:
    """Attach ``request`` to the destination's running transfer (``description``, its
    run ``run_id``) when it is the identical request, else refuse it.

    Raises:
        DestinationBusyError: a different transfer runs (or its failed run still
            removes its partial data), named with its source.
    """
    workflow_id = description.id
    holder = dict(await description.memo())
    if description.typed_search_attributes.get(sa.STATE) == TransferState.failed.value:
        # it failed already and only removes its partial data: never attach to it
        raise await _cleaning_up(client, workflow_id, description, request.destination) from None
    # the same source: what differs, if anything, is the options (named below)
    running = None
    if holder.get("source") == request.source:
        running = await running_request(client, workflow_id, run_id)
    if holder.get("request_hash") == request.request_hash():
        ignored = (
            option_differences(request.options, running.options, link_tuned=link_is_tuned(request))
            if running
            else []
        )
        return Started(workflow_id, run_id, attached=True, ignored=tuple(ignored))
    differ = (
        option_differences(
            request.options, running.options, conflicts=True, link_tuned=link_is_tuned(request)
        )
        if running
        else []
    )
    held = (
        f"destination busy: {request.destination} is being written by transfer "
        f"{workflow_id} (from {holder.get('source', '?')})"
    )
    if differ:
        held = (
            f"destination busy: {request.destination} is being written by transfer "
            f"{workflow_id} from the same source with other options "
            f"({'; '.join(differ)}): yours would not apply to it"
        )
    if description.typed_search_attributes.get(sa.STATE) == TransferState.paused.value:
        # a paused transfer holds its destination until resumed and ended, or cancelled
        held += (
            f", which is paused: it holds the destination until it is resumed "
            f"(`staccato resume {workflow_id}`) and ends, or is cancelled"
        )
    # the transfers queued for it (--if-busy wait) run before a start queued now: named
    # (a queued front polls this refusal: it names only what it waits for)
    ahead = (
        []
        if request.options.if_busy == IfBusy.wait
        else await queued_ahead(client, request.destination)
    )
    queued = (
        f"; {named_ahead(ahead)} {'is' if len(ahead) == 1 else 'are'} queued for it "
        "(--if-busy wait) and run{} after it, before a start queued now".format(
            "s" if len(ahead) == 1 else ""
        )
        if ahead
        else ""
    )
    raise DestinationBusyError(
        f"{held}{queued}; wait for it to finish, "
        f"cancel it with `staccato cancel {workflow_id}`, or start with --if-busy wait "
        '(in a raw start\'s or a Schedule\'s input: "options": {"if_busy": "wait"})'
        + (": yours then runs with your options after it" if differ else ""),
        holder=held,
    )


#: queued transfers a refusal names by id at most (the rest are counted)
NAMED_AHEAD = 3


def named_ahead(ahead: list[str]) -> str:
    """The transfers queued for a destination (``ahead``, earliest first, not empty)
    as a refusal names them: ``transfer A``, ``transfers A, B, C and 4 more`` (at most
    :data:`NAMED_AHEAD` ids)."""
    if len(ahead) == 1:
        return f"transfer {ahead[0]}"
    shown = ahead[:NAMED_AHEAD]
    more = len(ahead) - len(shown)
    listed = ", ".join(shown[:-1] if not more else shown)
    tail = f" and {more} more" if more else f" and {shown[-1]}"
    return f"transfers {listed}{tail}"


#: a front run's place in its destination's queue: (when it was due: its start, or
#: the end of its start delay; its workflow id, which breaks a tie)
QueuePlace = tuple[datetime, str]
#: the states of a front run that waits for its destination (it drives the
#: destination's transfer once ``running``); None: a raw start not yet made visible
_WAITING_STATES = (None, TransferState.scheduled.value, TransferState.queued.value)


def queue_place(execution: WorkflowExecution) -> QueuePlace:
    """The place of a front run (a listed or described execution) in its
    destination's queue: earlier due first, then by workflow id."""
    return (execution.execution_time or execution.start_time, execution.id)


async def _latest(client: Client, workflow_id: str) -> WorkflowExecutionDescription | None:
    """The description of the latest run of ``workflow_id``; None when it has none."""
    try:
        return await client.get_workflow_handle(workflow_id).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return None
        raise


async def queued_ahead(
    client: Client, destination: str, *, place: QueuePlace | None = None
) -> list[str]:
    """The ids of the front runs waiting for ``destination`` (a canonical URL) ahead of
    ``place``, earliest first: the one rule of the order of ``--if-busy wait``.

    A front run waits while it is open with state ``scheduled`` or ``queued`` (it
    has not begun to drive the destination's transfer); it is ahead when it was due
    (:func:`queue_place`: its start, or the end of its start delay) before ``place``,
    the id breaking a tie; ``place`` None: a start now (every front due by now is
    ahead). Found with a visibility query (StaccatoDestination), so it holds for
    fronts of any origin (``submit --if-busy wait``, raw starts, Schedules) and across
    worker and Temporal restarts. A front cancelled, terminated or ended leaves the
    queue when its run closes.

    Raises:
        RPCError: the visibility query failed.
    """
    value = run_fields.keyword(destination)
    query = (
        f"WorkflowType = '{TRANSFER_TYPE}' AND ExecutionStatus = 'Running' AND "
        f"{run_fields.DESTINATION} = {visibility_string(value)}"
    )
    canonical = transfer_id(destination)
    bound = place or (datetime.now(UTC), "")
    ahead: list[QueuePlace] = []
    async for execution in client.list_workflows(query):
        if execution.id in (canonical, bound[1]):
            continue
        if execution.typed_search_attributes.get(sa.STATE) not in _WAITING_STATES:
            continue
        # a destination cut to fit the search attribute: the memo has it whole
        if (await execution.memo()).get("destination", destination) != destination:
            continue
        here = queue_place(execution)
        if here < bound:
            ahead.append(here)
    return [workflow_id for _, workflow_id in sorted(ahead)]


def queued_busy(destination: str, ahead: list[str]) -> DestinationBusyError:
    """The refusal of a start to ``destination`` while transfers queued for it earlier
    (``ahead``, earliest first) wait: they run first, in their order."""
    held = (
        f"destination busy: {destination} has {named_ahead(ahead)} queued for it "
        "earlier (--if-busy wait), which run first, in the order they were queued"
    )
    return DestinationBusyError(
        f"{held}; start with --if-busy wait to queue behind them, or cancel them with "
        f"`staccato cancel {ahead[0]}`",
        holder=held,
    )


async def _cleaning_up(
    client: Client, workflow_id: str, description: WorkflowExecutionDescription, destination: str
) -> DestinationBusyError:
    """The refusal of a start while the destination's transfer, failed already, still
    removes its partial data: names it, what its clean-up's retries say, and the ways
    out (its clean-up ends within its retry window; ``cancel`` stops it), with what a
    stopped clean-up leaves at ``destination`` (a canonical URL) and how that goes."""
    # the error path only: the rule lives with the workflow's wording of what is left
    from staccato.workflows.failures import leftovers_swept

    retrying = ""
    for pending in description.raw_description.pending_activities:
        if pending.activity_type.name == "cleanup" and pending.HasField("last_failure"):
            failure = type(pending.last_failure)()
            failure.CopyFrom(pending.last_failure)
            try:
                decoded = await client.data_converter.decode_failure(failure)
                message = str(getattr(decoded, "message", None) or decoded)
            except Exception:  # a key this client lacks: what Temporal holds
                message = str(pending.last_failure.message)
            retrying = f" (retrying, attempt {pending.attempt}: {message})"
    held = (
        f"destination busy: the failed transfer {workflow_id} is still removing its "
        f"partial data{retrying}"
    )
    if destination.startswith("s3://"):
        # no sweep on S3: the clean-up itself aborts the multipart upload
        stopped = (
            "it stays failed, and its multipart upload stays open: `staccato status "
            f"{workflow_id}` then names the upload id to abort"
        )
    elif leftovers_swept(destination):
        stopped = "it stays failed; the next transfer to this destination removes its temp file"
    else:
        stopped = (
            f"it stays failed; `staccato status {workflow_id}` then names its temp file and "
            "journal to delete by hand: the next transfer does not remove them (the "
            "destination's name is too long to tell its temp files from a longer name's)"
        )
    return DestinationBusyError(
        f"{held}; it ends once that is done or its retries give up (`staccato status "
        f"{workflow_id}` then says what was left behind), or stop that now with "
        f"`staccato cancel {workflow_id}` ({stopped})",
        holder=held,
    )


def front_id(request: TransferRequest) -> str:
    """A fresh front-run id for ``request``: ``<transfer id>-<8 random hex>``."""
    return f"{transfer_id(request.destination)}-{secrets.token_hex(4)}"


def queued_front_id(request: TransferRequest) -> str:
    """The front-run id of ``request`` queued behind a busy destination:
    ``<transfer id>-<8 hex of its request hash>``, so an identical request queued again
    meets the first (its start is refused, :func:`queue_front`) instead of queueing a
    second copy; a different request gets an id of its own and queues behind it."""
    return f"{transfer_id(request.destination)}-{request.request_hash()[:8]}"


@dataclass(frozen=True)
class Queued:
    """A front run queued for a busy destination, started or joined.

    Attributes:
        workflow_id: the front run's id (:func:`queued_front_id`).
        run_id: its run.
        attached: the identical request was queued already: nothing new started.
        ignored: attached, with options that differ from the queued request's and so
            do not apply (as :attr:`Started.ignored`).
    """

    workflow_id: str
    run_id: str
    attached: bool = False
    ignored: tuple[str, ...] = ()


async def queue_front(client: Client, request: TransferRequest, *, task_queue: str) -> Queued:
    """Queue ``request`` behind the transfer writing its destination (``--if-busy
    wait``): start its front run under :func:`queued_front_id`, or, when the identical
    request (same request hash) is queued there already and still open, join that one.

    Raises:
        DestinationBusyError: that id is held by an open run of another request (a
            collision of the hash's first 8 hex digits), naming it.
    """
    workflow_id = queued_front_id(request)
    try:
        run_id = await start_front(client, request, task_queue=task_queue, workflow_id=workflow_id)
    except WorkflowAlreadyStartedError as err:
        description = await client.get_workflow_handle(workflow_id).describe()
        memo = dict(await description.memo())
        run_id = err.run_id or description.run_id
        if memo.get("request_hash") != request.request_hash():
            raise DestinationBusyError(
                f"destination busy: {request.destination} has a transfer queued as "
                f"{workflow_id} (from {memo.get('source', '?')}) under the id this request "
                f"would queue as; wait for it to start, or cancel it with "
                f"`staccato cancel {workflow_id}`",
                holder=f"destination busy: transfer {workflow_id} is queued for it",
            ) from None
        queued = await running_request(client, workflow_id, run_id)
        differ = (
            option_differences(request.options, queued.options, link_tuned=link_is_tuned(request))
            if queued
            else []
        )
        return Queued(workflow_id, run_id, attached=True, ignored=tuple(differ))
    return Queued(workflow_id, run_id)


async def start_front(
    client: Client,
    request: TransferRequest,
    *,
    task_queue: str,
    workflow_id: str,
    start_delay: timedelta | None = None,
) -> str:
    """Start a front run (see :mod:`staccato.workflows.front`) of ``request`` under
    ``workflow_id``, optionally ``start_delay`` from now (Temporal's start delay);
    returns its run id. It takes the destination's lock when it runs, waiting or
    failing per ``request.options.if_busy``."""
    handle = await client.start_workflow(
        TRANSFER_TYPE,
        request,
        id=workflow_id,
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        memo=sa.start_memo(request),
        search_attributes=search_attributes(request, TransferState.scheduled),
        static_summary=summary(request),
        start_delay=start_delay,
        priority=Priority(priority_key=request.options.priority),
    )
    return handle.first_execution_run_id or handle.result_run_id or ""


async def running_input(
    client: Client, workflow_id: str, run_id: str | None, model: type[M]
) -> M | None:
    """The input the run ``run_id`` (None: the latest) of ``workflow_id`` was started
    with (its history's first event) as ``model``; None when it cannot be read so (a
    raw start with odd input, a key this client lacks, the run gone)."""
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    try:
        async for event in handle.fetch_history_events(page_size=1):
            started = event.workflow_execution_started_event_attributes
            (given,) = await client.data_converter.decode(started.input.payloads, [model])
            return model.model_validate(given)
    except Exception:  # a hint only: the start goes on as it would without it
        return None
    return None


async def running_request(client: Client, workflow_id: str, run_id: str) -> TransferRequest | None:
    """The :class:`TransferRequest` the run ``run_id`` of ``workflow_id`` was started
    with (:func:`running_input`)."""
    return await running_input(client, workflow_id, run_id, TransferRequest)


def _yes_no(value: object) -> str:
    return "yes" if value else "no"


def _text(field: str, value: object) -> str:
    """An option's value as the command line spells it."""
    if value is None:
        return {"sync_level": "none (always copy)", "max_rate": "none"}.get(field, "none")
    if field == "chunk_size":
        return units.size(int(value))  # type: ignore[call-overload]
    if field == "max_rate":
        return units.rate(float(value))  # type: ignore[arg-type]
    if field in ("retry_for_s", "heartbeat_timeout_s"):
        return units.duration(float(value))  # type: ignore[arg-type]
    if isinstance(value, bool):
        return _yes_no(value)
    return str(getattr(value, "value", value))


#: option field -> how the command line names it, in the order differences are told
_OPTION_NAMES = {
    "chunk_size": "--chunk-size",
    "streams": "--streams",
    "verify": "--verify",
    "checksum": "--checksum",
    "sync_level": "--sync-level",
    "retry_for_s": "--retry-for",
    "heartbeat_timeout_s": "heartbeat_timeout_s",
    "stage": "--stage",
    "max_rate": "--max-rate",
    "priority": "--priority",
    "owner": "--owner",
    "from_origin": "--from-origin",
}


def link_is_tuned(request: TransferRequest) -> bool:
    """Whether ``request``'s link is tuned (:func:`staccato.links.tuned_link`); True
    when its URLs do not name a link (nothing is known against tuning)."""
    try:
        return tuned_link(link_of(request.source, request.destination))
    except InvalidURLError:
        return True


def option_differences(
    requested: TransferOptions,
    running: TransferOptions,
    *,
    conflicts: bool = False,
    link_tuned: bool = True,
) -> list[str]:
    """The options of ``requested`` that differ from ``running``'s, one text each:
    ``--chunk-size 1.0 MiB requested, 16.0 MiB running``. Streams and chunk size of a
    tuned transfer are chosen per link (their values are only its fallback): a tuned
    and a fixed one differ in ``--streams/--chunk-size``. ``if_busy`` (how this start
    meets a busy destination) is never a difference.

    Args:
        conflicts: only the differences that make another request (what a refusal,
            "destination busy", names): those in
            :data:`~staccato.models.RUN_ONLY_OPTIONS` (``--max-rate``, ``--priority``,
            ``--owner``, ``--from-origin``) say how to run, not what to write; alone
            they attach (named then as not applied), so beside a real conflict they
            are no reason for the refusal and are left out.
        link_tuned: whether their link is tuned (:func:`staccato.links.tuned_link`,
            e.g. :func:`link_is_tuned`): a tuned request on a link that is not (a
            local copy) runs its fixed streams and chunk size, shown so (it said
            "tuned per link").
    """
    found: list[str] = []
    fixed = ("chunk_size", "streams")
    if requested.tuning != running.tuning:

        def shown(o: TransferOptions) -> str:
            if o.tuning and link_tuned:
                return "tuned per link"
            fixed_text = f"{o.streams} x {units.size(o.chunk_size)}"
            return f"{fixed_text} (a local copy is not tuned)" if o.tuning else fixed_text

        found.append(
            f"--streams/--chunk-size {shown(requested)} requested, {shown(running)} running"
        )
    for field, name in _OPTION_NAMES.items():
        if field in fixed and (requested.tuning or running.tuning):
            continue
        if conflicts and field in RUN_ONLY_OPTIONS:
            continue
        mine, theirs = getattr(requested, field), getattr(running, field)
        if mine != theirs:
            found.append(f"{name} {_text(field, mine)} requested, {_text(field, theirs)} running")
    return found
