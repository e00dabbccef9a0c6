"""A worker whose activity process or heartbeat manager is SIGKILLed mid-transfer (the
OOM killer, a crash): the same worker process rebuilds its pool and manager and goes
on polling, and the interrupted transfer completes byte-identical."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from staccato.client import StaccatoClient
from staccato.models import TransferOptions, TransferState
from tests.helpers import (
    WORKER_START_S,
    MiB,
    WorkerProcess,
    leftovers,
    pid_alive,
    sha256_file,
    spawned_children,
    write_random,
)
from tests.servers.holding_proxy import HoldingProxy, tcp_socket_owners
from tests.servers.nginx import NginxServer, nginx_fixture
from tests.servers.temporal_server import TemporalDevServer

SIZE = 64 * MiB
CHUNK = 2 * MiB
STREAMS = 4
# A heartbeat timeout a loaded machine does not reach by itself after the kill: at load
# 47 a 3 s one timed the retried streams out again and again (60-82 s to complete).
OPTIONS = TransferOptions(chunk_size=CHUNK, streams=STREAMS, heartbeat_timeout_s=8)
# Seconds the transfer gets to complete after the kill: a few seconds of copying at
# 4 x 8 MB/s and one retry backoff, after a pool restart, which starts the manager and
# every activity process afresh (their imports) and so may take as long as a worker's
# start: at load 60 one took longer than the 90 s this bound was.
FINISH_BOUND_S = WORKER_START_S + 30.0
# The test's worker takes its manager for hung after this many seconds without an answer
# (STACCATO_WORKER_MANAGER_SILENT_S; 60 by default)
MANAGER_SILENT_S = 5
# A fresh transfer shows ``scheduled`` before ``running``: wait for these or progress.
DONE = (TransferState.completed, TransferState.failed, TransferState.cancelled)

# nginx sending at most 8 MB/s per connection, so a transfer lasts a few seconds.
slow_nginx = nginx_fixture("http_root", scope="function", extra_server_config="limit_rate 8m;")


async def _kill_mid_transfer(
    which: str,
    temporal_server: TemporalDevServer,
    slow_nginx: NginxServer,
    http_root: Path,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    """SIGKILL the worker's manager (``which="manager"``) or one activity process
    (``"pool"``) while the source holds the transfer's streams at 30 % of it; the worker
    must outlive it and the transfer complete with the source's bytes, never blaming an
    endpoint."""
    digest = write_random(http_root / f"{which}.bin", SIZE, seed=21)
    destination = data_dir / f"{which}.bin"
    proxy = HoldingProxy(slow_nginx.port, hold_after=int(SIZE * 0.3)).start()
    victim = 0
    try:
        env = {"STACCATO_WORKER_MANAGER_SILENT_S": str(MANAGER_SILENT_S)}
        with WorkerProcess(temporal_server.address, log_dir=tmp_path, env=env) as worker:
            assert worker.process is not None
            client = await StaccatoClient.connect(
                target_host=temporal_server.address, namespace="default"
            )
            client.task_queue = worker.task_queue
            transfer = await client.submit(proxy.url(f"{which}.bin"), str(destination), OPTIONS)
            # the transfer cannot end while held: no window to catch by polling
            await asyncio.to_thread(proxy.wait_held, 60)
            spawned = spawned_children(worker.process.pid)
            assert len(spawned) == 1 + worker.processes, f"manager + pool expected: {spawned}"
            manager, pool = spawned[0], spawned[1:]
            # the processes running this transfer's streams: each is mid-body, holding a
            # source connection the proxy holds
            streams = tcp_socket_owners(proxy.held_ports(), pool)
            assert streams, f"no pool process holds a held connection {proxy.held_ports()}"
            victim = manager if which.startswith("manager") else next(iter(streams.values()))
            assert all(pid_alive(pid) for pid in streams.values()), streams
            # a stopped manager is alive and answers nothing (a hung one alike)
            os.kill(victim, signal.SIGSTOP if which == "manager-stopped" else signal.SIGKILL)
            killed_at = time.monotonic()
            print(f"{which} {victim} killed with {proxy.relayed} of {SIZE} bytes relayed")
            proxy.release()

            reasons: list[str] = []
            deadline = killed_at + FINISH_BOUND_S
            while True:
                assert worker.process.poll() is None, (
                    f"the worker exited ({worker.process.returncode}) after its {which} "
                    f"process was killed:\n{worker.log_tail()}"
                )
                status = await client.status(transfer)
                if status.last_retry_error:
                    reasons.append(status.last_retry_error)
                if status.state in DONE:
                    break
                assert time.monotonic() < deadline, (
                    f"transfer not done {FINISH_BOUND_S} s after the {which} kill: {status}; "
                    f"retry reasons {reasons[-3:]}\n{worker.log_tail()}"
                )
                await asyncio.sleep(0.2)
            took = time.monotonic() - killed_at
            result = await asyncio.wait_for(client.wait(transfer), 30)
            assert not pid_alive(victim)
            assert worker.process.poll() is None, worker.log_tail()
            log = worker.log_tail(200_000)
        print(f"{which} kill: transfer completed {took:.1f} s later; retry reasons {set(reasons)}")
        assert result.bytes == SIZE
        assert sha256_file(destination) == digest
        assert leftovers(data_dir) == []
        assert "restarting the activity processes" in log, log[-4000:]
        for reason in reasons:  # a connection error of the manager must not read as an endpoint's
            assert "Errno" not in reason or "heartbeat channel" in reason, reason
            assert "terminated abruptly" not in reason, reason  # Python's words, not a person's
    finally:
        proxy.release()
        proxy.stop()
        if victim and pid_alive(victim):  # a stopped manager the worker did not kill
            os.kill(victim, signal.SIGKILL)


@pytest.mark.parametrize(
    "which",
    [
        "pool",  # one activity process SIGKILLed
        "manager",  # the heartbeat manager SIGKILLed
        # the manager SIGSTOPped: alive, answering nothing, as a hung one: the worker
        # takes it for hung after STACCATO_WORKER_MANAGER_SILENT_S, kills it and
        # rebuilds, and the transfer completes without a SIGCONT (it waited for good)
        "manager-stopped",
    ],
)
async def test_a_killed_or_hung_process_of_the_worker_mid_transfer(
    which: str,
    temporal_server: TemporalDevServer,
    slow_nginx: NginxServer,
    http_root: Path,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    await _kill_mid_transfer(which, temporal_server, slow_nginx, http_root, data_dir, tmp_path)


def test_crash_loop_stops_the_worker(temporal_server: TemporalDevServer, tmp_path: Path) -> None:
    """Activity processes that keep dying: the worker restarts them a bounded number of
    times, then exits non-zero saying why, rather than spin."""
    # one activity process: each rebuild starts the pool again (6 times), and how
    # many times the worker rebuilds does not depend on its size
    worker = WorkerProcess(temporal_server.address, log_dir=tmp_path, processes=1).start()
    assert worker.process is not None
    try:
        for kill in range(1, 7):
            spawned = spawned_children(worker.process.pid)
            assert len(spawned) == 2, f"manager + 1 pool process expected: {spawned}"
            os.kill(spawned[-1], signal.SIGKILL)
            deadline = time.monotonic() + 60
            while True:
                log = worker.log_path.read_text(errors="replace")
                if worker.process.poll() is not None:
                    break
                if log.count("worker polling again") >= kill:
                    break
                assert time.monotonic() < deadline, f"no restart after kill {kill}:\n{log[-4000:]}"
                time.sleep(0.1)
            if worker.process.poll() is not None:
                break
        worker.process.wait(30)
        log = worker.log_path.read_text(errors="replace")
        print(f"crash loop: worker exited {worker.process.returncode} after {kill} kills")
        assert worker.process.returncode != 0
        assert kill == 6, f"stopped after {kill} kills:\n{log[-4000:]}"
        assert "the worker stops rather than restart them in a loop" in log, log[-4000:]
    finally:
        worker.kill()
