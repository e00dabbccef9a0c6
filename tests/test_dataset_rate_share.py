"""The pieces of a dataset's whole ``--max-rate`` that need no servers: the pacer's
dataset share (:func:`~staccato.activities.pacing.group_key`) and the worker's
interceptor (see tests/test_dataset_whole_rate.py for the whole, against Temporal)."""

from __future__ import annotations

import time

from staccato.activities.pacing import Pacer, SharedPacer, group_key, own_key
from staccato.datasets.models import BatchFile, BatchInput
from staccato.models import TransferOptions
from staccato.workers.rates import _rate_group
from tests.helpers import MiB

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
