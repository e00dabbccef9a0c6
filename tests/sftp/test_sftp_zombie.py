"""A frozen stream writes nothing after it lost its segment (SFTP destination).

An SFTP chunk goes out as pipelined write requests on a handle of the temp file; the
temp file's name is checked once per chunk. A worker frozen (SIGSTOP of its whole
process tree) while its stream waits for the server's acknowledgements, in the
middle of a chunk (its write requests queued on the connection), and woken after the other worker has completed and published the
file, would send the rest of that chunk on its handle, which now leads to the
published file. The stream's lease stops it before its next write request: the
published file's bytes, mtime and ctime stay as published, the server wrote nothing
into it after publish, and no temp file is left.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from staccato.client import StaccatoClient
from staccato.models import TransferOptions
from tests.helpers import (
    MiB,
    WorkerProcess,
    write_random,
)
from tests.servers.sshd import SshdServer
from tests.zombie_checks import (
    check_nothing_written_after_publish,
    freeze_a_writer,
    outlast_the_frozen,
    sending_to,
    short_poll_server,
)

# 4 chunks over 2 streams: the writer is caught in its first chunk, polled from the
# submit on, so more bytes showed nothing more (it was 256 MiB: twice the SFTP copying
# and hashing per transfer)
SIZE = 128 * MiB
CHUNK = 32 * MiB  # many write requests per chunk beyond the 4 MiB in flight
HEARTBEAT_TIMEOUT_S = 3
#: transfers tried until one is caught mid-chunk (each ends by itself when it is not)
_TRIES = 6
OPTIONS = TransferOptions(chunk_size=CHUNK, streams=2, heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S)
_HANDLE = re.compile(r'(?P<what>open|close) "(?P<path>[^"]+\.staccato-part)"')


def _sending_a_chunk(pid: int, port: int) -> bool:
    """Whether ``pid`` is in the middle of a chunk's write requests to the server at
    ``port``: bytes it sent are queued on its connection (a chunk's fsync request and
    journal line are too small to queue 64 KiB; reading the source sends nothing)."""
    return sending_to(pid, port, 64 * 1024)


def _open_handles(log: Path, directory: Path) -> int:
    """Handles on temp files under ``directory`` the server has open now (its log)."""
    count = 0
    for match in _HANDLE.finditer(log.read_text(errors="replace")):
        if match.group("path").startswith(f"{directory}/"):
            count += 1 if match.group("what") == "open" else -1
    return count


async def test_frozen_sftp_stream_writes_nothing_after_losing_its_segment(
    sftp_logged: SshdServer,
    sftp_log: Path,
    env_worker_env: dict[str, str],
    data_dir: Path,
    tmp_path: Path,
) -> None:
    source = data_dir / "src.bin"
    digest = write_random(source, SIZE, seed=32)
    out = data_dir / "out"
    out.mkdir()
    with (
        short_poll_server(tmp_path) as temporal_server,
        WorkerProcess(
            temporal_server.address, processes=2, env=env_worker_env, log_dir=tmp_path
        ) as first,
        WorkerProcess(
            temporal_server.address,
            task_queue=first.task_queue,
            processes=2,
            # another machine's worker: its own SFTP connection slots. With the first
            # worker's lock dir it waited for slots the frozen worker held (its two
            # streams and two pooled connections of an earlier transfer: all 4) and
            # the transfer made no progress in 120 s (ci24)
            env={**env_worker_env, "STACCATO_SFTP_LOCK_DIR": str(tmp_path / "locks-second")},
            log_dir=tmp_path,
        ) as second,
    ):
        async with await StaccatoClient.connect(target_host=temporal_server.address) as client:
            client.task_queue = first.task_queue
            # a moment with a chunk's writes queued is caught by polling: on a busy
            # machine a transfer may end before one is seen, then another is tried
            # (3 tries missed it once at load ~15, ci68: sshd kept up with the writes)
            for attempt in range(_TRIES):
                destination = out / f"zombie-{attempt}.bin"
                transfer = await client.submit(
                    str(source), sftp_logged.url(str(destination)), OPTIONS
                )
                # polled from the submit on: bytes_done grows only when a segment ends
                # (or every 9 s of progress reports), and on a quiet machine 256 MiB
                # were nearly copied by then, so no transfer of 3 was caught
                try:
                    zombie, frozen = await freeze_a_writer(
                        [first, second],
                        lambda pid: _sending_a_chunk(pid, sftp_logged.port),
                        timeout_s=20,
                    )
                    break
                except AssertionError:
                    await asyncio.wait_for(client.wait(transfer), 120)
            else:
                raise AssertionError(f"no chunk write was caught in {_TRIES} transfers")
            print(f"froze worker tree {frozen} mid-chunk")
            published = await outlast_the_frozen(
                client, transfer, frozen, destination,
                size=SIZE, digest=digest, heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S,
            )  # fmt: skip
            # the woken streams end: the server closed every handle on the temp file,
            # and the woken worker's attempts ended
            await check_nothing_written_after_publish(
                client, transfer, destination, published, digest,
                let_go=lambda: _open_handles(sftp_log, out) == 0, temp_dir=out,
                log=lambda: zombie.log_tail(3000),
            )  # fmt: skip
