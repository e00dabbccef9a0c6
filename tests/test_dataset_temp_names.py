"""A dataset lists no write session's temp file or journal as a source file
(``.NAME.<16 hex>.staccato-part`` / ``.staccato-journal``: another transfer's in
flight to the source directory, or one left there): they are left out, the others
copied (tester T19; the same for SFTP and S3 sources: tests/sftp, tests/s3). Before,
each was listed and copied as a file of the dataset."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from staccato.client import StaccatoClient
from staccato.datasets.models import DatasetState
from tests.dataset_checks import run_dataset, tree_with_temp_names


def copied(out: Path) -> dict[str, bytes]:
    """Every file under ``out`` (relative name -> bytes)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}


async def test_a_local_source_lists_no_temp_name(client: StaccatoClient, data_dir: Path) -> None:
    source, out = data_dir / "src", data_dir / "out"
    files = tree_with_temp_names(source)
    final = await run_dataset(client, str(source), str(out), small_file_max=1024 * 1024)
    assert final.state == DatasetState.completed, final
    assert final.files_done == len(files) and final.files_failed == 0, final
    assert copied(out) == files


def tree_with_reserved_names(root: Path) -> tuple[dict[str, bytes], list[str]]:
    """The tester's tree: two files whose names are reserved for our temp files, one
    file inside a directory so reserved (an SFTP session's writers directory), and two
    files to copy (one merely ending ``.staccato-part``); returns the files to copy
    (name -> bytes) and the names left out."""
    hex16 = "0123456789abcdef"
    files = {"keep": b"k\n", "user.staccato-part": b"u\n"}
    left = [
        f".lone.{hex16}.staccato-part",
        f".other.{hex16}.staccato-journal",
        f"d/.x.{hex16}.staccato-writers/w1",
    ]
    for name, data in [*files.items(), *((n, b"t\n") for n in left)]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files, left


def test_cp_r_says_and_counts_the_files_left_out_for_reserved_names(
    temporal_server, worker, tmp_path: Path
) -> None:
    """``cp -r`` of a tree holding names reserved for Staccato's temp files: the others
    are copied, exit 0, and the end line, ``status`` and ``status --json`` say how many
    were left out, why, and their names (a file inside a reserved directory too).
    Before, they were left out without a word, and the file in the writers directory
    was copied."""
    import json

    from tests.helpers import run_cli

    reason = "names reserved for Staccato's temp files"

    source, out = tmp_path / "tsrc", tmp_path / "tdst"
    files, left = tree_with_reserved_names(source)
    where = {"address": temporal_server.address, "task_queue": worker.task_queue}
    done = run_cli("cp", "-r", str(source), str(out), **where)
    assert done.returncode == 0, done.stderr
    assert copied(out) == files
    assert f"left out 3 files: {reason}" in done.stderr, done.stderr
    for name in left:
        assert name in done.stderr, done.stderr
    shown = run_cli("status", "--json", str(out), **where)
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["state"] == "completed", status
    assert status["files_total"] == 2 and status["files_left_out"] == 3, status
    assert sorted(status["left_out_names"]) == sorted(left), status
    listed = run_cli("list", **where)
    assert listed.returncode == 0, listed.stderr
    assert "2/2 files, 3 left out" in listed.stdout, listed.stdout
    text = run_cli("status", str(out), **where)
    assert text.returncode == 0, text.stderr
    assert f"left out           3 files: {reason}" in text.stdout, text.stdout


async def test_the_count_left_out_survives_continue_as_new(
    client: StaccatoClient, data_dir: Path
) -> None:
    """A dataset that continues as new (pages of 7, a small history limit) counts the
    names reserved for Staccato's temp files of every run's pages: 8 left out, in 8
    directories listed by different runs, and the first 5 named."""
    from staccato.dataset_client import submit_dataset
    from staccato.models import TransferOptions
    from tests.dataset_checks import wait_dataset

    source, out = data_dir / "src", data_dir / "out"
    files: dict[str, bytes] = {}
    left = []
    for d in range(8):
        for i in range(6):
            name = f"d{d}/f{i}"
            files[name] = f"{d}-{i}\n".encode()
        left.append(f"d{d}/.f0.0123456789abcdef.staccato-part")
    for name, data in [*files.items(), *((n, b"t\n") for n in left)]:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(data)
    dataset = await submit_dataset(
        client,
        str(source),
        str(out),
        TransferOptions(),
        page_size=7,
        batch_files=3,
        max_batches=2,
        max_children=1,
        history_limit=150,
    )
    final = await wait_dataset(client, dataset, timeout_s=180)
    assert final.state == DatasetState.completed, final
    assert final.runs >= 2, final
    assert copied(out) == files
    assert final.files_total == len(files) and final.files_left_out == len(left), final
    assert final.left_out_names == left[:5], final


async def test_the_count_left_out_survives_a_worker_sigkill(
    temporal_server, data_dir: Path
) -> None:
    """The worker SIGKILLed after the first page was listed (a paced batch under way),
    another started on its queue: the dataset completes with every name reserved for
    Staccato's temp files counted and named (the new worker rebuilds them from the
    listing's results in the history)."""
    from staccato.dataset_client import dataset_status, submit_dataset
    from staccato.models import TransferOptions
    from tests.dataset_checks import wait_dataset
    from tests.helpers import WorkerProcess

    source, out = data_dir / "src", data_dir / "out"
    files, left = tree_with_reserved_names(source)
    for i in range(40):
        files[f"big/f{i:02d}"] = bytes([i]) * 8192
        (source / "big").mkdir(exist_ok=True)
        (source / "big" / f"f{i:02d}").write_bytes(files[f"big/f{i:02d}"])
    first = WorkerProcess(temporal_server.address, processes=1, log_dir=data_dir)
    first.start()
    second: WorkerProcess | None = None
    try:
        client = await StaccatoClient.connect(
            target_host=temporal_server.address, namespace="default"
        )
        client.task_queue = first.task_queue
        dataset = await submit_dataset(
            client,
            str(source),
            str(out),
            # paced: ~330 KB at 32 KiB/s, ~10 s, so the kill comes mid-dataset
            TransferOptions(heartbeat_timeout_s=2, max_rate=32 * 1024),
            batch_files=8,
            max_batches=1,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = await dataset_status(client, dataset)
            if status.files_left_out and status.files_done:
                break
            assert status.state == DatasetState.running, status
            await asyncio.sleep(0.05)
        assert status.files_left_out, status  # counted before the kill (a page or more)
        assert status.files_done < len(files), status  # the kill comes mid-dataset
        first.kill()
        second = WorkerProcess(
            temporal_server.address, processes=1, log_dir=data_dir, task_queue=first.task_queue
        )
        second.start()
        final = await wait_dataset(client, dataset, timeout_s=180)
    finally:
        first.kill()
        if second is not None:
            second.stop()
    assert final.state == DatasetState.completed, final
    assert copied(out) == files
    assert final.files_left_out == len(left), final
    assert sorted(final.left_out_names or []) == sorted(left), final
