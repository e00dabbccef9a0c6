"""How busy the worker host's CPUs were over a span of time (Linux ``/proc/stat``).

A copy stream reads :func:`sample` when it starts and when it ends, and reports
:func:`busy_between` of the two in its result (``StreamResult.cpu_busy``): the
optimizer (:mod:`staccato.tuning`) does not add streams while the host's CPUs are
saturated (more streams only split the same CPU among more streams; a loopback link,
SSH in Python, a machine busy with other work). The number is measured in the
activity and carried in its result, so the workflow stays deterministic.
"""

from __future__ import annotations

from pathlib import Path

#: the kernel's aggregate CPU line (all CPUs), jiffies per state since boot
PROC_STAT = Path("/proc/stat")


def sample(path: Path = PROC_STAT) -> tuple[int, int] | None:
    """The host's CPU time so far, all CPUs together: ``(busy, total)`` in jiffies.

    Busy is every state but ``idle`` and ``iowait`` (user, nice, system, irq,
    softirq, steal; ``guest`` is inside ``user`` already and not added again), as
    ``top``'s and ``vmstat``'s busy percentages count (``man 5 proc``, ``/proc/stat``).

    Returns:
        None where it cannot be read (not Linux, no ``/proc``, an unexpected format).
    """
    try:
        with path.open() as stat:
            line = stat.readline()
        fields = line.split()
        if not fields or fields[0] != "cpu" or len(fields) < 5:
            return None
        jiffies = [int(f) for f in fields[1:9]]  # user..steal (guest counted in user)
    except (OSError, ValueError):
        return None
    idle = jiffies[3] + (jiffies[4] if len(jiffies) > 4 else 0)
    total = sum(jiffies)
    return total - idle, total


def busy_between(start: tuple[int, int] | None, end: tuple[int, int] | None) -> float | None:
    """The fraction (0..1) of the host's CPU time that was busy between two
    :func:`sample` readings, over all CPUs (2 cores, one busy all the time: 0.5).

    Returns:
        None when either reading is missing or no CPU time passed between them (a
        span shorter than a jiffy: nothing measured).
    """
    if start is None or end is None:
        return None
    busy, total = end[0] - start[0], end[1] - start[1]
    if total <= 0 or busy < 0:
        return None
    return min(1.0, busy / total)
