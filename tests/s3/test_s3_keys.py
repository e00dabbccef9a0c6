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
import uuid
from pathlib import Path

from staccato.client import StaccatoClient, transfer_id
from staccato.models import TransferOptions

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
