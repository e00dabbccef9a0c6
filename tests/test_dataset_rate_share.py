"""The pieces of a dataset's whole ``--max-rate``: the pacer's dataset share
(:func:`~staccato.activities.pacing.group_key`), the worker's interceptor, and the
rate board's division of a running dataset's ``max_rate`` (against Temporal; see
tests/test_dataset_whole_rate.py for the bytes at the destination)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from staccato.activities.pacing import Pacer, SharedPacer, group_key, own_key
from staccato.client import StaccatoClient
from staccato.dataset_client import submit_dataset
from staccato.datasets.models import BatchFile, BatchInput, DatasetState
from staccato.models import FanOutRequest, ObjectInfo, StagedFromGroup, TransferOptions
from staccato.workers.rates import RateBoard, _rate_group, _shares
from tests.dataset_checks import wait_dataset
from tests.helpers import MiB, write_random

OPTIONS = TransferOptions(chunk_size=1 * MiB, streams=2, owner="t", max_rate=3_000_000)


def test_the_dataset_share_on_the_board_caps_a_stream_and_a_batch() -> None:
    """A stream of a dataset's large file reads at most the dataset's per-stream share
    (lower than its transfer's own share), a batch at most that share (not the whole
    ``max_rate``); both wait at their start for the board's first word on it."""
    group = group_key("staccato-dataset-x")
    board: dict[str, float] = {}
    waited: list[float] = []

    def publish_later(seconds: float) -> None:
        waited.append(seconds)
        board[group] = 0.5 * MiB

    stream = Pacer(4 * MiB, None, board=board, own_key=own_key("t"), group_key=group)
    stream.start(publish_later)
    assert waited, "the stream did not wait for the dataset's share"
    assert stream.rate() == 0.5 * MiB
    batch = SharedPacer(4 * MiB, None, board=board, group_key=group)
    batch.start(time.sleep)
    assert batch.rate() == 0.5 * MiB
    # a dataset that shares no max_rate (a run from before): inf, the own rate holds
    board[group] = float("inf")
    assert SharedPacer(4 * MiB, None, board=board, group_key=group).rate() == 4 * MiB
    # no own max_rate: the dataset's share does not make a stream paced
    assert not Pacer(None, None, board=board, group_key=group).active


def test_the_worker_follows_a_batch_of_a_dataset_that_shares_its_rate() -> None:
    """The interceptor counts a batch under its dataset when it carries ``rate_group``
    and a ``max_rate``."""
    batch = BatchInput(
        source_root="file:///s",
        destination_root="file:///d",
        files=[BatchFile(name="a", size=1)],
        options=OPTIONS,
        key="k",
        rate_group="staccato-dataset-x",
    )
    assert _rate_group(batch) == "staccato-dataset-x"
    assert _rate_group(batch.model_copy(update={"rate_group": None})) is None
    unpaced = batch.model_copy(update={"options": OPTIONS.model_copy(update={"max_rate": None})})
    assert _rate_group(unpaced) is None


async def test_the_board_divides_the_dataset_rate_and_moves_it_to_those_left(
    client: StaccatoClient, tmp_path: Path, data_dir: Path
) -> None:
    """A rate board following a dataset (as a worker running one of its batches does)
    publishes ``max_rate`` over its batches and its large files' streams: below half
    the rate while several run, and higher again once some ended (the share moves to
    those still running); each published share is the dataset's answer divided."""
    rate = 4_000_000
    source = tmp_path / "src"
    (source / "small").mkdir(parents=True)
    (source / "large").mkdir()
    for i in range(12):
        write_random(source / "small" / f"s{i:02d}.bin", 1 * MiB, seed=500 + i)
    for i in range(2):
        write_random(source / "large" / f"l{i}.bin", 4 * MiB, seed=600 + i)
    target = data_dir / "shares"
    dataset = await submit_dataset(
        client,
        str(source),
        str(target),
        options=OPTIONS.model_copy(update={"max_rate": rate}),
        small_file_max=2 * MiB,
        batch_files=3,
    )
    done = asyncio.ensure_future(wait_dataset(client, dataset, timeout_s=120))
    board: dict[str, float] = {}
    rates = RateBoard(client.temporal, lambda: board)
    seen: list[float] = []
    deadline = time.monotonic() + 120
    with rates._grouped(dataset):
        while not done.done():
            assert time.monotonic() < deadline, f"the dataset did not end; shares {seen}"
            await rates.publish()
            share = board.get(group_key(dataset))
            if share is not None and share != float("inf") and (not seen or seen[-1] != share):
                seen.append(share)
            await asyncio.sleep(0.05)
    await rates.publish()
    assert group_key(dataset) not in board, "the board keeps only what runs here"
    final = await done
    assert final.state == DatasetState.completed and final.files_done == 14, final
    print("shares published (MB/s):", [round(s / 1e6, 3) for s in seen])
    assert seen and all(s <= rate for s in seen), seen
    low = min(seen)
    assert low < rate / 2, f"never divided over several readers: {seen}"
    assert max(seen[seen.index(low) :]) > low, f"the share never moved to those left: {seen}"


def test_a_dataset_to_several_roots_shares_per_reader_and_per_writer() -> None:
    """With several roots the board divides the dataset's ``max_rate`` over its
    readers of the source and over its writers of a root: a fan-out group's staging
    read takes the reader's share, its transfers' streams the writer's, a batch the
    lower (it reads and writes); a group counts as its busiest transfer's streams
    among the writers. The new request fields leave payloads and hashes as before
    while unset."""
    shares = _shares("d", 12e6, readers=6, writers=4)
    assert shares == {
        group_key("d"): 2e6,
        group_key("d", "read"): 2e6,
        group_key("d", "write"): 3e6,
    }
    board = RateBoard(None, dict)  # type: ignore[arg-type]  (no question asked)
    board._child_streams = {"g": 1, "t1": 2, "t2": 1}
    assert board._root_writers(["t1", "t2"]) == 2
    assert board._root_writers(["t3"]) == 0, "a transfer not started writes nothing yet"
    fan = FanOutRequest(source="file:///s", destinations=["file:///a", "file:///b"])
    assert "rate_group" not in fan.model_dump_json()
    shared = fan.model_copy(update={"rate_group": "staccato-dataset-x"})
    assert shared.request_hash() == fan.request_hash()
    info = ObjectInfo(size=1, version="v")
    assert "rate_group" not in StagedFromGroup(group_id="g", key="k", source_info=info).model_dump()
