"""Destination-root locks of a dataset with several roots.

A dataset to one root holds its root's lock by its own workflow id,
``staccato-dataset-`` + 32 hex of SHA-256 of the canonical root (Temporal runs one
open workflow per id). A dataset to several roots has an id of its own, so it takes
each root's lock as a child :class:`DatasetRootLockWorkflow` under that same id: a
child that waits and does nothing else. While it is open, no other dataset (to that
root alone, or to several roots including it) can start under the id, whichever
client starts it (CLI, Python API, a plain Temporal client).

Release: the child's parent close policy is ``TERMINATE``, so Temporal ends the lock
when the dataset's run closes in any way (completed, failed, cancelled, terminated,
timed out). A worker killed mid-dataset does not end the dataset: its locks stay held
until the dataset, resumed by the next worker, ends. A run that continues as new
closes too: the next run takes its locks again before it writes (its previous run's
children may still be ending, so it retries for a short while).

History: per root and per run a child start (initiated, started, and the workflow task
the start waits for: ~5 events; roots are locked one after the other) and one marker
per run for the patch; the lock's own history is ~5 events.
"""

from __future__ import annotations

from pydantic import BaseModel
from temporalio import workflow

from staccato.ids import LOCK_ID_PREFIX, ROOT_LOCK_TYPE, root_lock_id

__all__ = [
    "LOCK_ID_PREFIX",
    "ROOT_LOCK_TYPE",
    "DatasetRootLockWorkflow",
    "RootLock",
    "root_lock_id",
]


class RootLock(BaseModel):
    """The input of a lock: the ``root`` it locks and the dataset id that ``holder``s it."""

    root: str
    holder: str


@workflow.defn(name=ROOT_LOCK_TYPE)
class DatasetRootLockWorkflow:
    """Holds a destination root's lock while its dataset runs (ended by its parent)."""

    def __init__(self) -> None:
        self._lock: RootLock | None = None

    @workflow.run
    async def run(self, lock: RootLock) -> None:
        """Wait until the parent dataset's run closes (Temporal then terminates this)."""
        self._lock = lock
        workflow.set_current_details(f"**lock** of {lock.root}, held by dataset {lock.holder}")
        await workflow.wait_condition(lambda: False)

    @workflow.query
    def holder(self) -> RootLock | None:
        """The root and the dataset holding it."""
        return self._lock
