"""``LinkTuningWorkflow``: what the optimizer learned about one link, kept in Temporal.

One workflow per link (:func:`link_tuning_id`), on the governors' task queue
(:data:`~staccato.workflows.governor.GOVERNOR_QUEUE`, polled by every worker), so the
memory lives in Temporal and not on a worker's disk: any worker reads it.

* signal ``record`` (:class:`~staccato.tuning.LinkMemory`): a tuned transfer's outcome,
  sent with signal-with-start at its end (it starts the workflow the first time);
* query ``get``: the memory (``None`` before the first record).

It waits for signals and holds no timer; it continues as new (carrying the memory)
every :data:`RECORDS_PER_RUN` records, so its history stays at a few hundred events.
History per transfer here: the signal and a workflow task (4 events).
"""

from __future__ import annotations

import hashlib

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from staccato import units
    from staccato.tuning import LinkMemory

RECORD_SIGNAL = "record"
GET_QUERY = "get"
#: workflow id prefix of a link's tuning memory
LINK_TUNING_ID_PREFIX = "staccato-link-tuning-"
#: records per run before it continues as new
RECORDS_PER_RUN = 100


def link_tuning_id(link: str) -> str:
    """The workflow id of ``link``'s memory: the prefix + 32 hex digits of SHA-256 of
    the link name (``SRC_ENDPOINT,DST_ENDPOINT``)."""
    return LINK_TUNING_ID_PREFIX + hashlib.sha256(link.encode()).hexdigest()[:32]


@workflow.defn(name="LinkTuningWorkflow")
class LinkTuningWorkflow:
    """Keeps one link's :class:`~staccato.tuning.LinkMemory`."""

    @workflow.init
    def __init__(self, memory: LinkMemory | None = None) -> None:
        self._memory = None if memory is None else LinkMemory.model_validate(memory)
        self._records = 0

    @workflow.run
    async def run(self, memory: LinkMemory | None = None) -> None:
        """Keep the memory; continue as new every :data:`RECORDS_PER_RUN` records.

        Args:
            memory: the memory carried over (None for a fresh link).
        """
        await workflow.wait_condition(
            lambda: (
                self._records >= RECORDS_PER_RUN or workflow.info().is_continue_as_new_suggested()
            )
        )
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(self._memory)

    @workflow.signal(name=RECORD_SIGNAL)
    def record(self, memory: LinkMemory) -> None:
        """A tuned transfer's outcome on this link (the newest wins)."""
        self._memory = LinkMemory.model_validate(memory)
        self._records += 1
        workflow.set_current_details(
            f"{self._memory.link}: {units.counted(self._memory.streams, 'stream')} x "
            f"{self._memory.chunk_size // (1024 * 1024)} MiB"
        )

    @workflow.query(name=GET_QUERY)
    def get(self) -> LinkMemory | None:
        """The link's memory (None before the first record)."""
        return self._memory
