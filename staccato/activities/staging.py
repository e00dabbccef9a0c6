"""The staging activities: ``stage_source`` reads a source once into the worker's
staging cache (:mod:`staccato.staging`); ``release_staged`` removes the transfer's pin
when it ends. The streams then read the entry (``StreamInput.staged``) through
:func:`staged_source`, by offset, with the usual resume, verify and publish.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pydantic import ValidationError
from temporalio import activity

from staccato import secrets, settings
from staccato.activities.errors import mapped_errors
from staccato.activities.liveness import heartbeating
from staccato.activities.pacing import Pacer, group_key, slot_key
from staccato.activities.retry_deadline import latest, progressed, within_retry_for
from staccato.activities.stream_guard import guarded, touch
from staccato.activities.stream_progress import HEARTBEAT_EVERY_S, StreamStopped, heartbeat
from staccato.activities.transfer import check_file_roots
from staccato.endpoints import get_driver
from staccato.endpoints.base import Reader, keepalive_hook
from staccato.errors import RetryableError, StaccatoError
from staccato.models import ObjectInfo, StageInput, StageResult, StagingProgress
from staccato.staging import StagingCache, entry_key, shown_url
from staccato.urls import EndpointURL, redact
from staccato.workflows.failures import STAGED_BYTES_DETAIL

#: bytes read from the source per read call while staging
_READ_BLOCK = 1024 * 1024


def worker_cache() -> StagingCache:
    """The staging cache of this worker's settings (``STACCATO_STAGING_DIR``,
    ``STACCATO_STAGING_MAX_BYTES``)."""
    config = settings.current()
    return StagingCache(config.effective_staging_dir, config.staging_max_bytes)


def _previous_progress_at() -> float | None:
    details = activity.info().heartbeat_details
    try:
        return StagingProgress.model_validate(details[0]).progress_at if details else None
    except ValidationError:
        return None


def _previous_bytes_staged() -> int:
    """Bytes the previous attempt had staged at its last heartbeat (0: none)."""
    details = activity.info().heartbeat_details
    try:
        return StagingProgress.model_validate(details[0]).bytes_staged if details else 0
    except ValidationError:
        return 0


def _staging_endpoint(request: StageInput) -> str:
    return f"staging {redact(request.source)}"


@activity.defn(name="stage_source")
@within_retry_for(_previous_progress_at, watch_hangs=_staging_endpoint)
@mapped_errors
def stage_source(request: StageInput) -> StageResult:
    """Read ``request.source`` whole into the staging cache (or find it there) and pin
    the entry for the transfer. Heartbeats :class:`StagingProgress` every 0.5 s.

    Raises:
        ApplicationError: mapped from PermanentError (the cache directory is not
            writable, the cap has no room: the message names the setting) or a
            retryable source failure (the next attempt stages from byte 0); that one
            non-retryable once ``request.retry_for_s`` passed without an attempt
            reading source bytes (:mod:`staccato.activities.retry_deadline`).
    """
    check_file_roots(request.source)
    info = request.source_info
    cache = worker_cache()
    key = entry_key(request.source, info.version)
    url = secrets.source_url(request.source, request.source_secret)
    driver = get_driver(url.scheme)
    staged = 0
    #: bytes another transfer has staged of the entry this one waits for
    waited = 0
    last = 0.0
    began = time.monotonic()
    progress_at = _previous_progress_at()  # when an attempt last read source bytes
    seen = 0  # bytes staged (or waited for) at the last beat

    def beat(force: bool = False) -> None:
        nonlocal last, progress_at, seen
        touch()
        now = time.monotonic()
        if force or now - last >= HEARTBEAT_EVERY_S:
            last = now
            # paced: the bytes paid for over a window that includes the pacer's start
            # credit, never above the cap (Pacer.average); else bytes over time
            rate = (
                0.0
                if not staged
                else round(pacer.average(began, now), 1)
                if pacer.since is not None
                else round(staged / max(now - began, 1e-6), 1)
            )
            if max(staged, waited) > seen:
                seen = max(staged, waited)
                progress_at = latest(progress_at, progressed())
            heartbeat(
                StagingProgress(
                    bytes_staged=max(staged, waited),
                    rate_bytes_per_s=rate,
                    progress_at=progress_at,
                )
            )

    def waiting(so_far: int) -> None:
        nonlocal waited
        waited = so_far

    # paced as a copy stream: the transfer's own max_rate; its governors' share of
    # every stream they count for the ticket (the one reader of the transfer's share)
    pacer = Pacer(
        request.max_rate,
        slot_key(request.ticket, request.governors)
        if request.ticket and request.governors
        else None,
        ticket_streams=request.ticket_streams,
        # a large file of a dataset: one stream's share of the dataset's max_rate
        group_key=(
            group_key(request.rate_group, request.rate_part) if request.rate_group else None
        ),
    )

    def paced_wait(seconds: float) -> None:
        time.sleep(seconds)
        beat()

    def fill(write: Callable[[bytes | memoryview], None]) -> None:
        nonlocal staged, waited
        waited = 0  # staging it here after all: from byte 0
        buffer = memoryview(bytearray(min(_READ_BLOCK, max(info.size, 1))))
        with driver.open_read(url, info, 0, info.size) as reader:
            while staged < info.size:
                step = pacer.step(paced_wait) if pacer.active else None
                want = min(len(buffer), info.size - staged, step or len(buffer))
                n = reader.readinto(buffer[:want])
                if n == 0:
                    raise RetryableError(
                        f"{shown_url(request.source)} ended at byte {staged} while staging, "
                        f"expected {info.size}; staging it again"
                    )
                write(buffer[:n])
                staged += n
                beat()
                if pacer.active:  # unpaced now (no rate): counted, no wait
                    pacer.take(n, paced_wait)

    damaged = cache.damage_note(key)
    if damaged is not None:  # a stream dropped it: said as such, not as a first stage
        activity.logger.warning("staging %s again: %s", shown_url(request.source), damaged)
    timeout = activity.info().heartbeat_timeout
    with guarded(timeout.total_seconds() if timeout else None), keepalive_hook(beat):
        try:
            beat(force=True)
            manifest, reused = cache.stage(
                key,
                shown_url(request.source),
                info.version,
                info.size,
                request.transfer_id,
                fill,
                waiting=waiting,
            )
        except StreamStopped as stopped:  # cancelled, or the worker is going away
            raise RetryableError(f"staging stopped ({stopped}) at byte {staged}") from None
        except StaccatoError as err:
            # should the group fail (this error, or the give-up once --retry-for passed,
            # which keeps its details): its status keeps the bytes staged, which a
            # retried attempt that hung at once had heartbeated as 0 (the group showed
            # "staging the source: 0 B" after 17.6 MiB)
            most = max(staged, waited, _previous_bytes_staged())
            if most:
                err.details = (*err.details, {STAGED_BYTES_DETAIL: most})
            raise
    activity.logger.info(
        "staged %s (%d bytes) as %s%s",
        manifest.url,
        manifest.size,
        key[:12],
        " (found in the cache)" if reused else "",
    )
    return StageResult(key=key, size=manifest.size, reused=reused)


@activity.defn(name="release_staged")
@heartbeating
@mapped_errors
def release_staged(request: StageInput) -> None:
    """Remove the transfer's pin of its entry (the entry stays, least recently used
    first to go when room is needed). Absent pin or entry: nothing to do."""
    key = entry_key(request.source, request.source_info.version)
    cache = worker_cache()
    if cache.path(key).exists():
        cache.unpin(key, request.transfer_id)


class StagedSource:
    """Stands in for the source's driver in a stream: reads come from the staging
    cache entry ``key`` (each cache chunk's CRC32C checked) instead of the origin."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.cache = worker_cache()

    def open_read(self, url: EndpointURL, info: ObjectInfo, offset: int, length: int) -> Reader:
        """A reader of ``[offset, offset + length)`` of the staged copy.

        Raises:
            StagedEntryLostError: the entry is not here or is damaged (the workflow
                stages the source again).
        """
        return self.cache.open_reader(self.key, offset, length)


def staged_source(key: str) -> StagedSource:
    """The source reader of a stream whose input says ``staged=key``."""
    return StagedSource(key)
