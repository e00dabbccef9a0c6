"""The ``file`` endpoint: local (or locally mounted) file systems.

Source: positional reads (``os.preadv`` into the caller's buffer), version pinned as
size + mtime (ns) + inode and re-checked with ``fstat`` after every read, so a file
rewritten, truncated or appended to during the copy fails with ``SourceChangedError``.

Destination: a temp file beside the target (same directory, so the final
``rename(2)`` is atomic, POSIX ``rename``), written positionally; each chunk is
``fdatasync``-ed, then a line (index and source checksum) is appended to a small
journal beside the temp file. A resumed stream re-reads the journaled chunks of its
own segment (heartbeating as it reads) and trusts only those whose bytes still match
the journaled checksum, so a torn write or a stray writer cannot make a damaged chunk
look durable. Publish reads no data (its cost does not grow with the object): it
checks the temp file is this session's, whole, fully journaled and has no chunk
turned into a hole, then renames over the target and fsyncs the directory (the
data is on disk already: every chunk was ``fdatasync``-ed before it was journaled).

Running out of space (``ENOSPC``, ``EDQUOT``) is retryable, as on an SFTP
destination: space may be freed, and the temp file and journal are kept so the next
attempt resumes from its checkpoint; the transfer gives up once ``--retry-for`` passed
without progress. A file larger than the whole file system fails at once. The error
names the file system, the bytes needed and free, and the fix. The free-space check
runs on every attempt, counting what the temp file already holds.

Modules: :mod:`.driver` (:class:`FileDriver`), :mod:`.read` (:class:`FileReader`),
:mod:`.session` (temp file, journal, :class:`FileChunkWriter`), :mod:`.fs` (mtime
resolution, mount points, free space).
"""

from staccato.endpoints.file.driver import FileDriver
from staccato.endpoints.file.fs import (
    COARSE_MTIME_RESOLUTION_S,
    FINE_MTIME_FILE_SYSTEMS,
    FINE_MTIME_RESOLUTION_S,
    file_system_type,
    mtime_resolution_s,
)
from staccato.endpoints.file.read import FileReader
from staccato.endpoints.file.session import FileChunkWriter

__all__ = [
    "COARSE_MTIME_RESOLUTION_S",
    "FINE_MTIME_FILE_SYSTEMS",
    "FINE_MTIME_RESOLUTION_S",
    "FileChunkWriter",
    "FileDriver",
    "FileReader",
    "file_system_type",
    "mtime_resolution_s",
]
