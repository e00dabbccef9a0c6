"""Record ``TransferWorkflow`` histories as replay fixtures (run by ``scripts/record-histories``).

Starts what it needs the way the test suite does (``tests/servers``: a Temporal dev
server, nginx, OpenSSH sshd, SeaweedFS; ``tests/helpers.WorkerProcess``: real
``staccato worker`` subprocesses), runs one small transfer per scenario and writes
its history (``WorkflowHandle.fetch_history().to_json()``) to
``tests/workflow/histories/<release>/<scenario>.json``, where ``<release>`` is the
installed ``staccato`` version. Only that release's directory is rewritten: the
histories of earlier releases stay, so ``tests/workflow/test_replay.py`` keeps
replaying them with the current workflow code.

Objects are small (tens to hundreds of KiB, 16 KiB chunks, 2 streams) so each history
is a few KiB. No payload codec is used (``STACCATO_CODEC_KEY`` is removed from the
workers' environment), and every fixture is checked for the S3 keys and the SSH key
before it is written: no secret ends up in a fixture.

Usage: ``python -m tests.workflow.record_histories [SCENARIO ...]`` (default: all).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from staccato.client import StaccatoClient
from staccato.errors import TransferFailedError
from staccato.models import TransferOptions, TransferState
from tests.helpers import WorkerProcess, at_rest, wait_for_status, write_random
from tests.servers.nginx import NginxServer
from tests.servers.seaweedfs import SeaweedS3
from tests.servers.sshd import SshdServer
from tests.servers.temporal_server import TemporalDevServer

HISTORIES = Path(__file__).resolve().parent / "histories"
KiB = 1024
#: small chunks and two streams: a handful of activities, a history of a few KiB
OPTIONS = TransferOptions(chunk_size=16 * KiB, streams=2, heartbeat_timeout_s=2, retry_for_s=120)
#: bytes/s per connection of the slow nginx: a 256 KiB object takes ~4 s on 2 streams
SLOW_RATE = 32 * KiB
SLOW_SIZE = 256 * KiB
SMALL_SIZE = 64 * KiB
WAIT_S = 90.0  # bound of every wait for a transfer's state (seconds)


@dataclass
class Lab:
    """The servers and workers of one recording session, and the secrets to keep out."""

    root: Path
    temporal: TemporalDevServer
    slow_nginx: NginxServer
    http_root: Path
    client: StaccatoClient
    worker: WorkerProcess
    worker_env: dict[str, str]
    sshd: SshdServer | None = None
    s3: SeaweedS3 | None = None
    bucket: str = "histories"
    secrets: list[str] = field(default_factory=list)

    def data(self, name: str) -> Path:
        """A fresh directory under the session's root."""
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path


Scenario = Callable[[Lab], Awaitable[str]]  # returns the transfer's workflow id


async def _wait(client: StaccatoClient, transfer: str) -> None:
    """Wait for the end of ``transfer`` (any outcome), at most ``WAIT_S``."""
    try:
        await asyncio.wait_for(client.wait(transfer), WAIT_S)
    except TransferFailedError:
        pass


def _copying(s: Any) -> bool:
    """A status with bytes moved but the copy not over (or the transfer ended)."""
    return s.state in (TransferState.failed, TransferState.completed, TransferState.cancelled) or (
        s.state == TransferState.running and s.bytes_done > 0
    )


async def completed_file(lab: Lab) -> str:
    """file -> file, source at rest: stat, prepare, 2 streams (verify on write), publish,
    the final size check."""
    data = lab.data("completed")
    write_random(data / "source.bin", SMALL_SIZE, seed=1)
    at_rest(data / "source.bin")
    transfer = await lab.client.submit(
        str(data / "source.bin"), str(data / "destination.bin"), OPTIONS
    )
    await _wait(lab.client, transfer)
    return transfer


async def paused_resumed(lab: Lab) -> str:
    """http -> file from a slow source: paused mid-copy (streams cancelled), resumed,
    completed (the whole temp object read back before publish after a pause)."""
    write_random(lab.http_root / "pause.bin", SLOW_SIZE, seed=2)
    at_rest(lab.http_root / "pause.bin")
    data = lab.data("paused")
    transfer = await lab.client.submit(
        lab.slow_nginx.url("pause.bin"), str(data / "pause.bin"), OPTIONS
    )
    await wait_for_status(lab.client, transfer, _copying, timeout_s=WAIT_S)
    await lab.client.pause(transfer)
    await wait_for_status(
        lab.client, transfer, lambda s: s.state == TransferState.paused, timeout_s=WAIT_S
    )
    await _settled_streams(lab.client, transfer)
    await lab.client.resume(transfer)
    await _wait(lab.client, transfer)
    return transfer


async def _settled_streams(client: StaccatoClient, transfer: str) -> None:
    """Wait until no stream activity is pending (a pause's cancellations completed)."""
    handle = client.temporal.get_workflow_handle(transfer)
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        description = await handle.describe()
        if not description.raw_description.pending_activities:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{transfer}: streams still pending {WAIT_S} s after pause")


async def cancelled_mid_copy(lab: Lab) -> str:
    """http -> file from a slow source, cancelled mid-copy: streams cancelled, cleanup."""
    write_random(lab.http_root / "cancel.bin", SLOW_SIZE, seed=3)
    at_rest(lab.http_root / "cancel.bin")
    data = lab.data("cancelled")
    transfer = await lab.client.submit(
        lab.slow_nginx.url("cancel.bin"), str(data / "cancel.bin"), OPTIONS
    )
    await wait_for_status(lab.client, transfer, _copying, timeout_s=WAIT_S)
    await lab.client.cancel(transfer)
    await _wait(lab.client, transfer)
    return transfer


async def failed_missing_source(lab: Lab) -> str:
    """file -> file whose source does not exist: stat fails, the transfer fails."""
    data = lab.data("failed")
    transfer = await lab.client.submit(
        str(data / "no-such-source.bin"), str(data / "destination.bin"), OPTIONS
    )
    await _wait(lab.client, transfer)
    return transfer


async def retried_stream_worker_killed(lab: Lab) -> str:
    """http -> file from a slow source on a worker SIGKILLed mid-copy: the streams time
    out (heartbeat) and are retried on a second worker on the same task queue, which also
    takes over the workflow task."""
    write_random(lab.http_root / "kill.bin", SLOW_SIZE, seed=4)
    at_rest(lab.http_root / "kill.bin")
    data = lab.data("killed")
    log_dir = lab.data("killed-logs")
    first = WorkerProcess(
        lab.temporal.address, processes=2, env=lab.worker_env, log_dir=log_dir
    ).start()
    client = await _connect(lab.temporal, first.task_queue)
    try:
        transfer = await client.submit(
            lab.slow_nginx.url("kill.bin"), str(data / "kill.bin"), OPTIONS
        )
        await wait_for_status(client, transfer, _copying, timeout_s=WAIT_S)
    finally:
        first.kill()
    with WorkerProcess(
        lab.temporal.address,
        task_queue=first.task_queue,
        processes=2,
        env=lab.worker_env,
        log_dir=log_dir,
    ):
        await _wait(client, transfer)
    return transfer


async def sftp_destination(lab: Lab) -> str:
    """file -> sftp: the temp data is read back per segment (verify) before publish."""
    assert lab.sshd is not None
    data = lab.data("sftp-source")
    write_random(data / "source.bin", SMALL_SIZE, seed=5)
    at_rest(data / "source.bin")
    remote = lab.data("sftp-destination") / "destination.bin"
    transfer = await lab.client.submit(str(data / "source.bin"), lab.sshd.url(str(remote)), OPTIONS)
    await _wait(lab.client, transfer)
    return transfer


async def s3_destination(lab: Lab) -> str:
    """file -> s3 (multipart upload): publish, then the stored checksum is compared."""
    assert lab.s3 is not None
    data = lab.data("s3-source")
    write_random(data / "source.bin", SMALL_SIZE, seed=6)
    at_rest(data / "source.bin")
    transfer = await lab.client.submit(
        str(data / "source.bin"), f"s3://{lab.bucket}/histories/destination.bin", OPTIONS
    )
    await _wait(lab.client, transfer)
    return transfer


async def source_read_twice(lab: Lab) -> str:
    """http -> file from a source written just now: its ETag and Last-Modified (whole
    seconds) cannot tell a rewrite in place during the copy from the copy's own time, so
    each segment is read a second time (confirm_source) before publish."""
    write_random(lab.http_root / "fresh.bin", SMALL_SIZE, seed=7)  # not at rest
    data = lab.data("read-twice")
    transfer = await lab.client.submit(
        lab.slow_nginx.url("fresh.bin"), str(data / "fresh.bin"), OPTIONS
    )
    await _wait(lab.client, transfer)
    return transfer


async def source_rewritten_in_place(lab: Lab) -> str:
    """http -> file from a source written just now and rewritten in place mid-copy (its
    first and last chunk; size and mtime kept, so ETag and Last-Modified stay): the
    second read (confirm_source) sees the change; the transfer fails, cleanup runs."""
    source = lab.http_root / "rewritten.bin"
    write_random(source, SLOW_SIZE, seed=8)  # not at rest
    data = lab.data("rewritten")
    transfer = await lab.client.submit(
        lab.slow_nginx.url(source.name), str(data / "rewritten.bin"), OPTIONS
    )
    await wait_for_status(lab.client, transfer, _copying, timeout_s=WAIT_S)
    kept = os.stat(source)
    chunk = OPTIONS.chunk_size
    with open(source, "r+b") as f:
        for offset in (0, SLOW_SIZE - chunk):
            f.seek(offset)
            f.write(os.urandom(chunk))
    os.utime(source, ns=(kept.st_atime_ns, kept.st_mtime_ns))
    await _wait(lab.client, transfer)
    return transfer


#: scenario name (the fixture's file name) -> what it runs, and what its history must show
SCENARIOS: dict[str, tuple[Scenario, str]] = {
    "completed_file": (completed_file, "WORKFLOW_EXECUTION_COMPLETED"),
    "paused_resumed": (paused_resumed, "WORKFLOW_EXECUTION_UPDATE_COMPLETED"),
    "cancelled_mid_copy": (cancelled_mid_copy, "WORKFLOW_EXECUTION_CANCELED"),
    "failed_missing_source": (failed_missing_source, "WORKFLOW_EXECUTION_FAILED"),
    # a stream's second attempt (the first one's worker was killed)
    "retried_stream_worker_killed": (retried_stream_worker_killed, '"attempt":2,'),
    "sftp_destination": (sftp_destination, "WORKFLOW_EXECUTION_COMPLETED"),
    "s3_destination": (s3_destination, "WORKFLOW_EXECUTION_COMPLETED"),
    "source_read_twice": (source_read_twice, "confirm_source"),
    "source_rewritten_in_place": (source_rewritten_in_place, "confirm_source"),
}


async def _connect(temporal: TemporalDevServer, task_queue: str) -> StaccatoClient:
    client = await StaccatoClient.connect(target_host=temporal.address, namespace="default")
    client.task_queue = task_queue
    return client


def _decoded_texts(value: Any) -> Iterator[str]:
    """Every string in a history's JSON, plus the base64-decoded payload ``data``."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "data" and isinstance(item, str):
                try:
                    yield base64.b64decode(item).decode(errors="replace")
                except ValueError:
                    pass
            yield from _decoded_texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _decoded_texts(item)
    elif isinstance(value, str):
        yield value


def check_fixture(name: str, text: str, secrets: list[str], expected: str) -> None:
    """Refuse a history holding a secret or lacking what its scenario must show.

    Raises:
        RuntimeError: naming the scenario and what was wrong.
    """
    history = json.loads(text)
    for piece in _decoded_texts(history):
        for secret in secrets:
            if secret and secret in piece:
                raise RuntimeError(f"{name}: the history holds a secret; not written")
    if expected not in text and not any(expected in piece for piece in _decoded_texts(history)):
        raise RuntimeError(f"{name}: the history shows no {expected}; scenario did not happen")


@contextmanager
def _started(server: Any) -> Iterator[Any]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def record(names: list[str], out_dir: Path) -> list[Path]:
    """Run the scenarios ``names`` and write their histories into ``out_dir``.

    Returns:
        The files written.
    """
    needs_sftp = "sftp_destination" in names
    needs_s3 = "s3_destination" in names
    root = Path(tempfile.mkdtemp(prefix="staccato-histories-"))
    root.chmod(0o755)
    written: list[Path] = []
    recorded: dict[str, str] = {}
    try:
        with ExitStack() as stack:
            temporal = stack.enter_context(
                _started(TemporalDevServer(root / "temporal" / "temporal.db", headless=True))
            )
            http_root = root / "http"
            http_root.mkdir()
            http_root.chmod(0o755)
            slow_nginx = stack.enter_context(
                _started(
                    NginxServer(
                        http_root,
                        prefix_dir=root / "nginx",
                        extra_server_config=f"limit_rate {SLOW_RATE};",
                    )
                )
            )
            env: dict[str, str] = {}
            secrets: list[str] = []
            sshd = s3 = None
            if needs_sftp:
                (root / "sshd").mkdir()
                sshd = stack.enter_context(_started(SshdServer(root / "sshd")))
                home = root / "home"
                home.mkdir()
                env |= {
                    "HOME": str(home),
                    "SSH_AUTH_SOCK": "",
                    "STACCATO_SSH_CONFIG": "none",
                    "STACCATO_SSH_IDENTITY": str(sshd.client_key_path),
                    "STACCATO_SSH_KNOWN_HOSTS": str(sshd.known_hosts_path),
                    "STACCATO_SFTP_LOCK_DIR": str(root / "sftp-locks"),
                }
                key_lines = sshd.client_key_path.read_text().splitlines()
                secrets += [line for line in key_lines if line and not line.startswith("-----")]
            if needs_s3:
                s3 = stack.enter_context(_started(SeaweedS3(root / "seaweedfs")))
                env |= s3.env() | {"AWS_EC2_METADATA_DISABLED": "true"}
                secrets += [s3.access_key, s3.secret_key]
            worker = WorkerProcess(temporal.address, processes=2, env=env, log_dir=root).start()
            stack.callback(worker.stop)
            client = await _connect(temporal, worker.task_queue)
            lab = Lab(
                root=root,
                temporal=temporal,
                slow_nginx=slow_nginx,
                http_root=http_root,
                client=client,
                worker=worker,
                worker_env=env,
                sshd=sshd,
                s3=s3,
                secrets=secrets,
            )
            if s3 is not None:
                s3.client().create_bucket(Bucket=lab.bucket)
            out_dir.mkdir(parents=True, exist_ok=True)
            for name in names:
                scenario, expected = SCENARIOS[name]
                began = time.monotonic()
                transfer = await scenario(lab)
                history = await client.temporal.get_workflow_handle(transfer).fetch_history()
                text = history.to_json()
                recorded[name] = compact(text)
                check_fixture(name, recorded[name], secrets, expected)
                print(
                    f"{name}: {len(history.events)} events, {len(recorded[name])} bytes, "
                    f"{time.monotonic() - began:.1f} s",
                    flush=True,
                )
        # written only once every scenario asked for succeeded; a full run also drops
        # this release's fixtures of scenarios that no longer exist
        if set(names) == set(SCENARIOS):
            for stale in out_dir.glob("*.json"):
                stale.unlink()
        for name, text in recorded.items():
            path = out_dir / f"{name}.json"
            path.write_text(text)
            written.append(path)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return written


def compact(text: str) -> str:
    """A history's JSON with one event per line (small, and diffs read per event)."""
    history = json.loads(text)
    events = ",\n".join(json.dumps(event, separators=(",", ":")) for event in history["events"])
    rest = {key: value for key, value in history.items() if key != "events"}
    if rest:
        raise RuntimeError(f"unexpected top-level keys in a history: {sorted(rest)}")
    return '{"events":[\n' + events + "\n]}\n"


def release() -> str:
    """The installed staccato version: the fixture directory's name."""
    return importlib.metadata.version("staccato")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=", ".join(SCENARIOS))
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="directory for the fixtures (default: tests/workflow/histories/<release>)",
    )
    args = parser.parse_args(argv)
    names = args.scenarios or list(SCENARIOS)
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    # workers inherit this environment: no payload codec (the fixtures are replayed with
    # the plain converter) and no AWS settings but those of the recording's own S3 server
    for key in [k for k in os.environ if k == "STACCATO_CODEC_KEY" or k.startswith("AWS_")]:
        del os.environ[key]
    out_dir = args.out or HISTORIES / release()
    written = asyncio.run(record(names, out_dir))
    print(f"wrote {len(written)} histories into {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
