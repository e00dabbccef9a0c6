"""A dataset whose SFTP destination root is down when it starts and comes back while it
runs (``--retry-for`` longer than the outage): the outage is ridden out and every file
lands, also a large file (a child transfer) in a subdirectory the server did not have.

Before, with two roots (a local one and the SFTP one), the listing's attempt to make
the large file's directories on the down server failed and was let go (one root down
never stops a page), and the child transfer, once the server was back, failed:
``destination directory .../sub does not exist ...; create it first``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from staccato.client import StaccatoClient
from staccato.dataset_client import submit_dataset
from staccato.datasets.models import DatasetState
from staccato.ids import transfer_id
from staccato.models import TransferOptions
from tests.dataset_checks import tree, wait_dataset
from tests.helpers import MiB, WorkerProcess, at_rest, write_random
from tests.servers.sshd import SshdServer
from tests.sftp.conftest import _started

SMALL_FILE_MAX = 1 * MiB


@pytest.fixture
def down_server(
    sshd_server: SshdServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SshdServer]:
    """A server of its own (only the worker under test connects to it), stopped: the
    test starts it."""
    server = _started(SshdServer(tmp_path_factory.mktemp("sshd-down")), sshd_server)
    server.stop()
    try:
        yield server
    finally:
        server.stop()


def _source(root: Path) -> dict[str, int]:
    files = {"a.bin": 1000, "sub/L.bin": 3 * MiB + 1}
    for seed, (name, size) in enumerate(files.items()):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_random(path, size, seed=seed + 60)
        at_rest(path)
    return files


async def _until_a_copy_met_the_down_server(
    client: StaccatoClient, dataset: str, child: str, timeout_s: float = 120
) -> None:
    """Until the dataset's listing or the large file's child transfer (to the down
    root) has failed an attempt against the server (bounded by ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        for workflow_id in (dataset, child):
            try:
                described = await client.temporal.get_workflow_handle(workflow_id).describe()
            except Exception:  # the child is not started yet
                continue
            for pending in described.raw_description.pending_activities:
                if pending.attempt >= 2:
                    print(f"{pending.activity_type.name} of {workflow_id} retries")
                    return
        assert time.monotonic() < deadline, "no copy tried the down server"
        await asyncio.sleep(0.2)


@pytest.mark.parametrize(
    ("roots", "retry_failed"),
    # one root down fails its whole first run (its listing gives up): no file to retry
    [("one", False), ("two", False), ("two", True)],
    ids=["one-root", "two-roots", "two-roots-retry-failed"],
)
async def test_destination_root_down_at_start_is_ridden_out(
    temporal_server,
    down_server: SshdServer,
    settings_env: dict[str, str],
    settings_worker: WorkerProcess,
    data_dir: Path,
    roots: str,
    retry_failed: bool,
) -> None:
    """sshd down when the dataset starts, ``--retry-for 90s``, started once a copy
    retried against it: the dataset completes, ``sub/`` made on the server and
    ``sub/L.bin`` (a child transfer) in it, the local root (two roots) complete too.
    Two roots failed ``sub/L.bin`` on the old code (its directory was never made).
    ``retry-failed``: a first run with ``--retry-for 3s`` gives up on the down root's
    files, then ``--retry-failed`` (the root still down) is ridden out the same way
    (it failed the same way on the old code)."""
    known_hosts = Path(settings_env["STACCATO_SSH_KNOWN_HOSTS"])
    known_hosts.write_text(known_hosts.read_text() + down_server.known_hosts_path.read_text())
    source, local, remote = data_dir / "ds6", data_dir / "rA6", data_dir / "remote" / "ds6"
    _source(source)
    (data_dir / "remote").mkdir()
    sftp_root = down_server.url(str(remote))
    destinations = [str(local), sftp_root] if roots == "two" else [sftp_root]
    child = transfer_id(f"{sftp_root}/sub/L.bin")
    options = TransferOptions(chunk_size=1 * MiB, streams=2, retry_for_s=90)
    with contextlib.nullcontext(settings_worker) as worker:
        client = await StaccatoClient.connect(
            target_host=temporal_server.address, namespace="default"
        )
        client.task_queue = worker.task_queue
        target = destinations if roots == "two" else sftp_root
        if retry_failed:
            short = options.model_copy(update={"retry_for_s": 3})
            first = await submit_dataset(
                client, str(source), target, short, small_file_max=SMALL_FILE_MAX
            )
            failed = await wait_dataset(client, first, timeout_s=180)
            assert failed.files_failed > 0, failed
        dataset = await submit_dataset(
            client,
            str(source),
            target,
            options,
            small_file_max=SMALL_FILE_MAX,
            retry_failed=retry_failed,
        )
        try:
            await _until_a_copy_met_the_down_server(client, dataset, child)
        finally:
            down_server.start()
        status = await wait_dataset(client, dataset, timeout_s=180)
    assert status.state == DatasetState.completed, status.failures
    expected = tree(source)
    assert tree(remote) == expected
    if roots == "two":
        assert tree(local) == expected


class _HungThenUp:
    """A loopback TCP port in front of ``upstream_port`` (sshd) that first accepts
    connections and never answers (a hung host: a client waits for the SSH banner
    until its connect timeout), and once :meth:`wake` is called relays to sshd."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream = upstream_port
        self._awake = threading.Event()
        self._held: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            if not self._awake.is_set():
                self._held.append(conn)  # never answered
                continue
            threading.Thread(target=self._relay, args=(conn,), daemon=True).start()

    def _relay(self, conn: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self._upstream))

        def pump(a: socket.socket, b: socket.socket) -> None:
            try:
                while data := a.recv(65536):
                    b.sendall(data)
            except OSError:
                pass
            finally:
                with contextlib.suppress(OSError):
                    b.shutdown(socket.SHUT_WR)

        threading.Thread(target=pump, args=(upstream, conn), daemon=True).start()
        pump(conn, upstream)

    def wake(self) -> None:
        self._awake.set()
        for conn in self._held:
            conn.close()

    def close(self) -> None:
        self._closed = True
        self.wake()
        self._listener.close()


async def test_a_hung_root_at_start_fails_alone_and_retry_failed_copies_the_rest(
    temporal_server,
    sshd_server: SshdServer,
    env_worker_env: dict[str, str],
    data_dir: Path,
    tmp_path: Path,
) -> None:
    """Two roots, a local one and an SFTP one whose host accepts connections but never
    answers (its connect timeout, 8 s here, is longer than ``--retry-for 5s``) when the
    dataset starts: the local root completes, the SFTP root's files fail with the
    reason, the dataset ends ``completed_with_errors``; once the host answers,
    ``--retry-failed`` copies only what is missing there. Before, the listing waited
    for the hung root to make the large file's directory and gave up (``--retry-for``):
    the whole dataset failed, blaming ``list_entries``, nothing copied anywhere."""
    hung = _HungThenUp(sshd_server.port)
    known_hosts = Path(env_worker_env["STACCATO_SSH_KNOWN_HOSTS"])
    key = sshd_server.known_hosts_path.read_text().split(None, 1)[1]
    known_hosts.write_text(known_hosts.read_text() + f"[127.0.0.1]:{hung.port} {key}")
    source, local, remote = data_dir / "ds7", data_dir / "rA7", data_dir / "remote" / "ds7"
    files = _source(source)
    (data_dir / "remote").mkdir()
    sftp_root = f"sftp://{sshd_server.user}@127.0.0.1:{hung.port}{remote}"
    options = TransferOptions(chunk_size=1 * MiB, streams=2, retry_for_s=5)
    roots = [str(local), sftp_root]
    # an attempt at the hung root waits out the connect timeout: 8 s, not the product's
    # 15 s, is still longer than --retry-for (the attempt started before the deadline
    # fails after it), and a handshake with the woken root's sshd is retried for 60 s
    worker_env = {**env_worker_env, "STACCATO_SFTP_CONNECT_TIMEOUT_S": "8"}
    try:
        with WorkerProcess(
            temporal_server.address, processes=2, env=worker_env, log_dir=tmp_path
        ) as worker:
            client = await StaccatoClient.connect(
                target_host=temporal_server.address, namespace="default"
            )
            client.task_queue = worker.task_queue
            first = await submit_dataset(
                client, str(source), roots, options, small_file_max=SMALL_FILE_MAX
            )
            status = await wait_dataset(client, first, timeout_s=240)
            assert status.state == DatasetState.completed_with_errors, (
                status.error,
                status.failures,
            )
            assert tree(local) == tree(source)
            rows = {row.destination: row for row in status.destinations or []}
            (down_root,) = [r for r in rows if r.startswith("sftp://")]
            assert rows[down_root].files_failed == len(files), rows
            assert rows[f"file://{local}"].files_done == len(files), (rows, status.failures)
            assert status.failures and all(f.destination == down_root for f in status.failures)
            by_name = {f.name: f.reason for f in status.failures}
            # the handshake timed out: no answer within the connect timeout, or (under
            # load, paramiko's banner wait ends first) no banner
            assert f"SSH handshake with 127.0.0.1:{hung.port} failed" in by_name["a.bin"], by_name
            hung.wake()
            again = await submit_dataset(
                client,
                str(source),
                roots,
                options.model_copy(update={"retry_for_s": 60}),
                small_file_max=SMALL_FILE_MAX,
                retry_failed=True,
            )
            second = await wait_dataset(client, again, timeout_s=240)
    finally:
        hung.close()
    assert second.state == DatasetState.completed, second.failures
    assert second.files_done == len(files), second
    assert tree(remote) == tree(source)
