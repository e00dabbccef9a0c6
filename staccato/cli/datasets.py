"""``cp -r`` / ``submit -r`` and a dataset's ``status``: the command side of datasets
(:mod:`staccato.dataset_client`). Exit codes: 0 every file copied or up to date;
1 some files failed (``completed_with_errors``, listed by ``status --failures``), the
dataset failed or was cancelled; 2 a usage error."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from staccato import units
from staccato.cli import render
from staccato.cli.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    KilledUpHint,
    fail,
    follow_or_hint,
    killed_up_warning,
    run,
    say_ignored,
    start_or_hint,
)
from staccato.cli.options import parse_small_file_max
from staccato.datasets.names import shown_name
from staccato.errors import USAGE_ERROR_TYPES
from staccato.models import TransferOptions

if TYPE_CHECKING:  # imported where used: `--help` and usage errors need no Temporal client
    from staccato.client import StaccatoClient
    from staccato.datasets.models import DatasetRequest, DatasetStatus, FileFailure
    from staccato.light_client import LightClient

#: seconds between two progress lines when stderr is not a terminal
PLAIN_LINE_INTERVAL_S = 2.0


def _tuning(small_file_max: int | None) -> dict[str, Any]:
    """The dataset request's fields the command line sets beyond the options."""
    return {} if small_file_max is None else {"small_file_max": small_file_max}


async def _start(
    source: str,
    destination: str | list[str],
    options: TransferOptions,
    include: list[str],
    exclude: list[str],
    small_file_max: int | None,
    retry_failed: bool,
    quiet: bool = False,
) -> tuple[StaccatoClient | LightClient, str, str | None]:
    """Start the dataset, its usage errors refused first (a bad URL or option, then a
    local source that is no directory: :func:`check_local_source`), before anything is
    asked of Temporal: through the light client (Temporal's HTTP API, without loading
    the SDK: :mod:`staccato.light_client`) when it is plain (one destination root, no
    ``--retry-failed``, the light client usable) and the start goes as usual, else
    through the SDK's client, which then starts, attaches or refuses it as always
    (``--retry-failed`` with no earlier dataset: exit 2). Returns the client that
    started it, the dataset id and, when the light client started it, its run.

    Raises:
        InvalidURLError: see :func:`staccato.dataset_requests.make_dataset_request`.
    """
    from staccato.dataset_requests import make_dataset_request, request_id

    request = make_dataset_request(
        source, destination, options, include=include, exclude=exclude, **_tuning(small_file_max)
    )
    check_local_source(source)
    _say_directory_patterns(source, include, exclude)
    if not isinstance(destination, str) and small_file_max:
        _say_fan_out_small_file_max(small_file_max, options.chunk_size)
    return await start_or_hint(
        "dataset",
        request_id(request),
        _start_request(
            request,
            source,
            destination,
            options,
            include,
            exclude,
            small_file_max,
            retry_failed,
            quiet,
        ),
    )


def _say_directory_patterns(source: str, include: list[str], exclude: list[str]) -> None:
    """Warn on stderr of each pattern that names a directory of a local source
    (:func:`staccato.dataset_requests.directory_patterns`): it matches none of its files."""
    from staccato.dataset_requests import directory_patterns

    for said in directory_patterns(source, include, exclude):
        typer.echo(f"staccato: warning: {said}", err=True)


def _say_fan_out_small_file_max(small_file_max: int, chunk_size: int) -> None:
    """Warn on stderr when ``--small-file-max`` (bytes) is above what a dataset to
    several roots uses (:data:`staccato.datasets.models.FAN_OUT_SMALL_MAX` and one
    ``--chunk-size``: a small file is held in memory for every root); it was capped
    without a word (a tester)."""
    from staccato.datasets.models import FAN_OUT_SMALL_MAX

    used = min(small_file_max, FAN_OUT_SMALL_MAX, chunk_size)
    if used < small_file_max:
        typer.echo(
            f"staccato: warning: --small-file-max {units.size(small_file_max)}: with several "
            f"destinations files up to {units.size(used)} (at most "
            f"{units.size(FAN_OUT_SMALL_MAX)} and one --chunk-size) are copied many per "
            "activity, larger ones each as a transfer",
            err=True,
        )


async def _start_request(
    request: DatasetRequest,
    source: str,
    destination: str | list[str],
    options: TransferOptions,
    include: list[str],
    exclude: list[str],
    small_file_max: int | None,
    retry_failed: bool,
    quiet: bool = False,
) -> tuple[StaccatoClient | LightClient, str, str | None]:
    """:func:`_start` once ``request`` (for the light client) passed the checks."""
    from staccato.light_client import light_client

    light = None if retry_failed or not isinstance(destination, str) else light_client()
    if light is not None:
        started = await light.start_dataset(request)
        if started is not None:
            return light, started.id, started.run_id
    from staccato.client import StaccatoClient
    from staccato.dataset_client import CannotRetryError, NothingToRetryError, start_dataset

    client = await StaccatoClient.connect()
    try:
        begun = await start_dataset(
            client,
            source,
            destination,
            options,
            include=include,
            exclude=exclude,
            retry_failed=retry_failed,
            **_tuning(small_file_max),
        )
    except (NothingToRetryError, CannotRetryError) as err:  # --retry-failed: usage errors
        fail(str(err), EXIT_USAGE)
    if begun.ignored:  # attached, but --max-rate, --priority... differ: not applied
        say_ignored("dataset", begun.id, begun.ignored)
    elif begun.attached and not quiet:  # as a single transfer's start says
        typer.echo(
            f"attached to running dataset {begun.id} (same request); nothing new started",
            err=True,
        )
    return client, begun.id, None


RecursiveOption = Annotated[
    bool,
    typer.Option(
        "--recursive",
        "-r",
        "-R",
        help="SOURCE is a directory (file, sftp) or prefix (s3): copy every file under it "
        "to DESTINATION, keeping relative names.",
    ),
]
IncludeOption = Annotated[
    list[str] | None,
    typer.Option(
        "--include",
        metavar="GLOB",
        help="With -r: copy only names matching GLOB (fnmatch on the relative name; * "
        "also matches /). Repeatable.",
    ),
]
ExcludeOption = Annotated[
    list[str] | None,
    typer.Option(
        "--exclude", metavar="GLOB", help="With -r: skip names matching GLOB. Repeatable."
    ),
]
RetryFailedOption = Annotated[
    bool,
    typer.Option(
        "--retry-failed",
        help="With -r: copy only the files that failed in the last dataset from SOURCE to "
        "DESTINATION (with several, the failed (file, destination) pairs). Exit 2 when "
        "there is no such dataset.",
    ),
]
SmallFileMaxOption = Annotated[
    int | None,
    typer.Option(
        "--small-file-max",
        parser=parse_small_file_max,
        metavar="SIZE",
        help="With -r: files up to SIZE are copied many per activity; larger ones each "
        "as a transfer of its own (resumable mid-file; 0: every file with data). "
        "Default 64MiB. With several "
        "destinations at most 8MiB and one --chunk-size (a small file is held in "
        "memory to be written to every root).",
        show_default=False,
    ),
]


def check_recursive_options(
    recursive: bool,
    include: list[str] | None,
    exclude: list[str] | None,
    retry_failed: bool,
    small_file_max: int | None,
) -> None:
    """Refuse the dataset options without ``-r``, and an empty ``--include`` or
    ``--exclude`` pattern (it matches no name: a dataset that copied nothing, exit 0,
    without a word; found by a tester) (exit 2, naming the option)."""
    for name, patterns in (("--include", include), ("--exclude", exclude)):
        if any(not pattern for pattern in patterns or ()):
            fail(f"{name} '': an empty pattern matches no name; give a glob", EXIT_USAGE)
    if recursive:
        return
    for name, given in (
        ("--include", include),
        ("--exclude", exclude),
        ("--retry-failed", retry_failed),
        ("--small-file-max", small_file_max),
    ):
        if given is not None and given is not False and given != []:  # 0 is given
            fail(f"{name} applies to directories and prefixes: add -r", EXIT_USAGE)


def check_local_source(source: str) -> None:
    """Refuse (exit 2, before anything starts) a local SOURCE of ``-r`` that is a
    regular file (drop -r to copy it) or that is not there: the check the Python API
    runs too (:func:`staccato.dataset_requests.check_local_source`)."""
    from staccato.dataset_requests import check_local_source as check
    from staccato.errors import SourceRootNotADirectoryError, SourceRootNotFoundError

    try:
        check(source)
    except (SourceRootNotFoundError, SourceRootNotADirectoryError) as err:
        fail(str(err), EXIT_USAGE)


def submit_recursive(
    source: str,
    destination: str | list[str],
    options: TransferOptions,
    include: list[str],
    exclude: list[str],
    small_file_max: int | None,
    retry_failed: bool,
    as_json: bool,
) -> None:
    """``submit -r``: start the dataset and print its id."""

    async def go() -> str:
        _, dataset, _ = await _start(
            source, destination, options, include, exclude, small_file_max, retry_failed
        )
        return dataset

    dataset = run(go, starts=True)
    typer.echo(json.dumps({"id": dataset}) if as_json else dataset)


def cp_recursive(
    source: str,
    destination: str | list[str],
    options: TransferOptions,
    include: list[str],
    exclude: list[str],
    small_file_max: int | None,
    retry_failed: bool,
    quiet: bool,
) -> None:
    """``cp -r``: start the dataset and follow it with a progress bar; exit 1 when
    some files failed."""

    async def go() -> DatasetStatus:
        client, dataset, run_id = await _start(
            source, destination, options, include, exclude, small_file_max, retry_failed, quiet
        )
        if not quiet:
            shown = destination if isinstance(destination, str) else " ".join(destination)
            typer.echo(f"dataset {dataset}: {source} -> {shown}", err=True)
        return await follow_or_hint("dataset", dataset, _wait(client, dataset, run_id, quiet))

    final = run(go, starts=True)
    exit_for(final, quiet)


async def _wait(
    client: StaccatoClient | LightClient, dataset: str, run_id: str | None, quiet: bool
) -> DatasetStatus:
    """Follow the dataset ``client`` started (``run_id``: the light client's run)
    until it ends. With ``quiet`` the light client waits for the end itself and tells
    a complete one (but one whose filters matched nothing: its warning names the
    request's patterns); any other end, and the progress bar or lines, are the SDK's
    client's (:func:`follow`), connected here, so that Ctrl-C meanwhile also says the
    dataset goes on."""
    from staccato.light_client import LightClient

    if isinstance(client, LightClient):
        if quiet and run_id is not None:
            done = await client.dataset_completed(dataset, run_id)
            if done is not None and done.filters_matched_none is None:
                return done
        from staccato.client import StaccatoClient

        client = await StaccatoClient.connect()
    return await follow(client, dataset, quiet=quiet)


def progress_text(s: DatasetStatus) -> str:
    """``120/2000 files, 3 up to date, 1 failed, 2 left out, 1.5 MiB, 240.0 files/s eta
    8s`` (``left out``: names reserved for Staccato's temp files, not in the total)."""
    from staccato.datasets.models import DatasetState

    ended = s.state in (
        DatasetState.completed,
        DatasetState.completed_with_errors,
        DatasetState.failed,
        DatasetState.cancelled,
    )
    # "+": more may be listed; an ended dataset's count is final
    total = f"{s.files_total}" + ("" if s.listing_done or ended else "+")
    parts = [f"{s.files_done}/{total} files"]
    if s.files_skipped:
        parts.append(f"{s.files_skipped} up to date")
    if s.files_failed:
        parts.append(f"{s.files_failed} failed")
    if s.files_left_out:  # names reserved for our temp files (``status`` says which)
        parts.append(f"{s.files_left_out} left out")
    # bytes of files not counted yet, said apart: the figure done never falls
    moving = f" (+{render.size(s.bytes_moving)} in flight)" if s.bytes_moving and not ended else ""
    parts.append(render.size(s.bytes_done) + moving)
    rate = f"{s.rate_files_per_s} files/s" if s.rate_files_per_s else ""
    eta = f" eta {s.eta_s:.0f}s" if s.eta_s is not None else ""
    paused = ""
    if s.paused_transfers:  # the dataset cannot end before they are resumed
        ids = " ".join(s.paused_transfers)
        if len(s.paused_transfers) == 1:
            paused = f"; waits for paused transfer {ids} (staccato resume {ids})"
        else:
            paused = f"; waits for paused transfers {ids} (staccato resume each)"
    down = "".join(
        f"; {d.destination} {unreachable_text(d.model_dump())}"
        for d in s.destinations or []
        if d.unreachable and not ended
    )
    idle = ""
    if s.idle_since and not ended:
        idle = f"; {_idle_text(s)}"
    return ", ".join(parts) + (f", {rate}" if rate else "") + eta + paused + down + idle


def _idle_text(s: DatasetStatus) -> str:
    """Why nothing moved since ``s.idle_since``: no heartbeat from the batches'
    worker process (``no_heartbeat_since``), else waiting for the endpoints."""
    if s.no_heartbeat_since:
        return f"nothing moved since {s.idle_since}; " + render.no_heartbeat_text(
            s.no_heartbeat_since
        )
    return render.idle_text(s.idle_since or "")


def follow_text(s: DatasetStatus) -> str:
    """What the progress bar or a plain line of ``cp -r`` shows: :func:`progress_text`,
    or, while no worker answers the progress query (a frozen or dead worker), the
    words ``status`` uses (``progress unknown now: ...``) and the last known counts,
    with no rate nor ETA (they would be stale)."""
    if not s.counts_unknown:
        # a step retried after a failed attempt: its error, as a single transfer's
        # line says it (``status`` has its own line; tester62 saw none in `cp -r`)
        retrying = f"; retrying: {s.last_retry_error}" if s.last_retry_error else ""
        return progress_text(s) + retrying
    known = progress_text(
        s.model_copy(update={"rate_files_per_s": None, "eta_s": None, "counts_unknown": None})
    )
    return f"progress unknown now: {s.counts_unknown}; last known: {known}"


def follow_state(s: DatasetStatus) -> str:
    """The state a ``cp -r`` progress line shows: ``cancelling`` once a cancel of the
    running dataset is requested (its batches stop and clean up; it may take until a
    hung destination answers or times out), else the state's own words
    (:func:`render.state_text`). Before, it said ``running`` until the cancel ended
    (tester62: 64 s)."""
    return render.state_text(s.state.value, cancel_requested=bool(s.cancel_requested))


def show(bar: render.Bar, s: DatasetStatus) -> None:
    """Draw ``s`` on ``cp -r``'s bar: files handled (done, skipped, failed) of files
    listed (no total while the listing runs), with :func:`follow_text`, whose ETA is
    the only one shown (a second, rich's own, disagreed with it: tester67 L1)."""
    bar.show(
        total=s.files_total if s.listing_done else None,
        completed=s.files_done + s.files_skipped + s.files_failed,
        state=follow_state(s),
        text=follow_text(s),
    )


async def follow(client: StaccatoClient, dataset: str, *, quiet: bool) -> DatasetStatus:
    """Follow ``dataset`` until it ends: the same rich bar as a single transfer's
    (files handled of files listed, bytes, rate) on a terminal, a line every
    :data:`PLAIN_LINE_INTERVAL_S` otherwise, nothing if ``quiet``; first a warning
    when the Temporal in use is a killed ``up``'s (:func:`killed_up_warning`)."""
    hint = KilledUpHint(said=killed_up_warning())
    from staccato.dataset_client import await_dataset_end, follow_dataset

    console = None if quiet else render.stderr_console()
    final: DatasetStatus | None = None
    if quiet:
        final = await await_dataset_end(client, dataset)
    elif console is not None:
        with render.Bar(console) as bar:
            async for final in follow_dataset(client, dataset):
                hint.check(final.counts_unknown is not None)
                show(bar, final)
    else:
        from staccato.datasets.models import DatasetState

        last_line, last_state = 0.0, DatasetState.scheduled.value
        async for final in follow_dataset(client, dataset):
            hint.check(final.counts_unknown is not None)
            now = time.monotonic()
            shown = follow_state(final)
            if now - last_line >= PLAIN_LINE_INTERVAL_S or shown != last_state:
                last_line, last_state = now, shown
                render.say(f"{shown}: {follow_text(final)}")
    assert final is not None
    return final


def left_out_text(s: DatasetStatus) -> str | None:
    """``left out 2 files: names reserved for Staccato's temp files (...): .a.<hex>...,
    d/.b.<hex>...``: the files the dataset's listing left out
    (:func:`staccato.temp_names.reserved_segment`), with the first few names; None
    when none was. Not failures: ``cp -r`` still exits 0 when nothing else failed."""
    from staccato.temp_names import LEFT_OUT_REASON

    if not s.files_left_out:
        return None
    names = ", ".join(shown_name(n) for n in s.left_out_names or [])
    more = len(s.left_out_names or [])
    tail = f", ... and {s.files_left_out - more} more" if s.files_left_out > more else ""
    return f"left out {units.counted(s.files_left_out, 'file')}: {LEFT_OUT_REASON}" + (
        f": {names}{tail}" if names else ""
    )


def root_summary(s: DatasetStatus) -> list[str]:
    """Several roots: ``ROOT: 9 copied (1.0 MiB), 0 up to date, 0 failed`` per root."""
    return [
        f"{d.destination}: {d.files_done} copied ({render.size(d.bytes_done)}), "
        f"{d.files_skipped} up to date, {d.files_failed} failed"
        for d in s.destinations or []
    ]


def exit_for(final: DatasetStatus, quiet: bool = False) -> None:
    """Say how the dataset ended (nothing when ``quiet`` and it completed; with
    several roots a line per root, and the error line names the roots that failed);
    exit 1 unless every file was copied or up to date at every root."""
    took = f" in {units.duration(final.duration_s)}" if final.duration_s is not None else ""
    summary = (
        f"{units.counted(final.files_done, 'file')} copied ({render.size(final.bytes_done)}), "
        f"{final.files_skipped} up to date, {final.files_failed} failed{took}"
    )
    from staccato.datasets.models import DatasetState

    per_root = root_summary(final)
    # a --retry-failed run: the dataset as a whole (its counts are the retry's alone)
    whole = f"whole dataset: {whole_dataset_text(final)}" if final.whole_dataset else None
    left_out = left_out_text(final)
    if final.state == DatasetState.completed:
        if not quiet:
            for line in per_root or [summary]:
                typer.echo(f"completed: {line}", err=True)
            if whole:
                typer.echo(whole, err=True)
            if left_out:  # not a failure (exit 0), but never left unsaid
                typer.echo(left_out, err=True)
        if final.warning:  # e.g. the filters matched nothing: said also with -q
            typer.echo(f"staccato: warning: {final.warning}", err=True)
        return
    if left_out and final.state != DatasetState.completed:
        typer.echo(left_out, err=True)
    if final.state == DatasetState.completed_with_errors:
        for failure in final.failures[:10]:
            at = f" at {failure.destination}" if failure.destination else ""
            typer.echo(
                f"failed: {shown_name(failure.name)}{at}: {shown_name(failure.reason)}", err=True
            )
        more = final.files_failed - min(10, len(final.failures))
        if final.destinations is not None:
            more = sum(d.files_failed for d in final.destinations) - min(10, len(final.failures))
        if more > 0:
            typer.echo(f"... and {more} more (staccato status --failures {final.id})", err=True)
        for line in left_behind_lines(final):
            typer.echo(line, err=True)
        if final.destinations is not None:
            if not quiet:
                for line in per_root:
                    typer.echo(line, err=True)
            bad = [d for d in final.destinations if d.files_failed]
            summary = (
                f"{len(final.destinations) - len(bad)} of {len(final.destinations)} "
                "destinations complete; "
                + "; ".join(
                    f"{d.destination}: {d.files_failed} failed, {d.files_done} copied, "
                    f"{d.files_skipped} up to date"
                    for d in bad
                )
            )
        from staccato.dataset_client import retry_advice

        if whole and not quiet:
            typer.echo(whole, err=True)
        advice = retry_advice(final)  # none when no failure can succeed by a retry
        advised = "" if advice is None else f"; {advice}"
        fail(f"dataset {final.id} completed_with_errors: {summary}{advised}")
    # a source directory or prefix that is not there, or a file given to -r: a usage
    # error (nothing was written), one rule for every scheme
    usage = final.error_type in USAGE_ERROR_TYPES
    # an error that only repeats the state ("cancelled: cancelled", a tester) gives way
    # to the counts: what the run did before it ended
    reason = final.error if final.error and final.error != final.state.value else summary
    fail(f"dataset {final.id} {final.state.value}: {reason}", EXIT_USAGE if usage else EXIT_FAILED)


#: large files whose clean-up gave up, shown by ``cp -r``'s end and ``status`` (the
#: others: a count, and ``status --failures`` lists every one)
LEFT_BEHIND_SHOWN = 3


def left_behind_lines(s: DatasetStatus) -> list[str]:
    """``left behind: NAME [at ROOT]: WHAT`` for the first :data:`LEFT_BEHIND_SHOWN`
    failed large files whose transfer's clean-up gave up (what is left where and how
    to remove it), and ``... and N more left behind (staccato status --failures ID)``."""
    left = s.left_behind()
    lines = []
    for failure in left[:LEFT_BEHIND_SHOWN]:
        at = f" at {failure.destination}" if failure.destination else ""
        lines.append(f"left behind: {shown_name(failure.name)}{at}: {failure.left_behind}")
    if len(left) > LEFT_BEHIND_SHOWN:
        lines.append(
            f"... and {len(left) - LEFT_BEHIND_SHOWN} more left behind "
            f"(staccato status --failures {s.id})"
        )
    return lines


#: the fields of a dataset's status that are counts: left out of its lines while the
#: counts are unknown (no worker answers: ``counts_unknown``)
_COUNT_FIELDS = (
    "files_total",
    "files_done",
    "files_skipped",
    "files_failed",
    "bytes_total",
    "bytes_done",
    "bytes_moving",
    "listing_done",
)


def status_lines(s: DatasetStatus, failures: bool) -> list[str]:
    """``staccato status`` of a dataset: ``key value`` lines; with ``failures`` one line
    per failed file (name, tab, reason) instead."""
    if failures:
        # several destination roots: name, root, reason (one line per failed pair)
        # a large file whose clean-up gave up: what it left, after its reason (the
        # same columns)
        lines = [
            f"{shown_name(f.name)}\t{f.destination}\t{shown_name(_with_left(f))}"
            if f.destination
            else f"{shown_name(f.name)}\t{shown_name(_with_left(f))}"
            for f in s.failures
        ]
        failed = (
            s.files_failed
            if s.destinations is None
            else sum(d.files_failed for d in s.destinations)
        )
        if failed > len(s.failures):
            lines.append(f"... and {failed - len(s.failures)} more (names not kept)")
        return lines
    shown = s.to_json_dict()
    shown.pop("failures")
    shown.pop("files_left_behind", None)  # lines of their own, below
    shown.pop("no_heartbeat_since", None)  # said on the stalled line
    shown.pop("cancel_requested_at", None)  # said on the cancel_requested line
    shown.pop("left_out_names", None)  # said on the left out line
    if shown.pop("files_left_out", None):
        shown["left out"] = (left_out_text(s) or "").removeprefix("left out ")
    rows = shown.pop("destinations", None)
    roots = shown.pop("destination_roots", None)
    if roots:  # several roots: every one on the destination line
        shown["destination"] = " ".join(roots)
    shown["progress"] = (
        f"unknown now: {shown.pop('counts_unknown')}" if s.counts_unknown else progress_text(s)
    )
    if s.counts_last_known_at:  # the last known counts, said to be so, and why
        shown.pop("counts_last_known_at")
        known = progress_text(s.model_copy(update={"counts_unknown": None}))
        last = f"last known at {s.counts_last_known_at}: {known}"
        unknown = s.counts_unknown  # why they are the last known (popped above)
        shown["progress"] = f"unknown now: {unknown}; {last}" if unknown else last
    elif s.counts_unknown:  # its zeros are no counts (a tester read "files_done 0" beside it)
        for key in _COUNT_FIELDS:
            shown.pop(key, None)
    lines = []
    for key, value in shown.items():
        if key == "bytes_total" and value is None:
            lines.append(f"{key:18} {bytes_total_unknown(s)}")
            continue
        if value is None or value == []:
            continue
        key, text = _shown_field(s, key, value)
        lines.append(f"{key:18} {text}")
    for row in rows or []:
        lines.append(
            f"{'destination':18} {row['destination']}: {row['files_done']} copied, "
            f"{row['files_skipped']} up to date, {row['files_failed']} failed, "
            f"{render.size(row['bytes_done'])}"
        )
        if row.get("unreachable"):
            lines.append(f"{'':18}   {unreachable_text(row)}")
    for line in left_behind_lines(s):
        lines.append(f"{'left behind':18} {line.removeprefix('left behind: ')}")
    if s.state.value == "completed_with_errors":
        from staccato.dataset_client import retry_advice

        advice = retry_advice(s)  # cp -r's end says the same (exit_for)
        if advice is not None:
            lines.append(f"{'advice':18} {advice}")
    return lines


def _with_left(failure: FileFailure) -> str:
    """A failure's reason, and what its transfer left behind when its clean-up gave up."""
    if not failure.left_behind:
        return failure.reason
    return f"{failure.reason}; left behind: {failure.left_behind}"


def unreachable_text(row: dict[str, Any]) -> str:
    """A root a batch waits for: ``unreachable since 2026-12-05T02:07:03Z (3 files
    wait; the other roots go on): <its last error>``."""
    since = f" since {row['unreachable_since']}" if row.get("unreachable_since") else ""
    waiting = row.get("files_waiting")
    files = f"{units.counted(waiting, 'file')} wait; " if waiting else ""
    return f"unreachable{since} ({files}the other roots go on): {row['unreachable']}"


def bytes_total_unknown(s: DatasetStatus) -> str:
    """``status``' words for a total of bytes not known: ``unknown (the result counts
    only the bytes copied; 4 files were up to date)``: a completed dataset's result
    does not count the bytes of the files up to date or failed."""
    parts = []
    if s.files_skipped:
        were = "file was" if s.files_skipped == 1 else "files were"
        parts.append(f"{s.files_skipped} {were} up to date")
    if s.files_failed:
        parts.append(f"{s.files_failed} file{'' if s.files_failed == 1 else 's'} failed")
    if not parts:
        return "unknown"
    return f"unknown (the result counts only the bytes copied; {', '.join(parts)})"


def retry_of_text(s: DatasetStatus) -> str:
    """A ``--retry-failed`` run's ``retry of`` line: the run it retried and the
    dataset's files when it ended: ``run 3f2a... (completed_with_errors, ended
    2026-12-06T15:01:02Z): 10 files, 8 copied, 0 up to date, 2 failed``."""
    e = s.retry_of
    assert e is not None
    run = f"run {e.run_id}" if e.run_id else "the previous run"
    ended = f", ended {e.ended_at}" if e.ended_at else ""
    return (
        f"{run} ({e.state}{ended}): {units.counted(e.files_total, 'file')}, "
        f"{e.files_done} copied, {e.files_skipped} up to date, {e.files_failed} failed"
    )


def whole_dataset_text(s: DatasetStatus) -> str:
    """A ``--retry-failed`` run's ``whole dataset`` line: the earlier runs and this
    retry together, and what the retry fixed: ``10 files: 9 copied, 0 up to date, 1
    failed (this retry fixed 1 of 2)``; while it runs the failed ones not retried yet
    are said with them (``1 failed or not retried yet``)."""
    w, e = s.whole_dataset, s.retry_of
    assert w is not None and e is not None
    from staccato.datasets.models import DatasetState

    live = s.state not in (
        DatasetState.completed,
        DatasetState.completed_with_errors,
        DatasetState.failed,
        DatasetState.cancelled,
    )
    failed = f"{w.files_failed} failed" + (" or not retried yet" if live else "")
    fixed = s.files_done + s.files_skipped
    return (
        f"{units.counted(w.files_total, 'file')}: {w.files_done} copied, "
        f"{w.files_skipped} up to date, {failed} (this retry fixed {fixed} of "
        f"{e.files_failed})"
    )


def _shown_field(s: DatasetStatus, key: str, value: object) -> tuple[str, str]:
    """A dataset status field as people read it, as a single transfer's status shows
    it (:func:`staccato.cli.render.status_lines`): sizes and rates in binary units, a
    time as a duration, yes/no, a list comma-separated; ``--json`` keeps the numbers."""

    if key == "bytes_total" and isinstance(value, int):
        return key, f"{units.size(value)} ({value} bytes)"
    if key == "bytes_done" and isinstance(value, int):
        share = units.percent(value, s.bytes_total) if s.listing_done else None
        if not s.bytes_total and s.state != "completed":  # (DatasetState, a StrEnum)
            # nothing listed (a failed listing: a source root that is not there): no
            # share, which reads "(100%)" of 0 B for an empty dataset that completed
            share = None
        return key, units.size(value) + (f" ({share})" if share else "")
    if key == "bytes_moving" and isinstance(value, int):
        return key, f"{units.size(value)} (of files in flight, not done yet)"
    if key == "rate_bytes_per_s" and isinstance(value, int | float):
        return "rate", units.rate(value)
    if key == "rate_files_per_s" and isinstance(value, int | float):
        return "file rate", f"{value:.1f} files/s"
    if key == "eta_s" and isinstance(value, int | float):
        return "eta", units.duration(value)
    if key == "duration_s" and isinstance(value, int | float):
        return "duration", units.duration(value)
    if key == "idle_since" and isinstance(value, str):
        return "stalled", _idle_text(s)
    if key == "retry_of" and s.retry_of is not None:
        return "retry of", retry_of_text(s)
    if key == "whole_dataset" and s.whole_dataset is not None:
        return "whole dataset", whole_dataset_text(s)
    if key == "cancel_requested" and value is True:
        return key, render.cancel_requested_text(s.cancel_requested_at, "dataset")
    if isinstance(value, bool):
        return key, "yes" if value else "no"
    if isinstance(value, list):
        return key, ", ".join(str(v) for v in value)
    return key, str(value)


def status(dataset: str, as_json: bool, failures: bool) -> None:
    """``staccato status`` of a dataset id (``staccato-dataset-...``)."""

    async def go() -> DatasetStatus:
        from staccato.client import StaccatoClient
        from staccato.dataset_client import dataset_status
        from staccato.errors import TransferNotFoundError

        client = await StaccatoClient.connect()
        try:
            return await dataset_status(client, dataset)
        except TransferNotFoundError:
            if not failures:
                raise
            single = await client.status(dataset)  # raises TransferNotFoundError in turn
        fail(
            f"--failures lists the failed files of a dataset (or the failed destinations of "
            f"a fan-out group); {single.id} is a single transfer ({single.state.value}): "
            f"see staccato status {single.id}",
            EXIT_USAGE,
        )

    current = run(go)
    if as_json:
        data = current.to_json_dict()
        typer.echo(json.dumps(data["failures"] if failures else data, indent=2))
        return
    lines = status_lines(current, failures)
    if failures and not lines:
        # said on stderr: stdout keeps one line per failed file for scripts (tester72:
        # a completed dataset printed nothing at all)
        typer.echo(f"no failures: no file of {dataset} failed ({current.state.value})", err=True)
    for line in lines:
        typer.echo(line)


def watch(dataset: str, *, quiet: bool = False) -> None:
    """``staccato watch`` of a dataset id: the progress bar until it ends (none with
    ``quiet``)."""

    async def go() -> DatasetStatus:
        from staccato.client import StaccatoClient

        client = await StaccatoClient.connect()
        return await follow_or_hint(
            "dataset", dataset, follow(client, dataset, quiet=quiet), quiet=quiet
        )

    exit_for(run(go, quiet=quiet), quiet)


def list_row(s: DatasetStatus) -> str:
    """``staccato list``: a dataset's row beside the transfers'."""
    # the roots as status and --json name them (no trailing '/': a canonical root)
    if s.destinations is not None:
        roots = " ".join(d.destination for d in s.destinations)
    else:
        roots = s.destination
    state = f"{s.state.value:{render.LIST_STATE_WIDTH}}"  # lined up with the transfers'
    row = f"{s.id}  {state} {list_progress_text(s):40}  {s.source} -> {roots}"
    return row + render.queued_line(s.state.value, s.queued_reason)


def list_progress_text(s: DatasetStatus) -> str:
    """A dataset's progress in its ``staccato list`` row: :func:`progress_text`, or,
    while no worker answers its progress query (a frozen or dead worker, or one that
    has not taken the run's latest workflow task), what ``status`` says of it: the last
    known counts (``counts_last_known_at`` set: the memo's, with the batches in flight's
    heartbeats) with no rate nor ETA, after why they are the last known and when they
    were written (``counts_unknown``), in ``cp -r``'s words; with none known, ``progress unknown now`` and why, never
    the zeros of a status that holds no counts (tester69 MED 4: the row read
    ``running 0/0+ files, 0 B`` with no note while ``status`` said no worker answers)."""
    if not s.counts_unknown:
        return progress_text(s)
    if s.counts_last_known_at:
        known = progress_text(
            s.model_copy(update={"rate_files_per_s": None, "eta_s": None, "counts_unknown": None})
        )
        # cp -r's words (:func:`follow_text`); the note says when they were written
        return f"progress unknown now: {s.counts_unknown}; last known: {known}"
    return f"progress unknown now: {s.counts_unknown}"
