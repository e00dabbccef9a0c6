"""File-system facts the file driver needs: mtime resolution, mount points, free
space, and the errors for a full file system.

Running out of space (``ENOSPC``, ``EDQUOT``, or the free-space check before a copy
and at each retry) is retryable, as on an SFTP destination: space may be freed (another
process's files removed, a quota raised), and the temp file and journal are kept, so
the next attempt resumes from its checkpoint; the transfer gives up once
``--retry-for`` passed without progress. Only a file that can never fit (larger than the
whole file system's capacity, ``statvfs`` ``f_blocks * f_frsize``) is permanent at once. Either
error names the file system, the bytes needed and free, and the fix
(tests/test_file_space.py).
"""

from __future__ import annotations

import errno
import os
import re

from staccato import units
from staccato.errors import PermanentError, RetryableError, StaccatoError, from_os_error

# write errors of a full file system (or an exhausted quota): retryable, space may be freed
NO_SPACE = {errno.ENOSPC, errno.EDQUOT}


def os_error(err: OSError, what: str) -> StaccatoError:
    """Map an ``OSError`` of the file driver to a Staccato error naming ``what``; a full
    file system or quota is retryable (:func:`staccato.errors.from_os_error`) and says
    what to do. Where the bytes to write are known, :func:`no_space` says more."""
    if err.errno in NO_SPACE:
        return RetryableError(
            f"{what}: {err.strerror or 'no space left on device'}; free space there "
            "(retried for --retry-for), or choose another destination"
        )
    return from_os_error(err, what)


#: file systems whose mtimes come from this kernel's clock in (nearly) nanoseconds: a
#: rewrite moves the mtime. On the others (NFS, SMB, FUSE: the server's clock; FAT and
#: exFAT: 2 s) a rewrite within the mtime's resolution can keep it.
FINE_MTIME_FILE_SYSTEMS = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "zfs", "f2fs", "overlay", "bcachefs"}
)

#: mtime resolution assumed of the other file systems, seconds (FAT keeps 2 s)
COARSE_MTIME_RESOLUTION_S = 2.0
FINE_MTIME_RESOLUTION_S = 0.01  # the kernel's coarse clock ticks every 1-10 ms


_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")  # mountinfo writes a space as \040


#: st_dev -> file system type, filled by :func:`file_system_type` (a device holds one
#: file system while mounted; a dataset's batch asks several times per file, and
#: reading the mount table costs more than copying a small file)
_TYPE_BY_DEVICE: dict[int, str] = {}
_TYPE_BY_DEVICE_MAX = 256


def file_system_type(path: str, device: int | None = None) -> str:
    """The type of the file system holding ``path`` (``ext4``, ``nfs4``...), from
    ``/proc/self/mountinfo`` (proc(5)); ``""`` where that cannot be read.

    Args:
        device: ``st_dev`` of ``path`` when the caller has stat'ed it already; the
            answer is remembered per device (a device holds one file system while it
            is mounted). Without it ``path`` is stat'ed; a path that does not exist
            (yet) is looked up in the mount table each time.
    """
    if device is None:
        try:
            device = os.stat(path).st_dev
        except OSError:
            return _mount_table_type(path)
    known = _TYPE_BY_DEVICE.get(device)
    if known is not None:
        return known
    kind = _mount_table_type(path)
    if kind:
        if len(_TYPE_BY_DEVICE) >= _TYPE_BY_DEVICE_MAX:
            _TYPE_BY_DEVICE.clear()
        _TYPE_BY_DEVICE[device] = kind
    return kind


def _mount_table_type(path: str) -> str:
    """:func:`file_system_type` read from the mount table: the type of the longest
    mount point ``path`` (resolved) lies under."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return ""
    real = os.path.realpath(path)
    best, fs_type = -1, ""
    for line in lines:
        fields = line.split()
        try:
            mount_point = _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), fields[4])
            kind = fields[fields.index("-") + 1]
        except (IndexError, ValueError):
            continue
        inside = real == mount_point or real.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) > best:
            best, fs_type = len(mount_point), kind
    return fs_type


#: file systems on which ``copy_file_range(2)`` moves no bytes through the page cache
#: of this machine: it shares extents (btrfs, XFS with reflink, bcachefs, OCFS2) or has
#: the server copy (NFS 4.2, SMB3, CephFS). Elsewhere (ext4, tmpfs...) the kernel copy
#: is a read and a buffered write like any other, and a stream writing its checksummed
#: buffer with direct I/O costs less CPU and needs no read-back (docs/architecture.md).
KERNEL_COPY_FILE_SYSTEMS = frozenset(
    {"btrfs", "xfs", "bcachefs", "ocfs2", "nfs", "nfs4", "cifs", "smb3", "ceph"}
)


#: kernel pseudo-file systems: their files report a size (often 0) unrelated to what a
#: read returns, and change at every read
PSEUDO_FILE_SYSTEMS = frozenset({"proc", "sysfs", "debugfs", "tracefs", "securityfs", "configfs"})


def mtime_resolution_s(path: str) -> float:
    """How coarse the mtimes of the file system holding ``path`` may be, seconds."""
    return mtime_resolution_of(file_system_type(path))


def mtime_resolution_of(kind: str) -> float:
    """How coarse the mtimes of a file system of type ``kind`` may be, seconds."""
    if kind in FINE_MTIME_FILE_SYSTEMS:
        return FINE_MTIME_RESOLUTION_S
    return COARSE_MTIME_RESOLUTION_S


def mount_point(path: str) -> str:
    """The mount point of the file system holding ``path`` (an existing path)."""
    path = os.path.realpath(path)
    while not os.path.ismount(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def allocated(st: os.stat_result, size: int) -> int:
    """Bytes of ``size`` the file already has blocks for (``st_blocks`` is in 512-byte
    units, POSIX ``stat``), so a resumed write needs only the rest."""
    return min(st.st_blocks * 512, size)


def no_space(
    target: str, size: int, temp: str, err: OSError | None = None
) -> RetryableError | PermanentError:
    """The out-of-space error for writing ``size`` bytes to ``target`` via ``temp``:
    names the file system, the bytes still needed (``size`` less what ``temp`` already
    holds) and free, and the fix.

    Returns:
        A :class:`RetryableError` (space may be freed: the transfer retries for
        ``--retry-for``, keeping its temp file), or a :class:`PermanentError` when the
        file and its journal exceed what the file system can ever give a writer
        (:func:`capacity_for_files`; the bytes its temp file holds count as part of
        it): no freeing can make it fit.
    """
    parent = os.path.dirname(target) or "."
    mount = mount_point(parent)
    try:
        fs = os.statvfs(parent)
        free = fs.f_bavail * fs.f_frsize
        capacity = capacity_for_files(fs)
        room = size + journal_room(size, fs.f_frsize)
    except OSError:
        free = capacity = -1
        room = size
    try:
        held = allocated(os.stat(temp), size)
    except OSError:
        held = 0
    needed = size - held
    # what the temp file holds takes room on the same file system: the whole file must fit
    if needed > 0 and 0 < capacity < room:
        return PermanentError(
            f"{target} can never fit on the file system mounted at {mount}: the file "
            f"({size} bytes) and its journal together need {room} bytes "
            f"({units.size(room)}), more than the file system's whole capacity of "
            f"{capacity} bytes ({units.size(capacity)}; {free} bytes free); no retry can "
            "help. Choose a destination on a larger file system, then submit again"
        )
    if err is None:
        cause = "not enough free space"
    elif err.errno == errno.EDQUOT:
        cause = "the disk quota is exhausted"
    else:
        cause = "the file system is full"
    return RetryableError(
        f"not enough space for {target} ({size} bytes) on the file system mounted at "
        f"{mount}: {cause}; {units.space_shortfall_text(needed, free, quota=True)}"
    )


def capacity_for_files(fs: os.statvfs_result) -> int:
    """Bytes a file system can ever give an unprivileged writer: its blocks less those
    reserved for root (``f_blocks - (f_bfree - f_bavail)``, times ``f_frsize``; the
    free space is counted as ``f_bavail`` alike). 0 for a virtual file system."""
    return max(fs.f_blocks - (fs.f_bfree - fs.f_bavail), 0) * fs.f_frsize


#: bytes of a journal line per chunk at most (``INDEX CHECKSUM``; a SHA-256 in hex)
_JOURNAL_LINE_BYTES = 80


def journal_room(size: int, block: int) -> int:
    """Bytes the journal of a ``size``-byte file takes on its file system at most: a
    line per MiB of the file (chunks are rarely smaller), rounded up to whole
    ``block``s. A
    file of exactly the file system's capacity leaves no room for it (a tester's
    64 MiB file on a 64 MiB tmpfs retried for ``--retry-for``, 4096 bytes short)."""
    lines = (size >> 20) + 1
    return -(-lines * _JOURNAL_LINE_BYTES // max(block, 1)) * max(block, 1)
