"""A dataset from an SFTP directory lists no write session's temp file or journal as
a source file (another transfer's in flight to that directory: tester T19, whose
``cp -r`` copied them as files); the other files are copied."""

from __future__ import annotations

from pathlib import Path

from staccato.client import StaccatoClient
from staccato.datasets.models import DatasetState
from tests.dataset_checks import run_dataset, tree_with_temp_names
from tests.test_dataset_temp_names import copied


async def test_an_sftp_source_lists_no_temp_name(
    sftp_client: StaccatoClient, sftp_url, data_dir: Path
) -> None:
    source, out = data_dir / "remote", data_dir / "out"
    files = tree_with_temp_names(source)
    final = await run_dataset(sftp_client, sftp_url(source), str(out), small_file_max=1024 * 1024)
    assert final.state == DatasetState.completed, final
    assert final.files_done == len(files) and final.files_failed == 0, final
    assert copied(out) == files
