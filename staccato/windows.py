"""Time windows of endpoint and link limits: ``HH:MM-HH:MM[,TZ]`` (24 h clock,
seconds allowed as ``HH:MM:SS``, an IANA time zone, default UTC), when new transfers may start. Pure functions (no I/O
besides the time zone database), used by the CLI and by the governor workflow."""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_CLOCK = r"([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?"
_WINDOW_RE = re.compile(rf"^{_CLOCK}-{_CLOCK}(?:,(.+))?$")


def parse_window(text: str) -> tuple[time, time, ZoneInfo]:
    """``HH:MM-HH:MM[,TZ]`` as (start, end, zone); an end before the start means the
    window spans midnight (``22:00-06:00``).

    Raises:
        ValueError: malformed, empty (start = end) or an unknown zone; the message
            names the text and what was expected.
    """
    match = _WINDOW_RE.match(text.strip())
    if not match:
        raise ValueError(
            f"malformed window {text!r}: expected HH:MM-HH:MM[,TZ] (HH:MM:SS allowed), e.g. 22:00-06:00,Europe/Paris"
        )
    start = time(int(match[1]), int(match[2]), int(match[3] or 0))
    end = time(int(match[4]), int(match[5]), int(match[6] or 0))
    if start == end:
        raise ValueError(f"empty window {text!r}: start and end are the same time")
    zone_name = match[7] or "UTC"
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {zone_name!r} in window {text!r}: expected an IANA "
            "name such as UTC or Europe/Paris"
        ) from None
    return start, end, zone


def window_opens(text: str, now: datetime) -> datetime | None:
    """None when ``now`` (aware) is inside the window ``text`` (start included, end
    excluded); else when it opens next, in the window's zone.

    Raises:
        ValueError: as :func:`parse_window`.
    """
    start, end, zone = parse_window(text)
    local = now.astimezone(zone)
    clock = local.time().replace(tzinfo=None)
    inside = start <= clock < end if start < end else (clock >= start or clock < end)
    if inside:
        return None
    opening = datetime.combine(local.date(), start, tzinfo=zone)
    if opening <= local:
        opening = datetime.combine(local.date() + timedelta(days=1), start, tzinfo=zone)
    return opening
