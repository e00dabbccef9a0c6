"""How long ``staccato list`` and ``staccato status`` take in a namespace full of
closed transfers (10 completed, the rest failed: a missing source), which a query
makes a worker replay, plus 4 running (start delayed by an hour). Each command is
timed 3 times; the median is shown.

    python -m bench.bench_list [--closed 150] [--code DIR ...]

``--code DIR`` (repeatable) times the command of another checkout (e.g. a worktree of
an older commit) against the same namespace, for a before/after comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

from bench.common import REPO, Service
from staccato.client import StaccatoClient


async def populate(service: Service, data: Path, closed: int) -> str:
    """Make the transfers; return one failed transfer's id."""
    source = data / "src.bin"
    source.write_bytes(os.urandom(4096))
    async with await StaccatoClient.connect(target_host=f"127.0.0.1:{service.port}") as client:
        client.task_queue = "bench"
        done = [await client.submit(str(source), str(data / f"ok-{i}.bin")) for i in range(10)]
        failed = [
            await client.submit(str(data / "missing.bin"), str(data / f"bad-{i}.bin"))
            for i in range(closed - len(done))
        ]
        for transfer in done + failed:
            try:
                await client.wait(transfer)
            except Exception:
                pass
        for i in range(4):
            await client.submit(
                str(source), str(data / f"later-{i}.bin"), not_before=timedelta(hours=1)
            )
    return failed[0]


def timed_cli(code: Path, service: Service, *args: str) -> tuple[float, int]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "staccato.cli", *args],
        cwd=code,
        env=service.env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    rows = len(result.stdout.splitlines())
    if result.returncode != 0:
        print(result.stderr, file=sys.stderr)
    return time.monotonic() - started, rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--closed", type=int, default=150)
    parser.add_argument("--code", type=Path, action="append", default=[])
    args = parser.parse_args()
    service = Service().start()
    try:
        data = service.home / "data"
        data.mkdir()
        closed_id = asyncio.run(populate(service, data, args.closed))
        for code in [REPO, *args.code]:
            for command in (["list"], ["list", "--limit", "10"], ["status", closed_id]):
                runs = sorted(timed_cli(code, service, *command) for _ in range(3))
                seconds, rows = runs[1]
                print(f"{code}: staccato {' '.join(command[:3])}: {seconds:.1f} s, {rows} lines")
    finally:
        service.stop()


if __name__ == "__main__":
    main()
