"""The one rule for the state a transfer's run shows once it has ended: Temporal's
execution status, corrected by the state the run recorded (search attribute
StaccatoState). Every view uses it: ``status`` (and ``--json``), ``list`` (its
visibility query too: :func:`ended_condition`), ``schedule describe``, the Python
client's ``status``/``list``, and the refusals of ``cancel``/``pause``/``resume``.

Why a correction: a front run (:mod:`staccato.workflows.front`) whose destination's
transfer was cancelled by someone else (``staccato cancel DEST``) was cancelled too,
but it can only end FAILED in Temporal (the Python SDK ends a workflow as Canceled
only when a cancel was requested on that workflow itself); it records StaccatoState
``cancelled`` as it ends (its activity's failure type
:data:`staccato.errors.DESTINATION_CANCELLED_TYPE`), and shows ``cancelled``
everywhere. Its error still says why ("cancelled: the destination's transfer ... was
cancelled").
"""

from __future__ import annotations

from temporalio.client import WorkflowExecutionStatus

from staccato.models import TransferState
from staccato.run_fields import STATE

#: the state of an ended run by its execution status (before the correction)
_ENDED_STATES = {
    WorkflowExecutionStatus.COMPLETED: TransferState.completed,
    WorkflowExecutionStatus.FAILED: TransferState.failed,
    WorkflowExecutionStatus.TERMINATED: TransferState.failed,
    WorkflowExecutionStatus.TIMED_OUT: TransferState.failed,
    WorkflowExecutionStatus.CANCELED: TransferState.cancelled,
}


def ended_state(status: WorkflowExecutionStatus | None, recorded: str | None) -> TransferState:
    """The state a transfer's run shows once it has ended.

    Args:
        status: the run's Temporal execution status (not RUNNING; None, which the SDK
            gives for an unknown status, reads as failed).
        recorded: its StaccatoState search attribute (None when it has none).

    Returns:
        ``cancelled`` for a run that ended FAILED having recorded ``cancelled`` (a
        front run whose destination's transfer was cancelled); otherwise completed,
        failed or cancelled by ``status`` (terminated and timed out: failed).
    """
    if status == WorkflowExecutionStatus.FAILED and recorded == TransferState.cancelled.value:
        return TransferState.cancelled
    return _ENDED_STATES.get(status, TransferState.failed) if status else TransferState.failed


#: visibility conditions (Temporal's list filter) of ended runs by the state they show
#: (:func:`ended_state`'s rule; the SQL stores and Elasticsearch both take IS NULL, !=)
_RECORDED_CANCELLED = f"{STATE} = '{TransferState.cancelled.value}'"
_NOT_RECORDED_CANCELLED = f"({STATE} IS NULL OR {STATE} != '{TransferState.cancelled.value}')"
_ENDED_CONDITIONS = {
    TransferState.completed: "ExecutionStatus = 'Completed'",
    TransferState.failed: (
        "(ExecutionStatus = 'Terminated' OR ExecutionStatus = 'TimedOut' OR "
        f"(ExecutionStatus = 'Failed' AND {_NOT_RECORDED_CANCELLED}))"
    ),
    TransferState.cancelled: (
        f"(ExecutionStatus = 'Canceled' OR (ExecutionStatus = 'Failed' AND {_RECORDED_CANCELLED}))"
    ),
}


def ended_condition(state: str) -> str | None:
    """The visibility condition of the ended transfer runs that show ``state`` (a
    :class:`~staccato.models.TransferState` value) by :func:`ended_state`; None for a
    state no ended run shows (``running``, ``queued``, ...)."""
    try:
        return _ENDED_CONDITIONS.get(TransferState(state))
    except ValueError:
        return None
