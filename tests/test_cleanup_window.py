"""The clean-up window of a failed or cancelled transfer is a knob
(``TransferOptions.cleanup_for_s``; env ``STACCATO_CLEANUP_FOR_S`` for the command
line's starts) whose default is the production value: a cancelled run's clean-up
retries within 30 s plus one backoff (10 s), a failed run's within ``--retry-for`` (30 s
at least) plus one backoff. The test suite's scenes that hang a server on purpose
shorten it so they do not wait out 40 s each; nothing else changes.

Read from the run's history (the ``cleanup`` activity's ``schedule_to_close_timeout``,
what Temporal enforces), not from how long anything took. Real Temporal dev server and
worker; file -> file transfers paced so the cancel or the source change lands mid-copy.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType

from staccato.cli.options import transfer_options
from staccato.client import StaccatoClient
from staccato.errors import TransferCancelledError, TransferFailedError
from staccato.models import ChecksumAlgorithm, MiB, TransferOptions, VerifyMode
from tests.helpers import wait_for_status, write_random

SIZE = 16 * MiB
#: paced (~8 s for the whole copy) so that the cancel or the change lands mid-copy
PACED = TransferOptions(chunk_size=1 * MiB, streams=1, max_rate=2 * MiB)
#: the longest wait between two clean-up attempts (staccato.workflows.transfer)
BACKOFF = timedelta(seconds=10)


async def _cleanup_windows(client: StaccatoClient, transfer: str) -> list[timedelta]:
    """The ``schedule_to_close_timeout`` of each ``cleanup`` activity the run scheduled."""
    history = await client.temporal.get_workflow_handle(transfer).fetch_history()
    return [
        event.activity_task_scheduled_event_attributes.schedule_to_close_timeout.ToTimedelta()
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and event.activity_task_scheduled_event_attributes.activity_type.name == "cleanup"
    ]


@pytest.mark.parametrize(
    ("cleanup_for_s", "window"),
    [(None, timedelta(seconds=30) + BACKOFF), (4.0, timedelta(seconds=4) + BACKOFF)],
    ids=["default-30s", "option-4s"],
)
async def test_a_cancelled_runs_cleanup_retries_within_its_window(
    client: StaccatoClient, data_dir: Path, cleanup_for_s: float | None, window: timedelta
) -> None:
    source = data_dir / "cancel-window.bin"
    write_random(source, SIZE, seed=961)
    options = PACED.model_copy(update={"cleanup_for_s": cleanup_for_s})
    transfer = await client.submit(str(source), str(data_dir / "cancel-window.out"), options)
    await wait_for_status(client, transfer, lambda s: s.bytes_done > 0, timeout_s=120)
    await client.cancel(transfer)
    with pytest.raises(TransferCancelledError):
        await asyncio.wait_for(client.wait(transfer), 120)
    assert await _cleanup_windows(client, transfer) == [window]


@pytest.mark.parametrize(
    ("retry_for_s", "cleanup_for_s", "window"),
    [
        (2.0, None, timedelta(seconds=30) + BACKOFF),  # the default's 30 s at least
        (2.0, 3.0, timedelta(seconds=3) + BACKOFF),  # the option's
        (6.0, 3.0, timedelta(seconds=6) + BACKOFF),  # --retry-for when longer
    ],
    ids=["default-30s", "option-3s", "retry-for-6s"],
)
async def test_a_failed_runs_cleanup_retries_within_its_window(
    client: StaccatoClient,
    data_dir: Path,
    retry_for_s: float,
    cleanup_for_s: float | None,
    window: timedelta,
) -> None:
    source = data_dir / "fail-window.bin"
    write_random(source, SIZE, seed=962)
    options = PACED.model_copy(update={"retry_for_s": retry_for_s, "cleanup_for_s": cleanup_for_s})
    transfer = await client.submit(str(source), str(data_dir / "fail-window.out"), options)
    await wait_for_status(client, transfer, lambda s: s.bytes_done > 0, timeout_s=120)
    with open(source, "ab") as f:
        f.write(b"appended while copying")  # a permanent failure: source changed
    with pytest.raises(TransferFailedError, match="source changed"):
        await asyncio.wait_for(client.wait(transfer), 120)
    # (wait() returns once the clean-up's first attempt ended: it was scheduled)
    assert await _cleanup_windows(client, transfer) == [window]


def test_the_command_lines_starts_take_the_window_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``STACCATO_CLEANUP_FOR_S`` reaches the options ``cp``/``submit``/``schedule``
    build (:func:`staccato.cli.options.transfer_options`); unset: None (the 30 s)."""

    def built() -> TransferOptions:
        return transfer_options(2 * MiB, 2, VerifyMode.checksum, ChecksumAlgorithm.crc32c)

    monkeypatch.delenv("STACCATO_CLEANUP_FOR_S", raising=False)
    assert built().cleanup_for_s is None
    monkeypatch.setenv("STACCATO_CLEANUP_FOR_S", "7")
    assert built().cleanup_for_s == 7.0
