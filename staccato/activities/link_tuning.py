"""Control activities of per-link tuning (see :mod:`staccato.tuning` and
:mod:`staccato.workflows.link_tuning`).

Both are async and run in the worker's main process on the control task queue with
the worker's own Temporal client: they only call Temporal and read the settings.

* ``recall_link_tuning``: the link's memory (a query of its ``LinkTuningWorkflow``;
  none when it never ran) and this worker's tuning settings;
* ``record_link_tuning``: signal-with-start ``record`` at the link's workflow.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity
from temporalio.client import Client
from temporalio.service import RPCError

from staccato import settings
from staccato.activities.liveness import heartbeating
from staccato.errors import SettingsError
from staccato.link_memory import read_link_memory
from staccato.links import tuned_link
from staccato.models import TuningRecall
from staccato.settled_query import NotSettledError
from staccato.tuning import BUFFERS_PER_STREAM, LinkMemory
from staccato.workflows.governor import GOVERNOR_QUEUE
from staccato.workflows.link_tuning import RECORD_SIGNAL, LinkTuningWorkflow, link_tuning_id

#: bound on reading a link's memory (seconds): past it the transfer starts cold
RECALL_TIMEOUT = timedelta(seconds=10)


class LinkTuningActivities:
    """The control worker's tuning activities; they share the worker's client.

    Args:
        client: the worker's client.
        streams_at_once: streams this worker runs at once (its activity processes x
            threads); None: from the settings.
        buffer_bytes: bytes of chunk buffers this worker holds at once (its processes'
            shares of ``STACCATO_WORKER_MEMORY_BYTES``); None: from the settings.
    """

    def __init__(
        self, client: Client, *, streams_at_once: int | None = None, buffer_bytes: int | None = None
    ):
        self._client = client
        self._streams_at_once = streams_at_once
        self._buffer_bytes = buffer_bytes

    @activity.defn(name="recall_link_tuning")
    @heartbeating
    async def recall_link_tuning(self, link: str) -> TuningRecall:
        """What a tuned transfer on ``link`` starts from (memory and settings);
        ``enabled`` False when the worker turned tuning off or ``link`` is not tuned
        (a local copy, :func:`staccato.links.tuned_link`): the fixed defaults run."""
        current = settings.checked()  # tuning is start-only: the worker checked it
        enabled = current.tuning and tuned_link(link)
        try:
            # an untuned link's memory is not read: nothing starts from it
            memory = (
                await read_link_memory(self._client, link, timeout=RECALL_TIMEOUT)
                if enabled
                else None
            )
        except (RPCError, NotSettledError) as err:
            # a busy governors' queue must not hold the transfer for the activity's
            # whole timeout: start cold, the next transfer reads the memory again
            activity.logger.warning(
                "link %s: its memory was not read (%s); starting cold", link, err
            )
            memory = None
        processes = current.effective_worker_processes
        streams = self._streams_at_once or processes * current.worker_threads
        buffers = self._buffer_bytes
        if buffers is None:
            try:
                buffers = current.buffer_budget_bytes(processes) * processes
            except SettingsError:  # the worker refuses to start with it: not reached
                buffers = current.tuning_memory_bytes
        return TuningRecall(
            # a local copy is not tuned (staccato.links.tuned_link): the fixed defaults
            enabled=enabled,
            memory=None if memory is None else memory.model_dump(mode="json"),
            # a stream reserves its chunk against the worker's buffers; the optimizer
            # counts BUFFERS_PER_STREAM chunks a stream, so its budget is that many times
            # the worker's buffers, and never more than the tuning setting
            memory_budget=min(current.tuning_memory_bytes, BUFFERS_PER_STREAM * buffers),
            socket_buffer_bytes=current.socket_buffer_bytes,
            # a worker runs processes x threads streams at once (not one per process)
            worker_processes=streams,
        )

    @activity.defn(name="record_link_tuning")
    @heartbeating
    async def record_link_tuning(self, memory: LinkMemory) -> None:
        """Store ``memory`` as its link's (signal-with-start ``record``)."""
        await self._client.start_workflow(
            LinkTuningWorkflow.run,
            None,
            id=link_tuning_id(memory.link),
            task_queue=GOVERNOR_QUEUE,
            start_signal=RECORD_SIGNAL,
            start_signal_args=[memory],
        )
