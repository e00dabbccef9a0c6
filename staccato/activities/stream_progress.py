"""A stream's progress: heartbeats with its checkpoint, and the minimum-rate watchdog.

Stalls: while a stream waits for its source (drivers call ``keepalive`` during long
waits), a minimum-throughput watchdog compares the bytes the source delivered with
``STACCATO_MIN_RATE_BYTES_PER_S`` over the last ``STACCATO_MIN_RATE_WINDOW_S`` of
reading time and fails the attempt with a retryable error naming the source and the
rate seen (so it shows in ``status`` as the last retry error); time spent writing to
the destination does not count against the source. A heartbeat that cannot be sent,
or a cancel (a pause, or Temporal giving up on the attempt), stops the stream at its
next heartbeat (:class:`StreamStopped`).
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable

from pydantic import ValidationError
from temporalio import activity

from staccato import units
from staccato.activities import stream_lease
from staccato.activities.liveness import note_sent
from staccato.activities.retry_deadline import progressed, reached
from staccato.activities.stream_guard import StreamAbandonedError, shield, touch
from staccato.endpoints.base import Reader
from staccato.errors import WORKER_STOPPING_RETRY_S, RetryableError, WorkerStoppingError
from staccato.models import Checkpoint

HEARTBEAT_EVERY_S = 0.5
#: between two heartbeats, a stream looks at its cancel this often (seconds): the
#: worker learns of a cancel or a terminate at its next heartbeat RPC (at most
#: ``stream_lease.HEARTBEAT_THROTTLE_S``, 1 s, after it), and the stream stopped only
#: at its own next heartbeat, up to 0.5 s later (a terminated S3 transfer's streams
#: went on ~2 s: tester69); a look is a byte of shared memory (``workers.flags``)
CANCEL_LOOK_S = 0.05
log = logging.getLogger("staccato.stream")


class StreamStopped(Exception):
    """The activity was cancelled (pause) or the worker is going away; the stream
    returns where it stopped (a pause), or fails its attempt with the retryable
    ``WorkerStopping`` when its worker shuts down (:func:`stopped_by_shutdown`). Not
    an error (hence no ``Error`` in its name).

    Attributes:
        cancelled: Temporal asked the attempt to stop (a pause, or the worker's
            graceful shutdown), and its result or failure is still awaited; False when
            the worker process or its heartbeat channel is gone (nobody awaits it).
    """

    def __init__(self, why: str, *, cancelled: bool = False) -> None:
        super().__init__(why)
        self.cancelled = cancelled


class RateWatchdog:
    """Fails a stream whose source is slower than a minimum rate.

    Time counts only while the stream reads from its source (``reading(True)``); the
    rate is the bytes delivered over the last ``window_s`` of that time.

    Args:
        source: the source URL as shown in messages (query values redacted).
        min_rate: bytes per second; 0 turns the watchdog off.
        window_s: seconds of reading time the rate is averaged over.
    """

    def __init__(self, source: str, min_rate: float, window_s: float) -> None:
        self._source = source
        self._min_rate = min_rate
        self._window_s = window_s
        self._clock = 0.0  # seconds spent reading, up to the start of the current spell
        self._since: float | None = None  # monotonic start of the current reading spell
        self._samples: deque[tuple[float, int]] = deque()  # (reading clock, bytes read)

    def reading(self, active: bool) -> None:
        """Start (True) or stop (False) counting time against the source."""
        now = time.monotonic()
        if active and self._since is None:
            self._since = now
        elif not active and self._since is not None:
            self._clock += now - self._since
            self._since = None

    def check(self, source_bytes: int) -> None:
        """Record that the source has delivered ``source_bytes`` so far.

        Raises:
            RetryableError: over the last window the source delivered less than the
                minimum rate; the message names the source, the rate and the settings.
        """
        if self._since is None or self._min_rate <= 0:
            return
        clock = self._clock + time.monotonic() - self._since
        samples = self._samples
        samples.append((clock, source_bytes))
        while len(samples) >= 2 and samples[1][0] <= clock - self._window_s:
            samples.popleft()
        first_clock, first_bytes = samples[0]
        span = clock - first_clock
        if span < self._window_s:
            return
        rate = (source_bytes - first_bytes) / span
        if rate < self._min_rate:
            raise RetryableError(
                f"source {self._source} is too slow: it delivered "
                f"{source_bytes - first_bytes} bytes in the last {span:.0f} s "
                f"({units.rate(rate)}, {rate:.0f} bytes/s), below the minimum of "
                f"{self._min_rate:.0f} bytes/s ({units.rate(self._min_rate)}) "
                f"over {self._window_s:g} s (worker settings STACCATO_MIN_RATE_BYTES_PER_S, "
                "STACCATO_MIN_RATE_WINDOW_S); retrying"
            )


class StreamProgress:
    """Tracks a stream's progress and heartbeats it, at most every 0.5 s; runs the
    source's :class:`RateWatchdog` at each heartbeat."""

    def __init__(
        self,
        segment: int,
        bytes_done: int,
        next_chunk: int,
        watchdog: RateWatchdog | None = None,
        length: int | None = None,
    ) -> None:
        self.segment = segment
        self.length = length  # bytes in the segment, for the heartbeat's summary
        self.watchdog = watchdog
        self.reader: Reader | None = None  # the source reader in use, for the watchdog
        self._closed_readers_bytes = 0
        self.bytes_done = bytes_done
        self.next_chunk = next_chunk
        self.bytes_read = 0
        self.in_flight = 0  # bytes of the chunk being read, not yet written
        self._copied = 0
        #: whether the chunk being read counts in the rate: on a first attempt, yes (a
        #: 64 MiB chunk on a slow link showed no rate for its whole read); on a retry,
        #: no (:meth:`checkpoint`)
        self.rate_counts_in_flight = True
        self._started = time.monotonic()
        #: when the stream first began to read its source (monotonic; None: not yet):
        #: the rate's clock starts there, not at the attempt's start, whose set-up
        #: (connections, the destination's durable chunks, the pacer's first word)
        #: moved nothing (tester75: a resumed attempt's rate read half its bytes')
        self._reading_since: float | None = None

        #: the stream's pacer's rate now (bytes/s; None: not paced), which bounds the
        #: rate a checkpoint shows (:meth:`checkpoint`); None: not paced at all
        self.rate_cap: Callable[[], float | None] | None = None
        self._last_beat = 0.0
        self._last_look = 0.0  # when the stream last looked at its cancel
        self._parent = os.getppid()
        #: earlier attempts' endpoint errors, carried in every checkpoint
        self.endpoint_errors = 0
        #: when the durable bytes last grew (Unix seconds; earlier attempts' included),
        #: carried in every checkpoint (:mod:`staccato.activities.retry_deadline`)
        self.progress_at: float | None = None
        #: the bytes an earlier attempt's last checkpoint reported (durable or in
        #: flight then): heartbeats report no fewer, so ``status`` does not fall back
        #: while a resumed stream sends again the chunk its predecessor had in flight
        self.reported_before = 0
        #: when this attempt last moved bytes (Unix seconds; see ``Checkpoint.moved_at``)
        self.moved_at: float | None = None
        self._moved_mark: tuple[int, int, int] | None = None
        #: when the bytes done last grew past any attempt's (Unix seconds; see
        #: ``Checkpoint.reached_at``), carried in every checkpoint
        self.reached_at: float | None = None
        self._furthest = 0  # the most bytes done any checkpoint reported

    def add(self, copied: int, read: int) -> None:
        if copied > 0:
            self.progress_at = progressed()
        self.bytes_done += copied
        self.in_flight = 0
        self._copied += copied
        self.bytes_read += read

    def reading(self, active: bool) -> None:
        """The stream starts (True) or stops (False) waiting on its source."""
        if active and self._reading_since is None:
            self._reading_since = time.monotonic()
        if self.watchdog is not None:
            self.watchdog.reading(active)

    def beat(self, force: bool = False) -> None:
        """Heartbeat if due.

        Raises:
            StreamStopped: cancellation was requested, the heartbeat could not be sent, or
                the worker process is gone.
            RetryableError: the source is below its minimum rate (:class:`RateWatchdog`).
        """
        now = time.monotonic()
        touch()
        if not force and now - self._last_beat < HEARTBEAT_EVERY_S:
            if now - self._last_look >= CANCEL_LOOK_S:
                self._last_look = now
                if cancel_seen():
                    raise StreamStopped("cancelled", cancelled=True)
            return
        self._last_beat = self._last_look = now
        if os.getppid() != self._parent:
            # The worker process died: this is a stale writer, stop now.
            raise StreamStopped("worker process is gone")
        heartbeat(self.checkpoint(now))
        if self.watchdog is not None:
            self.watchdog.check(self.source_bytes())

    def checkpoint(self, now: float | None = None, *, stopped: bool = False) -> Checkpoint:
        """The stream's checkpoint as of ``now`` (monotonic seconds; None: now); its
        rate 0 when ``stopped`` (the stream moves nothing any more)."""
        now = time.monotonic() if now is None else now
        done = max(self.bytes_done + self.in_flight, self.reported_before)
        rate = 0.0 if stopped else self._rate(now)
        cap = self.rate_cap() if self.rate_cap is not None and rate > 0 else None
        if cap is not None:
            # a paced stream reads at most its pacer's rate over time, after a start
            # credit (pacing.BURST_S) and a first step it reads at once: over the few
            # seconds since the attempt began those showed as more than the cap (4.34
            # MiB/s for --max-rate 4MiB summed over the streams), never sustained
            rate = min(rate, cap)
        rate = round(rate, 1)
        if done > max(self._furthest, self.reported_before):
            # further than any attempt got: progress for the hang watch's --retry-for
            self._furthest = done
            self.reached_at = reached()
        mark = (self.bytes_done, self.in_flight, self.bytes_read)
        if mark != self._moved_mark:  # bytes moved since the last checkpoint (or the start)
            self._moved_mark = mark
            self.moved_at = time.time()
        return Checkpoint(
            segment=self.segment,
            next_chunk=self.next_chunk,
            bytes_done=done,
            bytes_durable=self.bytes_done,
            rate_bytes_per_s=rate,
            bytes_read=self.bytes_read,
            summary=f"segment {self.segment}: {units.progress(done, self.length, rate)}",
            endpoint_errors=self.endpoint_errors,
            progress_at=self.progress_at,
            moved_at=self.moved_at,
            reached_at=self.reached_at,
        )

    def _rate(self, now: float) -> float:
        """The attempt's bytes (durable and being read) over the time it moved them
        (bytes/s, not capped): from its first read, not its start (its set-up moved
        nothing), until ``now``. A retry (``rate_counts_in_flight`` False) shows none
        until one of its chunks is durable (attempts that each read a chunk and fail to
        write it, a full disk, show none, not the rate they read at), then counts its
        chunk being read too. Before, a retry's rate counted only its durable chunks
        over all its time, the set-up and the chunk being read in it: after a worker
        kill it read ~0.6x the rate its bytes moved at (tester75). At least a second
        is measured (less only while the attempt is younger), so a first read that
        arrives at once is no spike."""
        began = self._reading_since if self._reading_since is not None else self._started
        if self.rate_counts_in_flight or self._copied > 0:
            # a retry that made a chunk durable writes: its chunk being read counts
            moving, until = self._copied + self.in_flight, now
        else:
            moving, until = 0, now
        if moving <= 0:
            return 0.0
        elapsed = max(until - began, min(1.0, until - self._started), 1e-6)
        return moving / elapsed

    def source_bytes(self) -> int:
        """Bytes received from the source so far, including those of the open reader
        not yet in a chunk (and any it skipped to reach its offset)."""
        reader = self.reader
        return self._closed_readers_bytes + (reader.bytes_read if reader is not None else 0)

    def reader_opened(self, reader: Reader) -> None:
        self.reader = reader

    def reader_closed(self) -> None:
        if self.reader is not None:
            self._closed_readers_bytes += self.reader.bytes_read
        self.reader = None


def worker_stopping() -> bool:
    """Whether this activity's worker shuts down (a graceful stop): a stream stopped
    then fails its attempt with :class:`~staccato.errors.WorkerStoppingError` instead
    of returning where it stopped (which only a pause, whose workflow waits for it,
    does). False outside an activity, or when the worker's shared state manager
    cannot be asked (its worker is gone: nobody takes the attempt's outcome)."""
    try:
        return activity.is_worker_shutdown()
    except Exception:  # noqa: BLE001 - not in an activity, or the worker's manager is gone
        return False


def stopped_by_shutdown(checkpoint: object | None) -> WorkerStoppingError:
    """The error a stream stopped by its worker's shutdown raises, after heartbeating
    ``checkpoint`` (its progress; None: the previous attempt's details stand) once
    more, unthrottled by the stream: the attempt then stays pending at the server with
    it (``status`` keeps the bytes while no worker runs), and the next worker's
    attempt resumes from it at once (``WORKER_STOPPING_RETRY_S``). Best effort: a
    heartbeat that cannot be sent leaves the last one sent."""
    if checkpoint is not None:
        try:
            with shield():
                activity.heartbeat(checkpoint)
                note_sent((checkpoint,))
        except Exception as err:  # noqa: BLE001 - the stop is what to report
            log.warning("last heartbeat before the worker's stop not sent: %s", err)
    return WorkerStoppingError(
        "the worker stopped this stream (a graceful shutdown: SIGTERM or `staccato down`); "
        "it resumes from its checkpoint on the next worker that polls",
        retry_after_s=WORKER_STOPPING_RETRY_S,
    )


def cancel_seen() -> bool:
    """Whether the worker has told this activity it is cancelled (a pause, a cancel, a
    terminate or a timeout the server answered a heartbeat with), without sending a
    heartbeat; False when that cannot be asked (outside an activity, or the worker's
    shared state manager is gone: the next heartbeat says so)."""
    try:
        with shield():
            return activity.is_cancelled()
    except StreamAbandonedError:
        raise
    except Exception:  # noqa: BLE001 - the next heartbeat finds out
        return False


def heartbeat(*details: object) -> None:
    """Send a heartbeat, then check for cancellation.

    Raises:
        StreamLeaseExpiredError: the stream's lease had expired before this heartbeat
            (:mod:`staccato.activities.stream_lease`).
        StreamStopped: the activity was cancelled (a pause; Temporal gave up on the attempt,
            e.g. its heartbeat timed out and the server no longer knows it), or the
            heartbeat could not be handed to the worker (its process or the shared
            state manager is gone): either way nobody waits for this attempt's result.
    """
    stream_lease.check()  # an expired lease is not renewed by a late heartbeat
    handed_at = time.monotonic()
    try:
        with shield():
            activity.heartbeat(*details)
            note_sent(details)
            cancelled = activity.is_cancelled()
    except StreamAbandonedError:
        raise
    except Exception as err:  # the worker's manager process is gone or broken
        log.warning(
            "stream stops: its heartbeat could not be sent (%s: %s)", type(err).__name__, err
        )
        raise StreamStopped("heartbeat failed") from None
    if cancelled:
        raise StreamStopped("cancelled", cancelled=True)
    stream_lease.renew(handed_at)


def previous_checkpoint() -> Checkpoint | None:
    """The checkpoint the previous attempt last heartbeated, its rate 0: this attempt
    heartbeats it again while it connects, waits or fails, moving nothing (``status``
    sums the streams' rates; the previous attempt's is history). None: no previous
    attempt, or details of an older schema."""
    details = activity.info().heartbeat_details
    if not details:
        return None
    try:
        checkpoint = Checkpoint.model_validate(details[0])
    except ValidationError:
        return None  # an older schema: the destination's durable set still tells the truth
    return checkpoint.model_copy(update={"rate_bytes_per_s": 0.0})


class WaitingBeat:
    """Heartbeats while a driver waits: the stream's progress once it exists, else the
    previous attempt's checkpoint unchanged (at most every 0.5 s)."""

    def __init__(self) -> None:
        self.progress: StreamProgress | None = None
        self._last_beat = 0.0

    def beat(self) -> None:
        if self.progress is not None:
            self.progress.beat()
            return
        touch()
        now = time.monotonic()
        if now - self._last_beat < HEARTBEAT_EVERY_S:
            return
        self._last_beat = now
        previous = previous_checkpoint()  # its rate is history
        heartbeat(*((previous,) if previous is not None else activity.info().heartbeat_details))
