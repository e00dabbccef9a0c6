"""A source rewritten in place during the copy, its size and mtime unchanged (a
coarse-timestamp file system, SFTP's whole seconds, an HTTP Last-Modified second):
the version cannot see it, so a source modified just before the copy is read a second
time before publish. Never a completed transfer with mixed bytes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import pytest

from staccato.activities.transfer import REMOTE_CLOCK_SKEW_S, needs_second_read
from staccato.client import StaccatoClient
from staccato.endpoints.file import (
    COARSE_MTIME_RESOLUTION_S,
    FINE_MTIME_FILE_SYSTEMS,
    file_system_type,
    mtime_resolution_s,
)
from staccato.errors import StaccatoError, TransferFailedError
from staccato.models import ObjectInfo, TransferOptions, TransferState
from tests.helpers import MiB, leftovers, sha256_file, wait_for_status, write_random
from tests.servers.nginx import NginxServer, nginx_fixture

OPTIONS = TransferOptions(chunk_size=1 * MiB, streams=4, heartbeat_timeout_s=5)


def test_which_sources_are_read_twice() -> None:
    now = 1_000_000.0
    strong = ObjectInfo(size=1, version="etag=x")
    assert not needs_second_read(strong, now, local=False)
    old = ObjectInfo(size=1, version="v", modified_at=now - 10, mtime_resolution_s=2.0)
    assert not needs_second_read(old, now, local=True)
    # a remote clock may be ahead of ours: ten seconds is not old enough there
    assert needs_second_read(old, now, local=False)
    remote_old = old.model_copy(update={"modified_at": now - REMOTE_CLOCK_SKEW_S - 3})
    assert not needs_second_read(remote_old, now, local=False)
    fresh = old.model_copy(update={"modified_at": now - 1})
    assert needs_second_read(fresh, now, local=True)
    future = old.model_copy(update={"modified_at": now + 30})
    assert needs_second_read(future, now, local=True)
    # the endpoint's own clock (HTTP Date) replaces the guess about skew
    told = old.model_copy(update={"mtime_resolution_s": 1.0, "endpoint_time": now - 5})
    assert not needs_second_read(told, now, local=False)
    assert needs_second_read(told.model_copy(update={"endpoint_time": now - 11}), now, local=False)
    unknown = ObjectInfo(size=1, version="size=1", mtime_resolution_s=1.0)
    assert needs_second_read(unknown, now, local=False)


def test_mtime_resolution_by_file_system(tmp_path: Path) -> None:
    assert file_system_type("/proc/self/status") == "proc"
    assert mtime_resolution_s("/proc/self/status") == COARSE_MTIME_RESOLUTION_S
    kind = file_system_type(str(tmp_path))
    assert kind, "no file system type found for the test's own directory"
    if kind in FINE_MTIME_FILE_SYSTEMS:
        assert mtime_resolution_s(str(tmp_path / "not-yet")) < 1.0


def _rewrite_in_place(path: Path, regions: list[int], *, keep_mtime: bool) -> None:
    """Overwrite 1 MiB at each offset with new bytes; size and inode stay, and with
    ``keep_mtime`` the mtime too (what a rewrite within the mtime's resolution does)."""
    st = os.stat(path)
    with open(path, "r+b") as f:
        for offset in regions:
            f.seek(offset)
            f.write(os.urandom(MiB))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


async def copy_while_rewritten(
    client: StaccatoClient,
    source_url: str,
    source: Path,
    destination: Path,
    *,
    keep_mtime: bool,
    options: TransferOptions = OPTIONS,
) -> None:
    """Copy ``source`` while its first and last MiB are rewritten in place: the
    transfer fails with ``source changed`` or publishes exactly one version."""
    size = source.stat().st_size
    original = sha256_file(source)
    transfer = await client.submit(source_url, str(destination), options)
    await wait_for_status(
        client,
        transfer,
        # scheduled until its streams start (then running)
        lambda s: (
            s.state not in (TransferState.scheduled, TransferState.running)
            or s.bytes_done >= 8 * MiB
        ),
        timeout_s=120,
        interval_s=0.05,
    )
    # The first chunks are durable; hold the streams while the source is rewritten, so
    # the rest is read from the new bytes (a rewrite in the middle of the copy).
    early = await client.status(transfer)
    assert early.state == TransferState.running, early
    await client.pause(transfer)
    paused = await wait_for_status(
        client, transfer, lambda s: s.state != TransferState.running, timeout_s=60
    )
    assert paused.state == TransferState.paused and paused.bytes_done < size, paused
    _rewrite_in_place(source, [0, size - MiB], keep_mtime=keep_mtime)
    rewritten = sha256_file(source)
    with contextlib.suppress(StaccatoError):  # a stream still reading saw the change
        await client.resume(transfer)
    try:
        await asyncio.wait_for(client.wait(transfer), 180)
    except TransferFailedError as failure:
        assert "source changed" in str(failure), failure
        assert not destination.exists()
    else:
        assert sha256_file(destination) in (original, rewritten), "a mixed copy was published"
    assert leftovers(destination.parent) == []


@pytest.mark.slow
async def test_file_source_rewritten_in_place_is_never_published_mixed(
    client: StaccatoClient, data_dir: Path
) -> None:
    source = data_dir / "rewritten.bin"
    with open(source, "wb") as f:
        f.truncate(256 * MiB)  # sparse: little disk
    # a local file system's nanosecond mtime moves with the rewrite; the transfer's own
    # cap (32 MiB/s: 8 s for the whole file) keeps the copy running when it is paused,
    # however fast the disk (uncapped, a quiet machine copied it before the pause)
    await copy_while_rewritten(
        client,
        str(source),
        source,
        data_dir / "rewritten.out",
        keep_mtime=False,
        options=OPTIONS.model_copy(update={"max_rate": 32 * MiB}),
    )


# nginx at most 8 MB/s per connection, and the transfer's own cap of 6 MiB/s (8 s for
# the whole file): the copy is still running when it is paused, with seconds to spare
# for a busy machine (with nginx's cap alone, 4 streams copied the 48 MiB in 1.5 s and a
# loaded CI's status poll and pause came after the last byte)
slow_nginx = nginx_fixture("http_root", scope="function", extra_server_config="limit_rate 8m;")


async def test_http_source_rewritten_within_its_last_modified_second(
    client: StaccatoClient, slow_nginx: NginxServer, http_root: Path, data_dir: Path
) -> None:
    """nginx's ETag and Last-Modified carry whole seconds: a rewrite that keeps the
    second keeps both validators, so only a second read can tell."""
    source = http_root / "rewritten-http.bin"
    write_random(source, 48 * MiB, seed=11)
    # A rewrite keeps the mtime's second only when it comes within that second of the
    # last write, and the transfer reads twice exactly when its stat comes within two
    # seconds of it (nginx's clock). On a loaded machine the stat came later, so the
    # rewrite the test forces back to the old mtime seconds afterwards was one no
    # validator could see, and no second read was due: a mixed copy was published
    # (CI at load ~20). A modification time ahead of the server's clock keeps the
    # stat "within the second" however late it comes, as the case meant.
    ahead = time.time() + 600
    os.utime(source, (ahead, ahead))
    await copy_while_rewritten(
        client,
        slow_nginx.url(source.name),
        source,
        data_dir / "rewritten-http.out",
        keep_mtime=True,
        options=OPTIONS.model_copy(update={"max_rate": 6 * MiB}),
    )


def test_a_same_size_rewrite_is_named_as_a_new_version(tmp_path: Path) -> None:
    """A source rewritten in place with the same size: the refusal to publish says the
    version moved at the same size (not "size N -> N bytes", which reads as no change),
    and nothing is published."""
    from staccato.activities.transfer import publish_session
    from staccato.endpoints import get_driver
    from staccato.errors import SourceChangedError
    from staccato.models import PublishInput, WriteSession
    from staccato.urls import parse_url

    source = tmp_path / "same-size.bin"
    write_random(source, 4096, seed=41)
    before = get_driver("file").stat(parse_url(str(source)))
    write_random(source, 4096, seed=42)
    os.utime(source, ns=(before_ns := os.stat(source).st_mtime_ns + 10**9, before_ns))
    destination = tmp_path / "out.bin"
    session = WriteSession(
        url=destination.as_uri(), size=4096, chunk_size=4096, session_id=str(tmp_path / "x")
    )
    with pytest.raises(SourceChangedError) as caught:
        publish_session(PublishInput(session=session, source=source.as_uri(), source_info=before))
    assert "same size, version" in str(caught.value), caught.value
    assert not destination.exists()


def test_a_file_version_pinned_before_ctime_was_added_still_matches() -> None:
    """A transfer pinned by an older release (no ctime in the file version) is not
    taken for a changed source after the upgrade; any field that moved still is."""
    from staccato.models import same_version

    now = "size=10;mtime_ns=5;ctime_ns=7;ino=3"
    assert same_version(now, now)
    assert same_version("size=10;mtime_ns=5;ino=3", now)  # pinned by 0.4.0
    assert not same_version("size=10;mtime_ns=5;ino=4", now)  # another file
    assert not same_version("size=10;mtime_ns=5;ctime_ns=6;ino=3", now)  # touch -r
    assert not same_version("size=10;mtime_ns=5;ctime_ns=7;ino=3", "size=10;mtime_ns=5;ino=3")
    assert same_version('"etag"', '"etag"') and not same_version('"a"', '"b"')
    assert not same_version("v1", "size=10;mtime_ns=5;ctime_ns=7;ino=3")


def test_a_source_removed_while_read_is_said_removed(tmp_path: Path) -> None:
    """A local source deleted while its reader holds it open fails as removed (it was
    "modified or its metadata changed": the unlink moves its change time too)."""
    from staccato.endpoints.file.read import FileReader, file_version

    path = tmp_path / "gone.bin"
    write_random(path, 1 * MiB, seed=5)
    info = ObjectInfo(size=1 * MiB, version=file_version(os.stat(path)))
    reader = FileReader(str(path), info, 0, 1 * MiB)
    try:
        path.unlink()
        with pytest.raises(StaccatoError, match="gone.bin was removed"):
            reader.check_version()
    finally:
        reader.close()


def test_a_source_replaced_by_a_rename_while_read_is_said_replaced(tmp_path: Path) -> None:
    """A local source replaced by an atomic rename (``mv new.bin src.bin``, an
    editor's save) while its reader holds it open: a tester read "was removed
    (deleted while it was being read)" of a file that was still there."""
    from staccato.endpoints.file.read import FileReader, file_version

    path, newer = tmp_path / "src.bin", tmp_path / "new.bin"
    write_random(path, 1 * MiB, seed=6)
    write_random(newer, 1 * MiB, seed=7)
    info = ObjectInfo(size=1 * MiB, version=file_version(os.stat(path)))
    reader = FileReader(str(path), info, 0, 1 * MiB)
    try:
        os.replace(newer, path)
        with pytest.raises(StaccatoError, match="src.bin was removed or replaced"):
            reader.check_version()
    finally:
        reader.close()
