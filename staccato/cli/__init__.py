"""The ``staccato`` command (``staccato = "staccato.cli:main"``; ``python -m staccato.cli``).

Modules: :mod:`~staccato.cli.commands` (transfer commands), :mod:`~staccato.cli.service`
(``worker``, ``up``, ``down``, ``codec-server``), :mod:`~staccato.cli.schedule`
(``schedule create|list|describe|pause|unpause|trigger|delete``),
:mod:`~staccato.cli.render` (progress,
status and list output), :mod:`~staccato.cli.options` (shared options and their
parsers), :mod:`~staccato.cli.common` (exit codes, error reporting). Imports go one
way: cli -> client -> workflows / models; the command never touches an endpoint.

Exit codes: 0 success; 1 a transfer failed or was cancelled, or a service error
(Temporal unreachable, destination busy); 2 a usage error (bad option or URL).
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import typer

from staccato.cli import commands, schedule, service
from staccato.cli.common import EXIT_FAILED, EXIT_USAGE
from staccato.cli.options import parse_duration, parse_size

__all__ = ["EXIT_FAILED", "EXIT_USAGE", "app", "main", "parse_duration", "parse_size"]

app = typer.Typer(
    name="staccato",
    help=(
        "Staccato moves files between file://, http(s)://, s3:// and sftp:// endpoints as "
        "durable, resumable transfers on Temporal.\n\n"
        "Start the service with `staccato up --detach`, then `staccato cp SOURCE DESTINATION`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.command()(commands.submit)
app.command()(commands.cp)
app.command()(commands.watch)
app.command()(commands.status)
app.command("list")(commands.list_transfers)
app.command()(commands.cancel)
app.command()(commands.pause)
app.command()(commands.resume)
app.command()(service.worker)
app.command()(service.up)
app.command("codec-server")(service.codec_server)
app.command()(service.down)
app.add_typer(schedule.app, name="schedule")


def main() -> NoReturn:
    """Entry point of the ``staccato`` command.

    When stderr is not a terminal (piped, logged), usage errors and help are plain
    text (no boxes drawn at 80 columns): typer's rich formatting is turned off for
    this run by ``rich_markup_mode=None``, without touching the environment.

    Ends with ``os._exit``: the Temporal client's native threads can crash CPython's
    finalization of a short-lived process ("PyGILState_Release: thread state ... must
    be current", temporalio/sdk-python#300), which would turn a success into SIGABRT.
    """
    if not sys.stderr.isatty():
        app.rich_markup_mode = None
    code = 0
    try:
        app()
    except SystemExit as exit_:
        if isinstance(exit_.code, int):
            code = exit_.code
        elif exit_.code is not None:
            print(exit_.code, file=sys.stderr)
            code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
