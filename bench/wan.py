"""An emulated long fat link for benchmarks: nginx in a network namespace behind a veth
pair, with a per-connection cap, an aggregate cap and a cost past the knee.

These kernels have no ``netem`` (so no added delay or loss), but ``tbf`` on a veth
pair in a namespace works. A long fat link looks to a transfer like this:

* per connection: a window-limited TCP flow moves at most window / RTT bytes per
  second, whatever the link. Emulated by nginx ``limit_rate`` (``per_connection``).
* in aggregate: the bottleneck's capacity, shared by all flows. Emulated by ``tbf``
  on the namespace's veth end, the direction data flows (``aggregate``).
* past the knee: a server (or middlebox) that slows down as it juggles more requests
  at once. Emulated by a per-request rate that nginx picks from the number of
  responses it is writing (``$connections_writing``): up to ``knee_requests`` each
  gets ``per_connection``; beyond, each gets ``per_connection * (knee / n) ** 2``, so
  the sum falls as ``per_connection * knee**2 / n``. More streams help up to
  ``aggregate / per_connection`` streams and hurt past ``knee_requests``.
  (``hurt="limit_conn"`` instead refuses requests past ``knee_requests`` with 503, a
  server connection limit: the client sees errors, not a slower link.)

Everything is created under fixed names (namespace ``staccato-wan``, interfaces
``stwan0``/``stwan1``) and removed by those names on exit, on an exception, on
Ctrl-C and on SIGTERM; leftovers of a killed run are removed before a new one starts.
Needs root (``ip netns``, ``tc``) and nginx >= 1.17 (a variable in ``limit_rate``).

    with WanLink(PROFILES["A"], root_dir) as link:
        url = link.url("file.bin")      # http://10.231.0.2:8080/file.bin
        link.clear_log(); ...; link.requests()
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import types
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NETNS = "staccato-wan"
HOST_IF = "stwan0"
NS_IF = "stwan1"
HOST_ADDR = "10.231.0.1"
NS_ADDR = "10.231.0.2"
PORT = 8080
#: the most requests the rate table of the "decay" cost covers (more get its last rate)
MAX_REQUESTS = 64

_LOG_FORMAT = (
    '\'{"status":$status,"body_bytes_sent":$body_bytes_sent,"range":"$http_range",'
    '"request_time":$request_time,"msec":$msec,"connection":$connection,'
    '"writing":"$connections_writing","rate":"$wan_rate"}\''
)


@dataclass(frozen=True)
class Profile:
    """One emulated link. Rates in bytes per second (MB = 10**6 bytes)."""

    name: str
    per_connection: int
    aggregate: int
    #: requests at once the server handles at full speed; it slows past them
    knee_requests: int

    def rate_for(self, requests: int) -> int:
        """Bytes per second one response gets while ``requests`` are being written."""
        if requests <= self.knee_requests:
            return self.per_connection
        return max(1, int(self.per_connection * (self.knee_requests / requests) ** 2))

    def scaled(self, factor: float) -> Profile:
        """The same link with its rates multiplied by ``factor`` (same knee)."""
        if factor == 1:
            return self
        return Profile(
            f"{self.name} x{factor:g}",
            int(self.per_connection * factor),
            int(self.aggregate * factor),
            self.knee_requests,
        )

    def describe(self) -> str:
        return (
            f"profile {self.name}: {self.per_connection / 1e6:g} MB/s per connection, "
            f"{self.aggregate / 1e6:g} MB/s in all, server slows past "
            f"{self.knee_requests} requests at once"
        )


PROFILES = {
    "A": Profile("A", per_connection=25_000_000, aggregate=200_000_000, knee_requests=10),
    "B": Profile("B", per_connection=100_000_000, aggregate=400_000_000, knee_requests=6),
}


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


def remove_link() -> None:
    """Remove the namespace and the veth pair by name (absent ones are fine). Deleting
    the namespace destroys its veth end, and with it the peer."""
    _run("ip", "netns", "del", NETNS, check=False)
    _run("ip", "link", "del", HOST_IF, check=False)


class WanLink:
    """The emulated link and its nginx (see the module doc). A context manager."""

    def __init__(self, profile: Profile, root_dir: Path, hurt: str = "decay") -> None:
        if hurt not in ("decay", "limit_conn"):
            raise ValueError(f"hurt must be 'decay' or 'limit_conn', not {hurt!r}")
        self.profile = profile
        self.root_dir = root_dir.resolve()
        self.hurt = hurt
        self.prefix = Path(tempfile.mkdtemp(prefix="staccato-wan-nginx-"))
        self.nginx: subprocess.Popen[bytes] | None = None
        self._old_term: Any = None

    # -- public ---------------------------------------------------------------------

    def url(self, name: str) -> str:
        return f"http://{NS_ADDR}:{PORT}/{name}"

    @property
    def access_log(self) -> Path:
        return self.prefix / "access.log"

    def clear_log(self) -> None:
        if self.access_log.exists():
            with open(self.access_log, "r+b") as handle:
                handle.truncate(0)

    def requests(self) -> list[dict[str, Any]]:
        """Finished requests since the last :meth:`clear_log`, each with ``status``,
        ``body_bytes_sent`` (bytes), ``request_time`` (s), ``msec`` (end, Unix s),
        ``range``, ``connection`` (nginx's serial), ``writing`` and ``rate``."""
        try:
            text = self.access_log.read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.split("\n")[:-1] if line.strip()]

    # -- set-up and tear-down -------------------------------------------------------

    def __enter__(self) -> WanLink:
        self._old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _create(self) -> None:
        remove_link()  # a killed run's leftovers
        p = self.profile
        _run("ip", "netns", "add", NETNS)
        _run("ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF)
        _run("ip", "link", "set", NS_IF, "netns", NETNS)
        _run("ip", "addr", "add", f"{HOST_ADDR}/30", "dev", HOST_IF)
        _run("ip", "link", "set", HOST_IF, "up")
        ns = ("ip", "netns", "exec", NETNS)
        _run(*ns, "ip", "addr", "add", f"{NS_ADDR}/30", "dev", NS_IF)
        _run(*ns, "ip", "link", "set", NS_IF, "up")
        _run(*ns, "ip", "link", "set", "lo", "up")
        # the aggregate cap on the data direction (namespace -> host). The bucket holds
        # 4 ms at the rate (at least 256 KiB): enough for the timer granularity at these
        # rates, small next to a transfer.
        burst = max(256 * 1024, p.aggregate * 4 // 1000)
        _run(
            *ns, "tc", "qdisc", "add", "dev", NS_IF, "root", "tbf",
            "rate", f"{p.aggregate * 8}bit", "burst", str(burst), "latency", "20ms",
        )  # fmt: skip
        self._start_nginx()

    def _config(self) -> str:
        p = self.profile
        rates = "\n".join(f"        {n} {p.rate_for(n)};" for n in range(1, MAX_REQUESTS + 1))
        if self.hurt == "decay":
            limit = ""
            rate_map = f"""    map $connections_writing $wan_rate {{
        default {p.rate_for(MAX_REQUESTS)};
{rates}
    }}"""
        else:
            limit = f"limit_conn wanconn {p.knee_requests}; limit_conn_status 503;"
            rate_map = f"""    map $connections_writing $wan_rate {{ default {p.per_connection}; }}
    limit_conn_zone $server_name zone=wanconn:1m;"""
        tmp = self.prefix / "tmp"
        user = "user nobody nogroup;" if os.geteuid() == 0 else ""
        return f"""{user}
daemon off;
worker_processes 1;
pid {self.prefix / "nginx.pid"};
error_log {self.prefix / "error.log"} warn;
events {{ worker_connections 1024; }}
http {{
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 60s;
    keepalive_requests 100000;
    client_body_temp_path {tmp};
    proxy_temp_path {tmp};
    fastcgi_temp_path {tmp};
    uwsgi_temp_path {tmp};
    scgi_temp_path {tmp};
{rate_map}
    log_format wan escape=json {_LOG_FORMAT};
    access_log {self.access_log} wan;
    server {{
        listen {NS_ADDR}:{PORT} reuseport;
        root {self.root_dir};
        limit_rate $wan_rate;
        {limit}
    }}
}}
"""

    def _start_nginx(self) -> None:
        (self.prefix / "tmp").mkdir(exist_ok=True)
        conf = self.prefix / "nginx.conf"
        conf.write_text(self._config())
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        log = open(self.prefix / "stdout.log", "wb")
        self.nginx = subprocess.Popen(
            ["ip", "netns", "exec", NETNS, nginx, "-p", f"{self.prefix}/", "-c", str(conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                urllib.request.urlopen(f"http://{NS_ADDR}:{PORT}/", timeout=1).close()
                return
            except urllib.error.HTTPError:  # 403/404 on / : it answers
                return
            except OSError:
                if self.nginx.poll() is not None or time.monotonic() > deadline:
                    logs = [self.prefix / "stdout.log", self.prefix / "error.log"]
                    text = "".join(f.read_text(errors="replace") for f in logs if f.exists())
                    raise RuntimeError(
                        f"nginx in the namespace did not start: {text[-3000:]}"
                    ) from None
                time.sleep(0.05)

    def close(self) -> None:
        """Stop nginx (the process this object started), remove the namespace and the
        veth pair, the nginx prefix; restore the SIGTERM handler. Idempotent."""
        if self.nginx is not None and self.nginx.poll() is None:
            os.killpg(self.nginx.pid, signal.SIGTERM)
            try:
                self.nginx.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.nginx.pid, signal.SIGKILL)
                self.nginx.wait(10)
        self.nginx = None
        remove_link()
        shutil.rmtree(self.prefix, ignore_errors=True)
        if self._old_term is not None:
            signal.signal(signal.SIGTERM, self._old_term)
            self._old_term = None


def _raise_interrupt(signum: int, frame: types.FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def link_exists() -> bool:
    """Whether the namespace or the host veth end is present (for a leftover check)."""
    names = _run("ip", "netns", "list", check=False).stdout.split()
    links = _run("ip", "link", "show", HOST_IF, check=False).returncode == 0
    return NETNS in names or links
