"""Datasets through S3: a local tree -> an S3 prefix -> a local tree compares equal
(names, sizes, checksums), a large file through a child transfer, a second run at a
sync level copies nothing; keys a file system cannot hold (``a//b``, ``x/./y``,
``..``) and a key that is also a "directory" fail per file with the reason while the
rest is copied."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from staccato.client import StaccatoClient
from staccato.datasets.models import DatasetState
from staccato.models import SyncLevel, TransferOptions
from tests.dataset_checks import MiB, make_tree, run_dataset, tree
from tests.s3.s3util import keys, open_uploads

OPTIONS = TransferOptions(chunk_size=5 * MiB, streams=2)


async def test_file_to_s3_to_file_round_trip(
    s3_client: StaccatoClient, s3: Any, bucket: str, data_dir: Path
) -> None:
    source, back = data_dir / "src", data_dir / "back"
    source.mkdir()
    files = make_tree(source, large=6 * MiB + 3)
    prefix = f"s3://{bucket}/run/"
    up = await run_dataset(
        s3_client, str(source), prefix, options=OPTIONS, small_file_max=1 * MiB
    )
    assert up.state == DatasetState.completed, up
    assert up.files_done == len(files)
    assert keys(s3, bucket) == sorted(f"run/{name}" for name in files)
    assert open_uploads(s3, bucket) == []
    down = await run_dataset(s3_client, prefix, str(back), options=OPTIONS, small_file_max=1 * MiB)
    assert down.state == DatasetState.completed, down
    assert tree(back) == tree(source)
    again = await run_dataset(
        s3_client,
        str(source),
        prefix,
        options=OPTIONS.model_copy(update={"sync_level": SyncLevel.checksum}),
        small_file_max=1 * MiB,
    )
    assert again.files_done == 0 and again.files_skipped == len(files), again


async def test_keys_a_file_system_cannot_hold_fail_per_file(
    s3_client: StaccatoClient, s3: Any, bucket: str, data_dir: Path
) -> None:
    bad = ["p/a//b", "p/x/./y", "p/up/../z", "p/" + "n" * 256]
    good = ["p/dir", "p/plus+", "p/%2B", "p/sp ace", "p/ok/deep"]
    collision = "p/dir/x"  # "dir" is a file by then: never replaced
    for key in bad + good + [collision]:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    s3.put_object(Bucket=bucket, Key="p/folder/", Body=b"")  # a folder marker: skipped
    destination = data_dir / "out"
    final = await run_dataset(s3_client, f"s3://{bucket}/p", str(destination), options=OPTIONS)
    assert final.state == DatasetState.completed_with_errors, final
    failed = {f.name: f.reason for f in final.failures}
    assert set(failed) == {k[2:] for k in bad} | {"dir/x"}, failed
    assert "empty path segment" in failed["a//b"] and "'.'" in failed["x/./y"]
    assert "NAME_MAX" in failed["n" * 256] and "not replaced" in failed["dir/x"]
    assert final.files_done == len(good)
    assert {name: size for name, (size, _) in tree(destination).items()} == {
        k[2:]: len(k) for k in good
    }
    assert (destination / "dir").read_bytes() == b"p/dir"
