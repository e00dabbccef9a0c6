"""The command loads only what it needs: help builds no Temporal client, and neither
help nor a whole ``cp`` loads an endpoint driver (boto3, paramiko, httpx) or the
activities; the worker does that. Checked on the modules a fresh interpreter holds
after the command ran, not on timings."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, write_random

#: loaded only by the worker (drivers and the code that runs them)
DRIVERS = (
    "boto3",
    "botocore",
    "paramiko",
    "httpx",
    "staccato.endpoints",
    "staccato.activities",
    "temporalio.worker",
)
#: not needed to print help or to reject bad input
CLIENT = ("temporalio.client", "staccato.client")
#: not needed by a single ``cp`` without a terminal: rich draws only a terminal's
#: progress bar; the client asks the workflow by name, not through its code
NOT_FOR_CP = (
    "rich",
    "staccato.workflows.transfer",
    "staccato.workflows.governor",
    "staccato.dataset_client",
    "staccato.fanout_client",
    "opentelemetry",
)

#: runs the command in-process (not ``main``: that ends with ``os._exit``) and prints
#: the modules then loaded as one JSON line
PROBE = """
import json, os, sys
sys.argv = ["staccato", *json.loads(sys.argv[1])]
from staccato.cli import app
code = 0
try:
    app()
except SystemExit as exit_:
    code = exit_.code if isinstance(exit_.code, int) else 1
sys.stdout.flush()
print("\\nPROBE " + json.dumps({"code": code, "modules": sorted(sys.modules)}), flush=True)
os._exit(0)
"""


def _probe(
    *args: str, env: dict[str, str] | None = None, script: str = PROBE
) -> tuple[int, set[str], str]:
    """Run ``staccato ARGS`` in a fresh interpreter through ``script`` (:data:`PROBE`
    or :data:`MAIN_PROBE`): (exit code, modules loaded, stderr)."""
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(list(args))],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        timeout=120,
    )
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("PROBE ")]
    assert lines, f"probe printed nothing; stderr:\n{done.stderr}"
    found = json.loads(lines[-1].removeprefix("PROBE "))
    return found["code"], set(found["modules"]), done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["cp", "--help"],
        ["submit", "--help"],
        ["limit", "set", "--help"],
        ["schedule", "create", "--help"],
    ],
    ids=lambda a: " ".join(a),
)
def test_help_loads_no_client_and_no_driver(args: list[str]) -> None:
    code, modules, stderr = _probe(*args)
    assert code == 0, stderr
    assert sorted(m for m in DRIVERS + CLIENT if m in modules) == []


def test_usage_error_loads_no_driver(tmp_path: Path) -> None:
    """A bad option is refused before anything heavy is imported."""
    code, modules, _ = _probe("cp", "--streams", "0", str(tmp_path / "a"), str(tmp_path / "b"))
    assert code == 2
    assert sorted(m for m in DRIVERS + CLIENT if m in modules) == []


@pytest.mark.parametrize("quiet", [["--quiet"], []], ids=["quiet", "lines"])
def test_whole_cp_loads_no_driver(
    temporal_server, worker, tmp_path: Path, quiet: list[str]
) -> None:
    """A real ``cp`` through the suite's Temporal server and worker: the command talks
    to Temporal only; the bytes (and the drivers) are the worker's. Its stderr is a
    pipe: no progress bar, so no rich either, quiet or not."""
    source = tmp_path / "src.bin"
    write_random(source, 64 * 1024)
    destination = tmp_path / "dst.bin"
    code, modules, stderr = _probe(
        "cp",
        *quiet,
        str(source),
        str(destination),
        env={
            "TEMPORAL_ADDRESS": temporal_server.address,
            "TEMPORAL_NAMESPACE": "default",
            "STACCATO_TASK_QUEUE": worker.task_queue,
        },
    )
    assert code == 0, stderr
    assert destination.read_bytes() == source.read_bytes()
    assert "temporalio.client" in modules  # it did talk to Temporal
    assert sorted(m for m in DRIVERS + NOT_FOR_CP if m in modules) == []
    if quiet:
        assert stderr == ""  # -q prints nothing but errors
    else:
        assert "completed: 64.0 KiB" in stderr
        assert re.search(r", in \d+\.\d s \(\S+ \S+/s average\)$", stderr, re.M), stderr


#: prints the names of the models whose validator was built by the import alone
BUILT = """
import json, pydantic, staccato.models, staccato.datasets.models
built = sorted(
    f"{module.__name__}.{name}"
    for module in (staccato.models, staccato.datasets.models)
    for name, value in vars(module).items()
    if isinstance(value, type) and issubclass(value, pydantic.BaseModel)
    and value.__module__ == module.__name__ and value.__pydantic_complete__
)
print(json.dumps(built))
"""


def test_importing_the_models_builds_only_what_a_default_needs() -> None:
    """A model's validator is built at its first use, not at import (each command
    uses a few of ~70). The two built are a default value's (``TransferOptions()``,
    the default of ``TransferRequest.options``) and its holder's."""
    done = subprocess.run(
        [sys.executable, "-c", BUILT], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert done.returncode == 0, done.stderr
    built = set(json.loads(done.stdout))
    assert built <= {"staccato.models.TransferOptions", "staccato.models.TransferRequest"}


#: not needed by a transfer command (``cp``, ``submit``, ...): the other commands'
#: modules and what only they use
NOT_FOR_TRANSFER_COMMANDS = (
    "staccato.cli.service",
    "staccato.cli.limits",
    "staccato.cli.schedule",
    "staccato.tuning",
    "staccato.datasets.models",
)

#: runs the command as the ``staccato`` script does (``main``), printing the modules
#: loaded as one JSON line just before ``main`` ends the process
MAIN_PROBE = """
import json, os, sys
sys.argv = ["staccato", *json.loads(sys.argv[1])]
import staccato.cli
end = os._exit

def _exit(code):
    sys.stdout.flush()
    print("\\nPROBE " + json.dumps({"code": code, "modules": sorted(sys.modules)}), flush=True)
    end(code)

os._exit = _exit
staccato.cli.main()
"""


def _probe_main(*args: str, env: dict[str, str] | None = None) -> tuple[int, set[str], str]:
    """:func:`_probe` through ``main``."""
    return _probe(*args, env=env, script=MAIN_PROBE)


def test_transfer_command_loads_no_other_command(tmp_path: Path) -> None:
    """``staccato cp`` (here refused: a usage error, after its options were parsed)
    builds the transfer commands alone: the service, schedule and limit commands'
    modules are not imported."""
    code, modules, stderr = _probe_main(
        "cp", "--streams", "0", str(tmp_path / "a"), str(tmp_path / "b")
    )
    assert code == 2, stderr
    assert "--streams" in stderr
    assert sorted(m for m in NOT_FOR_TRANSFER_COMMANDS if m in modules) == []


def test_whole_cp_through_main_loads_no_other_command(
    temporal_server, worker, tmp_path: Path
) -> None:
    """A real ``cp -q`` as the ``staccato`` script runs it: the bytes arrive, and the
    command loaded no driver and none of the other commands' modules."""
    source = tmp_path / "src.bin"
    write_random(source, 64 * 1024)
    destination = tmp_path / "dst.bin"
    code, modules, stderr = _probe_main(
        "cp",
        "-q",
        str(source),
        str(destination),
        env={
            "TEMPORAL_ADDRESS": temporal_server.address,
            "TEMPORAL_NAMESPACE": "default",
            "STACCATO_TASK_QUEUE": worker.task_queue,
        },
    )
    assert code == 0, stderr
    assert destination.read_bytes() == source.read_bytes()
    assert stderr == ""
    assert sorted(m for m in DRIVERS + NOT_FOR_CP + NOT_FOR_TRANSFER_COMMANDS if m in modules) == []


def test_whole_command_still_has_every_command() -> None:
    """``staccato.cli.app`` (what ``staccato --help`` and the other commands run) has
    every command, the transfer commands and the others."""
    from typer.main import get_command

    from staccato.cli import app

    names = set(get_command(app).commands)  # type: ignore[attr-defined]
    assert {"cp", "submit", "list", "worker", "up", "down", "schedule", "limit"} <= names


#: runs the command in-process (as :data:`PROBE`) and prints, as one JSON line, whether
#: the garbage collector is on and how many objects are frozen when it has ended
GC_PROBE = """
import gc, json, os, sys
sys.argv = ["staccato", *json.loads(sys.argv[1])]
from staccato.cli import app
code = 0
try:
    app()
except SystemExit as exit_:
    code = exit_.code if isinstance(exit_.code, int) else 1
sys.stdout.flush()
print("\\nPROBE " + json.dumps({"code": code, "gc": [gc.isenabled(), gc.get_freeze_count()]}))
os._exit(0)
"""


def test_a_command_runs_with_the_collector_on_after_its_imports(temporal_server) -> None:
    """A command's imports run with the garbage collector paused, and what they made
    is frozen (``staccato.loading``); the collector is on again once the command first
    waits on Temporal, so a long ``cp`` or ``watch`` does collect its garbage."""
    done = subprocess.run(
        [sys.executable, "-c", GC_PROBE, json.dumps(["status", "staccato-no-such-transfer"])],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={
            **os.environ,
            "TEMPORAL_ADDRESS": temporal_server.address,
            "TEMPORAL_NAMESPACE": "default",
        },
        timeout=120,
    )
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("PROBE ")]
    assert lines, f"probe printed nothing; stderr:\n{done.stderr}"
    found = json.loads(lines[-1].removeprefix("PROBE "))
    assert found["code"] == 1, done.stderr  # no such transfer: Temporal was asked
    enabled, frozen = found["gc"]
    assert enabled
    assert frozen > 10_000
