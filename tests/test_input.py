"""Input a raw Temporal client can send to ``TransferWorkflow``: the workflow validates
it itself (undecodable payloads, invalid fields, relative paths) and fails at once with
a message naming the field, and a worker confined to ``STACCATO_FILE_ROOTS`` refuses
file endpoints outside those directories before any I/O."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.common import RawValue

from staccato.client import StaccatoClient
from tests.helpers import MiB, WorkerProcess, run_cli, sha256_file, write_random

#: seconds a run with bad input may take to fail: at once when quiet, several times
#: that at load 15; a workflow that raised instead of failing retries its task forever
FAIL_WITHIN_S = 60.0


def _json(value: Any) -> RawValue:
    return RawValue(Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(value).encode()))


async def _start_raw(client: StaccatoClient, task_queue: str, arg: RawValue) -> Any:
    """Start ``TransferWorkflow`` the way any Temporal client can, with ``arg`` as-is."""
    return await client.temporal.start_workflow(
        "TransferWorkflow",
        arg,
        id=f"raw-{uuid.uuid4().hex[:12]}",
        task_queue=task_queue,
    )


async def _failure(handle: Any) -> str:
    """Wait (bounded) for the run to end FAILED; return its failure message."""
    started = time.monotonic()
    with pytest.raises(WorkflowFailureError) as failure:
        await asyncio.wait_for(handle.result(), FAIL_WITHIN_S)
    elapsed = time.monotonic() - started
    description = await handle.describe()
    assert description.status == WorkflowExecutionStatus.FAILED
    cause = failure.value.cause
    message = getattr(cause, "message", None) or str(cause)
    print(f"failed in {elapsed:.1f} s: {message}")
    return message


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        (RawValue(Payload(metadata={"encoding": b"json/plain"}, data=b"{not json")), "JSON"),
        (RawValue(Payload(metadata={"encoding": b"binary/plain"}, data=b"\x00\xff")), "encoding"),
        (
            _json(
                {
                    "source": "file:///tmp/a",
                    "destination": "file:///tmp/b",
                    "options": {"chunk_size": -5},
                }
            ),
            "options.chunk_size",
        ),
        (
            # a size as text, which the Python API reads (TransferOptions), is refused
            # in a workflow's input as it always was: a history replays as it ran
            _json(
                {
                    "source": "file:///tmp/a",
                    "destination": "file:///tmp/b",
                    "options": {"chunk_size": "8MiB"},
                }
            ),
            "unable to parse string as an integer",
        ),
        (_json({"source": "file:///tmp/a"}), "destination: Field required"),
        (_json({"source": "../../etc/shadow", "destination": "file:///tmp/b"}), "../../etc/shadow"),
        (_json({"source": "file:///tmp/x/../../etc/shadow", "destination": "file:///tmp/b"}), ".."),
    ],
    ids=[
        "bad-json",
        "not-json",
        "negative-chunk-size",
        "text-chunk-size",
        "missing-destination",
        "relative",
        "dotdot",
    ],
)
async def test_malformed_raw_input_fails_at_once(
    client: StaccatoClient, payload: RawValue, named: str
) -> None:
    handle = await _start_raw(client, client.task_queue, payload)
    message = await _failure(handle)
    assert "invalid TransferWorkflow input" in message
    assert named in message


async def test_a_start_without_input_says_what_the_input_is(client: StaccatoClient) -> None:
    handle = await client.temporal.start_workflow(
        "TransferWorkflow", id=f"raw-{uuid.uuid4().hex[:12]}", task_queue=client.task_queue
    )
    message = await _failure(handle)
    assert "TransferWorkflow needs its input" in message, message
    assert '{"source": URL, "destination": URL, "options": {...}}' in message


@pytest.mark.parametrize(
    ("destination", "named"),
    [
        ("file://localhost/tmp/b", "a file URL names no host ('localhost')"),
        ("FILE:///tmp/b", "the scheme is written in lower case ('file', not 'FILE')"),
        ("file:///tmp/b/", "a trailing '/' is not part of an object's name"),
        ("file:///tmp/./b", "'.' and '..' segments are refused"),
    ],
)
async def test_a_non_canonical_url_is_refused_for_what_is_wrong(
    client: StaccatoClient, destination: str, named: str
) -> None:
    handle = await _start_raw(
        client, client.task_queue, _json({"source": "file:///tmp/a", "destination": destination})
    )
    message = await _failure(handle)
    assert "is not in canonical form" in message and named in message, message
    if "'.'" not in named:
        assert "'.' and '..'" not in message, message


@pytest.fixture(scope="module")
def rooted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("roots")


@pytest.fixture(scope="module")
def rooted_worker(
    temporal_server, rooted: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """A worker whose file endpoints are confined to ``rooted/in`` and ``rooted/in2``."""
    (rooted / "in").mkdir()
    (rooted / "in2").mkdir()
    (rooted / "out").mkdir()
    process = WorkerProcess(
        temporal_server.address,
        processes=2,
        env={"STACCATO_FILE_ROOTS": f"{rooted / 'in'}:{rooted / 'in2'}"},
        log_dir=tmp_path_factory.mktemp("rooted-worker"),
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


async def test_file_roots_confine_file_endpoints(
    client: StaccatoClient, rooted: Path, rooted_worker: WorkerProcess
) -> None:
    inside, outside = rooted / "in", rooted / "out"
    digest = write_random(inside / "ok.bin", 1 * MiB, seed=1)
    write_random(outside / "secret.bin", 1 * MiB, seed=2)
    (inside / "link.bin").symlink_to(outside / "secret.bin")
    queue = rooted_worker.task_queue

    # inside the roots: a normal transfer (sanity)
    ok = await _start_raw(
        client,
        queue,
        _json({"source": f"file://{inside}/ok.bin", "destination": f"file://{rooted}/in2/ok.bin"}),
    )
    await asyncio.wait_for(ok.result(), 60)
    assert sha256_file(rooted / "in2" / "ok.bin") == digest

    cases = [
        (f"file://{outside}/secret.bin", f"file://{inside}/a.bin", f"{outside}/secret.bin"),
        (f"file://{inside}/link.bin", f"file://{inside}/b.bin", f"{outside}/secret.bin"),
        (f"file://{inside}/ok.bin", f"file://{outside}/stolen.bin", f"{outside}/stolen.bin"),
    ]
    for source, destination, named in cases:
        handle = await _start_raw(
            client, queue, _json({"source": source, "destination": destination})
        )
        message = await _failure(handle)
        assert named in message and "STACCATO_FILE_ROOTS" in message, message
        assert str(inside) in message, message
    assert not (outside / "stolen.bin").exists()
    assert not (inside / "a.bin").exists() and not (inside / "b.bin").exists()


def test_malformed_file_roots_stop_the_worker(temporal_server, tmp_path: Path) -> None:
    for value, named in (
        ("data", "relative entry 'data'"),
        (f"{tmp_path}/none", "not an existing"),
    ):
        worker = run_cli(
            "worker",
            address=temporal_server.address,
            env={"STACCATO_FILE_ROOTS": value},
            timeout_s=30,
        )
        assert worker.returncode == 2, worker
        assert "STACCATO_FILE_ROOTS" in worker.stderr and named in worker.stderr, worker.stderr
