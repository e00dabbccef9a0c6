"""The light client (:mod:`staccato.light_client`) for datasets: a plain ``cp -r`` /
``submit -r`` to one destination root starts exactly the run the SDK's client starts,
``cp -r -q`` waits for it through Temporal's HTTP API and loads no Temporal SDK, and
every other outcome (files failed, a busy root, an identical dataset running,
Ctrl-C) ends as the SDK path ends it."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from staccato.client import StaccatoClient
from staccato.dataset_client import submit_dataset
from staccato.dataset_requests import dataset_id, make_dataset_request
from staccato.datasets.models import DatasetState
from staccato.light_client import LightClient
from staccato.models import MiB, TransferOptions
from tests.dataset_checks import make_tree, tree
from tests.helpers import REPO
from tests.test_cli_startup import MAIN_PROBE, _probe_main
from tests.test_light_client import _cp_env, _started

#: a queue no worker polls: a dataset started there stays running, copying nothing
IDLE_QUEUE = "light-datasets-idle"


def _sdk_modules(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in ("temporalio", "httpx"))


async def _sdk(temporal_server: Any, task_queue: str = IDLE_QUEUE) -> StaccatoClient:
    client = await StaccatoClient.connect(target_host=temporal_server.address, namespace="default")
    client.task_queue = task_queue
    return client


async def test_light_dataset_start_is_the_sdk_start(temporal_server, tmp_path: Path) -> None:
    """The same dataset started by the light client and by the SDK's client (one
    after the other: the id is the root's lock) gives two start events equal in
    everything but the run: type, id, task queue, input bytes, memo (request hash),
    search attributes (non-ASCII roots), summary, priority, identity. The SDK's start
    while the light one runs attaches (same request hash). No worker: nothing runs."""
    source = tmp_path / "sé src"
    source.mkdir()
    destination = tmp_path / "dé dst"
    options = TransferOptions(streams=3, chunk_size=8 * MiB, owner="ops", max_rate=1e6)
    shape: dict[str, Any] = {"include": ["*.bin"], "exclude": ["tmp/*"], "small_file_max": MiB}
    request = make_dataset_request(str(source), str(destination), options, **shape)
    light = LightClient(
        "127.0.0.1", temporal_server.http_port, namespace="default", task_queue=IDLE_QUEUE
    )
    started = await light.start_dataset(request)
    assert started is not None and started.id == dataset_id(str(destination))

    sdk = await _sdk(temporal_server)
    try:
        handle = sdk.temporal.get_workflow_handle(started.id)
        attached = await submit_dataset(sdk, str(source), str(destination), options, **shape)
        assert attached == started.id
        assert (await handle.describe()).run_id == started.run_id  # nothing new started
        await handle.terminate("test: free the root")
        again = await submit_dataset(sdk, str(source), str(destination), options, **shape)
        assert again == started.id
        by_sdk_run = (await handle.describe()).run_id
        assert by_sdk_run != started.run_id
        by_sdk = _started(temporal_server, again, by_sdk_run)
        await handle.terminate("test: done")
    finally:
        await sdk.close()
    by_light = _started(temporal_server, started.id, started.run_id)
    assert by_light == by_sdk
    # and it is what it should be, not merely the same
    attributes = by_light["workflowExecutionStartedEventAttributes"]
    assert attributes["workflowType"]["name"] == "DatasetWorkflow"
    assert attributes["taskQueue"]["name"] == IDLE_QUEUE
    memo = {
        k: json.loads(base64.b64decode(v["data"])) for k, v in attributes["memo"]["fields"].items()
    }
    assert memo["source"] == request.source_root and memo["kind"] == "dataset"
    assert memo["destination"] == request.destination_root
    assert set(attributes["searchAttributes"]["indexedFields"]) == {
        "StaccatoSource",
        "StaccatoDestination",
        "StaccatoState",
    }


async def test_light_dataset_wait_follows_continued_runs(
    temporal_server, worker, data_dir: Path
) -> None:
    """A dataset that continues as new (a run per few pages) is waited for across
    its runs: the light client's status is the completed one, counts of every run."""
    source, destination = data_dir / "src", data_dir / "dst"
    source.mkdir()
    files = make_tree(source, small=30)
    request = make_dataset_request(
        str(source),
        str(destination),
        TransferOptions(chunk_size=1 * MiB),
        page_size=7,
        batch_files=3,
        max_batches=2,
        max_children=1,
        history_limit=150,
    )
    light = LightClient(
        "127.0.0.1", temporal_server.http_port, namespace="default", task_queue=worker.task_queue
    )
    started = await light.start_dataset(request)
    assert started is not None
    final = await asyncio.wait_for(light.dataset_completed(started.id, started.run_id), 120)
    assert final is not None, "the light client did not see the dataset complete"
    assert final.state == DatasetState.completed and final.runs > 1, final
    assert final.files_done == len(files) and final.files_failed == 0
    assert tree(destination) == tree(source)


def test_cp_r_quiet_on_the_light_path_loads_no_sdk(temporal_server, worker, data_dir: Path) -> None:
    """A real ``cp -r -q`` as the script runs it, with the HTTP API known: the tree
    arrives byte-identical, nothing is printed, exit 0, and neither Temporal's SDK
    nor httpx was imported; ``submit -r`` of another tree likewise prints the id."""
    source, destination = data_dir / "src", data_dir / "dst"
    source.mkdir()
    make_tree(source, large=2 * MiB + 3)  # a child transfer too (--small-file-max)
    code, modules, stderr = _probe_main(
        "cp",
        "-r",
        "-q",
        "--small-file-max",
        "1MiB",
        str(source),
        str(destination),
        env=_cp_env(temporal_server, worker),
    )
    assert code == 0, stderr
    assert stderr == ""
    assert tree(destination) == tree(source)
    assert "staccato.light_client" in modules
    assert _sdk_modules(modules) == []


async def test_submit_r_on_the_light_path_and_again_attaches(
    temporal_server, tmp_path: Path
) -> None:
    """``submit -r`` starts through the light client (no SDK loaded) and prints the
    dataset id; the same submission again (the dataset runs: nobody polls its queue)
    is refused to the light client and attached to by the SDK's: the same id, no new
    run."""
    source = tmp_path / "src"
    source.mkdir()
    destination = tmp_path / "dst"
    env = _cp_env_idle(temporal_server)
    code, modules, stderr = _probe_main("submit", "-r", str(source), str(destination), env=env)
    assert code == 0, stderr
    assert _sdk_modules(modules) == []
    again = subprocess.run(
        [sys.executable, "-m", "staccato.cli", "submit", "-r", str(source), str(destination)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        env={**os.environ, **env},
    )
    assert again.returncode == 0, again.stderr
    dataset = dataset_id(str(destination))
    assert again.stdout == f"{dataset}\n"
    sdk = await _sdk(temporal_server)
    try:
        runs = [w async for w in sdk.temporal.list_workflows(f"WorkflowId = '{dataset}'")]
        assert len(runs) == 1
        await sdk.temporal.get_workflow_handle(dataset).terminate("test: done")
    finally:
        await sdk.close()


def _cp_env_idle(temporal_server: Any, **extra: str) -> dict[str, str]:
    return {
        "TEMPORAL_ADDRESS": temporal_server.address,
        "TEMPORAL_NAMESPACE": "default",
        "STACCATO_TASK_QUEUE": IDLE_QUEUE,
        "STACCATO_TEMPORAL_HTTP": temporal_server.http_address,
        **extra,
    }


def _cp_r_quiet(
    temporal_server: Any, worker: Any, source: Path, destination: Path, light: str
) -> tuple[int, set[str], str]:
    """``staccato cp -r -q SOURCE DESTINATION`` with the light client allowed
    (``light``: ``1``) or not (``0``): exit code, modules loaded, stderr."""
    return _probe_main(
        "cp",
        "-r",
        "-q",
        str(source),
        str(destination),
        env=_cp_env(temporal_server, worker, STACCATO_LIGHT_CLIENT=light),
    )


def _normalised(text: str, data_dir: Path, light: str) -> str:
    """``text`` with what differs between the two runs' ids and paths made alike."""
    text = re.sub(r"staccato-dataset-[0-9a-f]{32}", "ID", text)
    text = text.replace(str(data_dir / f"dst-{light}"), "DST")
    return re.sub(r"[0-9.]+ (B|KiB)", "SIZE", text)


def test_cp_r_with_failed_files_says_what_the_sdk_path_says(
    temporal_server, worker, data_dir: Path
) -> None:
    """A dataset that ends ``completed_with_errors`` (a file where the source has a
    directory) exits 1 with the same lines whether the light client or the SDK's
    client (``STACCATO_LIGHT_CLIENT=0``) started and waited for it (the light client
    hands such an end to the SDK's)."""
    source = data_dir / "src"
    (source / "d").mkdir(parents=True)
    (source / "d" / "x").write_bytes(b"x")
    (source / "ok").write_bytes(b"fine")
    said: list[str] = []
    for light in ("1", "0"):
        destination = data_dir / f"dst-{light}"
        destination.mkdir()
        (destination / "d").write_bytes(b"someone else's")
        code, _, stderr = _cp_r_quiet(temporal_server, worker, source, destination, light)
        assert code == 1, stderr
        assert (destination / "ok").read_bytes() == b"fine"
        assert (destination / "d").read_bytes() == b"someone else's"
        said.append(_normalised(stderr, data_dir, light))
    assert said[0] == said[1]
    assert "failed: d/x: " in said[0]
    assert "staccato: error: dataset ID completed_with_errors: 1 file copied" in said[0]


@pytest.mark.parametrize("where", ["root", "inside"])
async def test_busy_root_says_what_the_sdk_path_says(
    temporal_server, worker, data_dir: Path, where: str
) -> None:
    """Another dataset running to the root (its lock: the same id) or inside it (the
    overlap query lists it): ``cp -r -q`` exits 1 with the SDK path's busy message,
    with or without the light client, and starts nothing."""
    other = data_dir / "other"
    other.mkdir()
    source = data_dir / "src"
    source.mkdir()
    (source / "f").write_bytes(b"f")
    destination = data_dir / "dst"
    held = destination if where == "root" else destination / "sub"
    sdk = await _sdk(temporal_server)
    try:
        holder = await submit_dataset(sdk, str(other), str(held))
        holder_run = (await sdk.temporal.get_workflow_handle(holder).describe()).run_id
        said: list[tuple[int, str]] = []
        for light in ("1", "0"):
            code, _, stderr = await asyncio.to_thread(
                _cp_r_quiet, temporal_server, worker, source, destination, light
            )
            said.append((code, stderr))
        assert said[0] == said[1]
        code, stderr = said[0]
        assert code == 1, stderr
        assert "destination busy: " in stderr and holder in stderr, stderr
        assert not destination.joinpath("f").exists()
        # nothing was started: the holder's run runs on, and nothing under the root's id
        assert (await sdk.temporal.get_workflow_handle(holder).describe()).run_id == holder_run
        if where == "inside":
            mine = dataset_id(str(destination))
            assert [w async for w in sdk.temporal.list_workflows(f"WorkflowId = '{mine}'")] == []
        await sdk.temporal.get_workflow_handle(holder).terminate("test: done")
    finally:
        await sdk.close()


async def test_sigterm_while_the_light_client_waits(temporal_server, tmp_path: Path) -> None:
    """SIGTERM while ``cp -r -q`` waits through the light client (the dataset never
    ends: nobody polls its queue): exit 143 with the "goes on" hint, the dataset runs
    on, and the SDK was never loaded."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "f").write_bytes(b"f")
    destination = tmp_path / "dst"
    dataset = dataset_id(str(destination))
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            MAIN_PROBE,
            json.dumps(["cp", "-r", "-q", str(source), str(destination)]),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, **_cp_env_idle(temporal_server)},
    )
    sdk = await _sdk(temporal_server)
    try:
        for _ in range(600):  # started (and so waiting) within 60 s
            listed = [w async for w in sdk.temporal.list_workflows(f"WorkflowId = '{dataset}'")]
            if listed or process.poll() is not None:
                break
            await asyncio.sleep(0.1)
        assert listed, "the dataset was not started"
        process.send_signal(signal.SIGTERM)
        out, err = await asyncio.to_thread(process.communicate, timeout=60)
        assert process.returncode == 143, (process.returncode, err)
        # listed at the server before the start call's answer reached the client (a
        # loaded machine): it was still starting, and says the dataset may run on
        assert (
            f"dataset {dataset} goes on" in err
            or f"while starting dataset {dataset}; it may be running" in err
        ), err
        assert f"staccato watch {dataset}" in err and f"staccato cancel {dataset}" in err, err
        (line,) = [ln for ln in out.splitlines() if ln.startswith("PROBE ")]
        modules = set(json.loads(line.removeprefix("PROBE "))["modules"])
        assert _sdk_modules(modules) == []
        description = await sdk.temporal.get_workflow_handle(dataset).describe()
        assert description.status is not None and description.status.name == "RUNNING"
        await sdk.temporal.get_workflow_handle(dataset).terminate("test: done")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        await sdk.close()
