"""Clients exit cleanly: the example that starts a transfer with plain temporalio, and
a script using ``StaccatoClient`` as an async context manager, stop their Temporal
runtime's native threads before the interpreter is torn down (a thread still handing
a reply to Python then crashed the exit: rc 139, or rc 134 "PyGILState_Release")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import MiB, sha256_file, write_random

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "start_with_temporalio.py"
RUNS = int(os.environ.get("STACCATO_TEST_EXIT_RUNS", "5"))

# Runs a script as __main__, then reports the process's OS threads while the
# interpreter is still fully alive: 1 means no runtime thread is left to race
# the interpreter's teardown.
_THREADS_AFTER = (
    "import os, runpy, sys\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    "print('os threads after main:', len(os.listdir('/proc/self/task')))\n"
)

_CONTEXT_MANAGER = """
import asyncio, sys
from staccato.client import StaccatoClient
from staccato.errors import TransferNotFoundError

async def main() -> None:
    async with await StaccatoClient.connect(target_host=sys.argv[1], namespace="default") as s:
        print("pollers:", await s.pollers())
        try:
            await s.status(sys.argv[2])
        except TransferNotFoundError as err:
            print("status:", err)

asyncio.run(main())
"""


def _env(temporal_server, worker) -> dict[str, str]:
    return {
        **os.environ,
        "TEMPORAL_ADDRESS": temporal_server.address,
        "STACCATO_TASK_QUEUE": worker.task_queue,
    }


def test_example_exits_zero_every_time(temporal_server, worker, data_dir: Path) -> None:
    source = data_dir / "source.bin"
    write_random(source, 3 * MiB, seed=21)
    env = _env(temporal_server, worker)
    for run in range(RUNS):
        destination = data_dir / f"copy-{run}.bin"
        done = subprocess.run(
            [sys.executable, str(EXAMPLE), str(source), str(destination)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert done.returncode == 0, (run, done.returncode, done.stderr[-2000:])
        assert "checksum" in done.stdout, done.stdout
        assert sha256_file(destination) == sha256_file(source)
    # the cause, every time rather than in one run of ten: no runtime thread is left
    destination = data_dir / "copy-threads.bin"
    done = subprocess.run(
        [sys.executable, "-c", _THREADS_AFTER, str(EXAMPLE), str(source), str(destination)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "os threads after main: 1\n" in done.stdout, done.stdout


def test_client_context_manager_stops_its_threads(
    temporal_server, worker, data_dir: Path, tmp_path: Path
) -> None:
    script = tmp_path / "status.py"
    script.write_text(_CONTEXT_MANAGER)
    for _ in range(RUNS):
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                _THREADS_AFTER,
                str(script),
                temporal_server.address,
                str(data_dir / "nothing.bin"),
            ],
            capture_output=True,
            text=True,
            env=_env(temporal_server, worker),
            cwd=REPO,
            timeout=60,
        )
        assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
        assert "pollers: 1" in done.stdout and "status: no transfer" in done.stdout, done.stdout
        assert "os threads after main: 1\n" in done.stdout, done.stdout
