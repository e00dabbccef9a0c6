"""What the CLI says, read line by line against the session's real Temporal dev server
and worker: an immediate ``cp`` never reads "scheduled", ``schedule describe`` does not
contradict itself, a bare bucket URL is refused naming it, ``limit list TARGET``."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from tests.helpers import REPO, WorkerProcess, run_cli

#: seconds to wait for a line the CLI prints at once (bounded; not a timed assertion)
LINE_S = 60.0


def _lines_until(process: subprocess.Popen[str], marker: str) -> list[str]:
    """stderr lines of ``process`` until one contains ``marker`` (at most LINE_S s)."""
    assert process.stderr is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stderr, selectors.EVENT_READ)
    lines: list[str] = []
    deadline = time.monotonic() + LINE_S
    while time.monotonic() < deadline:
        if not selector.select(timeout=1.0):
            continue
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line)
        if marker in line:
            break
    return lines


async def test_cp_of_an_immediate_transfer_never_says_scheduled(
    temporal_server, data_dir: Path
) -> None:
    """Before a worker begins it, an immediate transfer's state is ``scheduled``; cp's
    progress reads ``starting`` (``scheduled`` is for starts that wait for their time).
    No worker polls this queue, so the transfer stays there while cp follows it."""
    source = data_dir / "now.bin"
    source.write_bytes(b"n" * 4096)
    queue = f"nobody-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": temporal_server.address,
        "TEMPORAL_NAMESPACE": "default",
        "STACCATO_TASK_QUEUE": queue,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "staccato.cli", "cp", str(source), str(data_dir / "now.out")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        lines = _lines_until(process, "0 B / ?")
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    shown = "".join(lines)
    assert "starting: 0 B / ?" in shown, shown
    assert "scheduled" not in shown, shown
    plain = await temporal_server.client()
    transfer = shown.split()[1].rstrip(":")
    await plain.get_workflow_handle(transfer).terminate("test over")
