"""A dataset to several roots (``cp -r SRC D1 D2``) where one root fails: the dataset's
``bytes_done`` counts the bytes the other root received (a tester saw 0), for its
small files (written by batches) and its large ones (child transfers)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import MiB, WorkerProcess, run_cli


def test_a_failed_root_leaves_the_other_roots_bytes_counted(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    source = data_dir / "src"
    (source / "sub").mkdir(parents=True)
    sizes = {"a.bin": 1000, "sub/b.bin": 2345, "c.bin": 10, "large.bin": 2 * MiB + 3}
    for name, size in sizes.items():
        (source / name).write_bytes(b"x" * size)
    good = data_dir / "good"
    (data_dir / "blocker").write_bytes(b"a file where a directory would be")
    bad = data_dir / "blocker" / "dst"
    cli = {"address": temporal_server.address, "task_queue": worker.task_queue}
    done = run_cli(
        "cp", "-r", "--small-file-max", "1MiB", "--chunk-size", "1MiB",
        str(source), str(good), str(bad), **cli,
    )  # fmt: skip
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert (good / "large.bin").stat().st_size == sizes["large.bin"]
    shown = run_cli("status", "--json", str(good), **cli)
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    rows = {row["destination"]: row for row in data["destinations"]}
    assert rows[good.as_uri()]["bytes_done"] == sum(sizes.values()), data
    assert rows[bad.as_uri()]["files_failed"] == len(sizes), data
    assert data["files_failed"] == len(sizes), data
    assert data["bytes_done"] == sum(sizes.values()), data
