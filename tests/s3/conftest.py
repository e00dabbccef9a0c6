"""S3 test fixtures: a metered SeaweedFS, S3-configured workers, and helpers.

* ``s3_server``: SeaweedFS (``weed server -s3``) with its Prometheus metrics on, so
  tests can count what the *server* received per bucket
  (``SeaweedFS_s3_bucket_traffic_received_bytes_total``,
  ``SeaweedFS_s3_request_total{type=PUT|GET|POST...}``), and a second, read-only
  identity (for AccessDenied).
* ``s3_worker`` / ``s3_client``: a ``staccato worker`` subprocess configured the way
  AWS users configure things: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
  ``AWS_ENDPOINT_URL_S3`` in its environment, plus shared config/credentials files with
  the profiles ``readonly``, ``badkey`` (unknown access key id) and ``badsecret``.
* ``profile_worker`` / ``profile_client``: a worker with *no* AWS environment
  variables, only config/credentials files: the default profile points at
  ``s3_server`` (``endpoint_url``), profile ``other`` at a second SeaweedFS
  (the shared ``seaweed_s3`` fixture), profile ``moto`` at moto (``services`` section),
  profile ``slow`` at ``s3_server`` through a 2 MB/s uplink (``SlowLink``), profile
  ``gated`` at ``s3_server`` through a relay that can hold one request (``GatedLink``).
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from staccato.client import StaccatoClient
from tests.helpers import SESSION_WORKER_PROCESSES, WorkerProcess
from tests.servers.seaweedfs import MotoS3, SeaweedS3
from tests.servers.temporal_server import LOCALHOST, free_port

_METRIC = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def _shut_both(*socks: socket.socket) -> None:
    """End a relayed connection in both directions (either may be gone already)."""
    for sock in socks:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class MeteredSeaweedS3(SeaweedS3):
    """SeaweedFS with ``-metricsPort``, a second, read-only identity, and room for
    many buckets."""

    def __init__(self, data_dir: Path) -> None:
        # Every bucket is a collection that grows 7 volumes at once; tests make a fresh
        # bucket each (~100 in a run), so 200 slots would run out ("No writable volumes").
        super().__init__(data_dir, max_volumes=3000)
        self.metrics_port = free_port()
        self.readonly_key = "STACCATORO" + uuid.uuid4().hex[:10].upper()
        self.readonly_secret = uuid.uuid4().hex + uuid.uuid4().hex

    def _before_start(self) -> None:
        super()._before_start()
        identities = json.loads(self.s3_config_path.read_text())
        identities["identities"].append(
            {
                "name": "staccato-readonly",
                "credentials": [
                    {"accessKey": self.readonly_key, "secretKey": self.readonly_secret}
                ],
                "actions": ["Read", "List"],
            }
        )
        self.s3_config_path.write_text(json.dumps(identities, indent=2))

    def _argv(self) -> list[str]:
        return [*super()._argv(), f"-metricsIp={LOCALHOST}", f"-metricsPort={self.metrics_port}"]

    def metrics(self) -> list[tuple[str, dict[str, str], float]]:
        """All Prometheus samples: ``(name, labels, value)``."""
        url = f"http://{LOCALHOST}:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        samples = []
        for line in text.splitlines():
            match = _METRIC.match(line)
            if not match or line.startswith("#"):
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
            samples.append((match.group(1), labels, float(match.group(3))))
        return samples

    def received_bytes(self, bucket: str) -> int:
        """Request-body bytes the S3 gateway received for ``bucket`` so far."""
        return int(
            sum(
                v
                for n, labels, v in self.metrics()
                if n == "SeaweedFS_s3_bucket_traffic_received_bytes_total"
                and labels.get("bucket") == bucket
            )
        )

    def request_count(self, bucket: str, kind: str, code: str | None = "200") -> int:
        """Requests of HTTP-method ``kind`` (``PUT``, ``GET``, ``POST``, ...) on ``bucket``."""
        return int(
            sum(
                v
                for n, labels, v in self.metrics()
                if n == "SeaweedFS_s3_request_total"
                and labels.get("bucket") == bucket
                and labels.get("type") == kind
                and (code is None or labels.get("code") == code)
            )
        )


class SlowLink:
    """A TCP relay on 127.0.0.1 to ``upstream_port`` that carries client->server bytes
    at most ``rate`` bytes/s per connection (server->client unlimited): a slow uplink
    to a real S3 server, for parts that take longer to send than a heartbeat timeout."""

    def __init__(self, upstream_port: int, rate: int) -> None:
        self.upstream_port = upstream_port
        self.rate = rate
        self._listener = socket.socket()
        # Small receive buffers (inherited by accepted sockets) keep the bytes in flight
        # near the rate limit, instead of megabytes queued in loopback socket buffers.
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        self._listener.bind((LOCALHOST, 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint_url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection((LOCALHOST, self.upstream_port))
            threading.Thread(
                target=self._pump, args=(client, upstream, self.rate), daemon=True
            ).start()
            threading.Thread(target=self._pump, args=(upstream, client, 0), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, rate: int) -> None:
        piece = 64 * 1024
        try:
            while data := source.recv(piece):
                sink.sendall(data)
                if rate:
                    time.sleep(len(data) / rate)
        except OSError:
            pass
        finally:
            _shut_both(source, sink)

    def close(self) -> None:
        self._closed = True
        self._listener.close()


class GatedLink:
    """A TCP relay on 127.0.0.1 to a real S3 server that can hold one kind of request:
    after :meth:`arm` with a regex over the request line (e.g. ``rb"^POST /b/k\\?uploads"``),
    the first client->server bytes matching it wait, unsent, until :meth:`release`.
    :attr:`held` is set while such a request is held, so a test can act (cancel) in
    the exact window between a driver sending a call and the store receiving it.
    After :meth:`lose_answer` instead, the next matching request reaches the store and
    its answer is dropped, the connection closed (:attr:`lost` set): a request carried
    out whose client never learns it was. After :meth:`hold_answer`, the next matching
    request reaches the store and its answer waits, unsent, until :meth:`release`
    (:attr:`answer_held` set once it came; :attr:`asker_gone` once the client closed
    that connection meanwhile): a request carried out whose answer is slow."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._pattern: re.Pattern[bytes] | None = None
        self._lose: re.Pattern[bytes] | None = None
        self.lost = threading.Event()
        self._hold_answer: re.Pattern[bytes] | None = None
        self.answer_held = threading.Event()
        self.asker_gone = threading.Event()
        self.held = threading.Event()
        self._released = threading.Event()
        self._released.set()
        self._listener = socket.socket()
        self._listener.bind((LOCALHOST, 0))
        self._listener.listen(32)
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint_url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def arm(self, pattern: bytes) -> None:
        """Hold the next request whose bytes match ``pattern`` (multiline regex)."""
        self.held.clear()
        self._released.clear()
        self._pattern = re.compile(pattern, re.MULTILINE)

    def lose_answer(self, pattern: bytes) -> None:
        """Drop the answer to the next request whose bytes match ``pattern``."""
        self.lost.clear()
        self._lose = re.compile(pattern, re.MULTILINE)

    def hold_answer(self, pattern: bytes) -> None:
        """Hold the answer to the next request whose bytes match ``pattern``."""
        self.answer_held.clear()
        self.asker_gone.clear()
        self._released.clear()
        self._hold_answer = re.compile(pattern, re.MULTILINE)

    def release(self) -> None:
        """Send what is held and stop holding."""
        self._pattern = None
        self._hold_answer = None
        self._released.set()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection((LOCALHOST, self.upstream_port))
            losing = threading.Event()  # this connection's next answer is dropped
            holding = threading.Event()  # this connection's next answer is held
            threading.Thread(
                target=self._pump, args=(client, upstream, True, losing, holding), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(upstream, client, False, losing, holding), daemon=True
            ).start()

    def _pump(
        self,
        source: socket.socket,
        sink: socket.socket,
        gated: bool,
        losing: threading.Event,
        holding: threading.Event,
    ) -> None:
        try:
            while data := source.recv(256 * 1024):
                pattern = self._pattern
                if gated and pattern is not None and pattern.search(data):
                    self.held.set()
                    self._released.wait(120)
                lose = self._lose
                if gated and lose is not None and lose.search(data):
                    self._lose = None
                    losing.set()
                hold = self._hold_answer
                if gated and hold is not None and hold.search(data):
                    self._hold_answer = None
                    holding.set()
                if not gated and losing.is_set():
                    self.lost.set()
                    return  # the answer dropped; finally closes both ends
                if not gated and holding.is_set():
                    self.answer_held.set()
                    self._released.wait(120)
                    holding.clear()
                sink.sendall(data)
        except OSError:
            pass
        finally:
            if gated and holding.is_set():
                self.asker_gone.set()  # the client left before its answer came
            _shut_both(source, sink)

    def close(self) -> None:
        self._closed = True
        self.release()
        self._listener.close()


#: seconds a server counter must stay unchanged to count as settled: SeaweedFS counts
#: a request after it answered it, and at load 15 its thread may run that second or so
#: later (0.3 s of quiet is within a scheduling delay's reach there)
SETTLE_QUIET_S = 1.0


def settled(read: Callable[[], int], expected: int, timeout_s: float = 10.0) -> int:
    """A server counter's value once it reached ``expected`` (SeaweedFS may count a
    request a moment after answering it) or stopped moving: read until it is at least
    ``expected`` and unchanged for :data:`SETTLE_QUIET_S`, or ``timeout_s`` passed."""
    deadline = time.monotonic() + timeout_s
    value = read()
    while time.monotonic() < deadline:
        time.sleep(SETTLE_QUIET_S)
        again = read()
        if again == value and value >= expected:
            return value
        value = again
    return value


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeteredSeaweedS3]:
    server = MeteredSeaweedS3(tmp_path_factory.mktemp("seaweedfs-metered"))
    server.start()
    try:
        yield server
    finally:
        server.kill()


def _write_ini(path: Path, sections: dict[str, dict[str, str]]) -> Path:
    lines: list[str] = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {v}" for k, v in values.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    path.chmod(0o600)
    return path


@pytest.fixture(scope="session")
def aws_files(
    s3_server: MeteredSeaweedS3, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """Shared config + credentials files for the env-configured worker (the endpoint
    comes from ``AWS_ENDPOINT_URL_S3``, which applies to every profile)."""
    directory = tmp_path_factory.mktemp("aws")
    region = {"region": s3_server.region}
    config = _write_ini(
        directory / "config",
        {"profile readonly": region, "profile badkey": region, "profile badsecret": region},
    )
    credentials = _write_ini(
        directory / "credentials",
        {
            "readonly": {
                "aws_access_key_id": s3_server.readonly_key,
                "aws_secret_access_key": s3_server.readonly_secret,
            },
            "badkey": {
                "aws_access_key_id": "STACCATONOSUCHKEY",
                "aws_secret_access_key": "not-the-secret",
            },
            "badsecret": {
                "aws_access_key_id": s3_server.access_key,
                "aws_secret_access_key": "not-the-secret",
            },
        },
    )
    return {"AWS_CONFIG_FILE": str(config), "AWS_SHARED_CREDENTIALS_FILE": str(credentials)}


@pytest.fixture(scope="session")
def s3_worker_env(s3_server: MeteredSeaweedS3, aws_files: dict[str, str]) -> dict[str, str]:
    return {**s3_server.subprocess_env(), **aws_files, "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture(scope="session")
def s3_worker(
    temporal_server, s3_worker_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    process = WorkerProcess(
        temporal_server.address,
        processes=SESSION_WORKER_PROCESSES,
        env=s3_worker_env,
        log_dir=tmp_path_factory.mktemp("s3-worker"),
    )
    _start_without_inherited_aws(process)
    try:
        yield process
    finally:
        process.stop()


async def queue_client(address: str, task_queue: str) -> StaccatoClient:
    """A client of the Temporal server at ``address`` whose transfers and datasets go
    to ``task_queue`` (a test's own worker's)."""
    client = await StaccatoClient.connect(target_host=address, namespace="default")
    client.task_queue = task_queue
    return client


@pytest.fixture(scope="session")
async def s3_client(temporal_server, s3_worker: WorkerProcess) -> AsyncIterator[StaccatoClient]:
    yield await queue_client(temporal_server.address, s3_worker.task_queue)


@pytest.fixture(scope="session")
def slow_link(s3_server: MeteredSeaweedS3) -> Iterator[SlowLink]:
    """``s3_server`` behind a 2 MB/s uplink (profile ``slow`` of ``profile_worker``)."""
    link = SlowLink(s3_server.s3_port, rate=2_000_000)
    yield link
    link.close()


@pytest.fixture(scope="session")
def gated_link(s3_server: MeteredSeaweedS3) -> Iterator[GatedLink]:
    """``s3_server`` behind a relay that can hold a request (profile ``gated``)."""
    link = GatedLink(s3_server.s3_port)
    yield link
    link.close()


@pytest.fixture(scope="session")
def profile_worker(
    temporal_server,
    s3_server: MeteredSeaweedS3,
    seaweed_s3: SeaweedS3,
    moto_s3: MotoS3,
    slow_link: SlowLink,
    gated_link: GatedLink,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerProcess]:
    """A worker configured only by shared config/credentials files and profiles."""
    directory = tmp_path_factory.mktemp("aws-profiles")
    region = s3_server.region
    config = _write_ini(
        directory / "config",
        {
            "default": {"region": region, "endpoint_url": s3_server.endpoint_url},
            "profile other": {"region": region, "endpoint_url": seaweed_s3.endpoint_url},
            "profile moto": {"region": region, "services": "moto-s3"},
            "profile slow": {"region": region, "endpoint_url": slow_link.endpoint_url},
            "profile gated": {"region": region, "endpoint_url": gated_link.endpoint_url},
            # the same relay, and no botocore retry: a lost answer fails the attempt
            "profile gated-once": {
                "region": region,
                "endpoint_url": gated_link.endpoint_url,
                "max_attempts": "1",
            },
            "services moto-s3": {"s3 =\n  endpoint_url": moto_s3.endpoint_url},
        },
    )
    credentials = _write_ini(
        directory / "credentials",
        {
            name: {
                "aws_access_key_id": server.access_key,
                "aws_secret_access_key": server.secret_key,
            }
            for name, server in (
                ("default", s3_server),
                ("other", seaweed_s3),
                ("moto", moto_s3),
                ("slow", s3_server),
                ("gated", s3_server),
                ("gated-once", s3_server),
            )
        },
    )
    env = {
        "AWS_CONFIG_FILE": str(config),
        "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    process = WorkerProcess(
        temporal_server.address, processes=2, env=env, log_dir=tmp_path_factory.mktemp("pw")
    )
    _start_without_inherited_aws(process)
    try:
        yield process
    finally:
        process.stop()


def _start_without_inherited_aws(process: WorkerProcess) -> None:
    """Start ``process`` with no AWS_* variable of this process leaking into it
    (``WorkerProcess`` merges ``os.environ`` under its ``env``): an inherited
    ``AWS_CA_BUNDLE``, ``AWS_PROFILE`` or key would change what the worker uses."""
    with pytest.MonkeyPatch.context() as patch:
        for key in [k for k in os.environ if k.startswith("AWS_")]:
            patch.delenv(key)
        process.start()


def started_s3_worker(
    address: str,
    env: dict[str, str],
    log_dir: Path,
    task_queue: str | None = None,
    processes: int = 1,
) -> WorkerProcess:
    """A started worker of ``processes`` activity processes on ``task_queue`` (a new one
    if None) with ``env`` and no AWS_* variable of this process (see
    :func:`_start_without_inherited_aws`). One by default: its callers run one dataset
    batch (an activity, in a thread) and kill or freeze the whole worker; a second
    process is ~0.65 CPU-s per start."""
    worker = WorkerProcess(
        address, task_queue=task_queue, processes=processes, env=env, log_dir=log_dir
    )
    _start_without_inherited_aws(worker)
    return worker


@pytest.fixture(scope="session")
async def profile_client(
    temporal_server, profile_worker: WorkerProcess
) -> AsyncIterator[StaccatoClient]:
    yield await queue_client(temporal_server.address, profile_worker.task_queue)


@pytest.fixture
def s3(s3_server: MeteredSeaweedS3) -> Any:
    """A boto3 client of ``s3_server`` (the test's own view of the store)."""
    return s3_server.client()


@pytest.fixture
def bucket(s3: Any) -> str:
    """A fresh, empty bucket on ``s3_server`` (unique per test, so metrics are per test)."""
    name = f"t-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_env(s3_server: MeteredSeaweedS3, monkeypatch: pytest.MonkeyPatch) -> MeteredSeaweedS3:
    """Point this test process's AWS configuration at ``s3_server`` (for in-process
    driver tests) and give it a fresh S3 driver."""
    s3_server.apply_env(monkeypatch)
    return s3_server
