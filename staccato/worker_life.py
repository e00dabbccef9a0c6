"""A worker's life: a token (16 hex) a worker's main process draws when it starts and
its activity processes inherit (through :data:`LIFE_ENV`).

A local file destination journals, with each chunk, the life that wrote it
(:mod:`staccato.endpoints.file.session`): a chunk of this life was checked when it was
written (verify-on-write) by processes the worker kept alive throughout; a chunk of
an earlier life (a worker killed or stopped, a service that was down, another
worker) is vouched for by no one's memory and is read back before publish.
Standard library only (the worker's main process imports it).
"""

from __future__ import annotations

import os
import re
import secrets

#: environment variable holding the worker life; set by the worker's main process
#: before it spawns its activity processes (:func:`start_worker_life`)
LIFE_ENV = "STACCATO_WORKER_LIFE"
_own_life = secrets.token_hex(8)


def start_worker_life() -> str:
    """Start a new worker life (16 hex) in this process and the processes it spawns
    from now on: a worker's main process calls it once, before its activity pool.

    A chunk journaled in this life was checked when it was written (verify-on-write)
    by a process the worker kept alive throughout; a chunk of an earlier life (a
    worker killed or stopped, a service that was down) is vouched for by nobody's
    memory and is read back before publish (:func:`staccato.endpoints.file.session.recheck_earlier_chunks`)."""
    life = secrets.token_hex(8)
    os.environ[LIFE_ENV] = life
    return life


def worker_life() -> str:
    """The worker life of this process: its worker's (inherited through
    :data:`LIFE_ENV`), else one of its own (a process that is no worker's)."""
    life = os.environ.get(LIFE_ENV, "")
    return life if re.fullmatch(r"[0-9a-f]{16}", life) else _own_life
