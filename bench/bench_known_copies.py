"""Benchmark: known copies as sources. An origin capped at ~20 MB/s in total (nginx
behind a loopback pacing proxy); transfer 1 origin -> D1 (file), then transfer 2 of
the same source version -> D2 (file), which reads the verified copy D1; and, as a
control, transfer 3 -> D3 with ``--from-origin``.

Run by hand: ``.venv/bin/python -m bench.bench_known_copies [--size-mib 256] [--runs 3]``.
Each run writes a new source version (new bytes), so transfer 1 finds no copy and
transfer 2 finds D1. Times are whole ``staccato cp`` commands (submit, copy, publish,
verify, CLI start-up) as a user sees them; the acceptance is transfer 2 <= 0.3 x
transfer 1. Prints per-run times, the origin's bytes for transfers 1+2 (nginx access
log; acceptance <= 1.1 x size), and where transfer 2 read from (``status --json``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from bench.common import REPO, MiB, Service, timed
from tests.servers.nginx import NginxServer
from tests.servers.pacing_proxy import PacingProxy

#: the origin's cap, bytes per second over all connections
ORIGIN_RATE = 20_000_000


def _origin_bytes(nginx: NginxServer, name: str) -> int:
    return sum(
        int(r["body_bytes_sent"])
        for r in nginx.requests()
        if r["method"] == "GET" and r["uri"].endswith(f"/{name}")
    )


def _status(service: Service, destination: Path) -> dict[str, object]:
    shown = subprocess.run(
        [sys.executable, "-m", "staccato.cli", "status", str(destination), "--json"],
        env=service.env,
        check=True,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(shown.stdout))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--chunk-size", default="16M")
    args = parser.parse_args()
    size = args.size_mib * MiB

    work = Path(tempfile.mkdtemp(prefix="staccato-bench-copies-", dir="/tmp"))
    work.chmod(0o755)
    service = Service(processes=max(4, args.streams)).start()
    nginx = NginxServer(work)
    nginx.start()
    proxy = PacingProxy(nginx.port, ORIGIN_RATE).start()
    options = ["--streams", str(args.streams), "--chunk-size", args.chunk_size, "-q"]
    rows: list[tuple[float, float, float, int, str]] = []
    try:
        for run in range(args.runs):
            name = f"source-{run}.bin"
            with open(work / name, "wb") as out:  # a new version each run
                for _ in range(0, size, 64 * MiB):
                    out.write(os.urandom(min(64 * MiB, size)))
                out.truncate(size)
            (work / name).chmod(0o644)
            past = time.time() - 3600  # at rest (see tests.helpers.at_rest)
            os.utime(work / name, (past, past))
            url = proxy.url(name)
            d1, d2, d3 = (work / f"d{i}-{run}.bin" for i in (1, 2, 3))
            nginx.clear_log()
            t1 = timed(partial(service.staccato, "cp", url, str(d1), *options))
            # visibility lists transfer 1 as completed within a moment of its end
            time.sleep(1)
            t2 = timed(partial(service.staccato, "cp", url, str(d2), *options))
            served = _origin_bytes(nginx, name)
            read_from = str(_status(service, d2).get("read_from"))
            t3 = timed(partial(service.staccato, "cp", url, str(d3), "--from-origin", *options))
            rows.append((t1, t2, t3, served, read_from))
            print(
                f"run {run}: t1 {t1:.2f} s, t2 {t2:.2f} s (ratio {t2 / t1:.3f}), "
                f"--from-origin {t3:.2f} s; origin served {served} bytes for 1+2 "
                f"({served / size:.3f} x size); transfer 2 read from {read_from}",
                flush=True,
            )
            for path in (d1, d2, d3, work / name):
                path.unlink(missing_ok=True)
    finally:
        proxy.stop()
        nginx.stop()
        service.stop()
    t1s, t2s, t3s = ([r[i] for r in rows] for i in range(3))
    print()
    print(f"origin capped at {ORIGIN_RATE / 1e6:.0f} MB/s; source {args.size_mib} MiB; ", end="")
    print(f"{args.streams} streams, chunk {args.chunk_size}; medians of {len(rows)} runs")
    print("| transfer | median s | ratio to transfer 1 |")
    print("| --- | --: | --: |")
    m1 = statistics.median(t1s)
    for label, values in (
        ("1: origin -> D1", t1s),
        ("2: -> D2 (reads D1)", t2s),
        ("3: -> D3 --from-origin", t3s),
    ):
        m = statistics.median(values)
        print(f"| {label} | {m:.2f} | {m / m1:.3f} |")
    print(f"origin bytes for transfers 1+2: max {max(r[3] for r in rows) / size:.3f} x size")


if __name__ == "__main__":
    main()
