"""One destination, two spellings: a directory named through a symbolic link.

The transfer id (the destination's lock) is derived from the destination's path, so
``/data/link/x`` and ``/data/real/x`` must never be two locks on one file: clients
name a local destination by its directory's real path, and the worker refuses a
destination whose directory is still named through a link (a start from any client).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from temporalio.client import WorkflowFailureError

from staccato.client import StaccatoClient, transfer_id
from tests.helpers import MiB, WorkerProcess, run_cli, sha256_file, write_random
from tests.test_lock import raw_client, raw_input


def test_cli_names_a_linked_directory_by_its_real_path(
    temporal_server, worker: WorkerProcess, data_dir: Path
) -> None:
    real = data_dir / "real"
    real.mkdir()
    os.symlink(real, data_dir / "link")
    source = data_dir / "src.bin"
    digest = write_random(source, 1 * MiB, seed=3)
    done = run_cli(
        "cp", "-q", str(source), str(data_dir / "link" / "x.bin"),
        address=temporal_server.address, task_queue=worker.task_queue,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sha256_file(real / "x.bin") == digest
    shown = run_cli(
        "status", str(data_dir / "link" / "x.bin"), "--json",
        address=temporal_server.address, task_queue=worker.task_queue,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert f'"id": "{transfer_id(str(real / "x.bin"))}"' in shown.stdout
    assert (
        StaccatoClient.make_request(str(source), str(data_dir / "link" / "x.bin")).destination
        == (real / "x.bin").as_uri()
    )


async def test_worker_refuses_a_destination_named_through_a_link(
    temporal_server, worker: WorkerProcess, data_dir: Path
) -> None:
    real = data_dir / "real"
    real.mkdir()
    os.symlink(real, data_dir / "link")
    source = data_dir / "src.bin"
    write_random(source, 64 * 1024, seed=4)
    linked = (data_dir / "link" / "y.bin").as_uri()
    plain = await raw_client(temporal_server.address)
    data = raw_input(str(source), str(real / "y.bin"))
    data["destination"] = linked  # what a client that resolves nothing sends
    with pytest.raises(WorkflowFailureError) as failure:
        await plain.execute_workflow(
            "TransferWorkflow",
            data,
            id=transfer_id(linked),
            task_queue=worker.task_queue,
        )
    cause = failure.value.cause
    message = getattr(cause, "message", str(cause))
    assert "symbolic link" in message and str(real / "y.bin") in message, message
    assert sorted(p.name for p in real.iterdir()) == []


def test_a_dataset_into_its_own_source_through_a_link_is_refused(
    temporal_server, worker: WorkerProcess, data_dir: Path
) -> None:
    """``cp -r LINK REAL/sub``, where LINK names REAL: the source and the destination
    overlap, though their texts do not; the copy would list its own output (and its
    temp files) without end. Refused with exit 2 before anything is written; so is a
    second root that is the first one through a link."""
    from staccato.dataset_requests import make_dataset_request
    from staccato.urls import InvalidURLError

    real = data_dir / "tree"
    (real / "a").mkdir(parents=True)
    (real / "a" / "f.bin").write_bytes(b"x" * 100)
    os.symlink(real, data_dir / "tree-link")
    refused = run_cli(
        "cp", "-r", str(data_dir / "tree-link"), str(real / "copy"),
        address=temporal_server.address, task_queue=worker.task_queue,
    )  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    assert "overlap" in refused.stderr and str(real / "copy") in refused.stderr
    assert not (real / "copy").exists()
    with pytest.raises(InvalidURLError, match="overlap"):
        make_dataset_request(str(real), str(data_dir / "tree-link" / "sub" / "deeper"))
    other = data_dir / "other"
    other.mkdir()
    os.symlink(other, data_dir / "other-link")
    with pytest.raises(InvalidURLError, match="one directory"):
        make_dataset_request(
            str(real),
            [str(other / "a" / "b"), str(data_dir / "other-link" / "a" / "b"), str(data_dir / "c")],
        )


def test_a_dataset_root_that_is_a_file_is_refused_up_front(data_dir: Path) -> None:
    """``cp -r DIR FILE``: refused before the dataset starts, naming the file (each
    file failed alone, some naming the wrong path)."""
    from staccato.dataset_requests import make_dataset_request
    from staccato.urls import InvalidURLError

    (data_dir / "tree").mkdir()
    (data_dir / "plain.txt").write_bytes(b"x")
    with pytest.raises(InvalidURLError, match="plain.txt is a file, not a directory"):
        make_dataset_request(str(data_dir / "tree"), str(data_dir / "plain.txt"))
    with pytest.raises(InvalidURLError, match="plain.txt is a file, not a directory"):
        make_dataset_request(
            str(data_dir / "tree"), [str(data_dir / "d1"), str(data_dir / "plain.txt")]
        )
