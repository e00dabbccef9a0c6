"""Shared fixtures: real servers (tests.servers.fixtures), a Staccato worker
subprocess per session, and a connected client."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from staccato.client import StaccatoClient
from tests.helpers import WorkerProcess, mount_tmpfs

pytest_plugins = ["tests.servers.fixtures"]


@pytest.fixture(scope="session")
def worker(temporal_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """One worker subprocess for the session, on its own task queue."""
    process = WorkerProcess(
        temporal_server.address,
        processes=4,
        log_dir=tmp_path_factory.mktemp("worker"),
        # sources that cannot serve ranges are staged: not into the user's own home
        env={"STACCATO_STAGING_DIR": str(tmp_path_factory.mktemp("staging"))},
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
async def client(temporal_server, worker: WorkerProcess) -> AsyncIterator[StaccatoClient]:
    """A client on the session worker's task queue."""
    connected = await StaccatoClient.connect(
        target_host=temporal_server.address, namespace="default"
    )
    connected.task_queue = worker.task_queue
    yield connected


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A per-test directory for sources and destinations."""
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs mounted for the test (unmounted after it)."""
    path = tmp_path / "small"
    mount_tmpfs(path, "8m")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
