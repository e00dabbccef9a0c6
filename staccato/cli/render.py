"""How the ``staccato`` command shows transfers: the progress bar (a terminal), one
line every 2 s (a pipe or a log), ``status`` key/value lines and ``list`` rows.

Every size, rate and time comes from :mod:`staccato.units` (IEC units, as in the
Temporal UI's current-details line), and every rate and ETA is the one the status
reports (the streams' own heartbeats), never an estimate kept across a pause.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, Any

from staccato import units
from staccato.datasets.names import shown_name
from staccato.leftovers import TERMINATED_LEAD
from staccato.models import (
    NO_WORKER_ANSWERS,
    WORKER_BUSY,
    GroupState,
    TransferState,
    TransferStatus,
    TuningView,
)
from staccato.step_endpoints import step_endpoints_named

if TYPE_CHECKING:  # only an annotation here: `--help` needs no Temporal client
    from staccato.client import StaccatoClient

_TERMINAL = (TransferState.completed, TransferState.failed, TransferState.cancelled)
#: seconds between two progress lines when stderr is not a terminal
PLAIN_LINE_INTERVAL_S = 2.0


def size(n: float) -> str:
    """Bytes for people, in binary units: ``512 B``, ``1.5 MiB`` (:func:`staccato.units.size`)."""
    return units.size(n)


def retry_note(s: TransferStatus) -> str:
    """``retrying: <reason> (next attempt at <time>)``; ``waiting: no worker answers
    ...`` when the reason is that no worker answers (nothing is retried: the run, begun
    or not, waits for a worker; tester58 G8 read "retrying" of a run never begun); ""
    when nothing is retrying."""
    if not s.last_retry_error:
        return ""
    if s.last_retry_error.startswith(NO_WORKER_ANSWERS):
        return f"waiting: {s.last_retry_error}"
    if s.last_retry_error.startswith(WORKER_BUSY):  # a worker runs it: not waiting
        return s.last_retry_error
    when = f" (next attempt at {s.next_attempt_at})" if s.next_attempt_at else ""
    return f"retrying: {s.last_retry_error}{when}"


def ended_bytes_text(state: str, done: int, total: int | None) -> str | None:
    """``0 B copied`` for a run that ended failed or cancelled before its size was
    known (``0 B / ?`` read as if it went on) or with all of it counted (``0 B / 0 B
    (100%)`` read as a success): :func:`staccato.units.ended_short_text`; None
    otherwise."""
    if state in (TransferState.failed, TransferState.cancelled):
        return units.ended_short_text(done, total)
    return None


def took_text(duration_s: float | None, copied: int) -> str:
    """``, in 12.4 s (85.3 MiB/s average)``: how long a completed transfer took from its
    start to verified (``duration_s``, seconds; the result's) and the average rate of
    the ``copied`` bytes over it; "" when the duration is not known (an older worker's
    result)."""
    if duration_s is None:
        return ""
    # to the tenth of a second below a minute: the rate is over the same span (a
    # 1.1 s copy read "in 2 s (231 MiB/s average)")
    took = f"{duration_s:.1f} s" if duration_s < 60 else units.duration(duration_s)
    rate = f" ({units.rate(copied / duration_s)} average)" if duration_s > 0 and copied else ""
    return f", in {took}{rate}"


def idle_text(since: str, who: str = "batch", phase: str | None = None) -> str:
    """A running dataset (``who``: its batches) or transfer (its ``"stream"``) in
    which nothing moves: since when, and what it waits for (a transfer in ``phase``
    ``"verify"``: the destination's server, which hashes or sends back what was
    written)."""
    if phase == "verify":
        return (
            f"nothing moved since {since}: the verify is waiting for the destination to "
            "answer (its server hashes the data written, or sends it back to be hashed)"
        )
    return (
        f"nothing moved since {since}: waiting for the source or destination to answer "
        f"(a {who} that gets none gives up --retry-for after its last progress)"
    )


def step_wait_text(s: TransferStatus, *, line: bool = False) -> str:
    """A short step whose attempt waits for its endpoint (``s.stalled_step``, since
    ``s.idle_since``), naming the step and the servers it talks to with their roles
    (:func:`staccato.step_endpoints.step_endpoints_named`, canonical URLs): ``prepare:
    waiting for s3://b/k (the destination) to answer since T``, and, for the
    ``status`` line (not ``line``, the progress line's), what that means. A step on
    local files only waits for the worker's file system."""
    step = s.stalled_step or "step"
    if s.stalled_heartbeat:
        # its worker process sent no heartbeat lately: the process, not the endpoint
        text = f"{step}: no heartbeat from its worker process (last motion {s.idle_since})"
        if line:
            return text
        return (
            f"{text}: the process may have stopped (killed or frozen); Temporal runs the "
            "step again after its heartbeat timeout"
        )
    servers = step_endpoints_named(step, s.source, s.destination)
    waited = f"{servers} to answer" if servers else "the worker's file system"
    text = f"{step}: waiting for {waited} since {s.idle_since}"
    if line:
        return text
    what = "a server that accepts connections and says nothing" if servers else "a hung mount"
    return f"{text} ({what}, or a very slow one; the step gives up once its retries run out)"


def untuned_text(s: TransferStatus) -> str:
    """Why a copy on a tuned link runs fixed streams (``s.untuned``): ``off: a
    rate-capped copy (--max-rate) is not tuned: ...``."""
    if s.untuned == "max_rate":
        return (
            f"off: a rate-capped copy (--max-rate) is not tuned, the cap and not the link "
            f"is its bottleneck: the fixed {units.counted(s.streams, 'stream')} x "
            f"{units.size(s.chunk_size)} run (--streams and --chunk-size set them)"
        )
    return f"off ({s.untuned})"


def publish_wait_text(s: TransferStatus) -> str:
    """A publish waiting for its store while its worker heartbeats
    (``s.publish_waiting_since``): ``waiting for s3://b/k (the destination) to
    assemble 8 parts into the object since T (12 s)``; without a part count, ``to
    answer``. Not a stall: S3 documents that completing a multipart upload "could take
    several minutes" (AWS S3 API reference, CompleteMultipartUpload), and a ~6 s one
    on moto read "stalled: publish"."""
    servers = step_endpoints_named("publish", s.source, s.destination)
    parts = s.publish_waiting_parts
    if parts is not None:
        destination = step_endpoints_named("publish", "", s.destination) or "the destination"
        what = f"{destination} to assemble {units.counted(parts, 'part')} into the object"
    else:
        what = f"{servers} to answer" if servers else "the worker's file system"
    waited = units.duration(s.publish_waiting_s) if s.publish_waiting_s is not None else "?"
    return f"waiting for {what} since {s.publish_waiting_since} ({waited})"


def publish_wait_note(s: TransferStatus) -> str:
    """``status``' line of a publish waiting for its store (:func:`publish_wait_text`)
    with what that means: its worker heartbeats, so it is not stalled; a store
    assembling parts may take minutes, a server that says nothing is named so."""
    why = (
        "a store may take minutes to complete a large multipart upload"
        if s.publish_waiting_parts is not None
        else "a server that accepts connections and says nothing, or a very slow one"
    )
    return (
        f"{publish_wait_text(s)}; its worker heartbeats, so it is not stalled ({why}); "
        "the step gives up once its retries run out"
    )


def no_heartbeat_text(since: str, who: str = "batch") -> str:
    """A running dataset whose batches (``who``) all sent no heartbeat for a while
    (``since``: the last one, ISO 8601): its worker's process stopped, not the
    endpoints (a batch waiting on a server heartbeats on)."""
    return (
        f"no heartbeat from the worker process running its {who}es since {since}: the "
        "process may have stopped (killed or frozen); Temporal runs them again after "
        "their heartbeat timeout"
    )


def progress_text(s: TransferStatus) -> str:
    """``1.0 MiB / 4.0 MiB (25%) at 2.0 MiB/s, ETA 2 s`` and a retry note if one is pending;
    ``up to date (size): nothing copied`` for a transfer its sync level skipped; ``0 B
    copied`` for one that ended before its size was known."""
    if s.up_to_date and s.sync_level:
        return f"up to date ({s.sync_level.value}): nothing copied"
    ended = ended_bytes_text(s.state.value, s.bytes_done, s.bytes_total)
    if ended is not None:
        return ended
    text = units.progress(s.bytes_done, s.bytes_total, s.rate_bytes_per_s, s.eta_s)
    if s.phase == "staging" and s.staged_bytes is not None:  # the source read into the cache
        rate = s.staging_rate_bytes_per_s
        left = None if s.bytes_total is None else s.bytes_total - s.staged_bytes
        eta = units.eta(left, rate) if left is not None else None
        text = "staging " + units.progress(s.staged_bytes, s.bytes_total, rate, eta)
    if s.state.value in _ENDED:  # a failed run's clean-up retrying: said apart
        return text
    verifying = s.phase == "verify" and s.state == TransferState.running
    if verifying and s.verified_bytes is not None:
        # the copy is over: the bytes read back and checked, at their own rate and ETA
        text = f"{text}, verifying " + units.progress(
            s.verified_bytes, s.verify_bytes_total, s.verify_rate_bytes_per_s, s.verify_eta_s
        )
    elif verifying:  # the copy is over: its data is checked (a bare "100%" said nothing)
        text = f"{text}, verifying"
    if s.phase == "publish" and s.state == TransferState.running and s.publish_copied_bytes:
        # a publish writing a fresh copy (SFTP, after an earlier worker life): its bytes
        # move, it does not wait for its server (tester73 M3)
        rate = s.publish_rate_bytes_per_s
        total = s.publish_bytes_total
        eta = units.eta(total - s.publish_copied_bytes, rate) if total is not None else None
        text = f"{text}, publishing: writing a fresh copy " + units.progress(
            s.publish_copied_bytes, total, rate, eta
        )
        if s.publish_waiting_since:  # its bytes stopped moving: since when
            text = f"{text}, {publish_wait_text(s)}"
    elif s.phase == "publish" and s.state == TransferState.running and s.publish_waiting_since:
        # its worker heartbeats: the store works (or does not answer) within the step's
        # timeout; not a stall
        text = f"{text}, publishing: {publish_wait_text(s)}"
    if s.idle_since and s.stalled_step:
        # a short step (stat, prepare, ...) waits for its endpoint: which, and since when
        text = f"{text}, stalled: {step_wait_text(s, line=True)}"
    elif s.idle_since:
        waits = " (waiting for the destination to answer)" if verifying else ""
        text = f"{text}, stalled: nothing moved since {s.idle_since}{waits}"
    return f"{text} {retry_note(s)}" if s.last_retry_error else text


def verify_level_text(s: TransferStatus) -> str:
    """A completed transfer's verify level, and for one checked whole before publish
    what that check was and how many segments it copied again, as done on the
    destination's kind (the workflow checks before publish when a chunk was not
    verified as it was written: ``staccato.workflows.transfer``):

    * a local file, ``full``: ``full: every byte read back before publish, 0 segments
      copied again``;
    * a local file, ``checksum``: its chunks are read back as they are written, so a
      whole check ran because the copy was paused or resumed: ``checksum: read back
      before publish (the copy was paused or resumed), 0 segments copied again``;
    * SFTP: every copy's temp file is checked before publish, paused or not (the
      server hashes it, or it is read back over SFTP: docs/sftp.md, "Verifying an
      upload"): ``checksum: temp file checked against the source's checksums before
      publish (hashed on the server, or read back over SFTP), 0 segments copied
      again``.
    """
    level = s.verify_level.value if s.verify_level is not None else "?"
    if s.segments_copied_again is None:
        return level
    again = units.counted(s.segments_copied_again, "segment")
    if level == "full":
        return f"{level}: every byte read back before publish, {again} copied again"
    if s.destination.startswith("sftp://"):
        # tester75: a 1 GiB copy never interrupted said "paused or resumed"; an SFTP
        # writer cannot read a chunk back as it writes, so this check is every copy's
        return (
            f"{level}: temp file checked against the source's checksums before publish "
            f"(hashed on the server, or read back over SFTP), {again} copied again"
        )
    # a local file: a read-back ran only because the copy was paused or resumed by
    # another worker, and it reads the chunks that need it (README "Integrity"), not
    # necessarily every byte (tester74 read "every byte" after a pause)
    return (
        f"{level}: read back before publish (the copy was paused or resumed), {again} copied again"
    )


def tuning_text(t: TuningView, ended: bool = False) -> str:
    """The optimizer's choice in one line: ``8 streams x 16.0 MiB (at most 16) at
    190.7 MiB/s; last: <reason>``. For a transfer that ``ended`` (its last reason
    names a next step that will not come): what it learned and its last setting, ``learned 8
    streams x 16.0 MiB at 190.7 MiB/s (the link's next start); last set to 12 streams
    (at most 16) after 5 decisions``; or ``nothing learned for the link (<why>); ...``
    when its streams read a known copy or a staged entry (another link's rate)."""
    if ended:
        size = units.size(t.chunk_size)
        learned = ""
        if t.learned_streams is not None:
            learned = f"learned {units.counted(t.learned_streams, 'stream')} x {size}"
            if t.learned_rate_bytes_per_s:
                learned += f" at {units.rate(t.learned_rate_bytes_per_s)}"
            learned += " (the link's next start); "
        elif t.not_recorded:
            learned = f"nothing learned for the link ({t.not_recorded}); "
        used = f"last set to {units.counted(t.streams, 'stream')}" + (
            "" if t.learned_streams is not None else f" x {size}"
        )
        if t.rate_bytes_per_s and t.learned_streams != t.streams:
            used += f" at {units.rate(t.rate_bytes_per_s)}"
        decisions = f" after {t.decisions} decision{'s' if t.decisions != 1 else ''}"
        return f"{learned}{used} ({_at_most(t)}){decisions}"
    text = f"{units.counted(t.streams, 'stream')} x {units.size(t.chunk_size)} ({_at_most(t)})"
    if t.rate_bytes_per_s:
        text += f" at {units.rate(t.rate_bytes_per_s)}"
    if t.reasons:
        text += f"; last: {t.reasons[-1]}"
    return text


def _at_most(t: TuningView) -> str:
    """``at most 4: the worker's memory budget ...`` (what set the cap, when known)."""
    return f"at most {t.max_streams}" + (
        f": {t.max_streams_reason}" if t.max_streams_reason else ""
    )


#: states of a transfer whose optimizer made its last decision
_ENDED = frozenset({"completed", "failed", "cancelled"})


#: states in which a requested cancel has not taken effect yet
_CANCELLABLE = frozenset({"scheduled", "queued", "running"})


def state_text(state: str, starts_at: str | None = None, cancel_requested: bool = False) -> str:
    """A state as a progress line shows it: ``cancelling`` once a cancel of a transfer
    or dataset still ``scheduled``, ``queued`` or ``running`` is requested (it stops
    and cleans up, which may take until a hung destination answers or its clean-up
    gives up; before, the line said ``running`` until then: tester62, tester63);
    ``scheduled`` only for a start that waits for its time (``--not-before``, a
    Schedule); one just submitted that no worker has begun yet reads ``starting``
    (``status`` keeps the state's own name)."""
    if cancel_requested and state in _CANCELLABLE:
        return "cancelling"
    return "starting" if state == "scheduled" and not starts_at else state


def cancel_requested_text(at: str | None, what: str = "run") -> str:
    """``status``' line of a cancel asked and not taken effect yet (``at``: when it was
    asked, ISO 8601; None: not known): that it waits for a worker to end the ``what``
    (a frozen worker's transfer said ``running`` and only ``yes (not taken effect
    yet)``: tester69)."""
    when = f"requested at {at}" if at else "requested"
    return (
        f"yes, {when} (not taken effect yet: it waits for a worker to stop the {what} "
        "and remove its partial data)"
    )


def plain_line(s: TransferStatus) -> str:
    """One progress line for a pipe or a log: ``running: <progress_text>``."""
    return f"{state_text(s.state.value, s.starts_at, s.cancel_requested)}: {progress_text(s)}"


def durable_text(s: TransferStatus) -> str:
    """``16.0 MiB (50%) kept (journaled: a resume does not send it again; bytes_done
    counts the chunks in flight too)``: ``bytes_durable``, shown where it differs from
    ``bytes_done``; of a failed or cancelled run, ``nothing kept`` once its clean-up
    ran (0), else what was durable when it ended. While its clean-up still runs
    (``cleanup`` set) it is said to be removing the partial data, never to have
    removed it; once over, removed only when nothing is left behind."""
    value = s.bytes_durable or 0
    share = units.percent(value, s.bytes_total)
    size = units.size(value) + (f" ({share})" if share else "")
    if s.state.value in _ENDED:
        moved = units.size(s.bytes_done)
        if s.state.value != "completed" and s.cleanup:
            # still removing it (tester65 T5: "removed" while the same status said the
            # temp file was still being removed, and it was there)
            return (
                f"{size} durable when it ended ({moved} had moved); no transfer resumes "
                "from it, and the run's clean-up is still removing its partial data"
            )
        if s.state.value != "completed" and not value and s.left_behind:
            # the clean-up gave up or was stopped (or never ran: terminated, tester
            # F4): never said removed (tester63)
            why = (
                "the run was terminated, so no clean-up removed its partial data"
                if s.left_behind.startswith(TERMINATED_LEAD)
                else "the run's clean-up could not remove its partial data"
            )
            return (
                f"{size}: nothing kept (no transfer resumes from it), but {why}: see "
                f"left_behind ({moved} had moved)"
            )
        if s.state.value == "failed" and s.published:
            # failed after it published: the object is at the destination (a tester
            # read "the run's clean-up removed its partial data" with a corrupt object
            # at the key)
            return (
                f"{size}: nothing kept; the run failed after it published, so the "
                "destination holds the object this run published (it replaced what was "
                f"there before; see error) ({moved} had moved)"
            )
        if s.state.value != "completed" and not value:
            return f"{size}: nothing kept, the run's clean-up removed its partial data ({moved} had moved)"
        return f"{size} durable when it ended ({moved} with the chunks then in flight)"
    return (
        f"{size} kept (journaled: a resume does not send it again; "
        "bytes_done counts the chunks in flight too)"
    )


def status_lines(s: TransferStatus) -> list[str]:
    """``staccato status``: one ``key value`` line per field that has a value; sizes,
    rates and times for people (``--json`` keeps the exact numbers)."""
    lines: list[str] = []
    for key, value in s.to_json_dict().items():
        figures_hidden = s.tuner_chooses or s.streams_unknown
        if value is None and not (key in ("streams", "chunk_size") and figures_hidden):
            continue
        shown: Any = value
        if key == "bytes_total":
            shown = f"{units.size(value)} ({value} bytes)"
        elif key == "bytes_done":
            share = units.percent(value, s.bytes_total)
            shown = f"{units.size(value)}" + (f" ({share})" if share else "")
        elif key == "bytes_durable":
            if value == s.bytes_done and not (value and s.state.value in ("failed", "cancelled")):
                # nothing in flight: said by bytes_done (a failed run still removing its
                # partial data says what it holds: the line was missing then)
                continue
            shown = durable_text(s)
        elif key == "cancel_requested":
            if not value:
                continue
            shown = cancel_requested_text(s.cancel_requested_at)
        elif key == "cancel_requested_at":
            continue  # said on the cancel_requested line
        elif key == "rate_bytes_per_s":
            key, shown = "rate", units.rate(value)
        elif key == "staging_rate_bytes_per_s":
            key, shown = "staging rate", units.rate(value)
        elif key == "eta_s":
            key, shown = "eta", units.duration(value)
        elif key in ("tuner_chooses", "streams_unknown"):
            continue  # said on the streams and chunk_size lines
        elif key in ("streams", "chunk_size") and s.tuner_chooses:
            shown = "chosen by the tuner as the copy starts (per-link optimizer)"
        elif key in ("streams", "chunk_size") and s.streams_unknown:
            shown = "chosen by the tuner (per-link optimizer); unknown until a worker answers"
        elif key == "chunk_size":
            shown = units.size(value)
        elif key == "untuned":
            key, shown = "tuning", untuned_text(s)
        elif key == "tuning" and s.tuning is not None:
            shown = tuning_text(s.tuning, ended=s.state.value in _ENDED)
        elif key == "idle_since" and s.stalled_step:
            key, shown = "stalled", step_wait_text(s)
        elif key == "idle_since":
            key, shown = "stalled", idle_text(value, "stream", s.phase)
        elif key in ("stalled_step", "stalled_heartbeat"):
            continue  # said on the stalled line
        elif key == "staged_bytes":
            share = units.percent(value, s.bytes_total)
            shown = f"{units.size(value)}" + (f" ({share})" if share else "")
        elif key == "verified_bytes":
            key, shown = "verified", units.progress(value, s.verify_bytes_total, None, None)
        elif key == "verify_rate_bytes_per_s":
            key, shown = "verify rate", units.rate(value)
        elif key == "verify_eta_s":
            key, shown = "verify eta", units.duration(value)
        elif key == "publish_copied_bytes":
            key = "publishing"
            shown = "writing a fresh copy " + units.progress(
                value, s.publish_bytes_total, s.publish_rate_bytes_per_s, None
            )
            if s.publish_waiting_since:
                shown = f"{shown}; {publish_wait_note(s)}"
        elif key in ("publish_bytes_total", "publish_rate_bytes_per_s"):
            continue  # said on the publishing line
        elif key == "publish_waiting_since":
            if s.publish_copied_bytes:
                continue  # said on the fresh copy's publishing line
            key, shown = "publishing", publish_wait_note(s)
        elif key in ("publish_waiting_s", "publish_waiting_parts"):
            continue  # said on the publishing line
        elif key in ("verify_bytes_total", "segments_copied_again"):
            continue  # said on the verified and verify lines
        elif key == "verify_level":
            key, shown = "verify", verify_level_text(s)
        elif isinstance(value, str):
            # one line per field: a reason naming an S3 key with a newline shows it as
            # ``cp -r`` does (control characters as \xNN)
            shown = shown_name(value)
        lines.append(f"{key:18} {shown}")
    return lines


#: the state column of ``staccato list``: as wide as the longest state of a transfer,
#: dataset or group (``completed_with_errors``, a group's and a dataset's), so every
#: row's progress lines up. A dataset's states are not imported here (a transfer
#: command loads no dataset module); the test checks they fit.
LIST_STATE_WIDTH = max(len(state.value) for kind in (TransferState, GroupState) for state in kind)


def list_row(s: TransferStatus) -> str:
    """``staccato list``: id, state (:data:`LIST_STATE_WIDTH` wide), progress, source ->
    destination; a queued transfer's reason on an indented line below."""
    state = f"{s.state.value:{LIST_STATE_WIDTH}}"
    row = f"{s.id}  {state} {progress_text(s):40}  {s.source} -> {s.destination}"
    return row + queued_line(s.state.value, s.reason)


def queued_line(state: str, reason: str | None) -> str:
    """The line under a queued row of ``staccato list`` saying why it waits (empty when
    it is not queued or gives no reason)."""
    return f"\n    queued: {reason}" if state == "queued" and reason else ""


class Bar:
    """The progress bar on a terminal: ``running ━━━━━━━━━━ 512.0 MiB / 1.0 GiB (50%)
    at 20.0 MiB/s, ETA 26 s``. The rate and ETA are the status's own, so a
    pause shows none at once and a resume shows the new ones with the first heartbeats.
    Use as a context manager; :meth:`update` with each status."""

    def __init__(self, console: Any) -> None:
        from rich.progress import BarColumn, Progress, TextColumn

        self.progress = Progress(
            TextColumn("[bold]{task.fields[state]}"),
            BarColumn(),
            TextColumn("{task.fields[text]}"),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task("copy", total=None, state="starting", text="")

    def __enter__(self) -> Bar:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def update(self, s: TransferStatus) -> None:
        """Show a transfer's status: its bytes done of its size."""
        self.show(
            total=s.bytes_total if s.bytes_total else None,
            completed=s.bytes_done,
            state=state_text(s.state.value, s.starts_at, s.cancel_requested),
            text=progress_text(s),
        )

    def show(self, *, total: int | None, completed: int, state: str, text: str) -> None:
        """Show ``completed`` of ``total`` (None: not known yet, the bar pulses) with
        ``state`` and ``text`` (the rate and ETA are in ``text``: the one ETA shown,
        the status's own)."""
        self.progress.update(self.task, total=total, completed=completed, state=state, text=text)


#: variables with which rich decides by itself whether stderr is a terminal
_RICH_TERMINAL_VARIABLES = ("FORCE_TERMINAL", "TTY_COMPATIBLE", "TTY_INTERACTIVE")
#: seconds between two status polls under a progress bar
BAR_INTERVAL_S = 0.5


def stderr_console() -> Any | None:
    """A rich ``Console`` on stderr when stderr is a terminal (a progress bar can be
    drawn), else None. rich (~0.05 CPU-s to import) is loaded only then, or when one
    of rich's own variables (``FORCE_TERMINAL``, ``TTY_COMPATIBLE``,
    ``TTY_INTERACTIVE``) may override what ``isatty`` says."""
    if not sys.stderr.isatty() and not any(v in os.environ for v in _RICH_TERMINAL_VARIABLES):
        return None
    from rich.console import Console

    console = Console(stderr=True)
    return console if console.is_terminal else None


def say(line: str) -> None:
    """One progress line on stderr, as it is (no markup: a ``[`` in a reason stays)."""
    print(line, file=sys.stderr, flush=True)


def staging_note(s: TransferStatus) -> str:
    """The line that says why a transfer not given ``--stage`` is staged: its source
    cannot serve byte ranges (the workflow stages such a source by itself)."""
    return (
        f"staging: {s.source} does not serve byte ranges, so the worker reads it once, "
        "whole, into its staging cache (STACCATO_STAGING_DIR) and writes the destination "
        "from there; a failure at the destination does not read the source again"
    )


async def follow(
    client: StaccatoClient, transfer: str, *, quiet: bool, stage_asked: bool = True
) -> TransferStatus:
    """Follow ``transfer`` until it ends and return its last status: a progress bar on
    a terminal (a status every :data:`BAR_INTERVAL_S`), a line every
    :data:`PLAIN_LINE_INTERVAL_S` otherwise (a status as often), nothing if ``quiet``
    (no status asked until the end: :meth:`StaccatoClient.outcome`). The end is seen
    when the run ends, whatever the interval. Not ``stage_asked`` (``cp`` without
    ``--stage``): the first status in phase ``staging`` prints :func:`staging_note`
    (the source serves no byte ranges, so the service stages it by itself)."""
    if quiet:
        return await client.outcome(transfer)
    from staccato.cli.common import KilledUpHint, killed_up_warning

    # a killed `up` is said once: at the start, or when its worker stops answering
    # while this follows (a tester's cp said only "no worker answers" after the kill)
    hint = KilledUpHint(said=killed_up_warning())
    noted = stage_asked
    said_reason: str | None = None

    def note(s: TransferStatus) -> None:
        nonlocal noted
        hint.check(NO_WORKER_ANSWERS in (s.last_retry_error or ""))
        if not noted and s.phase == "staging":
            noted = True
            say(staging_note(s))

    def why_queued(s: TransferStatus) -> None:
        """On a pipe: why it is queued (the reason ``status`` gives, naming what it
        waits for), once and then on each change (``queued: 0 B / ?`` said nothing)."""
        nonlocal said_reason
        if s.state != TransferState.queued:
            said_reason = None  # queued again later: said again
        elif s.reason and s.reason != said_reason:
            said_reason = s.reason
            say(queued_line(s.state.value, s.reason).strip())

    console = stderr_console()
    final: TransferStatus | None = None
    if console is not None:
        with Bar(console) as bar:
            async for final in client.follow(transfer, interval_s=BAR_INTERVAL_S):
                note(final)
                bar.update(final)
    else:
        last_line = 0.0
        async for final in client.follow(transfer, interval_s=PLAIN_LINE_INTERVAL_S):
            note(final)
            why_queued(final)
            now = time.monotonic()
            if now - last_line >= PLAIN_LINE_INTERVAL_S or final.state in _TERMINAL:
                last_line = now
                say(plain_line(final))
    assert final is not None
    return final
