"""Nested destinations are refused (exit 1, "destination busy"), as one root is: while
a dataset writes R, a dataset to R/sub, a transfer to R/x/f and a dataset to R's
parent are refused naming it; while a transfer writes P/t/f.bin, a dataset to P is
refused. Siblings whose names share a prefix (``dst`` and ``dst2``, ``f`` beside
``f.bin``) are not. Each writer is held running by its own ``max_rate``."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from staccato.client import StaccatoClient
from staccato.dataset_client import cancel_dataset, dataset_status, submit_dataset
from staccato.datasets.models import DatasetState
from staccato.errors import DestinationBusyError
from staccato.models import TransferOptions, TransferState
from tests.dataset_checks import tree, wait_dataset
from tests.helpers import MiB, WorkerProcess, run_cli, write_random

OPTIONS = TransferOptions(chunk_size=1 * MiB, streams=1, heartbeat_timeout_s=8)
#: bytes/s of the writer held running (16 MiB: ~4 min, far longer than the checks, which
#: it outlasts by being cancelled: at 256 KiB/s its ~60 s were within reach of the
#: checks' CLIs and second dataset at load 15, and "A ended too soon")
SLOW = TransferOptions(chunk_size=1 * MiB, streams=1, heartbeat_timeout_s=8, max_rate=64 * 1024)


def _files(root: Path, count: int, size: int, seed: int) -> None:
    for i in range(count):
        path = root / f"d{i % 4}" / f"f{i:02d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_random(path, size, seed=seed + i)


async def _visible(client: StaccatoClient, workflow_id: str) -> None:
    """Wait (60 s at most) until visibility lists ``workflow_id`` running."""
    query = f"WorkflowId = '{workflow_id}' AND ExecutionStatus = 'Running'"
    deadline = time.monotonic() + 60
    while not [w async for w in client.temporal.list_workflows(query)]:
        assert time.monotonic() < deadline, f"{workflow_id} not listed running in 60 s"
        await asyncio.sleep(0.1)


async def test_nested_starts_refused_while_a_dataset_writes_a_root(
    temporal_server, worker: WorkerProcess, client: StaccatoClient, data_dir: Path
) -> None:
    src_a, src_b = data_dir / "a", data_dir / "b"
    _files(src_a, 16, 1 * MiB, seed=100)
    _files(src_b, 3, 64 * 1024, seed=200)
    out = data_dir / "out"
    root, sibling = out / "dst", out / "dst2"
    a = await submit_dataset(client, str(src_a), str(root), SLOW)
    try:
        await _visible(client, a)
        cli = {"address": temporal_server.address, "task_queue": worker.task_queue}
        # (1) a dataset inside A's root
        refused = run_cli("cp", "-r", "-q", str(src_b), str(root / "d15"), **cli)
        assert refused.returncode == 1, (refused.stdout, refused.stderr)
        assert "destination busy" in refused.stderr and a in refused.stderr, refused.stderr
        assert f"file://{root}" in refused.stderr, refused.stderr
        with pytest.raises(DestinationBusyError, match=a):
            await submit_dataset(client, str(src_b), str(root / "d15"), OPTIONS)
        # (2) a single transfer inside A's root
        one = src_b / "d0" / "f00.bin"
        refused = run_cli("submit", str(one), str(root / "d7" / "f1.bin"), **cli)
        assert refused.returncode == 1, (refused.stdout, refused.stderr)
        assert "destination busy" in refused.stderr and a in refused.stderr, refused.stderr
        with pytest.raises(DestinationBusyError, match=a):
            await client.submit(str(one), str(root / "d7" / "f1.bin"), OPTIONS)
        # (3) a dataset enclosing A's root
        with pytest.raises(DestinationBusyError, match=a):
            await submit_dataset(client, str(src_b), str(out), OPTIONS)
        status = await dataset_status(client, a)
        assert status.state == DatasetState.running, "A ended too soon: proves nothing"
        assert not (root / "d15").exists(), "a refused dataset wrote under A's root"
        assert not (root / "d7" / "f1.bin").exists(), "a refused transfer wrote"
        # (4) a sibling sharing the name's prefix is not refused
        b = await submit_dataset(client, str(src_b), str(sibling), OPTIONS)
        assert (await wait_dataset(client, b, timeout_s=120)).state == DatasetState.completed
        assert tree(sibling) == tree(src_b)
        t = await client.submit(str(one), str(sibling / "d0" / "g.bin"), OPTIONS)
        await client.wait(t)  # raises unless it completed
        assert (sibling / "d0" / "g.bin").read_bytes() == one.read_bytes()
        status = await dataset_status(client, a)
        assert status.state == DatasetState.running, "A ended too soon: proves nothing"
    finally:
        await cancel_dataset(client, a)


async def test_dataset_enclosing_a_running_transfer_refused(
    temporal_server, worker: WorkerProcess, client: StaccatoClient, data_dir: Path
) -> None:
    big, src_b = data_dir / "big.bin", data_dir / "b"
    write_random(big, 16 * MiB, seed=300)
    _files(src_b, 3, 64 * 1024, seed=400)
    out = data_dir / "out"
    destination = out / "t" / "f.bin"
    destination.parent.mkdir(parents=True)
    t = await client.submit(str(big), str(destination), SLOW)
    try:
        await _visible(client, t)
        cli = {"address": temporal_server.address, "task_queue": worker.task_queue}
        for root in (out / "t", out):
            refused = run_cli("cp", "-r", "-q", str(src_b), str(root), **cli)
            assert refused.returncode == 1, (refused.stdout, refused.stderr)
            assert "destination busy" in refused.stderr and t in refused.stderr, refused.stderr
            assert f"file://{destination}" in refused.stderr, refused.stderr
        assert not (out / "t" / "d0").exists() and not (out / "d0").exists()
        # `f` beside `f.bin`: no path boundary between them
        beside = await submit_dataset(client, str(src_b), str(out / "t" / "f"), OPTIONS)
        final = await wait_dataset(client, beside, timeout_s=120)
        assert final.state == DatasetState.completed, final
        assert tree(out / "t" / "f") == tree(src_b)
        assert (await client.status(t)).state == TransferState.running, "proves nothing"
    finally:
        await client.cancel(t)


async def test_a_datasets_large_file_names_the_root_and_the_file_apart(
    temporal_server, worker: WorkerProcess, client: StaccatoClient, data_dir: Path
) -> None:
    """While a dataset's large file is copied by its own child transfer, a dataset
    enclosing the root is refused naming the dataset's source root and, apart, the
    source of the file it is writing (it said "from .../sub/large2.bin", the file as
    if it were the dataset's source)."""
    src, other = data_dir / "src" / "ds", data_dir / "other"
    (src / "sub").mkdir(parents=True)
    write_random(src / "sub" / "large2.bin", 16 * MiB, seed=500)
    _files(other, 2, 64 * 1024, seed=600)
    out = data_dir / "out"
    root = out / "dst"
    a = await submit_dataset(client, str(src), str(root), SLOW, small_file_max=1 * MiB)
    try:
        # the large file's own transfer (a child of the dataset) is running
        query = f"ParentWorkflowId = '{a}' AND ExecutionStatus = 'Running'"
        deadline = time.monotonic() + 60
        while not [w async for w in client.temporal.list_workflows(query)]:
            assert time.monotonic() < deadline, f"{a} started no child transfer in 60 s"
            await asyncio.sleep(0.1)
        cli = {"address": temporal_server.address, "task_queue": worker.task_queue}
        # visibility lists the newest first: the child transfer before its dataset
        refused = run_cli("cp", "-r", "-q", str(other), str(out), **cli)
        assert refused.returncode == 1, (refused.stdout, refused.stderr)
        message = " ".join(refused.stderr.split())
        assert a in message, message
        assert f"source root file://{src})" in message, message
        assert f"its file from file://{src}/sub/large2.bin" in message, message
        assert f"(from file://{src}/sub/large2.bin)" not in message, message
        status = await dataset_status(client, a)
        assert status.state == DatasetState.running, "A ended too soon: proves nothing"
    finally:
        await cancel_dataset(client, a)
