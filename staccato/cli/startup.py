"""Ctrl-C while the ``staccato`` command loads (its imports, a few hundred ms before it
does anything): one line, ``staccato: interrupted; nothing was started``, and exit 130,
not a ``KeyboardInterrupt`` traceback from whatever import it stopped; SIGTERM then:
``staccato: terminated (SIGTERM); nothing was started`` and exit 143 (it died
silently, killed by the signal).

Imported first by :mod:`staccato.cli`; the handler is installed only when this is the
command (``staccato``, or ``python -m staccato.cli``, whose ``sys.argv[0]`` is ``-m``
while the package is imported), not a program importing the package, and only over
Python's default handler (a SIGINT ignored stays ignored). :func:`staccato.cli.main`
puts the default SIGINT handler back before the command runs, and the default
SIGTERM action for a command other than a transfer command (a transfer command starts
nothing before :func:`staccato.cli.common.run` installs its own SIGTERM handler).
"""

from __future__ import annotations

import os
import signal
import sys

from staccato.loading import pause_for_start

#: the commands that start runs: only they say "nothing was started" (a `watch` or
#: `status` stopped while loading starts nothing, and its transfer goes on)
STARTING_COMMANDS = frozenset({"cp", "submit"})


def _nothing_started() -> bytes:
    """ "; nothing was started" for a command that starts runs, else nothing."""
    command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), "")
    return b"; nothing was started" if command in STARTING_COMMANDS else b""


def interrupted_at_start(signum: int, frame: object) -> None:
    """The SIGINT handler while the command loads: say so and exit 130 at once
    (nothing was started: the command has not run)."""
    os.write(2, b"staccato: interrupted" + _nothing_started() + b"\n")
    os._exit(130)


def terminated_at_start(signum: int, frame: object) -> None:
    """The SIGTERM handler while the command loads (and, for a transfer command, until
    its coroutine runs): say so and exit 143 at once."""
    os.write(2, b"staccato: terminated (SIGTERM)" + _nothing_started() + b"\n")
    os._exit(143)


#: the commands whose work runs in :func:`staccato.cli.common.run`, which ends the
#: garbage collector's pause of their imports (:mod:`staccato.loading`) once their
#: coroutine first waits (``worker`` and ``up``: connected to Temporal, the worker's
#: modules imported); not ``codec-server`` (it serves without ``run``) nor ``down``
COLLECTOR_PAUSED_COMMANDS = frozenset(
    {
        *("submit", "cp", "watch", "status", "list", "cancel", "pause", "resume"),
        *("schedule", "limit", "worker", "up"),
    }
)

#: the command, not a program importing the package
AS_COMMAND = os.path.basename(sys.argv[0] if sys.argv else "") in ("staccato", "-m")
if AS_COMMAND and sys.argv[1:2] and sys.argv[1] in COLLECTOR_PAUSED_COMMANDS:
    pause_for_start()
if AS_COMMAND and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, interrupted_at_start)
if AS_COMMAND and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
    signal.signal(signal.SIGTERM, terminated_at_start)
