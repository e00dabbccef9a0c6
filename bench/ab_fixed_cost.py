"""A/B of a whole ``staccato cp -q`` of one local file to a local file: this checkout
against another (``--before DIR``, a checkout with its own ``.venv``), each with a
private service of its own (dev server and worker of its own code), and ``cp SRC DST
&& sync DST`` in the same rounds (order rotating, the first round a warm-up; the
destination removed and ``sync``-ed away before each run).

    python -m bench.ab_fixed_cost --before DIR [--size BYTES] [--runs 7]

Prints each command's median wall time (and the CPU its process used, ``RUSAGE_CHILDREN``:
steadier than wall time on a loaded machine) and the ratio ``cp && sync`` / staccato.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.common import REPO, OtherService, Service, random_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="an older checkout")
    parser.add_argument("--size", type=int, default=1 << 30, help="bytes")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="staccato-ab-fixed-", dir="/tmp"))
    before = args.before.resolve()
    services = {"this": Service(), "before": OtherService(before)}
    trees = {"this": REPO, "before": before}
    try:
        for service in services.values():
            service.start()
        source = random_file(work / "src.bin", args.size)
        rest = time.time() - 3600  # at rest, as in bench_loopback
        os.utime(source, (rest, rest))
        out = work / "out.bin"
        commands: dict[str, tuple[list[str], dict[str, str], Path]] = {
            "cp && sync": (
                ["sh", "-c", f"cp {source} {out} && sync {out}"],
                dict(os.environ),
                work,
            ),
        }
        for name, service in services.items():
            python = str(trees[name] / ".venv/bin/python")
            argv = [python, "-m", "staccato.cli", "cp", "-q", str(source), str(out)]
            commands[f"staccato ({name})"] = (argv, service.env, trees[name])
        walls: dict[str, list[float]] = {n: [] for n in commands}
        cpus: dict[str, list[float]] = {n: [] for n in commands}
        loads: list[float] = []
        names = list(commands)
        for round_ in range(args.runs + 1):
            for k in range(len(names)):
                name = names[(round_ + k) % len(names)]
                argv, env, cwd = commands[name]
                out.unlink(missing_ok=True)
                os.sync()
                used = resource.getrusage(resource.RUSAGE_CHILDREN)
                began = time.perf_counter()
                subprocess.run(argv, env=env, cwd=cwd, check=True)
                wall = time.perf_counter() - began
                now = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = now.ru_utime - used.ru_utime + now.ru_stime - used.ru_stime
                if round_:
                    walls[name].append(wall)
                    cpus[name].append(cpu)
                    loads.append(os.getloadavg()[0])
        base = statistics.median(walls["cp && sync"])
        print(
            f"\n{args.size} bytes, medians of {args.runs}, load average "
            f"{min(loads):.1f}-{max(loads):.1f}\n"
        )
        print("| command | wall s | min s | CPU s | vs cp && sync |")
        print("| --- | --: | --: | --: | --: |")
        for name in names:
            wall = statistics.median(walls[name])
            print(
                f"| {name} | {wall:.3f} | {min(walls[name]):.3f} | "
                f"{statistics.median(cpus[name]):.3f} | {base / wall:.2f}x |"
            )
    finally:
        for service in services.values():
            service.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
