"""Names of a write session's temp file and journal on file and SFTP destinations, and
which of them the next transfer to a target may remove (its leftover sweep).

A session for target ``DIR/NAME`` writes ``DIR/.NAME.<16 hex>.staccato-part`` and
journals to ``DIR/.NAME.<16 hex>.staccato-journal`` (the hex: SHA-256 of the session
key). Beside the target, so publish's rename is atomic; hidden; within NAME_MAX (255
bytes, POSIX ``{NAME_MAX}``) whatever the target's name: ``NAME`` keeps its first
:data:`TEMP_NAME_BYTES` bytes. One module for the endpoints (which write and sweep
them) and the workflows (which tell a user what was left): workflows import no driver.
"""

from __future__ import annotations

import hashlib
import posixpath
import re

TEMP_SUFFIX = ".staccato-part"
JOURNAL_SUFFIX = ".staccato-journal"
#: an SFTP session's writers directory and the fresh copy its publish may write
#: (:mod:`staccato.endpoints.sftp.writers`)
WRITERS_SUFFIX = ".staccato-writers"
FRESH_SUFFIX = ".staccato-fresh"

#: the bytes of a target's name kept in its temp names (file, SFTP): a longer name is
#: cut there, and a UTF-8 character the cut splits is dropped (up to 3 more bytes)
TEMP_NAME_BYTES = 150
#: the longest target name whose temp names no other target's can look like: a cut
#: name keeps at least ``TEMP_NAME_BYTES - 3`` bytes, so a name of 146 or fewer is
#: never a cut one's prefix (a 150-byte name once matched the live temp file of a
#: longer name sharing its first 150 bytes, and the sweep removed it)
SWEPT_NAME_BYTES = TEMP_NAME_BYTES - 4


def session_stem(directory: str, name: str, session_key: str) -> str:
    """``DIRECTORY/.NAME.<16 hex>``: a session's temp and journal paths without their
    suffixes (string operations: called once per small file of a dataset)."""
    key = hashlib.sha256(session_key.encode()).hexdigest()[:16]
    short = name.encode()[:TEMP_NAME_BYTES].decode(errors="ignore")
    return posixpath.join(directory, f".{short}.{key}")


def session_temp(path: str, session_key: str) -> str:
    """The temp file path of the session keyed ``session_key`` for the target ``path``
    (a file or SFTP destination's path): :func:`session_stem` + :data:`TEMP_SUFFIX`."""
    return session_stem(*posixpath.split(path), session_key) + TEMP_SUFFIX


def journal_of(temp: str) -> str:
    """The journal path of the temp file ``temp`` (``….staccato-part``)."""
    return temp.removesuffix(TEMP_SUFFIX) + JOURNAL_SUFFIX


#: a temp or journal name of any target (the last segment of a path or key)
_ANY_TEMP_NAME = re.compile(
    r"\..+\.[0-9a-f]{16}\.staccato-(?:part|journal|writers|fresh)", re.DOTALL
)


def is_temp_name(name: str) -> bool:
    """Whether the last segment of ``name`` (a relative path or key: ``d/.f.bin.<16
    hex>.staccato-part``) is a write session's temp or journal name
    (``.NAME.<16 hex>.staccato-part`` / ``-journal``), or an SFTP session's writers
    directory or fresh copy (``-writers`` / ``-fresh``): what a dataset's listing of a
    source leaves out (another transfer's session in flight there, or one left; never
    a file to copy). String operations only."""
    if not name.endswith((TEMP_SUFFIX, JOURNAL_SUFFIX, WRITERS_SUFFIX, FRESH_SUFFIX)):
        return False
    return _ANY_TEMP_NAME.fullmatch(name.rsplit("/", 1)[-1]) is not None


#: why a dataset's listing leaves a name out (:func:`reserved_segment`): its status, its
#: result and ``cp -r``'s end line say it with the count and a few of the names
LEFT_OUT_REASON = (
    "names reserved for Staccato's temp files "
    "(.NAME.<16 hex>.staccato-part/-journal/-writers/-fresh)"
)
#: the names left out that a dataset keeps to show (its count counts them all)
LEFT_OUT_NAMES_KEPT = 5


def reserved_segment(path: str) -> bool:
    """Whether any ``/``-separated segment of ``path`` (a relative path or key of a
    dataset's source: ``d/.f.<16 hex>.staccato-writers/x``) is a temp name
    (:func:`is_temp_name`): the entries a dataset's listing leaves out, counted and
    named in its status (not failures: exit 0 when nothing else failed). Copied, such
    a name at the destination is a leftover the next transfer there removes (its
    sweep, :func:`leftover_pattern`), and it may be another transfer's half-written
    file; a file inside an SFTP session's writers directory is its part, not one of
    the dataset's (tester: it was copied while its directory's siblings were not).
    String operations only."""
    if ".staccato-" not in path:
        return False
    return any(is_temp_name(segment) for segment in path.split("/"))


def leftover_pattern(name: str, more: tuple[str, ...] = ()) -> re.Pattern[bytes] | None:
    """The temp and journal names (``.NAME.<16 hex>.staccato-part`` / ``-journal``)
    of write sessions for the target ``name`` (file and SFTP endpoints), as bytes;
    None when ``name`` is longer than :data:`SWEPT_NAME_BYTES` (a longer target's
    temp names may share their prefix with another target's: never swept). ``more``:
    other suffixes after ``.staccato-`` an endpoint writes (SFTP: ``writers``, ``fresh``)."""
    raw = name.encode(errors="surrogateescape")
    if len(raw) > SWEPT_NAME_BYTES or not raw:
        return None
    kinds = "|".join(("part", "journal", *(re.escape(kind) for kind in more)))
    return re.compile(
        rb"\." + re.escape(raw) + rb"\.[0-9a-f]{16}\.staccato-(?:" + kinds.encode() + rb")"
    )
