"""A misbehaving SFTP server for tests: OpenSSH's own ``sftp-server`` behind a relay
that sshd runs as the session's command (``ForceCommand python sftp_proxy.py ...``).

The relay reads SFTP packets (draft-ietf-secsh-filexfer-02 §3: uint32 length, byte
type, uint32 request id, ...) between the client (stdin/stdout) and the real server
(a child process) and, as asked:

* ``--max-in-flight N``: forwards at most N requests that the server has not answered
  yet and *drops* the others (never answered), like a server with a small request cap
  of its own; each drop is counted in ``--log``;
* ``--hide-limits``: removes ``limits@openssh.com`` from the server's VERSION packet, so
  the client cannot learn the server's limits;
* ``--remove-temp-trigger FILE``: when FILE exists and holds a number N, the first
  STAT/LSTAT of a ``*.staccato-part`` file whose journal beside it holds at least N
  records (every chunk durable: the next step is publish) removes that temp file
  first, as a person cleaning up by hand would; FILE is removed then (once only);
* ``--pace-fresh BYTES_PER_S``: delays each WRITE to a handle opened on a
  ``*.staccato-fresh`` file (the fresh copy an SFTP publish writes after an earlier
  worker life) so those writes go at about BYTES_PER_S: a slow server's fresh copy.

Runs with the Python of the test suite; stdlib only.
"""

from __future__ import annotations

import argparse
import os
import struct
import subprocess
import sys
import threading
import time

SFTP_SERVER = "/usr/lib/openssh/sftp-server"
FXP_INIT, FXP_VERSION, FXP_OPEN, FXP_WRITE, FXP_LSTAT, FXP_STAT = 1, 2, 3, 6, 7, 17
FXP_HANDLE = 102
TEMP_SUFFIX, JOURNAL_SUFFIX = ".staccato-part", ".staccato-journal"
FRESH_SUFFIX = ".staccato-fresh"


def _read_exact(fd: int, n: int) -> bytes | None:
    parts = []
    while n:
        data = os.read(fd, n)
        if not data:
            return None
        parts.append(data)
        n -= len(data)
    return b"".join(parts)


def _read_packet(fd: int) -> bytes | None:
    header = _read_exact(fd, 4)
    if header is None:
        return None
    (length,) = struct.unpack(">I", header)
    return _read_exact(fd, length)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _packet(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def _without_limits(body: bytes) -> bytes:
    """A VERSION packet body without the ``limits@openssh.com`` extension."""
    out = body[:5]
    at = 5
    while at < len(body):
        (name_length,) = struct.unpack_from(">I", body, at)
        name = body[at + 4 : at + 4 + name_length]
        (data_length,) = struct.unpack_from(">I", body, at + 4 + name_length)
        end = at + 4 + name_length + 4 + data_length
        if name != b"limits@openssh.com":
            out += body[at:end]
        at = end
    return out


class Relay:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.lock = threading.Lock()
        self.in_flight: set[int] = set()
        self.dropped = 0
        #: request ids of OPENs of fresh copies, and the handles the server gave them
        self.fresh_opens: set[int] = set()
        self.fresh_handles: set[bytes] = set()
        self.server = subprocess.Popen([SFTP_SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def log(self, line: str) -> None:
        if self.args.log:
            with open(self.args.log, "a") as handle:
                handle.write(line + "\n")

    def _maybe_remove_temp(self, body: bytes) -> None:
        trigger = self.args.remove_temp_trigger
        if not trigger or not os.path.exists(trigger):
            return
        (path_length,) = struct.unpack_from(">I", body, 5)
        path = body[9 : 9 + path_length].decode("utf-8", "replace")
        if not path.endswith(TEMP_SUFFIX):
            return
        try:
            with open(trigger) as handle:
                records = int(handle.read().strip() or "0")
            with open(path[: -len(TEMP_SUFFIX)] + JOURNAL_SUFFIX, "rb") as handle:
                journaled = handle.read().count(b"\n")
        except (OSError, ValueError):
            return
        if journaled >= records:
            os.unlink(path)
            os.unlink(trigger)
            self.log(f"removed {path}")

    def _pace_fresh(self, body: bytes, request_id: int) -> None:
        """Note an OPEN of a fresh copy; hold a WRITE to one for its bytes' time at
        ``--pace-fresh`` bytes a second."""
        if body[0] not in (FXP_OPEN, FXP_WRITE):
            return
        (length,) = struct.unpack_from(">I", body, 5)
        name = body[9 : 9 + length]
        if body[0] == FXP_OPEN and name.endswith(FRESH_SUFFIX.encode()):
            with self.lock:
                self.fresh_opens.add(request_id)
        elif body[0] == FXP_WRITE and name in self.fresh_handles:
            (data_length,) = struct.unpack_from(">I", body, 9 + length + 8)
            time.sleep(data_length / self.args.pace_fresh)

    def client_to_server(self) -> None:
        server_in = self.server.stdin
        assert server_in is not None
        while True:
            body = _read_packet(0)
            if body is None:
                break
            if body[0] != FXP_INIT:
                (request_id,) = struct.unpack_from(">I", body, 1)
                if body[0] in (FXP_STAT, FXP_LSTAT):
                    self._maybe_remove_temp(body)
                if self.args.pace_fresh:
                    self._pace_fresh(body, request_id)
                with self.lock:
                    cap = self.args.max_in_flight
                    if cap and len(self.in_flight) >= cap:
                        self.dropped += 1
                        self.log(f"dropped request {request_id} (type {body[0]})")
                        continue
                    self.in_flight.add(request_id)
            server_in.write(_packet(body))
            server_in.flush()
        server_in.close()

    def server_to_client(self) -> None:
        server_out = self.server.stdout
        assert server_out is not None
        fd = server_out.fileno()
        while True:
            body = _read_packet(fd)
            if body is None:
                break
            if body[0] == FXP_VERSION:
                if self.args.hide_limits:
                    body = _without_limits(body)
            else:
                (request_id,) = struct.unpack_from(">I", body, 1)
                with self.lock:
                    self.in_flight.discard(request_id)
                    if request_id in self.fresh_opens and body[0] == FXP_HANDLE:
                        self.fresh_opens.discard(request_id)
                        (length,) = struct.unpack_from(">I", body, 5)
                        self.fresh_handles.add(body[9 : 9 + length])
            _write_all(1, _packet(body))

    def run(self) -> None:
        upstream = threading.Thread(target=self.client_to_server, daemon=True)
        upstream.start()
        self.server_to_client()
        self.server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-in-flight", type=int, default=0)
    parser.add_argument("--hide-limits", action="store_true")
    parser.add_argument("--remove-temp-trigger")
    parser.add_argument("--pace-fresh", type=float, default=0.0)
    parser.add_argument("--log")
    Relay(parser.parse_args()).run()
    sys.exit(0)


if __name__ == "__main__":
    main()
