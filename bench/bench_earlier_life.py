"""What publish's read-back of chunks an earlier worker life journaled costs
(docs/architecture.md, "Integrity of a written chunk"): a 1 GiB local temp file
written whole by one life (16 MiB chunks, as a resumed default transfer), then
``recheck_earlier_chunks`` timed in another life, with the page cache warm and (as
root) dropped first; and first, in the writing life with the temp file untouched,
the check that it did not change after the journal's last line (two ``stat`` calls,
nothing read). Run: ``python -m bench.bench_earlier_life [DIR] [GiB]``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from staccato import checksums
from staccato.endpoints.file.driver import FileDriver
from staccato.endpoints.file.session import recheck_earlier_chunks
from staccato.urls import parse_url
from staccato.worker_life import start_worker_life

MiB = 1 << 20


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
    size = int(float(sys.argv[2]) * 1024) * MiB if len(sys.argv) > 2 else 1024 * MiB
    chunk = 16 * MiB
    driver = FileDriver()
    url = parse_url(str(root / "earlier.bin"))
    start_worker_life()  # the life that writes
    session = driver.open_session(url, size, chunk, "0123456789abcdef")
    data = memoryview(bytearray(os.urandom(chunk)))
    with driver.open_writer(session) as writer:
        for index in range(-(-size // chunk)):
            view = data[: min(chunk, size - index * chunk)]
            writer.write_chunk(index, view, checksums.checksum_bytes("crc32c", view))
    # the writing life, the temp file untouched since: the ctime check (two stats)
    # finds nothing and nothing is read
    time.sleep(0.05)  # past a tick of the coarse clock
    started = time.monotonic()
    damaged, read = recheck_earlier_chunks(session)
    print(f"same life, untouched: {read} bytes read in {(time.monotonic() - started) * 1e3:.2f} ms")
    for cache in ("warm", "cold"):
        if cache == "cold":
            os.sync()
            try:
                Path("/proc/sys/vm/drop_caches").write_text("3\n")
            except OSError:
                print("cold: cannot drop the page cache here (not root)")
                continue
        start_worker_life()  # a new life: every chunk is an earlier life's
        started = time.monotonic()
        damaged, read = recheck_earlier_chunks(session)
        took = time.monotonic() - started
        print(
            f"{cache}: read back {read / MiB:.0f} MiB in {took:.2f} s "
            f"({read / MiB / took:.0f} MiB/s), {len(damaged)} changed"
        )
        started = time.monotonic()
        again, read = recheck_earlier_chunks(session)  # re-vouched: nothing to read
        print(f"{cache}: same life again: {read} bytes read in {time.monotonic() - started:.3f} s")
    driver.abort(session)


if __name__ == "__main__":
    main()
