"""Datasets through S3: a local tree -> an S3 prefix -> another prefix -> a local tree
compares equal (names, sizes, checksums), a large file through a child transfer, a
second run at a sync level copies nothing; a name S3 cannot hold (over 1,024 bytes) fails alone with
the reason while the rest is copied. (SeaweedFS refuses or rewrites the keys a file
system cannot hold, ``a//b``, ``x/./y``, long segments, so that direction is held by
the listing contract and ``datasets.names``.)"""

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
    up = await run_dataset(s3_client, str(source), prefix, options=OPTIONS, small_file_max=1 * MiB)
    assert up.state == DatasetState.completed, up
    assert up.files_done == len(files)
    assert keys(s3, bucket) == sorted(f"run/{name}" for name in files)
    assert open_uploads(s3, bucket) == []
    # prefix to prefix on one store (server-side copies), then back to files
    copy = await run_dataset(
        s3_client, prefix, f"s3://{bucket}/copy", options=OPTIONS, small_file_max=1 * MiB
    )
    assert copy.state == DatasetState.completed and copy.files_done == len(files), copy
    prefix = f"s3://{bucket}/copy/"
    down = await run_dataset(s3_client, prefix, str(back), options=OPTIONS, small_file_max=1 * MiB)
    assert down.state == DatasetState.completed, down
    assert tree(back) == tree(source)
    again = await run_dataset(
        s3_client,
        str(source),
        f"s3://{bucket}/run/",
        options=OPTIONS.model_copy(update={"sync_level": SyncLevel.checksum}),
        small_file_max=1 * MiB,
    )
    assert again.files_done == 0 and again.files_skipped == len(files), again


async def test_a_name_s3_cannot_hold_fails_alone(
    s3_client: StaccatoClient, s3: Any, bucket: str, data_dir: Path
) -> None:
    source = data_dir / "src"
    long_name = "/".join(["s" * 250] * 5)  # 1,254 bytes: over S3's 1,024-byte keys
    good = ["plus+", "%2B", "sp ace", "ok/deep"]
    for name in [long_name, *good]:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(name.encode()[:50])
    final = await run_dataset(s3_client, str(source), f"s3://{bucket}/p", options=OPTIONS)
    assert final.state == DatasetState.completed_with_errors, final
    (failure,) = final.failures
    assert failure.name == long_name and "1024 bytes" in failure.reason, failure
    assert final.files_done == len(good)
    assert keys(s3, bucket) == sorted(f"p/{name}" for name in good)


def test_a_dataset_into_a_missing_bucket_fails_once_naming_it(
    temporal_server, s3_worker, s3: Any, data_dir: Path
) -> None:
    """``cp -r DIR s3://no-such-bucket/prefix/`` fails up front with the bucket's name,
    as a single transfer into it does: state failed, exit 1, no file listed as failed
    (it failed each of its N files with the same reason)."""
    import json

    from tests.helpers import run_cli

    source = data_dir / "src"
    for i in range(12):
        (source / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (source / f"d{i % 3}" / f"f{i}").write_bytes(b"x" * (100 + i))
    args = dict(address=temporal_server.address, task_queue=s3_worker.task_queue)
    missing = "no-such-bucket-ds"
    result = run_cli("cp", "-r", "-q", str(source), f"s3://{missing}/prefix/", **args)
    assert result.returncode == 1, result
    assert f"bucket {missing!r} does not exist" in result.stderr, result.stderr
    assert "create it first" in result.stderr and "Traceback" not in result.stderr
    status = run_cli("status", "--json", f"s3://{missing}/prefix/", **args)
    shown = json.loads(status.stdout)
    assert shown["state"] == "failed", shown
    assert f"bucket {missing!r} does not exist" in shown["error"], shown
    assert shown["files_failed"] == 0 and shown["failures"] == [], shown
    assert missing not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
