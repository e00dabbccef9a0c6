"""How a retried dataset batch counts a file that matches its source at ``--sync-level``
past its checkpoint: up to date before (skipped), or published by an earlier attempt
of the batch (copied).

The checkpoint (the heartbeat details) counts the files before ``next_index`` only;
what the killed (or frozen) attempt did with the files past it is lost with it. A
file there that matches at the sync level was either up to date already (the attempt
skipped it) or written by that attempt. The destination tells them apart where it
keeps a change time that nothing sets back (:meth:`Driver.changed_at`): a local
file's inode ctime (the publish's rename sets it), an S3 object's ``LastModified``
(when it was stored). Every attempt of the batch started after the batch's activity
was first scheduled (``activity.info().scheduled_time``: the same for every attempt,
set by the Temporal server when the workflow scheduled it, so no workflow input
carries it), so whatever an attempt published changed at or after that time; a file
up to date before was not touched by the batch since.

The rule: matches at the sync level and changed at or after (first schedule - slack)
-> copied (by an earlier attempt); changed before that -> skipped (up to date). The
slack (:attr:`Driver.change_time_slack_s`: file 1 s, S3 6 s) covers the endpoint's
granularity (S3: whole seconds, truncated) and the skew between its clock and the
Temporal server's; the cost: a destination file changed within the slack before the
batch was scheduled (a run started right after another that wrote it), found
matching by a retried attempt, counts as copied.

Where the endpoint tells no change time (SFTP: SFTP v3 attributes carry none), the
rule before stays: a match at the sync level counts as skipped, also a file the
killed attempt published past its last delivered checkpoint (tester: a frozen
worker's 25,669 copied and 331 up to date for an empty destination; with a local or
S3 destination: 26,000 copied).
"""

from __future__ import annotations

from temporalio import activity

from staccato.endpoints import get_driver
from staccato.errors import StaccatoError
from staccato.urls import EndpointURL


def batch_scheduled_at() -> float:
    """When the running batch's activity was first scheduled (every attempt's the
    same), seconds since the epoch on the Temporal server's clock."""
    return activity.info().scheduled_time.timestamp()


def published_since(destination: EndpointURL, since: float) -> bool:
    """Whether the object at ``destination`` (found matching its source) changed at
    or after ``since`` (:func:`batch_scheduled_at`, seconds since the epoch) less the
    endpoint's :attr:`~staccato.endpoints.base.Driver.change_time_slack_s`: published
    by an earlier attempt of the batch. False where the endpoint tells no change
    time, or cannot be asked now (a transient error: the file then counts as up to
    date, the rule without a change time)."""
    driver = get_driver(destination.scheme)
    try:
        changed = driver.changed_at(destination)
    except StaccatoError:
        return False
    if changed is None:
        return False
    return changed >= since - driver.change_time_slack_s
