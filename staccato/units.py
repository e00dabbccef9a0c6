"""Sizes, rates, durations and percentages for people: the one unit system of every
Staccato output (the CLI's progress bar, ``status``, ``list``, the Temporal UI's
current-details line, heartbeat summaries).

Binary (IEC 80000-13) units: KiB, MiB, GiB, TiB, PiB, EiB (1 KiB = 1024 bytes);
rates in the same units per second (``20.0 MiB/s``). Pure functions of their
arguments (no clock, no I/O, standard library only), so the workflow sandbox can
import this module and its output is deterministic on replay.
"""

from __future__ import annotations

import math

_IEC = ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def counted(n: int, noun: str) -> str:
    """``1 file``, ``2 files``, ``0 files``: ``n`` and ``noun`` (singular, an English
    noun taking ``s``), plural unless ``n`` is 1."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def size(n: float) -> str:
    """Bytes in binary units: ``512 B``, ``1.5 KiB``, ``4.0 GiB`` (one decimal above 1 KiB).

    Args:
        n: bytes (negative values are shown as 0 B).
    """
    value = max(0.0, float(n))
    if value < 1024:
        return f"{int(value)} B"
    unit = "B"
    for unit in _IEC:
        value /= 1024
        if value < 1024 or unit == _IEC[-1]:
            break
    if round(value, 1) >= 1024 and unit != _IEC[-1]:  # 1023.96 MiB reads 1.0 GiB
        value /= 1024
        unit = _IEC[_IEC.index(unit) + 1]
    return f"{value:.1f} {unit}"


def rate(bytes_per_s: float) -> str:
    """A transfer rate: ``20.0 MiB/s``, ``512 B/s``."""
    return f"{size(bytes_per_s)}/s"


def duration(seconds: float) -> str:
    """A span of time, to the second below a minute and coarser above: ``45 s``,
    ``3 min 20 s``, ``2 h 05 min``, ``3 d 04 h``."""
    s = max(0, math.ceil(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600:02d} h"


def percent(done: int, total: int | None) -> str | None:
    """``done`` of ``total`` as a whole percentage, rounded down so that ``100%`` means
    all of it: ``99%`` for 99.9 %. None when the total is unknown; ``100%`` for an
    empty object."""
    if total is None:
        return None
    if total <= 0:
        return "100%"
    return f"{min(100, 100 * max(0, done) // total)}%"


#: below this rate (per second) nothing to speak of moves: no ETA (a rate of a few
#: bytes a second during an outage made ETAs of days)
ETA_MIN_RATE = 1.0


def eta(left: float, per_s: float | None, min_rate: float = ETA_MIN_RATE) -> float | None:
    """Seconds to move ``left`` (bytes, or files) at ``per_s`` (the same unit a
    second); None when the rate is unknown, zero or below ``min_rate`` (~0: nothing
    moves, so no time can be told). Never negative."""
    if not per_s or per_s < min_rate:
        return None
    return max(0, left) / per_s


def space_shortfall_text(needed: int, free: int, *, quota: bool = False) -> str:
    """What a destination short of space lacks, in bytes and human units, and how much
    to free: ``15728640 more bytes needed (15.0 MiB), 1048576 bytes free (1.0 MiB).
    Free at least 14680064 bytes (14.0 MiB) there, or choose a destination on another
    file system``; ``quota`` adds "(or raise the quota)". ``free`` below 0 (unknown)
    counts as 0. The one wording of a local and an SFTP destination."""
    free = max(free, 0)
    short = max(needed - free, 0)
    raise_quota = " (or raise the quota)" if quota else ""
    return (
        f"{needed} more bytes needed ({size(needed)}), {free} bytes free ({size(free)}). "
        f"Free at least {short} bytes ({size(short)}) there{raise_quota}, or choose a "
        "destination on another file system"
    )


def ended_short_text(done: int, total: int | None) -> str | None:
    """What a run that ended failed or cancelled copied, as ``1.0 MiB copied``, when
    ``done`` of ``total`` would mislead: the total unknown (``0 B / ?`` reads as if it
    went on) or all of it counted (``0 B / 0 B (100%)`` reads as a success: a 0-byte
    copy that failed, a copy whose verify or publish failed). None otherwise: a
    partial share (``1.0 KiB / 4.0 KiB (25%)``) says how far it got."""
    if total is None or done >= total:
        return f"{size(done)} copied"
    return None


def progress(
    done: int, total: int | None, bytes_per_s: float | None = None, eta_s: float | None = None
) -> str:
    """The progress phrase every output shares:
    ``512.0 MiB / 1.0 GiB (50%) at 20.0 MiB/s, ETA 25 s``; the rate and ETA only when known
    (a paused or finished transfer has neither)."""
    text = f"{size(done)} / {size(total) if total is not None else '?'}"
    share = percent(done, total)
    if share is not None:
        text += f" ({share})"
    if bytes_per_s:
        text += f" at {rate(bytes_per_s)}"
    if eta_s is not None:
        text += f", ETA {duration(eta_s)}"
    return text
