"""The write side of the driver contract, for every endpoint that is a destination.

A transfer writes into a *write session* (temp file + journal, multipart upload) that
becomes the destination object only at ``publish``. These tests hold each driver to
that: chunks in any order, ``durable_chunks`` telling exactly what is held,
``open_session`` idempotent per key, ``publish`` and ``abort`` idempotent, nothing
visible under the destination name before ``publish``, ``abort`` never touching what
the name holds, a session whose temp data is gone never taken for published (even
with an older object of the same size sitting at the destination), a stale writer (an
attempt Temporal gave up on, or an abandoned session) never reaching a published
object, 0- and 1-byte objects, and names at the endpoint's length limit.

Shapes: ``one_chunk`` is an object smaller than one chunk, ``several_chunks`` one of
two whole chunks and one byte (for S3 these are one PutObject vs a multipart upload).
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Iterable

import pytest

from staccato import checksums
from staccato.errors import DestinationMissingError, WriteSessionLostError
from staccato.models import WriteSession
from staccato.plan import chunk_bounds, chunk_count
from tests.contract.adapters import EndpointAdapter
from tests.contract.test_read_contract import expected_checksum

SHAPES = ["one_chunk", "several_chunks"]
DST = "dst.bin"


def _size(adapter: EndpointAdapter, shape: str) -> int:
    return adapter.chunk_size // 2 + 3 if shape == "one_chunk" else 2 * adapter.chunk_size + 1


def _crc(data: bytes | memoryview) -> str:
    return checksums.checksum_bytes("crc32c", data)


def _open(
    adapter: EndpointAdapter, size: int, key: str = "attempt-1", name: str = DST
) -> WriteSession:
    """Open a session the way a transfer does: check, adjust the chunk size, open."""
    url = adapter.url(name)
    adapter.driver.check_destination(url)
    chunk_size, _ = adapter.driver.adjust_chunk_size(size, adapter.chunk_size)
    return adapter.driver.open_session(url, size, chunk_size, key)


def _write(
    adapter: EndpointAdapter,
    session: WriteSession,
    data: bytes,
    indices: Iterable[int] | None = None,
) -> None:
    """Write chunks ``indices`` (default: all, last first) of ``data`` into ``session``."""
    if indices is None:
        indices = reversed(range(chunk_count(session.size, session.chunk_size)))
    view = memoryview(data)
    with adapter.driver.open_writer(session) as writer:
        for index in indices:
            offset, length = chunk_bounds(index, session.size, session.chunk_size)
            chunk = view[offset : offset + length]
            writer.write_chunk(index, chunk, _crc(chunk))


def _through_temporal(session: WriteSession) -> WriteSession:
    """The session as an activity receives it (serialised into workflow history)."""
    return WriteSession.model_validate_json(session.model_dump_json())


def _written(
    adapter: EndpointAdapter, shape: str, key: str = "attempt-1"
) -> tuple[WriteSession, bytes]:
    data = os.urandom(_size(adapter, shape))
    session = _open(adapter, len(data), key)
    _write(adapter, session, data)
    return session, data


@pytest.mark.parametrize("size", ["0", "1", "chunk-1", "chunk", "chunk+1", "2chunks+1"])
def test_write_round_trip(writable: EndpointAdapter, size: str) -> None:
    """Chunks written last-first, every one durable, published through a serialised
    session: the destination holds exactly the bytes, and nothing else is left."""
    chunk = writable.chunk_size
    n = {"0": 0, "1": 1, "chunk-1": chunk - 1, "chunk": chunk, "chunk+1": chunk + 1,
         "2chunks+1": 2 * chunk + 1}[size]  # fmt: skip
    data = os.urandom(n)
    session = _open(writable, n)
    _write(writable, _through_temporal(session), data)
    count = chunk_count(n, session.chunk_size)
    assert sorted(writable.driver.durable_chunks(session)) == list(range(count))
    writable.driver.publish(_through_temporal(session))
    assert writable.get(DST) == data
    assert writable.listing() == {DST}
    info = writable.driver.stat(writable.url(DST))
    assert info.size == n


def test_durable_chunks_lists_exactly_what_was_written(writable: EndpointAdapter) -> None:
    data = os.urandom(3 * writable.chunk_size + 5)
    session = _open(writable, len(data))
    assert session.chunk_size == writable.chunk_size
    assert writable.driver.durable_chunks(session) == {}
    _write(writable, session, data, [2, 0])
    durable = writable.driver.durable_chunks(session)
    assert sorted(durable) == [0, 2]
    for index, digest in durable.items():
        offset, length = chunk_bounds(index, session.size, session.chunk_size)
        chunk = memoryview(data[offset : offset + length])
        if digest != _crc(chunk):  # held, its checksum unknown: shown by the driver
            assert writable.driver.durable_chunk_matches(session, index, chunk, digest)
    _write(writable, session, data, [0, 1, 3])  # chunk 0 again: writes are positional
    assert sorted(writable.driver.durable_chunks(session)) == [0, 1, 2, 3]
    writable.driver.publish(session)
    assert writable.get(DST) == data


@pytest.mark.parametrize("shape", SHAPES)
def test_open_session_is_idempotent_per_key(writable: EndpointAdapter, shape: str) -> None:
    """Re-opening with the same key (a retried activity) gives the same session and
    keeps what it holds; another key gives another session."""
    data = os.urandom(_size(writable, shape))
    session = _open(writable, len(data), "attempt-1")
    _write(writable, session, data, [0])
    again = _open(writable, len(data), "attempt-1")
    assert again == session
    assert sorted(writable.driver.durable_chunks(again)) == [0]
    other = _open(writable, len(data), "attempt-2")
    assert other.session_id != session.session_id
    writable.driver.abort(other)
    writable.driver.abort(session)
    assert writable.listing() == set()


@pytest.mark.parametrize("shape", SHAPES)
def test_destination_untouched_until_publish(writable: EndpointAdapter, shape: str) -> None:
    """Every chunk written and durable, not yet published: the name still holds the
    previous object."""
    old = os.urandom(7)
    writable.put(DST, old)
    session, data = _written(writable, shape)
    assert writable.get(DST) == old
    writable.driver.publish(session)
    assert writable.get(DST) == data


@pytest.mark.parametrize("shape", SHAPES)
def test_publish_is_idempotent(writable: EndpointAdapter, shape: str) -> None:
    """A publish retried after it took effect (the activity's answer was lost) succeeds."""
    session, data = _written(writable, shape)
    writable.driver.publish(session)
    writable.driver.publish(_through_temporal(session))
    assert writable.get(DST) == data
    assert writable.listing() == {DST}


@pytest.mark.parametrize("shape", SHAPES)
def test_abort_is_idempotent_and_removes_the_session(writable: EndpointAdapter, shape: str) -> None:
    data = os.urandom(_size(writable, shape))
    session = _open(writable, len(data))
    _write(writable, session, data, [0])
    writable.driver.abort(session)
    writable.driver.abort(_through_temporal(session))
    assert writable.listing() == set()


@pytest.mark.parametrize("shape", SHAPES)
def test_abort_never_touches_the_destination(writable: EndpointAdapter, shape: str) -> None:
    """A cancelled or failed transfer leaves what the name held before intact."""
    old = os.urandom(11)
    writable.put(DST, old)
    session, _ = _written(writable, shape)
    writable.driver.abort(session)
    writable.driver.abort(session)
    assert writable.get(DST) == old
    assert writable.listing() == {DST}


@pytest.mark.parametrize("shape", SHAPES)
def test_abort_after_publish_keeps_the_published_object(
    writable: EndpointAdapter, shape: str
) -> None:
    """Clean-up that runs after publish (a cancel arriving late) discards temp data
    only: the published object stays."""
    session, data = _written(writable, shape)
    writable.driver.publish(session)
    writable.driver.abort(session)
    assert writable.get(DST) == data
    assert writable.listing() == {DST}


@pytest.mark.parametrize("lost", ["temp", "all_data"])
@pytest.mark.parametrize("shape", SHAPES)
def test_missing_temp_is_never_taken_for_published(
    writable: EndpointAdapter, shape: str, lost: str
) -> None:
    """The session's temp data deleted before publish while an older object of the
    same size sits at the destination: publish must not call that "already
    published" (the transfer would report success with the old bytes)."""
    size = _size(writable, shape)
    old = os.urandom(size)
    writable.put(DST, old)
    session, _ = _written(writable, shape)
    if lost == "temp":
        writable.lose_temp(session)
    else:
        writable.lose_session_data(keep=DST)
    with pytest.raises(WriteSessionLostError):
        writable.driver.publish(session)
    assert writable.get(DST) == old


def test_missing_temp_without_a_destination_is_lost(writable: EndpointAdapter) -> None:
    session, _ = _written(writable, "several_chunks")
    writable.lose_session_data(keep=DST)
    with pytest.raises(WriteSessionLostError):
        writable.driver.publish(session)
    assert writable.get(DST) is None


def test_writer_stops_when_the_session_is_lost(writable: EndpointAdapter) -> None:
    """Temp data deleted under a live transfer: the next chunk write (or a new writer)
    fails with WriteSessionLostError, and no chunk is reported durable any more."""
    data = os.urandom(_size(writable, "several_chunks"))
    session = _open(writable, len(data))
    _write(writable, session, data, [0])
    assert writable.lose_session_data(keep=DST)
    with pytest.raises(WriteSessionLostError):
        _write(writable, session, data, [1])
    try:
        assert writable.driver.durable_chunks(session) == {}
    except WriteSessionLostError:
        pass  # also an honest answer
    assert writable.get(DST) is None


@pytest.mark.parametrize("shape", SHAPES)
def test_stale_writer_after_publish_is_stopped(writable: EndpointAdapter, shape: str) -> None:
    """An attempt Temporal gave up on wakes up after a retry wrote everything and the
    session was published: its next write fails and the object is unchanged."""
    data = os.urandom(_size(writable, shape))
    session = _open(writable, len(data))
    with writable.driver.open_writer(session) as stale:
        _write(writable, session, data)  # the retried attempt
        writable.driver.publish(session)
        junk = memoryview(os.urandom(min(len(data), session.chunk_size)))
        with pytest.raises(WriteSessionLostError):
            stale.write_chunk(0, junk, _crc(junk))
    assert writable.get(DST) == data
    assert writable.listing() == {DST}


@pytest.mark.parametrize("shape", SHAPES)
def test_stale_writer_after_abort_is_stopped(writable: EndpointAdapter, shape: str) -> None:
    data = os.urandom(_size(writable, shape))
    session = _open(writable, len(data))
    with writable.driver.open_writer(session) as stale:
        writable.driver.abort(session)
        chunk = memoryview(data)[: min(len(data), session.chunk_size)]
        with pytest.raises(WriteSessionLostError):
            stale.write_chunk(0, chunk, _crc(chunk))
    assert writable.get(DST) is None
    assert writable.listing() == set()


@pytest.mark.parametrize("shape", SHAPES)
def test_stale_session_is_never_published(writable: EndpointAdapter, shape: str) -> None:
    """An abandoned session (key ``attempt-1``) keeps writing while its replacement
    (``attempt-2``) is written and published: the destination holds the replacement's
    bytes, also after the abandoned one is aborted."""
    size = _size(writable, shape)
    data, junk = os.urandom(size), os.urandom(size)
    abandoned = _open(writable, size, "attempt-1")
    _write(writable, abandoned, junk, [0])
    current = _open(writable, size, "attempt-2")
    _write(writable, current, data)
    writable.driver.publish(current)
    try:
        _write(writable, abandoned, junk)
    except WriteSessionLostError:
        pass  # stopping it is fine; writing into its own temp data is fine too
    assert writable.get(DST) == data
    writable.driver.abort(abandoned)
    assert writable.get(DST) == data
    assert writable.listing() == {DST}


@pytest.mark.parametrize("alphabet", ["ascii", "utf-8"])
def test_write_names_at_the_length_limit(writable: EndpointAdapter, alphabet: str) -> None:
    """A destination name of exactly the endpoint's limit: temp and journal names must
    fit too."""
    name = writable.long_name(alphabet)
    data = os.urandom(_size(writable, "several_chunks"))
    session = _open(writable, len(data), name=name)
    _write(writable, session, data)
    writable.driver.publish(session)
    assert writable.get(name) == data
    assert writable.listing() == {name}


def test_declared_features_hold(writable: EndpointAdapter) -> None:
    """A driver's ``features`` say what it does: a destination declares ``write``;
    ``unpublished_readable`` exactly when ``session_url`` names the temp data;
    ``stored_checksum`` exactly when ``object_checksum`` is its own (not the read-back
    default); ``reopens_by_key`` exactly when a second ``open_session`` with the same
    key gives the same session. The bytes behind each claim are checked below."""
    from staccato.endpoints.base import Driver

    driver = writable.driver
    features = driver.features
    assert features.write
    session = _open(writable, _size(writable, "one_chunk"))
    try:
        assert (driver.session_url(session) is not None) is features.unpublished_readable
    finally:
        driver.abort(session)
    own_checksum = type(driver).object_checksum is not Driver.object_checksum
    assert own_checksum is features.stored_checksum
    size = _size(writable, "one_chunk")
    first = _open(writable, size, key="reopened")
    again = _open(writable, size, key="reopened")
    try:
        assert (again.session_id == first.session_id) is features.reopens_by_key
    finally:
        driver.abort(again)
        driver.abort(first)
    if features.read_back:
        assert features.unpublished_readable, "read-back needs readable unpublished data"


def test_session_readable_before_publish_where_declared(writable: EndpointAdapter) -> None:
    """Where a driver declares ``unpublished_readable`` (and ``read_back``), the temp
    data and each chunk read back are the bytes written, before publish."""
    data = os.urandom(_size(writable, "several_chunks"))
    session = _open(writable, len(data))
    _write(writable, session, data)
    driver = writable.driver
    temp = driver.session_url(session)
    if driver.features.unpublished_readable:
        assert temp is not None
        from staccato.urls import parse_url

        url = parse_url(temp)
        info = driver.stat(url)
        assert info.size == len(data)
        with driver.open_read(url, info, 0, len(data)) as reader:
            buffer = memoryview(bytearray(len(data)))
            assert reader.readinto_full(buffer) == len(data)
            assert bytes(buffer) == data
    if driver.features.read_back:
        with driver.open_writer(session) as writer:
            for index in range(chunk_count(session.size, session.chunk_size)):
                offset, length = chunk_bounds(index, session.size, session.chunk_size)
                into = memoryview(bytearray(length))
                writer.read_back(index, into)
                assert bytes(into) == data[offset : offset + length]
    driver.publish(session)
    assert writable.get(DST) == data


def test_destination_with_missing_parent(writable: EndpointAdapter) -> None:
    with pytest.raises(DestinationMissingError):
        writable.driver.check_destination(writable.missing_parent(DST))


@pytest.mark.parametrize("algorithm", ["crc32c", "sha256"])
def test_published_object_checksum(writable: EndpointAdapter, algorithm: str) -> None:
    """``verify`` of an object the driver published (stores that keep a full-object
    checksum answer from it; others read back) equals the transfer's checksum."""
    session, data = _written(writable, "several_chunks")
    writable.driver.publish(session)
    segments = [(0, 1), (1, chunk_count(session.size, session.chunk_size))]
    expected = expected_checksum(data, session.chunk_size, segments, algorithm)
    url = writable.url(DST)
    got = writable.driver.object_checksum(url, len(data), session.chunk_size, segments, algorithm)
    assert got == expected


def test_durable_chunks_of_a_range(writable: EndpointAdapter) -> None:
    """Asked for a stream's range of chunks, a driver may report more, never a chunk
    that was not written, and every written one in the range."""
    params = inspect.signature(writable.driver.durable_chunks).parameters
    if "first_chunk" not in params:
        pytest.skip("this driver's durable_chunks takes no range")
    data = os.urandom(4 * writable.chunk_size + 1)
    session = _open(writable, len(data))
    _write(writable, session, data, [0, 2, 3])
    durable = writable.driver.durable_chunks(session, first_chunk=1, end_chunk=3)  # type: ignore[call-arg]
    assert {2} <= set(durable) <= {0, 2, 3}


def test_partial_chunk_kept_checked_or_none(writable: EndpointAdapter) -> None:
    """A paused stream's start of a chunk (``ChunkWriter.write_partial``): where the
    endpoint keeps it, ``partial_chunk`` gives exactly those bytes back (the latest
    record), never a prefix whose bytes do not match its checksum, never one of a
    chunk journaled whole; it is not a durable chunk, and publish takes the chunk
    once written whole. Where it cannot keep one (S3: a part is whole or absent),
    ``write_partial`` says so and ``partial_chunk`` has none."""
    chunk = writable.chunk_size
    data = os.urandom(2 * chunk + 1)
    session = _open(writable, len(data))
    buffer = memoryview(bytearray(chunk))
    short, longer = chunk // 4 + 1, chunk // 2 + 3
    with writable.driver.open_writer(session) as writer:
        kept = writer.write_partial(0, memoryview(data)[:short], _crc(data[:short]))
        if kept:
            assert writer.write_partial(0, memoryview(data)[:longer], _crc(data[:longer]))
            # a record whose checksum is not its bytes' (as if damaged after it)
            assert writer.write_partial(1, memoryview(data)[chunk : chunk + short], _crc(b"x"))
    if not kept:
        assert writable.driver.partial_chunk(session, 0, buffer) == 0
        return
    assert writable.driver.partial_chunk(_through_temporal(session), 0, buffer) == longer
    assert bytes(buffer[:longer]) == data[:longer]
    assert writable.driver.partial_chunk(session, 1, buffer) == 0
    assert writable.driver.durable_chunks(session) == {}
    _write(writable, session, data, [0])
    assert writable.driver.partial_chunk(session, 0, buffer) == 0  # whole now
    _write(writable, session, data, [1, 2])
    writable.driver.publish(session)
    assert writable.get(DST) == data


@pytest.mark.parametrize("shape", SHAPES)
def test_changed_at_of_a_published_object_is_not_before_its_copy_began(
    writable: EndpointAdapter, shape: str
) -> None:
    """Where a driver tells a change time (``Driver.changed_at``: a retried dataset
    batch tells by it a file its killed attempt published from one up to date
    before), a published object's is not before its write session was opened, less
    the driver's ``change_time_slack_s``; where it tells none (SFTP), None."""
    url = writable.url(DST)
    began = time.time()
    session, _ = _written(writable, shape)
    writable.driver.publish(session)
    changed = writable.driver.changed_at(url)
    if writable.driver.scheme == "sftp":
        assert changed is None
        return
    assert changed is not None
    assert changed >= began - writable.driver.change_time_slack_s, (changed, began)
