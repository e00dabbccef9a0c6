"""A loopback TCP proxy (a :class:`~tests.servers.pacing_proxy.PacingProxy`) that
holds its responses once a number of bytes has passed, until the test releases them:
a source that keeps a transfer open, mid-body, for exactly as long as the test acts
(kills a process, stops a worker), however loaded the machine is. Polling a
transfer's progress for a window ("at 30 %") misses it when the copy outruns the poll.

    with HoldingProxy(nginx.port, hold_after=20 * MiB) as proxy:
        ... submit proxy.url("file.bin") ...
        proxy.wait_held(60)           # every stream that asked for more is now stuck
        owners = proxy.held_ports()   # the client ports of the held connections
        ... act ...
        proxy.release()

With ``hold_method="HEAD"`` only the responses to HEAD requests (a driver's stat) are
held once ``hold_after`` bytes have passed; the others go on: ``hold_after`` = the
object's size holds the stat a transfer makes after its streams (publish's re-check of
the source), not the one before them.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path

from tests.servers.pacing_proxy import BLOCK, PacingProxy
from tests.servers.temporal_server import LOCALHOST


class HoldingProxy(PacingProxy):
    """Relays to ``upstream_port`` (paced as :class:`PacingProxy`); once
    ``hold_after`` response bytes (all connections together) have been relayed, each
    response waits, unsent, until :meth:`release`.

    Args:
        upstream_port: the server's port (nginx).
        hold_after: response bytes (headers included) relayed before the hold.
        rate_bytes_per_s: the cap on responses, bytes per second (default: none to
            speak of).
        hold_method: hold only the responses to requests of this method (e.g.
            ``"HEAD"``); None: every response.
    """

    def __init__(
        self,
        upstream_port: int,
        *,
        hold_after: int,
        rate_bytes_per_s: float = 10e9,
        hold_method: str | None = None,
    ) -> None:
        super().__init__(upstream_port, rate_bytes_per_s)
        self.hold_after = hold_after
        self.hold_method = hold_method.encode() if hold_method else None
        #: response bytes relayed so far
        self.relayed = 0
        self._held: dict[int, int] = {}  # client port -> bytes relayed to it
        self._any_held = threading.Event()
        self._release: asyncio.Event | None = None

    def wait_held(self, timeout_s: float) -> None:
        """Wait until a response is held.

        Raises:
            TimeoutError: none was within ``timeout_s`` seconds.
        """
        if not self._any_held.wait(timeout_s):
            raise TimeoutError(
                f"no response held within {timeout_s} s ({self.relayed} bytes relayed)"
            )

    def held_ports(self) -> set[int]:
        """The client-side ports of the connections whose responses are held now."""
        return set(self._held)

    def release(self) -> None:
        """Send what is held and stop holding (for good)."""
        self.hold_after = 1 << 62
        loop, release = self._loop, self._release
        if loop is not None and release is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # its loop closed meanwhile
                loop.call_soon_threadsafe(release.set)

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self._release is None:
            self._release = asyncio.Event()
        release = self._release
        client_port = client_w.get_extra_info("peername")[1]
        # the method of the request last sent on this connection (the client waits for
        # each response before it sends the next request: no pipelining)
        method: list[bytes] = [b""]
        try:
            upstream_r, upstream_w = await asyncio.open_connection(LOCALHOST, self.upstream_port)
        except OSError:
            client_w.close()
            return

        async def pump(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, response: bool
        ) -> None:
            try:
                while data := await reader.read(BLOCK):
                    if not response:
                        word = data.split(b" ", 1)[0]
                        if word.isalpha() and word.isupper():  # a request line starts
                            method[0] = word
                    if response:
                        room = self.hold_after - self.relayed
                        held = self.hold_method is None or method[0] == self.hold_method
                        if held and room < len(data) and not release.is_set():
                            head, data = data[: max(room, 0)], data[max(room, 0) :]
                            if head:
                                self.relayed += len(head)
                                writer.write(head)
                                await writer.drain()
                            self._held[client_port] = self.relayed
                            self._any_held.set()
                            try:
                                await release.wait()
                            finally:
                                self._held.pop(client_port, None)
                        await self._take(len(data))
                        self.relayed += len(data)
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    writer.close()

        await asyncio.gather(
            pump(client_r, upstream_w, response=False), pump(upstream_r, client_w, response=True)
        )


def tcp_socket_owners(ports: set[int], pids: list[int]) -> dict[int, int]:
    """Which of ``pids`` holds the loopback TCP socket bound to each of ``ports`` (its
    local port): port -> pid, for the ports found (Linux /proc/net/tcp and the
    processes' open file descriptors)."""
    inodes: dict[str, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                port = int(fields[1].rsplit(":", 1)[1], 16)
                if port in ports:
                    inodes[f"socket:[{fields[9]}]"] = port
    owners: dict[int, int] = {}
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, PermissionError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(FileNotFoundError):
                    port = inodes.get(str(fd.readlink()))
                    if port is not None:
                        owners[port] = pid
    return owners
