"""Benchmark: where the time of a dataset's small file goes on an SFTP destination.

Run by hand (never by the test suite)::

    .venv/bin/python -m bench.sftp_small_requests [--files 300] [--size-kib 32]

Starts an OpenSSH sshd on 127.0.0.1 (tests.servers.sshd, ``internal-sftp``), writes
``--files`` random files of ``--size-kib`` KiB into a local directory and copies each
with :func:`staccato.activities.object_copy.copy_object` (default options: ``--verify
checksum``; the listed size given, as ``copy_batch`` does) inside one
:func:`staccato.endpoints.base.directory_memo` block, one thread, in this process: no
Temporal, only the per-file work of a batch. Counts the SFTP requests sent, by kind
(``StaccatoSFTP._async_request``), and the SSH exec channels opened (server-side
hashing), and prints ms per file and files/s. The first file (connection set-up) is
not timed.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from paramiko import sftp as paramiko_sftp  # noqa: E402

from staccato.activities.object_copy import copy_object  # noqa: E402
from staccato.endpoints.base import directory_memo  # noqa: E402
from staccato.endpoints.sftp import remote_hash  # noqa: E402
from staccato.endpoints.sftp.pool import POOL  # noqa: E402
from staccato.endpoints.sftp.protocol import StaccatoSFTP  # noqa: E402
from staccato.models import TransferOptions  # noqa: E402
from tests.servers.sshd import SshdServer  # noqa: E402

_NAMES = {
    v: k[4:] for k, v in vars(paramiko_sftp).items() if k.startswith("CMD_") and isinstance(v, int)
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--size-kib", type=int, default=32)
    args = parser.parse_args()
    counts: collections.Counter[str] = collections.Counter()
    trace: list[str] | None = [] if os.environ.get("TRACE") else None
    original = StaccatoSFTP._async_request

    def counting(self, fileobj, t, *rest):  # type: ignore[no-untyped-def]
        kind = _NAMES.get(t, str(t))
        if kind == "EXTENDED" and rest and isinstance(rest[0], str):
            kind = rest[0]
        counts[kind] += 1
        if trace is not None:
            arg = (
                rest[1]
                if kind.endswith("openssh.com") and len(rest) > 1
                else (rest[0] if rest else "")
            )
            trace.append(f"{kind} {arg!r:.90}")
        return original(self, fileobj, t, *rest)

    StaccatoSFTP._async_request = counting  # type: ignore[method-assign]
    exec_original = remote_hash._Exec.__init__

    def counting_exec(self, *a, **k):  # type: ignore[no-untyped-def]
        counts["(exec channel)"] += 1
        exec_original(self, *a, **k)

    remote_hash._Exec.__init__ = counting_exec  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory(prefix="sftp-small-") as tmp:
        server = SshdServer(Path(tmp) / "sshd")
        server.start()
        try:
            os.environ.update(
                STACCATO_SSH_CONFIG="none",
                STACCATO_SSH_IDENTITY=str(server.client_key_path),
                STACCATO_SSH_KNOWN_HOSTS=str(server.known_hosts_path),
                STACCATO_SFTP_LOCK_DIR=str(Path(tmp) / "locks"),
                SSH_AUTH_SOCK="",
            )
            src = Path(tmp) / "src"
            src.mkdir()
            dst = Path(tmp) / "dst" / "d0"
            dst.mkdir(parents=True)
            size = args.size_kib * 1024
            for i in range(args.files + 1):
                (src / f"f{i:05d}").write_bytes(os.urandom(size))
            options = TransferOptions()
            with directory_memo():
                copy_object(
                    (src / "f00000").as_uri(),
                    server.url(str(dst / "f00000")),
                    options,
                    "k0",
                    lambda: None,
                    size,
                )
                counts.clear()
                started = time.perf_counter()
                for i in range(1, args.files + 1):
                    copy_object(
                        (src / f"f{i:05d}").as_uri(),
                        server.url(str(dst / f"f{i:05d}")),
                        options,
                        f"k{i}",
                        lambda: None,
                        size,
                    )
                elapsed = time.perf_counter() - started
            n = args.files
            if trace is not None:
                print("\n".join(trace[-len(trace) // n :]))
            print(
                f"{n} files of {args.size_kib} KiB: {elapsed:.2f} s, "
                f"{1000 * elapsed / n:.1f} ms/file, {n / elapsed:.1f} files/s"
            )
            total = sum(v for k, v in counts.items() if not k.startswith("("))
            print(f"SFTP requests per file: {total / n:.1f}")
            for kind, count in counts.most_common():
                print(f"  {kind:28s} {count / n:5.2f}")
        finally:
            POOL.close_all()
            server.stop()


if __name__ == "__main__":
    main()
