"""A frozen stream writes nothing after it lost its segment (file destination).

Two workers on one task queue copy from a slow nginx to a file. The test waits until
a stream's thread is inside a chunk write (its ``fdatasync``), then freezes that
worker's whole process tree (SIGSTOP) for longer than the heartbeat timeout. Temporal
retries the frozen streams on the other worker, which completes and publishes the
file. Then the frozen tree is woken (SIGCONT) and its streams end: the published
file's bytes, inode, mtime and ctime are what they were at publish, and no temp file
is left. (The SFTP destination's case, where a frozen write goes on into the
published file unless the stream's lease stops it: tests/sftp/test_sftp_zombie.py.)
Both run on a Temporal server of their own that lets an open task poll expire after
5 s, so the frozen worker's polls stop taking tasks soon
(``tests.zombie_checks.POLL_EXPIRY``).
"""

from __future__ import annotations

from pathlib import Path

from staccato.client import StaccatoClient
from staccato.models import TransferOptions
from tests.helpers import (
    MiB,
    WorkerProcess,
    at_rest,
    wait_for_status,
    write_random,
)
from tests.servers.nginx import NginxServer, nginx_fixture
from tests.zombie_checks import (
    FDATASYNC,
    PWRITE64,
    blocked_calls,
    check_nothing_written_after_publish,
    freeze_a_writer,
    open_under,
    outlast_the_frozen,
    short_poll_server,
)

SIZE = 48 * MiB
CHUNK = 4 * MiB
HEARTBEAT_TIMEOUT_S = 3
OPTIONS = TransferOptions(chunk_size=CHUNK, streams=2, heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S)

# 4 MB/s per connection: each 24 MiB segment lasts ~6 s
zombie_nginx = nginx_fixture("http_root", scope="function", extra_server_config="limit_rate 4m;")


async def test_frozen_stream_writes_nothing_after_losing_its_segment(
    zombie_nginx: NginxServer,
    http_root: Path,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    digest = write_random(http_root / "zombie.bin", SIZE, seed=31)
    at_rest(http_root / "zombie.bin")
    destination = data_dir / "zombie.bin"
    with (
        short_poll_server(tmp_path) as temporal_server,
        WorkerProcess(temporal_server.address, processes=2, log_dir=tmp_path) as first,
        WorkerProcess(
            temporal_server.address, task_queue=first.task_queue, processes=2, log_dir=tmp_path
        ) as second,
    ):
        async with await StaccatoClient.connect(target_host=temporal_server.address) as client:
            client.task_queue = first.task_queue
            transfer = await client.submit(
                zombie_nginx.url("zombie.bin"), str(destination), OPTIONS
            )
            await wait_for_status(client, transfer, lambda s: s.bytes_done > 0, timeout_s=60)
            zombie, frozen = await freeze_a_writer(
                [first, second],
                lambda pid: (
                    bool({FDATASYNC, PWRITE64} & blocked_calls(pid))
                    and bool(open_under([pid], data_dir))
                ),
            )
            published = await outlast_the_frozen(
                client, transfer, frozen, destination,
                size=SIZE, digest=digest, heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S,
            )  # fmt: skip
            # the woken streams end: they let go of the destination's files
            await check_nothing_written_after_publish(
                client, transfer, destination, published, digest,
                let_go=lambda: not open_under(frozen, data_dir), temp_dir=data_dir,
                log=lambda: zombie.log_tail(4000),
            )  # fmt: skip
