"""A batch's file that is published when its batch is stopped (the dataset's cancel)
counts as copied: the stop its heartbeat raised during the check after publish made
the file look not copied (published at the destination, not counted in the cancelled
dataset's files done). In process against SeaweedFS: the batch's beat raises the stop
once the object is at the destination, as a cancel landing right after the publish
does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from staccato.activities.object_copy import copy_object
from staccato.activities.stream_progress import StreamStopped
from staccato.endpoints.base import keepalive_hook
from staccato.models import TransferOptions, VerifyMode
from tests.helpers import MiB, write_random
from tests.s3.conftest import MeteredSeaweedS3
from tests.s3.s3util import keys

SIZE = 9 * MiB  # over a single PutObject's 8 MiB: a multipart upload, then its check


def test_a_stop_after_publish_still_counts_the_file(
    s3_env: MeteredSeaweedS3, s3: Any, bucket: str, tmp_path: Path
) -> None:
    source = tmp_path / "big.bin"
    write_random(source, SIZE, seed=5)
    stops = []

    def beat() -> None:
        if "big.bin" in keys(s3, bucket):  # published: the cancel lands now
            stops.append(1)
            raise StreamStopped("cancelled")

    options = TransferOptions(chunk_size=8 * MiB, verify=VerifyMode.checksum)
    with keepalive_hook(beat):
        outcome = copy_object(
            source.as_uri(), f"s3://{bucket}/big.bin", options, "b1-0", beat, SIZE
        )
    assert stops, "the check after publish never beat: the test proves nothing"
    assert outcome.copied and outcome.bytes == SIZE, outcome
    body = s3.get_object(Bucket=bucket, Key="big.bin")["Body"].read()
    assert body == source.read_bytes()
