"""How a stream writes a local file destination (a real file system, no mocks; the
writer's read-back methods are only wrapped to count their calls).

* A chunk the stream writes from its own checksummed buffer (``write_chunk``, direct
  I/O where aligned) is not read back: the in-memory checksum and ``fdatasync`` are its
  check. Chunk sizes and tails off the 4 KiB direct-I/O grid still land byte for byte.
* A chunk the kernel copied (``copy_file_range``: only where the destination's file
  system shares extents or copies on its server) never passed through the stream, so
  it is still read back, block by block.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from staccato.activities.copy import copy_segment_in_process
from staccato.endpoints import get_driver
from staccato.endpoints.file import driver as file_driver
from staccato.endpoints.file.fs import KERNEL_COPY_FILE_SYSTEMS, file_system_type
from staccato.endpoints.file.session import FileChunkWriter
from staccato.models import ChecksumAlgorithm, StreamInput
from staccato.plan import plan_segments
from staccato.urls import parse_url
from tests.helpers import sha256_file, write_random

MiB = 1024 * 1024
# off the 4 KiB grid: every chunk after the first starts unaligned; plus a short tail
CHUNK = MiB + 512
SIZE = 3 * CHUNK + 7


def _count_calls(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    """Wrap ``FileChunkWriter.<name>`` to record the chunk index of each call."""
    calls: list[int] = []
    original = getattr(FileChunkWriter, name)

    def counted(self: FileChunkWriter, index: int, *args: object) -> object:
        calls.append(index)
        return original(self, index, *args)

    monkeypatch.setattr(FileChunkWriter, name, counted)
    return calls


def _copy(source: Path, destination: Path) -> bool:
    """Copy ``source`` into a file write session for ``destination`` with one stream
    (verify-on-write asked for), publish it, and return the stream's ``verified``."""
    driver = get_driver("file")
    url = parse_url(str(source))
    info = driver.stat(url)
    session = driver.open_session(parse_url(str(destination)), SIZE, CHUNK, "t-write-path")
    (segment,) = plan_segments(SIZE, CHUNK, 1)
    request = StreamInput(
        transfer_id="t-write-path",
        source=str(source),
        source_info=info,
        session=session,
        segment=segment,
        checksum=ChecksumAlgorithm.crc32c,
        read_back=True,
    )
    result = copy_segment_in_process(request, lambda: None)
    driver.publish(session)
    return result.complete and result.verified


def test_written_chunks_are_checked_in_memory_not_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if file_system_type(str(tmp_path)) in KERNEL_COPY_FILE_SYSTEMS:
        pytest.skip("here file->file is a kernel copy (its chunks are read back)")
    read_back = _count_calls(monkeypatch, "read_back")
    read_back_checksum = _count_calls(monkeypatch, "read_back_checksum")
    digest = write_random(tmp_path / "src.bin", SIZE, seed=21)
    assert _copy(tmp_path / "src.bin", tmp_path / "out.bin")
    assert sha256_file(tmp_path / "out.bin") == digest
    assert read_back == [] and read_back_checksum == []


def test_kernel_copied_chunks_are_read_back_block_by_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the destination's file system named as one that copies without the page cache
    # (the copy itself then runs with copy_file_range, or pwrite where refused)
    monkeypatch.setattr(file_driver, "file_system_type", lambda path, device=None: "btrfs")
    read_back = _count_calls(monkeypatch, "read_back")
    read_back_checksum = _count_calls(monkeypatch, "read_back_checksum")
    digest = write_random(tmp_path / "src.bin", SIZE, seed=22)
    assert _copy(tmp_path / "src.bin", tmp_path / "out.bin")
    assert sha256_file(tmp_path / "out.bin") == digest
    assert read_back_checksum == [0, 1, 2, 3] and read_back == []


@pytest.mark.parametrize(
    ("kind", "kernel_copy"),
    [
        ("ext4", False),
        ("tmpfs", False),
        ("", False),
        ("xfs", True),
        ("btrfs", True),
        ("nfs4", True),
    ],
)
def test_kernel_copy_only_where_the_file_system_copies_without_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, kernel_copy: bool
) -> None:
    monkeypatch.setattr(file_driver, "file_system_type", lambda path, device=None: kind)
    source, destination = parse_url(str(tmp_path / "a")), parse_url(str(tmp_path / "b"))
    assert get_driver("file").can_copy_from(source, destination) is kernel_copy
    assert not get_driver("file").can_copy_from(parse_url("http://h/a"), destination)
