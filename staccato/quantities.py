"""What people type for sizes, rates, durations and start times, read and checked with
one set of words for every client: the command line (:mod:`staccato.cli.options` turns
each ``ValueError`` into a usage error, which click prefixes with the option's name:
``Invalid value for '--chunk-size': ...``) and the Python API
(:class:`staccato.models.TransferOptions` takes the same texts for its size, rate and
duration fields, and pydantic names the field; :meth:`staccato.client.StaccatoClient.start`
checks ``not_before`` with :func:`check_start_time`, as ``submit --not-before`` does),
and the API's text and list parameters (:func:`require_str`, :func:`str_list`).

Pure: no I/O, the clock only where a caller passes it. (Output is :mod:`staccato.units`.)
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

#: the largest chunk (S3's largest part); :data:`staccato.models.MAX_CHUNK_SIZE` is it
MAX_SIZE = 5 * 1024**3
#: the highest rate accepted, bytes per second (1 PiB/s: far above any link)
MAX_RATE = 1 << 50
#: the longest duration accepted (``--retry-for``), and how far ahead a start may be
MAX_DURATION_S = 30 * 24 * 3600.0

SIZE_EXPECTED = "a size; use bytes or a unit, e.g. 8MiB, 64M, 1GiB"
RATE_EXPECTED = (
    "a rate: expected bytes per second, a number and a unit with /s or no suffix, "
    "such as 40MB/s, 1GiB/s or 500k"
)
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def byte_count(text: str, expected: str, shown: str | None = None, per: str = "") -> int:
    """``text`` as a number of bytes: plain bytes or a unit (``8MiB``, ``64M``, ``1GB``;
    a bare ``k``/``m``/``g``/``t`` means the binary unit), via pydantic's ``ByteSize``.
    A unit ending in a lowercase ``b`` (``Mb``, ``kib``) is refused, one rule for
    every size and rate: ``Mb`` is megabits on data sheets, pydantic would read it as
    megabytes. ``per``: the suffix the advice adds to a unit (``/s`` for a rate).

    Raises:
        ValueError: not a byte count, or an ambiguous unit; the message names
            ``shown`` (default ``text``: what the user typed) and ``expected``.
    """
    from pydantic import ByteSize, TypeAdapter, ValidationError

    unit = re.search(r"(?ai)[kmgtpe]i?b$", text.strip())
    if unit is not None and unit.group(0)[-1] == "b":
        prefix = unit.group(0)[0].upper()
        as_bytes = prefix + ("iB" if "i" in unit.group(0).lower() else "B")
        bits = f" or {prefix}bit{per} for bits" if per else " (a size is in bytes)"
        raise ValueError(
            f"{shown or text!r}: {unit.group(0)!r} is ambiguous (bits or bytes?): write "
            f"{as_bytes}{per} for bytes{bits}"
        )
    if not re.fullmatch(r"(?a)\s*(\d+(\.\d*)?|\.\d+)\s*[A-Za-z]*\s*", text):
        # pydantic's ByteSize reads only a leading number and unit: "4 MiB per link"
        # was 4 MiB (tester74's setting, and any --chunk-size)
        raise ValueError(f"{shown or text!r} is not {expected}")
    cleaned = re.sub(r"(?i)^([\d.]+)\s*([kmgt])$", lambda m: f"{m.group(1)}{m.group(2)}iB", text)
    if re.fullmatch(r"\d*\.\d*", cleaned.strip()):
        # ByteSize would cut `1.5` to 1 byte: a fraction of a byte is no byte count
        raise ValueError(
            f"{shown or text!r} is not {expected} (a fraction of a byte: use whole bytes, "
            "or a unit for a fraction, e.g. 1.5MiB)"
        )
    try:
        return int(TypeAdapter(ByteSize).validate_python(cleaned))
    except ValidationError:
        raise ValueError(f"{shown or text!r} is not {expected}") from None


def parse_size(text: str | int) -> int:
    """A byte size from 1 byte to 5 GiB: ``8388608``, ``8MiB``, ``64M`` (= 64 MiB, as
    in rclone and dd), ``1.5GiB``, ``100MB`` (decimal, 10^6); ``10Mb`` is refused as
    ambiguous (bits or bytes?), as a rate's ``10Mb/s`` is (:func:`byte_count`).

    Raises:
        ValueError: not a size, an ambiguous unit (``Mb``), or below 1 byte / above 5 GiB.
    """
    value = text if isinstance(text, int) else byte_count(str(text).strip(), SIZE_EXPECTED)
    if not 1 <= value <= MAX_SIZE:
        raise ValueError(
            f"{text!r}: expected a size from 1 byte to 5GiB (bytes or a unit, e.g. 8MiB)"
        )
    return value


def parse_rate(text: str | int) -> int:
    """A rate in bytes per second: ``40MB/s``, ``1GiB/s``, ``500k`` (= KiB/s); the only
    suffix understood is ``/s`` (``40MB/h`` is refused, not read as 40MB/s).

    Raises:
        ValueError: not a rate, below 1 byte/s or above 1 PiB/s.
    """
    if isinstance(text, int):
        value = text
    else:
        match = re.fullmatch(r"(?ai)\s*(\d+(?:\.\d+)?\s*[a-z]*)\s*(?:/s)?\s*", str(text))
        if not match:
            raise ValueError(f"{str(text)!r} is not {RATE_EXPECTED}")
        # "Mb/s" is megabits on every link's data sheet: refused by byte_count
        value = byte_count(match.group(1), RATE_EXPECTED, shown=str(text), per="/s")
    if value < 1:
        raise ValueError(f"{text!r}: the rate must be at least 1 byte/s")
    if value > MAX_RATE:
        raise ValueError(f"{text!r}: the rate must be at most 1PiB/s")
    return value


def parse_duration(text: str | float) -> float:
    """A duration in seconds: ``90`` or ``90s``, ``30m``, ``24h``, ``2d``, ``1.5h``.

    Raises:
        ValueError: not a duration, or outside 1 s .. 30 days.
    """
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd]?)", str(text).strip().lower())
        if not match:
            raise ValueError(
                f"{text!r} is not a duration; use a number and a unit: 90s, 30m, 24h, 2d"
            )
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]
    if not 1 <= seconds <= MAX_DURATION_S:
        raise ValueError(f"{text!r}: the duration must be between 1s and 30d")
    return seconds


def check_start_time(at: datetime, now: datetime, shown: str) -> datetime:
    """A delayed start's time (``submit --not-before``, ``not_before=``) as an aware UTC
    datetime: one without an offset is local time. A time in the past is refused, not
    taken for "now" (a second's slack for the time it took to type), and so is one
    more than 30 days ahead. ``shown``: what the message names (the text typed, or the
    parameter and its value).

    Raises:
        ValueError: in the past, or more than 30 days after ``now``.
    """
    at = (at if at.tzinfo else at.astimezone()).astimezone(UTC)
    if at < now - timedelta(seconds=1):
        raise ValueError(f"{shown} is in the past (now: {now:%Y-%m-%dT%H:%M:%SZ})")
    if at - now > timedelta(seconds=MAX_DURATION_S):
        raise ValueError(f"{shown} is more than 30 days ahead")
    return at


#: what the Python API's text parameters name (:func:`require_str`)
URL_OR_PATH = "a URL or path"
TRANSFER_NAME = "a transfer id or destination"
DATASET_NAME = "a dataset id or destination root"
GROUP_NAME = "a fan-out group id"
SCHEDULE_NAME = "a schedule name"


def require_str(value: object, parameter: str, expected: str) -> str:
    """``value``, checked to be a ``str``: the one check of the Python API's text
    parameters (URLs, paths, ids, names) at its entry points, so a wrong type is
    refused naming the parameter rather than failing deep inside with a raw
    ``AttributeError`` (``'int' object has no attribute 'strip'``).

    Args:
        value: what the caller passed.
        parameter: the parameter's name (``source``, ``transfer``, ...).
        expected: what the str names (:data:`URL_OR_PATH`, :data:`TRANSFER_NAME`, ...).

    Raises:
        TypeError: ``value`` is not a str; the message names ``parameter``, what it
            expects and what was given (bytes: decode them; a path object: ``str()``).
    """
    if isinstance(value, str):
        return value
    hint = ""
    if isinstance(value, bytes | bytearray):
        hint = " (decode it first, e.g. os.fsdecode(value))"
    elif isinstance(value, os.PathLike):
        hint = " (pass str(path))"
    raise TypeError(
        f"{parameter}: expected a str ({expected}), not {type(value).__name__} {value!r}{hint}"
    )


def str_list(value: str | Iterable[str], parameter: str) -> list[str]:
    """A parameter that takes several texts (``include`` and ``exclude`` patterns,
    destinations) as a list: a single ``str`` is one text, never split into its
    characters (``include="*.bin"`` was ``["*", ".", "b", "i", "n"]``, and its
    ``"*"`` selected every file).

    Raises:
        TypeError: ``value`` is neither a str nor an iterable of str (bytes too); the
            message names ``parameter`` and the element that is not a str.
    """
    if isinstance(value, str):
        return [value]
    if isinstance(value, bytes | bytearray) or not isinstance(value, Iterable):
        raise TypeError(
            f"{parameter}: expected a str or a list of str, not {type(value).__name__} {value!r}"
        )
    items = list(value)
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise TypeError(
                f"{parameter}[{index}]: expected a str, not {type(item).__name__} {item!r}"
            )
    return items
