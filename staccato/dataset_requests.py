"""Datasets (``cp -r``), whichever client starts them: the request a start is made of
(:func:`make_dataset_request`: validated, canonical), its workflow id
(:func:`request_id`), what its run carries besides its input (:func:`start_fields`:
memo, search attributes, summary) and a completed dataset's status from its result
(:func:`status_from_result`). Free of Temporal's SDK: the SDK's client
(:mod:`staccato.dataset_client`) and the light one (:mod:`staccato.light_client`)
both use them, so both start the same run.
"""

from __future__ import annotations

import hashlib
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from staccato import run_fields
from staccato.datasets.models import (
    DATASET_ID_PREFIX,
    FAN_OUT_BATCH_FILES,
    DatasetRequest,
    DatasetResult,
    DatasetState,
    DatasetStatus,
)
from staccato.datasets.names import exclude_glob
from staccato.errors import (
    InvalidURLError,
    SourceRootNotADirectoryError,
    SourceRootNotFoundError,
    source_root_not_a_directory,
)
from staccato.models import MiB, TransferOptions, request_digest, verify_full_refusal
from staccato.overlaps import compared_place, encloses
from staccato.quantities import URL_OR_PATH, require_str, str_list
from staccato.urls import parse_url, resolve_local_directory, root_text

#: schemes a dataset can be listed from
LISTABLE_SCHEMES = ("file", "s3", "sftp")


def dataset_id(destination_root: str) -> str:
    """The dataset id (= workflow id) for a destination directory or prefix (a local
    directory named through a symbolic link by its real path, as requests are)."""
    root = root_text(resolve_local_directory(parse_url(destination_root), is_directory=True))
    return DATASET_ID_PREFIX + hashlib.sha256(root.encode()).hexdigest()[:32]


def fan_out_dataset_id(source_root: str, destination_roots: Sequence[str]) -> str:
    """The id of a dataset with several destination roots (canonical roots, as in its
    request): ``staccato-dataset-`` + 32 hex of SHA-256 of the source root and the
    sorted destination roots. Stable for the same source and set of roots (a re-run
    attaches, resumes or dedups), and never a single destination's id (whose digest
    is of one root alone)."""
    text = "\n".join(["fan-out", source_root, *sorted(destination_roots)])
    return DATASET_ID_PREFIX + hashlib.sha256(text.encode()).hexdigest()[:32]


def request_id(request: DatasetRequest) -> str:
    """The workflow id of ``request``: :func:`dataset_id` of its destination root, or
    :func:`fan_out_dataset_id` with several roots."""
    if request.destination_roots is not None:
        return fan_out_dataset_id(request.source_root, request.destination_roots)
    return dataset_id(request.destination_root)


def _fan_out_roots(source_root: str, destinations: Sequence[str]) -> list[str]:
    """Canonical destination roots of a dataset with several (exit-2 checks of a
    fan-out: a root given twice, a root equal to or inside the source or another root).

    Raises:
        InvalidURLError: naming the URL and what is wrong.
    """
    from staccato.models import MAX_FAN_OUT

    if len(destinations) > MAX_FAN_OUT:
        raise InvalidURLError(
            f"{len(destinations)} destinations: a dataset writes at most {MAX_FAN_OUT}"
        )
    roots: list[str] = []
    reals: list[str] = []
    given: dict[str, str] = {}
    for text in destinations:
        dst = resolve_local_directory(parse_url(text), is_directory=True)
        if dst.scheme not in LISTABLE_SCHEMES:
            raise InvalidURLError(
                f"{dst.scheme} endpoints can only be sources, not destinations: {dst}"
            )
        root = root_text(dst)
        if root in given:
            raise InvalidURLError(
                f"destination {root} is given twice (as {given[root]!r} and {text!r})"
            )
        if root == source_root:
            raise InvalidURLError(f"destination {root} is the source")
        real = compared_place(dst)
        for other, other_real in zip(roots, reals, strict=True):
            if real == other_real:
                raise InvalidURLError(
                    f"destinations {other} and {root} are one directory (through a "
                    "symbolic link): give it once"
                )
            if encloses(other_real, real) or encloses(real, other_real):
                raise InvalidURLError(
                    f"destinations {other} and {root} overlap (one is inside the other); "
                    "pick disjoint roots"
                )
        given[root] = text
        roots.append(root)
        reals.append(real)
    return roots


def check_local_source(source: str) -> None:
    """Refuse a local ``source`` of a dataset that is a regular file or that is not
    there, before anything starts: the one check ``cp -r``/``submit -r`` (exit 2) and
    :func:`staccato.dataset_client.submit_dataset` run. It runs on the machine whose
    paths it was given (see :func:`staccato.urls.resolve_local_directory`); other
    schemes are listed by the workers, which fail the dataset the same way.

    Raises:
        SourceRootNotFoundError: the directory does not exist (named, with its path).
        SourceRootNotADirectoryError: it is a file (drop -r to copy it).
        InvalidURLError: ``source`` is not a URL or path.
        TypeError: ``source`` is not a str.
    """
    url = parse_url(require_str(source, "source", URL_OR_PATH))
    if url.scheme != "file":
        return
    path = url.path.rstrip("/") or "/"
    if os.path.isdir(path):
        return
    if os.path.exists(path):
        raise SourceRootNotADirectoryError(source_root_not_a_directory(repr(source)))
    raise SourceRootNotFoundError(f"source directory {source!r} does not exist ({path})")


def directory_patterns(source: str, include: Sequence[str], exclude: Sequence[str]) -> list[str]:
    """Warnings for the ``--include``/``--exclude`` patterns that name a directory of
    the local ``source`` (``a``, ``a/``): patterns match file names (:func:`selected
    <staccato.datasets.names.selected>`), so such a one leaves out (or selects) none
    of its files, without a word (tester72: ``--exclude a`` copied all of ``a``). Each
    warning names the pattern that does it, ``'a/*'`` (``*`` also matches ``/``: as
    rclone's ``a/**``, which matches the same). Other schemes: none (checking
    would ask the endpoint before the dataset starts; their listing runs on a worker).

    Raises:
        InvalidURLError: ``source`` is not a URL or path.
    """
    url = parse_url(source)
    if url.scheme != "file":
        return []
    root = url.path.rstrip("/") or "/"
    said = []
    for option, patterns, verb in (
        ("--exclude", exclude, "leaves out none of its files"),
        ("--include", include, "selects none of its files"),
    ):
        for pattern in patterns:
            name = pattern.strip("/")
            if not name or not os.path.isdir(os.path.join(root, name)):
                continue
            if any(c in name for c in "*?["):
                continue  # a glob: it may match files as meant; only a plain name is told
            whole = shlex.quote(exclude_glob(name) + "/*")
            said.append(
                f"{option} {shlex.quote(pattern)} names a directory of the source; patterns "
                f"match file names, so it {verb}: give {option} {whole} for the files "
                "under it"
            )
    return said


def require_options(options: object) -> TransferOptions | None:
    """``options`` of a dataset call, checked: a :class:`TransferOptions` or None (the
    defaults).

    Raises:
        TypeError: anything else (a dict was taken as given before), naming ``options``.
    """
    if options is None or isinstance(options, TransferOptions):
        return options
    raise TypeError(
        f"options must be a staccato.models.TransferOptions or None (the defaults), not "
        f"{type(options).__name__} ({options!r}): e.g. TransferOptions(streams=2)"
    )


def _check_local_root(path: str) -> None:
    """Refuse a local destination root that is a file or a broken symbolic link (a
    directory above it that is a file fails the dataset once, up front, on the worker).

    Raises:
        InvalidURLError: naming the path and what it is.
    """
    if os.path.lexists(path) and not os.path.isdir(path):
        kind = "a file" if os.path.exists(path) else "a broken symbolic link"
        raise InvalidURLError(
            f"destination {path} is {kind}, not a directory: cp -r writes the source's "
            "files under a directory; name a directory (it is created if missing)"
        )


def _check_disjoint(
    source_root: str,
    destination_root: str,
    real_source: str,
    real_destination: str,
    exclude: Sequence[str],
) -> None:
    """Refuse a dataset whose roots overlap (compared as :func:`staccato.overlaps.compared_place` says: a local path by
    real path, an SFTP root by host and port, whatever user is named):
    one root, or the source inside the destination, always; the destination inside
    the source unless an exclude glob leaves out every name under it
    (:func:`excluded_below`: the walk then lists nothing of it, and never enters it:
    ``Driver.list_page``'s ``fence``).

    Raises:
        InvalidURLError: naming both roots, and the exclude that would do.
    """
    if encloses(real_source, real_destination):
        source_base = real_source.partition("?")[0].rstrip("/")
        below = real_destination.partition("?")[0].rstrip("/")[len(source_base) + 1 :]
        if excluded_below(below, exclude) is not None:
            return
        raise InvalidURLError(
            f"source {source_root} and destination {destination_root} overlap (the "
            "destination is inside the source): the copy would list its own output and "
            "copy the copy on every run; pick a destination outside the source, or leave "
            f"it out with --exclude {shlex.quote(exclude_glob(below) + '/*')}"
        )
    if real_source == real_destination or encloses(real_destination, real_source):
        raise InvalidURLError(
            f"source {source_root} and destination {destination_root} overlap (one is "
            "inside the other): the copy would list its own output; pick disjoint roots"
        )


def excluded_below(directory: str, exclude: Sequence[str]) -> str | None:
    """The first glob of ``exclude`` that leaves out every name under the relative
    directory ``directory`` (names are matched as ``--exclude`` does:
    ``fnmatchcase``, ``*`` also matching ``/``): one ending in ``*`` whose head
    matches a prefix of ``directory/`` (``backup/*``, ``back*``, ``*``); None if none
    does (a glob that leaves out only some names does not count)."""
    import fnmatch

    whole = directory + "/"
    for glob in exclude:
        if not glob.endswith("*"):
            continue
        head = glob[:-1]
        if any(fnmatch.fnmatchcase(whole[:cut], head) for cut in range(len(whole) + 1)):
            return glob
    return None


def make_dataset_request(
    source: str,
    destination: str | Sequence[str],
    options: TransferOptions | None = None,
    *,
    include: str | Sequence[str] = (),
    exclude: str | Sequence[str] = (),
    small_file_max: int = 64 * MiB,
    retry_failed: list[str] | None = None,
    **tuning: Any,
) -> DatasetRequest:
    """Validate and canonicalise a dataset request.

    Args:
        tuning: further :class:`DatasetRequest` fields (``page_size``, ``batch_files``,
            ``batch_bytes``, ``max_batches``, ``max_children``, ``history_limit``).

    Args:
        destination: one destination root, or several (a list of two or more: each
            file read once and written to every root; ``retry_failed`` then holds
            (name, root) pairs through ``tuning["retry_targets"]``).

    Raises:
        InvalidURLError: a URL is malformed, the source cannot be listed (http), the
            destination cannot be written, or one root lies inside the other (the
            destination may lie inside the source when ``exclude`` leaves it out:
            ``--exclude 'backup/*'``); with several: a root given twice or equal to
            the source; ``options.verify`` is ``full`` (read back for single transfers
            only: :func:`staccato.models.verify_full_refusal`, the CLI's words).
        TypeError: ``include``, ``exclude`` or a list ``destination`` holds something
            other than str (a single str is one pattern or root:
            :func:`staccato.quantities.str_list`).
    """
    include, exclude = str_list(include, "include"), str_list(exclude, "exclude")
    if options is not None and (
        refused := verify_full_refusal(options.verify, [], recursive=True)
    ):  # the CLI's refusal of -r --verify full, before anything starts
        raise InvalidURLError(refused)
    if not isinstance(destination, str):
        destination = str_list(destination, "destination")
        if len(destination) == 1:
            destination = destination[0]
        else:
            return _make_fan_out_request(
                source,
                list(destination),
                options,
                include=include,
                exclude=exclude,
                small_file_max=small_file_max,
                retry_failed=retry_failed,
                **tuning,
            )
    src = parse_url(require_str(source, "source", URL_OR_PATH))
    dst = resolve_local_directory(parse_url(destination), is_directory=True)
    if src.scheme not in LISTABLE_SCHEMES:
        raise InvalidURLError(
            f"cannot copy {src} recursively: {src.scheme} endpoints name single objects; "
            "cp -r needs a file, s3 or sftp directory or prefix as source"
        )
    if dst.scheme not in LISTABLE_SCHEMES:
        raise InvalidURLError(
            f"{dst.scheme} endpoints can only be sources, not destinations: {dst}"
        )
    if dst.scheme == "file":
        _check_local_root(dst.path)
    source_root, destination_root = root_text(src), root_text(dst)
    _check_disjoint(
        source_root, destination_root, compared_place(src), compared_place(dst), exclude
    )
    return _request(
        source_root=source_root,
        destination_root=destination_root,
        options=options or TransferOptions(),
        include=list(include),
        exclude=list(exclude),
        small_file_max=small_file_max,
        retry_failed=retry_failed,
        **tuning,
    )


def _request(**fields: Any) -> DatasetRequest:
    """The :class:`DatasetRequest` of ``fields``.

    Raises:
        InvalidURLError: a field out of its range (pydantic's reason).
    """
    try:
        return DatasetRequest(**fields)
    except ValueError as err:
        raise InvalidURLError(f"invalid dataset request: {err}") from None


def _make_fan_out_request(
    source: str,
    destinations: list[str],
    options: TransferOptions | None,
    *,
    include: Sequence[str],
    exclude: Sequence[str],
    small_file_max: int,
    retry_failed: list[str] | None,
    **tuning: Any,
) -> DatasetRequest:
    """:func:`make_dataset_request` with several destination roots."""
    if len(destinations) < 2:
        raise InvalidURLError("a dataset needs at least one destination")
    firsts = [
        make_dataset_request(source, d, options, include=include, exclude=exclude)
        for d in destinations
    ]  # each pair as a single dataset checks it (kinds, overlap with the source)
    roots = _fan_out_roots(firsts[0].source_root, destinations)
    tuning.setdefault("batch_files", FAN_OUT_BATCH_FILES)
    return _request(
        source_root=firsts[0].source_root,
        destination_root=roots[0],
        destination_roots=roots,
        options=options or TransferOptions(),
        include=list(include),
        exclude=list(exclude),
        small_file_max=small_file_max,
        retry_failed=retry_failed,
        **tuning,
    )


def request_hash(request: DatasetRequest) -> str:
    """Tells an identical re-submission (attach) from a different one (busy): the rule
    of a single transfer's (:func:`staccato.models.request_digest`: the options that say
    how to run, such as ``--max-rate``, are left out)."""
    return request_digest(request, request.options)


def previous_request_hashes(request: DatasetRequest) -> tuple[str, ...]:
    """The hash 0.12.0 and earlier kept in a dataset's memo (of the whole request): a
    dataset they started that still runs is attached to by its identical request."""
    return (hashlib.sha256(request.model_dump_json().encode()).hexdigest()[:32],)


def status_from_result(workflow_id: str, result: DatasetResult) -> DatasetStatus:
    """The status of a dataset whose run completed (``completed`` or
    ``completed_with_errors``), from its workflow result alone."""
    total = result.files_done + result.files_skipped + result.files_failed
    return DatasetStatus(
        id=workflow_id,
        state=result.state,
        source=result.source,
        destination=result.destination,
        destination_roots=(
            [d.destination for d in result.destinations] if result.destinations else None
        ),
        files_total=total,
        files_done=result.files_done,
        files_skipped=result.files_skipped,
        files_failed=result.files_failed,
        bytes_total=_bytes_total(result),
        bytes_done=result.bytes_done,
        listing_done=True,
        # no rate: nothing moves any more (a rate is a current one, as a single
        # transfer's; tester62 saw "rate 213.8 KiB/s" on a dataset long ended)
        duration_s=result.duration_s,
        runs=result.runs,
        failures=result.failures,
        destinations=result.destinations,
        # nothing selected, files listed: the filters matched none (its warning needs
        # the request's patterns: dataset_client.dataset_status adds it)
        filters_matched_none=(result.files_filtered or None) if total == 0 else None,
        files_left_out=result.files_left_out or None,
        left_out_names=result.left_out_names or None,
    )


def _bytes_total(result: DatasetResult) -> int | None:
    """A completed dataset's bytes listed; from a worker before 0.18.0 (no
    ``bytes_listed`` in its result) the bytes copied when every file was copied, else
    None: its result does not say the size of the files up to date or failed (0 was
    shown for a tree all up to date)."""
    if result.bytes_listed is not None:
        return result.bytes_listed
    return result.bytes_done if result.files_skipped == result.files_failed == 0 else None


@dataclass(frozen=True)
class StartFields:
    """What a dataset's run is started with besides its input.

    Attributes:
        memo: source and destination roots (full), the request hash (tells an
            identical request, which attaches, from a different one, refused as busy),
            ``kind: dataset`` and with several roots their list.
        search_attributes: Keyword search attributes by name: source and (first)
            destination root, each cut to fit, and the state ``scheduled``.
        summary: the UI's one-line summary (at most 200 characters).
    """

    memo: dict[str, Any]
    search_attributes: dict[str, str]
    summary: str


def start_fields(request: DatasetRequest) -> StartFields:
    """The memo, search attributes and summary a dataset's run is started with, by
    either client. No secret: roots carry no query but an s3 profile name."""
    roots = request.destination_roots
    memo: dict[str, Any] = {
        "source": request.source_root,
        "destination": request.destination_root,
        "request_hash": request_hash(request),
        "kind": "dataset",
    }
    if roots is not None:
        memo["destinations"] = roots
    # the roots as status names them (no trailing '/'); "(dataset)" says what they are
    shown = f"{len(roots)} destinations" if roots else request.destination_root
    return StartFields(
        memo=memo,
        search_attributes={
            run_fields.SOURCE: run_fields.keyword(request.source_root),
            run_fields.DESTINATION: run_fields.keyword(request.destination_root),
            run_fields.STATE: DatasetState.scheduled.value,
        },
        summary=f"{request.source_root} -> {shown} (dataset)"[:200],
    )
