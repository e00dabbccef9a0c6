"""``staccato list`` and ``status`` through the real CLI against the session's Temporal
dev server and worker: every kind (transfer, dataset, fan-out group) in one newest-first
order by start time, ``--limit`` after the merge, and a ``kind`` and ``started_at`` on
every row."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.helpers import WorkerProcess, run_cli

#: seconds a row may take to show in Temporal's visibility (bounded poll, not a sleep)
VISIBLE_S = 30.0


def _listed(args: dict[str, Any], *extra: str) -> list[dict[str, Any]]:
    shown = run_cli("list", "--json", *extra, **args)
    assert shown.returncode == 0, shown.stderr
    rows: list[dict[str, Any]] = json.loads(shown.stdout)
    return rows


def _listed_here(args: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    """The rows ``list --json --limit LIMIT`` prints, read by the CLI's own code
    (:func:`staccato.listing.list_rows`) in this process: for the lookups and waits
    around the checks, which need no CLI process each (~0.5 CPU-s)."""
    from staccato.client import StaccatoClient
    from staccato.listing import list_rows

    async def go() -> list[dict[str, Any]]:
        client = await StaccatoClient.connect(target_host=args["address"], namespace="default")
        try:
            return [row.to_json_dict() for row in await list_rows(client, limit=limit)]
        finally:
            await client.close()

    return asyncio.run(go())


def _started(row: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(row["started_at"].replace("Z", "+00:00"))


def test_list_orders_every_kind_by_start_and_limits_after_the_merge(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """A dataset, a transfer, a fan-out group, a dataset, a transfer (in that order):
    ``list`` shows them newest first whatever their kind, and ``--limit 1`` is the
    newest transfer, not a dataset (datasets were listed first, so ``--limit`` cut off
    newer transfers)."""
    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    source = data_dir / "one.bin"
    source.write_bytes(b"x" * 1000)
    tree = data_dir / "tree"
    tree.mkdir()
    for name in ("a", "b"):
        (tree / name).write_bytes(name.encode() * 10)
    started: list[str] = []  # ids, oldest first

    def cp(*cp_args: str) -> None:
        done = run_cli("cp", "-q", *cp_args, **args)
        assert done.returncode == 0, done.stderr

    def newest_id() -> str:
        return _listed_here(args, 1)[0]["id"]

    cp("-r", str(tree), str(data_dir / "set1"))
    started.append(newest_id())
    cp(str(source), str(data_dir / "t1.bin"))
    started.append(newest_id())
    cp(str(source), str(data_dir / "g1.bin"), str(data_dir / "g2.bin"))
    # the group starts a transfer per destination after itself: find the group's id
    group = next(r["id"] for r in _listed_here(args, 5) if r["kind"] == "group")
    started.append(group)
    cp("-r", str(tree), str(data_dir / "set2"))
    started.append(newest_id())
    cp(str(source), str(data_dir / "t2.bin"))

    # every row visible (polled in this process: a CLI per look kept a core busy),
    # then the order as the CLI prints it
    deadline = time.monotonic() + VISIBLE_S
    while time.monotonic() < deadline:
        if all(i in [r["id"] for r in _listed_here(args, 1000)] for i in started):
            break
        time.sleep(0.2)
    rows = _listed(args, "--limit", "1000")
    ids = [r["id"] for r in rows]
    newest = rows[0]
    assert newest["destination"].endswith("/t2.bin"), rows[:3]
    positions = [ids.index(i) for i in started]
    assert positions == sorted(positions, reverse=True), positions
    kinds = {r["id"]: r["kind"] for r in rows}
    assert [kinds[i] for i in started] == ["dataset", "transfer", "group", "dataset"], kinds
    assert newest["kind"] == "transfer", newest
    # one order across kinds: start times never increase down the list
    times = [_started(r) for r in rows]
    assert times == sorted(times, reverse=True), [(r["kind"], r["started_at"]) for r in rows]
    # --limit applies after the merge: the newest N of every kind together
    limited = _listed(args, "--limit", "3")
    assert [r["id"] for r in limited] == ids[:3], (limited, ids[:3])
    assert _listed(args, "--limit", "1")[0]["id"] == newest["id"]
    # the rows for people carry the start time too
    plain = run_cli("list", "--limit", "1", **args)
    assert plain.returncode == 0, plain.stderr
    assert newest["id"] in plain.stdout and f"started {newest['started_at']}" in plain.stdout


def test_status_json_names_the_kind_of_every_row(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """``status --json`` of a single transfer says ``"kind": "transfer"`` (a dataset's
    says ``dataset``, a group's ``group``), with its start and end times."""
    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    source = data_dir / "k.bin"
    source.write_bytes(b"k" * 100)
    destination = data_dir / "k.out"
    done = run_cli("cp", "-q", str(source), str(destination), **args)
    assert done.returncode == 0, done.stderr
    shown = run_cli("status", "--json", str(destination), **args)
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["kind"] == "transfer" and status["state"] == "completed", status
    assert _started(status).tzinfo is not None, status
    # and when it ended (tester62: no finish time could be read back)
    ended = datetime.fromisoformat(status["ended_at"].replace("Z", "+00:00"))
    assert ended >= _started(status), status


async def test_a_datasets_roots_read_the_same_in_list_and_status(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """``list`` names a dataset's roots as ``status`` and ``--json`` do, without a
    trailing ``/`` (tester: ``list`` added one, ``status`` did not); so does the run's
    summary in the Temporal UI."""
    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    tree = data_dir / "roots"
    tree.mkdir()
    (tree / "a").write_bytes(b"a" * 10)
    done = run_cli("cp", "-q", "-r", str(tree), str(data_dir / "out"), **args)
    assert done.returncode == 0, done.stderr
    shown = run_cli("status", str(data_dir / "out"), "--json", **args)
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["source"] == tree.as_uri(), status
    assert status["destination"] == (data_dir / "out").as_uri(), status
    text = run_cli("status", str(data_dir / "out"), **args).stdout
    assert f"destination        {status['destination']}\n" in text, text
    deadline = time.monotonic() + VISIBLE_S
    while True:
        listed = run_cli("list", "--limit", "1000", **args)
        assert listed.returncode == 0, listed.stderr
        rows = [line for line in listed.stdout.splitlines() if line.startswith(status["id"])]
        if rows or time.monotonic() > deadline:
            break
    assert rows, listed.stdout
    assert f"  {status['source']} -> {status['destination']}  started " in rows[0], rows[0]
    plain = await temporal_server.client()
    described = await plain.get_workflow_handle(status["id"]).describe()
    summary = await described.static_summary()
    assert summary == f"{status['source']} -> {status['destination']} (dataset)", summary


def test_a_delayed_start_is_named_by_its_destination_and_listed_in_its_state(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """``submit --not-before 1h`` starts a front run under its own id: ``status`` and
    ``cancel`` find it by its destination (they said "no transfer" while ``list``
    showed it scheduled), and once cancelled ``list --state cancelled`` shows it and
    ``list --state scheduled`` does not (its StaccatoState, never updated by a run
    cancelled before its start, said scheduled: the filters went by it)."""
    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    source = data_dir / "h.txt"
    source.write_bytes(b"h" * 1000)
    destination = data_dir / "j5.txt"
    submitted = run_cli("submit", str(source), str(destination), "--not-before", "1h", **args)
    assert submitted.returncode == 0, submitted.stderr
    transfer = submitted.stdout.strip()
    shown = run_cli("status", str(destination), "--json", **args)
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["id"] == transfer and status["state"] == "scheduled", status
    deadline = time.monotonic() + VISIBLE_S
    while transfer not in [r["id"] for r in _listed(args, "--state", "scheduled")]:
        assert time.monotonic() < deadline, "the delayed start is not listed as scheduled"
        time.sleep(0.2)

    cancelled = run_cli("cancel", str(destination), **args)
    assert cancelled.returncode == 0, cancelled.stderr
    deadline = time.monotonic() + VISIBLE_S
    while transfer not in [r["id"] for r in _listed(args, "--state", "cancelled")]:
        assert time.monotonic() < deadline, _listed(args)
        time.sleep(0.2)
    rows = _listed(args, "--state", "cancelled")
    assert {r["state"] for r in rows} == {"cancelled"}, rows
    scheduled = _listed(args, "--state", "scheduled")
    assert transfer not in [r["id"] for r in scheduled], scheduled
    assert {r["state"] for r in scheduled} <= {"scheduled"}, scheduled
    again = run_cli("status", str(destination), "--json", **args)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["state"] == "cancelled", again.stdout


def test_two_delayed_starts_to_one_destination_name_the_earliest_everywhere(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """Two ``--not-before`` starts to one destination (1h, then 2h): the second submit
    names the first on stderr; ``status`` and ``cancel`` by destination both choose the
    earliest start (cancel cancelled the 2h one while status showed the 1h one), say
    that there are two, and ``cancel`` names the id it cancelled."""
    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    source = data_dir / "two.txt"
    source.write_bytes(b"t" * 100)
    destination = data_dir / "two-out.txt"
    first = run_cli("submit", str(source), str(destination), "--not-before", "1h", **args)
    assert first.returncode == 0, first.stderr
    early = first.stdout.strip()
    deadline = time.monotonic() + VISIBLE_S
    while early not in [r["id"] for r in _listed(args, "--state", "scheduled")]:
        assert time.monotonic() < deadline, "the first delayed start is not listed"
        time.sleep(0.2)
    second = run_cli("submit", str(source), str(destination), "--not-before", "2h", **args)
    assert second.returncode == 0, second.stderr
    late = second.stdout.strip()
    assert f"already has a scheduled start: {early}" in second.stderr, second.stderr
    deadline = time.monotonic() + VISIBLE_S
    while late not in [r["id"] for r in _listed(args, "--state", "scheduled")]:
        assert time.monotonic() < deadline, "the second delayed start is not listed"
        time.sleep(0.2)
    shown = run_cli("status", str(destination), "--json", **args)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["id"] == early, shown.stdout
    assert "2 scheduled starts" in shown.stderr and late in shown.stderr, shown.stderr
    cancelled = run_cli("cancel", str(destination), **args)
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"({early})" in cancelled.stdout, cancelled.stdout
    assert "2 scheduled starts" in cancelled.stderr, cancelled.stderr
    run_cli("cancel", late, **args)


def test_a_root_a_later_dataset_to_several_roots_took_keeps_both_datasets_listed(
    worker: WorkerProcess, temporal_server, data_dir: Path
) -> None:
    """A one-root dataset's id is also its root's lock: a later dataset to that root
    and another starts a lock run under it. ``list`` shows each dataset once, the
    earlier one with its own root and counts (tester63: the later one was listed twice,
    the earlier not at all)."""
    args = dict(address=temporal_server.address, task_queue=worker.task_queue)
    tree = data_dir / "lockset"
    tree.mkdir()
    for name in ("a", "b", "c"):
        (tree / name).write_bytes(name.encode() * 10)
    shared, other = data_dir / "shared", data_dir / "other"
    done = run_cli("cp", "-q", "-r", str(tree), str(shared), **args)
    assert done.returncode == 0, done.stderr
    first = json.loads(run_cli("status", "--json", str(shared), **args).stdout)
    (tree / "d").write_bytes(b"d" * 10)
    done = run_cli("cp", "-q", "-r", str(tree), str(shared), str(other), **args)
    assert done.returncode == 0, done.stderr
    second = json.loads(run_cli("status", "--json", str(other), **args).stdout)
    assert second["id"] != first["id"], (first, second)
    deadline = time.monotonic() + VISIBLE_S
    while True:
        rows = _listed(args, "--limit", "1000")
        ids = [r["id"] for r in rows]
        if (first["id"] in ids and second["id"] in ids) or time.monotonic() > deadline:
            break
    assert ids.count(second["id"]) == 1, [r for r in rows if r["id"] == second["id"]]
    assert ids.count(first["id"]) == 1, ids[:5]
    earlier = rows[ids.index(first["id"])]
    assert earlier["destination"] == shared.as_uri(), earlier
    assert (earlier["files_total"], earlier["files_done"]) == (3, 3), earlier
    later = rows[ids.index(second["id"])]
    assert later["destination_roots"] == [shared.as_uri(), other.as_uri()], later
