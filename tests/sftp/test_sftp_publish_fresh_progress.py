"""A publish writing a fresh copy shows that copy's progress, not a stalled step
(tester73 M3).

After an earlier worker life (SIGKILLed mid-copy, its writers' entries left in the
temp file's writers directory), an SFTP publish cannot rule out a stale writer: it
copies the journal-vouched bytes into a fresh file (``docs/sftp.md``). Against a
server that writes that copy slowly (``sftp_paced_fresh``: 4 MiB/s, every other request
at full speed) the copy takes ~12 s; ``status`` said ``stalled: publish: waiting for
... to answer`` from 5 s on while the copy grew. Now the publish's heartbeats say when
it last moved bytes and how many (``PublishBeat``): ``status`` shows
``publish_copied_bytes`` growing, the cp line ``publishing: writing a fresh copy``, and
no ``stalled_step`` while the bytes move; once the server stops answering (its relay
SIGSTOPped mid-copy) the publish waits for it (``publish_waiting_since``: its worker
heartbeats, so not ``stalled_step``, which is for a publish whose heartbeats stopped;
tests/s3/test_s3_publish_wait.py).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from staccato.cli.render import progress_text
from staccato.client import StaccatoClient
from staccato.models import TransferOptions, TransferState
from tests.helpers import (
    MiB,
    WorkerProcess,
    leftovers,
    sha256_file,
    signal_all,
    wait_for_status,
    write_random,
)
from tests.servers.sshd import SshdServer


def _relays(server: SshdServer) -> list[int]:
    """The pids of ``server``'s relay processes (``sftp_proxy.py``, one per session)."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"sftp_proxy.py" in command and str(server.work_dir.resolve()).encode() in command:
            pids.append(int(pid))
    return pids


def _journal_lines(directory: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in directory.glob(".*.staccato-journal"))


async def test_a_publish_writing_a_fresh_copy_shows_it_moving_not_stalled(
    temporal_server,
    sftp_paced_fresh: SshdServer,
    env_worker_env: dict[str, str],
    data_dir: Path,
    tmp_path: Path,
) -> None:
    # 48 MiB in 4 MiB chunks, paced to 8 MiB/s so the kill (once 3 chunks are durable)
    # comes mid-copy; the fresh copy at 4 MiB/s takes ~12 s, past RATE_CURRENT_S (5 s)
    size, chunk = 48 * MiB, 4 * MiB
    source = data_dir / "src.bin"
    digest = write_random(source, size, seed=73)
    out = data_dir / "out"
    out.mkdir()
    destination = out / "fresh.bin"
    known_hosts = Path(env_worker_env["STACCATO_SSH_KNOWN_HOSTS"])
    known_hosts.write_text(known_hosts.read_text() + sftp_paced_fresh.known_hosts_path.read_text())
    first = WorkerProcess(
        temporal_server.address, processes=2, env=env_worker_env, log_dir=tmp_path
    ).start()
    client = await StaccatoClient.connect(target_host=temporal_server.address, namespace="default")
    client.task_queue = first.task_queue
    options = TransferOptions(chunk_size=chunk, streams=2, heartbeat_timeout_s=3, max_rate=8 * MiB)
    transfer = await client.submit(str(source), sftp_paced_fresh.url(str(destination)), options)
    deadline = time.monotonic() + 60
    while _journal_lines(out) < 3:
        assert time.monotonic() < deadline, "the transfer made no progress"
        await asyncio.sleep(0.01)
    first.kill()  # its writers' entries stay: publish writes a fresh copy
    assert _journal_lines(out) < size // chunk, "the transfer finished before the kill"
    second = WorkerProcess(
        temporal_server.address,
        task_queue=first.task_queue,
        processes=2,
        env=env_worker_env,
        log_dir=tmp_path,
    ).start()
    publishing = []  # statuses in phase publish
    stall_seen = None
    try:
        # until half the fresh copy is written (6 s or more into the publish), or the end
        deadline = time.monotonic() + 180
        while True:
            status = await client.status(transfer)
            if status.state != TransferState.running:
                break
            if status.phase == "publish":
                publishing.append(status)
                if (getattr(status, "publish_copied_bytes", None) or 0) >= size // 2:
                    break
            assert time.monotonic() < deadline, f"not completed in time: {status}"
            await asyncio.sleep(0.2)
        stalled = [s for s in publishing if s.stalled_step is not None]
        assert not stalled, f"a publish writing a fresh copy was shown as stalled: {stalled[0]}"
        moving = [s for s in publishing if getattr(s, "publish_copied_bytes", None)]
        assert moving, f"no status showed the fresh copy's progress: {publishing[-1:]}"
        # the server stops answering mid-copy: the publish waits for it, since its
        # last bytes moved (its worker heartbeats: not a stalled step)
        relays = _relays(sftp_paced_fresh)
        assert relays, "no relay process of the paced server"
        signal_all(relays, signal.SIGSTOP)
        try:
            stall_seen = await wait_for_status(
                client, transfer, lambda s: s.publish_waiting_since is not None, timeout_s=60
            )
        finally:
            signal_all(relays, signal.SIGCONT)
        result = await asyncio.wait_for(client.wait(transfer), 120)
    finally:
        second.stop()
    assert any(s.publish_rate_bytes_per_s for s in moving), moving[-1]
    assert all(s.publish_bytes_total == size for s in moving), moving[-1]
    assert moving[-1].publish_copied_bytes > moving[0].publish_copied_bytes, "the copy grew"
    text = progress_text(moving[-1])
    assert "publishing: writing a fresh copy" in text and "stalled" not in text, text
    print(f"{len(publishing)} statuses in publish, {len(moving)} with the fresh copy: {text}")
    stall_text = progress_text(stall_seen)
    assert "publishing: writing a fresh copy " in stall_text, stall_text
    assert "waiting for sftp://" in stall_text and "to answer since" in stall_text, stall_text
    assert "stalled" not in stall_text and stall_seen.stalled_step is None, stall_seen
    assert stall_seen.publish_rate_bytes_per_s is None, stall_seen
    print(f"server stopped: {stall_text}")
    assert result.bytes == size
    assert sha256_file(destination) == digest
    assert leftovers(out) == []
