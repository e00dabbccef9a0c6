"""Error types shared by drivers, activities and the client.

Every error a driver raises is one of these, so that Temporal's retry policy does
the right thing: activities turn a :class:`PermanentError` into a non-retryable
``ApplicationError`` and a :class:`RetryableError` into a retryable one. The
``ApplicationError.type`` is the class name, so clients can tell kinds apart.

    StaccatoError
     ├── RetryableError            network errors, timeouts, HTTP 5xx, S3 SlowDown
     │    └── IncompleteRead       a body ended before its Content-Length (RFC 9112 §6.3)
     └── PermanentError            retrying cannot help
          ├── InvalidURL           unknown scheme, malformed URL, credentials in a URL
          ├── NotFound             source missing (ENOENT, HTTP 404, NoSuchKey/NoSuchBucket)
          ├── IsADirectoryError_   the source (or destination name) is a directory
          ├── PermissionDenied     EACCES, HTTP 401/403, S3 AccessDenied
          ├── DestinationMissing   the destination's parent directory / bucket does not exist
          ├── SourceChanged        the source's version changed while it was being copied
          ├── ChecksumMismatch     destination bytes differ from the source bytes
          └── Unsupported          the endpoint cannot do what was asked
"""

from __future__ import annotations


class StaccatoError(Exception):
    """Base of every Staccato error; ``str(err)`` is a message meant for users."""

    retryable: bool = False


class RetryableError(StaccatoError):
    """A transient failure: the operation may succeed if retried (with backoff).

    Args:
        message: what failed, for users.
        retry_after_s: seconds the endpoint asked us to wait before trying again
            (HTTP ``Retry-After``, RFC 9110 section 10.2.3; S3 ``SlowDown``); the activity
            maps it to Temporal's ``next_retry_delay``. None: the retry policy's backoff.
    """

    retryable = True

    def __init__(self, message: str = "", *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class IncompleteRead(RetryableError):
    """The source sent fewer bytes than it announced."""


class PermanentError(StaccatoError):
    """A failure that retrying cannot fix; the transfer fails with this message."""


class WriteSessionLost(PermanentError):
    """The destination's write session (temp file, upload) vanished: deleted by hand,
    or published or aborted by another attempt. Not retried as such: a stale writer
    stops, and the workflow opens a new session and copies again."""


class InvalidURL(PermanentError):
    """A URL that cannot be used: unknown scheme, malformed, or carrying credentials."""


class NotFound(PermanentError):
    """The named object does not exist."""


class IsADirectory(PermanentError):
    """A directory was named where an object was expected."""


class PermissionDenied(PermanentError):
    """The endpoint refused access."""


class DestinationMissing(PermanentError):
    """The destination's parent (directory, bucket) does not exist."""


class SourceChanged(PermanentError):
    """The source object changed (size, mtime, ETag, VersionId) during the transfer."""


class ChecksumMismatch(PermanentError):
    """The bytes at the destination do not match the bytes read from the source."""


class Unsupported(PermanentError):
    """The endpoint cannot perform the requested operation."""


ERROR_TYPES: dict[str, type[StaccatoError]] = {
    cls.__name__: cls
    for cls in (
        StaccatoError,
        RetryableError,
        IncompleteRead,
        PermanentError,
        InvalidURL,
        NotFound,
        IsADirectory,
        PermissionDenied,
        DestinationMissing,
        SourceChanged,
        ChecksumMismatch,
        Unsupported,
    )
}


def from_os_error(err: OSError, what: str) -> StaccatoError:
    """Map an ``OSError`` to a Staccato error whose message names ``what``: transient
    conditions (EIO, EAGAIN, ESTALE, ETIMEDOUT, ENOSPC) are retryable, everything else
    (ENOENT, EACCES, ENAMETOOLONG, ENOTDIR, ELOOP, ...) is permanent."""
    import errno

    reason = err.strerror or str(err)
    if err.errno == errno.ENOENT:
        return NotFound(f"{what}: no such file or directory")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return PermissionDenied(f"{what}: permission denied ({reason})")
    if err.errno == errno.EISDIR:
        return IsADirectory(f"{what}: is a directory")
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return RetryableError(f"{what}: no space left on device")
    if err.errno in (
        errno.EIO,
        errno.EAGAIN,
        errno.EINTR,
        errno.ESTALE,
        errno.ETIMEDOUT,
        errno.EBUSY,
    ):
        return RetryableError(f"{what}: {reason}")
    if err.errno == errno.ENAMETOOLONG:
        return InvalidURL(f"{what}: file name too long for the file system (255 bytes per name)")
    return PermanentError(f"{what}: {reason}")
