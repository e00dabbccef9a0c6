"""From a listed name to the destination object's URL (docs/architecture.md, "Listing a
directory or prefix").

A name is the source's relative name exactly as listed (``Driver.list_page``): opaque,
kept byte for byte (``+``, ``%2B``, spaces, NFC and NFD spellings are different names).
:func:`target_url` builds the destination URL from its parts, never by parsing text,
and refuses a name the destination cannot hold as that same name, so no file is ever
written under a name other than its own (which could overwrite another source's file).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from staccato.errors import InvalidURLError, PermanentError
from staccato.urls import S3_MAX_KEY_BYTES, EndpointURL, child_url, directory_prefix

#: control characters (C0, DEL, C1) -> ``\xNN``: a name with a newline or a tab must not
#: break a ``NAME<TAB>REASON`` line
_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7F, 0xA0)]}


def shown_name(name: str) -> str:
    r"""A file name for one line of text: control characters as ``\xNN``, as names
    that are not valid UTF-8 already are (``--json`` gives names exactly). The one
    rendering of a name in every message (``status --failures``, ``--retry-failed``)."""
    return name.translate(_CONTROL)


#: how every reason of a name that is not valid UTF-8 begins (the listing's, the
#: copy's): such a file can never be copied as it is named
NOT_UTF8 = "the name is not valid UTF-8"

#: why a file whose name is not valid UTF-8 is not copied (the listing's reason, and
#: that of ``--retry-failed``, with what to do)
NOT_UTF8_REASON = (
    "the name is not valid UTF-8 (shown with \\xNN escapes for its bytes); names are "
    "copied as UTF-8 text: rename it at the source"
)


#: longest name of one path segment on the file systems Staccato writes to (NAME_MAX of
#: Linux's ext4, xfs, btrfs...), bytes of UTF-8
NAME_MAX_BYTES = 255
#: longest path a local file system call takes (Linux's PATH_MAX, 4,096 bytes with the
#: terminating NUL), bytes of UTF-8: a longer one fails with ENAMETOOLONG
PATH_MAX_BYTES = 4096


class UnrepresentableNameError(PermanentError):
    """The destination cannot hold this source name as it is spelled (the message says
    which name, where and why); only this object fails."""


def name_problem(destination_root: EndpointURL, name: str) -> str | None:
    """Why the destination under ``destination_root`` cannot hold ``name``, or None.

    File and SFTP destinations are POSIX file systems: a name is split at ``/``, and
    an empty segment (``a//b``, a leading or trailing ``/``), a ``.`` or ``..`` segment
    (the path would name another file), a segment over 255 bytes (NAME_MAX) or a NUL
    cannot be written as itself; a local path (``file``) of 4,096 bytes or more
    (PATH_MAX, with its NUL) cannot be opened. S3 keys hold anything up to 1,024 bytes
    of UTF-8. Only destinations: a source's object is named with :func:`source_url`
    (a source holds what it listed, whatever this rule says: a local destination's
    copy of a 4,270-byte S3 key was refused with the S3 limit, naming the source).
    """
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        return NOT_UTF8
    if not name:
        return "the name is empty"
    if destination_root.scheme == "s3":
        key_bytes = len(directory_prefix(destination_root).encode("utf-8")) + len(encoded)
        if key_bytes > S3_MAX_KEY_BYTES:
            return (
                f"the key would be {key_bytes} bytes; S3 keys are at most "
                f"{S3_MAX_KEY_BYTES} bytes of UTF-8"
            )
        return None
    if "\0" in name:
        return "a file name cannot hold a NUL character"
    if destination_root.scheme == "file":
        path_bytes = len(destination_root.path.rstrip("/").encode("utf-8")) + 1 + len(encoded)
        if path_bytes >= PATH_MAX_BYTES:
            return (
                f"the path would be {path_bytes} bytes; local paths are at most "
                f"{PATH_MAX_BYTES - 1} bytes (PATH_MAX {PATH_MAX_BYTES}, with its NUL)"
            )
    for segment in name.split("/"):
        if not segment:
            return (
                "it has an empty path segment ('//', or a leading or trailing '/'): a file "
                "system cannot hold it as a different name from the one without"
            )
        if segment in (".", ".."):
            return f"it has a {segment!r} path segment: as a path it names another file"
        if len(segment.encode("utf-8")) > NAME_MAX_BYTES:
            return (
                f"its segment {segment[:40]!r}... is {len(segment.encode('utf-8'))} bytes; "
                f"file names are at most {NAME_MAX_BYTES} bytes (NAME_MAX)"
            )
    return None


#: why a dataset writes no S3 key ending in '/' (a non-empty source key such as
#: ``p/folder/`` listed as the file ``folder/``): no file system holds the name, and
#: on S3 such a key is what tools and stores take for a directory (SeaweedFS stores
#: one as a directory), so the copy would not read back as the object it was
S3_TRAILING_SLASH = (
    "the key would end in '/', which a dataset does not write (S3 tools and some "
    "stores take such a key for a directory, not an object)"
)


def written_name_problem(destination_root: EndpointURL, name: str) -> str | None:
    """Why a dataset does not write its file ``name`` under ``destination_root``:
    :func:`name_problem`, and at an S3 destination a name ending in ``/`` (a source
    key ending in ``/`` that holds data; empty ones, folder markers, are never listed).
    That file can never be copied under its name: a retry fails it the same way. Only
    destinations: a source URL is built with :func:`target_url` (an S3 source key may
    end in ``/``)."""
    problem = name_problem(destination_root, name)
    if problem is None and destination_root.scheme == "s3" and name.endswith("/"):
        return S3_TRAILING_SLASH
    return problem


def destination_url(destination_root: EndpointURL, name: str) -> EndpointURL:
    """The URL a dataset writes its file ``name`` to under ``destination_root``
    (:func:`target_url`, with :func:`written_name_problem`'s rule).

    Raises:
        UnrepresentableNameError: the destination cannot hold ``name`` as it is spelled.
    """
    problem = written_name_problem(destination_root, name)
    if problem is not None:
        raise UnrepresentableNameError(
            f"cannot copy '{shown_name(name)}' to {destination_root}: {problem}"
        )
    return target_url(destination_root, name)


def names_a_directory(source_root: EndpointURL, name: str) -> bool:
    """Whether a failure's ``name`` from the dataset source ``source_root`` is a
    directory (one that could not be listed, a link loop: a name ending in ``/``), which
    ``--retry-failed`` cannot list again. A source with directories (file, sftp) lists
    no file whose name ends in ``/``; an S3 source has no directories, and its key
    ending in ``/`` that holds data is a file (``folder/``)."""
    return name.endswith("/") and source_root.scheme != "s3"


def target_url(destination_root: EndpointURL, name: str) -> EndpointURL:
    """The URL of the object ``name`` under the destination directory or prefix
    ``destination_root`` (an S3 root ``s3://b/run`` is the prefix ``run/``).

    Raises:
        UnrepresentableNameError: the destination cannot hold ``name`` as it is spelled
            (:func:`name_problem`), or no URL of that scheme can name it.
    """
    problem = name_problem(destination_root, name)
    if problem is None:
        try:
            return child_url(destination_root, name)
        except InvalidURLError as err:
            problem = str(err)
    raise UnrepresentableNameError(
        f"cannot copy '{shown_name(name)}' to {destination_root}: {problem}"
    )


def source_url(source_root: EndpointURL, name: str) -> EndpointURL:
    """The URL of the listed object ``name`` under the dataset source ``source_root``
    (a directory or prefix, as :func:`target_url`). No destination rule applies: the
    source listed ``name``, so it holds it (an S3 source may hold keys over 1,024 bytes
    that a store such as SeaweedFS accepts; a destination's limit is the destination's).

    Raises:
        UnrepresentableNameError: no URL of that scheme can name it (the message names
            the source root).
    """
    try:
        return child_url(source_root, name)
    except InvalidURLError as err:
        raise UnrepresentableNameError(
            f"cannot read '{shown_name(name)}' at {source_root}: {err}"
        ) from err


def exclude_glob(name: str) -> str:
    """The ``--exclude`` glob that matches the relative name ``name`` alone, as
    :func:`selected` matches (``fnmatch.fnmatchcase``): each of its glob characters
    ``*``, ``?`` and ``[`` in brackets (``x[1].txt`` -> ``x[[]1].txt``; ``]`` alone is
    literal there). A name given as it is would match others (``x[1].txt`` matches
    ``x1.txt``, not itself: tester72)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def exclude_option(name: str) -> str:
    """``--exclude GLOB`` for the relative name ``name`` alone (:func:`exclude_glob`),
    quoted for a POSIX shell (``shlex.quote``), to paste into the next command."""
    import shlex

    return f"--exclude {shlex.quote(exclude_glob(name))}"


def selected(name: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    """Whether ``name`` passes the filters: some include glob matches (or there is
    none) and no exclude glob does (``fnmatch``, case-sensitive; ``*`` matches ``/``
    too, so ``*.log`` matches ``a/b.log``)."""
    if include and not any(fnmatch.fnmatchcase(name, glob) for glob in include):
        return False
    return not any(fnmatch.fnmatchcase(name, glob) for glob in exclude)
