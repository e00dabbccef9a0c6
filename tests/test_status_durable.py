"""``bytes_durable`` and the rate while every attempt fails on a full disk (a newcomer
tester's report): a 32 MiB download in 8 MiB chunks into a 40 MiB file system that
someone else fills once two chunks are journaled. Each retried attempt reads a chunk
from the source and fails to write it. Before, ``bytes_done`` counted that chunk in
flight (it "includes the running streams' last heartbeats"): 32 MiB showed where
16 MiB were durable, while retrying and in the final ``failed`` status alike, and a
rate showed while no byte became durable. Now ``bytes_durable`` (``status --json``,
the Python status, and the human ``status`` where it differs from ``bytes_done``)
says what is journaled, and the rate counts durable bytes only: none while every
attempt fails."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from staccato.client import StaccatoClient
from staccato.errors import TransferFailedError
from staccato.models import TransferOptions, TransferState
from tests.helpers import MiB, WorkerProcess, at_rest, mounted_tmpfs, run_cli, write_random
from tests.servers.nginx import NginxServer, nginx_fixture
from tests.test_file_space import _fill, _journal_lines, _wait_for_journal

#: 4 MB/s per connection: an 8 MiB chunk takes ~2 s to read, so the filler fills the
#: disk while the third chunk is read, and each retried attempt reads for ~2 s
paced_nginx = nginx_fixture("http_root", scope="function", extra_server_config="limit_rate 4m;")

CHUNK = 8 * MiB


async def test_a_full_disk_shows_the_durable_bytes_and_no_rate_while_attempts_fail(
    client: StaccatoClient,
    worker: WorkerProcess,
    temporal_server,  # noqa: ANN001
    paced_nginx: NginxServer,
    http_root: Path,
    tmp_path: Path,
) -> None:
    size = 32 * MiB
    write_random(http_root / "durable.bin", size, seed=53)
    at_rest(http_root / "durable.bin")  # read once: no re-read before publish
    args = {"address": temporal_server.address, "task_queue": worker.task_queue}
    with mounted_tmpfs(tmp_path / "small40", "40m") as small:
        # a few retried attempts (each reads a chunk for ~2 s, then 1, 2, 4 s backoffs)
        # before it gives up: 25 s polled more of the same statuses
        options = TransferOptions(chunk_size=CHUNK, streams=1, retry_for_s=12)
        transfer = await client.submit(
            paced_nginx.url("durable.bin"), str(small / "durable.bin"), options
        )
        await _wait_for_journal(small, 2)
        _fill(small, MiB)  # no room for another chunk: every attempt's write fails
        journaled = _journal_lines(small) * CHUNK
        assert journaled >= 2 * CHUNK
        rates: list[float] = []
        overstated = 0  # statuses whose bytes_done counted a chunk in flight
        retrying = None
        kept_shown: str | None = None  # the human status while a chunk is in flight
        deadline = time.monotonic() + 180
        while True:
            current = await client.status(transfer)
            if current.state == TransferState.failed:
                break
            if retrying is not None and current.rate_bytes_per_s is not None:
                # an attempt after the first failure: it reads a chunk (its retry note
                # is then not shown) and fails to write it; nothing becomes durable
                rates.append(current.rate_bytes_per_s)
            if "bytes free" in (current.last_retry_error or ""):  # the disk is full
                retrying = current
                durable = getattr(current, "bytes_durable", None)
                assert durable == journaled, (durable, journaled, current)
                overstated += current.bytes_done > journaled
                if current.bytes_done > journaled and kept_shown is None:
                    kept_shown = run_cli("status", transfer, **args).stdout
            assert time.monotonic() < deadline, current
            await asyncio.sleep(0.1)
        print(f"journaled {journaled // MiB} MiB; rates shown after the first failure: {rates}")
        print(f"statuses counting a chunk in flight: {overstated}")
        assert retrying is not None, "no status while the attempts retried"
        # each attempt read a chunk and failed to write it: nothing became durable
        assert rates == [], rates
        if kept_shown is not None:
            print(kept_shown)
            said = f"bytes_durable      {journaled // MiB}.0 MiB (50%) kept (journaled"
            assert said in kept_shown or "state              failed" in kept_shown, kept_shown
        try:
            await asyncio.wait_for(client.wait(transfer), 60)
        except TransferFailedError as err:
            assert "bytes free" in str(err), err
        # the run has ended and its clean-up removed the temp file and journal: nothing
        # is kept (a tester read "8.0 MiB durable when it ended" with the temp gone)
        left = [p.name for p in small.iterdir() if ".staccato-" in p.name]
        assert left == [], left
        with_json = json.loads(run_cli("status", "--json", transfer, **args).stdout)
        assert with_json["state"] == "failed", with_json
        assert with_json["bytes_durable"] == 0, with_json
        assert with_json["bytes_done"] >= journaled, with_json
        assert with_json["rate_bytes_per_s"] is None, with_json
        assert with_json["cancel_requested"] is False, with_json
        ended = await client.status(transfer)
        assert ended.bytes_durable == 0, ended
        shown = run_cli("status", transfer, **args).stdout
        print(shown)
        assert "nothing kept, the run's clean-up removed its partial data" in shown, shown
