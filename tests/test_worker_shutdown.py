"""SIGTERM to a worker's whole process group (what systemd's control-group kill,
``docker stop`` and Kubernetes send): every process of the group exits within a
bound, a busy worker's streams stop cleanly, and the transfer later completes on a
new worker re-sending less than streams x chunk size."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from staccato.client import StaccatoClient
from staccato.models import TransferOptions, TransferState
from tests.helpers import (
    REPO,
    WORKER_START_S,
    MiB,
    WorkerProcess,
    at_rest,
    sha256_file,
    write_random,
)
from tests.servers.holding_proxy import HoldingProxy
from tests.servers.nginx import NginxServer
from tests.servers.temporal_server import TemporalDevServer

SIZE = 64 * MiB
CHUNK = 2 * MiB
STREAMS = 4
# A heartbeat timeout a loaded machine never reaches by itself (at load 30 a stream
# went 3 s without a heartbeat before the SIGTERM, and the blocked-stream guard's
# traceback then failed the test): the SIGTERM's streams are retried at once anyway,
# when the worker reports them stopped, not when their heartbeats time out.
OPTIONS = TransferOptions(chunk_size=CHUNK, streams=STREAMS, heartbeat_timeout_s=15)
# Every process of the group is gone this long after SIGTERM: the graceful shutdown
# time the test sets (2 s) + cancelling the streams + exiting, with room for a slow VM.
EXIT_BOUND_S = 15.0

# What the source sends (bytes per second, all streams together) from the SIGTERM on:
# data keeps arriving, so the streams are busy, but the 70 % left would take longer
# than the exit bound, so the transfer cannot end before the group has stopped.
TRICKLE_BYTES_PER_S = 2 * MiB


def _group(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid`` (Linux /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


class _GroupWorker:
    """``staccato worker`` as the leader of its own process group."""

    def __init__(self, address: str, task_queue: str, log: Path) -> None:
        self.log = log
        env = {
            **os.environ,
            "TEMPORAL_ADDRESS": address,
            "TEMPORAL_NAMESPACE": "default",
            "STACCATO_TASK_QUEUE": task_queue,
            "STACCATO_WORKER_SHUTDOWN_TIMEOUT_S": "2",
        }
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "staccato.cli", "worker", "--processes", "4"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=REPO,
                start_new_session=True,
            )
        deadline = time.monotonic() + WORKER_START_S
        while b"worker polling" not in log.read_bytes():
            assert self.process.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, f"worker did not start in {WORKER_START_S:g} s"
            time.sleep(0.1)
        self.pgid = self.process.pid

    def terminate_group(self) -> float:
        """SIGTERM every process of the group; seconds until all of them are gone.

        Raises:
            AssertionError: some are still alive after ``EXIT_BOUND_S`` (then killed).
        """
        members = _group(self.pgid)
        assert len(members) >= 3, f"expected worker + pool + manager, got {members}"
        started = time.monotonic()
        os.killpg(self.pgid, signal.SIGTERM)
        while time.monotonic() - started < EXIT_BOUND_S:
            self.process.poll()  # reap the leader
            if not _group(self.pgid):
                # the leader may have exited after the poll above (ci63): reap it now
                self.process.wait(timeout=EXIT_BOUND_S)
                return time.monotonic() - started
            time.sleep(0.1)
        left = _group(self.pgid)
        os.killpg(self.pgid, signal.SIGKILL)
        raise AssertionError(
            f"processes {left} of the worker's group still alive {EXIT_BOUND_S} s after "
            f"SIGTERM:\n{self.log.read_text(errors='replace')[-4000:]}"
        )


async def test_sigterm_to_idle_worker_group(
    temporal_server: TemporalDevServer, data_dir: Path, tmp_path: Path
) -> None:
    """Idle after a transfer (its pool processes have run activities)."""
    queue = f"idle-sigterm-{os.getpid()}"
    worker = _GroupWorker(temporal_server.address, queue, tmp_path / "worker.log")
    client = await StaccatoClient.connect(target_host=temporal_server.address, namespace="default")
    client.task_queue = queue
    write_random(data_dir / "small.bin", 4 * MiB, seed=14)
    transfer = await client.submit(str(data_dir / "small.bin"), str(data_dir / "copy.bin"))
    await asyncio.wait_for(client.wait(transfer), 60)
    took = worker.terminate_group()
    print(f"idle worker group exited {took:.1f} s after SIGTERM")
    assert worker.process.returncode is not None


async def test_sigterm_to_busy_worker_group(
    temporal_server: TemporalDevServer,
    nginx_ranges: NginxServer,
    http_root: Path,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    """The source holds the transfer at 30 % (so it cannot end before the SIGTERM,
    however loaded the machine: a copy from a local nginx once completed before a poll
    for 30 % saw it), then trickles at ``TRICKLE_BYTES_PER_S`` while the group stops:
    the streams are busy (receiving) when the SIGTERM arrives and cannot finish within
    the exit bound. The source's bytes are counted where the worker receives them, at
    the proxy: nginx counts what it wrote into the loopback buffers, and a held reader
    leaves megabytes there that no worker ever read."""
    digest = write_random(http_root / "term.bin", SIZE, seed=13)
    at_rest(http_root / "term.bin")
    destination = data_dir / "term.bin"
    queue = f"busy-sigterm-{os.getpid()}"
    proxy = HoldingProxy(nginx_ranges.port, hold_after=int(SIZE * 0.3)).start()
    worker: _GroupWorker | None = None
    try:
        worker = _GroupWorker(temporal_server.address, queue, tmp_path / "worker.log")
        client = await StaccatoClient.connect(
            target_host=temporal_server.address, namespace="default"
        )
        client.task_queue = queue
        transfer = await client.submit(proxy.url("term.bin"), str(destination), OPTIONS)
        await asyncio.to_thread(proxy.wait_held, 60)
        status = await client.status(transfer)
        assert status.state == TransferState.running, status
        proxy.rate = TRICKLE_BYTES_PER_S
        proxy.release()
        took = worker.terminate_group()
        stopped_at = proxy.relayed
        print(f"busy worker group exited {took:.1f} s after SIGTERM, {stopped_at} bytes relayed")
        assert stopped_at < SIZE, f"the streams were not stopped: {stopped_at} bytes relayed"
        log = (tmp_path / "worker.log").read_text(errors="replace")
        assert "Traceback" not in log, log[-4000:]

        proxy.rate = 10e9
        with WorkerProcess(
            temporal_server.address, task_queue=queue, processes=2, log_dir=tmp_path
        ):
            result = await asyncio.wait_for(client.wait(transfer), 120)
        # every response byte the worker was sent (headers and stat probes included)
        sent = proxy.relayed
    finally:
        proxy.release()
        proxy.stop()
        if worker is not None and _group(worker.pgid):  # an assertion failed before the stop
            os.killpg(worker.pgid, signal.SIGKILL)
    assert result.bytes == SIZE
    assert sha256_file(destination) == digest
    print(f"SIGTERM: source sent {sent} bytes for {SIZE}: re-sent {sent - SIZE}")
    assert sent - SIZE < STREAMS * CHUNK, f"re-sent {sent - SIZE} bytes"
