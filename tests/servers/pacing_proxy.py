"""A loopback TCP proxy that caps the bytes it relays from its upstream, summed over
all connections (a slow origin however many streams read it: nginx's ``limit_rate``
caps each connection alone).

It runs its own asyncio loop in a daemon thread, so tests on any event loop (or none)
can use it. Requests pass through unpaced; responses are paced by one shared token
bucket (a virtual clock: each block of ``n`` bytes reserves ``n / rate`` seconds of
it, and waits until its reservation is at most ``burst_s`` ahead of now).

    with PacingProxy(nginx.port, rate_bytes_per_s=20_000_000) as proxy:
        url = proxy.url("file.bin")  # http://127.0.0.1:PORT/file.bin, through nginx
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

from tests.servers.temporal_server import LOCALHOST

#: bytes relayed per read of the upstream
BLOCK = 64 * 1024


class PacingProxy:
    """Relays ``127.0.0.1:port`` -> ``127.0.0.1:upstream_port``, responses capped at
    ``rate_bytes_per_s`` bytes per second over all connections together.

    Args:
        upstream_port: the server's port (nginx).
        rate_bytes_per_s: the cap, bytes per second.
        burst_s: how far ahead of real time the shared clock may run (seconds): a
            burst of at most ``rate * burst_s`` bytes.
    """

    def __init__(self, upstream_port: int, rate_bytes_per_s: float, burst_s: float = 0.05):
        self.upstream_port = upstream_port
        self.rate = float(rate_bytes_per_s)
        self.burst_s = burst_s
        self.port = 0
        self._next = 0.0  # the shared clock: when the bytes reserved so far are due
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def url(self, relative_path: str) -> str:
        """``http://127.0.0.1:PORT/relative_path``."""
        return f"http://{LOCALHOST}:{self.port}/{relative_path.lstrip('/')}"

    def start(self, timeout_s: float = 10.0) -> PacingProxy:
        """Listen on a free port (``self.port``) and relay until :meth:`stop`.

        Raises:
            RuntimeError: the proxy did not listen within ``timeout_s``.
        """
        self._thread = threading.Thread(target=self._run, name="pacing-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s) or not self.port:
            raise RuntimeError(f"pacing proxy did not listen within {timeout_s} s")
        return self

    def stop(self) -> None:
        """Close the listener and every connection; join the thread (at most 5 s)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5.0)

    def __enter__(self) -> PacingProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the loop -----------------------------------------------------------------------

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            self._server = loop.run_until_complete(asyncio.start_server(self._relay, LOCALHOST, 0))
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()
            loop.run_forever()
        finally:
            self._ready.set()
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks(loop):
                task.cancel()
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    async def _take(self, n: int) -> None:
        """Wait until ``n`` more bytes fit under the cap (shared by all connections)."""
        now = time.monotonic()
        start = max(now, self._next)
        self._next = start + n / self.rate
        delay = self._next - now - self.burst_s
        if delay > 0:
            await asyncio.sleep(delay)

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            upstream_r, upstream_w = await asyncio.open_connection(LOCALHOST, self.upstream_port)
        except OSError:
            client_w.close()
            return

        async def pump(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, paced: bool
        ) -> None:
            try:
                while data := await reader.read(BLOCK):
                    if paced:
                        await self._take(len(data))
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    writer.close()

        await asyncio.gather(
            pump(client_r, upstream_w, paced=False), pump(upstream_r, client_w, paced=True)
        )
