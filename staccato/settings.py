"""Process-level settings from the environment (DESIGN.md, Contracts).

* ``STACCATO_TASK_QUEUE``: task queue of workflows and activities (default ``staccato``).
* ``STACCATO_HOME``: where the embedded default keeps its SQLite file, logs and pid
  file (default: the user's data directory, e.g. ``~/.local/share/staccato``).
* ``STACCATO_WORKER_PROCESSES``: activity processes per worker (default: max(4, CPUs)).
* ``STACCATO_WORKER_SHUTDOWN_TIMEOUT_S``: seconds a stopping worker lets running
  activities finish before cancelling them (default 5).
* ``STACCATO_MIN_RATE_BYTES_PER_S`` / ``STACCATO_MIN_RATE_WINDOW_S``: a stream whose
  source delivers fewer bytes per second than this, averaged over the window, fails its
  attempt with a retryable error (default 1024 bytes/s over 60 s; 0 turns it off).
* Temporal connection: Temporal's own environment configuration (``TEMPORAL_ADDRESS``,
  ``TEMPORAL_NAMESPACE``, ``TEMPORAL_PROFILE``, TLS, API key; ``temporalio.envconfig``),
  default ``127.0.0.1:7233`` / ``default``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import platformdirs

DEFAULT_ADDRESS = "127.0.0.1:7233"
DEFAULT_NAMESPACE = "default"
DEFAULT_UI_PORT = 8233


def task_queue() -> str:
    """The task queue (``STACCATO_TASK_QUEUE``, default ``staccato``)."""
    return os.environ.get("STACCATO_TASK_QUEUE") or "staccato"


def home() -> Path:
    """Directory of the embedded default's state (``STACCATO_HOME``)."""
    path = Path(os.environ.get("STACCATO_HOME") or platformdirs.user_data_dir("staccato"))
    return path


def worker_processes() -> int:
    """Activity processes per worker (``STACCATO_WORKER_PROCESSES``).

    Raises:
        ValueError: the variable is not a positive integer.
    """
    text = os.environ.get("STACCATO_WORKER_PROCESSES")
    if not text:
        return max(4, os.cpu_count() or 1)
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"STACCATO_WORKER_PROCESSES must be a positive integer, got {text!r}")
    return int(text)


def worker_shutdown_timeout_s() -> float:
    """Seconds a stopping worker (SIGTERM, SIGINT) gives running activities to finish
    before cancelling them (``STACCATO_WORKER_SHUTDOWN_TIMEOUT_S``, default 5: well
    inside ``docker stop``'s 10 s before SIGKILL; cancelled streams keep their progress).

    Raises:
        ValueError: the variable is not a number of seconds from 0 to 3600.
    """
    text = os.environ.get("STACCATO_WORKER_SHUTDOWN_TIMEOUT_S")
    if not text:
        return 5.0
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:
        raise ValueError(
            f"STACCATO_WORKER_SHUTDOWN_TIMEOUT_S must be a number of seconds from 0 to 3600, "
            f"got {text!r}"
        )
    return value


DEFAULT_MIN_RATE_BYTES_PER_S = 1024.0
DEFAULT_MIN_RATE_WINDOW_S = 60.0


def _number(name: str, default: float, *, positive: bool) -> float:
    """The number in environment variable ``name`` (``default`` when unset or empty).

    Raises:
        ValueError: not a finite number, or negative (zero too when ``positive``); the
            message names the variable and what was expected.
    """
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    expected = "a positive number" if positive else "a number >= 0"
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} must be {expected}, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")) or value < 0:
        raise ValueError(f"{name} must be {expected}, got {text!r}")
    if positive and value == 0:
        raise ValueError(f"{name} must be {expected}, got {text!r}")
    return value


def min_rate_bytes_per_s() -> float:
    """Minimum source throughput of a stream, in bytes per second
    (``STACCATO_MIN_RATE_BYTES_PER_S``, default 1024; 0 turns the watchdog off).

    Raises:
        ValueError: not a number >= 0.
    """
    return _number("STACCATO_MIN_RATE_BYTES_PER_S", DEFAULT_MIN_RATE_BYTES_PER_S, positive=False)


def min_rate_window_s() -> float:
    """Seconds over which a stream's source throughput is averaged before the minimum
    rate applies (``STACCATO_MIN_RATE_WINDOW_S``, default 60).

    Raises:
        ValueError: not a positive number.
    """
    return _number("STACCATO_MIN_RATE_WINDOW_S", DEFAULT_MIN_RATE_WINDOW_S, positive=True)


def temporal_connect_config() -> dict[str, Any]:
    """Keyword arguments for ``temporalio.client.Client.connect`` from Temporal's
    standard environment configuration, with Staccato's defaults filled in."""
    from temporalio.envconfig import ClientConfig

    config: dict[str, Any] = dict(ClientConfig.load_client_connect_config())
    config.setdefault("target_host", DEFAULT_ADDRESS)
    if not config.get("target_host"):
        config["target_host"] = DEFAULT_ADDRESS
    config.setdefault("namespace", DEFAULT_NAMESPACE)
    return config


DEFAULT_SFTP_STALL_S = 10.0


def sftp_stall_s() -> float:
    """Seconds without any answer from an SFTP server while several requests are in
    flight after which the server is taken to ignore requests beyond a cap of its own
    (``STACCATO_SFTP_STALL_S``, default 10): the driver lowers its requests in flight
    and sends the unanswered ones again. Capped by ``STACCATO_SFTP_IO_TIMEOUT_S``.

    Raises:
        ValueError: the variable is not a positive number.
    """
    text = os.environ.get("STACCATO_SFTP_STALL_S", "").strip()
    if not text:
        return DEFAULT_SFTP_STALL_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(
            f"STACCATO_SFTP_STALL_S must be a positive number of seconds, got {text!r}"
        )
    return value
