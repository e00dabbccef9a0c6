"""A dataset from an S3 prefix lists no key named as a write session's temp file or
journal (a tree copied there with another transfer's in flight: tester T19); the
other objects are copied."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from staccato.client import StaccatoClient
from staccato.datasets.models import DatasetState
from tests.dataset_checks import run_dataset, tree_with_temp_names
from tests.s3.s3util import put_with_crc32c
from tests.test_dataset_temp_names import copied


async def test_an_s3_source_lists_no_temp_name(
    s3_client: StaccatoClient, s3: Any, bucket: str, data_dir: Path
) -> None:
    local, out = data_dir / "tree", data_dir / "out"
    files = tree_with_temp_names(local)
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        put_with_crc32c(s3, bucket, f"src/{path.relative_to(local)}", path)
    final = await run_dataset(
        s3_client, f"s3://{bucket}/src/", str(out), small_file_max=1024 * 1024
    )
    assert final.state == DatasetState.completed, final
    assert final.files_done == len(files) and final.files_failed == 0, final
    assert copied(out) == files


async def test_an_s3_prefix_counts_and_names_the_keys_left_out(
    s3_client: StaccatoClient, s3: Any, bucket: str, data_dir: Path
) -> None:
    """S3 -> local: the keys whose names (or a "directory" on their path) are reserved
    for Staccato's temp files are left out, counted and named in the dataset's status;
    the others copied, completed (the tester's ``tp/``: only ``keep`` was copied, and
    nothing said why)."""
    from tests.test_dataset_temp_names import tree_with_reserved_names

    local, out = data_dir / "tree", data_dir / "out"
    files, left = tree_with_reserved_names(local)
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        put_with_crc32c(s3, bucket, f"tp/{path.relative_to(local)}", path)
    final = await run_dataset(s3_client, f"s3://{bucket}/tp/", str(out))
    assert final.state == DatasetState.completed, final
    assert final.files_done == len(files) and final.files_failed == 0, final
    assert copied(out) == files
    assert final.files_left_out == len(left), final
    assert sorted(final.left_out_names or []) == sorted(left), final
