"""Start a Staccato transfer from a plain temporalio client (no Staccato client code).

Any Temporal client, in any SDK language, can do the same: start workflow type
``TransferWorkflow`` on task queue ``staccato`` with a JSON input
``{"source": URL, "destination": URL, "options": {...}}``, under any workflow id.
The one-transfer-per-destination rule holds whatever the id: the destination's
transfer id is ``staccato-<first 32 hex of sha256(canonical destination URL)>``
(``staccato.client.transfer_id`` computes it); a run under another id (e.g.
``manual-1``) runs as that transfer and reports its outcome, failing with
"destination busy" when a different transfer writes the destination, or waiting
for it with ``"options": {"if_busy": "wait"}``. This example uses the transfer id
itself, so an identical start attaches (``USE_EXISTING``).

Run: python examples/start_with_temporalio.py /tmp/source.bin /tmp/copy.bin
"""

from __future__ import annotations

import asyncio
import hashlib
import sys

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy


async def main(source: str, destination: str) -> None:
    client = await Client.connect("127.0.0.1:7233")  # default JSON converter is enough
    source_url = f"file://{source}"
    destination_url = f"file://{destination}"
    workflow_id = "staccato-" + hashlib.sha256(destination_url.encode()).hexdigest()[:32]
    result = await client.execute_workflow(
        "TransferWorkflow",
        {
            "source": source_url,
            "destination": destination_url,
            "options": {"chunk_size": 8 * 1024 * 1024, "streams": 4, "verify": "checksum"},
        },
        id=workflow_id,
        task_queue="staccato",
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        memo={"source": source_url, "destination": destination_url},
    )
    print(result)  # {'bytes': ..., 'checksum': 'crc32c:...', 'duration_s': ..., ...}


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
