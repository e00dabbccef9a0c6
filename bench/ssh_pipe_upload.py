"""What an SFTP upload costs when the SSH transport is OpenSSH's ``ssh`` client (C, in
its own process) instead of paramiko (Python): a measurement for choosing the SFTP
driver's transport, not a Staccato code path.

Run by hand (never by the test suite)::

    .venv/bin/python -m bench.ssh_pipe_upload [--size-mib 1024] [--runs 3]
        [--request-kib 255] [--in-flight-mib 4]

One OpenSSH sshd on 127.0.0.1 (tests.servers.sshd, ``internal-sftp``). Each round,
interleaved, the same 1 GiB file is uploaded by:

* ``ssh-pipe``: ``ssh -s HOST sftp`` started by this process, which speaks SFTP v3
  (draft-ietf-secsh-filexfer-02) over the child's stdin/stdout itself: OPEN, pipelined
  WRITEs of ``--request-kib`` (OpenSSH's ``sftp-server`` takes up to 255 KiB a
  request: its ``limits@openssh.com`` max-write-length), ``fsync@openssh.com``,
  CLOSE. With ``--hash`` (the default) it also does what Staccato's default verify
  does around an upload: SHA-256 of every byte sent, then the server hashes the file
  (``openssl dgst -sha256`` over a second ``ssh``) and the digests are compared;
* ``paramiko``: the same requests through ``paramiko.SFTPClient`` (its 32 KiB writes
  pipelined, ``set_pipelined``), the transport Staccato's driver uses today, with the
  same hashing;
* ``rclone copyto`` (its default: MD5 while sending, ``md5sum`` on the server);
* OpenSSH ``sftp -b`` ``put`` (no hashing).

Printed per tool: wall seconds and CPU seconds of the tool's processes (this
process's own for the two Python ones, with their ``ssh`` children; the server's
side, sshd and ``sftp-server``, is the same work for every tool and not counted).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import statistics
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from bench.bench_s3 import _rclone as rclone_binary
from bench.common import MiB, random_file, rclone_sftp_remote
from tests.servers.sshd import SshdServer

_INIT, _VERSION, _OPEN, _CLOSE, _WRITE = 1, 2, 3, 4, 6
_STATUS, _HANDLE, _EXTENDED = 101, 102, 200
_WRITE_FLAGS = 0x02 | 0x08 | 0x10  # SSH_FXF_WRITE | CREAT | TRUNC
#: the cipher Staccato prefers (no separate MAC pass; AES-NI)
CIPHER = ["-c", "aes128-gcm@openssh.com"]


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


class _PipeSFTP:
    """SFTP v3 over an ``ssh -s HOST sftp`` child: requests written to its stdin,
    replies read from its stdout by one reader thread."""

    def __init__(self, argv: list[str]) -> None:
        self.child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.child.stdin is not None and self.child.stdout is not None
        self._out = self.child.stdin.fileno()
        self._in = self.child.stdout
        self._next_id = 0
        self._replies: dict[int, tuple[int, bytes]] = {}
        self._cond = threading.Condition()
        self._send(_INIT, struct.pack(">I", 3), with_id=False)
        kind, _ = self._read_packet()
        assert kind == _VERSION, kind
        self._reader = threading.Thread(target=self._read_replies, daemon=True)
        self._reader.start()

    def _send(
        self, kind: int, body: bytes | memoryview, *parts: bytes, with_id: bool = True
    ) -> int:
        request_id = self._next_id
        self._next_id += 1
        head = bytes([kind]) + (struct.pack(">I", request_id) if with_id else b"")
        length = len(head) + len(body) + sum(len(p) for p in parts)
        os.writev(self._out, [struct.pack(">I", length) + head, body, *parts])
        return request_id

    def _read_packet(self) -> tuple[int, bytes]:
        (length,) = struct.unpack(">I", self._in.read(4))
        data = self._in.read(length)
        return data[0], data[1:]

    def _read_replies(self) -> None:
        while True:
            try:
                kind, data = self._read_packet()
            except (struct.error, IndexError):
                return
            (request_id,) = struct.unpack(">I", data[:4])
            with self._cond:
                self._replies[request_id] = (kind, data[4:])
                self._cond.notify_all()

    def wait(self, request_id: int) -> tuple[int, bytes]:
        with self._cond:
            while request_id not in self._replies:
                self._cond.wait(30)
            return self._replies.pop(request_id)

    def outstanding(self) -> int:
        with self._cond:
            return self._next_id - len(self._replies)

    def call(self, kind: int, body: bytes) -> tuple[int, bytes]:
        return self.wait(self._send(kind, body))

    def close(self) -> None:
        assert self.child.stdin is not None
        self.child.stdin.close()
        self.child.wait(30)


def _ok(reply: tuple[int, bytes]) -> None:
    kind, data = reply
    assert kind == _STATUS and struct.unpack(">I", data[:4])[0] == 0, reply


def upload_over_ssh_pipe(
    sshd: SshdServer, source: Path, remote: str, request: int, in_flight: int, hash_: bool
) -> None:
    """Upload ``source`` to ``remote`` over ``ssh -s sftp`` (see the module doc)."""
    sftp = _PipeSFTP(["ssh", *sshd.ssh_options(), *CIPHER, "-s", sshd.host, "sftp"])
    kind, data = sftp.call(_OPEN, _string(remote.encode()) + struct.pack(">II", _WRITE_FLAGS, 0))
    assert kind == _HANDLE, (kind, data)
    handle = data[4 : 4 + struct.unpack(">I", data[:4])[0]]
    digest = hashlib.sha256()
    buffer = bytearray(16 * MiB)
    view = memoryview(buffer)
    pending: list[int] = []
    offset = 0
    with source.open("rb", buffering=0) as f:
        while True:
            got = f.readinto(buffer)
            if not got:
                break
            if hash_:
                digest.update(view[:got])
            for start in range(0, got, request):
                piece = view[start : min(got, start + request)]
                while len(pending) * request >= in_flight:
                    _ok(sftp.wait(pending.pop(0)))
                head = _string(handle) + struct.pack(">QI", offset + start, len(piece))
                pending.append(sftp._send(_WRITE, head, piece.tobytes()))
            # the buffer is reused: every write of it must have left this process
            for request_id in pending:
                _ok(sftp.wait(request_id))
            pending.clear()
            offset += got
    _ok(sftp.call(_EXTENDED, _string(b"fsync@openssh.com") + _string(handle)))
    _ok(sftp.call(_CLOSE, _string(handle)))
    sftp.close()
    if hash_:
        _check_remote_sha256(sshd, remote, digest.hexdigest())


def _check_remote_sha256(sshd: SshdServer, remote: str, expected: str) -> None:
    answer = subprocess.run(
        ["ssh", *sshd.ssh_options(), sshd.host, f"openssl dgst -sha256 -r {remote}"],
        check=True,
        capture_output=True,
        text=True,
    )
    assert answer.stdout.split()[0] == expected, (answer.stdout, expected)


def upload_over_paramiko(sshd: SshdServer, source: Path, remote: str, hash_: bool) -> None:
    """Upload ``source`` with paramiko's SFTPClient, pipelined 32 KiB writes."""
    import paramiko

    client = paramiko.SSHClient()
    client.load_host_keys(str(sshd.known_hosts_path))
    client.connect(
        sshd.host,
        port=sshd.port,
        username=sshd.user,
        key_filename=str(sshd.client_key_path),
        look_for_keys=False,
        allow_agent=False,
        disabled_algorithms={"cipher": ["aes128-ctr", "aes192-ctr", "aes256-ctr"]},
    )
    sftp = client.open_sftp()
    digest = hashlib.sha256()
    with sftp.open(remote, "wb") as out, source.open("rb", buffering=0) as f:
        out.set_pipelined(True)
        while True:
            data = f.read(16 * MiB)
            if not data:
                break
            if hash_:
                digest.update(data)
            out.write(data)
        out.flush()
    client.close()
    if hash_:
        _check_remote_sha256(sshd, remote, digest.hexdigest())


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--request-kib", type=int, default=255)
    parser.add_argument("--in-flight-mib", type=int, default=4)
    parser.add_argument("--no-hash", action="store_true", help="no SHA-256 on either side")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="staccato-ssh-pipe-", dir="/tmp"))
    source = random_file(work / "src.bin", args.size_mib * MiB)
    remote = work / "out.bin"
    sshd = SshdServer(work / "sshd")
    sshd.start()
    rclone = rclone_binary()
    (work / "rclone.conf").write_text("")
    rclone_env = {
        **os.environ,
        "RCLONE_CONFIG": str(work / "rclone.conf"),
        **rclone_sftp_remote("SFTP", sshd),
    }
    hash_ = not args.no_hash
    tools = {
        "ssh-pipe": lambda: upload_over_ssh_pipe(
            sshd, source, str(remote), args.request_kib * 1024, args.in_flight_mib * MiB, hash_
        ),
        "paramiko": lambda: upload_over_paramiko(sshd, source, str(remote), hash_),
        "rclone": lambda: subprocess.run(
            [rclone, "copyto", str(source), f"sftp:{remote}"], check=True, env=rclone_env
        ),
        "sftp -b": lambda: subprocess.run(
            ["sftp", *sshd.ssh_options(), *CIPHER, "-b", "-", sshd.host],
            input=f"put {source} {remote}\n".encode(),
            check=True,
            stdout=subprocess.DEVNULL,
        ),
    }
    results: dict[str, list[tuple[float, float, str]]] = {name: [] for name in tools}
    try:
        names = list(tools)
        for index in range(args.runs + 1):  # the first round warms up
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                remote.unlink(missing_ok=True)
                os.sync()
                cpu_before = _self_cpu() + _children_cpu()
                start = time.perf_counter()
                tools[name]()
                wall = time.perf_counter() - start
                cpu = _self_cpu() + _children_cpu() - cpu_before
                assert remote.stat().st_size == source.stat().st_size
                line = (
                    f"{name:9} wall {wall:5.2f} s  cpu {cpu:5.2f} s  load {os.getloadavg()[0]:.1f}"
                )
                print(line, flush=True)
                if index:
                    results[name].append((wall, cpu, line))
        for name, rows in results.items():
            print(
                f"median {name:9} wall {statistics.median(r[0] for r in rows):5.2f} s"
                f"  cpu {statistics.median(r[1] for r in rows):5.2f} s"
            )
    finally:
        sshd.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
