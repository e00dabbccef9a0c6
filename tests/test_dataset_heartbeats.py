"""A dataset's listing pages and batches heartbeat no more than their checkpoints need
(issue 11, the service's own CPU on 10,000 small files): every heartbeat is a request
to the Temporal server and a write of the workflow's state there. A batch or page
hands its first heartbeat to the worker one interval (1 s with the default heartbeat
timeout) after it began, not at once, so one that ends within it sends none; before,
every activity sent one at its start (52 heartbeats per 10,000-file dataset, about
one in three of the server's requests for it).

Against a Temporal dev server and worker of its own (the server's own request counter,
``service_requests`` of ``RecordActivityTaskHeartbeat`` on its ``/metrics``, counts
this dataset's heartbeats alone): the heartbeats that reached the server are at most
one per whole second each activity ran (its started and completed events' times in
the history, the server's clock), and the tree arrives whole."""

from __future__ import annotations

import os
import re
import urllib.request
from pathlib import Path

from temporalio.api.enums.v1 import EventType

from staccato.client import StaccatoClient
from staccato.dataset_client import submit_dataset
from staccato.datasets.models import DatasetState
from staccato.models import TransferOptions
from tests.dataset_checks import MiB, tree, tree_difference, wait_dataset
from tests.helpers import WorkerProcess
from tests.servers.temporal_server import TemporalDevServer, free_port

FILES = 120
_HEARTBEATS = re.compile(
    r'^service_requests\{[^}]*operation="RecordActivityTaskHeartbeat"[^}]*'
    r'service_name="frontend"[^}]*\}\s+([0-9.e+]+)$',
    re.M,
)


def _heartbeats(metrics_port: int) -> int:
    """Heartbeat requests the server's frontend answered so far."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    return sum(int(float(n)) for n in _HEARTBEATS.findall(text))


async def test_short_batches_and_pages_send_no_heartbeat(data_dir: Path, tmp_path: Path) -> None:
    metrics_port = free_port()
    server = TemporalDevServer(
        tmp_path / "temporal.db", headless=True, extra_args=["--metrics-port", str(metrics_port)]
    )
    server.start()
    source, destination = data_dir / "src", data_dir / "dst"
    for i in range(FILES):
        path = source / f"d{i % 6}" / f"f{i:04d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(100 + i))
    worker = WorkerProcess(server.address, processes=2, log_dir=tmp_path)
    try:
        worker.start()
        client = await StaccatoClient.connect(target_host=server.address, namespace="default")
        client.task_queue = worker.task_queue
        before = _heartbeats(metrics_port)
        dataset = await submit_dataset(
            client,
            str(source),
            str(destination),
            TransferOptions(chunk_size=1 * MiB),
            batch_files=8,
            max_batches=2,
            page_size=40,
        )
        final = await wait_dataset(client, dataset, timeout_s=180)
        assert final.state == DatasetState.completed, final
        assert final.files_done == FILES and final.files_failed == 0, final
        assert tree_difference(tree(destination), tree(source)) == []
        sent = _heartbeats(metrics_port) - before

        # each activity's time from its start to its end, on the server's clock
        started: dict[int, float] = {}
        whole_seconds = activities = 0
        handle = client.temporal.get_workflow_handle(dataset)
        async for e in handle.fetch_history_events():
            at = e.event_time.ToMicroseconds() / 1e6
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                started[e.activity_task_started_event_attributes.scheduled_event_id] = at
            elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                began = started[e.activity_task_completed_event_attributes.scheduled_event_id]
                whole_seconds += int(at - began)
                activities += 1
        assert activities >= 10, activities  # pages and batches
        # one heartbeat at the start of each (before) would be >= activities
        assert sent <= whole_seconds, (
            f"{sent} heartbeats for {activities} activities that ran {whole_seconds} "
            "whole seconds in all"
        )
    finally:
        worker.stop()
        server.stop()
