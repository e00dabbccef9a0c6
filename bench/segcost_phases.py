"""Milliseconds of each fixed per-segment phase of a file -> SFTP copy (issue 14),
measured in this process with the real SFTP driver against a test sshd this run starts:

* ``connect``: a new pooled connection (ssh process or paramiko, key exchange,
  authentication, the sftp subsystem) -- a thread without a cached one;
* ``lease reused``: a lease of the cached connection;
* ``durable_chunks`` / ``partial_chunk``: what a stream asks before its first chunk
  (journal reads);
* ``writer open+close``: a segment's writer (writers entry, two handles);
* ``verify part``: one segment's verify before publish (journal read, stat, one
  exec channel hashing its 64 MiB on the server), of a 4-chunk segment of 16 MiB
  chunks; the verify activity's own connection is ``connect`` above when its thread
  has none.

    python -m bench.segcost_phases [--runs 10] [--load 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import MiB, sftp_worker_env
from tests.servers.sshd import SshdServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--load", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="segcost-phases-"))
    sshd = SshdServer(work / "sshd")
    sshd.start()
    os.environ.update(sftp_worker_env(sshd, work))
    loops = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(args.load)]
    try:
        from staccato.checksums import checksum_bytes
        from staccato.endpoints.sftp import POOL, SFTPDriver, resolve
        from staccato.urls import parse_url

        chunk = 16 * MiB
        size = 8 * chunk
        url = parse_url(sshd.url(str(work / "dst.bin")))
        driver = SFTPDriver()
        session = driver.open_session(url, size, chunk, "k1")
        data = memoryview(os.urandom(chunk))
        digest = checksum_bytes("crc32c", data)
        with driver.open_writer(session) as writer:
            for index in range(8):
                writer.write_chunk(index, data, digest)
        target = resolve(url)
        times: dict[str, list[float]] = {}

        def timed(name: str, fn: Callable[[], object]) -> None:
            began = time.perf_counter()
            fn()
            times.setdefault(name, []).append(1000 * (time.perf_counter() - began))

        def connect() -> None:
            def in_thread() -> None:
                connection = POOL.acquire(target)
                POOL.release(connection)

            POOL.close_all()
            thread = threading.Thread(target=lambda: timed("connect", in_thread))
            thread.start()
            thread.join()
            POOL.close_all()

        def reused() -> None:
            POOL.release(POOL.acquire(target))

        temp_url = parse_url(driver.session_url(session) or "")
        # a session whose journal holds chunks 0-3 only: a segment of 4-7 starts fresh
        fresh = driver.open_session(parse_url(sshd.url(str(work / "fresh.bin"))), size, chunk, "k2")
        with driver.open_writer(fresh) as writer:
            for index in range(4):
                writer.write_chunk(index, data, digest)
        buffer = memoryview(bytearray(chunk))
        for _ in range(args.runs):
            connect()
            reused()
            timed("lease reused", reused)
            timed("durable (resume)", lambda: driver.durable_chunks(session, 0, 4))
            timed("durable (fresh)", lambda: driver.durable_chunks(fresh, 4, 8))
            timed("partial_chunk", lambda: driver.partial_chunk(session, 0, buffer))
            timed("writer open+close", lambda: driver.open_writer(session).close())
            for label, segments in (
                ("verify 1 x 16 MiB", [(0, 1)]),
                ("verify 1 x 64 MiB", [(0, 4)]),
                ("verify 2 x 64 MiB", [(0, 4), (4, 8)]),
            ):
                timed(
                    label,
                    lambda segments=segments: driver.segments_checksum(
                        temp_url, size, chunk, segments, "crc32c"
                    ),
                )
        for name, values in times.items():
            print(
                f"{name:20} median {statistics.median(values):7.1f} ms  "
                f"min {min(values):7.1f}  max {max(values):7.1f}  (n={len(values)})"
            )
        driver.abort(session)
        driver.abort(fresh)
        POOL.close_all()
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()
        sshd.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
