"""The light client (:mod:`staccato.light_client`): a plain ``cp``/``submit`` through
Temporal's HTTP API starts exactly the run the SDK's client starts, ends as the SDK
path ends, loads no Temporal SDK, and is not used when the connection or the payloads
need what only the SDK does (TLS, API key, profiles, gRPC metadata, the codec)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from staccato.client import StaccatoClient
from staccato.ids import transfer_id
from staccato.light_client import LightClient, light_client
from staccato.models import TransferOptions
from staccato.submissions import make_request
from tests.helpers import REPO, write_random
from tests.test_cli_startup import _probe_main

#: fields of a start event that name the run itself, not what was started
RUN_FIELDS = ("originalExecutionRunId", "firstExecutionRunId")


def _history(server: Any, workflow_id: str, run_id: str) -> list[dict[str, Any]]:
    """A run's events as Temporal's HTTP API gives them (payloads in full form)."""
    url = (
        f"http://{server.http_address}/api/v1/namespaces/default/workflows/{workflow_id}"
        f"/history?noPayloadShorthand&execution.runId={run_id}"
    )
    with urllib.request.urlopen(url, timeout=30) as answer:
        return json.load(answer)["history"]["events"]  # type: ignore[no-any-return]


def _started(server: Any, workflow_id: str, run_id: str) -> dict[str, Any]:
    """The start event of a run, without the fields that differ from run to run."""
    event = _history(server, workflow_id, run_id)[0]
    assert event["eventType"] == "EVENT_TYPE_WORKFLOW_EXECUTION_STARTED"
    for name in ("eventId", "eventTime", "taskId"):
        event.pop(name)
    attributes = event["workflowExecutionStartedEventAttributes"]
    for name in RUN_FIELDS:
        assert attributes.pop(name) == run_id
    return event


async def test_light_start_is_the_sdk_start(temporal_server, tmp_path: Path) -> None:
    """The same request started by the light client and by the SDK's client (one
    after the other: the id is the destination's lock) gives two start events equal
    in everything but the run: type, id, task queue, input bytes, memo, search
    attributes (a non-ASCII path: the SDK escapes it there, not in the memo), summary,
    priority, timeouts, identity. No worker polls the queue: nothing runs."""
    queue = "light-client-idle"
    source = tmp_path / "sé src.bin"
    destination = tmp_path / "dé dst.bin"
    options = TransferOptions(
        streams=3, chunk_size=8 * 1024 * 1024, priority=2, owner="ops", max_rate=1e6
    )
    request = make_request(str(source), str(destination), options)
    light = LightClient(
        "127.0.0.1", temporal_server.http_port, namespace="default", task_queue=queue
    )
    started = await light.start(request)
    assert started is not None and not started.attached

    sdk = await StaccatoClient.connect(target_host=temporal_server.address, namespace="default")
    try:
        sdk.task_queue = queue
        # the light run holds the lock: the SDK's start attaches (same request hash)
        attached = await sdk.start(str(source), str(destination), options)
        assert (attached.id, attached.run_id, attached.attached) == (
            started.id,
            started.run_id,
            True,
        )
        await sdk.temporal.get_workflow_handle(started.id).terminate("test: free the lock")
        again = await sdk.start(str(source), str(destination), options)
        assert again.id == started.id and again.run_id != started.run_id
        assert not again.attached
        by_sdk = _started(temporal_server, again.id, again.run_id)
        await sdk.temporal.get_workflow_handle(again.id).terminate("test: done")
    finally:
        await sdk.close()
    by_light = _started(temporal_server, started.id, started.run_id)
    assert by_light == by_sdk
    # and it is what it should be, not merely the same
    attributes = by_light["workflowExecutionStartedEventAttributes"]
    assert attributes["workflowType"]["name"] == "TransferWorkflow"
    assert attributes["taskQueue"]["name"] == queue
    (payload,) = attributes["input"]["payloads"]
    assert base64.b64decode(payload["data"]) == request.model_dump_json().encode()
    indexed = attributes["searchAttributes"]["indexedFields"]
    assert json.loads(base64.b64decode(indexed["StaccatoDestination"]["data"])) == (
        request.destination
    )
    assert attributes["priority"] == {"priorityKey": 2}


def _cp_env(temporal_server: Any, worker: Any, **extra: str) -> dict[str, str]:
    return {
        "TEMPORAL_ADDRESS": temporal_server.address,
        "TEMPORAL_NAMESPACE": "default",
        "STACCATO_TASK_QUEUE": worker.task_queue,
        "STACCATO_TEMPORAL_HTTP": temporal_server.http_address,
        **extra,
    }


def test_cp_quiet_on_the_light_path_loads_no_sdk(temporal_server, worker, tmp_path: Path) -> None:
    """A real ``cp -q`` as the script runs it, with the HTTP API known: the bytes
    arrive, nothing is printed, and neither Temporal's SDK nor httpx was imported."""
    source = tmp_path / "src.bin"
    write_random(source, 3 * 1024 * 1024 + 17)
    destination = tmp_path / "dst.bin"
    code, modules, stderr = _probe_main(
        "cp", "-q", str(source), str(destination), env=_cp_env(temporal_server, worker)
    )
    assert code == 0, stderr
    assert stderr == ""
    assert destination.read_bytes() == source.read_bytes()
    assert "staccato.light_client" in modules
    assert sorted(m for m in modules if m.split(".")[0] in ("temporalio", "httpx")) == []


def test_cp_with_progress_lines_on_the_light_path(temporal_server, worker, tmp_path: Path) -> None:
    """``cp`` with progress lines (stderr a pipe) starts through the light client and
    follows with the SDK's: the same lines and end as ever."""
    source = tmp_path / "src.bin"
    write_random(source, 256 * 1024)
    destination = tmp_path / "dst.bin"
    code, modules, stderr = _probe_main(
        "cp", str(source), str(destination), env=_cp_env(temporal_server, worker)
    )
    assert code == 0, stderr
    assert destination.read_bytes() == source.read_bytes()
    assert "staccato.light_client" in modules
    assert re.search(r"^transfer staccato-[0-9a-f]{32}: .* -> .*dst\.bin$", stderr, re.M)
    assert "completed: 256.0 KiB (262144 bytes), crc32c:" in stderr
    # how long it took and at what average rate (tester73: only cp -r said it)
    assert re.search(r"crc32c:[0-9a-f]{8}, in \d+\.\d s \(\S+ \S+/s average\)$", stderr, re.M), (
        stderr
    )


@pytest.mark.parametrize("quiet", [["-q"], []], ids=["quiet", "lines"])
def test_failed_cp_says_what_the_sdk_path_says(
    temporal_server, worker, tmp_path: Path, quiet: list[str]
) -> None:
    """A transfer that fails (no such source) exits 1 with the same message whether
    the light client or the SDK's client (``STACCATO_LIGHT_CLIENT=0``) started it."""
    said: list[str] = []
    for light in ("1", "0"):
        destination = tmp_path / f"dst-{light}.bin"
        code, _, stderr = _probe_main(
            "cp",
            *quiet,
            str(tmp_path / "missing.bin"),
            str(destination),
            env=_cp_env(temporal_server, worker, STACCATO_LIGHT_CLIENT=light),
        )
        assert code == 1, stderr
        assert not destination.exists()
        # the error lines (progress lines in between depend on timing)
        errors = [line for line in stderr.splitlines() if "error:" in line]
        said.append(re.sub(r"staccato-[0-9a-f]{32}", "ID", "\n".join(errors)))
    assert said[0] == said[1]
    assert "staccato: error: transfer ID failed: source " in said[0]
    assert "no such file or directory" in said[0]


@pytest.mark.parametrize(
    "env",
    [
        {"TEMPORAL_TLS": "true"},
        {"TEMPORAL_API_KEY": "k"},
        {"TEMPORAL_PROFILE": "prod"},
        {"TEMPORAL_CONFIG_FILE": "/nonexistent/temporal.toml"},
        {"TEMPORAL_GRPC_META_X_TEAM": "a"},
        {"TEMPORAL_NAMESPACE": ""},
        {"STACCATO_CODEC_KEY": base64.b64encode(bytes(32)).decode()},
        {"STACCATO_LIGHT_CLIENT": "0"},
    ],
    ids=lambda e: ",".join(e),
)
def test_no_light_client_unless_plain(monkeypatch, tmp_path: Path, env: dict[str, str]) -> None:
    """Anything that only the SDK's client honours (TLS, API key, profile, a config
    file, gRPC metadata, the payload codec) or the switch turned off: no light client."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setenv("STACCATO_TEMPORAL_HTTP", "127.0.0.1:1")
    assert light_client() is not None  # plain: it would be used
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert light_client() is None


def test_no_light_client_with_a_config_file_or_a_delayed_start(monkeypatch, tmp_path: Path) -> None:
    """Temporal's default configuration file (which may set TLS or a key) or a start
    delay (a front run): the SDK's client."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setenv("STACCATO_TEMPORAL_HTTP", "127.0.0.1:1")
    assert light_client(immediate=False) is None
    (tmp_path / "temporalio").mkdir()
    (tmp_path / "temporalio" / "temporal.toml").write_text("[profile.default]\n")
    assert light_client() is None


def test_fallback_cp_still_copies(temporal_server, worker, tmp_path: Path) -> None:
    """With gRPC metadata configured (only the SDK's client sends it), ``cp -q`` goes
    through the SDK's client: it loads it, and the bytes arrive."""
    source = tmp_path / "src.bin"
    write_random(source, 64 * 1024)
    destination = tmp_path / "dst.bin"
    code, modules, stderr = _probe_main(
        "cp",
        "-q",
        str(source),
        str(destination),
        env=_cp_env(temporal_server, worker, TEMPORAL_GRPC_META_X_TEAM="a"),
    )
    assert code == 0, stderr
    assert destination.read_bytes() == source.read_bytes()
    assert "temporalio.client" in modules


def test_up_server_records_its_http_port(tmp_path: Path, monkeypatch) -> None:
    """The dev server ``staccato up`` starts serves its HTTP API on the port it
    records, and a client pointed at that server (TEMPORAL_ADDRESS) finds it there.
    It records its UI port too: ``codec-server`` without ``--origin`` allows that UI
    (``up --ui-port``), not the default 8233."""
    from staccato import secrets
    from staccato.workers.devserver import recorded_http_port, start_dev_server
    from tests.servers.temporal_server import free_port

    port, ui_port = free_port(), free_port()
    server = start_dev_server(tmp_path, port=port, ui_port=ui_port)
    try:
        codec_server = subprocess.Popen(
            [sys.executable, "-m", "staccato.cli", "codec-server", "--port", str(free_port())],
            env={
                **os.environ,
                "STACCATO_HOME": str(tmp_path),
                "STACCATO_CODEC_KEY": secrets.new_key_text(),
            },
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert codec_server.stderr is not None
            said = codec_server.stderr.readline()
        finally:
            codec_server.kill()
            codec_server.wait(30)
        assert f"CORS for http://127.0.0.1:{ui_port}, http://localhost:{ui_port})" in said, said
        http_port = recorded_http_port(tmp_path, port)
        assert http_port is not None
        assert recorded_http_port(tmp_path, port + 1) is None  # another server's port
        monkeypatch.setenv("STACCATO_HOME", str(tmp_path))
        monkeypatch.setenv("TEMPORAL_ADDRESS", f"127.0.0.1:{port}")
        monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
        monkeypatch.delenv("STACCATO_TEMPORAL_HTTP", raising=False)
        found = light_client()
        assert found is not None and found.port == http_port

        async def namespaces() -> dict[str, Any]:
            return await found.call("GET", "/api/v1/namespaces/default")

        answer = asyncio.run(namespaces())
        assert answer["namespaceInfo"]["name"] == "default"
    finally:
        server.terminate()
        server.wait(30)


def test_light_client_module_loads_no_sdk() -> None:
    """Importing the light client (and what it uses) loads no part of the SDK."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, staccato.light_client, staccato.cli.commands; "
            "print(sorted(m for m in sys.modules if m.startswith('temporalio')))",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


async def test_submit_without_workers_warns_alike(temporal_server, tmp_path: Path) -> None:
    """``submit`` on a task queue no worker polls prints the transfer id and the same
    "no worker" warning whether the light client or the SDK's started it."""
    said: list[tuple[str, str]] = []
    ids: list[str] = []
    for light in ("1", "0"):
        destination = tmp_path / f"dst-{light}.bin"
        done = subprocess.run(
            [sys.executable, "-m", "staccato.cli", "submit", str(tmp_path / "s"), str(destination)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
            env={
                **os.environ,
                "TEMPORAL_ADDRESS": temporal_server.address,
                "TEMPORAL_NAMESPACE": "default",
                "STACCATO_TASK_QUEUE": "light-client-nobody",
                "STACCATO_TEMPORAL_HTTP": temporal_server.http_address,
                "STACCATO_LIGHT_CLIENT": light,
            },
        )
        assert done.returncode == 0, done.stderr
        ids.append(done.stdout.strip())
        said.append((re.sub(r"staccato-[0-9a-f]{32}", "ID", done.stdout), done.stderr))
    assert said[0] == said[1]
    assert said[0][0] == "ID\n"
    assert "no worker is polling task queue 'light-client-nobody'" in said[0][1]
    sdk = await StaccatoClient.connect(target_host=temporal_server.address, namespace="default")
    try:
        for workflow_id in ids:
            await sdk.temporal.get_workflow_handle(workflow_id).terminate("test: done")
    finally:
        await sdk.close()


async def test_quiet_cp_without_workers_warns_while_it_waits(
    temporal_server, tmp_path: Path
) -> None:
    """``cp -q`` on the light path asks for the task queue's pollers while it already
    waits for the end (no round trip before the wait): where no worker polls, the "no
    worker" warning still comes while the command waits, and the transfer waits."""
    source = tmp_path / "s"
    write_random(source, 1000)
    warning = tmp_path / "stderr.txt"
    with open(warning, "wb") as err:
        waiting = subprocess.Popen(
            [sys.executable, "-m", "staccato.cli", "cp", "-q", str(source), str(tmp_path / "d")],
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=REPO,
            env={
                **os.environ,
                "TEMPORAL_ADDRESS": temporal_server.address,
                "TEMPORAL_NAMESPACE": "default",
                "STACCATO_TASK_QUEUE": "light-client-nobody-cp",
                "STACCATO_TEMPORAL_HTTP": temporal_server.http_address,
            },
        )
    try:
        for _ in range(600):  # up to 60 s on a loaded machine
            if b"no worker is polling" in warning.read_bytes() or waiting.poll() is not None:
                break
            await asyncio.sleep(0.1)
        said = warning.read_text()
        assert "no worker is polling task queue 'light-client-nobody-cp'" in said, said
        assert waiting.poll() is None, said  # still waiting for the transfer's end
    finally:
        waiting.kill()
        waiting.wait(30)
    sdk = await StaccatoClient.connect(target_host=temporal_server.address, namespace="default")
    try:
        await sdk.temporal.get_workflow_handle(transfer_id(str(tmp_path / "d"))).terminate(
            "test: done"
        )
    finally:
        await sdk.close()
