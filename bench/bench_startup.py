"""Start-up cost of the ``staccato`` command: wall time of ``--help`` runs and of
importing what ``submit``/``cp`` need before they connect, plus which heavy modules
each one loads.

    python -m bench.bench_startup [--runs 5] [--before DIR]
    python -m bench.bench_startup --cp BYTES [--runs 5] [--before DIR]

Prints one markdown table: median wall seconds over ``--runs`` fresh interpreters,
the number of modules loaded and which of the heavy ones (drivers, Temporal's client)
are among them. ``--before DIR`` (a checkout of an older commit, e.g. from ``git
worktree add --detach DIR main``) adds its numbers beside, the runs of both trees
interleaved so that the load of a shared machine falls on both alike. For a per-module breakdown, run
``python -X importtime -c "import staccato.cli" 2>&1 | sort -t'|' -k2 -n | tail``.

``--cp BYTES`` times what a user waits for instead: whole ``staccato cp -q`` commands
of a file of that size (1: the fixed cost of a command; 1073741824: the 1 GiB
loopback row) through a private Temporal server and worker, from this checkout's
command and ``--before``'s, beside ``cp && sync``; median wall and CPU seconds.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: modules the command should not load before it needs them
HEAVY = (
    "boto3",
    "botocore",
    "paramiko",
    "httpx",
    "cryptography",
    "staccato.endpoints",
    "staccato.activities",
    "temporalio.client",
    "temporalio.worker",
)

#: (label, argv after ``python``); each prints loaded module names on its last line
CASES: list[tuple[str, list[str]]] = [
    ("staccato --help", ["-m", "staccato.cli", "--help"]),
    ("staccato cp --help", ["-m", "staccato.cli", "cp", "--help"]),
    ("staccato submit --help", ["-m", "staccato.cli", "submit", "--help"]),
    ("import for cp (cli + client)", ["-c", "import staccato.cli, staccato.client"]),
    (
        "import for a light cp (cli + light client)",
        ["-c", "import staccato.cli, staccato.cli.commands, staccato.light_client"],
    ),
]

_PROBE = (
    "import sys, runpy\n"
    "sys.argv = ['staccato'] + {args!r}\n"
    "import staccato.cli\n"
    "try:\n"
    "    staccato.cli.app() if {run!r} else None\n"
    "except SystemExit:\n"
    "    pass\n"
    "{extra}\n"
    "print('MODULES', ' '.join(sorted(sys.modules)))\n"
)


def _probe(argv: list[str], tree: Path) -> list[str]:
    """The modules loaded by one run of ``argv`` (in a fresh interpreter, in ``tree``:
    the working directory comes first on ``sys.path``)."""
    if argv[:2] == ["-m", "staccato.cli"]:
        code = _PROBE.format(args=argv[2:], run=True, extra="")
    else:
        code = _PROBE.format(args=[], run=False, extra=argv[1])
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tree
    ).stdout
    line = [ln for ln in out.splitlines() if ln.startswith("MODULES ")][-1]
    return line.split()[1:]


def _walls(argv: list[str], trees: list[Path], runs: int) -> list[float]:
    """Median wall seconds of ``python argv`` in each tree, runs interleaved."""
    times: list[list[float]] = [[] for _ in trees]
    for _ in range(runs):
        for i, tree in enumerate(trees):
            start = time.perf_counter()
            subprocess.run([sys.executable, *argv], stdout=subprocess.DEVNULL, check=True, cwd=tree)
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def _cp_rounds(trees: list[Path], size: int, runs: int) -> None:
    """Whole ``staccato cp -q`` commands of a ``size``-byte file through one private
    service (this checkout's worker) from each tree's command, and ``cp && sync``:
    rounds interleaved (each starting one later), medians of wall and CPU seconds
    (user + sys of the command, from ``wait4``), and the load average."""
    import os
    import tempfile

    from bench.common import Service, random_file

    work = Path(tempfile.mkdtemp(prefix="staccato-bench-cp-", dir="/tmp"))
    source = random_file(work / "src.bin", size)
    out = work / "out.bin"
    service = Service().start()
    commands = {
        f"staccato cp -q ({tree.name})": (
            [sys.executable, "-m", "staccato.cli", "cp", "-q", str(source), str(out)],
            tree,
        )
        for tree in trees
    }
    commands["cp && sync"] = (["sh", "-c", f"cp {source} {out} && sync {out}"], work)
    names = list(commands)
    walls: dict[str, list[float]] = {n: [] for n in names}
    cpus: dict[str, list[float]] = {n: [] for n in names}
    loads: list[float] = []
    try:
        for round_ in range(runs + 1):  # the first round warms up and is not counted
            for k in range(len(names)):
                name = names[(round_ + k) % len(names)]
                argv, cwd = commands[name]
                out.unlink(missing_ok=True)
                os.sync()
                start = time.perf_counter()
                child = subprocess.Popen(argv, cwd=cwd, env=service.env, stdout=subprocess.DEVNULL)
                _, status, usage = os.wait4(child.pid, 0)
                wall = time.perf_counter() - start
                if os.waitstatus_to_exitcode(status) != 0:
                    raise RuntimeError(f"{name} failed")
                if round_:
                    walls[name].append(wall)
                    cpus[name].append(usage.ru_utime + usage.ru_stime)
                    loads.append(os.getloadavg()[0])
    finally:
        service.stop()
        out.unlink(missing_ok=True)
        source.unlink(missing_ok=True)
        work.rmdir()
    print(f"{size} bytes, {runs} rounds, load average {min(loads):.1f}-{max(loads):.1f}\n")
    print("| command | median wall s | median CPU s |")
    print("| --- | --- | --- |")
    for name in names:
        wall, cpu = statistics.median(walls[name]), statistics.median(cpus[name])
        print(f"| `{name}` | {wall:.3f} | {cpu:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--before", type=Path, help="an older checkout to compare with")
    parser.add_argument(
        "--cp",
        type=int,
        metavar="BYTES",
        help="instead: time whole `staccato cp -q` commands of a file this size (with "
        "--before, that tree's command too) and `cp && sync`, through a private service",
    )
    args = parser.parse_args()
    trees = [REPO] + ([args.before.resolve()] if args.before else [])
    if args.cp is not None:
        _cp_rounds(trees, args.cp, args.runs)
        return
    bare = _walls(["-c", "pass"], [REPO], args.runs)[0]
    print(f"bare interpreter: {bare:.3f} s (median of {args.runs})\n")
    if args.before:
        print("| command | median wall s | before | modules (before) | heavy loaded (before) |")
        print("| --- | --- | --- | --- | --- |")
    else:
        print("| command | median wall s | modules | heavy modules loaded |")
        print("| --- | --- | --- | --- |")
    for label, argv in CASES:
        walls = _walls(argv, trees, args.runs)
        loaded = [set(_probe(argv, tree)) for tree in trees]
        heavy = [", ".join([m for m in HEAVY if m in mods] or ["none"]) for mods in loaded]
        if args.before:
            print(
                f"| `{label}` | {walls[0]:.3f} | {walls[1]:.3f} | {len(loaded[0])} "
                f"({len(loaded[1])}) | {heavy[0]} ({heavy[1]}) |"
            )
        else:
            print(f"| `{label}` | {walls[0]:.3f} | {len(loaded[0])} | {heavy[0]} |")


if __name__ == "__main__":
    main()
