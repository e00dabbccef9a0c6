"""What ``--verify full`` costs on file->file (docs/architecture.md, "Reading every
byte back before publish"): ``staccato cp`` of one file (default 1 GiB, 4 fixed
streams x 16 MiB chunks: no tuning in the way) with ``--verify checksum`` (the
default) and ``--verify full``, the runs alternating, each destination removed before
the next run; wall seconds of each command (submit to exit), medians.
Run: ``python -m bench.bench_verify_full [--size-mib N] [--runs N] [--dir DIR]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from bench.common import Service, random_file, timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where source and copies go")
    args = parser.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="bench-verify-full-"))
    work.mkdir(parents=True, exist_ok=True)
    src = random_file(work / "src.bin", args.size_mib << 20)
    service = Service(processes=4).start()
    took: dict[str, list[float]] = {"checksum": [], "full": []}
    try:
        for run in range(args.runs + 1):  # the first round warms up (not counted)
            for level in took:
                dst = work / f"dst-{level}.bin"
                dst.unlink(missing_ok=True)
                seconds = timed(
                    lambda: service.staccato(
                        "cp",
                        "--quiet",
                        "--streams",
                        "4",
                        "--chunk-size",
                        "16M",
                        "--verify",
                        level,  # noqa: B023 - called at once
                        str(src),
                        str(dst),  # noqa: B023
                    )
                )
                if run:
                    took[level].append(seconds)
                print(f"run {run} {level}: {seconds:.2f} s", flush=True)
                dst.unlink(missing_ok=True)
    finally:
        service.stop()
        src.unlink(missing_ok=True)
    for level, values in took.items():
        print(
            f"{level}: median {statistics.median(values):.2f} s "
            f"({', '.join(f'{v:.2f}' for v in values)}) for {args.size_mib} MiB"
        )


if __name__ == "__main__":
    main()
