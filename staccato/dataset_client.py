"""Datasets (``cp -r``) in the Python API: submit, status, list, follow.

    async with await StaccatoClient.connect() as staccato:
        dataset = await submit_dataset(staccato, "/data/run42", "s3://bucket/run42/")
        async for status in follow_dataset(staccato, dataset): ...

A dataset is one ``DatasetWorkflow`` with id ``staccato-dataset-`` + 32 hex of SHA-256
of the canonical destination root (:func:`dataset_id`): one dataset writes under a root
at a time; an identical request attaches to the running one. Like
:class:`~staccato.client.StaccatoClient`, these talk to Temporal only. What does not
need the SDK (the request, its id, the fields a run starts with, a completed run's
status) is in :mod:`staccato.dataset_requests`, shared with the light client
(:mod:`staccato.light_client`), which starts a plain dataset the same way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, NoReturn

from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from staccato import run_fields, settings, units
from staccato.client import (
    GROUP_TYPE,
    StaccatoClient,
    cancel_requested_at,
    require_type,
    retry_is_over,
)
from staccato.dataset_ended import in_flight_at_end
from staccato.dataset_requests import (
    check_local_source,
    dataset_id,
    fan_out_dataset_id,
    make_dataset_request,
    previous_request_hashes,
    request_hash,
    request_id,
    require_options,
    start_fields,
    status_from_result,
)
from staccato.datasets.locks import ROOT_LOCK_TYPE, root_lock_id
from staccato.datasets.models import (
    DATASET_ID_PREFIX,
    MAX_FAILURES_KEPT,
    BatchCheckpoint,
    DatasetProgress,
    DatasetRequest,
    DatasetResult,
    DatasetState,
    DatasetStatus,
    DestinationStatus,
    FanOutBatchCheckpoint,
    FileCounts,
    FileFailure,
    RetryOf,
    left_out_reason,
)
from staccato.datasets.names import (
    NOT_UTF8,
    destination_url,
    exclude_option,
    names_a_directory,
    selected,
    shown_name,
    written_name_problem,
)
from staccato.errors import (
    CANNOT_HOLD_FILES,
    NOT_A_REGULAR_FILE,
    NOT_REPLACED,
    STORE_REFUSES_KEY,
    DestinationBusyError,
    InvalidURLError,
    StaccatoError,
    TransferNotFoundError,
    innermost_message,
    innermost_type,
)
from staccato.following import follow_until_ended
from staccato.ids import TRANSFER_ID_PREFIX
from staccato.leftovers import shown_left_behind
from staccato.models import (
    NO_WORKER_ANSWERS,
    GroupState,
    MiB,
    TransferOptions,
    TransferState,
    iso_utc,
)
from staccato.overlaps import overlap_busy, overlapping_writer, visibility_string
from staccato.quantities import DATASET_NAME, require_str, str_list
from staccato.run_fields import DATASET_TYPE, TRANSFER_TYPE
from staccato.settled_query import NotSettledError, settled_query
from staccato.urls import child_url, parse_url

_TERMINAL = (
    DatasetState.completed,
    DatasetState.completed_with_errors,
    DatasetState.failed,
    DatasetState.cancelled,
)
_STATUS_STATES = {
    WorkflowExecutionStatus.FAILED: DatasetState.failed,
    WorkflowExecutionStatus.TERMINATED: DatasetState.failed,
    WorkflowExecutionStatus.TIMED_OUT: DatasetState.failed,
    WorkflowExecutionStatus.CANCELED: DatasetState.cancelled,
}


#: seconds a status waits for a worker to answer a dataset's progress query
PROGRESS_QUERY_S = 5.0
#: seconds :func:`follow_dataset` waits for it: a frozen worker (SIGSTOP) holds the
#: query to its timeout, and ``cp -r`` prints a line every 2 s (README); it waited
#: 5 s a status and, while no worker answered, printed nothing (tester: 70 s silent)
FOLLOW_QUERY_S = 1.5
#: a dataset's file rate (files/s) below which no ETA is told: less than a file an
#: hour is nothing to speak of moving (``units.eta``)
FILES_MIN_RATE = 1 / 3600
#: seconds without a byte moving in any batch in flight after which a running
#: dataset's status shows no rate (``idle_since`` instead): its rates are averages
#: since the start, and a tester saw "file rate 10.3 files/s" a minute into a hung
#: S3 server's silence
STILL_S = 5.0
#: seconds: a batch in flight that sent no heartbeat for this long (a live one sends
#: one every second or so, also while it waits on a server: the worker's heartbeat
#: throttle, ``HEARTBEAT_THROTTLE_S``) has lost its process (killed, frozen): ``status``
#: says so rather than blaming the endpoints, until Temporal times it out. As
#: :data:`STILL_S`: a batch started that never heartbeated is idle from its start, and
#: is said silent as soon as it is said idle
NO_HEARTBEAT_S = STILL_S
#: times, at most, a status reads what is in flight and asks the counts again when a
#: batch or large file ended in between (:func:`_same_counts`)
_READS_IN_FLIGHT = 3
#: seconds a progress query waits before the large files' transfers in flight are
#: asked meanwhile (a worker that answers does so well within this): with none
#: answering, their own queries wait at the same time as the dataset's, not after it
#: (tester69 MED 3: a dataset row of a frozen worker's ``list`` waited one deadline,
#: then another for its children)
_CHILDREN_EARLY_S = 1.0


async def failed_pairs(
    client: StaccatoClient,
    source: str,
    destinations: Sequence[str],
    exclude: str | Sequence[str] = (),
) -> tuple[list[str], list[list[str]]]:
    """The (name, destination roots) that failed in the last dataset from ``source``
    to these roots: the names, and per name the roots it failed at. ``exclude``: the
    request's, which may leave out a root inside the source (:func:`excluded_below`).

    Raises:
        TransferNotFoundError, StaccatoError: as :func:`failed_names`.
        TypeError: ``destinations`` or ``exclude`` holds something other than str.
    """
    probe = make_dataset_request(
        source, str_list(destinations, "destinations"), exclude=str_list(exclude, "exclude")
    )
    return _pairs((await _fan_out_failures(client, probe))[0])


def _pairs(failures: list[FileFailure]) -> tuple[list[str], list[list[str]]]:
    """The names of ``failures`` (in order, each once) and per name the roots it
    failed at (:func:`failed_pairs`)."""
    by_name: dict[str, list[str]] = {}
    for failure in failures:
        by_name.setdefault(failure.name, [])
        if failure.destination and failure.destination not in by_name[failure.name]:
            by_name[failure.name].append(failure.destination)
    return list(by_name), list(by_name.values())


async def _fan_out_failures(
    client: StaccatoClient, probe: DatasetRequest
) -> tuple[list[FileFailure], RetryOf]:
    """The failures (name, root, reason) of the last dataset from ``probe``'s source to
    its roots that ``--retry-failed`` copies again (:func:`_to_retry`), and that run
    as the retry names it (:func:`retry_of`).

    Raises:
        TransferNotFoundError, StaccatoError: as :func:`failed_names`.
    """
    assert probe.destination_roots is not None
    status, run_id = await _earlier_dataset(
        client,
        fan_out_dataset_id(probe.source_root, probe.destination_roots),
        probe.source_root,
        probe.destination_roots,
    )
    return _to_retry(status), retry_of(status, run_id)


def retry_of(earlier: DatasetStatus, run_id: str | None) -> RetryOf:
    """The run ``earlier`` (Temporal run ``run_id``, None when not known) as the
    ``--retry-failed`` run of it names it in its status (``retry_of``): how it ended,
    and the whole dataset's files then (a run that was itself a retry: its
    ``whole_dataset``, so a retry of a retry still counts every file)."""
    whole = earlier.whole_dataset or FileCounts(
        files_total=earlier.files_total,
        files_done=earlier.files_done,
        files_skipped=earlier.files_skipped,
        files_failed=earlier.files_failed,
    )
    return RetryOf(
        run_id=run_id, state=earlier.state.value, ended_at=earlier.ended_at, **whole.model_dump()
    )


#: memo key of a ``--retry-failed`` run: the run it retried (:class:`RetryOf`), written
#: by the client that starts it (no workflow change: a memo given at the start)
RETRY_OF_MEMO = "retry_of"


def _with_retry_of(status: DatasetStatus, memo: dict[str, Any]) -> DatasetStatus:
    """``status`` of a ``--retry-failed`` run (its memo names the run it retried:
    :data:`RETRY_OF_MEMO`) with ``retry_of`` and ``whole_dataset``: the earlier run's
    files with this retry's counts added (copied and up to date), failed the earlier
    failures not fixed (yet); ``status`` unchanged for any other run (or a memo it
    cannot read: an older or foreign writer's)."""
    raw = memo.get(RETRY_OF_MEMO)
    if not isinstance(raw, dict):
        return status
    try:
        earlier = RetryOf.model_validate(raw)
    except ValueError:
        return status
    if status.counts_unknown and not status.counts_last_known_at:
        return status.model_copy(update={"retry_of": earlier})  # no counts to add
    done = earlier.files_done + status.files_done
    skipped = earlier.files_skipped + status.files_skipped
    whole = FileCounts(
        files_total=earlier.files_total,
        files_done=done,
        files_skipped=skipped,
        files_failed=max(0, earlier.files_total - done - skipped),
    )
    return status.model_copy(update={"retry_of": earlier, "whole_dataset": whole})


class NothingToRetryError(TransferNotFoundError):
    """``--retry-failed`` found no earlier dataset from that source to that destination
    (or those roots): a usage error for the CLI (exit 2)."""


class NotADatasetError(TransferNotFoundError):
    """The id given to a dataset call names a single transfer or a fan-out group, not a
    dataset (the reverse of :class:`staccato.client.NotATransferError`); the message
    names the call that applies to it. A :class:`TransferNotFoundError` (no dataset
    has this id), which such a call raised before."""


#: the transfer's (or group's) call, and command, instead of a dataset call
_TRANSFER_INSTEAD = {
    TRANSFER_TYPE: ("a single transfer", "StaccatoClient.status(ID)"),
    GROUP_TYPE: ("a fan-out group", "StaccatoClient.group_status(ID)"),
}


async def _not_a_dataset(
    client: StaccatoClient, dataset: str, *, call: str
) -> NotADatasetError | None:
    """The refusal of a dataset call (``call``) given a transfer's or group's id (it
    was hashed as a destination root: "no dataset 'staccato-784c...' (...workflow not
    found for ID: staccato-dataset-e75b...)"); None when ``dataset`` names no such run."""
    if dataset.startswith(DATASET_ID_PREFIX) or not dataset.startswith(TRANSFER_ID_PREFIX):
        return None
    try:
        description = await client.temporal.get_workflow_handle(dataset).describe(
            rpc_timeout=timedelta(seconds=settings.current().client_wait_s)
        )
    except RPCError:
        return None
    what, instead = _TRANSFER_INSTEAD.get(description.workflow_type, (None, None))
    if what is None or instead is None:
        return None
    return NotADatasetError(
        f"{dataset} is {what}, not a dataset: {call}() applies to datasets; call "
        f"{instead.replace('ID', repr(dataset))} instead (on the command line: `staccato "
        f"status {dataset}`)"
    )


class CannotRetryError(StaccatoError):
    """``--retry-failed`` names a dataset it cannot re-run the failed files of (it did
    not end ``completed_with_errors``, or it failed more files than it kept): a usage
    error for the CLI (exit 2), as :class:`NothingToRetryError`."""


def _resume_advice(state: DatasetState) -> str:
    """What to run instead of ``--retry-failed`` for a dataset that ended ``state`` with
    files it never tried (cancelled, failed): the same command with a sync level, which
    copies what is missing or differs and counts the files already there up to date
    (README.md, "Sync levels"); "" for any other state."""
    if state not in (DatasetState.cancelled, DatasetState.failed):
        return ""
    return (
        f"; to copy what a {state.value} dataset left, run the same command with "
        "--sync-level size instead of --retry-failed (it skips the files already there)"
    )


def _all_filtered_out(failed: int, include: Sequence[str], exclude: Sequence[str]) -> NoReturn:
    """Refuse a ``--retry-failed`` whose ``--include``/``--exclude`` leave out every one
    of the ``failed`` files it would copy again.

    Raises:
        CannotRetryError: always.
    """
    raise CannotRetryError(
        f"nothing to retry: --include/--exclude ({', '.join([*include, *exclude])}) leave "
        f"out all {failed} failed file(s); give the retry no filters, or ones that select them"
    )


async def _earlier_dataset(
    client: StaccatoClient, dataset: str, source_root: str | None, roots: list[str]
) -> tuple[DatasetStatus, str | None]:
    """The dataset ``dataset`` from ``source_root`` to ``roots`` (one: a dataset to that
    root alone) for ``--retry-failed``, checked: it ended with errors and kept every
    failure; with its Temporal run id (None when it could not be read).

    Raises:
        NothingToRetryError: no such dataset (none, or the last one under that id was
            from another source or to other roots).
        CannotRetryError: it did not end with errors, or it failed more (files or pairs)
            than it kept (then re-run with ``--sync-level``, which copies only what
            differs).
    """
    nothing = NothingToRetryError(
        f"nothing to retry: no earlier dataset from {source_root or 'its source'} to "
        f"{' '.join(roots)}"
    )
    try:
        status = await dataset_status(client, dataset)
    except TransferNotFoundError:
        raise nothing from None
    run_id: str | None = None
    try:  # the run just read (it ended: the latest under the id until the retry starts)
        run_id = (await _handle(client, dataset).describe()).run_id
    except RPCError:
        pass
    several = status.destination_roots is not None
    if several != (len(roots) > 1):
        raise nothing  # a lock's holder (several roots)
    if source_root not in (None, status.source):
        # the latest dataset to this root came from another source: the run before it
        # from this one, if Temporal still keeps it
        earlier = None if several else await _last_run_from(client, dataset, source_root)
        if earlier is None:
            raise nothing
        status, run_id = earlier
    if status.state != DatasetState.completed_with_errors:
        raise CannotRetryError(
            f"dataset {status.id} is {status.state.value}: --retry-failed re-runs the "
            f"files of a dataset that ended completed_with_errors{_resume_advice(status.state)}"
        )
    cut = _cut_advice(status)
    if cut is not None:
        raise CannotRetryError(f"dataset {status.id} {cut}")
    return status, run_id


#: runs from one source a ``--retry-failed`` looks through for the newest ended one
_RUNS_LOOKED_AT = 20


async def _last_run_from(
    client: StaccatoClient, dataset: str, source_root: str
) -> tuple[DatasetStatus, str] | None:
    """The status and run id of the newest ended run under the dataset id ``dataset``
    whose source was ``source_root`` (one visibility query on the id and ``StaccatoSource``; a run
    continued as new is left out: its last run holds the result); None when Temporal
    keeps none (its retention) or that run did not complete (then there is nothing to
    retry of it). Datasets to one root share its id whatever their source, so another
    source copied into the root since hides the run ``--retry-failed`` is about.

    Raises:
        RPCError: the query failed.
    """
    query = (
        f"WorkflowId = {visibility_string(dataset)} AND "
        f"{run_fields.SOURCE} = {visibility_string(run_fields.keyword(source_root))} AND "
        "ExecutionStatus != 'Running' AND ExecutionStatus != 'ContinuedAsNew'"
    )
    async for execution in client.temporal.list_workflows(query, limit=_RUNS_LOOKED_AT):
        if (await execution.memo()).get("source", source_root) != source_root:
            continue  # a source cut to fit the search attribute: the memo has it whole
        if execution.status != WorkflowExecutionStatus.COMPLETED:
            return None
        handle = client.temporal.get_workflow_handle(
            dataset, run_id=execution.run_id, result_type=DatasetResult
        )
        earlier = status_from_result(dataset, await handle.result())
        earlier = earlier.model_copy(update={"ended_at": iso_utc(execution.close_time)})
        return _with_retry_of(earlier, dict(await execution.memo())), execution.run_id
    return None


def _failed_count(status: DatasetStatus) -> int:
    """What the dataset ``status`` failed: files (one root), or (file, destination)
    pairs (several roots: one failure kept per pair)."""
    if status.destinations is None:
        return status.files_failed
    return sum(d.files_failed for d in status.destinations)


def _cut_advice(status: DatasetStatus) -> str | None:
    """``failed 1200 files, more than the 1000 whose names it keeps (...): re-run it
    with --sync-level size ...`` (it said "and kept 1000", which tester64 could not
    read as failure records): the
    dataset ``status`` failed more than it kept (:data:`MAX_FAILURES_KEPT`), so
    ``--retry-failed`` (which copies the names kept) is refused and a run with
    ``--sync-level size`` is what copies the rest; None when it kept every failure.
    The one rule for the refusal and the advice (:func:`retry_advice`)."""
    failed = _failed_count(status)
    if failed <= len(status.failures):
        return None
    what = "(file, destination) pairs" if status.destinations is not None else "files"
    return (
        f"failed {failed} {what}, more than the {len(status.failures)} whose names it "
        "keeps (status --failures lists those): re-run it with --sync-level size (or "
        "checksum) to copy only what differs"
    )


def gone_names(status: DatasetStatus) -> list[str]:
    """The files of the ended dataset ``status`` that failed only because they were
    no longer at the source when ``--retry-failed`` looked for them
    (:attr:`FileFailure.gone`; with several roots: at every root it failed at), in
    failure order: nothing is left to copy of them, so a retry leaves them out."""
    gone: dict[str, bool] = {}
    for failure in status.failures:
        gone[failure.name] = gone.get(failure.name, True) and failure.gone
    return [name for name, only_gone in gone.items() if only_gone]


def directory_names(status: DatasetStatus) -> list[str]:
    """The names of the dataset ``status``'s failures that are directories (a name
    ending in ``/``: one that could not be listed, a link loop), in failure order:
    ``--retry-failed`` copies failed files again and lists no directory, so it cannot
    copy what is under them; a run without it can."""
    return list(dict.fromkeys(f.name for f in status.failures if _a_directory(status, f.name)))


def _a_directory(status: DatasetStatus, name: str) -> bool:
    """Whether the failed ``name`` of the dataset ``status`` is a directory of its
    source (:func:`~staccato.datasets.names.names_a_directory`: an S3 key ending in
    ``/`` is a file)."""
    try:
        return names_a_directory(parse_url(status.source), name)
    except InvalidURLError:
        return name.endswith("/")


def only_gone_failed(status: DatasetStatus) -> bool:
    """Every file the ended dataset ``status`` failed is no longer at the source (and
    it kept every failure): ``--retry-failed`` has nothing left to copy."""
    return _only(status, set(gone_names(status)))


def _only(status: DatasetStatus, names: set[str]) -> bool:
    """The ended dataset ``status`` failed something, kept every failure, and every
    name it failed is in ``names``."""
    failed = (
        status.files_failed
        if status.destinations is None
        else sum(d.files_failed for d in status.destinations)
    )
    return (
        failed > 0 and failed <= len(status.failures) and {f.name for f in status.failures} <= names
    )


def nothing_to_retry(status: DatasetStatus) -> bool:
    """``--retry-failed`` after the ended dataset ``status`` cannot copy anything: every
    name it failed is no longer at the source (:func:`gone_names`) or a directory
    (:func:`directory_names`), and it kept every failure."""
    return _only(status, {*gone_names(status), *directory_names(status)})


def _unretriable_text(status: DatasetStatus) -> str:
    """Why ``--retry-failed`` cannot copy anything after ``status``
    (:func:`nothing_to_retry`), and what to do instead."""
    gone, directories = gone_names(status), directory_names(status)
    reasons = []
    if gone:
        reasons.append(
            f"{_gone_text(status.id, gone)} no longer at the source (nothing is left to copy)"
        )
    if directories:
        shown = _some(directories)
        one = len(directories) == 1
        reasons.append(
            f"{'the directory' if one else f'the {len(directories)} directories'} it failed "
            f"({shown}) failed when the dataset listed {'it' if one else 'them'}, and "
            "--retry-failed copies failed files again: it lists no directory"
        )
    return (
        "; ".join(reasons)
        + "; to copy the source as it is now, run it again without --retry-failed "
        "(--sync-level size skips what is there)"
    )


def _to_retry(status: DatasetStatus) -> list[FileFailure]:
    """The failures of the dataset ``status`` (checked by :func:`_earlier_dataset`)
    that ``--retry-failed`` copies again: all but those of files no longer at the
    source (:func:`gone_names`). A failed directory is kept (the retry fails it again
    with its reason, so it stays on record) unless nothing else is left.

    Raises:
        CannotRetryError: every name it failed is no longer at the source or is a
            directory (:func:`nothing_to_retry`).
    """
    if nothing_to_retry(status):
        raise CannotRetryError(f"nothing to retry: {_unretriable_text(status)}")
    gone = set(gone_names(status))
    return [f for f in status.failures if f.name not in gone]


def _some(names: list[str]) -> str:
    """``'a', 'b', ...``: the first 5 of ``names``, quoted, and ``...`` when there are
    more; each as every output shows a name (:func:`shown_name`: ``bad\xffname``, not
    ``repr``'s doubled backslash)."""
    shown = ", ".join(f"'{shown_name(name)}'" for name in names[:5])
    return shown + (", ..." if len(names) > 5 else "")


def _gone_text(dataset: str, names: list[str]) -> str:
    """``the 2 files dataset ID failed ('a', 'b') are``: the files no longer at the
    source (``names``, a few of them shown)."""
    shown = _some(names)
    if len(names) == 1:
        return f"the file dataset {dataset} failed ({shown}) is"
    return f"the {len(names)} files dataset {dataset} failed ({shown}) are"


def never_copied(status: DatasetStatus, failure: FileFailure) -> bool:
    """Whether the failure ``failure`` of the dataset ``status`` can never succeed by
    copying the file again: its name is not valid UTF-8 (the listing's reason), the
    destination root it failed at is on a file system that holds no file (/proc:
    :func:`~staccato.errors.no_capacity_message`), that root cannot hold the name
    (:func:`~staccato.datasets.names.name_problem`: the one rule of the copy), or
    the store refused the key for good (:data:`~staccato.errors.STORE_REFUSES_KEY`:
    a tester's advice said to copy it again next to "trying again cannot help"). A
    directory that failed (a name ending in ``/`` from a source with directories,
    :func:`directory_names`) is not: a run without ``--retry-failed`` lists it again.
    An S3 key ending in ``/`` is a file: never copied where no file can have its name
    (:func:`~staccato.datasets.names.written_name_problem`)."""
    if _a_directory(status, failure.name):
        return False
    if failure.reason.startswith(NOT_UTF8) or CANNOT_HOLD_FILES in failure.reason:
        return True
    if STORE_REFUSES_KEY in failure.reason:
        return True
    try:
        root = parse_url(failure.destination or status.destination)
    except InvalidURLError:
        return False
    return written_name_problem(root, failure.name) is not None


def _exclude_them(names: list[str]) -> str:
    """The option that leaves ``names`` out of the next run: ``--exclude GLOB`` for one
    (:func:`~staccato.datasets.names.exclude_option`), ``--exclude them`` for more."""
    return exclude_option(names[0]) if len(names) == 1 else "--exclude them"


def retry_advice(status: DatasetStatus) -> str | None:
    """What to do about the failures of a dataset that ended ``completed_with_errors``
    (``cp -r``'s last line): copy them again with ``--retry-failed``, which leaves out
    the files no longer at the source; when it cannot copy anything (every name that
    failed is no longer there or is a directory, :func:`nothing_to_retry`) a retry is
    refused, so this says to run without it. The same words as that refusal. None
    when every failure can never succeed by copying it again (:func:`never_copied`:
    it kept every failure): no advice to copy them again; when only some are such, the
    advice names them. When it failed more than it
    kept (:func:`_cut_advice`), ``--retry-failed`` is refused: re-run with
    ``--sync-level size``, the refusal's words. A file blocked by something at the
    destination that is not replaced (:data:`~staccato.errors.NOT_REPLACED`: a
    directory at its name, e.g. made for ``g1.bin/x`` of an S3 source that also holds
    ``g1.bin``) is named: a retry fails it the same way until that is removed, and
    when every failure is such, the advice starts with removing it."""
    cut = _cut_advice(status)
    if cut is not None:
        return cut
    never = [f.name for f in status.failures if never_copied(status, f)]
    # a FIFO, socket or device at the source: no run copies it as it is (tester63:
    # advised to copy again when every failure was one)
    special = [f.name for f in status.failures if f.reason == NOT_A_REGULAR_FILE]
    if _only(status, set(never) | set(special)):
        return None
    if nothing_to_retry(status):
        return f"--retry-failed cannot help: {_unretriable_text(status)}"
    gone, directories = gone_names(status), directory_names(status)
    left_out = []
    if gone:
        left_out.append(f"it leaves out the {len(gone)} no longer at the source")
    if directories:
        shown = _some(directories)
        one = len(directories) == 1
        left_out.append(
            f"it lists no directory: the {'directory' if one else 'directories'} that failed "
            f"({shown}) {'needs' if one else 'need'} a run without --retry-failed"
        )
    if never:
        one = len(never) == 1
        it, names = (
            ("it", f"the name {_some(never)} is one")
            if one
            else ("them", f"{len(never)} names ({_some(never)}) are ones")
        )
        left_out.append(
            f"{names} the destination cannot hold: no run copies {it}; rename {it} at "
            f"the source or {_exclude_them(never)}"
        )
    if special:
        one = len(special) == 1
        it = "it" if one else "them"
        left_out.append(
            f"{_some(special)} {'is not a regular file' if one else 'are not regular files'} "
            f"(a FIFO, socket or device): no run copies {it}, so copying {it} again cannot "
            f"help; {_exclude_them(special)}"
        )
    # a directory at a file's name, or a file at a directory's (an S3 source with both
    # g1.bin and g1.bin/x, tester73): a retry fails it the same way until the user
    # removes what is in the way (or leaves the file out)
    in_the_way = [
        f.name
        for f in status.failures
        if NOT_REPLACED in f.reason and f.name not in never and f.name not in special
    ]
    if in_the_way:
        one = len(in_the_way) == 1
        left_out.append(
            f"{_some(in_the_way)} {'is' if one else 'are'} blocked by a directory or file "
            f"at the destination that is not replaced: a retry fails {'it' if one else 'them'} "
            f"the same way until that is removed; or {_exclude_them(in_the_way)}"
        )
    lead = "copy the failed files again with --retry-failed"
    if in_the_way and _only(status, set(in_the_way) | set(never) | set(special)):
        lead = "remove what is in the way at the destination, then " + lead
    if left_out:
        return f"{lead} ({'; '.join(left_out)})"
    return lead


async def failed_names(
    client: StaccatoClient, destination: str, source_root: str | None = None
) -> list[str]:
    """The relative names that failed in the last dataset to ``destination`` (from
    ``source_root``, a canonical root, when given), but those no longer at the source
    (:func:`gone_names`: nothing is left to copy of them).

    Raises:
        NothingToRetryError: no dataset from that source to that destination alone.
        StaccatoError: it did not end with errors, or it failed more files than it kept
            (then re-run with ``--sync-level``, which copies only what differs).
        CannotRetryError: every file it failed is no longer at the source.
    """
    return [f.name for f in (await _single_failures(client, destination, source_root))[0]]


async def _single_failures(
    client: StaccatoClient, destination: str, source_root: str | None
) -> tuple[list[FileFailure], RetryOf]:
    """The failures of the last dataset to ``destination`` that ``--retry-failed``
    copies again (:func:`failed_names`, with their reasons), and that run as the retry
    names it (:func:`retry_of`).

    Raises:
        as :func:`failed_names`.
    """
    status, run_id = await _earlier_dataset(
        client, dataset_id(destination), source_root, [destination]
    )
    return _to_retry(status), retry_of(status, run_id)


def _left_out(failures: list[FileFailure], chosen: set[str]) -> list[FileFailure] | None:
    """The ``failures`` whose names a filtered retry did not choose (``chosen``), each
    with :func:`~staccato.datasets.models.left_out_reason`: carried into the retry's
    failures unchanged (``DatasetRequest.retry_left``); None when it chose them all."""
    left = [
        f.model_copy(update={"reason": left_out_reason(f.reason)})
        for f in failures
        if f.name not in chosen
    ]
    return left or None


class DatasetStart(NamedTuple):
    """What :func:`start_dataset` did: the dataset ``id``; ``attached`` to the same
    request running; ``ignored``: this request's options that say how to run (not in
    the request hash: ``--max-rate``, ``--priority``...) that differ from the running
    dataset's and so do not apply to it (one text each, requested vs running)."""

    id: str
    attached: bool
    ignored: tuple[str, ...] = ()


async def submit_dataset(
    client: StaccatoClient,
    source: str,
    destination: str | Sequence[str],
    options: TransferOptions | None = None,
    *,
    include: str | Sequence[str] = (),
    exclude: str | Sequence[str] = (),
    small_file_max: int = 64 * MiB,
    retry_failed: bool = False,
    **tuning: Any,
) -> str:
    """Start copying the directory or prefix ``source`` to ``destination``; returns the
    dataset id (:func:`start_dataset`, which also tells whether it attached).

    ``include`` and ``exclude``: glob patterns (``--include``, ``--exclude``), a list
    of them or a single one (``include="*.bin"`` is one pattern).

    Raises:
        see :func:`start_dataset` (ValueError: ``destination`` is an empty list;
        TypeError: a pattern or destination that is not a str).
    """
    started = await start_dataset(
        client,
        source,
        destination,
        options,
        include=include,
        exclude=exclude,
        small_file_max=small_file_max,
        retry_failed=retry_failed,
        **tuning,
    )
    return started.id


async def start_dataset(
    client: StaccatoClient,
    source: str,
    destination: str | Sequence[str],
    options: TransferOptions | None = None,
    *,
    include: str | Sequence[str] = (),
    exclude: str | Sequence[str] = (),
    small_file_max: int = 64 * MiB,
    retry_failed: bool = False,
    **tuning: Any,
) -> DatasetStart:
    """Start copying the directory or prefix ``source`` to ``destination``, or attach
    to the same request running (which may differ in the options that say how to run:
    named in ``ignored``). With ``retry_failed`` only the previous dataset's failed
    files are copied. ``include`` and ``exclude``: glob patterns, a list of them or a
    single str (one pattern, :func:`staccato.quantities.str_list`).

    Raises:
        TypeError: ``include``, ``exclude`` or a list ``destination`` holds something
            other than str, or ``options`` is neither a TransferOptions nor None (the
            message names the parameter).
        InvalidURLError: see :func:`make_dataset_request`.
        SourceRootNotFoundError: a local ``source`` directory that does not exist;
            SourceRootNotADirectoryError: a local ``source`` that is a file (the
            checks ``cp -r`` runs, before anything starts:
            :func:`staccato.dataset_requests.check_local_source`).
        DestinationBusyError: another dataset writes under that destination.
        StaccatoError: ``retry_failed`` and nothing to retry (see :func:`failed_names`).
        ValueError: ``destination`` is an empty list.
    """
    include, exclude = str_list(include, "include"), str_list(exclude, "exclude")
    options = require_options(options)
    if not isinstance(destination, str):
        destination = str_list(destination, "destination")
    if not isinstance(destination, str) and len(destination) == 0:
        raise ValueError(
            "destination is an empty list: give one destination root (a str) or a "
            "list of at least one"
        )
    make_dataset_request(source, destination, options, include=include, exclude=exclude)
    check_local_source(source)  # after the URLs' own checks, as cp -r orders them
    if not isinstance(destination, str) and len(destination) > 1:
        return await _submit_fan_out(
            client,
            source,
            list(destination),
            options,
            include=include,
            exclude=exclude,
            small_file_max=small_file_max,
            retry_failed=retry_failed,
            **tuning,
        )
    if not isinstance(destination, str):
        destination = destination[0]
    names = left = None
    earlier: RetryOf | None = None
    if retry_failed:
        probe = make_dataset_request(source, destination, options, exclude=exclude)
        failures, earlier = await _single_failures(
            client, probe.destination_root, probe.source_root
        )
        every = [f.name for f in failures]
        names = [n for n in every if selected(n, include, exclude)] or _all_filtered_out(
            len(every), include, exclude
        )
        left = _left_out(failures, set(names))  # failures it leaves out stay failed
    request = make_dataset_request(
        source,
        destination,
        options,
        include=include,
        exclude=exclude,
        small_file_max=small_file_max,
        retry_failed=names,
        **tuning,
    )
    if left is not None:
        request = request.model_copy(update={"retry_left": left})
    if retry_failed and names:
        sweep = _to_sweep(request.destination_root, failures, set(names))
        if sweep:
            request = request.model_copy(update={"sweep": sweep})
    elif not retry_failed:
        sweep = await _left_by_last_run(client, request.destination_root)
        if sweep:
            request = request.model_copy(update={"sweep": sweep})
    return await _start(client, request, earlier)


async def _left_by_last_run(client: StaccatoClient, root: str) -> list[str] | None:
    """The canonical destination URLs of the files whose write sessions the last
    dataset to ``root`` (ended: completed with errors, failed, cancelled) said it left
    behind (``left_behind``: its clean-up met a destination that did not answer): a
    plain run of the dataset removes them first too (``DatasetRequest.sweep``), as a
    ``--retry-failed`` does (a cancelled dataset cannot be retried: its temp files,
    journals and writers directories stayed for good, tester62). None when there is
    none, no such dataset, or it is running (best effort: a status that cannot be read
    sweeps nothing)."""
    try:
        description = await _handle(client, root).describe()
        if description.status == WorkflowExecutionStatus.RUNNING:
            return None
        status = await dataset_status(client, root, query_timeout_s=1.0)
    except (StaccatoError, RPCError):
        return None
    if status.state not in _TERMINAL or status.destination_roots is not None:
        return None
    return _to_sweep(root, status.failures, {f.name for f in status.failures})


def _to_sweep(root: str, failures: list[FileFailure], chosen: set[str]) -> list[str] | None:
    """The canonical destination URLs of the ``failures`` a retry copies again
    (``chosen``) that left a write session behind (``left_behind``: its clean-up met a
    destination that did not answer): the retry's first run removes what is left of
    them before copying (``DatasetRequest.sweep``); None when there is none."""
    urls: list[str] = []
    for failure in failures:
        if failure.left_behind and failure.name in chosen:
            try:
                urls.append(destination_url(parse_url(root), failure.name).canonical)
            except StaccatoError:
                continue  # a name the destination cannot hold: never written
    return urls or None


#: seconds a submission waits for a root lock whose dataset has ended (Temporal
#: terminates the lock when its parent closes, a moment later)
STALE_LOCK_WAIT_S = 10.0


async def _root_holder(client: StaccatoClient, lock_id: str) -> tuple[str, str] | None:
    """Who writes the root whose lock (= single-root dataset) id is ``lock_id``: the
    (dataset id, its source root) of a running dataset to that root alone or of the
    dataset to several roots holding its lock; None when nothing holds it. A lock
    whose dataset has ended is waited for (at most :data:`STALE_LOCK_WAIT_S`)."""
    handle = client.temporal.get_workflow_handle(lock_id)
    deadline = asyncio.get_running_loop().time() + STALE_LOCK_WAIT_S
    while True:
        try:
            description = await handle.describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return None
            raise
        if description.status != WorkflowExecutionStatus.RUNNING:
            return None
        memo = dict(await description.memo())
        if description.workflow_type != ROOT_LOCK_TYPE:
            return lock_id, str(memo.get("source", "?"))
        holder = str(memo.get("holder", "?"))
        try:
            owner = await client.temporal.get_workflow_handle(holder).describe()
            running = owner.status in (
                WorkflowExecutionStatus.RUNNING,
                WorkflowExecutionStatus.CONTINUED_AS_NEW,
            )
            source = str(dict(await owner.memo()).get("source", "?"))
        except RPCError:
            running, source = False, "?"
        if running or asyncio.get_running_loop().time() >= deadline:
            return holder, source
        await asyncio.sleep(0.2)


def _busy(root: str, holder: str, source: str) -> DestinationBusyError:
    """The refusal of a dataset whose root ``root`` another dataset writes."""
    return DestinationBusyError(
        f"destination busy: {root} is being written by dataset {holder} (from {source}); "
        f"wait for it to finish or cancel it with `staccato cancel {holder}`"
    )


async def _submit_fan_out(
    client: StaccatoClient,
    source: str,
    destinations: list[str],
    options: TransferOptions | None,
    *,
    include: Sequence[str],
    exclude: Sequence[str],
    small_file_max: int,
    retry_failed: bool,
    **tuning: Any,
) -> DatasetStart:
    """:func:`start_dataset` with several destination roots (one dataset id for the
    source and the set of roots; an identical request attaches)."""
    names: list[str] | None = None
    left: list[FileFailure] | None = None
    earlier: RetryOf | None = None
    if retry_failed:
        probe = make_dataset_request(
            source, str_list(destinations, "destinations"), exclude=str_list(exclude, "exclude")
        )
        failures, earlier = await _fan_out_failures(client, probe)
        names, failed_at = _pairs(failures)
        kept = [i for i, name in enumerate(names) if selected(name, include, exclude)]
        if not kept:
            _all_filtered_out(len(names), include, exclude)
        names, failed_at = [names[i] for i in kept], [failed_at[i] for i in kept]
        left = _left_out(failures, set(names))  # pairs it leaves out stay failed
    request = make_dataset_request(
        source,
        destinations,
        options,
        include=include,
        exclude=exclude,
        small_file_max=small_file_max,
        retry_failed=names,
        **tuning,
    )
    roots = request.destination_roots
    assert roots is not None
    if names is not None:
        request = request.model_copy(
            update={
                "retry_targets": [[roots.index(r) for r in at if r in roots] for at in failed_at],
                "retry_left": left,
            }
        )
    return await _start(client, request, earlier)


async def _start(
    client: StaccatoClient, request: DatasetRequest, earlier: RetryOf | None = None
) -> DatasetStart:
    """Start the ``DatasetWorkflow`` of ``request`` under :func:`request_id`; an
    identical request running attaches (its id is returned). ``earlier``: a
    ``--retry-failed``'s run retried, kept in the memo (:data:`RETRY_OF_MEMO`) for its
    status (``retry_of``, ``whole_dataset``).

    Raises:
        DestinationBusyError: another dataset writes one of its roots (named, with the
            dataset and its source), or one with other options runs under its id, or
            a running dataset or transfer writes inside a root or encloses it (a
            client-side check: :mod:`staccato.overlaps`).
    """
    roots = request.destination_roots
    workflow_id = request_id(request)
    digest = request_hash(request)
    for root in roots or [request.destination_root]:  # another dataset holds a root
        holder = await _root_holder(client, root_lock_id(root))
        if holder is not None and holder[0] != workflow_id:
            raise _busy(root, *holder)
    # a dataset or transfer writing inside a root or enclosing it (one query)
    nested = await overlapping_writer(
        client.temporal, roots or [request.destination_root], own=workflow_id, below=True
    )
    if nested is not None:
        raise overlap_busy(nested, kind="dataset")
    fields = start_fields(request)  # the light client starts with the same
    memo = fields.memo
    if earlier is not None:
        memo = {**memo, RETRY_OF_MEMO: earlier.model_dump(mode="json")}
    try:
        await client.temporal.start_workflow(
            DATASET_TYPE,
            request,
            id=workflow_id,
            task_queue=client.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            memo=memo,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(SearchAttributeKey.for_keyword(name), value)
                    for name, value in fields.search_attributes.items()
                ]
            ),
            static_summary=fields.summary,
        )
    except WorkflowAlreadyStartedError:
        description = await client.temporal.get_workflow_handle(workflow_id).describe()
        running = dict(await description.memo())
        if running.get("request_hash") in (digest, *previous_request_hashes(request)):
            # the same request but, maybe, the options that say how to run (the running
            # dataset's apply): named, as a single transfer's
            ignored = await _differences(client, workflow_id, request)
            return DatasetStart(workflow_id, True, tuple(ignored))
        if running.get("source") == request.source_root:
            # the same source and roots: say which options differ, requested vs running
            differ = await _differences(client, workflow_id, request, conflicts=True)
            if differ:
                raise DestinationBusyError(
                    f"destination busy: dataset {workflow_id} from the same source to "
                    f"{'these destinations' if roots else request.destination_root} runs "
                    f"with other options ({'; '.join(differ)}): yours would not apply to "
                    f"it; wait for it to finish or cancel it with `staccato cancel "
                    f"{workflow_id}`"
                ) from None
        if description.workflow_type == ROOT_LOCK_TYPE:  # locked since the check above
            raise _busy(request.destination_root, str(running.get("holder", "?")), "?") from None
        if roots is None:
            raise _busy(
                request.destination_root, workflow_id, str(running.get("source", "?"))
            ) from None
        raise DestinationBusyError(
            f"destination busy: dataset {workflow_id} from {request.source_root} to these "
            f"destinations runs with other options; wait for it to finish or cancel it "
            f"with `staccato cancel {workflow_id}`"
        ) from None
    return DatasetStart(workflow_id, False)


async def _differences(
    client: StaccatoClient, workflow_id: str, request: DatasetRequest, *, conflicts: bool = False
) -> list[str]:
    """What differs between ``request`` and the running dataset ``workflow_id``'s, as
    the command line names it (``--include ['*.txt'] requested, [] running``); [] when
    its request cannot be read. ``conflicts``: only what makes it another request (a
    refusal's list: see :func:`~staccato.starts.option_differences`)."""
    from staccato.starts import option_differences, running_input

    running = await running_input(client.temporal, workflow_id, None, DatasetRequest)
    if running is None:
        return []
    found = option_differences(request.options, running.options, conflicts=conflicts)
    for field, name in (
        ("include", "--include"),
        ("exclude", "--exclude"),
        ("small_file_max", "--small-file-max"),
        ("retry_failed", "--retry-failed"),
    ):
        mine, theirs = getattr(request, field), getattr(running, field)
        if field == "retry_failed":
            mine, theirs = mine is not None, theirs is not None
        if mine != theirs:
            found.append(f"{name} {_shown(mine)} requested, {_shown(theirs)} running")
    return found


def _shown(value: Any) -> str:
    """A dataset option's value as the command line reads it (a size in units)."""
    if isinstance(value, list):
        return " ".join(value) or "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return units.size(value) if isinstance(value, int) else str(value)


def _handle(client: StaccatoClient, dataset: str) -> WorkflowHandle[Any, Any]:
    """The handle of the latest dataset ``dataset`` names (an id or a destination root).

    Raises:
        TypeError: ``dataset`` is not a str.
    """
    require_str(dataset, "dataset", DATASET_NAME)
    workflow_id = dataset if dataset.startswith(DATASET_ID_PREFIX) else dataset_id(dataset)
    return client.temporal.get_workflow_handle(workflow_id, result_type=DatasetResult)


#: directory levels above a destination looked at for a dataset root (status of a file
#: a dataset wrote), at most
_LEVELS_ABOVE = 32


def _roots_above(destination: str) -> list[str]:
    """The directories (prefixes) above ``destination`` (a local path, relative or
    not, or a URL), nearest first, at most :data:`_LEVELS_ABOVE`, as canonical URLs:
    the roots a dataset that wrote it may have had (built with
    :func:`staccato.urls.child_url`; a level no URL can name is left out)."""
    url = parse_url(destination)
    if url.scheme not in ("file", "s3", "sftp"):
        return []
    top = replace(url, path="" if url.scheme == "s3" else "/")
    parts = url.path.strip("/").split("/")[:-1]
    roots = []
    for level in range(len(parts), max(-1, len(parts) - _LEVELS_ABOVE - 1), -1):
        try:
            roots.append(child_url(top, "/".join(parts[:level])).canonical)
        except InvalidURLError:
            continue
    return roots


async def dataset_above(client: StaccatoClient, destination: str) -> str | None:
    """The id of the dataset (any state) whose destination root is the nearest
    directory or prefix above ``destination``, if Temporal knows one: a file a dataset
    copied in a batch has no transfer of its own (``status`` of it said only "no
    transfer"). One describe per level, at most :data:`_LEVELS_ABOVE`. A root of a
    dataset to several roots is held by a root lock: the id is the dataset's that
    holds it (the one ``cp -r`` printed and ``status``, ``watch``, ``cancel`` take),
    not the lock's."""
    try:
        roots = _roots_above(destination)
    except InvalidURLError:
        return None
    for root in roots:
        try:
            workflow_id = dataset_id(root)
        except StaccatoError:
            continue
        try:
            description = await client.temporal.get_workflow_handle(workflow_id).describe(
                rpc_timeout=timedelta(seconds=settings.current().client_wait_s)
            )
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                continue
            return None
        if description.workflow_type == ROOT_LOCK_TYPE:
            holder = dict(await description.memo()).get("holder")
            return str(holder) if holder else None
        return workflow_id
    return None


async def dataset_status(
    client: StaccatoClient,
    dataset: str,
    *,
    query_timeout_s: float = PROGRESS_QUERY_S,
    own_run_id: str | None = None,
    look_in_flight: bool = True,
) -> DatasetStatus:
    """Status of the latest dataset under ``dataset`` (an id or a destination root):
    counts, bytes, rate, ETA (once the listing is done), current files, failures.
    ``query_timeout_s``: seconds the progress query waits for a worker (then
    ``counts_unknown`` says none answered). A failure's ``left_behind`` is kept while
    what it names may still be there (:func:`staccato.leftovers.shown_left_behind`: a local
    temp file deleted since is no longer said).

    The id of a one-root dataset is also its root's lock: a dataset to several roots
    later starts a lock run under it, and the latest run of the id is then that lock,
    whose status is its holder's. ``own_run_id`` (a run of the id that is a dataset's,
    as a listing found it): that dataset's status in that case, not the holder's (a
    listing showed the holder twice and the earlier dataset not at all: tester63).

    ``look_in_flight``: an ended (failed, cancelled, terminated) dataset's last run's
    history is read for what it had in flight (:func:`_with_in_flight`: files a
    terminated run's batches published, what they and its large files' transfers
    left); False: not (``list``, a row per dataset, reads the memo's counts only).

    Raises:
        NotADatasetError: ``dataset`` is the id of a single transfer or fan-out group
            (the message names the call that applies to it).
        TransferNotFoundError: no such dataset.
        RPCError: Temporal did not describe the dataset within ``STACCATO_CLIENT_WAIT_S``
            (the CLI says so in one line), or failed otherwise.
    """
    begun: list[asyncio.Future[Any]] = []  # reads begun early, not awaited in the end
    try:
        status = await _dataset_status(
            client,
            dataset,
            query_timeout_s=query_timeout_s,
            own_run_id=own_run_id,
            look_in_flight=look_in_flight,
            begun=begun,
        )
    finally:
        for task in begun:
            task.cancel()
        await asyncio.gather(*begun, return_exceptions=True)
    shown = [shown_left_behind(f.left_behind) for f in status.failures]  # one look each
    if all(text == f.left_behind for text, f in zip(shown, status.failures, strict=True)):
        return status
    return status.model_copy(
        update={
            "failures": [
                f if text == f.left_behind else f.model_copy(update={"left_behind": text})
                for text, f in zip(shown, status.failures, strict=True)
            ]
        }
    )


async def _dataset_status(
    client: StaccatoClient,
    dataset: str,
    *,
    query_timeout_s: float = PROGRESS_QUERY_S,
    own_run_id: str | None = None,
    look_in_flight: bool = True,
    begun: list[asyncio.Future[Any]] | None = None,
) -> DatasetStatus:
    """:func:`dataset_status`, every failure's ``left_behind`` as the run recorded it.
    ``begun``: where a read begun early (the children's, :data:`_CHILDREN_EARLY_S`)
    is put, for the caller to cancel once the status is made.

    Raises:
        NotADatasetError: ``dataset`` is the id of a single transfer or fan-out group
            (the message names the call that applies to it).
        TransferNotFoundError: no such dataset.
        RPCError: Temporal did not describe the dataset within ``STACCATO_CLIENT_WAIT_S``
            (the CLI says so in one line), or failed otherwise.
    """
    handle = _handle(client, dataset)
    try:
        description = await handle.describe(
            rpc_timeout=timedelta(seconds=settings.current().client_wait_s)
        )
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            # Temporal's own words kept: twice in loaded test runs a running dataset was
            # reported not found just after its worker was killed (not explained yet)
            other = await _not_a_dataset(client, dataset, call="dataset_status")
            if other is not None:
                raise other from None
            raise TransferNotFoundError(
                f"no dataset {dataset!r} (Temporal: {err.message})"
            ) from None
        raise
    memo = dict(await description.memo())
    if description.workflow_type == ROOT_LOCK_TYPE and own_run_id is not None:
        # a root's lock taken since this dataset's run: that run's own status
        handle = client.temporal.get_workflow_handle(
            handle.id, run_id=own_run_id, result_type=DatasetResult
        )
        description = await handle.describe(
            rpc_timeout=timedelta(seconds=settings.current().client_wait_s)
        )
        memo = dict(await description.memo())
    if description.workflow_type == ROOT_LOCK_TYPE and memo.get("holder"):
        # a root's lock: the dataset to several roots that holds (or held) it
        return await dataset_status(
            client,
            str(memo["holder"]),
            query_timeout_s=query_timeout_s,
            look_in_flight=look_in_flight,
        )
    require_type(handle.id, description, (DATASET_TYPE,), call="dataset_status")
    started_at = await _first_start(client, handle.id, description)
    if description.status == WorkflowExecutionStatus.COMPLETED:
        completed = status_from_result(handle.id, await handle.result())
        completed = completed.model_copy(
            update={"started_at": started_at, "ended_at": iso_utc(description.close_time)}
        )
        if completed.filters_matched_none:
            completed = await _filters_note(client, completed, description.run_id)
        return _with_retry_of(completed, memo)
    progress: DatasetProgress | None = None
    polled = True  # whether a worker polls its task queue (else no query is sent)
    #: why the query was not sent (staccato.settled_query), said instead of "no
    #: worker answered"
    unsettled: str | None = None
    #: the large files in flight's statuses, asked while the progress query waits
    early: tuple[set[str], asyncio.Future[list[_ChildProgress]]] | None = None
    try:
        polled = await client.may_answer(description.task_queue)
        if polled:
            asked = asyncio.ensure_future(
                settled_query(
                    handle,
                    "progress",
                    result_type=DatasetProgress,
                    description=description,
                    rpc_timeout_s=query_timeout_s,
                )
            )
            if begun is not None:
                begun.append(asked)
            await asyncio.wait({asked}, timeout=_CHILDREN_EARLY_S)
            if not asked.done() and begun is not None and _child_ids(description):
                # not answered at once: maybe none answers, and then the children's
                # queries wait too; used only if the counts are the last known
                # (what is in flight is read after live counts, never before: below)
                early = (
                    _child_ids(description),
                    asyncio.ensure_future(_children_progress(client, description)),
                )
                begun.append(early[1])
            progress = await asked
    except NotSettledError as err:
        progress = None
        # "no worker answers" as cp -r says of a frozen worker (its test), and why
        unsettled = (
            f"{NO_WORKER_ANSWERS} now: {err.reason} (busy or stopped); it was not asked "
            "for progress meanwhile (a query now could replay events it has not handled)"
        )
    except Exception:  # no worker answers, or the run is over: what visibility says
        progress = None
    if description.status in (
        WorkflowExecutionStatus.RUNNING,
        WorkflowExecutionStatus.CONTINUED_AS_NEW,  # between two runs
    ):
        state = progress.state if progress else DatasetState.running
        if state in _TERMINAL:  # the run is returning: report its result
            state = DatasetState.running
        error = error_type = None
    else:
        state = _STATUS_STATES.get(description.status, DatasetState.failed)  # type: ignore[arg-type]
        error, error_type = await _failure(handle, cancelled=state == DatasetState.cancelled)
    # a cancel asked of a run that still waits for its batches and children to stop
    # (a frozen or dead worker: until their heartbeat timeouts and the clean-up)
    cancel_requested = (
        True
        if state not in _TERMINAL
        and description.raw_description.workflow_extended_info.cancel_requested
        else None
    )
    status = DatasetStatus(
        id=handle.id,
        state=state,
        source=memo.get("source", ""),
        destination=memo.get("destination", ""),
        destination_roots=memo.get("destinations"),
        files_total=0,
        files_done=0,
        files_skipped=0,
        files_failed=0,
        bytes_total=0,
        bytes_done=0,
        listing_done=False,
        error=error,
        error_type=error_type,
        started_at=started_at,
        ended_at=iso_utc(description.close_time) if state in _TERMINAL else None,
        cancel_requested=cancel_requested,
        cancel_requested_at=(
            await cancel_requested_at(client.temporal, handle.id, description.run_id)
            if cancel_requested
            else None
        ),
    )
    counts = memo.get("counts")
    if progress is None and isinstance(counts, dict) and state in _TERMINAL:
        # a failed or cancelled run wrote its counts into its memo as it ended
        ended = status.model_copy(
            update={
                "files_total": int(counts.get("files_listed") or 0),
                "files_done": int(counts.get("files_done") or 0),
                "files_skipped": int(counts.get("files_skipped") or 0),
                "files_failed": int(counts.get("files_failed") or 0),
                "bytes_total": int(counts.get("bytes_listed") or 0),
                "bytes_done": int(counts.get("bytes_done") or 0),
                "listing_done": True,  # ended: its count is final
            }
        )
        if look_in_flight:
            ended = await _with_in_flight(client, handle, description, ended, counts)
        return _with_retry_of(ended, memo)
    if progress is None and state in _TERMINAL and look_in_flight:
        # ended before any batch or large file wrote its counts (a terminate 8 s in:
        # tester t68 1b read files_done 0 of 8 published)
        status = await _with_in_flight(client, handle, description, status, None)
    last_known_at: str | None = None
    no_batch_ended = False
    first = description.raw_description.workflow_execution_info.first_run_id
    if (
        progress is None
        and counts is None
        and state == DatasetState.running
        and started_at
        and first in ("", description.run_id)  # a later run carries earlier counts
        and any(  # a batch in flight: its heartbeats are what is known
            pending.activity_type.name in ("copy_batch", "copy_batch_to_many")
            for pending in description.raw_description.pending_activities
        )
    ):
        # the first run, and no batch or large file has ended yet, so none wrote the
        # counts: zero, plus below the batches in flight's last heartbeats (a tester
        # saw 0 of a dataset 500 files into its first batch)
        # (``at``: only the mark that they are the last known; when they were true is
        # their heartbeats' time, below, never the dataset's start)
        counts, no_batch_ended = {"at": _unix(started_at)}, True
    if (
        progress is None
        and isinstance(counts, dict)
        and "at" in counts
        and state in (DatasetState.running, DatasetState.queued)
    ):
        # no worker answers: the counts the running dataset wrote into its memo as its
        # last batch or large file ended (DATASET_LIVE_COUNTS_PATCH), and below, the
        # batches in flight's last heartbeats; said to be the last known (a tester saw
        # 0 files, 0 bytes of a dataset 19 files in)
        last_known_at = iso_utc(datetime.fromtimestamp(float(counts["at"]), UTC))
        progress = DatasetProgress(
            state=DatasetState.running,
            source=status.source,
            destination=status.destination,
            files_listed=int(counts.get("files_listed") or 0),
            files_done=int(counts.get("files_done") or 0),
            files_skipped=int(counts.get("files_skipped") or 0),
            files_failed=int(counts.get("files_failed") or 0),
            bytes_listed=int(counts.get("bytes_listed") or 0),
            bytes_done=int(counts.get("bytes_done") or 0),
            listing_done=bool(counts.get("listing_done")),
        )
    if progress is None:
        if state in (DatasetState.running, DatasetState.queued, DatasetState.scheduled):
            status.counts_unknown = (
                f"no worker polls task queue {description.task_queue!r}: the dataset goes "
                "on when one does (`staccato up --detach` or `staccato worker`); counts "
                "return then"
                if not polled
                else f"{unsettled}; counts return when it has"
                if unsettled
                else f"no worker answered the progress query within {query_timeout_s:g} s "
                "(a restarted worker replays the dataset's history first); counts return "
                "when one does"
            )
        return _with_retry_of(status, memo)
    if state in _LIVE:
        # what is in flight is read after the counts, never before: a batch (or large
        # file) that ended between a describe and the query was in both, its files
        # counted twice. A query waits for the workflow task in flight, seconds after
        # a Temporal restart (the history replayed while the batches' results land):
        # `cp -r` showed 3138/2001 files, then 2000 and fewer bytes. Read after, a
        # batch that ends in between would be in neither (files and bytes done fell
        # for one status), so the counts are asked again after the read: a query
        # waits for the workflow task that counts a result Temporal has recorded, so
        # the same counts mean nothing in flight ended unseen; other counts, read again
        for _ in range(_READS_IN_FLIGHT):
            try:
                description = await handle.describe(
                    rpc_timeout=timedelta(seconds=settings.current().client_wait_s)
                )
            except RPCError:
                # the counts alone: the description read before the query may name
                # batches and large files that the query counted already
                description.raw_description.ClearField("pending_activities")
                description.raw_description.ClearField("pending_children")
                break
            if description.status not in (
                WorkflowExecutionStatus.RUNNING,
                WorkflowExecutionStatus.CONTINUED_AS_NEW,
            ):
                description.raw_description.ClearField("pending_activities")
                description.raw_description.ClearField("pending_children")
                break
            if last_known_at is not None:
                break  # no worker answers: the counts are the memo's, asked of no one
            try:
                again = await settled_query(
                    handle,
                    "progress",
                    result_type=DatasetProgress,
                    description=description,
                    rpc_timeout_s=query_timeout_s,
                )
            except Exception:  # none answers now (or not settled): the description as read
                break
            if _same_counts(again, progress):
                break
            progress = again
    done, done_bytes, current = progress.files_done, progress.bytes_done, []
    # bytes of files not counted yet (read by a batch, copied by a large file's
    # transfer): they move, but leave the figure when such a file fails, so they are
    # not ``bytes_done``, which never falls (tester T4/T18: 820 KB, then 640 KB)
    moving_bytes = 0
    if state not in _LIVE:
        children = []
    elif early is not None and last_known_at is not None and early[0] == _child_ids(description):
        # the counts are the memo's, asked of no one: the children read meanwhile
        # (the same ones in flight) are as good as any read now
        children = await early[1]
    else:
        children = await _children_progress(client, description)
    # the endpoints, named when a batch's attempt was timed out for want of heartbeats
    where = " and ".join(str(memo[k]) for k in ("source", "destination") if memo.get(k)) or None
    retrying = (
        await _last_retry_error(client, description, children, where) if state in _LIVE else None
    )
    paused = [transfer for c in children for transfer in c.paused]
    # a large file's transfer (or group) in flight: the bytes it copied so far (a
    # dataset of a few large files showed 0 B until the first one ended), moving
    # until it completes
    done_bytes += sum(c.bytes for c in children)
    moving_bytes += sum(c.moving for c in children)
    # batches or large files' transfers in flight (not all of them paused): what
    # moves bytes; with none, nothing does (a rate then is the past's average)
    in_flight = any(not c.paused for c in children) or len(
        description.raw_description.pending_children
    ) > len(children)
    rows = [DestinationStatus.model_validate(d.model_dump()) for d in progress.destinations or []]
    # when a byte last moved in each batch in flight (its heartbeat's ``moved_at``; a
    # batch that has not heartbeated yet: when its attempt started, nothing moved in it
    # since; one waiting to start moves nothing); None once one batch cannot tell (an
    # older worker's). A batch stuck connecting to a frozen server sends no heartbeat
    # details, and made the status show a since-start rate for as long (tester61 H)
    moved_at: list[float] | None = []
    # when the last known counts were true (no worker answers): the memo's write and
    # the last heartbeats whose details are counted in them, the latest of those; None
    # when none is known (a tester read the dataset's start time beside counts taken
    # minutes later)
    counted_at: list[float] = (
        [float(counts["at"])]
        if last_known_at is not None and not no_batch_ended and isinstance(counts, dict)
        else []
    )
    # when each running batch last heartbeated (or started, before its first): a
    # batch whose process was SIGKILLed sends none until Temporal times it out, and
    # read "waiting for the source or destination" with both fine (tester62)
    beats: list[float] = []
    if state == DatasetState.running:  # the batches' heartbeats: files done in flight
        for pending in description.raw_description.pending_activities:
            kind = pending.activity_type.name
            if kind not in ("copy_batch", "copy_batch_to_many"):
                continue
            heard = _last_heard(pending)
            if heard is not None:
                beats.append(heard)
            if not pending.heartbeat_details.payloads:
                started = pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
                if started and pending.HasField("last_started_time"):
                    if moved_at is not None:
                        moved_at.append(
                            pending.last_started_time.ToDatetime(tzinfo=UTC).timestamp()
                        )
                elif started:
                    moved_at = None
                continue
            try:
                (details,) = await client.temporal.data_converter.decode(
                    pending.heartbeat_details.payloads,
                    [BatchCheckpoint if kind == "copy_batch" else FanOutBatchCheckpoint],
                )
            except Exception:
                moved_at = None
                continue
            moved = getattr(details, "moved_at", None)
            if moved is None:
                moved_at = None
            elif moved_at is not None:
                moved_at.append(moved)
            in_flight = True
            if pending.HasField("last_heartbeat_time"):
                counted_at.append(pending.last_heartbeat_time.ToDatetime(tzinfo=UTC).timestamp())
            done += details.done
            # the bytes of its files counted, and those of the files it copies now
            # (moving: read of files not counted yet, never more than their sizes)
            done_bytes += details.bytes
            moving_bytes += getattr(details, "bytes_moving", 0)
            if details.current:
                current.append(details.current)
            if isinstance(details, FanOutBatchCheckpoint):
                _add_batch_roots(rows, details)
    if progress.listing_done:  # the files in flight are of those listed: never past
        done = min(
            done,
            max(
                progress.files_done,
                progress.files_listed - progress.files_skipped - progress.files_failed,
            ),
        )
    if progress.bytes_listed:  # bytes of files listed: never past the total
        done_bytes = min(done_bytes, max(progress.bytes_listed, progress.bytes_done))
        moving_bytes = min(moving_bytes, max(0, progress.bytes_listed - done_bytes))
    # since the dataset's start until now: ``progress.now`` is the workflow's clock,
    # which stands still between its tasks (a batch copying for seconds adds none),
    # so it alone made a rate of files done over ~0.4 s: 8 files/s for 0.2
    elapsed = max(progress.now or 0, time.time()) - (progress.started_at or 0)
    if state in _TERMINAL:
        # ended (cancelled, failed): nothing moves, so no rate and no ETA (one measured
        # to now fell, and its ETA grew, every second after a cancel)
        elapsed = 0
    rate_files = (done + progress.files_skipped) / elapsed if elapsed > 0 else None
    rate_bytes = (done_bytes + moving_bytes) / elapsed if elapsed > 0 else None
    idle_since: float | None = None
    # no batch's attempt runs, one waits for its retry: ``last_retry_error`` says why
    # nothing moves, not "waiting for the source or destination" (said after a batch's
    # process died: tester62)
    retry_waits = retrying is not None and not beats
    if state == DatasetState.running and moved_at and not children and not retry_waits:
        # every batch in flight says when a byte last moved, and no large file's
        # transfer is in flight: nothing moved since the latest of those and of the
        # run's last step (a batch ended, a page listed: ``progress.now``)
        last = max([*moved_at, progress.now or 0.0])
        if time.time() - last >= STILL_S:
            idle_since = last
    no_heartbeat_since: float | None = None
    if idle_since is not None and beats and time.time() - max(beats) >= NO_HEARTBEAT_S:
        no_heartbeat_since = max(beats)
    handled = done + progress.files_skipped + progress.files_failed
    # nothing moves now: a step retries an error (a root down, a server refusing), or
    # a root a batch waits for is unreachable. The rates are since the start, so an
    # ETA from them would be made up (it stayed, or grew without end, for the whole
    # outage): none ("?"), until the copy moves again
    stalled = (
        retrying is not None or any(row.files_waiting for row in rows) or idle_since is not None
    )
    # bytes move now: something is in flight and copies (not waiting for a slot, a
    # retry, a root or a worker; not stopping for a cancel). Rates and an ETA only
    # then: they are averages since the start, which looked alive while a full disk
    # was retried ("11 files/s" falling for a minute) and again after its batch gave
    # up and its files failed, nothing in flight (tester T4/T18)
    # why a batch or large file in flight waits for a slot; ``all_wait``: every one waits
    queued_reason, all_wait = _waiting_for_slots(progress, description, children)
    all_wait = all_wait and state == DatasetState.running and last_known_at is None
    moving_now = (
        state == DatasetState.running
        and in_flight
        and not stalled
        and not cancel_requested
        and last_known_at is None
        and not all_wait
    )
    eta = None
    if progress.listing_done and moving_now and not paused:
        # the longer of the files left at the file rate and the bytes left at the byte
        # rate (a file count alone said 2.3 s with 95 of 120 MiB left in large files)
        eta = units.eta(progress.files_listed - handled, rate_files, min_rate=FILES_MIN_RATE)
        # (only while every file handled was copied: the bytes of files skipped or
        # failed are in the total, never in the bytes done)
        if eta is not None and rate_bytes and progress.bytes_listed and handled == done:
            by_bytes = units.eta(progress.bytes_listed - done_bytes - moving_bytes, rate_bytes)
            eta = max(eta, by_bytes) if by_bytes is not None else None
        eta = round(eta, 1) if eta is not None else None
    if not moving_now:
        # since-start averages would look alive (a hung server, a minute in: "file
        # rate 10.3 files/s"): none (and ``idle_since`` says since when nothing moved)
        rate_files = rate_bytes = None
    unknown = None
    if last_known_at is not None:
        # the last known counts: nothing is known to move, so no rate and no ETA
        rate_files = rate_bytes = eta = None
        unknown = (
            f"{NO_WORKER_ANSWERS} on task queue {description.task_queue!r}"
            if not polled
            else unsettled or f"no worker answered the progress query within {query_timeout_s:g} s"
        ) + (
            (
                ": the counts are the last known (the files in flight's last heartbeats; "
                "no batch had ended)"
                if no_batch_ended
                # one time for one set of counts: ``counts_last_known_at``, the newest
                # of the memo's write and the heartbeats (tester71 read "written at" the
                # memo's time here beside "last known at" a later heartbeat's)
                else ": the counts are the last known (those written as the last batch "
                "ended, with the files in flight's last heartbeats: their time is the "
                "newest of those)"
            )
            + "; the dataset goes on when a worker polls"
        )
        # the reason nothing moves comes first; a retry already scheduled is said
        # after it (ci68: a batch's heartbeat timeout, seen after its worker's kill,
        # hid that no worker answers)
        retrying = unknown if retrying is None else f"{unknown} (last attempt: {retrying})"
    if all_wait:
        # every batch and large file in flight waits for a slot: queued, as a single
        # transfer is (tester t68 4b: a batch and a large file's transfer both waiting
        # at an endpoint's --max-active showed running)
        state = DatasetState.queued
    final = status.model_copy(
        update={
            "state": state,
            # the last known count of a listing not over: at least the files handled
            "files_total": (
                max(progress.files_listed, handled)
                if last_known_at is not None and not progress.listing_done
                else progress.files_listed
            ),
            "files_done": done,
            "files_skipped": progress.files_skipped,
            "files_failed": progress.files_failed,
            "bytes_total": (
                max(progress.bytes_listed, done_bytes)
                if last_known_at is not None and not progress.listing_done
                else progress.bytes_listed
            ),
            "bytes_done": done_bytes,
            "bytes_moving": moving_bytes if state in _LIVE else None,
            # an ended dataset's count is final, listed to the end or not (a cancelled
            # 3-file tree showed "3+ files")
            "listing_done": progress.listing_done or state in _TERMINAL,
            "rate_files_per_s": _rounded_rate(rate_files),
            "rate_bytes_per_s": round(rate_bytes, 1) if rate_bytes is not None else None,
            "eta_s": eta,
            "current": current or progress.current,
            "runs": progress.runs,
            "error": error or progress.error,
            "failures": progress.failures,
            "queued_reason": queued_reason,
            "destinations": rows if progress.destinations is not None else None,
            "last_retry_error": retrying,
            "paused_transfers": paused or None,
            "files_left_out": progress.files_left_out or None,
            "left_out_names": progress.left_out_names or None,
            "counts_unknown": unknown,
            "counts_last_known_at": (
                iso_utc(datetime.fromtimestamp(max(counted_at), UTC))
                if last_known_at is not None and counted_at
                else None
            ),
            "idle_since": (
                iso_utc(datetime.fromtimestamp(idle_since, UTC))
                if idle_since is not None and last_known_at is None
                else None
            ),
            "no_heartbeat_since": (
                iso_utc(datetime.fromtimestamp(no_heartbeat_since, UTC))
                if no_heartbeat_since is not None and last_known_at is None
                else None
            ),
        }
    )
    if state in _TERMINAL and look_in_flight:
        # a worker replayed the ended run for the query: what it had in flight is not
        # in its state either (a terminated run's batches wrote nothing: tester t68 1b)
        counts = memo.get("counts")
        final = await _with_in_flight(
            client, handle, description, final, counts if isinstance(counts, dict) else None
        )
    return _with_retry_of(final, memo)


async def _with_in_flight(
    client: StaccatoClient,
    handle: WorkflowHandle[Any, Any],
    description: Any,
    status: DatasetStatus,
    counts: dict[str, Any] | None,
) -> DatasetStatus:
    """``status`` of an ended dataset (failed, cancelled; ``description``: its last
    run's) with what that run had in flight (:func:`staccato.dataset_ended.in_flight_at_end`,
    read from its history): a terminated run's batches' files found published at a
    local destination are counted done, and the files whose partial data may be left
    (a terminated batch's, a large file's transfer that did not complete and names what
    it left) join its failures with their ``left_behind``. A terminated run whose
    batches' outcome cannot be told from here (a destination not seen) says its
    counts are the last known (``counts_unknown``, ``counts_last_known_at``: its
    memo's ``counts``). One root only (a dataset to several roots: ``status`` as
    before). ``counts``: the memo's counts (None: none written)."""
    if status.destination_roots is not None or description.status not in (
        WorkflowExecutionStatus.TERMINATED,
        WorkflowExecutionStatus.CANCELED,
        WorkflowExecutionStatus.FAILED,
        WorkflowExecutionStatus.TIMED_OUT,
    ):
        return status
    terminated = description.status == WorkflowExecutionStatus.TERMINATED
    run = client.temporal.get_workflow_handle(handle.id, run_id=description.run_id)
    found = await in_flight_at_end(
        client,
        run,
        status.destination,
        terminated=terminated,
        known={f.name for f in status.failures},
    )
    # an ended run copies nothing now (a replayed run's query named its last files)
    update: dict[str, Any] = {"current": []} if status.current else {}
    if found.left:
        update["failures"] = [*status.failures, *found.left][:MAX_FAILURES_KEPT]
    if found.files_published:
        update["files_done"] = status.files_done + found.files_published
        update["bytes_done"] = status.bytes_done + found.bytes_published
    if terminated and (found.files_untold or not found.history_read):
        at = counts.get("at") if isinstance(counts, dict) else None
        if isinstance(at, int | float):
            update["counts_last_known_at"] = iso_utc(datetime.fromtimestamp(float(at), UTC))
        update["counts_unknown"] = (
            "terminated (`temporal workflow terminate` or the UI: no workflow code ran "
            "after it): the files its batches in flight published since their last "
            "checkpoint are not counted"
            + (
                f" ({found.files_untold} files in flight at a destination not seen from here)"
                if found.history_read
                else " (its history was not read)"
            )
            + "; a new run of the dataset (`cp -r`, `sync`) copies what is missing and "
            "removes what they left"
        )
    return status.model_copy(update=update) if update else status


def _last_heard(pending: Any) -> float | None:
    """When a running batch (``pending``, a ``PendingActivityInfo``) was last heard
    of (Unix seconds, the Temporal server's clock): its attempt's last heartbeat, or
    its start before its first; None when its attempt is not running (waiting to
    start or for its retry)."""
    if pending.state != PendingActivityState.PENDING_ACTIVITY_STATE_STARTED:
        return None
    started = (
        pending.last_started_time.ToDatetime(tzinfo=UTC).timestamp()
        if pending.HasField("last_started_time")
        else None
    )
    beat = (
        pending.last_heartbeat_time.ToDatetime(tzinfo=UTC).timestamp()
        if pending.HasField("last_heartbeat_time")
        else None
    )
    if beat is not None and (started is None or beat >= started):
        return beat
    return started


def _waiting_for_slots(
    progress: DatasetProgress, description: Any, children: Sequence[_ChildProgress]
) -> tuple[str | None, bool]:
    """Why a running dataset's work in flight waits for a slot of a limited endpoint or
    link (``staccato limit``), and whether all of it does: the dataset is then
    ``queued`` (README.md, "Limits": "the dataset's state is queued ... while every
    batch in flight waits"), one meaning with a single transfer's ``queued``
    (:mod:`staccato.run_states`): waiting, nothing copying.

    Args:
        progress: the dataset's ``progress`` query answer: ``waiting`` batches of its
            ``in_flight`` batches and large files, ``queued_reason`` a batch's.
        description: the dataset's description, read after ``progress``: its pending
            batch activities (a batch waiting for a slot has none yet) and children.
        children: the status of its large files' transfers in flight
            (:func:`_children_progress`: at most :data:`_CHILDREN_ASKED`); a child
            transfer waits when its own state is ``queued`` (for a limit, or behind its
            destination's writer).

    Returns:
        (reason, all wait): the reason a batch gives, else a queued large file's (None
        when none waits); all wait is True when something is in flight and every batch
        (no batch activity pending, the query's waiting batches cover the batches in
        flight) and every large file's transfer (each asked and answering ``queued``)
        waits. A fan-out group (several roots) is never counted as waiting, nor a child
        not asked (more than :data:`_CHILDREN_ASKED`): the dataset then shows running.
    """
    raw = description.raw_description
    # its large files' transfers and groups (a dataset to several roots also has a
    # lock per root among its children: no work)
    pending = sum(c.workflow_type_name != ROOT_LOCK_TYPE for c in raw.pending_children)
    reasons = [c.queued for c in children if c.queued]
    reason = progress.queued_reason or (reasons[0] if reasons else None)
    batch_running = any(
        a.activity_type.name in ("copy_batch", "copy_batch_to_many") for a in raw.pending_activities
    )
    all_wait = (
        progress.in_flight > 0
        and (progress.waiting == 0 or progress.queued_reason is not None)
        and (progress.waiting > 0 or pending > 0)
        and progress.waiting + pending >= progress.in_flight
        and not batch_running
        and len(reasons) == pending
    )
    return reason, all_wait


def _same_counts(one: DatasetProgress, other: DatasetProgress) -> bool:
    """Whether two progress answers of a dataset count the same files and bytes
    handled (no batch or large file's result was counted between them)."""
    return (
        one.runs == other.runs
        and one.files_done == other.files_done
        and one.files_skipped == other.files_skipped
        and one.files_failed == other.files_failed
        and one.bytes_done == other.bytes_done
    )


def _add_batch_roots(rows: list[DestinationStatus], batch: FanOutBatchCheckpoint) -> None:
    """Add a running batch's per-root counts (its heartbeat details) to the rows of
    the roots, and name the roots it waits for: those with deferred files, with the
    root's last transient error and since when (``down_since``; workers before 0.19.0
    did not record it)."""
    by_root = {row.destination: row for row in rows}
    waiting: dict[int, int] = {}
    for _, target in batch.deferred:
        waiting[target] = waiting.get(target, 0) + 1
    for index, counts in enumerate(batch.destinations):
        row = by_root.get(counts.destination)
        if row is None:
            continue
        row.files_done += counts.files_done
        row.files_skipped += counts.files_skipped
        row.files_failed += counts.files_failed
        row.bytes_done += counts.bytes_done
        if index in waiting:
            row.files_waiting = (row.files_waiting or 0) + waiting[index]
            row.unreachable = batch.reasons.get(str(index)) or row.unreachable
            since = batch.down_since.get(str(index))
            if since and (row.unreachable_since is None or since < row.unreachable_since):
                row.unreachable_since = since


async def _filters_note(
    client: StaccatoClient, status: DatasetStatus, run_id: str | None
) -> DatasetStatus:
    """``status`` (a dataset whose ``--include``/``--exclude`` left out every file
    listed: :attr:`DatasetStatus.filters_matched_none`; ``run_id``: its last run) with
    its ``warning``, which names the request's patterns (tester: ``--include
    '/sub/*'`` said "completed: 0 files copied" and exited 0 without a word). Reads
    the request: one event."""
    from staccato.starts import running_input

    request = await running_input(client.temporal, status.id, run_id, DatasetRequest)
    if request is None or status.filters_matched_none is None:
        return status
    return status.model_copy(
        update={
            "warning": filters_warning(
                status.filters_matched_none, request.include, request.exclude
            )
        }
    )


def filters_warning(listed: int, include: Sequence[str], exclude: Sequence[str]) -> str:
    """What a dataset whose filters left out all ``listed`` files says: the patterns
    (excludes alone: that they excluded every file, as each matched one; includes
    alone: that none matched; both: that none was selected, and how the two
    combine), and how they match (a name relative to the source root, never with a
    leading ``/``: the one told when a pattern starts with it)."""
    import shlex

    patterns = " ".join(
        [f"--include {shlex.quote(g)}" for g in include]
        + [f"--exclude {shlex.quote(g)}" for g in exclude]
    )
    rooted = next((g for g in [*include, *exclude] if g.startswith("/")), None)
    hint = (
        f", never with a leading '/' ({rooted.lstrip('/')!r}, not {rooted!r})"
        if rooted is not None
        else ""
    )
    if include and exclude:
        # which of the two left out each file is not kept: say how they combine
        files = "the one file listed" if listed == 1 else f"none of the {listed} files listed"
        verb = "was not" if listed == 1 else "was"
        matched = (
            f"{files} {verb} selected by {patterns} (a file is copied when it matches "
            "some --include and no --exclude)"
        )
    elif exclude:
        # every file listed matched an exclude: it did match (tester: "none of the 16
        # files listed matched --exclude '*'", though all 16 did)
        files = "the one file listed" if listed == 1 else f"all {listed} files listed"
        matched = f"{patterns} excluded {files}"
    else:
        matched = (
            f"the one file listed did not match {patterns}"
            if listed == 1
            else f"none of the {listed} files listed matched {patterns}"
        )
    return (
        f"{matched}: nothing was copied; check the "
        f"patterns: they match each file's name relative to the source root{hint}, and "
        "'*' also matches '/'"
    )


def _rounded_rate(rate: float | None) -> float | None:
    """A files/s rate as shown: one decimal, or two significant digits below 1 (a
    slow dataset's 0.04 files/s is not 0.0)."""
    if rate is None:
        return None
    return round(rate, 1) if rate >= 1 else float(f"{rate:.2g}")


async def _first_start(client: StaccatoClient, dataset: str, description: Any) -> str | None:
    """When the dataset ``dataset`` (described: ``description``, its latest run)
    started: its first run's start (continue-as-new starts a run per page of work),
    ISO 8601 UTC; the latest run's when the first is gone (retention) or unknown."""
    first = description.raw_description.workflow_execution_info.first_run_id
    if first and first != description.run_id:
        try:
            earliest = await client.temporal.get_workflow_handle(dataset, run_id=first).describe()
            return iso_utc(earliest.start_time)
        except RPCError:
            pass
    return iso_utc(description.start_time)


#: dataset states whose steps may be retrying now
_LIVE = (DatasetState.running, DatasetState.queued)
#: large files' transfers in flight asked for their status, at most, per status
_CHILDREN_ASKED = 8
#: a child transfer's states after which its bytes are the dataset's own count
_TRANSFER_ENDED = (TransferState.completed, TransferState.failed, TransferState.cancelled)


class _ChildProgress(NamedTuple):
    """What the status of a dataset's large file in flight adds to the dataset's.

    Attributes:
        bytes: once it completed, the file's size: done (a child still pending in
            the description read after the dataset's progress query is not in that
            progress yet: Temporal records the child's end in the dataset's history,
            and so drops it from the pending children, before the dataset counts it);
            0 otherwise.
        paused: the ids of its transfers that are paused.
        retrying: its newest retried attempt (``ID: attempt N: message``), or None.
        moving: while it runs, bytes of the file copied so far, by the dataset's
            measure (a transfer's bytes done; a fan-out group's staging read and each
            root's copy, as a share of the file's size): not done yet, since the file
            may still fail (``DatasetStatus.bytes_moving``); 0 once it ended.
        queued: why its transfer waits, while its state is ``queued`` (its status's
            ``reason``: a limit's governor, or its destination's writer); None
            otherwise (a fan-out group: always None).
    """

    bytes: int
    paused: list[str]
    retrying: str | None
    moving: int = 0
    queued: str | None = None


def _child_ids(description: Any) -> set[str]:
    """The ids of the large files' transfers (or groups) in flight under the dataset
    ``description`` (not its root locks)."""
    return {
        child.workflow_id
        for child in description.raw_description.pending_children
        if child.workflow_type_name != ROOT_LOCK_TYPE
    }


async def _children_progress(client: StaccatoClient, description: Any) -> list[_ChildProgress]:
    """The progress of each of the first :data:`_CHILDREN_ASKED` large files in flight
    under the dataset ``description`` (asked at once): a child ``TransferWorkflow``
    (one root) or ``FanOutWorkflow`` (several); a child gone meanwhile or whose status
    fails is left out."""
    from staccato.fanout_client import group_status

    async def transfer(child_id: str) -> _ChildProgress | None:
        try:
            shown = await client.status(child_id)
        except (StaccatoError, RPCError):
            return None
        copied, moving = 0, shown.bytes_done
        if shown.state == TransferState.completed:
            # ended after the progress query, which did not count it (a status after a
            # Temporal restart, while the server caught up on recording children's
            # ends, fell from 232.7 to 146.7 MB as files done rose)
            copied, moving = shown.bytes_total or shown.bytes_done, 0
        elif shown.state in _TRANSFER_ENDED:
            moving = 0
        paused = [shown.id] if shown.state == TransferState.paused else []
        retrying = f"{shown.id}: {shown.last_retry_error}" if shown.last_retry_error else None
        queued = (shown.reason or "queued") if shown.state == TransferState.queued else None
        return _ChildProgress(copied, paused, retrying, moving, queued)

    async def group(child_id: str) -> _ChildProgress | None:
        try:
            shown = await group_status(client, child_id)
        except (StaccatoError, RPCError):
            return None
        if shown.state == GroupState.completed and shown.bytes_total:
            return _ChildProgress(shown.bytes_total, [], None)  # as a transfer's, above
        if shown.state != GroupState.running or not shown.bytes_total:
            return _ChildProgress(0, [], None)
        # its work: one read of the source, then one copy per root
        copied = sum(
            (d.bytes if d.state == TransferState.completed else d.bytes_done) or 0
            for d in shown.destinations
        )
        share = ((shown.staged_bytes or 0) + copied) / (1 + len(shown.destinations))
        paused = [d.transfer_id for d in shown.destinations if d.state == TransferState.paused]
        return _ChildProgress(0, paused, None, min(int(share), shown.bytes_total))

    # (not a dataset's root locks: no transfer's status to ask)
    pending = [
        child
        for child in description.raw_description.pending_children
        if child.workflow_type_name != ROOT_LOCK_TYPE
    ][:_CHILDREN_ASKED]
    asked = await asyncio.gather(
        *(
            group(child.workflow_id)
            if child.workflow_type_name == GROUP_TYPE
            else transfer(child.workflow_id)
            for child in pending
        )
    )
    return [progress for progress in asked if progress is not None]


async def _last_retry_error(
    client: StaccatoClient,
    description: Any,
    children: Sequence[_ChildProgress],
    where: str | None = None,
) -> str | None:
    """Why a running dataset makes no progress, if a step of it is being retried: the
    newest failure of its own activities (listing, batches), else of one of its large
    files' transfers in flight (``children``: their progress); None when nothing is
    retrying. A batch whose retried attempt handles files again is not retrying
    (:func:`staccato.client.retry_is_over`, a transfer's rule: ``cp -r``'s line kept
    ``retrying: <error>`` after the batch recovered). ``where``: the dataset's
    endpoints (`` and ``-joined URLs), named when an attempt was timed out for want of
    heartbeats."""
    raw = description.raw_description
    now = datetime.now(UTC)
    for pending in raw.pending_activities:
        if await _batch_handles_files(client, pending, now):
            continue
        retried = await client.retry_of(pending, where)
        if retried is not None:
            # as a single transfer's (:meth:`StaccatoClient.retry_of`): a heartbeat
            # timeout in words (a killed worker process, or a server that blocked it)
            return f"{pending.activity_type.name} {retried[0]}"
    for child in children:
        if child.retrying:
            return child.retrying
    return None


async def _batch_handles_files(client: StaccatoClient, pending: Any, now: datetime) -> bool:
    """Whether ``pending`` (a ``PendingActivityInfo``) is a batch whose current attempt
    handled a file lately (its heartbeat's ``progress_at``, later than the attempt's
    start and current: :func:`staccato.client.retry_is_over`);
    False for any other activity, or one whose details cannot be read."""
    kind = pending.activity_type.name
    if kind not in ("copy_batch", "copy_batch_to_many") or not pending.heartbeat_details.payloads:
        return False
    try:
        (details,) = await client.temporal.data_converter.decode(
            pending.heartbeat_details.payloads,
            [BatchCheckpoint if kind == "copy_batch" else FanOutBatchCheckpoint],
        )
    except Exception:
        return False
    # a file handled by this attempt (its checkpoint's progress_at, past the attempt's
    # start), not bytes moved: an attempt on a full disk reads its files again before
    # each write fails (ci83: its rate came back while it retried)
    handled = getattr(details, "progress_at", None)
    if handled is None or not pending.HasField("last_started_time"):
        return False
    started = pending.last_started_time.ToDatetime(tzinfo=UTC).timestamp()
    return handled > started and retry_is_over(pending, now, handled)


async def list_datasets(client: StaccatoClient, *, limit: int = 50) -> list[DatasetStatus]:
    """Recent datasets, newest first by start time (one row per dataset id;
    :func:`staccato.listing.list_rows`)."""
    from staccato.listing import list_rows

    rows = await list_rows(client, types=(DATASET_TYPE,), limit=limit)
    return [row for row in rows if isinstance(row, DatasetStatus)]


async def follow_dataset(
    client: StaccatoClient, dataset: str, *, interval_s: float = 0.5
) -> AsyncIterator[DatasetStatus]:
    """Yield the status every ``interval_s`` seconds until the dataset ends (the last
    one yielded is the final status). Each waits at most :data:`FOLLOW_QUERY_S` for a
    worker to answer the progress query; while none does, the status yielded holds
    the last known counts (not zeros) with ``counts_unknown`` set (no rate, no ETA).
    Through 0.23 those statuses were not yielded, so ``cp -r`` printed nothing while
    its worker was frozen (tester: 70 s), and each waited 5 s for the query."""
    last: DatasetStatus | None = None
    async for current in follow_until_ended(
        lambda: dataset_status(client, dataset, query_timeout_s=FOLLOW_QUERY_S),
        _TERMINAL,
        interval_s,
    ):
        if current.counts_unknown and last is not None and current.state not in _TERMINAL:
            # the last known counts stand (not zeros) until a worker answers, said to
            # be the last known: no rate, no ETA (they would be stale)
            yield last.model_copy(
                update={
                    "state": current.state,
                    "counts_unknown": current.counts_unknown,
                    "rate_files_per_s": None,
                    "rate_bytes_per_s": None,
                    "eta_s": None,
                    "cancel_requested": current.cancel_requested,
                }
            )
            continue
        if last is not None and current.state not in _TERMINAL:
            # a running dataset's counts only grow: a batch that ends between the
            # query of its counts and the read of what is in flight is in neither for
            # one status (and bytes read of a file that then fails leave the count)
            current = current.model_copy(
                update={
                    "files_done": max(current.files_done, last.files_done),
                    "bytes_done": max(current.bytes_done, last.bytes_done),
                }
            )
        last = current
        yield current


async def _failure(handle: WorkflowHandle[Any, Any], *, cancelled: bool) -> tuple[str, str | None]:
    """Why a closed dataset did not complete (as :func:`staccato.client.failure_reason`)
    and the innermost failure's type (None when cancelled or unknown)."""
    if cancelled:
        return "cancelled", None
    try:
        await handle.result()
    except WorkflowFailureError as err:
        return innermost_message(err.cause), innermost_type(err.cause)
    except Exception as err:
        return str(err), None
    return "failed", None


async def await_dataset_end(client: StaccatoClient, dataset: str) -> DatasetStatus:
    """Wait for the dataset to end (one long poll for its result, across its runs'
    continue-as-new; no status query every half second) and return its final status.

    Raises:
        TransferNotFoundError: no such dataset.
    """
    handle = _handle(client, dataset)
    try:
        await handle.result()
    except WorkflowFailureError:
        pass  # failed, cancelled, terminated or timed out: the status says which
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
    return await dataset_status(client, dataset)


async def cancel_dataset(client: StaccatoClient, dataset: str) -> None:
    """Cancel a running dataset (in-flight files stop; temp data is removed)."""
    handle = _handle(client, dataset)
    await handle.cancel()


def _unix(iso: str) -> float:
    """An ISO 8601 time (``2026-12-05T20:52:14.447Z``) as Unix seconds."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
