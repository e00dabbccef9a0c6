"""Small file operations of the ``sftp`` driver over one
:class:`~staccato.endpoints.sftp.protocol.StaccatoSFTP`: stat that answers None for a
missing file, remove-if-exists, read a whole small file, and the mapping of SFTP
failures (draft-ietf-secsh-filexfer-02 §7 status codes, paramiko's ``IOError``) to
Staccato errors that name what failed.
"""

from __future__ import annotations

import errno
import posixpath
from collections.abc import Iterator
from contextlib import contextmanager

from paramiko.sftp_attr import SFTPAttributes

from staccato import units
from staccato.endpoints.sftp.pipeline import ReadPipeline, SourceEnded
from staccato.endpoints.sftp.protocol import (
    FX_FAILURE,
    FX_NO_SUCH_FILE,
    FX_OP_UNSUPPORTED,
    FX_PERMISSION_DENIED,
    FXF_READ,
    StaccatoSFTP,
    StatusError,
)
from staccato.errors import (
    NotFound,
    PermanentError,
    PermissionDenied,
    RetryableError,
    StaccatoError,
    Unsupported,
)


def status_error(err: StatusError | OSError, what: str) -> StaccatoError:
    """Map an SFTP failure to a Staccato error naming ``what``."""
    code = err.code if isinstance(err, StatusError) else None
    number = getattr(err, "errno", None)
    text = err.message if isinstance(err, StatusError) else (err.strerror or str(err))
    if code == FX_NO_SUCH_FILE or number == errno.ENOENT:
        return NotFound(f"{what}: no such file or directory")
    if code == FX_PERMISSION_DENIED or number == errno.EACCES:
        return PermissionDenied(f"{what}: permission denied by the server")
    if code == FX_OP_UNSUPPORTED or text == "Operation unsupported":
        return Unsupported(f"{what}: the server does not support this operation")
    # SSH_FX_FAILURE covers ENOSPC, EIO, quota...: it may heal.
    return RetryableError(f"{what}: the server reports failure ({text or 'no reason given'})")


def read_only_message(what: str, path: str) -> str:
    """Why nothing can be written at ``path`` on the server (its file system is mounted
    read-only: ``statvfs@openssh.com``'s ``SSH2_FXE_STATVFS_ST_RDONLY``), ``what``
    naming the destination: one wording for a single transfer's destination and a
    dataset's root (the local driver's ``read_only_message``, said of a server)."""
    return (
        f"{what}: the file system holding {path} is read-only: nothing can be written "
        "there; choose another destination"
    )


@contextmanager
def refused_if_read_only(sftp: StaccatoSFTP, directory: str, what: str) -> Iterator[None]:
    """Writes into ``directory`` on the server: one that fails with the generic
    ``SSH_FX_FAILURE`` (OpenSSH's answer to ``EROFS``, as to a full disk or EIO) is
    told by the server's ``statvfs@openssh.com``, the rule a dataset's root check
    applies (``SFTPDriver.check_destination_root``): on a read-only file system it
    fails at once, naming ``what`` (a tester's single file to a read-only mount was
    retried for the whole ``--retry-for`` as "the server reports failure").

    Raises:
        PermissionDeniedError: the write failed and the file system is read-only.
        StatusError, OSError: any other failure, as it was raised.
    """
    try:
        yield
    except (StatusError, OSError) as err:
        # paramiko's calls (mkdir) raise SSH_FX_FAILURE as an OSError with no errno
        generic = err.code == FX_FAILURE if isinstance(err, StatusError) else err.errno is None
        if not generic:
            raise
        try:
            fs = sftp.file_system(directory)
        except Exception:  # noqa: BLE001 - the write's failure is the one to report
            fs = None
        if fs is not None and fs.read_only:
            raise PermissionDenied(read_only_message(what, directory)) from None
        raise


def short_of_space(
    sftp: StaccatoSFTP,
    err: StatusError,
    path: str,
    needed: int,
    what: str,
    size: int | None = None,
) -> RetryableError | PermanentError | None:
    """For a write to ``path`` that failed with the generic ``SSH_FX_FAILURE``: when
    the server's file system (``statvfs@openssh.com``) has less room than the
    ``needed`` bytes still to write, an error saying so instead of the server's bare
    "Failure"; else None (the failure's own text then stands). Retryable (space may
    be freed), but when the whole file (``size`` bytes) is larger than all the file
    system can ever give a writer: permanent, as for a local destination (a tester's
    30 MiB file to a 20 MiB file system over SFTP was retried for 24 h, its temp file
    filling the server's disk meanwhile).

    Never raises: the server not answering leaves the write's failure to report.
    """
    if err.code != FX_FAILURE:
        return None
    try:
        fs = sftp.file_system(path)
    except Exception:  # noqa: BLE001 - the write's failure is the one to report
        return None
    if fs is None or fs.free >= needed:
        return None
    free = fs.free
    where = posixpath.dirname(path) or path
    if size is not None and 0 < fs.capacity < size:
        return PermanentError(
            f"{what}: the file's {size} bytes ({units.size(size)}) can never fit on the "
            f"SFTP server's file system at {where}: all it can ever give a writer is "
            f"{fs.capacity} bytes ({units.size(fs.capacity)}); no retry can help. Choose "
            "a destination on a larger file system, then submit again"
        )
    return RetryableError(
        f"{what}: not enough space on the SFTP server's file system at {where}; "
        f"{units.space_shortfall_text(needed, free)}"
    )


def is_missing(err: BaseException) -> bool:
    if isinstance(err, StatusError):
        return err.code == FX_NO_SUCH_FILE
    return isinstance(err, FileNotFoundError)


@contextmanager
def mapped(what: str) -> Iterator[None]:
    """SFTP status errors (and paramiko's IOErrors) -> Staccato errors naming ``what``."""
    try:
        yield
    except StaccatoError:
        raise
    except (StatusError, OSError) as err:
        raise status_error(err, what) from None


def stat_or_none(sftp: StaccatoSFTP, path: str) -> SFTPAttributes | None:
    """``SSH_FXP_STAT`` (follows symlinks); None if there is no such file."""
    try:
        return sftp.stat(path)
    except FileNotFoundError:
        return None


def read_all(sftp: StaccatoSFTP, path: str) -> bytes | None:
    """The whole (small) file at ``path``; None if it does not exist."""
    try:
        handle = sftp.open_handle(path, FXF_READ)
    except StatusError as err:
        if err.code == FX_NO_SUCH_FILE:
            return None
        raise
    try:
        return read_handle(sftp, handle)
    finally:
        sftp.close_handle(handle)


def read_handle(sftp: StaccatoSFTP, handle: bytes) -> bytes:
    """The whole (small) file open as ``handle`` (FSTAT for its size, then READs).

    Raises:
        StatusError, OSError: the server's refusal, or the connection.
    """
    size = sftp.fstat_handle(handle).st_size or 0
    buffer = bytearray(size)
    pipe = ReadPipeline(sftp, handle, 0, size, probe_eof=False)
    try:
        filled = pipe.readinto(memoryview(buffer))
    except SourceEnded as ended:
        filled = ended.at
    return bytes(buffer[:filled])


def remove_if_exists(sftp: StaccatoSFTP, path: str) -> None:
    try:
        sftp.remove(path)
    except FileNotFoundError:
        pass
