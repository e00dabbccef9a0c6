"""Command-line options shared by the transfer commands, and their parsers."""

from __future__ import annotations

import getpass
import re
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import typer

from staccato import quantities
from staccato.models import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_PRIORITY,
    DEFAULT_RETRY_FOR_S,
    DEFAULT_STREAMS,
    MAX_CHUNK_SIZE,
    MAX_STREAMS,
    ChecksumAlgorithm,
    IfBusy,
    SyncLevel,
    TransferOptions,
    VerifyMode,
)

T = TypeVar("T")


def byte_count(text: str, expected: str, shown: str | None = None, per: str = "") -> int:
    """:func:`staccato.quantities.byte_count` as a usage error.

    Raises:
        typer.BadParameter: not a byte count, or an ambiguous unit (``Mb``).
    """
    return _usage(quantities.byte_count, text, expected, shown, per)


def _usage(parse: Callable[..., T], *args: Any) -> T:
    """``parse(*args)`` (a :mod:`staccato.quantities` reader), its ``ValueError`` a
    usage error with the same words (click puts the option's name before them)."""
    try:
        return parse(*args)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None


def parse_size(text: str | int) -> int:
    """Parse a byte size: ``8388608``, ``8MiB``, ``64M`` (= 64 MiB, as in rclone and dd),
    ``1.5GiB``, ``100MB`` (decimal, 10^6); ``10Mb`` is refused as ambiguous (bits or
    bytes?), as ``--max-rate 10Mb/s`` is (:func:`byte_count`).

    The messages name no option: click puts the option's own name before them
    (``Invalid value for '--OPTION': '0': expected a size from 1 byte to 5GiB``);
    ``--chunk-size`` has its own range (:func:`parse_chunk_size`).

    Raises:
        typer.BadParameter: not a size, an ambiguous unit (``Mb``), or below 1 byte /
            above 5 GiB.
    """
    return _usage(quantities.parse_size, text)


#: the smallest ``--chunk-size`` a command takes, bytes: each chunk costs a checkpoint
#: record, a checksum and a request or more (1-byte chunks moved 100 KB in ~70 s); the
#: API (``TransferOptions``) still takes any size from 1 byte
MIN_CHUNK_SIZE_OPTION = 64 * 1024


def parse_chunk_size(text: str | int) -> int:
    """Parse ``--chunk-size``: a size as :func:`parse_size` (the API's words for what
    is not a size from 1 byte to 5 GiB), of at least :data:`MIN_CHUNK_SIZE_OPTION`.

    Raises:
        typer.BadParameter: not a size (:func:`parse_size`'s words), or out of
            64 KiB..5 GiB (one message for both ends).
    """
    try:
        value = (
            text
            if isinstance(text, int)
            else quantities.byte_count(str(text).strip(), quantities.SIZE_EXPECTED)
        )
    except ValueError:
        return parse_size(text)  # no size at all: its words (raises)
    # every size out of range in this option's range, one message (tester72: 0 said
    # "from 1 byte to 5GiB", 1 "from 64KiB to 5GiB")
    if not MIN_CHUNK_SIZE_OPTION <= value <= quantities.MAX_SIZE:
        raise typer.BadParameter(
            f"{text!r}: expected a size from 64KiB to 5GiB (bytes or a unit, e.g. 8MiB): "
            "each chunk is a checkpoint, a checksum and at least one request"
        )
    return value


def parse_small_file_max(text: str | int) -> int:
    """Parse ``--small-file-max``: a size as :func:`parse_size`, or 0 (every file
    with data as a transfer of its own; only empty files go in batches).

    Raises:
        typer.BadParameter: not a size, or above 5 GiB.
    """
    value = byte_count(str(text).strip(), "a size; use bytes or a unit, e.g. 8MiB, 64M, 0")
    if not 0 <= value <= MAX_CHUNK_SIZE:
        raise typer.BadParameter(
            f"{text!r}: expected a size from 0 to 5GiB (bytes or a unit, e.g. 8MiB)"
        )
    return value


#: the one range of every TCP port option (``up --port``/``--ui-port``,
#: ``codec-server --port``)
PORT_MIN, PORT_MAX = 1, 65535


def parse_port(text: str | int) -> int:
    """Parse a TCP port: an integer from :data:`PORT_MIN` to :data:`PORT_MAX` (click
    puts the option's name before the message: ``Invalid value for '--port': '70000'
    is not a port: expected a number from 1 to 65535``).

    Raises:
        typer.BadParameter: not an integer, or outside 1..65535 (0, -1, 70000).
    """
    try:
        value = int(str(text).strip())
    except ValueError:
        value = 0
    if not PORT_MIN <= value <= PORT_MAX:
        raise typer.BadParameter(
            f"{str(text)!r} is not a port: expected a number from {PORT_MIN} to {PORT_MAX}"
        )
    return value


def port_option(name: str, help: str) -> typer.models.OptionInfo:
    """A TCP port option ``name``, checked by :func:`parse_port` (a usage error, exit 2,
    naming the option and the range)."""
    return typer.Option(name, parser=parse_port, metavar="PORT", help=help)


def parse_duration(text: str | float) -> float:
    """Parse a duration in seconds: ``90`` or ``90s``, ``30m``, ``24h``, ``2d``, ``1.5h``
    (:func:`staccato.quantities.parse_duration`).

    Raises:
        typer.BadParameter: not a duration, or outside 1 s .. 30 days.
    """
    return _usage(quantities.parse_duration, text)


def parse_not_before(text: str) -> datetime:
    """Parse a start time: a delay from now (``90s``, ``10m``, ``2h``, ``1d``) or an
    ISO 8601 time (``2026-12-01T18:00:00Z``, ``2026-12-01 18:00``; without an offset
    it is local time). Returns an aware UTC datetime.

    Raises:
        typer.BadParameter: neither form, or a time in the past, or more than 30 days ahead.
    """
    cleaned = text.strip()
    now = datetime.now(UTC)
    if re.fullmatch(r"\d+(?:\.\d+)?\s*[smhd]?", cleaned.lower()):
        return now + timedelta(seconds=parse_duration(cleaned))
    try:
        at = datetime.fromisoformat(cleaned.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is neither a delay (90s, 10m, 2h, 1d) nor an ISO 8601 time "
            "(2026-12-01T18:00:00Z)"
        ) from None
    # the one rule of a start time, the Python API's too
    return _usage(quantities.check_start_time, at, now, repr(text))


E = TypeVar("E", bound=StrEnum)

#: the values of every option made by :func:`choice_option`, by option name (for the
#: suggestions of an unknown option: ``--wait`` -> ``--if-busy wait``)
CHOICES: dict[str, tuple[str, ...]] = {}


def parse_choice(choices: type[E]) -> Callable[[Any], E]:
    """A parser of an option taking one of ``choices``' values (case-sensitive), with
    click's ``Choice`` words: click puts the option's name before them (``Invalid value
    for '--verify': 'maybe' is not one of 'checksum', 'full', 'size', 'none'.``). Typer 0.29
    checks an enum option through pydantic, whose words came with it ("Value error,
    'maybe' is not one of ..."), and has no ``click_type`` to give it click's
    ``Choice`` (it carries its own copy of click, without the types).

    Raises (the parser):
        typer.BadParameter: not one of the values.
    """

    def parse(value: Any) -> E:
        if isinstance(value, choices):  # a default
            return value
        for member in choices:
            if member.value == value:
                return member
        allowed = ", ".join(repr(m.value) for m in choices)
        raise typer.BadParameter(f"{str(value)!r} is not one of {allowed}.")

    return parse


def choice_option(choices: type[E], name: str, **kwargs: Any) -> Any:
    """An option ``name`` taking one of ``choices``' values (:func:`parse_choice`),
    shown as ``<a|b|c>`` in the help; its values are kept in :data:`CHOICES`."""
    values = tuple(m.value for m in choices)
    CHOICES[name] = values
    return typer.Option(
        name, parser=parse_choice(choices), metavar=f"<{'|'.join(values)}>", **kwargs
    )


def parse_int_range(low: int, high: int) -> Callable[[Any], int]:
    """A parser of a whole number from ``low`` to ``high``, with click's ``IntRange``
    words (``Invalid value for '--priority': 9 is not in the range 1<=x<=5.``); typer
    0.29's came from pydantic ("Input should be less than or equal to 5").

    Raises (the parser):
        typer.BadParameter: not a whole number, or outside the range.
    """

    def parse(value: Any) -> int:
        try:
            number = int(str(value).strip())
        except ValueError:
            raise typer.BadParameter(f"{str(value)!r} is not a valid integer.") from None
        if not low <= number <= high:
            raise typer.BadParameter(f"{number} is not in the range {low}<=x<={high}.")
        return number

    return parse


def int_range_option(name: str, low: int, high: int, **kwargs: Any) -> Any:
    """An option ``name`` taking a whole number from ``low`` to ``high``
    (:func:`parse_int_range`); the help shows the range as typer does
    (``<int range> [1<=x<=5]``)."""
    return typer.Option(name, parser=parse_int_range(low, high), min=low, max=high, **kwargs)


SourceArg = Annotated[str, typer.Argument(help="Source URL or path.", metavar="SOURCE")]
DestinationArg = Annotated[
    str,
    typer.Argument(help="Destination URL or path (the file to write).", metavar="DESTINATION"),
]
#: shown as the default of --streams and --chunk-size
_TUNED_DEFAULT = "tuned per link unless either or --max-rate is given; STACCATO_TUNING=0: {}"
ChunkSizeOption = Annotated[
    int | None,
    typer.Option(
        "--chunk-size",
        parser=parse_chunk_size,
        metavar="SIZE",
        help="Bytes per chunk, the unit of copy, checksum and checkpoint: 8MiB, 64M (=MiB), 100MB.",
        show_default=_TUNED_DEFAULT.format("16MiB"),
    ),
]
StreamsOption = Annotated[
    int | None,
    int_range_option(
        "--streams",
        1,
        MAX_STREAMS,
        help="Parallel streams (activities) copying chunks.",
        show_default=_TUNED_DEFAULT.format(DEFAULT_STREAMS),
    ),
]
VerifyOption = Annotated[
    VerifyMode,
    choice_option(
        VerifyMode,
        "--verify",
        help="checksum: check what was written against the source's CRC32C/SHA-256 "
        "before publishing (local file: the buffer written, made durable; SFTP: the "
        "server hashes the temp file; S3: the store checks each part's CRC32C); full: "
        "checksum, and before publishing read every byte of the temp file back once "
        "more and compare it with the source's chunk checksums, copying damaged "
        "segments again (costs one more read of every byte: a 1 GiB local copy took "
        "9.2 s instead of 4.2 s on a loaded test VM; use it when another process may write the destination directory during the "
        "copy; local file destinations, single transfers and fan-outs); size: compare "
        "sizes; none.",
    ),
]


def check_verify_full(verify: VerifyMode, destinations: list[str], recursive: bool) -> None:
    """Exit 2 (usage) for ``--verify full`` where it would not read the data back:
    with ``-r`` or to a destination whose kind is not in
    :data:`staccato.models.VERIFY_FULL_KINDS`. The rule and its words are
    :func:`staccato.models.verify_full_refusal`'s, the Python API's too.

    Raises:
        typer.Exit: through :func:`staccato.cli.common.fail`, code 2, the message
            naming the option, the URL's kind and what is accepted.
    """
    from staccato.cli.common import EXIT_USAGE, fail
    from staccato.models import verify_full_refusal

    refused = verify_full_refusal(verify, destinations, recursive=recursive)
    if refused is not None:
        fail(refused, EXIT_USAGE)


ChecksumOption = Annotated[
    ChecksumAlgorithm,
    choice_option(ChecksumAlgorithm, "--checksum", help="Chunk checksum: crc32c (fast) or sha256."),
]
RetryForOption = Annotated[
    float,
    typer.Option(
        "--retry-for",
        parser=parse_duration,
        metavar="DURATION",
        help="Keep retrying transient failures (an endpoint down, a worker gone, a full "
        "disk: the copied bytes are kept) for this long without progress before "
        "failing: 90s, 30m, 24h, 2d. A server that hangs mid-copy: this long after the "
        "copy last got further, once nothing moved for STACCATO_HANG_S. Default: 24h.",
        show_default=False,
    ),
]
IfBusyOption = Annotated[
    IfBusy,
    choice_option(
        IfBusy,
        "--if-busy",
        help="When a different transfer is writing the destination: fail (exit 1, "
        '"destination busy") or wait for it to end (state queued) and then run.',
    ),
]
NotBeforeOption = Annotated[
    datetime | None,
    typer.Option(
        "--not-before",
        parser=parse_not_before,
        metavar="TIME",
        help="Start at this time (ISO 8601, e.g. 2026-12-01T18:00:00Z) or after this "
        "delay (10m, 2h); the destination is locked only from then on.",
    ),
]
StageOption = Annotated[
    bool,
    typer.Option(
        "--stage",
        help="Read the source once into the worker's staging cache (STACCATO_STAGING_DIR, "
        "capped by STACCATO_STAGING_MAX_BYTES) and write the destination from there, so a "
        "failure at the destination never reads the source again. Sources that cannot "
        "serve byte ranges are always staged. Not with -r.",
    ),
]
FromOriginOption = Annotated[
    bool,
    typer.Option(
        "--from-origin",
        help="Read the source itself, never a known copy: by default a transfer reads a "
        "destination an earlier transfer of the same source version wrote, when that "
        "copy still matches its record (version and checksum). Not with -r.",
    ),
]
SyncLevelOption = Annotated[
    SyncLevel | None,
    choice_option(
        SyncLevel,
        "--sync-level",
        help="Skip the copy when the destination already matches the source: exists; "
        "size (and sizes equal); mtime (and the destination is not older); checksum (sizes "
        "and checksums equal, times not compared; on each run, reads in full an object "
        "that keeps no stored checksum). Default: "
        "always copy.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
QuietOption = Annotated[
    bool,
    typer.Option(
        "--quiet",
        "-q",
        help="Print nothing but errors and warnings (no progress, no summary or notes "
        "such as 'attached' or 'queued'; submit still prints the id).",
    ),
]
#: ``watch``'s -q: no submit to speak of (tester75), and no note on Ctrl-C
WatchQuietOption = Annotated[
    bool,
    typer.Option(
        "--quiet",
        "-q",
        help="Print nothing but errors and warnings: no progress, no summary, no note "
        "on Ctrl-C (the exit code says how it ended).",
    ),
]


def _named(value: str) -> str:
    """TRANSFER's check: an empty or blank id names nothing (Temporal would answer
    'WorkflowId is not set')."""
    if not value.strip():
        raise typer.BadParameter(
            "is empty: give a transfer id (staccato-...), a dataset or group id, or the "
            "destination URL or path"
        )
    return value


TransferArg = Annotated[
    str,
    typer.Argument(
        help="Transfer id, or the destination URL/path.", metavar="TRANSFER", callback=_named
    ),
]
ProcessesOption = Annotated[
    int | None,
    int_range_option(
        "--processes",
        1,
        256,
        help="Activity processes (default STACCATO_WORKER_PROCESSES or max(4, CPUs)).",
    ),
]


PriorityOption = Annotated[
    int,
    int_range_option(
        "--priority",
        1,
        5,
        help="1 (most urgent) .. 5: orders the queue of a limited endpoint or link "
        "(`staccato limit`) and Temporal's task queues.",
    ),
]


def parse_owner(text: str) -> str:
    """An owner name: 1..64 characters after stripping blanks (the limit of
    :class:`~staccato.models.TransferOptions`' ``owner``).

    Raises:
        typer.BadParameter: empty (or blanks only) or over 64 characters.
    """
    owner = str(text).strip()
    if not owner:
        raise typer.BadParameter(
            "an empty owner: expected a name of 1..64 characters "
            "(leave --owner out for STACCATO_OWNER or your OS user name)"
        )
    if len(owner) > 64:
        raise typer.BadParameter(f"{owner[:20]!r}...: expected at most 64 characters")
    if any(unicodedata.category(c).startswith("C") for c in owner):
        raise typer.BadParameter(
            f"{owner!r}: control characters (a newline, a tab) cannot be in an owner name"
        )
    return owner


OwnerOption = Annotated[
    str | None,
    typer.Option(
        "--owner",
        parser=parse_owner,
        metavar="NAME",
        help="Who the transfer is for: owners share a limited endpoint fairly. Default: "
        "STACCATO_OWNER, else your OS user name.",
        show_default=False,
    ),
]


#: the highest rate accepted, bytes per second (1 PiB/s: far above any link)
MAX_RATE = quantities.MAX_RATE


def parse_rate(text: str) -> int:
    """A rate in bytes per second: ``40MB/s``, ``1GiB/s``, ``500k`` (= KiB/s); the only
    suffix understood is ``/s`` (:func:`staccato.quantities.parse_rate`).

    Raises:
        typer.BadParameter: not a rate, below 1 byte/s or above 1 PiB/s.
    """
    return _usage(quantities.parse_rate, text)


MaxRateOption = Annotated[
    int | None,
    typer.Option(
        "--max-rate",
        parser=parse_rate,
        metavar="RATE",
        help="Bytes per second for this transfer, summed over its streams (40MB/s); "
        "an endpoint's or link's --max-rate (`staccato limit`) applies too. With -r it "
        "caps the whole dataset: its batches of small files (each reads as one stream) "
        "and its large files' transfers' streams share it; with several destinations "
        "it caps what the dataset reads from the source and what it writes to each "
        "destination. A rate-capped copy is not tuned: the fixed 4 streams x 16 MiB "
        "run unless --streams or --chunk-size is given.",
        show_default=False,
    ),
]


def default_owner() -> str:
    """``STACCATO_OWNER``, else the OS user (``getpass.getuser``), else ``""``.

    Raises:
        SettingsError: a STACCATO_* variable is invalid, e.g. ``STACCATO_OWNER`` is
            longer than ``--owner`` allows (64 characters).
    """
    from staccato import settings  # not at import: --help loads no settings

    owner = settings.checked().owner  # a start-only setting: refused here when bad
    if owner:
        return owner
    try:
        return getpass.getuser()[:64]
    except (KeyError, OSError):  # no user name for this uid (a bare container)
        return ""


def transfer_options(
    chunk_size: int | None,
    streams: int | None,
    verify: VerifyMode,
    checksum: ChecksumAlgorithm,
    retry_for: float = DEFAULT_RETRY_FOR_S,
    sync_level: SyncLevel | None = None,
    if_busy: IfBusy = IfBusy.fail,
    priority: int = DEFAULT_PRIORITY,
    owner: str | None = None,
    max_rate: int | None = None,
    stage: bool = False,
    from_origin: bool = False,
) -> TransferOptions:
    """The :class:`TransferOptions` the command-line options describe (``owner``
    None: :func:`default_owner`). Neither ``chunk_size`` nor ``streams`` given: the
    per-link optimizer chooses both (``tuning``), unless ``STACCATO_TUNING`` turns it
    off or ``max_rate`` is given; a value given always wins. A rate-capped copy is not
    tuned: the cap, not the link, is its bottleneck, and the optimizer stepped up to
    14 streams at ``--max-rate 50MiB/s`` (memory and connections held for a rate the
    fixed 4 streams x 16 MiB reach; the user's ``--streams`` sets more). The clean-up window is ``STACCATO_CLEANUP_FOR_S``'s
    (None: the workflow's 30 s).

    Raises:
        SettingsError: a STACCATO_* variable is invalid, start-only ones
            (:data:`staccato.settings.START_ONLY`) included.
    """
    from staccato import settings

    config = settings.checked()  # start-only settings: refused here when bad
    return TransferOptions(
        tuning=chunk_size is None and streams is None and max_rate is None and config.tuning,
        priority=priority,
        owner=owner or default_owner() or None,
        chunk_size=DEFAULT_CHUNK_SIZE if chunk_size is None else chunk_size,
        streams=DEFAULT_STREAMS if streams is None else streams,
        verify=verify,
        checksum=checksum,
        retry_for_s=retry_for,
        sync_level=sync_level,
        if_busy=if_busy,
        max_rate=max_rate,
        stage=stage,
        from_origin=from_origin,
        cleanup_for_s=config.cleanup_for_s,
    )
