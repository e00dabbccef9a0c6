"""``TransferWorkflow``: stat -> (sync check) -> plan -> prepare -> streams -> publish -> verify.

With a sync level (``--sync-level``), a destination that already matches the source
completes the transfer as up to date right after the source's stat
(:mod:`staccato.workflows.sync`).

Verify: where the destination can read back unpublished data (file), each stream
reads every chunk back right after it is durable and compares checksums
(verify-on-write), so no separate pass over the object is needed; otherwise
(SFTP) the temp data is read back per segment before publish, or (S3) the
published object's stored checksum is compared. ``--verify full`` (patch
``verify-full``) reads a file or SFTP destination's temp data back per segment before
publish in every case and copies damaged segments again. Short steps (stat, prepare,
the final size check) run as local activities first (see :func:`staccato.workflows.calls.short_activity`);
publish, which replaces the destination, always runs as a regular activity.

One run moves one object. The workflow id is derived from the destination, so it is
the destination's lock (see :func:`staccato.ids.transfer_id`); a run under any other
id is a front run and runs as the destination's transfer (:mod:`staccato.workflows.front`).
The history stays
small: a handful of activities, one per segment (a segment is many chunks), and a
search-attribute upsert per state change: a 1 GiB transfer is well under 100 events.

Pause (update ``pause``) cancels the running streams with
``WAIT_CANCELLATION_COMPLETED``; they return where they stopped and the segments are
re-scheduled on ``resume``; a re-scheduled stream skips the chunks the destination
already holds, and of a chunk whose start the pause kept (a local file, SFTP:
``ChunkWriter.write_partial``) reads only the rest. Pause is refused once the copy is over (verify, publish): those steps
run to their end.

Cancel and failure: before publish, a cancel or a permanent failure runs ``cleanup``
(temp file removed, S3 upload aborted), which never touches the destination name:
the destination keeps what it held. Once ``publish`` has been started the transfer is
committed: publish and the checks after it run to their end shielded from
cancellation (``asyncio.shield``), and a cancel arriving meanwhile is ignored, so the
transfer reports ``completed`` and the destination holds the new object. Restoring
the previous object instead is not possible on every endpoint (an S3 bucket without
versioning keeps no previous object), so the one rule everywhere is: the reported
outcome always matches what the destination holds (cancelled or failed before
publish: the old object; completed: the new one). If publish itself fails, nothing
was published (drivers publish atomically) and the old object is intact.

Retries: transient failures are retried with backoff (1 s to 10 s) without an
attempt limit, for ``options.retry_for_s`` (default 24 h) without progress: each
activity gets a Temporal ``schedule_to_close_timeout`` of the budget left since the
transfer last made progress (a step finished); a stream gets its own copy-time bound
on top, and one that runs into that timeout while its heartbeats show progress is
scheduled again. When no attempt can start before the deadline the transfer fails
naming the step and its last error.

Input: the workflow takes its input as a raw payload and validates it itself, so a
malformed start from any Temporal client (not JSON, a negative chunk size, a missing
field, a relative path) fails the workflow at once with a message naming the field,
instead of failing its workflow task forever (:func:`staccato.workflows.failures.decode_request`).

Modules: this one holds the workflow class alone, over 500 lines because it is one
state machine (state, progress, pause and resume updates, the steps of a write
session) whose methods share its fields; splitting it would pass that state around.
What needs none of it lives beside it: :mod:`staccato.workflows.calls` (retry
policy, timeouts, the short steps' local first attempt, cancellation checks) and
:mod:`staccato.workflows.failures` (input validation, failure reasons and types).
"""

from __future__ import annotations

import asyncio
import builtins
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Coroutine
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    FailureError,
    RetryState,
    TimeoutError,
    TimeoutType,
)

with workflow.unsafe.imports_passed_through():
    from staccato import checksums, tuning, units
    from staccato.ids import LOCK_ID_PREFIX, transfer_id
    from staccato.links import (
        LOCAL_ORIGIN_REASON,
        endpoint_of,
        link_of,
        local_origin,
        transfer_governors,
    )
    from staccato.models import (
        READ_STAGED,
        VERIFY_FULL_KINDS,
        ConfirmSourceInput,
        KnownCopy,
        KnownCopyInput,
        ObjectInfo,
        PrepareInput,
        PrepareResult,
        Progress,
        ProgressReport,
        PublishInput,
        Segment,
        SlotGrant,
        SlotRelease,
        SlotRequest,
        SlotRunning,
        StageInput,
        StageResult,
        StartLookup,
        StartLookupInput,
        StreamInput,
        StreamResult,
        TransferOptions,
        TransferRequest,
        TransferResult,
        TransferState,
        TuningRecall,
        TuningView,
        VerifyInput,
        VerifyMode,
        WriteSession,
    )
    from staccato.plan import plan_segments
    from staccato.tuning import LinkMemory, Span, TuningState, WallMeter, Window
    from staccato.workflows import search_attributes as sa

from staccato.workflows import front, slots, sync
from staccato.workflows.calls import (
    RETRY,
    SHORT_HEARTBEAT_TIMEOUT,
    SHORT_TIMEOUT,
    cancelling,
    copy_timeout,
    local_attempt_failure,
    raise_if_cancelling,
    sealed,
    session_key,
    short_activity,
)
from staccato.workflows.failures import (
    ALLOWANCE_STEPS,
    CHECKSUM_MISMATCH,
    NO_INPUT,
    PERMANENT_ERROR,
    STAGED_ENTRY_LOST,
    WRITE_SESSION_LOST,
    decode_request,
    durable_in,
    duration,
    gave_up_message,
    left_behind,
    partial_data,
    reason,
    reason_type,
    step_endpoints,
    stream_moved_on,
    timed_out_text,
    unanswered_prepare_left,
)
from staccato.workflows.governor import (
    LIMIT_QUEUED_SIGNAL,
    SLOT_GRANTED_SIGNAL,
)

DEFAULT_HEARTBEAT_TIMEOUT = timedelta(seconds=20)
#: query: bytes per second each copy stream running now may read of the transfer's
#: own ``max_rate`` (None: none); workers ask it every second for the streams they run
#: (:mod:`staccato.workers.rates`)
STREAM_SHARE_QUERY = "stream_share"
#: query: how many copy streams (``copy_stream`` activities) the transfer runs now;
#: the workers pacing a dataset divide its own ``max_rate`` over its batches and its
#: large files' transfers' streams (:mod:`staccato.workers.rates`)
STREAMS_RUNNING_QUERY = "streams_running"
#: signal: ``pause`` or ``resume``, sent by a client when no worker took the update
#: within ``STACCATO_CLIENT_WAIT_S`` (an update no worker accepts is dropped; a signal
#: waits in the history for the next worker)
CONTROL_SIGNAL = "control"
# workflow.patched ids of changes to the commands the workflow issues
#: a lane that runs out of segments tells the governors held how many streams still
#: run (signal ``running``), which then divide their max_rate over those
SHARE_RUNNING_PATCH = "share-running"
VISIBLE_AT_START_PATCH = "visible-at-start"
FRONT_RUN_PATCH = "front-run"
ENDPOINT_LIMITS_PATCH = "endpoint-limits"
#: the reads of verify and of the second source read run at most as many at once as
#: the streams granted (before it, one activity per segment all at once)
READS_WITHIN_STREAMS_PATCH = "reads-within-granted-streams"
#: a source that cannot serve ranges (or any with ``options.stage``) is read once into
#: the worker's staging cache (``stage_source``) and the streams read it from there
STAGING_PATCH = "staging"
#: a cancel request that arrives while the ending steps run (slots given back, staged
#: entry unpinned) after publish no longer ends the transfer cancelled: it completes
COMPLETED_ONCE_PUBLISHED_PATCH = "completed-once-published"
#: a transfer may read a verified copy of its source version that an earlier transfer
#: wrote (``find_known_copy``) instead of the origin; its result records the
#: destination's version after publish, the record later transfers look up
KNOWN_COPIES_PATCH = "known-copies"
FIND_KNOWN_COPY = "find_known_copy"
#: heartbeat timeout of ``find_known_copy`` (it heartbeats every second)
_FIND_COPY_HEARTBEAT = timedelta(seconds=20)
_FIND_COPY_RETRY = RetryPolicy(maximum_attempts=3, maximum_interval=timedelta(seconds=10))
#: a local file source (``file://``) is read from disk, never from a known copy: no copy
#: is cheaper than the origin on the worker's own disk (an S3 copy was read at ~20 MiB/s
#: instead of a 400 MiB/s disk; a file copy was read whole to check it, then again). No
#: ``find_known_copy`` lookup for it, so no activity (or no lookup input) and a marker
#: event once per transfer of a local file
LOCAL_ORIGIN_PATCH = "local-origin-no-known-copy"
#: a fan-out child (``request.staged_from_group``) skips its stat and staging: its
#: streams read the entry its group staged (no command less for any other transfer)
FAN_OUT_STAGED_PATCH = "fan-out-staged"
#: how many times a transfer stages its source again after its staged copy was lost
#: (damaged, evicted, on another machine) before it fails
MAX_RESTAGES = 3
#: a transfer waiting for a grant looks whether its governor still runs (and asks
#: again if not), and a pause while queued leaves the queue
REASK_PATCH = "reask-lost-governor"
#: a transfer queued at one governor while it holds another's slot gives that slot
#: back and asks for it again once granted where it waited: it never holds a slot (an
#: endpoint's active count, a share of its max_rate) while it waits at another limit
HOLD_NONE_WHILE_QUEUED_PATCH = "hold-none-while-queued"
#: a transfer given neither streams nor chunk size (``options.tuning``) has the per-link
#: optimizer choose them: the ``recall_link_tuning`` activity at start, more (smaller)
#: segments, and ``record_link_tuning`` once the copy is over
TUNING_PATCH = "tuning"
#: the optimizer counts a segment's attempts that failed with an endpoint's error
#: (``StreamResult.endpoint_errors``), not attempts lost with a worker, and does not
#: measure a window that lost one (its time includes the heartbeat timeout); a marker
#: event once per tuned transfer
TUNE_ENDPOINT_ERRORS_PATCH = "tune-endpoint-errors"
#: the optimizer's search with the sweep (a cold start at 8 streams, steps up by half
#: the streams while they pay, re-probes alternating up and down; ``tuning.start``
#: ``sweep``): decisions, so the segments' scheduling, differ; a marker event once per
#: tuned transfer
TUNE_SWEEP_PATCH = "tune-sweep"
#: the optimizer's knee (``tuning.start`` ``knee``): a step up must pay for its streams
#: (re-probes too), a small gain is bracketed and its knee measured, and a held setting
#: steps down to the fewest streams within 5 % of the best measured; decisions, so the
#: segments' scheduling, differ; a marker event once per tuned transfer
TUNE_KNEE_PATCH = "tune-knee"
#: a warm link's segments sized by its remembered rate (``tuning.segment_bytes``:
#: about 2 s of a stream each, at least one per remembered stream, no taper) instead of
#: 64 MiB: fewer segments, so a different plan; a marker event once per such transfer
TUNE_SEGMENT_SECONDS_PATCH = "tune-segment-seconds"
#: the link remembers the setting the optimizer ended holding, the one its reasons end
#: on (``tuning.remember`` ``held``), not the best-of-all rule's, which could name
#: another (tester74); the ``record_link_tuning`` input differs; a marker event once
#: per recorded tuned transfer
TUNE_REMEMBER_HELD_PATCH = "tune-remember-held"
#: a transfer capped below what its link learned (an endpoint or link limit's
#: max-streams, the worker's memory budget or streams at once) leaves the link's
#: memory as it was, one whose search ended at its cap records the cap, and a later
#: transfer allowed more sweeps on from there (``tuning.remember``/``tuning.start``
#: ``uncapped``: tester75's link learned 1 stream under a max-streams 2 limit and kept
#: it after); decisions differ; a marker event once per tuned transfer
TUNE_REMEMBER_UNCAPPED_PATCH = "tune-remember-uncapped"
#: the optimizer adds no streams while the worker host's CPUs are saturated: the
#: window carries the busy fraction its segments measured (``StreamResult.cpu_busy``;
#: ``tuning.CPU_SATURATED``); a busy 2-core worker held 12-16 streams to SFTP on noise
#: and was slower than 4. Decisions, so the segments' scheduling, differ; a marker
#: event once per tuned transfer
TUNE_CPU_BUSY_PATCH = "tune-cpu-busy"
#: no probe with less than ``tuning.LATE_WINDOWS`` windows' bytes left to copy: the
#: window carries the bytes left; a probe there is measured on the tail, where the
#: streams run out of work. A marker event once per tuned transfer
TUNE_NO_LATE_PROBE_PATCH = "tune-no-late-probe"
#: the optimizer rates a setting by what the link moved per second of workflow time
#: while it ran (``tuning.WallMeter``: every segment that ran in the window, for its
#: part of its time in it), not by the first segments to finish's stream-seconds
#: (the cold sweep's second window at 8 streams held the first wave's slow half, and
#: 12 streams looked 16-33 % better on the WAN bench's profile B). Decisions, so the
#: segments' scheduling, differ; a marker event once per tuned transfer
TUNE_WALL_RATE_PATCH = "tune-wall-rate"
RECALL_TUNING = "recall_link_tuning"
#: the control lookups before the first stream (tuning memory, known copy, governors)
#: run as one activity, ``look_up_start``, instead of one each: one activity and one
#: workflow task fewer per transfer (two for a tuned one), all three at once
START_LOOKUP_PATCH = "one-start-lookup"
START_LOOKUP = "look_up_start"
#: ``prepare`` outlives a cancel (:meth:`TransferWorkflow._prepare_outliving_cancel`):
#: the session it opened is cleaned up whether the cancel came while it ran (with
#: TRY_CANCEL the workflow ended at once and an S3 multipart upload created meanwhile
#: was never aborted) or with its result (the SDK raised the cancel instead of the
#: result: a temp file was left after a worker crash); a marker event per write session
PREPARE_WAITS_PATCH = "prepare-waits-out-cancel"
#: after a cancel, a ``prepare`` that has not answered is waited for at most
#: :data:`_PREPARE_CANCEL_WAIT`, then the run ends cancelled (before, the run waited for
#: the attempt's end: an attempt hung on a frozen S3 server, started by a worker that
#: came back after the cancel was asked with none running, held the cancel ~125 s,
#: until its start-to-close timeout: tester64 F6). Whenever such a run ends with no
#: session from prepare (no answer in time, or none at all: an attempt whose worker
#: died may have had its request sent), its memo's ``left_behind`` says what an attempt
#: may still open (before: nothing). A prepare that answers late aborts what it opened
#: itself (``staccato.activities.transfer.unanswerable``: it was cancelled), and a lone
#: transfer's next prepare aborts every upload left on its key (sweeps a file or SFTP
#: destination's temp files). A marker event and a timer only when a cancel comes while
#: prepare runs, and then a memo update when no session came
PREPARE_CANCEL_BOUNDED_PATCH = "prepare-cancel-wait-bounded"
#: ``look_up_start`` runs first as a local activity on the worker running the workflow
#: (no control-queue round trip, no workflow task for its result); a failed local
#: attempt falls back to the control-queue activity. A marker event once per transfer.
LOCAL_START_LOOKUP_PATCH = "local-start-lookup"
#: a failed or cancelled run writes its byte counts (moved, total) into its memo
#: before it ends (``bytes_done``, ``bytes_total``): ``status`` of a closed run reads
#: them without a worker (one memo update per failed or cancelled run)
END_BYTES_MEMO_PATCH = "end-bytes-memo"
#: a stream that a pause stopped and that ended with a failure or a timeout rather than
#: as cancelled (its process was frozen or starved, or it failed while the cancel was on
#: its way) is scheduled again on resume: Temporal never retries an attempt whose
#: cancel was requested (retry state CANCEL_REQUESTED), and before this the transfer
#: failed with that attempt's error (seen: "stream attempt stopped before writing",
#: a pause at load 19)
PAUSED_STREAM_ENDED_PATCH = "paused-stream-ended"
#: a permanent failure (a step gave up, a permanent error) before publish sets the
#: state ``failed`` with its reason (search attribute, memo ``error``) before the write
#: session's clean-up runs, instead of after it: ``status`` says failed and ``cp`` and
#: ``wait`` end at once, while the clean-up (up to 10 attempts, ~65 s against a dead
#: server) goes on in the same run (``Progress.cleanup`` says where); a marker event
#: and a memo update per failed run that opened a write session. That clean-up
#: retries for ``--retry-for`` (30 s at least; patch ``cleanup-window-from-start``); a cancel request stops it
#: (the run then ends failed at once). When it did not finish (gave up, stopped), the
#: memo's ``left_behind`` says what was left and how to remove it (one more memo
#: update): ``status`` tells after the run ended
FAILED_BEFORE_CLEANUP_PATCH = "failed-before-cleanup"
#: the state stays ``scheduled`` until bytes move (the streams start, or the source is
#: read into the staging cache), as ``status`` documents it: while ``prepare`` (or the
#: sync check, the look-ups, a slot's grant) is retried after ``stat``, e.g. after a
#: wait for a busy destination whose server is still down. Before, the state was
#: ``running`` from the end of ``stat`` on. No extra event (the one ``running`` upsert
#: moves later); a marker event per transfer
SCHEDULED_UNTIL_COPY_PATCH = "scheduled-until-copy"
#: the shortest retry window of a failed run's clean-up (its ``--retry-for`` is longer)
_CLEANUP_AFTER_FAILURE_FOR = timedelta(seconds=30)
#: a failed run's clean-up retries for its whole window from its start: its
#: ``schedule_to_close_timeout`` is the window plus the longest backoff
#: (:data:`_BEST_EFFORT_BACKOFF`). Temporal starts no retry whose backoff would end past
#: that deadline, so with the window alone the retries stopped at the last attempt
#: whose next backoff still fitted: about 25 s of a 30 s window (attempts at 0, 1, 3,
#: 7, 15 and 25 s; 35 s did not fit). Now an attempt that fails within the window is
#: always retried, and the clean-up ends at most one backoff (10 s) after the window
#: (within 10 attempts, as before). A marker event per failed run that cleans up.
CLEANUP_WINDOW_PATCH = "cleanup-window-from-start"
#: ``workflow.patched`` id: ``look_up_start`` also returns the worker's per-host
#: connection cap for the source's and destination's hosts (SFTP:
#: ``STACCATO_SFTP_MAX_CONNECTIONS``, 4), and the transfer runs no more streams than
#: that (nor asks a governor or lets the optimizer go past it). Before, ``--streams
#: 8`` to an SFTP host ran 4 streams at a time (the others waited for a connection),
#: each paced at an eighth of ``--max-rate``: a tester's 50 MB at ``--max-rate 5MB/s``
#: took 28 s (1.9 MB/s). A marker event per run that looks up its start
CONNECTION_CAP_PATCH = "streams-within-connection-cap"
#: the object's size goes into the memo once ``stat`` tells it (``bytes_total``), and
#: the bytes of the committed segments each time one is committed
#: (``bytes_committed``): ``status`` keeps both while no worker answers its query
#: (after a worker's SIGKILL it showed the total as unknown and only the running
#: streams' heartbeats). One memo update per transfer and one per committed segment
PROGRESS_MEMO_PATCH = "progress-memo"
#: a stream that fails for good: before the others are cancelled, their last
#: heartbeats' bytes are read (activity ``streams_moved``, control task queue) into
#: ``partial``: one cancelled between attempts carries none of its own
#: (``ACTIVITY_ID_NOT_STARTED``), and a failed transfer's status showed 0 B with 8 MiB
#: durable when no progress report had come yet. One activity per failed copy
STREAMS_MOVED_PATCH = "streams-moved-on-failure"
#: once a pause has stopped the last stream, the bytes the transfer holds (committed
#: segments and the stopped streams' chunks) go into the memo (``bytes_paused``): the
#: chunks are in the workflow's state only, and a paused transfer's status read with
#: no worker showed its committed segments' bytes alone (0 B with most of a segment
#: durable). One memo update per pause that stopped a stream
PAUSED_BYTES_MEMO_PATCH = "paused-bytes-memo"
#: a ``control`` signal (``pause``/``resume`` a client could not deliver as an update:
#: no worker took it in time) applies as the update would have; a marker event per
#: such signal (histories without the signal replay alike)
CONTROL_SIGNAL_PATCH = "control-signal"
#: a failed or cancelled run's memo also says the bytes that were durable at the
#: destination as it ended (``bytes_durable``: committed segments and journaled
#: chunks), beside ``bytes_done``, which counts the chunks the streams had in flight
#: (a tester's failed transfer read 32 MiB with 16 MiB journaled). The same memo
#: update as before; a marker event per failed or cancelled run
DURABLE_BYTES_MEMO_PATCH = "durable-bytes-memo"
#: a step whose retry deadline passed while its attempt hung (no attempt failed: the
#: last error was "none recorded"), or whose last attempt timed out (Temporal's
#: "activity Heartbeat timeout"), is said to have found its endpoints not answering,
#: naming them (``failures.timed_out_text``): a stopped S3 server under ``publish``, a
#: stopped sshd under ``prepare``. The message only; a marker event per such failure
TIMEOUT_WORDED_PATCH = "step-timeout-worded"
#: the activity of STREAMS_MOVED_PATCH (staccato.activities.stream_bytes)
STREAMS_MOVED = "streams_moved"
_STREAMS_MOVED_TIMEOUT = timedelta(seconds=10)
#: the longest wait between two attempts of a best-effort activity (``cleanup``)
_BEST_EFFORT_BACKOFF = timedelta(seconds=10)
RECORD_TUNING = "record_link_tuning"
#: the optimizer's outcome is recorded as the link's (``record_link_tuning``) only when
#: the streams read the origin: a transfer that read a known copy or its staged entry
#: measured another link (the copy's, or the staging cache's), so the link learns
#: nothing from it (``TuningView.not_recorded`` says why). One activity fewer for such
#: a tuned transfer; a marker event when it happens
TUNE_ORIGIN_ONLY_PATCH = "tune-record-origin-reads-only"
#: nor when a governor's grant carried a ``max_rate`` (an endpoint or link limit,
#: ``staccato limit set ... --max-rate``): the streams were paced at the limit's share,
#: so they measured the cap (a tester's link learned "2.0 MiB/s" under a 4 MiB/s
#: endpoint limit). One activity fewer for such a tuned transfer; a marker event then
TUNE_NOT_UNDER_LIMIT_PATCH = "tune-not-under-limit-rate"
#: a cancelled run's clean-up is bounded as a failed run's is: its attempts are
#: retried within :data:`_CLEANUP_AFTER_FAILURE_FOR` from its start (plus one backoff),
#: ``Progress.cleanup`` says where the partial data is meanwhile, and when it did not
#: finish the memo's ``left_behind`` says what was left (the upload id to abort), as a
#: failed run's does. Before, it ran its 10 attempts with no window (each one, against
#: a stopped S3 server, a minute or more: a tester's cancel took 11 minutes) and a
#: clean-up that gave up was said by nothing (``status`` claimed the partial data
#: removed). A marker event per cancelled run that had a write session, and one memo
#: update when its clean-up did not finish
CANCEL_CLEANUP_PATCH = "cancel-cleanup-bounded"
#: ``TransferOptions.cleanup_for_s`` given: it replaces :data:`_CLEANUP_AFTER_FAILURE_FOR`
#: as the shortest window of a failed run's clean-up and the window of a cancelled
#: run's (tests that hang a server on purpose shorten it; production keeps 30 s). Asked
#: only when the option is set, so a run without it (every recorded history) schedules
#: and records as before; a marker event per run that sets it and cleans up
CLEANUP_FOR_OPTION_PATCH = "cleanup-for-option"
#: a run that failed after it published (its check after publish found the object not
#: the source's) says so in its memo (``published: true``): ``status`` then says the
#: object at the destination is the one the run published, not that its clean-up
#: removed its partial data (a tester read that with a corrupt object at the key). A
#: marker event and one memo update per such run
FAILED_AFTER_PUBLISH_PATCH = "failed-after-publish-memo"
#: publish gets each segment's record of its parts' tags (``StreamResult.parts``: S3
#: ETags as its stream uploaded or accepted them) and completes the upload only if the
#: parts still have them (a tester's part replaced under the upload after every part
#: was uploaded, before CompleteMultipartUpload, was completed into the object). A
#: marker event per run whose streams recorded parts (S3 destinations), before publish
PUBLISH_PART_DIGEST_PATCH = "s3-publish-part-digest"
#: ``--verify full`` (``VerifyMode.full``): the temp data of a file or SFTP destination
#: is read back per segment before publish however it was written (the damaged
#: segments copied again, then read once more), and another destination kind fails
#: before prepare. Only runs asked for ``full`` call it: a marker event per such run
VERIFY_FULL_PATCH = "verify-full"
#: the read-back before publish runs at most one ``verify`` per stream lane, each over a
#: run of consecutive segments, instead of one per segment: a tuned copy's ~64 MiB
#: segments (20 for 1 GiB) each paid a verify activity's fixed cost (its schedule, a
#: connection, a stat and journal read, one exec channel on an SFTP server: ~0.5 s on
#: a loaded loopback worker, bench/segcost_phases.py), 8 s of read-back where 4
#: segments took 2 s (issue 14). The same bytes are checked against the same
#: checksums; a mismatch copies the part's segments again. A marker event per run
#: with more segments than lanes
VERIFY_GROUPED_PATCH = "verify-grouped-parts"
#: the tuning activities are best effort: a worker without them runs the fixed defaults
_TUNING_RETRY = RetryPolicy(maximum_attempts=3, maximum_interval=timedelta(seconds=2))
T = TypeVar("T")
MAX_WRITE_SESSIONS = (
    3  # per run: a lost session (WriteSessionLostError) is copied again twice at most
)

#: error types of a stream that say reading its source (a known copy) failed: it
#: changed or vanished while read, or ended short
_COPY_FAULTS = frozenset({"SourceChanged", "NotFound", "IncompleteRead"})


def _in_a_dataset() -> bool:
    """Whether this transfer is a large file of a dataset: its parent (one root) or
    the root of its chain of parents (several roots: dataset, fan-out group,
    transfer) has the datasets' id prefix (their root locks share it, but start no
    transfers). Its ``prepare`` then makes the file's missing directories, as the
    dataset does for its small files; a lone transfer (or a lone fan-out group's)
    wants them there. Only an activity's input changes, not the workflow's
    commands: no patch."""
    info = workflow.info()
    return any(
        up is not None and up.workflow_id.startswith(LOCK_ID_PREFIX)
        for up in (info.parent, info.root)
    )


def _rate_group(request: TransferRequest) -> str | None:
    """The dataset whose own ``max_rate`` this transfer's streams share (its parent,
    when that is a dataset: a large file to one root; the group's dataset, when this
    is a child of a large file's fan-out group of a dataset to several roots, named by
    ``staged_from_group.rate_group``; the dataset's ``max_rate`` is this transfer's
    own), or None. The worker then paces each stream at most at the dataset's
    per-stream share (:mod:`staccato.workers.rates`), so the dataset's batches and
    large files together keep its ``--max-rate``. Only an activity's input changes,
    not the workflow's commands (the group's child carries it only when the dataset
    that started the group was patched): no patch."""
    if request.options.max_rate is None:
        return None
    parent = workflow.info().parent
    if parent is not None and parent.workflow_id.startswith(LOCK_ID_PREFIX):
        return parent.workflow_id
    group = request.staged_from_group
    return group.rate_group if group is not None else None


def _rate_part(request: TransferRequest) -> str | None:
    """``write`` when this transfer's streams share a dataset's ``max_rate`` as one
    of a fan-out group's transfers (they read the group's staged copy and write one
    root: paced at the dataset's share per writer of a root, not per reader of its
    source, ``pacing.group_key(dataset, "write")``), else None. Its staging read
    again (a damaged staged copy) is paced so too. Activity input only: no patch."""
    if _rate_group(request) is None:
        return None
    parent = workflow.info().parent
    return None if parent is not None and parent.workflow_id.startswith(LOCK_ID_PREFIX) else "write"


def _consecutive_groups(segments: list[Segment], count: int) -> list[list[Segment]]:
    """``segments`` in byte order cut into ``count`` runs (at least 1) of adjacent
    segments whose sizes differ by at most one: the ``verify`` parts of
    :data:`VERIFY_GROUPED_PATCH` (a mismatch names the part's byte range).
    E.g. 20 segments, 3 runs: 6, 7 and 7 segments."""
    ordered = sorted(segments, key=lambda s: s.first_chunk)
    count = max(1, min(count, len(ordered)))
    n = len(ordered)
    return [ordered[k * n // count : (k + 1) * n // count] for k in range(count)]


# A start with no input or with several (any Temporal client can start this workflow)
# makes the SDK's call of ``run`` raise TypeError before any of our code runs: listing
# TypeError fails such a run at once instead of retrying its workflow task forever
# while the destination stays locked. (A TypeError of ours is a bug, and fails too.)
@workflow.defn(name="TransferWorkflow", failure_exception_types=[TypeError])
class TransferWorkflow:
    """Copies one object from ``request.source`` to ``request.destination``."""

    def __init__(self) -> None:
        self._progress: Progress | None = None
        self._paused = False
        self._was_paused = False
        self._stopped_by_pause: set[int] = set()  # segments whose stream a pause cancelled
        self._bytes_paused_in_memo = False  # PAUSED_BYTES_MEMO_PATCH: removed on resume
        self._session: WriteSession | None = None
        self._published = False
        self._running: dict[int, workflow.ActivityHandle[StreamResult]] = {}
        self._staging_reads = 0  # stage_source activities running (streams_running)
        self._failure: BaseException | None = None
        self._retry_for = timedelta(hours=24)
        self._cleanup_for_option: float | None = None  # TransferOptions.cleanup_for_s
        #: segments the read-back before publish copied again (None: none ran)
        self._read_back_recopied: int | None = None
        self._progress_at = datetime.min  # set when the run starts
        self._cancel_ignored = False
        # no byte moved yet (patch scheduled-until-copy): the state says scheduled
        self._until_copy = False
        # the running streams' last progress report (signal ``report_progress``) and
        # when it came; shown in the current details only, never used for a decision
        self._live: ProgressReport | None = None
        self._live_at = datetime.min
        # a front run: the transfer id it runs as (see staccato.workflows.front)
        self._front: str | None = None
        # endpoint and link limits (staccato.workflows.governor): the slots held, the
        # streams granted, whether a resume must ask again (a pause gave them back)
        self._asked: list[str] = []  # governors asked (released at the end, on pause)
        self._granted: dict[str, SlotGrant] = {}
        #: the last grant that carried a max_rate (governor name, bytes/s): the streams
        #: were paced by an endpoint or link limit, so the link learns nothing from them
        self._paced_by_limit: tuple[str, float] | None = None
        #: every governor whose grant carried a max_rate (name -> bytes/s, the last
        #: grant's): which of them paced the streams depends on staging
        #: (:meth:`_stream_governors`); status names those (no command)
        self._limit_rates: dict[str, float] = {}
        self._ticket: str | None = None
        self._waiting_for: str | None = None  # the governor whose grant is awaited
        self._lanes = 0
        # the worker's connection cap for the source's or destination's host
        # (look_up_start, CONNECTION_CAP_PATCH); None: none
        self._connection_cap: int | None = None
        # segments the source can make at most (its size over the chunk size asked
        # for; a destination only raises the chunk size): no more streams are asked for
        self._most_segments: int | None = None
        self._acquisitions = 0
        self._reacquire = False
        self._acquiring = False
        self._left_queue = False  # a pause came while waiting for a grant
        # the governor that last said the ticket waits in its queue (limit_queued)
        self._queued_at: str | None = None
        # HOLD_NONE_WHILE_QUEUED_PATCH, asked when a second governor is asked
        self._hold_none: bool | None = None
        # the streams still running that the governors were told of, with the ticket
        # (signal ``running``, SHARE_RUNNING_PATCH); None: not told (all run)
        self._told_running: tuple[str, int] | None = None
        self._share_running: bool | None = None  # workflow.patched, asked once
        self._request: TransferRequest | None = None
        # the staging cache entry the streams read from (None: they read the origin)
        self._staged: StageResult | None = None
        self._stage_input: StageInput | None = None
        self._stagings = 0  # stage_source runs (each new one after a loss)
        self._restaging = False
        # per-link tuning (options.tuning): the optimizer's state, the link, the setting
        # epoch (segments started in an older one are not measured), and the window of
        # finished segments being summed: [bytes, stream seconds, segments, errors,
        # lost, CPU-busy x seconds, seconds of the segments that measured the CPU]
        self._tuner: TuningState | None = None
        self._tune_link = ""
        self._tune_memory: LinkMemory | None = None
        self._tune_epoch = 0
        self._tune_window: list[float] = [0, 0.0, 0, 0, 0, 0.0, 0.0]
        self._tune_endpoint_errors = False
        self._tune_cpu_busy = False  # patch tune-cpu-busy
        self._tune_late = False  # patch tune-no-late-probe
        self._tune_meter: WallMeter | None = None  # patch tune-wall-rate
        self._tune_draining: set[int] = set()  # running when fewer streams were chosen
        self._tune_socket_buffer: int | None = None
        self._tune_record: workflow.ActivityHandle[None] | None = None
        self._tune_learned: LinkMemory | None = None  # what the link keeps (copy over)
        self._tune_uncapped = False  # TUNE_REMEMBER_UNCAPPED_PATCH, asked at the start
        self._tune_not_recorded: str | None = None  # why the link learned nothing
        # known copies (staccato.known_copies): whether this run records and looks
        # them up (patch), the copy the streams read (None: the origin), and the
        # destination's version after publish (the record this run leaves)
        self._known_copies = False
        self._known_copy: KnownCopy | None = None
        self._copy_read: str | None = None  # the known copy chosen (even if it failed later)
        self._destination_version: str | None = None

    @workflow.run
    async def run(self, raw_request: RawValue = NO_INPUT) -> TransferResult:
        """Run the transfer; returns its result or fails with the reason.

        Args:
            raw_request: a :class:`TransferRequest` as a JSON payload (decoded and
                validated here, see :func:`decode_request`); ``NO_INPUT`` for a start
                without input, which fails saying what the input is (the same one failure
                command as the TypeError of a required argument, so histories replay).

        Raises:
            ApplicationError: non-retryable: invalid input (naming the field), or the
                transfer failed (the reason).
        """
        request = decode_request(raw_request)
        options = request.options
        self._request = request
        self._lanes = options.streams
        self._retry_for = timedelta(seconds=options.retry_for_s)
        self._cleanup_for_option = options.cleanup_for_s
        self._progress = Progress(
            state=TransferState.scheduled,
            chunk_size=options.chunk_size,
            streams=options.streams,
            tuned=options.tuning,
        )
        # A run started by any client or Schedule: visible to `staccato status`/`list`
        # and the UI's filters; one under an id other than its destination's transfer
        # id runs as that transfer, never writing itself (see staccato.workflows.front).
        if front.lacks_visibility(request) and workflow.patched(VISIBLE_AT_START_PATCH):
            front.make_visible(request)
        if front.is_front(request) and workflow.patched(FRONT_RUN_PATCH):
            self._front = transfer_id(request.destination)
            return await front.run_front(request, self._progress, self._set_state)
        if self._paused:  # a pause that came with the start
            self._set_state(TransferState.paused)
        started = self._progress_at = workflow.now()
        heartbeat_timeout = (
            timedelta(seconds=options.heartbeat_timeout_s)
            if options.heartbeat_timeout_s
            else DEFAULT_HEARTBEAT_TIMEOUT
        )
        try:
            group = request.staged_from_group
            if group is not None and workflow.patched(FAN_OUT_STAGED_PATCH):
                # a fan-out child: the group stat-ed and staged the source; its streams
                # read that entry (pinned by the group), never the origin
                info = group.source_info
                self._staged = StageResult(key=group.key, size=info.size)
            else:
                self._set_phase("stat")
                info = await self._short_activity(
                    "stat", request.source, ObjectInfo, *sealed(request.source_secret)
                )
            self._progress.bytes_total = info.size
            if workflow.patched(PROGRESS_MEMO_PATCH):
                workflow.upsert_memo({"bytes_total": info.size})
            self._most_segments = max(1, -(-info.size // options.chunk_size))
            self._known_copies = workflow.patched(KNOWN_COPIES_PATCH)
            # a pause accepted while still scheduled holds: the streams wait for resume
            self._until_copy = workflow.patched(SCHEDULED_UNTIL_COPY_PATCH)
            self._set_state(TransferState.paused if self._paused else self._going())
            if options.sync_level is not None and workflow.patched("sync-level"):
                self._set_phase("sync-check")
                check = await sync.check_destination(
                    request,
                    info,
                    budget=self._retry_budget(),
                    heartbeat_timeout=heartbeat_timeout,
                    sweep_leftovers=not _in_a_dataset(),
                )
                self._progress_at = workflow.now()
                if check.up_to_date:  # nothing to copy
                    self._progress.checksum = check.checksum
                    self._progress.up_to_date = options.sync_level
                    self._set_state(TransferState.completed)
                    self._set_phase("up-to-date")
                    return sync.up_to_date_result(request, info, check, workflow.now() - started)
                workflow.logger.info("copying: %s", check.reason)
            lookup = (
                await self._look_up_start(request, info)
                if workflow.patched(START_LOOKUP_PATCH)
                else None
            )
            if lookup is not None and lookup.connection_cap:
                request, options = self._within_connection_cap(request, lookup.connection_cap)
            if (
                options.tuning
                and info.size >= tuning.MIN_TUNED_BYTES
                and workflow.patched(TUNING_PATCH)
            ):
                self._tune_endpoint_errors = workflow.patched(TUNE_ENDPOINT_ERRORS_PATCH)
                request = await self._start_tuning(
                    request, info, lookup.recall if lookup is not None else None
                )
                options = request.options
            if self._known_copies:  # read a verified copy of this version, or the origin
                await self._choose_read_source(
                    request, info, lookup.known_copy if lookup is not None else None
                )
            if workflow.patched(ENDPOINT_LIMITS_PATCH):
                # an up-to-date transfer needs no slot: asked after the sync check
                await self._acquire_slots(request, lookup.governors if lookup is not None else None)
            if (
                self._staged is None  # a fan-out child reads its group's staged entry
                and (options.stage or not info.supports_ranges)
                and info.size > 0
                and self._known_copy is None  # a known copy serves ranges and is read instead
                and workflow.patched(STAGING_PATCH)
            ):
                # a pause that came before: staging reads the source, so it waits too
                await workflow.wait_condition(lambda: not self._paused)
                if self._reacquire:  # the pause gave the slots back
                    await self._reacquire_slots()
                await self._stage(request, info, heartbeat_timeout)
            for attempt in range(MAX_WRITE_SESSIONS):
                try:
                    chunk_size, digest = await self._write(
                        request, info, heartbeat_timeout, session_key(attempt)
                    )
                    break
                except (ActivityError, ApplicationError) as err:
                    if reason_type(err) != WRITE_SESSION_LOST or self._published:
                        raise
                    if attempt + 1 == MAX_WRITE_SESSIONS:
                        raise ApplicationError(
                            f"{MAX_WRITE_SESSIONS} write sessions in a row were lost; giving "
                            f"up (something keeps removing or altering the temp data). "
                            f"Last: {reason(err)}",
                            type=WRITE_SESSION_LOST,
                            non_retryable=True,
                        ) from None
                    # The temp data vanished under us (deleted by hand, a cleaner
                    # script): open a new write session and copy everything again.
                    workflow.logger.warning("%s; copying again into a new one", reason(err))
                    # said by status and the result (query state: no command)
                    self._progress.sessions_lost += 1
                    self._progress.session_lost_reason = reason(err)
                    await self._cleanup(self._session)
                    self._session = None
                    self._progress.bytes_committed = self._progress.segments_done = 0
                    self._progress.partial = {}
                    self._progress.durable = {}
                    if workflow.patched(PROGRESS_MEMO_PATCH):
                        workflow.upsert_memo({"bytes_committed": 0})
        except (asyncio.CancelledError, CancelledError):
            self._record_end_bytes()
            await self._cleanup_after_cancel(self._session)
            self._set_state(TransferState.cancelled)
            raise
        except (ActivityError, ApplicationError) as err:  # a local activity's may be bare
            self._record_end_bytes()
            if isinstance(err.cause, CancelledError) and cancelling():
                # the transfer was cancelled while an activity ran
                await self._cleanup_after_cancel(self._session)
                self._set_state(TransferState.cancelled)
                raise asyncio.CancelledError() from None
            message = self._gave_up(err) or reason(err)
            session = None if self._published else self._session
            left: str | None = None  # what the clean-up left (it gave up or was stopped)
            if session is not None and workflow.patched(FAILED_BEFORE_CLEANUP_PATCH):
                # failed from now on (status, cp, wait say so with the reason); the
                # removal of the partial data, which may retry against a dead server
                # for a minute, goes on with the run (it still holds the destination)
                self._progress.error = message
                self._progress.cleanup = partial_data(session)
                workflow.upsert_memo({"error": message})
                self._set_state(TransferState.failed)
                removed = await self._cleanup_after_failure(session)
                self._progress.cleanup = None
                if not removed:  # gave up or was stopped: status says what is left
                    left = left_behind(session, _in_a_dataset())
                    workflow.upsert_memo({"left_behind": left})
            else:
                if not self._published:
                    await self._cleanup(self._session)
                elif workflow.patched(FAILED_AFTER_PUBLISH_PATCH):
                    # no clean-up: the object is at the destination (status says so)
                    workflow.upsert_memo({"published": True})
                self._progress.error = message
                self._set_state(TransferState.failed)
            # what was left rides in the failure's details too: a parent (a dataset, a
            # fan-out group) learns it from the failure alone (failures.left_behind_of)
            details = [{"left_behind": left}] if left else []
            raise ApplicationError(
                message, *details, type=reason_type(err), non_retryable=True
            ) from None
        finally:
            # every ending gives the slots back (no command when none are held; no
            # coroutine either, so a workflow evicted from the cache leaves none behind)
            if self._asked:
                await self._closing_step(self._release_slots())
            if self._stage_input is not None:  # the staged entry's pin (best effort)
                await self._closing_step(self._release_staged())
        if self._tune_record is not None:
            await self._closing_step(self._recorded())
        label = checksums.label(options.checksum.value, digest)
        self._progress.checksum = label
        self._progress.bytes_committed = info.size
        self._set_state(TransferState.completed)
        self._set_phase("done")
        return TransferResult(
            source=request.source,
            destination=request.destination,
            bytes=info.size,
            checksum=label,
            verified=options.verify,
            duration_s=(workflow.now() - started).total_seconds(),
            source_version=info.version,
            chunk_size=chunk_size,
            streams=self._progress.streams if self._tuner is None else self._tuner.streams,
            tuning=self._progress.tuning,
            destination_version=self._destination_version,
            read_from=self._progress.read_from,
            read_from_reason=self._progress.read_from_reason,
            sessions_lost=self._progress.sessions_lost,
            session_lost_reason=self._progress.session_lost_reason,
            read_back_recopied=self._read_back_recopied,
        )

    async def _look_up_start(
        self, request: TransferRequest, info: ObjectInfo
    ) -> StartLookup | None:
        """The control lookups before the first stream, in one ``look_up_start``
        activity on the control queue: the link's tuning memory (a tuned transfer),
        a known copy (when one can help, :meth:`_known_copy_input`) and which
        governors run (always). None when it failed (each part then runs as its own
        activity, as runs recorded before did); a cancel propagates.

        History: 3 events and a workflow task (before: as many per part).
        """
        assert self._progress is not None
        options = request.options
        tuned = (
            options.tuning
            and info.size >= tuning.MIN_TUNED_BYTES
            and workflow.patched(TUNING_PATCH)
        )
        copy_input = self._known_copy_input(request, info)[0] if self._known_copies else None
        governors = (
            transfer_governors(request.source, request.destination)
            if workflow.patched(ENDPOINT_LIMITS_PATCH)
            else []
        )
        phase = self._progress.phase
        self._set_phase("look-up")
        lookup_input = StartLookupInput(
            link=link_of(request.source, request.destination) if tuned else None,
            known_copy=copy_input,
            governors=governors,
            connections_of=(
                [request.source, request.destination]
                if workflow.patched(CONNECTION_CAP_PATCH)
                else None
            ),
        )
        # a candidate file is read whole to check it
        timeout = (
            copy_timeout(info.size) * 3 + SHORT_TIMEOUT if copy_input is not None else SHORT_TIMEOUT
        )
        try:
            if workflow.patched(LOCAL_START_LOOKUP_PATCH):
                looked_up = await self._look_up_start_locally(lookup_input, timeout)
                if looked_up is not None:
                    return looked_up
            return await workflow.execute_activity(
                START_LOOKUP,
                lookup_input,
                result_type=StartLookup,
                task_queue=front.control_queue(workflow.info().task_queue),
                start_to_close_timeout=timeout,
                heartbeat_timeout=_FIND_COPY_HEARTBEAT,
                retry_policy=_FIND_COPY_RETRY,
            )
        except ActivityError as err:
            if isinstance(err.cause, CancelledError) and cancelling():
                raise
            workflow.logger.warning("the start lookups failed, one at a time: %s", reason(err))
            return None
        finally:
            self._set_phase(phase)

    def _within_connection_cap(
        self, request: TransferRequest, cap: int
    ) -> tuple[TransferRequest, TransferOptions]:
        """The request with no more streams than ``cap`` (the worker's connections per
        host for the source's or destination's host): the streams past it would wait
        for a connection, each holding its share of ``--max-rate`` unused. The
        optimizer's range stops at it too (:meth:`_start_tuning`)."""
        assert self._progress is not None
        self._connection_cap = cap
        options = request.options
        if options.streams <= cap:
            return request, options
        workflow.logger.info(
            "%d streams asked for; %d run: the worker opens at most %d connections per "
            "host (STACCATO_SFTP_MAX_CONNECTIONS)",
            options.streams,
            cap,
            cap,
        )
        options = options.model_copy(update={"streams": cap})
        self._lanes = self._progress.streams = cap
        request = self._request = request.model_copy(update={"options": options})
        return request, options

    async def _look_up_start_locally(
        self, lookup_input: StartLookupInput, timeout: timedelta
    ) -> StartLookup | None:
        """One attempt of ``look_up_start`` as a local activity, in the worker that runs
        this workflow (its workflow thread, with its own client), inside the workflow
        task. A regular activity on the control queue costs two history writes for its
        dispatch and a workflow task for its result; when 50 transfers start at once the
        server, overloaded, can record such an attempt started and never hand it out (the
        attempt is then lost for its heartbeat timeout). None when the attempt failed
        (the control-queue activity then runs, with its retries); a cancel propagates.

        History: 1 marker event (instead of 3 activity events and a workflow task).
        """
        try:
            return await workflow.execute_local_activity(
                START_LOOKUP,
                lookup_input,
                result_type=StartLookup,
                start_to_close_timeout=timeout,
                retry_policy=RetryPolicy(maximum_attempts=1),
            )
        except FailureError as err:
            cause = local_attempt_failure(err)
            if isinstance(cause, CancelledError) and cancelling():
                raise
            workflow.logger.info(
                "the start lookups failed locally (%s); on the control queue", reason(err)
            )
            return None

    def _known_copy_input(
        self, request: TransferRequest, info: ObjectInfo
    ) -> tuple[KnownCopyInput | None, str]:
        """The known-copy lookup to make, or None and why none can help
        (``--from-origin``, a local file source (patch ``local-origin-no-known-copy``:
        no copy is cheaper than the worker's disk), an empty source, a source URL with a secret query, a
        version that cannot prove the source unchanged, a fan-out child)."""
        options = request.options
        group = request.staged_from_group
        if group is not None and self._staged is not None:  # a fan-out child
            return None, f"the entry its fan-out group {group.group_id} staged from the origin once"
        if options.from_origin:
            return None, "--from-origin: known copies are not looked up"
        if local_origin(request.source) and workflow.patched(LOCAL_ORIGIN_PATCH):
            return None, LOCAL_ORIGIN_REASON
        if info.size == 0:
            return None, "an empty source: nothing to read"
        if request.source_secret is not None:
            return None, (
                "the source URL has a secret query: copies are found by URL, and its "
                "query is never recorded"
            )
        if info.reread_before_publish:
            return None, (
                "the source was modified within its version's time resolution: no record "
                "can prove a copy holds this content"
            )
        return KnownCopyInput(
            source=request.source,
            source_info=info,
            destination=request.destination,
            transfer_id=workflow.info().workflow_id,
            chunk_size=options.chunk_size,
        ), ""

    async def _choose_read_source(
        self, request: TransferRequest, info: ObjectInfo, looked_up: KnownCopy | None = None
    ) -> None:
        """Decide where the streams read: a verified copy of this source version that an
        earlier transfer wrote (the ``find_known_copy`` activity looks up the records
        and checks the candidates, :mod:`staccato.known_copies`), or the origin; the
        decision and why go into the progress (``read_from``, ``read_from_reason``).

        Args:
            looked_up: the lookup's result from ``look_up_start`` (then no activity).

        History: one activity on the control queue (3 events and a workflow task),
        none when no lookup can help (``--from-origin``, a local file source, an empty source, a source URL
        with a secret query, a version that cannot prove the source unchanged) or
        ``looked_up`` is given. A failed lookup reads the origin; a cancel propagates.
        """
        assert self._progress is not None
        copy_input, why = (
            (None, "") if looked_up is not None else self._known_copy_input(request, info)
        )
        found = looked_up
        if copy_input is not None:
            phase = self._progress.phase
            self._set_phase("find-copy")
            try:
                found = await workflow.execute_activity(
                    FIND_KNOWN_COPY,
                    copy_input,
                    result_type=KnownCopy,
                    task_queue=front.control_queue(workflow.info().task_queue),
                    # a candidate file is read whole to check it
                    start_to_close_timeout=copy_timeout(info.size) * 3 + SHORT_TIMEOUT,
                    heartbeat_timeout=_FIND_COPY_HEARTBEAT,
                    retry_policy=_FIND_COPY_RETRY,
                )
            except ActivityError as err:
                if isinstance(err.cause, CancelledError) and cancelling():
                    raise
                found = KnownCopy(reason=f"looking up known copies failed: {reason(err)}")
            self._set_phase(phase)
        if found is not None:
            if found.url is not None and found.info is not None:
                self._known_copy = found
                self._copy_read = found.url
            why = found.reason
        self._progress.read_from = self._known_copy.url if self._known_copy else "origin"
        self._progress.read_from_reason = why
        workflow.logger.info("reading from %s: %s", self._progress.read_from, why)

    def _read_source(self, request: TransferRequest, info: ObjectInfo) -> dict[str, Any]:
        """The source fields of a stream's input: the known copy chosen (pinned at its
        checked version) or the origin (activity input only, no command)."""
        if self._known_copy is not None and self._known_copy.url and self._known_copy.info:
            return {
                "source": self._known_copy.url,
                "source_info": self._known_copy.info,
                "source_secret": None,
            }
        return {
            "source": request.source,
            "source_info": info,
            "source_secret": request.source_secret,
        }

    def _copy_failed(self, err: BaseException) -> None:
        """A stream reading the known copy failed: the remaining segments read the
        origin, and status says why. The copy is blamed only when its read failed (it
        changed, vanished or ended short: :data:`_COPY_FAULTS`); any other failure (a
        destination down, a stream that gave up) may be the destination's, and the
        reason says so. Only the text differs (no command)."""
        assert self._progress is not None and self._known_copy is not None
        url, self._known_copy = self._known_copy.url, None
        self._progress.read_from = "origin"
        if reason_type(err) in _COPY_FAULTS:
            self._progress.read_from_reason = (
                f"the copy {url} failed while it was read ({reason(err)}); the rest is "
                "read from the origin"
            )
        else:
            self._progress.read_from_reason = (
                f"a stream reading from the copy {url} failed ({reason(err)}; not "
                "necessarily at the copy: the destination may have failed); the rest is "
                "read from the origin"
            )
        workflow.logger.warning("%s", self._progress.read_from_reason)

    async def _write(
        self,
        request: TransferRequest,
        info: ObjectInfo,
        heartbeat_timeout: timedelta,
        session_key: str,
    ) -> tuple[int, str]:
        """prepare -> streams -> verify -> publish (-> verify) into one write session.

        Returns:
            The chunk size used and the object checksum (hex).
        """
        assert self._progress is not None
        options = request.options
        full = options.verify == VerifyMode.full and workflow.patched(VERIFY_FULL_PATCH)
        if full and (kind := request.destination.split(":", 1)[0]) not in VERIFY_FULL_KINDS:
            # the CLI refuses it (exit 2); an API caller learns it before any write
            raise ApplicationError(
                f"--verify full is not available for a {kind} destination: it reads "
                f"back {' and '.join(VERIFY_FULL_KINDS)} destinations only (use --verify "
                "checksum); nothing was written",
                type=PERMANENT_ERROR,
                non_retryable=True,
            )
        self._set_phase("prepare")
        request_prepare = PrepareInput(
            destination=request.destination,
            size=info.size,
            chunk_size=options.chunk_size,
            session_key=session_key,
            make_parents=_in_a_dataset(),
            sweep_leftovers=not _in_a_dataset(),
        )
        prepared: PrepareResult = await (
            self._prepare_outliving_cancel(request_prepare)
            if workflow.patched(PREPARE_WAITS_PATCH)
            else self._short_activity("prepare", request_prepare, PrepareResult)
        )
        session = self._session = prepared.session
        chunk_size = prepared.chunk_size
        if prepared.note:
            workflow.logger.info("chunk size adjusted: %s", prepared.note)
        self._progress.chunk_size = chunk_size
        ways = options.streams if info.supports_ranges or self._staged or self._known_copy else 1
        timed = False
        if self._tuner is not None and ways > 1:
            # more, smaller segments: the streams can change between them; on a warm
            # fast link, segments of a few seconds each (patch tune-segment-seconds)
            self._tuner.chunk_size = chunk_size
            # (not when it sweeps: a memory learned under a lower cap, resumed as a
            # sweep, needs many segments; mid-sweep memories have no segment_bytes)
            timed = (
                not self._tuner.sweeping
                and tuning.segment_bytes(self._tune_memory) is not None
                and workflow.patched(TUNE_SEGMENT_SECONDS_PATCH)
            )
            ways = tuning.segments_for(
                info.size, chunk_size, options.streams, self._tune_memory if timed else None
            )
        segments = plan_segments(info.size, chunk_size, ways)
        if self._tuner is not None and self._tuner.alternate and ways > 1 and not timed:
            # the search with the sweep (patch tune-sweep): a shorter tail
            segments = tuning.taper(segments, info.size, chunk_size, options.streams)
        self._progress.segments_total = len(segments)
        self._set_phase("copy")
        # for ``status``'s rate across segment boundaries (state only: no command)
        self._progress.copy_started_at = workflow.now().timestamp()
        self._progress.copy_started_bytes = self._bytes_moved()
        self._bytes_move()
        results = await self._copy(request, info, session, segments, heartbeat_timeout)
        if self._tuner is not None and self._tune_record is None:
            # what the link learned, stored while verify and publish run (and shown:
            # an ended transfer's status tells it, not the optimizer's next step)
            not_the_links = self._not_the_links_rate()
            if not_the_links is not None and workflow.patched(TUNE_ORIGIN_ONLY_PATCH):
                # the streams measured another link or a cap: the link learns nothing
                self._tune_not_recorded = not_the_links
                self._show_tuning()
            else:
                self._tune_learned = tuning.remember(
                    self._tuner,
                    self._tune_link,
                    self._tune_memory,
                    held=workflow.patched(TUNE_REMEMBER_HELD_PATCH),
                    uncapped=self._tune_uncapped,
                )
                self._show_tuning()
                self._tune_record = workflow.start_activity(
                    RECORD_TUNING,
                    self._tune_learned,
                    task_queue=front.control_queue(workflow.info().task_queue),
                    start_to_close_timeout=SHORT_TIMEOUT,
                    heartbeat_timeout=SHORT_HEARTBEAT_TIMEOUT,
                    retry_policy=_TUNING_RETRY,
                )
        # A pause accepted as the last segment finished holds here: nothing moves on
        # to verify and publish while the transfer says paused.
        await workflow.wait_condition(lambda: not self._paused)
        digest = checksums.combine(
            options.checksum.value,
            [(results[s.index].checksum or "", s.length) for s in segments],
        )
        copy = self._known_copy
        if (
            copy is not None
            and copy.checksum
            and copy.checksum.startswith(f"{options.checksum.value}:")
        ):
            # the copy was read pinned at its checked version: it must give the
            # checksum its record has (the origin's); never publish it otherwise
            label = checksums.label(options.checksum.value, digest)
            if label != copy.checksum:
                raise ApplicationError(
                    f"the known copy {copy.url} read as {label}, not the recorded "
                    f"{copy.checksum}; nothing was published (copy again with --from-origin)",
                    type=CHECKSUM_MISMATCH,
                    non_retryable=True,
                )
        # Every chunk was read back as it was written. A pause leaves finished
        # segments exposed for an unbounded time (stray writers, a user's editor):
        # then the whole temp object is read back before publish.
        # With --verify full, never: every byte is read back once more (a stray
        # writer changing a journaled chunk while streams of this life still write).
        verified_on_write = (
            options.verify == VerifyMode.checksum
            and not self._was_paused
            and all(results[s.index].verified for s in segments)
        )
        if (
            prepared.session_url
            and (options.verify == VerifyMode.checksum or full)
            and not verified_on_write
        ):
            bad = await self._verify(
                request,
                info,
                prepared,
                segments,
                results,
                digest,
                heartbeat_timeout,
                before_publish=True,
            )
            # the ended status says the read-back ran and what it copied again
            self._read_back_recopied = len(bad)
            if bad:
                # Chunks damaged after they were written (torn write, OS crash, stray
                # writer): copy those segments again (their journal check drops the
                # damaged chunks), then verify once more; a second mismatch fails.
                workflow.logger.warning("re-copying segments %s after a checksum mismatch", bad)
                again = [s for s in segments if s.index in bad]
                results.update(await self._copy(request, info, session, again, heartbeat_timeout))
                digest = checksums.combine(
                    options.checksum.value,
                    [(results[s.index].checksum or "", s.length) for s in segments],
                )
                await self._verify(
                    request,
                    info,
                    prepared,
                    segments,
                    results,
                    digest,
                    heartbeat_timeout,
                    before_publish=True,
                    repair=False,
                )
        # a staged copy was read once, whole, with its version pinned: it is not mixed
        if info.reread_before_publish and self._staged is None:
            await self._confirm_source(
                request, info, chunk_size, segments, results, heartbeat_timeout
            )
        self._set_phase("publish")
        # Committed from here on: publish and the checks after it are shielded from
        # cancellation (see the module docstring), so what is reported matches what
        # the destination holds.
        commit = asyncio.ensure_future(
            self._publish_and_check(
                request, info, prepared, segments, results, digest, heartbeat_timeout
            )
        )
        while True:
            try:
                await asyncio.shield(commit)
                break
            except asyncio.CancelledError:
                if commit.done():
                    raise  # pragma: no cover - the shielded task is never cancelled itself
                if not self._cancel_ignored:
                    self._cancel_ignored = True
                    workflow.logger.warning(
                        "cancel requested after publish began: finishing the publish; the "
                        "transfer completes with the new object at the destination"
                    )
            except (ActivityError, ApplicationError) as err:
                if self._cancel_ignored and not self._published:
                    # publish refused (nothing was published): the cancel applies
                    raise asyncio.CancelledError() from err
                raise
        return chunk_size, digest

    async def _publish_and_check(
        self,
        request: TransferRequest,
        info: ObjectInfo,
        prepared: PrepareResult,
        segments: list[Segment],
        results: dict[int, StreamResult],
        digest: str,
        heartbeat_timeout: timedelta,
    ) -> None:
        """Publish the write session, then check the destination name (run shielded).

        Publish is never a local activity: a local activity's result lives only in the
        workflow task that ran it, and when that task fails (a cancel request arriving
        while it ran makes the server reject its completion) the replay no longer knows
        the destination was replaced. As a regular activity, publish happens only once
        its scheduling is in the history, so a cancel is ordered either before it (the
        transfer is cancelled, nothing published) or after it (committed).
        """
        recorded = [
            (segment.first_chunk, segment.end_chunk, parts)
            for segment in segments
            if segment.index in results and (parts := results[segment.index].parts)
        ]
        published = await workflow.execute_activity(
            "publish",
            PublishInput(
                session=prepared.session,
                source=request.source,
                source_info=info,
                source_secret=request.source_secret,
                parts=(
                    recorded if recorded and workflow.patched(PUBLISH_PART_DIGEST_PATCH) else None
                ),
            ),
            start_to_close_timeout=SHORT_TIMEOUT,
            schedule_to_close_timeout=self._retry_budget(),
            # a worker killed under publish is noticed within this, not after 2 min
            heartbeat_timeout=SHORT_HEARTBEAT_TIMEOUT,
            retry_policy=RETRY,
        )
        self._progress_at = workflow.now()
        self._published = True
        if self._known_copies and isinstance(published, str):
            self._destination_version = published  # the record of this verified copy
        if not prepared.session_url:
            await self._verify(
                request,
                info,
                prepared,
                segments,
                results,
                digest,
                heartbeat_timeout,
                before_publish=False,
            )
        elif request.options.verify != VerifyMode.none:
            await self._verify_size(request, info)

    async def _copy(
        self,
        request: TransferRequest,
        info: ObjectInfo,
        session: WriteSession,
        segments: list[Segment],
        heartbeat_timeout: timedelta,
    ) -> dict[int, StreamResult]:
        """Run the segments, ``streams`` at a time; returns each segment's result."""
        assert self._progress is not None
        self._failure = None  # a failure of an earlier write session is handled
        if self._tune_meter is not None:  # a copy again (a read-back found damage)
            self._tune_meter = WallMeter()
        queue: deque[Segment] = deque(segments)
        results: dict[int, StreamResult] = {}
        attempts: dict[int, int] = {}
        width = max(1, min(request.options.streams, len(segments)))
        alive = [width]  # lanes not returned

        async def lane(lane_index: int) -> None:
            try:
                await copy_lane(lane_index)
            finally:
                alive[0] -= 1

        async def copy_lane(lane_index: int) -> None:
            assert self._progress is not None
            while True:
                # a lane beyond the streams granted (max-streams) idles until the end
                await workflow.wait_condition(
                    lambda: (
                        (not self._paused and (lane_index < self._lanes or not queue))
                        or self._failure is not None
                    )
                )
                raise_if_cancelling()
                if self._failure is not None or not queue:
                    if not queue and self._tune_meter is not None:
                        self._tune_meter.ran_out()  # fewer streams than the setting run on
                    return
                if self._reacquire:  # resumed after a pause gave the slots back
                    await self._reacquire_slots()
                    continue
                if self._tuner is not None and lane_index >= self._lanes:
                    continue  # the optimizer chose fewer streams since the wait ended
                segment = queue.popleft()
                # measured only when it starts under the current setting alone (after
                # fewer streams were chosen, the extra ones still share the link until
                # every stream running at that decision ended)
                started = workflow.now()
                epoch = (
                    self._tune_epoch
                    if len(self._running) < self._lanes
                    and not self._tune_draining.intersection(self._running)
                    else -1
                )
                if self._tune_meter is not None:
                    self._tune_meter.started(segment.index, started.timestamp())
                staged_by = self._stagings  # the staging the stream reads from
                from_copy = self._known_copy is not None  # it reads the known copy
                attempts[segment.index] = attempts.get(segment.index, 0) + 1
                handle = workflow.start_activity(
                    "copy_stream",
                    StreamInput(
                        transfer_id=workflow.info().workflow_id,
                        session=session,
                        segment=segment,
                        checksum=request.options.checksum,
                        read_back=request.options.verify.compares_checksums,
                        **self._read_source(request, info),
                        **self._stream_rate(request, len(self._running) + 1 + len(queue)),
                        staged=self._staged.key if self._staged else None,
                        socket_buffer=self._tune_socket_buffer,
                        stream_rate=self._tune_stream_rate(),
                        # failing attempts give up after it without progress, not at
                        # the deadline below (activities/retry_deadline.py)
                        retry_for_s=request.options.retry_for_s,
                    ),
                    result_type=StreamResult,
                    activity_id=f"stream-{segment.index:04d}-{attempts[segment.index]}",
                    start_to_close_timeout=copy_timeout(segment.length),
                    # the retry budget on top of the time the copy itself may take
                    schedule_to_close_timeout=self._retry_budget() + copy_timeout(segment.length),
                    heartbeat_timeout=heartbeat_timeout,
                    retry_policy=RETRY,
                    cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                )
                self._running[segment.index] = handle
                try:
                    result = await handle
                except ActivityError as err:
                    if self._tune_meter is not None:  # its bytes in the window are unknown
                        self._tune_meter.dropped(segment.index)
                    if segment.index in self._stopped_by_pause and (
                        isinstance(err.cause, CancelledError)
                        or (
                            err.retry_state == RetryState.CANCEL_REQUESTED
                            and workflow.patched(PAUSED_STREAM_ENDED_PATCH)
                        )
                    ):
                        # stopped by a pause before it started (a resume may already
                        # have come): schedule it again once not paused
                        self._stopped_by_pause.discard(segment.index)
                        queue.appendleft(segment)
                        continue
                    if (
                        self._staged is not None
                        and reason_type(err) == STAGED_ENTRY_LOST
                        and self._stagings <= MAX_RESTAGES
                    ):
                        # the staged copy is damaged or gone: stage the source again
                        # (one lane does, the others wait) and copy this segment from it
                        await self._restage(
                            request, info, heartbeat_timeout, staged_by, reason(err)
                        )
                        queue.appendleft(segment)
                        continue
                    if from_copy and not isinstance(err.cause, CancelledError):
                        # the known copy changed or vanished while read: read the origin
                        # (staged first when it cannot serve the segments' ranges)
                        if self._known_copy is not None:
                            self._copy_failed(err)
                        if not info.supports_ranges and self._stagings <= MAX_RESTAGES:
                            await self._restage(request, info, heartbeat_timeout, staged_by)
                        queue.appendleft(segment)
                        continue
                    moved = stream_moved_on(err, self._progress.partial.get(segment.index, 0))
                    if moved is not None:
                        # out of retry budget while its heartbeats show progress (a long
                        # segment): that is no outage, schedule it again
                        self._progress.partial[segment.index] = moved
                        self._keep_durable(segment.index, durable_in(err, segment.index))
                        self._progress_at = workflow.now()
                        queue.appendleft(segment)
                        continue
                    self._note_failed_stream(segment.index, err)
                    if self._failure is None:
                        self._failure = err
                        if self._running and workflow.patched(STREAMS_MOVED_PATCH):
                            await self._keep_streams_moved()
                    for other in self._running.values():
                        other.cancel()
                    return
                finally:
                    self._running.pop(segment.index, None)
                self._stopped_by_pause.discard(segment.index)
                if result.complete:
                    self._progress_at = workflow.now()
                    results[segment.index] = result
                    self._progress.segments_done += 1
                    self._progress.bytes_committed += segment.length
                    self._progress.partial.pop(segment.index, None)
                    self._progress.durable.pop(segment.index, None)
                    if workflow.patched(PROGRESS_MEMO_PATCH):
                        workflow.upsert_memo({"bytes_committed": self._progress.bytes_committed})
                    if self._tuner is not None and self._tune_meter is not None:
                        self._tune_finished(segment, started, result)
                    elif self._tuner is not None and epoch == self._tune_epoch:
                        self._tune_measure(segment.length, workflow.now() - started, result)
                else:
                    if self._tune_meter is not None:  # stopped: its bytes in it unknown
                        self._tune_meter.dropped(segment.index)
                    kept = self._progress.partial.get(segment.index, 0)
                    # stopped because another stream failed: never below what its
                    # heartbeats showed (_keep_streams_moved); a pause's is the truth
                    self._progress.partial[segment.index] = (
                        max(kept, result.bytes_done) if self._failure else result.bytes_done
                    )
                    # a stopped stream's result says what is durable (its chunks)
                    self._progress.durable[segment.index] = result.bytes_done
                    if (
                        self._paused
                        and not self._running
                        and workflow.patched(PAUSED_BYTES_MEMO_PATCH)
                    ):
                        workflow.upsert_memo({"bytes_paused": self._bytes_moved()})
                        self._bytes_paused_in_memo = True
                    queue.appendleft(segment)
                    raise_if_cancelling()  # the transfer was cancelled, not paused

        teller = asyncio.create_task(self._tell_lanes_ended(alive))
        try:
            await asyncio.gather(*(lane(i) for i in range(width)))
        finally:
            alive[0] = 0  # the teller returns (after a signal it is sending)
        await teller
        if self._failure is not None:
            raise self._failure
        return results

    def _running_to_tell(self, alive: int) -> int | None:
        """The streams running to tell the governors held, when it differs from what
        they count now (the streams held, or what they were told for this ticket):
        ``alive`` lanes not returned, at most the streams held and the lanes the
        transfer runs or, while more still run (the optimizer chose fewer streams and
        the others finish their segments), those running. None: nothing to tell (none
        held, paused, failed, or the last lane ended: the release follows).

        It falls as lanes run out of segments (or the optimizer's fewer streams
        drain) and rises only after a fall: the optimizer chose more again, or the
        copy runs again (a verify found damaged chunks)."""
        if not self._granted or self._paused or self._failure is not None or alive < 1:
            return None
        held = min(grant.streams for grant in self._granted.values())
        running = min(alive, held, max(self._lanes, len(self._running)))
        return running if running != self._streams_counted() else None

    def _streams_counted(self) -> int:
        """The streams of the ticket its governors count as reading (divide their
        ``max_rate`` over): those held (the fewest granted), or what they were told for
        this ticket (signal ``running``); 1 when none is held."""
        if not self._granted:
            return 1
        told = self._told_running
        if told is not None and told[0] == self._ticket:
            return told[1]
        return min(grant.streams for grant in self._granted.values())

    async def _tell_lanes_ended(self, alive: list[int]) -> None:
        """While the copy runs: when lanes ran out of segments, tell each governor held
        how many streams still run (signal ``running``, :meth:`_running_to_tell`:
        lanes ending in one workflow task share one signal; at most one per lane end
        per governor, and one per change of the optimizer's streams), so its
        ``max_rate`` goes to those (:data:`SHARE_RUNNING_PATCH`). Returns when
        ``alive[0]`` is 0 (the copy ended)."""
        while True:
            await workflow.wait_condition(
                lambda: alive[0] < 1 or self._running_to_tell(alive[0]) is not None
            )
            running = self._running_to_tell(alive[0])
            if running is None:
                return
            if self._share_running is None:
                self._share_running = workflow.patched(SHARE_RUNNING_PATCH)
            if not self._share_running:
                return  # a history from before: it told nothing
            await self._tell_running(running)

    async def _tell_running(self, running: int) -> None:
        """Signal ``running`` (``running`` streams of the ticket still run) to each
        governor held (2 events each)."""
        assert self._ticket is not None
        self._told_running = (self._ticket, running)
        await slots.tell_running(
            sorted(self._granted), SlotRunning(ticket=self._ticket, streams=running)
        )

    async def _verify(
        self,
        request: TransferRequest,
        info: ObjectInfo,
        prepared: PrepareResult,
        segments: list[Segment],
        results: dict[int, StreamResult],
        digest: str,
        heartbeat_timeout: timedelta,
        *,
        before_publish: bool,
        repair: bool = True,
    ) -> set[int]:
        """Compare what the destination holds with the source-side checksums.

        Returns:
            With ``repair``, the segments whose bytes mismatched (to be copied again);
            otherwise a mismatch raises.

        Before publish the unpublished temp data is read (``prepared.session_url``), so a
        corrupted object never gets the destination name; stores that cannot read an
        unfinished write (S3 multipart) are checked after publish, from their stored
        checksum where they keep one.
        """
        options = request.options
        if options.verify == VerifyMode.none:
            return set()
        full = options.verify == VerifyMode.full
        self._set_phase("verify")
        verify = VerifyInput(
            url=(prepared.session_url if before_publish else None) or request.destination,
            size=info.size,
            chunk_size=prepared.chunk_size,
            segments=[(s.first_chunk, s.end_chunk) for s in segments],
            checksum=options.checksum,
            expected=digest,
            # the activity reads ``full`` as ``checksum``: a worker of an older release
            # decodes it
            mode=VerifyMode.checksum if full else options.verify,
        )
        parts = [verify]
        if (
            options.verify.compares_checksums
            and prepared.verify_by_segments
            # full: a lone segment too, so that a damaged one is copied again
            and (len(segments) > 1 or (full and before_publish))
        ):
            # read the data back in parallel, one activity per segment
            parts = [
                verify.model_copy(
                    update={
                        "segments": [(s.first_chunk, s.end_chunk)],
                        "expected": checksums.combine(
                            options.checksum.value, [(results[s.index].checksum or "", s.length)]
                        ),
                        "whole_object": False,
                    }
                )
                for s in segments
            ]
            width = max(1, self._lanes)
            if len(segments) > width and workflow.patched(VERIFY_GROUPED_PATCH):
                parts = [
                    verify.model_copy(
                        update={
                            "segments": [(s.first_chunk, s.end_chunk) for s in group],
                            "expected": checksums.combine(
                                options.checksum.value,
                                [(results[s.index].checksum or "", s.length) for s in group],
                            ),
                            "whole_object": False,
                        }
                    )
                    for group in _consecutive_groups(segments, width)
                ]

        # the progress query's figures of this read-back (status: bytes verified of
        # the size; the running parts' bytes are their heartbeats'). State only: no
        # command, so no patch
        progress = self._progress
        assert progress is not None
        reads = options.verify.compares_checksums
        progress.verify_total = info.size if reads else None
        progress.verify_done = 0 if reads else None
        progress.verify_started_at = workflow.now().timestamp() if reads else None

        def part_bytes(part: VerifyInput) -> int:
            first = part.segments[0][0] * part.chunk_size
            return min(info.size, part.segments[-1][1] * part.chunk_size) - first

        def verify_part(part: VerifyInput) -> Callable[[], Awaitable[str]]:
            async def call() -> str:
                checked: str = await workflow.execute_activity(
                    "verify",
                    part,
                    result_type=str,
                    start_to_close_timeout=copy_timeout(info.size) + SHORT_TIMEOUT,
                    schedule_to_close_timeout=self._retry_budget(),
                    # the read-back heartbeats per chunk: a killed worker's verify is
                    # retried after this, not after the start-to-close bound (hours)
                    heartbeat_timeout=heartbeat_timeout,
                    retry_policy=RETRY,
                )
                if progress.verify_done is not None and part.segments:
                    progress.verify_done += part_bytes(part)
                return checked

            return call

        outcomes = await self._within_streams(
            [verify_part(part) for part in parts], return_exceptions=True
        )
        # the read-back is over
        progress.verify_done = progress.verify_total = progress.verify_started_at = None
        if not any(isinstance(outcome, BaseException) for outcome in outcomes):
            self._progress_at = workflow.now()
        bad: set[int] = set()
        for part, outcome in zip(parts, outcomes, strict=True):
            if not isinstance(outcome, BaseException):
                continue
            if (
                repair
                and not part.whole_object
                and isinstance(outcome, ActivityError)
                and reason_type(outcome) == CHECKSUM_MISMATCH
            ):
                # the part's segments (one, or a run of them: VERIFY_GROUPED_PATCH)
                firsts = {first for first, _ in part.segments}
                bad.update(s.index for s in segments if s.first_chunk in firsts)
                continue
            raise outcome
        return bad

    async def _confirm_source(
        self,
        request: TransferRequest,
        info: ObjectInfo,
        chunk_size: int,
        segments: list[Segment],
        results: dict[int, StreamResult],
        heartbeat_timeout: timedelta,
    ) -> None:
        """Read the source a second time, one activity per segment in parallel, and
        compare with the copy (see ``ObjectInfo.reread_before_publish``): a mixed copy of
        a source rewritten in place is never published."""
        self._set_phase("confirm-source")

        def confirm(s: Segment) -> Callable[[], Awaitable[Any]]:
            return lambda: workflow.execute_activity(
                "confirm_source",
                ConfirmSourceInput(
                    source=request.source,
                    source_info=info,
                    chunk_size=chunk_size,
                    segments=[(s.first_chunk, s.end_chunk, results[s.index].checksum or "")],
                    checksum=request.options.checksum,
                    source_secret=request.source_secret,
                    retry_for_s=request.options.retry_for_s,
                ),
                start_to_close_timeout=copy_timeout(s.length),
                schedule_to_close_timeout=self._retry_budget() + copy_timeout(s.length),
                heartbeat_timeout=heartbeat_timeout,
                retry_policy=RETRY,
            )

        await self._within_streams([confirm(s) for s in segments])
        self._progress_at = workflow.now()

    async def _within_streams(
        self, calls: list[Callable[[], Awaitable[T]]], *, return_exceptions: bool = False
    ) -> list[Any]:
        """Run ``calls`` (activity calls, one per segment) at most as many at once as
        the streams the transfer runs (``max-streams`` of an endpoint or link may have
        granted fewer than asked; its reads count against the same limit).

        Returns:
            The results in the order of ``calls``; with ``return_exceptions``, an
            exception in place of a failed call's result (as :func:`asyncio.gather`).

        Raises:
            Exception: without ``return_exceptions``, the first failure (once the calls
                already running have ended; no further call starts after it).
        """
        width = max(1, self._lanes)
        if width >= len(calls) or not workflow.patched(READS_WITHIN_STREAMS_PATCH):
            return await asyncio.gather(
                *(call() for call in calls), return_exceptions=return_exceptions
            )
        todo: deque[int] = deque(range(len(calls)))
        outcomes: list[Any] = [None] * len(calls)
        failure: list[BaseException] = []

        async def lane() -> None:
            while todo and (return_exceptions or not failure):
                index = todo.popleft()
                try:
                    outcomes[index] = await calls[index]()
                except Exception as err:  # a cancel of the transfer propagates
                    outcomes[index] = err
                    failure.append(err)

        await asyncio.gather(*(lane() for _ in range(width)))
        if failure and not return_exceptions:
            raise failure[0]
        return outcomes

    async def _stage(
        self, request: TransferRequest, info: ObjectInfo, heartbeat_timeout: timedelta
    ) -> None:
        """Read the source once into the worker's staging cache (``stage_source``, or
        find it there); the streams then read the entry. Phase ``staging``; ``status``
        shows the bytes staged from the activity's heartbeats.

        History: one activity (3 events and a workflow task); ``release_staged`` at the
        end adds the same again.
        """
        assert self._progress is not None
        phase = self._progress.phase
        self._set_phase("staging")
        self._bytes_move()
        self._stage_input = StageInput(
            transfer_id=workflow.info().workflow_id,
            source=request.source,
            source_info=info,
            source_secret=request.source_secret,
            # the one staging read may take the whole of the transfer's own max_rate,
            # and the transfer's whole share of its governors' (input only, no patch)
            **self._stream_rate(request, 1, staging=True),
            ticket_streams=self._streams_counted(),
            retry_for_s=request.options.retry_for_s,
        )
        self._stagings += 1
        self._staging_reads += 1
        try:
            self._staged = await self._stage_activity(info, heartbeat_timeout)
        finally:
            self._staging_reads -= 1
        self._show_staged_read(request)
        self._progress_at = workflow.now()
        if phase == "copy":  # staged again during the copy
            self._set_phase(phase)

    def _show_staged_read(self, request: TransferRequest) -> None:
        """Say in the progress where the streams read after :meth:`_stage`: a staged
        entry found in the worker's staging cache (``StageResult.reused``: no byte
        was read from the origin) is ``read_from`` :data:`~staccato.models.READ_STAGED`;
        an entry staged now was read from the origin (``read_from`` stays
        ``"origin"``, and after a lost reused entry goes back to it). Before, a
        transfer whose source's entry was reused said ``read_from origin`` while its
        origin saw no GET (tester69 MED 5). Progress text only (no command)."""
        assert self._progress is not None and self._staged is not None
        if self._staged.reused:
            self._progress.read_from = READ_STAGED
            self._progress.read_from_reason = (
                f"the source's staged entry was in the worker's staging cache (same "
                f"version and size, {units.size(self._staged.size)}): the streams read "
                f"it, and no byte was read from the origin {request.source}"
            )
        elif self._progress.read_from == READ_STAGED:
            self._progress.read_from = "origin"
            self._progress.read_from_reason = (
                "the staged entry read was lost: the source was staged again from the origin"
            )
        workflow.logger.info(
            "reading from %s: %s", self._progress.read_from, self._progress.read_from_reason
        )

    async def _stage_activity(self, info: ObjectInfo, heartbeat_timeout: timedelta) -> StageResult:
        """The ``stage_source`` activity of :meth:`_stage` (its input set)."""
        assert self._stage_input is not None
        return await workflow.execute_activity(
            "stage_source",
            self._stage_input,
            result_type=StageResult,
            activity_id=f"stage-{self._stagings}",
            start_to_close_timeout=copy_timeout(info.size),
            schedule_to_close_timeout=self._retry_budget() + copy_timeout(info.size),
            # a stage given up on restarts from byte 0 (a no-range source): a slow
            # disk sync must not pass for a dead worker, so at least the default
            heartbeat_timeout=max(heartbeat_timeout, DEFAULT_HEARTBEAT_TIMEOUT),
            retry_policy=RETRY,
        )

    async def _restage(
        self,
        request: TransferRequest,
        info: ObjectInfo,
        heartbeat_timeout: timedelta,
        staged_by: int,
        why: str | None = None,
    ) -> None:
        """Stage the source again after a stream found the staged copy damaged or
        gone (``why``: the stream's message, logged: a damaged entry was logged only
        as lost, tester69); a lane whose stream read an older staging than the
        current one only retries (another lane staged since), one lane stages while
        others wait."""
        if self._restaging:
            await workflow.wait_condition(lambda: not self._restaging)
            return
        if staged_by != self._stagings:
            return
        self._restaging = True
        try:
            if why:
                workflow.logger.warning("%s", why)
            else:
                workflow.logger.warning("the staged copy of the source was lost: staging it again")
            await self._stage(request, info, heartbeat_timeout)
        finally:
            self._restaging = False

    async def _closing_step(self, step: Coroutine[Any, Any, None]) -> None:
        """Run a step of the transfer's ending (giving slots back, unpinning its staged
        entry) to its end, shielded from cancellation.

        A cancel request that arrives during it once the new object is published is
        ignored: the destination holds the new object, so the transfer completes
        (ending cancelled would report what the destination does not hold). Before
        publish the cancel ends the transfer as it always did.
        """
        task = asyncio.ensure_future(step)
        while True:
            try:
                await asyncio.shield(task)
                return
            except asyncio.CancelledError:
                if task.done() or not (
                    self._published and workflow.patched(COMPLETED_ONCE_PUBLISHED_PATCH)
                ):
                    raise
                workflow.logger.warning(
                    "cancel requested after the new object was published: the transfer "
                    "completes (the destination holds it)"
                )

    async def _release_staged(self) -> None:
        """Remove the transfer's pin of its staged entry (best effort: an entry left
        pinned is only kept from eviction)."""
        stage_input, self._stage_input = self._stage_input, None
        await self._best_effort("release_staged", stage_input, 5, "releasing the staged copy")

    async def _verify_size(self, request: TransferRequest, info: ObjectInfo) -> None:
        """After publishing verified bytes: the destination name holds the right size."""
        await self._short_activity(
            "verify",
            VerifyInput(
                url=request.destination,
                size=info.size,
                chunk_size=request.options.chunk_size,
                segments=[],
                checksum=request.options.checksum,
                expected="",
                mode=VerifyMode.size,
            ),
            str,
        )

    async def _prepare_outliving_cancel(self, request: PrepareInput) -> PrepareResult:
        """``prepare`` in a task of its own, so a cancel of the transfer never loses the
        write session it opened (an S3 multipart upload is known only by the id in its
        answer). If the cancel comes while prepare runs, prepare is asked to stop and
        waited for (``WAIT_CANCELLATION_COMPLETED``; it finishes opening and returns),
        behind :data:`PREPARE_CANCEL_BOUNDED_PATCH` for at most
        :data:`_PREPARE_CANCEL_WAIT` (then the memo's ``left_behind`` says what it may
        still open, and the cancel goes on without its answer); if it comes in the same
        workflow task as prepare's result, awaiting the activity directly would raise
        the cancel and drop the result. Either way a session received is kept in
        ``self._session`` for the transfer's ending to clean up, then the cancel goes on.

        Raises:
            asyncio.CancelledError: the transfer was cancelled (the session, if any,
                is in ``self._session``).
            ActivityError: prepare failed.
        """
        running = asyncio.ensure_future(
            self._short_activity(
                "prepare",
                request,
                PrepareResult,
                cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            )
        )
        try:
            return await asyncio.shield(running)
        except asyncio.CancelledError:
            # A result that came with the cancel reaches ``running`` a few loop turns
            # later (the activity handle's task, then this one): let it, then cancel
            # only a prepare still under way. No timer: these turns add no command.
            for _ in range(_RESULT_TURNS):
                if running.done():
                    break
                await asyncio.sleep(0)
            bounded = False
            if not running.done():
                running.cancel()
                bounded = workflow.patched(PREPARE_CANCEL_BOUNDED_PATCH)
                if bounded and not await _ended_within(running, _PREPARE_CANCEL_WAIT):
                    self._prepare_unanswered(request)
                    raise  # ``running`` is left cancel-requested, not awaited
            try:
                self._session = (await running).session
            except (asyncio.CancelledError, ActivityError, ApplicationError):
                # the attempt under way opened nothing that it did not abort itself;
                # one whose worker died (timed out by its heartbeat) may have had its
                # request sent, which the server may carry out yet (patch: said)
                if bounded:
                    self._prepare_unanswered(request)
            raise

    def _prepare_unanswered(self, request: PrepareInput) -> None:
        """The run ends cancelled with no session from ``prepare``
        (:data:`PREPARE_CANCEL_BOUNDED_PATCH`): it did not answer within
        :data:`_PREPARE_CANCEL_WAIT`, or it ended without a result (cancelled, or timed
        out: its worker died, maybe with its request sent). Its memo's ``left_behind``
        says what an attempt may still open at the destination (nothing to say for an
        S3 object of 0 bytes, or a scheme that opens nothing)."""
        left = unanswered_prepare_left(
            request.destination,
            request.size,
            request.chunk_size,
            request.session_key,
            _in_a_dataset(),
        )
        workflow.logger.warning(
            "cancelled before prepare answered (waited %s at most); %s",
            duration(_PREPARE_CANCEL_WAIT),
            left or "it opens nothing that needs removing",
        )
        if left:
            workflow.upsert_memo({"left_behind": left})

    async def _cleanup(self, session: WriteSession | None, within: timedelta | None = None) -> bool:
        """Remove ``session``'s partial data (up to 10 attempts, and within ``within``
        when given). Returns whether it was removed (True for no session)."""
        if session is None:
            return True
        self._set_phase("cleanup")
        return await self._best_effort(
            "cleanup", session, 10, f"cleanup of {session.url}", within=within
        )

    async def _cleanup_after_cancel(self, session: WriteSession | None) -> None:
        """:meth:`_cleanup` of a cancelled run (:data:`CANCEL_CLEANUP_PATCH`): retried
        within :data:`_CLEANUP_AFTER_FAILURE_FOR` (plus one backoff) from its start,
        ``Progress.cleanup`` set meanwhile; when it did not remove the partial data, the
        memo's ``left_behind`` says what may be left and how to remove it. Runs
        recorded before the patch clean up as they did (10 attempts, no window)."""
        if session is None or not workflow.patched(CANCEL_CLEANUP_PATCH):
            await self._cleanup(session)
            return
        assert self._progress is not None
        self._progress.cleanup = partial_data(session)
        removed = await self._cleanup(session, self._cleanup_for() + _BEST_EFFORT_BACKOFF)
        self._progress.cleanup = None
        if not removed:
            left = left_behind(session, _in_a_dataset())
            workflow.logger.warning("the cancelled transfer's clean-up gave up: %s", left)
            workflow.upsert_memo({"left_behind": left})

    def _cleanup_for(self) -> timedelta:
        """The shortest window of a failed run's clean-up, the window of a cancelled
        run's: ``TransferOptions.cleanup_for_s`` when given (behind
        :data:`CLEANUP_FOR_OPTION_PATCH`, asked only then), else
        :data:`_CLEANUP_AFTER_FAILURE_FOR` (30 s)."""
        seconds = self._cleanup_for_option
        if seconds is not None and workflow.patched(CLEANUP_FOR_OPTION_PATCH):
            return timedelta(seconds=seconds)
        return _CLEANUP_AFTER_FAILURE_FOR

    async def _cleanup_after_failure(self, session: WriteSession) -> bool:
        """:meth:`_cleanup` of a run that has failed already (state ``failed``): its
        attempts are retried for ``--retry-for`` (30 s at least) from its start, and end
        at most one backoff (10 s) later or after 10 attempts; a cancel request stops
        it at once; either way the run ends failed with its reason (what ``status``
        already says), never cancelled. Returns whether the partial data was removed
        (False: the caller records what was left)."""
        within = max(self._retry_for, self._cleanup_for())
        if workflow.patched(CLEANUP_WINDOW_PATCH):
            # attempts that fail within the window are retried (see the patch)
            within += _BEST_EFFORT_BACKOFF
        task = asyncio.ensure_future(self._cleanup(session, within))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            workflow.logger.warning(
                "cancel requested while the failed transfer removes its partial data: "
                "stopping that; %s",
                left_behind(session, _in_a_dataset()),
            )
            task.cancel()  # the cleanup activity is cancelled (no wait for it)
            try:
                await task
            except asyncio.CancelledError:
                pass
            return task.done() and not task.cancelled() and task.result()

    async def _best_effort(
        self, activity: str, arg: Any, attempts: int, what: str, within: timedelta | None = None
    ) -> bool:
        """Run a short ``activity`` with up to ``attempts`` tries (10 s apart at most),
        all within ``within`` when given; a failure is logged as ``what`` failed and
        otherwise ignored (the transfer's outcome does not depend on it). Returns
        whether the activity succeeded."""
        try:
            await workflow.execute_activity(
                activity,
                arg,
                start_to_close_timeout=SHORT_TIMEOUT,
                schedule_to_close_timeout=within,
                heartbeat_timeout=SHORT_HEARTBEAT_TIMEOUT,
                retry_policy=RetryPolicy(
                    maximum_attempts=attempts, maximum_interval=_BEST_EFFORT_BACKOFF
                ),
            )
        except ActivityError as err:
            workflow.logger.warning("%s failed: %s", what, reason(err))
            return False
        return True

    def _set_state(self, state: TransferState) -> None:
        assert self._progress is not None
        if self._progress.state != state:
            self._progress.state = state
            workflow.upsert_search_attributes([sa.STATE.value_set(state.value)])
            self._live = None  # a rate measured before a pause or resume is stale
        self._show()

    def _going(self) -> TransferState:
        """The state of a transfer that is neither paused nor queued: ``running`` once
        bytes moved (or for runs recorded before patch ``scheduled-until-copy``), else
        ``scheduled``."""
        return TransferState.scheduled if self._until_copy else TransferState.running

    def _bytes_move(self) -> None:
        """The streams (or the staging read) start: ``running`` from now on (a paused
        or queued transfer keeps its state; resume and a grant then say running)."""
        assert self._progress is not None
        self._until_copy = False
        if self._progress.state == TransferState.scheduled:
            self._set_state(TransferState.running)

    def _set_phase(self, phase: str) -> None:
        assert self._progress is not None
        self._progress.phase = phase
        self._show()

    def _bytes_moved(self) -> int:
        """Bytes moved so far: the committed segments, and of those in flight what
        their last checkpoint or live report says (at most ``bytes_total``)."""
        assert self._progress is not None
        p = self._progress
        in_flight = dict(p.partial)
        live = self._live
        if live is not None and p.state == TransferState.running:
            for segment, done in live.segments.items():
                if segment in self._running:  # a finished segment is in bytes_committed
                    in_flight[segment] = max(in_flight.get(segment, 0), done)
        done = p.bytes_committed + sum(in_flight.values())
        return min(done, p.bytes_total) if p.bytes_total is not None else done

    def _bytes_durable(self) -> int:
        """Bytes durable at the destination as the workflow knows them: the committed
        segments, and the journaled chunks of those whose stream stopped, failed or
        was retried (:attr:`Progress.durable`); at most ``bytes_total``."""
        assert self._progress is not None
        p = self._progress
        done = p.bytes_committed + sum(p.durable.values())
        return min(done, p.bytes_total) if p.bytes_total is not None else done

    def _keep_durable(self, segment: int, durable: int | None) -> None:
        """``segment``'s durable bytes (None: not said) into :attr:`Progress.durable`,
        never below what it holds (an attempt that failed before its journal was
        read reports the bytes of the one before)."""
        assert self._progress is not None
        if durable is not None and durable > self._progress.durable.get(segment, 0):
            self._progress.durable[segment] = durable

    def _note_failed_stream(self, segment: int, err: ActivityError) -> None:
        """Keep the bytes a failing stream had moved (its error's details, else its
        last live report) in ``partial``, for the failed run's counts (no command;
        the run fails, or a new write session starts from none)."""
        assert self._progress is not None
        moved = self._progress.partial.get(segment, 0)
        if self._live is not None:
            moved = self._live.segments.get(segment, 0)
        details = getattr(err.cause, "details", None) or ()
        for item in details:
            if isinstance(item, dict) and item.get("segment") == segment:
                moved = max(moved, int(item.get("bytes_done") or 0))
        if moved:
            self._progress.partial[segment] = moved
        self._keep_durable(segment, durable_in(err, segment))

    async def _keep_streams_moved(self) -> None:
        """The running streams' last heartbeated bytes into ``partial`` (never less
        than it holds), before they are cancelled (:data:`STREAMS_MOVED_PATCH`); a
        failed look keeps what the workflow knows."""
        assert self._progress is not None
        info = workflow.info()
        try:
            moved = await workflow.execute_activity(
                STREAMS_MOVED,
                args=[info.workflow_id, info.run_id],
                result_type=list,
                task_queue=front.control_queue(info.task_queue),
                schedule_to_close_timeout=_STREAMS_MOVED_TIMEOUT,
                retry_policy=RetryPolicy(maximum_attempts=1),
            )
        except ActivityError:
            return
        for item in moved or []:
            try:
                segment, done = int(item[0]), int(item[1])
            except (TypeError, ValueError, IndexError):
                continue
            if done > self._progress.partial.get(segment, 0):
                self._progress.partial[segment] = done
            durable = item[2] if len(item) > 2 else None  # -1 or absent: not said
            if isinstance(durable, int) and durable >= 0:
                self._keep_durable(segment, durable)

    def _record_end_bytes(self) -> None:
        """Before a failed or cancelled run ends: its bytes moved and total into its
        memo (a closed run is not queried; ``status`` reads them there)."""
        assert self._progress is not None
        if workflow.patched(END_BYTES_MEMO_PATCH):
            ended: dict[str, Any] = {
                "bytes_done": self._bytes_moved(),
                "bytes_total": self._progress.bytes_total,
            }
            if workflow.patched(DURABLE_BYTES_MEMO_PATCH):
                ended["bytes_durable"] = self._bytes_durable()
            workflow.upsert_memo(ended)

    def _show(self) -> None:
        """The current-details line (Temporal UI, ``temporal workflow describe``):
        ``**running** (copy): 512.0 MiB / 1.0 GiB (50%) at 20.0 MiB/s, ETA 26 s; 4 streams;
        1/4 segments done``. Metadata only: setting it is no workflow command."""
        assert self._progress is not None
        p = self._progress
        rate: float | None = None
        live = self._live
        if live is not None and p.state == TransferState.running:
            if p.phase == "copy" and workflow.now() - self._live_at <= _LIVE_RATE_FOR:
                rate = live.rate_bytes_per_s or None
                measured = self._tuner.rates.get(self._tuner.streams) if self._tuner else None
                if rate is not None and measured:
                    # a tuned copy's short segments' attempts read low: the optimizer's
                    # measured rate, as ``status`` says (tester74 H; metadata only)
                    rate = max(rate, measured)
        done = self._bytes_moved()
        eta = units.eta(p.bytes_total - done, rate) if p.bytes_total is not None else None
        line = f"**{p.state.value}** ({p.phase}): {units.progress(done, p.bytes_total, rate, eta)}"
        if p.phase == "copy" and p.state == TransferState.running:
            line += f"; {len(self._running)} of {units.counted(p.streams, 'stream')} running"
        line += f"; {p.segments_done}/{p.segments_total} segments done"
        workflow.set_current_details(line + (f"\n\nerror: {p.error}" if p.error else ""))

    @workflow.signal(name="report_progress")
    def report_progress(self, raw_report: RawValue) -> None:
        """Progress of the running streams, from a worker's progress reporter (a
        :class:`ProgressReport`), shown in the current details.

        Changes in-memory state read only by :meth:`_show` and issues no workflow
        command, so histories with or without these signals replay alike. A malformed
        report (any client can signal) is ignored.
        """
        if self._progress is None:
            return
        try:
            report = workflow.payload_converter().from_payload(raw_report.payload, ProgressReport)
            report = ProgressReport.model_validate(report)
        except Exception:
            workflow.logger.warning("ignoring a malformed report_progress signal")
            return
        self._live = report
        self._live_at = workflow.now()
        # the last rate reported, for ``status`` across segment boundaries (state only:
        # no command, so no patch)
        self._progress.reported_rate = report.rate_bytes_per_s or None
        self._progress.reported_rate_at = self._live_at.timestamp()
        self._show()

    @workflow.signal(name=front.FRONT_STATE_SIGNAL)
    def front_state(self, state: str) -> None:
        """A front run's activity reports ``queued`` or ``running`` (ignored by a
        canonical run)."""
        if self._front and self._progress is not None:
            front.show_state(self._progress, state, self._front)

    @workflow.signal(name=LIMIT_QUEUED_SIGNAL)
    def limit_queued(self, why: str) -> None:
        """A governor tells why the transfer waits for its slot (sent only to runs that
        asked it, while they wait)."""
        if self._progress is None or self._waiting_for is None:
            return
        self._progress.queued_reason = why
        self._progress.queued_for = self._queued_at = self._waiting_for
        self._progress.queued_ticket = self._ticket
        if not self._paused:
            self._set_state(TransferState.queued)
        workflow.set_current_details(f"**queued**: {why}")

    @workflow.signal(name=SLOT_GRANTED_SIGNAL)
    def slot_granted(self, grant: SlotGrant) -> None:
        """A governor granted a slot (a grant for an older ticket is ignored: that
        ticket was released)."""
        grant = SlotGrant.model_validate(grant)
        if grant.ticket == self._ticket:
            self._granted[grant.name] = grant
            if grant.max_rate is not None:  # its streams are paced at the limit's share
                self._paced_by_limit = (grant.name, grant.max_rate)
                self._limit_rates[grant.name] = grant.max_rate

    async def _start_tuning(
        self, request: TransferRequest, info: ObjectInfo, recalled: TuningRecall | None = None
    ) -> TransferRequest:
        """Start the per-link optimizer (:mod:`staccato.tuning`) from the link's memory
        (``recalled``: from ``look_up_start``; None: the ``recall_link_tuning`` activity).

        Returns:
            The request to run: ``options.streams`` the most streams the optimizer may
            run (lanes, the streams asked of a governor), ``options.chunk_size`` its
            chunk size; the request as it was when the worker turned tuning off or the
            memory could not be read (the fixed defaults run).

        History: the ``recall_link_tuning`` activity (3 events and a workflow task);
        ``record_link_tuning`` after the copy adds the same. The decisions themselves
        issue no command.
        """
        assert self._progress is not None
        link = link_of(request.source, request.destination)
        try:
            recall: TuningRecall = recalled or await workflow.execute_activity(
                RECALL_TUNING,
                link,
                result_type=TuningRecall,
                task_queue=front.control_queue(workflow.info().task_queue),
                start_to_close_timeout=SHORT_TIMEOUT,
                heartbeat_timeout=SHORT_HEARTBEAT_TIMEOUT,
                retry_policy=_TUNING_RETRY,
            )
        except ActivityError as err:
            workflow.logger.warning("link tuning unavailable, fixed defaults: %s", reason(err))
            return request
        if not recall.enabled:
            return request
        memory = None if recall.memory is None else LinkMemory.model_validate(recall.memory)
        # no more streams than a worker runs at once (the rest would queue)
        sweep = workflow.patched(TUNE_SWEEP_PATCH)
        knee = sweep and workflow.patched(TUNE_KNEE_PATCH)
        self._tune_uncapped = knee and workflow.patched(TUNE_REMEMBER_UNCAPPED_PATCH)
        worker, connections = recall.worker_processes, self._connection_cap
        max_streams = min(tuning.MAX_STREAMS, worker or tuning.MAX_STREAMS)
        max_streams_reason = (
            f"the worker runs {units.counted(worker or tuning.MAX_STREAMS, 'stream')} at once "
            "(STACCATO_WORKER_PROCESSES x STACCATO_WORKER_THREADS)"
        )
        if connections and connections < max_streams:
            max_streams = connections
            max_streams_reason = (
                f"the worker opens at most {connections} connections to the host "
                "(STACCATO_SFTP_MAX_CONNECTIONS)"
            )
        state, _ = tuning.start(
            memory,
            budget=recall.memory_budget,
            max_streams=max_streams,
            sweep=sweep,
            knee=knee,
            max_streams_reason=max_streams_reason,
            uncapped=self._tune_uncapped,
        )
        if state.knee:
            self._tune_cpu_busy = workflow.patched(TUNE_CPU_BUSY_PATCH)
            self._tune_late = workflow.patched(TUNE_NO_LATE_PROBE_PATCH)
            if workflow.patched(TUNE_WALL_RATE_PATCH):
                self._tune_meter = WallMeter()
        self._tuner, self._tune_link, self._tune_memory = state, link, memory
        self._tune_socket_buffer = recall.socket_buffer_bytes
        options = request.options.model_copy(
            update={"streams": state.max_streams, "chunk_size": state.chunk_size}
        )
        request = self._request = request.model_copy(update={"options": options})
        self._lanes = state.streams
        self._most_segments = max(1, -(-info.size // state.chunk_size))
        self._progress.chunk_size = state.chunk_size
        self._show_tuning()
        return request

    def _tune_measure(self, length: int, took: timedelta, result: StreamResult) -> None:
        """Count a segment finished under the current setting; once the window holds
        enough of them (half the streams, at least 2), let the optimizer decide, and
        run the streams it chose from the next segment on.

        With patch ``tune-cpu-busy`` the window carries the host's CPU busy fraction
        the segments measured (``StreamResult.cpu_busy``, their mean weighted by their
        seconds), with ``tune-no-late-probe`` the bytes not yet copied: numbers from
        activity results and the workflow's own progress, so decisions replay."""
        assert self._tuner is not None and self._progress is not None
        w = self._tune_window
        w[0] += length
        w[1] += took.total_seconds()
        w[2] += 1
        if self._tune_cpu_busy and result.cpu_busy is not None:
            w[5] += result.cpu_busy * took.total_seconds()
            w[6] += took.total_seconds()
        failed = max(0, result.attempt - 1)
        if self._tune_endpoint_errors:
            w[3] += min(failed, result.endpoint_errors)
            w[4] += failed - min(failed, result.endpoint_errors)
        else:  # runs recorded before: every failed attempt was an error
            w[3] += failed
        if w[2] < max(2, (self._tuner.streams + 1) // 2):
            return
        self._tune_window = [0, 0.0, 0, 0, 0, 0.0, 0.0]
        if w[1] <= 0:  # no time passed (a time-skipping test server): nothing measured
            return
        total = self._progress.bytes_total
        self._tuner, decision = tuning.observe(
            self._tuner,
            Window(
                bytes=int(w[0]),
                stream_seconds=w[1],
                segments=int(w[2]),
                errors=int(w[3]),
                lost=int(w[4]),
                cpu_busy=min(1.0, w[5] / w[6]) if w[6] > 0 else None,
                bytes_left=(
                    max(0, total - self._progress.bytes_committed)
                    if self._tune_late and total is not None
                    else None
                ),
            ),
        )
        if decision.streams != self._lanes:
            self._tune_epoch += 1
            self._tune_draining = set(self._running) if decision.streams < self._lanes else set()
            self._lanes = decision.streams
        self._show_tuning()

    def _tune_finished(self, segment: Segment, started: datetime, result: StreamResult) -> None:
        """Patch ``tune-wall-rate``: count a finished segment in the window
        (:class:`staccato.tuning.WallMeter`), and once its verdict is due let the
        optimizer decide and run the streams it chose from the next segment on.
        Numbers from ``workflow.now()``, segment lengths and activity results: the
        decisions replay."""
        assert self._tuner is not None and self._tune_meter is not None
        failed = max(0, result.attempt - 1)
        errors = min(failed, result.endpoint_errors) if self._tune_endpoint_errors else failed
        span = Span(
            start=started.timestamp(),
            end=workflow.now().timestamp(),
            length=segment.length,
            errors=errors,
            lost=failed - errors,
            cpu_busy=result.cpu_busy if self._tune_cpu_busy else None,
        )
        if self._tune_meter.finished(segment.index, span, self._lanes, warm_up=self._tuner.warm_up):
            self._tune_verdict()

    def _tune_verdict(self) -> None:
        """Let the optimizer decide on the window the meter closed, and run the streams
        it chose from the next segment on."""
        assert self._tuner is not None and self._tune_meter is not None
        assert self._progress is not None
        before, total = self._lanes, self._progress.bytes_total
        now = workflow.now().timestamp()
        window = self._tune_meter.window(
            before,
            bytes_left=(
                max(0, total - self._progress.bytes_committed)
                if self._tune_late and total is not None
                else None
            ),
        )
        after = before
        if window is not None:  # None: no time passed (a time-skipping test server)
            self._tuner, decision = tuning.observe(self._tuner, window)
            after = decision.streams
            if after != self._lanes:
                self._tune_epoch += 1
                self._tune_draining = set(self._running) if after < self._lanes else set()
                self._lanes = after
            self._show_tuning()
        self._tune_meter.decided(now, before, after)

    def _not_the_links_rate(self) -> str | None:
        """Why the streams' rates are not the tuned link's (they read a known copy or a
        staged entry, not the origin, or were paced by the transfer's ``--max-rate``),
        or None when they read the origin at the link's own speed. A paced transfer
        measured the cap: a tester's ``--max-rate 20MB/s`` left the link "4 streams at
        18.8 MiB/s" for every transfer after it (same patch, ``tune-record-origin-reads-only``:
        a run recorded before it had no such marker and replays as it ran)."""
        assert self._request is not None
        max_rate = self._request.options.max_rate
        if max_rate:
            return (
                f"the streams were paced at --max-rate {units.rate(max_rate)}: their rate "
                f"is the cap's, not the link {self._tune_link}'s"
            )
        if self._paced_by_limit is not None and workflow.patched(TUNE_NOT_UNDER_LIMIT_PATCH):
            return self._paced_by_limits()
        if self._copy_read is not None:
            return (
                f"the streams read the known copy {self._copy_read}, not the origin: "
                f"their rate is not the link {self._tune_link}'s"
            )
        if self._staged is not None:
            return (
                "the streams read the source's staged entry in the staging cache, not the "
                f"origin: their rate is not the link {self._tune_link}'s"
            )
        return None

    def _paced_by_limits(self) -> str:
        """Why the streams' rates are not the link's when a grant carried a
        ``max_rate``: the limits that paced the streams (those of
        :meth:`_stream_governors`: for a staged transfer the destination endpoint's
        alone, docs/architecture.md "Which governors pace which read") and, for a
        staged transfer, those that paced its staging read (the source endpoint's and
        the link's). Before, the last grant with a ``max_rate`` was named, whichever
        governor it was: a staged transfer capped at both endpoints said "paced by the
        limit on" its source when the destination's cap paced its streams (tester69
        MED 5). Text only (no command)."""
        assert self._request is not None
        request, link = self._request, self._tune_link

        def limits(names: list[str]) -> str:
            return ", ".join(
                f"{n} (max_rate {units.rate(self._limit_rates[n])})"
                for n in names
                if n in self._limit_rates
            )

        streams = limits(self._stream_governors(request))
        staging = limits(self._stream_governors(request, staging=True))
        if self._staged is None:
            names = streams or limits(sorted(self._limit_rates))
            return (
                f"the streams were paced by the limit on {names} (`staccato limit set`): "
                f"their rate is the cap's, not the link {link}'s"
            )
        read = (
            "the source's staged entry, found in the staging cache (the origin was not read)"
            if self._staged.reused
            else "the source's staged entry in the staging cache"
            + (f", staged by a read paced by the limit on {staging}" if staging else "")
        )
        if streams:
            return (
                f"the streams read {read}, and were paced by the limit on {streams} "
                f"(`staccato limit set`): their rate is the cap's, not the link {link}'s"
            )
        return f"the streams read {read}, not the origin: their rate is not the link {link}'s"

    def _stream_governors(
        self,
        request: TransferRequest,
        staging: bool = False,
        held: Collection[str] | None = None,
    ) -> list[str]:
        """The governors held whose limits pace a read (names, sorted): the staging
        read (``staging``) crosses the source's endpoint and the link (all but the
        destination's), the streams of a staged transfer only the destination's
        endpoint, every other stream every governor (see :meth:`_stream_rate`).

        Args:
            held: the governor names to choose from; None: those granted and those
                whose grant had a ``max_rate`` (for the pacing text)."""
        governors = sorted(
            set(self._granted) | set(self._limit_rates) if held is None else set(held)
        )
        source, destination = endpoint_of(request.source), endpoint_of(request.destination)
        if source != destination and staging:
            return [g for g in governors if g != destination]
        if source != destination and self._staged is not None:
            return [g for g in governors if g == destination]
        return governors

    def _tune_stream_rate(self) -> float | None:
        """The rate (bytes/s) one stream measured at the current setting; None before
        the first measurement or untuned."""
        if self._tuner is None:
            return None
        rate = self._tuner.rates.get(self._tuner.streams)
        return None if rate is None else rate / self._tuner.streams

    def _tune_to_grant(self, granted: int, by: str | None = None) -> int:
        """The streams to run under a governor's grant of ``granted`` (by the governor
        ``by``, named as the cap's reason when it lowers the cap): the optimizer never
        goes past it."""
        assert self._tuner is not None
        if granted < self._tuner.max_streams and by is not None:
            self._tuner.cap_reason = (
                f"the limit on {by} granted {granted} (`staccato limit set ... --max-streams`"
                ", shared among the transfers it admits)"
            )
        self._tuner.max_streams = max(1, min(self._tuner.max_streams, granted))
        self._tuner.streams = min(self._tuner.streams, self._tuner.max_streams)
        self._show_tuning()
        return self._tuner.streams

    def _show_tuning(self) -> None:
        """The optimizer's choice in the progress (``status`` shows it)."""
        assert self._progress is not None and self._tuner is not None
        t = self._tuner
        self._progress.streams = t.streams
        self._progress.tuning = TuningView(
            link=self._tune_link,
            streams=t.streams,
            chunk_size=t.chunk_size,
            max_streams=t.max_streams,
            max_streams_reason=t.cap_reason,
            rate_bytes_per_s=t.rates.get(t.streams),
            decisions=len(t.decisions),
            reasons=[d.reason for d in t.decisions[-3:]],
            socket_buffer_bytes=self._tune_socket_buffer,
            learned_streams=self._tune_learned.streams if self._tune_learned else None,
            learned_rate_bytes_per_s=self._tune_learned.rate if self._tune_learned else None,
            not_recorded=self._tune_not_recorded,
        )

    async def _recorded(self) -> None:
        """Wait for ``record_link_tuning`` (best effort: a failure is logged)."""
        handle, self._tune_record = self._tune_record, None
        if handle is None:
            return
        try:
            await handle
        except ActivityError as err:
            workflow.logger.warning("the link's tuning was not recorded: %s", reason(err))

    async def _acquire_slots(
        self, request: TransferRequest, running: list[str] | None = None
    ) -> None:
        """Ask the governors of the source and destination endpoints and their link
        (in sorted order: no two transfers wait for each other) for slots; returns
        once every one that runs has granted one. Sets the streams granted.

        Args:
            running: the names whose governor runs, from ``look_up_start`` (then no
                ``find_governors``); None: looked up here.

        History: the ``find_governors`` activity (3 events and a workflow task);
        per governor that runs, the ``acquire`` signal sent (2 events), the grant
        received (1 and a workflow task), and while queued ``limit_queued`` (1) with
        the state upserts (queued, running); when a second governor is asked, the
        marker of :data:`HOLD_NONE_WHILE_QUEUED_PATCH`, and per slot given back
        while queued (:meth:`_await_grant`) its ``release`` (2) and, once granted
        where it waited, its ``acquire`` and grant again.
        """
        assert self._progress is not None
        info = workflow.info()
        control = front.control_queue(info.task_queue)
        names = (
            running
            if running is not None
            else await slots.find_governors(
                transfer_governors(request.source, request.destination), control
            )
        )
        if not names:
            return
        self._acquisitions += 1
        ticket = self._ticket = f"{info.workflow_id}/{info.run_id}/{self._acquisitions}"
        self._granted = {}
        # a governor divides its max_rate over the streams granted: ask for no more
        # than can run (signal input only, no command)
        streams = min(request.options.streams, self._most_segments or request.options.streams)
        wanted = streams
        while True:
            # the first name (sorted) not held: one given back while the transfer
            # waited at a later one is asked again once that one granted
            name = next((n for n in names if n not in self._granted), None)
            if name is None:
                break
            ask = slots.slot_request(ticket, request.options, streams)
            if name not in self._asked:
                self._asked.append(name)
            self._waiting_for = name
            self._queued_at = None
            await slots.ask_governor(name, ask, control)
            if not await self._await_grant(name, ask, control):
                # paused while queued: it left every queue; ask again once resumed
                self._left_queue = False
                await workflow.wait_condition(lambda: not self._paused)
                await self._acquire_slots(request)
                self._reacquire = False
                return
            streams = min(streams, self._granted[name].streams)
        self._waiting_for = None
        for name, grant in self._granted.items():  # an earlier one granted more streams
            if grant.streams > streams:
                await slots.release([name], SlotRelease(ticket=ticket, streams=streams))
        if self._tuner is None:
            self._lanes = self._progress.streams = streams  # status shows what was granted
        else:
            # the governor whose grant set the cap (not the source's few segments)
            by = next((n for n in sorted(self._granted) if self._granted[n].streams < wanted), None)
            self._lanes = self._tune_to_grant(streams, by)
        self._progress.queued_reason = self._progress.queued_for = None
        self._progress.queued_ticket = None
        if self._progress.state == TransferState.queued:
            self._set_state(TransferState.paused if self._paused else self._going())

    async def _await_grant(self, name: str, ask: SlotRequest, control: str) -> bool:
        """Wait for ``name``'s grant (:func:`staccato.workflows.slots.await_grant`);
        False when a pause took the transfer out of the queue meanwhile.

        Queued at ``name`` (its ``limit_queued``) while it holds other governors'
        slots (:meth:`_to_give_back`), it gives those back and waits holding none
        (:func:`staccato.workflows.slots.await_grant_holding_none`), so that it never
        keeps an endpoint's slot or a share of its ``max_rate`` from other
        transfers while it moves nothing (:data:`HOLD_NONE_WHILE_QUEUED_PATCH`; runs
        from before held them). :meth:`_acquire_slots` asks for them again, in the
        sorted order, once ``name`` granted.
        """
        if not workflow.patched(REASK_PATCH):  # runs recorded before waited plainly
            await workflow.wait_condition(lambda: name in self._granted)
            return True
        if self._granted and self._hold_none is None:  # a second governor is asked
            self._hold_none = workflow.patched(HOLD_NONE_WHILE_QUEUED_PATCH)
        await slots.await_grant_holding_none(
            name,
            ask,
            control,
            lambda: name in self._granted,
            lambda: self._left_queue,
            lambda: self._to_give_back(name),
            self._forget_grants,
        )
        return not self._left_queue

    def _to_give_back(self, name: str) -> list[str]:
        """The governors (sorted) whose slots the transfer, queued at ``name``, gives
        back while it waits (:data:`HOLD_NONE_WHILE_QUEUED_PATCH`): every one held but
        ``name``'s; [] while it is not queued there, or for runs from before."""
        if not self._hold_none or self._queued_at != name:
            return []
        return sorted(n for n in self._granted if n != name)

    def _forget_grants(self, names: list[str]) -> None:
        """Drop the grants of ``names``, given back (they are asked again)."""
        for n in names:
            del self._granted[n]

    def _stream_rate(
        self, request: TransferRequest, wanted: int | None = None, staging: bool = False
    ) -> dict[str, Any]:
        """The rate fields of a stream's input: its equal share of the transfer's own
        ``max_rate`` over the streams that run while it starts, and the ticket and
        governors its share of an endpoint's or link's ``max_rate`` is looked up by
        (activity input only, no command).

        Each cap paces the bytes that cross its endpoint or link once. A transfer
        that stages its source crosses the source's endpoint and the link in its
        staging read (``staging``: paced by those governors, not the destination's),
        and only the destination's endpoint in the streams that copy the staged entry
        (paced by that governor alone; the worker reading its staging cache is on the
        destination's side of the link). Without staging every governor held paces
        every stream. Reading a staged entry again after a loss (:meth:`_restage`) is
        a staging read too. The transfer's own ``max_rate`` paces both.

        Args:
            staging: the input of the staging read (``stage_source``).
            wanted: streams that could run now (those running, this one, and the
                segments still queued); the share divides by the lower of this and the
                streams granted, so a one-segment file gets the whole ``max_rate``.
                This is the stream's first share: the worker then reads the
                transfer's :meth:`stream_share` (``max_rate`` over the streams running
                now), so the streams still running speed up as others end.
        """
        own = request.options.max_rate
        running = max(1, self._lanes if wanted is None else min(self._lanes, wanted))
        governors = self._stream_governors(request, staging, held=self._granted)
        return {
            "max_rate": None if own is None else own / running,
            "ticket": self._ticket if governors else None,
            "governors": governors,
            "rate_group": _rate_group(request),
            "rate_part": _rate_part(request),
        }

    async def _reacquire_slots(self) -> None:
        """After a resume: one lane asks again, the others wait for it."""
        if self._acquiring:
            await workflow.wait_condition(lambda: not self._acquiring)
            return
        assert self._request is not None
        self._acquiring = True
        try:
            await self._acquire_slots(self._request)
        finally:
            self._acquiring = False
        self._reacquire = False

    async def _release_slots(self) -> None:
        """Give back every slot held or asked for (a ``release`` signal to each
        governor asked: 2 events each; none when no governor was asked)."""
        names, self._asked = self._asked, []
        self._granted = {}
        self._waiting_for = None
        await slots.release(names, SlotRelease(ticket=self._ticket or ""))

    @workflow.query(name=STREAM_SHARE_QUERY)
    def stream_share(self) -> float | None:
        """Bytes per second each copy stream running now may read of the transfer's
        own ``max_rate``: ``max_rate`` over the ``copy_stream`` activities running now
        (at least 1), so a stream that ends (its lane has no segment left) hands its
        share to the others, on whichever worker they run. None without a
        ``max_rate``. Costs no history (the streams' start-time share,
        :meth:`_stream_rate`, is the first value of their pacers)."""
        own = self._request.options.max_rate if self._request is not None else None
        return None if own is None else own / max(1, len(self._running))

    @workflow.query(name=STREAMS_RUNNING_QUERY)
    def streams_running(self) -> int:
        """How many ``copy_stream`` activities run now (scheduled and not ended):
        what a transfer of a dataset's large file reads with under the dataset's own
        ``max_rate`` (:mod:`staccato.workers.rates`). Costs no history."""
        return len(self._running) + self._staging_reads

    @workflow.query
    def progress(self) -> Progress | None:
        """Workflow-side progress (committed segments); costs no history."""
        return self._progress

    @workflow.update
    async def pause(self) -> None:
        """Stop the streams where they are; the transfer resumes on ``resume``."""
        await self._pause()

    @workflow.signal(name=CONTROL_SIGNAL)
    async def control(self, action: str) -> None:
        """A ``pause`` or ``resume`` the client sent as a signal after no worker took
        its update in time (:meth:`staccato.client.StaccatoClient.pause`): a signal is
        kept in the history until a worker runs the transfer, an update no worker
        accepted is dropped. Applied as the update would be when its validator passes
        (then the state changed meanwhile: ignored, logged). Other actions are ignored.
        """
        checks = {"pause": self._validate_pause, "resume": self._validate_resume}
        if action not in checks or not workflow.patched(CONTROL_SIGNAL_PATCH):
            return
        try:
            checks[action]()
        except ApplicationError as err:
            workflow.logger.info("ignoring a %s sent as a signal: %s", action, err.message)
            return
        await (self._pause() if action == "pause" else self._resume())

    async def _pause(self) -> None:
        """What ``pause`` does (the update, or the ``control`` signal)."""
        self._paused = True
        self._was_paused = True
        self._tune_epoch += 1  # segments stopped by the pause measure nothing
        if self._tune_meter is not None:  # a window with a pause in it measures the pause
            self._tune_meter.reset()
        if self._progress is not None:
            self._set_state(TransferState.paused)
        for index, handle in list(self._running.items()):
            self._stopped_by_pause.add(index)
            handle.cancel()
        if self._asked:  # a paused transfer holds no slot; resume asks again
            self._reacquire = True
            self._left_queue = self._waiting_for is not None
            await self._release_slots()

    @pause.validator
    def _validate_pause(self) -> None:
        if self._progress is None:
            return  # not started yet (the update came with the start): held from the start
        # queued for an endpoint's or link's slot: a pause leaves the queue
        waiting = self._progress.state == TransferState.queued and self._waiting_for is not None
        if self._progress.state not in (TransferState.running, TransferState.scheduled) and not (
            waiting
        ):
            raise ApplicationError(f"cannot pause a transfer that is {self._progress.state.value}")
        if self._progress.phase == "staging":
            raise ApplicationError(
                "cannot pause while the source is read into the staging cache (a source "
                "that cannot serve ranges would be read again from its start); pause once "
                "the copy began, or cancel"
            )
        if self._progress.phase not in _PAUSABLE_PHASES:
            raise ApplicationError(
                f"cannot pause: the copy is over and the transfer is in its "
                f"{self._progress.phase} step, which runs to its end (pause stops the "
                "copy streams only); cancel it instead, or let it finish"
            )

    @workflow.update
    async def resume(self) -> None:
        """Continue a paused transfer from what the destination holds."""
        await self._resume()

    async def _resume(self) -> None:
        """What ``resume`` does (the update, or the ``control`` signal)."""
        self._paused = False
        if self._bytes_paused_in_memo:  # only while paused (a new write session may
            # start from none: a stale figure would then say more than is held)
            workflow.upsert_memo({"bytes_paused": None})
            self._bytes_paused_in_memo = False
        if self._progress is not None:
            self._set_state(self._going())

    @resume.validator
    def _validate_resume(self) -> None:
        if self._progress is None and self._paused:
            return
        if self._progress is None or self._progress.state != TransferState.paused:
            state = self._progress.state.value if self._progress else "starting"
            raise ApplicationError(f"cannot resume a transfer that is {state}, not paused")

    def _retry_budget(self) -> timedelta:
        """What is left of the retry budget (``options.retry_for_s``) since the transfer
        last made progress: an activity's ``schedule_to_close_timeout`` (at least 1 s)."""
        left = self._progress_at + self._retry_for - workflow.now()
        return max(left, timedelta(seconds=1))

    def _gave_up(self, err: BaseException) -> str | None:
        """The message for an activity that ran out of retry budget, else None.

        Temporal reports it two ways: the last attempt's failure with retry state
        TIMEOUT (the next attempt would start after the schedule-to-close deadline), or
        a schedule-to-close ``TimeoutError`` (the deadline passed during an attempt).
        """
        if not isinstance(err, ActivityError):
            return None
        last: BaseException | None
        if isinstance(err.cause, TimeoutError) and err.cause.type == TimeoutType.SCHEDULE_TO_CLOSE:
            last = err.cause.cause
        elif err.retry_state == RetryState.TIMEOUT:
            last = err.cause  # (a heartbeat or start-to-close timeout too)
        else:
            return None
        worded: str | None = None
        if (last is None or isinstance(last, TimeoutError)) and workflow.patched(
            TIMEOUT_WORDED_PATCH
        ):
            # an attempt that hung (a stopped server): the timeout is the last error
            request = self._request
            where = step_endpoints(
                err.activity_type,
                request.source if request is not None else "",
                request.destination if request is not None else "",
            )
            worded = timed_out_text(err.activity_type, where, last)
        last_text = worded or (
            getattr(last, "message", None) or str(last) if last is not None else "none recorded"
        )
        # a stream (and the second read of a source) also gets the time one attempt may
        # take to copy its segment, so that a long healthy copy is never cut off
        return gave_up_message(
            err.activity_type,
            self._retry_for,
            last_text,
            allowance=err.activity_type in ALLOWANCE_STEPS,
            # retry state TIMEOUT (not a schedule-to-close timeout)
            next_attempt=not (
                isinstance(err.cause, TimeoutError)
                and err.cause.type == TimeoutType.SCHEDULE_TO_CLOSE
            ),
        )

    async def _short_activity(
        self,
        name: str,
        arg: Any,
        result_type: type[T],
        *more_args: Any,
        cancellation_type: workflow.ActivityCancellationType = (
            workflow.ActivityCancellationType.TRY_CANCEL
        ),
    ) -> T:
        """:func:`~staccato.workflows.calls.short_activity` within the retry budget; a success renews the budget."""
        result = await short_activity(
            name,
            arg,
            result_type,
            *more_args,
            budget=self._retry_budget(),
            cancellation_type=cancellation_type,
        )
        self._progress_at = workflow.now()
        return result


async def _ended_within(task: asyncio.Future[Any], within: timedelta) -> bool:
    """Whether ``task`` is done within ``within`` (a workflow timer, cancelled when it
    ends first)."""
    try:
        await workflow.wait_condition(task.done, timeout=within)
    except builtins.TimeoutError:  # (the name here is temporalio's)
        return False
    return True


#: event-loop turns a cancelled transfer gives an activity result that came with the
#: cancel to reach the task awaiting it (two suffice: the handle's task, then its own)
_RESULT_TURNS = 8
#: how long a cancelled transfer waits for a ``prepare`` that has not answered
#: (:data:`PREPARE_CANCEL_BOUNDED_PATCH`): one heartbeat timeout. Within it a live
#: attempt hears of the cancel (it heartbeats every 5 s, sent within 1 s, the workers'
#: throttle), so an upload it opens later it aborts itself, and one whose worker died
#: is timed out by its heartbeat (not retried: its cancel was asked) and ends the wait
#: earlier; an attempt that answers within it hands its session to the run's clean-up
_PREPARE_CANCEL_WAIT = SHORT_HEARTBEAT_TIMEOUT
_PAUSABLE_PHASES = ("scheduled", "stat", "sync-check", "look-up", "find-copy", "prepare", "copy")
#: how long a reported rate is shown without a newer report (reports come every
#: 10 s to a few minutes, see :mod:`staccato.workers.progress_reporter`)
_LIVE_RATE_FOR = timedelta(minutes=15)
