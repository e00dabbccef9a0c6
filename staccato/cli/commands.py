"""The transfer commands: ``submit``, ``cp``, ``watch``, ``status``, ``list``,
``cancel``, ``pause``, ``resume``. They talk to Temporal through
:class:`staccato.client.StaccatoClient`, and a plain ``cp``/``submit`` of one object
first through the light client (:mod:`staccato.light_client`: Temporal's HTTP API,
no SDK loaded), which hands it to the SDK's client for anything unusual."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Protocol

import typer

from staccato import units
from staccato.cli import datasets, render
from staccato.cli.common import (
    EXIT_USAGE,
    check_file_source,
    fail,
    follow_or_hint,
    killed_up_warning,
    run,
    say_ignored,
    start_or_hint,
)
from staccato.cli.options import (
    ChecksumOption,
    ChunkSizeOption,
    FromOriginOption,
    IfBusyOption,
    JsonOption,
    MaxRateOption,
    NotBeforeOption,
    OwnerOption,
    PriorityOption,
    QuietOption,
    RetryForOption,
    SourceArg,
    StageOption,
    StreamsOption,
    SyncLevelOption,
    TransferArg,
    VerifyOption,
    WatchQuietOption,
    check_verify_full,
    choice_option,
    int_range_option,
    transfer_options,
)
from staccato.datasets.names import shown_name
from staccato.errors import StaccatoError, TransferNotFoundError
from staccato.models import (
    DEFAULT_PRIORITY,
    DEFAULT_RETRY_FOR_S,
    GROUP_ID_PREFIX,
    ChecksumAlgorithm,
    GroupState,
    IfBusy,
    TransferState,
    TransferStatus,
    VerifyMode,
)
from staccato.urls import redact

#: one destination: a transfer; two or more: a fan-out group (the source read once)
DestinationsArg = Annotated[
    list[str],
    typer.Argument(
        help="Destination URL or path: the file to write, or with -r the directory or "
        "prefix to write the tree under. Several destinations make a fan-out group "
        "(with -r, one dataset): the source is read once and written to each (one id, "
        "a state or counts per destination).",
        metavar="DESTINATION...",
    ),
]
if TYPE_CHECKING:  # imported where used: `--help` and usage errors need no Temporal client
    from staccato.client import StaccatoClient
    from staccato.light_client import LightClient
    from staccato.listing import Row
    from staccato.models import TransferOptions, TransferRequest
    from staccato.submissions import Submission


def submit(
    source: SourceArg,
    destinations: DestinationsArg,
    chunk_size: ChunkSizeOption = None,
    streams: StreamsOption = None,
    verify: VerifyOption = VerifyMode.checksum,
    checksum: ChecksumOption = ChecksumAlgorithm.crc32c,
    retry_for: RetryForOption = DEFAULT_RETRY_FOR_S,
    if_busy: IfBusyOption = IfBusy.fail,
    not_before: NotBeforeOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    sync_level: SyncLevelOption = None,
    recursive: datasets.RecursiveOption = False,
    include: datasets.IncludeOption = None,
    exclude: datasets.ExcludeOption = None,
    retry_failed: datasets.RetryFailedOption = False,
    small_file_max: datasets.SmallFileMaxOption = None,
    priority: PriorityOption = DEFAULT_PRIORITY,
    owner: OwnerOption = None,
    max_rate: MaxRateOption = None,
    stage: StageOption = False,
    from_origin: FromOriginOption = False,
) -> None:
    """Start a transfer (with -r: a dataset) and print its id; it runs on the workers
    whether or not you stay.

    With several DESTINATIONs: a fan-out group that reads SOURCE once and writes each
    destination; prints the group id (`staccato status GROUP` shows a state per
    destination)."""
    options = transfer_options(
        chunk_size,
        streams,
        verify,
        checksum,
        retry_for,
        sync_level,
        if_busy=if_busy,
        priority=priority,
        owner=owner,
        max_rate=max_rate,
        stage=stage,
        from_origin=from_origin,
    )
    datasets.check_recursive_options(recursive, include, exclude, retry_failed, small_file_max)
    check_verify_full(verify, destinations, recursive)
    if not recursive:
        check_file_source(source)
    if recursive:
        _check_dataset_refuses(
            stage=stage, from_origin=from_origin, if_busy=if_busy, not_before=not_before
        )
    destination = _one_destination(destinations, recursive)
    if destination is None and recursive:  # a dataset to several roots
        datasets.submit_recursive(
            source,
            destinations,
            options,
            include or [],
            exclude or [],
            small_file_max,
            retry_failed,
            as_json,
        )
        return
    if destination is None:
        if not_before is not None:
            fail(
                "--not-before applies to a single transfer, not to a fan-out to several "
                "destinations",
                EXIT_USAGE,
            )
        from staccato.cli import fanout  # imports the Temporal client

        fanout.submit(source, destinations, options, as_json, quiet)
        return
    if recursive:
        datasets.submit_recursive(
            source,
            destination,
            options,
            include or [],
            exclude or [],
            small_file_max,
            retry_failed,
            as_json,
        )
        return

    async def go() -> Submission:
        client, submitted = await _start(source, destination, options, not_before=not_before)
        _say(submitted, quiet=quiet)
        if not_before is not None:
            await _say_other_scheduled(client, destination, submitted.id)
        await _warn_without_workers(client)
        return submitted

    transfer = run(go, starts=True).id
    typer.echo(json.dumps({"id": transfer}) if as_json else transfer)


async def _say_other_scheduled(
    client: StaccatoClient | LightClient, destination: str, submitted: str
) -> None:
    """Say on stderr which other scheduled starts (``--not-before``) the destination
    has besides ``submitted``: both stay valid, and a destination then names the
    earliest (``staccato status DESTINATION``); nothing when there is none."""
    from staccato.client import StaccatoClient
    from staccato.urls import parse_url, resolve_local_directory

    if not isinstance(client, StaccatoClient):  # a delayed start is the SDK's
        return
    canonical = resolve_local_directory(parse_url(destination)).canonical
    choice = await client.choose_for_destination(canonical)
    others = [(run_id, at) for run_id, at in choice.scheduled if run_id != submitted]
    if not others:
        return
    listed = ", ".join(f"{run_id} (at {at})" for run_id, at in others)
    typer.echo(
        f"note: {destination} already has a scheduled start: {listed}; both stay scheduled "
        "(`staccato status/cancel DESTINATION` name the earliest, an id "
        "names one: `staccato list --state scheduled` lists them)",
        err=True,
    )


async def _start(
    source: str,
    destination: str,
    options: TransferOptions,
    *,
    not_before: datetime | None = None,
) -> tuple[StaccatoClient | LightClient, Submission]:
    """Start one transfer: through the light client (Temporal's HTTP API, without
    loading the SDK: :mod:`staccato.light_client`) when it is safe and the start goes
    as usual, else through the SDK's client, which then starts, attaches or queues it
    and raises what it raises. Usage errors (a bad URL) come before any call."""
    from staccato.ids import transfer_id
    from staccato.submissions import make_request

    request = make_request(source, destination, options)
    return await start_or_hint(
        "transfer",
        transfer_id(request.destination),
        _start_request(request, source, destination, options, not_before=not_before),
    )


async def _start_request(
    request: TransferRequest,
    source: str,
    destination: str,
    options: TransferOptions,
    *,
    not_before: datetime | None,
) -> tuple[StaccatoClient | LightClient, Submission]:
    """:func:`_start` once ``request`` (for the light client) is made."""
    from staccato.light_client import light_client

    light = light_client(immediate=not_before is None)
    if light is not None:
        submitted = await light.start(request)
        if submitted is not None:
            return light, submitted
    from staccato.client import StaccatoClient

    client = await StaccatoClient.connect()
    return client, await client.start(source, destination, options, not_before=not_before)


async def _sdk_client(
    client: StaccatoClient | LightClient, submitted: Submission
) -> StaccatoClient:
    """``client`` when it is the SDK's, else an SDK client following ``submitted``
    (started by the light client) as its own."""
    from staccato.client import StaccatoClient

    if isinstance(client, StaccatoClient):
        return client
    connected = await StaccatoClient.connect()
    connected.adopt(submitted)
    return connected


def _names_dataset(transfer: str) -> bool:
    """Whether ``transfer`` is a dataset id (``staccato-dataset-...``); the dataset
    models are imported here, not by every command."""
    from staccato.datasets.models import DATASET_ID_PREFIX

    return transfer.startswith(DATASET_ID_PREFIX)


def _check_dataset_refuses(
    *, stage: bool, from_origin: bool, if_busy: IfBusy, not_before: datetime | None = None
) -> None:
    """Exit 2 for an option of a single transfer given with ``-r``: ``--stage``,
    ``--from-origin`` (one object), ``--if-busy wait`` (a dataset whose destination
    root is being written fails at once: it was accepted and ignored) and
    ``--not-before`` (a dataset starts when submitted: it was accepted and ignored)."""
    if not_before is not None:
        fail(
            "--not-before applies to single transfers, not to -r (directories and "
            "prefixes): a dataset starts when it is submitted",
            EXIT_USAGE,
        )
    for given, option in ((stage, "--stage"), (from_origin, "--from-origin")):
        if given:
            fail(
                f"{option} applies to one object, not to -r (directories and prefixes)", EXIT_USAGE
            )
    if if_busy == IfBusy.wait:
        fail(
            "--if-busy wait applies to one object, not to -r: a dataset whose destination "
            "root is being written fails at once (run it again once that ends)",
            EXIT_USAGE,
        )


def _one_destination(destinations: list[str], recursive: bool) -> str | None:
    """The destination of a single transfer or dataset; None for a fan-out (several
    destinations; with -r a dataset to several roots)."""
    if len(destinations) == 1:
        return destinations[0]
    return None


def _say(submitted: Submission, *, quiet: bool = False) -> None:
    """Tell on stderr what a start did when it did not simply start a transfer (with
    ``quiet`` only the warning that options given do not apply)."""
    if submitted.ignored:
        say_ignored("transfer", submitted.id, submitted.ignored)
        return
    if quiet:
        return
    if submitted.attached and submitted.queued:
        typer.echo(
            f"attached to queued transfer {submitted.id} (same request); nothing new "
            "started: it runs when the transfer writing the destination ends",
            err=True,
        )
    elif submitted.attached:
        typer.echo(
            f"attached to running transfer {submitted.id} (same request); nothing new started",
            err=True,
        )
    elif submitted.queued:
        typer.echo(
            f"destination busy: queued as {submitted.id}; it runs when the transfer "
            "writing the destination ends (see `staccato status "
            f"{submitted.id}`)",
            err=True,
        )
    elif submitted.starts_at is not None:
        from staccato.submissions import shown_start

        typer.echo(
            f"scheduled: {submitted.id} starts at {shown_start(submitted.starts_at)}",
            err=True,
        )


def cp(
    source: SourceArg,
    destinations: DestinationsArg,
    chunk_size: ChunkSizeOption = None,
    streams: StreamsOption = None,
    verify: VerifyOption = VerifyMode.checksum,
    checksum: ChecksumOption = ChecksumAlgorithm.crc32c,
    retry_for: RetryForOption = DEFAULT_RETRY_FOR_S,
    if_busy: IfBusyOption = IfBusy.fail,
    quiet: QuietOption = False,
    sync_level: SyncLevelOption = None,
    recursive: datasets.RecursiveOption = False,
    include: datasets.IncludeOption = None,
    exclude: datasets.ExcludeOption = None,
    retry_failed: datasets.RetryFailedOption = False,
    small_file_max: datasets.SmallFileMaxOption = None,
    priority: PriorityOption = DEFAULT_PRIORITY,
    owner: OwnerOption = None,
    max_rate: MaxRateOption = None,
    stage: StageOption = False,
    from_origin: FromOriginOption = False,
) -> None:
    """Copy SOURCE to DESTINATION and follow it with a progress bar.

    Exits 0 only when the destination is published and verified, 1 when the transfer
    failed or was cancelled. Ctrl-C stops following and exits 130 (SIGTERM: 143); the
    transfer goes on (`staccato watch ID` to follow it again, `staccato cancel ID` to stop it).
    With --sync-level, a destination that already matches completes at once: "up to
    date (LEVEL): nothing copied".

    With -r, SOURCE is a directory or prefix: every file under it is copied (exit 1
    when some failed: `staccato status --failures ID` lists them).

    With several DESTINATIONs: a fan-out group reads SOURCE once and writes each
    destination (one progress line per destination); exit 0 only when all completed,
    1 otherwise. With -r and several DESTINATIONs: one dataset lists SOURCE once,
    reads each file once and writes it under every destination root, each root
    locked for the dataset's life (counts per destination in `status` and on the end
    lines).

    Exit 2 (usage): a bad option or value, a malformed URL or one that cannot be a
    destination, a dataset option without -r, a destination given twice, equal to
    SOURCE or (with -r) inside SOURCE or another destination, --retry-failed with no
    earlier dataset from SOURCE to the DESTINATIONs, an unusable STACCATO_* setting,
    (with -r) a source directory that is not there or an S3 prefix no key starts with.
    Exit 1: the copy failed, was cancelled or (with -r) some files failed; a
    destination busy; Temporal unreachable.
    """
    options = transfer_options(
        chunk_size,
        streams,
        verify,
        checksum,
        retry_for,
        sync_level,
        if_busy=if_busy,
        priority=priority,
        owner=owner,
        max_rate=max_rate,
        stage=stage,
        from_origin=from_origin,
    )
    datasets.check_recursive_options(recursive, include, exclude, retry_failed, small_file_max)
    check_verify_full(verify, destinations, recursive)
    if not recursive:
        check_file_source(source)
    if recursive:
        _check_dataset_refuses(stage=stage, from_origin=from_origin, if_busy=if_busy)
    destination = _one_destination(destinations, recursive)
    if destination is None and recursive:  # a dataset to several roots
        datasets.cp_recursive(
            source,
            destinations,
            options,
            include or [],
            exclude or [],
            small_file_max,
            retry_failed,
            quiet,
        )
        return
    if destination is None:
        from staccato.cli import fanout  # imports the Temporal client

        fanout.cp(source, destinations, options, quiet)
        return
    if recursive:
        datasets.cp_recursive(
            source,
            destination,
            options,
            include or [],
            exclude or [],
            small_file_max,
            retry_failed,
            quiet,
        )
        return

    async def go() -> TransferStatus:
        client, submitted = await _start(source, destination, options)
        transfer = submitted.id
        if not quiet:
            typer.echo(f"transfer {transfer}: {redact(source)} -> {destination}", err=True)
        _say(submitted, quiet=quiet)
        return await follow_or_hint("transfer", transfer, follow(client, submitted))

    async def follow(client: StaccatoClient | LightClient, submitted: Submission) -> TransferStatus:
        from staccato.light_client import LightClient

        if quiet and isinstance(client, LightClient):
            # the light client waits for the end; only a completed one it tells itself.
            # The "no worker" hint is asked while the wait already runs (no round trip
            # before it); it is printed as soon as it is answered, as before the wait.
            hint = asyncio.ensure_future(_warn_without_workers(client))
            try:
                done = await client.completed(submitted.id, submitted.run_id)
            except BaseException:
                hint.cancel()
                raise
            await hint
            if done is not None:
                return done
        else:
            await _warn_without_workers(client)
        sdk = await _sdk_client(client, submitted)
        return await render.follow(sdk, submitted.id, quiet=quiet, stage_asked=stage)

    _exit_for(run(go, starts=True), quiet)


def watch(transfer: TransferArg, quiet: WatchQuietOption = False) -> None:
    """Follow a transfer or dataset with a progress bar until it ends (exit codes as
    for cp: 0 completed, 1 failed or cancelled, 130 Ctrl-C or 143 SIGTERM, after which
    it goes on). With -q, wait without progress and say only errors and warnings (a
    script's wait, as cp -q)."""
    if _names_dataset(transfer):
        datasets.watch(transfer, quiet=quiet)
        return
    if transfer.startswith(GROUP_ID_PREFIX):
        from staccato.cli import fanout  # imports the Temporal client

        fanout.watch(transfer, quiet=quiet)
        return

    async def go() -> TransferStatus | None:
        from staccato.client import StaccatoClient

        client = await StaccatoClient.connect()
        await _warn_without_workers(client)
        try:
            await client.status(transfer)
        except TransferNotFoundError:
            if await _is_dataset_root(client, transfer):
                return None
            raise
        return await follow_or_hint(
            "transfer", transfer, render.follow(client, transfer, quiet=quiet), quiet=quiet
        )

    followed = run(go, quiet=quiet)
    if followed is None:  # a dataset's destination root
        datasets.watch(transfer, quiet=quiet)
        return
    _exit_for(followed, quiet)


async def _is_dataset_root(client: StaccatoClient, destination: str) -> bool:
    """Whether ``destination`` (a path, relative or not, or a URL) is the destination
    root of a dataset Temporal knows."""
    return await _dataset_at_root(client, destination) is not None


class _Polled(Protocol):
    """A client that can tell how many workers poll its task queue."""

    task_queue: str

    async def pollers(self) -> int: ...


async def _warn_without_workers(client: _Polled) -> None:
    if killed_up_warning():  # its dead worker may still count as a poller a while
        return
    try:
        if await client.pollers() == 0:
            typer.echo(
                f"staccato: warning: no worker is polling task queue {client.task_queue!r}; the "
                "transfer waits until one does (`staccato up --detach` or `staccato worker`)",
                err=True,
            )
    except Exception:  # a hint only: never fail a transfer over it
        pass


def _exit_for(final: TransferStatus, quiet: bool = False) -> None:
    """Say how the transfer ended (nothing when ``quiet`` and it completed; nothing
    more for one up to date: the last progress line said ``up to date (LEVEL): nothing
    copied``)."""
    if final.state == TransferState.completed and (quiet or final.up_to_date):
        return
    if final.state == TransferState.completed:
        typer.echo(
            f"completed: {units.size(final.bytes_done)} ({final.bytes_done} bytes), "
            f"{final.checksum}{render.took_text(final.duration_s, final.bytes_done)}",
            err=True,
        )
        if final.tuning is not None:
            typer.echo(f"tuned: {render.tuning_text(final.tuning, ended=True)}", err=True)
        if final.segments_copied_again is not None:  # read back whole before publish
            typer.echo(f"verified: {render.verify_level_text(final)}", err=True)
        return
    # one line each: a URL in a reason (an S3 key with a newline) is shown as
    # ``cp -r`` shows it, control characters as \xNN (shown_name, the one rendering)
    if final.cleanup:  # the run goes on to remove the partial data
        retrying = f"; {render.retry_note(final)}" if final.last_retry_error else ""
        typer.echo(f"cleanup: {shown_name(final.cleanup + retrying)}", err=True)
    if final.left_behind:  # its clean-up gave up or was stopped
        typer.echo(f"left behind: {shown_name(final.left_behind)}", err=True)
    if final.state == TransferState.cancelled and final.error in (None, "cancelled"):
        from staccato.client import cancelled_text

        fail(cancelled_text(final))  # it said "cancelled: cancelled"
    fail(f"transfer {final.id} {final.state.value}: {shown_name(final.error or final.state.value)}")


def status(
    transfer: TransferArg,
    as_json: JsonOption = False,
    failures: Annotated[
        bool,
        typer.Option(
            "--failures",
            help="A dataset's failed files and why, one a line (NAME<TAB>REASON; with "
            "several roots NAME<TAB>ROOT<TAB>REASON). Takes a dataset id or root, or a "
            "fan-out group id (its failed destinations).",
        ),
    ] = False,
) -> None:
    """Show one transfer, dataset or fan-out group: state, bytes (files), rate, ETA,
    checksum, error.

    TRANSFER is a transfer id (staccato-...), a destination URL or path (its
    transfer, or the dataset writing under that root), a dataset id
    (staccato-dataset-...) or a fan-out group id (staccato-group-...).
    """
    if transfer.startswith(GROUP_ID_PREFIX):
        from staccato.cli import fanout  # imports the Temporal client

        fanout.status(transfer, as_json, failures)
        return
    if _names_dataset(transfer) or failures:
        datasets.status(transfer, as_json, failures)
        return

    async def go() -> TransferStatus | None:
        from staccato.client import StaccatoClient

        client = await StaccatoClient.connect()
        try:
            found = await client.status(transfer)
            _say_choice(client, transfer)
            return found
        except TransferNotFoundError as err:
            if await _is_dataset_root(client, transfer):
                return None
            from staccato.dataset_client import dataset_above
            from staccato.ids import TRANSFER_ID_PREFIX

            above = (
                None
                if transfer.startswith(TRANSFER_ID_PREFIX)  # an id: names no directory
                else await dataset_above(client, transfer)
            )
            if above is None:
                raise
            # a file a dataset copied in a batch has no transfer of its own
            raise TransferNotFoundError(
                f"{err}; it lies under the destination root of dataset {above}, which "
                f"copies small files in batches, not as transfers: staccato status {above}"
            ) from None

    current = run(go)
    if current is None:
        datasets.status(transfer, as_json, failures)
        return
    if as_json:
        typer.echo(json.dumps(current.to_json_dict(), indent=2))
        return
    for line in render.status_lines(current):
        typer.echo(line)


#: the states ``list --state`` takes: a transfer's, and a dataset's or a fan-out
#: group's ``completed_with_errors`` (some files or destinations failed)
ListState = StrEnum(  # type: ignore[misc]
    "ListState",
    {s.value: s.value for s in TransferState}
    | {GroupState.completed_with_errors.value: GroupState.completed_with_errors.value},
)


def list_transfers(
    state: Annotated[
        ListState | None,
        choice_option(
            ListState,
            "--state",
            help="Only rows in this state (completed_with_errors: datasets and fan-out "
            "groups where some files or destinations failed).",
        ),
    ] = None,
    limit: Annotated[int, int_range_option("--limit", 1, 1000, help="At most this many.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """List recent transfers, datasets and fan-out groups in one order, newest first by
    start time (at most --limit rows in all)."""

    async def go() -> list[Row]:
        from staccato.client import StaccatoClient
        from staccato.listing import list_rows

        client = await StaccatoClient.connect()
        return await list_rows(client, state=None if state is None else state.value, limit=limit)

    rows = run(go)
    if as_json:
        typer.echo(json.dumps([row.to_json_dict() for row in rows], indent=2))
        return
    from staccato.cli import fanout  # imports the Temporal client
    from staccato.datasets.models import DatasetStatus

    for row in rows:
        if isinstance(row, DatasetStatus):
            text = datasets.list_row(row)
        elif isinstance(row, TransferStatus):
            text = render.list_row(row)
        else:
            text = fanout.list_row(row)
        # the start time ends the row's first line (a queued reason follows below it)
        first, newline, rest = text.partition("\n")
        typer.echo(f"{first}  started {row.started_at or '?'}{newline}{rest}")


def _control(transfer: str, action: str, done: str, already: str = "") -> None:
    """Run ``StaccatoClient.<action>(transfer)`` and say ``done``, or ``already`` when
    the client says nothing needed doing (a pause of a paused transfer, a resume of a
    running one, a cancel of a cancelled one: exit 0). ``transfer`` may also be a dataset's destination root (as for
    ``status`` and ``watch``): ``cancel`` then cancels that dataset; ``pause`` and
    ``resume`` say that a dataset has neither.
    """

    async def go() -> str:
        from staccato.client import StaccatoClient

        client = await StaccatoClient.connect()
        try:
            acted = await getattr(client, action)(transfer)
            chosen = _say_choice(client, transfer)
            if isinstance(acted, str):  # what a cancel of a failed run's clean-up did
                return acted
            # a destination names the id it chose (several transfers may be to it)
            named = transfer if chosen in (None, transfer) else f"{transfer} ({chosen})"
            return f"{already}: {named}" if acted is False else f"{done}: {named}"
        except TransferNotFoundError:
            dataset = await _dataset_at_root(client, transfer)
            if dataset is None:
                raise
        if action != "cancel":
            raise StaccatoError(
                f"{transfer} is the destination root of dataset {dataset}: a dataset cannot "
                f"be {done} (its batches stop only by `staccato cancel {dataset}`; running it "
                "again with `--sync-level size` (or mtime, checksum) copies only what is "
                "missing or differs)"
            )
        acted = await client.cancel(dataset)
        return f"{already if acted is False else done}: {transfer} (dataset {dataset})"

    typer.echo(run(go))


def _say_choice(client: StaccatoClient, transfer: str) -> str | None:
    """When ``transfer`` named a destination: the workflow id the client chose for it
    (:meth:`StaccatoClient.choose_for_destination`), after saying on stderr when it
    chose one of several scheduled starts; None when ``transfer`` was an id."""
    choice = client.choices.get(transfer)
    if choice is None:
        return None
    note = choice.note(transfer)
    if note is not None:
        typer.echo(note, err=True)
    return choice.id


async def _dataset_at_root(client: StaccatoClient, destination: str) -> str | None:
    """The id of the latest dataset whose destination root is ``destination`` (a
    path or URL), or None."""
    from staccato.dataset_client import dataset_status

    try:
        return (await dataset_status(client, destination)).id
    except StaccatoError:  # not found, or not a URL or path at all
        return None


def cancel(transfer: TransferArg) -> None:
    """Cancel a transfer, a dataset (cp -r) or a fan-out group (TRANSFER: its id; a
    transfer also by its destination, a dataset by its destination root): temp data is removed, an existing destination is left as it was (a dataset's files
    already copied stay; a group cancels every destination). A transfer that failed
    already and only removes its partial data: that clean-up stops, the run ends
    failed, and this says what was left behind. One already cancelled is left so
    (exit 0); one that completed or failed exits 1 saying so."""
    _control(transfer, "cancel", "cancel requested", "already cancelled")


def pause(transfer: TransferArg) -> None:
    """Pause a running transfer (streams stop at a chunk boundary); one already paused
    is left so (exit 0)."""
    _control(transfer, "pause", "paused", "already paused")


def resume(transfer: TransferArg) -> None:
    """Resume a paused transfer from what the destination already holds; one already
    running is left so (exit 0)."""
    _control(transfer, "resume", "resumed", "already running")
