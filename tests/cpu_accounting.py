"""Opt-in per-test CPU accounting (``TESTS_CPU_ACCOUNTING=1``): the CPU seconds of the
test process and every process under it (the per-test workers and their activity pools,
the CLIs a test runs, and the session's servers this xdist worker started, for what they
do while the test runs), from setup to teardown, and the test's wall seconds.

Each xdist worker appends one line per test to ``$TESTS_CPU_DIR``
(default ``/tmp/staccato-test-cpu``) as ``cpu-<worker>.tsv``:
``cpu_s  wall_s  nodeid``. ``python -m tests.cpu_accounting DIR`` prints them sorted,
largest CPU first. The machine's other load does not count (only this tree does); a
process that leaves the tree (reparented to init) before it is reaped counts nothing.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

_TICK = os.sysconf("SC_CLK_TCK")


def _tree_cpu(root: int) -> dict[int, float]:
    """CPU seconds (own + reaped children's) of ``root`` and its live descendants."""
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid = int(stat.parent.name)
        parent[pid] = int(fields[1])
        cpu[pid] = sum(int(f) for f in fields[11:15]) / _TICK
    tree = {root}
    grew = True
    while grew:
        grew = False
        for pid, ppid in parent.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return {pid: cpu[pid] for pid in tree if pid in cpu}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Record the CPU of this process's tree across the test's setup, call, teardown."""
    before = _tree_cpu(os.getpid())
    start = time.monotonic()
    yield
    wall = time.monotonic() - start
    after = _tree_cpu(os.getpid())
    used = sum(after.values()) - sum(before.values())
    out = Path(os.environ.get("TESTS_CPU_DIR", "/tmp/staccato-test-cpu"))
    out.mkdir(parents=True, exist_ok=True)
    name = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open(out / f"cpu-{name}.tsv", "a") as f:
        f.write(f"{used:.2f}\t{wall:.2f}\t{item.nodeid}\n")


def main(directory: str) -> None:
    """Print every recorded test, largest CPU first, and the totals."""
    rows = []
    for path in Path(directory).glob("cpu-*.tsv"):
        for line in path.read_text().splitlines():
            cpu, wall, nodeid = line.split("\t", 2)
            rows.append((float(cpu), float(wall), nodeid))
    rows.sort(reverse=True)
    for cpu, wall, nodeid in rows:
        print(f"{cpu:7.2f} {wall:7.2f}  {nodeid}")
    print(
        f"{sum(r[0] for r in rows):7.2f} {sum(r[1] for r in rows):7.2f}  total ({len(rows)} tests)"
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/staccato-test-cpu")
