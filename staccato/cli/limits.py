"""``staccato limit set|list|unset``: limits of an endpoint or a link, kept durably in
the governor workflow of each (:mod:`staccato.governors`).

Every value is checked before Temporal is asked anything: an unknown target form, a
number below 1, a malformed rate or window exits 2 naming the option.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from staccato import units
from staccato.cli.common import EXIT_USAGE, fail, run
from staccato.cli.options import JsonOption, int_range_option, parse_rate
from staccato.links import (
    LimitTarget,
    LimitTargetError,
    governor_id,
    parse_limit_target,
    parse_link,
    tuned_link,
)
from staccato.models import Limits
from staccato.tuning import LinkMemory  # pure: no driver, no Temporal client

if TYPE_CHECKING:  # imported where used: `--help` and usage errors need no Temporal client
    from staccato import governors

app = typer.Typer(
    name="limit",
    help=(
        "Limits of an endpoint (http://HOST[:PORT], sftp://HOST[:PORT], s3://BUCKET, "
        "file://) or a link (SRC_ENDPOINT,DST_ENDPOINT), across every worker: "
        "`staccato limit set sftp://host:22 --max-active 2`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: the highest --max-active / --max-streams accepted (far above any real endpoint)
MAX_COUNT = 1_000_000

TargetArg = Annotated[
    str,
    typer.Argument(
        metavar="TARGET",
        help="An endpoint (http://HOST[:PORT], https://..., sftp://HOST[:PORT], "
        "s3://BUCKET[?profile=NAME], file://) or a link SRC_ENDPOINT,DST_ENDPOINT.",
    ),
]


def _target(text: str) -> LimitTarget:
    try:
        return parse_limit_target(text)
    except LimitTargetError as err:
        fail(f"TARGET: {err}", EXIT_USAGE)


def parse_window(text: str) -> str:
    """``HH:MM-HH:MM[,TZ]``; raises typer.BadParameter naming what was expected."""
    from staccato import governors

    try:
        return governors.check_window(text)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None


@app.command("set")
def set_(
    target: TargetArg,
    max_active: Annotated[
        int | None,
        int_range_option(
            "--max-active", 1, MAX_COUNT, help="Transfers at once (each holds one slot)."
        ),
    ] = None,
    max_streams: Annotated[
        int | None,
        int_range_option(
            "--max-streams",
            1,
            MAX_COUNT,
            help="Streams (connections) at once, summed over the transfers; a transfer "
            "runs min(its --streams, free) and waits while none is free.",
        ),
    ] = None,
    max_rate: Annotated[
        int | None,
        typer.Option(
            "--max-rate",
            parser=parse_rate,
            metavar="RATE",
            help="Bytes per second shared by all transfers on it, across workers (40MB/s); "
            "each stream reads at an equal share; a change reaches running transfers "
            "within a few seconds.",
        ),
    ] = None,
    window: Annotated[
        str | None,
        typer.Option(
            "--window",
            parser=parse_window,
            metavar="HH:MM-HH:MM[,TZ]",
            help="When new transfers may start (24 h clock, default zone UTC); outside it "
            "they wait queued, running ones finish.",
        ),
    ] = None,
) -> None:
    """Set limits on an endpoint or link (others it has are kept); transfers waiting
    for it see the change within a second."""
    limits = Limits(
        max_active=max_active, max_streams=max_streams, max_rate=max_rate, window=window
    )
    if limits.empty():
        fail("give at least one of --max-active, --max-streams, --max-rate, --window", EXIT_USAGE)
    parsed = _target(target)

    async def go() -> None:
        from staccato import governors
        from staccato.client import StaccatoClient

        client = await StaccatoClient.connect()
        await governors.set_limits(client.temporal, parsed, limits)

    run(go)
    typer.echo(f"{parsed.name}: {_limits_text(limits)}")


@app.command("unset")
def unset(
    target: Annotated[
        str | None,
        typer.Argument(metavar="TARGET", help="Endpoint or link (omit with --all)."),
    ] = None,
    max_active: Annotated[bool, typer.Option("--max-active", help="Clear --max-active.")] = False,
    max_streams: Annotated[
        bool, typer.Option("--max-streams", help="Clear --max-streams.")
    ] = False,
    max_rate: Annotated[bool, typer.Option("--max-rate", help="Clear --max-rate.")] = False,
    window: Annotated[bool, typer.Option("--window", help="Clear --window.")] = False,
    all_targets: Annotated[
        bool, typer.Option("--all", help="Clear every limit of every endpoint and link.")
    ] = False,
) -> None:
    """Clear limits of TARGET (all of them when no option names one), or of every
    endpoint and link with --all."""
    fields = [
        name
        for name, chosen in (
            ("max_active", max_active),
            ("max_streams", max_streams),
            ("max_rate", max_rate),
            ("window", window),
        )
        if chosen
    ]
    if all_targets == (target is not None):
        fail("give either a TARGET or --all", EXIT_USAGE)
    parsed = _target(target) if target is not None else None

    async def go() -> list[tuple[str, list[str]]]:
        from staccato import governors
        from staccato.client import StaccatoClient

        client = await StaccatoClient.connect()
        if parsed is not None:
            if not await governors.governor_running(client.temporal, parsed.name):
                fail(f"no limits are set on {parsed.name}")
            state = await governors.governor_state(client.temporal, governor_id(parsed.name))
            if state is None:
                fail(f"no limits are set on {parsed.name}")
            # a limit asked for that is not set: said (exit 0), not reported as cleared
            absent = [f for f in fields if getattr(state.limits, f) is None]
            for name in absent:
                typer.echo(f"{parsed.name} has no {_option(name)} limit")
            to_clear = [f for f in fields if f not in absent]
            if fields and not to_clear:
                return []
            await governors.unset_limits(client.temporal, parsed, to_clear)
            return [(parsed.name, to_clear)]
        cleared: list[tuple[str, list[str]]] = []
        for view in await governors.list_limits(client.temporal):
            # with options: only where that limit is set (as for one TARGET)
            to_clear = [f for f in fields if getattr(view.limits, f) is not None]
            if fields and not to_clear:
                continue
            await governors.unset_limits(client.temporal, parse_limit_target(view.target), to_clear)
            cleared.append((view.target, to_clear))
        if fields and not cleared:
            typer.echo(f"no endpoint or link has a {' or '.join(map(_option, fields))} limit")
        return cleared

    for name, cleared in run(go):
        shown = ", ".join(_option(f) for f in cleared) if cleared else "all limits"
        typer.echo(f"{name}: cleared {shown}")


def _option(field: str) -> str:
    """The option that sets a limit field: ``max_active`` -> ``--max-active``."""
    return "--" + field.replace("_", "-")


@app.command("list")
def list_(
    target: Annotated[
        str | None,
        typer.Argument(
            metavar="TARGET",
            help="Only this endpoint or link (forms as for `limit set`); exit 1 when it "
            "has no limits and no slot held or waited for.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Every endpoint and link with limits (or slots held): limits, active, queued;
    with TARGET only that one."""
    parsed = _target(target) if target is not None else None  # a bad form: exit 2

    async def go() -> list[governors.LimitView]:
        from staccato import governors
        from staccato.client import StaccatoClient

        client = await StaccatoClient.connect()
        views = await governors.list_limits(client.temporal)
        return [v for v in views if parsed is None or v.target == parsed.name]

    async def learned() -> list[LinkMemory]:
        from staccato.client import StaccatoClient
        from staccato.link_memory import list_link_memories

        client = await StaccatoClient.connect()
        memories = await list_link_memories(client.temporal)
        return [m for m in memories if parsed is None or m.link == parsed.name]

    views = run(go)
    memories = run(learned)
    if parsed is not None and not views and not memories:
        fail(
            f"no limits are set on {parsed.name} (nor does a transfer hold or wait for a "
            "slot of it); `staccato limit list` shows every endpoint and link that has "
            f"some, `staccato limit set {parsed.name} ...` sets them"
        )
    if as_json:
        typer.echo(json.dumps(_json_rows(views, memories), indent=2))
        return
    if not views:
        # (what tuning learned, listed below, is no limit: said so, not contradicted)
        follows = " (what tuning learned of links follows)" if memories else ""
        typer.echo((f"{parsed.name}: no limits set" if parsed else "no limits set") + follows)
    for target, view, memory in _rows(views, memories):
        parts = [target]
        if view is not None:
            share = (
                f", {units.rate(view.rate_per_stream)} per stream"
                if view.rate_per_stream is not None and view.streams
                else ""
            )
            parts += [
                _limits_text(view.limits),
                f"active {view.active} ({units.counted(view.streams, 'stream')}{share}), "
                f"queued {view.queued}",
            ]
        if memory is not None:  # what per-link tuning learned (`limit learned`)
            parts.append(f"learned {learned_text(memory)}")
        typer.echo("  ".join(parts))


def _rows(
    views: list[governors.LimitView], memories: list[LinkMemory]
) -> list[tuple[str, governors.LimitView | None, LinkMemory | None]]:
    """One row per endpoint or link, sorted by name, for the table and ``--json``
    alike: its limits and load (None: it has none, nothing held nor waited for) and
    what tuning learned of it (None: nothing; a link only). A link with both is one
    row (it was two in the table: a ``learned`` line and a limits line)."""
    by_target = {v.target: v for v in views}
    learned = {m.link: m for m in memories}
    return [(t, by_target.get(t), learned.get(t)) for t in sorted({*by_target, *learned})]


def _json_rows(
    views: list[governors.LimitView], memories: list[LinkMemory]
) -> list[dict[str, object]]:
    """``limit list --json``: what the table shows, one row per endpoint or link. Each
    row is a :class:`~staccato.governors.LimitView` with ``learned``, what per-link
    tuning learned of that link (as ``limit learned --json`` gives it) or null; a link
    that learned something and has no limits nor slots is a row of its own (no limits,
    nothing active or queued), as the table lists it."""
    from staccato.governors import LimitView

    rows: list[dict[str, object]] = []
    for target, view, memory in _rows(views, memories):
        shown = view or LimitView(target=target, limits=Limits(), active=0, streams=0, queued=0)
        learned = None if memory is None else memory.model_dump(mode="json")
        rows.append({**shown.model_dump(mode="json"), "learned": learned})
    return rows


@app.command("learned")
def learned_(
    target: Annotated[
        str | None,
        typer.Argument(
            help="A link SRC_ENDPOINT,DST_ENDPOINT; default: every link.", metavar="LINK"
        ),
    ] = None,
    as_json: JsonOption = False,
    forget: Annotated[
        bool,
        typer.Option("--forget", help="Drop what LINK learned: its next transfer starts cold."),
    ] = False,
) -> None:
    """What per-link tuning learned: the streams and chunk size each link settled on,
    its rate there and the last decisions' reasons (transfers given neither --streams
    nor --chunk-size start from it)."""
    parsed = None
    if target is not None:
        try:
            parsed = parse_link(target)
        except LimitTargetError as err:
            fail(f"LINK: {err}", EXIT_USAGE)
    if forget:
        if parsed is None:
            fail("--forget needs a LINK", EXIT_USAGE)
        assert parsed is not None

        async def drop() -> bool:
            from staccato.client import StaccatoClient
            from staccato.link_memory import forget_link_memory

            client = await StaccatoClient.connect()
            return await forget_link_memory(client.temporal, parsed.name)

        dropped = run(drop)
        if as_json:
            typer.echo(json.dumps({"link": parsed.name, "forgotten": dropped}, indent=2))
            return
        typer.echo(
            f"{parsed.name}: "
            + ("forgotten: its next tuned transfer starts cold" if dropped else _NOTHING_LEARNED)
        )
        return

    async def go() -> list[LinkMemory]:
        from staccato.client import StaccatoClient
        from staccato.link_memory import list_link_memories, read_link_memory

        client = await StaccatoClient.connect()
        if parsed is not None:
            memory = await read_link_memory(client.temporal, parsed.name)
            return [] if memory is None else [memory]
        return await list_link_memories(client.temporal)

    memories = run(go)
    if as_json:
        typer.echo(json.dumps([m.model_dump(mode="json") for m in memories], indent=2))
        return
    if not memories:
        nothing = _NOTHING_LEARNED
        if parsed is not None and not tuned_link(parsed.name):
            nothing = _LOCAL_NOT_TUNED
        typer.echo((f"{parsed.name}: " if parsed else "") + nothing)
        return
    for memory in memories:
        typer.echo(f"{memory.link}  {learned_text(memory)}")
        for why in memory.reasons:
            typer.echo(f"  {why}")


#: what ``limit learned`` says of a link without a memory
_NOTHING_LEARNED = (
    "nothing learned yet (a link learns when a tuned transfer on it ends: 64 MiB or "
    "more, given neither --streams nor --chunk-size)"
)
#: what ``limit learned file://,file://`` says (staccato.links.tuned_link)
_LOCAL_NOT_TUNED = (
    "nothing learned: a local copy is not tuned (it runs the fixed 4 streams x 16 MiB "
    "unless given --streams or --chunk-size)"
)


def learned_text(memory: LinkMemory) -> str:
    """``8 streams x 16.0 MiB at 190.7 MiB/s (3 transfers)``; a setting learned at
    a cap adds ``, at most 4: <what set it>``."""
    rate = f" at {units.rate(memory.rate)}" if memory.rate else ""
    ceiling = f", errors at {memory.ceiling}" if memory.ceiling else ""
    capped = (
        f", at most {memory.capped}: {memory.cap_reason or 'a cap'}"
        if memory.capped is not None
        else ""
    )
    return (
        f"{units.counted(memory.streams, 'stream')} x {units.size(memory.chunk_size)}{rate} "
        f"({units.counted(memory.transfers, 'transfer')}{ceiling}{capped})"
    )


def _limits_text(limits: Limits) -> str:
    parts = []
    if limits.max_active is not None:
        parts.append(f"max-active {limits.max_active}")
    if limits.max_streams is not None:
        parts.append(f"max-streams {limits.max_streams}")
    if limits.max_rate is not None:
        parts.append(f"max-rate {units.rate(limits.max_rate)}")
    if limits.window is not None:
        parts.append(f"window {limits.window}")
    return ", ".join(parts) or "no limits"
