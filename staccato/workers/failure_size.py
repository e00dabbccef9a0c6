"""Activity failures small enough that Temporal keeps them whole.

Temporal keeps a retried activity's last failure (what ``status`` shows as why a
transfer is retrying) in the workflow's mutable state only up to
``limit.mutableStateActivityFailureSize.error`` (a few KiB; it warns from 2 KiB); a
larger one is replaced by "Failure exceeds size limit." (measured here: a stream's
failure of 4,114 bytes was replaced, ``tests/test_failure_size.py``) An activity run in a worker process comes
back with the process's whole traceback text as its ``__cause__``
(:data:`staccato.errors.REMOTE_TRACEBACK_TYPE`) and with the main process's stack,
which with a long message (a long URL) went over.

:class:`BoundedFailures` (a worker interceptor, in the worker's main process) re-raises
each activity's failure as an ``ApplicationError`` of the same type, retry behaviour,
details and retry delay, with its message cut to :data:`MESSAGE_CHARS` characters (its
start and end), the traceback text cut to its last :data:`TRACEBACK_CHARS` characters
(the innermost frames and the error line) and no main-process stack. Cancellation and
Temporal's own control exceptions pass unchanged. The worker's log keeps the whole
failure of a bug (:func:`staccato.activities.errors.mapped_errors`).
"""

from __future__ import annotations

from typing import Any

from temporalio.exceptions import ApplicationError, FailureError
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from staccato.errors import REMOTE_TRACEBACK_TYPE

#: characters of a failure message kept (UTF-8: up to 4 bytes each, mostly 1)
MESSAGE_CHARS = 800
#: characters of a worker process's traceback text kept (its end)
TRACEBACK_CHARS = 400


class _RemoteTraceback(Exception):
    """A worker process's traceback text, cut (named as ``concurrent.futures`` names
    it, so :func:`staccato.errors.innermost_message` still skips it)."""


_RemoteTraceback.__name__ = REMOTE_TRACEBACK_TYPE


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return text[:half] + " … " + text[-half:]


def bounded(err: Exception) -> ApplicationError:
    """``err`` as an ``ApplicationError`` that Temporal stores whole (see the module)."""
    if isinstance(err, ApplicationError):
        new = ApplicationError(
            _cut(err.message, MESSAGE_CHARS),
            *err.details,
            type=err.type,
            non_retryable=err.non_retryable,
            next_retry_delay=err.next_retry_delay,
            category=err.category,
        )
    else:  # not mapped (a bug, the pool's BrokenProcessPool): retried as the SDK would
        new = ApplicationError(_cut(str(err), MESSAGE_CHARS), type=type(err).__name__)
    cause = err.__cause__
    if cause is not None and type(cause).__name__ == REMOTE_TRACEBACK_TYPE:
        text = str(cause)
        new.__cause__ = _RemoteTraceback(
            text if len(text) <= TRACEBACK_CHARS else "…" + text[-TRACEBACK_CHARS:]
        )
    return new


class BoundedFailures(Interceptor):
    """The worker interceptor (see the module)."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Inbound(next)


class _Inbound(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        try:
            return await super().execute_activity(input)
        except Exception as err:
            if not isinstance(err, ApplicationError) and (
                isinstance(err, FailureError) or type(err).__module__.startswith("temporalio")
            ):
                raise  # Temporal's own: a cancel, a timeout, complete-async
            new = bounded(err)
            raise new from new.__cause__
