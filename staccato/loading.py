"""A process's imports with the cyclic garbage collector paused, and what they made
frozen afterwards (``gc.freeze``).

A worker process, or a command, spends most of its start importing (temporalio,
pydantic, the drivers: 70,000-160,000 objects that live as long as the process). With
the collector on, those objects are walked again by every collection of the
generations they age through while the imports run (an activity process: 2 full
collections and ~280 smaller ones, ~140 ms CPU of its ~0.7 s start), and once more by
the collections of the interpreter's exit (~100 ms more). Imports leave almost no
cyclic garbage (~900 objects for every module of a worker), so the collector is paused
while they run, then everything they made is frozen: moved out of the collector's
sight for good (not walked again, not at exit), and the collector runs again for what
the process does next. Code that makes much garbage (a throwaway client) runs after,
with the collector on.

The ``staccato`` command pauses the collector from its first import
(:func:`pause_for_start`, in :mod:`staccato.cli.startup`) until its coroutine first
waits (:func:`resume_after_start`, in :func:`staccato.cli.common.run`): a ``staccato
status`` spent ~47 ms of its ~0.4 CPU-s in collections while it imported the command,
Temporal's client and the models.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def imports_frozen() -> Iterator[None]:
    """Run the block (a process's imports) with the cyclic garbage collector paused,
    then freeze every object the process then holds (``gc.freeze``: the collector
    never walks them again) and turn the collector back on if it was on. The objects
    frozen are never freed as garbage: only around imports, not around work."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


_paused_for_start = False


def pause_for_start() -> None:
    """Pause the collector until :func:`resume_after_start` (the command's imports:
    see the module). A no-op if the collector is off already."""
    global _paused_for_start
    if gc.isenabled():
        gc.disable()
        _paused_for_start = True


def resume_after_start() -> None:
    """End :func:`pause_for_start`'s pause: freeze what the process holds and turn the
    collector back on. A no-op without that pause (a program using the package, or a
    second call)."""
    global _paused_for_start
    if _paused_for_start:
        _paused_for_start = False
        gc.freeze()
        gc.enable()


def import_without(module: str, skipped: str) -> None:
    """Import ``module`` with its submodule ``skipped`` unimportable while it imports,
    for a library whose package imports an optional part of itself that Staccato never
    uses when that part's dependencies happen to be installed.

    The one use: httpx imports its command-line client (``httpx._main``: click, rich,
    pygments) when they are installed, and they are (typer brings them); that cost
    ~70 ms CPU in every process that imports the HTTP driver (each activity process of a
    worker; medians of interleaved runs, 2026-12-06). httpx then binds its fallback
    ``httpx.main``, which only prints that the client's dependencies are missing.

    Made unimportable by a ``None`` in ``sys.modules`` (the import system then raises
    ImportError: Python's reference, "The module cache"), removed again once ``module``
    is imported, so a later explicit import of ``skipped`` works. A no-op when
    ``module`` is imported already.

    Raises:
        ImportError: ``module`` is not installed.
    """
    if module in sys.modules:
        return
    sys.modules.setdefault(skipped, None)  # type: ignore[arg-type]
    try:
        importlib.import_module(module)
    finally:
        if skipped in sys.modules and sys.modules[skipped] is None:
            del sys.modules[skipped]
