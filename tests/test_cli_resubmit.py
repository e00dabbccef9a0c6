"""Submitting again the source and destination of a running transfer with other options,
through the real CLI against the session's Temporal dev server and worker: options the
request hash leaves out (``--max-rate``, ``--priority``, ...) attach with a warning
naming them (requested vs running); copy options (chunk size, streams, verify, sync
level, ...) are refused as "destination busy", naming them; ``--if-busy wait`` queues
the new request behind the running one."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import MiB, WorkerProcess, run_cli, write_random

#: the running transfer's options: slow enough to still run while the test asks
RUNNING = ("--streams", "2", "--chunk-size", "1MiB", "--max-rate", "64KiB/s")


def test_resubmit_with_other_options_says_which_differ(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    source, destination = data_dir / "slow.bin", data_dir / "slow.out"
    write_random(source, 8 * MiB, seed=41)
    first = run_cli("submit", *RUNNING, str(source), str(destination), **args)
    assert first.returncode == 0, first.stderr
    transfer = first.stdout.strip()
    try:
        # the same copy with another rate and priority: attached, and told so
        fixed = ("--streams", "2", "--chunk-size", "1MiB")
        again = run_cli(
            "submit",
            *fixed,
            "--max-rate",
            "1MiB/s",
            "--priority",
            "1",
            str(source),
            str(destination),
            **args,
        )
        assert again.returncode == 0, again.stderr
        assert again.stdout.strip() == transfer, again.stdout
        warning = " ".join(again.stderr.split())
        assert "warning: attached to running transfer" in warning, warning
        assert "--max-rate 1.0 MiB/s requested, 64.0 KiB/s running" in warning, warning
        assert "--priority 1 requested, 3 running" in warning, warning
        assert "same request" not in warning, warning
        # the identical request: attached with a note, which -q leaves out (as cp -q)
        same = run_cli("submit", *RUNNING, str(source), str(destination), **args)
        assert same.returncode == 0 and same.stdout.strip() == transfer, same.stderr
        assert "attached to running transfer" in same.stderr and "warning" not in same.stderr
        hushed = run_cli("submit", "-q", *RUNNING, str(source), str(destination), **args)
        assert hushed.returncode == 0 and hushed.stdout.strip() == transfer, hushed.stderr
        assert hushed.stderr == "", hushed.stderr
        # -q still prints the warning that options given do not apply
        quiet = run_cli(
            "submit", "-q", *fixed, "--owner", "someone-else", str(source), str(destination),
            **args,
        )  # fmt: skip
        assert quiet.returncode == 0 and quiet.stdout.strip() == transfer, quiet.stderr
        assert "--owner someone-else requested" in " ".join(quiet.stderr.split()), quiet.stderr
        # copy options that differ: refused, each named with both values
        refused = run_cli(
            "cp",
            "--streams",
            "3",
            "--chunk-size",
            "2MiB",
            "--verify",
            "size",
            "--max-rate",
            "64KiB/s",
            str(source),
            str(destination),
            **args,
        )
        message = " ".join(refused.stderr.split())
        assert refused.returncode == 1, refused.stderr
        assert "destination busy" in message and "from the same source" in message, message
        assert "--chunk-size 2.0 MiB requested, 1.0 MiB running" in message, message
        assert "--streams 3 requested, 2 running" in message, message
        assert "--verify size requested, checksum running" in message, message
        assert "--max-rate" not in message, message  # the same there
        tuned = run_cli("submit", "--max-rate", "64KiB/s", str(source), str(destination), **args)
        assert tuned.returncode == 1, tuned.stderr
        assert "--streams/--chunk-size tuned per link requested, 2 x 1.0 MiB running" in (
            " ".join(tuned.stderr.split())
        ), tuned.stderr
    finally:
        stopped = run_cli("cancel", transfer, **args)
        assert stopped.returncode == 0, stopped.stderr


def test_resubmit_of_a_running_dataset_with_other_options_names_them(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """``submit -r`` of the same source and root while that dataset runs with other
    options: "destination busy", naming each option that differs (requested vs
    running)."""
    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    source = data_dir / "tree"
    source.mkdir()
    write_random(source / "big.bin", 8 * MiB, seed=42)  # a child transfer, paced
    (source / "a.txt").write_bytes(b"a")
    fixed = ("--small-file-max", "1MiB", "--streams", "2", "--chunk-size", "1MiB")
    first = run_cli(
        "submit", "-r", *fixed, "--max-rate", "64KiB/s", str(source), str(data_dir / "copy"),
        **args,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    dataset = first.stdout.strip()
    try:
        again = run_cli(
            "submit", "-r", *fixed, "--exclude", "*.txt", str(source), str(data_dir / "copy"),
            **args,
        )  # fmt: skip
        message = " ".join(again.stderr.split())
        assert again.returncode == 1, again.stderr
        assert f"dataset {dataset} from the same source" in message, message
        assert "--exclude *.txt requested, none running" in message, message
        assert "--max-rate none requested, 64.0 KiB/s running" in message, message
    finally:
        stopped = run_cli("cancel", dataset, **args)
        assert stopped.returncode == 0, stopped.stderr


def test_resubmit_of_a_running_fan_out_group_with_other_options_names_them(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """``cp SRC DST1 DST2`` while the same group runs with other options: refused,
    naming each option that differs (requested vs running), as for one destination;
    the same destinations in another order are named as such."""
    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    source = data_dir / "fan.bin"
    write_random(source, 8 * MiB, seed=43)
    destinations = [str(data_dir / "fan-1.out"), str(data_dir / "fan-2.out")]
    first = run_cli("submit", *RUNNING, str(source), *destinations, **args)
    assert first.returncode == 0, first.stderr
    group = first.stdout.strip()
    try:
        refused = run_cli(
            "cp", "--streams", "3", "--chunk-size", "1MiB", "--verify", "size",
            "--max-rate", "64KiB/s", str(source), *destinations,
            **args,
        )  # fmt: skip
        message = " ".join(refused.stderr.split())
        assert refused.returncode == 1, refused.stderr
        assert f"fan-out group {group}" in message, message
        assert "--streams 3 requested, 2 running" in message, message
        assert "--verify size requested, checksum running" in message, message
        assert "--chunk-size" not in message and "--max-rate" not in message, message
        reordered = run_cli("submit", *RUNNING, str(source), *reversed(destinations), **args)
        message = " ".join(reordered.stderr.split())
        assert reordered.returncode == 1, reordered.stderr
        assert "the same destinations given in another order" in message, message
    finally:
        stopped = run_cli("cancel", group, **args)
        assert stopped.returncode == 0, stopped.stderr
