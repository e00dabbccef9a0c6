"""Every Staccato error type, in one module (it imports nothing from Staccato).

Every error a driver raises is one of these, so that Temporal's retry policy does
the right thing: activities (:mod:`staccato.activities.errors`) turn a
:class:`PermanentError` into a non-retryable ``ApplicationError`` and a
:class:`RetryableError` into a retryable one. The ``ApplicationError.type`` is the
class's :attr:`StaccatoError.TYPE`, so clients and the workflow tell kinds apart by a
constant, never by a string written out where it is compared.

    StaccatoError                   base; str(err) is a message meant for users
     ├── RetryableError             network errors, timeouts, HTTP 5xx, S3 SlowDown, ENOSPC
     │    ├── IncompleteReadError   a body ended before its Content-Length (RFC 9112 §6.3)
     │    └── WorkerStoppingError   the worker shuts down (graceful stop): retried elsewhere
     ├── PermanentError             retrying cannot help
     │    ├── WriteSessionLostError the destination's temp file / upload vanished
     │    ├── InvalidURLError       unknown scheme, malformed URL, credentials in a URL
     │    ├── NotFoundError         source missing (ENOENT, HTTP 404, NoSuchKey/NoSuchBucket)
     │    ├── NotAFileError         the source (or destination name) is a directory
     │    ├── SourceRootNotADirectoryError cp -r given a file or an object (exit 2)
     │    ├── PermissionDeniedError EACCES, HTTP 401/403, S3 AccessDenied
     │    ├── DestinationMissingError the destination's parent directory / bucket is missing
     │    ├── SourceChangedError    the source's version changed while it was being copied
     │    ├── ChecksumMismatchError destination bytes differ from the source bytes
     │    ├── UnsupportedError      the endpoint cannot do what was asked
     │    ├── SettingsError         a STACCATO_* variable has an unusable value
     │    └── SecretKeyError        no key, a malformed key, or a seal no key opens
     │         ├── KeySettingError      a key setting (variable or file) is malformed
     │         └── SealKeyMissingError  this worker lacks the key a query was sealed with
     └── client side (raised by StaccatoClient, never inside a transfer)
          ├── TemporalUnavailableError  Temporal cannot be reached
          ├── DestinationBusyError      another transfer to the destination is running
          ├── TransferNotFoundError     no transfer has this id (or destination)
          └── TransferFailedError       the transfer ended failed or cancelled

Modules subclass these for kinds only they raise, next to the code that raises them:
S3's lost multipart upload is a :class:`WriteSessionLostError` (and travels as
``WriteSessionLost``, :func:`application_type`); SFTP's dropped connection, the HTTP
driver's ``RequestDeadlineError`` (a stat request over its deadline) and the stream
guard's ``StreamAbandonedError`` (a stream blocked past its heartbeat timeout) are
retryable (:class:`RetryableError` subclasses).

Three failure types are not classes: :data:`INTERNAL_ERROR_TYPE` (a bug in an activity,
never retried), :data:`INVALID_INPUT_TYPE` (a workflow input the workflow refuses) and
:data:`DESTINATION_CANCELLED_TYPE` (a front run's destination's transfer was cancelled).

Names: every class ends in ``Error``; the old names (``NotFound``, ``WriteSessionLost``,
``IsADirectory``, ...) stay as aliases, and ``TYPE`` keeps the old name, so failures
recorded in Temporal before the rename (histories replayed by a new worker) still
match.
"""

from __future__ import annotations

import errno
from typing import ClassVar

#: ``ApplicationError.type`` of an unexpected exception in an activity (a bug)
INTERNAL_ERROR_TYPE = "InternalError"
#: ``ApplicationError.type`` of a workflow input the workflow refuses
INVALID_INPUT_TYPE = "InvalidInput"
#: ``ApplicationError.type`` of a front run's activity when the destination's transfer
#: it ran as was cancelled by someone else (``staccato cancel DEST``): the front records
#: state ``cancelled`` and shows it (:mod:`staccato.run_states`), though it ends FAILED
DESTINATION_CANCELLED_TYPE = "DestinationTransferCancelled"


class StaccatoError(Exception):
    """Base of every Staccato error; ``str(err)`` is a message meant for users.

    Attributes:
        retryable: whether Temporal may retry the activity that raised it.
        TYPE: the ``ApplicationError.type`` this error travels as; the class name
            unless the class sets it (renamed classes keep their old name).
        details: what the ``ApplicationError`` carries besides its message (JSON
            values; e.g. a failed stream's bytes moved); none by default.
    """

    retryable: bool = False
    #: an expected end of an attempt, not a fault (``ApplicationErrorCategory.BENIGN``:
    #: the SDK logs it at DEBUG, without a traceback)
    benign: ClassVar[bool] = False
    TYPE: ClassVar[str] = "StaccatoError"
    details: tuple[object, ...] = ()

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "TYPE" not in cls.__dict__:
            cls.TYPE = cls.__name__


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


class IncompleteReadError(RetryableError):
    """The source sent fewer bytes than it announced."""

    TYPE = "IncompleteRead"


class WorkerStoppingError(RetryableError):
    """An activity stopped because its worker shuts down (a graceful stop: SIGTERM,
    ``staccato down``), not for a fault of an endpoint: retryable, so the attempt stays
    pending at the server with its last heartbeat (``status`` keeps its bytes while no
    worker runs) and the next worker's attempt resumes from it. Not counted as an
    endpoint error, and never turned into the ``--retry-for`` give-up."""

    TYPE = "WorkerStopping"
    #: an expected stop, not a fault: the SDK logs it at DEBUG, without a traceback
    benign = True


#: seconds before Temporal retries an attempt its worker's shutdown stopped: at once,
#: on whichever worker polls next (the retry policy's backoff is for faults)
WORKER_STOPPING_RETRY_S = 0.1


class PermanentError(StaccatoError):
    """A failure that retrying cannot fix; the transfer fails with this message."""


class WriteSessionLostError(PermanentError):
    """The destination's write session (temp file, upload) vanished: deleted by hand,
    or published or aborted by another attempt. Not retried as such: a stale writer
    stops, and the workflow opens a new session and copies again."""

    TYPE = "WriteSessionLost"


class InvalidURLError(PermanentError):
    """A URL that cannot be used: unknown scheme, malformed, or carrying credentials."""

    TYPE = "InvalidURL"


class NotFoundError(PermanentError):
    """The named object does not exist."""

    TYPE = "NotFound"


class SourceRootNotFoundError(NotFoundError):
    """A dataset's source directory or prefix is not there: a missing directory, or an
    S3 prefix no key starts with (S3 has no directories, so a mistyped prefix would
    otherwise list as an empty dataset). A usage error: ``cp -r`` exits 2."""

    TYPE = "SourceRootNotFound"


class SourceRootNotADirectoryError(PermanentError):
    """A dataset's source root is a single file or object, not a directory or prefix
    (``cp -r`` given a file): one rule for every scheme (a local file, an SFTP file,
    an S3 object). A usage error: ``cp -r`` exits 2, as for
    :class:`SourceRootNotFoundError` (:data:`USAGE_ERROR_TYPES`)."""

    TYPE = "SourceRootNotADirectory"


def source_root_not_a_directory(url: str, *, object_store: bool = False) -> str:
    """The message of a :class:`SourceRootNotADirectoryError` for the source root
    ``url`` (quoted as given): the fact, then the fix (drop ``-r``). ``object_store``:
    an S3 object rather than a file (S3 has prefixes, not directories)."""
    what = "an object, not a prefix" if object_store else "a file, not a directory"
    return (
        f"source {url} is {what}: -r copies a directory or prefix; drop -r to copy "
        f"it (staccato cp {url} DESTINATION)"
    )


#: the failure types of a dataset that are usage errors (``cp -r`` exits 2): its
#: source root cannot be listed as given (missing, or a file rather than a directory)
USAGE_ERROR_TYPES = frozenset({SourceRootNotFoundError.TYPE, SourceRootNotADirectoryError.TYPE})


class NotAFileError(PermanentError):
    """A directory was named where an object was expected (not Python's
    ``IsADirectoryError``, an ``OSError``)."""

    TYPE = "IsADirectory"


#: what a single transfer's "destination is a directory" message advises after its
#: fact (:func:`directory_target_message`); a dataset names its files itself, so a
#: file's reason in a dataset leaves it out (:func:`dataset_file_reason`)
_NAME_A_FILE = "; name the file to write, e.g. "


def directory_target_message(target: str, name: str = "NAME") -> str:
    """The message of a :class:`NotAFileError` for a destination name that is a
    directory: the fact, then how to name a file inside it (``TARGET/NAME``; ``name``:
    the file name to suggest, e.g. the source's base name where it is known)."""
    return f"destination {target} is a directory{_NAME_A_FILE}{target.rstrip('/')}/{name}"


#: the words of every reason a dataset's file failed for because its destination name, or
#: a directory above it, is taken by something that is not replaced (a directory at a
#: file's name, a file at a directory's): copying it again fails the same way until that
#: is removed (:func:`staccato.dataset_client.retry_advice` says so)
NOT_REPLACED = "it is not replaced"


def file_in_the_way_message(directory: str, target: str, where: str = "") -> str:
    """The message for a destination ``target`` whose directory cannot be made because
    ``directory`` (the target's directory or one above it) is a file: the same words
    for every driver (``where``: `` on HOST`` for a server's path, else empty)."""
    return (
        f"cannot create directory {directory}{where} for {target}: a file of that name "
        f"exists (another file of the dataset, or one there already); {NOT_REPLACED}"
    )


#: the words of every :func:`no_capacity_message` (a failure's reason holding them can
#: never succeed by copying again: :func:`staccato.dataset_client.never_copied`)
CANNOT_HOLD_FILES = "it cannot hold files"
#: the words of a store's permanent refusal of a key (an S3 404 to a write: moto
#: refuses a key holding a newline): the same name is refused again, so no run
#: copies it (:func:`staccato.dataset_client.never_copied`)
STORE_REFUSES_KEY = "the store refuses this key"
#: why a listed entry that is neither a file nor a directory (a FIFO, a socket, a
#: device, or a link to one) is not copied: no run copies it as it is
#: (:func:`staccato.dataset_client.retry_advice` advises no retry of it alone)
NOT_A_REGULAR_FILE = "not a regular file (a FIFO, socket or device)"


def no_capacity_message(what: str, file_system: str) -> str:
    """The message for a destination ``what`` (``destination PATH`` of a file,
    ``destination directory PATH`` of a dataset's root) on a file system with no
    capacity at all (``statvfs`` ``f_blocks`` 0: /proc, /sys and the like), which no
    file and no directory can be made on; ``file_system`` names it (``the file system
    mounted at /proc``, ``the file system holding /proc on HOST``). The same words for
    every driver, a single transfer and a dataset's root."""
    return (
        f"{what}: {file_system} has no capacity (a virtual file system such as /proc or "
        f"/sys): {CANNOT_HOLD_FILES}; choose a destination on a disk"
    )


def linked_directory_message(target: str, real_target: str) -> str:
    """The message for a destination ``target`` (a path or URL) whose directory is
    named through a symbolic link, ``real_target`` being the same file by its real
    path: the transfer id (the destination's lock) is derived from the name, so two
    spellings of one directory would let two transfers write one file, and a dataset
    would write outside its destination root. The same words for every driver."""
    return (
        f"destination {target} names its directory through a symbolic link{_BY_REAL_PATH}"
        f"{real_target}{_SO_THAT}"
    )


#: the single-transfer advice of :func:`linked_directory_message`, which a dataset's
#: file cannot take (its name is the source's): :func:`dataset_file_reason` replaces it
_BY_REAL_PATH = "; name it by its real path, "
_SO_THAT = ", so that one transfer at a time writes it (the lock is the destination's path)"


def _linked_dataset_file(fact: str, real_target: str) -> str:
    """:func:`linked_directory_message` for a dataset's file: what a ``cp -r`` user
    can do (the file's name under the root comes from the source)."""
    real_directory = real_target.rpartition("/")[0] or real_target
    return (
        f"{fact}; a dataset writes nothing through a symbolic link in its destination "
        "tree (it may lead out of the root): replace the link with a real directory "
        "(or remove it) and copy again, or copy these files on their own to the real "
        f"directory, {real_directory}"
    )


def dataset_file_reason(reason: str, exclude: str = "--exclude") -> str:
    """Why one file of a dataset was not copied, from an error message: a directory
    at the file's destination name is told as a dataset's fact (the directory is not
    replaced; the fix: remove it, or leave the file out), not with a single
    transfer's advice to name a file inside it, which the dataset's file cannot take.
    A directory named through a symbolic link is told likewise: the advice to name
    the destination by its real path becomes what a dataset can do (replace the link,
    or copy those files to the real directory on their own). Any other reason is
    returned as it is. ``exclude`` is the option that leaves the file out
    (``--exclude 'x[[]1].txt'``: :func:`staccato.datasets.names.exclude_option`)."""
    fact, linked, rest = reason.partition(_BY_REAL_PATH)
    if linked:
        return _linked_dataset_file(fact, rest.partition(_SO_THAT)[0])
    fact, advised, _ = reason.partition(_NAME_A_FILE)
    if not advised:
        return reason
    return f"{fact}; {NOT_REPLACED} (remove it, or leave the file out with {exclude})"


class PermissionDeniedError(PermanentError):
    """The endpoint refused access."""

    TYPE = "PermissionDenied"


class AuthenticationRefusedError(PermissionDeniedError):
    """The endpoint refused the worker's credentials (SFTP: none of its keys; S3:
    InvalidAccessKeyId, SignatureDoesNotMatch). Permanent where the transfer first
    contacts the endpoint (``stat``, ``prepare``); a copy stream, which runs after a
    step of the same transfer authenticated to both endpoints, retries it within
    ``--retry-for`` (another worker, with the right credentials, may take the next
    attempt). A refusal that asks for a human (keyboard-interactive, a second factor)
    is a plain :class:`PermissionDeniedError`: permanent everywhere.

    Args:
        message: what was refused, for users.
        who: the identity refused (``user@host:port``, ``access key at ENDPOINT``).
    """

    def __init__(self, message: str, who: str) -> None:
        super().__init__(message)
        self.who = who


class DestinationMissingError(PermanentError):
    """The destination's parent (directory, bucket) does not exist."""

    TYPE = "DestinationMissing"


class SourceChangedError(PermanentError):
    """The source object changed (size, mtime, ETag, VersionId) during the transfer."""

    TYPE = "SourceChanged"


class ChecksumMismatchError(PermanentError):
    """The bytes at the destination do not match the bytes read from the source."""

    TYPE = "ChecksumMismatch"


class UnsupportedError(PermanentError):
    """The endpoint cannot perform the requested operation."""

    TYPE = "Unsupported"


class SettingsError(PermanentError):
    """A ``STACCATO_*`` variable has a value that cannot be used; the message names
    each such variable, its value and what was expected (:mod:`staccato.settings`)."""


class SecretKeyError(PermanentError):
    """No key, a malformed key, or a sealed text this process's keys cannot open;
    the message names the setting to change (:mod:`staccato.secrets`)."""


class KeySettingError(SecretKeyError):
    """A key setting is unusable: ``STACCATO_SECRET_KEY``/``STACCATO_CODEC_KEY`` (or the
    file a ``*_FILE`` variable or ``$STACCATO_HOME/secret.key`` names) is not base64 of
    32 bytes, empty or unreadable; the message names the variable or file. A bad
    setting, as :class:`SettingsError`: the CLI exits 2 (README, "exit codes"). Travels
    as ``SecretKeyError`` (a worker that raises it is one started without its check)."""

    TYPE: ClassVar[str] = "SecretKeyError"


class SealKeyMissingError(SecretKeyError):
    """This worker has no key with the id a source's query was sealed with. Permanent
    where a transfer first opens the seal (its ``stat``); a copy stream, which runs
    after a step of the same transfer opened it on a worker that had the key, retries
    it within ``--retry-for`` (a worker with the key may take the next attempt), as
    :class:`AuthenticationRefusedError`.

    Args:
        message: the key ids on both sides and the settings to change.
        key_id: the id the query was sealed with.
    """

    def __init__(self, message: str, key_id: str) -> None:
        super().__init__(message)
        self.key_id = key_id


class TemporalUnavailableError(StaccatoError):
    """Temporal cannot be reached; the message names the address tried."""

    TYPE = "TemporalUnavailable"


class DestinationBusyError(StaccatoError):
    """Another, different transfer to the same destination is running.

    Attributes:
        holder: what holds the destination, without advice ("destination busy: X is
            being written by transfer T (from S)"): the reason a start that waits
            (``--if-busy wait``) shows while queued; the message adds what to do.
    """

    TYPE = "DestinationBusy"

    def __init__(self, message: str, holder: str | None = None) -> None:
        super().__init__(message)
        self.holder = holder or message


class TransferNotFoundError(StaccatoError):
    """No transfer has this id (or destination)."""

    TYPE = "TransferNotFound"


class TransferFailedError(StaccatoError):
    """The transfer ended failed or cancelled; the message is the reason.

    Args:
        message: the reason, for users.
        state: the transfer's final state (a :class:`staccato.models.TransferState`;
            typed loosely here so this module imports nothing from Staccato).
    """

    TYPE = "TransferFailed"

    def __init__(self, message: str, state: object) -> None:
        super().__init__(message)
        self.state = state


class TransferCancelledError(TransferFailedError):
    """The transfer ended cancelled (a ``TransferFailedError``, as it was before, so
    existing ``except TransferFailedError`` still catch it); the message names the
    transfer and says it was cancelled (``state``: ``cancelled``)."""

    TYPE = "TransferCancelled"


class RunEndedError(StaccatoError):
    """``pause``, ``resume`` or ``cancel`` of a transfer (dataset, group) that has
    already ended; the message says how (``transfer ID is already completed``).

    Args:
        message: for users.
        state: how it ended (a :class:`staccato.models.TransferState`; typed loosely
            here so this module imports nothing from Staccato).
    """

    TYPE = "RunEnded"

    def __init__(self, message: str, state: object) -> None:
        super().__init__(message)
        self.state = state


# The names before every error class ended in ``Error``; kept for callers.
IncompleteRead = IncompleteReadError
WriteSessionLost = WriteSessionLostError
InvalidURL = InvalidURLError
NotFound = NotFoundError
IsADirectory = NotAFileError
PermissionDenied = PermissionDeniedError
DestinationMissing = DestinationMissingError
SourceChanged = SourceChangedError
ChecksumMismatch = ChecksumMismatchError
Unsupported = UnsupportedError
TemporalUnavailable = TemporalUnavailableError
DestinationBusy = DestinationBusyError
TransferNotFound = TransferNotFoundError
TransferFailed = TransferFailedError


def application_type(err: StaccatoError) -> str:
    """The ``ApplicationError.type`` for ``err``: its ``TYPE``, except that any kind of
    lost write session (S3's lost upload, ...) is the ``WriteSessionLost`` that the
    workflow acts on."""
    return WriteSessionLostError.TYPE if isinstance(err, WriteSessionLostError) else err.TYPE


ERROR_TYPES: dict[str, type[StaccatoError]] = {
    cls.TYPE: cls
    for cls in (
        StaccatoError,
        RetryableError,
        IncompleteReadError,
        WorkerStoppingError,
        PermanentError,
        WriteSessionLostError,
        InvalidURLError,
        NotFoundError,
        SourceRootNotFoundError,
        SourceRootNotADirectoryError,
        NotAFileError,
        PermissionDeniedError,
        DestinationMissingError,
        SourceChangedError,
        ChecksumMismatchError,
        UnsupportedError,
        SettingsError,
        SecretKeyError,
    )
}


def from_os_error(err: OSError, what: str) -> StaccatoError:
    """Map an ``OSError`` to a Staccato error whose message names ``what``: transient
    conditions (EIO, EAGAIN, ESTALE, ETIMEDOUT, ENOSPC) are retryable, everything else
    (ENOENT, EACCES, ENAMETOOLONG, ENOTDIR, ELOOP, ...) is permanent."""
    reason = err.strerror or str(err)
    if err.errno == errno.ENOENT:
        return NotFoundError(f"{what}: no such file or directory")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return PermissionDeniedError(f"{what}: permission denied ({reason})")
    if err.errno == errno.EISDIR:
        return NotAFileError(f"{what}: is a directory")
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
        return InvalidURLError(
            f"{what}: file name too long for the file system (255 bytes per name)"
        )
    return PermanentError(f"{what}: {reason}")


#: ``ApplicationError.type`` of the traceback text a process pool attaches as the
#: ``__cause__`` of an exception raised in a worker process (``concurrent.futures``)
REMOTE_TRACEBACK_TYPE = "_RemoteTraceback"


def innermost_message(err: BaseException | None) -> str:
    """The message of the innermost cause of a Temporal failure chain (a workflow's
    failure, its child's, its activity's), for users: a process pool's traceback
    text, which Temporal carries as one more cause below the activity's own error,
    is not a message and is skipped."""
    err = _innermost(err)
    return getattr(err, "message", None) or str(err)


def innermost_type(err: BaseException | None) -> str | None:
    """The ``ApplicationError`` type of the innermost cause (as
    :func:`innermost_message`), e.g. ``SourceRootNotFound``; None when it has none."""
    kind = getattr(_innermost(err), "type", None)
    return kind if isinstance(kind, str) else None


def _innermost(err: BaseException | None) -> BaseException | None:
    while True:
        cause = getattr(err, "cause", None)
        if cause is None or getattr(cause, "type", None) == REMOTE_TRACEBACK_TYPE:
            return err
        err = cause
