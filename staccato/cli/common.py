"""What every ``staccato`` command shares: exit codes, error reporting, logging setup.

Exit codes: 0 success; 1 a transfer failed or was cancelled, or a service error
(Temporal unreachable, destination busy); 2 a usage error (bad option or URL);
130 interrupted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import typer

from staccato.errors import InvalidURLError, SettingsError, StaccatoError

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
T = TypeVar("T")


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Print ``staccato: error: <message>`` on stderr and exit with ``code``."""
    typer.echo(f"staccato: error: {message}", err=True)
    raise typer.Exit(code)


def run(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine, turning Staccato errors into messages and exit codes: a bad URL
    or STACCATO_* setting exits 2, any other :class:`StaccatoError` (Temporal unreachable, destination busy,
    no such transfer, ...) exits 1, Ctrl-C exits 130."""
    try:
        return asyncio.run(factory())  # type: ignore[arg-type]
    except (InvalidURLError, SettingsError) as err:
        fail(str(err), EXIT_USAGE)
    except StaccatoError as err:
        fail(str(err))
    except KeyError as err:
        # temporalio's converter meets a payload it cannot decode: one written with the
        # payload codec on, read by a client that has no codec key
        if "binary/encrypted" not in str(err):
            raise
        fail(
            "this transfer's data in Temporal is encrypted by the payload codec and this "
            "client has no key for it: set STACCATO_CODEC_KEY (or STACCATO_CODEC_KEY_FILE) "
            "to the workers' key"
        )
    except KeyboardInterrupt:
        fail("interrupted", EXIT_INTERRUPTED)


def setup_logging(verbose: bool) -> None:
    """Log to stderr at INFO (DEBUG with ``verbose``); libraries' chatter at WARNING."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("botocore").setLevel(logging.WARNING)
    logging.getLogger("paramiko").setLevel(logging.WARNING)


async def follow_or_hint(kind: str, run_id: str, following: Awaitable[T]) -> T:
    """Await ``following`` (a client following a transfer, group or dataset); on
    Ctrl-C (the follow is cancelled, the run is not) say that the ``kind`` ``run_id``
    goes on and how to watch or cancel it, and exit 130 (:data:`EXIT_INTERRUPTED`)."""
    try:
        return await following
    except (asyncio.CancelledError, KeyboardInterrupt):
        typer.echo(
            f"\nstaccato: stopped following; {kind} {run_id} goes on without you.\n"
            f"  follow it again:  staccato watch {run_id}\n"
            f"  cancel it:        staccato cancel {run_id}",
            err=True,
        )
        raise typer.Exit(EXIT_INTERRUPTED) from None
