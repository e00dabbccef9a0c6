"""How the ``staccato`` command shows transfers: the progress bar (a terminal), one
line every 2 s (a pipe or a log), ``status`` key/value lines and ``list`` rows."""

from __future__ import annotations

import time

from pydantic import ByteSize

from staccato.client import StaccatoClient
from staccato.models import TransferState, TransferStatus

_TERMINAL = (TransferState.completed, TransferState.failed, TransferState.cancelled)
#: seconds between two progress lines when stderr is not a terminal
PLAIN_LINE_INTERVAL_S = 2.0


def size(n: float) -> str:
    """Bytes for people, in binary units: ``512 B``, ``1.5 MiB`` (pydantic's ByteSize)."""
    return ByteSize(int(n)).human_readable(separator=" ")


def retry_note(s: TransferStatus) -> str:
    """``retrying: <reason> (next attempt at <time>)``, or "" when nothing is retrying."""
    if not s.last_retry_error:
        return ""
    when = f" (next attempt at {s.next_attempt_at})" if s.next_attempt_at else ""
    return f"retrying: {s.last_retry_error}{when}"


def progress_text(s: TransferStatus) -> str:
    """``1.0 MiB / 4.0 MiB (25%) 2.0 MiB/s eta 2s`` and a retry note if one is pending;
    ``up to date (size): nothing copied`` for a transfer its sync level skipped."""
    if s.up_to_date and s.sync_level:
        return f"up to date ({s.sync_level.value}): nothing copied"
    total = size(s.bytes_total) if s.bytes_total is not None else "?"
    pct = f" ({100 * s.bytes_done / s.bytes_total:.0f}%)" if s.bytes_total else ""
    rate = f" {size(s.rate_bytes_per_s)}/s" if s.rate_bytes_per_s else ""
    eta = f" eta {s.eta_s:.0f}s" if s.eta_s is not None else ""
    retry = f" {retry_note(s)}" if s.last_retry_error else ""
    return f"{size(s.bytes_done)} / {total}{pct}{rate}{eta}{retry}"


def plain_line(s: TransferStatus) -> str:
    """One progress line for a pipe or a log: ``running: <progress_text>``."""
    return f"{s.state.value}: {progress_text(s)}"


def status_lines(s: TransferStatus) -> list[str]:
    """``staccato status``: one ``key value`` line per field that has a value."""
    return [f"{key:18} {value}" for key, value in s.to_json_dict().items() if value is not None]


def list_row(s: TransferStatus) -> str:
    """``staccato list``: id, state, progress, source -> destination."""
    return f"{s.id}  {s.state.value:10} {progress_text(s):40}  {s.source} -> {s.destination}"


async def follow(client: StaccatoClient, transfer: str, *, quiet: bool) -> TransferStatus:
    """Follow ``transfer`` until it ends and return its last status: a progress bar on
    a terminal, a line every :data:`PLAIN_LINE_INTERVAL_S` otherwise, nothing if
    ``quiet``."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    console = Console(stderr=True)
    final: TransferStatus | None = None
    if quiet:
        async for final in client.follow(transfer):  # noqa: B007 - keep the last status
            pass
    elif console.is_terminal:
        columns = (
            TextColumn("[bold]{task.fields[state]}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[note]}"),
        )
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task("copy", total=None, state="scheduled", note="")
            async for final in client.follow(transfer):
                bar.update(
                    task,
                    total=final.bytes_total,
                    completed=final.bytes_done,
                    state=final.state.value,
                    note=retry_note(final),
                )
    else:
        last_line = 0.0
        async for final in client.follow(transfer):
            now = time.monotonic()
            if now - last_line >= PLAIN_LINE_INTERVAL_S or final.state in _TERMINAL:
                last_line = now
                console.print(plain_line(final), highlight=False, soft_wrap=True)
    assert final is not None
    return final
