"""A dataset whose worker's activity processes were SIGKILLed mid-copy (tester62): its
batches send no heartbeat until Temporal times them out, and the old status said
"nothing moved since T: waiting for the source or destination to answer" with both
endpoints fine (a frozen server reads the same, so the words could not tell them
apart). Now the stalled line says no heartbeat came from the worker process running
the batches since when, and once Temporal retried a batch its last failure is said
(``last_retry_error``, and in ``cp -r``'s line). The activity processes are SIGSTOPped first (their batches
then stay running, silent), then SIGKILLed. The dataset then completes, every file
equal to the source.

Local files only (no server to blame); no timing assertions: waits are bounded by
conditions.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from staccato.cli.datasets import follow_text, status_lines
from staccato.client import StaccatoClient
from staccato.dataset_client import dataset_status, submit_dataset
from staccato.datasets.models import DatasetState, DatasetStatus
from staccato.models import TransferOptions
from tests.dataset_checks import tree, wait_dataset
from tests.helpers import WorkerProcess, spawned_children

FILES = 100
#: ~200 KB at 10 KB/s: ~20 s, so batches are in flight when their processes die (they
#: copy nothing while stopped, so most of it is left after Temporal retries them; it
#: was 400 files, then 160, ~32 s of copying and polling for the same checks); a
#: heartbeat timeout long enough that the batches are seen silent (``NO_HEARTBEAT_S``,
#: 5 s after their last heartbeat, at most 1 s before the stop) with 12 s to spare
#: for the status polls before Temporal times them out (it was 25 s: 7 s more to wait)
OPTIONS = TransferOptions(max_rate=10_000, heartbeat_timeout_s=18, retry_for_s=600)


async def _status_until(
    client: StaccatoClient,
    dataset: str,
    what: Callable[[DatasetStatus], bool],
    timeout_s: float,
    seen: list[DatasetStatus],
) -> DatasetStatus:
    """Poll the dataset's status (at most ``timeout_s``) until ``what`` holds of it or
    it is no longer running; every status seen goes into ``seen``."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = await dataset_status(client, dataset)
        seen.append(status)
        # scheduled until the run's first task: a poll at load can come before it
        if what(status) or status.state not in (DatasetState.scheduled, DatasetState.running):
            return status
        assert time.monotonic() < deadline, (
            f"not within {timeout_s} s: {[status_lines(s, False) for s in seen[-2:]]}"
        )
        await asyncio.sleep(0.5)


def _says_no_heartbeat(status: DatasetStatus) -> bool:
    return "no heartbeat from the worker process" in follow_text(status)


async def test_a_dataset_whose_batch_processes_were_killed_says_so(
    temporal_server, data_dir: Path, tmp_path: Path
) -> None:
    source, destination = data_dir / "src", data_dir / "dst"
    for i in range(FILES):
        path = source / f"d{i % 10}" / f"f{i:04d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(2048))
    with WorkerProcess(temporal_server.address, processes=2, log_dir=tmp_path) as worker:
        assert worker.process is not None
        client = await StaccatoClient.connect(
            target_host=temporal_server.address, namespace="default"
        )
        client.task_queue = worker.task_queue
        dataset = await submit_dataset(client, str(source), str(destination), OPTIONS)
        seen: list[DatasetStatus] = []
        under_way = await _status_until(client, dataset, lambda s: s.files_done > 0, 120, seen)
        assert under_way.state == DatasetState.running, under_way
        print(f"killing the activity processes at {under_way.files_done}/{FILES} files")
        pool = spawned_children(worker.process.pid)[1:]  # not the heartbeat manager
        assert pool, "no activity process found"
        # stopped first: their batches stay running without a heartbeat (killed at
        # once, a batch's attempt may fail at once: the pool is broken), as while the
        # worker restarts its processes after a kill
        for pid in pool:
            os.kill(pid, signal.SIGSTOP)
        try:
            silent = await _status_until(client, dataset, _says_no_heartbeat, 30, seen)
        finally:
            for pid in pool:
                os.kill(pid, signal.SIGKILL)
        assert silent.state == DatasetState.running, silent
        lines = status_lines(silent, False)
        stalled = [line for line in lines if line.startswith("stalled")]
        print(stalled, follow_text(silent))
        assert stalled and "no heartbeat from the worker process" in stalled[0], lines
        assert "waiting for the source or destination" not in "\n".join(lines), lines
        # Temporal times the silent batches out and runs them again: their failure said
        retried = await _status_until(
            client, dataset, lambda s: bool(s.last_retry_error), 120, seen
        )
        print(retried.last_retry_error, follow_text(retried))
        if retried.state == DatasetState.running:
            assert "attempt" in (retried.last_retry_error or ""), retried
            assert "retrying: " in follow_text(retried), follow_text(retried)
        final = await wait_dataset(client, dataset, timeout_s=240)
    assert final.state == DatasetState.completed, final
    assert tree(destination) == tree(source)
