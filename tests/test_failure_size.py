"""Why a transfer is retrying stays readable however long its reason is.

Temporal keeps a retried activity's last failure in the workflow's mutable state only
up to a size (the server's ``limit.mutableStateActivityFailureSize.error``); a larger
one is replaced by "Failure exceeds size limit." (what ``status`` showed here). A stream's failure comes back from its worker process with the
process's whole traceback text as its cause, so a long URL in the message was enough
to lose the reason that ``status`` shows. The worker bounds each activity failure
(message, traceback text, stack) below that size.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from staccato.client import StaccatoClient
from staccato.models import TransferOptions, TransferState
from tests.helpers import MiB, sha256_file, wait_for_status, write_random
from tests.servers.nginx import NginxServer, nginx_fixture

SIZE = 32 * MiB
OPTIONS = TransferOptions(chunk_size=2 * MiB, streams=2, heartbeat_timeout_s=3)

slow_nginx = nginx_fixture("http_root", scope="function", extra_server_config="limit_rate 4m;")


async def test_a_long_retry_reason_is_kept_whole(
    client: StaccatoClient, slow_nginx: NginxServer, http_root: Path, data_dir: Path
) -> None:
    """The source (a URL of ~1,400 characters) goes down mid-copy: while the streams
    are retried, ``status`` says why, naming the source, never "Failure exceeds size
    limit"; once it is back the copy completes, bytes equal."""
    parts = [f"{i}" + "d" * 190 for i in range(7)]
    relative = "/".join(parts) + "/long.bin"
    (http_root / relative).parent.mkdir(parents=True)
    digest = write_random(http_root / relative, SIZE, seed=12)
    destination = data_dir / "long.bin"
    transfer = await client.submit(slow_nginx.url(relative), str(destination), OPTIONS)
    await wait_for_status(
        client,
        transfer,
        lambda s: s.state != TransferState.queued and s.bytes_done > 0,
        timeout_s=60,
    )
    slow_nginx.stop()
    reasons: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = await client.status(transfer)
            reason = status.last_retry_error or ""
            if reason not in reasons:
                reasons.append(reason)
            if "Heartbeat" not in reason and "attempt 3" in reason:
                break
            await asyncio.sleep(0.3)
    finally:
        slow_nginx.start()
    print(reasons)
    result = await client.wait(transfer)
    assert result.bytes == SIZE
    assert sha256_file(destination) == digest
    retried = [r for r in reasons if r.startswith("attempt") and "Heartbeat" not in r]
    assert retried, reasons
    for reason in retried:
        assert "exceeds size limit" not in reason, reasons
        assert "127.0.0.1" in reason, reason
