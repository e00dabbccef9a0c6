"""The ``find_known_copy`` activity: is there a verified copy of this source version
to read instead of the origin? (The records and the check: :mod:`staccato.known_copies`.)

It runs on the control queue (``<task queue>-control``) in the worker's main process,
with the worker's Temporal client: it lists completed transfers of the same source
in visibility, reads their results (one ``GetWorkflowExecutionHistory`` of the close
event each), and checks the candidates in a thread (a file copy is read whole),
heartbeating every second meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

from temporalio import activity
from temporalio.client import Client, WorkflowExecution, WorkflowExecutionStatus

from staccato import known_copies, units
from staccato.activities.transfer import check_file_roots
from staccato.errors import StaccatoError
from staccato.links import LOCAL_ORIGIN_REASON, local_origin
from staccato.models import KnownCopy, KnownCopyInput, TransferResult
from staccato.workflows import search_attributes as sa

#: completed transfers of one source whose results are read at most (newest first)
MAX_RECORDS = 50
#: results read at once
_READ_CONCURRENCY = 8


def records_query(source: str) -> str | None:
    """The visibility query of completed transfers of ``source`` (its Keyword as the
    transfer set it, cut at 255 characters); None when the URL holds both quote
    characters (no string literal of the query language can hold it)."""
    value = sa.keyword(source)
    quote = "'" if "'" not in value else '"' if '"' not in value else None
    if quote is None:
        return None
    return (
        "WorkflowType = 'TransferWorkflow' AND ExecutionStatus = 'Completed' AND "
        f"StaccatoState = 'completed' AND StaccatoSource = {quote}{value}{quote}"
    )


class KnownCopyActivities:
    """The control worker's known-copy activity; it shares the worker's client.

    Args:
        client: the worker's client (pydantic data converter: results decode as
            :class:`TransferResult`).
    """

    def __init__(self, client: Client):
        self._client = client

    @activity.defn(name="find_known_copy")
    async def find_known_copy(self, request: KnownCopyInput) -> KnownCopy:
        """The first candidate copy of ``request.source`` at its version and size that
        still matches its record, or why there is none (then the origin is read).

        Never fails for a copy's sake: a copy that is gone, altered or unreadable is
        only a reason. Visibility errors (Temporal unreachable) raise and are retried
        by the workflow's policy, which reads the origin when they persist.
        """
        if local_origin(request.source):
            return KnownCopy(reason=LOCAL_ORIGIN_REASON)
        records = await self._records(request)
        if not records:
            return KnownCopy(reason="no verified copy of this source version is recorded")
        tried: list[str] = []
        for record in records[: request.max_candidates]:
            check = await self._check(record, request)
            if check.info is not None:
                activity.logger.info(
                    "reading %s from its copy %s: %s (%s read to check it)",
                    request.source,
                    record.url,
                    check.why,
                    units.size(check.bytes_read),
                )
                return KnownCopy(
                    url=record.url,
                    info=check.info,
                    checksum=record.checksum,
                    reason=f"a verified copy: {check.why}",
                )
            tried.append(f"{record.url}: {check.why}")
        more = len(records) - request.max_candidates
        return KnownCopy(
            reason="no recorded copy still matches its record ("
            + "; ".join(tried)
            + (f"; {more} more not checked" if more > 0 else "")
            + ")"
        )

    async def _records(self, request: KnownCopyInput) -> list[known_copies.Record]:
        """The records of copies of ``request.source`` at its version and size worth
        reading instead of it, ordered cheapest first (:func:`known_copies.order`)."""
        query = records_query(request.source)
        if query is None:
            return []
        executions: list[WorkflowExecution] = []
        async for execution in self._client.list_workflows(query, limit=MAX_RECORDS):
            if execution.id != request.transfer_id:
                executions.append(execution)
        bound = asyncio.Semaphore(_READ_CONCURRENCY)

        async def record(execution: WorkflowExecution) -> known_copies.Record | None:
            async with bound:
                activity.heartbeat()
                try:
                    result = await self._client.get_workflow_handle(
                        execution.id, run_id=execution.run_id, result_type=TransferResult
                    ).result(follow_runs=False)
                    result = TransferResult.model_validate(result)
                except Exception as err:  # another's workflow, an odd result: no record
                    activity.logger.debug("no copy record in %s: %s", execution.id, err)
                    return None
            info = request.source_info
            if (
                execution.status != WorkflowExecutionStatus.COMPLETED
                or result.up_to_date
                or result.destination_version is None
                or result.source != request.source
                or result.source_version != info.version
                or result.bytes != info.size
            ):
                return None
            closed = execution.close_time or datetime.now(UTC)
            return known_copies.Record(
                transfer_id=execution.id,
                url=result.destination,
                version=result.destination_version,
                checksum=result.checksum,
                closed_at=closed.timestamp(),
            )

        found = await asyncio.gather(*(record(e) for e in executions))
        return known_copies.order(
            (r for r in found if r is not None), request.destination, request.source
        )

    async def _check(
        self, record: known_copies.Record, request: KnownCopyInput
    ) -> known_copies.Check:
        """:func:`known_copies.check_copy` in a thread, heartbeating every second."""
        try:
            check_file_roots(record.url)
        except StaccatoError as err:
            return known_copies.Check(None, str(err))
        task = asyncio.ensure_future(
            asyncio.to_thread(
                known_copies.check_copy, record, request.source_info.size, request.chunk_size
            )
        )
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=1.0)
                if done:
                    return task.result()
                activity.heartbeat()
        finally:
            if not task.done():  # cancelled: the thread reads on; its result is dropped
                task.cancel()
                with contextlib.suppress(BaseException):
                    await asyncio.wait({task}, timeout=0)
