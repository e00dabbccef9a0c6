"""Session-scoped pytest fixtures running real servers on 127.0.0.1.

Load with ``pytest_plugins = ["tests.servers.fixtures"]`` (or ``-p tests.servers.fixtures``).

| fixture | yields |
| --- | --- |
| ``temporal_server`` | ``TemporalDevServer`` (SQLite file, Staccato search attributes) |
| ``http_root`` | ``Path`` of a world-readable dir served by both nginx fixtures |
| ``nginx_ranges`` | ``NginxServer`` serving ``http_root`` with byte ranges |
| ``nginx_no_ranges`` | ``NginxServer`` serving ``http_root`` with ``max_ranges 0`` |
| ``sshd_server`` | ``SshdServer`` (SFTP, key auth for the current user) |
| ``seaweed_s3`` | ``SeaweedS3`` (real S3 store, fresh data dir) |
| ``moto_s3`` | ``MotoS3`` (moto server mode) |

Servers start on first use and are stopped by PID at the end of the session. A missing
binary fails the test with what to install; nothing is skipped. Session-scoped servers
are shared: a test that stops one must start it again before it returns, and should
clear or diff ``NginxServer.requests()`` rather than assume an empty log.
For other scopes or options build your own with the ``*_fixture`` factories
(``temporal_server_fixture``, ``nginx_fixture``, ``sshd_fixture``,
``seaweed_s3_fixture``, ``moto_s3_fixture``).

Idle cost (CPU-seconds per second of one idle server, started as these fixtures start
it, settled 10-20 s, /proc utime+stime over 30-60 s; 2 cores at load 7-9, 2026-12-07):
Temporal dev server 0.003-0.0065 (the same headless: the UI costs nothing idle), plus
~0.01 while a Staccato worker polls it (its ~200 outstanding long polls); ``weed
server`` 0.004 (the same with 20 buckets, and with ``-master.heartbeatInterval=1s``);
a session worker with 2 activity processes 0.004; moto 0.0002; nginx and sshd 0. So
the ~4 x 6 idle servers and session workers of a ``-n 4`` run cost at most ~350 of its
~2,900 CPU-s, and no server flag tried cut a measurable share of it: what the suite
burns is starts and work (a worker start ~3.2 CPU-s to "worker polling", a dev server
start ~0.65, a ``staccato`` CLI run 0.3 for ``--help``, ~0.55 with a Temporal call).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.nginx import nginx_fixture
from tests.servers.seaweedfs import moto_s3_fixture, seaweed_s3_fixture
from tests.servers.sshd import sshd_fixture
from tests.servers.temporal_server import temporal_server_fixture


@pytest.fixture(scope="session")
def http_root() -> Iterator[Path]:
    """A fresh directory (mode 0755, directly under the system temp dir so every parent
    is searchable by nginx's ``nobody`` workers) served by the nginx fixtures.

    Files written into it with default permissions (umask 022) are served; a file made
    with mode 0600 (e.g. ``tempfile.mkstemp``) gets 403 until made world-readable
    (``tests.servers.nginx.make_world_readable``).
    """
    root = Path(tempfile.mkdtemp(prefix="staccato-http-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


temporal_server = temporal_server_fixture(scope="session")
nginx_ranges = nginx_fixture("http_root", ranges=True, scope="session")
nginx_no_ranges = nginx_fixture("http_root", ranges=False, scope="session")
sshd_server = sshd_fixture(scope="session")
seaweed_s3 = seaweed_s3_fixture(scope="session")
moto_s3 = moto_s3_fixture(scope="session")

__all__ = [
    "http_root",
    "moto_s3",
    "nginx_no_ranges",
    "nginx_ranges",
    "seaweed_s3",
    "sshd_server",
    "temporal_server",
]
