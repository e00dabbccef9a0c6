"""A real nginx serving a directory over HTTP on 127.0.0.1, for tests.

One instance serves byte ranges (the default), one with ``ranges=False`` runs with
``max_ranges 0;`` so every ranged GET gets the whole object with status 200. ETags
are on (nginx's default), so a source can be pinned by version.

Every request lands in a JSON-lines access log (status, body bytes sent, method, URI,
``Range`` header); ``bytes_sent()`` sums body bytes so tests can assert how much was
(re-)read from the source.

Served files must be readable by nginx's workers, which run as ``nobody`` when nginx
starts as root: the served directory and every parent must be world-searchable and
files world-readable. ``make_world_readable()`` fixes a tree; ``start()`` checks the
root directory and says what is wrong.

Units: sizes in bytes, durations in seconds.
"""

from __future__ import annotations

import grp
import http.client
import json
import os
import pwd
import signal
import stat
from collections.abc import Iterator
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
    owned_temp_dir,
)

NGINX_INSTALL_HINT = (
    "nginx is missing: apt-get install -y --no-install-recommends nginx "
    "(Debian/Ubuntu; the tests run their own instance, the system service is not used)"
)

# One JSON object per line; escape=json makes any header value safe to embed.
_LOG_FORMAT = (
    '\'{"status":$status,"body_bytes_sent":$body_bytes_sent,'
    '"method":"$request_method","uri":"$request_uri",'
    '"range":"$http_range","request":"$request",'
    '"request_time":$request_time,"msec":$msec}\''
)


def nginx_binary() -> str:
    """Path of the nginx executable (``/usr/sbin/nginx`` or PATH)."""
    return find_binary(["/usr/sbin/nginx", "nginx"], NGINX_INSTALL_HINT)


def make_world_readable(path: str | os.PathLike[str]) -> None:
    """chmod a tree so nginx workers (user nobody) can serve it: dirs 0755, files 0644.

    Walks at most 100,000 entries.
    """
    root = Path(path)
    root.chmod(0o755) if root.is_dir() else root.chmod(0o644)
    count = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o755)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o644)
        count += len(dirnames) + len(filenames)
        if count > 100_000:
            raise RuntimeError(f"make_world_readable: more than 100,000 entries in {root}")


def _world_access_problem(root: Path) -> str | None:
    """Describe why user ``nobody`` cannot read ``root``, or None if it can."""
    mode = root.stat().st_mode
    if not (mode & stat.S_IROTH and mode & stat.S_IXOTH):
        return f"{root} is mode {oct(mode & 0o777)}, needs o+rx (e.g. 0755)"
    for parent in root.parents:
        pmode = parent.stat().st_mode
        if not pmode & stat.S_IXOTH:
            return f"parent {parent} is mode {oct(pmode & 0o777)}, needs o+x"
    return None


class NginxServer(ServerProcess):
    """nginx on ``127.0.0.1:port`` serving ``root_dir`` as static files.

    Runs as ``nginx -p PREFIX -c PREFIX/nginx.conf -e PREFIX/error.log`` with
    ``daemon off``, one worker. ``stop()`` is a fast shutdown (SIGTERM: open connections
    are closed); ``start()`` afterwards listens on the same port again, so a test can
    take the endpoint down for a while and bring it back.

    Args:
        root_dir: directory served at ``/`` (must be world-readable, see module doc).
        ranges: False adds ``max_ranges 0;`` (Range requests answered with the full
            body, status 200, no ``Accept-Ranges``).
        port: listening port; picked free if None.
        prefix_dir: nginx prefix holding config, logs, pid and temp dirs; if None, a
            new temp dir removed when this object is collected or at exit.
        worker_user: ``user`` directive when running as root (default ``nobody``);
            ignored when not root.
        extra_server_config: raw nginx directives appended inside ``server { }``.
    """

    name = "nginx"
    ready_timeout_s = 60.0  # a readiness wait: quick when quiet, several times that at load
    ready_interval_s = 0.05
    stop_signal = signal.SIGTERM  # fast shutdown; SIGQUIT would wait for downloads
    stop_grace_s = 5.0

    def __init__(
        self,
        root_dir: str | os.PathLike[str],
        ranges: bool = True,
        port: int | None = None,
        prefix_dir: str | os.PathLike[str] | None = None,
        worker_user: str = "nobody",
        extra_server_config: str = "",
    ) -> None:
        prefix = Path(prefix_dir) if prefix_dir else owned_temp_dir(self, "nginx-")
        super().__init__(prefix.resolve())
        self.binary = nginx_binary()
        self.root_dir = Path(root_dir).resolve()
        self.ranges = ranges
        self.port = port or free_port()
        self.worker_user = worker_user
        self.extra_server_config = extra_server_config

    # -- public -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://{LOCALHOST}:{self.port}"

    def url(self, relative_path: str) -> str:
        """URL of ``root_dir / relative_path``."""
        return f"{self.base_url}/{relative_path.lstrip('/')}"

    @property
    def access_log_path(self) -> Path:
        """JSON-lines access log (one request per line)."""
        return self.work_dir / "access.log"

    @property
    def error_log_path(self) -> Path:
        """nginx error log."""
        return self.work_dir / "error.log"

    def requests(self) -> list[dict[str, Any]]:
        """Requests logged since start or the last ``clear_log()``, oldest first.

        Each dict has ``status`` (int), ``body_bytes_sent`` (int, bytes), ``method``,
        ``uri``, ``range`` (the ``Range`` header, "" if none), ``request`` (the request
        line) and ``request_time`` (seconds). A request appears once nginx finished it
        (including aborted ones, with the bytes actually sent).
        """
        try:
            text = self.access_log_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        entries: list[dict[str, Any]] = []
        # The last piece has no newline yet if nginx is writing it right now: skip it.
        for line in text.split("\n")[:-1]:
            line = line.strip()
            if line:
                entries.append(json.loads(line))
        return entries

    def bytes_sent(self) -> int:
        """Sum of response body bytes sent, over ``requests()``, in bytes."""
        return sum(int(entry["body_bytes_sent"]) for entry in self.requests())

    def clear_log(self) -> None:
        """Empty the access log (nginx appends, so truncating in place is safe)."""
        if self.access_log_path.exists():
            with open(self.access_log_path, "r+b") as handle:
                handle.truncate(0)

    # -- ServerProcess ------------------------------------------------------------------

    def _before_start(self) -> None:
        if not self.root_dir.is_dir():
            raise FileNotFoundError(f"nginx root_dir {self.root_dir} is not a directory")
        if os.geteuid() == 0 and self.worker_user != "root":
            problem = _world_access_problem(self.root_dir)
            if problem:
                raise PermissionError(
                    f"nginx workers run as {self.worker_user!r} and cannot read the "
                    f"served dir: {problem}. Call tests.servers.nginx.make_world_readable()"
                    " or serve a dir created with mode 0755 outside a 0700 parent."
                )
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.work_dir / "tmp" / sub).mkdir(parents=True, exist_ok=True)
        (self.work_dir / "nginx.conf").write_text(self._config())

    def _config(self) -> str:
        tmp = self.work_dir / "tmp"
        user = ""
        if os.geteuid() == 0:
            # Debian has no group "nobody": name the user's primary group explicitly.
            group = grp.getgrgid(pwd.getpwnam(self.worker_user).pw_gid).gr_name
            user = f"user {self.worker_user} {group};\n"
        ranges = "" if self.ranges else "        max_ranges 0;\n"
        return f"""\
{user}daemon off;
master_process on;
worker_processes 1;
pid {self.work_dir / "nginx.pid"};
error_log {self.error_log_path} warn;

events {{
    worker_connections 512;
}}

http {{
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 30s;
    server_tokens off;
    client_body_temp_path {tmp / "client_body"};
    proxy_temp_path {tmp / "proxy"};
    fastcgi_temp_path {tmp / "fastcgi"};
    uwsgi_temp_path {tmp / "uwsgi"};
    scgi_temp_path {tmp / "scgi"};
    log_format staccato escape=json {_LOG_FORMAT};
    access_log {self.access_log_path} staccato;

    server {{
        listen {LOCALHOST}:{self.port};
        server_name localhost;
        root {self.root_dir};
        etag on;
{ranges}        location / {{
            autoindex on;
        }}
{self.extra_server_config}
    }}
}}
"""

    def _argv(self) -> list[str]:
        return [
            self.binary,
            "-p", f"{self.work_dir}/",
            "-c", str(self.work_dir / "nginx.conf"),
            "-e", str(self.error_log_path),
        ]  # fmt: skip

    def _is_ready(self) -> bool:
        conn = http.client.HTTPConnection(LOCALHOST, self.port, timeout=1)
        try:
            conn.request("HEAD", "/")
            conn.getresponse().read()
            return True
        finally:
            conn.close()


def nginx_fixture(
    root_fixture: str,
    ranges: bool = True,
    scope: Scope = "session",
    extra_server_config: str = "",
) -> Any:
    """Build a pytest fixture yielding a started ``NginxServer``.

    ``root_fixture`` names the fixture giving the directory to serve (e.g. ``"http_root"``);
    ``extra_server_config`` goes into its ``server`` block (e.g. ``"limit_rate 3m;"`` for
    a source slow enough to act on mid-transfer). The server is stopped by PID at teardown.
    """

    @pytest.fixture(scope=scope)
    def _fixture(
        request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[NginxServer]:
        root = request.getfixturevalue(root_fixture)
        try:
            server = NginxServer(
                root,
                ranges=ranges,
                prefix_dir=tmp_path_factory.mktemp("nginx"),
                extra_server_config=extra_server_config,
            )
        except MissingBinaryError as exc:
            fail_missing(exc)
            raise
        server.start()
        try:
            yield server
        finally:
            server.stop()

    return _fixture


__all__ = ["NginxServer", "make_world_readable", "nginx_binary", "nginx_fixture"]
