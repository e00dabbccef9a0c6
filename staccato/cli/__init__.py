"""The ``staccato`` command (``staccato = "staccato.cli:main"``; ``python -m staccato.cli``).

Modules: :mod:`~staccato.cli.commands` (transfer commands), :mod:`~staccato.cli.service`
(``worker``, ``up``, ``down``, ``codec-server``), :mod:`~staccato.cli.schedule`
(``schedule create|list|describe|pause|unpause|trigger|delete``),
:mod:`~staccato.cli.render` (progress,
status and list output), :mod:`~staccato.cli.options` (shared options and their
parsers), :mod:`~staccato.cli.common` (exit codes, error reporting). Imports go one
way: cli -> client -> workflows / models; the command never touches an endpoint.

Exit codes: 0 success; 1 a transfer failed or was cancelled, or a service error
(Temporal unreachable or not answering, destination busy); 2 a usage error (bad option
or URL); 130 interrupted (Ctrl-C), 143 terminated (SIGTERM): a transfer being followed
goes on.

``-h``/``--help`` and ``--version`` work on the command and on every subcommand.
"""

from __future__ import annotations

# first: Ctrl-C or SIGTERM while loading
from staccato.cli.startup import interrupted_at_start, terminated_at_start

# isort: split
import os
import signal
import sys
from collections.abc import Callable
from typing import Annotated, Any, NoReturn

import typer

from staccato.cli import commands
from staccato.cli.common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE
from staccato.cli.options import parse_duration, parse_size
from staccato.errors import SettingsError

__all__ = ["EXIT_FAILED", "EXIT_USAGE", "app", "main", "parse_duration", "parse_size"]


def version() -> str:
    """The installed package's version (``unknown`` when run from a source tree)."""
    import importlib.metadata  # ~tens of ms: only when the version is asked for

    try:
        return importlib.metadata.version("staccato")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"staccato {version()}")
        raise typer.Exit()


def _asks_version(args: list[str]) -> bool:
    """``--version`` anywhere among the options (before a ``--``): on the command and
    on every subcommand (``staccato cp --version``), whatever else is given."""
    return "--version" in (args[: args.index("--")] if "--" in args else args)


def _show_variadic_arguments_plainly() -> None:
    """Show an argument taking several values as ``DESTINATION...`` (its metavar, which
    ends in ``...``), not ``DESTINATION <list[str]>``: typer prints the Python type of
    every argument beside its name, and its usage line adds ``...`` once more."""
    from typer.core import TyperArgument

    shown_type = TyperArgument.display_type
    usage_name = TyperArgument._usage_display_name

    def display_type(self: TyperArgument, ctx: Any) -> str:
        return "" if self.nargs != 1 and self.metavar else shown_type(self, ctx)

    def usage_display_name(self: TyperArgument) -> str:
        name = usage_name(self)
        return name.replace("......", "...").replace("...}...", "}...")

    TyperArgument.display_type = display_type  # type: ignore[method-assign,assignment]
    TyperArgument._usage_display_name = usage_display_name  # type: ignore[method-assign]


_show_variadic_arguments_plainly()


def option_suggestions(typed: str, options: dict[str, tuple[str, ...]]) -> list[str]:
    """What ``No such option: TYPED`` suggests among a command's long ``options``
    (name -> its values, empty for an option without a fixed list): the names close
    to TYPED compared without their dashes, those that begin with it, and ``--if-busy
    wait`` for ``--wait`` (TYPED is a value of an option). click compares the names with
    their ``--``, which two names always share: ``--wait`` found ``--quiet``, ``--fail``
    ``--at``, ``--ifbusy`` ``--verify`` beside ``--if-busy``."""
    import difflib

    word = typed.lstrip("-").lower()
    if not typed.startswith("--") or not word:
        return []
    names = {name[2:]: name for name in options if name.startswith("--")}
    found = [names[n] for n in difflib.get_close_matches(word, list(names), cutoff=0.6)]
    found += [name for n, name in names.items() if len(word) >= 3 and n.startswith(word)]
    found += [f"{name} {word}" for name, values in options.items() if word in values]
    return sorted(set(found))


def commands_with_option(option: str, *, but: str) -> list[str]:
    """The transfer commands (:data:`TRANSFER_COMMANDS`) other than ``but`` that take
    the long ``option`` (``--not-before``: ``submit``), read from their signatures;
    [] when ``but`` is no transfer command or none does."""
    import typing

    from typer.models import OptionInfo

    if but not in TRANSFER_COMMANDS or not option.startswith("--"):
        return []
    found = []
    for name, command in TRANSFER_COMMANDS.items():
        if name == but:
            continue
        for hint in typing.get_type_hints(command, include_extras=True).values():
            infos = [m for m in getattr(hint, "__metadata__", ()) if isinstance(m, OptionInfo)]
            if any(option in (info.default, *(info.param_decls or ())) for info in infos):
                found.append(name)
                break
    return found


def elsewhere_message(option: str, command: str, others: list[str]) -> str:
    """The usage error of ``staccato COMMAND OPTION`` when ``OPTION`` belongs to the
    transfer commands ``others`` instead (:func:`commands_with_option`)."""
    named = ", ".join(f"`staccato {o}`" for o in others)
    advice = f"use `staccato {others[0]} {option} ...`"
    if command == "cp" and others[0] == "submit":
        advice = (
            f"`staccato submit {option} ... SOURCE DESTINATION` starts the transfer and "
            "prints its id (cp starts at once and follows it); `staccato watch ID` then "
            "follows it as cp does"
        )
    return f"{option} is an option of {named}, not of `staccato {command}`: {advice}"


def _suggest_options_by_name() -> None:
    """An unknown long option suggests by :func:`option_suggestions` (click's own
    suggestions read oddly: ``--wait`` -> ``--quiet``); one of another transfer command
    (``cp --not-before``) names that command instead (:func:`elsewhere_message`)."""
    from typer.core import TyperCommand

    from staccato.cli.options import CHOICES

    parse_args = TyperCommand.parse_args
    no_such_option = getattr(sys.modules[typer.BadParameter.__module__], "NoSuchOption", None)

    def suggesting_parse_args(self: TyperCommand, ctx: Any, args: list[str]) -> list[str]:
        try:
            return parse_args(self, ctx, args)
        except Exception as err:
            if no_such_option is None or not isinstance(err, no_such_option):
                raise
            options = {
                name: CHOICES.get(name, ())
                for param in self.params
                for name in (*param.opts, *param.secondary_opts)
            }
            err.possibilities = option_suggestions(err.option_name, options)
            command = ctx.info_name or ""
            elsewhere = commands_with_option(err.option_name, but=command)
            if elsewhere:
                # `cp --not-before`: an option of `submit`; what is close here misleads
                err.possibilities = []
                err.message = elsewhere_message(err.option_name, command, elsewhere)
            raise

    TyperCommand.parse_args = suggesting_parse_args  # type: ignore[method-assign,assignment]


_suggest_options_by_name()

#: the transfer commands (:mod:`staccato.cli.commands`) by name: ``staccato NAME ...``
#: with one of these names builds that command alone (see :func:`_make_app`)
TRANSFER_COMMANDS: dict[str, Callable[..., Any]] = {
    "submit": commands.submit,
    "cp": commands.cp,
    "watch": commands.watch,
    "status": commands.status,
    "list": commands.list_transfers,
    "cancel": commands.cancel,
    "pause": commands.pause,
    "resume": commands.resume,
}


def _make_app(only: str | None = None) -> typer.Typer:
    """The ``staccato`` command (typer app): every command, or with ``only`` (a name in
    :data:`TRANSFER_COMMANDS`) that transfer command alone, with the same options,
    help and usage lines: what ``staccato cp ...`` needs, without importing the
    service, schedule and limit commands' modules or turning the other commands'
    signatures into click commands (together a few tens of ms of a short ``cp``)."""
    made = typer.Typer(
        name="staccato",
        help=(
            "Staccato moves files between file://, http(s)://, s3:// and sftp:// endpoints "
            "as durable, resumable transfers on Temporal.\n\n"
            "Start the service with `staccato up --detach`, then `staccato cp SOURCE "
            "DESTINATION`."
        ),
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    made.callback()(_root)
    for name, command in TRANSFER_COMMANDS.items():
        if only is None or name == only:
            made.command(name)(command)
    if only is not None:
        return made
    from staccato.cli import limits, schedule, service

    made.command()(service.worker)
    made.command()(service.up)
    made.command("codec-server")(service.codec_server)
    made.command()(service.down)
    made.add_typer(schedule.app, name="schedule")
    made.add_typer(limits.app, name="limit")
    return made


def _root(
    _version: Annotated[
        bool,
        typer.Option(
            "--version",
            is_eager=True,
            expose_value=False,
            callback=_show_version,
            help="Show the version and exit (also after any command).",
        ),
    ] = False,
) -> None:
    """Staccato: durable, resumable transfers on Temporal."""


def __getattr__(name: str) -> typer.Typer:
    """``staccato.cli.app``: the whole command (every subcommand), made on first use."""
    if name == "app":
        made = globals()["app"] = _make_app()
        return made
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _app_for(args: list[str]) -> typer.Typer:
    """The app to run ``staccato ARGS``: that transfer command alone when ARGS names one
    of :data:`TRANSFER_COMMANDS` first (no root option comes before a command but ``--version``, handled
    before this), else the whole command (help, other commands, usage errors)."""
    if args and args[0] in TRANSFER_COMMANDS:
        return _make_app(only=args[0])
    return __getattr__("app")


def main() -> NoReturn:
    """Entry point of the ``staccato`` command.

    When stderr is not a terminal (piped, logged), usage errors and help are plain
    text (no boxes drawn at 80 columns): typer's rich formatting is turned off for
    this run by ``rich_markup_mode=None``, without touching the environment.

    Ends with ``os._exit``: a Temporal runtime's native (Tokio) threads still alive
    when CPython finalizes may be handing a reply to Python at that moment, which
    crashes the exit ("PyGILState_Release: thread state ... must be current",
    temporalio/sdk-python#300) and would turn a success into SIGABRT. The Python API
    avoids it by stopping those threads when a client closes (see
    :meth:`staccato.client.StaccatoClient.close`); the command skips finalization
    altogether, so no client it made can outlive it.
    """
    code = 0
    try:
        if _asks_version(sys.argv[1:]):
            typer.echo(f"staccato {version()}")
            raise SystemExit(0)
        command = _app_for(sys.argv[1:])
        if not sys.stderr.isatty():
            command.rich_markup_mode = None
        if signal.getsignal(signal.SIGINT) is interrupted_at_start:
            # from here Ctrl-C is the command's: KeyboardInterrupt, and asyncio's
            # handler in `run` (which installs it only over the default one)
            signal.signal(signal.SIGINT, signal.default_int_handler)
        if sys.argv[1:2] and sys.argv[1] not in TRANSFER_COMMANDS:
            if signal.getsignal(signal.SIGTERM) is terminated_at_start:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)  # up/worker: their own way
        command()
    except KeyboardInterrupt:  # outside `run`: before a transfer command started anything
        started = sys.argv[1:2] and sys.argv[1] not in TRANSFER_COMMANDS
        print(
            "staccato: interrupted" + ("" if started else "; nothing was started"),
            file=sys.stderr,
        )
        code = EXIT_INTERRUPTED
    except SettingsError as err:  # a STACCATO_* value read outside `run`: a usage error
        print(f"staccato: error: {err}", file=sys.stderr)
        code = EXIT_USAGE
    except SystemExit as exit_:
        if isinstance(exit_.code, int):
            code = exit_.code
        elif exit_.code is not None:
            print(exit_.code, file=sys.stderr)
            code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
