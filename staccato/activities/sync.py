"""The ``sync_check`` activity: does the destination already match the source at the
transfer's ``--sync-level``? (The comparison itself: :mod:`staccato.sync`.)

Runs after ``stat`` of the source, only for transfers with a sync level. The levels
up to ``mtime`` stat the destination and read no data. ``checksum`` may read the
source and the destination once each (where they keep no stored checksum): it then
heartbeats per chunk like ``verify``, so a killed worker's check is retried after the
heartbeat timeout and a cancel reaches it.
"""

from __future__ import annotations

import os
import time

from temporalio import activity
from temporalio.exceptions import CancelledError

from staccato import secrets
from staccato.activities.errors import mapped_errors
from staccato.activities.transfer import check_file_roots
from staccato.endpoints import get_driver
from staccato.endpoints.base import keepalive_hook
from staccato.models import SyncInput, SyncLevel, SyncResult
from staccato.sync import compare
from staccato.urls import parse_url

_HEARTBEAT_EVERY_S = 0.5


class _Stopped(Exception):
    """The check was cancelled (the transfer was cancelled) or the worker is gone."""


class _Beat:
    """A keepalive hook: heartbeats at most every 0.5 s; raises :class:`_Stopped`
    once the activity is cancelled or the worker process is gone."""

    def __init__(self) -> None:
        self._last = 0.0
        self._parent = os.getppid()

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self._last < _HEARTBEAT_EVERY_S:
            return
        self._last = now
        if os.getppid() != self._parent:
            raise _Stopped("worker process is gone")
        activity.heartbeat()
        if activity.is_cancelled():
            raise _Stopped("cancelled")


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
    with keepalive_hook(_Beat()):
        try:
            return _sync_check(request)
        except _Stopped as err:
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
    activity.logger.info(
        "sync check %s (%s): %s; read %d source bytes, %d destination bytes",
        request.destination,
        request.level.value,
        result.reason,
        result.source_bytes_read,
        result.destination_bytes_read,
    )
    return result
