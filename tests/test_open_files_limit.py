"""An activity process raises its open-files soft limit (``RLIMIT_NOFILE``) as it starts
(``staccato.workers.lifeline.raise_open_files_limit``): a dataset batch to a local file
system holds an fd per file staged and not yet committed (up to 2 x ``GROUP_FILES``),
and a process may run several batches, which a common soft limit of 1,024 would cut
short with "Too many open files". Checked in a fresh interpreter started with a soft
limit of 200 (below one batch's 256 staged files), which runs the activity processes'
initializer and then a real ``copy_batch`` of 300 files (``ActivityEnvironment``) on
this machine's file system."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

FILES = 300
SIZE = 4096
LOW_LIMIT = 200

PROBE = """
import json, resource, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (LOW, hard))
from staccato.workers.lifeline import OPEN_FILES_WANTED, start_activity_process
start_activity_process({}, 1 << 20)
now, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
from temporalio.testing import ActivityEnvironment
from staccato.activities import dataset
from staccato.datasets.models import BatchFile, BatchInput
from staccato.models import TransferOptions
names = json.loads(sys.argv[3])
batch = BatchInput(
    source_root="file://" + sys.argv[1],
    destination_root="file://" + sys.argv[2],
    files=[BatchFile(name=name, size=SIZE) for name in names],
    options=TransferOptions(),
    key="open-files-limit-test",
)
result = ActivityEnvironment().run(dataset.copy_batch, batch)
wanted = OPEN_FILES_WANTED if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES_WANTED)
print(json.dumps([now, wanted, result.done, [f.reason for f in result.failures][:3]]))
"""


def test_an_activity_process_raises_its_open_files_limit_and_a_batch_copies_past_the_old_one(
    tmp_path: Path,
) -> None:
    source, destination = tmp_path / "src", tmp_path / "dst"
    bodies = {f"d{i // 100}/f{i:04d}": os.urandom(SIZE) for i in range(FILES)}
    past = time.time() - 3600
    for name, body in bodies.items():
        path = source / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        os.utime(path, (past, past))
    code = PROBE.replace("LOW", str(LOW_LIMIT)).replace("SIZE", str(SIZE))
    done = subprocess.run(
        [sys.executable, "-c", code, str(source), str(destination), json.dumps(sorted(bodies))],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    limit, wanted, copied, reasons = json.loads(done.stdout.strip().splitlines()[-1])
    assert limit == wanted > LOW_LIMIT, (limit, wanted)
    assert (copied, reasons) == (FILES, []), reasons
    for name, body in bodies.items():
        assert (destination / name).read_bytes() == body, name
    left = [p for p in destination.rglob("*") if ".staccato-" in p.name]
    assert left == [], left
