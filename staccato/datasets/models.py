"""Pydantic models of a dataset (``cp -r``) that cross Temporal: the request, the state
carried across continue-as-new, the listing and batch activities' inputs and results,
progress, the result and the status a client shows.

Small by construction: a page of entries (bounded by ``page_size``), a batch of names
(bounded by ``batch_files``), at most :data:`MAX_FAILURES_KEPT` failures with their
reasons. Sizes are bytes, durations seconds.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from pydantic import (
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from staccato.datasets.names import exclude_option
from staccato.errors import dataset_file_reason
from staccato.models import (
    MAX_FAN_OUT,
    BaseModel,
    LeanModel,
    MiB,
    TransferOptions,
    omitted_while_none,
)

#: failed files kept with their reason (in the result, the status, the carried state);
#: the count of those beyond is kept too
MAX_FAILURES_KEPT = 1000
#: names shown as "current files" in progress
MAX_CURRENT_SHOWN = 8
DATASET_ID_PREFIX = "staccato-dataset-"
#: query of ``DatasetWorkflow``: what its own ``max_rate`` is divided over now
#: (:class:`RateGroup`, None: no ``max_rate``, or a run from before it was shared);
#: workers ask it every second for the batches and large files' streams of the
#: dataset they run (:mod:`staccato.workers.rates`)
RATE_GROUP_QUERY = "rate_group"
#: bytes: with several destination roots, files up to this size (and one chunk) are
#: read whole into memory once by a batch and written to every root; larger ones are
#: a fan-out group each (staged once). Equals ``small_copy.SMALL_OBJECT_MAX``.
FAN_OUT_SMALL_MAX = 8 * MiB


class DatasetState(StrEnum):
    """States of a dataset (README.md, "Directories and prefixes").

    ``completed_with_errors``: every file was tried; some failed (each one with its
    reason in the result and ``status --failures``); the others are copied.
    """

    scheduled = "scheduled"
    #: every batch and large file's transfer in flight waits for a slot of a limited
    #: endpoint or link (``staccato limit``; ``queued_reason`` says which), nothing
    #: copies: shown by the client only (``StaccatoState`` stays ``running``)
    queued = "queued"
    running = "running"
    completed = "completed"
    completed_with_errors = "completed_with_errors"
    failed = "failed"
    cancelled = "cancelled"


def gone_reason(name: str) -> str:
    """Why a failed file retried by ``--retry-failed`` is not copied when it is no
    longer at the source (its relative ``name``): nothing is left to copy of it.
    :attr:`FileFailure.gone` tells such a failure by this exact text. The name as
    every output shows it (:func:`~staccato.datasets.names.shown_name`)."""
    from staccato.datasets.names import shown_name

    return f"'{shown_name(name)}' is no longer at the source"


def _repr_gone_reason(name: str) -> str:
    """:func:`gone_reason`'s text before this change (``repr``: a doubled backslash
    in ``bad\\xffname``), still told by :attr:`FileFailure.gone` in recorded failures."""
    return f"{name!r} is no longer at the source"


#: what a failure carried unchanged by a ``--retry-failed`` whose ``--include``/
#: ``--exclude`` left it out adds to its reason (:func:`left_out_reason`)
LEFT_OUT_NOTE = "not retried: left out by --include/--exclude"


def left_out_reason(reason: str) -> str:
    """``reason`` of a failure that a filtered ``--retry-failed`` carries without
    copying it again: the old reason and ``(not retried: left out by
    --include/--exclude)``, said once however many retries left it out."""
    note = f" ({LEFT_OUT_NOTE})"
    return reason if reason.endswith(note) else reason + note


class FileFailure(LeanModel):
    """A file of the dataset that was not copied, and why.

    Attributes:
        destination: with several destination roots, the root this failure is of
            (one failure per file and destination); None for a single destination.
        left_behind: a large file (a child transfer) whose clean-up gave up: what it
            left at the destination and how to remove it (the transfer's memo
            ``left_behind``, :func:`staccato.workflows.failures.left_behind`); None
            otherwise (left out of dumps).
    """

    _omit_when = omitted_while_none("destination", "left_behind")

    name: str
    reason: str
    destination: str | None = None
    left_behind: str | None = None

    @property
    def gone(self) -> bool:
        """The file was no longer at the source when ``--retry-failed`` looked for it
        (:func:`gone_reason`): nothing is left to copy of it, so retrying it again
        cannot succeed."""
        return self.reason in (gone_reason(self.name), _repr_gone_reason(self.name))

    @field_validator("reason")
    @classmethod
    def _as_a_dataset_tells_it(cls, reason: str, info: ValidationInfo) -> str:
        # every way a file's failure is made (a batch, a fan-out pair, a child
        # transfer's failure in the workflow) tells it in a dataset's words, with the
        # --exclude that leaves out this file alone (its glob characters escaped)
        name = info.data.get("name")
        if not isinstance(name, str):
            return dataset_file_reason(reason)
        return dataset_file_reason(reason, exclude_option(name))


class DestinationCounts(BaseModel):
    """One destination root of a dataset with several: files copied to it, up to date
    there (``--sync-level``), failed there (each with its reason in the failures), and
    bytes written to it."""

    destination: str
    files_done: int = 0
    files_skipped: int = 0
    files_failed: int = 0
    bytes_done: int = 0


def file_class(outcomes: Iterable[str]) -> str:
    """How a file counts from its outcomes at its roots ('c' copied, 's' up to date,
    'f' failed): failed over copied over up to date ('s' when there is none). One rule
    for the batches to several roots and for the workflow's large files."""
    seen = set(outcomes)
    for kind in ("f", "c"):
        if kind in seen:
            return kind
    return "s"


class DatasetCarried(LeanModel):
    """What one run of ``DatasetWorkflow`` hands the next (continue-as-new).

    Attributes:
        after: every entry with a name <= this (UTF-8 byte order) was handled; the
            listing restarts after it (None: from the start).
        retry_index: with ``retry_failed``: how many of those names were handled.
        listing_done: the listing ended (and every entry was handled).
        runs: runs so far (this one included once it continues).
        started_at: when the first run started, seconds since the epoch (for the rate).
    """

    _omit_when = omitted_while_none("destinations")

    after: str | None = None
    retry_index: int = 0
    files_listed: int = 0
    files_done: int = 0
    files_skipped: int = 0
    files_failed: int = 0
    bytes_listed: int = 0
    bytes_done: int = 0
    #: files the listing left out by ``--include``/``--exclude`` (counting only)
    files_filtered: int = 0
    #: files the listing left out for a name reserved for Staccato's temp files
    #: (:func:`staccato.temp_names.reserved_segment`; counting only), and the first
    #: few of them (:data:`~staccato.temp_names.LEFT_OUT_NAMES_KEPT`)
    files_left_out: int = 0
    left_out_names: list[str] = Field(default_factory=list)
    failures: list[FileFailure] = Field(default_factory=list)
    runs: int = 1
    started_at: float | None = None
    #: several destination roots: the counts of each (in ``destination_roots`` order)
    destinations: list[DestinationCounts] | None = None


#: files a batch holds at most by default. Every batch costs the same wherever it is
#: not copying: its activity task and heartbeats at the Temporal server, a workflow
#: task, the worker's start and completion of it (shared state, payloads), and the
#: time between one batch's end and the next one's start in its slot (0.2-0.5 s on a
#: busy 2-core machine, the batches of a round ending together). 10,000 files of 64
#: KiB file -> file, 3 runs each (medians, CPU-s of the worker / its activity
#: processes / the Temporal server): 256 files 1.09 / 4.73 / 1.37, 512 files 1.02 /
#: 4.35 / 1.02, 1,024 files 0.79 / 3.99 / 0.81. Again with 1,024 against 2,048 and
#: 4,096 (3-4 interleaved runs, load 18-30; all processes' CPU-s, the `cp -r` command
#: included): 1,024 4.52-4.81, 2,048 3.49-4.16, 4,096 3.36 (worker 0.43 / 0.36 / 0.33,
#: activity processes 2.97 / 2.34 / 2.21, Temporal 0.84 / 0.58 / 0.56); above a page
#: (``page_size``, 4,000) a batch is cut at the page's end anyway, and the ramp's and
#: the last page's batches are fractions of this. A batch's names come from one
#: listing page (each page's JSON is cut at ~512 KiB), so a batch's input and result
#: stay under Temporal's payload limit whatever the names (a result whose every file
#: failed: ~1.5 MB at worst, names of ~250 bytes filling the page's 512 KiB).
BATCH_FILES = 2048
#: :data:`BATCH_FILES` of a dataset to several roots (each file is written to every
#: root, so a batch takes that many times longer: kept as it was)
FAN_OUT_BATCH_FILES = 256


class DatasetRequest(LeanModel):
    """Input of ``DatasetWorkflow``.

    Attributes:
        source_root: canonical URL of the source directory or prefix (file, s3, sftp).
        destination_root: canonical URL of the destination directory or prefix.
        options: the transfer options every file is copied with (``sync_level``
            included).
        include, exclude: ``fnmatch`` globs on the relative name ('/'-separated; ``*``
            also matches '/'); a name is copied when it matches some include (or none
            is given) and no exclude.
        small_file_max: files up to this size are copied in batches (many per
            activity); larger ones each by a child ``TransferWorkflow``.
        retry_failed: copy only these relative names (a previous run's failures).
        page_size: entries per listing page (a run's first pages are shorter, see
            ``staccato.datasets.workflow``; a page is cut shorter where its names
            would make its result over ~512 KiB).
        batch_files, batch_bytes: a batch holds at most this many files / bytes (a
            run's first ``max_batches`` batches and those of the listing's last page
            hold fewer files, so batches do not end together); default
            :data:`BATCH_FILES` (a dataset to several roots: :data:`FAN_OUT_BATCH_FILES`).
        max_batches, max_children: batches / child transfers in flight at once.
        history_limit: events in one run's history after which it drains what is in
            flight and continues as new (Temporal suggests continuing at 4 MiB or
            10,240 events; the default stays well under).
        carried: the previous run's state (continue-as-new), None on the first run.
        destination_roots: two or more destination roots (distinct, canonical, the
            first = ``destination_root``): the source is listed once and each file
            read once and written to every root (None: one destination).
        retry_targets: with ``retry_failed`` and several roots: for each name, the
            indexes in ``destination_roots`` it failed at (only those are written).
        sweep: with ``retry_failed`` (one root): the canonical URLs of the files whose
            earlier failure left a write session behind (``FileFailure.left_behind``:
            the destination did not answer when its clean-up ran): the first run
            removes their leftover temp files and journals first (``sweep_leftovers``:
            a single transfer's sweep, ``Driver.remove_leftovers``), then copies them.
        retry_left: with ``retry_failed``: the earlier dataset's failures that the
            retry's ``--include``/``--exclude`` left out (at most
            :data:`MAX_FAILURES_KEPT`, as the earlier dataset kept them, with
            :func:`left_out_reason`): the first run starts with them as its own
            failures, counted as failed (and listed), so the dataset ends
            ``completed_with_errors`` and a later ``--retry-failed`` copies them. The
            first run's input only: a run continued as new has them in ``carried``.
    """

    _omit_when = omitted_while_none("destination_roots", "retry_targets", "retry_left", "sweep")

    model_config = ConfigDict(extra="forbid")

    source_root: str
    destination_root: str
    options: TransferOptions = TransferOptions()
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    small_file_max: int = Field(64 * MiB, ge=0)
    retry_failed: list[str] | None = None
    page_size: int = Field(4000, ge=1, le=10_000)
    batch_files: int = Field(BATCH_FILES, ge=1, le=10_000)
    batch_bytes: int = Field(256 * MiB, ge=1)
    max_batches: int = Field(8, ge=1, le=64)
    max_children: int = Field(4, ge=1, le=64)
    history_limit: int = Field(8000, ge=100, le=40_000)
    carried: DatasetCarried | None = None
    destination_roots: list[str] | None = Field(None, min_length=2, max_length=MAX_FAN_OUT)
    retry_targets: list[list[int]] | None = None
    retry_left: list[FileFailure] | None = Field(None, max_length=MAX_FAILURES_KEPT)
    sweep: list[str] | None = Field(None, max_length=MAX_FAILURES_KEPT)

    @field_validator("source_root", "destination_root")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if "://" not in value:
            raise ValueError(
                f"{value!r} is not an absolute URL; send the canonical form, e.g. "
                "file:///absolute/dir (clients canonicalise with staccato.urls.parse_url)"
            )
        return value

    @model_validator(mode="after")
    def _roots(self) -> DatasetRequest:
        if self.retry_left is not None and self.retry_failed is None:
            raise ValueError("retry_left needs retry_failed (the failures a retry copies)")
        roots = self.destination_roots
        if roots is None:
            if self.retry_targets is not None:
                raise ValueError("retry_targets needs destination_roots")
            return self
        for root in roots:
            self._absolute(root)
        if roots[0] != self.destination_root:
            raise ValueError("destination_roots[0] must be destination_root")
        if len(set(roots)) != len(roots) or self.source_root in roots:
            raise ValueError("destination_roots must be distinct and not the source root")
        if self.retry_targets is not None and (
            self.retry_failed is None
            or len(self.retry_targets) != len(self.retry_failed)
            or any(not 0 <= i < len(roots) for t in self.retry_targets for i in t)
        ):
            raise ValueError("retry_targets: one list of root indexes per retry_failed name")
        return self


class ListInput(LeanModel):
    """Input of ``list_entries``: one page of the source, or the entries of given names.

    Attributes:
        after, limit: the page (``Driver.list_page``).
        names: instead of listing, stat these relative names (``--retry-failed``).
        retry_for_s: seconds (``options.retry_for_s``): set when the workflow scheduled
            the page with ``--retry-for`` plus the time one listing may take as its
            schedule-to-close timeout; an attempt then gives up itself once
            ``--retry-for`` passed (a hung source: its hang watch; failing attempts:
            the give-up's wording), naming what it lists
            (:func:`staccato.activities.retry_deadline.within_retry_for`). None:
            Temporal's deadline alone (its words: "Not enough time to schedule next
            retry...").
    """

    _omit_when = omitted_while_none("destination_roots", "retry_for_s")

    source_root: str
    destination_root: str
    after: str | None = None
    limit: int = 1000
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    names: list[str] | None = None
    small_file_max: int = 64 * MiB
    #: several destination roots: each entry says, per root, its URL (a large file) or
    #: why that root cannot hold its name
    destination_roots: list[str] | None = None
    retry_for_s: float | None = None


class DatasetEntry(LeanModel):
    """One file of a page.

    Attributes:
        name: relative name as the source spells it.
        size: bytes.
        error: why it cannot be copied (a broken link, a name the destination cannot
            hold); the file fails with it.
        source, destination: canonical URLs, only for a large file (a child transfer's
            request); batches build them on the worker.

    ``error``, ``source`` and ``destination`` are left out of its JSON while None
    (most entries of a page: a small file without a problem), as the fields of
    several roots are: a page of 4,000 small files was ~50 % ``null``s, written into
    the workflow's history and parsed by it (each field's default is None, so a page
    reads back the same, also by a release that wrote them out).
    """

    _omit_when = omitted_while_none(
        "error", "source", "destination", "target_errors", "destinations", "left_out_before"
    )

    name: str
    size: int = 0
    error: str | None = None
    #: the names reserved for Staccato's temp files the listing left out between the
    #: entry before this one (or the page's start) and this one
    #: (:func:`staccato.temp_names.reserved_segment`); counted as this entry is
    #: handled, so a run that stops mid-page never counts those the next run lists
    #: again. None (left out of the JSON) when none was
    left_out_before: int | None = None
    source: str | None = None
    destination: str | None = None
    #: several destination roots: per root (in order) why it cannot hold the name
    #: (None where it can); None when every root can
    target_errors: list[str | None] | None = None
    #: several destination roots, a large file: its URL per root (None where that
    #: root cannot hold the name)
    destinations: list[str | None] | None = None


class ListResult(BaseModel):
    """A page: the entries that passed the filters, and where the next page starts.

    Attributes:
        last: the last name the page covered (filtered out or not): the listing's cursor
            once every entry up to it is handled.
        next_after: None at the end of the listing.
        skipped_by_filters: entries left out by include/exclude.
        left_out_trailing: entries left out for a name reserved for Staccato's temp
            files (:func:`staccato.temp_names.reserved_segment`) after the page's last
            entry (those before an entry are its ``left_out_before``);
            ``left_out_names``: the first few left out in the page (at most
            :data:`~staccato.temp_names.LEFT_OUT_NAMES_KEPT`).
    """

    entries: list[DatasetEntry]
    last: str | None = None
    next_after: str | None = None
    skipped_by_filters: int = 0
    left_out_trailing: int = 0
    left_out_names: list[str] = Field(default_factory=list)


class RateGroup(BaseModel):
    """A dataset's own ``max_rate`` and what reads under it now (the answer to
    :data:`RATE_GROUP_QUERY`): the worker divides ``max_rate`` over ``batches`` (each
    reads as one stream) plus the copy streams each transfer in ``children`` runs
    (query ``streams_running``), so their sum stays within ``max_rate``.

    Attributes:
        max_rate: bytes per second, the dataset's ``--max-rate``.
        batches: batches of small files whose activity is scheduled (not those
            waiting for a governor's slot).
        children: the workflow ids of the large files' transfers in flight.
        fan_outs: with several roots, each large file's fan-out group in flight (its
            workflow id) -> its transfers' workflow ids (one per root). A group counts
            as the most of its own staging read and its transfers' copy streams (the
            group stages, then its transfers copy the staged copy, each root's at most
            at the share): the dataset reads its source, and writes each root, within
            ``max_rate``, as its batches to several roots do.
    """

    max_rate: float
    batches: int = 0
    children: list[str] = Field(default_factory=list)
    fan_outs: dict[str, list[str]] = Field(default_factory=dict)


class BatchFile(BaseModel):
    """A file of a batch: relative name and listed size (bytes)."""

    name: str
    size: int


class BatchInput(BaseModel):
    """Input of ``copy_batch``.

    Attributes:
        key: unique per batch within the dataset run; write sessions are keyed by it
            and the file's index, so a retried batch reopens the temp file it left.
    """

    source_root: str
    destination_root: str
    files: list[BatchFile]
    options: TransferOptions
    key: str
    #: the governors (endpoint and link names) that granted the batch its slot, under
    #: the ticket ``key``: the worker looks up the batch's share of their
    #: ``max_rate`` by it (:mod:`staccato.workers.rates`); empty: none
    governors: list[str] = Field(default_factory=list)
    #: the dataset (its workflow id) whose own ``max_rate`` the batch shares with the
    #: dataset's other batches and its large files' streams: the worker paces it at
    #: one stream's share (:data:`RATE_GROUP_QUERY`); None: the batch has the whole
    #: ``max_rate`` (scheduled before the dataset shared it, or no ``max_rate``)
    rate_group: str | None = None
    #: seconds (``options.retry_for_s``): set when the workflow scheduled the batch
    #: with ``--retry-for`` plus its work as its schedule-to-close timeout; a failing
    #: attempt then gives up itself once ``--retry-for`` passed without progress
    #: (:mod:`staccato.activities.retry_deadline`). None: Temporal's deadline alone
    retry_for_s: float | None = None


class BatchResult(LeanModel):
    """What a batch did: files copied, skipped (up to date), failed (with reasons),
    bytes copied.

    Attributes:
        not_handled: a batch stopped by a cancel (the dataset's): the names of its
            files it neither copied, skipped nor failed (None: it handled every
            file); left out of the JSON while None. Every file it published is
            counted in ``done``.
    """

    _omit_when = omitted_while_none("not_handled")

    done: int = 0
    skipped: int = 0
    bytes: int = 0
    failures: list[FileFailure] = Field(default_factory=list)
    not_handled: list[str] | None = None


class SweepInput(BaseModel):
    """Input of ``sweep_leftovers``: the canonical URLs of a dataset's files (file,
    SFTP) whose leftover write sessions to remove (``DatasetRequest.sweep``)."""

    urls: list[str]


class BatchOrphansInput(BaseModel):
    """Input of ``abort_batch_orphans``: a batch that ended without handling all its
    files (cancelled, failed, timed out), whose earlier attempts may have left write
    sessions open on its files' keys.

    Attributes:
        destination_root: the batch's destination root URL.
        names: the batch's file names (relative to the root).
        since: Unix seconds, workflow time, when the batch's activity was first
            scheduled: no session of it opened earlier.
        session_key: the batch's key when its activity ended without a result (a
            failure, or a heartbeat timeout after a cancel: its last attempt did not
            clean up): the sessions of ``names[resume_from:]`` that reopen by this key
            (local files, SFTP) are removed as well. None: the batch's own clean-up ran.
        resume_from: the first file its last checkpoint had not handled.
        session_suffix: added to each file's session key: a batch to several roots
            keys a file's session at root ``t`` ``<key>-<index>-t<t>``.
        only: the indexes of the files whose sessions to remove (a batch to several
            roots: those that went to this root, from its checkpoint on, and its
            deferred ones); None: every file from ``resume_from`` on.
        sizes: the files' sizes in bytes (``names`` order), to reopen their sessions.
        chunk_size: the batch's chunk size in bytes (None: the driver's default).
        uploads: the S3 multipart uploads the batch's last checkpoint names open
            (upload id -> canonical destination URL, ``BatchCheckpoint.uploads``):
            aborted by id, also where the store's ``Initiated`` times are not its clock
            (moto); None: none known (the time scan alone).
        count_from: the batch's activity ended without its own word on what it
            published (timed out after the dataset's cancel or as it failed for good: its
            worker killed or frozen, its last heartbeat older than its last publish; or
            cancelled while it waited for a retry: no heartbeat details at all): the
            files from this index on are compared with their sources as a retried
            attempt's resume does (``RESUME_WINDOW`` past the first one that does not
            match), and those found whole at the destination are returned
            (:class:`BatchOrphansResult`) to be counted. None: nothing compared, the
            activity returns how many sessions it aborted (an ``int``, as before).
        source_root: the batch's source root URL (with ``count_from``).
        options: the batch's transfer options (with ``count_from``: its sync level
            and checksum).
    """

    destination_root: str
    names: list[str]
    since: float
    session_key: str | None = None
    resume_from: int = 0
    session_suffix: str = ""
    only: list[int] | None = None
    sizes: list[int] = Field(default_factory=list)
    chunk_size: int | None = None
    uploads: dict[str, str] | None = None
    count_from: int | None = None
    source_root: str | None = None
    options: TransferOptions | None = None


class BatchOrphansResult(LeanModel):
    """``abort_batch_orphans``' result when asked to compare (``count_from`` set).

    Attributes:
        aborted: how many write sessions were aborted.
        ended: the batch's files found whole at the destination past ``count_from``
            (file index, as text -> ``'c'`` copied by one of the batch's attempts, or
            ``'s'`` skipped, up to date there before the batch: the resume's rule,
            :func:`staccato.activities.dataset._compare_joined`); None: none.
        unchecked: the index of the first file of the window it had no time to
            compare (the destination slow or hung); None: every one compared.
    """

    _omit_when = omitted_while_none("ended", "unchecked")

    aborted: int = 0
    ended: dict[str, str] | None = None
    unchecked: int | None = None


#: the key of the detail ``abort_batch_orphans`` adds to its non-retryable
#: ``ApplicationError`` (type :data:`SESSIONS_LEFT_TYPE`) when the write sessions of some
#: files may be left (the destination did not answer, or failed, in time):
#: ``{SESSIONS_LEFT_KEY: [{"index": <file index>, "temp": <temp path>}, ...]}``, so
#: the workflow names them in those files' failures (``FileFailure.left_behind``)
SESSIONS_LEFT_KEY = "staccato_sessions_left"
SESSIONS_LEFT_TYPE = "SessionsLeft"
#: the key of the detail ``abort_batch_orphans`` adds beside :data:`SESSIONS_LEFT_KEY`
#: when it was asked to compare (``count_from``): ``{PUBLISHED_PAST_KEY:
#: <BatchOrphansResult JSON>}``, the files it found whole all the same
PUBLISHED_PAST_KEY = "staccato_published_past"
#: the key of the detail a failed batch attempt (``copy_batch``, ``copy_batch_to_many``)
#: adds to its ``ApplicationError``: ``{FAILED_CHECKPOINT_KEY: <its checkpoint>}``. A
#: batch that fails for good (retries exhausted, ``--retry-for`` spent, non-retryable)
#: reaches its workflow as that error, without heartbeat details: the workflow counts
#: the files the checkpoint says were handled and fails only the others
FAILED_CHECKPOINT_KEY = "staccato_batch_checkpoint"


class BatchCheckpoint(BatchResult):
    """``copy_batch``'s heartbeat details (and, under :data:`FAILED_CHECKPOINT_KEY`, a
    failed attempt's error detail): every file before ``next_index`` is handled
    (copied, skipped or failed, as counted).

    Attributes:
        ended_after: an attempt's files past ``next_index`` that ended all the
            same (file index, as text -> ``'c'`` copied, whole at the destination, or
            ``'s'`` skipped, up to date there; in every heartbeat since 0.38, and in a
            failed attempt's checkpoint), not counted in ``done``, ``skipped``
            nor ``bytes``: a retried attempt's resume counts them as recorded without
            reading their sources (those whose destination is gone or of another size
            are compared, as every file from ``next_index`` on is), while a batch that fails for good
            is counted with them (their bytes: their sizes), so only the files it did
            not end fail. A staged file not committed is never among them. None (left
            out of the JSON): none, or a worker before the field.
        uploads: the write sessions the batch's attempts opened that cannot be found
            again by key and that are still open (S3 multipart uploads: upload id ->
            the file's canonical destination URL), each recorded as soon as the store
            answered its id and removed once completed or aborted: a retried attempt
            (and ``abort_batch_orphans``) aborts those of a killed attempt by id, also
            on a store whose ``Initiated`` times are not its clock (moto). None (left
            out of the JSON): none open, or a worker before the field.
    """

    _omit_when = omitted_while_none("not_handled", "ended_after", "uploads", "failed_file")

    next_index: int = 0
    current: str | None = None
    #: bytes read so far of the files not counted yet (in flight, or staged for their
    #: group commit): ``status`` adds them to ``bytes`` while the batch runs, so bytes
    #: move while a batch copies. Known where the batch is paced (its pacer meters every
    #: byte read); 0 otherwise
    bytes_moving: int = 0
    #: when the batch last made progress (a file handled), Unix seconds,
    #: carried from attempt to attempt: a failing attempt gives up once ``--retry-for``
    #: passed since (:class:`BatchInput` ``retry_for_s``); None: none yet
    progress_at: float | None = None
    #: when a byte last moved in this attempt (read from the source, sent to or
    #: acknowledged by the destination, a file's copy ended; Unix seconds): ``status``
    #: shows no rate while no batch moved for a few seconds
    #: (:data:`staccato.dataset_client.STILL_S`); None: a worker before the field
    moved_at: float | None = None
    ended_after: dict[str, str] | None = None
    uploads: dict[str, str] | None = None
    #: a failed attempt's checkpoint: the name of the file whose error failed it (the
    #: error's message is that file's: its path, its destination's free space), so the
    #: batch's other files that fail with it say which file it was (tester75); None (left
    #: out of the JSON): the attempt failed for another reason (a group commit, a
    #: lease), in a heartbeat, or a worker before the field
    failed_file: str | None = None


class DatasetProgress(LeanModel):
    """The ``progress`` query of ``DatasetWorkflow`` (no history cost)."""

    _omit_when = omitted_while_none("destinations")

    state: DatasetState
    source: str
    destination: str
    files_listed: int = 0
    files_done: int = 0
    files_skipped: int = 0
    files_failed: int = 0
    bytes_listed: int = 0
    bytes_done: int = 0
    listing_done: bool = False
    current: list[str] = Field(default_factory=list)
    runs: int = 1
    started_at: float | None = None
    now: float | None = None
    error: str | None = None
    failures: list[FileFailure] = Field(default_factory=list)
    #: why a batch waits for a slot of a limited endpoint or link (``staccato limit``)
    queued_reason: str | None = None
    #: several destination roots: the counts of each
    destinations: list[DestinationCounts] | None = None
    #: batches and single-file transfers in flight, and batches of them waiting for a
    #: slot (equal: the dataset is ``queued``)
    in_flight: int = 0
    waiting: int = 0
    #: as :class:`DatasetCarried`'s (0 from workers that did not count them)
    files_left_out: int = 0
    left_out_names: list[str] = Field(default_factory=list)


class DatasetResult(LeanModel):
    """Result of ``DatasetWorkflow`` (also when some files failed).

    Attributes:
        failures: at most :data:`MAX_FAILURES_KEPT` failed files with reasons;
            ``files_failed`` counts them all.
    """

    _omit_when = omitted_while_none("destinations")

    state: DatasetState
    source: str
    destination: str
    files_done: int
    files_skipped: int
    files_failed: int
    bytes_done: int
    duration_s: float
    runs: int
    failures: list[FileFailure] = Field(default_factory=list)
    #: several destination roots: the counts of each
    destinations: list[DestinationCounts] | None = None
    #: files the listing left out by ``--include``/``--exclude`` (0 from workers
    #: before 0.17.0, which did not count them)
    files_filtered: int = 0
    #: bytes of every file listed (copied, up to date or failed; None from workers
    #: before 0.18.0, which did not report it)
    bytes_listed: int | None = None
    #: as :class:`DatasetCarried`'s (0 from workers that did not count them)
    files_left_out: int = 0
    left_out_names: list[str] = Field(default_factory=list)


class DestinationStatus(DestinationCounts, LeanModel):
    """A destination root's row of a dataset's status (several roots): its counts,
    and, while a batch waits for that root to come back (its server down, every write
    to it failing transiently), why.

    Attributes:
        files_done, bytes_done: also count what the batches in flight copied to it.
        unreachable: the root's last transient error while a batch retries it (its
            files there wait; the other roots go on); None otherwise (left out of the
            JSON).
        unreachable_since: when a batch first found it so (ISO 8601, UTC).
        files_waiting: the files that wait for it in the batches in flight.
    """

    _omit_when = omitted_while_none("unreachable", "unreachable_since", "files_waiting")

    unreachable: str | None = None
    unreachable_since: str | None = None
    files_waiting: int | None = None


class FileCounts(BaseModel):
    """The files of a whole dataset at some point: listed, copied, up to date, failed
    (``files_failed``: not copied nor up to date; while a ``--retry-failed`` runs,
    also those it has not copied yet)."""

    files_total: int
    files_done: int
    files_skipped: int
    files_failed: int


class RetryOf(FileCounts):
    """The run a ``--retry-failed`` run retried (the dataset's previous run under its
    id), as the client starting the retry saw it: its Temporal run id (None when not
    known), how it ended, when (ISO 8601, UTC), and the whole dataset's files when it
    ended (a run that was itself a retry: its ``whole_dataset``, not only what it
    retried)."""

    run_id: str | None = None
    state: str
    ended_at: str | None = None


class DatasetStatus(LeanModel):
    """What ``staccato status --json`` prints for a dataset.

    Attributes:
        files_total: files listed so far (final once ``listing_done``).
        bytes_total: bytes of the files listed so far; None when not known: a
            dataset completed by a worker before 0.18.0 some of whose files were up
            to date (``--sync-level``) or failed (its result counts only the bytes it
            copied).
        listing_done: ``files_total`` is final: the listing ended (every file listed
            was dispatched), or the dataset ended (cancelled or failed mid-listing too).
        bytes_done: bytes of the files counted done (published): the dataset's
            count, its batches' checkpoints and its large files' transfers that
            completed (not beyond ``bytes_total``). Never falls while the dataset
            runs: bytes of a file not counted yet are in ``bytes_moving``.
        bytes_moving: while it runs, bytes read or copied so far of the files in
            flight not counted yet (its batches' files copied now, its large files'
            transfers in flight): they move, but a file that then fails takes its
            bytes out of this figure (it may fall); None (left out of the JSON) once
            ended. Before, ``bytes_done`` included them and fell when such a file
            failed (tester T4/T18).
        rate_files_per_s, rate_bytes_per_s: since the dataset started, until now (files
            per second: one decimal, two significant digits below 1; bytes: done and
            moving); None unless bytes move now: none while nothing is in flight, a
            step retries, a root is waited for, nothing moved for a few seconds
            (``idle_since``) or no worker answers, and none once the dataset ended
            (as a single transfer's: a current rate; ``duration_s`` says how long it
            took).
        eta_s: seconds left, once the listing is done: the files left at the file
            rate, or the bytes left at the byte rate when that is longer (while no
            file was skipped or failed); none while a cancel waits or a large file's
            transfer is paused.
        current: files being copied now (a few).
        failures: failed files with reasons (at most :data:`MAX_FAILURES_KEPT`).
    """

    _omit_when = omitted_while_none(
        "destinations",
        "destination_roots",
        "counts_unknown",
        "counts_last_known_at",
        "last_retry_error",
        "error_type",
        "cancel_requested",
        "cancel_requested_at",
        "paused_transfers",
        "filters_matched_none",
        "files_left_out",
        "left_out_names",
        "warning",
        "idle_since",
        "no_heartbeat_since",
        "bytes_moving",
        "duration_s",
        "retry_of",
        "whole_dataset",
    )

    id: str
    kind: str = "dataset"
    state: DatasetState
    source: str
    destination: str
    files_total: int
    files_done: int
    files_skipped: int
    files_failed: int
    bytes_total: int | None
    bytes_done: int
    listing_done: bool
    bytes_moving: int | None = None
    rate_files_per_s: float | None = None
    rate_bytes_per_s: float | None = None
    eta_s: float | None = None
    current: list[str] = Field(default_factory=list)
    runs: int = 1
    error: str | None = None
    failures: list[FileFailure] = Field(default_factory=list)
    #: why a batch (else a large file's transfer, its status's ``reason``) waits for a
    #: slot of a limited endpoint or link (None: none waits)
    queued_reason: str | None = None
    #: several destination roots: files done / skipped / failed and bytes per root
    #: (``files_*`` above then count files: failed at some root, up to date at every
    #: root, else done; ``bytes_done`` the source bytes of the files copied to some
    #: root: done, or failed at another root)
    destinations: list[DestinationStatus] | None = None

    @field_validator("destinations", mode="before")
    @classmethod
    def _rows(cls, value: Any) -> Any:
        """A result's or the progress query's counts (:class:`DestinationCounts`) as rows."""
        if isinstance(value, list):
            return [v.model_dump() if type(v) is DestinationCounts else v for v in value]
        return value

    #: several destination roots: every root, in the request's order (``destination``
    #: above is the first, kept for readers of one root; the JSON puts this list
    #: right after it, the human view lists every root on its destination line)
    destination_roots: list[str] | None = None
    #: True while a cancel asked of the running dataset waits for its batches and
    #: children to stop (a frozen or dead worker's until their heartbeat timeouts and
    #: the clean-up); None (left out of the JSON) otherwise
    cancel_requested: bool | None = None
    #: when that cancel was asked (ISO 8601, UTC, from the run's history), while
    #: ``cancel_requested``; None (left out of the JSON) otherwise or when not known
    cancel_requested_at: str | None = None
    #: why the counts above are not known now (0 then means unknown, not none done,
    #: unless ``counts_last_known_at`` says they are the last known;
    #: in what ``follow_dataset`` yields, the last known counts): no worker answered
    #: the progress query, e.g. while a restarted worker replays the dataset's history
    #: or its worker is frozen; left out of the JSON while the counts are known
    counts_unknown: str | None = None
    #: while no worker answers (``counts_unknown`` set): when the counts given were
    #: written (ISO 8601, UTC), as the running dataset's last batch or large file
    #: ended; the files in flight's last heartbeats are added. None (left out of the
    #: JSON) while the counts are known now, or when no counts were written (a
    #: dataset an older worker runs: its counts are then 0, unknown)
    counts_last_known_at: str | None = None
    #: the newest failed attempt of a step being retried: a batch, the listing, or a
    #: large file's transfer (``ID: attempt N: message``); left out while none is
    last_retry_error: str | None = None
    #: large files' transfers in flight that are paused (``staccato pause`` of the
    #: file): the dataset waits for them until ``staccato resume ID``; left out while none is
    paused_transfers: list[str] | None = None
    #: a failed dataset: the failure's type (``SourceRootNotFound``: the source
    #: directory or prefix is not there, a usage error); left out while None
    error_type: str | None = None
    #: when the dataset's first run started (ISO 8601, UTC; continue-as-new keeps it);
    #: ``list`` orders by it
    started_at: str | None = None
    #: when its last run closed (completed, failed, cancelled; ISO 8601, UTC), as a
    #: single transfer's ``ended_at``; None while it runs
    ended_at: str | None = None
    #: a completed dataset (``completed``, ``completed_with_errors``): seconds from its
    #: first run's start to its end (its result's); None otherwise
    duration_s: float | None = None
    #: a dataset that completed with nothing copied because ``--include``/``--exclude``
    #: selected none of the files listed (no include matched, or an exclude matched
    #: each: the name is a contract, kept though an exclude did match): how many were
    #: listed (then ``warning`` says which); left out otherwise (an empty source, a
    #: dataset that selected a file)
    filters_matched_none: int | None = None
    #: files the listing left out, not copied nor counted among ``files_total``, for
    #: a name (or a directory on its path) reserved for Staccato's temp files
    #: (:func:`staccato.temp_names.reserved_segment`; why in
    #: :data:`~staccato.temp_names.LEFT_OUT_REASON`): not failures (exit 0 when
    #: nothing else failed); ``left_out_names``: the first few. Left out of the JSON
    #: while none was (and from workers that did not count them)
    files_left_out: int | None = None
    left_out_names: list[str] | None = None
    #: what the dataset's end should make its user check (``cp -r`` prints it as a
    #: warning, also with ``-q``): the filters matched nothing; left out while None
    warning: str | None = None
    #: a running dataset in which no byte moved for a few seconds (every batch in
    #: flight says so, no large file's transfer is in flight): since when (ISO 8601,
    #: UTC); the rates and the ETA are then left out (a since-start average looked
    #: alive while a hung server answered nothing). Left out while bytes move
    idle_since: str | None = None
    #: with ``idle_since``: every batch in flight has sent no heartbeat for
    #: :data:`staccato.dataset_client.NO_HEARTBEAT_S` or more (the worker process
    #: running it stopped: killed, frozen), not a server that does not answer (a batch
    #: waiting on one heartbeats on): its last heartbeat (or start), ISO 8601, UTC.
    #: Left out otherwise
    no_heartbeat_since: str | None = None
    #: a ``--retry-failed`` run (the ``files_*`` above count only the files it
    #: retries): the run it retried, with the dataset's files when that run ended
    #: (:class:`RetryOf`); left out of other runs' JSON
    retry_of: RetryOf | None = None
    #: with ``retry_of``: the whole dataset now, the earlier runs and this retry
    #: together: ``files_total`` the earlier run's, copied and up to date those of
    #: both, failed the earlier failures this retry has not fixed (yet, while it
    #: runs); left out with ``retry_of``
    whole_dataset: FileCounts | None = None

    def left_behind(self) -> list[FileFailure]:
        """The failures (of those kept: :data:`MAX_FAILURES_KEPT`) of large files whose
        transfer's clean-up gave up: each one's ``left_behind`` says what is left where
        and how to remove it."""
        return [f for f in self.failures if f.left_behind]

    def to_json_dict(self) -> dict[str, Any]:
        """Plain dict with the enum as text (a single destination's dataset without the
        fields of several: ``destinations`` and each failure's ``destination``);
        ``files_left_behind``: how many failures have a ``left_behind`` (when any).

        Several roots: ``destination`` stays one URL, the first root (the status JSON
        contract's key, for readers of one root), and ``destination_roots``, every
        root, comes right after it, so a reader of ``destination`` sees the others."""
        data: dict[str, Any] = self.model_dump(mode="json")
        left = self.left_behind()
        if left:  # large files whose clean-up gave up (each failure says what it left)
            data["files_left_behind"] = len(left)
        roots = data.pop("destination_roots", None)
        if roots is None:
            return data
        ordered: dict[str, Any] = {}
        for key, value in data.items():
            ordered[key] = value
            if key == "destination":
                ordered["destination_roots"] = roots
        return ordered


# -- several destination roots (one read of each file, written to every root) ----------


class FanOutBatchFile(BaseModel):
    """A file of a batch to several roots.

    Attributes:
        name, size: relative name, listed size (bytes).
        targets: the indexes (in ``destination_roots``) of the roots to write it to.
        prefailed: it already failed at some other root (its name): counted failed.
    """

    name: str
    size: int
    targets: list[int]
    prefailed: bool = False


class FanOutBatchInput(BaseModel):
    """Input of ``copy_batch_to_many``: each file read once from the source and written
    to each of its targets (``key`` as :class:`BatchInput`'s)."""

    source_root: str
    destination_roots: list[str]
    files: list[FanOutBatchFile]
    options: TransferOptions
    key: str
    #: as :attr:`BatchInput.governors` (the source's, every root's and every link's)
    governors: list[str] = Field(default_factory=list)
    #: as :attr:`BatchInput.rate_group`
    rate_group: str | None = None


class FanOutBatchResult(LeanModel):
    """What a batch to several roots did.

    Attributes:
        not_handled: a batch stopped by the dataset's cancel: the names of its files
            it did not count (not started, or with a root still to retry; each root's
            counts hold what was done there); None (left out of the JSON): every
            file counted.
        done, skipped, failed: files copied (to every target that needed it, none
            failed), up to date at every target, failed at some target (or prefailed).
        bytes: source bytes of the files done.
        destinations: per root (``destination_roots`` order) its own counts.
        failures: one per failed (file, root), naming the root.
    """

    done: int = 0
    skipped: int = 0
    failed: int = 0
    bytes: int = 0
    destinations: list[DestinationCounts] = Field(default_factory=list)
    failures: list[FileFailure] = Field(default_factory=list)
    not_handled: list[str] | None = None

    _omit_when = omitted_while_none("not_handled")


class FanOutBatchCheckpoint(FanOutBatchResult):
    """``copy_batch_to_many``'s heartbeat details (and, under
    :data:`FAILED_CHECKPOINT_KEY`, a failed attempt's error detail): every file before
    ``next_index`` is handled at every target (as counted), but the ``deferred`` pairs.

    Attributes:
        deferred: [file index, root index] pairs whose root failed transiently, to try
            again.
        partial: file index (text) -> its class so far ('c', 's', 'f') for the files
            with deferred pairs (counted as a file once none is left).
        reasons: root index (text) -> its last transient error.
    """

    next_index: int = 0
    current: str | None = None
    #: bytes read so far of the files not counted yet (in flight, or staged for their
    #: group commit): ``status`` adds them to ``bytes`` while the batch runs, so bytes
    #: move while a batch copies. Known where the batch is paced (its pacer meters every
    #: byte read); 0 otherwise
    bytes_moving: int = 0
    deferred: list[list[int]] = Field(default_factory=list)
    partial: dict[str, str] = Field(default_factory=dict)
    #: file indices copied to some root and not counted yet: a file that then fails
    #: at another root still adds its bytes to ``bytes`` (moved to the roots that took
    #: it); empty from workers before 0.22.0
    moved: list[int] = Field(default_factory=list)
    reasons: dict[str, str] = Field(default_factory=dict)
    #: root index (text) -> when its pairs were first deferred (ISO 8601, UTC), while
    #: some of them are (``status`` names the root, its last error and since when);
    #: empty from workers before 0.19.0
    down_since: dict[str, str] = Field(default_factory=dict)
    #: as :attr:`BatchCheckpoint.progress_at` (a file counted): the hang watch's
    #: deadline, carried from attempt to attempt
    progress_at: float | None = None
    #: as :attr:`BatchCheckpoint.moved_at`: when a byte last moved in this attempt (to
    #: any root); None: a worker before the field
    moved_at: float | None = None
    #: as :attr:`BatchCheckpoint.ended_after`: an attempt's files past
    #: ``next_index`` that ended at every one of their roots, copied or up to date
    #: (file index, as text -> root index, as text -> ``'c'`` or ``'s'``), not
    #: counted; a batch that fails for good counts them (per root too). None (left out
    #: of the JSON): none, or a worker before the field
    ended_after: dict[str, dict[str, str]] | None = None
    #: as :attr:`BatchCheckpoint.uploads`: the S3 multipart uploads open (upload id ->
    #: canonical destination URL, at any root); None (left out of the JSON): none
    uploads: dict[str, str] | None = None

    _omit_when = omitted_while_none("not_handled", "ended_after", "uploads")


class TargetsInput(BaseModel):
    """Input of ``compare_targets``: a large file and its destinations (canonical URLs)."""

    source: str
    destinations: list[str]
    options: TransferOptions


class TargetsResult(BaseModel):
    """Per destination (same order): whether it already matches at the sync level."""

    up_to_date: list[bool]
