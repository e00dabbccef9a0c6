"""Fan-out groups from the client side: validate and start a group
(:class:`staccato.workflows.fanout.FanOutWorkflow`), its status, list, follow.

    async with await StaccatoClient.connect() as staccato:
        group = await staccato.fan_out("https://h/a.iso", ["/m1/a.iso", "s3://b/a.iso"])
        final = await staccato.wait_group(group)   # GroupStatus, one row per destination

Group id: ``staccato-group-`` + 24 hex digits of SHA-256 of the source and the sorted
destinations. Derived, not random, so that submitting the same fan-out again while it
runs attaches to it (same request hash, as a transfer does) instead of starting a
second group that would find every destination locked by the first one's children;
once it ended, the same id starts a new run (``status`` shows the latest).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from staccato import units
from staccato.datasets.names import shown_name
from staccato.errors import DestinationBusyError, InvalidURLError, TransferNotFoundError
from staccato.following import follow_until_ended
from staccato.leftovers import shown_left_behind
from staccato.models import (
    GROUP_ID_PREFIX,
    MAX_FAN_OUT,
    DestinationStatus,
    FanOutProgress,
    FanOutRequest,
    GroupState,
    GroupStatus,
    IfBusy,
    TransferOptions,
    TransferRequest,
    TransferState,
    iso_utc,
)
from staccato.overlaps import compared_place, encloses
from staccato.quantities import GROUP_NAME, require_str, str_list
from staccato.settled_query import settled_query
from staccato.urls import parse_url, redact
from staccato.workflows import search_attributes as sa

if TYPE_CHECKING:
    from staccato.client import StaccatoClient

GROUP_TYPE = "FanOutWorkflow"
_TERMINAL = (
    GroupState.completed,
    GroupState.completed_with_errors,
    GroupState.failed,
    GroupState.cancelled,
)
_CLOSED_STATES = {
    WorkflowExecutionStatus.FAILED: GroupState.failed,
    WorkflowExecutionStatus.TERMINATED: GroupState.failed,
    WorkflowExecutionStatus.TIMED_OUT: GroupState.failed,
    WorkflowExecutionStatus.CANCELED: GroupState.cancelled,
}


def make_fan_out_request(
    source: str, destinations: str | Sequence[str], options: TransferOptions | None = None
) -> FanOutRequest:
    """Validate and canonicalise a fan-out (each destination as a single transfer's).

    Raises:
        InvalidURLError: a URL is bad, a destination is the source, the same
            destination is given twice (after canonicalisation: ``/a`` and
            ``file:///a`` are one), fewer than 2 or more than ``MAX_FAN_OUT``
            destinations (a single str is one destination), or ``if_busy = wait``
            (not supported for a group).
        TypeError: a destination that is not a str.
    """
    from staccato.client import StaccatoClient

    destinations = str_list(destinations, "destinations")
    if len(destinations) < 2:
        raise InvalidURLError("a fan-out needs at least 2 destinations")
    if len(destinations) > MAX_FAN_OUT:
        raise InvalidURLError(
            f"{len(destinations)} destinations: a fan-out writes at most {MAX_FAN_OUT}"
        )
    options = options or TransferOptions()
    if options.if_busy == IfBusy.wait:
        raise InvalidURLError(
            "--if-busy wait applies to one destination; a fan-out's busy destination "
            "fails in the group (the others go on)"
        )
    given: dict[str, str] = {}
    requests = []
    for destination in destinations:
        request = StaccatoClient.make_request(source, destination, options)
        if request.destination in given:
            raise InvalidURLError(
                f"destination {request.destination} is given twice (as "
                f"{given[request.destination]!r} and {destination!r})"
            )
        given[request.destination] = destination
        requests.append(request)
    _check_nested(requests)
    first = requests[0]
    return FanOutRequest(
        source=first.source,
        destinations=[r.destination for r in requests],
        options=options,
        source_secret=first.source_secret,
    )


def _check_nested(requests: Sequence[TransferRequest]) -> None:
    """Refuse destinations of one fan-out that are one file (through a symbolic link,
    or one SFTP server named with and without a user) or lie inside one another
    (``out7`` and ``out7/sub``: the file written first leaves no directory for the
    other), as :func:`staccato.overlaps.compared_place` compares them. S3 keys are not
    paths: ``s3://b/x`` and ``s3://b/x/y`` are two objects, so only one key named twice
    counts there.

    Raises:
        InvalidURLError: naming both destinations.
    """
    places = [compared_place(parse_url(r.destination)) for r in requests]
    for i, (one, one_place) in enumerate(zip(requests, places, strict=True)):
        for other, other_place in zip(requests[:i], places[:i], strict=True):
            if one_place == other_place:
                raise InvalidURLError(
                    f"destinations {other.destination} and {one.destination} are one file "
                    "(through a symbolic link, or one server named two ways): give it once"
                )
            if one.destination.startswith("s3://"):
                continue
            outer, inner = (other, one) if encloses(other_place, one_place) else (one, other)
            if encloses(other_place, one_place) or encloses(one_place, other_place):
                raise InvalidURLError(
                    f"destinations {outer.destination} and {inner.destination} nest "
                    f"({inner.destination} is inside {outer.destination}): the file "
                    f"written at {outer.destination} leaves no directory for the other; "
                    "pick destinations that do not lie inside one another"
                )


def group_id(request: FanOutRequest) -> str:
    """The group's workflow id (see the module docstring)."""
    return GROUP_ID_PREFIX + request.group_hash()


class GroupStart(NamedTuple):
    """What :func:`start_group` did: the group ``id``; ``attached`` to the same request
    running; ``ignored``: the options of this request that say how to run (not in the
    request hash: ``--max-rate``, ``--priority``...) and differ from the running
    group's, which do not apply to it (one text each, requested vs running)."""

    id: str
    attached: bool
    ignored: tuple[str, ...] = ()


async def start_group(client: StaccatoClient, request: FanOutRequest) -> GroupStart:
    """Start the group, or attach to the same request running (it may differ in the
    options that say how to run: :data:`staccato.models.RUN_ONLY_OPTIONS`, named in
    ``ignored``).

    Raises:
        DestinationBusyError: a different fan-out of the same source to the same
            destinations runs (other options).
    """
    workflow_id = group_id(request)
    try:
        await client.temporal.start_workflow(
            GROUP_TYPE,
            request,
            id=workflow_id,
            task_queue=client.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            memo={
                "source": request.source,
                "destinations": request.destinations,
                "request_hash": request.request_hash(),
            },
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(sa.SOURCE, sa.keyword(request.source)),
                    SearchAttributePair(sa.STATE, GroupState.running.value),
                ]
            ),
            static_summary=f"{request.source} -> {len(request.destinations)} destinations"[:200],
        )
    except WorkflowAlreadyStartedError:
        description = await client.temporal.get_workflow_handle(workflow_id).describe()
        held = dict(await description.memo()).get("request_hash")
        if held in (request.request_hash(), *request.previous_request_hashes()):
            # the same request but, maybe, the options that say how to run (the running
            # group's apply): named, as a single transfer's
            ignored = await _differences(client, workflow_id, request)
            return GroupStart(workflow_id, True, tuple(ignored))
        differ = await _differences(client, workflow_id, request, conflicts=True)
        raise DestinationBusyError(
            f"fan-out group {workflow_id} of the same source to the same destinations is "
            "running with other options"
            + (f" ({'; '.join(differ)}): yours would not apply to it" if differ else "")
            + f"; wait for it or `staccato cancel {workflow_id}`"
        ) from None
    return GroupStart(workflow_id, False)


async def _differences(
    client: StaccatoClient, workflow_id: str, request: FanOutRequest, *, conflicts: bool = False
) -> list[str]:
    """What differs between ``request`` and the running group ``workflow_id``'s, as the
    command line names it (``--verify size requested, checksum running``; the same
    words as a single transfer's and a dataset's, :func:`staccato.starts.option_differences`),
    or that its destinations were given in another order; [] when its request cannot
    be read. ``conflicts``: only what makes it another request (a refusal's list: see
    :func:`~staccato.starts.option_differences`)."""
    from staccato.starts import option_differences, running_input

    running = await running_input(client.temporal, workflow_id, None, FanOutRequest)
    if running is None:
        return []
    found = option_differences(request.options, running.options, conflicts=conflicts)
    if not found and running.destinations != request.destinations:
        found.append("the same destinations given in another order")
    return found


async def group_status(client: StaccatoClient, group: str) -> GroupStatus:
    """The latest run of group ``group``: its state and one row per destination (a
    running destination with its transfer's bytes done and phase).

    Raises:
        TransferNotFoundError: no such group.
    """
    handle = client.temporal.get_workflow_handle(group, result_type=FanOutProgress)
    description = await _described_group(handle, group)
    memo: dict[str, Any] = dict(await description.memo())
    progress: FanOutProgress | None = None
    error: str | None = None
    if description.status == WorkflowExecutionStatus.COMPLETED:
        progress = await handle.result()
    else:
        try:
            if await client.may_answer(description.task_queue):
                # as a transfer's status: min(5 s, STACCATO_CLIENT_WAIT_S) (it was 5 s),
                # once the group has no pending workflow task (staccato.settled_query)
                progress = await settled_query(
                    handle, "progress", result_type=FanOutProgress, description=description
                )
        except Exception:  # no worker answers, not settled, or the run is over
            progress = None
        if description.status != WorkflowExecutionStatus.RUNNING:
            from staccato.client import failure_reason

            closed = _CLOSED_STATES.get(description.status, GroupState.failed)  # type: ignore[arg-type]
            error = await failure_reason(handle, cancelled=closed == GroupState.cancelled)
    destinations = [
        DestinationStatus(destination=d, transfer_id="", state=TransferState.scheduled)
        for d in memo.get("destinations", [])
    ]
    state = GroupState.running
    if progress is not None:
        destinations = [DestinationStatus(**o.model_dump()) for o in progress.destinations]
        state = progress.state
    elif description.status == WorkflowExecutionStatus.RUNNING:
        # no worker answers for the group: each destination's own run says how far it got
        await asyncio.gather(*(_row_from_its_run(client, description, d) for d in destinations))
    if description.status not in (
        WorkflowExecutionStatus.RUNNING,
        WorkflowExecutionStatus.COMPLETED,
    ):
        state = _CLOSED_STATES.get(description.status, GroupState.failed)  # type: ignore[arg-type]
    elif (
        description.status == WorkflowExecutionStatus.RUNNING
        and state in _TERMINAL
        and state != GroupState.failed
    ):
        state = GroupState.running  # returning: its result comes next
    # failed (the source could not be read: every destination failed) is said at once,
    # as a failed transfer's, while the run goes on only to release its staged entry
    # (which waits for the entry's lock a hung staging attempt may hold for a minute:
    # the group showed running, and cp followed it, that long)
    figures = await _running_figures(client, description, memo, progress, destinations)
    # the running destinations' transfers: how far each is now; the cancelled or
    # failed ones with no bytes of their own (the group's result and query carry none):
    # how far each got, as a single transfer's status keeps its bytes_done once
    # cancelled (a cancelled group's rows said null)
    running = [
        d
        for d in destinations
        if d.run_id
        and (
            d.state == TransferState.running
            or (d.state in (TransferState.cancelled, TransferState.failed) and d.bytes_done is None)
        )
    ]
    for row, child in zip(
        running,
        await asyncio.gather(
            *(client.status(d.transfer_id, run_id=d.run_id) for d in running),
            return_exceptions=True,
        ),
        strict=True,
    ):
        if isinstance(child, BaseException):
            continue
        if row.state != TransferState.running:  # ended: its figures, not its phase
            row.bytes_done, row.bytes_total = child.bytes_done, child.bytes_total
            row.left_behind = row.left_behind or child.left_behind
            continue
        row.bytes_done, row.bytes_total, row.phase = (
            child.bytes_done,
            child.bytes_total,
            child.phase,
        )
        row.rate_bytes_per_s, row.eta_s = child.rate_bytes_per_s, child.eta_s
        if child.state in (TransferState.paused, TransferState.queued):
            row.state = child.state  # the group sees its child as running: say which
    for row in destinations:
        if row.state == TransferState.completed:
            row.bytes_done = row.bytes_total = row.bytes
            row.phase = "done"
        # what its clean-up left, while it may still be there (not once deleted)
        row.left_behind = shown_left_behind(row.left_behind)
    copying = [d for d in destinations if d.state == TransferState.running and d.phase == "copy"]
    rates = [d.rate_bytes_per_s for d in copying if d.rate_bytes_per_s is not None]
    etas = [d.eta_s for d in copying]
    figures["rate_bytes_per_s"] = round(sum(rates), 1) if rates else None
    figures["eta_s"] = max(e for e in etas if e is not None) if etas and None not in etas else None
    return GroupStatus(
        id=handle.id,
        state=state,
        source=(progress.source if progress else memo.get("source", "")),
        error=error or (progress.error if progress else None),
        destinations=destinations,
        started_at=iso_utc(description.start_time),
        **figures,
    )


async def _running_figures(
    client: StaccatoClient,
    description: Any,
    memo: dict[str, Any],
    progress: FanOutProgress | None,
    rows: list[DestinationStatus],
) -> dict[str, Any]:
    """The group's phase, size, staging figures, retry note and cancel request, read
    as a single transfer's ``status`` reads them (:meth:`StaccatoClient._status`): the
    ``progress`` query's while a worker answers, else what Temporal holds without one:
    the size the group wrote into its memo (patch fan-out-size-memo), the phase its
    pending ``stage_source`` activity (or a destination's started run: ``rows``) shows,
    that activity's last heartbeat (:func:`staccato.client.staging_figures`), and the
    note of what a worker finds (:func:`staccato.client.no_worker_note`)."""
    from staccato.client import (
        cancel_requested_at,
        cancel_requested_of,
        no_worker_note,
        staging_figures,
    )

    figures: dict[str, Any] = {
        "phase": progress.phase if progress else None,
        "bytes_total": progress.bytes_total if progress else None,
        "staged_bytes": progress.staged_bytes if progress else None,
        "staging_rate_bytes_per_s": None,
    }
    if description.status != WorkflowExecutionStatus.RUNNING:
        return figures
    cancel_requested = cancel_requested_of(description)
    figures["cancel_requested"] = cancel_requested
    if cancel_requested:  # when, as a single transfer's (tester71: no time)
        figures["cancel_requested_at"] = await cancel_requested_at(
            client.temporal, description.id, description.run_id
        )
    raw = description.raw_description
    no_worker: str | None = None
    if progress is None:
        total = memo.get("bytes_total")
        if isinstance(total, int) and not isinstance(total, bool):
            figures["bytes_total"] = total
        if any(row.run_id for row in rows):
            figures["phase"] = "copy"
        begun = bool(raw.pending_activities or raw.pending_children or figures["phase"])
        no_worker = figures["last_retry_error"] = no_worker_note(
            description, begun=begun, cancel_requested=cancel_requested, what="group"
        )
    now = datetime.now(UTC)
    for pending in raw.pending_activities:
        staging = pending.activity_type.name == "stage_source"
        rate: float | None = None
        if staging:
            if progress is None:
                figures["phase"] = "staging"
            staged = await staging_figures(client.temporal, pending, now)
            staged_bytes, rate = staged if staged is not None else (0, None)
            if figures["phase"] == "staging":
                figures["staged_bytes"] = staged_bytes
                # no worker, or a cancel requested: its last rate is history
                if no_worker is None and not cancel_requested:
                    figures["staging_rate_bytes_per_s"] = rate
        # the endpoint its attempts talk to, named when one timed out for want of
        # heartbeats (as a transfer's retry line names its source and destination)
        retrying = await client.retry_of(
            pending, str(memo.get("source") or "") or (progress.source if progress else None)
        )
        if retrying is not None and (no_worker is not None or rate is None):
            # a retried attempt that moves bytes again is no longer retrying
            retried, figures["next_attempt_at"] = retrying
            figures["last_retry_error"] = f"{no_worker}; {retried}" if no_worker else retried
    if figures["phase"] == "staging" and figures["staged_bytes"] is None:
        figures["staged_bytes"] = 0  # staging, nothing heartbeated yet
    return figures


async def _row_from_its_run(client: StaccatoClient, group: Any, row: DestinationStatus) -> None:
    """Fill ``row`` from its destination's own transfer run, read without a worker
    (Temporal's description, the run's memo or result: :meth:`StaccatoClient.status`),
    for a running ``group`` (its description) whose worker does not answer the progress
    query. Only a run the group started counts (its memo names the group, and it began
    after the group did): the destination's latest run may be an older transfer's, and
    the row then stays ``scheduled``."""
    from staccato.ids import transfer_id

    row.transfer_id = transfer_id(row.destination)
    try:
        child = await client.temporal.get_workflow_handle(row.transfer_id).describe()
        memo = await child.memo()
        if memo.get("group") != group.id or child.start_time < group.start_time:
            return
        status = await client.status(row.transfer_id, run_id=child.run_id)
    except (RPCError, TransferNotFoundError):  # not started yet: no run of its own
        return
    row.run_id, row.state, row.error = child.run_id, status.state, status.error
    row.bytes_done, row.bytes_total, row.phase = (
        status.bytes_done,
        status.bytes_total,
        status.phase,
    )
    if status.state == TransferState.completed:
        row.bytes, row.checksum = status.bytes_total, status.checksum


async def _described_group(handle: WorkflowHandle[Any, Any], group: str) -> Any:
    """The description of the group ``handle`` names (``group``: as given).

    Raises:
        TransferNotFoundError: no such workflow, or not a fan-out group.
        TypeError: ``group`` is not a str.
    """
    require_str(group, "group", GROUP_NAME)
    try:
        description = await handle.describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise TransferNotFoundError(f"no fan-out group {group!r}") from None
        raise
    if description.workflow_type != GROUP_TYPE:
        raise TransferNotFoundError(f"{group} is not a fan-out group")
    return description


async def follow_group(
    client: StaccatoClient, group: str, *, interval_s: float = 1.0
) -> AsyncIterator[GroupStatus]:
    """Yield the group's status every ``interval_s`` seconds until it ends (the last
    one yielded is the final status)."""
    from staccato.client import following

    # each status's queries wait at most FOLLOW_QUERY_S (a dead worker said promptly)
    async for current in follow_until_ended(
        lambda: following(group_status(client, group)), _TERMINAL, interval_s
    ):
        yield current


async def wait_group(client: StaccatoClient, group: str) -> GroupStatus:
    """Wait for the group to end (one long poll, and a look at its state every
    :data:`_FAILED_LOOK_S` s: a group that says ``failed`` has ended for its caller,
    while its run still releases the staged entry) and return its final status.

    Raises:
        TransferNotFoundError: no such group, or ``group`` names another workflow
            type (a transfer's or dataset's id), said at once as
            :func:`group_status` says it.
    """
    handle = client.temporal.get_workflow_handle(group, result_type=FanOutProgress)
    await _described_group(handle, group)
    ended = asyncio.ensure_future(handle.result())
    try:
        while True:
            done, _ = await asyncio.wait({ended}, timeout=_FAILED_LOOK_S)
            if done:
                break
            # a group that failed (its source could not be read) says so while its run
            # still releases the staged entry, which may wait a minute for a hung
            # staging attempt's lock: it has ended for its caller
            current = await group_status(client, group)
            if current.state == GroupState.failed:
                return current
    finally:
        if not ended.done():
            ended.cancel()
            with contextlib.suppress(asyncio.CancelledError, WorkflowFailureError):
                await ended
    try:
        ended.result()
    except WorkflowFailureError:
        pass  # failed or cancelled: the status says which
    return await group_status(client, group)


#: seconds between the looks of :func:`wait_group` at a running group's state
_FAILED_LOOK_S = 5.0


async def list_groups(client: StaccatoClient, *, limit: int = 50) -> list[GroupStatus]:
    """Recent fan-out groups, newest first by start time (one row per group id;
    :func:`staccato.listing.list_rows`)."""
    from staccato.listing import list_rows

    rows = await list_rows(client, types=(GROUP_TYPE,), limit=limit)
    return [row for row in rows if isinstance(row, GroupStatus)]


def destination_line(row: DestinationStatus) -> str:
    """One destination's line: ``DESTINATION  state  done/total (phase)  error``."""
    # scheduled: its transfer has not started (the source is being staged, or next)
    shown = "waiting" if row.state == TransferState.scheduled else row.state.value
    text = f"  {redact(row.destination)}  {shown}"
    if row.bytes_total is not None and row.bytes_done is not None:
        rate, eta = (
            (row.rate_bytes_per_s, row.eta_s)
            if row.state == TransferState.running
            else (None, None)
        )
        ended = (
            units.ended_short_text(row.bytes_done, row.bytes_total)
            if row.state in (TransferState.failed, TransferState.cancelled)
            else None
        )  # a failed 0-byte copy is not "0 B / 0 B (100%)"
        text += f"  {ended or units.progress(row.bytes_done, row.bytes_total, rate, eta)}"
    if row.phase and row.state == TransferState.running:
        text += f" ({row.phase})"
    if row.error:
        text += f": {row.error}"
    return text


def status_lines(status: GroupStatus) -> list[str]:
    """The human ``status`` of a group: a header line (which says a cancel requested
    that has not taken effect, whatever the phase), then one line per destination."""
    done = sum(1 for d in status.destinations if d.state == TransferState.completed)
    cancelling = ""
    if status.cancel_requested:  # when, as a single transfer's status says it
        at = f" at {status.cancel_requested_at}" if status.cancel_requested_at else ""
        cancelling = f", cancel requested{at}"
    lines = [
        f"group {status.id}: {status.state.value}{cancelling}, "
        f"{done}/{len(status.destinations)} destinations completed",
        f"  source: {redact(status.source)}",
    ]
    if status.error:
        lines.append(f"  error: {status.error}")
    if status.phase == "staging" and status.state == GroupState.running:
        staged, rate = status.staged_bytes or 0, status.staging_rate_bytes_per_s
        left = None if status.bytes_total is None else status.bytes_total - staged
        eta = units.eta(left, rate) if left is not None else None
        lines.append(
            "  staging the source: " + units.progress(staged, status.bytes_total, rate, eta)
        )
    if status.last_retry_error and status.state == GroupState.running:
        # no worker answers (what then takes effect), or the staging read retries: the
        # words of a single transfer's status (``retrying: ...``)
        when = f" (next attempt at {status.next_attempt_at})" if status.next_attempt_at else ""
        lines.append(f"  retrying: {status.last_retry_error}{when}")
    for row in status.destinations:
        lines.append(destination_line(row))
        if row.left_behind:  # the words of a single transfer's end (cp, status)
            lines.append(f"    left behind: {shown_name(row.left_behind)}")
    return lines
