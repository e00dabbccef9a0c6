"""What a dataset's small file costs at an S3 server, counted at the server, per
request kind: one PutObject per file, and a ``--sync-level checksum`` rerun that asks
one HeadObject per file and never reads an object Staccato wrote (GetObject).

Two stores: SeaweedFS (its Prometheus request counters), which checks the CRC32C sent
with a PutObject, answers it, and keeps it (HeadObject ``ChecksumMode=ENABLED``); and
moto (its access log), which does none of that: it answers a PutObject with the
body's MD5 as ETag only, and accepts a wrong CRC32C. Before, every small file to moto
cost PutObject + 3 HeadObject + 1 GetObject (the read-back after the put: one
HeadObject by ``verify_object``, one by ``S3Driver.object_checksum``, one by
``segments_checksum``, then the GET), and a checksum rerun read every object back;
a first run with ``--sync-level`` took the multipart path (HeadObject for the sync
check, CreateMultipartUpload, UploadPart, ListParts, CompleteMultipartUpload,
HeadObject, then the check after publish).
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import crc32c
import pytest

from staccato.client import StaccatoClient
from staccato.datasets.models import DatasetState
from staccato.endpoints.s3.driver import MARKER, S3Driver
from staccato.models import SyncLevel, TransferOptions
from staccato.urls import parse_url
from tests.dataset_checks import MiB, run_dataset
from tests.s3.conftest import SETTLE_QUIET_S, MeteredSeaweedS3
from tests.s3.s3util import keys, open_uploads
from tests.servers.seaweedfs import MotoS3

FILES = 30
#: per dataset, besides the per-file requests: listing pages, HeadBucket per worker
#: process and minute, the destination root's checks
FIXED = 12
OPTIONS = TransferOptions(chunk_size=5 * MiB)
CHECKSUM = OPTIONS.model_copy(update={"sync_level": SyncLevel.checksum})

#: a werkzeug access-log line's request (an answer other than 200 is coloured: ANSI
#: escapes around the request line)
_ACCESS = re.compile(rb'"(?:\x1b\[[0-9;]*m)*([A-Z]+) (/[^ ?"]*)(\?[^ "\x1b]*)? HTTP/1\.[01]')


def _source(root: Path) -> Path:
    for i in range(FILES):
        path = root / f"d{i % 3}" / f"f{i:03}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes([i]) * (1000 + 37 * i))
    return root


class _MotoLog:
    """Requests moto logged for one bucket, by kind (``PUT``, ``HEAD``, ``GET``,
    ``POST``...; a listing or other bucket-level request is ``METHOD bucket``)."""

    def __init__(self, server: MotoS3, bucket: str) -> None:
        self.path = server.log_path
        self.bucket = bucket

    def counts(self) -> Counter[str]:
        found: Counter[str] = Counter()
        prefix = f"/{self.bucket}".encode()
        for match in _ACCESS.finditer(self.path.read_bytes()):
            method, path = match.group(1).decode(), match.group(2)
            if path == prefix or path == prefix + b"/":
                found[f"{method} bucket"] += 1
            elif path.startswith(prefix + b"/"):
                found[method] += 1
        return found

    def settled(self) -> Counter[str]:
        """:meth:`counts` once it stopped moving (bounded: 10 s)."""
        deadline = time.monotonic() + 10
        last = self.counts()
        while time.monotonic() < deadline:
            time.sleep(SETTLE_QUIET_S)
            now = self.counts()
            if now == last:
                return now
            last = now
        return last


def _seaweed_counts(server: MeteredSeaweedS3, bucket: str) -> Counter[str]:
    """SeaweedFS's request counters of ``bucket`` by kind, once they stopped moving."""

    def read() -> Counter[str]:
        found: Counter[str] = Counter()
        for name, labels, value in server.metrics():
            if name == "SeaweedFS_s3_request_total" and labels.get("bucket") == bucket:
                found[labels.get("type", "?")] += int(value)
        return found

    deadline = time.monotonic() + 10
    last = read()
    while time.monotonic() < deadline:
        time.sleep(SETTLE_QUIET_S)
        now = read()
        if now == last:
            return now
        last = now
    return last


def _delta(after: Counter[str], before: Counter[str]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


async def test_small_files_to_moto_cost_one_put_and_a_checksum_rerun_reads_none(
    profile_client: StaccatoClient, moto_s3: MotoS3, data_dir: Path
) -> None:
    s3: Any = moto_s3.client()
    bucket = f"rc-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    source = _source(data_dir / "src")
    log = _MotoLog(moto_s3, bucket)
    destination = f"s3://{bucket}/run?profile=moto"

    before = log.settled()
    up = await run_dataset(profile_client, str(source), destination, options=OPTIONS)
    assert up.state == DatasetState.completed and up.files_done == FILES, up
    first = _delta(log.settled(), before)
    assert keys(s3, bucket) == sorted(
        f"run/{p.relative_to(source)}" for p in source.rglob("*") if p.is_file()
    )
    for path in source.rglob("*"):
        if path.is_file():
            key = f"run/{path.relative_to(source)}"
            assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == path.read_bytes()
    # per file: the PutObject alone (was + 3 HeadObject + 1 GetObject, the read-back)
    assert first.get("PUT", 0) == FILES, first
    assert first.get("HEAD", 0) + first.get("GET", 0) == 0, first
    assert sum(first.values()) <= FILES + FIXED, first

    before = log.settled()
    again = await run_dataset(profile_client, str(source), destination, options=CHECKSUM)
    assert again.state == DatasetState.completed and again.files_skipped == FILES, again
    rerun = _delta(log.settled(), before)
    # per file: one HeadObject, whose answer carries the CRC32C Staccato stored with
    # the object (was: HeadObject x 2 + GetObject, the object read back)
    assert rerun.get("GET", 0) == 0, rerun
    assert rerun.get("HEAD", 0) <= FILES, rerun
    assert rerun.get("PUT", 0) == 0, rerun

    before = log.settled()
    sized = OPTIONS.model_copy(update={"sync_level": SyncLevel.size})
    again = await run_dataset(profile_client, str(source), destination, options=sized)
    assert again.state == DatasetState.completed and again.files_skipped == FILES, again
    rerun = _delta(log.settled(), before)
    # the batch's listing answers the size level: no request per file (was a HeadObject)
    assert rerun.get("HEAD", 0) + rerun.get("GET", 0) + rerun.get("PUT", 0) == 0, rerun
    assert sum(rerun.values()) <= FIXED, rerun
    assert open_uploads(s3, bucket) == []


async def test_a_first_checksum_run_to_moto_puts_each_small_file_once(
    profile_client: StaccatoClient, moto_s3: MotoS3, data_dir: Path
) -> None:
    """With ``--sync-level``, a small file that is not up to date takes the one
    PutObject too (was: the multipart path's ~9 requests), and a key the batch's
    listing of the destination does not hold costs no HeadObject (was one, plus a
    HeadBucket to tell a missing key from a missing bucket)."""
    s3: Any = moto_s3.client()
    bucket = f"rc-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    source = _source(data_dir / "src")
    (source / "d0" / "f000.bin").write_bytes(b"changed")
    # not Staccato's, the same size, other bytes: compared by reading it back
    s3.put_object(Bucket=bucket, Key="run/d0/f000.bin", Body=b"CHANGED")
    log = _MotoLog(moto_s3, bucket)
    before = log.settled()
    up = await run_dataset(
        profile_client, str(source), f"s3://{bucket}/run?profile=moto", options=CHECKSUM
    )
    assert up.state == DatasetState.completed and up.files_done == FILES, up
    first = _delta(log.settled(), before)
    for path in source.rglob("*"):
        key = f"run/{path.relative_to(source)}"
        if path.is_file():
            assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == path.read_bytes()
    # per file: the PutObject; the sync check is one listing of the batch's range
    # (ListObjectsV2, a GET on the bucket), HeadObject + GetObject only for the key
    # it holds at the same size (not Staccato's: no CRC32C of ours to trust)
    assert first.get("PUT", 0) == FILES, first
    assert first.get("HEAD", 0) == 1 and first.get("GET", 0) == 1, first
    assert first.get("POST", 0) == 0, first
    assert sum(first.values()) <= FILES + FIXED, first


async def test_small_files_to_seaweedfs_cost_one_put_and_a_checksum_rerun_reads_none(
    s3_client: StaccatoClient, s3: Any, s3_server: MeteredSeaweedS3, bucket: str, data_dir: Path
) -> None:
    source = _source(data_dir / "src")
    destination = f"s3://{bucket}/run"
    before = _seaweed_counts(s3_server, bucket)
    up = await run_dataset(s3_client, str(source), destination, options=CHECKSUM)
    assert up.state == DatasetState.completed and up.files_done == FILES, up
    first = _delta(_seaweed_counts(s3_server, bucket), before)
    # per file the PutObject alone: the sync check is one listing of the batch's
    # range (was: the multipart path, ~215 GET + 60 POST + 30 PUT; SeaweedFS counts a
    # HEAD as a GET)
    assert first.get("PUT", 0) == FILES, first
    assert first.get("POST", 0) == 0, first
    assert first.get("GET", 0) + first.get("HEAD", 0) <= FIXED, first

    before = _seaweed_counts(s3_server, bucket)
    again = await run_dataset(s3_client, str(source), destination, options=CHECKSUM)
    assert again.state == DatasetState.completed and again.files_skipped == FILES, again
    rerun = _delta(_seaweed_counts(s3_server, bucket), before)
    # one HeadObject per file (its stored CRC32C), no object read back
    assert rerun.get("PUT", 0) == 0, rerun
    assert rerun.get("GET", 0) + rerun.get("HEAD", 0) <= FILES + FIXED, rerun


def test_a_metadata_crc32c_counts_only_while_the_etag_is_its_md5(
    moto_s3: MotoS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CRC32C Staccato stored in an object's metadata is the object's checksum only
    while the store's ETag (its MD5 of the stored bytes) equals the MD5 recorded with
    it: another writer's bytes under the key, even with our metadata copied onto
    them, are read back; an object without Staccato's marker is never trusted."""
    moto_s3.apply_env(monkeypatch)
    s3: Any = moto_s3.client()
    bucket = f"rc-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    driver = S3Driver()
    url = parse_url(f"s3://{bucket}/k.bin")
    body, other = b"ours" * 2500, b"them" * 2500
    crc = f"{crc32c.crc32c(body):08x}"
    # moto answers no CRC32C: its MD5 ETag vouches for the bytes
    assert driver.put_whole(url, body, crc, "marker") == crc
    info = driver.stat(url)
    assert info.extra["crc32c"] == crc and info.extra["crc32c_from"] == "metadata"
    assert driver.object_checksum(url, len(body), MiB, [(0, 1)], "crc32c") == crc

    metadata = s3.head_object(Bucket=bucket, Key="k.bin")["Metadata"]
    s3.put_object(Bucket=bucket, Key="k.bin", Body=other, Metadata=metadata)
    assert "crc32c" not in driver.stat(url).extra
    theirs = f"{crc32c.crc32c(other):08x}"
    assert driver.object_checksum(url, len(other), MiB, [(0, 1)], "crc32c") == theirs

    unmarked = {k: v for k, v in metadata.items() if k != MARKER}
    s3.put_object(Bucket=bucket, Key="k.bin", Body=body, Metadata=unmarked)
    assert "crc32c" not in driver.stat(url).extra


@pytest.mark.parametrize("store", ["seaweedfs", "moto"])
def test_a_listing_of_a_batch_range_finds_its_names_in_either_order(
    store: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``S3Driver.listed_objects``: the names found and those missing, on a store
    listing in file-tree order (SeaweedFS: ``d/a`` before ``d-x``) and one listing in
    byte order (moto: ``d-x`` before ``d/a``); keys outside the range do not matter."""
    server: Any = request.getfixturevalue("s3_server" if store == "seaweedfs" else "moto_s3")
    server.apply_env(monkeypatch)
    s3: Any = server.client()
    bucket = f"rc-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    for key in ["p/a", "p/d-x", "p/d/a", "p/d/b", "p/d0", "p/z", "q/d/c"]:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    driver = S3Driver()
    root = parse_url(f"s3://{bucket}/p")
    found = driver.listed_objects(root, ["d/a", "d-x", "d/c", "d0"], 100)
    assert found is not None and sorted(found) == ["d-x", "d/a", "d0"], found
    assert found["d/a"].size == 5 and found["d/a"].modified_at is not None
    assert driver.listed_objects(root, ["d/c", "e"], 100) == {}
    within = driver.listed_objects(root, ["d/a", "d/b", "d/c"], 100)
    assert within is not None and sorted(within) == ["d/a", "d/b"], within
    assert sorted(driver.listed_objects(root, ["a", "z", "zz"], 100) or {}) == ["a", "z"]
