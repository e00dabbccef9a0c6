"""A cancelled dataset's final status counts every file it published: the files of
batches that ended (or were stopped) as the cancel arrived used to be left out, so
``status`` said fewer files done than the destination held. Real worker, Temporal
and file systems; the batches paced (``max_rate``) so the cancel lands mid-run."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from staccato.client import StaccatoClient
from staccato.dataset_client import cancel_dataset, dataset_status, submit_dataset
from staccato.datasets.models import DatasetState, DatasetStatus
from staccato.models import TransferOptions
from tests.dataset_checks import MiB, wait_dataset
from tests.helpers import write_random

FILES = 300
SIZE = 3000


def _make_tree(source: Path) -> None:
    """:data:`FILES` files of :data:`SIZE` bytes in 7 directories under ``source``."""
    for i in range(FILES):
        path = source / f"d{i % 7}" / f"f{i:04d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_random(path, SIZE, seed=i)


def _published(root: Path) -> dict[str, int]:
    """Relative name -> size of every file at ``root`` but temp and journal files."""
    return {
        str(p.relative_to(root)): p.stat().st_size
        for p in root.rglob("*")
        if p.is_file() and ".staccato" not in p.name
    }


async def _cancel_mid_run(client: StaccatoClient, dataset: str, at_least: int) -> None:
    """Cancel ``dataset`` once its status says ``at_least`` files done (bounded)."""
    deadline = time.monotonic() + 120
    while True:
        status = await dataset_status(client, dataset)
        assert status.state in (DatasetState.running, DatasetState.scheduled), status
        if status.files_done >= at_least:
            break
        assert time.monotonic() < deadline, f"no {at_least} files done in 120 s: {status}"
        await asyncio.sleep(0.1)
    await cancel_dataset(client, dataset)


def _check_counts(status: DatasetStatus, destination: Path) -> None:
    published = _published(destination) if destination.exists() else {}
    assert status.state == DatasetState.cancelled, status
    assert 0 < len(published) < FILES, (len(published), status)  # stopped mid-run
    assert status.files_done == len(published), (status.files_done, len(published), status)
    assert status.bytes_done == sum(published.values()), status
    assert status.files_failed == 0, status.failures


async def test_cancelled_dataset_counts_every_file_published(
    client: StaccatoClient, data_dir: Path
) -> None:
    source, destination = data_dir / "src", data_dir / "dst"
    _make_tree(source)
    # ~20 files/s per batch, 4 batches in flight: the run lasts several seconds
    options = TransferOptions(chunk_size=1 * MiB, streams=1, max_rate=20_000)
    dataset = await submit_dataset(
        client, str(source), str(destination), options, batch_files=64, max_batches=4
    )
    await _cancel_mid_run(client, dataset, at_least=20)
    final = await wait_dataset(client, dataset, timeout_s=120)
    _check_counts(final, destination)
    # asked again (a replay of the closed run): the same counts
    again = await dataset_status(client, dataset)
    assert (again.files_done, again.bytes_done) == (final.files_done, final.bytes_done)
    # and the run wrote them into its memo as it ended (read when no worker answers)
    memo = await (await client.temporal.get_workflow_handle(dataset).describe()).memo()
    counts = memo["counts"]
    assert (counts["files_done"], counts["bytes_done"]) == (final.files_done, final.bytes_done)
    assert counts["files_listed"] == final.files_total, (counts, final)


async def test_cancelled_dataset_to_two_roots_counts_each_root(
    client: StaccatoClient, data_dir: Path
) -> None:
    """The same with two destination roots (``copy_batch_to_many``): each root's
    files done and bytes are the files at that root."""
    source = data_dir / "src"
    roots = [data_dir / "one", data_dir / "two"]
    _make_tree(source)
    options = TransferOptions(chunk_size=1 * MiB, streams=1, max_rate=20_000)
    dataset = await submit_dataset(
        client, str(source), [str(r) for r in roots], options, batch_files=64, max_batches=4
    )
    await _cancel_mid_run(client, dataset, at_least=20)
    final = await wait_dataset(client, dataset, timeout_s=120)
    assert final.state == DatasetState.cancelled, final
    assert final.destinations is not None and final.files_failed == 0, final
    for root, counts in zip(roots, final.destinations, strict=True):
        published = _published(root) if root.exists() else {}
        assert 0 < len(published) < FILES, (root, len(published))
        assert counts.files_done == len(published), (root, counts, len(published))
        assert counts.bytes_done == sum(published.values()), (root, counts)
    both = set(_published(roots[0])) & set(_published(roots[1]))
    assert final.files_done <= len(both) and final.files_done > 0, (final, len(both))


async def test_cancel_by_destination_root_and_no_pause_for_a_dataset(
    client: StaccatoClient, temporal_server, data_dir: Path
) -> None:
    """`staccato cancel ROOT` cancels the dataset writing ROOT, as `status ROOT` shows it
    (tester: "no transfer 'ROOT'", exit 1, while `status ROOT` showed it running);
    `pause ROOT` says a dataset cannot be paused, naming it, and changes nothing; once
    cancelled, ``cp -r --retry-failed`` names the sync level that copies the rest."""
    from tests.helpers import run_cli

    source, destination = data_dir / "src", data_dir / "dst"
    _make_tree(source)
    options = TransferOptions(chunk_size=1 * MiB, streams=1, max_rate=20_000)
    dataset = await submit_dataset(
        client, str(source), str(destination), options, batch_files=64, max_batches=4
    )
    args = {"address": temporal_server.address, "task_queue": client.task_queue}
    paused = run_cli("pause", str(destination), **args)
    assert paused.returncode == 1, paused
    assert f"destination root of dataset {dataset}" in paused.stderr, paused.stderr
    assert "cannot be paused" in paused.stderr, paused.stderr
    assert (await dataset_status(client, dataset)).state == DatasetState.running
    cancelled = run_cli("cancel", str(destination) + "/", **args)
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"(dataset {dataset})" in cancelled.stdout, cancelled.stdout
    final = await wait_dataset(client, dataset, timeout_s=120)
    assert final.state == DatasetState.cancelled, final
    missing = run_cli("cancel", str(data_dir / "nothing-here"), **args)
    assert missing.returncode == 1 and "no transfer" in missing.stderr, missing
    # --retry-failed has no failed files of a cancelled dataset to re-run: it says what
    # copies the rest (it said only "ended completed_with_errors": tester72)
    retried = run_cli("cp", "-r", "--retry-failed", str(source), str(destination), **args)
    assert retried.returncode == 2, retried
    said = " ".join(retried.stderr.split())
    assert f"dataset {dataset} is cancelled" in said, said
    assert "run the same command with --sync-level size" in said, said
