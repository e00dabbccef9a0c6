"""A transfer's own ``--max-rate`` moves to its streams still running.

Before, each stream kept the share it started with (``max_rate`` over the streams
running then) to its end, so once the short segments finished the others went on at
their old share and the transfer ran well under the rate asked (52 MB at 5 MB/s with 8
streams: 15.3 s where 10.4 s is the goal). Now the workflow answers ``stream_share``
(``max_rate`` over its copy streams running now), the worker's rate board publishes it
under :func:`~staccato.activities.pacing.own_key` and each stream's pacer reads it.

Likewise an endpoint's or link's ``max_rate``: its governor divided it over the
streams granted, so a stream whose lane had no segment left kept its share to the
transfer's end (a 5 MB/s endpoint cap gave 2.9 MB/s). Now the transfer tells its
governors (signal ``running``) how many of its streams still run, and they divide over
those.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType

from staccato import governors
from staccato.activities.pacing import Pacer, SharedPacer, own_key, slot_key
from staccato.client import StaccatoClient
from staccato.links import endpoint_of, governor_id, parse_limit_target
from staccato.models import (
    MIN_TUNED_BYTES,
    READ_STAGED,
    ChecksumAlgorithm,
    GovernorState,
    Limits,
    ObjectInfo,
    Segment,
    SlotGrant,
    SlotHolder,
    StageInput,
    StreamInput,
    TransferOptions,
    TransferState,
    WriteSession,
    rate_per_stream,
)
from staccato.workers.rates import RateBoard, _own_share
from staccato.workflows.governor import STATE_QUERY
from staccato.workflows.transfer import TransferWorkflow
from tests.helpers import MiB, sha256_file, write_random
from tests.servers.nginx import NginxServer


def _never_waits(seconds: float) -> None:
    raise AssertionError("a pacer without a ticket does not wait for the board")


def _pacer_sees(pacer: Pacer, rate: float, what: str) -> None:
    """Wait (bounded) until ``pacer`` runs at ``rate`` (it looks at its board every
    ``REFRESH_S``)."""
    deadline = time.monotonic() + 5
    while pacer.rate() != rate:
        assert time.monotonic() < deadline, f"{what}: the pacer runs at {pacer.rate()}"
        time.sleep(0.05)


def test_the_own_share_on_the_board_replaces_the_start_share() -> None:
    """The pacer starts at the stream's start-time share, takes the transfer's share
    from the board once it is there (higher as well as lower), keeps it when the key
    goes, and the governors' share still wins when it is lower."""
    key = own_key("staccato-x")
    board: dict[str, float] = {}
    pacer = Pacer(1 * MiB, "staccato-x/run/1", board=board, own_key=key)
    board["staccato-x/run/1"] = float("inf")  # its governors have no max_rate
    pacer.start(time.sleep)
    assert pacer.rate() == 1 * MiB  # nothing published yet: the start share
    board[key] = 4 * MiB  # the other streams ended
    _pacer_sees(pacer, 4 * MiB, "the risen own share")
    board["staccato-x/run/1"] = 3 * MiB  # an endpoint's share, lower
    _pacer_sees(pacer, 3 * MiB, "the lower governors' share")
    board["staccato-x/run/1"] = float("inf")
    del board[key]  # the worker dropped the key (the manager was rebuilt): keep it
    _pacer_sees(pacer, 4 * MiB, "the last own share")


def test_a_stream_without_an_own_rate_and_a_batch_ignore_the_own_share() -> None:
    """No own ``max_rate``: the own key does not make a stream paced; a dataset's batch
    (SharedPacer, no own key) keeps the dataset's whole ``max_rate``."""
    key = own_key("staccato-y")
    board = {key: 2 * MiB}
    unpaced = Pacer(None, None, board=board, own_key=key)
    assert not unpaced.active and unpaced.step(_never_waits) is None
    batch = SharedPacer(1 * MiB, None, board=board)
    assert batch.rate() == 1 * MiB


def test_the_worker_follows_the_own_share_of_copy_streams_only() -> None:
    """The interceptor registers a copy stream's transfer when it has an own
    ``max_rate``; a staging read keeps its start-time share (the whole ``max_rate``)."""
    info = ObjectInfo(size=1, version="v", supports_ranges=True)
    stream = StreamInput(
        transfer_id="staccato-z",
        source="/s",
        source_info=info,
        session=WriteSession(url="/d", size=1, chunk_size=1, session_id="x"),
        segment=Segment(index=0, first_chunk=0, end_chunk=1, offset=0, length=1),
        checksum=ChecksumAlgorithm.sha256,
        max_rate=1.0,
    )
    assert _own_share(stream) == "staccato-z"
    assert _own_share(stream.model_copy(update={"max_rate": None})) is None
    staging = StageInput(transfer_id="staccato-z", source="/s", source_info=info, max_rate=1.0)
    assert _own_share(staging) is None


async def test_a_stream_that_ends_hands_its_share_to_the_others(
    client: StaccatoClient, data_dir: Path
) -> None:
    """7 chunks over 3 streams at --max-rate 1.5MiB/s: segments of 3, 3 and 1 chunks.
    A rate board (the worker's, here in the test with the suite's Temporal client)
    following the transfer publishes ``max_rate``/3 while the three run, then, once the
    1-chunk stream ended, ``max_rate``/2 for the two left. Before, the workflow had no
    such query and each stream kept its third to its end."""
    rate = 3 * MiB // 2
    source = data_dir / "unequal.bin"
    digest = write_random(source, 7 * MiB, seed=71)
    destination = data_dir / "unequal-out.bin"
    options = TransferOptions(chunk_size=1 * MiB, streams=3, max_rate=rate, owner="t")
    transfer = await client.submit(str(source), str(destination), options)
    workflow_id = await client.workflow_id(transfer)
    done = asyncio.ensure_future(client.wait(transfer))
    board: dict[str, float] = {}
    rates = RateBoard(client.temporal, lambda: board)
    seen: list[float] = []
    deadline = time.monotonic() + 60
    with rates._sharing(workflow_id):
        while not done.done() and (not seen or seen[-1] != rate / 2):
            assert time.monotonic() < deadline, f"published shares: {seen}"
            await rates.publish()
            share = board.get(own_key(workflow_id))
            if share is not None and (not seen or seen[-1] != share):
                seen.append(share)
            await asyncio.sleep(0.05)
    await rates.publish()
    assert own_key(workflow_id) not in board, "the board keeps only what runs here"
    result = await asyncio.wait_for(done, 60)
    assert result.bytes == 7 * MiB
    assert (await client.status(transfer)).state == TransferState.completed
    assert sha256_file(destination) == digest
    # before the streams start the share is the whole rate (nothing runs yet)
    print("published shares:", [round(s / MiB, 3) for s in seen])
    copying = [s for s in seen if s != rate]
    assert copying[:2] == [rate / 3, rate / 2], f"published shares: {seen}"


def _holder(ticket: str, streams: int, running: int | None = None) -> SlotHolder:
    return SlotHolder(
        ticket=ticket, workflow_id="w", run_id="r", streams=streams, token=1, running=running
    )


def test_a_governor_divides_over_the_streams_still_running() -> None:
    """max_rate over min(held, running) of each holder; not told: all held run; a
    number above the streams held counts the streams held (max_streams is unchanged)."""
    assert rate_per_stream(None, [_holder("a", 4)]) is None
    assert rate_per_stream(12.0, []) == 12.0
    assert rate_per_stream(12.0, [_holder("a", 4), _holder("b", 2)]) == 2.0
    assert rate_per_stream(12.0, [_holder("a", 4, running=1), _holder("b", 2)]) == 4.0
    assert rate_per_stream(12.0, [_holder("a", 4, running=9), _holder("b", 2)]) == 2.0


def test_when_a_transfer_tells_its_governors_the_streams_running() -> None:
    """8 streams held at two governors: a lane that ends tells 7 (once: told, no
    repeat); the optimizer choosing 4 tells nothing while 7 still run and 4 once
    they drained; choosing 6 again tells 6; nothing while paused, without a slot,
    after a failure or when the last lane ended; a new ticket counts from the held."""
    flow = TransferWorkflow()
    flow._ticket = "w/r/1"
    flow._granted = {n: SlotGrant(name=n, ticket="w/r/1", token=1, streams=8) for n in "ab"}
    flow._lanes = 8
    flow._running = dict.fromkeys(range(8), object())  # type: ignore[arg-type]
    assert flow._running_to_tell(8) is None  # all held run
    del flow._running[7]
    assert flow._running_to_tell(7) == 7  # a lane had no segment left
    flow._told_running = ("w/r/1", 7)
    assert flow._running_to_tell(7) is None
    flow._lanes = 4  # the optimizer chose 4: 7 still run their segments
    assert flow._running_to_tell(7) is None
    flow._running = dict.fromkeys(range(4), object())  # type: ignore[arg-type]
    assert flow._running_to_tell(7) == 4  # drained; the other lanes idle
    flow._told_running = ("w/r/1", 4)
    flow._lanes = 6
    assert flow._running_to_tell(7) == 6
    assert flow._running_to_tell(0) is None  # the last lane ended: the release follows
    flow._paused = True
    assert flow._running_to_tell(5) is None
    flow._paused = False
    flow._ticket = "w/r/2"  # asked again after a resume: the governors count 8 held
    flow._lanes = 8
    assert flow._running_to_tell(8) is None
    assert flow._running_to_tell(3) == 3
    flow._granted = {}
    assert flow._running_to_tell(3) is None


@pytest.fixture
async def link_limit(client: StaccatoClient) -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """``link_limit(target, **Limits)`` sets limits and returns the governor's name;
    they are cleared after the test (and the governor left to end)."""
    used: list[str] = []

    async def set_(target: str, **values: Any) -> str:
        parsed = parse_limit_target(target)
        used.append(parsed.name)
        await governors.set_limits(client.temporal, parsed, Limits(**values))
        return parsed.name

    yield set_
    for name in used:
        await governors.unset_limits(client.temporal, parse_limit_target(name), [])


async def test_a_governor_hands_a_finished_streams_share_to_the_others(
    client: StaccatoClient,
    link_limit: Callable[..., Awaitable[str]],
    nginx_ranges: NginxServer,
    http_root: Path,
    data_dir: Path,
) -> None:
    """A link cap of 1.5MiB/s, one transfer of 7 chunks over 3 streams (segments of 3,
    3 and 1 chunks): the rate board (here in the test) publishes the cap over 3 for
    the transfer's ticket while its three streams run, then over 2 once the 1-chunk
    stream ended (the transfer told the governor). Before, the governor divided over
    the 3 streams granted until the transfer ended."""
    cap = 3 * MiB // 2
    name = await link_limit(f"{endpoint_of(nginx_ranges.base_url)},file://", max_rate=cap)
    digest = write_random(http_root / "share-link.bin", 7 * MiB, seed=73)
    destination = data_dir / "share-link.bin"
    options = TransferOptions(chunk_size=1 * MiB, streams=3, owner="t")
    transfer = await client.submit(nginx_ranges.url("share-link.bin"), str(destination), options)
    done = asyncio.ensure_future(client.wait(transfer))
    handle = client.temporal.get_workflow_handle(governor_id(name))
    deadline = time.monotonic() + 60
    ticket = None
    while ticket is None:
        assert time.monotonic() < deadline and not done.done(), "the transfer held no slot"
        state = await handle.query(STATE_QUERY, result_type=GovernorState)
        ticket = state.holders[0].ticket if state.holders else None
        await asyncio.sleep(0.05)
    board: dict[str, float] = {}
    rates = RateBoard(client.temporal, lambda: board)
    seen: list[float] = []
    with rates._running(ticket, (name,)):
        while not done.done() and (not seen or seen[-1] != cap / 2):
            assert time.monotonic() < deadline, f"published shares: {seen}"
            await rates.publish()
            share = board.get(slot_key(ticket, (name,)))
            if share is not None and (not seen or seen[-1] != share):
                seen.append(share)
            await asyncio.sleep(0.05)
    print("published shares:", [round(s / MiB, 3) for s in seen])
    result = await asyncio.wait_for(done, 60)
    assert result.bytes == 7 * MiB
    assert sha256_file(destination) == digest
    assert seen[:2] == [cap / 3, cap / 2], f"published shares: {seen}"


async def _scheduled_inputs(client: StaccatoClient, transfer: str) -> dict[str, list[Any]]:
    """Activity type -> the decoded inputs of each of its scheduled attempts."""
    kinds = {"stage_source": StageInput, "copy_stream": StreamInput}
    found: dict[str, list[Any]] = {}
    async for event in client.temporal.get_workflow_handle(transfer).fetch_history_events():
        if event.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            continue
        attributes = event.activity_task_scheduled_event_attributes
        kind = kinds.get(attributes.activity_type.name)
        if kind is not None:
            decoded = await client.temporal.data_converter.decode(attributes.input.payloads, [kind])
            found.setdefault(attributes.activity_type.name, []).append(decoded[0])
    return found


async def test_a_staged_transfer_is_paced_by_the_source_cap_once(
    client: StaccatoClient,
    link_limit: Callable[..., Awaitable[str]],
    nginx_no_ranges: NginxServer,
    http_root: Path,
    data_dir: Path,
) -> None:
    """A source without ranges is staged: its endpoint's and its link's caps pace
    the staging read (the bytes that cross them) and not again the streams that copy
    the staged entry to the local destination (which cross neither). Before, every
    stream was paced by every governor held: an endpoint capped at 4 MB/s made a
    32 MiB staged copy take 18.6 s (read at the cap, then copied at the cap) where
    ~8.5 s is right. The caps here are high (the test times nothing): what is checked
    is which governors each read's input names for its rate."""
    source = endpoint_of(nginx_no_ranges.base_url)
    endpoint = await link_limit(source, max_rate=1024 * MiB)
    link = await link_limit(f"{source},file://", max_rate=1024 * MiB)
    digest = write_random(http_root / "staged-once.bin", 6 * MiB, seed=79)
    destination = data_dir / "staged-once.bin"
    options = TransferOptions(chunk_size=1 * MiB, streams=3, owner="t")
    transfer = await client.submit(
        nginx_no_ranges.url("staged-once.bin"), str(destination), options
    )
    result = await asyncio.wait_for(client.wait(transfer), 120)
    assert result.bytes == 6 * MiB
    assert sha256_file(destination) == digest
    inputs = await _scheduled_inputs(client, transfer)
    assert [i.governors for i in inputs["stage_source"]] == [sorted([endpoint, link])], inputs
    streams = inputs["copy_stream"]
    assert streams and all(s.staged for s in streams), streams
    assert [(s.ticket, s.governors) for s in streams] == [(None, [])] * len(streams), streams


async def test_a_transfer_that_reuses_a_staged_entry_says_so_and_names_the_cap_that_paced_it(
    client: StaccatoClient,
    link_limit: Callable[..., Awaitable[str]],
    nginx_no_ranges: NginxServer,
    http_root: Path,
    data_dir: Path,
) -> None:
    """One source (no ranges: staged) copied to two destinations: the second finds
    the source's entry in the worker's staging cache (nginx serves one GET in all).
    Its status says it read the staged entry, not the origin, and with caps on both
    endpoints its tuning says the destination's cap paced its streams (the only one
    that paces a staged transfer's streams). Before (tester69 MED 5), it said
    ``read_from origin`` and "paced by the limit on" whichever governor granted last
    with a max_rate (the source's). The caps are high: nothing is timed."""
    source = endpoint_of(nginx_no_ranges.base_url)
    await link_limit(source, max_rate=1024 * MiB)
    name = "staged-reused.bin"
    digest = write_random(http_root / name, MIN_TUNED_BYTES, seed=83)  # tuned: a tuning line
    old = time.time() - 3600  # at rest: its Last-Modified second is long past
    os.utime(http_root / name, (old, old))
    options = TransferOptions(owner="t", tuning=True)
    first = await client.submit(nginx_no_ranges.url(name), str(data_dir / "r1.bin"), options)
    one = await asyncio.wait_for(client.wait(first), 120)
    assert sha256_file(data_dir / "r1.bin") == digest
    assert one.read_from == "origin", one
    (data_dir / "r1.bin").unlink()  # no known copy: the second reads the staged entry

    destination = await link_limit("file://", max_rate=512 * MiB)
    second = await client.submit(nginx_no_ranges.url(name), str(data_dir / "r2.bin"), options)
    two = await asyncio.wait_for(client.wait(second), 120)
    assert sha256_file(data_dir / "r2.bin") == digest
    gets = [r for r in nginx_no_ranges.requests() if r["method"] == "GET" and name in r["uri"]]
    assert len(gets) == 1, gets  # the second transfer reused the staged entry
    status = await client.status(second)
    for shown in (two, status):
        assert shown.read_from == READ_STAGED, shown
        assert "staging cache" in (shown.read_from_reason or ""), shown
        assert shown.tuning is not None and shown.tuning.not_recorded, shown
        why = shown.tuning.not_recorded
        print(f"read_from {shown.read_from}: {shown.read_from_reason}; not_recorded: {why}")
        assert f"paced by the limit on {destination} " in why, why
        assert f"paced by the limit on {source}" not in why, why
