"""``cp``/``submit`` with several destinations (a fan-out group), and a group's
``status``, ``watch`` and ``list`` rows (:mod:`staccato.fanout_client`).

Exit codes: 0 every destination completed; 1 any destination failed or was
cancelled, or the group failed (the source could not be read); 2 a usage error (a
destination given twice, a destination equal to the source, a bad URL or option),
before anything starts.
"""

from __future__ import annotations

import json
import sys
import time

import typer

from staccato import units
from staccato.cli import render
from staccato.cli.common import (
    fail,
    follow_or_hint,
    killed_up_warning,
    run,
    say_ignored,
    start_or_hint,
)
from staccato.client import StaccatoClient
from staccato.datasets.names import shown_name
from staccato.fanout_client import (
    GroupStart,
    follow_group,
    group_id,
    group_status,
    make_fan_out_request,
    start_group,
    status_lines,
)
from staccato.models import (
    FanOutRequest,
    GroupState,
    GroupStatus,
    TransferOptions,
    TransferState,
)
from staccato.urls import redact

#: seconds between two progress blocks (one line per destination) on stderr
PROGRESS_INTERVAL_S = 2.0


def submit(
    source: str,
    destinations: list[str],
    options: TransferOptions,
    as_json: bool,
    quiet: bool = False,
) -> None:
    """``submit SRC DST1 DST2 ...``: start the group and print its id (with ``quiet``
    no note that it attached)."""

    async def go() -> GroupStart:
        request = make_fan_out_request(source, destinations, options)  # before connecting
        return await start_or_hint("group", group_id(request), _start(request))

    started = run(go, starts=True)
    group = started.id
    if started.ignored:
        _warn_ignored(started)
    elif started.attached and not quiet:
        typer.echo(f"attached to running fan-out group {group} (same request)", err=True)
    typer.echo(json.dumps({"id": group}) if as_json else group)


def _warn_ignored(started: GroupStart) -> None:
    """The warning of an attach whose options that say how to run differ from the
    running group's (as a single transfer's and a dataset's)."""
    say_ignored("fan-out group", started.id, started.ignored)


def cp(source: str, destinations: list[str], options: TransferOptions, quiet: bool) -> None:
    """``cp SRC DST1 DST2 ...``: start the group, show one progress line per
    destination, exit 0 only when every destination completed."""

    async def go() -> GroupStatus:
        request = make_fan_out_request(source, destinations, options)
        client = await StaccatoClient.connect()
        started = await start_or_hint("group", group_id(request), start_group(client, request))
        group = started.id
        if not quiet:
            typer.echo(
                f"fan-out group {group}: {redact(source)} -> {len(destinations)} destinations"
                + (" (attached: the same group was running)" if started.attached else ""),
                err=True,
            )
        if started.ignored:
            _warn_ignored(started)
        return await follow_or_hint("group", group, _follow(client, group, quiet=quiet))

    exit_for(run(go, starts=True), quiet)


async def _start(request: FanOutRequest) -> GroupStart:
    """Connect and :func:`start_group`."""
    client = await StaccatoClient.connect()
    return await start_group(client, request)


def watch(group: str, *, quiet: bool = False) -> None:
    """Follow a group until it ends (exit codes as for ``cp``; Ctrl-C or SIGTERM: the
    group goes on, :func:`follow_or_hint`); ``quiet``: no progress lines."""

    async def go() -> GroupStatus:
        client = await StaccatoClient.connect()
        return await follow_or_hint(
            "group", group, _follow(client, group, quiet=quiet), quiet=quiet
        )

    exit_for(run(go, quiet=quiet), quiet)


async def _follow(client: StaccatoClient, group: str, *, quiet: bool) -> GroupStatus:
    """Follow the group; every :data:`PROGRESS_INTERVAL_S` (and at the end) print one
    line per destination on stderr unless ``quiet``."""
    killed_up_warning()
    last_shown = 0.0
    final: GroupStatus | None = None
    async for current in follow_group(client, group):
        final = current
        now = time.monotonic()
        ended = current.state != GroupState.running
        # a group that has failed but not yet ended (its rows carry the group's error
        # too) prints nothing more: the ending says the reason once
        failing = current.error is not None
        if not quiet and not ended and not failing and now - last_shown >= PROGRESS_INTERVAL_S:
            last_shown = now
            for line in status_lines(current)[2:]:  # staging, then one line per destination
                typer.echo(line, err=True)
            sys.stderr.flush()
    assert final is not None
    return final


def exit_for(final: GroupStatus, quiet: bool = False) -> None:
    """Say the outcome per destination (with ``quiet`` only the ones that did not
    complete); exit 0 only when all completed."""
    for row in final.destinations:
        if row.state == TransferState.completed and quiet:
            continue
        if row.state == TransferState.completed:
            typer.echo(
                f"completed: {redact(row.destination)}: {units.size(row.bytes or 0)}, "
                f"{row.checksum}",
                err=True,
            )
        elif row.error and row.error != final.error:
            typer.echo(f"{row.state.value}: {redact(row.destination)}: {row.error}", err=True)
        else:  # no reason of its own: the group's, said once below
            typer.echo(f"{row.state.value}: {redact(row.destination)}", err=True)
        if row.left_behind:  # its clean-up gave up: what a single cp says, per destination
            typer.echo(f"left behind: {shown_name(row.left_behind)}", err=True)
    if final.state == GroupState.completed:
        return
    failed = sum(1 for d in final.destinations if d.state != TransferState.completed)
    fail(
        f"group {final.id} {final.state.value}: {failed} of {len(final.destinations)} "
        f"destinations did not complete" + (f" ({final.error})" if final.error else "")
    )


def status(group: str, as_json: bool, failures: bool = False) -> None:
    """``status GROUP_ID``: the group and one line per destination; with ``failures``
    one line per destination that did not complete (``DESTINATION<TAB>STATE<TAB>REASON``;
    ``--json``: those destinations' objects)."""

    async def go() -> GroupStatus:
        client = await StaccatoClient.connect()
        return await group_status(client, group)

    current = run(go)
    if failures:
        bad = [d for d in current.destinations if d.state != TransferState.completed]
        if as_json:
            rows = current.to_json_dict()["destinations"]
            shown = [r for r in rows if r["state"] != TransferState.completed.value]
            typer.echo(json.dumps(shown, indent=2))
            return
        for row in bad:
            why = row.error or current.error or row.state.value
            typer.echo(f"{redact(row.destination)}\t{row.state.value}\t{why}")
        return
    if as_json:
        typer.echo(json.dumps(current.to_json_dict(), indent=2))
        return
    for line in status_lines(current):
        typer.echo(line)


def list_row(status: GroupStatus) -> str:
    """A group's ``list`` row: id, state, destinations completed, source."""
    done = sum(1 for d in status.destinations if d.state == TransferState.completed)
    return (
        f"{status.id}  {status.state.value:<{render.LIST_STATE_WIDTH}} "
        f"{done}/{len(status.destinations)} "
        f"destinations  {redact(status.source)}"
    )
