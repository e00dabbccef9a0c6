"""A fan-out's ends say what a single transfer's say (a tester's findings): a
destination whose clean-up left its temp file behind (its directory made immutable
mid-copy) is named by ``cp``'s end and the group's text ``status`` in the words of a
single ``cp`` (``left behind: ...``; only the nested JSON said it), and a cancelled
group's destinations keep the bytes they had copied (they became null); and a
group has a rate and ETA, its own and each destination's (it had none)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from staccato.client import StaccatoClient
from staccato.fanout_client import status_lines
from staccato.models import GroupState, TransferOptions, TransferState
from tests.helpers import REPO, MiB, run_cli, write_random
from tests.servers.temporal_server import TemporalDevServer

SIZE = 32 * MiB


def _parts(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.name.endswith(".staccato-part")]


async def test_a_fan_out_names_what_a_destination_left_behind(
    client: StaccatoClient, temporal_server: TemporalDevServer, data_dir: Path
) -> None:
    source, fa, fb = data_dir / "a.bin", data_dir / "fa", data_dir / "fb"
    write_random(source, SIZE, seed=21)
    fa.mkdir()
    fb.mkdir()
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": temporal_server.address,
        "TEMPORAL_NAMESPACE": "default",
        "STACCATO_TASK_QUEUE": client.task_queue,
    }
    args = [str(source), str(fa / "x.bin"), str(fb / "x.bin"), "--max-rate", "4MiB"]
    cp = subprocess.Popen(
        [sys.executable, "-m", "staccato.cli", "cp", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 120
        while not any(p.stat().st_size > 0 for p in _parts(fb)):
            assert cp.poll() is None, cp.communicate()
            assert time.monotonic() < deadline, "no temp file in fb"
            await asyncio.sleep(0.1)
        subprocess.run(["chattr", "+i", str(fb)], check=True)
        out, err = cp.communicate(timeout=180)
        assert cp.returncode == 1, (out, err)
        left = _parts(fb)
        assert left, "nothing was left behind: the test makes nothing to say"
        assert "left behind: " in err and left[0].name in err, err
        group = re.search(r"staccato-group-[0-9a-f]+", out + err)
        assert group is not None, (out, err)
        shown = run_cli(
            "status", group.group(0), address=temporal_server.address,
            task_queue=client.task_queue,
        )  # fmt: skip
        assert "    left behind: " in shown.stdout and left[0].name in shown.stdout, shown.stdout
    finally:
        if cp.poll() is None:
            cp.kill()
            cp.communicate()
        subprocess.run(["chattr", "-i", str(fb)], check=True)


async def test_a_cancelled_groups_destinations_keep_their_bytes(
    client: StaccatoClient, data_dir: Path
) -> None:
    source = data_dir / "c.bin"
    write_random(source, SIZE, seed=22)
    destinations = [str(data_dir / "ca.bin"), str(data_dir / "cb.bin")]
    group = await client.fan_out(
        str(source), destinations, TransferOptions(max_rate=2 * MiB, chunk_size=1 * MiB)
    )
    deadline = time.monotonic() + 120
    while True:  # both copying, each with its rate (F20: a group had none)
        current = await client.group_status(group)
        if all((d.bytes_done or 0) > 0 and d.rate_bytes_per_s for d in current.destinations):
            break
        assert current.state == GroupState.running, current
        assert time.monotonic() < deadline, current
        await asyncio.sleep(0.2)
    rates = [d.rate_bytes_per_s or 0 for d in current.destinations]
    assert current.rate_bytes_per_s == round(sum(rates), 1), current
    etas = [d.eta_s for d in current.destinations]
    if None not in etas:
        assert current.eta_s == max(e for e in etas if e is not None), current
    lines = status_lines(current)
    assert sum(" at " in line for line in lines[2:]) == 2, lines  # the rate on each line
    await client.cancel(group)
    final = await asyncio.wait_for(client.wait_group(group), 120)
    assert final.state == GroupState.cancelled, final
    ended = await client.group_status(group)
    for row in ended.destinations:
        assert row.state == TransferState.cancelled, row
        assert row.bytes_total == SIZE, row
        assert row.bytes_done is not None and row.bytes_done > 0, row
