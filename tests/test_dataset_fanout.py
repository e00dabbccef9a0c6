"""Datasets to several destinations (``cp -r SRC D1 D2 ...``): the source listed once,
each file read once and written to every root.

Real servers: the source is an S3 prefix on SeaweedFS reached through an nginx
reverse proxy whose access log counts every request at the server (the worker's S3
endpoint is the proxy; nginx passes the signed requests through unchanged). A tree
(nested dirs, 0-byte files, odd names, a file above the lowered large-file threshold)
goes to two local roots, one S3 prefix and one SFTP directory: all four equal the source (names, sizes,
SHA-256) and the proxy served each source object's bytes exactly once; a second run
at ``--sync-level size`` reads no source object and writes nothing. A root whose
server is down (an SFTP port nothing listens on, a short ``--retry-for``) fails alone:
the other root completes, exit 1, every failure names the dead root. A root given
twice, or equal to the source, exits 2 naming it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from temporalio.client import WorkflowExecutionStatus

from staccato.client import StaccatoClient
from staccato.dataset_client import (
    await_dataset_end,
    cancel_dataset,
    dataset_status,
    submit_dataset,
)
from staccato.dataset_requests import make_dataset_request
from staccato.datasets.models import DatasetState
from staccato.errors import InvalidURLError
from staccato.models import SyncLevel, TransferOptions
from tests.dataset_checks import MiB, make_tree, run_dataset, tree
from tests.helpers import SESSION_WORKER_PROCESSES, WorkerProcess, run_cli
from tests.servers.nginx import NginxServer
from tests.servers.seaweedfs import SeaweedS3
from tests.servers.sshd import SshdServer
from tests.servers.temporal_server import free_port

OPTIONS = TransferOptions(chunk_size=1 * MiB, streams=2, heartbeat_timeout_s=5)
SMALL_FILE_MAX = 512 * 1024
LARGE = 2 * MiB + 3
#: files of each dataset sharing a root (A: one batch each, one after the other)
SHARED_FILES = 40


@pytest.fixture(scope="module")
def s3_proxy(seaweed_s3: SeaweedS3, http_root: Path) -> Iterator[NginxServer]:
    """nginx in front of the S3 store, logging each request (method, raw URI, bytes)."""
    upstream = f"http://127.0.0.1:{seaweed_s3.s3_port}"
    proxy = NginxServer(
        http_root,
        extra_server_config=f"""
        location ~ ^/ {{
            proxy_pass {upstream};
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header Connection "";
            proxy_request_buffering off;
            proxy_buffering off;
            client_max_body_size 0;
        }}
""",
    )
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def env(
    seaweed_s3: SeaweedS3,
    s3_proxy: NginxServer,
    sshd_server: SshdServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    ssh = tmp_path_factory.mktemp("dsfan-ssh")
    known_hosts = ssh / "known_hosts"
    known_hosts.write_text(sshd_server.known_hosts_path.read_text())
    home = ssh / "home"
    home.mkdir()
    return {
        **seaweed_s3.subprocess_env(),
        "AWS_ENDPOINT_URL_S3": s3_proxy.base_url,
        "AWS_EC2_METADATA_DISABLED": "true",
        "HOME": str(home),
        "SSH_AUTH_SOCK": "",
        "STACCATO_SSH_CONFIG": "none",
        "STACCATO_SSH_IDENTITY": str(sshd_server.client_key_path),
        "STACCATO_SSH_KNOWN_HOSTS": str(known_hosts),
        "STACCATO_SFTP_LOCK_DIR": str(ssh / "locks"),
        "STACCATO_STAGING_DIR": str(tmp_path_factory.mktemp("dsfan-staging")),
    }


@pytest.fixture(scope="module")
def fan_worker(temporal_server, env: dict[str, str]) -> Iterator[WorkerProcess]:
    # 2 activity processes, as the session workers: 2 x STACCATO_WORKER_THREADS still
    # run every stream and batch of a test at once, and each process more cost ~1 CPU-s
    # of imports per start (a module worker starts once per xdist process)
    process = WorkerProcess(temporal_server.address, processes=SESSION_WORKER_PROCESSES, env=env)
    with pytest.MonkeyPatch.context() as patch:
        for key in [k for k in os.environ if k.startswith("AWS_")]:
            patch.delenv(key)
        process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
async def fan_client(temporal_server, fan_worker: WorkerProcess) -> AsyncIterator[StaccatoClient]:
    client = await StaccatoClient.connect(target_host=temporal_server.address, namespace="default")
    client.task_queue = fan_worker.task_queue
    yield client


@pytest.fixture
def bucket(seaweed_s3: SeaweedS3) -> str:
    name = f"dsfan-{uuid.uuid4().hex[:12]}"
    seaweed_s3.client().create_bucket(Bucket=name)
    return name


def _upload(seaweed_s3: SeaweedS3, bucket: str, local: Path, prefix: str) -> None:
    s3 = seaweed_s3.client()
    for name in tree(local):
        s3.put_object(Bucket=bucket, Key=prefix + name, Body=(local / name).read_bytes())


def _s3_tree(seaweed_s3: SeaweedS3, bucket: str, prefix: str) -> dict[str, tuple[int, str]]:
    s3: Any = seaweed_s3.client()
    found: dict[str, tuple[int, str]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            data = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            found[item["Key"][len(prefix) :]] = (len(data), hashlib.sha256(data).hexdigest())
    return found


def _source_reads(proxy: NginxServer, bucket: str, prefix: str) -> tuple[int, int]:
    """(GET requests, body bytes) the proxy served for objects under ``prefix``."""
    gets = [
        r
        for r in proxy.requests()
        if r["method"] == "GET" and r["uri"].startswith(f"/{bucket}/{prefix}")
    ]
    return len(gets), sum(int(r["body_bytes_sent"]) for r in gets)


def _reads_by_object(proxy: NginxServer, bucket: str, prefix: str) -> dict[str, list[int]]:
    """Object key under ``prefix`` (decoded) -> the body bytes of each GET the proxy
    served of it."""
    found: dict[str, list[int]] = {}
    for r in proxy.requests():
        if r["method"] == "GET" and r["uri"].startswith(f"/{bucket}/{prefix}"):
            key = unquote(r["uri"][len(f"/{bucket}/{prefix}") :].split("?")[0])
            found.setdefault(key, []).append(int(r["body_bytes_sent"]))
    return found


async def _retried_attempts(client: StaccatoClient, workflow_id: str) -> list[str]:
    """The activity attempts after the first (``"TYPE attempt N"``) in the history of
    ``workflow_id`` and of every child run it started, recursively (a large file's
    transfer or fan-out group): a retried attempt re-reads the files of its batch (or
    the chunks of its stream) it had not finished, which is allowed; none retried,
    each source byte must be read exactly once."""
    retried: list[str] = []
    pending, seen = [workflow_id], set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        types: dict[int, str] = {}
        async for event in client.temporal.get_workflow_handle(current).fetch_history_events():
            if event.HasField("activity_task_scheduled_event_attributes"):
                attrs = event.activity_task_scheduled_event_attributes
                types[event.event_id] = attrs.activity_type.name
            elif event.HasField("activity_task_started_event_attributes"):
                started = event.activity_task_started_event_attributes
                if started.attempt > 1:
                    kind = types.get(started.scheduled_event_id, "?")
                    retried.append(f"{current} {kind} attempt {started.attempt}")
            elif event.HasField("child_workflow_execution_started_event_attributes"):
                child = event.child_workflow_execution_started_event_attributes
                pending.append(child.workflow_execution.workflow_id)
    return retried


def _writes(proxy: NginxServer, bucket: str, prefix: str) -> int:
    return sum(
        1
        for r in proxy.requests()
        if r["method"] in ("PUT", "POST") and r["uri"].startswith(f"/{bucket}/{prefix}")
    )


async def test_a_tree_goes_to_four_roots_each_file_read_once(
    fan_client: StaccatoClient,
    s3_proxy: NginxServer,
    seaweed_s3: SeaweedS3,
    sshd_server: SshdServer,
    bucket: str,
    data_dir: Path,
) -> None:
    local = data_dir / "tree"
    files = make_tree(local, large=LARGE)
    expected = tree(local)
    _upload(seaweed_s3, bucket, local, "src/")
    one, two, far = data_dir / "one", data_dir / "two", data_dir / "far"
    roots = [str(one), str(two), f"s3://{bucket}/copy/", sshd_server.url(str(far))]
    s3_proxy.clear_log()
    final = await run_dataset(
        fan_client,
        f"s3://{bucket}/src/",
        roots,
        options=OPTIONS,
        small_file_max=SMALL_FILE_MAX,
    )
    assert final.state == DatasetState.completed, final
    assert final.files_done == len(files) and final.files_failed == 0, final
    assert final.destinations is not None and len(final.destinations) == 4, final
    for row in final.destinations:
        assert (row.files_done, row.files_failed) == (len(files), 0), final
    assert tree(one) == expected
    assert tree(two) == expected
    assert _s3_tree(seaweed_s3, bucket, "copy/") == expected
    assert tree(far) == expected
    # read once: the source objects' bytes served exactly once in all, unless an
    # activity attempt was retried (ci99, load 12-17: 1234 bytes more, deep.txt's
    # size): its retry re-reads what it had not finished, and what it finished after
    # its last heartbeat reached the server (the files a heartbeat names finished are
    # not read again: tests/test_dataset_retry_read_once.py), each object at most once
    # per retried attempt (counted from the history, after the run: the proxy's log
    # and the history are both settled then)
    gets, served = _source_reads(s3_proxy, bucket, "src/")
    total = sum(files.values())
    per_object = _reads_by_object(s3_proxy, bucket, "src/")
    retried = await _retried_attempts(fan_client, final.id)
    print(
        f"dataset to 4 roots: {gets} GETs of the source, {served} bytes of {total}; "
        f"retried attempts: {retried or 'none'}"
    )
    twice = {k: v for k, v in per_object.items() if sum(v) > files.get(k, 0)}
    if not retried:
        assert served == total, (
            f"the source served {served} bytes for a {total}-byte tree with no attempt "
            f"retried; objects served more than their size: {twice}"
        )
    else:
        assert served >= total, (served, total)
        for key, sizes in twice.items():
            assert sum(sizes) <= files[key] * (1 + len(retried)), (key, sizes, retried)
    # the id is stable for the same source and set of roots, not any single root's
    from staccato.dataset_requests import dataset_id

    assert final.id not in {dataset_id(r) for r in roots}
    # a second run at --sync-level size (roots in another order: the same dataset)
    # reads no source object and writes nothing
    s3_proxy.clear_log()
    again = await run_dataset(
        fan_client,
        f"s3://{bucket}/src/",
        list(reversed(roots)),
        options=OPTIONS.model_copy(update={"sync_level": SyncLevel.size}),
        small_file_max=SMALL_FILE_MAX,
    )
    assert again.id == final.id
    assert again.state == DatasetState.completed, again
    assert (again.files_done, again.files_skipped) == (0, len(files)), again
    assert _source_reads(s3_proxy, bucket, "src/")[0] == 0
    assert _writes(s3_proxy, bucket, "copy/") == 0
    assert tree(one) == expected and tree(two) == expected and tree(far) == expected


def test_a_dead_root_fails_alone_naming_it(
    temporal_server,
    fan_worker: WorkerProcess,
    env: dict[str, str],
    seaweed_s3: SeaweedS3,
    bucket: str,
    data_dir: Path,
) -> None:
    local = data_dir / "tree"
    files = make_tree(local, large=LARGE, small=2)
    _upload(seaweed_s3, bucket, local, "src/")
    good = data_dir / "good"
    dead = f"sftp://nobody@127.0.0.1:{free_port()}{data_dir}/dead"
    cli = {"address": temporal_server.address, "task_queue": fan_worker.task_queue, "env": env}
    done = run_cli(
        "cp", "-r", "-q", "--retry-for", "15s", "--chunk-size", "1MiB", "--small-file-max",
        str(SMALL_FILE_MAX), f"s3://{bucket}/src/", str(good), dead, **cli,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert tree(good) == tree(local), done.stderr
    # the end line counts per root: the good root got every file
    assert "0 files copied" not in done.stderr, done.stderr
    assert "1 of 2 destinations complete" in done.stderr, done.stderr
    assert f"{len(files)} failed, 0 copied, 0 up to date" in done.stderr, done.stderr
    found = re.search(r"staccato-dataset-[0-9a-f]{32}", done.stderr)
    assert found is not None, done.stderr
    dataset = found.group(0)
    status = run_cli("status", "--json", dataset, **cli)
    assert status.returncode == 0, (status.stderr, done.stderr)
    data = json.loads(status.stdout)
    assert data["state"] == "completed_with_errors", data
    rows = {row["destination"]: row for row in data["destinations"]}
    assert rows[f"file://{good}"]["files_done"] == len(files), data
    (dead_root,) = [r for r in rows if r.startswith("sftp://")]
    assert data["destination"] == f"file://{good}", data  # kept: the first root
    assert data["destination_roots"] == [f"file://{good}", dead_root], data
    assert rows[dead_root]["files_failed"] == len(files), data
    assert data["failures"] and all(f["destination"] == dead_root for f in data["failures"])
    human = run_cli("status", dataset, **cli).stdout
    assert f"destination        file://{good} {dead_root}\n" in human, human
    assert f"destination        file://{good}: {len(files)} copied" in human, human
    assert f"destination        {dead_root}: 0 copied, 0 up to date, {len(files)} failed" in (
        human
    ), human
    listed = run_cli("list", **cli).stdout
    assert any(dataset in line and dead_root in line for line in listed.splitlines()), listed
    failures = run_cli("status", "--failures", dataset, **cli)
    lines = failures.stdout.splitlines()
    assert len(lines) == len(files), failures.stdout
    assert all(line.split("\t")[1] == dead_root for line in lines), failures.stdout


async def test_status_names_the_root_a_batch_waits_for_and_counts_the_other(
    temporal_server,
    fan_client: StaccatoClient,
    fan_worker: WorkerProcess,
    env: dict[str, str],
    data_dir: Path,
) -> None:
    """A tree of small files (one batch) to a local root and an SFTP root whose server
    is down (nothing listens on its port: connection refused), ``--retry-for 90s``:
    while the batch retries the down root, ``status`` (the client's, ``--json`` and
    the human lines) names that root with its last error and since when, and the local
    root's row counts its files copied, all before the batch ends. Before, no root
    was named and the local root read 0 copied until the batch's end (90 s later)."""
    local = data_dir / "tree"
    files = make_tree(local, small=8)
    good = data_dir / "good"
    dead = f"sftp://nobody@127.0.0.1:{free_port()}{data_dir}/dead"
    options = TransferOptions(chunk_size=1 * MiB, streams=2, retry_for_s=90)
    dataset = await submit_dataset(
        fan_client, str(local), [str(good), dead], options, small_file_max=SMALL_FILE_MAX
    )
    handle = fan_client.temporal.get_workflow_handle(dataset)
    cli = {"address": temporal_server.address, "task_queue": fan_worker.task_queue, "env": env}
    try:
        seen = None
        started = False  # the batch was seen pending
        deadline = time.monotonic() + 120
        while True:
            description = await handle.describe()
            batches = [
                p
                for p in description.raw_description.pending_activities
                if p.activity_type.name == "copy_batch_to_many"
            ]
            status = await dataset_status(fan_client, dataset)
            assert time.monotonic() < deadline, f"the down root not named in 120 s: {status}"
            if status.state == DatasetState.scheduled:  # before the run's first task (load)
                await asyncio.sleep(0.5)
                continue
            rows = {row.destination: row for row in status.destinations or []}
            (dead_root,) = [r for r in rows if r.startswith("sftp://")]
            # (getattr: the rows of the old code had no such field)
            named = getattr(rows[dead_root], "unreachable", None)
            if rows[f"file://{good}"].files_done == len(files) and named:
                seen = status
                break
            # the batch is under way until it gives up on the root (--retry-for)
            assert status.state == DatasetState.running, status
            assert not (started and not batches), (
                f"the batch ended before status named the down root: {status}"
            )
            started = started or bool(batches)
            await asyncio.sleep(0.5)
        down = rows[dead_root]
        print(f"while the batch waits: {seen.destinations}")
        assert "connection refused" in (down.unreachable or ""), down
        assert down.unreachable_since is not None and down.files_waiting == len(files), down
        assert down.files_done == 0 and rows[f"file://{good}"].unreachable is None, rows
        # the same through the CLI, while the batch still waits for the root
        shown = run_cli("status", "--json", dataset, **cli)
        data = json.loads(shown.stdout)
        as_json = {row["destination"]: row for row in data["destinations"]}
        assert "connection refused" in as_json[dead_root]["unreachable"], data
        assert as_json[dead_root]["unreachable_since"] == down.unreachable_since, data
        assert "unreachable" not in as_json[f"file://{good}"], data
        assert as_json[f"file://{good}"]["files_done"] == len(files), data
        human = run_cli("status", dataset, **cli).stdout
        assert re.search(
            rf"^ +unreachable since {re.escape(down.unreachable_since)} \({len(files)} files "
            r"wait; the other roots go on\): .*connection refused",
            human,
            re.M,
        ), human
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
    finally:
        await cancel_dataset(fan_client, dataset)
        await await_dataset_end(fan_client, dataset)
    assert tree(good) == tree(local)


@pytest.mark.parametrize("case", ["twice", "source"])
def test_a_root_given_twice_or_equal_to_the_source_exits_2_naming_it(
    temporal_server, data_dir: Path, case: str
) -> None:
    source = data_dir / "src"
    source.mkdir()
    (source / "f").write_bytes(b"x")
    other = data_dir / "other"
    roots = [str(other), f"file://{other}/"] if case == "twice" else [str(other), str(source)]
    done = run_cli("cp", "-r", str(source), *roots, address=temporal_server.address)
    assert done.returncode == 2, done.stderr
    named = str(other) if case == "twice" else str(source)
    assert named in done.stderr, done.stderr
    assert ("twice" if case == "twice" else "source") in done.stderr, done.stderr
    assert not other.exists()


async def test_retry_failed_copies_only_the_failed_pairs(
    fan_client: StaccatoClient,
    s3_proxy: NginxServer,
    seaweed_s3: SeaweedS3,
    bucket: str,
    data_dir: Path,
) -> None:
    from staccato.dataset_client import submit_dataset
    from tests.dataset_checks import wait_dataset

    local = data_dir / "tree"
    files = make_tree(local, small=2)
    one = data_dir / "one"
    (one / "a" / "one").mkdir(parents=True)  # a directory where a file goes: that pair fails
    roots = [str(one), f"s3://{bucket}/copy/"]
    first = await run_dataset(fan_client, str(local), roots, options=OPTIONS)
    assert first.state == DatasetState.completed_with_errors, first
    (failure,) = first.failures
    assert (failure.name, failure.destination) == ("a/one", f"file://{one}"), failure
    assert first.files_failed == 1 and first.files_done == len(files) - 1, first
    assert first.destinations is not None
    assert [d.files_done for d in first.destinations] == [len(files) - 1, len(files)], first
    (one / "a" / "one").rmdir()
    marks = {p: p.stat().st_mtime_ns for p in one.rglob("*") if p.is_file()}
    s3_proxy.clear_log()
    dataset = await submit_dataset(fan_client, str(local), roots, OPTIONS, retry_failed=True)
    assert dataset == first.id
    again = await wait_dataset(fan_client, dataset, timeout_s=120)
    assert again.state == DatasetState.completed, again
    assert (again.files_done, again.files_failed) == (1, 0), again
    assert again.destinations is not None
    assert [d.files_done for d in again.destinations] == [1, 0], again
    assert _writes(s3_proxy, bucket, "copy/") == 0  # the S3 root had it: nothing sent
    assert {p: p.stat().st_mtime_ns for p in marks} == marks  # nothing else rewritten
    assert tree(one) == tree(local)


async def test_retry_failed_with_a_new_exclude_retries_each_file_at_its_own_roots(
    fan_client: StaccatoClient, data_dir: Path
) -> None:
    """``--retry-failed`` with an ``--exclude`` the first run did not have: the files it
    leaves out are left out of the retry list itself. ``list_entries`` dropped them
    from its page instead, and the workflow, which reads a file's roots by its
    position in that list, retried the next file at the roots of the one dropped: "b"
    went to r1 (where it was) and never to r2 (where it had failed), and the dataset
    said completed (helper's finding). The failure it leaves out stays failed."""
    from staccato.dataset_client import submit_dataset
    from tests.dataset_checks import wait_dataset

    source = data_dir / "src"
    source.mkdir()
    for name in ("a", "b", "c"):
        (source / name).write_bytes(name.encode())
    r1, r2 = data_dir / "r1", data_dir / "r2"
    (r1 / "a").mkdir(parents=True)  # a directory where a file goes: that pair fails
    (r2 / "b").mkdir(parents=True)
    roots = [str(r1), str(r2)]
    first = await run_dataset(fan_client, str(source), roots, options=OPTIONS)
    assert first.state == DatasetState.completed_with_errors, first
    assert sorted((f.name, f.destination) for f in first.failures) == [
        ("a", f"file://{r1}"),
        ("b", f"file://{r2}"),
    ], first.failures
    (r1 / "a").rmdir()
    (r2 / "b").rmdir()
    dataset = await submit_dataset(
        fan_client, str(source), roots, OPTIONS, retry_failed=True, exclude=["a"]
    )
    again = await wait_dataset(fan_client, dataset, timeout_s=120)
    # "a" left out by the retry's --exclude stays failed at r1 (it ended completed,
    # "a" forgotten: tester)
    assert again.state == DatasetState.completed_with_errors, again
    assert (r2 / "b").read_bytes() == b"b"
    assert not (r1 / "a").exists()
    assert [(f.name, f.destination) for f in again.failures] == [("a", f"file://{r1}")]
    assert again.destinations is not None
    assert [d.files_done for d in again.destinations] == [0, 1], again
    assert [d.files_failed for d in again.destinations] == [1, 0], again


@pytest.mark.parametrize("failing_root", [False, True], ids=["two-roots", "and-a-read-only-root"])
async def test_worker_sigkill_resends_nothing_completed_to_every_root(
    temporal_server,
    env: dict[str, str],
    s3_proxy: NginxServer,
    seaweed_s3: SeaweedS3,
    bucket: str,
    data_dir: Path,
    failing_root: bool,
) -> None:
    """With a third root that fails every file (a directory that refuses new entries),
    the retried batch still sends nothing to the good roots that they already hold:
    0.22.0 stopped its resume scan at the first group with an unmatched pair (every
    group, the read-only root matching nowhere) and wrote the later groups again."""
    import asyncio
    import time

    from staccato.dataset_client import submit_dataset
    from tests.dataset_checks import tree_difference, wait_dataset

    count = 400
    source, one = data_dir / "src", data_dir / "one"
    for i in range(count):
        path = source / f"d{i % 10}" / f"f{i:04d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(200 + i % 300))
        past = time.time() - 3600
        os.utime(path, (past, past))
    locked = data_dir / "locked" / "t"
    roots = [str(one), f"s3://{bucket}/copy/"]
    if failing_root:
        _immutable(locked.parent)
        roots.append(str(locked))
    # one activity process: started up to four times, each importing the SDK and
    # drivers; a batch under way at the kill is what the test needs, not two at once
    worker = WorkerProcess(temporal_server.address, processes=1, env=env, log_dir=data_dir)
    with pytest.MonkeyPatch.context() as patch:
        for key in [k for k in os.environ if k.startswith("AWS_")]:
            patch.delenv(key)
        worker.start()
    client = await StaccatoClient.connect(target_host=temporal_server.address, namespace="default")
    client.task_queue = worker.task_queue
    s3: Any = seaweed_s3.client()
    try:
        dataset = await submit_dataset(
            client,
            str(source),
            roots,
            TransferOptions(chunk_size=1 * MiB, heartbeat_timeout_s=2),
            batch_files=50,
            max_batches=2,
            page_size=200,
        )
        from temporalio.api.enums.v1 import PendingActivityState

        handle = client.temporal.get_workflow_handle(dataset)

        async def batch_running() -> bool:
            """A batch attempt runs now (the kill must interrupt one: CI once killed
            the worker at half the files and no batch was retried after)."""
            description = await handle.describe()
            return any(
                p.activity_type.name == "copy_batch_to_many"
                and p.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
                for p in description.raw_description.pending_activities
            )

        published: list[Path] = []
        interrupted = False
        for kill in range(3):
            # A batch seen running may end before the kill lands (CI did so once): only a
            # batch still started after the kill, with no worker left, was interrupted.
            # Otherwise restart the worker and kill again, further on.
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                published = [p for p in one.rglob("f*") if ".staccato-" not in p.name]
                if len(published) >= count * (2 + kill) // 6 and await batch_running():
                    break
                await asyncio.sleep(0.01)
            worker.kill()
            interrupted = await batch_running()
            if interrupted:
                break
            with pytest.MonkeyPatch.context() as patch:
                for key in [k for k in os.environ if k.startswith("AWS_")]:
                    patch.delenv(key)
                worker.start()
        assert interrupted, "three kills in a row missed every batch"
        assert count // 4 < len(published) < count, len(published)
        # the dataset goes on after its worker's death: its roots stay locked
        from staccato.errors import DestinationBusyError

        with pytest.raises(DestinationBusyError, match=dataset):
            await submit_dataset(client, str(source), str(one))
        marks = {
            str(p.relative_to(one)): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in one.rglob("f*")
            if ".staccato-" not in p.name
        }
        stored: set[str] = set()
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="copy/"):
            stored |= {item["Key"][len("copy/") :] for item in page.get("Contents", [])}
        both = set(marks) & stored
        assert both, "nothing was completed to both roots before the kill"
        restarted = time.time()
        with pytest.MonkeyPatch.context() as patch:
            for key in [k for k in os.environ if k.startswith("AWS_")]:
                patch.delenv(key)
            worker.start()
        final = await wait_dataset(client, dataset, timeout_s=240)
        assert final.destinations is not None
        if failing_root:
            assert final.state == DatasetState.completed_with_errors, final
            assert final.files_failed == count, final
            assert [d.files_done for d in final.destinations] == [count, count, 0], final
            assert [d.files_failed for d in final.destinations] == [0, 0, count], final
        else:
            assert final.state == DatasetState.completed, final
            assert final.files_done == count and final.files_failed == 0, final
            assert [d.files_done for d in final.destinations] == [count, count], final
        rewritten = sorted(
            name
            for name in both
            if ((one / name).stat().st_ino, (one / name).stat().st_mtime_ns) != marks[name]
        )
        assert rewritten == [], f"{len(rewritten)} local files written again: {rewritten[:10]}"
        sent_again = sorted(
            r["uri"]
            for r in s3_proxy.requests()
            if r["method"] == "PUT"
            and float(r["msec"]) > restarted
            and r["uri"].split("?")[0].removeprefix(f"/{bucket}/copy/") in both
        )
        print(
            f"killed with {len(both)} of {count} files at both roots; after the restart "
            f"{len(sent_again)} of them were PUT again"
        )
        assert sent_again == [], f"{len(sent_again)} objects sent again: {sent_again[:10]}"
        assert tree_difference(tree(one), tree(source)) == []
        # the kill interrupted batches: their activities ran a second attempt
        from temporalio.api.enums.v1 import EventType

        retried = [
            e.activity_task_started_event_attributes.attempt
            async for e in client.temporal.get_workflow_handle(dataset).fetch_history_events()
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
            and e.activity_task_started_event_attributes.attempt > 1
        ]
        assert retried, "no batch was interrupted by the kill"
        # and once it ended, they are free
        alone = await submit_dataset(
            client, str(source), str(one), TransferOptions(sync_level=SyncLevel.size)
        )
        again = await wait_dataset(client, alone, timeout_s=120)
        assert (again.state, again.files_skipped) == (DatasetState.completed, count), again
    finally:
        worker.stop()
        if failing_root:
            _mutable(locked.parent)


def _files(root: Path, count: int, seed: bytes) -> dict[str, tuple[int, str]]:
    """``count`` small files under ``root`` (the same names for every seed, contents
    of their own); returns :func:`tree` of it."""
    for i in range(count):
        path = root / f"d{i % 6}" / f"f{i:04d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(seed + hashlib.sha256(seed + str(i).encode()).digest() * 64)
    return tree(root)


async def test_two_datasets_sharing_a_root_never_write_it_at_once(
    temporal_server,
    fan_worker: WorkerProcess,
    fan_client: StaccatoClient,
    env: dict[str, str],
    data_dir: Path,
) -> None:
    """Each root is locked for a dataset's life: while A (to R1 and SHARED) runs, B (to
    R3 and SHARED) is refused by the CLI and the Python API naming SHARED and A, a
    single-root dataset to SHARED is refused, and B started by a plain Temporal client
    fails before writing anything (its lock of R3, taken first, ends with it). B runs
    once A ended; every file at SHARED is A's until then, B's after (mtimes)."""
    import asyncio
    import time

    from temporalio.api.enums.v1 import EventType
    from temporalio.client import WorkflowFailureError

    from staccato.dataset_client import cancel_dataset, dataset_status, submit_dataset
    from staccato.dataset_requests import make_dataset_request, request_id
    from staccato.errors import DestinationBusyError
    from tests.dataset_checks import wait_dataset

    src_a, src_b = data_dir / "a", data_dir / "b"
    # A outlasts the checks below (a CLI run, two submits, a few status calls: a few
    # seconds); B fails at once (no relock wait), so A need not outlast 30 s of B's
    # timers as it did (600 files then). A is paced (~0.5 s a 2 KiB file, one file a
    # batch, one batch at a time: 20 s and more on any machine); it was 200 unpaced
    # one-file batches (~0.1 s each at load 9), for the same checks
    want_a, want_b = _files(src_a, SHARED_FILES, b"A"), _files(src_b, SHARED_FILES, b"B")
    r1, shared, r3 = data_dir / "r1", data_dir / "shared", data_dir / "r3"
    slow = {"batch_files": 1, "max_batches": 1}  # one file a batch, one after the other
    paced = OPTIONS.model_copy(update={"max_rate": 4096})
    a = await submit_dataset(fan_client, str(src_a), [str(r1), str(shared)], paced, **slow)
    deadline = time.monotonic() + 60
    while not any(p.name.startswith("f") for p in shared.rglob("f*")):
        assert time.monotonic() < deadline, "A wrote nothing to the shared root in 60 s"
        await asyncio.sleep(0.05)
    # a plain Temporal client skips the client's checks: the workflow's locks hold
    request = make_dataset_request(str(src_b), [str(r3), str(shared)], OPTIONS)
    raw = await fan_client.temporal.start_workflow(
        "DatasetWorkflow", request, id=request_id(request), task_queue=fan_worker.task_queue
    )
    with pytest.raises(WorkflowFailureError) as failed:
        await asyncio.wait_for(raw.result(), 60)
    # B is a first run: it fails busy at once, no 1 s relock timers (a continued run's)
    timers = [
        e
        async for e in raw.fetch_history_events()
        if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED
    ]
    assert not timers, f"B retried the busy lock ({len(timers)} timers) before failing"
    running = (await dataset_status(fan_client, a)).state
    assert running == DatasetState.running, "A ended too soon: the test proves nothing"
    cli = {"address": temporal_server.address, "task_queue": fan_worker.task_queue, "env": env}
    refused = run_cli("cp", "-r", "-q", str(src_b), str(r3), str(shared), **cli)
    assert refused.returncode == 1, refused.stderr
    assert f"destination busy: file://{shared} is being written by dataset {a}" in (
        refused.stderr
    ), refused.stderr
    for roots in ([str(shared), str(r3)], [str(shared)]):
        with pytest.raises(DestinationBusyError, match=a):
            await submit_dataset(fan_client, str(src_b), roots, OPTIONS)
    running = (await dataset_status(fan_client, a)).state
    assert running == DatasetState.running, "A ended too soon: the test proves nothing"
    assert (await dataset_status(fan_client, str(shared))).id == a  # status ROOT: its holder
    assert "destination busy" in str(failed.value.cause) and str(shared) in str(
        failed.value.cause
    ), failed.value.cause
    assert not r3.exists() or tree(r3) == {}, "B wrote to its other root while refused"
    # R3's lock ended with B's failed run: a dataset to R3 alone starts
    alone = await submit_dataset(fan_client, str(src_b), str(r3), OPTIONS)
    assert (await wait_dataset(fan_client, alone, timeout_s=120)).state == DatasetState.completed
    final_a = await wait_dataset(fan_client, a, timeout_s=180)
    assert final_a.state == DatasetState.completed, final_a
    assert tree(shared) == want_a, "the shared root holds files not from A"
    a_last = max(p.stat().st_mtime_ns for p in shared.rglob("f*"))
    # A ended: its locks were released, B runs and rewrites every file after A's last
    b = await submit_dataset(fan_client, str(src_b), [str(r3), str(shared)], OPTIONS)
    final_b = await wait_dataset(fan_client, b, timeout_s=120)
    assert final_b.state == DatasetState.completed, final_b
    assert tree(shared) == want_b and tree(r3) == want_b
    assert min(p.stat().st_mtime_ns for p in shared.rglob("f*")) > a_last
    # a cancelled dataset releases its locks too
    r4 = data_dir / "r4"
    c = await submit_dataset(fan_client, str(src_a), [str(r1), str(r4)], paced, **slow)
    deadline = time.monotonic() + 60
    while not any(r4.rglob("f*")):
        assert time.monotonic() < deadline, "C wrote nothing in 60 s"
        await asyncio.sleep(0.05)
    await cancel_dataset(fan_client, c)
    assert (await wait_dataset(fan_client, c, timeout_s=60)).state == DatasetState.cancelled
    after = await submit_dataset(fan_client, str(src_b), str(r4), OPTIONS)
    assert (await wait_dataset(fan_client, after, timeout_s=120)).state == DatasetState.completed


def _immutable(path: Path) -> None:
    """Make the directory ``path`` refuse new entries even to root (chattr +i)."""
    import subprocess

    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"chattr +i is not available here: {done.stderr.strip()}")


def _mutable(path: Path) -> None:
    import subprocess

    subprocess.run(["chattr", "-i", str(path)], capture_output=True)


async def test_a_large_file_to_a_read_only_root_or_a_file_names_the_cause(
    temporal_server,
    fan_worker: WorkerProcess,
    fan_client: StaccatoClient,
    env: dict[str, str],
    data_dir: Path,
) -> None:
    """A large file to a root that refuses new entries fails as not writable (not
    "does not exist; create it first"), to a root that is a regular file as "is a file,
    not a directory" (not a bare "Not a directory"); a single transfer under a file
    says the same."""
    source = data_dir / "src"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "big").write_bytes(os.urandom(LARGE))
    (source / "small").write_bytes(b"s" * 100)
    good, locked, afile = data_dir / "good", data_dir / "locked", data_dir / "afile"
    afile.write_bytes(b"a file, not a directory")
    _immutable(locked)
    try:
        final = await run_dataset(
            fan_client,
            str(source),
            [str(good), str(locked)],
            options=OPTIONS,
            small_file_max=SMALL_FILE_MAX,
        )
    finally:
        _mutable(locked)
    # a root that is a file already is refused before the dataset starts
    with pytest.raises(InvalidURLError, match=f"{afile} is a file, not a directory"):
        make_dataset_request(str(source), [str(good), str(afile)])
    assert final.state == DatasetState.completed_with_errors, final
    assert tree(good) == tree(source)
    why = {(f.name, f.destination): f.reason for f in final.failures if f.name == "sub/big"}
    at_locked = why[("sub/big", f"file://{locked}")]
    # the root is refused up front for its files (tester72: one reason, "not writable",
    # and how to tell: its permissions or an immutable flag)
    assert "is not writable" in at_locked and "does not exist" not in at_locked, at_locked
    cli = {"address": temporal_server.address, "task_queue": fan_worker.task_queue, "env": env}
    single = run_cli("cp", "-q", str(source / "sub" / "big"), f"{afile}/x/big", **cli)
    assert single.returncode == 1, single.stderr
    assert f"{afile} is a file, not a directory" in single.stderr, single.stderr


def test_retry_failed_without_an_earlier_dataset_exits_2_and_quiet_prints_nothing(
    temporal_server, fan_worker: WorkerProcess, env: dict[str, str], data_dir: Path
) -> None:
    source, one, two = data_dir / "src", data_dir / "one", data_dir / "two"
    source.mkdir()
    (source / "f").write_bytes(b"x" * 10)
    cli = {"address": temporal_server.address, "task_queue": fan_worker.task_queue, "env": env}
    for roots in ([str(one)], [str(one), str(two)]):
        done = run_cli("cp", "-r", "--retry-failed", str(source), *roots, **cli)
        assert done.returncode == 2, done.stderr
        said = f"nothing to retry: no earlier dataset from file://{source} to file://{one}"
        assert said in done.stderr, done.stderr
    for roots in ([str(one)], [str(one), str(two)]):  # -q: nothing but errors
        done = run_cli("cp", "-r", "-q", str(source), *roots, **cli)
        assert (done.returncode, done.stdout, done.stderr) == (0, "", ""), done.stderr
    done = run_cli("cp", "-q", str(source / "f"), str(data_dir / "g"), **cli)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", ""), done.stderr
    # the root of a single-root dataset now was, before, written by one to both roots:
    # that dataset's failures are not this one's to retry
    done = run_cli("cp", "-r", "--retry-failed", str(source), str(two), **cli)
    assert done.returncode == 2 and "nothing to retry" in done.stderr, done.stderr


def test_status_failures_of_a_group_lists_its_failed_destinations(
    temporal_server, fan_worker: WorkerProcess, env: dict[str, str], data_dir: Path
) -> None:
    source = data_dir / "f"
    source.write_bytes(os.urandom(4096))
    locked = data_dir / "locked"
    _immutable(locked)
    cli = {"address": temporal_server.address, "task_queue": fan_worker.task_queue, "env": env}
    try:
        done = run_cli("cp", "-q", str(source), str(data_dir / "g"), str(locked / "g"), **cli)
    finally:
        _mutable(locked)
    assert done.returncode == 1, done.stderr
    found = re.search(r"staccato-group-[0-9a-f]+", done.stderr)
    assert found is not None, done.stderr
    failures = run_cli("status", "--failures", found.group(0), **cli)
    assert failures.returncode == 0, failures.stderr
    (line,) = failures.stdout.splitlines()
    destination, state, why = line.split("\t")
    assert (destination, state) == (f"file://{locked}/g", "failed"), line
    assert "not writable" in why or "permission denied" in why, line


def test_help_describes_datasets_roots_and_ids() -> None:
    def flat(text: str) -> str:  # wrapped at any width: compare without whitespace
        return "".join(text.replace("│", " ").split())

    cp = flat(run_cli("cp", "--help", address="127.0.0.1:1").stdout)
    for said in (
        "the file to write, or with -r the directory or prefix to write the tree under",
        "With several destinations at most 8MiB",
        "--retry-failed with no earlier dataset",
        "Print nothing but errors",
    ):
        assert flat(said) in cp, said
    status = flat(run_cli("status", "--help", address="127.0.0.1:1").stdout)
    for said in ("a dataset id (staccato-dataset-...)", "a fan-out group id (staccato-group-"):
        assert flat(said) in status, said
