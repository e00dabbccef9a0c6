"""A dataset to S3 cancelled mid-run counts every object it published: ``status``
said fewer files done than the bucket held (tester61: 316 done, 328 objects; 825
done, 843 objects), each uncounted one equal to its source. A batch's file whose
PutObject the store had carried out, its answer not back yet when the cancel reached
the batch, stopped waiting for the answer: not counted, yet published.

Real worker, Temporal and SeaweedFS; the destination is reached through a relay
(profile ``gated``) that holds one PutObject's answer (the store has the object) while
the dataset is cancelled, as a loaded store answering slowly does; one root
(``copy_batch``), and that root with a local directory after it (``copy_batch_to_many``:
each root's counts are what it holds)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from staccato.client import StaccatoClient
from staccato.dataset_client import cancel_dataset, dataset_status, submit_dataset
from staccato.datasets.models import DatasetState
from staccato.models import TransferOptions
from tests.dataset_checks import MiB, wait_dataset
from tests.helpers import write_random
from tests.s3.conftest import GatedLink
from tests.s3.s3util import open_uploads

FILES = 3000
SIZE = 2000
#: the file whose PutObject's answer is held: the first of directory d2, about 800
#: files into the listing (d0, d1, d10, d2, ...)
HELD = "d2/f00002"


def _objects(s3: Any, bucket: str, prefix: str) -> dict[str, int]:
    """Key (less ``prefix``) -> size of every object under ``prefix``."""
    found: dict[str, int] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", ()):
            found[item["Key"][len(prefix) :]] = item["Size"]
    return found


def _files(root: Path) -> dict[str, int]:
    """Relative name -> size of every file under ``root`` but write sessions' temp files
    and journals."""
    return {
        str(p.relative_to(root)): p.stat().st_size
        for p in root.rglob("*")
        if p.is_file() and ".staccato" not in p.name
    }


@pytest.mark.parametrize("roots", ["s3", "s3+file"])
async def test_a_cancelled_dataset_to_s3_counts_every_object_published(
    profile_client: StaccatoClient,
    gated_link: GatedLink,
    s3: Any,
    bucket: str,
    data_dir: Path,
    roots: str,
) -> None:
    source, local = data_dir / "src", data_dir / "copy"
    for i in range(FILES):
        path = source / f"d{i % 11}" / f"f{i:05d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_random(path, SIZE + i % 97, seed=i)
    # ~150 files/s in all: the other batches are mid-run at the cancel
    options = TransferOptions(chunk_size=1 * MiB, streams=1, max_rate=300_000)
    prefix = "mixc/"
    destination = f"s3://{bucket}/{prefix}?profile=gated"
    gated_link.hold_answer(f"^PUT /{bucket}/{prefix}{HELD} HTTP/1.1".encode())
    try:
        dataset = await submit_dataset(
            profile_client,
            str(source),
            destination if roots == "s3" else [destination, str(local)],
            options,
        )
        assert await asyncio.to_thread(gated_link.answer_held.wait, 120), "no PutObject of HELD"
        assert HELD in _objects(s3, bucket, prefix)  # the store has it; its answer waits
        status = await dataset_status(profile_client, dataset)
        assert status.state == DatasetState.running, status
        await cancel_dataset(profile_client, dataset)
        # the old batch gave up on the answer at its next wait slice once it saw the
        # cancel (it closed the connection); the answer comes once that is known, or
        # after a bound a live store's slow answer stays within
        await asyncio.to_thread(gated_link.asker_gone.wait, 5)
    finally:
        gated_link.release()
    final = await wait_dataset(profile_client, dataset, timeout_s=120)
    assert final.state == DatasetState.cancelled, final
    published = _objects(s3, bucket, prefix)
    assert HELD in published and 0 < len(published) < FILES, len(published)  # mid-run
    for name, size in published.items():
        assert size == (source / name).stat().st_size, name
    assert open_uploads(s3, bucket) == []
    assert final.files_failed == 0, final.failures
    if roots == "s3":
        assert final.files_done == len(published), (final.files_done, len(published), final)
        assert final.bytes_done == sum(published.values()), final
        return
    assert final.destinations is not None, final
    at_s3, at_local = final.destinations
    assert at_s3.files_done == len(published), (at_s3, len(published))
    assert at_s3.bytes_done == sum(published.values()), at_s3
    copied = _files(local) if local.exists() else {}
    assert at_local.files_done == len(copied), (at_local, len(copied))
    assert at_local.bytes_done == sum(copied.values()), at_local
