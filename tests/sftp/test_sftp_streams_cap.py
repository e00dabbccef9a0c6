"""More ``--streams`` than the worker's SFTP connections per host: the transfer runs no
more streams than the cap (``STACCATO_SFTP_MAX_CONNECTIONS``, 4 here), so each one's
share of ``--max-rate`` is a quarter, not an eighth (a tester's 50 MB to SFTP at
``--max-rate 5MB/s --streams 8`` took 28 s: four streams ran, each at 5/8 MB/s)."""

from __future__ import annotations

import json
from pathlib import Path

from temporalio.api.enums.v1 import EventType

from staccato.client import StaccatoClient
from staccato.models import TransferOptions
from tests.helpers import MiB, leftovers, sha256_file, write_random

CAP = 4  # the sftp_worker's STACCATO_SFTP_MAX_CONNECTIONS (the default)


async def _stream_inputs(client: StaccatoClient, transfer: str) -> tuple[list[dict], int]:
    """The ``copy_stream`` inputs in scheduling order, and the most streams scheduled
    and not yet closed at once (from the history's events)."""
    inputs: list[dict] = []
    open_streams: set[int] = set()
    most = 0
    async for event in client.temporal.get_workflow_handle(transfer).fetch_history_events():
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attributes = event.activity_task_scheduled_event_attributes
            if attributes.activity_type.name == "copy_stream":
                inputs.append(json.loads(attributes.input.payloads[0].data))
                open_streams.add(event.event_id)
                most = max(most, len(open_streams))
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            open_streams.discard(event.activity_task_completed_event_attributes.scheduled_event_id)
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED:
            open_streams.discard(event.activity_task_failed_event_attributes.scheduled_event_id)
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
            open_streams.discard(event.activity_task_timed_out_event_attributes.scheduled_event_id)
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED:
            open_streams.discard(event.activity_task_canceled_event_attributes.scheduled_event_id)
    return inputs, most


async def test_streams_past_the_connection_cap_are_not_run_and_keep_no_rate_share(
    sftp_client: StaccatoClient, sftp_url, data_dir: Path
) -> None:
    """file -> SFTP, ``--streams 8``, 16 chunks, ``--max-rate``: at most 4 streams
    scheduled at once, the first ones each paced at a quarter of the rate, status says 4
    streams; the bytes arrive whole. Before: 8 scheduled, each at an eighth."""
    source = data_dir / "src.bin"
    digest = write_random(source, 16 * MiB, seed=83)
    destination = data_dir / "out" / "dst.bin"
    destination.parent.mkdir()
    max_rate = 256 * MiB  # a share is visible in the inputs; the copy is not slowed
    options = TransferOptions(chunk_size=1 * MiB, streams=8, max_rate=max_rate)
    transfer = await sftp_client.submit(str(source), sftp_url(destination), options)
    result = await sftp_client.wait(transfer)
    assert result.bytes == 16 * MiB
    assert sha256_file(destination) == digest
    assert leftovers(destination.parent) == []
    inputs, most = await _stream_inputs(sftp_client, transfer)
    assert most <= CAP, f"{most} copy_stream activities open at once past the cap of {CAP}"
    shares = [stream["max_rate"] for stream in inputs]
    assert shares[0] == max_rate / CAP, shares
    assert min(shares) >= max_rate / CAP, shares
    shown = await sftp_client.status(transfer)
    assert shown.streams == CAP, shown
