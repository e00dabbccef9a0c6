"""The ``look_up_start`` activity: every control lookup a transfer makes before its
first stream, at once, in one activity (one activity and one workflow task instead of
one each): the link's tuning memory (``recall_link_tuning``), a known copy to read
(``find_known_copy``) and which governors run (``find_governors``).

Its first attempt is a local activity, in the workflow thread of the worker that runs
the transfer (:mod:`staccato.workers.workflow_thread`), with that thread's Temporal
client. If that fails it runs on the control queue (``<task queue>-control``) in the
worker's main process, with the worker's client, and heartbeats every second while the
parts run concurrently (a local activity does not heartbeat: the SDK extends its
workflow task instead). A part that fails fails the attempt (retried by the workflow's
policy); once the attempts are spent the workflow runs the parts as their own
activities, as before.
"""

from __future__ import annotations

import asyncio
import contextlib

from temporalio import activity
from temporalio.client import Client

from staccato import settings
from staccato.activities.known_copies import KnownCopyActivities
from staccato.activities.limits import LimitActivities
from staccato.activities.link_tuning import LinkTuningActivities
from staccato.models import KnownCopy, StartLookup, StartLookupInput, TuningRecall
from staccato.urls import parse_url

#: seconds between the activity's heartbeats
_HEARTBEAT_EVERY_S = 1.0


class StartLookupActivities:
    """The control worker's ``look_up_start``; it shares the worker's client.

    Args:
        client: the worker's client.
    """

    def __init__(self, client: Client):
        self._tuning = LinkTuningActivities(client)
        self._copies = KnownCopyActivities(client)
        self._limits = LimitActivities(client)

    @activity.defn(name="look_up_start")
    async def look_up_start(self, request: StartLookupInput) -> StartLookup:
        """The parts of ``request`` asked for, looked up concurrently.

        Raises:
            RPCError: Temporal failed in a part (the attempt is retried).
        """

        async def recall() -> TuningRecall | None:
            if request.link is None:
                return None
            return await self._tuning.recall_link_tuning(request.link)

        async def copy() -> KnownCopy | None:
            if request.known_copy is None:
                return None
            return await self._copies.find_known_copy(request.known_copy)

        async def governors() -> list[str] | None:
            if not request.governors:
                return []
            return await self._limits.find_governors(request.governors)

        local = activity.info().is_local
        parts = asyncio.ensure_future(asyncio.gather(recall(), copy(), governors()))
        try:
            while True:
                done, _ = await asyncio.wait({parts}, timeout=_HEARTBEAT_EVERY_S)
                if done:
                    break
                if not local:
                    activity.heartbeat()
        finally:
            if not parts.done():
                parts.cancel()
                with contextlib.suppress(BaseException):
                    await parts
        recalled, found, running = parts.result()
        return StartLookup(
            recall=recalled,
            known_copy=found,
            governors=running,
            connection_cap=connection_cap(request.connections_of or []),
        )


def connection_cap(urls: list[str]) -> int | None:
    """The most connections this worker opens at once to the host of any of ``urls``
    (SFTP: ``STACCATO_SFTP_MAX_CONNECTIONS`` per ``host:port``, across the worker's
    processes, :mod:`staccato.endpoints.sftp.slots`); None: no URL's scheme has a cap."""
    caps = [settings.current().sftp_max_connections for u in urls if parse_url(u).scheme == "sftp"]
    return min(caps) if caps else None
