"""What a dataset that ended failed, cancelled or terminated had in flight, read from
its last run's history by the client (no workflow change, no worker asked).

A terminated dataset runs no workflow code after the terminate: its batches in flight
wrote no checkpoint into its counts, so ``status`` said ``files_done 0`` of a dataset
that had published 8 files, and nothing of what they may have left (tester t68, 1b).
A cancelled dataset counts its large files' transfers that the cancel stopped as
neither done nor failed, so what their clean-up could not remove (their own memo's
``left_behind``: an SFTP server that did not answer) was named only in each transfer's
status, not the dataset's (tester t68, 2b).

The last run's history names both: each batch scheduled (its input lists its files and
its write sessions' key, :class:`staccato.datasets.models.BatchInput`) and whether it
ended, and each large file's child transfer started. This module reads it, once, when
``status`` of such an ended dataset is asked:

* a batch with no end event (only a terminate leaves one): each of its files at a
  local destination this process sees is looked at: published by this run when it is
  there, its listed size, changed since the batch was scheduled (counted done); else
  its session's temp file (named by the batch's key and the file's index,
  ``staccato.activities.dataset``: ``<key>-<index>``) is named while it or its journal
  is there. Elsewhere (SFTP, S3, a directory not seen here) nothing can be told: each
  file's temp file is named as one that may be left, and the counts say they are the
  last known.
* a child transfer that did not complete: its own ``status`` (its memo's
  ``left_behind``, or a terminated run's derived one) when it names something left.

Every name found is a :class:`~staccato.datasets.models.FileFailure` with a
``left_behind``, so the dataset's ``left behind`` lines say it and its next run sweeps
it (``DatasetRequest.sweep``, from the last run's failures).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from temporalio.api.enums.v1 import EventType

from staccato.datasets.models import BatchInput, FileFailure
from staccato.datasets.names import destination_url
from staccato.errors import StaccatoError
from staccato.leftovers import TERMINATED_LEAD, shown_left_behind
from staccato.models import TransferState
from staccato.run_fields import TRANSFER_TYPE
from staccato.temp_names import journal_of, session_temp
from staccato.urls import parse_url

if TYPE_CHECKING:
    from temporalio.client import WorkflowHandle

    from staccato.client import StaccatoClient

#: history events read at most (a run's history is bounded by its continue-as-new;
#: past this, what is in flight is not told)
MAX_EVENTS = 20_000
#: child transfers asked for their status, at most
MAX_CHILDREN_ASKED = 16
#: files of batches in flight named as maybe left, at most
MAX_NAMED = 200

_CLOSED_ACTIVITY = {
    EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: "activity_task_completed_event_attributes",
    EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED: "activity_task_failed_event_attributes",
    EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: "activity_task_timed_out_event_attributes",
    EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED: "activity_task_canceled_event_attributes",
}


@dataclass
class InFlight:
    """What the ended run had in flight.

    Attributes:
        files_published, bytes_published: files of batches in flight found published
            at the destination (local only), and their listed bytes.
        files_untold: files of batches in flight whose outcome cannot be told from here
            (a destination this process does not see).
        left: files whose partial data may be left (``left_behind`` set).
        history_read: False when the history was not read whole (too long, or an
            error): nothing is told then.
    """

    files_published: int = 0
    bytes_published: int = 0
    files_untold: int = 0
    left: list[FileFailure] = field(default_factory=list)
    history_read: bool = True


async def in_flight_at_end(
    client: StaccatoClient,
    handle: WorkflowHandle[Any, Any],
    root: str,
    *,
    terminated: bool,
    known: set[str],
) -> InFlight:
    """What the ended dataset run of ``handle`` (its run id set) to ``root`` (its
    canonical destination root URL, one root) had in flight: its batches with no end
    event (``terminated`` only: a cancel or failure ends its batches itself) and its
    child transfers that did not complete. ``known``: the names its failures already
    list (not listed again). Best effort: an RPC error or a history over
    :data:`MAX_EVENTS` events tells nothing (``history_read`` False).

    Returns:
        :class:`InFlight`.
    """
    batches: dict[int, tuple[BatchInput, datetime]] = {}
    children: dict[int, str] = {}
    try:
        count = 0
        async for event in handle.fetch_history_events():
            count += 1
            if count > MAX_EVENTS:
                return InFlight(history_read=False)
            kind = event.event_type
            if kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED and terminated:
                attrs = event.activity_task_scheduled_event_attributes
                if attrs.activity_type.name != "copy_batch":
                    continue
                decoded = await client.temporal.data_converter.decode(
                    attrs.input.payloads, [BatchInput]
                )
                if decoded and isinstance(decoded[0], BatchInput):
                    batches[event.event_id] = (decoded[0], event.event_time.ToDatetime())
            elif kind in _CLOSED_ACTIVITY:
                scheduled = getattr(event, _CLOSED_ACTIVITY[kind]).scheduled_event_id
                batches.pop(scheduled, None)
            elif kind == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
                attrs_c = event.start_child_workflow_execution_initiated_event_attributes
                if attrs_c.workflow_type.name == TRANSFER_TYPE:
                    children[event.event_id] = attrs_c.workflow_id
            elif kind == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED:
                done = event.child_workflow_execution_completed_event_attributes
                children.pop(done.initiated_event_id, None)
    except Exception:  # noqa: BLE001 - best effort: the status as the memo says it
        return InFlight(history_read=False)
    found = InFlight()
    for batch, scheduled_at in batches.values():
        _look_at_batch(batch, scheduled_at.timestamp(), found, known)
    await _children_left(client, list(children.values())[:MAX_CHILDREN_ASKED], root, found, known)
    return found


def _look_at_batch(batch: BatchInput, since: float, found: InFlight, known: set[str]) -> None:
    """Tell each file of ``batch`` (in flight when its run was terminated; scheduled at
    ``since``, Unix seconds) published or maybe left, into ``found``."""
    try:
        root = parse_url(batch.destination_root)
    except StaccatoError:
        found.files_untold += len(batch.files)
        return
    for index, item in enumerate(batch.files):
        try:
            url = destination_url(root, item.name)
        except StaccatoError:
            continue
        temp = session_temp(url.path, f"{batch.key}-{index}")
        local = url.scheme == "file" and os.path.isdir(os.path.dirname(url.path))
        if local:
            try:
                stat = os.stat(url.path)
            except OSError:
                stat = None
            # published by this run: there, its listed size, put there (renamed in:
            # its ctime) since the batch was scheduled (a copy an earlier run left has
            # an older ctime)
            if stat is not None and stat.st_size == item.size and stat.st_ctime >= since - 1:
                found.files_published += 1
                found.bytes_published += item.size
                continue
            if not (os.path.lexists(temp) or os.path.lexists(journal_of(temp))):
                continue  # not published, nothing left: not begun, or removed
        else:
            found.files_untold += 1
        if item.name in known or len(found.left) >= MAX_NAMED:
            continue
        text = _batch_left(url.canonical, temp, local)
        found.left.append(
            FileFailure(
                name=item.name,
                reason=(
                    "its batch was in flight when the dataset was terminated"
                    + ("" if local else ": whether it was published is not known here")
                ),
                left_behind=text,
            )
        )
        known.add(item.name)


def _batch_left(url: str, temp: str, local: bool) -> str:
    """The ``left_behind`` words of a terminated batch's file at ``url`` whose session
    temp file is ``temp`` (in the words of ``failures.left_behind`` for a dataset's
    file, after :data:`TERMINATED_LEAD`); ``local``: the temp file or its journal was
    seen there, else it may or may not have been made."""
    from staccato.models import WriteSession
    from staccato.workflows.failures import left_behind

    text = left_behind(
        WriteSession(url=url, size=0, chunk_size=0, session_id=temp), in_a_dataset=True
    )
    # the words of a file whose server did not answer: here the run was terminated
    text = text.replace("once its server answers, run the dataset", "run the dataset")
    if not local:
        text = (
            "if its batch had begun this file (not known from here: the batch wrote no "
            "checkpoint before the terminate), " + text
        )
    return TERMINATED_LEAD + text


async def _children_left(
    client: StaccatoClient, ids: list[str], root: str, found: InFlight, known: set[str]
) -> None:
    """Each child transfer of ``ids`` that names something left (its own status's
    ``left_behind``), as a failure of its file (its name under ``root``) into
    ``found``."""
    for child in ids:
        try:
            status = await client.status(child)
        except Exception:  # noqa: BLE001 - best effort: one child not told
            continue
        if not status.left_behind or status.state == TransferState.completed:
            continue
        name = _name_under(status.destination, root)
        if name is None or name in known:
            continue
        found.left.append(
            FileFailure(
                name=name,
                reason=f"its transfer {child} ended {status.state.value} with the dataset",
                left_behind=shown_left_behind(status.left_behind),
            )
        )
        known.add(name)


def _name_under(url: str, root: str) -> str | None:
    """The name of ``url`` (a canonical destination URL) under the dataset's ``root``."""
    prefix = root.rstrip("/") + "/"
    if not url.startswith(prefix):
        return None
    from urllib.parse import unquote

    return unquote(url[len(prefix) :])
