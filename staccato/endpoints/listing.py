"""Walking a directory tree in the order of an S3 listing, restartable from a name.

The file and sftp drivers list a tree one directory at a time (``readdir``); datasets
need the whole tree as one sequence of names in strictly increasing UTF-8 byte order
(the order of S3 ListObjectsV2), resumable from the last name seen. :func:`walk` gives
that order by sorting each directory's children by their name *as a prefix of the names
under them*: a directory ``d`` sorts as ``d/``, so ``d-x`` (``-`` is 0x2D) comes before
``d/a`` and ``d0`` after it, exactly where a flat listing puts them.

Restart from ``after``: a directory whose prefix ``d/`` is below ``after`` and is not a
prefix of it holds only smaller names and is never opened; only the directories on the
path to ``after`` are listed again (one ``readdir`` per level).

Memory: the sorted children of each directory on the current path (for a tree of
ordinary depth, about one directory's entries), plus one page.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass

from staccato.endpoints.base import keepalive
from staccato.errors import PermanentError
from staccato.models import ListEntry, ListPage

#: reasons of error entries, as users read them
BROKEN_LINK = "broken symbolic link"
LINK_LOOP = "symbolic link loop"


@dataclass(frozen=True)
class Child:
    """One child of a listed directory, symbolic links already followed.

    Attributes:
        name: one path segment.
        is_dir: a directory (or a link to one): walked, not listed.
        size: bytes (files).
        modified_at: seconds since the epoch (files), None if unknown.
        error: why it cannot be copied or walked (then it is an entry with that error;
            a directory's error entry is named ``name/``).
        identity: what tells a directory from its ancestors (a (device, inode) pair, a
            resolved path): a directory equal to one of its ancestors is a link loop.
    """

    name: str
    is_dir: bool = False
    size: int = 0
    modified_at: float | None = None
    error: str | None = None
    identity: Hashable = None


class ListDirectoryError(Exception):
    """A directory below the root cannot be listed (``reason`` says why, for users)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


#: lists the directory at a relative path (``""``: the root; else ``a/b/``) -> children
#: in any order; raises ListDirectoryError for a directory that cannot be listed
ListDirectory = Callable[[str], list[Child]]


def _sort_key(child: Child) -> bytes:
    name = child.name.encode("utf-8", "surrogatepass")
    return name + b"/" if child.is_dir else name


def walk(
    list_dir: ListDirectory, root_identity: Hashable, after: str | None
) -> Iterator[ListEntry]:
    """Every file under the root with a name greater than ``after`` (UTF-8 bytes), in
    strictly increasing order; error entries for what cannot be copied.

    Raises:
        whatever ``list_dir("")`` raises for the root itself.
    """
    bound = after.encode("utf-8", "surrogatepass") if after is not None else None
    # one frame per open directory: (its prefix, its children left, its identity)
    stack: list[tuple[str, Iterator[Child], Hashable]] = []

    def open_dir(prefix: str) -> Iterator[Child]:
        # two children with one key (a name shown with escapes beside the same name
        # spelled out): the one without an error wins
        children = sorted(list_dir(prefix), key=lambda c: (_sort_key(c), c.error is not None))
        unique = [next(group) for _, group in itertools.groupby(children, key=_sort_key)]
        return iter(unique)

    stack.append(("", open_dir(""), root_identity))
    while stack:
        prefix, children, _ = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            continue
        name = prefix + child.name + ("/" if child.is_dir else "")
        key = name.encode("utf-8", "surrogatepass")
        if not child.is_dir or child.error is not None:
            if bound is None or key > bound:
                yield ListEntry(
                    name=name, size=child.size, modified_at=child.modified_at, error=child.error
                )
            continue
        if bound is not None and key <= bound and not bound.startswith(key):
            continue  # every name under it is smaller than after
        if child.identity is not None and any(ident == child.identity for _, _, ident in stack):
            if bound is None or key > bound:
                yield ListEntry(name=name, error=LINK_LOOP)
            continue
        try:
            opened = open_dir(name)
        except ListDirectoryError as err:
            if bound is None or key > bound:
                yield ListEntry(name=name, error=err.reason)
            continue
        keepalive()
        stack.append((name, opened, child.identity))


def page(entries: Iterator[ListEntry], limit: int) -> ListPage:
    """The first ``limit`` of ``entries``; ``next_after`` is None only when no entry
    follows them (one more is read to know)."""
    if limit < 1:
        raise PermanentError(f"a listing page holds at least 1 entry, not {limit}")
    taken = list(itertools.islice(entries, limit))
    more = next(entries, None) is not None
    return ListPage(entries=taken, next_after=taken[-1].name if more and taken else None)
