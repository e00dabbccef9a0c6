"""Asking governors for slots, from inside a workflow (a transfer, a dataset's batches).

The protocol is the governor's (:mod:`staccato.workflows.governor`): an ``acquire``
signal with a :class:`~staccato.models.SlotRequest`, a ``slot_granted`` signal back to
the asking run, a ``release`` signal at the end. The asking workflow keeps the grants
its ``slot_granted`` handler receives; the functions here send the signals and wait.

Deterministic workflow code: it only sends signals, runs short activities on the
control task queue and waits on conditions and timers.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import FailureError

with workflow.unsafe.imports_passed_through():
    from staccato.links import governor_id
    from staccato.models import (
        SlotRelease,
        SlotRequest,
        SlotRunning,
        StartGovernorInput,
        TransferOptions,
    )

from staccato.workflows.governor import ACQUIRE_SIGNAL, RELEASE_SIGNAL, RUNNING_SIGNAL

#: the control activity that tells which governors run (of those named)
FIND_GOVERNORS = "find_governors"
#: the control activity that starts a governor with an ``acquire`` (signal-with-start)
START_GOVERNOR = "start_governor"
#: a run waiting for a grant first looks whether its governor still runs after this
#: long, then twice as long each time up to :data:`REASK_MAX`
REASK_FIRST = timedelta(seconds=5)
REASK_MAX = timedelta(minutes=10)
#: ``find_governors`` and ``start_governor`` are one describe or signal each: a task
#: handed to a worker that died (or froze) before it ran is retried after this, not
#: after the 2 min of other short activities (a granted slot sat unused 95 s behind one)
CONTROL_TIMEOUT = timedelta(seconds=20)
LIMITS_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10)
)


def slot_request(ticket: str, options: TransferOptions, streams: int) -> SlotRequest:
    """What this run asks a governor for under ``ticket``: ``streams`` streams, in the
    queue place its options' ``priority`` and ``owner`` give."""
    info = workflow.info()
    return SlotRequest(
        ticket=ticket,
        workflow_id=info.workflow_id,
        run_id=info.run_id,
        owner=options.owner or "",
        priority=options.priority,
        streams=streams,
    )


async def find_governors(names: list[str], control: str) -> list[str]:
    """Which of the governor ``names`` run (the ``find_governors`` activity on the
    ``control`` task queue; 3 events and a workflow task)."""
    running: list[str] = await workflow.execute_activity(
        FIND_GOVERNORS,
        names,
        result_type=list[str],
        task_queue=control,
        start_to_close_timeout=CONTROL_TIMEOUT,
        retry_policy=LIMITS_RETRY,
    )
    return running


async def start_governor(name: str, ask: SlotRequest, control: str) -> None:
    """Start ``name``'s governor with ``ask`` in its queue (signal-with-start)."""
    await workflow.execute_activity(
        START_GOVERNOR,
        StartGovernorInput(name=name, request=ask),
        task_queue=control,
        start_to_close_timeout=CONTROL_TIMEOUT,
        retry_policy=LIMITS_RETRY,
    )


async def ask_governor(name: str, ask: SlotRequest, control: str) -> None:
    """Join ``name``'s queue: the ``acquire`` signal (2 events), or, when the governor
    ended since it was found, :func:`start_governor`."""
    try:
        await workflow.get_external_workflow_handle(governor_id(name)).signal(ACQUIRE_SIGNAL, ask)
    except FailureError:  # it ended since find_governors: start it again
        await start_governor(name, ask, control)


async def await_grant(
    name: str,
    ask: SlotRequest,
    control: str,
    granted: Callable[[], bool],
    gave_up: Callable[[], bool] = lambda: False,
) -> None:
    """Wait until ``granted()`` (the run's ``slot_granted`` handler got ``name``'s
    grant for ``ask.ticket``) or ``gave_up()`` (e.g. a pause took the run out of the
    queue).

    While it waits it looks (after :data:`REASK_FIRST`, then twice as long each time
    up to :data:`REASK_MAX`) whether the governor still runs; one that was terminated
    (and with it the queue) is asked again with :func:`start_governor`. History: a
    timer per wait (2 events), and per look the ``find_governors`` activity and its
    workflow tasks (~11 events): ~11 looks in the first hour of waiting, 6 an hour
    after.
    """
    check = REASK_FIRST
    while True:
        try:
            await workflow.wait_condition(lambda: granted() or gave_up(), timeout=check)
        except builtins.TimeoutError:
            running = await find_governors([name], control)
            if not running and not gave_up() and not granted():
                workflow.logger.warning("the governor of %s is gone: asking again", name)
                await start_governor(name, ask, control)
            check = min(check * 2, REASK_MAX)
            continue
        return


async def await_grant_holding_none(
    name: str,
    ask: SlotRequest,
    control: str,
    granted: Callable[[], bool],
    gave_up: Callable[[], bool],
    to_give_back: Callable[[], list[str]],
    forget: Callable[[list[str]], None],
) -> None:
    """Wait for ``name``'s grant like :func:`await_grant`, holding no other governor's
    slot meanwhile: whenever ``to_give_back()`` names some (the caller's rule: the
    governors other than ``name`` whose slot ``ask.ticket`` holds, once ``name`` said
    the ticket waits in its queue and the caller's hold-none patch is on; [] else),
    it drops them with ``forget`` (the caller's grants; it asks them again once ``name``
    granted) and gives them back (:func:`release`, the same ticket), then waits on.

    One implementation for a transfer (patch ``hold-none-while-queued``) and a
    dataset's batches (``dataset-hold-none-while-queued``): an endpoint's slot (its
    ``max_active`` count, a share of its ``max_rate``) is never kept from others by a
    run that waits at a link (or another endpoint) and moves nothing.

    History, beyond :func:`await_grant`'s: per give-back a ``release`` signal per slot
    given back (2 events each), and later its ``acquire`` again (2), its grant (1)
    and their workflow tasks (3 each); nothing while ``to_give_back()`` is [] (a run
    whose caller says [] always issues exactly :func:`await_grant`'s commands).
    """
    while True:
        await await_grant(name, ask, control, granted, lambda: gave_up() or bool(to_give_back()))
        if gave_up() or granted():
            return
        held = to_give_back()
        forget(held)
        workflow.logger.info("queued at %s: giving back the slots of %s meanwhile", name, held)
        await release(held, SlotRelease(ticket=ask.ticket))


async def release(names: list[str], release: SlotRelease) -> None:
    """Give ``release.ticket``'s slots back at each governor of ``names`` (a
    ``release`` signal each: 2 events); a governor that is gone held nothing."""
    for name in names:
        try:
            await workflow.get_external_workflow_handle(governor_id(name)).signal(
                RELEASE_SIGNAL, release
            )
        except FailureError as err:  # the governor is gone: nothing is held there
            workflow.logger.warning("release at %s failed: %s", name, err)


async def tell_running(names: list[str], running: SlotRunning) -> None:
    """Tell each governor of ``names`` how many of ``running.ticket``'s streams still
    run (a ``running`` signal each: 2 events); a governor that is gone holds nothing."""
    for name in names:
        try:
            await workflow.get_external_workflow_handle(governor_id(name)).signal(
                RUNNING_SIGNAL, running
            )
        except FailureError as err:  # the governor is gone: nothing to divide
            workflow.logger.warning("telling %s the streams running failed: %s", name, err)
