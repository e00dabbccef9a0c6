"""Smoke tests for the real-server helpers: each server starts and answers one real
request; the crash/restart paths tests rely on work (same port, same state)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import paramiko
import pytest

from tests.servers.nginx import NginxServer
from tests.servers.seaweedfs import MotoS3, SeaweedS3
from tests.servers.sshd import SshdServer
from tests.servers.temporal_server import (
    MissingBinaryError,
    TemporalDevServer,
    find_binary,
    port_accepts,
)


def test_missing_binary_names_what_to_install() -> None:
    with pytest.raises(MissingBinaryError, match="apt-get install -y nothing-here"):
        find_binary(["/nonexistent/bin/x", "no-such-binary-xyz"], "apt-get install -y nothing-here")


async def test_temporal_workflow_survives_sigkill(tmp_path: Path) -> None:
    """On a server of its own: SIGKILLing the session's shared server would break the
    tests that use it meanwhile (its namespace is unknown for a while after the
    restart; their governors and transfers lose the server mid-task)."""
    from temporalio.client import WorkflowExecutionStatus
    from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

    destination = SearchAttributeKey.for_keyword("StaccatoDestination")
    server = TemporalDevServer(tmp_path / "temporal.db", headless=True)
    server.start()
    try:
        client = await server.client()
        workflow_id = f"smoke-{uuid.uuid4()}"
        # No worker polls this queue: the workflow just stays RUNNING in the database.
        await client.start_workflow(
            "SmokeWorkflow",
            id=workflow_id,
            task_queue="smoke-no-worker",
            execution_timeout=timedelta(minutes=5),
            search_attributes=TypedSearchAttributes(
                [SearchAttributePair(destination, "file:///tmp/smoke")]
            ),
        )
        port = server.port
        server.kill()
        assert not port_accepts(port)
        await asyncio.to_thread(server.start)  # same port, same SQLite file
        assert server.port == port

        client = await server.client()
        handle = client.get_workflow_handle(workflow_id)
        description = await handle.describe()
        assert description.status == WorkflowExecutionStatus.RUNNING
        assert description.typed_search_attributes.get(destination) == "file:///tmp/smoke"
        await handle.terminate("smoke test done")
    finally:
        server.stop()


def test_nginx_ranges_and_no_ranges(
    http_root: Path, nginx_ranges: NginxServer, nginx_no_ranges: NginxServer
) -> None:
    data = os.urandom(64 * 1024)
    (http_root / "smoke.bin").write_bytes(data)
    nginx_ranges.clear_log()
    nginx_no_ranges.clear_log()

    ranged = httpx.get(nginx_ranges.url("smoke.bin"), headers={"Range": "bytes=100-199"})
    assert ranged.status_code == 206
    assert ranged.content == data[100:200]
    assert ranged.headers["etag"]

    whole = httpx.get(nginx_no_ranges.url("smoke.bin"), headers={"Range": "bytes=100-199"})
    assert whole.status_code == 200
    assert whole.content == data

    assert nginx_ranges.bytes_sent() == 100
    assert nginx_no_ranges.bytes_sent() == len(data)
    (entry,) = nginx_ranges.requests()
    assert (entry["status"], entry["method"], entry["uri"], entry["range"]) == (
        206, "GET", "/smoke.bin", "bytes=100-199",
    )  # fmt: skip

    # Down and back on the same port.
    port = nginx_ranges.port
    nginx_ranges.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(nginx_ranges.url("smoke.bin"))
    nginx_ranges.start()
    assert nginx_ranges.port == port
    assert httpx.get(nginx_ranges.url("smoke.bin")).content == data


def _sftp_connect(server: SshdServer) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(str(server.known_hosts_path))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        server.host,
        port=server.port,
        username=server.user,
        key_filename=str(server.client_key_path),
        allow_agent=False,
        look_for_keys=False,
        timeout=10,
    )
    return client


def test_sshd_sftp_roundtrip(sshd_server: SshdServer, tmp_path: Path) -> None:
    target = tmp_path / "uploaded.bin"
    data = os.urandom(32 * 1024)
    client = _sftp_connect(sshd_server)
    try:
        sftp = client.open_sftp()
        with sftp.open(str(target), "wb") as handle:
            handle.write(data)
        assert sftp.stat(str(target)).st_size == len(data)
        # ours at least: a session worker of another test may still hold a pooled
        # connection to this session-wide server
        assert sshd_server.connection_count() >= 1
    finally:
        client.close()
    assert target.read_bytes() == data

    # The OpenSSH client accepts the generated known_hosts and key too.
    listing = subprocess.run(
        ["sftp", *sshd_server.ssh_options(), "-b", "-", sshd_server.host],
        input=f"ls {tmp_path}\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert listing.returncode == 0, listing.stderr
    assert "uploaded.bin" in listing.stdout

    port = sshd_server.port
    sshd_server.stop()
    assert not port_accepts(port)
    sshd_server.start()
    client = _sftp_connect(sshd_server)
    try:
        assert client.open_sftp().stat(str(target)).st_size == len(data)
    finally:
        client.close()


def _s3_roundtrip(server: SeaweedS3 | MotoS3) -> None:
    s3 = server.client()
    bucket = f"smoke-{uuid.uuid4().hex[:12]}"
    data = os.urandom(128 * 1024)
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="a/b.bin", Body=data)
    part = s3.get_object(Bucket=bucket, Key="a/b.bin", Range="bytes=1000-1999")
    assert part["Body"].read() == data[1000:2000]
    assert s3.head_object(Bucket=bucket, Key="a/b.bin")["ContentLength"] == len(data)


def test_seaweed_s3(seaweed_s3: SeaweedS3) -> None:
    _s3_roundtrip(seaweed_s3)
    # A subprocess configured only through the environment reaches it (signed requests).
    script = "import boto3; print(len(boto3.client('s3').list_buckets()['Buckets']))"
    env = seaweed_s3.subprocess_env()
    assert "AWS_CA_BUNDLE" not in env
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) >= 1


def test_moto_s3(moto_s3: MotoS3) -> None:
    _s3_roundtrip(moto_s3)
