"""The bytes the copy streams of a transfer run last heartbeated, read by the
transfer when a stream fails for good, before it cancels the others.

A stream cancelled between two attempts (in its retry backoff) ends with no details
of its own (Temporal says ``ACTIVITY_ID_NOT_STARTED``), and the workflow cannot read
heartbeats: without this, such a stream's bytes were known only from the worker's
last progress report (every ~9 s), and a failed transfer's status could show 0 B
for megabytes durable at the destination (seen at load ~20). One describe of the
run, in the control worker's process (it has the client); no history beyond the
activity's own events.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.client import Client

from staccato.models import Checkpoint

#: the activity's name (the transfer workflow runs it on the control task queue)
STREAMS_MOVED = "streams_moved"


class StreamBytesActivities:
    """The control worker's ``streams_moved`` activity; it shares the worker's client."""

    def __init__(self, client: Client) -> None:
        self._client = client

    @activity.defn(name=STREAMS_MOVED)
    async def streams_moved(self, workflow_id: str, run_id: str) -> list[list[int]]:
        """``[segment, bytes, durable]`` for each pending ``copy_stream`` activity of
        the run whose last heartbeat is a :class:`Checkpoint`: the bytes durable or in
        flight then, as ``status`` shows them, and of those the durable ones (-1: a
        worker before ``Checkpoint.bytes_durable`` sent it).

        Raises:
            RPCError: the run cannot be described (the workflow then keeps what it
                knows).
        """
        description = await self._client.get_workflow_handle(workflow_id, run_id=run_id).describe()
        moved: list[list[int]] = []
        for pending in description.raw_description.pending_activities:
            if pending.activity_type.name != "copy_stream":
                continue
            if not pending.heartbeat_details.payloads:
                continue
            try:
                (details,) = await self._client.data_converter.decode(
                    pending.heartbeat_details.payloads, [Checkpoint]
                )
                checkpoint = Checkpoint.model_validate(details)
            except Exception:  # noqa: BLE001 - another schema: nothing to add
                continue
            if checkpoint.bytes_done > 0:
                durable = checkpoint.bytes_durable
                moved.append(
                    [checkpoint.segment, checkpoint.bytes_done, -1 if durable is None else durable]
                )
        return moved
