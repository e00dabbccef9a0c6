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

#: the slowest tests of a CI run (seconds, ``--durations``): their files run first, so
#: that with ``-n 2`` the two workers end together on short tests rather than one
#: waiting while the other runs a 90 s test last. Refresh from a CI run's
#: ``--durations`` now and then; a test not listed (or renamed) only loses its place.
SLOW_TESTS: dict[str, float] = {
    "tests/sftp/test_sftp_zombie.py::test_frozen_sftp_stream_writes_nothing_after_losing_its_segment": 88,
    "tests/test_dataset_fanout.py::test_two_datasets_sharing_a_root_never_write_it_at_once": 63,
    "tests/test_lock.py::test_list_skips_foreign_workflows_and_limit_is_exact": 52,
    "tests/test_limits.py::test_pause_gives_the_slot_back_and_resume_asks_again": 50,
    "tests/s3/test_s3_staging.py::test_store_down_mid_upload_the_source_is_read_once": 48,
    "tests/test_lock.py::test_front_survives_worker_kill_without_a_second_run": 36,
    "tests/test_secrets.py::test_presigned_url_token_appears_nowhere": 27,
    "tests/test_secrets.py::test_presigned_url_with_codec_and_codec_server": 27,
    "tests/test_limits.py::test_worker_sigkill_holder_completes_and_releases": 26,
    "tests/test_schedule_race.py": 24,
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the files of :data:`SLOW_TESTS` first, the file with the most listed seconds
    first; each file's tests keep their order and stay together (module fixtures are
    set up once), the other files keep theirs after them."""
    weight: dict[str, float] = {}
    for nodeid, seconds in SLOW_TESTS.items():
        module = nodeid.split("::", 1)[0]
        weight[module] = weight.get(module, 0.0) + seconds
    order = {
        item.nodeid.split("::", 1)[0]: index for index, item in reversed(list(enumerate(items)))
    }
    items.sort(
        key=lambda item: (
            -weight.get(item.nodeid.split("::", 1)[0], 0.0),
            order[item.nodeid.split("::", 1)[0]],
        )
    )


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
