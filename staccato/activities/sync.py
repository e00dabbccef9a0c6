"""The ``sync_check`` activity: does the destination already match the source at the
transfer's ``--sync-level``? (The comparison itself: :mod:`staccato.sync`.)

Runs after ``stat`` of the source, only for transfers with a sync level. The levels
up to ``mtime`` stat the destination and read no data. ``checksum`` may read the
source and the destination once each (where they keep no stored checksum): it then
heartbeats per chunk like ``verify``, so a killed worker's check is retried after the
heartbeat timeout and a cancel reaches it.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import CancelledError

from staccato import secrets
from staccato.activities.errors import mapped_errors
from staccato.activities.transfer import (
    HeartbeatStopped,
    ThrottledHeartbeat,
    check_file_roots,
    remove_leftovers,
)
from staccato.endpoints import get_driver
from staccato.endpoints.base import keepalive_hook
from staccato.models import SyncInput, SyncLevel, SyncResult
from staccato.sync import compare
from staccato.urls import parse_url


@activity.defn(name="sync_check")
def sync_check(request: SyncInput) -> SyncResult:
    """Compare the destination with the source (stat'ed as ``request.source_info``)
    at ``request.level``.

    Returns:
        Whether the destination is up to date, and why (or why not).

    Raises:
        ApplicationError: a mapped :mod:`staccato.errors` failure (the destination
            cannot be compared, the source changed while its checksum was read...).
        CancelledError: the activity was cancelled while reading.
    """
    if request.level != SyncLevel.checksum:
        # two stats, run like ``stat`` (a local activity first): no heartbeats, so no
        # keepalive hook either (drivers then take no long waits)
        return _sync_check(request)
    with keepalive_hook(ThrottledHeartbeat()):
        try:
            return _sync_check(request)
        except HeartbeatStopped as err:
            raise CancelledError(f"sync check of {request.destination} stopped: {err}") from None


@mapped_errors
def _sync_check(request: SyncInput) -> SyncResult:
    check_file_roots(request.source, request.destination)
    source = secrets.source_url(request.source, request.source_secret)
    destination = parse_url(request.destination)
    result = compare(
        request.level,
        get_driver(source.scheme),
        source,
        request.source_info,
        get_driver(destination.scheme),
        destination,
        chunk_size=request.chunk_size,
        algorithm=request.checksum.value,
    )
    if result.up_to_date and request.sweep_leftovers:
        # no prepare follows: the leftovers of earlier runs go now (its own session
        # key is none of theirs: this run opened no session)
        remove_leftovers(request.destination, f"sync-check-{activity.info().workflow_run_id}")
    activity.logger.info(
        "sync check %s (%s): %s; read %d source bytes, %d destination bytes",
        request.destination,
        request.level.value,
        result.reason,
        result.source_bytes_read,
        result.destination_bytes_read,
    )
    return result
