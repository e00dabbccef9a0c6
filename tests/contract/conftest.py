"""The driver contract suite's fixtures: one adapter per endpoint, on a real server.

Every test in this package takes ``endpoint`` (every registered endpoint) or
``writable`` (the endpoints that are destinations too) and runs once per endpoint.

To put a new driver under the whole suite: write its adapter
(:class:`tests.contract.adapters.EndpointAdapter`: the driver, how to make a URL, put a
source object, read an object back, list the namespace, lose a session's temp data),
add a fixture named ``<name>_endpoint`` below that yields it on its real server, and
add ``<name>`` to :data:`ENDPOINTS`.

A contract a driver is known to break is listed in :data:`KNOWN_FAULTS`: that test is
marked ``xfail(strict=True)`` for that endpoint, so it fails loudly ("XPASS") the
moment the driver is fixed, and the entry must then be removed.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from staccato.endpoints.file import FileDriver
from staccato.endpoints.http import HTTPDriver
from staccato.endpoints.s3 import S3Driver
from staccato.endpoints.sftp.driver import SFTPDriver
from staccato.endpoints.sftp.pool import POOL
from tests.contract.adapters import (
    EndpointAdapter,
    FileAdapter,
    HTTPAdapter,
    HTTPWithoutRangesAdapter,
    MotoS3Adapter,
    S3Adapter,
    SFTPAdapter,
)
from tests.servers.nginx import NginxServer
from tests.servers.seaweedfs import MotoS3, SeaweedS3
from tests.servers.sshd import SshdServer

#: endpoint name -> whether it is a destination too (its adapter fixture: NAME_endpoint)
ENDPOINTS: dict[str, bool] = {
    "file": True,
    "http": False,
    "http_no_ranges": False,
    "s3": True,
    "sftp": True,
}

_SFTP_PROOF_REMOVED = (
    "SFTP publish keeps its proof of publish (a marker in the journal) only until the "
    "journal is removed at the end of publish: a publish retried after that cannot tell "
    "its own file from an older one and reports the session lost (the transfer copies "
    "again: slower, never wrong)"
)
_S3_REOPEN = (
    "S3 open_session starts a new multipart upload on every call (CreateMultipartUpload "
    "is not idempotent): a retried prepare leaves the first upload behind"
)
_SFTP_FAILURE_RETRIED = (
    "SFTP maps the server's generic SSH_FX_FAILURE (here: a name longer than the "
    "server's file system takes) to a retryable error, so it is retried for minutes"
)

#: (endpoint, test function, parameter id or None for every parameter) -> the fault
KNOWN_FAULTS: dict[tuple[str, str, str | None], str] = {
    ("sftp", "test_publish_is_idempotent", None): _SFTP_PROOF_REMOVED,
    ("s3", "test_open_session_is_idempotent_per_key", None): _S3_REOPEN,
    ("sftp", "test_name_over_the_limit_is_a_permanent_error", None): _SFTP_FAILURE_RETRIED,
}


def _endpoint_of(item: pytest.Item) -> tuple[str | None, str | None]:
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return None, None
    params = callspec.params
    name = params.get("endpoint", params.get("writable", params.get("read_only")))
    shape = params.get("shape")
    return name, shape


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the known faults (see :data:`KNOWN_FAULTS`) as strict xfails."""
    for item in items:
        if "tests/contract/" not in str(item.path).replace("\\", "/"):
            continue
        name, shape = _endpoint_of(item)
        function = getattr(item, "originalname", item.name)
        for key in ((name, function, shape), (name, function, None)):
            reason = KNOWN_FAULTS.get(key)  # type: ignore[arg-type]
            if reason:
                item.add_marker(pytest.mark.xfail(strict=True, reason=reason))
                break


@pytest.fixture(params=list(ENDPOINTS))
def endpoint(request: pytest.FixtureRequest) -> EndpointAdapter:
    """Every registered endpoint, each on its real server."""
    return request.getfixturevalue(f"{request.param}_endpoint")


@pytest.fixture(params=[name for name, writes in ENDPOINTS.items() if writes])
def writable(request: pytest.FixtureRequest) -> EndpointAdapter:
    """The registered endpoints that are destinations too."""
    return request.getfixturevalue(f"{request.param}_endpoint")


@pytest.fixture(params=[name for name, writes in ENDPOINTS.items() if not writes])
def read_only(request: pytest.FixtureRequest) -> EndpointAdapter:
    """The registered endpoints that are sources only."""
    return request.getfixturevalue(f"{request.param}_endpoint")


# -- one fixture per endpoint --------------------------------------------------------


@pytest.fixture
def file_endpoint(tmp_path: Path) -> Iterator[EndpointAdapter]:
    adapter = FileAdapter(FileDriver(), tmp_path / "file-ns")
    yield adapter
    adapter.close()


def _http_adapter(
    cls: type[HTTPAdapter], server: NginxServer, http_root: Path
) -> Iterator[EndpointAdapter]:
    namespace = uuid.uuid4().hex[:12]
    adapter = cls(HTTPDriver(), http_root / namespace, server.url(namespace))
    yield adapter
    adapter.close()


@pytest.fixture
def http_endpoint(nginx_ranges: NginxServer, http_root: Path) -> Iterator[EndpointAdapter]:
    yield from _http_adapter(HTTPAdapter, nginx_ranges, http_root)


@pytest.fixture
def http_no_ranges_endpoint(
    nginx_no_ranges: NginxServer, http_root: Path
) -> Iterator[EndpointAdapter]:
    yield from _http_adapter(HTTPWithoutRangesAdapter, nginx_no_ranges, http_root)


@pytest.fixture(scope="session")
def contract_bucket(seaweed_s3: SeaweedS3) -> tuple[Any, str]:
    """A boto3 client of the shared SeaweedFS and one bucket for the whole suite (each
    test works under its own key prefix: a bucket per test would cost volumes)."""
    client = seaweed_s3.client()
    bucket = f"contract-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return client, bucket


@pytest.fixture(scope="session")
def _s3_driver() -> S3Driver:
    """One S3 driver for the suite (its client is built while a test's AWS
    environment points at the server, and rebuilt the same way)."""
    return S3Driver()


@pytest.fixture
def s3_endpoint(
    seaweed_s3: SeaweedS3,
    contract_bucket: tuple[Any, str],
    _s3_driver: S3Driver,
    monkeypatch: pytest.MonkeyPatch,
) -> EndpointAdapter:
    seaweed_s3.apply_env(monkeypatch)
    client, bucket = contract_bucket
    return S3Adapter(_s3_driver, client, bucket)


@pytest.fixture
def s3_moto_endpoint(moto_s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> EndpointAdapter:
    """S3 on moto (AWS's key and listing semantics); not in :data:`ENDPOINTS`: only
    the listing tests take it."""
    moto_s3.apply_env(monkeypatch)
    client = moto_s3.client()
    bucket = f"contract-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return MotoS3Adapter(S3Driver(), client, bucket)


@pytest.fixture(scope="session")
def _sftp_settings(sshd_server: SshdServer) -> Iterator[dict[str, str]]:
    """Staccato's SSH settings for the SFTP driver in this process (no ssh config, the
    server's client key and known_hosts, a lock directory of its own)."""
    work = Path(tempfile.mkdtemp(prefix="staccato-contract-sftp-"))
    known_hosts = work / "known_hosts"
    known_hosts.write_text(sshd_server.known_hosts_path.read_text())
    yield {
        "STACCATO_SSH_CONFIG": "none",
        "STACCATO_SSH_IDENTITY": str(sshd_server.client_key_path),
        "STACCATO_SSH_KNOWN_HOSTS": str(known_hosts),
        "STACCATO_SFTP_LOCK_DIR": str(work / "locks"),
        "SSH_AUTH_SOCK": "",
    }
    POOL.close_all()


@pytest.fixture
def sftp_endpoint(
    sshd_server: SshdServer,
    _sftp_settings: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[EndpointAdapter]:
    for key, value in _sftp_settings.items():
        monkeypatch.setenv(key, value)
    base = f"sftp://{sshd_server.user}@{sshd_server.host}:{sshd_server.port}"
    adapter = SFTPAdapter(SFTPDriver(), tmp_path / "sftp-ns", base)
    yield adapter
    adapter.close()
