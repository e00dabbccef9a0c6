"""A transfer capped below what its link learned (an endpoint limit's max-streams, the
worker's memory budget) does not lower what the link learned, and the cap's reason
is shown (tester75: a link that learned 5 streams learned 1 under ``limit set
--max-streams 2`` and stayed at 1 after the limit was removed; ``at most 4`` was
never explained)."""

from __future__ import annotations

from pathlib import Path

from staccato import governors
from staccato.client import StaccatoClient
from staccato.link_memory import forget_link_memory, read_link_memory
from staccato.links import endpoint_of, link_of, parse_limit_target
from staccato.models import IfBusy, Limits, TransferOptions, TransferState
from staccato.tuning import MIN_TUNED_BYTES, LinkMemory
from staccato.workflows.governor import GOVERNOR_QUEUE
from staccato.workflows.link_tuning import RECORD_SIGNAL, link_tuning_id
from tests.helpers import sha256_file, write_random
from tests.servers.nginx import NginxServer

MiB = 1024 * 1024


async def _copy(client: StaccatoClient, source: str, destination: Path) -> object:
    transfer = await client.submit(
        source, str(destination), TransferOptions(tuning=True, if_busy=IfBusy.wait)
    )
    await client.wait(transfer)
    status = await client.status(transfer)
    assert status.state == TransferState.completed, status
    return status


async def test_a_copy_under_a_max_streams_limit_keeps_what_the_link_learned(
    client: StaccatoClient, nginx_ranges: NginxServer, http_root: Path, data_dir: Path
) -> None:
    """The link learned 6 streams; a copy under an endpoint limit of max-streams 2 runs
    at most 2 (``status`` names the limit as the cap's reason) and leaves the link at 6;
    the next copy, the limit removed, starts from 6. Before, the limited copy's
    setting (at most 2) replaced the 6."""
    digest = write_random(http_root / "capped.bin", 2 * MIN_TUNED_BYTES, seed=75)
    source = nginx_ranges.url("capped.bin")
    link = link_of(source, str(data_dir / "x"))
    endpoint = parse_limit_target(endpoint_of(source))
    await forget_link_memory(client.temporal, link)
    learned = LinkMemory(link=link, streams=6, chunk_size=16 * MiB, rate=600.0 * MiB, transfers=3)
    await client.temporal.start_workflow(
        "LinkTuningWorkflow",
        None,
        id=link_tuning_id(link),
        task_queue=GOVERNOR_QUEUE,
        start_signal=RECORD_SIGNAL,
        start_signal_args=[learned],
    )
    await governors.set_limits(client.temporal, endpoint, Limits(max_streams=2))
    try:
        status = await _copy(client, source, data_dir / "lim2.bin")
    finally:
        await governors.unset_limits(client.temporal, endpoint, [])
    assert sha256_file(data_dir / "lim2.bin") == digest
    tuning = status.tuning  # type: ignore[attr-defined]
    memory = await read_link_memory(client.temporal, link)
    assert memory is not None and memory.streams == 6, memory
    assert tuning is not None and tuning.max_streams == 2, tuning
    assert tuning.learned_streams == 6, tuning
    assert "the limit on" in (tuning.max_streams_reason or ""), tuning
    assert memory.transfers == 4, memory
    assert "the link keeps 6 streams" in memory.reasons[-1], memory.reasons

    status = await _copy(client, source, data_dir / "lim3.bin")
    assert sha256_file(data_dir / "lim3.bin") == digest
    tuning = status.tuning  # type: ignore[attr-defined]
    assert tuning is not None and tuning.max_streams == 16, tuning
    assert tuning.max_streams_reason is None, tuning
    await forget_link_memory(client.temporal, link)


async def test_a_link_learned_at_a_cap_sweeps_on_once_the_cap_is_gone(
    client: StaccatoClient, nginx_ranges: NginxServer, http_root: Path, data_dir: Path
) -> None:
    """A cold link's first copy under max-streams 2 ends at its cap: the link records
    the cap and why (``limit learned``), and the next copy, allowed 16, sweeps up from
    there instead of holding the capped setting. Before, the next copy held it (a
    newcomer's stayed at 1 stream, 1 decision)."""
    digest = write_random(http_root / "cold-capped.bin", MIN_TUNED_BYTES, seed=76)
    source = nginx_ranges.url("cold-capped.bin")
    link = link_of(source, str(data_dir / "x"))
    endpoint = parse_limit_target(endpoint_of(source))
    await forget_link_memory(client.temporal, link)
    await governors.set_limits(client.temporal, endpoint, Limits(max_streams=2))
    try:
        status = await _copy(client, source, data_dir / "cold2.bin")
    finally:
        await governors.unset_limits(client.temporal, endpoint, [])
    assert sha256_file(data_dir / "cold2.bin") == digest
    memory = await read_link_memory(client.temporal, link)
    assert memory is not None, status
    if memory.streams >= 2:  # the search ended at the cap (1 stream: it found the knee)
        assert memory.capped == 2, memory
        assert "the limit on" in (memory.cap_reason or ""), memory
        status = await _copy(client, source, data_dir / "cold3.bin")
        tuning = status.tuning  # type: ignore[attr-defined]
        assert tuning is not None, status
        assert any("that cap is gone: sweeping on from" in r for r in tuning.reasons), tuning
    await forget_link_memory(client.temporal, link)
