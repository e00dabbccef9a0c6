"""A dataset whose S3 source hangs *while it is listed* (the server SIGSTOPped: it
accepts connections and answers nothing) fails soon after ``--retry-for`` with a
reason naming the source it lists ("listing s3://...: the server did not answer"),
which ``cp -r`` (exit 1) and ``status`` (text and JSON) show.

Before, ``list_entries`` had no hang watch: each attempt hung until its heartbeat
timeout and Temporal's schedule-to-close deadline ended the listing with its own
words ("Not enough time to schedule next retry..." / "activity ScheduleToClose
timeout"), naming nothing (tester T13). Server: the session's SeaweedFS, stopped and
resumed (always, in a ``finally``).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from staccato.client import StaccatoClient
from tests.helpers import WorkerProcess, run_cli, stopped_process_tree, write_random
from tests.s3.conftest import MeteredSeaweedS3
from tests.s3.s3util import put_with_crc32c

#: a correctness bound, not a speed one: ``cp -r`` returns once the dataset ended
CP_WITHIN_S = 240.0


async def test_a_source_hung_while_listed_fails_the_dataset_naming_it(
    s3_client: StaccatoClient,
    s3_worker: WorkerProcess,
    temporal_server: Any,
    s3_server: MeteredSeaweedS3,
    s3: Any,
    bucket: str,
    data_dir: Path,
) -> None:
    for i in range(5):
        path = data_dir / f"f{i}.bin"
        write_random(path, 4096, seed=900 + i)
        put_with_crc32c(s3, bucket, f"src/f{i}.bin", path)
    source = f"s3://{bucket}/src/"
    shown_source = f"s3://{bucket}/src"  # the dataset's root, as status shows it
    out = data_dir / "out"
    args: dict[str, Any] = dict(address=temporal_server.address, task_queue=s3_worker.task_queue)
    assert s3_server.pid is not None, "the S3 server is not running"
    with stopped_process_tree(s3_server.pid):
        done = await asyncio.to_thread(
            run_cli,
            "cp",
            "-r",
            "-q",
            "--retry-for",
            "10s",
            source,
            str(out),
            timeout_s=CP_WITHIN_S,
            **args,
        )
    print(f"cp -r: exit {done.returncode}; stderr: {done.stderr.strip()}")
    assert done.returncode == 1, done
    words = f"listing {shown_source}: the server did not answer"
    assert words in done.stderr, done.stderr
    assert "Not enough time" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    shown = run_cli("status", "--json", str(out), **args)
    assert shown.returncode == 0, shown
    status = json.loads(shown.stdout)
    assert status["state"] == "failed", status
    assert words in status["error"], status
    text = run_cli("status", str(out), **args)
    assert words in text.stdout, text
    # nothing was copied: the listing never answered
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]
