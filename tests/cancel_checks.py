"""Cancel checks shared by the file and SFTP destination tests: whatever moment a cancel
arrives, the reported outcome matches what the destination holds (the old object,
cancelled; or the new one, completed), never neither."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

from staccato.client import StaccatoClient
from staccato.errors import StaccatoError, TransferFailedError
from staccato.models import TransferOptions, TransferState
from tests.helpers import leftovers, sha256_file, wait_for_phase, wait_for_status, write_random
from tests.servers.nginx import NginxServer

OLD = b"the previous content of the destination, which a cancel must never lose\n" * 1000


async def cancel_at_random_points(
    client: StaccatoClient,
    source: Path,
    destination: Path,
    destination_url: str,
    options: TransferOptions,
    *,
    rounds: int,
    seed: int,
) -> dict[str, int]:
    """Run ``rounds`` transfers of ``source`` over an existing ``destination``, each
    cancelled at a random moment between submit and a little past the measured
    duration of an uncancelled one (every other round near the end of the copy, where
    publish begins); check the outcome after each.

    Returns:
        How many rounds ended ``cancelled`` and ``completed``.
    """
    new = sha256_file(source)
    old = hashlib.sha256(OLD).hexdigest()
    destination.write_bytes(OLD)
    started = time.monotonic()
    transfer = await client.submit(str(source), destination_url, options)
    await asyncio.wait_for(client.wait(transfer), 120)
    duration = time.monotonic() - started
    rng = random.Random(seed)
    outcomes = {"cancelled": 0, "completed": 0}
    for round_ in range(rounds):
        destination.write_bytes(OLD)
        transfer = await client.submit(str(source), destination_url, options)
        # every other round aims at the end of the copy, where publish begins
        low, high = (0.0, 1.3) if round_ % 2 == 0 else (0.75, 1.1)
        await asyncio.sleep(rng.uniform(low * duration, high * duration))
        try:
            await client.cancel(transfer)
        except StaccatoError:
            pass  # it had already ended
        try:
            await asyncio.wait_for(client.wait(transfer), 120)
            state = TransferState.completed
        except TransferFailedError as err:
            state = err.state
        held = sha256_file(destination)
        if held not in (old, new) or (held == new) != (state == TransferState.completed):
            history = await client.temporal.get_workflow_handle(transfer).fetch_history()
            for event in history.events:
                print(event.event_id, event.event_type, event.event_time.ToJsonString())
            print("held", held == new, held == old, destination.stat().st_size)
        assert state in (TransferState.completed, TransferState.cancelled), (round_, state)
        if state == TransferState.completed:
            assert held == new, f"round {round_}: reported completed, destination is not new"
        else:
            assert held == old, f"round {round_}: reported cancelled, old content lost"
        assert leftovers(destination.parent) == [], round_
        outcomes[state.value] += 1
    print(f"cancel at random points over {duration:.2f} s transfers: {outcomes}")
    return outcomes


async def cancel_once_publish_began(
    client: StaccatoClient,
    nginx: NginxServer,
    http_root: Path,
    destination: Path,
    destination_url: str,
    size: int,
    list_dir: Callable[[], list[str]],
) -> None:
    """A cancel arriving while publish is under way (held in its retries by the source
    server being down: publish re-checks the source's version) does not undo the
    commit: the transfer completes and the destination holds the new object.

    The transfer is paused and resumed once so the temp data is read back before
    publish (a verify phase long enough to stop nginx in).
    """
    digest = write_random(http_root / "commit.bin", size, seed=21)
    # modified long ago: its Last-Modified proves it stable, so no second read of the
    # source runs between the verify and publish
    os.utime(http_root / "commit.bin", (time.time() - 3600, time.time() - 3600))
    destination.write_bytes(OLD)
    options = TransferOptions(
        chunk_size=size, streams=1, checksum="sha256", heartbeat_timeout_s=5, retry_for_s=120
    )
    transfer = await client.submit(nginx.url("commit.bin"), destination_url, options)
    await client.pause(transfer)
    await client.resume(transfer)
    phase = await wait_for_phase(client, transfer, ("verify", "publish", "done"), interval_s=0.02)
    assert phase == "verify", f"did not catch the verify before publish (phase {phase})"
    t0 = time.monotonic()
    nginx.stop()
    try:
        status = await wait_for_status(
            client,
            transfer,
            lambda s: s.phase == "publish" and s.last_retry_error is not None,
            timeout_s=60,
        )
        print(f"publish retrying: {status.last_retry_error} (next {status.next_attempt_at})")
        await client.cancel(transfer)
        # the cancel is accepted, yet publish goes on retrying; the old file stays
        # until publish succeeds
        await asyncio.sleep(1.5)
        assert destination.read_bytes() == OLD
    finally:
        nginx.start()
    t1 = time.monotonic()
    result = await asyncio.wait_for(client.wait(transfer), 120)
    print(
        f"stopped at verify; cancelled; completed {time.monotonic() - t1:.1f} s after restart "
        f"({t1 - t0:.1f} s down)"
    )
    assert result.bytes == size
    assert sha256_file(destination) == digest
    assert list_dir() == []
    final = await client.status(transfer)
    assert final.state == TransferState.completed
