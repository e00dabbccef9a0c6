"""Where the CPU goes in a 1 GiB s3->file and file->s3 copy: Staccato vs rclone.

Run by hand (never by the test suite)::

    .venv/bin/python -m bench.cpu_s3 [--size-mib 1024] [--runs 2] [--spy DIR]

One SeaweedFS, one Temporal dev server and one Staccato worker on this machine (as
``bench_loopback``). For each tool and direction: wall seconds and CPU seconds
(user + system) of the tool's own processes (for Staccato: the ``staccato cp`` command,
and the worker with its activity processes, read from ``/proc/PID/stat``), and of the
store (``weed``), per run. ``--spy DIR``: one more Staccato run per direction with
py-spy recording the worker and its activity processes (flame-graph-ready collapsed
stacks in DIR).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.bench_s3 import BUCKET
from bench.bench_s3 import _rclone as rclone_binary
from bench.common import MiB, Service, _children, random_file
from tests.servers.seaweedfs import SeaweedS3

_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pids: list[int]) -> float:
    """utime + stime (seconds) of ``pids`` (threads included, children not)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--spy", type=Path, default=None)
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
    s3_env = {k: v for k, v in seaweed.subprocess_env().items() if k != "AWS_CA_BUNDLE"}
    service = Service(
        processes=4, env={k: v for k, v in s3_env.items() if k.startswith("AWS_")}
    ).start()
    (work / "rclone.conf").write_text("")
    rclone_env = {
        **s3_env,
        "RCLONE_CONFIG": str(work / "rclone.conf"),
        "RCLONE_CONFIG_S3_TYPE": "s3",
        "RCLONE_CONFIG_S3_PROVIDER": "SeaweedFS",
        "RCLONE_CONFIG_S3_ENDPOINT": seaweed.endpoint_url,
        "RCLONE_CONFIG_S3_ACCESS_KEY_ID": seaweed.access_key,
        "RCLONE_CONFIG_S3_SECRET_ACCESS_KEY": seaweed.secret_key,
        "RCLONE_CONFIG_S3_REGION": seaweed.region,
        "RCLONE_CONFIG_S3_FORCE_PATH_STYLE": "true",
    }
    rclone = rclone_binary()
    key = "obj.bin"
    url = f"s3://{BUCKET}/{key}"
    options = ["--streams", "4", "--chunk-size", "16M", "-q"]
    proc = getattr(seaweed, "_proc", None)
    weed_pids = [proc.pid] + _children(proc.pid) if proc is not None else []

    def worker_pids() -> list[int]:
        assert service.worker is not None
        return [service.worker.pid] + _children(service.worker.pid)

    def measure(name: str, run: Callable[[], object]) -> None:
        pids = worker_pids() if name.startswith("staccato") else []
        before = (_cpu_s(pids), _children_cpu_s(), _cpu_s(weed_pids), time.perf_counter())
        run()
        after = (_cpu_s(pids), _children_cpu_s(), _cpu_s(weed_pids), time.perf_counter())
        worker, command, store, wall = (b - a for a, b in zip(before, after, strict=True))
        print(
            f"{name:24} wall {wall:5.2f} s  command cpu {command:5.2f} s  worker cpu "
            f"{worker:5.2f} s  store cpu {store:5.2f} s  load {os.getloadavg()[0]:.1f}",
            flush=True,
        )

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
        groups = {"up": [runs], "down": [down], None: [runs, down]}[args.only]
        for group in groups:
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
                spy_out = args.spy / (name.replace(" ", "_").replace(">", "") + ".txt")
                spy = Path(sys.executable).parent / "py-spy"
                recorder = subprocess.Popen(
                    [str(spy), "record", "--pid", str(worker_pids()[0]), "--subprocesses",
                     "--format", "raw", "--rate", "100", "--output", str(spy_out),
                     "--nonblocking"],
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
