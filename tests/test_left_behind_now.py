"""``status`` says a failed transfer's ``left_behind`` only while it is true (tester
T14): the run writes what its stopped clean-up left once, as it ends, and ``status``
showed it ever after, also once the temp file and journal were deleted by hand as it
advises. A local destination's directory is made immutable mid-copy (needs root), so
the publish and the clean-up cannot remove anything. Real worker, Temporal and file
system."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

from staccato.client import StaccatoClient
from staccato.models import TransferOptions, TransferState
from tests.helpers import MiB, run_cli, wait_for_status, write_random

SIZE = 32 * MiB


def _left(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if ".staccato-" in p.name)


async def test_a_left_behind_deleted_by_hand_is_no_longer_said(
    client: StaccatoClient, temporal_server, data_dir: Path
) -> None:
    source, out = data_dir / "src.bin", data_dir / "out"
    write_random(source, SIZE, seed=41)
    out.mkdir()
    options = TransferOptions(chunk_size=4 * MiB, streams=1, max_rate=4 * MiB, retry_for_s=5)
    transfer = await client.submit(str(source), str(out / "x.bin"), options)
    args = {"address": temporal_server.address, "task_queue": client.task_queue}
    locked = False
    try:
        deadline = time.monotonic() + 120
        while not any(p.name.endswith(".staccato-part") and p.stat().st_size for p in _left(out)):
            assert time.monotonic() < deadline, "no temp file written in 120 s"
            await asyncio.sleep(0.1)
        subprocess.run(["chattr", "+i", str(out)], check=True)
        locked = True
        # the publish cannot rename, nor the clean-up remove (a permanent error): the
        # run ends failed, saying what it left
        ended = await wait_for_status(
            client,
            transfer,
            lambda s: s.state == TransferState.failed and s.left_behind is not None,
            timeout_s=120,
        )
        left = _left(out)
        assert left, "nothing was left behind: the test makes nothing to say"
        # true now: said, naming the temp file
        assert ended.left_behind and left[-1].name in ended.left_behind, (ended, left)
        subprocess.run(["chattr", "-i", str(out)], check=True)
        locked = False
        for path in left:  # deleted by hand, as the text advises
            path.unlink()
        now = await client.status(transfer)
        assert now.state == TransferState.failed, now
        assert now.left_behind is None, now  # no longer there: no longer said
        shown = json.loads(run_cli("status", "--json", transfer, **args).stdout)
        assert "left_behind" not in shown or shown["left_behind"] is None, shown
        text = run_cli("status", transfer, **args).stdout
        assert not any(line.startswith("left_behind") for line in text.splitlines()), text
        assert ".staccato-part" not in text, text
    finally:
        if locked:
            subprocess.run(["chattr", "-i", str(out)], check=True)
