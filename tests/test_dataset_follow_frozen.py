"""``cp -r`` with stderr piped keeps printing while its worker is frozen (SIGSTOP of
the whole worker: no progress query is answered): a line at its usual cadence saying
no worker answers, in the words ``status`` uses, with no rate (tester: 70 s without a
line, the last one ``running: 15569/21025+ files, 14.7 MiB, 366.9 files/s``)."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.helpers import REPO, WorkerProcess

FILES = 200


def _read_lines(stream, into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line)


def _next_line(lines: queue.Queue[str], deadline: float) -> str | None:
    """The next line ``cp -r`` printed, or None once ``deadline`` (monotonic) passed."""
    try:
        return lines.get(timeout=max(0.0, deadline - time.monotonic()))
    except queue.Empty:
        return None


def test_cp_r_with_frozen_worker_keeps_printing_that_no_worker_answers(
    temporal_server, data_dir: Path
) -> None:
    source, destination = data_dir / "src", data_dir / "dst"
    for i in range(FILES):
        path = source / f"d{i % 10}" / f"f{i:04d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(2048))
    worker = WorkerProcess(temporal_server.address, processes=1, log_dir=data_dir, own_group=True)
    worker.start()
    assert worker.process is not None
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": temporal_server.address,
        "TEMPORAL_NAMESPACE": "default",
        "STACCATO_TASK_QUEUE": worker.task_queue,
    }
    # ~400 KB at 20 KB/s: ~20 s, so it runs on while the worker is frozen (frozen at
    # its first line with files counted; the copy makes no progress while frozen). It
    # was 300 files (~30 s): the third was copied after the checks, only to end it
    process = subprocess.Popen(
        [sys.executable, "-m", "staccato.cli", "cp", "-r", str(source), str(destination)]
        + ["--max-rate", "20KB/s"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert process.stderr is not None
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=_read_lines, args=(process.stderr, lines), daemon=True)
    reader.start()
    frozen = False
    seen: list[str] = []
    try:
        # a progress line with files counted: the dataset is under way
        deadline = time.monotonic() + 90
        while True:
            line = _next_line(lines, deadline)
            assert line is not None, f"no progress line with files counted: {seen}"
            seen.append(line)
            if line.startswith("running: ") and not line.startswith("running: 0/"):
                break
        os.killpg(worker.process.pid, signal.SIGSTOP)
        frozen = True
        # lines go on: they say no worker answers (status' words), and show no rate
        unknown: list[str] = []
        after: list[str] = []
        deadline = time.monotonic() + 60
        while len(unknown) < 3:
            line = _next_line(lines, deadline)
            assert line is not None, (
                f"cp -r printed {len(unknown)} line(s) saying no worker answers while "
                f"its worker was frozen: {after or seen[-3:]}"
            )
            after.append(line)
            if "progress unknown now: no worker" in line:
                unknown.append(line)
        for line in unknown:
            assert line.startswith("running: progress unknown now: no worker"), line
            assert "files/s" not in line and " eta " not in line, line
            assert "; last known: " in line and " files, " in line, line
        os.killpg(worker.process.pid, signal.SIGCONT)
        frozen = False
        process.wait(timeout=180)
        reader.join(timeout=10)
        rest = "".join(lines.get() for _ in range(lines.qsize()))
        assert process.returncode == 0, "".join(seen + after) + rest
        assert f"completed: {FILES} files copied" in " ".join(rest.split()), rest
    finally:
        if frozen:
            os.killpg(worker.process.pid, signal.SIGCONT)
        if process.poll() is None:
            process.kill()
            process.wait(10)
        worker.stop()
