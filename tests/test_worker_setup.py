"""`staccato worker` on a fresh Temporal registers the search attributes it needs."""

from __future__ import annotations

from pathlib import Path

from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest

from tests.helpers import WorkerProcess
from tests.servers.temporal_server import TemporalDevServer


class BareTemporalDevServer(TemporalDevServer):
    """A dev server started without Staccato's search attributes."""

    def _argv(self) -> list[str]:
        argv = super()._argv()
        while "--search-attribute" in argv:
            at = argv.index("--search-attribute")
            del argv[at : at + 2]
        return argv


async def test_worker_registers_search_attributes(tmp_path: Path) -> None:
    server = BareTemporalDevServer(tmp_path / "bare.db", headless=True)
    server.start()
    try:
        client = await server.client()
        request = ListSearchAttributesRequest(namespace="default")
        before = await client.operator_service.list_search_attributes(request)
        assert "StaccatoDestination" not in before.custom_attributes
        with WorkerProcess(server.address, processes=1, log_dir=tmp_path) as worker:
            after = await client.operator_service.list_search_attributes(request)
            assert {"StaccatoSource", "StaccatoDestination", "StaccatoState"} <= set(
                after.custom_attributes
            )
            assert "registered search attributes" in worker.log_tail()
    finally:
        server.stop()
