"""The s3->file byte path alone, without Temporal: how fast and how costly the
stream's read, checksum and write are, beside rclone on the same object.

Run by hand (never by the test suite)::

    .venv/bin/python -m bench.s3_read_path [--size-mib 1024] [--runs 3] [--streams 4]

One SeaweedFS on this machine. Each round (interleaved, each starting one later):
``rclone copyto`` of the object to a file as ``bench_loopback`` runs it
(``--multi-thread-streams`` = streams, its default 64 MiB multi-thread chunks), and ``--streams`` threads each reading its quarter of the object
with the S3 driver's ranged GET into a 16 MiB buffer, checksumming each chunk
(CRC32C) and writing it with the file destination's writer (positional, direct I/O,
``fdatasync`` per chunk), as ``copy_stream`` does; ``--modes`` runs variants of
that path beside it (no ``fdatasync``, one per 64 MiB, the page cache, writes
overlapped with reads, no write at all: see ``_copy``) to tell the disk's share from
the network's. Printed: wall seconds, CPU
seconds of this process or of rclone (user + system), and of the store, and the
load average. What the whole ``staccato cp`` adds (command, Temporal, worker) is the
difference to ``bench.cpu_s3``'s rows.
"""

from __future__ import annotations

import argparse
import mmap
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from bench.bench_s3 import BUCKET
from bench.bench_s3 import _rclone as rclone_binary
from bench.common import CpuMeter, MiB, random_file, rclone_s3_env, server_pids
from tests.servers.seaweedfs import SeaweedS3

CHUNK = 16 * MiB


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


MODES = (
    "direct-sync",
    "direct-nosync",
    "direct-sync64",
    "buffered-endsync",
    "buffered-nosync",
    "direct-overlap",
    "direct-pipeline",
    "buffered-deferred",
    "null",
)
PART = 4 * MiB


def _copy(url: str, out: Path, size: int, streams: int, mode: str = "direct-sync") -> None:
    """``streams`` threads: ranged GETs through the S3 driver, CRC32C per chunk, direct
    positional writes and ``fdatasync`` per chunk, into ``out`` (preallocated).

    ``mode`` (to find where the time goes): ``direct-sync`` as ``copy_stream`` does;
    ``direct-nosync`` without the ``fdatasync``; ``buffered-endsync`` through the page
    cache, one ``fdatasync`` per stream at its end; ``direct-sync64`` one ``fdatasync``
    per 64 MiB; ``buffered-nosync`` through the page
    cache without it (as rclone); ``direct-overlap`` each stream writes and syncs a
    chunk in a second thread while it reads the next into a second buffer;
    ``direct-pipeline`` one buffer, each 4 MiB part written (direct) by the stream's
    writer thread while the next part is read, ``fdatasync`` there at the chunk's end;
    ``buffered-deferred`` written through the page cache, its ``fdatasync`` in the
    writer thread while the next chunk is read; ``null`` reads and checksums only."""
    import queue

    from staccato import checksums
    from staccato.endpoints import get_driver
    from staccato.urls import parse_url

    driver = get_driver("s3")
    parsed = parse_url(url)
    info = driver.stat(parsed)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    direct = os.open(out, os.O_WRONLY | getattr(os, "O_DIRECT", 0))
    os.ftruncate(fd, size)
    per = -(-size // CHUNK) // streams * CHUNK
    errors: list[BaseException] = []

    target = fd if mode.startswith("buffered") else direct

    def pipelined(offset: int, length: int) -> None:
        buffer = memoryview(mmap.mmap(-1, CHUNK))
        free = [threading.Semaphore(1) for _ in range(CHUNK // PART)]
        jobs: queue.SimpleQueue[tuple[int, int, int] | None] = queue.SimpleQueue()

        def writer() -> None:  # (region, file offset, length); region -1: fdatasync
            try:
                while (job := jobs.get()) is not None:
                    region, at, n = job
                    if region < 0:
                        os.fdatasync(fd)
                        continue
                    view = buffer[region * PART : region * PART + n]
                    written = 0
                    while written < n:
                        written += os.pwrite(target, view[written:], at + written)
                    free[region].release()
            except BaseException as err:  # noqa: BLE001 - reported after the join
                errors.append(err)

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            with driver.open_read(parsed, info, offset, length) as reader:
                done = 0
                while done < length:
                    view = buffer[: min(CHUNK, length - done)]
                    hasher = checksums.new_hasher("crc32c")
                    for k in range(0, len(view), PART):
                        region = k // PART
                        if not free[region].acquire(timeout=120):
                            raise RuntimeError("the writer thread stopped") from None
                        part = view[k : k + PART]
                        filled = 0
                        while filled < len(part):
                            filled += reader.readinto(part[filled:])
                        hasher.update(part)
                        if mode == "direct-pipeline":
                            jobs.put((region, offset + done + k, len(part)))
                        else:
                            written = 0
                            while written < len(part):
                                at = offset + done + k + written
                                written += os.pwrite(target, part[written:], at)
                            free[region].release()
                    hasher.hexdigest()
                    jobs.put((-1, 0, 0))
                    done += len(view)
        finally:
            jobs.put(None)
            thread.join()

    def write(view: memoryview, at: int) -> None:
        if mode == "null":
            return
        written = 0
        while written < len(view):
            written += os.pwrite(target, view[written:], at + written)
        if mode in ("direct-sync", "direct-overlap") or (
            mode == "direct-sync64" and (at + len(view)) % (4 * CHUNK) in (0, size % (4 * CHUNK))
        ):
            os.fdatasync(fd)

    def run(offset: int, length: int) -> None:
        try:
            if mode in ("direct-pipeline", "buffered-deferred"):
                pipelined(offset, length)
                return
            buffers = [memoryview(mmap.mmap(-1, CHUNK)) for _ in range(2)]
            pending: list[threading.Thread] = []
            with driver.open_read(parsed, info, offset, length) as reader:
                done = 0
                turn = 0
                while done < length:
                    view = buffers[turn][: min(CHUNK, length - done)]
                    filled = 0
                    while filled < len(view):
                        filled += reader.readinto(view[filled:])
                    checksums.checksum_bytes("crc32c", view)
                    if mode == "direct-overlap":
                        for t in pending:
                            t.join()
                        pending = [threading.Thread(target=write, args=(view, offset + done))]
                        pending[0].start()
                        turn = 1 - turn
                    else:
                        write(view, offset + done)
                    done += len(view)
            for t in pending:
                t.join()
            if mode == "buffered-endsync":
                os.fdatasync(fd)
        except BaseException as err:  # noqa: BLE001 - reported after the join
            errors.append(err)

    threads = []
    for i in range(streams):
        offset = i * per
        length = size - offset if i == streams - 1 else per
        threads.append(threading.Thread(target=run, args=(offset, length)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    os.close(direct)
    os.close(fd)
    if errors:
        raise errors[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--modes", nargs="+", default=["direct-sync"], choices=MODES)
    args = parser.parse_args()
    size = args.size_mib * MiB
    work = Path(tempfile.mkdtemp(prefix="staccato-s3-path-", dir="/tmp"))
    source = random_file(work / "src.bin", size)
    out = work / "out.bin"
    seaweed = SeaweedS3(work / "seaweedfs", max_volumes=200)
    seaweed.start()
    rclone_env = rclone_s3_env(seaweed, work)
    for key, value in rclone_env.items():
        if key.startswith("AWS_"):
            os.environ[key] = value
    s3 = seaweed.client()
    s3.create_bucket(Bucket=BUCKET)
    rclone = rclone_binary()
    key = "obj.bin"
    subprocess.run(
        [rclone, "copyto", str(source), f"S3:{BUCKET}/{key}", "--s3-chunk-size=16M"],
        check=True,
        env=rclone_env,
    )
    url = f"s3://{BUCKET}/{key}"
    weed = {"weed": lambda: server_pids(seaweed)}
    results: dict[str, list[tuple[float, float, str]]] = {m: [] for m in args.modes}
    results["rclone"] = []
    try:
        names = list(results)
        for index in range(args.runs + 1):  # the first round warms up
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                out.unlink(missing_ok=True)
                os.sync()
                meter = CpuMeter(weed)
                start = time.perf_counter()
                with meter:
                    if name == "rclone":
                        child = subprocess.Popen(
                            [rclone, "copyto", f"S3:{BUCKET}/{key}", str(out),
                             f"--multi-thread-streams={args.streams}",
                             f"--s3-upload-concurrency={args.streams}",
                             "--s3-chunk-size=16M"],
                            env=rclone_env,
                        )  # fmt: skip
                        _, status, usage = os.wait4(child.pid, 0)
                        assert os.waitstatus_to_exitcode(status) == 0
                        cpu = usage.ru_utime + usage.ru_stime
                    else:
                        before = _self_cpu()
                        _copy(url, out, size, args.streams, name)
                        cpu = _self_cpu() - before
                wall = time.perf_counter() - start
                line = f"{name:14} wall {wall:5.2f} s  cpu {cpu:5.2f} s  {meter.line()}"
                print(line, flush=True)
                if index:
                    results[name].append((wall, cpu, line))
        for name, rows in results.items():
            print(
                f"median {name:14} wall {statistics.median(r[0] for r in rows):5.2f} s  "
                f"cpu {statistics.median(r[1] for r in rows):5.2f} s"
            )
    finally:
        seaweed.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.pop("AWS_CA_BUNDLE", None)
    main()
