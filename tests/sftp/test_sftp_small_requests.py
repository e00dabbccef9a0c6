"""What a dataset's small file costs on an SFTP destination, counted in the driver's
protocol layer (every request goes through ``StaccatoSFTP._async_request``): files
copied within one ``directory_memo`` block (a dataset's batch) as ``copy_batch``
copies them (``copy_object`` with the listed size). ``bench/sftp_small_requests.py``
prints the same counts and the time per file."""

from __future__ import annotations

import collections
import os
import shutil
from pathlib import Path
from typing import Any

from paramiko.sftp import CMD_LSTAT, CMD_OPEN, CMD_STAT

from staccato.activities.object_copy import copy_object
from staccato.endpoints.base import directory_memo
from staccato.endpoints.sftp import remote_hash
from staccato.endpoints.sftp.protocol import StaccatoSFTP
from staccato.models import TransferOptions
from tests.helpers import MiB, leftovers

_KINDS = {CMD_STAT: "STAT", CMD_LSTAT: "LSTAT", CMD_OPEN: "OPEN"}
#: one stream of 1 MiB chunks: every file here is one chunk
_OPTIONS = TransferOptions(chunk_size=1 * MiB, streams=1)


def _copy_small(sftp_url: Any, work: Path, destination: Path, index: int, size: int) -> None:
    """Write ``size`` random bytes to ``work/src/f{index}`` and copy it to
    ``destination/f{index}`` as a dataset's batch copies a small file (``copy_object``
    with the listed size; the caller holds the batch's ``directory_memo``)."""
    source = work / "src" / f"f{index}"
    source.write_bytes(os.urandom(size))
    copy_object(
        f"file://{source}",
        sftp_url(destination / f"f{index}"),
        _OPTIONS,
        f"k{index}",
        lambda: None,
        size,
    )


def test_a_batch_of_small_files_costs_few_requests(
    driver_env, sftp_url, data_dir: Path, monkeypatch
) -> None:
    """Six 20 KiB files into one directory, default ``--verify checksum``: each temp
    file is verified by reading it back (no exec channel for a server-side hash: it
    cost most of a small file's time), the destination directory is STATed once a
    file (not three times), each target LSTATed once (not twice), and
    the temp file opened 4 times (create, write, verify read, fsync at publish; its
    stats need no 1-byte EOF probe), its journal 4 times (publish reads it and writes
    its marker through one handle). The files arrive whole, nothing is left beside
    them."""
    asked: collections.Counter[tuple[str, str]] = collections.Counter()
    original = StaccatoSFTP._async_request

    def counting(self: StaccatoSFTP, fileobj: Any, t: int, *rest: Any) -> int:
        if t in _KINDS and rest and isinstance(rest[0], bytes):
            asked[(_KINDS[t], rest[0].decode())] += 1
        return original(self, fileobj, t, *rest)

    monkeypatch.setattr(StaccatoSFTP, "_async_request", counting)
    work = Path(os.path.realpath(data_dir))
    (work / "src").mkdir()
    destination = work / "dst" / "one"
    destination.mkdir(parents=True)
    hashed = remote_hash.stats["ranges"]
    files = 6
    with directory_memo():
        for i in range(files):
            _copy_small(sftp_url, work, destination, i, 20 * 1024)
    for i in range(files):
        assert (destination / f"f{i}").read_bytes() == (work / "src" / f"f{i}").read_bytes()
    assert leftovers(work / "dst") == []
    assert remote_hash.stats["ranges"] == hashed
    assert asked[("STAT", str(destination))] == files, asked
    for i in range(files):
        assert asked[("LSTAT", str(destination / f"f{i}"))] == 1, asked
    temp_opens = [
        count
        for (kind, path), count in asked.items()
        if kind == "OPEN" and path.endswith(".staccato-part")
    ]
    assert temp_opens == [4] * files, asked
    journal_opens = [
        count
        for (kind, path), count in asked.items()
        if kind == "OPEN" and path.endswith(".staccato-journal")
    ]
    # create, the durable-chunk check, write, publish (read + marker through one handle)
    assert journal_opens == [4] * files, asked


def test_a_directory_removed_during_a_batch_is_made_again(
    driver_env, sftp_url, data_dir: Path
) -> None:
    """The directory STAT kept for a batch does not outlive a removal: a destination
    directory removed between two files of one batch is made again for the second."""
    work = Path(os.path.realpath(data_dir))
    (work / "src").mkdir()
    destination = work / "dst" / "one"
    with directory_memo():
        for i in range(2):
            _copy_small(sftp_url, work, destination, i, 1000)
            if i == 0:
                shutil.rmtree(destination)
    assert (destination / "f1").read_bytes() == (work / "src" / "f1").read_bytes()
    assert not (destination / "f0").exists()
