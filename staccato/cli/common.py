"""What every ``staccato`` command shares: exit codes, error reporting, logging setup.

Exit codes: 0 success; 1 a transfer failed or was cancelled, or a service error
(Temporal unreachable or not answering, destination busy); 2 a usage error (bad
option or URL, or a bad STACCATO_* setting, a malformed key included); 130 interrupted
(Ctrl-C, SIGINT); 143 terminated (SIGTERM): 128 + the signal's number, as a shell
reports a death by that signal. A run being followed goes on after either.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import NoReturn, TypeVar

import typer

from staccato.errors import InvalidURLError, KeySettingError, SettingsError, StaccatoError
from staccato.following import rpc_timed_out
from staccato.loading import resume_after_start

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
#: SIGTERM while following a transfer, group or dataset (128 + 15, as 130 is 128 + SIGINT)
EXIT_TERMINATED = 143
T = TypeVar("T")


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Print ``staccato: error: <message>`` on stderr and exit with ``code``."""
    typer.echo(f"staccato: error: {message}", err=True)
    raise typer.Exit(code)


def stopped(message: str, code: int) -> NoReturn:
    """Print ``staccato: <message>`` on stderr (Ctrl-C or SIGTERM: not an error) and
    exit with ``code``."""
    typer.echo(f"staccato: {message}", err=True)
    raise typer.Exit(code)


#: after SIGTERM, the command's coroutine is cancelled again every this many seconds
#: while it runs, at most :data:`_RECANCELS` times (see :func:`_terminable`)
_RECANCEL_EVERY_S = 1.0
_RECANCELS = 30
#: set when SIGTERM cancelled the command's coroutine (see :func:`run`)
_terminated = threading.Event()


async def _terminable(factory: Callable[[], Awaitable[T]], sigterm: bool) -> T:
    """Await ``factory()``; with ``sigterm``, SIGTERM cancels it as Ctrl-C does (and
    sets :data:`_terminated`), so a command following a run says how to follow it
    again."""
    # the command's imports are done once its coroutine first waits (staccato.loading)
    asyncio.get_running_loop().call_soon(resume_after_start)
    if not sigterm:
        return await factory()
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()

    def on_sigterm() -> None:
        _terminated.set()
        cancel_until_done(_RECANCELS)

    def cancel_until_done(left: int) -> None:
        # again while it runs: a cancel can be swallowed on its way (Python 3.11's
        # ``asyncio.wait_for`` loses it when the awaited call ends at the same time,
        # gh-86296): ci66's ``cp -r`` went on following its dataset for 60 s after
        # SIGTERM. The hints said on a cancel are printed without awaiting, so a
        # second cancel never cuts one short.
        if task is None or task.done() or left <= 0:
            return
        task.cancel()
        loop.call_later(_RECANCEL_EVERY_S, cancel_until_done, left - 1)

    try:
        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
        return await factory()
    try:
        return await factory()
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def _quiet_teardown() -> None:
    """After a Ctrl-C that came while ``asyncio.run`` was still setting its loop up:
    the half-made loop and the coroutine never awaited are collected at exit, and
    would print "Exception ignored in BaseEventLoop.__del__" with a traceback and a
    "never awaited" warning under the command's one line. Nothing of the command's
    runs after this; those reports are silenced for the rest of the process."""
    import warnings

    warnings.simplefilter("ignore", RuntimeWarning)
    sys.unraisablehook = lambda unraisable: None


def run(
    factory: Callable[[], Awaitable[T]],
    *,
    sigterm: bool = True,
    starts: bool = False,
    quiet: bool = False,
) -> T:
    """Run a coroutine, turning Staccato errors into messages and exit codes: a bad URL
    or STACCATO_* setting (a malformed key too: :class:`KeySettingError`, whichever
    command reads it) exits 2, any other :class:`StaccatoError` (Temporal
    unreachable, destination busy, no such transfer, ...) exits 1, a Temporal call that
    failed (``RPCError``: timed out, unavailable, refused) exits 1 with one line naming
    Temporal's address and the command, Ctrl-C exits 130, SIGTERM 143 (with
    ``sigterm``; without, SIGTERM is left to the coroutine: a worker's graceful stop).

    ``starts``: the coroutine starts a run, its start awaited in :func:`start_or_hint`
    and any follow in :func:`follow_or_hint` (which say what goes on): an interruption
    that reaches here came before the start, and the message says nothing was
    started. ``quiet``: ``watch -q``, which says nothing when interrupted (the exit
    code alone: 130 or 143)."""
    before = "; nothing was started" if starts else ""

    def stop(message: str, code: int) -> NoReturn:
        if quiet:
            raise typer.Exit(code)
        stopped(message, code)

    if starts:  # only a start seals URL tokens: status, list, ... read no key file
        warn_unknown_settings()
        warn_malformed_seal_key()
    try:
        return asyncio.run(_terminable(factory, sigterm))
    except asyncio.CancelledError:
        if not _terminated.is_set():
            raise
        stop(f"terminated (SIGTERM){before}", EXIT_TERMINATED)
    except (InvalidURLError, SettingsError, KeySettingError) as err:
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
        _quiet_teardown()
        stop(f"interrupted{before}", EXIT_INTERRUPTED)
    except Exception as err:
        message = temporal_rpc_message(err)
        if message is None:
            raise
        fail(message)


def temporal_rpc_message(err: BaseException, then: str = "then try again") -> str | None:
    """One line for a Temporal call that failed (``temporalio.service.RPCError``:
    Temporal timed out, was unavailable or refused the call), naming the address of
    the Temporal the command used (:func:`staccato.settings.address_in_use`) and the
    command that asked, ending with what to do ``then``; None for any other error."""
    service = sys.modules.get("temporalio.service")  # loaded if Temporal was called
    if service is None or not isinstance(err, service.RPCError):
        return None
    codes = service.RPCStatusCode
    try:
        from staccato import settings

        address = settings.address_in_use()
    except Exception:  # the address is for the message only
        address = "(TEMPORAL_ADDRESS)"
    asked = shlex.join(["staccato", *sys.argv[1:]])
    detail = err.message or err.status.name
    if rpc_timed_out(err):
        what = f"did not answer in time ({detail})"
    elif err.status == codes.UNAVAILABLE:
        what = f"is unavailable ({detail})"
    else:
        what = f"refused the call ({err.status.name}: {detail})"
    return (
        f"Temporal at {address} {what} while running `{asked}`; check that it is up and "
        f"not overloaded (`staccato up --detach`, or TEMPORAL_ADDRESS), {then}"
    )


def setup_logging(verbose: bool) -> None:
    """Log to stderr at INFO (DEBUG with ``verbose``); libraries' chatter at WARNING."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("botocore").setLevel(logging.WARNING)
    logging.getLogger("paramiko").setLevel(logging.WARNING)


def say_ignored(kind: str, run_id: str, ignored: Sequence[str]) -> None:
    """Warn on stderr that the command attached to the running ``kind`` ``run_id``
    (a transfer, fan-out group or dataset: the same request but for the options that
    say how to run) whose options differ from the ones given: ``ignored`` names each,
    requested vs running; they do not apply to it. The one wording for every kind."""
    typer.echo(
        f"staccato: warning: attached to running {kind} {run_id}: it copies the same "
        "source to the same destination with the same copy options, but its run "
        f"settings differ from yours and yours do not apply to it: {'; '.join(ignored)}. "
        "To run with yours, wait for it "
        f"to end (`staccato watch {run_id}`) or cancel it (`staccato cancel {run_id}`), "
        "then submit again",
        err=True,
    )


def interrupted(kind: str, run_id: str, *, started: bool, quiet: bool = False) -> NoReturn:
    """Say that Ctrl-C or SIGTERM stopped the command, not the ``kind`` ``run_id``
    (a transfer, group or dataset), and how to follow or cancel it; exit 130
    (:data:`EXIT_INTERRUPTED`; SIGTERM: 143, :data:`EXIT_TERMINATED`). ``started``:
    the start was confirmed (it goes on), else it was being started or attached to
    (it may be running, started now or earlier). The one wording of every command that
    starts or follows a run.

    ``quiet``: ``watch -q`` of a run the user named (tester75): no note at all, only
    the exit code (a note is not an error or a warning, and the user holds the id);
    ``cp -q`` still prints it, as the id it names is printed nowhere else."""
    terminated = _terminated.is_set()
    if quiet and started:
        raise typer.Exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED)
    why = " (SIGTERM)" if terminated else ""
    if started:
        head = f"stopped following{why}; {kind} {run_id} goes on without you."
    else:
        head = (
            f"stopped{why} while starting {kind} {run_id}; it may be running (started "
            "now or earlier) and then goes on without you."
        )
    see = "" if started else f"  see it:           staccato status {run_id}\n"
    typer.echo(
        f"\nstaccato: {head}\n{see}"
        f"  follow it again:  staccato watch {run_id}\n"
        f"  cancel it:        staccato cancel {run_id}",
        err=True,
    )
    raise typer.Exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED)


async def follow_or_hint(
    kind: str, run_id: str, following: Awaitable[T], *, quiet: bool = False
) -> T:
    """Await ``following`` (a client following a transfer, group or dataset); on
    Ctrl-C or SIGTERM (the follow is cancelled, the run is not) say that the ``kind``
    ``run_id`` goes on and how to watch or cancel it (:func:`interrupted`); when
    Temporal stops answering (``staccato down``, a crash) say so in one line naming
    its address, that the run goes on once Temporal is up again, and how to follow
    it then; exit 1 (:data:`EXIT_FAILED`, a service error). ``quiet``: ``watch -q``
    (the Ctrl-C note left out: :func:`interrupted`)."""
    try:
        return await following
    except (asyncio.CancelledError, KeyboardInterrupt):
        interrupted(kind, run_id, started=True, quiet=quiet)
    except Exception as err:
        message = temporal_rpc_message(
            err,
            then=f"then follow {kind} {run_id} again with `staccato watch {run_id}`: it "
            "goes on from its last checkpoint whenever Temporal and a worker run (after "
            "`staccato down`: once `staccato up` starts them again)",
        )
        if message is None:
            raise
        fail(message)


async def start_or_hint(kind: str, run_id: str, starting: Awaitable[T]) -> T:
    """Await ``starting`` (the start of, or attach to, the ``kind`` ``run_id``); on
    Ctrl-C or SIGTERM meanwhile say it may be running and how to see, follow or
    cancel it (:func:`interrupted`)."""
    try:
        return await starting
    except (asyncio.CancelledError, KeyboardInterrupt):
        interrupted(kind, run_id, started=False)


def check_file_source(source: str, remedy: str = "add -r to copy every file under it") -> None:
    """Refuse (exit 2, before anything starts) a local SOURCE of one transfer (no -r)
    that is a directory (GNU cp: "-r not specified; omitting directory"; before, a
    transfer started and failed, exit 1), or that is typed with a trailing ``/`` and is
    not a directory: ``/data/x.bin/`` names a directory (POSIX pathname resolution; GNU
    cp says "Not a directory"), and copying the file instead would copy something the
    user did not name. ``remedy`` is what a directory source should do instead (``cp``:
    add -r; ``schedule create``, whose runs copy one file: name a file)."""
    from staccato.urls import file_source_problem

    problem = file_source_problem(source, remedy)
    if problem is not None:
        fail(problem, EXIT_USAGE)


def warn_unknown_settings() -> None:
    """Say (a warning on stderr) which ``STACCATO_*`` variables no setting reads: a typo
    (``STACCATO_TUNNING=0``) leaves the setting meant at its default, silently. A hint
    only: never fails the command (an invalid value of a known setting does, elsewhere)."""
    from staccato import settings

    unknown = settings.unknown_variables()
    if unknown:
        typer.echo(
            f"staccato: warning: unknown settings (typos?), ignored: {', '.join(unknown)}",
            err=True,
        )


def warn_malformed_seal_key(argv: Sequence[str] | None = None) -> bool:
    """Say (a warning on stderr, once; commands that start transfers ask) that the
    source-sealing key setting
    (``STACCATO_SECRET_KEY``, ``STACCATO_SECRET_KEY_FILE`` or ``$STACCATO_HOME/secret.key``)
    is malformed or unreadable, when the command's arguments ``argv`` (default
    ``sys.argv[1:]``) carry no ``?``: such a command seals no URL token, so it goes on
    without the key. One whose arguments carry a query needs the key, and is refused
    where it seals (:func:`staccato.secrets.seal_source`, exit 2 naming the variable),
    so it is not warned twice. True when it warned. A hint only: never fails the
    command."""
    args = sys.argv[1:] if argv is None else argv
    if any("?" in arg for arg in args):
        return False
    try:
        from staccato.secrets import seal_keys

        seal_keys()
    except KeySettingError as err:
        typer.echo(
            f"staccato: warning: {err}; this command seals no URL token and goes on, but "
            "one whose source URL has a query (a token) is refused until it is fixed",
            err=True,
        )
        return True
    except StaccatoError:  # another setting's error: the command reports it itself
        return False
    return False


#: the command gave :func:`killed_up_warning` already (said once per command)
_killed_up_said = False


def killed_up_warning() -> bool:
    """Say (a warning on stderr) that the Temporal in use is the dev server of a
    killed ``staccato up`` of this STACCATO_HOME, whose worker died with it; True when
    it did, now or earlier in this command (said once). A hint only: never fails the
    command."""
    global _killed_up_said
    if _killed_up_said:
        return True
    try:
        from staccato import settings
        from staccato.workers.devserver import killed_up_note, orphaned_server

        home = settings.home()
        if orphaned_server(home) is None:  # the usual case: no Temporal config is read
            return False
        note = killed_up_note(home, str(settings.temporal_connect_config()["target_host"]))
    except Exception:  # a hint only
        return False
    if note is None:
        return False
    typer.echo(f"staccato: warning: {note}", err=True)
    _killed_up_said = True
    return True


class KilledUpHint:
    """The :func:`killed_up_warning` of a command that follows a run: said once, the
    first time the run's worker stops answering while the command follows (a tester's
    ``cp -r`` followed a dataset when ``up`` was SIGKILLed and only ever printed "no
    worker answers"; a command started after the kill was told at its start).

    ``said``: the warning was given already (at the command's start). The check reads
    a pid record and ``/proc`` (:func:`staccato.workers.devserver.orphaned_server`);
    it runs at most every :attr:`EVERY_S` seconds while no worker answers."""

    EVERY_S = 10.0

    def __init__(self, *, said: bool = False) -> None:
        self.said = said
        self._checked_at: float | None = None

    def check(self, no_worker: bool) -> None:
        """Give the warning if ``no_worker`` (the followed run's worker does not answer
        now) and a killed ``up`` explains it, once."""
        if self.said or not no_worker:
            return
        now = time.monotonic()
        if self._checked_at is not None and now - self._checked_at < self.EVERY_S:
            return
        self._checked_at = now
        self.said = killed_up_warning()
