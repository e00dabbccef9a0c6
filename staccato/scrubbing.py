"""Log lines and failure messages without a URL's secrets: :func:`scrub` redacts every
URL in a text and every secret value recently unsealed in this process
(:func:`remember`, called by :func:`staccato.secrets.unseal_source`);
:func:`install_log_scrubber` puts it on every log handler.

Apart from :mod:`staccato.secrets` (which re-exports it) because it needs neither the
settings nor pydantic: the worker's multiprocessing manager installs the scrubber and
imports nothing else of Staccato's (~145 ms CPU less of every worker start).
"""

from __future__ import annotations

import collections
import logging
import threading

from staccato.urls import REDACTED

# Secret values recently unsealed in this process: failure messages are scrubbed of
# them even where a library quotes a value without its URL.
_recent: collections.deque[str] = collections.deque(maxlen=64)
_recent_lock = threading.Lock()
_MIN_SCRUBBED_CHARS = 6  # shorter values (``1``, ``true``) would garble messages


def remember(query: str) -> None:
    """Scrub the values of ``query`` (an unsealed URL query) from what :func:`scrub`
    sees in this process from now on."""
    from urllib.parse import unquote

    values = {part.partition("=")[2] or part for part in query.split("&") if part}
    values |= {unquote(v) for v in values}
    with _recent_lock:
        for value in values:
            if len(value) >= _MIN_SCRUBBED_CHARS and value not in _recent:
                _recent.append(value)


def scrub(text: str) -> str:
    """``text`` with every URL redacted and every recently unsealed secret value
    replaced by ``REDACTED`` (for failure messages and log lines)."""
    from staccato.urls import redact_text

    text = redact_text(text)
    with _recent_lock:
        values = sorted(_recent, key=len, reverse=True)
    for value in values:
        if value in text:
            text = text.replace(value, REDACTED)
    return text


class ScrubFilter(logging.Filter):
    """A logging filter that passes every record through :func:`scrub` (message,
    arguments and traceback text), so no log line carries a URL's secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler to report
            return True
        record.msg, record.args = scrub(message), None
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True


def install_log_scrubber() -> None:
    """Put a :class:`ScrubFilter` on every handler of the root logger (adding a
    stderr handler first if there is none, as in a worker's activity processes), so
    a log line from any library (httpx, botocore, paramiko, Temporal's own activity
    failure lines) is scrubbed before it is written. Idempotent."""
    root = logging.getLogger()
    if not root.handlers:
        stream = logging.StreamHandler()
        stream.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(stream)
    for handler in root.handlers:
        if not any(isinstance(f, ScrubFilter) for f in handler.filters):
            handler.addFilter(ScrubFilter())
