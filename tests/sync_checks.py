"""Shared steps of the sync-level tests: run a transfer to its result, and count what
nginx served once its access log has settled."""

from __future__ import annotations

import time
from typing import Any

from staccato.client import StaccatoClient
from staccato.models import TransferOptions, TransferResult
from tests.servers.nginx import NginxServer

#: the Range of the HTTP driver's stat probe: one byte, on every run, sync level or not
STAT_PROBE_RANGE = "bytes=0-0"


async def run(
    client: StaccatoClient, source: str, destination: str, options: TransferOptions
) -> TransferResult:
    """Submit and wait for the result (raises if the transfer fails)."""
    transfer = await client.submit(source, destination, options)
    return await client.wait(transfer)


#: seconds nginx's log must stay unchanged to count as complete: it logs a request once
#: it has finished it, which at load 15 can come a second after the client had the
#: answer (0.3 s of quiet could let an earlier request's entry count as a later one's)
LOG_QUIET_S = 1.0


def settled_requests(nginx: NginxServer, uri: str, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """nginx's log entries for ``uri`` once the log stopped growing for
    :data:`LOG_QUIET_S` (nginx writes an entry when it has finished the request), or
    after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    seen = [e for e in nginx.requests() if e["uri"] == uri]
    while time.monotonic() < deadline:
        time.sleep(LOG_QUIET_S)
        again = [e for e in nginx.requests() if e["uri"] == uri]
        if len(again) == len(seen):
            return again
        seen = again
    return seen


def data_bytes_served(entries: list[dict[str, Any]]) -> int:
    """Body bytes served, leaving out the stat's one-byte range probe (``bytes=0-0``)
    and HEADs: the object's data read for a copy or a checksum."""
    return sum(
        int(e["body_bytes_sent"])
        for e in entries
        if e["method"] == "GET" and e["range"] != STAT_PROBE_RANGE
    )


def only_stat_requests(entries: list[dict[str, Any]]) -> bool:
    """Every request is the stat's: a HEAD or the one-byte range probe."""
    return all(e["method"] == "HEAD" or e["range"] == STAT_PROBE_RANGE for e in entries)
