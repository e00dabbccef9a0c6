"""Faults of an sftp destination or source, against real OpenSSH servers (some behind a
misbehaving relay, see ``sftp_proxy.py``):

* publish never takes an older same-size file for its own: a temp file removed by hand
  before publish (an old destination of the same size present) is copied again, at the
  driver and through a worker; a publish retried after its rename proves the file is
  its own by the marker it recorded;
* a server that answers only 32 requests in flight, drops the rest and hides
  ``limits@openssh.com``: reads and writes detect the stall, lower the requests in
  flight and finish;
* a login that prints before the SFTP protocol fails at once, naming the cause and fix;
* a 255-byte destination name (temp names stay within NAME_MAX);
* a ``ProxyCommand`` holding a secret never appears in an error message or log line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from staccato import checksums
from staccato.client import StaccatoClient
from staccato.endpoints import get_driver
from staccato.endpoints.sftp import driver as sftp_driver
from staccato.endpoints.sftp.connection import ConnectionLost
from staccato.endpoints.sftp.pool import POOL
from staccato.errors import PermanentError, WriteSessionLost
from staccato.models import TransferOptions, VerifyMode, WriteSession
from staccato.urls import parse_url
from tests.helpers import MiB, WorkerProcess, leftovers, run_cli, sha256_file, write_random
from tests.servers.sshd import SshdServer
from tests.sftp.conftest import known_hosts_lines

CHUNK = 256 * 1024


@pytest.fixture
def driver_on(
    monkeypatch: pytest.MonkeyPatch, sshd_server: SshdServer, tmp_path: Path
) -> Iterator[None]:
    """The driver in this process, trusting every test server, with a short stall bound."""
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    monkeypatch.setenv("STACCATO_SSH_CONFIG", "none")
    monkeypatch.setenv("STACCATO_SSH_IDENTITY", str(sshd_server.client_key_path))
    monkeypatch.setenv("STACCATO_SSH_KNOWN_HOSTS", str(known_hosts))
    monkeypatch.setenv("STACCATO_SFTP_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setenv("STACCATO_SFTP_TRUST_NEW_HOSTS", "1")
    monkeypatch.setenv("STACCATO_SFTP_STALL_S", "0.5")
    monkeypatch.setenv("STACCATO_SFTP_IO_TIMEOUT_S", "10")
    monkeypatch.setenv("SSH_AUTH_SOCK", "")
    POOL.close_all()
    yield
    POOL.close_all()


@pytest.fixture(scope="module")
def fault_worker(
    temporal_server,
    sshd_server: SshdServer,
    sftp_capped: SshdServer,
    sftp_hand_removed: SshdServer,
    sftp_shell_prints: SshdServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerProcess]:
    """A worker configured by STACCATO_* settings for the faulty servers, with a 1 s
    stall bound and a 10 s I/O timeout."""
    work = tmp_path_factory.mktemp("fault-worker")
    known_hosts = work / "known_hosts"
    known_hosts.write_text(
        known_hosts_lines(sshd_server, sftp_capped, sftp_hand_removed, sftp_shell_prints)
    )
    (work / "home").mkdir()
    worker = WorkerProcess(
        temporal_server.address,
        env={
            "HOME": str(work / "home"),
            "SSH_AUTH_SOCK": "",
            "STACCATO_SSH_CONFIG": "none",
            "STACCATO_SSH_IDENTITY": str(sshd_server.client_key_path),
            "STACCATO_SSH_KNOWN_HOSTS": str(known_hosts),
            "STACCATO_SFTP_LOCK_DIR": str(work / "locks"),
            "STACCATO_SFTP_STALL_S": "1",
            "STACCATO_SFTP_IO_TIMEOUT_S": "10",
        },
        log_dir=work,
    )
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


@pytest.fixture
async def fault_client(temporal_server, fault_worker: WorkerProcess) -> StaccatoClient:
    client = await StaccatoClient.connect(target_host=temporal_server.address, namespace="default")
    client.task_queue = fault_worker.task_queue
    return client


def _write_all_chunks(driver, session: WriteSession, data: bytes) -> None:
    with driver.open_writer(session) as writer:
        for index in range(0, (len(data) + CHUNK - 1) // CHUNK):
            piece = memoryview(data)[index * CHUNK : (index + 1) * CHUNK]
            writer.write_chunk(index, piece, checksums.checksum_bytes("crc32c", piece))


def _old_file(path: Path, size: int, age_s: int = 3600) -> bytes:
    old = b"O" * size
    path.write_bytes(old)
    past = time.time() - age_s
    os.utime(path, (past, past))
    return old


# -- publish proves the destination is its own ---------------------------------------


def test_temp_removed_before_publish(driver_on, sshd_server: SshdServer, data_dir: Path) -> None:
    """Temp file removed by hand, an older same-size destination present: publish
    reports the session lost and the old file stays as it was."""
    driver = get_driver("sftp")
    destination = data_dir / "dst.bin"
    new = os.urandom(3 * CHUNK + 7)
    old = _old_file(destination, len(new))
    session = driver.open_session(
        parse_url(sshd_server.url(str(destination))), len(new), CHUNK, "t-removed"
    )
    _write_all_chunks(driver, session, new)
    os.unlink(session.data["temp"])
    with pytest.raises(WriteSessionLost, match="nothing proves"):
        driver.publish(session)
    assert destination.read_bytes() == old
    driver.abort(session)
    assert leftovers(data_dir) == []


@pytest.mark.parametrize("same_second", [False, True])
def test_publish_retried_after_rename(
    driver_on, monkeypatch, sshd_server: SshdServer, data_dir: Path, same_second: bool
) -> None:
    """The connection drops right after the rename (before the cleanup): the retried
    publish proves the destination is its own by the marker it recorded; an older
    same-size file put back under the name (also one with the mtime the temp file had)
    is not taken for it."""
    driver = get_driver("sftp")
    destination = data_dir / "dst.bin"
    new = os.urandom(2 * CHUNK + 3)
    url = parse_url(sshd_server.url(str(destination)))

    def publish_dropping_after_rename(session: WriteSession) -> None:
        real = sftp_driver.remove_if_exists

        def drop(sftp, path: str) -> None:
            if path == session.data["journal"]:
                raise ConnectionLost("connection dropped (injected after the rename)")
            real(sftp, path)

        with monkeypatch.context() as patch:
            patch.setattr(sftp_driver, "remove_if_exists", drop)
            with pytest.raises(ConnectionLost):
                driver.publish(session)

    for attempt, expect_ours in ((1, True), (2, False)):
        old = _old_file(destination, len(new))
        session = driver.open_session(url, len(new), CHUNK, f"t-retry-{attempt}-{same_second}")
        _write_all_chunks(driver, session, new)
        temp_mtime = os.stat(session.data["temp"]).st_mtime
        if same_second:  # the old file has the very mtime (seconds) of the temp file
            os.utime(destination, (temp_mtime, temp_mtime))
        publish_dropping_after_rename(session)
        assert destination.read_bytes() == new
        if expect_ours:
            driver.publish(session)  # proved: completes
            assert destination.read_bytes() == new
        else:
            # someone puts an old same-size file back under the name before the retry
            old_mtime = temp_mtime if same_second else time.time() - 3600
            destination.write_bytes(old)
            os.utime(destination, (old_mtime, old_mtime))
            with pytest.raises(WriteSessionLost):
                driver.publish(session)
            assert destination.read_bytes() == old
            driver.abort(session)
        assert leftovers(data_dir) == []


async def test_temp_removed_before_publish_transfer(
    fault_client: StaccatoClient, sftp_hand_removed: SshdServer, data_dir: Path
) -> None:
    """Through a worker: the relay removes the temp file once every chunk is journaled
    (just before publish); an older same-size destination is present. The transfer
    never completes with the old bytes (here: the workflow copies again)."""
    size = 4 * MiB + 5
    source = data_dir / "src.bin"
    digest = write_random(source, size, seed=31)
    destination = data_dir / "dst.bin"
    old = _old_file(destination, size)
    trigger = sftp_hand_removed.work_dir / "remove-temp-at"
    trigger.write_text(str((size + MiB - 1) // MiB))
    options = TransferOptions(chunk_size=1 * MiB, streams=2, verify=VerifyMode.size)
    transfer = await fault_client.submit(
        str(source), sftp_hand_removed.url(str(destination)), options
    )
    try:
        result = await asyncio.wait_for(fault_client.wait(transfer), 90)
    except TimeoutError:
        raise
    except Exception as err:  # a failed transfer is acceptable; old bytes reported as new are not
        print(f"transfer failed: {err}")
        result = None
    assert not trigger.exists(), "the relay never removed the temp file"
    assert "removed " in (sftp_hand_removed.work_dir / "proxy.log").read_text()
    content = destination.read_bytes()
    if result is not None:
        assert content != old, "completed, but the destination holds the old bytes"
        assert sha256_file(destination) == digest
    assert leftovers(data_dir) == []


# -- a server that caps requests in flight and hides its limits -----------------------


def _drops(server: SshdServer) -> int:
    log = server.work_dir / "proxy.log"
    return log.read_text().count("dropped request") if log.exists() else 0


def test_capped_server_read_and_write(driver_on, sftp_capped: SshdServer, data_dir: Path) -> None:
    """32 requests in flight at most, the rest dropped, no limits extension: a read and
    a write of 8 MiB (64 and 128 requests in flight at first) finish, within a bound."""
    driver = get_driver("sftp")
    size = 8 * MiB + 11
    source = data_dir / "src.bin"
    digest = write_random(source, size, seed=32)
    drops_before = _drops(sftp_capped)
    started = time.monotonic()
    url = parse_url(sftp_capped.url(str(source)))
    info = driver.stat(url)
    buffer = bytearray(size)
    with driver.open_read(url, info, 0, size) as reader:
        assert reader.readinto_full(memoryview(buffer)) == size
    assert checksums.checksum_bytes("sha256", buffer) == digest
    read_s = time.monotonic() - started
    destination = data_dir / "dst.bin"
    session = driver.open_session(
        parse_url(sftp_capped.url(str(destination))), size, 4 * MiB, "t-capped"
    )
    with driver.open_writer(session) as writer:
        for index in range(3):
            piece = memoryview(buffer)[index * 4 * MiB : (index + 1) * 4 * MiB]
            writer.write_chunk(index, piece, checksums.checksum_bytes("crc32c", piece))
    driver.publish(session)
    elapsed = time.monotonic() - started
    assert sha256_file(destination) == digest
    dropped = _drops(sftp_capped) - drops_before
    print(f"read {read_s:.1f} s, read+write {elapsed:.1f} s; the server dropped {dropped} requests")
    assert dropped > 0, "the relay dropped nothing: the test did not test a capped server"
    assert elapsed < 20


async def test_capped_server_transfers(
    fault_client: StaccatoClient, sftp_capped: SshdServer, data_dir: Path
) -> None:
    """Through a worker, both directions with the capped server finish."""
    size = 16 * MiB + 3
    source = data_dir / "src.bin"
    digest = write_random(source, size, seed=33)
    options = TransferOptions(chunk_size=4 * MiB, streams=2)
    started = time.monotonic()
    up = await fault_client.submit(str(source), sftp_capped.url(str(data_dir / "up.bin")), options)
    await asyncio.wait_for(fault_client.wait(up), 60)
    down = await fault_client.submit(
        sftp_capped.url(str(data_dir / "up.bin")), str(data_dir / "down.bin"), options
    )
    await asyncio.wait_for(fault_client.wait(down), 60)
    print(f"up and down: {time.monotonic() - started:.1f} s")
    assert sha256_file(data_dir / "up.bin") == digest
    assert sha256_file(data_dir / "down.bin") == digest
    assert _drops(sftp_capped) > 0


# -- a login shell that prints ---------------------------------------------------------


def test_shell_prints_is_permanent(
    driver_on, sftp_shell_prints: SshdServer, data_dir: Path
) -> None:
    driver = get_driver("sftp")
    started = time.monotonic()
    with pytest.raises(PermanentError) as raised:
        driver.stat(parse_url(sftp_shell_prints.url(str(data_dir))))
    message = str(raised.value)
    assert "'Welcome to the build box'" in message
    assert "print to stdout also in non-interactive sessions" in message
    assert "~/.bashrc" in message
    assert time.monotonic() - started < 10


def test_shell_prints_fails_transfer_at_once(
    temporal_server, fault_worker: WorkerProcess, sftp_shell_prints: SshdServer, data_dir: Path
) -> None:
    source = data_dir / "src.bin"
    write_random(source, 1000, seed=34)
    started = time.monotonic()
    result = run_cli(
        "cp",
        "-q",
        str(source),
        sftp_shell_prints.url(str(data_dir / "dst.bin")),
        address=temporal_server.address,
        task_queue=fault_worker.task_queue,
    )
    elapsed = time.monotonic() - started
    print(f"[{elapsed:.1f} s] {result.stderr.strip()}")
    assert result.returncode == 1, result
    assert "non-interactive sessions" in result.stderr
    # retried, it would go on for the default --retry-for (24 h), past run_cli's 120 s;
    # a cp at load 15 can take several times its few quiet seconds
    assert elapsed < 90, "a permanent error was retried"


# -- long names -------------------------------------------------------------------------


async def test_255_byte_destination_name(
    sftp_client: StaccatoClient, sftp_url, data_dir: Path
) -> None:
    source = data_dir / "src.bin"
    digest = write_random(source, 2 * MiB + 1, seed=35)
    destination = data_dir / ("n" * 251 + ".bin")
    assert len(destination.name.encode()) == 255
    transfer = await sftp_client.submit(
        str(source), sftp_url(destination), TransferOptions(chunk_size=1 * MiB, streams=2)
    )
    await asyncio.wait_for(sftp_client.wait(transfer), 60)
    assert sha256_file(destination) == digest
    assert leftovers(data_dir) == []


def test_temp_names_fit_name_max(driver_on, sshd_server: SshdServer, data_dir: Path) -> None:
    driver = get_driver("sftp")
    name = "é" * 127 + "x"  # 255 bytes of UTF-8
    url = parse_url(sshd_server.url(str(data_dir / name)))
    session = driver.open_session(url, 10, CHUNK, "t" * 200)
    for key in ("temp", "journal", "backup"):
        assert len(os.path.basename(session.data[key]).encode()) <= 255
    assert (data_dir / os.path.basename(session.data["temp"])).exists()
    driver.abort(session)


# -- no secrets in errors ----------------------------------------------------------------


def test_proxy_command_secret_stays_out(
    driver_on, monkeypatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A ProxyCommand holding a password (sshpass-style) that fails: paramiko's
    ProxyCommandFailure quotes the whole command line; Staccato's message and logs do not."""
    secret = "hunter2-proxy-secret"
    config = tmp_path / "ssh_config"
    config.write_text(
        "Host viaproxy\n"
        "  HostName 127.0.0.1\n"
        f"  ProxyCommand sh -c 'exec 0<&-; sleep 2' --password={secret}\n"
    )
    monkeypatch.setenv("STACCATO_SSH_CONFIG", str(config))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(Exception) as raised:
        get_driver("sftp").stat(parse_url("sftp://viaproxy/tmp/x"))
    print(f"{type(raised.value).__name__}: {raised.value}")
    assert secret not in str(raised.value)
    assert secret not in caplog.text
    # the hint names the proxy command, not the server's MaxStartups (tester62)
    assert "ProxyCommand" in str(raised.value), raised.value
    assert "MaxStartups" not in str(raised.value), raised.value


def test_bad_ssh_config_line_is_not_echoed(driver_on, monkeypatch, tmp_path: Path) -> None:
    """paramiko's parse error repeats the whole unparsable line; the message keeps only
    its first word."""
    secret = "hunter2-config-secret"
    config = tmp_path / "ssh_config"
    config.write_text(f"Host broken\n  HostName 127.0.0.1\n  sshpass-p{secret}\n")
    monkeypatch.setenv("STACCATO_SSH_CONFIG", str(config))
    with pytest.raises(PermanentError, match="cannot read ssh config") as raised:
        get_driver("sftp").stat(parse_url("sftp://broken/tmp/x"))
    print(raised.value)
    assert secret not in str(raised.value)
    assert "line 3 is not `Keyword value`" in str(raised.value)


def test_proxy_command_failure_is_described_without_the_command(tmp_path: Path) -> None:
    """paramiko's own ProxyCommandFailure (a write to a proxy that has exited) quotes the
    command line; ``describe`` keeps what failed and drops the command."""
    from staccato.endpoints.sftp.ssh import SSHHost, describe

    secret = "hunter2-proxy-secret"
    command = f"sh -c 'exit 0' --password={secret}"
    proxy = paramiko.ProxyCommand(command)
    proxy.process.wait(10)
    with pytest.raises(paramiko.ProxyCommandFailure) as raised:
        for _ in range(100):
            proxy.send(b"x" * 65536)
    assert secret in str(raised.value)  # what paramiko says
    target = SSHHost("viaproxy", "127.0.0.1", 22, "u", "127.0.0.1", proxy_command=command)
    text = describe(raised.value, target)
    assert secret not in text and "ProxyCommand failed" in text
    wrapped = paramiko.SSHException(f"Error reading SSH protocol banner{raised.value}")
    assert secret not in describe(wrapped, target)


def test_paramiko_log_lines_lose_the_proxy_command(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """paramiko's transport thread logs the failure and its traceback at ERROR (as it
    does for a ProxyCommand that fails during the handshake): the worker's log does not
    get the command line."""
    import staccato.endpoints.sftp.ssh  # noqa: F401  (installs the filter)

    secret = "hunter2-proxy-secret"
    proxy = paramiko.ProxyCommand(f"sh -c 'exit 0' --password={secret}")
    proxy.process.wait(10)
    caplog.set_level(logging.DEBUG)
    logger = paramiko.util.get_logger("paramiko.transport")
    try:
        for _ in range(100):
            proxy.send(b"x" * 65536)
    except paramiko.ProxyCommandFailure as err:
        logger.error("Exception (client): %s", err)
        logger.error("Exception (client)", exc_info=True)
    assert "returned nonzero exit status" in caplog.text
    assert secret not in caplog.text


# -- bounded pieces and heartbeats --------------------------------------------------------


def test_big_chunk_heartbeats_between_pieces(
    driver_on, sshd_server: SshdServer, data_dir: Path
) -> None:
    """A 64 MiB chunk: the write calls the activity's keepalive between 8 MiB pieces, and
    one read call returns at most 16 MiB (the caller heartbeats between calls)."""
    from staccato.endpoints.base import keepalive_hook

    driver = get_driver("sftp")
    size = 64 * MiB
    data = os.urandom(size)
    destination = data_dir / "big.bin"
    session = driver.open_session(
        parse_url(sshd_server.url(str(destination))), size, size, "t-big-chunk"
    )
    beats: list[float] = []
    with keepalive_hook(lambda: beats.append(time.monotonic())):
        with driver.open_writer(session) as writer:
            writer.write_chunk(0, memoryview(data), checksums.checksum_bytes("crc32c", data))
        written_beats = len(beats)
        driver.publish(session)
        url = parse_url(sshd_server.url(str(destination)))
        info = driver.stat(url)
        with driver.open_read(url, info, 0, size) as reader:
            first = reader.readinto(memoryview(bytearray(size)))
    print(f"keepalive calls while writing 64 MiB: {written_beats}; first read call: {first} bytes")
    assert written_beats >= 7
    assert 0 < first <= 16 * MiB
    assert destination.read_bytes() == data
