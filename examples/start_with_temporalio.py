"""Start a Staccato transfer from a plain temporalio client (no Staccato client code).

Any Temporal client, in any SDK language, can do the same: start workflow type
``TransferWorkflow`` on task queue ``staccato`` with a JSON input
``{"source": URL, "destination": URL, "options": {...}}``, under any workflow id.
The one-transfer-per-destination rule holds whatever the id: the destination's
transfer id is ``staccato-<first 32 hex of sha256(canonical destination URL)>``
(``staccato.client.transfer_id`` computes it); a run under another id (e.g.
``manual-1``) runs as that transfer and reports its outcome, failing with
"destination busy" when a different transfer writes the destination, or waiting
for it with ``"options": {"if_busy": "wait"}``. This example starts under an id of
its own (``example-<random>``), so it gets those rules: never start under the transfer
id with ``USE_EXISTING``, which would attach to whatever transfer writes the
destination, even one from another source.

Paths must be absolute (the worker resolves nothing against your directory).

Run: python examples/start_with_temporalio.py /tmp/source.bin /tmp/copy.bin
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import uuid
from pathlib import Path

from temporalio.client import Client
from temporalio.runtime import Runtime, TelemetryConfig

ADDRESS = os.environ.get("TEMPORAL_ADDRESS", "127.0.0.1:7233")
TASK_QUEUE = os.environ.get("STACCATO_TASK_QUEUE", "staccato")


async def transfer(client: Client, source: str, destination: str) -> None:
    source_url = Path(source).absolute().as_uri()
    destination_url = Path(destination).absolute().as_uri()
    result = await client.execute_workflow(
        "TransferWorkflow",
        {
            "source": source_url,
            "destination": destination_url,
            "options": {"chunk_size": 8 * 1024 * 1024, "streams": 4, "verify": "checksum"},
        },
        id=f"example-{uuid.uuid4().hex[:8]}",  # any id: the run takes the destination's lock
        task_queue=TASK_QUEUE,
    )
    print(result)  # {'bytes': ..., 'checksum': 'crc32c:...', 'duration_s': ..., ...}


async def main(source: str, destination: str) -> None:
    # The client's connection runs on a Tokio runtime (native threads). Temporal's
    # default runtime lives until the interpreter is torn down, and a thread of it
    # still handing the last reply to Python then crashes the exit (SIGSEGV, or SIGABRT
    # "PyGILState_Release: thread state ... must be current"). So: a runtime of our
    # own, dropped with the client before the process exits; dropping the last
    # reference to it stops its threads while Python is fully alive.
    runtime = Runtime(telemetry=TelemetryConfig())
    client = await Client.connect(ADDRESS, runtime=runtime)  # default JSON converter is enough
    try:
        await transfer(client, source, destination)
    finally:
        del client, runtime
        gc.collect()  # the client's reference cycles, so the runtime is dropped now


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
