"""The file driver's write session against tampering (a real file system, no mocks):
publish must never pass off anything but this session's complete, unaltered temp file.

What every driver must do (a missing temp never taken for published, publish retried
after the rename, a stale writer stopped) is the driver contract, tests/contract; here
is what only the file driver can see (holes in a temp file, its journal removed alone)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from staccato import checksums
from staccato.client import StaccatoClient, TransferFailed
from staccato.endpoints import get_driver
from staccato.endpoints.base import keepalive_hook
from staccato.endpoints.file.session import session_paths
from staccato.errors import WriteSessionLostError
from staccato.models import WriteSession
from staccato.temp_names import SWEPT_NAME_BYTES
from staccato.urls import parse_url
from staccato.workflows.failures import left_behind
from tests.helpers import sha256_file, write_random

CHUNK = 64 * 1024
SIZE = 4 * CHUNK


def _written_session(tmp_path: Path, data: bytes) -> WriteSession:
    driver = get_driver("file")
    session = driver.open_session(parse_url(str(tmp_path / "out.bin")), SIZE, CHUNK, "t-file")
    with driver.open_writer(session) as writer:
        for index in range(SIZE // CHUNK):
            chunk = memoryview(data)[index * CHUNK : (index + 1) * CHUNK]
            writer.write_chunk(index, chunk, checksums.checksum_bytes("crc32c", chunk))
    return session


def test_truncated_and_rewritten_temp_is_not_published(tmp_path: Path) -> None:
    """Truncated after its chunks were written (then grown back to size: holes of
    zeros): publish reads it back, sees the damage, and refuses."""
    session = _written_session(tmp_path, os.urandom(SIZE))
    os.truncate(session.session_id, 0)
    os.truncate(session.session_id, SIZE)
    with pytest.raises(WriteSessionLostError, match="no longer match"):
        get_driver("file").publish(session)
    assert not (tmp_path / "out.bin").exists()


@pytest.mark.parametrize("what", ["temp", "journal", "truncate"])
def test_writer_stops_when_its_files_are_tampered_with(tmp_path: Path, what: str) -> None:
    driver = get_driver("file")
    session = driver.open_session(parse_url(str(tmp_path / "out.bin")), SIZE, CHUNK, "t-file")
    chunk = memoryview(os.urandom(CHUNK))
    digest = checksums.checksum_bytes("crc32c", chunk)
    with driver.open_writer(session) as writer:
        writer.write_chunk(0, chunk, digest)
        if what == "temp":
            os.unlink(session.session_id)
        elif what == "journal":
            os.unlink(session.data["journal"])
        else:
            os.truncate(session.session_id, CHUNK)
        with pytest.raises(WriteSessionLostError):
            writer.write_chunk(1, chunk, digest)


def _read_bytes() -> int:
    """Bytes this process has read through read(2)-family calls so far (``rchar``)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def _sparse_session(tmp_path: Path, size: int, chunk: int) -> WriteSession:
    """A session whose every chunk is journaled as zeros without writing a byte: the
    temp file is all holes (a sparse temp file, as a file system that stores zero
    blocks as holes would leave it)."""
    driver = get_driver("file")
    session = driver.open_session(parse_url(str(tmp_path / "big.bin")), size, chunk, "t-sparse")
    zero = checksums.checksum_bytes("crc32c", bytes(chunk))
    with open(session.data["journal"], "a") as journal:
        journal.writelines(f"{i} {zero}\n" for i in range(size // chunk))
    return session


def test_resumed_stream_checks_only_its_segment(tmp_path: Path) -> None:
    """durable_chunks for a stream's segment reads that segment's chunks, not the object."""
    chunk = 1 << 20
    chunks = 32
    driver = get_driver("file")
    session = driver.open_session(
        parse_url(str(tmp_path / "seg.bin")), chunks * chunk, chunk, "t-seg"
    )
    data = os.urandom(chunks * chunk)
    digests = {}
    with driver.open_writer(session) as writer:
        for index in range(chunks):
            view = memoryview(data)[index * chunk : (index + 1) * chunk]
            digests[index] = checksums.checksum_bytes("crc32c", view)
            writer.write_chunk(index, view, digests[index])
    before = _read_bytes()
    durable = driver.durable_chunks(session, 8, 12)
    read = _read_bytes() - before
    assert durable == {i: digests[i] for i in range(8, 12)}
    print(f"segment of 4 chunks checked: {read} bytes read (object: {chunks * chunk})")
    assert 4 * chunk <= read < 4 * chunk + 1024 * 1024  # the segment + the journal


def test_durable_check_heartbeats_before_it_finishes(tmp_path: Path) -> None:
    """A big journal is checked with keepalive() calls from the start: the first comes
    before 1/8 of the journaled bytes are read (a slow disk cannot starve heartbeats),
    and a keepalive that raises (the activity was cancelled) stops the check."""
    chunk = 4 << 20
    session = _sparse_session(tmp_path, 64 * chunk, chunk)
    driver = get_driver("file")

    class Cancelled(Exception):
        pass

    start = _read_bytes()
    read_at_first_beat: list[int] = []

    def beat() -> None:
        read_at_first_beat.append(_read_bytes() - start)
        raise Cancelled

    with keepalive_hook(beat), pytest.raises(Cancelled):
        driver.durable_chunks(session)
    assert read_at_first_beat and read_at_first_beat[0] < 64 * chunk // 8, read_at_first_beat

    beats = 0

    def count() -> None:
        nonlocal beats
        beats += 1

    with keepalive_hook(count):
        assert len(driver.durable_chunks(session)) == 64
    assert beats >= 64  # at least one per chunk (more for chunks over 8 MiB)


def test_publish_reads_no_data_of_a_sparse_temp(tmp_path: Path) -> None:
    """A temp file with fewer blocks than bytes (all holes here; compressed or
    zero-detecting file systems) publishes without being read back: publish's cost
    does not grow with the object."""
    size = 1 << 30
    session = _sparse_session(tmp_path, size, 16 << 20)
    assert os.stat(session.session_id).st_blocks * 512 < size
    before = _read_bytes()
    started = time.monotonic()
    get_driver("file").publish(session)
    took = time.monotonic() - started
    read = _read_bytes() - before
    print(f"publish of a 1 GiB sparse temp: {read} bytes read, {took:.3f} s")
    assert read < 1 << 20, f"publish read {read} bytes"
    assert os.stat(tmp_path / "big.bin").st_size == size


def test_publish_retried_after_the_rename_removes_the_journal(tmp_path: Path) -> None:
    """A worker killed between publish's rename and its journal's removal: the retried
    publish finds the session published, and still removes the journal (nothing
    leaked beside the destination)."""
    data = os.urandom(SIZE)
    session = _written_session(tmp_path, data)
    os.rename(session.session_id, tmp_path / "out.bin")  # the rename, then the kill
    get_driver("file").publish(session)
    assert (tmp_path / "out.bin").read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


async def test_next_transfer_removes_what_failed_runs_left(
    client: StaccatoClient, data_dir: Path
) -> None:
    """Temp files and journals an earlier run to ``out.bin`` left (its clean-up gave up:
    see tests/sftp's left_behind test for the whole story) are removed by the next
    transfer to ``out.bin``, which publishes byte-identical data; names that only look
    alike (another target's, a ``.staccato-old``, a key that is not 16 hex digits, a
    plain file) are kept. Before, they stayed there for good."""
    source = data_dir / "src.bin"
    write_random(source, 3 * CHUNK, seed=31)
    out = data_dir / "out"
    out.mkdir()
    stale = [
        ".out.bin.0123456789abcdef.staccato-part",
        ".out.bin.0123456789abcdef.staccato-journal",
    ]
    kept = [
        ".out.bin2.0123456789abcdef.staccato-part",
        ".out.bin.0123456789abcdef.staccato-old",
        ".out.bin.0123456789abcdeZ.staccato-part",
        "out.bin.0123456789abcdef.staccato-part",
        "notes.txt",
    ]
    for name in stale + kept:
        (out / name).write_bytes(b"old")
    # a journal as a run writes it (INDEX CHECKSUM lines): the sweep removes a temp
    # file and journal only beside a journal Staccato wrote
    (out / stale[1]).write_bytes(b"0 364b3fb7\n")
    transfer = await client.submit(str(source), str(out / "out.bin"))
    await client.wait(transfer)
    assert sha256_file(out / "out.bin") == sha256_file(source)
    assert sorted(p.name for p in out.iterdir()) == sorted([*kept, "out.bin"])


async def test_sweep_keeps_what_may_be_another_targets_and_goes_past_what_cannot_go(
    client: StaccatoClient, data_dir: Path
) -> None:
    """A tester's cases. (1) A target of 150 bytes: a longer name sharing those bytes
    has temp names that start like its own (temp names keep 150 bytes of the name):
    they are another transfer's, possibly live, and are kept (they were removed); the
    target's own leftovers are then not swept either (names over 146 bytes never are).
    (2) A matching entry that cannot be removed (a directory) does not keep the others
    (the sweep stopped at it). (3) A destination refused (a symlink) sweeps nothing."""
    source = data_dir / "src.bin"
    write_random(source, CHUNK, seed=32)
    out = data_dir / "out"
    out.mkdir()
    short = "a" * 150
    longer = short + "-long-version.bin"
    live = f".{short}.0123456789abcdef.staccato-part"  # what `longer`'s temp name is
    (out / live).write_bytes(b"another transfer's data")
    await client.wait(await client.submit(str(source), str(out / short)))
    assert (out / live).read_bytes() == b"another transfer's data"
    assert not (out / longer).exists()

    stuck = out / ".f.bin.1111111111111111.staccato-part"
    stuck.mkdir()
    gone = [".f.bin.2222222222222222.staccato-part", ".f.bin.2222222222222222.staccato-journal"]
    for name in gone:
        (out / name).write_bytes(b"old")
    (out / gone[1]).write_bytes(b"0 364b3fb7\n")  # a journal as a run writes it
    await client.wait(await client.submit(str(source), str(out / "f.bin")))
    assert stuck.is_dir() and not any((out / name).exists() for name in gone)

    (out / "target.bin").write_bytes(b"target")
    (out / "link.bin").symlink_to(out / "target.bin")
    beside = out / ".link.bin.3333333333333333.staccato-part"
    beside.write_bytes(b"old")
    with pytest.raises(TransferFailed):
        await client.wait(await client.submit(str(source), str(out / "link.bin")))
    assert beside.exists() and (out / "target.bin").read_bytes() == b"target"


@pytest.mark.parametrize("name", ["a" * 146, "a" * 147, "é" * 80], ids=["146", "147", "160-utf8"])
def test_left_behind_says_what_the_next_transfer_removes(tmp_path: Path, name: str) -> None:
    """What a failed run whose clean-up gave up says it left (memo ``left_behind``,
    ``failures.left_behind``), against what the next transfer's sweep really removes:
    a name of 146 bytes or fewer is swept, and the text says the next transfer removes
    the temp file; a longer one is never swept, and the text says to delete the temp
    file and journal by hand, naming both paths. Before, it said "the next transfer to
    this destination removes it" for every file and SFTP destination."""
    driver = get_driver("file")
    url = parse_url(str(tmp_path / name))
    left = driver.open_session(url, SIZE, CHUNK, "t-failed")
    with driver.open_writer(left) as writer:
        chunk = os.urandom(CHUNK)
        writer.write_chunk(0, chunk, checksums.checksum_bytes("crc32c", chunk))
    temp, journal = session_paths(url, "t-failed")
    assert left.session_id == temp and os.path.exists(temp) and os.path.exists(journal)
    said = left_behind(left)
    driver.open_session(url, SIZE, CHUNK, "t-next")
    removed = driver.remove_leftovers(url, "t-next")
    if len(name.encode()) <= SWEPT_NAME_BYTES:
        assert sorted(removed) == sorted([temp, journal])
        assert "the next transfer to this destination removes it" in said, said
    else:
        assert removed == [] and os.path.exists(temp) and os.path.exists(journal)
        assert "removes it" not in said, said
        assert f"delete both by hand ({temp} and {journal})" in said, said
        assert "the next transfer to this destination does not remove them" in said, said


def test_sweep_removes_only_beside_a_journal_staccato_wrote(tmp_path: Path) -> None:
    """A tester's case: a tree copied with ``cp -r`` held ``.f.<16 hex>.staccato-part``
    and ``-journal`` as files of its own (a tree copied from a destination that had
    leftovers); a single ``cp`` to ``f`` then removed both as leftovers. The sweep now
    removes a temp file and its journal only when the journal is one Staccato wrote
    (empty, or ``INDEX CHECKSUM`` lines); a temp file with no journal is kept too."""
    driver = get_driver("file")
    url = parse_url(str(tmp_path / "f"))
    users = {
        ".f.0123456789abcdef.staccato-part": b"USER DATA",
        ".f.0123456789abcdef.staccato-journal": b"j\n",
        ".f.1111111111111111.staccato-part": b"no journal beside it",
    }
    ours = {
        ".f.2222222222222222.staccato-part": b"an earlier run's",
        ".f.2222222222222222.staccato-journal": b"0 364b3fb7\n1 ba7816bf\n",
        ".f.3333333333333333.staccato-part": b"",
        ".f.3333333333333333.staccato-journal": b"",
        # a paused run's: a partial record (the start of chunk 1 kept) beside its lines
        ".f.4444444444444444.staccato-part": b"a paused run's",
        ".f.4444444444444444.staccato-journal": b"0 364b3fb7\np 1 4096 ba7816bf\n",
    }
    for name, data in {**users, **ours}.items():
        (tmp_path / name).write_bytes(data)
    removed = driver.remove_leftovers(url, "t-next")
    assert sorted(removed) == sorted(str(tmp_path / name) for name in ours)
    for name, data in users.items():
        assert (tmp_path / name).read_bytes() == data, name
