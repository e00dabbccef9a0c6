"""Benchmark: 1 GiB file->file against cp, http->file against curl, and worker memory.

Run by hand: `.venv/bin/python -m bench.bench_file_http [--runs 3]`. Prints markdown
tables: medians of N runs, ratio = peer seconds / staccato seconds (>= 1 means
Staccato is at least as fast). Staccato's time is the whole `staccato cp` command
(submit, copy, publish, verify by re-reading, CLI start-up), as a user sees it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import GiB, MiB, Service, random_file, round_robin, table
from tests.servers.nginx import NginxServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--chunk-size", default="16M")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="staccato-bench-data-", dir="/tmp"))
    work.chmod(0o755)
    source = random_file(work / "1g.bin", GiB)
    destination = work / "out.bin"
    service = Service(processes=max(4, args.streams)).start()
    nginx = NginxServer(work)
    nginx.start()
    options = ["--streams", str(args.streams), "--chunk-size", args.chunk_size, "-q"]

    def remove() -> None:
        destination.unlink(missing_ok=True)
        os.sync()  # the previous run's pages written out: every run starts alike
        time.sleep(1)

    try:
        service.staccato("cp", str(source), str(destination), *options)  # warm-up
        remove()
        url = nginx.url("1g.bin")
        cases: dict[str, Callable[[], object]] = {
            "cp": lambda: subprocess.run(["cp", str(source), str(destination)], check=True),
            "cp + sync": lambda: subprocess.run(
                ["sh", "-c", f"cp {source} {destination} && sync {destination}"], check=True
            ),
            "file ours": lambda: service.staccato("cp", str(source), str(destination), *options),
            "file ours size": lambda: service.staccato(
                "cp", str(source), str(destination), *options, "--verify", "size"
            ),
            "curl": lambda: subprocess.run(
                ["curl", "-sf", "-o", str(destination), url], check=True
            ),
            "http ours": lambda: service.staccato("cp", url, str(destination), *options),
            "http ours size": lambda: service.staccato(
                "cp", url, str(destination), *options, "--verify", "size"
            ),
        }
        # round-robin: every round runs each case once, so the machine's slow and fast
        # spells fall on peers and Staccato alike; medians over the rounds
        seconds = round_robin(args.runs, cases, remove)
        rows = [
            ("file->file", "cp", seconds["cp"], seconds["file ours"]),
            ("file->file", "cp + sync", seconds["cp + sync"], seconds["file ours"]),
            (
                "file->file (--verify size)",
                "cp + sync",
                seconds["cp + sync"],
                seconds["file ours size"],
            ),
            ("http->file", "curl", seconds["curl"], seconds["http ours"]),
            ("http->file (--verify size)", "curl", seconds["curl"], seconds["http ours size"]),
        ]
        print(f"\nstreams={args.streams} chunk={args.chunk_size} runs={args.runs} (medians)\n")
        print(table(rows))
        remove()

        print("\nworker peak RSS (worker + activity processes, fresh worker per size):\n")
        print("| object | peak RSS |\n| --: | --: |")
        peaks = {}
        for size in (256 * MiB, 4 * GiB):
            sparse = work / f"sparse-{size}.bin"
            with open(sparse, "wb") as f:
                f.truncate(size)
            service.stop_worker()
            service.start_worker()
            service.staccato("cp", str(sparse), str(destination), *options, "--verify", "size")
            peaks[size] = service.worker_peak_rss_bytes()
            print(f"| {size // MiB} MiB | {peaks[size] / MiB:.0f} MiB |")
            remove()
            sparse.unlink()
        print(
            f"\nRSS growth 256 MiB -> 4 GiB: {(peaks[4 * GiB] - peaks[256 * MiB]) / MiB:.1f} MiB (goal < 64 MiB)"
        )
    finally:
        nginx.stop()
        service.stop()
        for path in work.iterdir():
            path.unlink()
        os.rmdir(work)


if __name__ == "__main__":
    main()
