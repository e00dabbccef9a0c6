"""The moto the suite and ``try-endpoints`` start keeps a part's right ETag while other
clients list the upload (tests/servers/moto_locked.py): stock moto 5.2.6 computes it
unlocked over the part's one buffer, and a ListParts racing the UploadPart's answer
kept the MD5 of none or twice the part's bytes, for good. Staccato's publish then
refused the upload as "a part was replaced" and a tester's tuned 1 GiB copy (each part
PUT once) was copied again in full (tester74). Against stock moto this failed within
200-900 tries; the bound here is a few hundred tries, so it may pass on stock moto at
times: it guards the launcher, and Staccato's refusal of a real replaced part is
tests/s3/test_s3_replaced_part.py's."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from typing import Any

from tests.helpers import MiB

#: above moto's in-memory buffer (5 MiB - 1 KiB): the part's bytes sit in a temp file,
#: so reading them for the MD5 takes long enough for the race
CHUNK = bytes([1]) * (5 * MiB)
RIGHT = hashlib.md5(CHUNK, usedforsecurity=False).hexdigest()
TRIES = 300
SECONDS = 30.0


def test_a_part_listed_while_it_is_uploaded_keeps_its_etag(moto_s3: Any) -> None:
    s3 = moto_s3.client()
    bucket, key = f"race-{uuid.uuid4().hex[:12]}", "race.bin"
    s3.create_bucket(Bucket=bucket)
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    stop = threading.Event()

    def lister(client: Any) -> None:  # the other streams of a tuned copy, listing
        while not stop.is_set():
            client.list_parts(Bucket=bucket, Key=key, UploadId=upload)

    listers = [
        threading.Thread(target=lister, args=(moto_s3.client(),), daemon=True) for _ in range(4)
    ]
    for thread in listers:
        thread.start()
    wrong: list[str] = []
    deadline = time.monotonic() + SECONDS
    try:
        for _ in range(TRIES):
            if time.monotonic() > deadline:
                break
            put = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=CHUNK)
            assert put["ETag"].strip('"') == RIGHT, put["ETag"]
            listed = s3.list_parts(Bucket=bucket, Key=key, UploadId=upload)["Parts"][0]["ETag"]
            if listed.strip('"') != RIGHT:
                wrong.append(listed)
                break
    finally:
        stop.set()
        for thread in listers:
            thread.join(30)
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload)
    assert not wrong, f"moto listed part 1 with ETag {wrong[0]}, not the MD5 of its bytes {RIGHT}"
