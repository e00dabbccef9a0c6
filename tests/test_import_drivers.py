"""The worker's main process imports every installed driver before its workflow thread
runs (``staccato.endpoints.import_drivers``): a driver first imported by a control
activity's thread while a workflow task ran went through the workflow sandbox's import
hook and failed a transfer with a CPython ``SystemError`` once."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


def _probe(code: str) -> Any:
    """Run ``code`` in a fresh interpreter; its last line of output, as JSON."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_drivers_loads_every_installed_driver_and_its_library() -> None:
    probe = (
        "import json, sys\n"
        "from staccato.endpoints import import_drivers\n"
        "loaded = import_drivers()\n"
        "print(json.dumps([loaded, sorted(m for m in ('paramiko', 'boto3', 'httpx')"
        " if m in sys.modules)]))\n"
    )
    loaded, libraries = _probe(probe)
    assert loaded == [
        "staccato.endpoints.file",
        "staccato.endpoints.http",
        "staccato.endpoints.s3",
        "staccato.endpoints.sftp",
    ]
    assert libraries == ["boto3", "httpx", "paramiko"]


def test_activity_process_imports_drivers_and_their_lazy_modules_before_its_threads() -> None:
    """An activity process's initializer imports every driver and what boto3 imports
    only when a first client is made (botocore's endpoint and HTTP session, urllib3):
    two resumed S3 streams making their first clients at once in one process got a
    half-initialised ``urllib3`` ("module 'urllib3' has no attribute 'util'")."""
    probe = (
        "import json, sys\n"
        "from staccato.workers.lifeline import start_activity_process\n"
        "lazy = ('botocore.client', 'botocore.endpoint', 'botocore.httpsession',"
        " 'urllib3.util.ssl_', 'paramiko', 'httpx')\n"
        "before = sorted(m for m in lazy if m in sys.modules)\n"
        "start_activity_process({}, 1 << 20)\n"
        "print(json.dumps([before, sorted(m for m in lazy if m in sys.modules)]))\n"
    )
    before, after = _probe(probe)
    assert before == []
    assert after == sorted(
        [
            "botocore.client",
            "botocore.endpoint",
            "botocore.httpsession",
            "urllib3.util.ssl_",
            "paramiko",
            "httpx",
        ]
    )


def test_activity_process_freezes_its_imports_and_collects_after() -> None:
    """An activity process imports with the garbage collector paused and freezes what
    it imported (``staccato.loading``: its collections walked those objects again and
    again); the collector is on again when its threads start, and the garbage of S3's
    throwaway client (~34,000 objects, made after the freeze) is not frozen with them:
    what was frozen holds little garbage (imports leave ~900 objects)."""
    probe = (
        "import gc, json\n"
        "from staccato.workers.lifeline import start_activity_process\n"
        "start_activity_process({}, 1 << 20)\n"
        "enabled, frozen = gc.isenabled(), gc.get_freeze_count()\n"
        "gc.collect()\n"
        "gc.unfreeze()\n"
        "print(json.dumps([enabled, frozen, gc.collect()]))\n"
    )
    enabled, frozen, frozen_garbage = _probe(probe)
    assert enabled
    assert frozen > 10_000
    assert frozen_garbage < 5_000


def test_manager_process_imports_neither_settings_nor_pydantic() -> None:
    """The worker's multiprocessing manager only scrubs its log lines
    (``staccato.scrubbing``): it imports neither the settings nor pydantic nor the
    cipher (~0.13 CPU-s of every worker start, when it imported ``staccato.secrets``)."""
    probe = (
        "import json, logging, sys\n"
        "from staccato.workers.lifeline import start_manager_process\n"
        "start_manager_process()\n"
        "scrubbed = [type(f).__name__ for h in logging.getLogger().handlers for f in h.filters]\n"
        "heavy = ('pydantic', 'staccato.settings', 'staccato.secrets', 'cryptography')\n"
        "print(json.dumps([scrubbed, sorted(m for m in heavy if m in sys.modules)]))\n"
    )
    scrubbed, heavy = _probe(probe)
    assert scrubbed == ["ScrubFilter"]
    assert heavy == []


def test_http_driver_leaves_out_httpx_command_line_client() -> None:
    """Importing the HTTP driver does not import httpx's command-line client (click,
    rich, pygments: ~70 ms CPU in each activity process), and an explicit import of that
    client still works afterwards (``staccato.loading.import_without``)."""
    probe = (
        "import json, sys\n"
        "import staccato.endpoints.http\n"
        "left_out = 'httpx._main' not in sys.modules and 'pygments' not in sys.modules\n"
        "import httpx._main\n"
        "print(json.dumps([left_out, callable(httpx._main.main)]))\n"
    )
    assert _probe(probe) == [True, True]
