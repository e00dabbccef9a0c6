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
from staccato.link_memory import read_link_memory
from staccato.models import TuningRecall
from staccato.tuning import LinkMemory
from staccato.workflows.governor import GOVERNOR_QUEUE
from staccato.workflows.link_tuning import RECORD_SIGNAL, LinkTuningWorkflow, link_tuning_id

#: bound on reading a link's memory (seconds): past it the transfer starts cold
RECALL_TIMEOUT = timedelta(seconds=10)


class LinkTuningActivities:
    """The control worker's tuning activities; they share the worker's client.

    Args:
        client: the worker's client.
    """

    def __init__(self, client: Client):
        self._client = client

    @activity.defn(name="recall_link_tuning")
    async def recall_link_tuning(self, link: str) -> TuningRecall:
        """What a tuned transfer on ``link`` starts from (memory and settings)."""
        current = settings.current()
        try:
            memory = await read_link_memory(self._client, link, timeout=RECALL_TIMEOUT)
        except RPCError as err:
            # a busy governors' queue must not hold the transfer for the activity's
            # whole timeout: start cold, the next transfer reads the memory again
            activity.logger.warning(
                "link %s: its memory was not read (%s); starting cold", link, err
            )
            memory = None
        return TuningRecall(
            enabled=current.tuning,
            memory=None if memory is None else memory.model_dump(mode="json"),
            memory_budget=current.tuning_memory_bytes,
            socket_buffer_bytes=current.socket_buffer_bytes,
            worker_processes=current.effective_worker_processes,
        )

    @activity.defn(name="record_link_tuning")
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
