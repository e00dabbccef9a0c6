"""Submitting again the source and destination of a running transfer with other options,
through the real CLI against the session's Temporal dev server and worker: options the
request hash leaves out (``--max-rate``, ``--priority``, ...) attach with a warning
naming them (requested vs running); copy options (chunk size, streams, verify, sync
level, ...) are refused as "destination busy", naming them (and not a run option that
differs too: no conflict); ``--if-busy wait`` queues
the new request behind the running one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO, MiB, WorkerProcess, run_cli, write_random

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
            "1MiB/s",
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
        # another rate is no conflict (alone it attaches): not named among the reasons
        assert "--max-rate" not in message, message
        # neither --streams nor --chunk-size: a local copy is not tuned
        # (links.tuned_link), so its request runs the fixed 4 x 16 MiB, named so (it
        # said "tuned per link requested"); a rate-capped one is not tuned either
        tuned = run_cli("submit", str(source), str(destination), **args)
        assert tuned.returncode == 1, tuned.stderr
        said = " ".join(tuned.stderr.split())
        assert (
            "--streams/--chunk-size 4 x 16.0 MiB (a local copy is not tuned) requested, "
            "2 x 1.0 MiB running"
        ) in said, tuned.stderr
        assert "tuned per link" not in said, tuned.stderr
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
        # the rate differs too, which alone attaches: no reason for the refusal
        assert "--max-rate" not in message, message
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
            "--max-rate", "1MiB/s", "--priority", "1", str(source), *destinations,
            **args,
        )  # fmt: skip
        message = " ".join(refused.stderr.split())
        assert refused.returncode == 1, refused.stderr
        assert f"fan-out group {group}" in message, message
        assert "--streams 3 requested, 2 running" in message, message
        assert "--verify size requested, checksum running" in message, message
        for same in ("--chunk-size", "--max-rate", "--priority"):  # equal, or no conflict
            assert same not in message, message
        reordered = run_cli("submit", *RUNNING, str(source), *reversed(destinations), **args)
        message = " ".join(reordered.stderr.split())
        assert reordered.returncode == 1, reordered.stderr
        assert "the same destinations given in another order" in message, message
    finally:
        stopped = run_cli("cancel", group, **args)
        assert stopped.returncode == 0, stopped.stderr


def test_resubmit_of_a_running_dataset_with_other_run_options_attaches_with_a_warning(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """``cp -r`` / ``submit -r`` of the same dataset with only another ``--max-rate`` or
    ``--priority`` (how to run, not what to write): attaches with the warning a single
    transfer gives, naming each (it was refused as busy); one rule for transfers,
    datasets and fan-out groups."""
    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    source = data_dir / "tree"
    source.mkdir()
    write_random(source / "big.bin", 8 * MiB, seed=44)  # a child transfer, paced
    fixed = ("--small-file-max", "1MiB", "--streams", "2", "--chunk-size", "1MiB")
    root = str(data_dir / "copy")
    first = run_cli("submit", "-r", *fixed, "--max-rate", "64KiB/s", str(source), root, **args)
    assert first.returncode == 0, first.stderr
    dataset = first.stdout.strip()
    try:
        again = run_cli(
            "submit", "-r", *fixed, "--max-rate", "1MiB/s", "--priority", "1", str(source),
            root, **args,
        )  # fmt: skip
        warning = " ".join(again.stderr.split())
        assert again.returncode == 0, again.stderr
        assert again.stdout.strip() == dataset, again.stdout
        assert f"warning: attached to running dataset {dataset}" in warning, warning
        assert "--max-rate 1.0 MiB/s requested, 64.0 KiB/s running" in warning, warning
        assert "--priority 1 requested, 3 running" in warning, warning
        # the very same request attaches and says so (it said nothing: tester)
        same = run_cli("submit", "-r", *fixed, "--max-rate", "64KiB/s", str(source), root, **args)
        assert same.returncode == 0 and same.stdout.strip() == dataset, same.stderr
        assert (
            f"attached to running dataset {dataset} (same request); nothing new started"
            in same.stderr
        ), same.stderr
        assert "warning" not in same.stderr, same.stderr
        # cp -r -q attaches too (and follows it): the warning, not "destination busy"
        process = subprocess.Popen(
            [sys.executable, "-m", "staccato.cli", "cp", "-r", "-q", *fixed, "--max-rate",
             "2MiB/s", str(source), root],
            stderr=subprocess.PIPE, text=True, cwd=REPO,
            env={**os.environ, "TEMPORAL_ADDRESS": temporal_server.address,
                 "TEMPORAL_NAMESPACE": "default", "STACCATO_TASK_QUEUE": worker.task_queue},
        )  # fmt: skip
        assert process.stderr is not None
        line = process.stderr.readline()  # the warning; then it follows quietly
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=60)
        assert f"warning: attached to running dataset {dataset}" in line, line + rest
        assert "busy" not in line + rest, line + rest
        assert process.returncode == 130, (process.returncode, rest)
    finally:
        stopped = run_cli("cancel", dataset, **args)
        assert stopped.returncode == 0, stopped.stderr


def test_resubmit_of_a_running_fan_out_group_with_other_run_options_attaches(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """A fan-out group submitted again with only another ``--max-rate``: attaches with
    the warning (it was refused: the group's hash kept ``max_rate``)."""
    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    source = data_dir / "fan.bin"
    write_random(source, 8 * MiB, seed=45)
    destinations = [str(data_dir / "fan-1.out"), str(data_dir / "fan-2.out")]
    first = run_cli("submit", *RUNNING, str(source), *destinations, **args)
    assert first.returncode == 0, first.stderr
    group = first.stdout.strip()
    try:
        fixed = ("--streams", "2", "--chunk-size", "1MiB")
        again = run_cli(
            "submit", *fixed, "--max-rate", "1MiB/s", str(source), *destinations, **args
        )
        warning = " ".join(again.stderr.split())
        assert again.returncode == 0, again.stderr
        assert again.stdout.strip() == group, again.stdout
        assert f"warning: attached to running fan-out group {group}" in warning, warning
        assert "--max-rate 1.0 MiB/s requested, 64.0 KiB/s running" in warning, warning
    finally:
        stopped = run_cli("cancel", group, **args)
        assert stopped.returncode == 0, stopped.stderr


async def test_a_dataset_and_a_group_started_by_the_previous_release_still_attach(
    client, data_dir: Path
) -> None:
    """A dataset or group started by 0.12.0 (its memo holds that release's request
    hash: the whole request's for a dataset; a group's without if_busy, priority and
    owner only) is attached to by the identical request from this release."""
    import hashlib

    from temporalio.common import WorkflowIDConflictPolicy

    from staccato.dataset_client import start_dataset
    from staccato.dataset_requests import make_dataset_request, request_id, start_fields
    from staccato.fanout_client import group_id, make_fan_out_request, start_group
    from staccato.models import TransferOptions
    from staccato.run_fields import DATASET_TYPE

    options = TransferOptions(streams=2, chunk_size=MiB, max_rate=64 * 1024)
    source = data_dir / "old-tree"
    source.mkdir()
    write_random(source / "big.bin", 8 * MiB, seed=46)
    request = make_dataset_request(
        str(source), str(data_dir / "old-copy"), options, small_file_max=MiB
    )
    fields = start_fields(request)
    old_hash = hashlib.sha256(request.model_dump_json().encode()).hexdigest()[:32]
    memo = {**fields.memo, "request_hash": old_hash}
    assert old_hash != fields.memo["request_hash"]  # the rule changed
    dataset = request_id(request)
    await client.temporal.start_workflow(
        DATASET_TYPE, request, id=dataset, task_queue=client.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL, memo=memo,
    )  # fmt: skip
    group = None
    try:
        again = await start_dataset(
            client, str(source), str(data_dir / "old-copy"), options, small_file_max=MiB
        )
        assert again == (dataset, True, ()), again
        fan = make_fan_out_request(
            str(source / "big.bin"), [str(data_dir / "g1"), str(data_dir / "g2")], options
        )
        data = fan.model_dump_json(exclude={"options": {"if_busy", "priority", "owner"}})
        group = group_id(fan)
        from staccato.fanout_client import GROUP_TYPE

        await client.temporal.start_workflow(
            GROUP_TYPE, fan, id=group, task_queue=client.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            memo={"request_hash": hashlib.sha256(data.encode()).hexdigest()[:32],
                  "source": fan.source},
        )  # fmt: skip
        assert await start_group(client, fan) == (group, True, ())
    finally:
        await client.cancel(dataset)
        if group is not None:
            await client.cancel(group)
