"""What the service's own processes spend on one ``staccato cp -r`` of many small files
(issue 11's s3->file gap): CPU-s per process and Temporal RPCs by kind.

    python -m bench.bench_dataset_rpcs [--files 10000] [--runs 3] [--cases s3->file,file->file]
                                       [--before CHECKOUT] [--follow]

One SeaweedFS (s3->file's source prefix, written once, untimed) and one private service
per checkout (this one, and ``--before``'s with its own ``.venv``, each its own Temporal
dev server and worker), runs alternated between them (a warm-up of each first, not
counted). Per run: wall seconds; CPU-s (user + system, ``/proc/PID/stat``) of the
``cp -r`` command, the worker's main process, its multiprocessing manager, its activity
processes, the Temporal dev server and SeaweedFS; the Temporal server's requests by
operation (its own Prometheus counter ``service_requests`` of the frontend, read from
its ``/metrics`` endpoint before and after: what the worker, the CLI and the idle
polls asked; heartbeats are ``RecordActivityTaskHeartbeat``, polls
``PollWorkflowTaskQueue`` / ``PollActivityTaskQueue``, queries ``QueryWorkflow``); and
the dataset's history events by type over its runs. Then the medians per checkout.

``--follow``: ``cp -r`` without ``-q`` (its progress lines, polled status; stdout not a
terminal), else ``-q`` (what ``bench_dataset`` runs). CPU-s is the measure on a shared
machine: wall seconds are printed but follow the load.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_dataset import BUCKET, make_tree, tree_summary  # noqa: E402
from bench.common import (  # noqa: E402
    OtherService,
    Service,
    _children,
    cpu_seconds,
    server_pids,
)
from staccato.dataset_requests import dataset_id  # noqa: E402
from tests.servers.seaweedfs import SeaweedS3  # noqa: E402

_SAMPLE = re.compile(r"^service_requests\{([^}]*)\}\s+([0-9.e+]+)$")


def _listening_ports(pid: int) -> set[int]:
    """TCP ports ``pid`` listens on (its socket inodes matched in /proc/net/tcp*)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def metrics_url(service: Service) -> str:
    """The dev server's ``/metrics`` URL (it listens on a random port unless told)."""
    assert service.server is not None
    for port in sorted(_listening_ports(service.server.pid)):
        url = f"http://127.0.0.1:{port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if b"service_requests" in answer.read():
                    return url
        except OSError:
            continue
    raise RuntimeError("the Temporal dev server's /metrics endpoint was not found")


def requests_by_operation(url: str) -> Counter[str]:
    """The frontend's ``service_requests`` counter per operation, now."""
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    found: Counter[str] = Counter()
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        if labels.get("service_name") != "frontend":
            continue
        found[labels.get("operation", "?")] += int(float(match.group(2)))
    return found


def history_events(service: Service, workflow_id: str) -> Counter[str]:
    """Event types over every run of ``workflow_id`` (its continue-as-new chain)."""
    base = f"http://127.0.0.1:{service.http_port}/api/v1/namespaces/default"
    query = urllib.parse.quote(f"WorkflowId = '{workflow_id}'")
    with urllib.request.urlopen(f"{base}/workflows?query={query}", timeout=30) as answer:
        runs = [e["execution"]["runId"] for e in json.load(answer).get("executions", [])]
    kinds: Counter[str] = Counter()
    for run in runs:
        token = ""
        for _ in range(100):  # pages of 1,000 events
            url = (
                f"{base}/workflows/{workflow_id}/history?execution.runId={run}"
                f"&maximumPageSize=1000&nextPageToken={urllib.parse.quote(token)}"
            )
            with urllib.request.urlopen(url, timeout=30) as answer:
                page = json.load(answer)
            for event in page["history"]["events"]:
                kinds[str(event["eventType"]).removeprefix("EVENT_TYPE_")] += 1
            token = page.get("nextPageToken") or ""
            if not token:
                break
    kinds["runs"] = len(runs)
    return kinds


def groups(service: Service, seaweed: SeaweedS3) -> dict[str, list[int]]:
    """Process ids per group now."""
    assert service.worker is not None
    worker = service.worker.pid
    children = _children(worker)
    # the worker's first children, started before the pool: multiprocessing's resource
    # tracker, then the manager
    manager = sorted(children)[:2]
    return {
        "worker": [worker],
        "manager": manager,
        "activities": [p for p in children if p not in manager],
        "temporal": server_pids(service.server),
        "weed": server_pids(seaweed),
    }


def one_run(
    service: Service, seaweed: SeaweedS3, url: str, source: str, destination: Path, follow: bool
) -> dict[str, object]:
    """One ``cp -r`` with its CPU-s per group, requests by operation, events by type."""
    before_groups = groups(service, seaweed)
    cpu0 = {name: cpu_seconds(pids) for name, pids in before_groups.items()}
    rpc0 = requests_by_operation(url)
    began = time.perf_counter()
    command = [sys.executable, "-m", "staccato.cli", "cp", "-r", source, str(destination)]
    proc = subprocess.Popen(
        command + ([] if follow else ["-q"]),
        env=service.env,
        cwd=service.repo,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - began
    if status != 0:
        raise SystemExit(f"cp -r exited {status >> 8}")
    cpu: dict[str, float] = {"command": usage.ru_utime + usage.ru_stime}
    after_groups = groups(service, seaweed)
    for name, pids in after_groups.items():
        now = cpu_seconds(sorted(set(pids) | set(before_groups[name])))
        cpu[name] = sum(v - cpu0[name].get(p, 0.0) for p, v in now.items())
    rpcs = requests_by_operation(url) - rpc0
    events = history_events(service, dataset_id(str(destination)))
    return {"wall": wall, "cpu": cpu, "rpcs": rpcs, "events": events}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cases", default="s3->file")
    parser.add_argument("--before", type=Path, default=None)
    parser.add_argument("--follow", action="store_true")
    args = parser.parse_args()
    size = 64 * 1024
    source = make_tree(
        Path(tempfile.gettempdir()) / f"staccato-bench-dataset-src-{args.files}x64k",
        args.files,
        size,
    )
    work = Path(tempfile.mkdtemp(prefix="staccato-dsrpcs-", dir="/tmp"))
    seaweed = SeaweedS3(work / "seaweedfs", max_volumes=400)
    seaweed.start()
    seaweed.client().create_bucket(Bucket=BUCKET)
    env = seaweed.subprocess_env()
    services: dict[str, Service] = {}
    try:
        services["this"] = Service(env=env).start()
        if args.before:
            services["before"] = OtherService(args.before, env=env).start()
        urls = {label: metrics_url(s) for label, s in services.items()}
        count = 0
        for case in args.cases.split(","):
            if case == "s3->file":
                services["this"].staccato("cp", "-r", str(source), f"s3://{BUCKET}/src/", "-q")
                source_url = f"s3://{BUCKET}/src/"
            else:
                source_url = str(source)
            got: dict[str, list[dict[str, object]]] = {label: [] for label in services}
            for number in range(args.runs + 1):
                order = list(services.items())
                if number % 2:
                    order.reverse()
                for label, service in order:
                    count += 1
                    destination = work / f"out-{count}"
                    os.sync()
                    run = one_run(
                        service, seaweed, urls[label], source_url, destination, args.follow
                    )
                    if tree_summary(destination) != (args.files, args.files * size):
                        raise SystemExit(f"{label}: {destination} is not complete")
                    if not number:
                        continue  # warm-up
                    got[label].append(run)
                    cpu = run["cpu"]
                    assert isinstance(cpu, dict)
                    own = cpu["command"] + cpu["worker"] + cpu["temporal"]
                    print(
                        f"{case} {label} run {number}: {run['wall']:.2f} s; CPU-s "
                        + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
                        + f"; own (command+worker+temporal) {own:.2f}; load "
                        f"{os.getloadavg()[0]:.1f}",
                        flush=True,
                    )
                    print(f"    rpcs {dict(sorted(run['rpcs'].items()))}")  # type: ignore[union-attr]
                    print(f"    events {dict(sorted(run['events'].items()))}")  # type: ignore[union-attr]
            for label, runs in got.items():
                medians = {
                    k: statistics.median(r["cpu"][k] for r in runs)  # type: ignore[index]
                    for k in runs[0]["cpu"]  # type: ignore[union-attr]
                }
                own = [
                    sum(r["cpu"][k] for k in ("command", "worker", "temporal"))  # type: ignore[index]
                    for r in runs
                ]
                print(
                    f"{case} {label} medians of {len(runs)}: "
                    f"{statistics.median(r['wall'] for r in runs):.2f} s; "  # type: ignore[misc]
                    + ", ".join(f"{k} {v:.2f}" for k, v in medians.items())
                    + f"; own {statistics.median(own):.2f} (runs {', '.join(f'{o:.2f}' for o in own)})"
                )
            for tree in work.glob("out-*"):
                shutil.rmtree(tree, ignore_errors=True)
    finally:
        for service in services.values():
            service.stop()
        seaweed.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
