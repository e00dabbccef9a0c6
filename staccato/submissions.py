"""Starting a transfer, whichever client starts it: the request a start is made of
(:func:`make_request`: validated, canonical, its source's query sealed), what the
start did (:class:`Submission`) and a completed transfer's status from its result
(:func:`completed_status`). Free of Temporal's SDK: the SDK's client
(:class:`staccato.client.StaccatoClient`) and the light one
(:mod:`staccato.light_client`) both use them.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import unquote

from staccato.errors import InvalidURLError, directory_target_message
from staccato.ids import transfer_id
from staccato.models import (
    TransferOptions,
    TransferRequest,
    TransferResult,
    TransferState,
    TransferStatus,
    restarted_text,
    verify_full_refusal,
)
from staccato.overlaps import compared_place
from staccato.quantities import URL_OR_PATH, require_str
from staccato.secrets import seal_source
from staccato.urls import SOURCE_ONLY_SCHEMES, EndpointURL, parse_url, resolve_local_directory


@dataclass(frozen=True)
class Submission:
    """What :meth:`StaccatoClient.start` did.

    Attributes:
        id: the transfer id to follow (the destination's transfer id, or a front
            run's ``<transfer id>-<8 hex>`` when it waits or starts later).
        run_id: the Temporal run.
        attached: an identical transfer was running: nothing new was started.
        queued: a different transfer holds the destination; this one waits for it
            (``if_busy = wait``) as a front run.
        starts_at: the start time of a delayed start (``not_before``), else None.
        ignored: attached, with options that differ from the running transfer's and
            so do not apply to it (those the request hash leaves out: ``--max-rate``,
            ``--priority``, ``--owner``, ``--from-origin``), one text each:
            ``--max-rate 5.0 MiB/s requested, none running``.
    """

    id: str
    run_id: str
    attached: bool = False
    queued: bool = False
    starts_at: datetime | None = None
    ignored: tuple[str, ...] = ()


def shown_start(at: datetime) -> str:
    """A delayed start's time as ``submit`` and ``status`` show it: ISO 8601 in UTC,
    to the second (truncated), e.g. ``2026-12-05T14:38:29+00:00``; the one rounding
    both use, so they name the same second for the same stored time."""
    return at.astimezone(UTC).isoformat(timespec="seconds")


def destination_transfer_id(destination: str) -> str:
    """The transfer id of a destination as a user names it: a local path whose
    directory is a symbolic link is named by the directory's real path first, as
    :meth:`StaccatoClient.make_request` does (:func:`staccato.urls.resolve_local_directory`).

    Raises:
        InvalidURLError: not a valid destination URL or path.
    """
    return transfer_id(resolve_local_directory(parse_url(destination)).canonical)


def _directory_destination(src: EndpointURL, text: str, dst: EndpointURL) -> str | None:
    """Why the destination ``text`` (parsed: ``dst``) cannot be a single transfer's
    destination because it names a directory or prefix, or None when it names an
    object. A destination ending in ``/`` (a local path, ``file://``, ``sftp://``, an
    S3 key; a bare ``s3://BUCKET``) is refused alike for every kind: a transfer writes
    the object it is given the name of, never a name it picks inside a directory
    (``cp -r`` copies into a directory). So is a local destination that is a directory
    here, with or without the ``/`` (one message, the worker's words:
    :func:`~staccato.errors.directory_target_message`; the transfer would fail on it
    at its first step); an SFTP directory only a worker can see. The message suggests
    the full name with the source's base name."""
    base = posixpath.basename(unquote(src.path) if src.scheme in ("http", "https") else src.path)
    if dst.scheme == "file" and os.path.isdir(dst.path):
        shown = text.split("?", 1)[0].rstrip("/") or "/"
        return directory_target_message(shown, base or "NAME") + " (cp -r copies into a directory)"
    if dst.scheme == "s3":
        if dst.key and not dst.key.endswith("/"):
            return None
        what = (
            "names a bucket, not an object"
            if not dst.key
            else "names no S3 object (a key ending in '/' is a folder marker)"
        )
    elif dst.scheme in ("file", "sftp"):
        # a local path's trailing '/' is gone from its canonical form: read the text
        if not (dst.path.endswith("/") or text.split("?", 1)[0].endswith("/")):
            return None
        what = "ends in '/': it names a directory"
    else:
        return None
    full = text if text.endswith("/") else text + "/"
    example = f"{full}{base}" if base else f"{full}NAME"
    return (
        f"destination {text!r} {what}; name the object to write in full, e.g. "
        f"{example} (cp -r copies into a directory or prefix)"
    )


def make_request(
    source: str, destination: str, options: TransferOptions | None = None
) -> TransferRequest:
    """Validate and canonicalise a transfer request.

    Raises:
        InvalidURLError: a URL is malformed, unknown, or cannot play its role, the
            source has a query (a token) and no key to seal it is configured, or
            ``options.verify`` is ``full`` and the destination's kind is not read back
            (:func:`staccato.models.verify_full_refusal`, the CLI's words).
        SecretKeyError: a configured key is malformed.
        TypeError: ``source`` or ``destination`` is not a str.
    """
    src = parse_url(require_str(source, "source", URL_OR_PATH))
    if src.scheme == "s3" and not src.key:
        whole = source.split("?", 1)[0].rstrip("/")
        raise InvalidURLError(
            f"source {source!r} names a bucket, not an object: a copy reads one object, "
            f"{whole}/KEY (cp -r {whole}/ copies every object in the bucket)"
        )
    dst = resolve_local_directory(parse_url(require_str(destination, "destination", URL_OR_PATH)))
    if dst.scheme in SOURCE_ONLY_SCHEMES:
        raise InvalidURLError(
            f"{dst.scheme} endpoints can only be sources, not destinations: {dst}"
        )
    if src.canonical == dst.canonical or (
        # one SFTP server named with and without a user (overlaps.compared_place)
        src.scheme == dst.scheme == "sftp" and compared_place(src) == compared_place(dst)
    ):
        raise InvalidURLError(f"source and destination are the same object: {dst}")
    if src.scheme == dst.scheme == "file" and os.path.realpath(src.path) == dst.path:
        # the destination's directory is named by its real path already
        raise InvalidURLError(
            f"source and destination are the same object: {src} resolves to {dst} (through a "
            "symbolic link)"
        )
    if refused := _directory_destination(src, destination, dst):
        raise InvalidURLError(refused)
    options = options or TransferOptions()
    # the CLI's refusal, before anything starts (the workflow refuses it too)
    if refused := verify_full_refusal(options.verify, [destination]):
        raise InvalidURLError(refused)
    # an http(s) query is secret: Temporal gets the redacted URL and the query sealed
    source_text, source_secret = seal_source(src.canonical)
    return TransferRequest(
        source=source_text,
        destination=dst.canonical,
        options=options,
        source_secret=source_secret,
    )


def completed_status(workflow_id: str, result: TransferResult) -> TransferStatus:
    """The status of a completed transfer, from its workflow result alone."""
    return TransferStatus(
        id=workflow_id,
        state=TransferState.completed,
        source=result.source,
        destination=result.destination,
        bytes_total=result.bytes,
        bytes_done=0 if result.up_to_date else result.bytes,  # up to date: nothing copied
        bytes_durable=0 if result.up_to_date else result.bytes,
        rate_bytes_per_s=None,
        eta_s=None,
        streams=result.streams,
        chunk_size=result.chunk_size,
        checksum=result.checksum or None,
        error=None,
        phase="done",
        up_to_date=result.up_to_date or None,
        sync_level=result.sync_level,
        tuning=result.tuning,
        read_from=result.read_from,
        read_from_reason=result.read_from_reason,
        restarted=restarted_text(
            result.destination, result.sessions_lost, result.session_lost_reason
        ),
        # the level it was verified at (``full``: read back whole before publish) and
        # what that read-back copied again (a tester could not tell whether it ran)
        verify_level=None if result.up_to_date else result.verified,
        segments_copied_again=result.read_back_recopied,
        duration_s=round(result.duration_s, 3),
    )
