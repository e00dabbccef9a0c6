"""A/B: this checkout's Staccato against another checkout's, s3->file / file->s3, with
rclone, in one run (interleaved rounds, medians), with each worker's CPU seconds.

Run by hand (never by the test suite)::

    .venv/bin/python -m bench.ab_s3 --other /work/main [--runs 3] [--rows down up]

Each checkout runs its own worker (its own venv's python, its own source tree) on
its own Temporal dev server, against one SeaweedFS; both copy the same object.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.bench_s3 import BUCKET
from bench.bench_s3 import _rclone as rclone_binary
from bench.common import CpuMeter, MiB, OtherService, Service, random_file, rclone_s3_env
from bench.cpu_s3 import cpu_groups
from tests.servers.seaweedfs import SeaweedS3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--other", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rows", nargs="+", default=["down"], choices=["down", "up"])
    args = parser.parse_args()
    print(time.strftime("%H:%M:%S UTC"), os.getloadavg(), flush=True)
    work = Path(tempfile.mkdtemp(prefix="staccato-ab-s3-", dir="/tmp"))
    source = random_file(work / "src.bin", args.size_mib * MiB)
    out = work / "out.bin"
    seaweed = SeaweedS3(work / "seaweedfs", max_volumes=300)
    seaweed.start()
    s3 = seaweed.client()
    s3.create_bucket(Bucket=BUCKET)
    rclone_env = rclone_s3_env(seaweed, work)
    aws = {k: v for k, v in rclone_env.items() if k.startswith("AWS_")}
    new = Service(processes=4, env=aws).start()
    old = OtherService(args.other, processes=4, env=aws)
    old.start()
    url = f"s3://{BUCKET}/obj.bin"
    options = ["--streams", "4", "--chunk-size", "16M", "-q"]

    def rclone(*pair: str) -> Callable[[], object]:
        argv = [rclone_binary(), "copyto", *pair, "--s3-upload-concurrency=4",
                "--multi-thread-streams=4", "--s3-chunk-size=16M"]  # fmt: skip
        return lambda: subprocess.run(argv, check=True, env=rclone_env)

    try:
        for row in args.rows:
            if row == "down":
                new.staccato("cp", str(source), url, *options)
                pair = (url, str(out))
                peer = rclone(f"s3:{BUCKET}/obj.bin", str(out))

                def before() -> None:
                    out.unlink(missing_ok=True)
                    os.sync()
            else:
                pair = (str(source), url)
                peer = rclone(str(source), f"s3:{BUCKET}/obj.bin")

                def before() -> None:
                    s3.delete_object(Bucket=BUCKET, Key="obj.bin")

            tools: dict[str, tuple[Callable[[], object], Service | None]] = {
                "staccato (this)": (lambda p=pair: new.staccato("cp", *p, *options), new),
                "staccato (other)": (lambda p=pair: old.staccato("cp", *p, *options), old),
                "rclone": (peer, None),
            }
            for run, _ in tools.values():  # warm-up
                before()
                run()
            times: dict[str, list[float]] = {name: [] for name in tools}
            cpu: dict[str, list[float]] = {name: [] for name in tools}
            names = list(tools)
            for index in range(args.runs):
                for name in names[index % 3 :] + names[: index % 3]:
                    run, service = tools[name]
                    before()
                    # the worker's processes: its main one and its activity processes
                    groups = cpu_groups(service, seaweed) if service else {}
                    meter = CpuMeter({k: groups[k] for k in ("worker", "activities") if groups})
                    t0 = time.perf_counter()
                    with meter:
                        run()
                    times[name].append(time.perf_counter() - t0)
                    cpu[name].append(sum(v for k, v in meter.seconds.items() if k != "command"))
            for name in names:
                print(
                    f"{row:5} {name:18} s " + " ".join(f"{v:.2f}" for v in times[name])
                    + f"  median {statistics.median(times[name]):.2f}"
                    + ("  worker cpu " + " ".join(f"{v:.2f}" for v in cpu[name]) if cpu[name][0] else ""),
                    flush=True,
                )  # fmt: skip
            if row == "down":
                s3.delete_object(Bucket=BUCKET, Key="obj.bin")
    finally:
        new.stop()
        old.stop()
        seaweed.kill()
        shutil.rmtree(work, ignore_errors=True)
    print(time.strftime("%H:%M:%S UTC"), os.getloadavg())


if __name__ == "__main__":
    os.environ.pop("AWS_CA_BUNDLE", None)
    main()
