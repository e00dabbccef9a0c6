"""Opaque keys such as ``a//b``: S3 keys are opaque strings. ``a//b.txt``, ``/lead.txt``, ``x/./y``, ``x/../z``,
``dir/`` and ``dir`` are six different objects; each round-trips exactly, none is
collapsed or merged by path normalisation.

Server: moto (server mode), reached through the profile ``moto`` of the
config-file-only worker (its endpoint from a ``services`` section). SeaweedFS cannot
hold these keys (it stores objects as file paths: it merges ``a//b.txt`` into
``a/b.txt`` and refuses ``x/./y``; see test_s3_cli.py for the clear error), so this is
one of the things moto is used for.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

from staccato.client import StaccatoClient, transfer_id
from staccato.models import TransferOptions
from tests.helpers import run_cli

KEYS = ["a//b.txt", "/lead.txt", "x/./y", "x/../z", "dir"]
OPTIONS = TransferOptions(chunk_size=5 * 1024 * 1024, streams=1)


async def test_keys_are_opaque(profile_client: StaccatoClient, moto_s3, data_dir: Path) -> None:
    s3 = moto_s3.client()
    bucket = f"c5-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    urls = {key: f"s3://{bucket}/{key}?profile=moto" for key in KEYS + ["dir/"]}
    assert len({transfer_id(url) for url in urls.values()}) == len(urls)  # six destinations

    uploads = []
    for number, key in enumerate(KEYS):
        path = data_dir / f"in-{number}"
        path.write_bytes(f"content of {key!r}".encode())
        uploads.append(await profile_client.submit(str(path), urls[key], OPTIONS))
    await asyncio.gather(*(profile_client.wait(t) for t in uploads))
    s3.put_object(Bucket=bucket, Key="dir/", Body=b"content of 'dir/'")  # a source only
    listed = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert listed == sorted(KEYS + ["dir/"])

    downloads = {}
    for number, key in enumerate(KEYS + ["dir/"]):
        target = data_dir / f"out-{number}"
        downloads[key] = (target, await profile_client.submit(urls[key], str(target), OPTIONS))
    await asyncio.gather(*(profile_client.wait(t) for _, t in downloads.values()))
    for key, (target, _) in downloads.items():
        assert target.read_bytes() == f"content of {key!r}".encode()
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == target.read_bytes()


def test_a_key_ending_in_slash_with_data_is_a_file_no_retry_can_copy(
    temporal_server, profile_worker, moto_s3, data_dir: Path
) -> None:
    """A non-empty key ending in '/' (``p/folder/``) is a file, not a folder marker nor
    a directory: to a local root it fails for its name ('empty path segment') and the
    end line gives no advice to re-run (a run without --retry-failed fails it the same
    way); after --retry-failed its reason is still the name's, not "failed as a
    directory". S3 -> S3 fails it with a reason that does not call it a folder marker.
    Before, the advice sent the user to a run without --retry-failed, and the retry
    called the file a directory. On moto: SeaweedFS stores such a key as a directory."""
    s3 = moto_s3.client()
    bucket = f"c5-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    args = dict(address=temporal_server.address, task_queue=profile_worker.task_queue)
    s3.put_object(Bucket=bucket, Key="p/folder/", Body=b"data")
    s3.put_object(Bucket=bucket, Key="p/ok.txt", Body=b"ok")
    destination = data_dir / "s3dst"
    for retry in ((), ("--retry-failed",)):
        done = run_cli(
            "cp", "-r", *retry, f"s3://{bucket}/p?profile=moto", str(destination), **args
        )
        assert done.returncode == 1, done
        assert "empty path segment" in done.stderr, done.stderr
        assert "without --retry-failed" not in done.stderr, done.stderr
        assert "lists no directory" not in done.stderr, done.stderr
        found = re.search(r"staccato-dataset-[0-9a-f]{32}", done.stderr)
        assert found is not None, done.stderr
        failures = run_cli("status", "--failures", found.group(0), **args)
        assert "empty path segment" in failures.stdout, failures
        assert "as a directory" not in failures.stdout + failures.stderr, failures
        assert "without --retry-failed" not in failures.stdout + failures.stderr, failures
    assert (destination / "ok.txt").read_bytes() == b"ok"
    to_s3 = run_cli(
        "cp", "-r", f"s3://{bucket}/p?profile=moto", f"s3://{bucket}/q/?profile=moto", **args
    )
    assert to_s3.returncode == 1, to_s3
    assert "'folder/'" in to_s3.stderr and "the key would end in '/'" in to_s3.stderr, to_s3
    assert "folder marker" not in to_s3.stderr, to_s3.stderr
    assert "--retry-failed" not in to_s3.stderr, to_s3.stderr
    listed = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert [k for k in listed if k.startswith("q/")] == ["q/ok.txt"], listed


def test_a_long_source_key_meets_the_local_destinations_limits(
    temporal_server, profile_worker, moto_s3, data_dir: Path
) -> None:
    """An S3 source key is checked against the destination's limits, never S3's own
    (newcomer tester, 0.35.0: a 4,270-byte key copied to a local directory failed with
    "cannot copy '...' to s3://demo/n: the key would be 4270 bytes; S3 keys are at most
    1024 bytes", naming the source as where it was copied to and S3's limit): the
    4,270-byte key fails with the local PATH_MAX, naming the destination; a 1,254-byte
    one (a local path holds it; no s3:// URL can name it) fails as one that cannot be
    read at the source, never as copied "to" it. On moto: SeaweedFS refuses keys over
    1,024 bytes."""
    s3 = moto_s3.client()
    bucket = f"c5-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    args = dict(address=temporal_server.address, task_queue=profile_worker.task_queue)
    too_long = "/".join(["s" * 250] * 17) + "/z"  # 4,268 bytes; n/...: 4,270
    over_s3 = "/".join(["f" * 250] * 5)  # 1,254 bytes
    for name in (too_long, over_s3, "short"):
        s3.put_object(Bucket=bucket, Key=f"n/{name}", Body=name.encode()[:50])
    destination = data_dir / "ndst"
    done = run_cli("cp", "-r", f"s3://{bucket}/n/?profile=moto", str(destination), **args)
    assert done.returncode == 1, done
    assert f"{too_long}' to file://{destination}: the path would be 4" in done.stderr, done
    assert "PATH_MAX 4096" in done.stderr, done.stderr
    assert f"{over_s3}' at s3://{bucket}/n/?profile=moto: " in done.stderr, done.stderr
    assert f"to s3://{bucket}" not in done.stderr, done.stderr
    assert "the key would be" not in done.stderr, done.stderr
    assert (destination / "short").read_bytes() == b"short"


def test_a_file_and_keys_under_its_name_advise_removing_what_is_in_the_way(
    temporal_server, profile_worker, moto_s3, data_dir: Path
) -> None:
    """An S3 source holding both ``p/g1.bin`` and ``p/g1.bin/x`` cannot land whole in a
    local root: ``g1.bin`` is a directory there (made for ``g1.bin/x``), so the file
    ``g1.bin`` fails, and a retry fails it the same way. The end line names it as
    blocked and says to remove what is in the way (or exclude it) before a retry,
    for the first run and for ``--retry-failed``; the other files are copied whole.
    Before (tester73 L3), the advice was a bare "copy the failed files again with
    --retry-failed", which cannot help."""
    s3 = moto_s3.client()
    bucket = f"c5-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    args = dict(address=temporal_server.address, task_queue=profile_worker.task_queue)
    s3.put_object(Bucket=bucket, Key="p/g1.bin", Body=b"the file")
    s3.put_object(Bucket=bucket, Key="p/g1.bin/x", Body=b"under it")
    s3.put_object(Bucket=bucket, Key="p/ok.txt", Body=b"ok")
    destination = data_dir / "dst"
    for retry in ((), ("--retry-failed",)):
        done = run_cli(
            "cp", "-r", *retry, f"s3://{bucket}/p?profile=moto", str(destination), **args
        )
        assert done.returncode == 1, done
        end = done.stderr.strip().splitlines()[-1]
        assert "1 failed" in end, done.stderr
        assert "remove what is in the way at the destination, then copy" in end, end
        assert "'g1.bin' is blocked by a directory or file at the destination" in end, end
        assert "--exclude g1.bin" in end, end
    assert (destination / "g1.bin" / "x").read_bytes() == b"under it"
    assert (destination / "ok.txt").read_bytes() == b"ok"
    assert sorted(p.name for p in destination.rglob("*")) == ["g1.bin", "ok.txt", "x"]
