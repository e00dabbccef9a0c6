"""Temp files on an SFTP destination: an ended batch's clean-up goes on past a file
whose directory is gone; a temp file gone while it is verified is named as such."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from staccato.activities.dataset import abort_batch_orphans
from staccato.datasets.models import BatchOrphansInput
from staccato.endpoints.file.session import session_paths
from staccato.endpoints.sftp.driver import SFTPDriver
from staccato.errors import NotFoundError
from staccato.urls import parse_url


def test_batch_orphans_on_sftp_go_on_past_a_missing_directory(
    driver_env: Path, sftp_url, tmp_path: Path
) -> None:
    """An ended batch's sessions are removed file by file: a file whose directory is
    gone (nothing was written for it) is skipped, and the next file's temp file and
    journal still go. A tester's dataset (sshd killed mid-batch) kept
    ``.f227.dat.….staccato-part``/``-journal`` for good: the clean-up stopped at the
    first file, "destination directory …/d5 does not exist"."""
    root = tmp_path / "root"
    root.mkdir()
    key = "batch-k"
    temp, journal = session_paths(parse_url(f"file://{root}/b"), f"{key}-1")
    Path(temp).write_bytes(b"x" * 10)
    Path(journal).write_bytes(b"")
    request = BatchOrphansInput(
        destination_root=sftp_url(root),
        names=["gone/a", "b"],
        since=time.time() - 10,
        session_key=key,
        sizes=[10, 10],
        chunk_size=1 << 20,
    )
    ActivityEnvironment().run(abort_batch_orphans, request)
    assert sorted(p.name for p in root.iterdir()) == []


def test_a_temp_file_gone_is_not_called_the_source(
    driver_env: Path, sftp_url, tmp_path: Path
) -> None:
    """A transfer's temp file removed by someone else (a tester's transfer to the same
    file under another URL, localhost for 127.0.0.1, swept it) is named as the temp
    file when the transfer reads it to verify it: it said "source …: no such file"."""
    temp = tmp_path / ".d.bin.0123456789abcdef.staccato-part"
    with pytest.raises(NotFoundError) as caught:
        SFTPDriver().stat(parse_url(sftp_url(temp)))
    assert str(caught.value).startswith(f"the temp file {sftp_url(temp)} is gone"), caught.value
    assert "source" not in str(caught.value)


def test_sftp_sweep_removes_only_beside_a_journal_staccato_wrote(
    driver_env: Path, sftp_url, tmp_path: Path
) -> None:
    """The SFTP sweep's side of the tester's case (a copied tree's look-alike files were
    removed as leftovers): a temp file and journal go only when the journal holds a
    valid record (or is empty); a user's ``-journal`` and a temp file without one stay."""
    from staccato.endpoints.sftp.journal import journal_record

    users = {
        ".f.0123456789abcdef.staccato-part": b"USER DATA",
        ".f.0123456789abcdef.staccato-journal": b"j\n",
        ".f.1111111111111111.staccato-part": b"no journal beside it",
    }
    ours = {
        ".f.2222222222222222.staccato-part": b"an earlier run's",
        ".f.2222222222222222.staccato-journal": journal_record(0, "364b3fb7"),
        ".f.3333333333333333.staccato-part": b"",
        ".f.3333333333333333.staccato-journal": b"",
    }
    for name, data in {**users, **ours}.items():
        (tmp_path / name).write_bytes(data)
    removed = SFTPDriver().remove_leftovers(parse_url(sftp_url(tmp_path / "f")), "t-next")
    assert sorted(removed) == sorted(str(tmp_path / name) for name in ours)
    for name, data in users.items():
        assert (tmp_path / name).read_bytes() == data, name


def test_a_retry_sweeps_what_an_ended_batch_left(
    driver_env: Path, sftp_url, tmp_path: Path
) -> None:
    """``sweep_leftovers`` (a ``--retry-failed``'s first run, for the files whose
    failure named a session left: tester T15) removes that session's temp file and
    journal beside each URL, and keeps a user's look-alikes (no journal Staccato
    wrote) and the other targets' sessions."""
    from staccato.activities.dataset import sweep_leftovers
    from staccato.datasets.models import SweepInput

    driver = SFTPDriver()
    (tmp_path / "d").mkdir()
    left = parse_url(sftp_url(tmp_path / "d" / "f.bin"))
    other = parse_url(sftp_url(tmp_path / "d" / "g.bin"))
    temp, journal = session_paths(parse_url(f"file://{tmp_path}/d/f.bin"), "ended-batch-b1-0")
    driver.open_session(left, 10, 1 << 20, "ended-batch-b1-0")
    kept_temp, kept_journal = session_paths(parse_url(f"file://{tmp_path}/d/g.bin"), "k-0")
    driver.open_session(other, 10, 1 << 20, "k-0")
    users = {".f.bin.0123456789abcdef.staccato-part": b"USER", "f.bin": b"an older copy"}
    for name, data in users.items():
        (tmp_path / "d" / name).write_bytes(data)
    assert Path(temp).exists() and Path(journal).exists()
    removed = ActivityEnvironment().run(sweep_leftovers, SweepInput(urls=[left.canonical]))
    assert removed == 3  # its temp file, its journal and its writers directory
    assert not Path(temp).exists() and not Path(journal).exists()
    assert not any(
        p.name.endswith(".staccato-writers") and ".f.bin." in p.name
        for p in (tmp_path / "d").iterdir()
    )
    assert Path(kept_temp).exists() and Path(kept_journal).exists()
    for name, data in users.items():
        assert (tmp_path / "d" / name).read_bytes() == data, name


@pytest.mark.parametrize("journaled", ["partial", "hash"])
def test_sftp_sweep_removes_a_session_whose_journal_has_no_chunk_record_yet(
    driver_env: Path, sftp_url, tmp_path: Path, journaled: str
) -> None:
    """ci110: a dataset cancelled while its large file's stream was in its first chunk
    left a session whose journal held only that chunk's partial record (the stopped
    stream keeps what it wrote, ``write_partial``); the next ``cp -r``'s sweep kept its
    temp file, journal and writers directory ("no journal Staccato wrote beside it":
    only chunk records counted) and the run exited 0 with them in the destination. A
    journal with only a hash record (a stream stopped between a chunk's two records)
    was kept the same way. Both are Staccato's: the sweep removes all three."""
    from staccato.endpoints.sftp.journal import (
        CKSUM,
        JOURNAL_RECORD_BYTES,
        ServerHash,
        hash_record,
        hash_slot,
    )

    out = tmp_path / "out"
    out.mkdir()
    driver = SFTPDriver()
    url = parse_url(sftp_url(out / "L2.bin"))
    size, chunk = 6 << 20, 1 << 20
    session = driver.open_session(url, size, chunk, "the-cancelled-run")
    if journaled == "partial":
        writer = driver.open_writer(session)
        try:
            writer.write_partial(0, memoryview(b"x" * 60_000), "364b3fb7")
        finally:
            writer.close()
    else:
        slot = hash_slot(0, size // chunk) * JOURNAL_RECORD_BYTES
        record = hash_record(0, "364b3fb7", ServerHash(CKSUM, "12345"))
        with open(session.data["journal"], "r+b") as journal:
            journal.seek(slot)
            journal.write(record)
    left = sorted(p.name for p in out.iterdir())
    assert len(left) == 3 and Path(session.data["journal"]).stat().st_size > 0, left
    removed = driver.remove_leftovers(url, "the-next-run")
    assert sorted(Path(p).name for p in removed) == left
    assert sorted(p.name for p in out.iterdir()) == []
