"""CLI details: ``--version`` and ``-h`` everywhere, sizes/rates/times for people in one
unit system, a percentage on the bar, rate and ETA that are never stale after pause,
resume or cancel, and what Ctrl-C says."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from staccato.cli import render
from staccato.client import StaccatoClient
from staccato.models import TransferOptions, TransferState, TransferStatus
from tests.helpers import REPO, MiB, at_rest, wait_for_status, write_random
from tests.servers.nginx import NginxServer, nginx_fixture

COMMANDS = [
    "submit", "cp", "watch", "status", "list", "cancel", "pause", "resume",
    "worker", "up", "codec-server", "down",
]  # fmt: skip
GiB = 1024 * MiB


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "staccato.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


def _cli_env(temporal_server: Any, worker: Any) -> dict[str, str]:
    """This process's environment pointed at the suite's Temporal server and worker."""
    return {
        **os.environ,
        "TEMPORAL_ADDRESS": temporal_server.address,
        "TEMPORAL_NAMESPACE": "default",
        "STACCATO_TASK_QUEUE": worker.task_queue,
    }


def _start_following(
    kind: str, *args: str, env: dict[str, str]
) -> tuple[subprocess.Popen[str], str]:
    """Start ``staccato ARGS`` following what it starts; return the process and the id
    its first line names (``KIND ID: SOURCE -> DESTINATION``)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "staccato.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert process.stderr is not None
    first = process.stderr.readline()
    assert first.startswith(f"{kind} staccato-"), first
    return process, first.split()[1].rstrip(":")


def _status(**fields: object) -> TransferStatus:
    base: dict[str, object] = {
        "id": "staccato-0123",
        "state": TransferState.running,
        "source": "http://example.org/a.bin",
        "destination": "file:///tmp/a.bin",
        "bytes_total": GiB,
        "bytes_done": GiB // 2,
        "rate_bytes_per_s": 20.0 * MiB,
        "eta_s": 25.6,
        "streams": 4,
        "chunk_size": 16 * MiB,
        "checksum": None,
        "error": None,
        "phase": "copy",
    }
    base.update(fields)
    return TransferStatus.model_validate(base)


def test_version_and_short_help_on_every_command() -> None:
    top = _cli("--version")
    assert top.returncode == 0 and top.stdout.startswith("staccato "), top
    assert "-h, --help" in _cli("-h").stdout
    for command in COMMANDS:
        version = _cli(command, "--version")
        assert version.returncode == 0, (command, version.stderr)
        assert version.stdout == top.stdout, (command, version.stdout)
        short_help = _cli(command, "-h")
        assert short_help.returncode == 0, (command, short_help.stderr)
        usage = short_help.stdout.splitlines()[0]
        assert usage.startswith("Usage: ") and f" {command} " in usage, (command, usage)


def test_every_option_of_every_command_says_what_it_does() -> None:
    """``--help`` helps: no option of any command (subcommands of ``schedule`` and
    ``limit`` too) is listed bare, as ``worker -v`` was."""
    import typer

    from staccato.cli import app

    def bare(command: Any, path: tuple[str, ...]) -> list[str]:
        if hasattr(command, "commands"):  # a group: its commands
            return [
                found
                for name, sub in command.commands.items()
                for found in bare(sub, (*path, name))
            ]
        return [
            f"{' '.join(path)} {'/'.join(param.opts)}"
            for param in command.params
            if getattr(param, "param_type_name", "") == "option"
            and not getattr(param, "hidden", False)
            and not (param.help or "").strip()
        ]

    root = typer.main.get_command(app)
    assert len(getattr(root, "commands", {})) >= len(COMMANDS), "the walk must see them"
    assert bare(root, ()) == []


def test_status_text_in_units_for_people() -> None:
    lines = render.status_lines(_status())
    text = "\n".join(lines)
    assert f"bytes_total        1.0 GiB ({GiB} bytes)" in lines, text
    assert "bytes_done         512.0 MiB (50%)" in lines, text
    assert "rate               20.0 MiB/s" in lines, text
    assert "eta                26 s" in lines, text
    assert "chunk_size         16.0 MiB" in lines, text
    # the same units in the list row and the plain progress line
    assert "512.0 MiB / 1.0 GiB (50%) at 20.0 MiB/s, ETA 26 s" in render.list_row(_status())
    assert render.plain_line(_status()).startswith("running: 512.0 MiB / 1.0 GiB (50%)")


def _bar_text(*statuses: TransferStatus) -> str:
    """The bar as drawn last (a console that is no terminal draws it once, at the end)."""
    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None)
    with render.Bar(console) as bar:
        for status in statuses:
            bar.update(status)
    return out.getvalue().strip()


def test_bar_shows_percent_and_the_status_rate_only() -> None:
    running = _bar_text(_status())
    assert "(50%)" in running and "20.0 MiB/s" in running and "ETA 26 s" in running, running
    # paused right after running: no rate or ETA carried over from before the pause
    paused = _bar_text(
        _status(),
        _status(state=TransferState.paused, rate_bytes_per_s=None, eta_s=None),
    )
    assert "paused" in paused and "(50%)" in paused, paused
    assert "/s" not in paused and "ETA" not in paused, paused


SIZE = 96 * MiB
OPTIONS = TransferOptions(chunk_size=2 * MiB, streams=4)
slow_nginx = nginx_fixture("http_root", scope="function", extra_server_config="limit_rate 2m;")


async def test_rate_and_eta_after_pause_resume_and_cancel(
    client: StaccatoClient, slow_nginx: NginxServer, http_root: Path, data_dir: Path
) -> None:
    write_random(http_root / "control.bin", SIZE, seed=31)
    at_rest(http_root / "control.bin")
    transfer = await client.submit(
        slow_nginx.url("control.bin"), str(data_dir / "control.bin"), OPTIONS
    )
    await wait_for_status(
        client, transfer, lambda s: bool(s.rate_bytes_per_s) and s.eta_s is not None
    )
    await client.pause(transfer)
    paused = await client.status(transfer)
    assert paused.state == TransferState.paused, paused
    assert paused.rate_bytes_per_s is None and paused.eta_s is None, paused
    await client.resume(transfer)
    resumed_at = time.monotonic()
    # the new streams' first heartbeats bring a rate and an ETA (seconds; at load 15
    # new attempts and their first heartbeats come several times later)
    resumed = await wait_for_status(
        client,
        transfer,
        lambda s: bool(s.rate_bytes_per_s) and s.eta_s is not None,
        timeout_s=60,
    )
    assert resumed.state == TransferState.running, resumed
    print(f"rate and ETA {time.monotonic() - resumed_at:.1f} s after resume")
    await client.cancel(transfer)
    # from the cancel on, no rate nor ETA: the streams are stopping
    deadline = time.monotonic() + 30
    seen: list[TransferStatus] = []
    while time.monotonic() < deadline:
        current = await client.status(transfer)
        seen.append(current)
        if current.state == TransferState.cancelled:
            break
        await asyncio.sleep(0.05)
    assert seen[-1].state == TransferState.cancelled, seen[-1]
    stale = [s for s in seen if s.rate_bytes_per_s or s.eta_s is not None]
    assert not stale, stale[0]


def test_ctrl_c_says_the_transfer_goes_on(
    temporal_server, worker, slow_nginx: NginxServer, http_root: Path, data_dir: Path
) -> None:
    write_random(http_root / "interrupted.bin", SIZE, seed=32)
    at_rest(http_root / "interrupted.bin")
    env = _cli_env(temporal_server, worker)
    destination = data_dir / "interrupted.bin"
    process, transfer = _start_following(
        "transfer", "cp", "--chunk-size", "2MiB", slow_nginx.url("interrupted.bin"),
        str(destination), env=env,
    )  # fmt: skip
    time.sleep(1.5)  # let it follow a little (the bar or lines), then Ctrl-C
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130, (process.returncode, err)
    assert f"transfer {transfer} goes on" in err, err
    assert f"staccato watch {transfer}" in err and f"staccato cancel {transfer}" in err, err
    assert "error" not in err.split("goes on", 1)[1], err  # no "error: interrupted" after it
    # and it does go on
    status = _cli("status", transfer, env=env)
    assert "state              running" in status.stdout, status.stdout
    _cli("cancel", transfer, env=env)


def test_ctrl_c_while_following_a_dataset_says_it_goes_on(
    temporal_server, worker, data_dir: Path
) -> None:
    """Ctrl-C on ``cp -r`` stops the following, not the dataset: like a single
    transfer's, the message names the dataset and how to watch or cancel it (it said
    only "error: interrupted")."""
    source = data_dir / "tree"
    source.mkdir()
    write_random(source / "big.bin", 8 * MiB, seed=33)  # a child transfer, paced below
    env = _cli_env(temporal_server, worker)
    process, dataset = _start_following(
        "dataset", "cp", "-r", "--small-file-max", "1MiB", "--max-rate", "1MB/s",
        str(source), str(data_dir / "copy"), env=env,
    )  # fmt: skip
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130, (process.returncode, err)
    assert f"dataset {dataset} goes on" in err, err
    assert f"staccato watch {dataset}" in err and f"staccato cancel {dataset}" in err, err
    assert "error" not in err.split("goes on", 1)[1], err
    status = _cli("status", dataset, "--json", env=env)
    state = json.loads(status.stdout)["state"]
    assert state in ("scheduled", "running", "completed"), state  # it went on
    if state != "completed":
        cancelled = _cli("cancel", dataset, env=env)
        if cancelled.returncode != 0:
            # it ended between the status and the cancel: it went on to its end
            assert "is already completed" in cancelled.stderr, cancelled.stderr
            ended = json.loads(_cli("status", dataset, "--json", env=env).stdout)["state"]
            assert ended == "completed", (ended, cancelled.stderr)


def test_sigterm_while_following_says_it_goes_on_and_exits_143(
    temporal_server, worker, data_dir: Path
) -> None:
    """SIGTERM (``timeout 4 staccato cp -r ...``) on a following ``cp``: the same hint
    as Ctrl-C, naming the dataset, and exit 143 (128 + 15, as Ctrl-C's 130 is 128 + 2);
    it exited silently, killed by the signal."""
    source = data_dir / "tree"
    source.mkdir()
    # a child transfer, paced below: about 34 s at 1 MB/s, longer than the CLI
    # processes below take at load ~20 (8 MiB, 8 s, had ended before the cancel)
    write_random(source / "big.bin", 32 * MiB, seed=35)
    env = _cli_env(temporal_server, worker)
    process, dataset = _start_following(
        "dataset", "cp", "-r", "--small-file-max", "1MiB", "--max-rate", "1MB/s",
        str(source), str(data_dir / "copy"), env=env,
    )  # fmt: skip
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 143, (process.returncode, err)
    assert f"dataset {dataset} goes on" in err, err
    assert f"staccato watch {dataset}" in err and f"staccato cancel {dataset}" in err, err
    status = _cli("status", dataset, "--json", env=env)
    state = json.loads(status.stdout)["state"]
    assert state in ("scheduled", "running", "completed"), state  # it went on
    if state != "completed":
        cancelled = _cli("cancel", dataset, env=env)
        if cancelled.returncode != 0:
            # it ended between the status and the cancel: it went on to its end
            assert "is already completed" in cancelled.stderr, cancelled.stderr
            ended = json.loads(_cli("status", dataset, "--json", env=env).stdout)["state"]
            assert ended == "completed", (ended, cancelled.stderr)


def test_failures_of_a_single_transfer_says_what_it_takes(
    temporal_server, worker, data_dir: Path
) -> None:
    """``status --failures`` of a single transfer's id: exit 2 saying the option takes
    a dataset or group and the id is a transfer (it said "no dataset ID", which reads
    as if the id did not exist)."""
    env = _cli_env(temporal_server, worker)
    write_random(data_dir / "one.bin", 4096, seed=34)
    done = _cli("submit", "--json", str(data_dir / "one.bin"), str(data_dir / "one.out"), env=env)
    assert done.returncode == 0, done.stderr
    transfer = json.loads(done.stdout)["id"]
    shown = _cli("status", "--failures", transfer, env=env)
    assert shown.returncode == 2, shown.stderr
    assert f"{transfer} is a single transfer" in shown.stderr, shown.stderr
    unknown = _cli("status", "--failures", "staccato-nosuch", env=env)
    assert unknown.returncode == 1 and "staccato-nosuch" in unknown.stderr, unknown.stderr


def test_several_roots_json_names_every_root_beside_destination() -> None:
    """A dataset to two roots: ``status --json``'s ``destination`` stays one URL, the
    first root (the contract's key), and ``destination_roots`` (every root) comes
    right after it, so whoever reads ``destination`` sees the second root beside it
    (it came near the end, after the counts and failures); the human ``destination``
    line names both; one root's JSON has no ``destination_roots``."""
    from staccato.cli import datasets as datasets_cli

    one = _dataset_status()
    assert "destination_roots" not in one.to_json_dict()
    roots = ["file:///dst", "sftp://u@h:22/other"]
    two = one.model_copy(update={"destination_roots": roots})
    data = two.to_json_dict()
    keys = list(data)
    assert data["destination"] == roots[0], data
    assert keys[keys.index("destination") + 1] == "destination_roots", keys
    assert data["destination_roots"] == roots, data
    assert json.loads(json.dumps(data)) == data
    lines = datasets_cli.status_lines(two, failures=False)
    assert f"destination        {roots[0]} {roots[1]}" in lines, lines


def test_dataset_status_reads_as_a_transfers_does() -> None:
    """A dataset's human ``status`` uses the units of a transfer's (it printed
    ``bytes_total 317194240``, ``rate_bytes_per_s 753715.0``, ``listing_done False``,
    ``current ['d1/f22.bin', ...]``); ``--json`` keeps the numbers."""
    from staccato.cli import datasets as datasets_cli
    from staccato.datasets.models import DatasetState, DatasetStatus

    status = DatasetStatus(
        id="staccato-dataset-0123",
        state=DatasetState.running,
        source="file:///src",
        destination="file:///dst",
        files_total=40,
        files_done=10,
        files_skipped=0,
        files_failed=0,
        bytes_total=317194240,
        bytes_done=79298560,
        listing_done=False,
        rate_files_per_s=2.5,
        rate_bytes_per_s=753715.0,
        current=["d1/f22.bin", "d1/f23.bin"],
    )
    lines = datasets_cli.status_lines(status, failures=False)
    text = "\n".join(lines)
    assert "bytes_total        302.5 MiB (317194240 bytes)" in lines, text
    assert "bytes_done         75.6 MiB" in lines, text
    assert "rate               736.0 KiB/s" in lines, text
    assert "listing_done       no" in lines, text
    assert "current            d1/f22.bin, d1/f23.bin" in lines, text
    assert "[" not in text and "False" not in text and "753715" not in text, text
    assert status.to_json_dict()["rate_bytes_per_s"] == 753715.0
    done = status.model_copy(update={"listing_done": True, "eta_s": 300.0})
    lines = datasets_cli.status_lines(done, failures=False)
    assert "listing_done       yes" in lines and "eta                5 min 00 s" in lines, lines
    assert "bytes_done         75.6 MiB (25%)" in lines, lines


def test_a_run_that_ended_before_its_size_was_known_says_what_it_copied() -> None:
    """A failed or cancelled run whose size was never known (cancelled while it waited
    to start, or queued) shows ``0 B copied``: ``0 B / ?`` read as if it went on."""
    from staccato.cli import render
    from staccato.models import TransferState, TransferStatus

    ended = TransferStatus(
        id="staccato-x", state=TransferState.cancelled, source="file:///a",
        destination="file:///b", bytes_total=None, bytes_done=0, rate_bytes_per_s=None,
        eta_s=None, streams=4, chunk_size=16 * 1024 * 1024, checksum=None, error="cancelled",
    )  # fmt: skip
    assert render.progress_text(ended) == "0 B copied"
    assert "0 B copied" in render.list_row(ended) and "?" not in render.list_row(ended)
    running = ended.model_copy(update={"state": TransferState.running, "error": None})
    assert render.progress_text(running) == "0 B / ?"
    sized = ended.model_copy(update={"bytes_total": 4096, "bytes_done": 1024})
    assert render.progress_text(sized) == "1.0 KiB / 4.0 KiB (25%)"


def test_list_rows_line_up_past_the_longest_state() -> None:
    """tester72: ``completed_with_errors`` overflowed ``list``'s 10-wide state column,
    pushing that row's progress 11 characters right of a ``running`` row's: the
    column is as wide as the longest state, so a transfer's, a dataset's and a
    group's rows put what follows the state at one offset from their id."""
    from staccato.cli import datasets as datasets_cli
    from staccato.cli import fanout, render
    from staccato.datasets.models import DatasetState
    from staccato.models import GroupState, GroupStatus, TransferState, TransferStatus

    running = TransferStatus(
        id="staccato-x", state=TransferState.running, source="file:///a",
        destination="file:///b", bytes_total=4096, bytes_done=1024, rate_bytes_per_s=None,
        eta_s=None, streams=4, chunk_size=16 * 1024 * 1024, checksum=None, error=None,
    )  # fmt: skip
    transfer_row = render.list_row(running)
    dataset = _ended_with(("a", "connection reset"))
    assert dataset.state == DatasetState.completed_with_errors
    assert render.LIST_STATE_WIDTH >= max(len(state.value) for state in DatasetState)
    dataset_row = datasets_cli.list_row(dataset)
    group = GroupStatus(
        id="staccato-group-1", state=GroupState.running, source="file:///a", destinations=[]
    )
    group_row = fanout.list_row(group)

    def after_state(row: str, row_id: str) -> int:
        """The offset from the row's id of the first character after its state column."""
        start = len(row_id) + 2
        state_end = row.index(" ", start)
        return len(row) - len(row[state_end:].lstrip(" ")) - len(row_id)

    offsets = {
        after_state(transfer_row, running.id),
        after_state(dataset_row, dataset.id),
        after_state(group_row, group.id),
    }
    assert offsets == {2 + len("completed_with_errors") + 1}, (transfer_row, dataset_row, group_row)


def test_a_failed_run_with_all_bytes_counted_does_not_say_100_percent() -> None:
    """tester72: a failed 0-byte copy read ``failed: 0 B / 0 B (100%)``, as if done; a
    failed or cancelled run whose bytes are all counted says what it copied, in a
    transfer's line and a fan-out destination's row alike."""
    from staccato.cli import render
    from staccato.fanout_client import destination_line
    from staccato.models import DestinationStatus, TransferState, TransferStatus

    failed = TransferStatus(
        id="staccato-x", state=TransferState.failed, source="file:///a",
        destination="file:///b", bytes_total=0, bytes_done=0, rate_bytes_per_s=None,
        eta_s=None, streams=4, chunk_size=16 * 1024 * 1024, checksum=None, error="boom",
    )  # fmt: skip
    assert render.progress_text(failed) == "0 B copied"
    assert "%" not in render.plain_line(failed), render.plain_line(failed)
    verified = failed.model_copy(update={"bytes_total": 4096, "bytes_done": 4096})
    assert render.progress_text(verified) == "4.0 KiB copied"
    done = failed.model_copy(update={"state": TransferState.completed, "error": None})
    assert render.progress_text(done) == "0 B / 0 B (100%)"
    row = DestinationStatus(
        destination="file:///b", transfer_id="staccato-x", state=TransferState.failed,
        error="boom", bytes_done=0, bytes_total=0,
    )  # fmt: skip
    assert "%" not in destination_line(row) and "0 B copied" in destination_line(row)


def _dataset_status(**fields: object) -> Any:
    """A running dataset file:///src -> file:///dst, 1 of 2 files done (5 of 10
    bytes), its listing done; ``fields`` replace any of these."""
    from staccato.datasets.models import DatasetState, DatasetStatus

    base: dict[str, object] = {
        "id": "staccato-dataset-0123",
        "state": DatasetState.running,
        "source": "file:///src",
        "destination": "file:///dst",
        "files_total": 2,
        "files_done": 1,
        "files_skipped": 0,
        "files_failed": 0,
        "bytes_total": 10,
        "bytes_done": 5,
        "listing_done": True,
    }
    base.update(fields)
    return DatasetStatus.model_validate(base)


def _ended_with(*failures: tuple[str, str]) -> Any:
    """A dataset to file:///dst that ended completed_with_errors with ``failures``
    ((name, reason) pairs, every one kept)."""
    from staccato.datasets.models import DatasetState, DatasetStatus, FileFailure

    return DatasetStatus(
        id="staccato-dataset-0123",
        state=DatasetState.completed_with_errors,
        source="file:///src",
        destination="file:///dst",
        files_total=len(failures) + 1,
        files_done=1,
        files_skipped=0,
        files_failed=len(failures),
        bytes_total=10,
        bytes_done=5,
        listing_done=True,
        failures=[FileFailure(name=n, reason=r) for n, r in failures],
    )


def test_retry_failed_messages_show_names_as_every_output_does() -> None:
    """A file whose non-UTF-8 name the listing spelled ``bad\\xffname.txt`` and that
    is gone: ``--retry-failed``'s words showed ``'bad\\\\xffname.txt'`` (repr's doubled
    backslash) where ``status --failures`` shows ``bad\\xffname.txt``."""
    from staccato.dataset_client import retry_advice
    from staccato.datasets.models import gone_reason

    name = "bad\\xffname.txt"
    assert gone_reason(name) == "'bad\\xffname.txt' is no longer at the source"
    advice = retry_advice(_ended_with((name, gone_reason(name))))
    assert advice is not None and "('bad\\xffname.txt')" in advice, advice


def test_no_retry_advice_when_no_failure_can_succeed() -> None:
    """The end line of a dataset whose only failures can never succeed (a name that
    is not valid UTF-8, a name the destination cannot hold) gives no advice to copy
    them again with --retry-failed; one failure that can succeed brings it back."""
    from staccato.dataset_client import retry_advice

    never = [
        ("bad\\xffname.txt", "the name is not valid UTF-8"),
        ("a//b", "cannot copy 'a//b' to file:///dst: it has an empty path segment"),
    ]
    assert retry_advice(_ended_with(*never)) is None
    advice = retry_advice(_ended_with(*never, ("ok.txt", "connection reset")))
    assert advice is not None and advice.startswith(
        "copy the failed files again with --retry-failed ("
    ), advice
    # and it says which no run copies (tester60: --retry-failed "repeats it forever")
    assert "('bad\\xffname.txt', 'a//b')" in advice and "no run copies them" in advice, advice
    assert "'ok.txt'" not in advice, advice
    one = retry_advice(_ended_with(never[1], ("ok.txt", "connection reset")))
    assert one is not None and "the name 'a//b' is one" in one and "copies it;" in one, one
    # a store's refusal of a key says "trying again cannot help" (tester61 D)
    refused = (
        "new\\x0aline",
        "PutObject of s3://demo/odd/new\\x0aline: http://127.0.0.1:7820 answered 404 Not "
        "Found to the write (Not Found): the store refuses this key or its path (some "
        "stores refuse keys with control characters such as a newline); trying again "
        "cannot help",
    )
    assert retry_advice(_ended_with(refused)) is None


def test_retry_advice_says_plainly_which_are_not_regular_files() -> None:
    """tester72: "(they are no use for 'devnull_link', ...)" read as riddle; the advice
    says those names are not regular files, which no run copies."""
    from staccato.dataset_client import retry_advice
    from staccato.errors import NOT_A_REGULAR_FILE

    specials = [("devnull_link", NOT_A_REGULAR_FILE), ("pipe", NOT_A_REGULAR_FILE)]
    advice = retry_advice(_ended_with(*specials, ("ok.txt", "connection reset")))
    assert advice is not None and "no use for" not in advice, advice
    assert (
        "'devnull_link', 'pipe' are not regular files (a FIFO, socket or device): no run "
        "copies them, so copying them again cannot help; --exclude them" in advice
    ), advice
    one = retry_advice(_ended_with(specials[1], ("ok.txt", "connection reset")))
    assert one is not None and "'pipe' is not a regular file (" in one, one


def test_a_failed_run_still_cleaning_up_shows_what_it_holds() -> None:
    """A failed transfer whose every chunk was durable, still removing its temp file
    (G13: a publish that hung): ``bytes_durable`` equals ``bytes_done``, and the human
    ``status`` left its line out ("said by bytes_done"), so nothing told what the
    failed run held; it says it now. Once the clean-up ran (0), "nothing kept"."""
    from staccato.cli import render
    from staccato.models import TransferState, TransferStatus

    size = 64 * 1024 * 1024
    failed = TransferStatus(
        id="staccato-x", state=TransferState.failed, source="s3://b/k",
        destination="file:///d/f", bytes_total=size, bytes_done=size, bytes_durable=size,
        rate_bytes_per_s=None, eta_s=None, streams=4, chunk_size=16 * 1024 * 1024,
        checksum=None, error="gave up", cleanup="the temp file /d/.f.staccato-x beside file:///d/f",
    )  # fmt: skip
    lines = render.status_lines(failed)
    assert any(line.startswith("bytes_durable") for line in lines), lines
    cleaned = failed.model_copy(update={"bytes_durable": 0, "cleanup": None})
    lines = render.status_lines(cleaned)
    assert any("nothing kept" in line for line in lines), lines
    running = failed.model_copy(update={"state": TransferState.running, "cleanup": None})
    assert not any(line.startswith("bytes_durable") for line in render.status_lines(running))


def test_a_dataset_whose_cancel_is_requested_follows_as_cancelling() -> None:
    """``cp -r``'s follow line says ``cancelling`` as soon as a cancel of the running
    dataset is requested (tester62: it said ``running`` for 64 s while the cancel
    waited for a hung S3 server), and the ended state's own words after."""
    from staccato.cli import datasets as datasets_cli
    from staccato.datasets.models import DatasetState

    running = _dataset_status()
    assert datasets_cli.follow_state(running) == "running"
    asked = running.model_copy(update={"cancel_requested": True})
    assert datasets_cli.follow_state(asked) == "cancelling"
    ended = asked.model_copy(update={"state": DatasetState.cancelled})
    assert datasets_cli.follow_state(ended) == "cancelled"


def test_a_transfer_whose_cancel_is_requested_follows_as_cancelling() -> None:
    """``cp``'s and ``watch``'s line (plain and bar) says ``cancelling`` once a cancel
    of the running transfer is requested, as ``cp -r``'s does (tester63: it said
    ``running ... retrying: attempt 7: AbortMultipartUpload ... timed out`` for 11
    minutes), and the ended state's own words after."""
    from staccato.cli import render

    running = _status()
    assert render.plain_line(running).startswith("running: ")
    asked = running.model_copy(update={"cancel_requested": True, "phase": "cleanup"})
    assert render.plain_line(asked).startswith("cancelling: "), render.plain_line(asked)
    ended = asked.model_copy(update={"state": TransferState.cancelled})
    assert render.plain_line(ended).startswith("cancelled: ")


def test_an_ended_run_with_a_left_behind_is_never_said_removed() -> None:
    """A cancelled (or failed) run whose clean-up gave up: ``bytes_durable`` says
    nothing is kept, never that the clean-up removed the partial data (tester63: it
    said so of an upload a stopped server still held); one with nothing left behind
    still says it was removed."""
    from staccato.cli import render

    left = "the multipart upload U1 of s3://b/k may be left open (...): abort it"
    ended = _status(state=TransferState.cancelled, bytes_durable=0, left_behind=left)
    text = render.durable_text(ended)
    assert "nothing kept" in text and "removed" not in text and "left_behind" in text, text
    clean = ended.model_copy(update={"left_behind": None})
    assert "removed its partial data" in render.durable_text(clean)


def test_dataset_bar_shows_one_eta_the_statuss() -> None:
    """``cp -r``'s bar draws files handled of files listed with the status's own rate
    and ETA, and no second ETA of its own: rich's time-remaining column said
    ``0:00:04`` beside ``eta 8s`` (tester67 L1)."""
    from staccato.cli import datasets
    from staccato.datasets.models import DatasetState

    running = _ended_with().model_copy(
        update={
            "state": DatasetState.running,
            "files_total": 10,
            "files_done": 5,
            "files_failed": 0,
            "rate_files_per_s": 1.0,
            "eta_s": 8.0,
        }
    )
    out = io.StringIO()
    with render.Bar(Console(file=out, width=200, color_system=None)) as bar:
        datasets.show(bar, running)
    drawn = out.getvalue().strip()
    assert "running" in drawn and "5" in drawn, drawn
    assert drawn.lower().count("eta") == 1, drawn
    assert "-:--:--" not in drawn and "0:00:0" not in drawn, drawn


def test_a_run_that_failed_after_publish_says_what_is_at_the_destination() -> None:
    """A run that failed after it published (its check after publish found the object
    not the source's: a tester's S3 part replaced under the upload) removed nothing:
    ``bytes_durable`` says the destination holds the object it published, never that
    its clean-up removed its partial data (the tester read that with a corrupt object
    at the key)."""
    from staccato.cli import render

    ended = _status(state=TransferState.failed, bytes_durable=0, published=True)
    text = render.durable_text(ended)
    assert "removed" not in text and "holds the object this run published" in text, text
    assert any(line.split()[:2] == ["published", "True"] for line in render.status_lines(ended))


def test_a_cancelled_datasets_end_line_says_what_it_copied(capsys: Any) -> None:
    """``cp -r``'s last line for a cancelled dataset (a tester read ``dataset ID
    cancelled: cancelled``): the error that only repeats the state gives way to the
    counts, exit 1; a real error is still the line's reason."""
    import typer

    from staccato.cli import datasets as datasets_cli
    from staccato.datasets.models import DatasetState

    cancelled = _dataset_status().model_copy(
        update={"state": DatasetState.cancelled, "error": "cancelled", "files_done": 3}
    )
    try:
        datasets_cli.exit_for(cancelled)
    except typer.Exit as ended:
        assert ended.exit_code == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "cancelled: cancelled" not in line, line
    assert "3 files copied" in line, line
    failed = cancelled.model_copy(update={"state": DatasetState.failed, "error": "listing gave up"})
    try:
        datasets_cli.exit_for(failed)
    except typer.Exit:
        pass
    assert capsys.readouterr().err.strip().endswith("failed: listing gave up")


def test_watch_quiet_waits_and_says_nothing_but_the_outcome(
    temporal_server, worker, data_dir: Path
) -> None:
    """``watch -q`` as ``cp -q``: it waits for the end and prints nothing on success
    (exit 0), for a transfer and for a dataset; a failed one still says why (exit 1).
    Before (tester74), ``watch`` had no ``-q``."""
    from tests.helpers import run_cli

    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    source = data_dir / "src.bin"
    write_random(source, 3 * MiB, seed=74)
    tree = data_dir / "tree"
    tree.mkdir()
    (tree / "a.txt").write_bytes(b"a")
    started = [
        run_cli("submit", str(source), str(data_dir / "out.bin"), **args),
        run_cli("submit", "-r", str(tree), str(data_dir / "outtree"), **args),
    ]
    for submitted in started:
        assert submitted.returncode == 0, submitted
        watched = run_cli("watch", "-q", submitted.stdout.strip(), **args)
        assert watched.returncode == 0, watched
        assert watched.stdout == "" and watched.stderr == "", watched
    assert (data_dir / "out.bin").read_bytes() == source.read_bytes()
    assert (data_dir / "outtree" / "a.txt").read_bytes() == b"a"
    missing = run_cli("submit", str(data_dir / "nothing.bin"), str(data_dir / "o2"), **args)
    failed = run_cli("watch", "-q", missing.stdout.strip() or str(data_dir / "o2"), **args)
    assert failed.returncode != 0, failed
    assert "nothing.bin" in failed.stderr, failed


def test_a_checksum_read_back_is_not_called_every_byte() -> None:
    """The end line's ``verified:`` for ``--verify checksum`` read back after a pause
    does not claim every byte was read (that is ``full``'s; tester74)."""
    from staccato.models import VerifyMode

    def status(level: VerifyMode) -> TransferStatus:
        # only the two fields the line reads
        return TransferStatus.model_construct(
            verify_level=level, segments_copied_again=0, destination="file:///d/x.bin"
        )

    full = render.verify_level_text(status(VerifyMode.full))
    assert full == "full: every byte read back before publish, 0 segments copied again"
    checksum = render.verify_level_text(status(VerifyMode.checksum))
    assert "every byte" not in checksum and checksum.startswith("checksum: read back"), checksum
