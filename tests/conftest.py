"""Shared fixtures: real servers (tests.servers.fixtures), a Staccato worker
subprocess per session, and a connected client."""

from __future__ import annotations

import compileall
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from staccato.client import StaccatoClient
from tests.helpers import REPO, WorkerProcess, mount_tmpfs

pytest_plugins = ["tests.servers.fixtures"]

# How long a client (this process's, and every CLI the tests run, which inherit it)
# waits for a live worker to take a pause or resume before it gives up: the product's
# 10 s was missed by a polling worker on a CI machine at load average 69. A test of
# the give-up itself sets its own (tests/test_foreign_workflows.py, test_limits.py).
os.environ.setdefault("STACCATO_CLIENT_WAIT_S", "60")

#: the slowest tests (seconds in a full ``-n 2`` run at load ~12, 2026-12-02; CI's are
#: about 0.6 x these): with ``--dist worksteal`` their files run first, so that the two
#: workers end together on short tests rather than one waiting while the other runs a
#: 90 s test last. Only the order matters; refresh from a run's ``--durations`` now and then (a
#: test not listed, or renamed, only loses its place).
SLOW_TESTS: dict[str, float] = {
    "tests/test_secrets.py::test_presigned_url_with_codec_and_codec_server": 82,
    "tests/s3/test_s3_dataset_resume.py::test_large_file_in_a_dataset_resumes_from_its_checkpoint_after_worker_kill": 79,
    "tests/test_secrets.py::test_presigned_url_token_appears_nowhere": 68,
    "tests/s3/test_s3_staging.py::test_store_down_mid_upload_the_source_is_read_once": 67,
    "tests/test_dataset_fanout.py::test_two_datasets_sharing_a_root_never_write_it_at_once": 65,
    "tests/test_pool_crash.py::test_crash_loop_stops_the_worker": 60,
    "tests/test_lock.py::test_front_survives_worker_kill_without_a_second_run": 59,
    "tests/test_pool_crash.py::test_manager_process_killed_mid_transfer": 56,
    "tests/test_embedded.py::test_up_cp_down_up_keeps_history": 54,
    "tests/sftp/test_sftp_commit.py::test_cancel_at_random_points_file_to_sftp": 52,
    "tests/test_limits.py::test_worker_sigkill_holder_completes_and_releases": 43,
    # their own Temporal server since 2026-12-02 (29-41 s each at load ~18)
    "tests/sftp/test_sftp_zombie.py::test_frozen_sftp_stream_writes_nothing_after_losing_its_segment": 35,
    "tests/test_zombie_fence.py::test_frozen_stream_writes_nothing_after_losing_its_segment": 30,
    "tests/test_schedule.py::test_schedule_lifecycle": 44,
    "tests/test_lock.py::test_list_skips_foreign_workflows_and_limit_is_exact": 39,
    "tests/test_live_progress.py::test_current_details_advance_while_data_moves": 37,
    "tests/test_verify_phase.py::test_verify_retried_soon_after_worker_sigkill": 37,
    "tests/test_dataset.py::test_cli_collision_fails_that_file_and_lists_it": 36,
    # 0.13.0's frozen-batch tests (27 and 22 s alone on a quiet machine)
    "tests/s3/test_s3_dataset_zombie.py::test_frozen_batch_writes_nothing_after_losing_its_batch[s3]": 40,
    "tests/test_dataset_zombie.py::test_frozen_batch_to_a_directory_writes_nothing_after_losing_its_batch": 33,
    # the fan-out batch's (26 s alone each)
    "tests/s3/test_s3_dataset_zombie.py::test_frozen_batch_writes_nothing_after_losing_its_batch[s3-and-local]": 33,
    "tests/test_dataset_fanout_zombie.py::test_frozen_fan_out_batch_writes_nothing_at_any_root_after_losing_its_batch": 33,
}


def pytest_configure(config: pytest.Config) -> None:
    """Compile ``staccato``'s bytecode once, before any test (in the controller, not in
    each xdist worker): with ``PYTHONDONTWRITEBYTECODE`` set (as in the Docker image and
    on the build machine) Python writes no ``__pycache__``, so every worker, activity
    process and CLI subprocess the tests start compiled the package from source again:
    0.3 of a worker start's 2.3 CPU-s, 0.1 of a ``staccato status``'s 0.5. Python
    reads bytecode that exists whatever that variable says, and skips a file's stale
    bytecode (it checks the source's mtime and size); ``__pycache__`` is git-ignored."""
    if getattr(config, "workerinput", None) is None:
        compileall.compile_dir(REPO / "staccato", quiet=1)


def _dist_mode(config: pytest.Config) -> str:
    """The run's ``--dist`` mode: an xdist worker (which collects and runs the tests) has
    its own ``dist`` option set to "no", so read the controller's command line."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:
        return str(config.getoption("dist", "no"))
    argv = [str(a) for a in workerinput.get("mainargv", [])]
    for index, arg in enumerate(argv):
        if arg == "--dist" and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--dist="):
            return arg.split("=", 1)[1]
    return "load"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With ``--dist worksteal`` (``make test``): run the files of :data:`SLOW_TESTS`
    first, the file with the most listed seconds first; each file's tests keep their
    order and stay together, the other files keep theirs after them. Worksteal hands
    each worker half the list and lets an idle worker take half of the other's queue,
    so the long tests start early and the run ends on short ones. Not with ``--dist
    load``: it binds the first chunk of the list (an eighth of it with ``-n 2``) to one
    worker, and the slow files there hold more than half the suite's seconds."""
    if _dist_mode(config) != "worksteal":
        return
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
        env={
            "STACCATO_STAGING_DIR": str(tmp_path_factory.mktemp("staging")),
            # never killed: Temporal's own sticky timeout, as a user's worker has (the
            # 2 s of WORKER_ENV is for the workers a test kills)
            "STACCATO_WORKER_STICKY_TIMEOUT_S": "10",
        },
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
