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
from tests.servers.nginx import nginx_fixture

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "start_with_temporalio.py"
slow_source = nginx_fixture("http_root", scope="module", extra_server_config="limit_rate 2m;")
#: runs of each client: the crash came in a run of several, by chance; the threads check
#: (below) shows its cause, a runtime thread left at exit, in every run, so a couple of
#: runs suffice (STACCATO_TEST_EXIT_RUNS=20 to hunt the crash itself; 5 runs cost
#: ~20 s of a loaded suite, each a fresh interpreter importing temporalio)
RUNS = int(os.environ.get("STACCATO_TEST_EXIT_RUNS", "2"))

# Runs a script as __main__, then reports the process's OS threads while the
# interpreter is still fully alive: 1 means no runtime thread is left to race
# the interpreter's teardown. A dropped runtime's threads take a moment to leave
# the kernel's list on a busy machine, so it waits for them, up to 10 s (a runtime
# still referenced keeps its threads for good), and names any left.
_THREADS_AFTER = (
    "import os, runpy, sys, time\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    "deadline = time.monotonic() + 10\n"
    "while len(os.listdir('/proc/self/task')) > 1 and time.monotonic() < deadline:\n"
    "    time.sleep(0.02)\n"
    "tasks = os.listdir('/proc/self/task')\n"
    "print('os threads after main:', len(tasks))\n"
    "print('threads:', [open(f'/proc/self/task/{t}/comm').read().strip() for t in tasks])\n"
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


async def test_example_never_attaches_to_another_source(
    temporal_server, worker, client, slow_source, http_root: Path, data_dir: Path
) -> None:
    """While a transfer from another source writes the destination, the example fails
    with "destination busy" (it does not attach to that transfer and report its
    result as its own copy)."""
    from staccato.models import TransferOptions, TransferState
    from tests.helpers import wait_for_status

    other = http_root / "example-other.bin"
    write_random(other, 16 * MiB, seed=22)  # 8 s at 2 MiB/s
    mine = data_dir / "mine.bin"
    write_random(mine, 1 * MiB, seed=23)
    destination = data_dir / "busy.bin"
    holder = await client.submit(
        slow_source.url(other.name), str(destination), TransferOptions(streams=1, chunk_size=MiB)
    )
    await wait_for_status(client, holder, lambda s: s.state == TransferState.running)
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), str(mine), str(destination)],
        capture_output=True,
        text=True,
        env=_env(temporal_server, worker),
        timeout=120,
    )
    await client.cancel(holder)
    assert done.returncode != 0, done.stdout
    assert "destination busy" in done.stderr, done.stderr[-2000:]
