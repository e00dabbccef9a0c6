"""Bad S3 input through the CLI: a message naming the bucket/key and what to fix;
exit 2 for usage errors (refused before anything starts), 1 for failed transfers;
nothing written and no upload left open. Server: SeaweedFS (``s3_server``) through the
env-configured worker; wrong credentials and read-only access via its profiles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers import run_cli, write_random
from tests.s3.conftest import MeteredSeaweedS3
from tests.s3.s3util import keys, open_uploads


@pytest.fixture
def cli(temporal_server, s3_worker):
    def run(*args: str):
        return run_cli(
            "cp", "--quiet", *args, address=temporal_server.address, task_queue=s3_worker.task_queue
        )

    return run


@pytest.fixture
def source(data_dir: Path) -> Path:
    path = data_dir / "src.bin"
    write_random(path, 4096, seed=31)
    return path


def _failed(result, *expected: str) -> None:
    assert result.returncode == 1, result
    for text in expected:
        assert text in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("destination", "expected"),
    [
        ("s3://Bad_Bucket/key", "invalid S3 bucket name 'Bad_Bucket'"),
        ("s3://ab/key", "invalid S3 bucket name 'ab'"),
        ("s3://{bucket}/dir/", "names no S3 object"),
        ("s3://{bucket}/dir/", "e.g. s3://{bucket}/dir/src.bin"),
        ("s3://{bucket}", "destination 's3://{bucket}' names a bucket, not an object"),
        ("s3://{bucket}", "e.g. s3://{bucket}/src.bin"),
        ("s3://{bucket}/k?region=x", "the query parameters understood are ?profile=NAME"),
    ],
)
def test_usage_errors_exit_2(
    cli, s3: Any, bucket: str, source: Path, destination: str, expected: str
) -> None:
    result = cli(str(source), destination.format(bucket=bucket))
    assert result.returncode == 2, result
    assert expected.format(bucket=bucket) in result.stderr, result.stderr
    assert keys(s3, bucket) == []


@pytest.mark.parametrize("given", ["s3://{bucket}", "s3://{bucket}/"])
def test_a_bare_bucket_as_source_exits_2_naming_it(
    cli, temporal_server, s3_worker, bucket: str, data_dir: Path, given: str
) -> None:
    """A single copy reads one object: a bucket alone is refused before anything
    starts, naming the URL given and the form expected (it started a transfer that
    failed on the worker, exit 1)."""
    url = given.format(bucket=bucket)
    destination = data_dir / "from-bucket.bin"
    result = cli(url, str(destination))
    assert result.returncode == 2, result
    message = " ".join(result.stderr.split())
    assert f"source '{url}' names a bucket, not an object" in message, message
    assert f"s3://{bucket}/KEY" in message and f"cp -r s3://{bucket}/" in message, message
    status = run_cli(
        "status", str(destination), address=temporal_server.address,
        task_queue=s3_worker.task_queue,
    )  # fmt: skip
    assert status.returncode == 1 and "no transfer" in status.stderr, status  # none started
    assert not destination.exists()


def test_no_such_bucket_as_source(cli, data_dir: Path) -> None:
    result = cli("s3://no-such-bucket-src/key", str(data_dir / "dst.bin"))
    _failed(result, "bucket 'no-such-bucket-src' does not exist", "check the bucket name")
    assert not (data_dir / "dst.bin").exists()


def test_no_such_bucket_as_destination(cli, s3: Any, source: Path) -> None:
    result = cli(str(source), "s3://no-such-bucket-dst/key")
    _failed(result, "bucket 'no-such-bucket-dst' does not exist", "create it first")
    names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert "no-such-bucket-dst" not in names  # SeaweedFS would have created it on PUT


def test_no_such_key(cli, bucket: str, data_dir: Path) -> None:
    result = cli(f"s3://{bucket}/missing/key.bin", str(data_dir / "dst.bin"))
    _failed(result, f"no such key 'missing/key.bin' in bucket '{bucket}'")


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        ("badkey", "InvalidAccessKeyId"),
        ("badsecret", "SignatureDoesNotMatch"),
    ],
)
def test_wrong_credentials(
    cli, s3: Any, bucket: str, source: Path, data_dir: Path, profile: str, expected: str
) -> None:
    s3.put_object(Bucket=bucket, Key="obj", Body=b"data")
    for args in (
        (f"s3://{bucket}/obj?profile={profile}", str(data_dir / "dst.bin")),
        (str(source), f"s3://{bucket}/new?profile={profile}"),
    ):
        result = cli(*args)
        _failed(result, expected, f"profile '{profile}'", f"s3://{bucket}/")
    assert keys(s3, bucket) == ["obj"] and open_uploads(s3, bucket) == []
    assert not (data_dir / "dst.bin").exists()


def test_access_denied_names_what_is_needed(
    cli, s3: Any, s3_server: MeteredSeaweedS3, bucket: str, source: Path, data_dir: Path
) -> None:
    """Profile ``readonly`` (a SeaweedFS identity with Read+List) may read, not write."""
    s3.put_object(Bucket=bucket, Key="obj", Body=b"data")
    result = cli(f"s3://{bucket}/obj?profile=readonly", str(data_dir / "dst.bin"))
    assert result.returncode == 0, result
    assert (data_dir / "dst.bin").read_bytes() == b"data"
    big = data_dir / "big.bin"
    write_random(big, 6 * 1024 * 1024, seed=32)
    empty = data_dir / "empty.bin"
    empty.write_bytes(b"")
    # one part, several parts (multipart uploads), 0 bytes (one empty PutObject at publish)
    for what, call in (
        (source, "CreateMultipartUpload"),
        (big, "CreateMultipartUpload"),
        (empty, "PutObject"),
    ):
        result = cli(str(what), f"s3://{bucket}/denied?profile=readonly", "--chunk-size", "5MiB")
        _failed(result, "access denied", f"{call} of s3://{bucket}/denied", "need s3:PutObject")
    assert keys(s3, bucket) == ["obj"] and open_uploads(s3, bucket) == []


def test_profile_not_configured(cli, bucket: str, data_dir: Path) -> None:
    result = cli(f"s3://{bucket}/obj?profile=nosuchprofile", str(data_dir / "dst.bin"))
    _failed(result, "AWS profile 'nosuchprofile'", "is not configured on this worker")


def test_key_the_store_refuses(cli, s3: Any, bucket: str, source: Path) -> None:
    """SeaweedFS refuses keys with '.' segments (S3 itself accepts them, see
    test_s3_keys.py on moto): the failure says so instead of silently writing another key."""
    result = cli(str(source), f"s3://{bucket}/x/./y")
    _failed(result, f"s3://{bucket}/x/./y", "refused")
    assert keys(s3, bucket) == []


def test_a_prefix_no_key_starts_with_is_a_usage_error(
    temporal_server, s3_worker, s3: Any, bucket: str, data_dir: Path
) -> None:
    """``cp -r s3://BUCKET/missing-prefix/ DST``: S3 has no directories, so a mistyped
    prefix lists as empty; it is refused naming the URL (exit 2), nothing is created
    at the destination. A prefix holding only a folder marker (an empty "folder")
    copies as an empty directory does: nothing, exit 0."""
    args = dict(address=temporal_server.address, task_queue=s3_worker.task_queue)
    s3.put_object(Bucket=bucket, Key="run/a.bin", Body=b"a")
    destination = data_dir / "out"
    for missing in (f"s3://{bucket}/rn/", f"s3://{bucket}/ru"):
        result = run_cli("cp", "-r", "-q", missing, str(destination), **args)
        assert result.returncode == 2, result
        named = f"source {missing.rstrip('/')} holds nothing to copy"
        assert named in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        assert not destination.exists()
    # an object given as the prefix: said so (it was "no key starts with 'run/a.bin/'")
    result = run_cli("cp", "-r", "-q", f"s3://{bucket}/run/a.bin", str(destination), **args)
    assert result.returncode == 2, result
    assert f"s3://{bucket}/run/a.bin is an object, not a prefix" in result.stderr, result.stderr
    assert not destination.exists()
    s3.put_object(Bucket=bucket, Key="empty/", Body=b"")
    empty = run_cli("cp", "-r", "-q", f"s3://{bucket}/empty/", str(destination), **args)
    assert empty.returncode == 0, empty
    assert not destination.exists() or list(destination.iterdir()) == []
    copied = run_cli("cp", "-r", "-q", f"s3://{bucket}/run", str(destination), **args)
    assert copied.returncode == 0, copied
    assert (destination / "a.bin").read_bytes() == b"a"


def test_a_failed_key_with_a_newline_stays_on_one_line(
    cli, s3: Any, bucket: str, source: Path
) -> None:
    """A single copy that fails writing a key holding a newline names the key as
    ``cp -r`` does, ``\\x0a`` (it printed the newline raw, splitting the error line)."""
    result = cli(str(source), f"s3://{bucket}/?key=bad%0Akey&profile=readonly")
    assert result.returncode == 1, result
    line = next(x for x in result.stderr.splitlines() if x.startswith("staccato: error: "))
    assert "access denied" in line and f"s3://{bucket}/bad\\x0akey" in line, result.stderr
    assert keys(s3, bucket) == []
