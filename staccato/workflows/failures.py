"""How the transfer workflow reads failures: of its input, of its activities.

Activities raise ``ApplicationError``s whose ``type`` is a :mod:`staccato.errors`
class's ``TYPE``; the workflow compares them with the constants here, never with
string literals.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.api.common.v1 import Payload
from temporalio.common import RawValue
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    FailureError,
    TimeoutError,
    TimeoutType,
)

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, ValidationError

    from staccato import errors
    from staccato.leftovers import unanswered_upload
    from staccato.models import Checkpoint, TransferRequest, WriteSession

    # re-exported: the workflows name them from here
    from staccato.step_endpoints import remote_endpoints as remote_endpoints
    from staccato.step_endpoints import step_endpoints as step_endpoints
    from staccato.temp_names import (
        TEMP_SUFFIX,
        WRITERS_SUFFIX,
        journal_of,
        leftover_pattern,
        session_temp,
    )
    from staccato.urls import parse_url

# failure types the workflow acts on (ApplicationError.type, from staccato.errors)
WRITE_SESSION_LOST = errors.WriteSessionLostError.TYPE
CHECKSUM_MISMATCH = errors.ChecksumMismatchError.TYPE
#: retrying cannot help (a request the workflow refuses before any write)
PERMANENT_ERROR = errors.PermanentError.TYPE
#: a front run's activity: the destination's transfer it ran as was cancelled by someone else
DESTINATION_CANCELLED = errors.DESTINATION_CANCELLED_TYPE
#: ``staccato.staging.StagedEntryLostError.TYPE``: a stream found the staged copy damaged or gone
STAGED_ENTRY_LOST = "StagedEntryLost"


#: the workflow's input when a start gave none (the parameter's default; its type stays
#: RawValue, which the SDK hands over undecoded)
NO_INPUT = RawValue(Payload())


def decode_request(raw: RawValue) -> TransferRequest:
    """Decode and validate the workflow input (:data:`NO_INPUT`: a start without input).

    Raises:
        ApplicationError: non-retryable, naming the payload encoding or each invalid
            field (a raw Temporal client can send anything), or saying what the input
            is when there is none.
    """
    if raw is NO_INPUT:
        raise ApplicationError(
            "TransferWorkflow needs its input: one JSON object "
            '{"source": URL, "destination": URL, "options": {...}} ("options" may be '
            "left out), e.g. temporal workflow start --type TransferWorkflow --input "
            '\'{"source": "https://example.com/a.bin", "destination": "file:///data/a.bin"}\'',
            type=errors.INVALID_INPUT_TYPE,
            non_retryable=True,
        )
    return decode_input(raw, TransferRequest, "TransferWorkflow")


Input = TypeVar("Input", bound=BaseModel)


def decode_input(raw: RawValue, model: type[Input], workflow_type: str) -> Input:
    """Decode and validate a workflow's JSON input as ``model`` (any Temporal client
    can start a workflow with any payload).

    Raises:
        ApplicationError: non-retryable, naming ``workflow_type`` and the payload
            encoding (one the codec encrypted and this worker cannot open, or not
            JSON) or each invalid field.
    """
    payload = raw.payload
    encoding = payload.metadata.get("encoding", b"").decode(errors="replace")
    if encoding == "binary/encrypted":
        raise ApplicationError(
            f"the {workflow_type} input is encrypted by the payload codec, and this worker has no "
            "codec key to open it: give the worker the client's STACCATO_CODEC_KEY (or "
            "STACCATO_CODEC_KEY_FILE)",
            type=errors.INVALID_INPUT_TYPE,
            non_retryable=True,
        )
    if encoding != "json/plain":
        raise ApplicationError(
            f"invalid {workflow_type} input: expected a JSON payload (encoding json/plain) "
            f"holding a {model.__name__}, got encoding {encoding or 'none'!r}",
            type=errors.INVALID_INPUT_TYPE,
            non_retryable=True,
        )
    try:
        return model.model_validate_json(payload.data)
    except ValidationError as err:
        problems = []
        for error in err.errors(include_url=False, include_input=False):
            where = ".".join(str(part) for part in error["loc"]) or "input"
            problems.append(f"{where}: {error['msg']}")
        raise ApplicationError(
            f"invalid {workflow_type} input: " + "; ".join(problems),
            type=errors.INVALID_INPUT_TYPE,
            non_retryable=True,
        ) from None


def stream_moved_on(err: ActivityError, known: int) -> int | None:
    """If ``err`` is a stream's retry-budget timeout and its last heartbeat shows more
    durable bytes than ``known``, those bytes; else None."""
    cause = err.cause
    if not isinstance(cause, TimeoutError) or cause.type != TimeoutType.SCHEDULE_TO_CLOSE:
        return None
    details = cause.last_heartbeat_details
    if not details:
        return None
    try:
        checkpoint = Checkpoint.model_validate(details[0])
    except ValidationError:
        return None
    return checkpoint.bytes_done if checkpoint.bytes_done > known else None


def durable_in(err: ActivityError, segment: int) -> int | None:
    """The bytes of ``segment`` a failed stream's error says were durable at the
    destination (``bytes_durable`` of its details, which ``copy_stream`` adds, or of
    its last heartbeat's :class:`Checkpoint`): the most any of them says; None when
    none says (a worker before ``bytes_durable``)."""
    cause = err.cause
    items = list(getattr(cause, "details", None) or ())
    if isinstance(cause, TimeoutError):
        items += list(cause.last_heartbeat_details or ())
    found: int | None = None
    for item in items:
        if not isinstance(item, dict) or item.get("segment") != segment:
            continue
        durable = item.get("bytes_durable")
        if isinstance(durable, int) and durable >= 0:
            found = durable if found is None else max(found, durable)
    return found


#: the key of a failed ``stage_source``'s error detail saying the most bytes its
#: attempts staged (also the key of its heartbeats' ``StagingProgress``)
STAGED_BYTES_DETAIL = "bytes_staged"


def staged_in(err: BaseException) -> int | None:
    """The bytes a failed ``stage_source`` (``err``, its ``ActivityError``) had staged:
    the most its error's details (``bytes_staged``, which the activity adds), its last
    heartbeat's (a timeout) or its cause's say; None when none says."""
    found: int | None = None
    seen: BaseException | None = getattr(err, "cause", None)
    while seen is not None:
        items = list(getattr(seen, "details", None) or ())
        if isinstance(seen, TimeoutError):
            items += list(seen.last_heartbeat_details or ())
        for item in items:
            staged = item.get(STAGED_BYTES_DETAIL) if isinstance(item, dict) else None
            if isinstance(staged, int) and not isinstance(staged, bool) and staged > 0:
                found = staged if found is None else max(found, staged)
        seen = seen.cause if isinstance(seen, FailureError) else None
    return found


#: the steps whose schedule-to-close deadline also allows the time one attempt may
#: take to copy its segment (so that a long healthy copy is never cut off); their
#: activities give up themselves once ``--retry-for`` passed without progress
#: (:mod:`staccato.activities.retry_deadline`)
ALLOWANCE_STEPS = ("copy_stream", "confirm_source", "stage_source")


def gave_up_message(
    step: str,
    retry_for: timedelta,
    last_error: str,
    *,
    allowance: bool,
    next_attempt: bool = False,
) -> str:
    """The one wording of a step that ran out of its retry budget (``--retry-for``):
    the workflow's, when Temporal's deadline passed, and an activity's that gave up
    itself after ``retry_for`` without progress.

    Args:
        step: the activity type (``copy_stream``).
        retry_for: the transfer's ``--retry-for``.
        last_error: the last attempt's error message.
        allowance: say that the deadline included the time one attempt may take.
        next_attempt: the deadline had not passed yet, but the next attempt (after
            its backoff) would start after it: say that (a give-up 1.5 s into a
            ``--retry-for 3 s`` said the deadline passed).
    """
    extra = " plus the time one attempt may take to copy its segment" if allowance else ""
    if next_attempt:
        return (
            f"gave up: the {step} step kept failing and the next attempt would start "
            f"after --retry-for ({duration(retry_for)}) without progress{extra}; last "
            f"error: {last_error}"
        )
    return (
        f"gave up: the {step} step kept failing and the retry deadline "
        f"passed (--retry-for {duration(retry_for)} without progress{extra}; "
        f"no attempt starts after it); last error: {last_error}"
    )


def timed_out_text(step: str, where: str, last: BaseException | None) -> str | None:
    """The last error of a step whose retry deadline passed, worded when it is a
    timeout (``last``: Temporal's ``TimeoutError`` of the last attempt) or when there
    is none (``last`` None: the deadline passed while an attempt was still running,
    before any attempt failed); None when ``last`` is another error (its own message
    says it).

    A step that talks to an endpoint and neither answers nor fails (a stopped server
    accepts connections and then says nothing) ends so: the wording names ``where``
    (:func:`step_endpoints`) and says it did not answer, instead of "none recorded"
    or Temporal's "activity Heartbeat timeout". ``where`` "": the step reads and
    writes local files only, so its worker is named (frozen, overloaded or killed),
    not the files as servers.
    """
    hint = (
        "it may be hung or stopped (a server that accepts connections and does not "
        "answer), or the worker running the step was frozen or overloaded. Check it, "
        "then run the transfer again"
    )
    if not where:
        where = "its worker"
        hint = (
            "the step reads and writes local files only, so the worker process running "
            "it was frozen, overloaded or killed. Check the worker, then run the "
            "transfer again"
        )
    if last is None:
        return (
            f"{where} did not answer: the {step} attempt under way when the deadline passed "
            f"had not finished; {hint}"
        )
    if not isinstance(last, TimeoutError):
        return None
    if last.type == TimeoutType.HEARTBEAT:
        how = "sent no heartbeat for its heartbeat timeout (it was blocked)"
    elif last.type == TimeoutType.START_TO_CLOSE:
        how = "did not finish within its start-to-close timeout"
    else:
        how = "did not finish before its deadline"
    return f"{where} did not answer: the last {step} attempt {how}; {hint}"


def partial_data(session: WriteSession) -> str:
    """Where a write session's partial data is, in words: ``the multipart upload ID of
    s3://b/k`` or ``the temp file /dir/.f.staccato-... beside sftp://h/dir/f`` (no
    secret: a canonical URL and the session id, a temp path or an upload id)."""
    if session.url.startswith("s3://"):
        return f"the multipart upload {session.session_id} of {session.url}"
    return f"the temp file {session.session_id} beside {session.url}"


def leftovers_swept(destination: str) -> bool:
    """Whether the next transfer to ``destination`` (a canonical URL) removes the temp
    files and journals earlier runs left beside it: a file or SFTP destination whose
    name :func:`staccato.temp_names.leftover_pattern` gives a pattern for (the one
    rule: not a name over ``SWEPT_NAME_BYTES``). S3 and other schemes: False."""
    if not destination.startswith(("file://", "sftp://")):
        return False
    try:
        path = parse_url(destination).path
    except errors.InvalidURLError:
        return False
    return leftover_pattern(path.rsplit("/", 1)[-1]) is not None


def left_behind(session: WriteSession, in_a_dataset: bool = False) -> str:
    """What a failed run whose clean-up gave up (or was cancelled) left, and how to
    remove it, in words (memo ``left_behind``; no secret: a canonical URL, a temp path
    or an upload id). File and SFTP: the next transfer to the same destination removes
    it (:func:`leftovers_swept`), else delete both files by hand (their paths); a
    dataset's file (``in_a_dataset``): the next run of the dataset (``cp -r``, with
    ``--retry-failed`` or not) removes them (``DatasetRequest.sweep``, from the last
    run's ``left_behind``), or a ``staccato cp`` of that file alone, or by hand; S3: abort the
    upload (nothing tells Staccato's uploads from others there). SFTP: its writers
    directory (``.NAME.<key>.staccato-writers``, :mod:`staccato.endpoints.sftp.writers`,
    with an entry per writer that did not close) may be left too, and is named (the
    sweep removes it with the temp file; by hand, with what is in it). Before, only the
    temp file and journal were named (issue 11). Text only: no command changes."""
    if session.url.startswith("s3://"):
        return (
            f"{partial_data(session)} may be left open (its parts are stored until it is "
            "aborted): abort it (S3 AbortMultipartUpload with that upload id, e.g. `aws "
            "s3api abort-multipart-upload`), or let a bucket lifecycle rule for incomplete "
            "multipart uploads remove it"
        )
    temp = session.session_id
    journal = journal_of(temp)
    writers = _writers_of(session)
    also = (
        "its .staccato-journal"
        if writers is None
        else (f"its .staccato-journal and its writers directory {writers}")
    )
    # what to delete by hand: both files, or both and the writers directory
    them = "both" if writers is None else "them"
    paths = (
        f"{temp} and {journal}"
        if writers is None
        else f"{temp}, {journal} and the directory {writers} with what is in it"
    )
    if leftovers_swept(session.url) and not in_a_dataset:
        return (
            f"{partial_data(session)} (and {also}) may be left: the next "
            "transfer to this destination removes it once it gets to write (a `cp` or "
            "`submit` of this file, not a `cp -r` of its directory), or delete "
            + (f"both files by hand ({paths})" if writers is None else f"them by hand ({paths})")
        )
    if leftovers_swept(session.url):  # a dataset's file
        return (
            f"{partial_data(session)} (and {also}) may be left: once its "
            "server answers, run the dataset again (`cp -r`, or `cp -r --retry-failed`: "
            "its first run removes them) or copy this file alone (`staccato cp` to "
            f"{session.url}), or delete {them} by hand ({paths})"
        )
    return (
        f"{partial_data(session)} (and {also}) may be left: delete {them} by "
        f"hand ({paths}); the next transfer to this destination does not "
        "remove them (its name is too long to tell its temp files from a longer name's)"
    )


def unanswered_prepare_left(
    destination: str, size: int, chunk_size: int, session_key: str, in_a_dataset: bool = False
) -> str | None:
    """What a run cancelled before its ``prepare`` answered may leave at
    ``destination`` (a canonical URL), in words (memo ``left_behind``), or None when it
    can leave nothing (an S3 object of 0 bytes: its session opens no upload).

    S3: a multipart upload whose id no one knows may be opened when the server answers
    (the attempt aborts it itself once it knows of the cancel, unless its worker is
    gone); a lone transfer's next run to the key aborts every upload open on it, a
    dataset's file does not (by hand). File and SFTP: the session's temp file, its name
    known from ``session_key`` (:func:`staccato.temp_names.session_temp`), with the
    words of :func:`left_behind` (``status`` stops saying a local one once it is gone).
    ``size`` and ``chunk_size``: the session's, in bytes. Text only: no command."""
    if destination.startswith("s3://"):
        if size == 0:
            return None
        removed_by = (
            "a `staccato cp` of this file alone aborts it"
            if in_a_dataset
            else "the next transfer to this destination aborts it"
        )
        return unanswered_upload(
            destination,
            "a prepare attempt that had not answered when the transfer was cancelled",
            removed_by,
        )
    return session_left_behind(destination, session_key, in_a_dataset, size, chunk_size)


def session_left_behind(
    destination: str,
    session_key: str,
    in_a_dataset: bool = False,
    size: int = 0,
    chunk_size: int = 0,
) -> str | None:
    """The :func:`left_behind` words for the write session keyed ``session_key`` at a
    file or SFTP ``destination`` (a canonical URL): its temp file's name follows from
    the key (:func:`staccato.temp_names.session_temp`), so it is named without the
    session's ``prepare`` answer. None for another scheme or a URL that does not parse.
    Shared by a run cancelled before its ``prepare`` answered
    (:func:`unanswered_prepare_left`) and a terminated run, whose status the client
    derives (:func:`staccato.leftovers.terminated_left`). ``size`` and ``chunk_size``:
    the session's, in bytes (the words do not use them). Text only: no command."""
    if not destination.startswith(("file://", "sftp://")):
        return None
    try:
        path = parse_url(destination).path
    except errors.InvalidURLError:
        return None
    session = WriteSession(
        url=destination,
        size=size,
        chunk_size=chunk_size,
        session_id=session_temp(path, session_key),
    )
    return left_behind(session, in_a_dataset)


def _writers_of(session: WriteSession) -> str | None:
    """The writers directory an SFTP write session (``session``) makes beside its temp
    file (``.NAME.<key>.staccato-writers``: it stays until publish removes it, so a
    failed session whose clean-up gave up may leave it); None for other schemes, which
    make none."""
    temp = session.session_id
    if not session.url.startswith("sftp://") or not temp.endswith(TEMP_SUFFIX):
        return None
    return temp.removesuffix(TEMP_SUFFIX) + WRITERS_SUFFIX


def left_behind_of(err: BaseException) -> str | None:
    """The :func:`left_behind` text a failed child transfer sent in its failure's
    details (``{"left_behind": ...}``, workers after 0.19.0), found in ``err`` or its causes; None
    when it removed its partial data, or ran older code (its memo still says it)."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, ApplicationError):
            for detail in seen.details:
                if isinstance(detail, dict) and isinstance(detail.get("left_behind"), str):
                    return str(detail["left_behind"])
        seen = seen.cause if isinstance(seen, FailureError) else seen.__cause__
    return None


def duration(span: timedelta) -> str:
    seconds = span.total_seconds()
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def root_cause(err: BaseException) -> BaseException:
    while isinstance(err, ActivityError) and err.cause is not None:
        err = err.cause
    return err


def reason(err: BaseException) -> str:
    root = root_cause(err)
    return getattr(root, "message", None) or str(root)


def reason_type(err: BaseException) -> str:
    root = root_cause(err)
    if isinstance(root, ApplicationError) and root.type:
        return root.type
    return type(root).__name__
