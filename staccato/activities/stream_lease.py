"""The stream's lease: a stream attempt writes to its destination only while it may
still own its segment.

Temporal gives an activity attempt up once the server has had no heartbeat from it
for the heartbeat timeout, and retries the segment elsewhere. A process that was
frozen meanwhile (SIGSTOP, a suspended VM, a swap storm) does not know that when it
wakes: it would go on with the write it was about to make, possibly after the new
attempt has finished and the transfer published its destination. The lease closes
that window on the worker's side: the time (``time.monotonic``, which runs on while
the process is stopped) since the attempt last handed a heartbeat to the worker is
checked before every write to the destination (:func:`staccato.endpoints.base.write_fence`,
called by each driver before each write it makes), and once it exceeds the heartbeat
timeout less a margin the attempt stops without writing
(:class:`StreamLeaseExpiredError`). A lease once expired stays expired: a heartbeat
sent after it does not renew it (the server may no longer know the attempt).

The margin: the worker sends a stream's heartbeats to the server at most every
:data:`HEARTBEAT_THROTTLE_S` (Temporal's heartbeat throttling), so the server's last
heartbeat may be up to that much older than the stream's last one; one more second
covers the RPC and scheduling. It is at most a quarter of the timeout: a stream on a
busy machine can go over a second between two heartbeats (a chunk's ``fdatasync``
under load), and a lease lost that early only makes a needless retry that sends the
segment again.

A write may be held up after its check (an SFTP request waiting for the SSH channel's
window, a full socket): the SFTP driver therefore checks again before every SSH packet
of a request and before every socket send in the stream's thread, and cuts the
connection when the lease is gone, so a half-sent request is never completed
(``tests/sftp/test_sftp_lease.py``). What the lease cannot stop: bytes already inside
the kernel (or on the wire) when the process is frozen, and a send frozen between its
check and its system call. Destinations refuse stale writers themselves too: a file
session's temp file is checked before each chunk, S3 refuses parts of a completed
upload, SFTP's temp file is checked before each chunk, and an SFTP publish never
renames a temp file a writer that did not close it may still write into
(:mod:`staccato.endpoints.sftp.writers`: the requests it sent before it froze are
carried out on a file no one reads).

A lease starts at the attempt's start as the Temporal server recorded it
(``activity.info().started_time``, the server's clock), not when the worker runs it:
a task the server handed to a poll of a worker that was frozen meanwhile (its open
polls still take tasks until they expire) reaches the worker only when it wakes,
maybe long after the server timed that attempt out and a later attempt finished the
work; started with a fresh lease, such a stale attempt wrote until its first heartbeat
was refused (a dataset batch put 3-4 stale copies over newer versions). Clocks may
differ between the server and the worker: the age is counted only past
:data:`CLOCK_SLACK_S`.

A dataset's batch activity runs under a lease too
(:func:`staccato.activities.dataset.batch_leased`): its heartbeats renew it, and each
of its destination writes (S3 PutObject and publish, file renames of a publish or a
group commit, a group's temp file) is fenced, so a frozen batch woken after Temporal
retried it elsewhere does not put stale copies of the rest of its files over newer ones.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import datetime

from staccato.endpoints.base import write_fence_hook
from staccato.errors import RetryableError

#: seconds: the worker's ``max_heartbeat_throttle_interval`` (and default), the
#: longest a heartbeat a stream hands to the worker waits before it goes to the server
HEARTBEAT_THROTTLE_S = 1.0
#: seconds: RPC and scheduling slack on top of the throttle
_SLACK_S = 1.0
#: seconds the worker's clock may run ahead of the Temporal server's without a fresh
#: attempt's lease being taken as older than it is (as
#: :data:`staccato.endpoints.base.ORPHAN_CLOCK_SLACK_S` allows between a store
#: and the worker)
CLOCK_SLACK_S = 5.0


class StreamLeaseExpiredError(RetryableError):
    """The stream attempt went without a heartbeat for about its heartbeat timeout
    (its process was frozen or starved), so Temporal may have retried its segment
    elsewhere: it stops before writing. Retryable: if the attempt was in fact still
    current, Temporal retries it and the retry resumes from the durable chunks."""

    TYPE = "StreamLeaseExpired"


def margin_s(heartbeat_timeout_s: float) -> float:
    """Seconds before the heartbeat timeout at which a lease expires (see the module)."""
    return min(heartbeat_timeout_s / 4, HEARTBEAT_THROTTLE_S + _SLACK_S)


class Lease:
    """One stream attempt's lease.

    Args:
        heartbeat_timeout_s: the attempt's heartbeat timeout (seconds).
        started_age_s: seconds since the server started the attempt, by the worker's
            clock (``time.time()`` less ``activity.info().started_time``); only what
            exceeds :data:`CLOCK_SLACK_S` counts (the clocks may differ).

    Attributes:
        limit_s: seconds without a heartbeat after which the lease is lost.
        renewed: ``time.monotonic()`` of the last heartbeat (or of the attempt's start).
    """

    def __init__(self, heartbeat_timeout_s: float, started_age_s: float = 0.0) -> None:
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.limit_s = heartbeat_timeout_s - margin_s(heartbeat_timeout_s)
        self.renewed = time.monotonic() - max(0.0, started_age_s - CLOCK_SLACK_S)
        #: the attempt's lease began aged (the server started it that long ago)
        self._aged = started_age_s > CLOCK_SLACK_S
        self.expired_after: float | None = None

    def check(self) -> None:
        """Raises:
        StreamLeaseExpiredError: more than :attr:`limit_s` seconds passed since the
            last heartbeat (now, or at an earlier check)."""
        if self.expired_after is None:
            idle = time.monotonic() - self.renewed
            if idle <= self.limit_s:
                return
            self.expired_after = idle
        # an attempt that began aged: a task handed to this worker while it was frozen,
        # or (every attempt here stopping so) a worker clock ahead of the server's
        clock = (
            "; or this worker's clock is ahead of the Temporal server's (the attempt "
            "counts from the server's start time): check both clocks if every attempt "
            "on this worker stops so"
            if self._aged
            else ""
        )
        raise StreamLeaseExpiredError(
            f"stream attempt stopped before writing: it went {self.expired_after:.1f} s "
            f"without a heartbeat (heartbeat timeout {self.heartbeat_timeout_s:g} s), so "
            "Temporal may have given its segment to another attempt; its process was "
            f"probably frozen (stopped, suspended or starved){clock}"
        )

    def renew(self, handed_at: float) -> None:
        """A heartbeat was handed to the worker at ``handed_at`` (``time.monotonic()``,
        taken before the hand-off: a process frozen during it wakes with a lease that
        runs from before the freeze, caught at the next check). A lease that had
        expired is not renewed."""
        if self.expired_after is None:
            self.renewed = max(self.renewed, handed_at)
            self._aged = False  # renewed since: the server heard from it


_lease: ContextVar[Lease | None] = ContextVar("staccato_stream_lease", default=None)


@contextlib.contextmanager
def leased(
    heartbeat_timeout_s: float | None, started: datetime | None = None
) -> Iterator[Lease | None]:
    """Run the block (a stream attempt) under a :class:`Lease` checked before each
    destination write; without a heartbeat timeout, unfenced.

    Args:
        heartbeat_timeout_s: the attempt's heartbeat timeout (seconds).
        started: when the server started the attempt (``activity.info().started_time``,
            timezone-aware); None or the epoch (unset): now.
    """
    if not heartbeat_timeout_s:
        yield None
        return
    # an unset start (the SDK's test environment: the epoch) counts as now
    age = 0.0 if started is None or started.timestamp() <= 0 else time.time() - started.timestamp()
    lease = Lease(heartbeat_timeout_s, age)
    token = _lease.set(lease)
    try:
        with write_fence_hook(lease.check):
            yield lease
    finally:
        _lease.reset(token)


def check() -> None:
    """Check the running stream's lease, if any (see :meth:`Lease.check`)."""
    lease = _lease.get()
    if lease is not None:
        lease.check()


def renew(handed_at: float) -> None:
    """Renew the running stream's lease, if any (see :meth:`Lease.renew`)."""
    lease = _lease.get()
    if lease is not None:
        lease.renew(handed_at)
