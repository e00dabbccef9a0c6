"""Giving up within ``--retry-for`` in the activities whose schedule-to-close deadline
also allows the time one attempt may take (``copy_stream``, ``confirm_source``,
``stage_source``; :data:`staccato.workflows.failures.ALLOWANCE_STEPS`).

The workflow schedules them with ``schedule_to_close = budget + start_to_close``:
``budget`` is what is left of ``--retry-for`` since the transfer last made progress,
``start_to_close`` the generous time one attempt may take
(:func:`staccato.workflows.calls.copy_timeout`, 600 s and more), so that a long healthy
attempt is never cut off. Left to Temporal, attempts that all fail at once were
retried for that whole allowance past ``--retry-for`` (a full disk, a stopped sshd:
about 10 minutes more, ``status`` showing the transfer running). So the activity
itself turns a retryable failure into a non-retryable one, worded as the workflow's
own give-up (:func:`staccato.workflows.failures.gave_up_message`), once the deadline
passed without progress:

* the deadline is the activity's first scheduled time plus the retry budget it was
  scheduled with (read back as ``schedule_to_close - start_to_close``), or
  ``--retry-for`` after the last progress of any of its attempts, whichever is later;
* progress: a stream's durable bytes grew (``Checkpoint.progress_at``, carried from
  attempt to attempt in the heartbeat details), a staging read source bytes
  (``StagingProgress.progress_at``); ``confirm_source`` measures none;
* a failing attempt gives up when it *started* at or after the deadline: attempts
  that fail at once start every 10 s at most (``calls.RETRY``), so the transfer fails
  about one backoff after the deadline, while an attempt that started before it (one
  that waited long for a connection slot, or copied for an hour) is retried once
  more, and one that made progress is never given up on.

Only attempts scheduled with ``retry_for_s`` in their input do this (an input from a
worker before the field keeps Temporal's deadline alone). Times are wall-clock Unix
seconds: the worker's clock is compared with the server's scheduled time, so a skew
between them moves the give-up by as much.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from contextvars import ContextVar
from datetime import timedelta
from typing import Any, Protocol, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from staccato.errors import WorkerStoppingError
from staccato.workflows.failures import gave_up_message

#: this attempt's last progress (Unix seconds), recorded by :func:`progressed`
_progress_at: ContextVar[float | None] = ContextVar("retry_deadline_progress_at", default=None)


class _WithRetryFor(Protocol):
    retry_for_s: float | None


In = TypeVar("In", bound=_WithRetryFor)
Out = TypeVar("Out")


def progressed(at: float | None = None) -> float:
    """Record that this attempt made progress at ``at`` (Unix seconds; None: now).

    Returns:
        The time recorded.
    """
    moment = time.time() if at is None else at
    _progress_at.set(moment)
    return moment


def latest(*times: float | None) -> float | None:
    """The latest of ``times`` that are set, else None."""
    known = [t for t in times if t is not None]
    return max(known) if known else None


def deadline(retry_for_s: float, progress_at: float | None) -> float:
    """When the running activity gives up (Unix seconds): its first scheduled time
    plus the retry budget it was scheduled with, or ``retry_for_s`` after
    ``progress_at``, whichever is later."""
    info = activity.info()
    whole, attempt = info.schedule_to_close_timeout, info.start_to_close_timeout
    budget = (
        max(whole - attempt, timedelta(0)).total_seconds()
        if whole is not None and attempt is not None
        else retry_for_s
    )
    at = info.scheduled_time.timestamp() + budget
    return at if progress_at is None else max(at, progress_at + retry_for_s)


def within_retry_for(
    previous: Callable[[], float | None],
) -> Callable[[Callable[[In], Out]], Callable[[In], Out]]:
    """Wrap an activity (outside :func:`~staccato.activities.errors.mapped_errors`) so
    a retryable ``ApplicationError`` of an attempt that started at or after its
    deadline (:func:`deadline`) becomes a non-retryable one with the give-up wording,
    the same ``type`` and details.

    Args:
        previous: the last progress of earlier attempts (Unix seconds, from the
            heartbeat details), or None; this attempt's is what it recorded with
            :func:`progressed`.
    """

    def decorate(fn: Callable[[In], Out]) -> Callable[[In], Out]:
        @functools.wraps(fn)
        def wrapper(request: In) -> Out:
            token = _progress_at.set(None)
            try:
                return fn(request)
            except ApplicationError as err:
                if (
                    err.non_retryable
                    or request.retry_for_s is None
                    or err.type == WorkerStoppingError.TYPE  # no fault: never a give-up
                ):
                    raise
                info = activity.info()
                progress_at = latest(previous(), _progress_at.get())
                if info.started_time.timestamp() < deadline(request.retry_for_s, progress_at):
                    raise
                raise gave_up(err, info.activity_type, request.retry_for_s) from None
            finally:
                _progress_at.reset(token)

        return wrapper

    return decorate


def gave_up(err: ApplicationError, step: str, retry_for_s: float) -> ApplicationError:
    """``err`` as a non-retryable error worded as the workflow's give-up of ``step``
    (an activity type) after ``retry_for_s`` seconds without progress, with the same
    ``type`` and details."""
    details: tuple[Any, ...] = tuple(err.details)
    return ApplicationError(
        gave_up_message(step, timedelta(seconds=retry_for_s), err.message, allowance=False),
        *details,
        type=err.type,
        non_retryable=True,
    )
