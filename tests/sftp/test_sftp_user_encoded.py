"""An SFTP URL's user name is percent-decoded, as RFC 3986 user info is (a newcomer
tester's report): ``sftp://us%40er@host/path`` logs in as ``us@er``. Before, the
worker logged in as the literal ``us%40er`` (and ``r%6Fot`` as ``r%6Fot``, not
``root``). The canonical URL encodes the user again where needed, so ``r%6Fot@`` and
``root@`` name one destination (one transfer id); a password stays refused and never
shown."""

from __future__ import annotations

import json
from pathlib import Path

from staccato.ids import transfer_id
from staccato.urls import parse_url
from tests.helpers import WorkerProcess, run_cli, sha256_file, write_random
from tests.servers.sshd import LOCALHOST, SshdServer


def _encoded(text: str) -> str:
    """Every byte of ``text`` percent-encoded (``root`` -> ``%72%6F%6F%74``)."""
    return "".join(f"%{byte:02X}" for byte in text.encode())


def test_a_percent_encoded_user_logs_in_as_the_decoded_name(
    temporal_server, sftp_worker: WorkerProcess, sshd_server: SshdServer, data_dir: Path
) -> None:
    source = data_dir / "src.bin"
    digest = write_random(source, 3 * 1024 * 1024 + 7, seed=61)
    destination = data_dir / "dst.bin"
    encoded = f"sftp://{_encoded(sshd_server.user)}@{LOCALHOST}:{sshd_server.port}{destination}"
    plain = sshd_server.url(str(destination))
    args = {"address": temporal_server.address, "task_queue": sftp_worker.task_queue}
    copied = run_cli("cp", "-q", "--chunk-size", "1MiB", str(source), encoded, **args)
    print(copied.stderr)
    assert copied.returncode == 0, copied.stderr
    assert sha256_file(destination) == digest
    # one object, one canonical form: the same transfer as the plain URL's
    assert parse_url(encoded).user == sshd_server.user
    assert parse_url(encoded).canonical == parse_url(plain).canonical
    shown = json.loads(run_cli("status", "--json", transfer_id(encoded), **args).stdout)
    assert shown["destination"] == parse_url(plain).canonical, shown
    assert shown["state"] == "completed", shown


def test_an_encoded_at_sign_is_part_of_the_user_name(
    temporal_server, sftp_worker: WorkerProcess, sshd_server: SshdServer, data_dir: Path
) -> None:
    """``us%40er`` is the user ``us@er`` (no such user on the server: the error names
    it as the worker tried it), and the canonical URL keeps it encoded."""
    source = data_dir / "src.bin"
    write_random(source, 1024, seed=62)
    destination = data_dir / "dst.bin"
    url = f"sftp://us%40er@{LOCALHOST}:{sshd_server.port}{destination}"
    args = {"address": temporal_server.address, "task_queue": sftp_worker.task_queue}
    failed = run_cli("cp", "-q", str(source), url, **args)
    print(failed.stderr)
    assert failed.returncode == 1, failed.stderr
    assert f"authentication failed for us@er@{LOCALHOST}:{sshd_server.port}" in failed.stderr
    assert not destination.exists()
    assert parse_url(url).user == "us@er"
    assert parse_url(url).canonical == url


def test_an_encoded_password_is_refused_and_never_shown(
    temporal_server, sftp_worker: WorkerProcess, data_dir: Path
) -> None:
    destination = data_dir / "dst.bin"
    result = run_cli(
        "cp",
        "sftp://r%6Fot:hun%40ter2@127.0.0.1/etc/hostname",
        str(destination),
        address=temporal_server.address,
        task_queue=sftp_worker.task_queue,
    )
    assert result.returncode == 2, result
    assert "refusing a password" in result.stderr
    out = result.stderr + result.stdout
    assert "hun%40ter2" not in out and "hun@ter2" not in out and "hunter2" not in out
    assert not destination.exists()
