"""``FanOutWorkflow``: one source to several destinations, the source read once.

stat -> stage -> one child ``TransferWorkflow`` per destination, all at once.

The group stats the source and stages it once into the worker's staging cache (the
``stage_source`` activity, the entry pinned under the group id until the group
ends), then starts one child transfer per destination under that destination's
transfer id (its lock), with ``staged_from_group`` set: the child skips its own stat
and staging and its streams read the staged entry. Each child keeps its own write
session, checkpoint, verify and publish; one failing or being slow never stops the
others. A child whose streams find the entry damaged or gone stages the source again
itself (into the same cache entry, so children waiting on it share that one read):
the one case where the origin is read again.

The staging cache is per machine: the children's streams must run on the worker
machine that staged (one worker machine per fan-out); a stream on another machine
finds no entry and its transfer stages the source again there.

An empty source is not staged: the children copy it as usual.

A large file of a dataset to several roots (``request.rate_group``, set by the
dataset when its own ``--max-rate`` caps it whole): the staging read reads at most the
dataset's share per reader of its source, the children's streams (through
``StagedFromGroup.rate_group``) its share per writer of a root; the group answers
``streams_running`` (1 while it stages) for the workers that count them
(:mod:`staccato.workers.rates`). Activity and child inputs only: a group started
without ``rate_group`` runs as before.

Result: a :class:`FanOutProgress` with one :class:`DestinationOutcome` per
destination; the group ends ``completed`` when every child completed,
``completed_with_errors`` otherwise, ``failed`` when the source could not be read
(no child started), ``cancelled`` when cancelled (children are cancelled with it).

History: stat (a local activity: a marker), stage and release (3 events each and a
workflow task), per child ~8 events (initiated, started, completed and the workflow
tasks), a search-attribute upsert per group state: ~50 events for 4 destinations.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy, SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    WorkflowAlreadyStartedError,
)

with workflow.unsafe.imports_passed_through():
    from staccato.ids import transfer_id
    from staccato.models import (
        DestinationOutcome,
        FanOutProgress,
        FanOutRequest,
        GroupState,
        ObjectInfo,
        StagedFromGroup,
        StageInput,
        StageResult,
        TransferRequest,
        TransferResult,
        TransferState,
    )
    from staccato.workflows import search_attributes as sa

from staccato.workflows.calls import (
    RETRY,
    SHORT_HEARTBEAT_TIMEOUT,
    SHORT_TIMEOUT,
    copy_timeout,
    sealed,
    short_activity,
)
from staccato.workflows.failures import decode_input, left_behind_of, reason, staged_in
from staccato.workflows.transfer import STREAMS_RUNNING_QUERY


def _decode(raw: RawValue) -> FanOutRequest:
    """The group's input, validated (see :func:`decode_input`).

    Raises:
        ApplicationError: non-retryable, naming each invalid field (or the encoding).
    """
    return decode_input(raw, FanOutRequest, "FanOutWorkflow")


#: patch: the group writes the source's size into its memo once stat-ed, so that its
#: ``status`` without a worker shows "staging the source: 24.0 MiB / 150.0 MiB"
SIZE_MEMO_PATCH = "fan-out-size-memo"

#: the staging read's heartbeat timeout (a slow disk sync must not pass for a dead worker)
STAGE_HEARTBEAT_TIMEOUT = timedelta(seconds=20)


# a start without input makes the SDK's call of ``run`` raise TypeError: fail that run at
# once (as TransferWorkflow does) instead of retrying its workflow task forever
@workflow.defn(name="FanOutWorkflow", failure_exception_types=[TypeError])
class FanOutWorkflow:
    """Copies ``request.source`` to every one of ``request.destinations``."""

    def __init__(self) -> None:
        self._progress: FanOutProgress | None = None
        self._staging_reads = 0  # stage_source running (streams_running)

    @workflow.run
    async def run(self, raw_request: RawValue) -> FanOutProgress:
        """Run the group; returns every destination's outcome (never fails for a
        destination's failure: that is in its outcome).

        Args:
            raw_request: a :class:`FanOutRequest` as a JSON payload, validated here so
                that a malformed start from any Temporal client fails the run naming
                the field instead of failing its workflow task forever.

        Raises:
            ApplicationError: non-retryable: invalid input, or the source could not be
                stat-ed or staged (no destination was started; the message says why).
        """
        request = _decode(raw_request)
        group_id = workflow.info().workflow_id
        progress = self._progress = FanOutProgress(
            group_id=group_id,
            state=GroupState.running,
            source=request.source,
            destinations=[
                DestinationOutcome(destination=d, transfer_id=transfer_id(d))
                for d in request.destinations
            ],
        )
        self._show()
        budget = timedelta(seconds=request.options.retry_for_s)
        stage_input: StageInput | None = None
        try:
            try:
                info: ObjectInfo = await short_activity(
                    "stat",
                    request.source,
                    ObjectInfo,
                    *sealed(request.source_secret),
                    budget=budget,
                )
                progress.bytes_total = info.size
                progress.source_version = info.version
                if workflow.patched(SIZE_MEMO_PATCH):
                    # the size, for a status no worker answers (the query needs one)
                    workflow.upsert_memo({"bytes_total": info.size})
                staged: StagedFromGroup | None = None
                if info.size > 0:
                    progress.phase = "staging"
                    self._show()
                    stage_input = StageInput(
                        transfer_id=group_id,
                        source=request.source,
                        source_info=info,
                        source_secret=request.source_secret,
                        max_rate=request.options.max_rate,
                        retry_for_s=request.options.retry_for_s,
                        # a large file of a dataset: one stream's share of its max_rate
                        rate_group=request.rate_group if request.options.max_rate else None,
                        rate_part="read"
                        if request.rate_group and request.options.max_rate
                        else None,
                    )
                    self._staging_reads += 1
                    try:
                        result = await self._stage(request, stage_input, info, budget)
                    finally:
                        self._staging_reads -= 1
                    progress.staged_bytes = result.size
                    staged = StagedFromGroup(
                        group_id=group_id,
                        key=result.key,
                        source_info=info,
                        rate_group=stage_input.rate_group,
                    )
            except (ActivityError, ApplicationError) as err:
                if isinstance(err.cause, CancelledError):
                    raise asyncio.CancelledError() from None
                why = f"reading the source failed: {reason(err)}"
                progress.error = why
                if progress.phase == "staging" and progress.staged_bytes is None:
                    # what was staged stays shown (a status read no heartbeat then, and
                    # said 0 B); the query's figure only: no command
                    progress.staged_bytes = staged_in(err)
                for outcome in progress.destinations:
                    outcome.state = TransferState.failed
                    outcome.error = why
                self._set_state(GroupState.failed)
                raise ApplicationError(why, non_retryable=True) from None
            progress.phase = "copy"
            self._show()
            await asyncio.gather(
                *(self._child(request, outcome, staged) for outcome in progress.destinations)
            )
        except asyncio.CancelledError:
            for outcome in progress.destinations:
                if outcome.state not in (TransferState.completed, TransferState.failed):
                    outcome.state = TransferState.cancelled
                    outcome.error = outcome.error or "cancelled"
            self._set_state(GroupState.cancelled)
            raise
        finally:
            if stage_input is not None:
                await self._release(stage_input)
        progress.phase = "done"
        every = all(o.state == TransferState.completed for o in progress.destinations)
        self._set_state(GroupState.completed if every else GroupState.completed_with_errors)
        return progress

    async def _stage(
        self, request: FanOutRequest, stage_input: StageInput, info: ObjectInfo, budget: timedelta
    ) -> StageResult:
        """The group's one ``stage_source`` activity: its result."""
        result: StageResult = await workflow.execute_activity(
            "stage_source",
            stage_input,
            result_type=StageResult,
            activity_id="stage-1",
            start_to_close_timeout=copy_timeout(info.size),
            schedule_to_close_timeout=budget + copy_timeout(info.size),
            heartbeat_timeout=max(
                STAGE_HEARTBEAT_TIMEOUT,
                timedelta(seconds=request.options.heartbeat_timeout_s or 0),
            ),
            retry_policy=RETRY,
        )
        return result

    async def _child(
        self,
        request: FanOutRequest,
        outcome: DestinationOutcome,
        staged: StagedFromGroup | None,
    ) -> None:
        """Run the child transfer of one destination and record its outcome (a child's
        failure is recorded, never raised; a cancel of the group propagates)."""
        child: TransferRequest = request.child(outcome.destination, staged)
        try:
            handle = await workflow.start_child_workflow(
                "TransferWorkflow",
                child,
                id=outcome.transfer_id,
                result_type=TransferResult,
                parent_close_policy=workflow.ParentClosePolicy.REQUEST_CANCEL,
                memo={**sa.memo(child), "group": workflow.info().workflow_id},
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(sa.SOURCE, sa.keyword(child.source)),
                        SearchAttributePair(sa.DESTINATION, sa.keyword(child.destination)),
                        SearchAttributePair(sa.STATE, TransferState.scheduled.value),
                    ]
                ),
                static_summary=f"{child.source} -> {child.destination}"[:200],
                retry_policy=RetryPolicy(maximum_attempts=1),
            )
        except WorkflowAlreadyStartedError:
            outcome.state = TransferState.failed
            outcome.error = (
                f"destination busy: {outcome.destination} is being written by transfer "
                f"{outcome.transfer_id}"
            )
            self._show()
            return
        outcome.run_id = handle.first_execution_run_id
        outcome.state = TransferState.running
        self._show()
        try:
            result = await handle
        except ChildWorkflowError as err:
            cause: BaseException = err  # the transfer's own failure: its reason
            while isinstance(cause, ChildWorkflowError) and cause.cause is not None:
                cause = cause.cause
            cancelled = isinstance(cause, CancelledError)
            outcome.state = TransferState.cancelled if cancelled else TransferState.failed
            outcome.error = "cancelled" if cancelled else reason(cause)
            outcome.left_behind = None if cancelled else left_behind_of(cause)
            self._show()
            return
        outcome.state = TransferState.completed
        outcome.bytes = result.bytes
        outcome.checksum = result.checksum
        self._show()

    async def _release(self, stage_input: StageInput) -> None:
        """Remove the group's pin of the staged entry (best effort, shielded from a
        cancel of the group)."""
        call = workflow.execute_activity(
            "release_staged",
            stage_input,
            start_to_close_timeout=SHORT_TIMEOUT,
            heartbeat_timeout=SHORT_HEARTBEAT_TIMEOUT,
            retry_policy=RetryPolicy(maximum_attempts=5, maximum_interval=timedelta(seconds=10)),
        )
        try:
            await asyncio.shield(asyncio.ensure_future(call))
        except (ActivityError, asyncio.CancelledError) as err:
            workflow.logger.warning("releasing the staged copy failed: %s", err)

    def _set_state(self, state: GroupState) -> None:
        assert self._progress is not None
        if self._progress.state != state:
            self._progress.state = state
            workflow.upsert_search_attributes([sa.STATE.value_set(state.value)])
        self._show()

    def _show(self) -> None:
        """The Temporal UI's current-details line (no history event)."""
        p = self._progress
        assert p is not None
        counts: dict[str, int] = {}
        for outcome in p.destinations:
            counts[outcome.state.value] = counts.get(outcome.state.value, 0) + 1
        summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        workflow.set_current_details(f"**{p.state.value}** ({p.phase}): {summary}")

    @workflow.query(name=STREAMS_RUNNING_QUERY)
    def streams_running(self) -> int:
        """How many reads the group itself runs now: 1 while it stages the source,
        else 0 (its children's copy streams are theirs to tell). The workers pacing a
        dataset to several roots count a large file's group by it and its children
        (:mod:`staccato.workers.rates`). Costs no history."""
        return self._staging_reads

    @workflow.query
    def progress(self) -> FanOutProgress | None:
        """The group's state and every destination's (None before the run began)."""
        return self._progress
