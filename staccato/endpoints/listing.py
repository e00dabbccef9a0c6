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
ordinary depth, about one directory's entries), plus one page, plus what a driver keeps
in a :class:`SortedCache` (the last two large directories).
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import posixpath
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass

from staccato.endpoints.base import keepalive, moved
from staccato.errors import PermanentError
from staccato.models import ListEntry, ListPage

#: reasons of error entries, as users read them
BROKEN_LINK = "broken symbolic link"
LINK_LOOP = "symbolic link loop"


def into_destination(shown: str, real: str, *, link: bool, directory: bool) -> str:
    """Why an entry that leads into the destination root ``shown`` (it resolves to
    ``real``) is not followed: a link to the root or into it, or the root itself met
    below a link to a directory above it, would copy the copy (a directory's, one
    level deeper each run)."""
    what = (
        f"symbolic link into the destination root {shown} (it leads to {real})"
        if link
        else f"the destination root {shown}"
    )
    deeper = ", one level deeper each run" if directory else ""
    return f"{what}: copying it would copy the copy{deeper}; not followed"


@dataclass(frozen=True)
class Fence:
    """The destination roots a walk must not enter: the real paths (every symbolic
    link resolved, on the listed endpoint) of a dataset's destination roots that lie
    on the endpoint being listed, each with the root as users read it.

    A directory whose real path is such a root or lies inside one is not walked, and
    a link (to a file or a directory, or a broken one) that resolves there is not
    followed: each is an error entry (:func:`into_destination`).
    """

    roots: tuple[tuple[str, str], ...] = ()

    def holding(self, real: str) -> str | None:
        """The root (as shown) that the real path ``real`` is or lies inside, or None."""
        for path, shown in self.roots:
            if real == path or real.startswith(path.rstrip("/") + "/"):
                return shown
        return None


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
        described: the other fields are known; if not, only ``name`` and ``is_dir`` are,
            and the walk asks ``describe`` for the rest when (and only when) it yields
            or opens this child, so names a restart skips cost no ``stat``.
        real: a symbolic link's target with every link resolved (also a broken
            link's, where the driver can tell), when the driver resolved it (it does
            when the walk has a :class:`Fence`); None for anything else (a directory's
            real path is then its parent's and its name).
    """

    name: str
    is_dir: bool = False
    size: int = 0
    modified_at: float | None = None
    error: str | None = None
    identity: Hashable = None
    described: bool = True
    real: str | None = None


class ListDirectoryError(Exception):
    """A directory below the root cannot be listed (``reason`` says why, for users)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SortedChildren:
    """A directory's children in walk order (see :func:`sort_children`), with their
    sort keys; immutable, so a driver may keep it for the next page."""

    children: tuple[Child, ...]
    keys: tuple[bytes, ...]


#: lists the directory at a relative path (``""``: the root; else ``a/b/``) -> children
#: in any order, or already sorted; raises ListDirectoryError for a directory that
#: cannot be listed
ListDirectory = Callable[[str], "list[Child] | SortedChildren"]
#: (directory's relative path, a child not yet described) -> the child described, or
#: None if it is gone
Describe = Callable[[str, Child], "Child | None"]


def _as_described(prefix: str, child: Child) -> Child | None:
    return child


def _sort_key(child: Child) -> bytes:
    name = child.name.encode("utf-8", "surrogatepass")
    return name + b"/" if child.is_dir else name


#: added to the shown name of an error entry (a name that is not valid UTF-8, spelled
#: with ``\\xNN`` escapes) whose spelling is also a sibling's real name: the file
#: ``b"bad\\xffname"`` beside a file literally named ``bad\\xffname``. Both are listed,
#: the first as ``bad\\xffname (name not valid UTF-8)``, failed with its reason (before,
#: it was left out of the listing without a word and the dataset reported no failure)
TWIN_SUFFIX = " (name not valid UTF-8)"


def sort_children(children: list[Child]) -> SortedChildren:
    """``children`` in walk order: by name as UTF-8 bytes, a directory ``d`` as ``d/``.

    Keys are unique: an error entry whose name is a sibling's too (a name shown with
    escapes beside the same name spelled out) gets :data:`TWIN_SUFFIX` until it is not.
    """
    taken = {_sort_key(c) for c in children if c.error is None}
    unique: list[Child] = []
    for child in children:
        if child.error is not None:
            # ends: each pass makes it longer, and the names taken are finite
            while _sort_key(child) in taken:
                child = dataclasses.replace(child, name=child.name + TWIN_SUFFIX)
            taken.add(_sort_key(child))
        unique.append(child)
    unique.sort(key=_sort_key)
    return SortedChildren(tuple(unique), tuple(_sort_key(c) for c in unique))


def _start(listed: SortedChildren, rest: bytes) -> int:
    """Index of the first child that can hold a name above ``rest`` (the bound, relative
    to this directory): the directory on the bound's path, else the first key above it."""
    segment, slash, _ = rest.partition(b"/")
    if slash:
        on_path = bisect.bisect_left(listed.keys, segment + b"/")
        if on_path < len(listed.keys) and listed.keys[on_path] == segment + b"/":
            return on_path
    return bisect.bisect_right(listed.keys, rest)


def walk(
    list_dir: ListDirectory,
    root_identity: Hashable,
    after: str | None,
    describe: Describe = _as_described,
    *,
    fence: Fence | None = None,
    root_real: str | None = None,
) -> Iterator[ListEntry]:
    """Every file under the root with a name greater than ``after`` (UTF-8 bytes), in
    strictly increasing order; error entries for what cannot be copied. In a directory
    on the path to ``after`` the walk starts by bisection, so a restart costs one
    listing (and sort) per level, not a pass over the names it skips.

    With a ``fence`` (and the root's real path ``root_real``), a directory whose real
    path is a fenced root or lies inside one, and a child whose ``real`` does, are
    error entries (named ``name/`` for a directory): never walked, never copied.

    Raises:
        whatever ``list_dir("")`` raises for the root itself.
    """
    bound = after.encode("utf-8", "surrogatepass") if after is not None else None
    fenced = fence is not None and bool(fence.roots)
    # one frame per open directory: (its prefix, its children left, its identity, its
    # real path: None when unknown)
    stack: list[tuple[str, Iterator[Child], Hashable, str | None]] = []

    def open_dir(prefix: str) -> Iterator[Child]:
        listed = list_dir(prefix)
        if not isinstance(listed, SortedChildren):
            listed = sort_children(listed)
        start = 0
        encoded = prefix.encode("utf-8", "surrogatepass")
        if bound is not None and bound.startswith(encoded):
            start = _start(listed, bound[len(encoded) :])
        return itertools.islice(listed.children, start, None)

    stack.append(("", open_dir(""), root_identity, root_real))
    while stack:
        prefix, children, _, parent_real = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            continue
        name = prefix + child.name + ("/" if child.is_dir else "")
        key = name.encode("utf-8", "surrogatepass")
        real = child.real
        if real is None and child.is_dir and parent_real is not None:
            real = posixpath.join(parent_real, child.name)
        if fenced and real is not None:
            assert fence is not None
            shown = fence.holding(real)
            if shown is not None:
                if bound is None or key > bound:
                    why = into_destination(
                        shown, real, link=child.real is not None, directory=child.is_dir
                    )
                    yield ListEntry(name=name, error=why)
                continue
        if not child.is_dir or child.error is not None:
            if bound is None or key > bound:
                described = child if child.described else describe(prefix, child)
                if described is not None:
                    yield ListEntry(
                        name=prefix + described.name + ("/" if described.is_dir else ""),
                        size=described.size,
                        modified_at=described.modified_at,
                        error=described.error,
                    )
            continue
        if bound is not None and key <= bound and not bound.startswith(key):
            continue  # every name under it is smaller than after
        if not child.described:
            described = describe(prefix, child)
            if described is None:
                continue
            if described.error is not None:
                if bound is None or key > bound:
                    yield ListEntry(name=name, error=described.error)
                continue
            child = described
        if child.identity is not None and any(frame[2] == child.identity for frame in stack):
            if bound is None or key > bound:
                yield ListEntry(name=name, error=LINK_LOOP)
            continue
        try:
            opened = open_dir(name)
        except ListDirectoryError as err:
            if bound is None or key > bound:
                yield ListEntry(name=name, error=err.reason)
            continue
        moved()  # the directory was read: its endpoint answers (a listing's hang watch)
        keepalive()
        stack.append((name, opened, child.identity, real))


class SortedCache:
    """The sorted children of the last few large directories listed, so paging through
    a directory of N names costs one read of it rather than one per page (N / limit).

    Keyed by a token the driver builds from what tells the directory changed (path,
    inode, mtime, ctime...): a changed directory is read again. Bounded: at most
    ``max_dirs`` directories, only those of at least ``min_names`` names (~200 bytes of
    memory per name). Thread-safe (activities run in threads).
    """

    def __init__(self, min_names: int = 5_000, max_dirs: int = 2) -> None:
        self.min_names = min_names
        self.max_dirs = max_dirs
        self._kept: OrderedDict[Hashable, SortedChildren] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, token: Hashable) -> SortedChildren | None:
        with self._lock:
            kept = self._kept.get(token)
            if kept is not None:
                self._kept.move_to_end(token)
            return kept

    def put(self, token: Hashable, listed: SortedChildren) -> None:
        if len(listed.children) < self.min_names:
            return
        with self._lock:
            self._kept[token] = listed
            while len(self._kept) > self.max_dirs:
                self._kept.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()


def page(entries: Iterator[ListEntry], limit: int) -> ListPage:
    """The first ``limit`` of ``entries``; ``next_after`` is None only when no entry
    follows them (one more is read to know)."""
    if limit < 1:
        raise PermanentError(f"a listing page holds at least 1 entry, not {limit}")
    taken = list(itertools.islice(entries, limit))
    more = next(entries, None) is not None
    return ListPage(entries=taken, next_after=taken[-1].name if more and taken else None)
