"""Where the CPU goes in a 1 GiB s3->file and file->s3 copy: Staccato vs rclone.

Run by hand (never by the test suite)::

    .venv/bin/python -m bench.cpu_s3 [--size-mib 1024] [--runs 2] [--spy DIR]

One SeaweedFS, one Temporal dev server and one Staccato worker on this machine (as
``bench_loopback``). For each tool and direction, interleaved: wall seconds and CPU
seconds (user + system, :class:`bench.common.CpuMeter`) of the command (``staccato
cp`` or rclone), of the worker's main process and of its activity processes, of the
Temporal dev server and of the store (``weed``), per run, with the load average.
``--spy DIR``: one more Staccato run per direction with py-spy recording the worker
and its activity processes (flame-graph-ready collapsed stacks in DIR).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.bench_s3 import BUCKET
from bench.bench_s3 import _rclone as rclone_binary
from bench.common import (
    CpuMeter,
    MiB,
    Service,
    _children,
    random_file,
    rclone_s3_env,
    server_pids,
)
from tests.servers.seaweedfs import SeaweedS3


def cpu_groups(service: Service, seaweed: SeaweedS3) -> dict[str, Callable[[], list[int]]]:
    """The processes whose CPU a run is charged with, by name (besides the command)."""

    def worker() -> list[int]:
        return [service.worker.pid] if service.worker is not None else []

    def activities() -> list[int]:
        return _children(service.worker.pid) if service.worker is not None else []

    return {
        "worker": worker,
        "activities": activities,
        "temporal": lambda: server_pids(service.server),
        "weed": lambda: server_pids(seaweed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--spy", type=Path, default=None)
    parser.add_argument(
        "--idle", action="store_true", help="py-spy keeps idle samples too (waits on I/O)"
    )
    parser.add_argument(
        "--out-dir", type=Path, default=None, help="where s3->file writes (e.g. /dev/shm)"
    )
    parser.add_argument("--only", choices=["up", "down"], default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="staccato-cpu-s3-", dir="/tmp"))
    source = random_file(work / "src.bin", args.size_mib * MiB)
    out = (args.out_dir or work) / f"{work.name}-out.bin"
    seaweed = SeaweedS3(work / "seaweedfs", max_volumes=200)
    seaweed.start()
    s3 = seaweed.client()
    s3.create_bucket(Bucket=BUCKET)
    rclone_env = rclone_s3_env(seaweed, work)
    service = Service(
        processes=4, env={k: v for k, v in rclone_env.items() if k.startswith("AWS_")}
    ).start()
    rclone = rclone_binary()
    key = "obj.bin"
    url = f"s3://{BUCKET}/{key}"
    options = ["--streams", "4", "--chunk-size", "16M", "-q"]
    groups = cpu_groups(service, seaweed)

    def measure(name: str, run: Callable[[], object]) -> None:
        meter = CpuMeter(groups)
        start = time.perf_counter()
        with meter:
            run()
        print(f"{name:24} wall {time.perf_counter() - start:5.2f} s  {meter.line()}", flush=True)

    def rclone_run(*pair: str) -> Callable[[], object]:
        argv = [rclone, "copyto", *pair, "--s3-upload-concurrency=4",
                "--multi-thread-streams=4", "--s3-chunk-size=16M"]  # fmt: skip
        return lambda: subprocess.run(argv, check=True, env=rclone_env)

    try:
        runs: list[tuple[str, Callable[[], object], Callable[[], object]]] = [
            (
                "staccato file->s3",
                lambda: service.staccato("cp", str(source), url, *options),
                lambda: s3.delete_object(Bucket=BUCKET, Key=key),
            ),
            (
                "rclone file->s3",
                rclone_run(str(source), f"s3:{BUCKET}/{key}"),
                lambda: s3.delete_object(Bucket=BUCKET, Key=key),
            ),
        ]
        down: list[tuple[str, Callable[[], object], Callable[[], object]]] = [
            (
                "staccato s3->file",
                lambda: service.staccato("cp", url, str(out), *options),
                lambda: (out.unlink(missing_ok=True), os.sync()),
            ),
            (
                "rclone s3->file",
                rclone_run(f"s3:{BUCKET}/{key}", str(out)),
                lambda: (out.unlink(missing_ok=True), os.sync()),
            ),
        ]
        chosen = {"up": [runs], "down": [down], None: [runs, down]}[args.only]
        for group in chosen:
            if group is down:
                service.staccato("cp", str(source), url, *options)
            for _ in range(args.runs):
                for name, run, before in group:
                    before()
                    measure(name, run)
            if args.spy:
                args.spy.mkdir(parents=True, exist_ok=True)
                name, run, before = group[0]
                before()
                assert service.worker is not None
                spy_out = args.spy / (name.replace(" ", "_").replace(">", "") + ".txt")
                spy = Path(sys.executable).parent / "py-spy"
                recorder = subprocess.Popen(
                    [str(spy), "record", "--pid", str(service.worker.pid), "--subprocesses",
                     "--format", "raw", "--rate", "100", "--output", str(spy_out),
                     "--nonblocking", *(["--idle"] if args.idle else [])],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                time.sleep(1.5)
                measure(name + " (spied)", run)
                recorder.send_signal(2)
                recorder.wait(60)
            if group is runs:
                s3.delete_object(Bucket=BUCKET, Key=key)
    finally:
        service.stop()
        seaweed.kill()
        out.unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.pop("AWS_CA_BUNDLE", None)
    main()
