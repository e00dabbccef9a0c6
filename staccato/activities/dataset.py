"""The activities of a dataset (``cp -r``): ``list_entries`` (one page of the source,
filtered, with the names the destination cannot hold marked) and ``copy_batch`` (many
small files in one activity, each with a single transfer's guarantees:
:func:`staccato.activities.object_copy.copy_object`).

Files of a batch: up to :data:`FILES_IN_FLIGHT` copied at once (threads), file ``k``
started only while ``k`` < (the first file not ended) + ``FILES_IN_FLIGHT``; small
files to a local file system from a local file, or from S3 with the next
:data:`READ_AHEAD` files' GETs sent ahead (:meth:`Driver.whole_reads`), one at a time
in the batch's own thread.

Resume of a batch: its heartbeat details (:class:`BatchCheckpoint`) say how many files
are ended (in order: the first file not ended is ``next_index``) and what they
counted. Heartbeats reach the server at most every second or so, and files after the
first not ended may be ended too, so after a worker is killed some files past the
checkpoint may be published already: a retried attempt compares each file from the
checkpoint on with its destination (both read, nothing written), up to
``RESUME_WINDOW`` files past the first one that does not match (beyond that, nothing
was started), and counts those that match as handled. A file the checkpoint names
ended past ``next_index`` (``BatchCheckpoint.ended_after``: each heartbeat names the
files the attempt published out of order, or by a group commit not counted yet; a
failed attempt's names the rest it ended) is counted as recorded, its source not
read again, when its destination still holds a file of its size (one stat:
:func:`holds_size`); only a file not named, or one removed or resized since, is
compared. The compare counts the files that match: when they match at
``--sync-level``, copied if the destination changed since the batch was first
scheduled (the killed attempt published them), else skipped (up to date: what a
run without the crash counts them as; where the destination keeps no change time,
SFTP, always skipped: :mod:`staccato.activities.resume_counts`); copied when they
match at the checksum level only (or without a sync level); the others are copied.
A file that was half-written reopens its write session (same key) and copies only
the chunks the destination does not hold; the sessions of the matching files that may
have been in flight at the kill are reopened and aborted (the kill may have come
between a publish and the removal of its journal). A session that cannot be reopened
by key (an S3 multipart upload) is in the checkpoint from the moment the store
answered its id until it is completed or aborted (``BatchCheckpoint.uploads``, with a
heartbeat at once): a retried attempt first aborts those of the attempt before it, by
id (:func:`abort_recorded_uploads`), then looks for any opened after that attempt's
last heartbeat by key and start time (:func:`_abort_orphaned_sessions`).

A hung endpoint (a stopped S3 server or sshd: connections accepted, nothing
answered): the batch's hang watch (:func:`staccato.activities.retry_deadline.hang_watch`)
interrupts every thread talking to an endpoint once no byte moved for
``STACCATO_HANG_S`` seconds (less with a short heartbeat timeout) past the
``--retry-for`` deadline, and the attempt fails, not retried, with the single
transfer's words ("copying SRC to DST: the server did not answer: ..."), its
checkpoint in the error's details: the dataset keeps the counts of the files handled
(also those ended past the checkpoint: ``BatchCheckpoint.ended_after``) and fails the
others with that reason. Each heartbeat also says when a byte last
moved (``BatchCheckpoint.moved_at``): ``status`` shows no rate while none moves.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import gc
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TypeVar

from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError, CancelledError

from staccato.activities import retry_deadline, stream_lease
from staccato.activities.errors import mapped_errors
from staccato.activities.liveness import heartbeating, resent_while_blocked
from staccato.activities.object_copy import copy_object, up_to_date
from staccato.activities.pacing import SharedPacer, beating_wait, group_key, paced_by, slot_key
from staccato.activities.resume_counts import batch_scheduled_at, published_since
from staccato.activities.small_copy import SMALL_OBJECT_MAX, stage_small_url
from staccato.activities.stream_lease import HEARTBEAT_THROTTLE_S, Lease, leased
from staccato.activities.stream_progress import StreamStopped, heartbeat
from staccato.activities.transfer import check_file_roots, stat_source
from staccato.datasets.models import (
    FAILED_CHECKPOINT_KEY,
    PUBLISHED_PAST_KEY,
    SESSIONS_LEFT_KEY,
    SESSIONS_LEFT_TYPE,
    BatchCheckpoint,
    BatchInput,
    BatchOrphansInput,
    BatchOrphansResult,
    BatchResult,
    DatasetEntry,
    FanOutBatchCheckpoint,
    FanOutBatchInput,
    FileFailure,
    ListInput,
    ListResult,
    SweepInput,
    gone_reason,
)
from staccato.datasets.names import (
    NOT_UTF8_REASON,
    UnrepresentableNameError,
    destination_url,
    names_a_directory,
    selected,
    source_url,
    target_url,
)
from staccato.endpoints import get_driver
from staccato.endpoints.base import (
    ORPHAN_CLOCK_SLACK_S,
    Driver,
    Motion,
    OpenSessions,
    WholeReads,
    directory_memo,
    keepalive_hook,
    motion_tracker,
    moved,
    open_sessions,
    remember_listed,
    session_tracker,
)
from staccato.endpoints.file.group import LocalGroup, StagedFile, remove_temp
from staccato.endpoints.listing import BROKEN_LINK, LINK_LOOP, TWIN_SUFFIX
from staccato.errors import (
    ChecksumMismatchError,
    NotFoundError,
    PermanentError,
    RetryableError,
    SourceRootNotADirectoryError,
    SourceRootNotFoundError,
    StaccatoError,
    WorkerStoppingError,
    WriteSessionLostError,
    source_root_not_a_directory,
)
from staccato.models import ListPage, SyncLevel, TransferOptions, WriteSession
from staccato.temp_names import LEFT_OUT_NAMES_KEPT, reserved_segment, session_temp
from staccato.urls import EndpointURL, directory_prefix, parse_url, redact

#: seconds between two looks of a batch or listing page at its cancel, its lease and
#: its worker (a byte of shared memory: ``workers.flags``), and between two heartbeats
#: handed to the worker when its heartbeat timeout is short (see :func:`hand_off_every`)
_HEARTBEAT_EVERY_S = 0.5
_T = TypeVar("_T")
#: attempts per file in one batch when its copy proved bad (a checksum mismatch after
#: writing, a write session lost): like a single transfer's fresh write session
_FILE_ATTEMPTS = 2
#: files of a batch copied at once (threads of the activity process): a small file's
#: time is mostly waits (``fdatasync``, a directory ``fsync``, request round trips),
#: which overlap
FILES_IN_FLIGHT = 4
#: files of a batch whose source reads are sent ahead (S3 to a local file system):
#: the reads in flight while the batch's thread writes one file
READ_AHEAD = 8
#: small files to a local file system are published in groups (see
#: :mod:`staccato.endpoints.file.group`): one commit at a time, in its own thread,
#: of at most this many files (those written while the previous commit ran). Each
#: file staged and not yet committed holds an open fd: up to twice this many per
#: batch (the activity processes raise their open-files limit:
#: :func:`staccato.workers.lifeline.raise_open_files_limit`). 128 (with
#: :data:`GROUP_MIN_FILES` 64) against 64 (32): 10,000 x 64 KiB file->file, 8
#: interleaved rounds at load 10-27, faster in 7 (median 4.8 against 5.7-6.2 s),
#: CPU-s of all processes a median 3.42 against 3.89 in the 4 rounds counted alike;
#: 64 with a minimum of 64 was no faster (median 7.3 s): the deeper pipeline (more
#: ``fdatasync`` calls in flight per commit, the next 128 files written meanwhile,
#: a directory ``fsync`` per up to 128 files) is what gains
GROUP_FILES = 128
#: a commit starts once this many ended files wait (or no file is left to start, or
#: the first of them has waited :data:`GROUP_HOLD_S`): before, each commit took the
#: files staged while the previous one ran, ~8-10 of a local batch's 64 KiB files,
#: so each directory was ``fsync``-ed about once per 8 files and each group's
#: hand-offs to the sync threads were paid as often (10,000 files: 1,240 directory
#: ``fsync`` calls and ~27 futex calls per file); 32 until groups of 128 (above)
GROUP_MIN_FILES = 64
#: seconds the first ended file waits for :data:`GROUP_MIN_FILES` before its group is
#: committed anyway (a slow source: its checkpoint does not wait for the group to fill;
#: a file run inline that took this long or longer has its group committed at once)
GROUP_HOLD_S = 0.1
#: files past the first one a retried attempt finds not copied that the previous
#: attempt may have published: files in flight, and a group being committed
RESUME_WINDOW = FILES_IN_FLIGHT + GROUP_FILES
#: bytes: a listing page's result is cut after the entry that brings its estimated
#: JSON size over this (Temporal refuses a payload over 2 MiB and warns over 512 KiB);
#: the next page starts after that entry
PAGE_BYTES_MAX = 512 * 1024
#: bytes of JSON an entry costs besides its name (and a large file's two URLs)
_ENTRY_OVERHEAD = 90
#: seconds a page's listing waits for one destination root to make a large file's
#: directories (several roots): a root that does not answer within it (a hung host: a
#: connect that waits for its 15 s timeout), or fails transiently, is not asked again
#: for the rest of the page; its transfer makes them in ``prepare``. Before, one root
#: that took longer than ``--retry-for`` failed the listing, so the whole dataset
ROOT_PARENTS_WAIT_S = 2.0


def hand_off_every() -> float:
    """Seconds between two heartbeats a batch or listing page hands to its worker: the
    worker's heartbeat throttle (``stream_lease.HEARTBEAT_THROTTLE_S``, 1 s: Temporal's
    worker sends at most one heartbeat per activity that often, so one handed more
    often only replaces the one waiting) while an eighth of the attempt's heartbeat
    timeout is at least that long; else an eighth of it, at least
    :data:`_HEARTBEAT_EVERY_S` (a short timeout: its lease, renewed by each heartbeat,
    keeps its slack); :data:`_HEARTBEAT_EVERY_S` without a heartbeat timeout.

    Each heartbeat handed goes through the worker's multiprocessing manager and main
    process; handed every 0.5 s (through 0.40.0) they were twice what reached
    the server."""
    timeout = activity.info().heartbeat_timeout
    if not timeout:
        return _HEARTBEAT_EVERY_S
    return max(_HEARTBEAT_EVERY_S, min(HEARTBEAT_THROTTLE_S, timeout.total_seconds() / 8))


class _Beat:
    """A heartbeat hook: hands the given details to the worker every
    :func:`hand_off_every` seconds (1 s with the default heartbeat timeout), the first
    one interval after the attempt began (a page listed or a batch copied within it
    sends none: its result says everything; before, one went out at once, the
    Temporal server's request and history write for every activity), and at once when
    ``sessions`` recorded a new write session since the last one (its id goes out in
    the next heartbeat, not one beat later); in between, every
    :data:`_HEARTBEAT_EVERY_S`, looks at the attempt's cancel, lease and worker.

    Raises:
        StreamStopped: the activity is cancelled or the worker is gone.
        StreamLeaseExpiredError: the attempt's lease expired (its process was frozen).
    """

    def __init__(
        self,
        details: object,
        before: Callable[[], None] | None = None,
        sessions: OpenSessions | None = None,
    ) -> None:
        self.details = details
        self._before = before  # brings the details up to date before each heartbeat
        self._sessions = sessions
        self._every = hand_off_every()
        self._last = self._looked = time.monotonic()
        self._parent = os.getppid()
        #: run before ``before`` when a heartbeat goes out (a batch's pass names in the
        #: checkpoint the files it ended past ``next_index``: ``_copy_in_flight``)
        self.noting: Callable[[], None] | None = None

    def __call__(self, force: bool = False) -> None:
        now = time.monotonic()
        opened = self._sessions is not None and self._sessions.changed.is_set()
        if not force and not opened and now - self._last < self._every:
            if now - self._looked >= _HEARTBEAT_EVERY_S:
                self._looked = now
                self._look()
            return
        self._looked = now
        if self._sessions is not None:
            self._sessions.changed.clear()  # (before the snapshot ``before`` takes)
        self._last = now
        if os.getppid() != self._parent:
            raise StreamStopped("worker process is gone")
        if self.noting is not None:
            self.noting()
        if self._before is not None:
            self._before()
        heartbeat(self.details)

    def _look(self) -> None:
        """Between heartbeats: stop as a heartbeat would (the cancel is a byte of
        shared memory, no round trip)."""
        if os.getppid() != self._parent:
            raise StreamStopped("worker process is gone")
        stream_lease.check()
        if activity.is_cancelled():
            raise StreamStopped("cancelled", cancelled=True)


def _listing_endpoints(request: ListInput) -> str:
    """What a listing page talks to, in words (its hang watch's give-up: "listing
    s3://b/p: the server did not answer: ..."): the source; the destination root too
    when it is not a local directory (the first page checks it; a large file's
    directories are made there)."""
    source = redact(request.source_root)
    roots = request.destination_roots or [request.destination_root]
    remote = [redact(r) for r in roots if not r.startswith("file:")]
    return f"listing {source}" + (f" (for {' and '.join(remote)})" if remote else "")


@activity.defn(name="list_entries")
@retry_deadline.within_retry_for(lambda: None, watch_hangs=_listing_endpoints)
@mapped_errors
def list_entries(request: ListInput) -> ListResult:
    """One page of the source (or, with ``names``, those names' current entries),
    filtered by include/exclude; each entry whose name the destination cannot hold
    carries that reason as its error; a large file carries its source and
    destination URLs (a child transfer's request).

    Scheduled with ``retry_for_s`` (see :class:`ListInput`), an attempt gives up
    itself once ``--retry-for`` passed since the page was scheduled: a failing one
    with the give-up's words, one whose endpoint hangs (nothing answered for
    ``STACCATO_HANG_S`` past it: each listing response, directory read and entry
    handled counts as motion) with "listing SRC: the server did not answer: ..." (the
    one hang watch: :func:`staccato.activities.retry_deadline.within_retry_for`).
    A listed name with a segment reserved for a write session's temp files is left
    out (:func:`staccato.temp_names.reserved_segment`), counted in the next entry's
    ``left_out_before`` (or the result's ``left_out_trailing`` after the last one)
    with the first few in ``left_out_names`` (the dataset's status says them: not
    failures).

    Raises:
        NotFoundError, NotAFileError, UnsupportedError: the source root cannot be listed.
        DestinationMissingError: (the first page, one destination root) nothing can be
            written under the destination root: its S3 bucket is missing, a file stands
            where its directory would be made.
        RetryableError: as the endpoint reports.
    """
    check_file_roots(request.source_root, request.destination_root)
    for other in request.destination_roots or ():
        check_file_roots(request.source_root, other)
    root = parse_url(request.source_root)
    destination_root = parse_url(request.destination_root)
    beat = _Beat(None)
    with keepalive_hook(beat):
        if request.after is None and request.destination_roots is None:
            # a destination nothing can be written under fails the dataset once, up
            # front (a missing bucket), not each of its files with the same reason
            get_driver(destination_root.scheme).check_destination_root(destination_root)
        roots = request.destination_roots or [request.destination_root]
        fence = [parse_url(text) for text in roots]
        if request.names is not None:
            raw = []
            for name in request.names:
                raw.append(_named_entry(root, name, fence))
                moved()  # its endpoint answered (the hang watch)
            last = request.names[-1] if request.names else request.after
            next_after: str | None = None
        else:
            page = _list_page(root, request.after, request.limit, fence)
            raw = [DatasetEntry(name=e.name, size=e.size, error=e.error) for e in page.entries]
            next_after = page.next_after
            last = raw[-1].name if raw else request.after
    entries: list[DatasetEntry] = []
    filtered = 0
    budget = PAGE_BYTES_MAX
    parents = _RootParents() if request.destination_roots is not None else None
    # a root nothing can be written under fails its own pairs, with its reason (each
    # page: a dataset's page is listed in one activity), never the dataset
    unusable = (
        parents.unusable(request.destination_roots)
        if parents is not None and request.destination_roots is not None and raw
        else {}
    )
    temps: list[str] = []
    pending = 0  # reserved names left out since the last entry kept
    for position, entry in enumerate(raw):
        if request.names is None and reserved_segment(entry.name):
            # a write session's temp file or journal, or a file in its writers
            # directory (another transfer's in flight to the source, or one left
            # there): never a file to copy (tester T19: an SFTP source's listed as
            # files), but counted and named in the dataset's status (tester: a user's
            # files of such names went missing without a word)
            temps.append(entry.name)
            pending += 1
            continue
        # the names of a retry were filtered when the client chose them
        # (dataset_client.start_dataset, _submit_fan_out): a page's entries must line up
        # with them, since the workflow's cursor and retry_targets are positions in it
        if request.names is None and not selected(entry.name, request.include, request.exclude):
            filtered += 1
            continue
        if parents is not None and request.destination_roots is not None:
            entry = _with_destinations(
                entry, root, request.destination_roots, request.small_file_max, parents, unusable
            )
        else:
            entry = _with_destination(entry, root, destination_root, request.small_file_max)
        moved()  # a large file's directories made: its destination answered
        if pending:
            entry = entry.model_copy(update={"left_out_before": pending})
            pending = 0
        entries.append(entry)
        budget -= _entry_bytes(entry)
        if budget < 0 and request.names is None and position + 1 < len(raw):
            # the rest is listed again by the next page, which starts after this entry
            last = next_after = entry.name
            break
    if parents is not None:
        parents.close()
    if temps:
        activity.logger.info(
            "listing %s: left out %d temp file(s) of write sessions (%s...)",
            redact(request.source_root),
            len(temps),
            temps[0],
        )
    return ListResult(
        entries=entries,
        last=last,
        next_after=next_after,
        skipped_by_filters=filtered,
        left_out_trailing=pending,
        left_out_names=temps[:LEFT_OUT_NAMES_KEPT],
    )


def _list_page(
    root: EndpointURL, after: str | None, limit: int, fence: list[EndpointURL]
) -> ListPage:
    """One page of ``root``; the first (``after`` None) also proves the root is there.
    Links into the destination roots ``fence`` are not followed (error entries:
    :meth:`Driver.list_page`).

    Raises:
        SourceRootNotFoundError: the first page finds no directory at ``root``, or no
            key under an S3 prefix (folder markers count: an empty "folder" is an
            empty directory); an empty directory is an empty dataset.
        SourceRootNotADirectoryError: the root is a file or an S3 object (``cp -r``
            given a single file).
        NotFoundError (a root gone later), NotAFileError, UnsupportedError,
            RetryableError: as the endpoint reports.
    """
    driver = get_driver(root.scheme)
    try:
        page = driver.list_page(root, after, limit, fence=fence)
    except NotFoundError as err:
        if after is None and not isinstance(err, SourceRootNotFoundError):
            raise SourceRootNotFoundError(str(err)) from None
        raise
    if after is None and not page.entries and page.next_after is None:
        if not driver.root_exists(root):
            if _is_an_object(driver, root):
                raise SourceRootNotADirectoryError(
                    source_root_not_a_directory(str(root), object_store=True)
                )
            raise SourceRootNotFoundError(
                f"source {root} holds nothing to copy: no key in bucket {root.bucket!r} "
                f"starts with {directory_prefix(root)!r} (S3 has no directories: a "
                "mistyped prefix lists as empty); check the prefix"
            )
    return page


def _is_an_object(driver: Driver, root: EndpointURL) -> bool:
    """Whether the S3 prefix ``root`` (that lists empty) names an object itself (``cp
    -r s3://b/run.tar``); False for other schemes, or when that cannot be told."""
    if root.scheme != "s3" or not root.key or root.key.endswith("/"):
        return False
    try:
        driver.stat(root)
    except StaccatoError:
        return False
    return True


def _entry_bytes(entry: DatasetEntry) -> int:
    """Bytes of ``entry`` in a page's JSON, about (its strings as JSON escapes them)."""
    size = _ENTRY_OVERHEAD
    for text in (
        entry.name,
        entry.error,
        entry.source,
        entry.destination,
        *(entry.destinations or ()),
        *(entry.target_errors or ()),
    ):
        if text is not None:
            size += len(json.dumps(text, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    return size


def _named_entry(root: EndpointURL, name: str, fence: list[EndpointURL]) -> DatasetEntry:
    """The entry of ``name`` under ``root`` as it is now (``--retry-failed``). A name
    ending in ``/`` from a source with directories failed as a directory (a link loop,
    an unreadable directory, :func:`names_a_directory`): it names no file to copy again, and says so. A name that leads, through symbolic
    links, into a destination root of ``fence`` fails as the listing says
    (:meth:`Driver.leads_into`)."""
    if names_a_directory(root, name):
        return DatasetEntry(
            name=name,
            error=(
                f"{name!r} failed as a directory when the dataset listed it; --retry-failed "
                "copies failed files again, it does not list directories: run the dataset "
                "again without --retry-failed (--sync-level size skips what is there)"
            ),
        )
    url = source_url(root, name)
    into = get_driver(url.scheme).leads_into(url, fence)
    if into is not None:
        return DatasetEntry(name=name, error=into)
    try:
        info = stat_source(url.canonical)
    except NotFoundError:
        if _not_utf8_at_source(root, name):
            # the listing spelled a name that is not UTF-8 with \xNN escapes: that
            # spelling names no file, the real one cannot be copied
            return DatasetEntry(name=name, error=NOT_UTF8_REASON)
        link = _local_link_reason(url)
        return DatasetEntry(name=name, error=link or gone_reason(name))
    except PermanentError as err:
        return DatasetEntry(name=name, error=_local_link_reason(url) or str(err))
    return DatasetEntry(name=name, size=info.size)


def _local_link_reason(url: EndpointURL) -> str | None:
    """The listing's reason for a local ``url`` that is a broken symbolic link or a
    symbolic link loop (:data:`~staccato.endpoints.listing.BROKEN_LINK`,
    :data:`~staccato.endpoints.listing.LINK_LOOP`), so ``--retry-failed`` says what the
    first run said; None for anything else (and for other schemes)."""
    if url.scheme != "file":
        return None
    try:
        os.stat(url.path)
    except OSError as err:
        if err.errno == errno.ENOENT and os.path.islink(url.path):
            return BROKEN_LINK
        if err.errno == errno.ELOOP:
            return LINK_LOOP
    return None


_ESCAPE = re.compile(rb"\\x([0-9a-fA-F]{2})")


def _not_utf8_at_source(root: EndpointURL, name: str) -> bool:
    """Whether ``name`` is how a listing spelled a name that is not valid UTF-8 (its
    bytes as ``\\xNN`` escapes: ``backslashreplace``) and that name is at the source
    (file: checked; sftp: assumed, its listing is the only one that escapes); the
    listing's :data:`~staccato.endpoints.listing.TWIN_SUFFIX` is not part of it."""
    if "\\x" not in name or root.scheme not in ("file", "sftp"):
        return False
    while name.endswith(TWIN_SUFFIX):  # spelled out as a sibling's name too
        name = name[: -len(TWIN_SUFFIX)]
    raw = _ESCAPE.sub(lambda m: bytes([int(m[1], 16)]), name.encode("utf-8"))
    try:
        raw.decode("utf-8")
        return False  # valid UTF-8 once unescaped: no listing spells it so
    except UnicodeDecodeError:
        pass
    if root.scheme == "sftp":
        return True
    return os.path.lexists(os.path.join(os.fsencode(root.path), raw))


def _with_destination(
    entry: DatasetEntry, root: EndpointURL, destination_root: EndpointURL, small_file_max: int
) -> DatasetEntry:
    """``entry`` with its error set when the destination cannot hold its name, and its
    URLs when it is a large file."""
    if entry.error is not None:
        return entry
    try:
        destination = destination_url(destination_root, entry.name)
        source = source_url(root, entry.name)
        if entry.size > small_file_max:
            # the child transfer writes into an existing directory, as any transfer does
            get_driver(destination.scheme).make_parents(destination)
            return entry.model_copy(
                update={"source": source.canonical, "destination": destination.canonical}
            )
    except PermanentError as err:
        return entry.model_copy(update={"error": str(err)})
    return entry


class _RootParents:
    """A page's ``make_parents`` calls to several destination roots, each bounded by
    :data:`ROOT_PARENTS_WAIT_S`: a root that fails transiently or does not answer in
    time is skipped for the rest of the page (its transfers make the directories in
    ``prepare``), so one root's outage never holds up, or fails, the listing."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._skipped: set[str] = set()

    def make(self, root: str, destination: EndpointURL) -> None:
        """Make ``destination``'s missing directories at ``root``, unless that root is
        skipped (then, and on a timeout or a transient error: nothing).

        Raises:
            PermanentError: as ``Driver.make_parents`` (read-only root, a file on the
                way): the real cause, for that root's entry.
        """
        if root in self._skipped:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="list-parents")
        context = contextvars.copy_context()
        future = self._pool.submit(
            context.run, get_driver(destination.scheme).make_parents, destination
        )
        try:
            future.result(timeout=ROOT_PARENTS_WAIT_S)
        except PermanentError:
            raise
        except (StaccatoError, TimeoutError):
            self._skipped.add(root)  # down or slow: its transfers make them in prepare

    def unusable(self, roots: Sequence[str]) -> dict[str, str]:
        """Why each of ``roots`` that nothing can be written under cannot be
        (``Driver.check_destination_root``: a file system with no capacity such as
        /proc, a file on the way, a read-only one...), asked of every root at once
        within :data:`ROOT_PARENTS_WAIT_S`: a root that fails transiently or does not
        answer in time is skipped for the rest of the page, as :meth:`make` skips it.
        That root's pairs then fail with its reason, never the other roots'."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="list-parents")
        futures = {}
        for text in roots:
            if text in self._skipped:
                continue
            url = parse_url(text)
            context = contextvars.copy_context()
            driver = get_driver(url.scheme)
            futures[text] = self._pool.submit(context.run, driver.check_destination_root, url)
        deadline = time.monotonic() + ROOT_PARENTS_WAIT_S
        reasons: dict[str, str] = {}
        for text, future in futures.items():
            try:
                future.result(timeout=max(0.0, deadline - time.monotonic()))
            except PermanentError as err:
                reasons[text] = str(err)
            except (StaccatoError, TimeoutError):
                self._skipped.add(text)  # down or slow: each file's copy tells
        return reasons

    def close(self) -> None:
        """Let go of the threads (one waiting for a hung root ends on its own, at the
        endpoint's connect timeout)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def _with_destinations(
    entry: DatasetEntry,
    root: EndpointURL,
    destination_roots: list[str],
    small_file_max: int,
    parents: _RootParents,
    unusable: dict[str, str],
) -> DatasetEntry:
    """``entry`` for several destination roots: ``target_errors`` where a root cannot
    hold its name, or nothing can be written under the root (``unusable``: root ->
    reason, :meth:`_RootParents.unusable`); a large file's URL per root (parents made,
    as :func:`_with_destination` does)."""
    if entry.error is not None:
        return entry
    try:
        source = source_url(root, entry.name)
    except PermanentError as err:
        return entry.model_copy(update={"error": str(err)})
    errors: list[str | None] = []
    urls: list[str | None] = []
    for text in destination_roots:
        if text in unusable:
            errors.append(unusable[text])
            urls.append(None)
            continue
        try:
            destination = destination_url(parse_url(text), entry.name)
        except PermanentError as err:
            errors.append(str(err))
            urls.append(None)
            continue
        if entry.size > small_file_max:
            try:
                # bounded: a root down or slow is that root's transfer's to make them
                # in prepare (one root down never stops, or fails, a page)
                parents.make(text, destination)
            except PermanentError as err:  # read-only, a file on the way: the real cause
                errors.append(str(err))
                urls.append(None)
                continue
        errors.append(None)
        urls.append(destination.canonical)
    update: dict[str, object] = {}
    if any(e is not None for e in errors):
        update["target_errors"] = errors
    if entry.size > small_file_max:
        update["source"] = source.canonical
        update["destinations"] = urls
    return entry.model_copy(update=update) if update else entry


@activity.defn(name="copy_batch")
def copy_batch(request: BatchInput) -> BatchResult:
    """Copy the batch's files up to FILES_IN_FLIGHT at once (see :func:`_copy_batch`).

    Raises:
        CancelledError: the dataset was cancelled (the file in flight is removed).
        ApplicationError: a mapped error (see ``mapped_errors``).
    """
    try:
        return watched_batch(
            lambda motion: _copy_batch(request, motion),
            request.retry_for_s,
            _previous(request).progress_at,
            _batch_endpoints(request),
        )
    except ApplicationError as err:
        raise _given_up(request, err) from None  # (a hang's give-up passes as it is)


def watched_batch(
    run: Callable[[Motion], _T | None],
    retry_for_s: float | None,
    progress_at: float | None,
    where: str,
    hung_words: Callable[[str], str] = lambda message: message,
) -> _T:
    """One batch attempt (``run(motion)``: ``copy_batch``'s, ``copy_batch_to_many``'s)
    under its lease (:func:`batch_leased`), its bytes' motion tracked, in its hang
    watch (:func:`staccato.activities.retry_deadline.hang_watch`: ``retry_for_s``,
    ``progress_at`` of earlier attempts, ``where`` it copies, in words).

    Returns:
        What ``run`` returned.

    Raises:
        CancelledError: ``run`` returned None (cancelled, or its worker is gone).
        ApplicationError: ``run``'s; once the watch fired, whatever a driver made of its
            interrupt becomes the non-retryable give-up (:func:`retry_deadline.hung_error`,
            worded by ``hung_words``, with the error's details: the checkpoint).
    """
    motion = Motion()
    hung: str | None = None
    try:
        with (
            batch_leased(),  # no write after the attempt may have lost its batch
            motion_tracker(motion),
            retry_deadline.hang_watch(retry_for_s, progress_at, where, motion) as watch,
        ):
            try:
                result = run(motion)
            finally:
                # stopped before anything else runs: no interrupt lands past the batch
                hung = watch.stop() if watch is not None else None
    except ApplicationError as err:
        if hung is not None and err.type != WorkerStoppingError.TYPE:
            raise retry_deadline.hung_error(hung_words(hung), err) from None
        raise
    if result is None:
        raise CancelledError("batch stopped: cancelled or its worker is gone")
    return result


def _batch_endpoints(request: BatchInput) -> str:
    """What a batch copies, in the words of its hang watch's give-up."""
    return f"copying {redact(request.source_root)} to {redact(request.destination_root)}"


def _given_up(request: BatchInput, err: ApplicationError) -> ApplicationError:
    """``err`` (a failed attempt's error), or a non-retryable one worded as the
    workflow's give-up (:func:`staccato.activities.retry_deadline.gave_up`) when this
    attempt started at or after the batch's deadline: its first scheduled time plus
    ``--retry-for``, or ``--retry-for`` after its last progress (a file handled:
    ``BatchCheckpoint.progress_at``, of this attempt or an earlier one),
    whichever is later. So a batch that keeps copying is never cut off by
    ``--retry-for``, and one whose attempts fail without progress gives up about one
    backoff after it (not after the time its work may take, the rest of its Temporal
    deadline). Only for a batch scheduled with ``retry_for_s``."""
    if err.non_retryable or request.retry_for_s is None:
        return err
    progress_at = _previous(request).progress_at
    for detail in err.details:
        if isinstance(detail, dict) and FAILED_CHECKPOINT_KEY in detail:
            failed = BatchCheckpoint.model_validate(detail[FAILED_CHECKPOINT_KEY])
            progress_at = retry_deadline.latest(progress_at, failed.progress_at)
    started = activity.info().started_time.timestamp()
    if started < retry_deadline.deadline(request.retry_for_s, progress_at):
        return err
    return retry_deadline.gave_up(err, activity.info().activity_type, request.retry_for_s)


def uploads_meter(
    state: BatchCheckpoint | FanOutBatchCheckpoint,
    sessions: OpenSessions,
    then: Callable[[], None],
) -> Callable[[], None]:
    """What runs before each heartbeat: ``state.uploads`` set to the write sessions
    open that cannot be found again by key (``sessions``: S3 multipart uploads, upload
    id -> canonical destination URL; None when none), then ``then``. Only the open
    ones: each is removed once completed or aborted, so the details stay small (about
    one per file in flight)."""

    def update() -> None:
        state.uploads = sessions.snapshot() or None
        then()

    return update


def abort_recorded_uploads(uploads: dict[str, str], key: str) -> int:
    """Abort by id the write sessions an earlier attempt of batch ``key`` recorded in
    its checkpoint (``uploads``: S3 upload id -> canonical destination URL) and did not
    end: that attempt no longer runs (its worker was killed, or it failed; a frozen one
    writes nothing past its lease), so each is an orphan. Found by id, not by its
    ``Initiated`` time (which moto does not keep: every upload says 2010). An upload
    already gone (completed, aborted, its bucket removed) is fine. Called inside the
    attempt's :func:`~staccato.endpoints.base.session_tracker`, which holds them: each
    one aborted leaves it; one whose abort fails (the destination down) stays, for the
    next attempt or ``abort_batch_orphans``. Errors are logged, not raised (the batch's
    copies meet a destination that is down and say so).

    Returns:
        How many were aborted (or found gone).
    """
    aborted = 0
    with retry_deadline.watched():  # the destination's calls: interrupted if it hangs
        for upload_id, url in sorted(uploads.items(), key=lambda item: item[1]):
            try:
                destination = parse_url(url)
                get_driver(destination.scheme).abort(
                    WriteSession(
                        url=url,
                        size=1,
                        chunk_size=1,
                        session_id=upload_id,
                        data={"mode": "multipart"},
                    )
                )
            except StaccatoError as err:
                activity.logger.warning(
                    "%s: the upload an earlier attempt left open on %s was not aborted: %s",
                    key,
                    redact(url),
                    err,
                )
                continue
            aborted += 1
    if aborted:
        activity.logger.info(
            "%s: aborted %d upload(s) an earlier attempt left open (by id)", key, aborted
        )
    return aborted


def _progress_meter(
    state: BatchCheckpoint | FanOutBatchCheckpoint,
    meter: Callable[[], None] | None,
    motion: Motion | None = None,
) -> Callable[[], None]:
    """What runs before each heartbeat: ``meter`` (the bytes moving, if paced), then
    ``state.progress_at`` set to now when the batch handled a file since the last
    heartbeat (copied, skipped, failed for itself, found copied by a resume; also told
    to the attempt's hang watch: :func:`staccato.activities.retry_deadline.progressed`).
    Bytes read of a file not handled yet are not progress: a failing attempt reads its
    files' sources again before each write that fails. ``state.moved_at``: when a byte
    last moved (``motion``, the attempt's), for ``status``' rates."""
    last = state.next_index

    def update() -> None:
        nonlocal last
        if meter is not None:
            meter()
        if state.next_index > last:
            state.progress_at = retry_deadline.progressed()
            last = state.next_index
        if motion is not None:
            state.moved_at = round(time.time() - (time.monotonic() - motion.at), 3)

    return update


def batch_leased() -> contextlib.AbstractContextManager[Lease | None]:
    """The batch attempt's lease (:mod:`staccato.activities.stream_lease`): its
    heartbeats (``_Beat``) renew it, and every write of its files to the destination
    checks it first (:func:`staccato.endpoints.base.write_fence`, also in the threads
    that copy its files and commit its groups: each runs in a copy of the batch's
    context), so a batch whose process was frozen past its heartbeat timeout (Temporal
    may have retried it elsewhere, the dataset may have completed and a newer write
    replaced a file) stops before its next write instead of going on with its list.
    The lease runs from the attempt's start on the server: an attempt handed to a
    frozen worker's open poll, run only when it wakes, writes nothing either."""
    info = activity.info()
    timeout = info.heartbeat_timeout
    return leased(timeout.total_seconds() if timeout else None, info.started_time)


def _stopped_by_cancel() -> bool:
    """Whether this attempt stopped for a cancel its workflow asked for (the dataset's
    cancel): then its result, the files it published, is the batch's last word. Not
    for a worker shutting down (Temporal retries the attempt elsewhere from its
    checkpoint) nor a worker process gone (nobody reads the result)."""
    return (
        activity.is_cancelled()
        and not activity.is_worker_shutdown()
        and os.getppid() == _PARENT_AT_IMPORT
    )


_PARENT_AT_IMPORT = os.getppid()


@mapped_errors
def _copy_batch(request: BatchInput, motion: Motion | None = None) -> BatchResult | None:
    """Copy the batch's files, up to :data:`FILES_IN_FLIGHT` at once (see the module
    docstring for resume).

    A file that cannot be copied (missing, a name or a collision the destination
    refuses, changed during the copy...) is counted as failed with its reason and the
    batch goes on; a transient failure fails the attempt (Temporal retries it from the
    heartbeat's checkpoint) once the files in flight have ended.

    Returns:
        Files copied, skipped (up to date at ``options.sync_level``), failed with
        reasons, bytes written. Stopped by the dataset's cancel: the same counts of
        every file handled (each file it published counted, also those published
        after the first one not ended) and ``not_handled``, the names of the others
        (the files in flight are removed). None when it stopped otherwise (its
        worker shuts down or is gone): the attempt's checkpoint stands.

    Raises:
        RetryableError: a transient failure (the attempt is retried).
        EndpointHungError: the attempt's hang watch gave up (whatever its files'
            threads failed with, or stopped by: :func:`retry_deadline.hang_watch`).
    """
    check_file_roots(request.source_root, request.destination_root)
    _freeze_once()
    state = _previous(request)
    resuming = activity.info().attempt > 1
    if resuming:
        activity.logger.info(
            "batch %s resumes at file %d of %d (attempt %d)",
            request.key,
            state.next_index,
            len(request.files),
            activity.info().attempt,
        )
    pacer = batch_pacer(request)
    state.bytes_moving = 0
    # the uploads open (the earlier attempts' not aborted yet, and this one's)
    sessions = OpenSessions(state.uploads)
    beat = _Beat(
        state,
        uploads_meter(
            state,
            sessions,
            _progress_meter(
                state, None if pacer is None else _moving_meter(request, state, pacer), motion
            ),
        ),
        sessions,
    )
    root = parse_url(request.source_root)
    destination_root = parse_url(request.destination_root)
    handled_after: set[int] = set()  # files handled past ``next_index`` (a cancel's)
    try:
        # each destination directory checked once per batch, not per file
        with keepalive_hook(beat), directory_memo(), session_tracker(sessions):
            if state.uploads:
                abort_recorded_uploads(state.uploads, request.key)
            if pacer is not None:
                pacer.start(beating_wait(beat))
            # the resume's compares and the listing wait on the endpoints in this
            # thread (not on its files' threads): kept alive meanwhile
            with resent_while_blocked():
                if resuming:
                    _resume(request, root, destination_root, state, beat, pacer)
                _list_destination(request, destination_root, state)
            _copy_in_flight(request, root, destination_root, state, beat, pacer, handled_after)
            state.current = None
    except StreamStopped:
        hung = retry_deadline.hung()
        if hung is not None and not _stopped_by_cancel():
            # a heartbeat the watch's interrupt broke: the give-up, not a stop
            raise _with_checkpoint(retry_deadline.EndpointHungError(hung), state, beat) from None
        if not _stopped_by_cancel():
            return None
        handled = set(range(state.next_index)) | handled_after
        return BatchResult(
            done=state.done,
            skipped=state.skipped,
            bytes=state.bytes,
            failures=state.failures,
            not_handled=[f.name for i, f in enumerate(request.files) if i not in handled],
        )
    except StaccatoError as err:
        hung = retry_deadline.hung()
        if hung is not None and not isinstance(err, retry_deadline.EndpointHungError):
            # a driver made something else of the interrupt: the give-up's words
            raise _with_checkpoint(retry_deadline.EndpointHungError(hung), state, beat) from None
        _with_checkpoint(err, state, beat)
        raise
    except Exception:
        hung = retry_deadline.hung()
        if hung is None:
            raise
        # (an OSError a driver left unclassified after the interrupt's socket shutdown)
        raise _with_checkpoint(retry_deadline.EndpointHungError(hung), state, beat) from None
    return BatchResult(
        done=state.done, skipped=state.skipped, bytes=state.bytes, failures=state.failures
    )


#: keys a batch's destination listing may pass per file it asks about before it gives
#: up (other objects between the batch's names: a HeadObject each is cheaper)
LISTED_KEYS_PER_FILE = 4


def _list_destination(
    request: BatchInput, destination_root: EndpointURL, state: BatchCheckpoint
) -> None:
    """With ``--sync-level``, list the destination range of the files left (one
    ListObjectsV2 per 1,000 keys where the driver can:
    :meth:`~staccato.endpoints.base.Driver.listed_objects`) and remember what it
    found at each (:func:`~staccato.endpoints.base.remember_listed`): the sync check
    of a file takes it instead of a HeadObject each where it answers the level
    (missing; exists, size, mtime; sizes that differ at checksum;
    :func:`staccato.activities.object_copy.copy_object`); a checksum level with equal
    sizes still asks HeadObject (the stored checksum). Listed once per attempt,
    after the resume's compare, so what an earlier attempt published is seen. A failed
    listing is logged and each file is stat'ed as before."""
    if request.options.sync_level is None or state.next_index >= len(request.files):
        return
    driver = get_driver(destination_root.scheme)
    urls: dict[str, str] = {}
    for entry in request.files[state.next_index :]:
        try:
            urls[entry.name] = target_url(destination_root, entry.name).canonical
        except StaccatoError:
            pass  # a name the destination cannot hold: its copy says why
    if not urls:
        return
    try:
        with retry_deadline.watched():
            found = driver.listed_objects(
                destination_root, list(urls), LISTED_KEYS_PER_FILE * len(urls) + 1000
            )
    except StaccatoError as err:
        activity.logger.info(
            "%s: listing the destination failed (%s); each file is stat'ed", request.key, err
        )
        return
    if found is not None:
        remember_listed((url, found.get(name)) for name, url in urls.items())


def _with_checkpoint(
    err: StaccatoError, state: BatchCheckpoint | FanOutBatchCheckpoint, beat: _Beat
) -> StaccatoError:
    """``err`` (a failed attempt's) with ``state`` in its details, heartbeated first:
    the retry starts at the first file not ended, and the last attempt's error is all
    its workflow gets when the batch fails for good (no heartbeat details): it counts
    what this checkpoint says was handled. The hang watch's give-up
    (:class:`~staccato.activities.retry_deadline.EndpointHungError`) gets its details
    whether or not that heartbeat goes out (one its interrupt broke fails)."""
    _prune_ended_after(state)
    if isinstance(err, retry_deadline.EndpointHungError):
        with contextlib.suppress(StreamStopped):
            beat(force=True)
    else:
        beat(force=True)
    err.details = (*err.details, {FAILED_CHECKPOINT_KEY: state.model_dump(mode="json")})
    return err


def _moving_meter(
    request: BatchInput, state: BatchCheckpoint, pacer: SharedPacer
) -> Callable[[], None]:
    """What sets ``state.bytes_moving`` before each heartbeat: the bytes the batch's
    ``pacer`` let through in this attempt (:meth:`SharedPacer.paid`) less the sizes of the files counted since
    (each counted file was read whole, or up to date and read through no pacer, or
    failed: the first two make it exact, a failure can only make it less), at most the
    sizes of the files that may be read and not counted (in flight, staged for a group
    commit). Counting a file moves its bytes from here to ``state.bytes``: the sum
    shown does not step back."""
    sizes = [f.size for f in request.files]
    counted = state.next_index  # the files counted before this attempt: not read here
    counted_sizes = 0
    taken_at_start = pacer.paid()
    uncounted_max = FILES_IN_FLIGHT + 2 * GROUP_FILES

    def update() -> None:
        nonlocal counted, counted_sizes
        while counted < state.next_index:
            counted_sizes += sizes[counted]
            counted += 1
        moving = pacer.paid() - taken_at_start - counted_sizes
        cap = sum(sizes[counted : counted + uncounted_max])
        state.bytes_moving = max(0, min(moving, cap))

    return update


def batch_pacer(request: BatchInput | FanOutBatchInput) -> SharedPacer | None:
    """The batch's pacer, which every file of it draws from (None when no rate can
    apply: no ``max_rate`` of its own and no governor slot, so an unpaced batch does
    no pacing work per file). The batch reads as one stream: at most one stream's
    share of the dataset's own ``max_rate`` (``options.max_rate`` divided over the
    dataset's batches in flight and its large files' streams, looked up under
    :func:`~staccato.activities.pacing.group_key` of ``rate_group``; the whole
    ``max_rate`` for a batch without ``rate_group``) and at most one stream's share of
    its governors' ``max_rate`` (looked up by its ticket, its ``key``); both on the
    worker's rate board, a change reaches the batch within ~2 s."""
    ticket = slot_key(request.key, request.governors) if request.governors else None
    if request.options.max_rate is None and ticket is None:
        return None
    group = group_key(request.rate_group) if request.rate_group else None
    pacer = SharedPacer(request.options.max_rate, ticket, group_key=group)
    return pacer if pacer.active else None


_frozen = False


def _freeze_once() -> None:
    """Move what this process holds once it runs batches (its modules, the worker's
    objects) out of the garbage collector's sight (``gc.freeze``): a batch allocates
    many short-lived objects per file, which triggers collections, and each full one
    would otherwise walk every object of the process again."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.freeze()


def _resume(
    request: BatchInput,
    root: EndpointURL,
    destination_root: EndpointURL,
    state: BatchCheckpoint,
    beat: _Beat,
    pacer: SharedPacer | None = None,
) -> None:
    """What a retried attempt does first, one file at a time (see the module docstring).

    The previous attempt started file ``k`` only while ``k`` < (its first file not
    ended) + :data:`FILES_IN_FLIGHT`, and published staged files a group at a time,
    so with ``first`` the first file found not copied, every file it may have
    published is before ``first + RESUME_WINDOW``: the files from the checkpoint to
    there are compared and those that match count as skipped (up to date at
    ``--sync-level``) or copied (by an earlier attempt: :func:`_compare_one`); the
    others are copied. What the write session of each match in ``[first -
    RESUME_WINDOW, first + RESUME_WINDOW)`` may have left (the files that may have
    been in flight at the kill: a journal after publish, a temp file staged beside a
    destination that already matched) is removed.
    """
    first: int | None = None
    matched: list[int] = []
    files = len(request.files)
    recorded = dict(state.ended_after or {})
    while state.next_index < files and (first is None or state.next_index < first + RESUME_WINDOW):
        index = state.next_index
        state.current = request.files[index].name
        beat()
        # named ended in the checkpoint: counted as recorded, its source not read again
        ended = _recorded_one(
            request, index, destination_root, state, recorded.get(str(index))
        ) or _compare_one(request, index, root, destination_root, state)
        if ended:
            matched.append(index)
        else:
            if first is None:
                first = index
            with _failing_file(state, request, index):
                outcome = _copy_one(request, index, root, destination_root, beat, pacer=pacer)
            _apply(state, request, index, outcome)
        state.next_index = index + 1
        _prune_ended_after(state)
    if first is None:
        first = state.next_index
    with retry_deadline.watched():  # the destination's calls: interrupted if it hangs
        for index in matched:
            if first - RESUME_WINDOW <= index < first + RESUME_WINDOW:
                _discard_session(request, destination_root, index)
        _abort_orphaned_sessions(
            request, destination_root, range(first - RESUME_WINDOW, first + RESUME_WINDOW)
        )


def _abort_orphaned_sessions(
    request: BatchInput, destination_root: EndpointURL, window: range
) -> None:
    """Abort the write sessions that earlier attempts of this batch left open on the
    files of ``window`` (those that may have been in flight at a kill) and that cannot
    be found again by key (S3 multipart uploads: a SIGKILLed worker aborts nothing).
    Identified by key and start time: opened after the batch was first scheduled
    (less :data:`ORPHAN_CLOCK_SLACK_S`) and before this attempt started; the dataset
    holds its destination's lock, so no one else writes those keys meanwhile."""
    info = activity.info()
    _abort_orphans(
        destination_root,
        [
            request.files[i].name
            for i in range(max(0, window.start), min(len(request.files), window.stop))
        ],
        since=info.scheduled_time.timestamp() - ORPHAN_CLOCK_SLACK_S,
        until=info.started_time.timestamp(),
    )


def _abort_orphans(
    destination_root: EndpointURL, names: list[str], *, since: float, until: float
) -> int:
    """Abort the sessions on the destinations of ``names`` opened in ``[since, until]``
    (Unix seconds) that cannot be found again by key (see
    :meth:`~staccato.endpoints.base.Driver.abort_orphaned_sessions`); the caller holds
    the destination's lock. Returns how many were aborted (0 for drivers that reopen
    sessions by key)."""
    driver = get_driver(destination_root.scheme)
    if driver.features.reopens_by_key:
        return 0  # reopened by key and aborted (_discard_session) or resumed
    urls = []
    for name in names:
        try:
            urls.append(target_url(destination_root, name))
        except UnrepresentableNameError:
            continue  # never written: nothing was opened for it
    return driver.abort_orphaned_sessions(urls, since=since, until=until)


@activity.defn(name="abort_batch_orphans")
@heartbeating
def abort_batch_orphans(request: BatchOrphansInput) -> int | BatchOrphansResult:
    """Abort the write sessions a batch that will not run again (its dataset was
    cancelled or failed while it waited for a retry, or it failed) left open on its
    files' keys and that no one could find again (S3 multipart uploads of an attempt
    whose worker was SIGKILLed): those opened since the batch was first scheduled
    (``request.since`` less :data:`ORPHAN_CLOCK_SLACK_S`) until now (plus the same
    slack). The dataset workflow runs it before it ends, so it still holds the
    destination's lock: every session on those keys in that interval is one of the
    batch's attempts', and none of them runs any more (its activity ended). The
    uploads its last checkpoint named open (``request.uploads``) are aborted by id
    first (:func:`abort_recorded_uploads`): found by the time alone, they stayed open
    on a store that does not keep the real ``Initiated`` time (moto).

    With ``request.count_from`` (the batch's activity ended without its own word on
    what it published: its worker killed or frozen after its last heartbeat), first
    the files from there on are compared with their sources as a retried attempt's
    resume does (:func:`_published_past`): a file its killed attempt published after
    its last checkpoint is at the destination, and the dataset must count it (a
    tester's cancelled-then-killed dataset said 43 files done with 55 there).

    Returns:
        How many sessions were aborted (0 for drivers that reopen sessions by key);
        with ``count_from``, a :class:`BatchOrphansResult` (that count, and the files
        found whole at the destination).

    Raises:
        ApplicationError: non-retryable, type :data:`SESSIONS_LEFT_TYPE`: the sessions
            of some files in flight at the batch's end may be left (the destination
            did not answer in time, or failed), named in its details
            (:data:`SESSIONS_LEFT_KEY`, :func:`_discard_sessions`). The files found
            whole (with ``count_from``) are in its details too
            (:data:`PUBLISHED_PAST_KEY`: ``BatchOrphansResult`` JSON).
    """
    found: BatchOrphansResult | None = None
    if request.count_from is not None:
        found, end = _published_past(request)
        if found.unchecked is None and request.only is None and request.session_key is not None:
            # its attempts started no file past the compared window: only there can
            # a session of theirs be left (a batch with no checkpoint: not all of it)
            request = request.model_copy(update={"only": list(range(request.resume_from, end))})
    aborted, left = _abort_batch_orphans(request)
    if left:
        raise ApplicationError(
            f"the write sessions of {len(left)} file(s) under {request.destination_root} "
            "may be left: the destination did not answer, or failed",
            {SESSIONS_LEFT_KEY: left},
            *([] if found is None else [{PUBLISHED_PAST_KEY: found.model_dump(mode="json")}]),
            type=SESSIONS_LEFT_TYPE,
            non_retryable=True,
        )
    if found is None:
        return aborted
    found.aborted = aborted
    return found


def _published_past(request: BatchOrphansInput) -> tuple[BatchOrphansResult, int]:
    """The files of an ended batch found whole at the destination from
    ``request.count_from`` on, up to :data:`RESUME_WINDOW` past the first one that is
    not (beyond that its attempts started none), each by :func:`found_whole` (the
    resume's rule: ``'c'`` copied by the batch, ``'s'`` up to date before it), in a
    thread waited for until half the time left before the activity's deadline (the
    sessions' removal takes the rest): a file not compared by then, or when an
    endpoint fails, is ``unchecked`` (logged; the dataset does not count it). Never
    raises: a best-effort count (nothing is written).

    Returns:
        What it found, and the index past the last file compared (every file from
        there on was never started by the batch's attempts, when none is unchecked).
    """
    result = BatchOrphansResult()
    start = request.count_from
    if start is None or request.source_root is None or request.options is None:
        return result, len(request.names)
    root, destination_root = parse_url(request.source_root), parse_url(request.destination_root)
    options, since = request.options, request.since
    ended: dict[str, str] = {}
    lock = threading.Lock()
    reached = [start, 0]  # the first file not compared yet; 1 once the window is done
    stop = threading.Event()

    def work() -> None:
        first: int | None = None
        index = start
        try:
            while index < len(request.names) and (first is None or index < first + RESUME_WINDOW):
                if stop.is_set():
                    return  # past its time: the rest is reported unchecked
                found = found_whole(root, destination_root, request.names[index], options, since)
                with lock:
                    if stop.is_set():
                        return  # (reported already: not taken)
                    if found is not None:
                        ended[str(index)] = found
                    index += 1
                    reached[0] = index
                if found is None and first is None:
                    first = index - 1
            with lock:
                reached[1] = 1
        except Exception as err:  # noqa: BLE001 - best effort: the rest is unchecked
            activity.logger.warning(
                "the files an ended batch may have published under %s were not all compared: %s",
                redact(request.destination_root),
                err,
            )

    thread = threading.Thread(
        target=contextvars.copy_context().run, args=(work,), name="batch-published", daemon=True
    )
    thread.start()
    left_s = _time_left_s()
    thread.join(left_s / 2 if left_s > 0 else 15.0)
    with lock:
        stop.set()  # (a compare under way goes on: its answer is not taken)
        found = dict(ended)
        end = reached[0]
        if not reached[1]:
            result.unchecked = end
    result.ended = found or None
    if found:
        activity.logger.info(
            "an ended batch's %d file(s) past its last checkpoint are at %s: counted",
            len(found),
            redact(request.destination_root),
        )
    if result.unchecked is not None:
        activity.logger.warning(
            "an ended batch's files from %s on under %s were not compared in time: "
            "not counted, some may be there",
            request.names[end] if end < len(request.names) else end,
            redact(request.destination_root),
        )
    return result, end


@mapped_errors
def _abort_batch_orphans(request: BatchOrphansInput) -> tuple[int, list[dict[str, object]]]:
    """:func:`abort_batch_orphans`' work: how many sessions were aborted, and those of
    the files in flight that may be left (:func:`_discard_sessions`)."""
    now = activity.info().started_time.timestamp()
    root = parse_url(request.destination_root)
    left: list[dict[str, object]] = []
    # by id first: those the batch's last checkpoint names (on any store); then by key
    # and start time, for one opened in the instant before its heartbeat
    aborted = (
        abort_recorded_uploads(request.uploads, request.destination_root) if request.uploads else 0
    )
    aborted += _abort_orphans(
        root,
        request.names,
        since=request.since - ORPHAN_CLOCK_SLACK_S,
        until=now + ORPHAN_CLOCK_SLACK_S,
    )
    if request.session_key is not None and request.chunk_size is not None:
        # the batch's last attempt ended without its clean-up (frozen past its
        # heartbeat timeout, killed, failed): its sessions that reopen by key. Best
        # effort and never retried here: a destination down (the likely reason a batch
        # failed for good) must not hold the dataset for another retry budget; what
        # may be left is named instead (the workflow puts it in the files' failures)
        indexes = list(
            range(request.resume_from, len(request.names)) if request.only is None else request.only
        )
        left = _discard_sessions(request, root, indexes)
    if aborted:
        activity.logger.info(
            "aborted %d write session(s) an ended batch left under %s",
            aborted,
            request.destination_root,
        )
    return aborted, left


@activity.defn(name="sweep_leftovers")
@heartbeating
@mapped_errors
def sweep_leftovers(request: SweepInput) -> int:
    """Remove the temp files and journals earlier runs left beside each of
    ``request.urls`` (a ``--retry-failed`` of files whose clean-up met a destination
    that did not answer: ``DatasetRequest.sweep``), as a single transfer's ``prepare``
    sweeps its own destination (``Driver.remove_leftovers``: names of the target's
    temp-name pattern, beside a journal Staccato wrote). The dataset holds the
    destination's lock.

    Returns:
        How many files were removed.

    Raises:
        RetryableError: the destination down (retried within ``--retry-for``; the
            dataset then goes on without it).
    """
    removed = 0
    for text in request.urls:
        url = parse_url(text)
        try:
            gone = get_driver(url.scheme).remove_leftovers(url, "")
        except PermanentError as err:  # this file's alone (its directory gone)
            activity.logger.info("leftovers beside %s not removed: %s", redact(text), err)
            continue
        removed += len(gone)
        if gone:
            activity.logger.info("removed %s, left by an earlier run", ", ".join(gone))
    return removed


#: seconds before its Temporal deadline that ``abort_batch_orphans`` stops waiting for
#: a destination that does not answer, to say which sessions may be left (at most
#: half the time it has)
ORPHANS_REPORT_S = 2.0


def _time_left_s() -> float:
    """Seconds left before the running activity's deadline (its start-to-close or
    schedule-to-close, whichever comes first; 60 when it has none), by this clock:
    negative when passed."""
    info = activity.info()
    ends = [info.started_time + info.start_to_close_timeout] if info.start_to_close_timeout else []
    if info.schedule_to_close_timeout:
        ends.append(info.scheduled_time + info.schedule_to_close_timeout)
    return min(e.timestamp() for e in ends) - time.time() if ends else 60.0


def _discard_sessions(
    request: BatchOrphansInput, root: EndpointURL, indexes: list[int]
) -> list[dict[str, object]]:
    """Remove the write sessions (reopened by key: local files, SFTP) of the files
    ``indexes`` of an ended batch (:func:`abort_batch_orphans`), in a thread waited for
    until shortly before the activity's deadline (:data:`ORPHANS_REPORT_S`): a hung
    destination (a stopped sshd) blocked the activity until Temporal timed it out,
    and nothing said what was left. Stops at the first file whose removal fails
    transiently (the destination down: the rest would wait for it too).

    Returns:
        The sessions that may be left, ``{"index": i, "temp": <temp path>, "url":
        <the file's canonical URL>}`` each: of
        the files that may have been in flight when the batch ended (the first
        :data:`FILES_IN_FLIGHT` of ``indexes``; one to an SFTP destination, whose
        batches copy one file at a time) whose removal did not end (empty when every
        one ended, or the driver keeps no session by key: S3).
    """
    ended: set[int] = set()
    driver_keeps = root.scheme == "file" or get_driver(root.scheme).features.reopens_by_key
    if not driver_keeps or request.chunk_size is None or request.session_key is None:
        return []
    chunk_size, session_key = request.chunk_size, request.session_key

    stop = threading.Event()

    def work() -> None:
        for index in indexes:
            if stop.is_set():
                return  # reported: the rest stays as reported (no write after)
            try:
                destination = target_url(root, request.names[index])
            except UnrepresentableNameError:
                ended.add(index)
                continue  # never written
            try:
                discard_session_by_key(
                    destination,
                    request.sizes[index],
                    chunk_size,
                    f"{session_key}-{index}{request.session_suffix}",
                )
            except (RetryableError, OSError) as err:
                # the destination down or failing: the rest would wait for it too
                activity.logger.warning(
                    "the write sessions an ended batch left under %s were not all removed: %s",
                    request.destination_root,
                    err,
                )
                return
            except Exception as err:  # noqa: BLE001
                # this file's alone (its directory gone: nothing was written for it);
                # the next files' sessions still go (a tester's batch kept its temp
                # files for good when the first file's directory did not exist)
                activity.logger.info("no write session of %s removed: %s", destination, err)
            ended.add(index)

    remaining = _time_left_s()
    # a deadline passed already by this clock (skewed; a test's environment): the
    # report may be lost, wait as the removal did before
    wait_s = max(remaining / 2, remaining - ORPHANS_REPORT_S) if remaining > 0 else 30.0
    thread = threading.Thread(
        target=contextvars.copy_context().run, args=(work,), name="batch-sessions", daemon=True
    )
    thread.start()
    thread.join(wait_s)
    # a thread still blocked on a hung server goes on with the removal it is in when
    # the server answers again (within the driver's I/O timeout), and stops there
    stop.set()
    in_flight = 1 if root.scheme == "sftp" else FILES_IN_FLIGHT
    left: list[dict[str, object]] = []
    for index in indexes[:in_flight]:
        if index in ended:
            continue
        try:
            url = target_url(root, request.names[index])
        except UnrepresentableNameError:
            continue
        temp = session_temp(url.path, f"{session_key}-{index}{request.session_suffix}")
        left.append({"index": index, "temp": temp, "url": url.canonical})
    return left


def _copy_in_flight(
    request: BatchInput,
    root: EndpointURL,
    destination_root: EndpointURL,
    state: BatchCheckpoint,
    beat: _Beat,
    pacer: SharedPacer | None = None,
    handled_after: set[int] | None = None,
) -> None:
    """Copy the files from ``state.next_index`` on, up to :data:`FILES_IN_FLIGHT` at
    once (threads: the waits of one file, its requests, overlap the work of others;
    SFTP: one at a time), file ``k`` started only while ``k`` < (the first file not
    ended) + ``FILES_IN_FLIGHT``. Small files to a local file system end staged
    (written under their temp names) and are published by group commits
    (:mod:`staccato.endpoints.file.group`), one at a time in a thread of their own, of
    at most :data:`GROUP_FILES` files: those staged while the previous commit ran, once
    :data:`GROUP_MIN_FILES` have ended (or no file is left to start, or the first has
    waited :data:`GROUP_HOLD_S`).
    ``state`` counts the files in order, each once it is published (or skipped, or
    failed): ``next_index`` is the first file not ended and committed, so a
    checkpoint never covers a file in flight or one whose publish is not durable.

    Raises:
        StreamStopped: cancelled (each file in flight removes its write session; the
            staged files not being committed are removed). Stopped by the workflow's
            cancel, ``state`` then counts every file that ended (also past
            ``next_index``, whose indexes are added to ``handled_after``).
        StaccatoError: a transient failure of a file (or of a group commit), raised
            once the files in flight have ended (the files before it are committed
            and counted first).
    """
    files = len(request.files)
    if handled_after is None:
        handled_after = set()
    if "sftp" in (root.scheme, destination_root.scheme):
        # one file at a time, in this thread: SFTP copies in several threads of one
        # process stalled (a batch stopped mid-file in the round-trip test)
        for index in range(state.next_index, files):
            state.current = request.files[index].name
            beat()
            with _failing_file(state, request, index):
                outcome = _copy_one(request, index, root, destination_root, beat, pacer=pacer)
            _apply(state, request, index, outcome)
            state.next_index = index + 1
        return
    stop = threading.Event()
    group = LocalGroup() if destination_root.scheme == "file" else None

    def file_beat() -> None:
        if stop.is_set():
            raise StreamStopped("batch stopped")

    reads = _reads_ahead(request, root, group, pacer)
    sent_up_to = state.next_index  # the files before it had their reads sent
    sessions = open_sessions()  # the batch's (the uploads its files open)

    def run(index: int) -> _Outcome:
        # a file run inline (in this thread) heartbeats itself while it waits (in its
        # pacer, or for a read sent ahead: the loop below beats between files only);
        # one run in a thread of the pool only checks for the stop (the loop beats)
        each = beat if in_flight == 1 else file_beat
        with keepalive_hook(each):
            if reads is None:
                return _copy_one(request, index, root, destination_root, each, group, pacer)
            with retry_deadline.watched():
                send_ahead(index)
            try:
                return _copy_one(request, index, root, destination_root, each, group, pacer, reads)
            finally:
                _drop_read(reads, root, request.files[index].name)

    def send_ahead(index: int) -> None:
        """Send the reads of the files up to ``index + READ_AHEAD`` not sent yet."""
        nonlocal sent_up_to
        assert reads is not None
        limit = min(request.options.chunk_size, SMALL_OBJECT_MAX)
        while sent_up_to < min(files, index + READ_AHEAD):
            entry = request.files[sent_up_to]
            sent_up_to += 1
            if entry.size <= limit:
                try:
                    reads.send(source_url(root, entry.name))
                except StaccatoError:
                    pass  # its copy meets the same error and reports it

    pending: dict[int, Future[_Outcome]] = {}
    ended: dict[int, Future[_Outcome]] = {}
    # the files from state.next_index on that have ended, in order (up to first_open,
    # the first file not ended); some of them staged: the first ones are in the
    # commit running (``committing``, the first ``in_commit`` of them)
    waiting: list[_Outcome] = []
    in_commit = 0
    committing: Future[list[StaccatoError | None]] | None = None
    first_open = next_start = state.next_index
    failure: BaseException | None = None
    held_since: float | None = None  # since when ended files wait with no commit running

    def count(outcomes: list[_Outcome], errors: list[StaccatoError | None]) -> None:
        """Count ``outcomes`` (the first of ``waiting``) in order; ``errors``: the
        commit's result per staged file among them."""
        results = iter(errors)
        for outcome in outcomes:
            index = state.next_index
            if outcome.staged is not None:
                error = next(results)
                outcome = (
                    _Outcome(copied=True, bytes=outcome.bytes)
                    if error is None
                    else _Outcome(
                        failure=FileFailure(name=request.files[index].name, reason=str(error))
                    )
                )
            _apply(state, request, index, outcome)
            state.next_index = index + 1

    def next_commit() -> None:
        """Count the ended files that need no commit; start committing the next group
        (a commit runs in its own thread while the files after it are written)."""
        nonlocal waiting, in_commit, committing
        assert committing is None
        staged: list[StagedFile] = []
        end = 0
        while end < len(waiting) and len(staged) < GROUP_FILES:
            if waiting[end].staged is not None:
                staged.append(waiting[end].staged)  # type: ignore[arg-type]
            end += 1
        if not staged:
            count(waiting[:end], [])
            waiting = waiting[end:]
            return
        assert group is not None and committer is not None
        in_commit = end
        # the commit's renames check the batch's lease: its thread sees the context
        committing = committer.submit(contextvars.copy_context().run, group.commit, staged)

    def commit_ended() -> None:
        """Count the files of the commit that ended (raises its error, if any)."""
        nonlocal waiting, in_commit, committing
        assert committing is not None
        errors = committing.result()
        moved()  # the destination answered (a long commit is no hang)
        count(waiting[:in_commit], errors)
        waiting = waiting[in_commit:]
        in_commit = 0
        committing = None

    loop_thread = threading.get_ident()

    def note_ended() -> None:
        """Name in the checkpoint (``ended_after``) the files ended past
        ``next_index`` that are published or up to date (out of order, or by a commit
        that ended and is not counted yet): a retry after a kill counts them as
        recorded, its resume reads none of their sources again
        (:func:`_recorded_one`). Only in the loop's thread (a pacer's wait may beat
        in a file's thread, while the loop changes what this reads)."""
        if threading.get_ident() != loop_thread:
            return
        outcomes = dict(enumerate(waiting, state.next_index))
        running = committing
        if running is not None and running.done():
            outcomes.update(_committed(waiting[:in_commit], running, state.next_index))
        _note_ended_after(state, outcomes, ended)

    committer = (
        ThreadPoolExecutor(1, thread_name_prefix="batch-commit") if group is not None else None
    )
    beat.noting = note_ended
    # local file to local file: one at a time in this thread (no wait is worth
    # overlapping but the commit's; threads of one process only contend for the GIL,
    # the worker's processes give the parallelism); from a source whose reads are
    # sent ahead (S3), too: the requests in flight overlap instead of threads
    in_flight = (
        1 if group is not None and (root.scheme == "file" or reads is not None) else FILES_IN_FLIGHT
    )
    with (
        _InlineExecutor() if in_flight == 1 else ThreadPoolExecutor(in_flight, "batch-file")
    ) as pool:
        try:
            while (
                pending
                or waiting
                or committing is not None
                or (next_start < files and failure is None)
            ):
                began = time.monotonic()
                while (
                    failure is None
                    and next_start < files
                    and next_start < first_open + in_flight
                    # staged files hold an open fd each until committed: at most two groups
                    and len(waiting) < 2 * GROUP_FILES
                ):
                    # each thread sees this activity's context (info, cancellation)
                    context = contextvars.copy_context()
                    pending[next_start] = pool.submit(context.run, run, next_start)
                    next_start += 1
                watched: list[Future[object]] = list(pending.values())  # type: ignore[arg-type]
                if committing is not None:
                    watched.append(committing)  # type: ignore[arg-type]
                if sessions is not None and pending:
                    # a file's thread opened an upload: the beat below sends its id now
                    watched.append(sessions.waiter())  # type: ignore[arg-type]
                if watched:
                    # a file run inline has ended already: no wait (its locks and
                    # waiter cost more than the rest of this loop)
                    done = {future for future in watched if future.done()}
                    if not done:
                        timeout = _HEARTBEAT_EVERY_S
                        if held_since is not None:  # a group waits: not past its hold
                            held = time.monotonic() - held_since
                            timeout = min(timeout, max(GROUP_HOLD_S - held, 0.0))
                        done, _ = wait(watched, timeout=timeout, return_when=FIRST_COMPLETED)
                    for index in [i for i, f in pending.items() if f in done]:
                        future = ended[index] = pending.pop(index)
                        error = future.exception()
                        if error is not None and failure is None:
                            failure = error
                            # its message is this file's: the files failed with the
                            # batch name it (tester75: f0088's reason named f0080)
                            state.failed_file = request.files[index].name
                while first_open in ended and ended[first_open].exception() is None:
                    waiting.append(ended.pop(first_open).result())
                    first_open += 1
                if committing is not None and committing.done():
                    commit_ended()
                if committing is None and waiting:
                    now = time.monotonic()
                    if held_since is None:
                        held_since = now
                    if (
                        len(waiting) >= GROUP_MIN_FILES
                        # a file run inline that took the hold or longer (a slow
                        # source, a paced one): the next would take as long, and the
                        # files waiting would wait for it
                        or (in_flight == 1 and time.monotonic() - began >= GROUP_HOLD_S)
                        or next_start >= files
                        or failure is not None
                        or now - held_since >= GROUP_HOLD_S
                    ):
                        held_since = None
                        next_commit()
                state.current = request.files[min(first_open, files - 1)].name
                beat()
        except BaseException as err:
            stop.set()  # cancelled: each file in flight stops and removes its session
            wait(pending.values())
            if committing is not None:
                wait([committing])  # its files are published, not counted: the retry compares
            unpublished = _staged(waiting[in_commit:] if committing else waiting, ended, pending)
            if group is not None:
                group.discard(unpublished)
            if isinstance(err, StreamStopped) and _stopped_by_cancel():
                # no attempt follows a cancel: count every file that ended, in order or
                # not (the checkpoint, sent before, is not changed by this)
                start = state.next_index
                if committing is not None:
                    try:
                        commit_ended()  # counted in order: next_index moves past them
                        start = state.next_index
                    except Exception:  # noqa: BLE001 - its files count as not handled
                        start = state.next_index + in_commit
                        waiting = waiting[in_commit:]
                outcomes = dict(enumerate(waiting, start=start))
                for futures in (ended, pending):
                    for index, future in futures.items():
                        if future.done() and future.exception() is None:
                            outcomes[index] = future.result()
                for index, outcome in sorted(outcomes.items()):
                    if outcome.staged is None:  # staged and not committed: removed
                        _apply(state, request, index, outcome)
                        handled_after.add(index)
            else:
                # an attempt that fails: its checkpoint names the files it ended past
                # next_index (not counted: a retry compares them, a give-up counts them)
                start = state.next_index
                ended_now: dict[int, _Outcome] = {}
                if committing is not None:
                    ended_now = _committed(waiting[:in_commit], committing, start)
                    start += in_commit
                ended_now.update(enumerate(waiting[in_commit:] if committing else waiting, start))
                _note_ended_after(state, ended_now, ended, pending)
            raise
        finally:
            beat.noting = None
            if reads is not None:
                reads.close()
            if committer is not None:
                committer.shutdown(wait=True)
            if group is not None:
                if failure is not None:
                    # the files after the one that failed: staged, never published
                    group.discard(_staged([], ended))
                group.close()
    if failure is not None:
        # the files that ended past the one that failed (its staged ones were discarded)
        _note_ended_after(state, {}, ended)
        raise failure


def _committed(
    outcomes: list[_Outcome], committing: Future[list[StaccatoError | None]], start: int
) -> dict[int, _Outcome]:
    """The ends of the files of a group commit that ran (``outcomes``, file ``start``
    on, its staged ones committed by ``committing``): a staged file the commit
    published is copied; one it failed, or all of them if it raised, are left out."""
    try:
        errors = iter(committing.result())
    except Exception:  # noqa: BLE001 - not known published: none of its staged files
        return {i: o for i, o in enumerate(outcomes, start) if o.staged is None}
    ended: dict[int, _Outcome] = {}
    for index, outcome in enumerate(outcomes, start):
        if outcome.staged is None:
            ended[index] = outcome
        elif next(errors, True) is None:
            ended[index] = _Outcome(copied=True, bytes=outcome.bytes)
    return ended


def _note_ended_after(
    state: BatchCheckpoint, outcomes: dict[int, _Outcome], *futures: dict[int, Future[_Outcome]]
) -> None:
    """Put in ``state.ended_after`` the files of a failing attempt that ended past
    ``state.next_index`` published or up to date: among ``outcomes`` (file index ->
    its end) and the ended ``futures`` (file index -> its copy's), neither staged
    (not committed: not published) nor failed. Those an earlier attempt ended stay
    unless this one failed them; none before ``next_index`` is kept."""
    ended = dict(outcomes)
    for by_index in futures:
        for index, future in by_index.items():
            if future.done() and future.exception() is None:
                ended.setdefault(index, future.result())
    kept = dict(state.ended_after or {})
    for index, outcome in ended.items():
        if index < state.next_index or outcome.staged is not None:
            continue
        if outcome.failure is not None:
            kept.pop(str(index), None)
        else:
            kept[str(index)] = "c" if outcome.copied else "s"
    state.ended_after = kept or None
    _prune_ended_after(state)


def _prune_ended_after(state: BatchCheckpoint | FanOutBatchCheckpoint) -> None:
    """Drop from ``state.ended_after`` the files ``next_index`` passed (counted since)."""
    if state.ended_after is not None:
        for key in [k for k in state.ended_after if int(k) < state.next_index]:
            del state.ended_after[key]
        if not state.ended_after:
            state.ended_after = None


@contextlib.contextmanager
def _failing_file(state: BatchCheckpoint, request: BatchInput, index: int) -> Iterator[None]:
    """Name file ``index`` in ``state.failed_file`` if its copy raises a
    :class:`StaccatoError` (which then fails the attempt: its message is that
    file's, and the batch's other files that fail with it name the file)."""
    try:
        yield
    except StaccatoError:
        state.failed_file = request.files[index].name
        raise


class _InlineExecutor(Executor):
    """Runs each task at once in the caller's thread (a done future)."""

    def submit(  # type: ignore[override]
        self, fn: Callable[..., _T], /, *args: object, **kwargs: object
    ) -> Future[_T]:
        future: Future[_T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as err:  # handed to the caller, as a pool does
            future.set_exception(err)
        return future


def _reads_ahead(
    request: BatchInput,
    root: EndpointURL,
    group: LocalGroup | None,
    pacer: SharedPacer | None,
) -> WholeReads | None:
    """The source's reads sent ahead for a batch whose small files are staged
    (:data:`READ_AHEAD` files ahead of the one being written, all in the batch's
    thread), where the source offers them (S3 through the lean path) and nothing
    paces the batch (a pacer meters each file's bytes as they are read); else None
    (the files are copied :data:`FILES_IN_FLIGHT` at once, in threads)."""
    if group is None or pacer is not None or request.options.sync_level is not None:
        return None
    if root.scheme == "file":
        return None
    limit = min(request.options.chunk_size, SMALL_OBJECT_MAX)
    return get_driver(root.scheme).whole_reads(root, limit)


def _drop_read(reads: WholeReads, root: EndpointURL, name: str) -> None:
    """Forget the read of ``name`` if its copy did not take it (it failed before)."""
    try:
        reads.drop(source_url(root, name))
    except StaccatoError:
        pass  # never sent


def _staged(waiting: list[_Outcome], *futures: dict[int, Future[_Outcome]]) -> list[StagedFile]:
    """The staged files among ``waiting`` and the ended futures (not yet committed)."""
    staged = [outcome.staged for outcome in waiting if outcome.staged is not None]
    for by_index in futures:
        for future in by_index.values():
            if future.done() and future.exception() is None:
                outcome = future.result()
                if outcome.staged is not None:
                    staged.append(outcome.staged)
    return staged


@dataclass(frozen=True)
class _Outcome:
    """One file's end: copied (``bytes`` written), skipped (up to date), failed, or
    ``staged`` (written under its temp name, ``bytes`` long; copied once its group
    is committed)."""

    copied: bool = False
    bytes: int = 0
    failure: FileFailure | None = None
    staged: StagedFile | None = None


def _apply(state: BatchCheckpoint, request: BatchInput, index: int, outcome: _Outcome) -> None:
    """Count file ``index``'s outcome in ``state``."""
    if outcome.failure is not None:
        state.failures.append(outcome.failure)
    elif outcome.copied:
        state.done += 1
        state.bytes += outcome.bytes
    else:
        state.skipped += 1


def _discard_session(request: BatchInput, destination_root: EndpointURL, index: int) -> None:
    """Remove what is left of file ``index``'s write session (reopened by its key, then
    aborted): the previous attempt may have been killed after publishing it and before
    removing its journal (file, SFTP), the last file it published being the one in
    flight at the kill."""
    f = request.files[index]
    discard_session_by_key(
        target_url(destination_root, f.name),
        f.size,
        request.options.chunk_size,
        f"{request.key}-{index}",
    )


def discard_session_by_key(
    destination: EndpointURL, size: int, chunk_size: int, session_key: str
) -> None:
    """Remove the write session of ``destination`` keyed ``session_key`` (a batch file's:
    ``<batch key>-<index>``; a local file's later attempts add ``-<attempt>``), if the
    driver reopens sessions by key (local files, SFTP); nothing otherwise (S3: opening
    would only start a new upload; see ``abort_orphaned_sessions``).

    Args:
        size: the file's size in bytes; chunk_size: the batch's chunk size in bytes.
    """
    if destination.scheme == "file":
        for attempt in range(_FILE_ATTEMPTS):
            remove_temp(destination, session_key + (f"-{attempt}" if attempt else ""))
        return
    driver = get_driver(destination.scheme)
    if not driver.features.reopens_by_key:
        return  # nothing to find again: opening would only start a new session (S3)
    driver.abort(driver.open_session(destination, size, chunk_size, session_key))


def _previous(request: BatchInput) -> BatchCheckpoint:
    details = activity.info().heartbeat_details
    if details:
        try:
            # which file failed an earlier attempt is no news of this one
            return BatchCheckpoint.model_validate(details[0]).model_copy(
                update={"failed_file": None}
            )
        except ValidationError:
            pass
    return BatchCheckpoint()


def _compare_one(
    request: BatchInput,
    index: int,
    root: EndpointURL,
    destination_root: EndpointURL,
    state: BatchCheckpoint,
) -> bool:
    """:func:`_compare_joined` in the batch's hang watch (interrupted when it fires)."""
    with retry_deadline.watched():
        ended = _compare_joined(request, index, root, destination_root, state)
    moved()  # the file's endpoints answered
    return ended


def _compare_joined(
    request: BatchInput,
    index: int,
    root: EndpointURL,
    destination_root: EndpointURL,
    state: BatchCheckpoint,
) -> bool:
    """Whether file ``index``, past the checkpoint, is ended already (its destination
    matches its source); if so it is counted in ``state``: when it matches at
    ``options.sync_level``, copied if the destination changed since the batch was
    first scheduled (published by an earlier attempt), else skipped (up to date);
    without a sync level (or matching at the checksum level only), copied (by an
    earlier attempt).

    Why: the checkpoint counts the files before ``next_index`` only, and the previous
    attempt (killed, or frozen past its heartbeat timeout) may have ended files past
    it, skipping some in a sync run (up to date) and copying the others; what it did
    with each is lost with it. Through 0.23 every match counted as copied (tester: 924
    copied for 668 rewritten), then every match at the sync level as skipped (tester:
    an empty destination, a frozen worker: 25,669 copied, 331 up to date). The
    destination's change time tells them apart
    (:func:`staccato.activities.resume_counts.published_since`); where it keeps none
    (SFTP) a file the previous attempt published past its last checkpoint counts as
    skipped: the destination holds what it would hold, that file's copy is not counted.
    """
    f = request.files[index]
    found = found_whole(root, destination_root, f.name, request.options, batch_scheduled_at())
    if found == "s":
        state.skipped += 1
    elif found == "c":
        activity.logger.info("%s: copied by the previous attempt already", f.name)
        state.done += 1
        state.bytes += f.size
    return found is not None


def found_whole(
    root: EndpointURL,
    destination_root: EndpointURL,
    name: str,
    options: TransferOptions,
    since: float,
) -> str | None:
    """How file ``name`` of a batch (source under ``root``) stands at
    ``destination_root``: ``'s'`` when it matches its source at
    ``options.sync_level`` and was not changed since ``since`` (Unix seconds, the
    batch's first schedule: up to date before the batch, skipped), ``'c'`` when it
    matches and was written since (or matches at the checksum level only, or without
    a sync level: copied by one of the batch's attempts), None when it does not match
    or cannot be compared (a permanent error: copying it says why). The rule of
    :func:`_compare_joined` (see there and :mod:`staccato.activities.resume_counts`).

    Raises:
        RetryableError: an endpoint failed transiently.
    """
    try:
        source = source_url(root, name).canonical
        destination_url = target_url(destination_root, name)
        destination = destination_url.canonical
        info = stat_source(source)
        if options.sync_level is not None:
            same, _ = up_to_date(source, destination, options.sync_level, options, info)
            if same and not published_since(destination_url, since):
                return "s"
            if same:
                matched = True  # written since the batch began: by an earlier attempt
            elif options.sync_level == SyncLevel.checksum:
                return None  # compared at the checksum level already: to copy
            else:
                matched, _ = up_to_date(source, destination, SyncLevel.checksum, options, info)
        else:
            matched, _ = up_to_date(source, destination, SyncLevel.checksum, options, info)
    except PermanentError:
        return None
    return "c" if matched else None


def holds_size(destination: EndpointURL, size: int) -> bool:
    """Whether ``destination`` holds an object of ``size`` bytes (one stat of the
    destination, nothing read): a file a batch's checkpoint names ended past its
    ``next_index`` (``ended_after``) is taken as the checkpoint says, not compared with
    its source again, unless this says it was removed or resized since.

    Raises:
        PermanentError: it cannot be asked (not a file, denied; NotFoundError: none).
        RetryableError: the destination failed transiently.
    """
    return get_driver(destination.scheme).stat(destination).size == size


def _recorded_one(
    request: BatchInput,
    index: int,
    destination_root: EndpointURL,
    state: BatchCheckpoint,
    kind: str | None,
) -> bool:
    """Count file ``index`` as the previous attempt's checkpoint recorded it
    (``kind``: its ``ended_after`` entry, ``'c'`` copied or ``'s'`` up to date), when
    its destination still holds a file of its size (:func:`holds_size`); False (not
    counted: compared as before) when not recorded, gone, resized or not answering."""
    if kind not in ("c", "s"):
        return False
    f = request.files[index]
    try:
        with retry_deadline.watched():
            if not holds_size(target_url(destination_root, f.name), f.size):
                return False
    except StaccatoError:
        if retry_deadline.hung() is not None:
            raise
        return False  # compared as before, which says why
    moved()
    if kind == "c":
        state.done += 1
        state.bytes += f.size
    else:
        state.skipped += 1
    return True


def _copy_one(
    request: BatchInput,
    index: int,
    root: EndpointURL,
    destination_root: EndpointURL,
    beat: Callable[[], None],
    group: LocalGroup | None = None,
    pacer: SharedPacer | None = None,
    reads: WholeReads | None = None,
) -> _Outcome:
    """Copy file ``index`` of the batch (with ``group``, a small file to a local file
    system is only staged: :func:`staccato.activities.small_copy.stage_small`); its
    source reads paced by the batch's ``pacer`` (None: not paced); ``reads``: the
    batch's source reads sent ahead (the staged read takes its answer from there).

    Returns:
        Its outcome; a permanent error is a failure with its reason.

    Raises:
        StreamStopped: ``beat`` stopped it (its write session is removed).
        RetryableError: a transient failure (the session is kept for the retry).
    """
    with retry_deadline.watched():  # interrupted when the batch's hang watch fires
        outcome = _copy_joined(request, index, root, destination_root, beat, group, pacer, reads)
    moved()  # the file's endpoints answered
    return outcome


def _copy_joined(
    request: BatchInput,
    index: int,
    root: EndpointURL,
    destination_root: EndpointURL,
    beat: Callable[[], None],
    group: LocalGroup | None,
    pacer: SharedPacer | None,
    reads: WholeReads | None,
) -> _Outcome:
    """:func:`_copy_one`'s work."""
    name = request.files[index].name
    options: TransferOptions = request.options
    try:
        # built once per file (the steps below take them as they are)
        src_url = source_url(root, name)
        destination_url = target_url(destination_root, name)
        source = src_url.canonical
        destination = destination_url.canonical
        size = request.files[index].size
        pace = None if pacer is None else paced_by(pacer, beat)
        for attempt in range(_FILE_ATTEMPTS):
            key = f"{request.key}-{index}" + (f"-{attempt}" if attempt else "")
            try:
                if group is not None:
                    check_file_roots(source, destination)  # a link inside may lead out
                    staged = stage_small_url(
                        src_url, destination_url, options, key, size, group, pace, reads
                    )
                    if staged is not None:
                        return _Outcome(bytes=staged.size, staged=staged)
                outcome = copy_object(source, destination, options, key, beat, size, pacer)
                break
            except (ChecksumMismatchError, WriteSessionLostError):
                if attempt + 1 == _FILE_ATTEMPTS:
                    raise
    except PermanentError as err:
        hung = retry_deadline.hung()
        if hung is not None:  # what a driver made of the interrupt: not this file's fault
            raise retry_deadline.EndpointHungError(hung) from None
        return _Outcome(failure=FileFailure(name=name, reason=str(err)))
    return _Outcome(copied=outcome.copied, bytes=outcome.bytes)
