"""``status`` of a running dataset whose worker is gone (a tester's MED report): it
showed ``running`` with 0 files of 0 and 0 B (a moment before: 21 files, 19 done,
24 MB) and said nothing of the missing worker. Now: the last known counts, which the
dataset writes into its memo as each batch ends, marked as such
(``counts_last_known_at``), and the "no worker answers" note single transfers and
fan-out groups give."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from pathlib import Path

import pytest

from staccato.client import StaccatoClient
from staccato.dataset_client import dataset_status, submit_dataset
from staccato.datasets.models import DatasetState
from staccato.models import TransferOptions
from tests.dataset_checks import wait_dataset
from tests.helpers import NO_WORKER_ENV, WorkerProcess, run_cli
from tests.servers.temporal_server import TemporalDevServer

FILES = 24
SIZE = 128 * 1024
#: the first files (in listing order) are ``SIZE`` bytes, the others ``SMALL``
LARGE_FILES = 16
SMALL = 4 * 1024


@pytest.mark.parametrize(
    "batch_files",
    [
        2,  # batches end: the counts written into the memo as each ended
        # one batch of all files, not ended when the worker dies: the counts are its
        # last heartbeat's (a tester saw 0 of a dataset 500 files into its first batch)
        FILES,
    ],
)
async def test_a_dataset_whose_worker_is_gone_shows_its_last_known_counts(
    temporal_server: TemporalDevServer, data_dir: Path, tmp_path: Path, batch_files: int
) -> None:
    source, destination = data_dir / "src", data_dir / "dst"
    source.mkdir()
    for i in range(FILES):
        # the last files small: the part the next worker copies at the rate
        (source / f"f{i:03d}").write_bytes(os.urandom(SIZE if i < LARGE_FILES else SMALL))
        past = time.time() - 3600
        os.utime(source / f"f{i:03d}", (past, past))
    worker = WorkerProcess(temporal_server.address, processes=1, log_dir=tmp_path).start()
    client = await StaccatoClient.connect(target_host=temporal_server.address)
    client.task_queue = worker.task_queue
    args = {"address": temporal_server.address, "task_queue": worker.task_queue}
    dataset = await submit_dataset(
        client,
        str(source),
        str(destination),
        # 2 MiB in the first 16 files at 256 KiB/s: ~8 s, batches of 2 files (a memo
        # write at each end)
        TransferOptions(max_rate=256 * 1024),
        batch_files=batch_files,
        max_batches=1,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            current = await dataset_status(client, dataset)
            if current.files_done >= 4:
                break
            # scheduled until its run's first task: a poll at load can come before it
            assert current.state in (
                DatasetState.scheduled,
                DatasetState.running,
                DatasetState.queued,
            ), current
            assert time.monotonic() < deadline, current
            await asyncio.sleep(0.2)
        worker.kill()
        # no worker until the ``finally``: each command waits 1 s for one, not 5
        given = json.loads(run_cli("status", "--json", dataset, **args, env=NO_WORKER_ENV).stdout)
        assert given["state"] == "running", given
        assert given["files_total"] >= 4 and given["bytes_total"] >= 4 * SIZE, given
        assert given["files_done"] >= 4 and given["bytes_done"] >= 4 * SIZE, given
        assert given["files_done"] < FILES, given
        assert given["counts_last_known_at"], given  # said to be the last known
        # when the counts were true (the memo's write, the last heartbeat), never the
        # dataset's start; all files listed, though no batch ended (newcomer tester,
        # 0.35.0: "files_total 983, listing_done no, last known at <start>" after a
        # SIGKILL of the worker of a 2,000-file dataset in one batch)
        assert given["counts_last_known_at"] > given["started_at"], given
        if batch_files == FILES:  # (batches of 2, one at a time: still dispatched)
            assert given["files_total"] == FILES and given["listing_done"], given
        # (Temporal lists the killed worker's poller for a while: "no worker answered
        # the progress query within 5 s" then, "no worker answers on task queue" after)
        assert "no worker answer" in given["last_retry_error"], given
        assert "last known" in given["counts_unknown"], given
        assert given["rate_bytes_per_s"] is None and given["eta_s"] is None, given
        shown = run_cli("status", dataset, **args, env=NO_WORKER_ENV)
        assert shown.returncode == 0, shown.stderr
        assert "last known at " in shown.stdout, shown.stdout
        assert f"last known at {given['counts_last_known_at']}: " in shown.stdout, shown
        # one time for one set of counts (tester71: "written at" the memo's time in
        # the note beside "last known at" a later heartbeat's)
        assert "written at" not in given["counts_unknown"], given
        (line,) = [x for x in shown.stdout.splitlines() if "last known at " in x]
        assert re.findall(r"\d{4}-\d\d-\d\dT[\d:.]+Z", line) == [given["counts_last_known_at"]], (
            line
        )
        if batch_files == FILES:
            assert f"/{FILES} files" in shown.stdout, shown.stdout  # not "N/N+"
        assert "no worker answer" in shown.stdout, shown.stdout
    finally:
        worker = WorkerProcess(
            temporal_server.address, processes=1, task_queue=worker.task_queue, log_dir=tmp_path
        ).start()
        try:
            final = await wait_dataset(client, dataset, timeout_s=180)
            assert final.state == DatasetState.completed, final
            assert final.files_done == FILES, final
        finally:
            worker.stop()
