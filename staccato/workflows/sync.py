"""The transfer workflow's sync-level step (``TransferOptions.sync_level``): one
``sync_check`` activity after the source's stat, and the result of a transfer that
found its destination up to date.

History: only transfers with a sync level run it, behind ``workflow.patched
("sync-level")``: a version marker plus one activity (levels up to ``mtime``: a
local activity, one marker event; ``checksum``, which may read both objects: a
regular activity with heartbeats, three events plus a workflow task's three).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from staccato.models import (
        ObjectInfo,
        SyncInput,
        SyncLevel,
        SyncResult,
        TransferRequest,
        TransferResult,
        VerifyMode,
    )

from staccato.workflows.calls import RETRY, SHORT_TIMEOUT, copy_timeout, short_activity

#: how each level checked the destination, as ``TransferResult.verified`` reports it
_CHECKED_BY = {
    SyncLevel.exists: VerifyMode.none,
    SyncLevel.size: VerifyMode.size,
    SyncLevel.mtime: VerifyMode.size,
    SyncLevel.checksum: VerifyMode.checksum,
}


async def check_destination(
    request: TransferRequest,
    info: ObjectInfo,
    *,
    budget: timedelta,
    heartbeat_timeout: timedelta,
    sweep_leftovers: bool = True,
) -> SyncResult:
    """Run ``sync_check``: whether the destination already matches the source (stat'ed
    as ``info``) at ``request.options.sync_level``.

    Args:
        budget: what is left of the retry budget (``schedule_to_close_timeout``).
        heartbeat_timeout: for a checksum check, which reads and heartbeats per chunk.
        sweep_leftovers: :attr:`staccato.models.SyncInput.sweep_leftovers`.

    Raises:
        ActivityError: the check failed for good (the destination cannot be compared).
    """
    options = request.options
    assert options.sync_level is not None
    check = SyncInput(
        source=request.source,
        source_info=info,
        destination=request.destination,
        level=options.sync_level,
        chunk_size=options.chunk_size,
        checksum=options.checksum,
        source_secret=request.source_secret,
        sweep_leftovers=sweep_leftovers,
    )
    if options.sync_level != SyncLevel.checksum:  # two stats: a short step
        return await short_activity("sync_check", check, SyncResult, budget=budget)
    reading = copy_timeout(2 * info.size)  # the source and the destination, once each
    return await workflow.execute_activity(
        "sync_check",
        check,
        result_type=SyncResult,
        start_to_close_timeout=reading + SHORT_TIMEOUT,
        schedule_to_close_timeout=budget + reading,
        heartbeat_timeout=heartbeat_timeout,
        retry_policy=RETRY,
    )


def up_to_date_result(
    request: TransferRequest, info: ObjectInfo, check: SyncResult, duration: timedelta
) -> TransferResult:
    """The result of a transfer whose destination already matched: nothing copied.

    ``bytes`` is the object's size (what the destination holds), ``checksum`` the
    destination's when the level compared checksums, else ``""``.
    """
    options = request.options
    assert options.sync_level is not None
    return TransferResult(
        source=request.source,
        destination=request.destination,
        bytes=info.size,
        checksum=check.checksum or "",
        verified=_CHECKED_BY[options.sync_level],
        duration_s=duration.total_seconds(),
        source_version=info.version,
        chunk_size=options.chunk_size,
        streams=options.streams,
        up_to_date=True,
        sync_level=options.sync_level,
    )
