"""What the end line and ``status`` say an SFTP copy's verify did (tester75: a 1 GiB
copy never paused said ``read back before publish (the copy was paused or
resumed)``): every SFTP copy's temp file is checked before publish, the server
hashing it (docs/sftp.md, "Verifying an upload"), paused or not. The resumed case:
``test_sftp_pause_keeps_chunk.py``."""

from __future__ import annotations

import json
from pathlib import Path

from staccato.ids import transfer_id
from tests.helpers import MiB, WorkerProcess, run_cli, sha256_file, write_random
from tests.servers.sshd import SshdServer


def test_an_uninterrupted_sftp_copy_does_not_say_it_was_paused(
    temporal_server, sftp_worker: WorkerProcess, sshd_server: SshdServer, data_dir: Path
) -> None:
    source = data_dir / "src.bin"
    digest = write_random(source, 3 * MiB + 5, seed=75)  # > 1 MiB: hashed on the server
    destination = data_dir / "dst.bin"
    url = sshd_server.url(str(destination))
    args = {"address": temporal_server.address, "task_queue": sftp_worker.task_queue}
    copied = run_cli("cp", "--chunk-size", "1MiB", str(source), url, **args)
    print(copied.stderr)
    assert copied.returncode == 0, copied.stderr
    assert sha256_file(destination) == digest
    expected = (
        "verified: checksum: temp file checked against the source's checksums before "
        "publish (hashed on the server, or read back over SFTP), 0 segments copied again"
    )
    assert expected in copied.stderr, copied.stderr
    assert "paused" not in copied.stderr and "resumed" not in copied.stderr, copied.stderr
    status = run_cli("status", transfer_id(url), **args)
    assert "hashed on the server" in status.stdout, status.stdout
    assert "paused or resumed" not in status.stdout, status.stdout
    shown = json.loads(run_cli("status", "--json", transfer_id(url), **args).stdout)
    assert shown["verify_level"] == "checksum" and shown["segments_copied_again"] == 0, shown
