"""``DatasetWorkflow``: copy a directory or prefix (``cp -r``) page by page.

Loop: a ``list_entries`` activity lists one page of the source (``page_size`` entries,
include/exclude applied on the worker; the first page of a run short, so copying
starts after a short listing: one destination root, the ramp's first batch
(:func:`first_page_entries`, 256 entries by default; before
:data:`DATASET_SHORT_FIRST_PAGE_PATCH` the whole ramp, :func:`ramp_entries`), then
pages twice as long up to ``page_size``; several roots, :data:`FIRST_PAGE_ENTRIES`);
the next page is listed while this one is copied. Small files (<= ``small_file_max``)
are grouped into batches (<= ``batch_files`` files and <= ``batch_bytes``) copied by one
``copy_batch`` activity each; a large file is a child ``TransferWorkflow`` under its
destination's transfer id (its lock), resumable mid-file. At most ``max_batches``
batches and ``max_children`` children are in flight. One root's batches are
staggered (:data:`DATASET_STAGGER_PATCH`): a run's first ``max_batches`` ramp up to
``batch_files`` files and the listing's last page is cut into shrinking ones, so
they do not all end together. A file that fails (its name, a collision, a missing
source...) is counted with its reason; the rest goes on; the dataset then ends
``completed_with_errors``.

Id: ``staccato-dataset-`` + 32 hex of SHA-256 of the canonical destination root, so
one dataset writes under a root at a time.

Limits: a batch counts as one transfer at the governors of its source and destination
endpoints and their link (``staccato limit``): it asks each for a slot of one stream
before it starts and gives it back when it ends, so ``--max-active``, windows,
priorities and fair share hold for small files too (a large file's child transfer asks
for itself). The dataset's own ``--max-rate`` caps it whole
(:data:`DATASET_WHOLE_RATE_PATCH`): the workers pace each batch and each stream of its
large files' transfers at one stream's share, from the ``rate_group`` query; with
several roots also each large file's fan-out group, its staging read as a reader of
the source and its transfers' streams as writers of a root
(:data:`DATASET_FAN_OUT_RATE_PATCH`).

History: per page ~6 events (list activity + workflow task), per batch ~6, per child
~6; with limits set, one ``find_governors`` activity per run and per batch and
governor ~5 more (the acquire and release signals, the grant), and per slot a batch
queued at another governor gives back (:data:`DATASET_HOLD_NONE_PATCH`) ~5 more
again (its release, acquire and grant). After ``history_limit`` events (less room for what is in flight) or when Temporal
suggests it, the run stops dispatching, waits for everything in flight and continues
as new with :class:`DatasetCarried` (listing cursor = the last name dispatched,
counters, at most 1,000 failures). So one run holds a bounded history whatever the
file count: with the defaults (1,000-entry pages, 256-file batches) ~30 events per
1,000 small files, i.e. ~250,000 files per run; staggered batches add ~4 batches per
run (the ramp) and ~10 to the dataset (the last page's shrinking batches).

Cancel: batches and children in flight are cancelled (children clean up their temp
data, batches abort the session of the file in flight at their next heartbeat). The
final counts hold every file published: a batch stopped by the cancel returns the
counts of the files it published (and the names of those it did not handle), the
results that came with the cancel are counted before anything is cancelled, and a
child cancelled before it published is neither done nor failed.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy, SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    RetryState,
    TimeoutType,
    WorkflowAlreadyStartedError,
)
from temporalio.exceptions import TimeoutError as ActivityTimeoutError

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from staccato.datasets.locks import ROOT_LOCK_TYPE, RootLock, root_lock_id
    from staccato.datasets.models import (
        FAILED_CHECKPOINT_KEY,
        FAN_OUT_SMALL_MAX,
        MAX_CURRENT_SHOWN,
        MAX_FAILURES_KEPT,
        PUBLISHED_PAST_KEY,
        RATE_GROUP_QUERY,
        SESSIONS_LEFT_KEY,
        SESSIONS_LEFT_TYPE,
        BatchCheckpoint,
        BatchFile,
        BatchInput,
        BatchOrphansInput,
        BatchOrphansResult,
        BatchResult,
        DatasetCarried,
        DatasetEntry,
        DatasetProgress,
        DatasetRequest,
        DatasetResult,
        DatasetState,
        DestinationCounts,
        FanOutBatchCheckpoint,
        FanOutBatchFile,
        FanOutBatchInput,
        FanOutBatchResult,
        FileFailure,
        ListInput,
        ListResult,
        RateGroup,
        SweepInput,
        TargetsInput,
        TargetsResult,
        file_class,
    )
    from staccato.links import transfer_governors
    from staccato.models import (
        GROUP_ID_PREFIX,
        FanOutProgress,
        FanOutRequest,
        SlotGrant,
        SlotQueued,
        SlotRelease,
        TransferRequest,
        TransferResult,
        TransferState,
        WriteSession,
    )
    from staccato.temp_names import LEFT_OUT_NAMES_KEPT
    from staccato.workflows import search_attributes as sa

from staccato.workflows import front, slots
from staccato.workflows.calls import RETRY, SHORT_HEARTBEAT_TIMEOUT, ended_by_cancel
from staccato.workflows.failures import (
    decode_input,
    gave_up_message,
    left_behind,
    left_behind_of,
    reason,
    reason_type,
    remote_endpoints,
    root_cause,
    timed_out_text,
)
from staccato.workflows.governor import (
    LIMIT_QUEUED_SIGNAL,
    SLOT_GRANTED_SIGNAL,
    SLOT_QUEUED_SIGNAL,
)

DEFAULT_HEARTBEAT_TIMEOUT = timedelta(seconds=20)
LIST_TIMEOUT = timedelta(minutes=10)
#: events a batch or a child adds to the history (scheduled, started, completed and a
#: workflow task), to keep room for what is in flight when the run continues as new
EVENTS_PER_UNIT = 8
TRANSFER_ID_PREFIX = "staccato-"
#: ``workflow.patched`` id: batches ask the endpoint and link governors for a slot
DATASET_LIMITS_PATCH = "dataset-limits"
#: ``workflow.patched`` id: a dataset with several destination roots (batches of
#: ``copy_batch_to_many``, large files as fan-out groups, ``compare_targets``)
DATASET_FAN_OUT_PATCH = "dataset-fan-out"
#: ``workflow.patched`` id: a dataset with several roots locks each root (a child
#: ``DatasetRootLockWorkflow`` under the root's single-dataset id) before it writes
DATASET_ROOT_LOCKS_PATCH = "dataset-root-locks"
#: ``workflow.patched`` id: a multi-root dataset's batches ask the governors of the
#: source, every root and every link for a slot, as a single root's batches do
DATASET_FAN_OUT_LIMITS_PATCH = "dataset-fan-out-limits"
#: ``workflow.patched`` id: a cancelled dataset counts what ended with the cancel (the
#: batches and children whose results came in the cancel's workflow task) before it
#: cancels what is in flight; a failed or cancelled run writes its counts into its memo
DATASET_CANCEL_COUNTS_PATCH = "dataset-cancel-counts"
#: ``workflow.patched`` id: a batch that ended without handling every file (the
#: dataset cancelled or failed while it waited for a retry, or it failed) runs
#: ``abort_batch_orphans`` before it leaves the run: no retry of it will abort the S3
#: multipart uploads its killed attempts left open
DATASET_BATCH_ORPHANS_PATCH = "dataset-batch-orphans"
#: ``workflow.patched`` id: a batch to several roots whose activity ended without a
#: result (frozen past its heartbeat timeout after the dataset's cancel, or failed)
#: is counted from its last checkpoint (after a cancel) and its write sessions at each
#: root are removed by ``abort_batch_orphans``, as a one-root batch's are
FAN_OUT_CANCEL_ENDED_PATCH = "fan-out-batch-ended"
#: ``workflow.patched`` id: a batch (to one root or several) that failed for good
#: (retries exhausted, ``--retry-for`` spent, non-retryable, timed out) is counted from
#: its last checkpoint (its last attempt's error detail, or the timeout's last heartbeat
#: details): the files it handled keep their counts (copied, skipped, failed with their
#: own reasons), only the others fail, and its sessions are removed from there on.
#: Before, every file of the batch was failed, also those it had published
DATASET_FAILED_BATCH_COUNTS_PATCH = "dataset-failed-batch-counts"
#: ``workflow.patched`` id: a batch that ended without a result (failed for good, or
#: timed out after the dataset's cancel) whose last checkpoint names S3 multipart
#: uploads still open (``BatchCheckpoint.uploads``) hands them to
#: ``abort_batch_orphans``, which aborts them by id (the input only; asked only when
#: there are some): found by their ``Initiated`` time alone, they stayed open on a
#: store that does not keep it (moto)
DATASET_BATCH_UPLOAD_IDS_PATCH = "dataset-batch-upload-ids"
#: ``workflow.patched`` id: a batch whose activity ended without its own word on what
#: it published (timed out after the dataset's cancel, its worker killed or frozen; or
#: cancelled while it waited for a retry, with no checkpoint at all; or failed for good
#: by a timeout) has ``abort_batch_orphans`` compare its files past its last
#: checkpoint with their sources (``BatchOrphansInput.count_from``, the resume's rule
#: and window), and the files found whole at the destination are counted (copied, or
#: up to date) instead of left uncounted or failed. Before, the files its killed
#: attempt published after its last heartbeat were at the destination and not counted
#: (a tester's cancelled-then-killed dataset: 43 files done, 55 there). The
#: activity's input and result only (no command of its own); a marker on that path
DATASET_PUBLISHED_COUNT_PATCH = "dataset-count-published-past-checkpoint"
#: start-to-close timeout of ``abort_batch_orphans`` (a few ListMultipartUploads pages)
ORPHANS_TIMEOUT = timedelta(minutes=5)
#: seconds a run continued as new retries a root lock still held by its previous run
RELOCK_WAIT_S = 30
#: ``workflow.patched`` id: a dataset's first run refused a busy root at once; before,
#: ``carried.runs`` (1 in the first run) made every run wait :data:`RELOCK_WAIT_S`
#: seconds for a root held by another dataset before failing
DATASET_FIRST_RUN_BUSY_PATCH = "dataset-first-run-busy"
#: ``workflow.patched`` id: a run looks up the governors of its endpoints and link
#: (``find_governors``) beside its first listing page, not after it: the first batch
#: waited for that activity and one more workflow task (~60 ms on an idle machine,
#: before any byte moved; every run of the dataset)
DATASET_GOVERNORS_EARLY_PATCH = "dataset-governors-early"
#: entries of a run's first listing page at most: nothing is copied until it is listed,
#: and a short first page leaves activity slots free to list the next one beside its
#: batches. Later pages are ``page_size`` long: a listing activity waits for a free
#: activity slot behind the batches (a task queue hands its tasks out in no fixed
#: order), so each page should hold several rounds of batches
FIRST_PAGE_ENTRIES = 768
#: ``workflow.patched`` id: a dataset (one destination root) sizes its batches so that
#: they do not end together: a run's first ``max_batches`` batches ramp up (batch ``k``
#: holds ``k / max_batches`` of ``batch_files``), so each slot's batches end at its
#: own offset and a slot waiting for its next batch (a workflow task and an activity
#: dispatch, 0.1-0.5 s on a busy machine) leaves the others running; the listing's
#: last page is cut into shrinking batches (what is left / ``max_batches``), so the
#: slots run out together. Its first page holds the ramp (:func:`ramp_entries`) and
#: each next page twice the previous one, up to ``page_size``. Before, batches were
#: ``batch_files`` long, started in rounds and ended within ~0.1 s of each other, and
#: every slot idled while the next round was dispatched
DATASET_STAGGER_PATCH = "dataset-staggered-batches"
#: ``workflow.patched`` id (one root, staggered; issue 11's file->file row, where a
#: core idled before the first file was copied): a run's first listing page holds
#: the ramp's first batch only (:func:`first_page_entries`: 256 entries by default),
#: then pages twice as long up to ``page_size``, so copying starts once those few
#: entries are listed and the next page is listed beside the first batch. Before, the
#: first page held the whole ramp (:func:`ramp_entries`, capped at ``page_size``:
#: 4,000 entries), listed and dispatched before any file was copied (workflow start
#: -> first batch 332-555 ms at load 15, now 101-196 ms). ~2 more pages (~12 events)
#: and ~1 more batch (a page's cut) per run; a marker event per run
DATASET_SHORT_FIRST_PAGE_PATCH = "dataset-short-first-page"
#: ``workflow.patched`` id: a batch to one root (``copy_batch``) is scheduled with
#: ``--retry-for`` plus the time its work may take as its schedule-to-close timeout
#: (as a batch to several roots), and with ``retry_for_s`` in its input, so that its
#: failing attempts give up themselves once ``--retry-for`` passed without progress
#: (:func:`staccato.activities.dataset._given_up`). Before, the timeout was
#: ``--retry-for`` alone: a healthy batch still copying after it (paced by
#: ``--max-rate``, a slow link, a short ``--retry-for``) failed every file it had not
#: copied with Temporal's "Not enough time to schedule next retry". Its work is also
#: given the time its bytes take at the dataset's own ``--max-rate``. A marker event
#: per run that starts a batch
DATASET_BATCH_RETRY_FOR_PATCH = "dataset-batch-retry-for-progress"
#: ``workflow.patched`` id: a large file of a dataset to several roots that failed at
#: some root but was copied to another adds its size to the dataset's ``bytes_done``
#: (moved to the roots that took it), as a batch counts its small files; before, a
#: dataset whose one root failed reported 0 bytes done. A marker event per run that
#: counts such a file
FAILED_FILE_BYTES_PATCH = "fan-out-failed-file-bytes"
#: ``workflow.patched`` id: the dataset's own ``--max-rate`` caps the dataset whole,
#: not each batch and each large file's transfer: batches carry ``rate_group`` (the
#: dataset's id) and the run answers :data:`RATE_GROUP_QUERY` (its batches reading
#: and its large files' transfers in flight), so the workers pace each batch and each
#: of those transfers' streams at one stream's share (:mod:`staccato.workers.rates`);
#: a batch's work timeout allows for its bytes at that share. Queries and activity
#: inputs only (no command of its own); a marker event per run with a ``max_rate``
DATASET_WHOLE_RATE_PATCH = "dataset-whole-max-rate"
#: ``workflow.patched`` id: with several roots, a large file's fan-out group counts
#: in the dataset's whole ``--max-rate`` too (with :data:`DATASET_WHOLE_RATE_PATCH`):
#: its ``FanOutRequest`` carries ``rate_group`` (the dataset's id), so the group's
#: staging read and its children's streams read at most the dataset's per-stream
#: share, and :data:`RATE_GROUP_QUERY` lists the group and its transfers under
#: ``fan_outs``. A child workflow's input only; a marker event per run to several
#: roots with a ``max_rate``
DATASET_FAN_OUT_RATE_PATCH = "dataset-fan-out-whole-max-rate"
#: ``workflow.patched`` id: a ``--retry-failed`` whose ``--include``/``--exclude``
#: left out some of the earlier dataset's failures (``DatasetRequest.retry_left``)
#: starts with them as its own (counted as listed and failed, kept with their
#: reasons), so it ends ``completed_with_errors`` while they remain; before, they
#: were forgotten and the dataset ended ``completed``. State only (no command); a
#: marker event in the first run of such a retry
DATASET_RETRY_LEFT_PATCH = "dataset-retry-left-out-failures"
#: ``workflow.patched`` id: the running dataset writes its counts into its memo
#: (``counts``, with ``listing_done`` and ``at``) as each batch or large file ends, so
#: ``status`` with no worker to answer the progress query shows the last known counts
#: (a tester saw files 0/0, bytes 0 of a dataset 19 files in). One memo upsert per
#: batch end (an event beside the batch's own); before, only a failed or cancelled
#: run's end wrote them
DATASET_LIVE_COUNTS_PATCH = "dataset-live-counts"
#: ``workflow.patched`` id: the running dataset also writes its counts into its memo
#: (as :data:`DATASET_LIVE_COUNTS_PATCH` does) when its listing ends, with
#: ``listing_done``, so ``status`` with no worker to answer shows the whole dataset's
#: files listed even before any batch ended (newcomer tester, 0.35.0: 2,000 files in
#: one slow batch, the worker SIGKILLed at 47 %: ``files_total 983``, ``listing_done
#: no``). One memo upsert per run whose listing ends, and a marker event
DATASET_LISTING_COUNTS_PATCH = "dataset-listing-done-counts"
#: ``workflow.patched`` id: a listing page (``list_entries``) is scheduled with
#: ``--retry-for`` plus the time one listing may take (:data:`LIST_TIMEOUT`) as its
#: schedule-to-close timeout and with ``retry_for_s`` in its input, so its attempt
#: gives up itself past ``--retry-for``, in words naming what it lists (a hung source:
#: its hang watch, :mod:`staccato.activities.retry_deadline`). Before, the timeout was
#: ``--retry-for`` alone: a source that hung while listed failed the dataset with
#: Temporal's "Not enough time to schedule next retry..." (tester T13). A marker event
#: per run that lists
DATASET_LIST_RETRY_FOR_PATCH = "dataset-list-retry-for"
#: ``workflow.patched`` id: the first run of a ``--retry-failed`` whose earlier
#: failures left write sessions behind (``DatasetRequest.sweep``: their clean-up met a
#: destination that did not answer) removes those files' leftover temp files and
#: journals (``sweep_leftovers``) before it lists; best effort. Before, they stayed
#: until removed by hand (tester T15). A marker and one activity in such a run
DATASET_SWEEP_PATCH = "dataset-sweep-left-sessions"
#: ``workflow.patched`` id: a dataset that swept the write sessions its last run left
#: (``DatasetRequest.sweep``) sweeps them again once everything is copied, before it
#: ends: the cancelled run's requests may still reach the server after the first sweep
#: (e.g. an attempt of its large file's transfer that a frozen server held: its late
#: ``prepare`` opens the session again, temp file, journal and writers directory, under
#: the old key; ci110 found them after a ``cp -r`` that exited 0). Before, they stayed.
#: A marker and one activity more in such a dataset's last run
DATASET_SWEEP_AT_END_PATCH = "dataset-sweep-again-at-end"
#: ``workflow.patched`` id: a batch stopped by its dataset's cancel (its result names
#: the files it did not handle) has the write sessions of its files that may have been
#: in flight (the first :data:`CANCEL_IN_FLIGHT` not handled) removed by key
#: (``abort_batch_orphans`` with ``session_key`` and ``only``, within
#: :data:`CANCEL_CLEAN_UP_MAX_S`), and what it could not remove (the destination did
#: not answer) is named: the file fails with its ``left_behind``, which the next run of
#: the dataset sweeps. Before, the batch's own abort, stopped by the cancel against a
#: frozen sshd, left the in-flight file's temp file, journal and writers directory for
#: good and the status said nothing (tester62). Marker only on that path; the
#: activity's input only (no command of its own)
DATASET_CANCEL_SESSIONS_PATCH = "dataset-cancel-left-sessions"
#: ``workflow.patched`` id: a batch queued at one governor while it holds others'
#: slots (an endpoint's, then a link closed by its window) gives those back and asks
#: them again once granted where it waited, as a transfer does
#: (``hold-none-while-queued``): it never keeps an endpoint's slot from the other
#: transfers and batches while it moves nothing. Its asks carry ``named_queued`` so
#: that the governor names the waiting ticket (``slot_queued``); runs from before held
#: their slots while queued
DATASET_HOLD_NONE_PATCH = "dataset-hold-none-while-queued"
#: ``workflow.patched`` id: the files of a batch that failed for good because one of
#: its files failed say which one (``BatchCheckpoint.failed_file``) instead of
#: carrying that file's error as their own (tester75: f0088 failed with "not enough
#: space for .../f0080.bin"); runs from before gave every file the batch's error
DATASET_FAILED_FILE_PATCH = "dataset-failed-file-named"
#: the files of a batch stopped by a cancel whose sessions may be open (at most the
#: batch's files in flight: ``activities.dataset.FILES_IN_FLIGHT``)
CANCEL_IN_FLIGHT = 4
#: seconds a cancelled dataset's clean-up of a batch's sessions waits at most for a
#: destination that does not answer (less when ``--retry-for`` is shorter): past it,
#: what is left is named (and swept by the next run), and the cancel ends. Also for a
#: batch whose activity ended by the cancel without a result (frozen, or blocked on a
#: hung server past its heartbeat timeout): its ``abort_batch_orphans`` had the whole
#: ``--retry-for`` (24 h by default), so a cancel during a hang waited for the server
CANCEL_CLEAN_UP_MAX_S = 60.0
#: a tail batch (see :data:`DATASET_STAGGER_PATCH`) holds at least this share of
#: ``batch_files`` (bounds the events of a run's end)
TAIL_BATCH_SHARE = 4


def ramp_files(batch_files: int, max_batches: int, number: int) -> int:
    """Files batch ``number`` (0-based, of a run) may hold at most, staggered (see
    :data:`DATASET_STAGGER_PATCH`): the first ``max_batches`` ramp up to
    ``batch_files``, the later ones are whole."""
    if number >= max_batches:
        return batch_files
    return max(1, -(-batch_files * (number + 1) // max_batches))


def ramp_entries(batch_files: int, max_batches: int) -> int:
    """Entries of a run's first listing page, staggered: the ramp's files (every slot
    gets a batch from it), e.g. 1,152 for 256-file batches and 8 slots."""
    return sum(ramp_files(batch_files, max_batches, n) for n in range(max_batches))


def first_page_entries(batch_files: int, max_batches: int) -> int:
    """Entries of a run's first listing page, staggered, with
    :data:`DATASET_SHORT_FIRST_PAGE_PATCH`: the ramp's first batch (e.g. 256 of
    2,048-file batches and 8 slots)."""
    return ramp_files(batch_files, max_batches, 0)


def tail_files(batch_files: int, max_batches: int, left: int) -> int:
    """Files a batch of the listing's last page may hold at most, ``left`` entries
    being left on it (this one included): ``left / max_batches``, at least
    ``batch_files / TAIL_BATCH_SHARE``, at most ``batch_files``."""
    floor = max(1, batch_files // TAIL_BATCH_SHARE)
    return min(batch_files, max(floor, -(-left // max_batches)))


def decode_dataset_request(raw: RawValue) -> DatasetRequest:
    """Decode and validate the workflow input (see :func:`decode_input`).

    Raises:
        ApplicationError: non-retryable, naming each invalid field (or the encoding).
    """
    return decode_input(raw, DatasetRequest, "DatasetWorkflow")


@workflow.defn(name="DatasetWorkflow", failure_exception_types=[TypeError])
class DatasetWorkflow:
    """Copies every file under ``request.source_root`` to ``request.destination_root``."""

    def __init__(self) -> None:
        self._request: DatasetRequest | None = None
        self._carried = DatasetCarried()
        self._state = DatasetState.scheduled
        self._listing_done = False
        self._batches: dict[int, asyncio.Task[None]] = {}
        self._children: dict[str, asyncio.Task[None]] = {}
        self._current: dict[int | str, str] = {}
        self._units = 0
        self._error: str | None = None
        # limits: the governors of this run's batches (found once), the grants per
        # batch ticket, and why a batch waits (the governor's words)
        self._governors: asyncio.Task[list[str]] | None = None
        self._grants: dict[str, set[str]] = {}
        self._waiting: dict[str, str] = {}
        self._queued_reason: str | None = None
        # DATASET_HOLD_NONE_PATCH (asked by the first batch that asks two governors),
        # and per batch ticket the governor that said it waits in its queue
        self._hold_none: bool | None = None
        self._queued_at: dict[str, str] = {}
        # several destination roots (see ``_dispatch_many``)
        self._fan_out = False
        # the run is cancelling (or failing) what is in flight
        self._stopping = False
        # batch sizes staggered (DATASET_STAGGER_PATCH), and the batches formed so far
        self._staggered = False
        self._formed = 0
        # a large file's transfer to a root (its destination URL) that failed and
        # whose clean-up gave up: what it left there, until its failure is kept
        self._left_behind: dict[str, str] = {}
        # the dataset's max_rate caps it whole (DATASET_WHOLE_RATE_PATCH): the batches
        # whose activity is scheduled and the large files' transfers in flight (one
        # root: each a child TransferWorkflow under its transfer id)
        self._whole_rate = False
        self._reading: set[int] = set()
        self._transfers: set[str] = set()
        # several roots (DATASET_FAN_OUT_RATE_PATCH): the large files' fan-out groups
        # in flight that share the max_rate, each with its transfers' ids
        self._fan_out_rate = False
        self._fan_outs: dict[str, list[str]] = {}

    @workflow.run
    async def run(self, raw_request: RawValue) -> DatasetResult:
        """Copy the dataset; returns its result (``completed`` or
        ``completed_with_errors``), continues as new when the history is long.

        Raises:
            ApplicationError: non-retryable: invalid input, or the source cannot be
                listed (the reason).
        """
        request = decode_dataset_request(raw_request)
        self._request = request
        carried = request.carried or DatasetCarried(started_at=workflow.now().timestamp())
        self._carried = carried
        if request.destination_roots is not None:
            if not workflow.patched(DATASET_FAN_OUT_PATCH):
                raise ApplicationError(
                    "a dataset with several destinations needs workers of release 0.6 or later",
                    non_retryable=True,
                )
            self._fan_out = True
            if carried.destinations is None:
                carried.destinations = [
                    DestinationCounts(destination=root) for root in request.destination_roots
                ]
        if (
            request.carried is None
            and request.retry_left
            and workflow.patched(DATASET_RETRY_LEFT_PATCH)
        ):
            self._carry_left_out(request.retry_left)
        self._set_state(DatasetState.running)
        try:
            if self._fan_out and workflow.patched(DATASET_ROOT_LOCKS_PATCH):
                await self._lock_roots(request.destination_roots or [], carried.runs)
            if request.carried is None and request.sweep and workflow.patched(DATASET_SWEEP_PATCH):
                await self._sweep(request, request.sweep)
            more = await self._copy_all(request)
            if not more and request.sweep and workflow.patched(DATASET_SWEEP_AT_END_PATCH):
                await self._sweep(request, request.sweep)
        except asyncio.CancelledError:
            await self._stop_in_flight()
            self._record_end_counts()
            self._set_state(DatasetState.cancelled)
            raise
        except BaseException as err:
            await self._stop_in_flight()
            self._error = reason(err)
            self._record_end_counts()
            self._set_state(DatasetState.failed)
            raise
        if more:
            carried.runs += 1
            # the left-out failures are in carried now: not in every run's input again
            workflow.continue_as_new(
                request.model_copy(update={"carried": carried, "retry_left": None})
            )
        state = (
            DatasetState.completed_with_errors if carried.files_failed else DatasetState.completed
        )
        self._set_state(state)
        return DatasetResult(
            state=state,
            source=request.source_root,
            destination=request.destination_root,
            files_done=carried.files_done,
            files_skipped=carried.files_skipped,
            files_filtered=carried.files_filtered,
            files_left_out=carried.files_left_out,
            left_out_names=carried.left_out_names,
            files_failed=carried.files_failed,
            bytes_done=carried.bytes_done,
            # counting only (the result's payload; no command): replays unchanged
            bytes_listed=carried.bytes_listed,
            duration_s=round(workflow.now().timestamp() - (carried.started_at or 0), 3),
            runs=carried.runs,
            failures=carried.failures,
            destinations=carried.destinations,
        )

    def _carry_left_out(self, left: list[FileFailure]) -> None:
        """Start the first run of a filtered ``--retry-failed`` with the earlier
        dataset's failures it left out (``left``, each with its reason): kept, counted
        as listed and failed (per file; with several roots each pair at its root)."""
        carried = self._carried
        roots = self._request.destination_roots if self._request else None
        files = len({f.name for f in left})
        carried.files_listed += files
        carried.files_failed += files
        for failure in left:
            if carried.destinations is not None and roots and failure.destination in roots:
                carried.destinations[roots.index(failure.destination)].files_failed += 1
            if len(carried.failures) < MAX_FAILURES_KEPT:
                carried.failures.append(failure)

    # -- root locks ------------------------------------------------------------------

    async def _lock_roots(self, roots: list[str], runs: int) -> None:
        """Take each root's lock (:mod:`staccato.datasets.locks`) before anything is
        written; a run continued as new (``runs`` > 1: this run is not the dataset's
        first) retries a busy lock for :data:`RELOCK_WAIT_S` seconds (its previous
        run's locks may still be ending); a first run fails at once.

        Raises:
            ApplicationError: non-retryable ``DestinationBusy``: a root is locked by
                another dataset (it names the root and the lock's id); the locks taken
                so far end with this run.
        """
        holder = workflow.info().workflow_id
        for root in roots:
            lock_id = root_lock_id(root)
            waited = 0
            while True:
                try:
                    await workflow.start_child_workflow(
                        ROOT_LOCK_TYPE,
                        RootLock(root=root, holder=holder),
                        id=lock_id,
                        parent_close_policy=workflow.ParentClosePolicy.TERMINATE,
                        memo={"destination": root, "holder": holder, "kind": "lock"},
                        retry_policy=RetryPolicy(maximum_attempts=1),
                        static_summary=f"lock of {root} for dataset {holder}"[:200],
                    )
                    break
                except WorkflowAlreadyStartedError:
                    # histories from before the patch: the first run (runs == 1) waited
                    # too; asked only when a lock is busy, so other runs get no marker
                    continued = runs > (1 if workflow.patched(DATASET_FIRST_RUN_BUSY_PATCH) else 0)
                    if not continued or waited >= RELOCK_WAIT_S:
                        raise ApplicationError(
                            f"destination busy: {root} is being written by another dataset "
                            f"(its lock {lock_id} is held; `staccato status {lock_id}` names "
                            "it); wait for it to finish or cancel it",
                            type="DestinationBusy",
                            non_retryable=True,
                        ) from None
                    waited += 1
                    await workflow.sleep(1)

    async def _sweep(self, request: DatasetRequest, urls: list[str]) -> None:
        """Remove the leftover write sessions of the files ``urls`` (an earlier run's
        clean-up did not reach their destination: :data:`DATASET_SWEEP_PATCH`) before
        they are copied again, and once more after (:data:`DATASET_SWEEP_AT_END_PATCH`:
        what the earlier run's late requests opened again meanwhile); best effort: a
        failure is logged and the run goes on."""
        try:
            await self._clean_up("sweep_leftovers", SweepInput(urls=urls), request)
        except Exception as err:  # noqa: BLE001
            workflow.logger.warning(
                "the write sessions left by earlier runs were not removed: %s", reason(err)
            )

    # -- the loop --------------------------------------------------------------------

    async def _copy_all(self, request: DatasetRequest) -> bool:
        """List and dispatch until the listing ends (False) or this run's history is
        full (True: continue as new); everything dispatched is done on return."""
        carried = self._carried
        names = request.retry_failed
        after, index = carried.after, carried.retry_index
        # (never asked for several roots: their histories stay as they were)
        self._staggered = not self._fan_out and workflow.patched(DATASET_STAGGER_PATCH)
        self._whole_rate = bool(request.options.max_rate) and workflow.patched(
            DATASET_WHOLE_RATE_PATCH
        )
        self._fan_out_rate = (
            self._whole_rate and self._fan_out and workflow.patched(DATASET_FAN_OUT_RATE_PATCH)
        )
        if names is not None:
            first_limit = request.page_size
        elif self._staggered:
            first_limit = ramp_entries(request.batch_files, request.max_batches)
            if workflow.patched(DATASET_SHORT_FIRST_PAGE_PATCH):
                first_limit = first_page_entries(request.batch_files, request.max_batches)
        else:
            first_limit = FIRST_PAGE_ENTRIES
        limit = min(request.page_size, first_limit)
        listing: asyncio.Task[ListResult] | None = asyncio.create_task(
            self._list(request, after, index, limit)
        )
        if workflow.patched(DATASET_GOVERNORS_EARLY_PATCH):
            self._find_governors(request)  # beside the listing (see the patch)
        while listing is not None:
            page = await listing
            listing = None
            base = index
            # counting only (no command): whether filters left everything out
            carried.files_filtered += page.skipped_by_filters
            if names is not None:
                index += request.page_size
                more = index < len(names)
            else:
                more = page.next_after is not None
                after = page.next_after
            if more and not self._history_full(request):
                limit = min(request.page_size, limit * 2) if self._staggered else request.page_size
                listing = asyncio.create_task(  # prefetch
                    self._list(request, after, index, limit)
                )
            if self._fan_out:
                stopped = await self._dispatch_many(request, page, base)
            else:
                stopped = await self._dispatch(request, page, base, last=not more)
            if stopped:
                # the names left out before the cursor: the next run lists the rest again
                self._keep_left_out_names(page, carried.after or "")
                if listing is not None:
                    listing.cancel()
                    try:
                        await listing
                    except (asyncio.CancelledError, CancelledError, Exception):  # noqa: BLE001
                        pass
                await self._drain()
                return True
            if names is not None:
                carried.retry_index = index
            else:
                carried.after = page.last
                # counting only (no command): the reserved names left out after the
                # page's last entry (those before an entry: as it is handled)
                carried.files_left_out += page.left_out_trailing
                self._keep_left_out_names(page, None)
            if not more:
                # every file is listed and dispatched: files_listed is final (the
                # progress query's state only, no command: it was set after the drain,
                # so a 3-file dataset showed "3+" files to its end)
                self._listing_done = True
                if workflow.patched(DATASET_LISTING_COUNTS_PATCH):
                    self._record_live_counts()  # what status shows if no worker answers
            if more and listing is None:  # history full: this page was the run's last
                await self._drain()
                return True
        await self._drain()
        self._listing_done = True
        return False

    async def _dispatch(
        self, request: DatasetRequest, page: ListResult, base: int, last: bool = False
    ) -> bool:
        """Start the work of ``page``'s entries (waiting for room in the windows);
        ``last``: the listing ends with this page (staggered: its batches shrink).

        Returns:
            True when the run's history filled up before the page's end: the cursor
            (``carried.after`` / ``retry_index``) then points at the last entry started.
        """
        carried = self._carried
        group: list[BatchFile] = []
        group_bytes = 0
        group_files = request.batch_files  # the files the group being formed may hold
        handled: tuple[int, str] | None = None  # the last entry dispatched or failed

        async def flush() -> None:
            nonlocal group, group_bytes
            if group:
                await self._start_batch(request, group)
            group, group_bytes = [], 0
            if handled is not None:
                self._advance(request, *handled)

        # whether the history is full, asked again only after an await: between two
        # awaits no activation can come, so the answer cannot change (asked per entry,
        # ``workflow.info()`` was 10 of the 27 py-spy samples of a run's workflow code)
        full: bool | None = None
        for position, entry in enumerate(page.entries):
            if full is None:
                full = self._history_full(request)
            if full:
                await flush()
                return True
            carried.files_listed += 1
            if entry.left_out_before:  # counting only (no command)
                carried.files_left_out += entry.left_out_before
            carried.bytes_listed += entry.size
            if entry.error is not None:
                self._fail(entry.name, entry.error)
            elif entry.destination is not None:  # large: a child transfer
                await flush()
                await self._start_child(request, entry)
                full = None
            else:
                if group and (
                    len(group) >= group_files or group_bytes + entry.size > request.batch_bytes
                ):
                    await flush()
                    full = None
                if not group and self._staggered:
                    group_files = ramp_files(request.batch_files, request.max_batches, self._formed)
                    if last:
                        left = len(page.entries) - position
                        group_files = min(
                            group_files, tail_files(request.batch_files, request.max_batches, left)
                        )
                # the entry's fields are validated already (its page was): not again
                # per file in the workflow task (~10 % of the worker process's CPU)
                group.append(BatchFile.model_construct(name=entry.name, size=entry.size))
                group_bytes += entry.size
            handled = (base + position, entry.name)
            if not group:
                self._advance(request, *handled)
        await flush()
        return False

    def _keep_left_out_names(self, page: ListResult, before: str | None) -> None:
        """Keep the first :data:`~staccato.temp_names.LEFT_OUT_NAMES_KEPT` names the
        listing left out as reserved for Staccato's temp files, of ``page``'s (those
        before ``before``, the cursor of a run that stops mid-page: the next run lists
        the others again; None: all). Counting only, no command."""
        carried = self._carried
        room = LEFT_OUT_NAMES_KEPT - len(carried.left_out_names)
        if room <= 0 or not page.left_out_names:
            return
        names = page.left_out_names
        if before is not None:
            names = [
                n
                for n in names
                if n.encode("utf-8", "surrogateescape") < before.encode("utf-8", "surrogateescape")
            ]
        carried.left_out_names.extend(names[:room])

    def _advance(self, request: DatasetRequest, position: int, name: str) -> None:
        """Every entry up to ``name`` (``position`` in the retry list) is started."""
        if request.retry_failed is not None:
            self._carried.retry_index = position + 1
        else:
            self._carried.after = name

    def _history_full(self, request: DatasetRequest) -> bool:
        info = workflow.info()
        room = (request.max_batches + request.max_children) * EVENTS_PER_UNIT + 20
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() + room >= request.history_limit
        )

    async def _list(
        self, request: DatasetRequest, after: str | None, index: int, limit: int
    ) -> ListResult:
        """List up to ``limit`` entries after ``after`` (or, with ``retry_failed``, the
        ``page_size`` names from ``index``).

        Raises:
            ActivityError: the listing failed (its reason).
            ApplicationError: non-retryable: Temporal's deadline of the listing passed
                (its error worded: the give-up, naming the source).
        """
        retry_for = timedelta(seconds=request.options.retry_for_s)
        watched = workflow.patched(DATASET_LIST_RETRY_FOR_PATCH)
        try:
            return await self._list_page(request, after, index, limit, watched)
        except ActivityError as err:
            # Temporal's deadline passed all the same (a worker before the patch, a
            # give-up that did not reach the server): its words name nothing
            where = " and ".join(remote_endpoints(request.source_root))  # "": a local one
            why = _batch_gave_up(err, retry_for.total_seconds(), where)
            if why is None:
                raise
            raise ApplicationError(
                f"listing {request.source_root}: {why}", type=reason_type(err), non_retryable=True
            ) from err

    async def _list_page(
        self, request: DatasetRequest, after: str | None, index: int, limit: int, watched: bool
    ) -> ListResult:
        """:meth:`_list`'s activity; ``watched``: scheduled with ``retry_for_s`` (see
        :data:`DATASET_LIST_RETRY_FOR_PATCH`)."""
        names = request.retry_failed
        retry_for = timedelta(seconds=request.options.retry_for_s)
        return await workflow.execute_activity(
            "list_entries",
            ListInput(
                source_root=request.source_root,
                destination_root=request.destination_root,
                after=after,
                limit=limit,
                include=request.include,
                exclude=request.exclude,
                names=names[index : index + request.page_size] if names is not None else None,
                small_file_max=(
                    min(request.small_file_max, FAN_OUT_SMALL_MAX, request.options.chunk_size)
                    if self._fan_out
                    else request.small_file_max
                ),
                destination_roots=request.destination_roots if self._fan_out else None,
                retry_for_s=request.options.retry_for_s if watched else None,
            ),
            result_type=ListResult,
            start_to_close_timeout=LIST_TIMEOUT,
            heartbeat_timeout=self._heartbeat_timeout(request),
            schedule_to_close_timeout=retry_for + LIST_TIMEOUT if watched else retry_for,
            retry_policy=RETRY,
        )

    def _heartbeat_timeout(self, request: DatasetRequest) -> timedelta:
        seconds = request.options.heartbeat_timeout_s
        return timedelta(seconds=seconds) if seconds else DEFAULT_HEARTBEAT_TIMEOUT

    # -- batches -----------------------------------------------------------------------

    async def _start_batch(self, request: DatasetRequest, files: list[BatchFile]) -> None:
        self._formed += 1
        await workflow.wait_condition(lambda: len(self._batches) < request.max_batches)
        self._units += 1
        number = self._units
        info = workflow.info()
        batch = BatchInput(
            source_root=request.source_root,
            destination_root=request.destination_root,
            files=files,
            options=request.options,
            key=f"{info.workflow_id}-{info.run_id[:8]}-b{number}",
            rate_group=info.workflow_id if self._whole_rate else None,
        )
        self._current[number] = files[0].name
        self._batches[number] = asyncio.create_task(self._run_batch(request, number, batch))

    async def _run_batch(self, request: DatasetRequest, number: int, batch: BatchInput) -> None:
        size = sum(f.size for f in batch.files)
        held: list[str] = []
        scheduled_at: float | None = None  # workflow time its activity was scheduled
        handled_all = False  # its activity returned, every file handled
        #: its activity ended without a result (no clean-up of its own): from which
        #: file on its sessions are left to remove
        unclean_from: int | None = None
        #: stopped by the dataset's cancel: the indexes of its files that may have
        #: been in flight (their sessions, which its stopped abort may have left)
        cancel_left: list[int] | None = None
        stopped = False  # its activity ended by the dataset's cancel without a result
        #: the S3 multipart uploads its last checkpoint names open (ended without a result)
        uploads: dict[str, str] | None = None
        #: its activity ended without its word on what it published: its files from this
        #: index on are compared at the destination (:data:`DATASET_PUBLISHED_COUNT_PATCH`)
        count_from: int | None = None
        #: failed for good by a timeout: the files that fail unless found published
        #: (their indexes, and the reason)
        to_fail: tuple[list[int], str] | None = None
        #: the files counted already past the checkpoint (a failed attempt's ``ended_after``)
        counted: set[int] = set()
        try:
            if workflow.patched(DATASET_LIMITS_PATCH):
                held = await self._acquire(request, batch.key)
            if held:
                # the worker paces the batch at its share of their max_rate (the
                # activity's input only: no command of its own)
                batch = batch.model_copy(update={"governors": held})
            work = timedelta(seconds=600 + size // 1_000_000)
            retry_for = timedelta(seconds=request.options.retry_for_s)
            if workflow.patched(DATASET_BATCH_RETRY_FOR_PATCH):
                # --retry-for counts from the batch's last progress, not its start
                batch = batch.model_copy(update={"retry_for_s": request.options.retry_for_s})
                if request.options.max_rate:  # paced: the time its bytes take at the rate
                    work += timedelta(seconds=size // request.options.max_rate)
                    work += self._rate_share_time(request, size)
                within = retry_for + work
            else:
                within = retry_for
            scheduled_at = workflow.now().timestamp()
            self._reading.add(number)
            result: BatchResult = await workflow.execute_activity(
                "copy_batch",
                batch,
                result_type=BatchResult,
                start_to_close_timeout=work,
                heartbeat_timeout=self._heartbeat_timeout(request),
                schedule_to_close_timeout=within,
                retry_policy=RETRY,
                # a cancelled dataset waits for the batch to remove its file in flight
                cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            )
            # counted at once, before any await: a cancel that comes next (while the
            # slots are given back) cannot lose them
            self._count_batch(result)
            handled_all = result.not_handled is None
            if result.not_handled and self._stopping:
                cancel_left = _in_flight_at_cancel(batch, result.not_handled)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            if ended_by_cancel(err):
                # the dataset is being cancelled; a batch that could not answer (its
                # process frozen) ended by its heartbeat timeout: count what its last
                # checkpoint says it handled (files it published after that beat are
                # on the destination but not counted)
                details = getattr(getattr(err, "cause", None), "last_heartbeat_details", None) or ()
                if details and isinstance(details[0], dict):
                    checkpoint = BatchCheckpoint.model_validate(details[0])
                    self._count_batch(checkpoint)
                    unclean_from = checkpoint.next_index
                    uploads = checkpoint.uploads
                if workflow.patched(DATASET_PUBLISHED_COUNT_PATCH):
                    # what it published past that checkpoint (or, with none: cancelled
                    # while it waited for a retry, what a killed attempt published) is
                    # compared, counted and its sessions there removed
                    unclean_from = count_from = unclean_from or 0
                stopped = True
                return
            # failed for good: the files its last checkpoint handled keep their counts,
            # and so do those its last attempt ended past that checkpoint (copied or
            # up to date: ``ended_after``); the others fail
            unclean_from = 0
            ended_after: set[int] = set()
            last: BatchCheckpoint | None = None
            if workflow.patched(DATASET_FAILED_BATCH_COUNTS_PATCH):
                last = _failed_checkpoint(err, BatchCheckpoint)
                if last is not None:
                    last.not_handled = None
                    unclean_from = min(last.next_index, len(batch.files))
                    uploads = last.uploads
                    ended_after = _count_ended_after(last, batch, unclean_from)
                    self._count_batch(last)
            why = reason(err)
            if batch.retry_for_s is not None:  # scheduled within --retry-for of progress
                # the roots that are servers (a local one cannot "not answer")
                where = " and ".join(remote_endpoints(batch.source_root, batch.destination_root))
                why = _batch_gave_up(err, batch.retry_for_s, where) or why
            failing = [i for i in range(unclean_from, len(batch.files)) if i not in ended_after]
            if (
                failing
                and isinstance(getattr(err, "cause", None), ActivityTimeoutError)
                and workflow.patched(DATASET_PUBLISHED_COUNT_PATCH)
            ):
                # timed out (its worker killed or frozen): its last attempt may have
                # published files past its checkpoint; those found there count, the
                # others fail once compared (below)
                count_from, to_fail, counted = unclean_from, (failing, why), ended_after
                return
            failed_file = last.failed_file if last is not None else None
            named = failed_file is not None and workflow.patched(DATASET_FAILED_FILE_PATCH)
            for index in failing:
                name = batch.files[index].name
                self._fail(
                    name,
                    f"its batch failed on another of its files, {failed_file}: {why}"
                    if named and name != failed_file
                    else f"its batch failed: {why}",
                )
            return
        finally:
            self._reading.discard(number)
            self._waiting.pop(batch.key, None)
            self._grants.pop(batch.key, None)
            if held:  # before the batch leaves self._batches: the run ends once it is empty
                await slots.release(held, SlotRelease(ticket=batch.key))
            try:
                if scheduled_at is not None and not handled_all:
                    found = await self._abort_batch_orphans(
                        request,
                        batch,
                        scheduled_at,
                        unclean_from,
                        cancel_left,
                        stopped,
                        uploads,
                        count_from,
                    )
                    counted |= self._count_published(batch, found, counted)
            finally:
                if to_fail is not None:
                    for index in to_fail[0]:
                        if index not in counted:
                            self._fail(batch.files[index].name, f"its batch failed: {to_fail[1]}")
                self._batches.pop(number, None)
                self._current.pop(number, None)

    def _count_published(
        self, batch: BatchInput, found: BatchOrphansResult | None, counted: set[int]
    ) -> set[int]:
        """Count the files of ``batch`` that ``abort_batch_orphans`` found whole at the
        destination past its last checkpoint (``found.ended``: index -> ``'c'`` copied,
        its size in bytes, or ``'s'`` up to date), but those in ``counted`` (counted
        already); returns their indexes (:data:`DATASET_PUBLISHED_COUNT_PATCH`). State
        only (and the live counts' memo, as any batch end)."""
        if found is None or not found.ended:
            return set()
        result = BatchResult()
        indexes = _add_ended(found.ended, batch, result, start=0, counted=counted)
        if indexes:
            self._count_batch(result)
        return indexes

    async def _abort_batch_orphans(
        self,
        request: DatasetRequest,
        batch: BatchInput,
        since: float,
        unclean_from: int | None = None,
        cancel_left: list[int] | None = None,
        stopped: bool = False,
        uploads: dict[str, str] | None = None,
        count_from: int | None = None,
    ) -> BatchOrphansResult | None:
        """A batch that ended without handling every file (cancelled with the dataset,
        failed, timed out) will not run again, so no retry aborts what its killed
        attempts left open that cannot be found again by key (S3 multipart uploads):
        ``abort_batch_orphans`` does, while this run still holds the destination's
        lock. Best effort: a failure is logged, the run goes on (or ends).

        ``unclean_from``: the batch's activity ended without a result (it failed, or a
        frozen attempt timed out after a cancel), so its own clean-up did not run: the
        sessions of its files from that index on that reopen by key (local files, SFTP)
        are removed too (the input only: no command of its own).

        ``cancel_left``: the batch was stopped by the dataset's cancel; the indexes of
        its files that may have been in flight (:data:`DATASET_CANCEL_SESSIONS_PATCH`):
        their sessions are removed by key too, and those that may be left are named.
        ``stopped``: its activity ended by that cancel without a result (frozen, or
        failed after the request): those left are named too.

        ``uploads``: the S3 multipart uploads its last checkpoint names open (upload id
        -> destination URL; its activity ended without a result): aborted by id, behind
        :data:`DATASET_BATCH_UPLOAD_IDS_PATCH` (asked only when there are some).

        ``count_from``: its activity ended without its word on what it published
        (:data:`DATASET_PUBLISHED_COUNT_PATCH`): its files from there on are compared
        with their sources at the destination first.

        Returns:
            With ``count_from``, what the activity found (None when it failed without
            saying, or without ``count_from``)."""
        if not workflow.patched(DATASET_BATCH_ORPHANS_PATCH):
            return None
        if unclean_from is None and cancel_left and workflow.patched(DATASET_CANCEL_SESSIONS_PATCH):
            await self._abort_orphans(
                request,
                batch.key,
                BatchOrphansInput(
                    destination_root=batch.destination_root,
                    names=[f.name for f in batch.files],
                    since=since,
                    session_key=batch.key,
                    only=cancel_left,
                    sizes=[f.size for f in batch.files],
                    chunk_size=batch.options.chunk_size,
                ),
                within=min(request.options.retry_for_s, CANCEL_CLEAN_UP_MAX_S),
                cancelled=True,
            )
            return None
        return await self._abort_orphans(
            request,
            batch.key,
            BatchOrphansInput(
                destination_root=batch.destination_root,
                names=[f.name for f in batch.files],
                since=since,
                **(
                    {}
                    if count_from is None
                    else {
                        "count_from": count_from,
                        "source_root": batch.source_root,
                        "options": batch.options,
                    }
                ),
                # (the input only: no command of its own)
                uploads=(
                    uploads
                    if uploads and workflow.patched(DATASET_BATCH_UPLOAD_IDS_PATCH)
                    else None
                ),
                **(
                    {}
                    if unclean_from is None
                    else {
                        "session_key": batch.key,
                        "resume_from": unclean_from,
                        "sizes": [f.size for f in batch.files],
                        "chunk_size": batch.options.chunk_size,
                    }
                ),
            ),
            # stopped by the cancel: bounded as the cancel's other clean-up (asked only
            # then: old histories replay as recorded)
            within=(
                min(request.options.retry_for_s, CANCEL_CLEAN_UP_MAX_S)
                if stopped and workflow.patched(DATASET_CANCEL_SESSIONS_PATCH)
                else None
            ),
            cancelled=stopped,
        )

    @staticmethod
    async def _clean_up(
        activity: str,
        arg: Any,
        request: DatasetRequest,
        within: float | None = None,
        result_type: type[Any] = int,
    ) -> Any:
        """Run the clean-up activity ``activity`` (``sweep_leftovers``,
        ``abort_batch_orphans``) on ``arg`` within the dataset's ``--retry-for`` (or
        ``within`` seconds); returns what it removed (a count; ``result_type``
        :class:`BatchOrphansResult` when ``abort_batch_orphans`` was asked to compare).

        Raises:
            ActivityError: it failed for good (the callers log it and go on).
        """
        return await workflow.execute_activity(
            activity,
            arg,
            result_type=result_type,
            start_to_close_timeout=ORPHANS_TIMEOUT,
            schedule_to_close_timeout=timedelta(
                seconds=request.options.retry_for_s if within is None else within
            ),
            heartbeat_timeout=SHORT_HEARTBEAT_TIMEOUT,
            retry_policy=RETRY,
        )

    async def _abort_orphans(
        self,
        request: DatasetRequest,
        batch_key: str,
        orphans: BatchOrphansInput,
        within: float | None = None,
        cancelled: bool = False,
    ) -> BatchOrphansResult | None:
        """Run ``abort_batch_orphans`` for ``orphans`` (a batch's, keyed ``batch_key``)
        within ``within`` seconds (None: ``--retry-for``); best effort: a failure is
        logged and the run goes on. ``cancelled``: the batch was stopped by the
        dataset's cancel (its files not handled are no failures): a file whose session
        may be left fails, naming it (:meth:`_name_sessions_left`).

        Returns:
            With ``orphans.count_from``, the files it found published (also from the
            details of its failure :data:`SESSIONS_LEFT_TYPE`); None otherwise or when
            it failed without saying."""
        compared = orphans.count_from is not None
        try:
            found = await self._clean_up(
                "abort_batch_orphans",
                orphans,
                request,
                within,
                BatchOrphansResult if compared else int,
            )
            return found if isinstance(found, BatchOrphansResult) else None
        except Exception as err:  # noqa: BLE001
            workflow.logger.warning(
                "batch %s: its write sessions at %s were not removed: %s",
                batch_key,
                orphans.destination_root,
                reason(err),
            )
            self._name_sessions_left(orphans, err, cancelled)
            return _published_in_failure(err) if compared else None

    def _name_sessions_left(
        self, orphans: BatchOrphansInput, err: BaseException, cancelled: bool = False
    ) -> None:
        """Put the write sessions ``abort_batch_orphans`` could not remove (its failure
        ``err``, type :data:`SESSIONS_LEFT_TYPE`: the destination did not answer or
        failed) into their files' failures (``FileFailure.left_behind``: what is left
        where, and how to remove it), so ``status`` names them (text and JSON). State
        only (no command). Before, a batch to a hung SFTP server left its temp file
        and journal and said nothing of them (tester T15)."""
        cause = root_cause(err)
        if not isinstance(cause, ApplicationError) or cause.type != SESSIONS_LEFT_TYPE:
            return
        root = orphans.destination_root if self._fan_out else None
        for detail in cause.details:
            if not isinstance(detail, dict) or not isinstance(detail.get(SESSIONS_LEFT_KEY), list):
                continue
            for item in detail[SESSIONS_LEFT_KEY]:
                try:
                    name = orphans.names[int(item["index"])]
                    temp, url = str(item["temp"]), str(item["url"])
                except (KeyError, TypeError, ValueError, IndexError):
                    continue
                left = left_behind(
                    WriteSession(url=url, size=0, chunk_size=0, session_id=temp),
                    in_a_dataset=True,
                )
                failures = self._carried.failures
                for at in range(len(failures) - 1, -1, -1):
                    failure = failures[at]
                    if failure.name == name and failure.destination == root:
                        if failure.left_behind is None:
                            failures[at] = failure.model_copy(update={"left_behind": left})
                        break
                else:
                    # not handled (the dataset's cancel), so no failure yet: it fails,
                    # named (asked only here: old histories replay as recorded)
                    if cancelled and workflow.patched(DATASET_CANCEL_SESSIONS_PATCH):
                        self._fail(
                            name,
                            "its batch was cancelled with the dataset while its "
                            "destination did not answer: its write session was not "
                            "removed",
                            left,
                        )

    def _count_batch(self, result: BatchResult) -> None:
        """Add a batch's counts; the files a batch stopped by a cancel did not handle
        fail unless the dataset is being cancelled (a cancel it did not ask for, e.g.
        an operator's: ``--retry-failed`` copies them)."""
        carried = self._carried
        carried.files_done += result.done
        carried.files_skipped += result.skipped
        carried.bytes_done += result.bytes
        for failure in result.failures:
            self._fail(failure.name, failure.reason)
        if not self._stopping:
            for name in result.not_handled or ():
                self._fail(name, "its batch was cancelled before it copied it")
        self._show()
        self._record_live_counts()

    async def _acquire(self, request: DatasetRequest, ticket: str) -> list[str]:
        """Ask the governors of the batches' endpoints and link (sorted: no two runs
        wait for each other) for a slot of one stream under ``ticket``; returns the
        governors asked (none when no limit is set), once every one granted.

        Queued at one governor while it holds others' slots, the batch gives those
        back and asks them again, in the sorted order, once granted where it waited
        (:data:`DATASET_HOLD_NONE_PATCH`,
        :func:`staccato.workflows.slots.await_grant_holding_none`).

        History per batch and governor: the ``acquire`` signal (2 events), the grant
        (1 and a workflow task), while queued ``slot_queued`` (``limit_queued`` for
        runs from before: 1); the patch's marker once per run whose batches ask two
        governors or more (1); per slot given back its ``release`` (2) and later its
        ``acquire`` (2) and grant (1) again, with their workflow tasks.
        """
        control = front.control_queue(workflow.info().task_queue)
        names = await self._find_governors(request)
        if not names:
            return []
        ask = slots.slot_request(ticket, request.options, 1)
        if len(names) > 1 and self._hold_none is None:
            self._hold_none = workflow.patched(DATASET_HOLD_NONE_PATCH)
        if self._hold_none:  # the governor names the ticket that waits (signal input only)
            ask = ask.model_copy(update={"named_queued": True})
        asked: list[str] = []
        try:
            while True:
                # the first name (sorted) not held: one given back while the batch
                # waited at a later one is asked again once that one granted
                held = self._grants.get(ticket, set())
                name = next((n for n in names if n not in held), None)
                if name is None:
                    break
                if name not in asked:
                    asked.append(name)
                self._waiting[ticket] = name
                self._queued_at.pop(ticket, None)
                await slots.ask_governor(name, ask, control)
                await slots.await_grant_holding_none(
                    name,
                    ask,
                    control,
                    self._granted(ticket, name),
                    lambda: False,
                    self._to_give_back(ticket, name),
                    lambda names: self._grants.get(ticket, set()).difference_update(names),
                )
        except BaseException:
            await slots.release(asked, SlotRelease(ticket=ticket))
            raise
        finally:
            self._waiting.pop(ticket, None)
            self._queued_at.pop(ticket, None)
            if not self._waiting:
                self._queued_reason = None
        return asked

    def _to_give_back(self, ticket: str, name: str) -> Callable[[], list[str]]:
        """The governors (sorted) whose slots ``ticket``'s batch, queued at ``name``,
        gives back while it waits (:data:`DATASET_HOLD_NONE_PATCH`): every one it
        holds but ``name``'s; [] while it is not queued there, or for runs from
        before."""

        def names() -> list[str]:
            if not self._hold_none or self._queued_at.get(ticket) != name:
                return []
            return sorted(n for n in self._grants.get(ticket, set()) if n != name)

        return names

    def _find_governors(self, request: DatasetRequest) -> asyncio.Task[list[str]]:
        """The run's lookup of the governors that exist among its endpoints' and link's
        (``find_governors``), started on the first call: found once per run, shared
        by its batches."""
        if self._governors is None:
            # several roots: the source, every root and every link, in one sorted order
            # (one root: exactly a transfer's names, as recorded before)
            roots = (request.destination_roots or []) if self._fan_out else []
            names = sorted(
                {
                    name
                    for root in roots or [request.destination_root]
                    for name in transfer_governors(request.source_root, root)
                }
            )
            control = front.control_queue(workflow.info().task_queue)
            self._governors = asyncio.create_task(slots.find_governors(names, control))
        return self._governors

    def _granted(self, ticket: str, name: str) -> Callable[[], bool]:
        return lambda: name in self._grants.get(ticket, set())

    @workflow.signal(name=SLOT_GRANTED_SIGNAL)
    def slot_granted(self, grant: SlotGrant) -> None:
        """A governor granted a batch's slot (one for a batch that ended is ignored)."""
        grant = SlotGrant.model_validate(grant)
        if grant.ticket in self._waiting:
            self._grants.setdefault(grant.ticket, set()).add(grant.name)

    @workflow.signal(name=LIMIT_QUEUED_SIGNAL)
    def limit_queued(self, why: str) -> None:
        """A governor tells why a batch waits for its slot (runs from before
        :data:`DATASET_HOLD_NONE_PATCH`, or a governor from before ``slot_queued``)."""
        if self._waiting:
            self._queued_reason = why
            workflow.set_current_details(f"**queued**: {why}")

    @workflow.signal(name=SLOT_QUEUED_SIGNAL)
    def slot_queued(self, queued: SlotQueued) -> None:
        """A governor tells that a batch's ticket waits in its queue, and why (asks
        with ``named_queued``: :data:`DATASET_HOLD_NONE_PATCH`); one for a batch no
        longer waiting is ignored."""
        queued = SlotQueued.model_validate(queued)
        if queued.ticket in self._waiting:
            self._queued_at[queued.ticket] = queued.name
            self._queued_reason = queued.reason
            workflow.set_current_details(f"**queued**: {queued.reason}")

    # -- children ----------------------------------------------------------------------

    async def _start_child(self, request: DatasetRequest, entry: DatasetEntry) -> None:
        await workflow.wait_condition(lambda: len(self._children) < request.max_children)
        self._units += 1
        assert entry.destination is not None and entry.source is not None
        child_id = TRANSFER_ID_PREFIX + hashlib.sha256(entry.destination.encode()).hexdigest()[:32]
        self._current[child_id] = entry.name
        self._children[child_id] = asyncio.create_task(self._run_child(request, entry, child_id))

    async def _run_child(self, request: DatasetRequest, entry: DatasetEntry, child_id: str) -> None:
        assert entry.destination is not None and entry.source is not None
        transfer = TransferRequest(
            source=entry.source, destination=entry.destination, options=request.options
        )
        self._transfers.add(child_id)
        try:
            result: TransferResult = await workflow.execute_child_workflow(
                "TransferWorkflow",
                transfer,
                id=child_id,
                result_type=TransferResult,
                parent_close_policy=workflow.ParentClosePolicy.REQUEST_CANCEL,
                memo={
                    "source": transfer.source,
                    "destination": transfer.destination,
                    "request_hash": transfer.request_hash(),
                    "chunk_size": transfer.options.chunk_size,
                    "streams": transfer.options.streams,
                    "dataset": workflow.info().workflow_id,
                },
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(sa.SOURCE, sa.keyword(transfer.source)),
                        SearchAttributePair(sa.DESTINATION, sa.keyword(transfer.destination)),
                        SearchAttributePair(sa.STATE, "scheduled"),
                    ]
                ),
                retry_policy=RetryPolicy(maximum_attempts=1),
            )
        except asyncio.CancelledError:
            raise
        except WorkflowAlreadyStartedError:
            self._fail(
                entry.name,
                f"destination busy: {entry.destination} is being written by transfer {child_id}",
            )
            return
        except ChildWorkflowError as err:
            cause: BaseException = err
            while isinstance(cause, ChildWorkflowError) and cause.cause is not None:
                cause = cause.cause
            if not (self._stopping and isinstance(cause, CancelledError)):
                # cancelled with the dataset: neither
                self._fail(entry.name, reason(cause), left_behind_of(cause))
            return
        finally:
            self._transfers.discard(child_id)
            self._children.pop(child_id, None)
            self._current.pop(child_id, None)
        if result.up_to_date:
            self._carried.files_skipped += 1
        else:
            self._carried.files_done += 1
            self._carried.bytes_done += result.bytes
        self._show()
        self._record_live_counts()

    # -- several destination roots -----------------------------------------------------

    async def _dispatch_many(self, request: DatasetRequest, page: ListResult, base: int) -> bool:
        """:meth:`_dispatch` for several destination roots: each entry goes to the roots
        it is meant for (all, or with ``--retry-failed`` those it failed at) that can
        hold its name (the others fail for it, each with the reason); small files in
        ``copy_batch_to_many`` batches, a large file as a fan-out group."""
        carried = self._carried
        roots = request.destination_roots or []
        group: list[FanOutBatchFile] = []
        group_bytes = 0
        handled: tuple[int, str] | None = None

        async def flush() -> None:
            nonlocal group, group_bytes
            if group:
                await self._start_batch_many(request, group)
            group, group_bytes = [], 0
            if handled is not None:
                self._advance(request, *handled)

        for position, entry in enumerate(page.entries):
            if self._history_full(request):
                await flush()
                return True
            carried.files_listed += 1
            if entry.left_out_before:  # counting only (no command)
                carried.files_left_out += entry.left_out_before
            carried.bytes_listed += entry.size
            targets = (
                request.retry_targets[base + position]
                if request.retry_targets is not None
                else list(range(len(roots)))
            )
            errors = entry.target_errors or [None] * len(roots)
            prefailed = False
            for t in targets:
                why = entry.error or errors[t]
                if why is not None:
                    self._fail_pair(entry.name, t, why)
                    prefailed = True
            write = [t for t in targets if entry.error is None and errors[t] is None]
            if not write:
                carried.files_failed += 1
            elif entry.destinations is not None:  # large: a fan-out group
                await flush()
                await self._start_group(request, entry, write, prefailed)
            else:
                if group and (
                    len(group) >= request.batch_files
                    or group_bytes + entry.size > request.batch_bytes
                ):
                    await flush()
                group.append(
                    FanOutBatchFile(
                        name=entry.name, size=entry.size, targets=write, prefailed=prefailed
                    )
                )
                group_bytes += entry.size
            handled = (base + position, entry.name)
            if not group:
                self._advance(request, *handled)
        await flush()
        return False

    def _fail_pair(self, name: str, target: int, why: str, left: str | None = None) -> None:
        """(``name``, root ``target``) failed: counted at that root, kept with its reason
        and what its transfer left behind (``left``; the file itself is counted by the
        caller)."""
        carried = self._carried
        assert carried.destinations is not None and self._request is not None
        carried.destinations[target].files_failed += 1
        if len(carried.failures) < MAX_FAILURES_KEPT:
            root = (self._request.destination_roots or [])[target]
            carried.failures.append(
                FileFailure(name=name, reason=why, destination=root, left_behind=left)
            )

    def _end_file(self, size: int, outcomes: dict[int, tuple[str, str, int]]) -> None:
        """Count a file by its outcome at each root ('c' copied, 's' up to date, 'f'
        failed; with the reason and bytes written), as a batch does; 'x': cancelled with
        the dataset at that root, so the file (unless failed elsewhere) is neither done
        nor failed, only its roots' copies count."""
        carried = self._carried
        assert carried.destinations is not None
        for target, (kind, _, written) in outcomes.items():
            if target < 0:
                continue
            counts = carried.destinations[target]
            if kind == "c":
                counts.files_done += 1
                counts.bytes_done += written
            elif kind == "s":
                counts.files_skipped += 1
        kinds = {kind for kind, _, _ in outcomes.values()}
        if "x" in kinds and "f" not in kinds:  # cancelled at a root: neither done nor failed
            self._show()
            return
        kind = file_class(k for k in kinds if k != "x")
        if kind == "f":
            carried.files_failed += 1
            if "c" in kinds and workflow.patched(FAILED_FILE_BYTES_PATCH):
                carried.bytes_done += size  # moved to the roots that took it
        elif kind == "c":
            carried.files_done += 1
            carried.bytes_done += size
        else:
            carried.files_skipped += 1
        self._show()

    async def _start_batch_many(
        self, request: DatasetRequest, files: list[FanOutBatchFile]
    ) -> None:
        await workflow.wait_condition(lambda: len(self._batches) < request.max_batches)
        self._units += 1
        number = self._units
        info = workflow.info()
        batch = FanOutBatchInput(
            source_root=request.source_root,
            destination_roots=request.destination_roots or [],
            files=files,
            options=request.options,
            key=f"{info.workflow_id}-{info.run_id[:8]}-b{number}",
            rate_group=info.workflow_id if self._whole_rate else None,
        )
        self._current[number] = files[0].name
        self._batches[number] = asyncio.create_task(self._run_batch_many(request, number, batch))

    async def _run_batch_many(
        self, request: DatasetRequest, number: int, batch: FanOutBatchInput
    ) -> None:
        size = sum(f.size for f in batch.files)
        # the batch retries a root that is down itself, for --retry-for from its
        # schedule (the others go on meanwhile): its window is that plus its work
        work = timedelta(seconds=600 + size * len(batch.destination_roots) // 1_000_000)
        work += self._rate_share_time(request, size)
        held: list[str] = []
        scheduled_at = 0.0  # workflow time its activity was scheduled
        #: its activity ended without a result: the (file index, root index) pairs
        #: whose write sessions may be left (None: none, or its own clean-up ran)
        unclean: list[tuple[int, int]] | None = None
        try:
            if workflow.patched(DATASET_FAN_OUT_LIMITS_PATCH):
                held = await self._acquire(request, batch.key)
            if held:  # paced as a batch to one root is (the activity's input only)
                batch = batch.model_copy(update={"governors": held})
            scheduled_at = workflow.now().timestamp()
            self._reading.add(number)
            result: FanOutBatchResult = await workflow.execute_activity(
                "copy_batch_to_many",
                batch,
                result_type=FanOutBatchResult,
                start_to_close_timeout=work,
                heartbeat_timeout=self._heartbeat_timeout(request),
                schedule_to_close_timeout=timedelta(seconds=request.options.retry_for_s) + work,
                retry_policy=RETRY,
                cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            )
            self._count_batch_many(batch, result)  # before any await, as a batch's
        except asyncio.CancelledError:
            raise
        except Exception as err:
            if ended_by_cancel(err):
                # the dataset is being cancelled; one that could not answer (frozen)
                # ended by its heartbeat timeout: its last checkpoint counts, and its
                # sessions from there on are left to remove
                if not isinstance(getattr(err, "cause", None), CancelledError) and (
                    workflow.patched(FAN_OUT_CANCEL_ENDED_PATCH)
                ):
                    unclean = self._count_fan_out_checkpoint(batch, err)
                return
            # failed for good: counted from its last checkpoint (see _run_batch), the
            # pairs it did not end fail
            left = [(i, t) for i, f in enumerate(batch.files) for t in f.targets]
            ended_after: set[int] = set()  # files its last attempt ended past it
            if workflow.patched(DATASET_FAILED_BATCH_COUNTS_PATCH):
                checkpoint = _failed_checkpoint(err, FanOutBatchCheckpoint)
                if checkpoint is not None:
                    checkpoint.not_handled = None
                    ended_after = _count_fan_out_ended_after(checkpoint, batch)
                    self._count_batch_many(batch, checkpoint)
                    left = _left_pairs(batch, checkpoint)
            pairs = {(i, t) for i, t in left if i not in ended_after}
            for i, f in enumerate(batch.files):
                targets = [t for t in f.targets if (i, t) in pairs]
                for t in targets:
                    self._fail_pair(f.name, t, f"its batch failed: {reason(err)}")
                if targets:
                    self._carried.files_failed += 1
            if workflow.patched(FAN_OUT_CANCEL_ENDED_PATCH):
                unclean = left
            return
        finally:
            self._reading.discard(number)
            self._waiting.pop(batch.key, None)
            self._grants.pop(batch.key, None)
            if held:  # before the batch leaves self._batches: the run ends once it is empty
                await slots.release(held, SlotRelease(ticket=batch.key))
            if unclean:
                await self._remove_fan_out_sessions(request, batch, scheduled_at, unclean)
            self._batches.pop(number, None)
            self._current.pop(number, None)

    def _count_fan_out_checkpoint(
        self, batch: FanOutBatchInput, err: BaseException
    ) -> list[tuple[int, int]]:
        """Count a batch to several roots that ended without a result after the
        dataset's cancel from its last checkpoint (files it published after that beat
        are at their roots but not counted); returns the (file index, root index) pairs
        whose write sessions may be left: its deferred pairs and every pair from its
        checkpoint on (every pair when it never beat)."""
        details = getattr(getattr(err, "cause", None), "last_heartbeat_details", None) or ()
        if details and isinstance(details[0], dict):
            checkpoint = FanOutBatchCheckpoint.model_validate(details[0])
            # the files it did not count are the cancel's, not failures (_stopping)
            self._count_batch_many(batch, checkpoint)
            return _left_pairs(batch, checkpoint)
        return [(i, t) for i, f in enumerate(batch.files) for t in f.targets]

    async def _remove_fan_out_sessions(
        self,
        request: DatasetRequest,
        batch: FanOutBatchInput,
        since: float,
        pairs: list[tuple[int, int]],
    ) -> None:
        """Remove the write sessions a batch to several roots left at each root for
        ``pairs`` ((file index, root index)): ``abort_batch_orphans`` once per root
        concerned, with that root's session keys (``<key>-<index>-t<root>``). Best
        effort, as for a batch to one root."""
        for root_index, root in enumerate(batch.destination_roots):
            indexes = sorted({i for i, t in pairs if t == root_index})
            if not indexes:
                continue
            await self._abort_orphans(
                request,
                batch.key,
                BatchOrphansInput(
                    destination_root=root,
                    names=[f.name for f in batch.files],
                    since=since,
                    session_key=batch.key,
                    session_suffix=f"-t{root_index}",
                    only=indexes,
                    sizes=[f.size for f in batch.files],
                    chunk_size=batch.options.chunk_size,
                ),
            )

    def _count_batch_many(self, batch: FanOutBatchInput, result: FanOutBatchResult) -> None:
        """Add a batch's counts (per root too); the files a batch stopped by a cancel
        did not count fail at their roots unless the dataset is being cancelled."""
        carried = self._carried
        assert carried.destinations is not None
        carried.files_done += result.done
        carried.files_skipped += result.skipped
        carried.files_failed += result.failed
        carried.bytes_done += result.bytes
        for mine, theirs in zip(carried.destinations, result.destinations, strict=False):
            mine.files_done += theirs.files_done
            mine.files_skipped += theirs.files_skipped
            mine.files_failed += theirs.files_failed
            mine.bytes_done += theirs.bytes_done
        for failure in result.failures:
            if len(carried.failures) < MAX_FAILURES_KEPT:
                carried.failures.append(failure)
        if not self._stopping and result.not_handled:
            names = set(result.not_handled)
            for f in batch.files:
                if f.name in names:
                    for t in f.targets:
                        self._fail_pair(f.name, t, "its batch was cancelled before it copied it")
                    carried.files_failed += 1
        self._show()
        self._record_live_counts()

    async def _start_group(
        self, request: DatasetRequest, entry: DatasetEntry, targets: list[int], prefailed: bool
    ) -> None:
        await workflow.wait_condition(lambda: len(self._children) < request.max_children)
        self._units += 1
        key = f"f{self._units}"
        self._current[key] = entry.name
        self._children[key] = asyncio.create_task(
            self._run_group(request, entry, targets, prefailed, key)
        )

    async def _run_group(
        self,
        request: DatasetRequest,
        entry: DatasetEntry,
        targets: list[int],
        prefailed: bool,
        key: str,
    ) -> None:
        """A large file to its ``targets``: compared first with ``--sync-level`` (the
        roots that match are up to date, a file matching everywhere is not read), then
        one child transfer (one root left) or a ``FanOutWorkflow`` (several: the file
        staged once, one transfer per root under its own lock)."""
        assert entry.source is not None and entry.destinations is not None
        urls = {t: entry.destinations[t] or "" for t in targets}
        outcomes: dict[int, tuple[str, str, int]] = {}
        try:
            if request.options.sync_level is not None:
                try:
                    check: TargetsResult = await workflow.execute_activity(
                        "compare_targets",
                        TargetsInput(
                            source=entry.source,
                            destinations=[urls[t] for t in targets],
                            options=request.options,
                        ),
                        result_type=TargetsResult,
                        start_to_close_timeout=LIST_TIMEOUT,
                        heartbeat_timeout=self._heartbeat_timeout(request),
                        schedule_to_close_timeout=timedelta(seconds=request.options.retry_for_s),
                        retry_policy=RETRY,
                    )
                except asyncio.CancelledError:
                    raise
                except Exception as err:
                    if ended_by_cancel(err):
                        return
                    for t in targets:
                        outcomes[t] = ("f", reason(err), 0)
                    check = TargetsResult(up_to_date=[])
                for t, same in zip(targets, check.up_to_date, strict=False):
                    if same:
                        outcomes[t] = ("s", "up to date", 0)
            left = [t for t in targets if t not in outcomes]
            if len(left) == 1:
                (t,) = left
                outcomes[t] = await self._one_transfer(request, entry.source, urls[t])
            elif left:
                outcomes.update(
                    await self._group(request, entry.source, {t: urls[t] for t in left})
                )
        finally:
            self._children.pop(key, None)
            self._current.pop(key, None)
        for t, (kind, why, _) in outcomes.items():
            if kind == "f":
                self._fail_pair(entry.name, t, why, self._left_behind.pop(urls[t], None))
        if prefailed:
            outcomes[-1] = ("f", "", 0)  # failed at another root (its name): no root's count
        self._end_file(entry.size, outcomes)

    async def _one_transfer(
        self, request: DatasetRequest, source: str, destination: str
    ) -> tuple[str, str, int]:
        """A child ``TransferWorkflow`` of the file to one root: its outcome."""
        child_id = TRANSFER_ID_PREFIX + hashlib.sha256(destination.encode()).hexdigest()[:32]
        transfer = TransferRequest(source=source, destination=destination, options=request.options)
        self._transfers.add(child_id)
        try:
            result: TransferResult = await workflow.execute_child_workflow(
                "TransferWorkflow",
                transfer,
                id=child_id,
                result_type=TransferResult,
                parent_close_policy=workflow.ParentClosePolicy.REQUEST_CANCEL,
                memo={**sa.memo(transfer), "dataset": workflow.info().workflow_id},
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(sa.SOURCE, sa.keyword(transfer.source)),
                        SearchAttributePair(sa.DESTINATION, sa.keyword(transfer.destination)),
                        SearchAttributePair(sa.STATE, "scheduled"),
                    ]
                ),
                retry_policy=RetryPolicy(maximum_attempts=1),
            )
        except asyncio.CancelledError:
            raise
        except WorkflowAlreadyStartedError:
            return (
                "f",
                f"destination busy: {destination} is being written by transfer {child_id}",
                0,
            )
        except ChildWorkflowError as err:
            cause = _root_cause(err)
            if self._stopping and isinstance(cause, CancelledError):
                return ("x", "cancelled", 0)  # with the dataset: neither done nor failed
            left = left_behind_of(cause)
            if left:
                self._left_behind[destination] = left
            return ("f", reason(cause), 0)
        finally:
            self._transfers.discard(child_id)
        if result.up_to_date:
            return ("s", "up to date", 0)
        return ("c", "", result.bytes)

    async def _group(
        self, request: DatasetRequest, source: str, urls: dict[int, str]
    ) -> dict[int, tuple[str, str, int]]:
        """A child ``FanOutWorkflow`` of the file to several roots: each root's outcome."""
        fan = FanOutRequest(
            source=source,
            destinations=list(urls.values()),
            options=request.options,
            # its staging read and its transfers' streams share the dataset's max_rate
            rate_group=workflow.info().workflow_id if self._fan_out_rate else None,
        )
        group_id = GROUP_ID_PREFIX + fan.group_hash()
        if fan.rate_group is not None:
            self._fan_outs[group_id] = [
                TRANSFER_ID_PREFIX + hashlib.sha256(d.encode()).hexdigest()[:32]
                for d in fan.destinations
            ]
        try:
            result: FanOutProgress = await workflow.execute_child_workflow(
                "FanOutWorkflow",
                fan,
                id=group_id,
                result_type=FanOutProgress,
                parent_close_policy=workflow.ParentClosePolicy.REQUEST_CANCEL,
                memo={
                    "source": fan.source,
                    "destinations": fan.destinations,
                    "request_hash": fan.request_hash(),
                    "dataset": workflow.info().workflow_id,
                },
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(sa.SOURCE, sa.keyword(fan.source)),
                        SearchAttributePair(sa.STATE, "running"),
                    ]
                ),
                retry_policy=RetryPolicy(maximum_attempts=1),
            )
        except asyncio.CancelledError:
            raise
        except WorkflowAlreadyStartedError:
            why = f"destination busy: fan-out group {group_id} of this file is running"
            return {t: ("f", why, 0) for t in urls}
        except ChildWorkflowError as err:
            cause = _root_cause(err)
            if self._stopping and isinstance(cause, CancelledError):
                return {t: ("x", "cancelled", 0) for t in urls}  # with the dataset
            why = reason(cause)
            return {t: ("f", why, 0) for t in urls}
        finally:
            self._fan_outs.pop(group_id, None)
        by_url = {o.destination: o for o in result.destinations}
        outcomes: dict[int, tuple[str, str, int]] = {}
        for t, url in urls.items():
            outcome = by_url.get(url)
            if outcome is None:
                outcomes[t] = ("f", "the fan-out group did not report it", 0)
            elif outcome.state == TransferState.completed:
                outcomes[t] = ("c", "", outcome.bytes or 0)
            elif outcome.state == TransferState.cancelled and self._stopping:
                outcomes[t] = ("x", "cancelled", 0)
            else:
                outcomes[t] = ("f", outcome.error or outcome.state.value, 0)
                if outcome.left_behind:
                    self._left_behind[url] = outcome.left_behind
        return outcomes

    # -- bookkeeping -------------------------------------------------------------------

    def _fail(self, name: str, why: str, left: str | None = None) -> None:
        """``name`` failed with reason ``why``; ``left``: what its transfer's clean-up
        left behind (a child transfer whose clean-up gave up)."""
        carried = self._carried
        carried.files_failed += 1
        if len(carried.failures) < MAX_FAILURES_KEPT:
            carried.failures.append(FileFailure(name=name, reason=why, left_behind=left))

    async def _drain(self) -> None:
        await workflow.wait_condition(lambda: not self._batches and not self._children)

    async def _stop_in_flight(self) -> None:
        """Cancel the batches and children in flight and wait for their ends; each
        counts what it did (a batch stopped by the cancel: the files it published;
        a child that published before it: its file)."""
        self._stopping = True
        if workflow.patched(DATASET_CANCEL_COUNTS_PATCH):
            # first let the batches and children whose results came with the cancel
            # (in this workflow task) count them: conditions are checked once nothing
            # else is ready, and cancelling a finished activity's wait drops its result
            await workflow.wait_condition(lambda: True)
        tasks: list[asyncio.Task[Any]] = [*self._batches.values(), *self._children.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _record_end_counts(self) -> None:
        """Before a failed or cancelled run ends: its counts into its memo (``status``
        reads them there when no worker answers the progress query)."""
        if workflow.patched(DATASET_CANCEL_COUNTS_PATCH):
            workflow.upsert_memo({"counts": self._counts()})

    def _counts(self) -> dict[str, int]:
        """The carried counts as the memo's ``counts`` holds them (files, bytes)."""
        c = self._carried
        return {
            "files_listed": c.files_listed,
            "files_done": c.files_done,
            "files_skipped": c.files_skipped,
            "files_failed": c.files_failed,
            "bytes_listed": c.bytes_listed,
            "bytes_done": c.bytes_done,
        }

    def _record_live_counts(self) -> None:
        """As a batch or large file of the running dataset ends: its counts so far into
        its memo (:data:`DATASET_LIVE_COUNTS_PATCH`), what ``status`` shows as the last
        known counts while no worker answers the progress query. Not while it stops
        (its end writes them: :meth:`_record_end_counts`)."""
        if self._stopping or not workflow.patched(DATASET_LIVE_COUNTS_PATCH):
            return
        workflow.upsert_memo(
            {
                "counts": {
                    **self._counts(),
                    "listing_done": self._listing_done,
                    "at": workflow.now().timestamp(),
                }
            }
        )

    def _set_state(self, state: DatasetState) -> None:
        self._state = state
        workflow.upsert_search_attributes([sa.STATE.value_set(state.value)])
        self._show()

    def _show(self) -> None:
        """The Temporal UI's current-details line (no history event)."""
        c = self._carried
        workflow.set_current_details(
            f"{self._state.value}: {c.files_done} files copied, {c.files_skipped} up to "
            f"date, {c.files_failed} failed of {c.files_listed} listed"
            + ("" if self._listing_done else " (listing goes on)")
        )

    def _rate_share_time(self, request: DatasetRequest, size: int) -> timedelta:
        """More work time for a batch of ``size`` bytes when the dataset's own
        ``max_rate`` is shared (:data:`DATASET_WHOLE_RATE_PATCH`): its bytes at the
        smallest share it can get, a stream's of every batch and every large file's
        streams in flight (zero otherwise: its bytes at the whole rate are counted
        already where they were)."""
        rate = request.options.max_rate
        if not self._whole_rate or not rate:
            return timedelta(0)
        shares = request.max_batches + request.max_children * request.options.streams
        return timedelta(seconds=size * shares // rate)

    @workflow.query(name=RATE_GROUP_QUERY)
    def rate_group(self) -> RateGroup | None:
        """What the dataset's own ``max_rate`` is divided over now: its batches whose
        activity is scheduled and its large files' transfers in flight (the workers
        ask each how many copy streams it runs). None without a ``max_rate`` or in a
        run from before :data:`DATASET_WHOLE_RATE_PATCH` (each batch and transfer then
        has the whole ``max_rate``). Costs no history."""
        request = self._request
        if request is None or not self._whole_rate or not request.options.max_rate:
            return None
        return RateGroup(
            max_rate=request.options.max_rate,
            batches=len(self._reading),
            children=sorted(self._transfers),
            fan_outs={g: list(t) for g, t in sorted(self._fan_outs.items())},
        )

    @workflow.query
    def progress(self) -> DatasetProgress | None:
        """Counts, bytes and the files in flight (None before the run began)."""
        request = self._request
        if request is None:
            return None
        c = self._carried
        return DatasetProgress(
            state=self._state,
            source=request.source_root,
            destination=request.destination_root,
            files_listed=c.files_listed,
            files_done=c.files_done,
            files_skipped=c.files_skipped,
            files_failed=c.files_failed,
            bytes_listed=c.bytes_listed,
            bytes_done=c.bytes_done,
            listing_done=self._listing_done,
            current=list(self._current.values())[:MAX_CURRENT_SHOWN],
            runs=c.runs,
            started_at=c.started_at,
            now=workflow.now().timestamp(),
            error=self._error,
            failures=c.failures,
            queued_reason=self._queued_reason if self._waiting else None,
            destinations=c.destinations,
            in_flight=len(self._batches) + len(self._children),
            waiting=len(self._waiting),
            files_left_out=c.files_left_out,
            left_out_names=c.left_out_names,
        )


def _in_flight_at_cancel(batch: BatchInput, not_handled: list[str]) -> list[int]:
    """The indexes of ``batch``'s files that may have been in flight when the dataset's
    cancel stopped it: the first :data:`CANCEL_IN_FLIGHT` of those it did not handle
    (``not_handled``: names; a batch starts its files in order, at most that many at
    once)."""
    left = set(not_handled)
    return [i for i, f in enumerate(batch.files) if f.name in left][:CANCEL_IN_FLIGHT]


def _left_pairs(
    batch: FanOutBatchInput, checkpoint: FanOutBatchCheckpoint
) -> list[tuple[int, int]]:
    """The (file index, root index) pairs of ``batch`` that ``checkpoint`` does not
    count as ended: its deferred pairs, then every pair from its ``next_index`` on."""
    deferred = [(pair[0], pair[1]) for pair in checkpoint.deferred if len(pair) == 2]
    return deferred + [
        (i, t)
        for i in range(min(checkpoint.next_index, len(batch.files)), len(batch.files))
        for t in batch.files[i].targets
    ]


def _count_ended_after(last: BatchCheckpoint, batch: BatchInput, start: int) -> set[int]:
    """Add to ``last`` (the checkpoint of a batch that failed for good, ``batch``) the
    files its attempt ended past its ``next_index`` (``start``): ``ended_after``,
    copied (its size in ``bytes``) or skipped; returns their indexes. Empty for a
    checkpoint without the field (an older worker's: every file from ``start`` on
    fails, as before)."""
    return _add_ended(last.ended_after or {}, batch, last, start=start, counted=set())


def _add_ended(
    ended: dict[str, str],
    batch: BatchInput,
    into: BatchResult | BatchCheckpoint,
    *,
    start: int,
    counted: set[int],
) -> set[int]:
    """Add to ``into``'s counts the files of ``batch`` that ``ended`` (file index as a
    string -> ``'c'`` copied, its size in bytes, or ``'s'`` up to date) names, from
    index ``start`` on, but those in ``counted``; returns their indexes. Anything else
    (a bad index, another kind) is ignored."""
    indexes: set[int] = set()
    for key, kind in ended.items():
        index = int(key) if key.isdigit() else -1
        if not start <= index < len(batch.files) or index in counted or kind not in ("c", "s"):
            continue
        indexes.add(index)
        if kind == "c":
            into.done += 1
            into.bytes += batch.files[index].size
        else:
            into.skipped += 1
    return indexes


def _count_fan_out_ended_after(last: FanOutBatchCheckpoint, batch: FanOutBatchInput) -> set[int]:
    """Add to ``last`` (the checkpoint of a batch to several roots that failed for
    good, ``batch``) the files its attempt ended past its ``next_index`` at every one
    of their roots (``ended_after``): per root copied (its size in that root's bytes)
    or skipped, the file copied if copied to some root (its size in ``bytes``), else
    skipped; returns their indexes. Empty for a checkpoint without the field (an
    older worker's: their pairs fail, as before)."""
    counted: set[int] = set()
    roots = len(last.destinations)
    for key, outcomes in (last.ended_after or {}).items():
        index = int(key) if key.isdigit() else -1
        if not last.next_index <= index < len(batch.files):
            continue
        entry = batch.files[index]
        by_root = {int(t): kind for t, kind in outcomes.items() if t.isdigit()}
        if (
            set(by_root) != set(entry.targets)
            or any(kind not in ("c", "s") for kind in by_root.values())
            or any(t >= roots for t in by_root)
        ):
            continue
        counted.add(index)
        for target, kind in by_root.items():
            counts = last.destinations[target]
            if kind == "c":
                counts.files_done += 1
                counts.bytes_done += entry.size
            else:
                counts.files_skipped += 1
        if file_class(by_root.values()) == "c":
            last.done += 1
            last.bytes += entry.size
        else:
            last.skipped += 1
    return counted


_Checkpoint = TypeVar("_Checkpoint", BatchCheckpoint, FanOutBatchCheckpoint)


def _batch_gave_up(err: BaseException, retry_for_s: float, where: str) -> str | None:
    """The give-up wording (:func:`~staccato.workflows.failures.gave_up_message`) for a
    batch whose Temporal deadline (``--retry-for`` plus its work) passed, ``err``
    being its ``ActivityError``: the next attempt would have started after it
    (retry state TIMEOUT: Temporal's text is "Not enough time to schedule next
    retry"), or it passed during an attempt (a schedule-to-close timeout). Else None
    (the batch's own give-up is worded so already). ``where``: the endpoints the batch
    talks to, named when its last attempt timed out or none failed (a hung server)."""
    if not isinstance(err, ActivityError):
        return None
    cause = err.cause
    if isinstance(cause, ActivityTimeoutError):
        if cause.type != TimeoutType.SCHEDULE_TO_CLOSE:
            return None
        last = cause.cause
    elif err.retry_state == RetryState.TIMEOUT:
        last = cause
    else:
        return None
    last_text = (getattr(last, "message", None) or str(last)) if last is not None else None
    if last is None or isinstance(last, ActivityTimeoutError):
        # a hung attempt: the timeout is the last error (the message only)
        last_text = timed_out_text(err.activity_type, where, last) or last_text
    return gave_up_message(
        err.activity_type,
        timedelta(seconds=retry_for_s),
        last_text or "none recorded",
        allowance=False,
    )


def _published_in_failure(err: BaseException) -> BatchOrphansResult | None:
    """The files ``abort_batch_orphans`` found published although it failed (its
    :data:`SESSIONS_LEFT_TYPE` error's detail :data:`PUBLISHED_PAST_KEY`), or None."""
    cause = root_cause(err)
    if not isinstance(cause, ApplicationError):
        return None
    for detail in cause.details:
        if isinstance(detail, dict) and isinstance(detail.get(PUBLISHED_PAST_KEY), dict):
            try:
                return BatchOrphansResult.model_validate(detail[PUBLISHED_PAST_KEY])
            except ValidationError:
                return None
    return None


def _failed_checkpoint(err: BaseException, kind: type[_Checkpoint]) -> _Checkpoint | None:
    """The last checkpoint of a batch whose activity failed for good (``err``, an
    ``ActivityError``), or None if it has none (it never beat, or a worker older
    than this one ran it).

    Temporal gives a batch that failed for good its last attempt's error, without
    heartbeat details, when its retries end (``--retry-for`` spent between attempts,
    attempts exhausted, non-retryable): the attempt adds its checkpoint to that error's
    details, under :data:`FAILED_CHECKPOINT_KEY`. A timeout (schedule-to-close while an
    attempt runs or waits, heartbeat, start-to-close) gives a ``TimeoutError`` with
    the last heartbeat details, whose first one is the checkpoint; its cause, the last
    attempt's error if any, is looked at when it has none."""
    cause = getattr(err, "cause", None)
    found: object = None
    details = getattr(cause, "last_heartbeat_details", None) or ()
    if details and isinstance(details[0], dict):
        found = details[0]
    else:
        failure = (
            getattr(cause, "cause", None) if isinstance(cause, ActivityTimeoutError) else cause
        )
        if isinstance(failure, ApplicationError):
            for detail in failure.details:
                if isinstance(detail, dict) and isinstance(detail.get(FAILED_CHECKPOINT_KEY), dict):
                    found = detail[FAILED_CHECKPOINT_KEY]
    if found is None:
        return None
    try:
        return kind.model_validate(found)
    except ValidationError:
        return None


def _root_cause(err: BaseException) -> BaseException:
    """The innermost cause of a child workflow's failure (the child's own reason)."""
    cause: BaseException = err
    while isinstance(cause, ChildWorkflowError) and cause.cause is not None:
        cause = cause.cause
    return cause
