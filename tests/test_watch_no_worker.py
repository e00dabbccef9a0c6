"""``staccato watch`` of a transfer whose worker is SIGKILLed (tester T9): Temporal
lists a killed worker's poller for minutes, so each status the follow asked waited
the whole 5 s query timeout for it, and ``watch`` printed no line for ~8 s. Now a
follow's status queries wait :data:`staccato.client.FOLLOW_QUERY_S`, and the first
line that knows says ``waiting: no worker answers`` in ``status``'s words. Real
worker, Temporal and file systems; the copy is paced so it runs on past the kill."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from staccato.client import FOLLOW_QUERY_S, QUERY_TIMEOUT_S, StaccatoClient
from staccato.models import TransferOptions
from tests.helpers import REPO, MiB, WorkerProcess, at_rest, wait_for_status, write_random
from tests.servers.temporal_server import TemporalDevServer


def _read_lines(stream, into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line)


def _next_line(lines: queue.Queue[str], deadline: float) -> str | None:
    """The next line ``watch`` printed, or None once ``deadline`` (monotonic) passed."""
    try:
        return lines.get(timeout=max(0.0, deadline - time.monotonic()))
    except queue.Empty:
        return None


async def test_watch_says_promptly_that_no_worker_answers_after_a_worker_kill(
    temporal_server: TemporalDevServer, data_dir: Path, tmp_path: Path
) -> None:
    source, destination = data_dir / "src.bin", data_dir / "dst.bin"
    write_random(source, 8 * MiB, seed=3)
    at_rest(source)
    worker = WorkerProcess(temporal_server.address, processes=1, log_dir=tmp_path).start()
    client = await StaccatoClient.connect(target_host=temporal_server.address)
    client.task_queue = worker.task_queue
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": temporal_server.address,
        "TEMPORAL_NAMESPACE": "default",
        "STACCATO_TASK_QUEUE": worker.task_queue,
    }
    process: subprocess.Popen[str] | None = None
    try:
        # 8 MiB at 256 KiB/s: ~30 s, so the copy runs on past the kill
        options = TransferOptions(chunk_size=1 * MiB, streams=1, max_rate=256 * 1024)
        transfer = await client.submit(str(source), str(destination), options)
        await wait_for_status(client, transfer, lambda s: s.bytes_done > 0, timeout_s=120)
        process = subprocess.Popen(
            [sys.executable, "-m", "staccato.cli", "watch", transfer],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=REPO,
        )
        assert process.stdout is not None
        lines: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True)
        reader.start()
        seen: list[str] = []
        deadline = time.monotonic() + 90
        while not any(line.startswith("running: ") for line in seen):
            line = _next_line(lines, deadline)
            assert line is not None, f"watch printed no progress line: {seen}"
            seen.append(line)
        worker.kill()
        # a status asked before the kill may still print; the next says no worker
        # answers, having waited at most FOLLOW_QUERY_S for one (5 s before)
        after: list[str] = []
        deadline = time.monotonic() + 60
        while not any("no worker answers" in line for line in after):
            line = _next_line(lines, deadline)
            assert line is not None, f"watch never said no worker answers: {after or seen}"
            after.append(line)
        assert len(after) <= 2, after
        said = after[-1]
        assert said.startswith("running: ") and "waiting: no worker answers" in said, said
        assert f"within {QUERY_TIMEOUT_S:g} s" not in said, said
        if " within " in said:  # the killed worker is still listed as a poller
            assert f"within {FOLLOW_QUERY_S:g} s" in said, said
        assert " at " not in said.split("waiting:")[0], said  # no rate while none answers
        assert process.poll() is None, "watch ended while the transfer waits for a worker"
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(10)
        worker.stop()
