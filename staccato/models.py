"""Pydantic models passed through Temporal (inputs, results, heartbeat details) and
shown to clients (status).

Everything here is small by construction: URLs, offsets, ids and digests, never
object bytes or lists that grow with the object (Temporal payload limit: 2 MiB,
warning at 512 KiB). Sizes are in bytes, durations in seconds.
"""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel as PydanticModel
from pydantic import (
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from staccato import quantities
from staccato.errors import InvalidURLError
from staccato.urls import parse_url, redact


class BaseModel(PydanticModel):
    """Every model here: its validator and serializer are built at its first use,
    not when this module is imported (pydantic's ``defer_build``). A command uses a
    handful of these models; building all of them cost ~0.15 CPU-s of every
    ``staccato`` command's start-up. Configs merge: a model's own ``model_config``
    keeps this."""

    model_config = ConfigDict(defer_build=True)


class LeanModel(BaseModel):
    """A model whose fields named in ``_omit_when`` are left out of its dumps (Python
    and JSON) while they hold the value given there (``None``, ``True`` or ``False``,
    compared by identity): a field added to a workflow's or activity's payload keeps
    the payloads, hashes and JSON of runs that do not use it exactly as they were, so
    an older worker reads them and replayed histories match."""

    _omit_when: ClassVar[dict[str, bool | None]] = {}

    @model_serializer(mode="wrap")
    def _omit_defaults(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for name, value in self._omit_when.items():
                if name in data and data[name] is value:
                    del data[name]
        return data


def omitted_while_none(*names: str) -> dict[str, bool | None]:
    """``_omit_when`` for fields left out of dumps while None."""
    return dict.fromkeys(names)


MiB = 1024 * 1024
GiB = 1024 * MiB

DEFAULT_CHUNK_SIZE = 16 * MiB
#: smaller objects are not tuned (too few segments to measure): the fixed defaults
#: (here, not in :mod:`staccato.tuning`, so that a client's status needs no tuner)
MIN_TUNED_BYTES = 64 * MiB
DEFAULT_STREAMS = 4
MAX_STREAMS = 64
#: default ``--priority`` (1 = most urgent .. 5), as Temporal's task priority keys
DEFAULT_PRIORITY = 3
#: S3's largest part; larger buys nothing and costs memory
MAX_CHUNK_SIZE = quantities.MAX_SIZE
DEFAULT_RETRY_FOR_S = 24 * 3600.0
MAX_RETRY_FOR_S = quantities.MAX_DURATION_S


class VerifyMode(StrEnum):
    """How the destination is checked after publish."""

    checksum = "checksum"  # re-read the destination and compare checksums
    #: ``checksum``, and before publish every byte of the temp data is read back once
    #: more and compared per segment with the source's chunk checksums; damaged
    #: segments are copied again (local file destinations: :data:`VERIFY_FULL_KINDS`;
    #: refused for S3, SFTP and datasets: :func:`staccato.cli.options.check_verify_full`)
    full = "full"
    size = "size"  # compare sizes only
    none = "none"

    @property
    def compares_checksums(self) -> bool:
        """Whether this level compares the destination's checksums with the source's
        (``checksum`` and ``full``; ``full`` adds the whole read-back before publish)."""
        return self in (VerifyMode.checksum, VerifyMode.full)


#: destination kinds (URL schemes) ``--verify full`` reads back before publish: their
#: unpublished temp data can be read (``PrepareResult.session_url``) and a change to it
#: after it was read back is seen at publish (a local file's ctime, which no writer can
#: set back). Not SFTP: the protocol gives no ctime, so a write after the read-back
#: would be published (tester71); its ``checksum`` level already reads the temp file
#: back on the server before publish
VERIFY_FULL_KINDS = ("file",)


def verify_full_refusal(
    verify: VerifyMode, destinations: list[str], *, recursive: bool = False
) -> str | None:
    """Why ``verify`` (``full``) cannot be had for these ``destinations`` (URLs or
    paths, as given), or None: with ``recursive`` (a dataset's small files are written
    and published in batches, not read back whole), or for a destination whose kind is
    not in :data:`VERIFY_FULL_KINDS` (S3: a multipart upload's unpublished parts cannot
    be read; SFTP: no change time to see a write after the read-back). A malformed
    destination is left to the URL checks. The one rule of the CLI
    (:func:`staccato.cli.options.check_verify_full`, exit 2) and the Python API
    (:func:`staccato.submissions.make_request`, :func:`staccato.dataset_requests.make_dataset_request`:
    InvalidURLError); rule: docs/architecture.md, "Reading every byte back before
    publish (--verify full)"."""
    if verify != VerifyMode.full:
        return None
    accepted = " and ".join(VERIFY_FULL_KINDS)
    if recursive:
        return (
            "--verify full applies to single transfers (and fan-outs) to "
            f"{accepted} destinations, not to -r (directories and prefixes): use "
            "--verify checksum"
        )
    for destination in destinations:
        try:
            kind = parse_url(destination).scheme
        except InvalidURLError:
            continue  # the destination check says what is wrong with it
        if kind not in VERIFY_FULL_KINDS:
            return (
                f"--verify full is not available for a {kind} destination "
                f"({redact(destination)}): it reads back {accepted} destinations only "
                "(S3 checks every part's CRC32C and the object's with --verify checksum; "
                "SFTP's checksum level reads the temp file back on the server before "
                "publish, and SFTP gives no change time to see a write after that)"
            )
    return None


class ChecksumAlgorithm(StrEnum):
    """Chunk checksum algorithm (see :mod:`staccato.checksums`)."""

    crc32c = "crc32c"
    sha256 = "sha256"


class SyncLevel(StrEnum):
    """When a destination that already exists counts as up to date, so nothing is copied
    (Globus ``sync_level`` semantics; each level includes the ones before it):

    * ``exists``: the destination exists;
    * ``size``: and its size equals the source's;
    * ``mtime``: and its modification time is not older than the source's (compared at
      the coarser of the two endpoints' time resolutions, see :mod:`staccato.sync`);
    * ``checksum``: and its checksum equals the source's (stored checksums where the
      endpoint keeps one, otherwise computed by reading).
    """

    exists = "exists"
    size = "size"
    mtime = "mtime"
    checksum = "checksum"


#: how ``status`` begins its reason (``last_retry_error``) when no worker answers for a
#: running transfer, dataset or group (nothing is being retried: it waits for a worker)
NO_WORKER_ANSWERS = "no worker answers"
#: how ``status`` begins its reason when the worker running the transfer holds its
#: workflow task (a short step's first attempt runs inside it) and so does not answer
#: the progress query in time: a worker runs it, nothing waits for one
WORKER_BUSY = "its worker is busy"
#: how ``status`` begins the reason of a run whose worker failed its progress query
QUERY_FAILED = "its worker failed the progress query"


class TransferState(StrEnum):
    """States a client sees (README.md, "Status JSON")."""

    scheduled = "scheduled"
    #: a front run waiting for its destination, busy with another transfer (if_busy=wait)
    queued = "queued"
    running = "running"
    paused = "paused"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"


class IfBusy(StrEnum):
    """What a start does when a different transfer holds its destination."""

    fail = "fail"  # fail at once: "destination busy"
    wait = "wait"  # wait (state queued) until the destination is free, then run


class TransferOptions(BaseModel):
    """Tuning and integrity options of one transfer.

    Attributes:
        chunk_size: bytes per chunk, the unit of copy, checksum and checkpoint.
        streams: how many stream activities copy at once.
        verify: how the destination is checked (``full``: every byte read back before
            publish, see :class:`VerifyMode`).
        checksum: chunk checksum algorithm.
        heartbeat_timeout_s: seconds without a heartbeat before Temporal retries a
            stream or a verify read-back elsewhere (default 20 s); also how long a
            SIGKILLed worker's activities wait before they resume.
        retry_for_s: seconds a step (stat, prepare, a stream, verify, publish) keeps
            retrying transient failures (an endpoint down, a worker gone, a full disk)
            without any progress before the transfer fails (default 24 h). The budget is renewed
            whenever the transfer makes progress.
        if_busy: what a start does when a different transfer holds the destination:
            fail with "destination busy" (default) or wait for it to end (state
            ``queued``). How to start, not what to write: not part of the request hash.
        sync_level: None (the default) copies always; a level skips the copy when the
            destination already matches the source at that level (see
            :class:`SyncLevel`): the transfer then completes as up to date.
        priority: 1 (most urgent) .. 5; orders the queue of a limited endpoint or link
            and is the Temporal task priority of the transfer's tasks. How to start,
            not what to write: not part of the request hash.
        owner: who the transfer is for (fair share of a limited endpoint between
            owners); None: the submitting client fills it in. Not a secret; not part
            of the request hash.
        max_rate: bytes per second for this transfer, summed over its streams (each
            paces its reads to its share); None: no cap of its own (an endpoint's or
            link's ``--max-rate`` still applies). Not part of the request hash.
        stage: read the source once into the worker's staging cache and write the
            destination from there (sources that cannot serve byte ranges always are).
        tuning: the client was given neither ``--streams`` nor ``--chunk-size``: the
            per-link optimizer (:mod:`staccato.tuning`) chooses both, ``streams`` and
            ``chunk_size`` being only the fixed fallback. False (the default for any
            other client): the values given are used as they are. Not part of the
            request hash when False.
        from_origin: read the source itself, never a known copy of it (a destination
            an earlier transfer wrote and that still matches its record). How to read,
            not what to write: not part of the request hash.
        cleanup_for_s: seconds (>= 1) a failed or cancelled transfer's clean-up of its
            partial data (temp file, multipart upload) keeps retrying against an
            endpoint that fails or hangs, before it gives up and ``left_behind`` says
            what stayed; a failed one retries for ``retry_for_s`` when that is longer.
            None (the default): 30 s (``_CLEANUP_AFTER_FAILURE_FOR`` in
            :mod:`staccato.workflows.transfer`), the safe value; env
            ``STACCATO_CLEANUP_FOR_S`` sets it for the command line's starts. A knob
            for tests that hang a server on purpose, not a tuning: a short window
            gives up sooner on an endpoint that would have come back. How to run,
            not what to write: not part of the request hash.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    chunk_size: int = Field(DEFAULT_CHUNK_SIZE, ge=1, le=MAX_CHUNK_SIZE)
    streams: int = Field(DEFAULT_STREAMS, ge=1, le=MAX_STREAMS)
    verify: VerifyMode = VerifyMode.checksum
    checksum: ChecksumAlgorithm = ChecksumAlgorithm.crc32c
    heartbeat_timeout_s: float | None = Field(None, ge=1, le=600)
    retry_for_s: float = Field(DEFAULT_RETRY_FOR_S, ge=1, le=MAX_RETRY_FOR_S)
    if_busy: IfBusy = IfBusy.fail
    sync_level: SyncLevel | None = None
    priority: int = Field(DEFAULT_PRIORITY, ge=1, le=5)
    owner: str | None = Field(None, min_length=1, max_length=64)
    max_rate: int | None = Field(None, ge=1)
    stage: bool = False
    tuning: bool = False
    from_origin: bool = False
    cleanup_for_s: float | None = Field(None, ge=1, le=MAX_RETRY_FOR_S, allow_inf_nan=False)

    @field_validator("chunk_size", "max_rate", "retry_for_s", mode="before")
    @classmethod
    def _from_text(cls, value: Any, info: ValidationInfo) -> Any:
        """A size, rate or duration given as text, read as the command line reads it
        and refused in its words, after the field's name (:mod:`staccato.quantities`):
        ``chunk_size="8MiB"``, ``max_rate="40MB/s"``, ``retry_for_s="2h"``;
        ``chunk_size="10Mb"``: "chunk_size: '10Mb': 'Mb' is ambiguous (bits or
        bytes?) ..." (it was pydantic's "unable to parse string as an integer").
        Numbers are pydantic's to check, as before; so is text in a workflow's own
        input (a raw start), so that a history replays as it ran."""
        if not isinstance(value, str) or _in_workflow():
            return value
        parse = {
            "chunk_size": quantities.parse_size,
            "max_rate": quantities.parse_rate,
            "retry_for_s": quantities.parse_duration,
        }[info.field_name or ""]
        try:
            return parse(value)
        except ValueError as err:
            raise ValueError(f"{info.field_name}: {err}") from None


def _in_workflow() -> bool:
    """Whether this runs in workflow code (validating a workflow's input); temporalio
    is loaded only when it is loaded already (the command's light client has no SDK)."""
    import sys

    workflow = sys.modules.get("temporalio.workflow")
    return workflow is not None and workflow.in_workflow()


def _not_canonical_because(value: str, canonical: str) -> str:
    """What makes ``value`` differ from its canonical form ``canonical`` (both URLs
    with ``://``), in words for the one who wrote it."""
    scheme, _, rest = value.partition("://")
    canonical_scheme, _, canonical_rest = canonical.partition("://")
    if scheme != canonical_scheme:
        return f"the scheme is written in lower case ({canonical_scheme!r}, not {scheme!r})"
    authority, _, path = rest.partition("/")
    canonical_authority, _, canonical_path = canonical_rest.partition("/")
    if authority != canonical_authority:
        if scheme == "file":
            return f"a file URL names no host ({authority!r}): file:///absolute/path"
        return (
            f"the host is written {canonical_authority!r} (lower case, no default port), "
            f"not {authority!r}"
        )
    path, canonical_path = path.split("?", 1)[0], canonical_path.split("?", 1)[0]
    segments = path.split("/")
    if "." in segments or ".." in segments:
        return "'.' and '..' segments are refused"
    if path.endswith("/") and not canonical_path.endswith("/"):
        return "a trailing '/' is not part of an object's name"
    if "" in segments[:-1]:
        return "empty segments ('//') are not part of an object's name"
    return (
        "some characters are percent-encoded as RFC 3986 section 2.1 spells them (a space as %20)"
    )


#: the options that say how to run a request, not what to write: how a start meets a
#: busy destination, its place in the queue, its owner, its rate cap, and whether it
#: reads the origin rather than a verified copy. A re-submission that differs only in
#: these attaches to the running request (its own values do not apply: the commands
#: warn, naming each); the one list for transfers, fan-out groups and datasets
#: (:func:`request_digest`).
RUN_ONLY_OPTIONS = frozenset(
    {"if_busy", "priority", "owner", "max_rate", "from_origin", "cleanup_for_s"}
)


def request_digest(request: BaseModel, options: TransferOptions) -> str:
    """The request hash of ``request`` (a transfer's, fan-out group's or dataset's;
    ``options``: its options), which tells an identical re-submission (attaches) from
    a different one (busy): 32 hex digits of SHA-256 of its JSON without
    :data:`RUN_ONLY_OPTIONS`, nor ``sync_level`` when unset or ``tuning`` when off (a
    request with default options hashes as it did before these options existed, so a
    resubmission still attaches across the upgrade)."""
    skipped = (
        set(RUN_ONLY_OPTIONS)
        | ({"sync_level"} if options.sync_level is None else set())
        | (set() if options.tuning else {"tuning"})
    )
    data = request.model_dump_json(exclude={"options": skipped})
    return hashlib.sha256(data.encode()).hexdigest()[:32]


class TransferRequest(BaseModel):
    """Input of ``TransferWorkflow``: canonical source and destination URLs + options.

    URLs never carry credentials (rejected by :func:`staccato.urls.parse_url`). An
    http(s) source's query is secret: ``source`` holds the URL with every query value
    ``REDACTED`` (:func:`staccato.urls.redact`) and ``source_secret`` the real query,
    sealed (:mod:`staccato.secrets`); only activities on a worker unseal it.
    Both URLs must be canonical (``parse_url(url).canonical == url``): the workflow validates its
    input itself, because any Temporal client can start it, and a relative path would
    otherwise be resolved against the worker's working directory.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str
    destination: str
    options: TransferOptions = TransferOptions()
    source_secret: str | None = None
    #: set by a fan-out group for its children: read the group's staged copy of the
    #: source instead of stat-ing and reading the origin (see :class:`StagedFromGroup`)
    staged_from_group: StagedFromGroup | None = None

    @field_validator("source", "destination")
    @classmethod
    def _canonical(cls, value: str) -> str:
        """Refuse anything but a canonical absolute URL (never a bare or relative path).

        Raises:
            ValueError: the URL is malformed, relative, or not in canonical form.
        """
        if "://" not in value:
            raise ValueError(
                f"{redact(value)!r} is not an absolute URL: a bare or relative path would be "
                "resolved against the worker's working directory; send the canonical "
                "form, e.g. file:///absolute/path (clients canonicalise with "
                "staccato.urls.parse_url)"
            )
        try:
            canonical = parse_url(value).canonical
        except InvalidURLError as err:
            raise ValueError(str(err)) from None
        if canonical != value:
            raise ValueError(
                f"{redact(value)!r} is not in canonical form (expected {redact(canonical)!r}): "
                f"{_not_canonical_because(value, canonical)}"
            )
        return value

    @model_validator(mode="after")
    def _distinct(self) -> TransferRequest:
        """Refuse copying an object onto itself (the publish would replace the source
        with a copy of itself, or a failure remove it)."""
        if self.source.split("?", 1)[0] == self.destination:
            raise ValueError(f"source and destination are the same object: {self.destination}")
        return self

    def request_hash(self) -> str:
        """A stable hash telling an identical re-submission from a different one
        (:func:`request_digest`: the options that say how to run are left out, and an
        unset ``sync_level``, so a request with default options hashes as it did before
        these options existed and a resubmission still attaches across the upgrade)."""
        return request_digest(self, self.options)


def restarted_text(destination: str, lost: int, why: str | None) -> str | None:
    """``status``' word that a run lost its write session ``lost`` times and copied
    everything again from byte 0 into a new one (tester69: after a part replaced
    under the open S3 upload the transfer re-uploaded the whole object, and no status
    said so); ``why``: the last loss's message. None when ``lost`` is 0."""
    if lost <= 0:
        return None
    what = "upload" if destination.startswith("s3://") else "write session"
    times = "1 time" if lost == 1 else f"{lost} times"
    text = f"{what} restarted {times} (everything copied again from byte 0 into a new {what})"
    return f"{text}; last: {why}" if why else text


def iso_utc(at: datetime | None) -> str | None:
    """``at`` as ISO 8601 in UTC to the millisecond (``2026-12-02T18:07:03.250Z``: rows
    started within a second still order); None for None."""
    if at is None:
        return None
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def same_version(pinned: str, now: str) -> bool:
    """Whether an object's version ``now`` is still the ``pinned`` one.

    Opaque versions (ETags, VersionIds) compare equal or not. A local file's version
    is ``size=..;mtime_ns=..;ctime_ns=..;ino=..``; one pinned by an older release has
    no ``ctime_ns`` (it was added so that a rewrite whose mtime was put back, e.g. by
    ``touch -r``, moves the version: the kernel sets ctime on every change and no call
    sets it back), and is compared on the fields it has, so a transfer running across
    the upgrade is not taken for a changed source.
    """
    if pinned == now:
        return True
    old, new = _version_fields(pinned), _version_fields(now)
    if not old or not new or not old.keys() <= new.keys() or "size" not in old:
        return False
    return all(new[key] == value for key, value in old.items())


def _version_fields(version: str) -> dict[str, str]:
    """``{"size": .., "mtime_ns": .., ...}`` of a ``k=v;k=v`` version, else ``{}``."""
    fields: dict[str, str] = {}
    for part in version.split(";"):
        key, sep, value = part.partition("=")
        if not sep or not key.isidentifier():
            return {}
        fields[key] = value
    return fields


class ObjectInfo(BaseModel):
    """What ``stat`` learns of an object.

    Attributes:
        size: bytes.
        version: opaque token pinned for the whole transfer (ETag, VersionId,
            size+mtime); a read that sees another version raises ``SourceChangedError``.
        supports_ranges: whether byte ranges can be read independently.
        content_type: MIME type where the endpoint knows it.
        modified_at: last modification, seconds since the epoch on the endpoint's
            clock, where the endpoint tells it.
        mtime_resolution_s: > 0 when ``version`` rests on a modification time of this
            resolution (size+mtime, ``Last-Modified``, ETags that servers derive from
            the mtime): a rewrite in place within that resolution of the last one keeps
            the version. 0 for validators that change with every write (S3 ETag).
        endpoint_time: the endpoint's own clock when it answered the stat (HTTP
            ``Date``), seconds since the epoch; lets ``modified_at`` be compared
            without guessing the clock skew.
        reread_before_publish: set by the ``stat`` activity when the version cannot
            prove the source stays the same for the whole copy (it was modified just
            before, or the endpoint gives no time): the source is then read a second
            time and compared chunk by chunk before anything is published.
    """

    model_config = ConfigDict(frozen=True)

    size: int = Field(ge=0)
    version: str
    supports_ranges: bool = True
    content_type: str | None = None
    extra: dict[str, str] = Field(default_factory=dict)
    modified_at: float | None = None
    mtime_resolution_s: float = Field(0.0, ge=0)
    endpoint_time: float | None = None
    reread_before_publish: bool = False


class Segment(BaseModel):
    """A run of consecutive chunks copied by one stream activity.

    Attributes:
        index: segment number, from 0.
        first_chunk: index of the first chunk.
        end_chunk: index one past the last chunk.
        offset: byte offset of the first chunk.
        length: bytes in the segment.
    """

    model_config = ConfigDict(frozen=True)

    index: int
    first_chunk: int
    end_chunk: int
    offset: int
    length: int


class WriteSession(BaseModel):
    """Destination-side state of an unfinished transfer (serialisable, no secrets).

    Attributes:
        url: canonical destination URL.
        size: bytes the object will have.
        chunk_size: bytes per chunk (the last may be shorter).
        session_id: driver-specific id: a temp path, an S3 upload id.
        data: further driver-specific fields (strings only).
    """

    model_config = ConfigDict(frozen=True)

    url: str
    size: int
    chunk_size: int
    session_id: str
    data: dict[str, str] = Field(default_factory=dict)


#: seconds a stream's (or a staging read's) rate counts as current in ``status`` after
#: it last moved bytes or last heartbeated, whichever is older: five of the workers'
#: heartbeat intervals (streams build details every 0.5 s and workers send them at
#: most every 1 s, ``staccato.activities.stream_lease.HEARTBEAT_THROTTLE_S``), so a
#: healthy stream's rate never drops, while one whose worker was killed or whose source
#: hangs shows no rate (and no ETA) within seconds, not its last rate for the heartbeat
#: timeout (20 s by default)
RATE_CURRENT_S = 5.0


class Checkpoint(BaseModel):
    """A stream's heartbeat details; versioned because Temporal hands them back as a dict.

    Attributes:
        v: schema version.
        segment: segment index.
        next_chunk: every chunk of the segment below this index is durable.
        bytes_done: bytes of the segment moved: durable at the destination, plus the
            chunk in flight (read, not yet written), and never fewer than an earlier
            attempt's last checkpoint reported (so ``status`` does not fall back).
        bytes_durable: bytes of the segment durable at the destination (journaled or
            checkpointed chunks, and the start of a chunk a pause kept): what a resume
            does not send again. None: a worker before this field.
        rate_bytes_per_s: this attempt's copy rate (bytes/s): of a first attempt, over
            the bytes it made durable and the chunk it reads; of a retry, over the
            bytes it made durable only (a chunk read whose write fails adds nothing).
        bytes_read: bytes read from the source by this attempt.
        summary: the same for people (``segment 2: 128.0 MiB / 256.0 MiB (50%) at
            20.0 MiB/s``), so ``temporal workflow describe`` and the UI's pending
            activities read well; never read back by Staccato.
        waiting: set while the stream waits for its worker's capacity (memory for
            its chunk buffer): why, for ``status``.
    """

    v: int = 1
    segment: int
    next_chunk: int
    bytes_done: int = 0
    bytes_durable: int | None = None
    rate_bytes_per_s: float = 0.0
    bytes_read: int = 0
    summary: str | None = None
    waiting: str | None = None
    #: attempts of this segment that failed with an endpoint's error (each failing
    #: attempt heartbeats it before it fails); a lost worker (heartbeat timeout) adds none
    endpoint_errors: int = 0
    #: wall-clock time (Unix seconds) the segment's durable bytes last grew, in this
    #: attempt or an earlier one; None: not since the activity was scheduled
    progress_at: float | None = None
    #: wall-clock time (Unix seconds, the worker's clock) this attempt last moved
    #: bytes (read, in flight or written) when it built these details: the SDK sends
    #: details up to 0.8 x the heartbeat timeout after the stream built them, so the
    #: server's receive time cannot tell a stalled stream; ``status`` counts the rate
    #: only while this is within the heartbeat timeout. None: a worker before it
    moved_at: float | None = None
    #: wall-clock time (Unix seconds) the segment's bytes done (durable plus in flight:
    #: how far the stream got) last grew past what any earlier attempt reached; carried
    #: from attempt to attempt (a retried attempt reading or sending the same bytes
    #: again does not move it). The hang watch's ``--retry-for`` counts from it
    #: (:mod:`staccato.activities.retry_deadline`). None: not yet, or a worker before it
    reached_at: float | None = None

    def moved_within(self, seconds: float, now: float | None = None) -> bool:
        """Whether the stream moved bytes within ``seconds`` of ``now`` (Unix seconds;
        None: now), so its ``rate_bytes_per_s`` is current. True when the details do
        not say (a worker before ``moved_at``)."""
        if self.moved_at is None:
            return True
        return (time.time() if now is None else now) - self.moved_at <= seconds


class VerifyBeat(BaseModel):
    """The ``verify`` activity's heartbeat details: when it last heard from the
    destination (read-back bytes arriving, or a line of the server's hash), so
    ``status`` tells a verify that works from one waiting on a server that does not
    answer (the rule of the copy phase's streams, :data:`RATE_CURRENT_S`).

    Attributes:
        v: schema version.
        moved_at: wall-clock time (Unix seconds, the worker's clock) the verify last
            heard from the destination (or began, before its first answer).
        bytes_done: bytes this attempt has read back so far (None: a worker before
            0.37, or a check that reads nothing here: a server-side hash).
        rate_bytes_per_s: those bytes over the attempt's time so far (None: none read).
    """

    v: int = 1
    moved_at: float
    bytes_done: int | None = None
    rate_bytes_per_s: float | None = None


class PublishBeat(BaseModel):
    """The ``publish`` activity's heartbeat details (workers from 0.38; before, its
    heartbeats had none): when it last moved bytes or heard from its endpoints, and
    the fresh copy it writes, if any (SFTP: after an earlier worker life a stale
    writer may still write into the temp file, so publish copies the journal-vouched
    bytes into a fresh file, ``docs/sftp.md``), so ``status`` shows that copy moving
    instead of a publish waiting for its server (tester73 M3: 25 s of "stalled:
    publish: waiting for ... to answer" while the fresh copy grew).

    Attributes:
        v: schema version.
        moved_at: wall-clock time (Unix seconds, the worker's clock) the publish last
            moved bytes or heard from its endpoints (or began, before that).
        fresh_bytes_done: bytes written into the fresh copy so far (None: none begun).
        fresh_bytes_total: the fresh copy's size (the object's), with ``fresh_bytes_done``.
        fresh_rate_bytes_per_s: those bytes over the time since the copy began.
        assembling_parts: while the store assembles the object from its parts (S3
            CompleteMultipartUpload, which may take minutes), how many; None otherwise
            (and from workers before 0.40).
    """

    v: int = 1
    moved_at: float
    fresh_bytes_done: int | None = None
    fresh_bytes_total: int | None = None
    fresh_rate_bytes_per_s: float | None = None
    assembling_parts: int | None = None


class ProgressReport(BaseModel):
    """Argument of the ``report_progress`` signal: the server's view of a transfer's
    running streams, sent by a worker's progress reporter (see
    :mod:`staccato.workers.progress_reporter`) every ~10 s while data moves.

    Attributes:
        segments: segment index -> bytes of that segment durable or in flight, per
            running stream (from its last heartbeat).
        rate_bytes_per_s: the running streams' summed copy rate.
    """

    segments: dict[int, int] = Field(default_factory=dict)
    rate_bytes_per_s: float = Field(0.0, ge=0)


class StreamInput(BaseModel):
    """Input of the ``copy_stream`` activity."""

    transfer_id: str
    source: str
    source_info: ObjectInfo
    session: WriteSession
    segment: Segment
    checksum: ChecksumAlgorithm
    #: read each chunk back after writing it and compare checksums (``--verify
    #: checksum``), where the destination can read back (``Driver.features.read_back``)
    read_back: bool = False
    #: the source's sealed query (:attr:`TransferRequest.source_secret`)
    source_secret: str | None = None
    #: bytes per second this stream may read (its share of the transfer's own
    #: ``max_rate``); None: no cap of its own
    max_rate: float | None = None
    #: the ticket the transfer holds its governors' slots with: the worker looks up
    #: this stream's share of their ``max_rate`` by it (:mod:`staccato.workers.rates`)
    ticket: str | None = None
    #: the governors (endpoint and link names) that granted ``ticket``
    governors: list[str] = Field(default_factory=list)
    #: the dataset (its workflow id) whose own ``max_rate`` this stream's transfer (a
    #: large file of it) shares with the dataset's batches and other large files: the
    #: worker looks up the dataset's per-stream share (:mod:`staccato.workers.rates`);
    #: None: not part of a dataset, or no ``max_rate``
    rate_group: str | None = None
    #: ``write`` for a stream of a large file's fan-out group of a dataset to several
    #: roots (it reads the group's staged copy and writes one root): it reads at most
    #: the dataset's share per writer of a root (``pacing.group_key(rate_group,
    #: "write")``); None: the share of a stream that reads the source and writes
    rate_part: str | None = None
    #: read the source from this staging cache entry (its key) instead of the origin
    staged: str | None = None
    #: SO_SNDBUF/SO_RCVBUF (bytes) of the stream's connections (:mod:`staccato.sockets`);
    #: None: the worker's setting, else the kernel's autotuning
    socket_buffer: int | None = None
    #: a tuned transfer: the rate (bytes/s) one stream measured on the link, which its
    #: connections' buffers are sized for (bandwidth-delay product)
    stream_rate: float | None = None
    #: the transfer's ``--retry-for`` (seconds): an attempt failing with a retryable
    #: error once that long has passed without progress fails for good, naming the
    #: deadline (:mod:`staccato.activities.retry_deadline`); None (scheduled by a
    #: worker before this field): Temporal's schedule-to-close deadline alone
    retry_for_s: float | None = None


class StageInput(BaseModel):
    """Input of the ``stage_source`` and ``release_staged`` activities.

    Attributes:
        transfer_id: the transfer using the entry (its pin).
        source: the source URL (canonical); ``source_info`` its stat (size, version).
    """

    transfer_id: str
    source: str
    source_info: ObjectInfo
    source_secret: str | None = None
    #: bytes per second the staging read may take (the transfer's own ``max_rate``);
    #: None: no cap of its own
    max_rate: float | None = None
    #: the slot ticket and its governors: the staging read is paced at
    #: ``ticket_streams`` streams' share of their ``max_rate``, looked up as a copy
    #: stream's (:mod:`staccato.workers.rates`)
    ticket: str | None = None
    governors: list[str] = Field(default_factory=list)
    #: the streams of ``ticket`` its governors count as reading (those granted, or
    #: fewer as told by signal ``running``): the staging read is the transfer's only
    #: reader while it runs, so it reads that many streams' share of their
    #: ``max_rate``, the transfer's whole share (1: scheduled before this field, one
    #: stream's share)
    ticket_streams: int = Field(default=1, ge=1)
    #: as :attr:`StreamInput.rate_group`: the staging read counts as one stream of
    #: the dataset's ``max_rate``
    rate_group: str | None = None
    #: ``read`` for a fan-out group's staging read of a large file of a dataset to
    #: several roots (it reads the source and writes no root): at most the dataset's
    #: share per reader of its source (``pacing.group_key(rate_group, "read")``); as
    #: :attr:`StreamInput.rate_part` otherwise
    rate_part: str | None = None
    #: the transfer's ``--retry-for`` (seconds): an attempt failing with a retryable
    #: error once that long has passed without progress fails for good, naming the
    #: deadline (:mod:`staccato.activities.retry_deadline`); None (scheduled by a
    #: worker before this field): Temporal's schedule-to-close deadline alone
    retry_for_s: float | None = None


#: ``read_from`` of a transfer whose streams read its source's entry found in the
#: worker's staging cache (``StageResult.reused``): no byte was read from the origin
READ_STAGED = "staged entry (staging cache)"


class StageResult(BaseModel):
    """Result of ``stage_source``: the entry's key, its size (bytes), and whether it
    was in the cache already (no byte read from the source)."""

    key: str
    size: int
    reused: bool = False


class StagingProgress(BaseModel):
    """Heartbeat details of ``stage_source``: bytes staged so far (informative only:
    a source that cannot serve ranges is staged again from byte 0)."""

    bytes_staged: int = 0
    #: bytes/s this attempt read the source at (0: not known yet)
    rate_bytes_per_s: float = 0.0
    #: wall-clock time (Unix seconds) an attempt last read source bytes; None: none
    #: since the activity was scheduled
    progress_at: float | None = None


class KnownCopyInput(BaseModel):
    """Input of the ``find_known_copy`` activity: a copy of ``source`` at the version
    and size of ``source_info``, to read instead of the origin.

    Attributes:
        source: canonical source URL (no secret query: such sources are not looked up).
        source_info: the origin's stat (version and size the copy must have had).
        destination: the transfer's own destination (never a candidate).
        transfer_id: the transfer's workflow id (its own records are skipped).
        chunk_size: bytes per chunk a copy is checksummed in (CRC32C: any chunking).
        max_candidates: copies checked at most (each check may read the copy whole).
    """

    source: str
    source_info: ObjectInfo
    destination: str
    transfer_id: str
    chunk_size: int = DEFAULT_CHUNK_SIZE
    max_candidates: int = Field(3, ge=1)


class KnownCopy(BaseModel):
    """Result of ``find_known_copy``.

    Attributes:
        url: the copy to read from; None: read the origin.
        info: the copy's stat (its version is pinned for the reads, as a source's).
        checksum: the recorded checksum (``"crc32c:<hex>"``) the copy matched: the
            copy read by the streams must give it again.
        reason: why this copy, or why none (for status).
    """

    url: str | None = None
    info: ObjectInfo | None = None
    checksum: str | None = None
    reason: str


class ConfirmSourceInput(BaseModel):
    """Input of the ``confirm_source`` activity: read these segments of the source a
    second time and compare them with the checksums of the copy.

    Attributes:
        source: canonical source URL.
        source_info: the version pinned at stat.
        chunk_size: bytes per chunk.
        segments: ``(first_chunk, end_chunk, hex checksum of the copy)`` per segment.
        checksum: chunk checksum algorithm.
        source_secret: the source URL's sealed query (see :mod:`staccato.secrets`).
    """

    source: str
    source_info: ObjectInfo
    chunk_size: int
    segments: list[tuple[int, int, str]]
    checksum: ChecksumAlgorithm
    source_secret: str | None = None
    #: the transfer's ``--retry-for`` (seconds): an attempt failing with a retryable
    #: error once that long has passed without progress fails for good, naming the
    #: deadline (:mod:`staccato.activities.retry_deadline`); None (scheduled by a
    #: worker before this field): Temporal's schedule-to-close deadline alone
    retry_for_s: float | None = None


class StreamResult(LeanModel):
    """Result of ``copy_stream``.

    Attributes:
        complete: False when the stream stopped early (pause).
        next_chunk: first chunk not yet durable.
        bytes_done: bytes of the segment durable at the destination.
        checksum: hex digest over the segment's chunks (only when complete).
        bytes_read: bytes read from the source by the last attempt.
        verified: every chunk of the segment was read back from the destination and
            matched its source checksum (written by this attempt, or re-checked on resume).
    """

    segment: int
    complete: bool
    next_chunk: int
    bytes_done: int = 0
    checksum: str | None = None
    bytes_read: int = 0
    verified: bool = False
    #: the activity attempt that finished it (attempts before it failed)
    attempt: int = 1
    #: of those, attempts that failed with an endpoint's error (the optimizer counts
    #: these; the others were lost with a worker: heartbeat timeout)
    endpoint_errors: int = 0
    #: (complete only) :func:`staccato.endpoints.base.parts_digest` over the tag (S3:
    #: ETag) of each of the segment's parts as this stream uploaded or accepted it;
    #: None where the destination keeps no tags (file, SFTP) or one is unknown.
    #: Publish completes the upload only if the parts still have these tags
    parts: str | None = None
    #: (complete only) the fraction (0..1) of the worker host's CPU time, all CPUs,
    #: that was busy while the attempt ran (:func:`staccato.host_cpu.busy_between`);
    #: None where it is not measured (not Linux, a dataset's file, older workers).
    #: The optimizer adds no streams while it is saturated (``tuning.CPU_SATURATED``)
    cpu_busy: float | None = None

    _omit_when = {"parts": None, "cpu_busy": None}


class PrepareInput(LeanModel):
    """Input of ``prepare``: where to write, how much, and a key unique to this run.

    ``make_parents``: make the destination's missing directories first, as a dataset
    does for its files (set for a dataset's child transfer: its listing makes them
    too, but cannot while that root is unreachable, and the child then rides the
    outage out in ``prepare``); a lone transfer writes into an existing directory.

    ``sweep_leftovers``: remove the temp files and journals earlier runs to this
    destination left (``Driver.remove_leftovers``). False for a dataset's file: a
    dataset copies whatever names its source holds, and a source file named like a
    temp file (``.big.bin.<16 hex>.staccato-part``, e.g. from a copied tree) was
    removed by the next large file's sweep after the dataset had copied it, which
    then said completed with it missing (a tester's case).
    """

    destination: str
    size: int
    chunk_size: int
    session_key: str
    make_parents: bool = False
    sweep_leftovers: bool = True

    # left out while at their defaults: a lone transfer's payload stays as it was
    _omit_when = {"make_parents": False, "sweep_leftovers": True}


class PrepareResult(BaseModel):
    """The opened write session and the chunk size the destination accepted."""

    session: WriteSession
    chunk_size: int
    note: str | None = None
    verify_by_segments: bool = True  # False: the store answers a whole-object checksum cheaply
    session_url: str | None = (
        None  # where the unpublished bytes can be read, to verify before publish
    )


class PublishInput(LeanModel):
    """Input of ``publish``: the session, and the source to re-check before publishing."""

    session: WriteSession
    source: str
    source_info: ObjectInfo
    #: the source's sealed query (:attr:`TransferRequest.source_secret`)
    source_secret: str | None = None
    #: (first chunk, end chunk, :attr:`StreamResult.parts`) of each segment whose
    #: stream recorded its parts' tags: the driver publishes only parts that still
    #: have them (``Driver.publish``); None: nothing recorded (an older run)
    parts: list[tuple[int, int, str]] | None = None

    _omit_when = {"parts": None}


class VerifyInput(BaseModel):
    """Input of the ``verify`` activity."""

    url: str
    size: int
    chunk_size: int
    segments: list[tuple[int, int]]  # (first_chunk, end_chunk), few: one per segment
    checksum: ChecksumAlgorithm
    expected: str  # hex digest over ``segments``
    mode: VerifyMode
    whole_object: bool = True  # False: ``segments`` is a part of the object, checked alone


class SyncInput(LeanModel):
    """Input of the ``sync_check`` activity: does the destination already match the
    source (stat'ed as ``source_info``) at ``level``?

    Attributes:
        chunk_size: bytes per chunk, for a checksum computed by reading (``sha256``
            object checksums depend on the chunking).
        checksum: the algorithm checksums are compared in.
        source_secret: the source URL's sealed query (see :mod:`staccato.secrets`).
        sweep_leftovers: when the destination is up to date, remove the temp files
            earlier runs left beside it, as ``prepare`` does before a copy (an up to
            date destination runs no ``prepare``: a failed run's leftovers stayed);
            False for a dataset's file (``PrepareInput.sweep_leftovers``). Left out of
            dumps while True.
    """

    source: str
    source_info: ObjectInfo
    destination: str
    level: SyncLevel
    chunk_size: int
    checksum: ChecksumAlgorithm
    source_secret: str | None = None
    sweep_leftovers: bool = True

    _omit_when = {"sweep_leftovers": True}  # a payload as before unless it is False


class SyncResult(BaseModel):
    """Result of ``sync_check``.

    Attributes:
        up_to_date: the destination matches at the requested level: nothing to copy.
        reason: what matched, or the first thing that differed (for logs and status).
        checksum: ``"<algorithm>:<hex>"`` of the destination when checksums were
            compared and equal, else None.
        source_bytes_read: bytes read from the source to compute its checksum (0 when
            it was not needed or came from a stored checksum).
        destination_bytes_read: the same for the destination.
    """

    up_to_date: bool
    reason: str
    checksum: str | None = None
    source_bytes_read: int = 0
    destination_bytes_read: int = 0


class TransferResult(BaseModel):
    """Result of ``TransferWorkflow``.

    Attributes:
        bytes: object size in bytes.
        checksum: object checksum, ``"<algorithm>:<hex>"`` ("" when an up-to-date
            destination was not checksummed).
        duration_s: seconds from start to verified.
        source_version: the version pinned at stat time.
        up_to_date: the destination already matched the source at ``sync_level``, so
            nothing was copied (``--sync-level``).
        sync_level: the level the destination matched at (None unless up to date).
        destination_version: the destination's version read right after publish
            (ETag, size+mtime): with ``source``, ``source_version``, ``bytes`` and
            ``checksum``, the record of a verified copy a later transfer of the same
            source version may read from (:mod:`staccato.known_copies`). None when
            not read (older releases, an up-to-date destination, a failed stat).
        read_from: where the bytes were read: ``"origin"``, a known copy's URL, or
            :data:`READ_STAGED` (the source's entry found in the staging cache: the
            origin was not read) (None: older releases, or nothing read).
        read_from_reason: why (which copy matched its record, or why none was used).
        sessions_lost: write sessions the run lost and copied again from byte 0 into
            a new one (its temp file or upload vanished or was altered: a part
            replaced under an S3 upload, found at publish); 0 otherwise (and in
            releases before 0.36.0).
        session_lost_reason: why the last one was lost (the error's message).
        read_back_recopied: the data was read back whole before publish (``--verify
            full``; ``checksum`` after a pause): how many segments that read-back found
            damaged and copied again (0 normally); None when no such read-back ran (or
            releases before 0.37.0).
    """

    source: str
    destination: str
    bytes: int
    checksum: str
    verified: VerifyMode
    duration_s: float
    source_version: str
    chunk_size: int
    streams: int
    up_to_date: bool = False
    sync_level: SyncLevel | None = None
    tuning: TuningView | None = None

    destination_version: str | None = None
    read_from: str | None = None
    read_from_reason: str | None = None
    sessions_lost: int = 0
    session_lost_reason: str | None = None
    read_back_recopied: int | None = None


class TuningView(BaseModel):
    """The per-link optimizer's choice for a tuned transfer (``status --json``:
    ``tuning``).

    Attributes:
        link: ``SRC_ENDPOINT,DST_ENDPOINT``.
        streams: streams running now (at the end: the last choice).
        chunk_size: bytes per chunk (fixed at the start).
        max_streams: the most it may run (bounds, memory budget, a ``max-streams`` grant).
        max_streams_reason: what set ``max_streams`` below 16, in words (the worker's
            memory budget or streams at once, a limit's grant); None: nothing did.
        rate_bytes_per_s: the moving-average rate measured at ``streams``; None before
            the first measurement.
        decisions: decisions made so far.
        reasons: the last decisions' reasons, newest last (at most 3).
        socket_buffer_bytes: SO_SNDBUF/SO_RCVBUF asked for the streams' connections;
            None: the kernel's autotuning.
        learned_streams: once the copy is over, the streams the link remembers for its
            next transfer (the fewest within the optimizer's gain of the best measured,
            :func:`staccato.tuning.remember`); None before (or in older results).
        learned_rate_bytes_per_s: the rate measured at ``learned_streams``; None when
            none was measured.
        not_recorded: once the copy is over, why the link learned nothing from this
            transfer (its streams read a known copy or a staged entry, not the origin:
            another link's rate); None when it was recorded (or before the end).
    """

    link: str
    streams: int
    chunk_size: int
    max_streams: int
    max_streams_reason: str | None = None
    rate_bytes_per_s: float | None = None
    decisions: int = 0
    reasons: list[str] = Field(default_factory=list)
    socket_buffer_bytes: int | None = None
    learned_streams: int | None = None
    learned_rate_bytes_per_s: float | None = None
    not_recorded: str | None = None


class TuningRecall(BaseModel):
    """Result of ``recall_link_tuning``: what a tuned transfer starts from.

    Attributes:
        enabled: the worker allows tuning (setting ``STACCATO_TUNING``).
        memory: the link's :class:`~staccato.tuning.LinkMemory` as JSON data, if any.
        memory_budget: bytes of stream buffers the transfer may hold.
        socket_buffer_bytes: the worker's fixed socket buffer size, if set.
        worker_processes: the streams the worker runs at once (its activity
            processes x threads; releases before threads: its processes); more would
            wait in Temporal's queue; None: no bound.
    """

    enabled: bool = True
    memory: dict[str, Any] | None = None
    memory_budget: int
    socket_buffer_bytes: int | None = None
    worker_processes: int | None = None


class StartLookupInput(LeanModel):
    """Input of the ``look_up_start`` activity: the control lookups a transfer makes
    before its first stream, in one activity (each part optional).

    Attributes:
        link: the link whose tuning memory to recall (``recall_link_tuning``); None:
            the transfer is not tuned.
        known_copy: the known-copy lookup (``find_known_copy``); None: not looked up.
        governors: endpoint and link names whose governors to look for
            (``find_governors``); empty: none.
        connections_of: the transfer's source and destination URLs, whose per-host
            connection caps on the worker bound its streams (``connection_cap`` of the
            result); None: not asked (runs recorded before).
    """

    _omit_when = omitted_while_none("connections_of")

    link: str | None = None
    known_copy: KnownCopyInput | None = None
    governors: list[str] = Field(default_factory=list)
    connections_of: list[str] | None = None


class StartLookup(LeanModel):
    """Result of ``look_up_start`` (a part not asked for is None).

    Attributes:
        recall: what a tuned transfer starts from.
        known_copy: the copy to read, or why the origin.
        governors: the names of the input's ``governors`` whose governor runs, in order.
        connection_cap: the most connections the worker opens at once to the host of
            any of ``connections_of`` (SFTP: ``STACCATO_SFTP_MAX_CONNECTIONS``); None:
            no cap. More streams than that wait for a connection while holding their
            share of ``--max-rate``.
    """

    _omit_when = omitted_while_none("connection_cap")

    recall: TuningRecall | None = None
    known_copy: KnownCopy | None = None
    governors: list[str] | None = None
    connection_cap: int | None = None


class Progress(BaseModel):
    """Workflow-side progress, served by the ``progress`` query (no history cost)."""

    state: TransferState
    bytes_total: int | None = None
    bytes_committed: int = 0  # bytes of completed segments
    partial: dict[int, int] = Field(
        default_factory=dict
    )  # segment -> bytes moved (durable, or in flight at a failure), stopped segments
    #: segment -> bytes durable at the destination (journaled chunks: a resume does not
    #: send them again), of the segments not committed whose stream stopped, failed or
    #: was retried; the running streams' figure is in their heartbeats
    durable: dict[int, int] = Field(default_factory=dict)
    segments_total: int = 0
    segments_done: int = 0
    chunk_size: int
    streams: int
    checksum: str | None = None
    error: str | None = None
    phase: str = "scheduled"
    #: the sync level the destination matched at: completed without copying
    up_to_date: SyncLevel | None = None
    #: while ``queued`` for an endpoint or link limit: why (which limit, place in line)
    queued_reason: str | None = None
    #: the governor (endpoint or link name) and ticket it waits for (the place in line
    #: is read from the governor at status time)
    queued_for: str | None = None
    queued_ticket: str | None = None
    #: a tuned transfer: the optimizer's current choice and why
    tuning: TuningView | None = None
    #: where the streams read: "origin" or a known copy's URL (None: not decided yet)
    read_from: str | None = None
    #: why (the copy matched its record; or why no copy was used)
    read_from_reason: str | None = None
    #: a failed transfer still removing its partial data (its run goes on until that
    #: is done, holding the destination): where that data is
    cleanup: str | None = None
    #: a tuned transfer (``options.tuning``): the optimizer chooses streams and chunk
    #: size as the copy starts (``streams`` and ``chunk_size`` above are the defaults
    #: until then)
    tuned: bool = False
    #: write sessions lost and copied again from byte 0 into a new one, and why the
    #: last was (``TransferResult.sessions_lost``)
    sessions_lost: int = 0
    session_lost_reason: str | None = None
    #: phase ``verify``: bytes the finished ``verify`` activities of this read-back
    #: checked, of ``verify_total`` (the object's size); the running ones' bytes are in
    #: their heartbeats (``VerifyBeat.bytes_done``). None outside a checksum read-back
    verify_done: int | None = None
    verify_total: int | None = None
    #: phase ``verify``: when this read-back began (Unix seconds, the workflow's
    #: clock): ``status`` tells the read-back's average rate from it while no running
    #: part's heartbeat says one (parts shorter than the heartbeat interval, or a
    #: server-side hash: tester73 M1). None outside a checksum read-back, or a run
    #: before this field
    verify_started_at: float | None = None
    #: the running streams' summed copy rate (bytes/s) the worker's progress reporter
    #: last signalled (``ProgressReport``), and when it arrived (Unix seconds, the
    #: workflow's clock): ``status`` holds it across the gap between a stream's
    #: segment ending and the next one's first rated heartbeat (tester73 M2). None:
    #: none reported yet (or a run before these fields)
    reported_rate: float | None = None
    reported_rate_at: float | None = None
    #: when the copy phase began (Unix seconds, the workflow's clock) and the bytes
    #: moved then (committed or kept from before): ``status`` tells the copy's
    #: average rate from them across a segment boundary before any report. None: a
    #: run before these fields, or the copy has not begun
    copy_started_at: float | None = None
    copy_started_bytes: int | None = None


class TransferStatus(BaseModel):
    """What ``staccato status --json`` prints (README.md, "Status JSON").

    Attributes:
        rate_bytes_per_s: current copy rate; None when not copying.
        eta_s: seconds to completion at the current rate; None when unknown.
        last_retry_error: why the newest retry happened, while one is pending.
        next_attempt_at: when that retry's next attempt is scheduled (ISO 8601, UTC),
            while the step waits out its backoff.
        reason: why a ``queued`` transfer waits (which transfer holds the destination).
        runs_as: for a front run (a ``TransferWorkflow`` whose id is not the
            destination's transfer id): the destination's transfer it runs as, whose
            progress this status shows.
        starts_at: for a ``scheduled`` transfer started with a delay (``submit
            --not-before``): when it starts (ISO 8601, UTC).
        up_to_date: True when the transfer completed without copying because the
            destination already matched at ``sync_level`` (``bytes_done`` is then 0:
            nothing was copied); None otherwise.
        sync_level: the level it matched at (with ``up_to_date``).
        staged_bytes: in the ``staging`` phase, the bytes of the source read into the
            worker's staging cache so far; None otherwise.
        tuning: a tuned transfer's optimizer choice (:class:`TuningView`); None for
            one with fixed streams and chunk size.
        read_from: where the transfer reads (read) the bytes: ``"origin"``, the URL
            of a known copy (a destination an earlier transfer of the same source
            version wrote, checked against its record), or :data:`READ_STAGED` (its
            source's entry found in the worker's staging cache); None until decided.
        read_from_reason: why that one (the copy's record matched; or why the origin).
        kind: ``"transfer"`` (a dataset's status says ``"dataset"``, a group's ``"group"``).
        started_at: when this run started (ISO 8601, UTC, ``2026-12-02T18:07:03.250Z``);
            ``list`` orders every kind newest first by it. None when not known.
        ended_at: when this run closed (completed, failed, cancelled; ISO 8601, UTC);
            None while it runs.
        duration_s: a completed transfer's seconds from its start to verified (the
            result's ``duration_s``; ``cp``'s end line says it with the average rate,
            as ``cp -r``'s summary does); None otherwise.
        cleanup: a ``failed`` transfer whose run still removes its partial data: where
            it is (the temp file, the multipart upload); the run holds the destination
            until that is done, and ``last_retry_error`` says why the clean-up retries;
            None otherwise.
        left_behind: a ``failed`` transfer whose clean-up gave up (its server stayed
            down past the clean-up's retries) or was stopped by ``cancel``: the partial
            data that may be left (the temp file and journal, the multipart upload) and
            how to remove it (file, SFTP: the next transfer to the destination removes
            it; S3: abort the upload); None otherwise.
        tuner_chooses: True for a tuned transfer (no ``--streams`` nor
            ``--chunk-size``) that has not begun copying: the per-link optimizer
            chooses streams and chunk size then, so ``streams`` and ``chunk_size`` are
            only the defaults it may start from (null in :meth:`to_json_dict`, the
            ``--json``); None otherwise (``tuning`` then shows its choice once made).
        untuned: why a transfer on a tuned link, given neither ``--streams`` nor
            ``--chunk-size``, runs the fixed defaults: ``max_rate`` for a rate-capped
            copy (``--max-rate``: the cap, not the link, is its bottleneck; from its
            start memo); None otherwise.
        streams_unknown: True for a tuned transfer whose copy has begun (its streams
            have heartbeated or moved bytes) while no worker answers: the streams and
            chunk size its optimizer chose are in the workflow's state, which only a
            worker reads (null in :meth:`to_json_dict`); None otherwise.
        cancel_requested: True while a cancel asked of the running transfer has not
            taken effect (a dead worker's run: until a worker polls), as a dataset's
            status says; False otherwise.
        restarted: the run lost its write session and copied everything again into
            a new one (S3: a new multipart upload), how many times and why the last
            (:func:`restarted_text`: ``upload restarted 1 time (...): <reason>``);
            None when it did not (or no worker answers for a running run).
        verified_bytes: in phase ``verify`` (a checksum read-back of the destination's
            data), the bytes read back and checked so far, of ``verify_bytes_total``;
            with ``verify_rate_bytes_per_s`` (while bytes are read) and
            ``verify_eta_s``; None outside it (and for a check with no byte read here,
            ``size``). A tester saw no progress for the whole ``full`` read-back.
        publish_copied_bytes: in phase ``publish``, a publish that writes a fresh
            copy of the data (SFTP: after an earlier worker life a stale writer may
            still write into the temp file, ``docs/sftp.md``): the bytes written so far,
            of ``publish_bytes_total``, with ``publish_rate_bytes_per_s`` while they
            move; such a publish is not ``stalled_step`` while they do. None otherwise
            (a publish that renames the temp file, or a worker before 0.38).
        publish_waiting_since: in phase ``publish``, a publish that has moved nothing
            for :data:`RATE_CURRENT_S` seconds while its worker heartbeats: it waits for
            its store (an S3 CompleteMultipartUpload may take minutes: "Processing of
            a Complete Multipart Upload request could take several minutes", AWS S3
            API reference), bounded by the step's own timeout, so it is not
            ``stalled_step``: since when (ISO 8601, UTC), ``publish_waiting_s`` how
            long (seconds), ``publish_waiting_parts`` the parts the store assembles
            (None: not said). A publish whose heartbeats stopped (its worker killed or
            frozen) is ``stalled_step`` instead. None otherwise.
        verify_level: a completed transfer's verify level (``full``: every byte read
            back before publish); None otherwise.
        segments_copied_again: a completed transfer whose data was read back whole
            before publish (``full``; ``checksum`` after a pause): the segments that
            read-back found damaged and copied again (0 normally); None when none ran.
        cancel_requested_at: when that cancel was asked (ISO 8601, UTC, from the
            run's ``WorkflowExecutionCancelRequested`` event), while
            ``cancel_requested``; None otherwise or when the history did not say.
        bytes_durable: bytes durable at the destination (committed segments and
            journaled chunks), which a resume does not send again; ``bytes_done`` also
            counts the running streams' chunks in flight (read, not yet written). Of
            a failed or cancelled run whose clean-up has run: 0 (it removed the partial
            data; what it could not remove, ``left_behind`` names, and no run resumes
            from that). None when not known (a run or a
            worker before 0.25.0).
        idle_since: a running transfer whose streams have all moved nothing for
            :data:`RATE_CURRENT_S` seconds while a worker answers (a server that
            accepts connections and says nothing, before the stream's I/O timeout or
            hang watch ends its attempt): when a byte last moved (ISO 8601, UTC), as
            a dataset's ``idle_since``; or, while ``stalled_step`` is set, when that
            step's attempt started; None otherwise.
        stalled_step: a short step (``stat``, ``prepare``, ``sync_check``,
            ``publish``, ``verify``, ``cleanup``) whose attempt, a regular activity,
            has run :data:`RATE_CURRENT_S` seconds or more without returning while its
            worker heartbeats and answers (a publish that says when it last moved:
            only once its heartbeats are overdue, else ``publish_waiting_since``): it waits for its endpoint (a server that
            accepts connections and says nothing), named by the step's endpoints
            (:func:`staccato.step_endpoints.step_endpoints_named`); ``idle_since``
            then says since when. None otherwise (its first, local attempt shows no
            such thing: ``last_retry_error`` says the worker is busy running it).
    """

    kind: str = "transfer"
    id: str
    state: TransferState
    source: str
    destination: str
    bytes_total: int | None
    bytes_done: int
    bytes_durable: int | None = None
    rate_bytes_per_s: float | None
    eta_s: float | None
    streams: int
    chunk_size: int
    checksum: str | None
    error: str | None
    last_retry_error: str | None = None
    next_attempt_at: str | None = None
    phase: str | None = None
    verified_bytes: int | None = None
    verify_bytes_total: int | None = None
    verify_rate_bytes_per_s: float | None = None
    verify_eta_s: float | None = None
    #: phase ``publish`` writing a fresh copy (SFTP, after an earlier worker life):
    #: bytes written, of ``publish_bytes_total``, and their rate while they move
    publish_copied_bytes: int | None = None
    publish_bytes_total: int | None = None
    publish_rate_bytes_per_s: float | None = None
    #: phase ``publish`` waiting for its store while its worker heartbeats
    publish_waiting_since: str | None = None
    publish_waiting_s: float | None = None
    publish_waiting_parts: int | None = None
    verify_level: VerifyMode | None = None
    segments_copied_again: int | None = None
    reason: str | None = None
    runs_as: str | None = None
    starts_at: str | None = None
    up_to_date: bool | None = None
    sync_level: SyncLevel | None = None
    staged_bytes: int | None = None
    #: the staging read's rate (bytes/s) while the source is being staged
    staging_rate_bytes_per_s: float | None = None
    tuning: TuningView | None = None
    read_from: str | None = None
    read_from_reason: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    duration_s: float | None = None
    cleanup: str | None = None
    left_behind: str | None = None
    #: a failed run that had published (its check after publish failed): the object
    #: at the destination is the one it published; None otherwise
    published: bool | None = None
    tuner_chooses: bool | None = None
    #: why a copy is not tuned where it would have been: ``max_rate`` (its ``--max-rate``:
    #: :func:`staccato.run_fields.rate_capped_untuned`); None otherwise
    untuned: str | None = None
    streams_unknown: bool | None = None
    cancel_requested: bool = False
    cancel_requested_at: str | None = None
    idle_since: str | None = None
    stalled_step: str | None = None
    #: ``stalled_step``'s heartbeats are overdue (its worker process killed or frozen),
    #: ``idle_since`` then its last motion; None otherwise
    stalled_heartbeat: bool | None = None
    restarted: str | None = None

    def to_json_dict(self) -> dict[str, Any]:
        """Plain dict with the enum as text; ``streams`` and ``chunk_size`` null while
        ``tuner_chooses`` (nothing chosen yet, as a tuned schedule's JSON says) or
        ``streams_unknown``."""
        data: dict[str, Any] = self.model_dump(mode="json")
        if self.tuner_chooses or self.streams_unknown:
            data["streams"] = data["chunk_size"] = None
        return data


# -- directory and prefix listings (Driver.list_page) -----------------------------------


class ListEntry(BaseModel):
    """One object under a listed directory or prefix (``Driver.list_page``).

    Attributes:
        name: the name relative to the listed root, exactly as the source spells it,
            ``/``-separated (an S3 key minus the prefix, kept byte for byte: ``a//b``,
            ``x/./y``, ``+``, ``%2B``, NFC or NFD). An error entry for a directory ends
            in ``/`` (``dir/``).
        size: bytes (a symbolic link's: its target's); 0 for an error entry.
        modified_at: modification time, seconds since the epoch; None if unknown.
        error: why this name cannot be copied ("broken symbolic link", "symbolic link
            loop", "cannot list directory: permission denied", ...); None for an object
            to copy.
    """

    name: str
    size: int = 0
    modified_at: float | None = None
    error: str | None = None


class ListPage(BaseModel):
    """A page of a listing, in strictly increasing order of ``name`` (UTF-8 bytes; an S3
    store keeping keys in a file tree lists ``/`` first: see ``Driver.list_page``).

    Attributes:
        entries: at most the ``limit`` asked for (fewer is not the end).
        next_after: pass it as ``after`` for the next page; None when the listing is
            over. A page of ``limit`` entries of names up to 1,024 bytes is at most
            ~``limit`` KiB of JSON (Temporal's payload limit is 2 MiB).
    """

    entries: list[ListEntry]
    next_after: str | None = None


class FrontInput(BaseModel):
    """Input of the ``run_as_destination_transfer`` activity of a front run.

    Attributes:
        request: the front run's validated request.
        front_id: the front run's workflow id.
        front_run_id: the front run's run id (marks the canonical run it starts).
    """

    request: TransferRequest
    front_id: str
    front_run_id: str


class FrontCheckpoint(BaseModel):
    """Heartbeat details of ``run_as_destination_transfer``: what the front runs as.

    Attributes:
        v: schema version.
        transfer_id: the destination's transfer id (canonical workflow id).
        run_id: the canonical run started or attached to; None while waiting.
        attached: the run was an identical transfer already running.
        waiting_for: while queued: why (which transfer holds the destination).
    """

    v: int = 1
    transfer_id: str
    run_id: str | None = None
    attached: bool = False
    waiting_for: str | None = None


# --- endpoint and link limits (staccato.workflows.governor) ---------------------------


class Limits(BaseModel):
    """The limits of one endpoint or link (None: not limited).

    Attributes:
        max_active: transfers holding a slot at once.
        max_streams: streams (copy activities) at once, summed over the holders.
        max_rate: bytes per second shared by every stream of every holder (each
            holder stream paces its reads to an equal share).
        window: ``HH:MM[:SS]-HH:MM[:SS][,TZ]`` when new transfers may start (the
            governor grants nothing outside it, by workflow time; running holders
            finish): :mod:`staccato.windows`.
    """

    model_config = ConfigDict(extra="forbid")

    max_active: int | None = Field(None, ge=1)
    max_streams: int | None = Field(None, ge=1)
    max_rate: int | None = Field(None, ge=1)
    window: str | None = None

    def empty(self) -> bool:
        """Whether no limit is set."""
        return all(v is None for v in self.model_dump().values())


class SlotRequest(BaseModel):
    """A transfer asking a governor for a slot (signal ``acquire``).

    Attributes:
        ticket: ``<workflow id>/<run id>/<n>``: one per acquisition of a run; a
            repeated signal with the same ticket is ignored.
        streams: streams asked for (a ``max_streams`` governor grants 1..streams).
        named_queued: tell the asker it waits with ``slot_queued``
            (:class:`SlotQueued`: the governor and the ticket), not ``limit_queued``
            (the reason only): a dataset, whose batches wait under several tickets at
            once, asks so (patch ``dataset-hold-none-while-queued``). A governor from
            before ignores the field and sends ``limit_queued``.
    """

    ticket: str
    workflow_id: str
    run_id: str
    owner: str = ""
    priority: int = DEFAULT_PRIORITY
    streams: int = 1
    named_queued: bool = False
    seq: int = 0  # arrival order, set by the governor
    told: bool = False  # the governor signalled it why it waits


class SlotHolder(SlotRequest):
    """A granted request: ``token`` is the fencing token (grows with every grant).

    Attributes:
        running: streams of it still running, as its transfer told (signal
            ``running``, :class:`SlotRunning`) when lanes ran out of segments; None:
            not told (all its streams run). Only the division of ``max_rate``
            (:meth:`reading`) uses it; ``max_streams`` counts ``streams``.
    """

    token: int
    running: int | None = None

    def reading(self) -> int:
        """Streams that share the governor's ``max_rate``: the lower of those held
        and those its transfer said still run."""
        return self.streams if self.running is None else min(self.streams, self.running)


def rate_per_stream(max_rate: float | None, holders: list[SlotHolder]) -> float | None:
    """Bytes per second each holder stream may read: ``max_rate`` (bytes/s) divided
    equally over the streams reading (:meth:`SlotHolder.reading`, at least 1); None
    without a ``max_rate``."""
    if max_rate is None:
        return None
    return max_rate / max(1, sum(h.reading() for h in holders))


class SlotRelease(BaseModel):
    """Signal ``release``: give back the slot of ``ticket`` (or leave the queue)."""

    ticket: str
    streams: int | None = None  # set: keep the slot but hold only this many streams


class SlotRunning(BaseModel):
    """Signal ``running``: ``streams`` of ``ticket``'s streams still run (its other
    lanes have no segment left); the governor divides its ``max_rate`` over
    min(held, running) of each holder. A number >= the streams held undoes it (a
    transfer that copies again after a verify found damage)."""

    ticket: str
    streams: int = Field(ge=1)


class LimitChange(BaseModel):
    """Signal ``set_limits``: the limits in ``set`` replace the stored ones; those
    named in ``unset`` (field names of :class:`Limits`) are cleared."""

    set: Limits = Field(default_factory=Limits)
    unset: list[str] = Field(default_factory=list)


class GovernorState(BaseModel):
    """The durable state of a governor, carried through continue-as-new.

    Attributes:
        grants_by_owner: grants since the queue was last empty, per owner (fair share).
    """

    name: str
    limits: Limits = Field(default_factory=Limits)
    holders: list[SlotHolder] = Field(default_factory=list)
    waiters: list[SlotRequest] = Field(default_factory=list)
    grants_by_owner: dict[str, int] = Field(default_factory=dict)
    next_token: int = 1
    next_seq: int = 1
    grants_total: int = 0


class SlotView(BaseModel):
    """Query ``slot``: where a ticket stands (``known`` False: the governor never saw it
    or has forgotten it, e.g. after it ended)."""

    known: bool
    granted: bool = False
    token: int = 0
    streams: int = 0
    position: int = 0  # 1-based place in line while waiting
    reason: str = ""


class SlotGrant(BaseModel):
    """One governor's grant to a transfer.

    Attributes:
        max_rate: the governor's ``max_rate`` (bytes/s) as it granted, which paces the
            holder's streams; None: none (or a governor before this field).
    """

    name: str
    ticket: str
    token: int
    streams: int
    max_rate: float | None = None


class SlotQueued(BaseModel):
    """A governor tells an asker that ``ticket`` waits in its queue (signal
    ``slot_queued``, sent instead of ``limit_queued`` to a :class:`SlotRequest` with
    ``named_queued``).

    Attributes:
        name: the governor's endpoint or link (:func:`staccato.links.governor_id`).
        ticket: the ticket that waits.
        reason: why, in the governor's words (what ``limit_queued`` carries).
    """

    name: str
    ticket: str
    reason: str


class StartGovernorInput(BaseModel):
    """Input of the ``start_governor`` activity: ``acquire`` with signal-with-start."""

    name: str
    request: SlotRequest


class HolderRef(BaseModel):
    """A holder or waiter, for the governor's liveness check."""

    ticket: str
    workflow_id: str
    run_id: str


# -- fan-out: one source to several destinations (staccato.workflows.fanout) -------------

#: workflow id prefix of a fan-out group (``staccato-group-<24 hex>``)
GROUP_ID_PREFIX = "staccato-group-"
#: most destinations of one fan-out group (each a child workflow; keeps the group's
#: history and its result well under Temporal's limits)
MAX_FAN_OUT = 64


class StagedFromGroup(LeanModel):
    """What a fan-out child reads instead of the origin: the group's staging cache
    entry of the source, staged once by the group (and pinned under the group id
    until the group ends).

    Attributes:
        group_id: the fan-out group's workflow id (holds the pin).
        key: the staging cache key (:func:`staccato.staging.entry_key`).
        source_info: the source's stat as the group read it (size in bytes, version).
        rate_group: the dataset (its workflow id) whose own ``max_rate`` the group
            shares, when the group is a large file of a dataset to several roots
            (:attr:`FanOutRequest.rate_group`): the child's streams read at most the
            dataset's per-stream share, as a large file's transfer to one root does
            (:attr:`StreamInput.rate_group`). None: not in such a dataset (left out of
            the payload, which stays as before).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    group_id: str
    key: str
    source_info: ObjectInfo
    rate_group: str | None = None

    _omit_when = omitted_while_none("rate_group")


class GroupState(StrEnum):
    """States of a fan-out group (the dataset's state names): ``completed`` when every
    destination completed, ``completed_with_errors`` when some did not (each with its
    reason), ``failed`` when the source could not be read (no destination started),
    ``cancelled`` when the group was cancelled."""

    running = "running"
    completed = "completed"
    completed_with_errors = "completed_with_errors"
    failed = "failed"
    cancelled = "cancelled"


class FanOutRequest(LeanModel):
    """Input of ``FanOutWorkflow``: one canonical source, two or more canonical
    destinations (distinct, none the source), the options every child uses.

    Raises (validation):
        ValueError: fewer than two destinations, a destination given twice, a
            destination equal to the source, or a non-canonical URL (as
            :class:`TransferRequest`, which validates each pair).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str
    destinations: list[str] = Field(min_length=2, max_length=MAX_FAN_OUT)
    options: TransferOptions = TransferOptions()
    source_secret: str | None = None
    #: set by a dataset to several roots for a large file's group when the dataset's
    #: own ``max_rate`` caps it whole: the dataset's workflow id. The group's staging
    #: read and its children's streams then read at most the dataset's per-stream
    #: share (:mod:`staccato.workers.rates`). How to run, not what to write: not part
    #: of :meth:`request_hash`; left out of the payload while None
    rate_group: str | None = None

    _omit_when = omitted_while_none("rate_group")

    @model_validator(mode="after")
    def _distinct(self) -> FanOutRequest:
        seen: set[str] = set()
        for destination in self.destinations:
            if destination in seen:
                raise ValueError(f"destination given twice: {destination}")
            seen.add(destination)
            self.child(destination)  # canonical, not the source
        return self

    def child(self, destination: str, staged: StagedFromGroup | None = None) -> TransferRequest:
        """The request of the child transfer writing ``destination``."""
        return TransferRequest(
            source=self.source,
            destination=destination,
            options=self.options,
            source_secret=self.source_secret,
            staged_from_group=staged,
        )

    def group_hash(self) -> str:
        """Hash of the source and the destination set (the group id's digits)."""
        text = "\n".join([self.source.split("?", 1)[0], *sorted(self.destinations)])
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def request_hash(self) -> str:
        """Tells an identical re-submission (attaches) from a different one: the rule
        of a single transfer's (:func:`request_digest`; ``rate_group`` left out)."""
        plain = self.model_copy(update={"rate_group": None}) if self.rate_group else self
        return request_digest(plain, self.options)

    def previous_request_hashes(self) -> tuple[str, ...]:
        """The hash 0.12.0 and earlier kept in a group's memo (only ``if_busy``,
        ``priority`` and ``owner`` left out): a group they started that still runs is
        attached to by its identical request."""
        data = self.model_dump_json(exclude={"options": {"if_busy", "priority", "owner"}})
        return (hashlib.sha256(data.encode()).hexdigest()[:32],)


class DestinationOutcome(LeanModel):
    """One destination of a fan-out group.

    Attributes:
        destination: canonical URL.
        transfer_id: the child transfer's workflow id (the destination's lock).
        run_id: the child's run (None until it started).
        state: scheduled, running, completed, failed or cancelled.
        error: why it failed or was cancelled.
        bytes: bytes copied (completed), else None.
        checksum: the object's checksum label (completed), else None.
        left_behind: a failed transfer whose clean-up gave up: what it left there and
            how to remove it (:func:`staccato.workflows.failures.left_behind`); left
            out of dumps while None.
    """

    destination: str
    transfer_id: str
    run_id: str | None = None
    state: TransferState = TransferState.scheduled
    error: str | None = None
    bytes: int | None = None
    checksum: str | None = None
    left_behind: str | None = None

    _omit_when = omitted_while_none("left_behind")  # payloads and JSON as before when none


class FanOutProgress(BaseModel):
    """The group's state and its destinations (query ``progress``, and the result).

    Attributes:
        staged_bytes: bytes of the source in the staging cache (None: not staged, an
            empty source).
        stagings: how many times the group staged the source (1 unless the staging
            activity had to start over).
    """

    group_id: str
    state: GroupState
    source: str
    phase: str = "stat"
    bytes_total: int | None = None
    source_version: str | None = None
    destinations: list[DestinationOutcome] = Field(default_factory=list)
    error: str | None = None
    staged_bytes: int | None = None


class DestinationStatus(DestinationOutcome):
    """A destination's row of ``staccato status GROUP --json``: the outcome plus, while
    its transfer runs, its bytes done (bytes), phase, and its transfer's rate (bytes/s,
    over the last :data:`RATE_CURRENT_S` seconds, as a single transfer's) and ETA (s);
    None when not copying."""

    bytes_done: int | None = None
    bytes_total: int | None = None
    phase: str | None = None
    rate_bytes_per_s: float | None = None
    eta_s: float | None = None


class GroupStatus(BaseModel):
    """What ``staccato status GROUP_ID --json`` prints for a fan-out group (README.md,
    "Status JSON"): ``kind`` is ``"group"``."""

    kind: str = "group"
    id: str
    state: GroupState
    source: str
    phase: str | None = None
    bytes_total: int | None = None
    error: str | None = None
    #: bytes of the source in the staging cache (while staging: read so far)
    staged_bytes: int | None = None
    #: the staging read's rate (bytes/s) while the source is being staged
    staging_rate_bytes_per_s: float | None = None
    destinations: list[DestinationStatus]
    #: when the group started (ISO 8601, UTC); ``list`` orders by it
    started_at: str | None = None
    #: why nothing moves now: no worker answers for the running group (what then
    #: takes effect), and/or its staging read's retry (``attempt N: <failure>``); the
    #: same words as a single transfer's ``last_retry_error``
    last_retry_error: str | None = None
    #: when that retry's next attempt is due (ISO 8601, UTC); None: it runs now
    next_attempt_at: str | None = None
    #: True: a cancel was requested of the running group and has not taken effect yet
    #: (a dead worker's group: until one polls); False otherwise
    cancel_requested: bool = False
    #: when that cancel was asked (ISO 8601, UTC: the run's
    #: ``WorkflowExecutionCancelRequested`` event), while ``cancel_requested``; None
    #: otherwise or when the history did not say (a single transfer's field)
    cancel_requested_at: str | None = None
    #: while destinations copy: the sum of their rates (bytes written per second, each
    #: over the last :data:`RATE_CURRENT_S` seconds); None when none copies
    rate_bytes_per_s: float | None = None
    #: seconds until the last destination copying is done: the longest of their ETAs
    #: (None while one copying has none, or none copies)
    eta_s: float | None = None

    def to_json_dict(self) -> dict[str, Any]:
        """Plain dict with the enums as text."""
        return self.model_dump(mode="json")


TransferRequest.model_rebuild()  # its staged_from_group names a model defined above
