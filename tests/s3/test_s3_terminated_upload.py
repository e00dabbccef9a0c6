"""A file -> S3 transfer terminated by hand (``temporal workflow terminate``, the
SDK's ``terminate()``) mid-copy runs no workflow code after it: its multipart upload
stays open (its parts stored). Tester t68 (1a): ``status`` had no ``left_behind``
while ``list_multipart_uploads`` showed the upload, and said ``bytes_done 0 B`` after
~12 MB were copied. Now ``status`` names the upload (its key and upload id, read from
the run's history: its ``prepare``'s result), in the words a failed run's uses, and
the bytes its committed segments moved (its memo) are its last known bytes.

Real Temporal, real worker, SeaweedFS; the copy paced (``max_rate``) so the terminate
lands mid-copy with segments committed. No timing asserts.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from staccato.client import StaccatoClient
from staccato.models import MiB, TransferOptions, TransferState
from tests.helpers import wait_for_status, write_random
from tests.s3.s3util import settled_uploads_on_key, uploads_on_key

SIZE = 256 * MiB
#: tuned: cut into more segments than streams (``tuning.segments_for``), so segments
#: are committed as it goes; 256 MiB at 4 MiB/s: ~64 s, so a terminate once 8 MiB are
#: committed lands mid-copy with a wide margin (64 MiB, ~16 s: at load in ci97 and
#: ci98 the copy had ended, or published, before the terminate; the assertion says
#: whether the object was published). The run is terminated: its size costs no time
OPTIONS = TransferOptions(tuning=True, max_rate=4 * MiB)


async def test_terminated_s3_transfer_names_its_upload_and_its_bytes(
    s3_client: StaccatoClient, s3: Any, bucket: str, data_dir: Path
) -> None:
    source = data_dir / "t1.bin"
    write_random(source, SIZE, seed=681)
    key = "t1.bin"
    transfer = await s3_client.submit(str(source), f"s3://{bucket}/{key}", OPTIONS)

    def committed(status: Any) -> bool:
        assert status.state not in (TransferState.completed, TransferState.failed), status
        return bool(uploads_on_key(s3, bucket, key))

    await wait_for_status(s3_client, transfer, committed, timeout_s=180)
    run_id = s3_client.submitted_run(transfer)
    assert run_id is not None
    handle = s3_client.temporal.get_workflow_handle(transfer, run_id=run_id)
    deadline = asyncio.get_running_loop().time() + 180
    # segments committed (the run's memo says so: its last known bytes once terminated)
    while (memo := await (await handle.describe()).memo()).get("bytes_committed", 0) < 8 * MiB:
        assert asyncio.get_running_loop().time() < deadline, memo
        await asyncio.sleep(0.2)
    before = await s3_client.status(transfer, run_id=run_id)
    await handle.terminate("test: 1a")
    uploads = await settled_uploads_on_key(s3, bucket, key)
    published = bool(s3.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount"))
    # the scene: the terminated run's upload stays
    assert len(uploads) == 1, (uploads, f"object at the key: {published}", before)
    ended = await s3_client.status(transfer, run_id=run_id)
    print(ended.to_json_dict() if hasattr(ended, "to_json_dict") else ended)
    assert ended.state == TransferState.failed, ended
    # the upload is named: its id and its key (it said nothing: tester t68 1a)
    assert ended.left_behind is not None, ended
    assert uploads[0] in ended.left_behind, (uploads, ended.left_behind)
    assert f"s3://{bucket}/{key}" in ended.left_behind, ended.left_behind
    assert "terminated" in ended.left_behind, ended.left_behind
    # the bytes its committed segments moved, not 0 B (tester t68: 0 B after ~12 MB)
    assert ended.bytes_done >= memo["bytes_committed"] >= 8 * MiB, (ended, memo)
