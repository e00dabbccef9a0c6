"""Turning :mod:`staccato.errors` into Temporal failures with the right retry behaviour.

Failure messages are stored in Temporal (history, pending activities) and shown by
``status``: every message is scrubbed of secrets first (URL query values, user info,
recently unsealed tokens: :func:`staccato.secrets.scrub`), because drivers and HTTP
libraries quote the real URL they were given.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import ParamSpec, TypeVar

from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from staccato.errors import (
    INTERNAL_ERROR_TYPE,
    RetryableError,
    StaccatoError,
    application_type,
    from_os_error,
)
from staccato.secrets import scrub

log = logging.getLogger("staccato.activities")

MAX_MESSAGE_CHARS = 2000  # failure messages travel in Temporal payloads (2 MiB hard limit)
#: an endpoint's Retry-After is honoured up to this many seconds (a longer one is
#: capped, so a confused server cannot park a transfer for hours per attempt)
MAX_RETRY_AFTER_S = 300.0


def _short(message: str) -> str:
    message = scrub(message)
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    half = MAX_MESSAGE_CHARS // 2
    return message[:half] + " … " + message[-half:]


P = ParamSpec("P")
R = TypeVar("R")


def mapped_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Wrap an activity so a :class:`StaccatoError` becomes an ``ApplicationError``
    whose ``type`` is the error's ``TYPE`` (:func:`staccato.errors.application_type`) and whose ``non_retryable`` flag is the
    opposite of the error's ``retryable`` (Temporal then retries only what may heal).
    Other ``OSError``s stay retryable; any other exception is a bug and fails at once.
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except StaccatoError as err:
            delay = err.retry_after_s if isinstance(err, RetryableError) else None
            raise ApplicationError(
                _short(str(err)),
                *err.details,
                type=application_type(err),
                non_retryable=not err.retryable,
                category=(
                    ApplicationErrorCategory.BENIGN
                    if err.benign
                    else ApplicationErrorCategory.UNSPECIFIED
                ),
                next_retry_delay=(
                    timedelta(seconds=min(max(delay, 0.0), MAX_RETRY_AFTER_S))
                    if delay is not None
                    else None
                ),
            ) from None
        except OSError as err:  # an I/O error a driver did not classify
            mapped = from_os_error(err, f"{type(err).__name__} ({err.filename or 'no file name'})")
            raise ApplicationError(
                _short(str(mapped)), type=mapped.TYPE, non_retryable=not mapped.retryable
            ) from None
        except Exception as err:
            # A bug, not a condition of an endpoint: retrying 30 times would only hide it.
            # The traceback goes to the worker's log (scrubbed there); the failure stored
            # in Temporal carries only the scrubbed message, not the exception chain.
            log.error("internal error in an activity", exc_info=True)
            raise ApplicationError(
                _short(f"internal error: {type(err).__name__}: {err}"),
                type=INTERNAL_ERROR_TYPE,
                non_retryable=True,
            ) from None

    return wrapper
