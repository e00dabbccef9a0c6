"""A dataset lists no write session's temp file or journal as a source file
(``.NAME.<16 hex>.staccato-part`` / ``.staccato-journal``: another transfer's in
flight to the source directory, or one left there): they are left out, the others
copied (tester T19; the same for SFTP and S3 sources: tests/sftp, tests/s3). Before,
each was listed and copied as a file of the dataset."""

from __future__ import annotations

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
