"""``--verify full``: every byte of a local file destination's temp file is read back
before publish and compared per segment with the source's chunk checksums; damaged
segments are copied again (docs/architecture.md, "Reading every byte back before
publish (--verify full)").

Tester69's scene (0.35.0): 128 MiB, 2 streams, the worker SIGSTOPped with some chunks
journaled and the streams still running, 8 bytes written into chunk 0 of the temp
file, SIGCONT: with the default level the run ends ``completed`` and ``cmp`` differs
(the streams' later journal lines hide the change from the ctime check). With
``--verify full`` the destination equals the source. The default level's gap is kept
here as a strict xfail: it documents what ``full`` is for. The old code has no
``full`` (``VerifyMode.full`` is an AttributeError, the CLI refuses the value).

Plus the refusals: ``--verify full`` to an S3 destination or with ``-r`` exits 2
naming the option, the URL's kind and what is accepted.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType

from staccato.client import StaccatoClient
from staccato.models import (
    ChecksumAlgorithm,
    TransferOptions,
    TransferState,
    TransferStatus,
    VerifyMode,
)
from tests.helpers import (
    MiB,
    WorkerProcess,
    at_rest,
    child_pids,
    journaled_chunks,
    run_cli,
    sha256_file,
    signal_all,
    wait_for_status,
    write_random,
)
from tests.servers.temporal_server import TemporalDevServer

SIZE = 128 * MiB
CHUNK = 4 * MiB
# stopped once this many chunks are journaled (the tester: 10), streams still running
JOURNALED_AT_STOP = 10
# a coarse time stamp's tick is 1-10 ms: the change lands past the last append's tick
_PAST_A_TICK_S = 0.05


def _scheduled(history: object, activity_type: str) -> int:
    return sum(
        1
        for e in history.events  # type: ignore[attr-defined]
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == activity_type
    )


@pytest.mark.parametrize(
    "verify",
    [
        VerifyMode.full,
        pytest.param(
            VerifyMode.checksum,
            marks=pytest.mark.xfail(
                strict=True,
                raises=AssertionError,
                reason="documented gap of the default level: a chunk changed while "
                "streams of the same worker life still write is published",
            ),
        ),
    ],
    ids=["full", "checksum-default"],
)
async def test_chunk_changed_while_streams_write_is_not_published(
    temporal_server: TemporalDevServer, data_dir: Path, tmp_path: Path, verify: VerifyMode
) -> None:
    """The tester's scene: with ``full`` the destination equals the source (the
    damaged segment copied again: a third ``copy_stream``, ``verify`` activities read
    the temp file before publish); with the default ``checksum`` it completes with the
    changed bytes (strict xfail)."""
    source = data_dir / "src.bin"
    digest = write_random(source, SIZE, seed=69)
    at_rest(source)
    out = data_dir / "out"
    out.mkdir()
    destination = out / "dst.bin"
    options = TransferOptions(
        streams=2,
        chunk_size=CHUNK,
        max_rate=32 * MiB,
        heartbeat_timeout_s=120,
        verify=verify,
    )
    worker = WorkerProcess(temporal_server.address, processes=2, log_dir=tmp_path).start()
    assert worker.process is not None
    main = worker.process.pid
    stopped: list[int] = []
    try:
        client = await StaccatoClient.connect(
            target_host=temporal_server.address, namespace="default"
        )
        client.task_queue = worker.task_queue
        transfer = await client.submit(str(source), str(destination), options)
        chunks = SIZE // CHUNK

        deadline = time.monotonic() + 120
        journal: Path | None = None
        while True:
            assert time.monotonic() < deadline, "10 chunks were not journaled in 120 s"
            found = sorted(out.glob(".*.staccato-journal"))
            journal = found[0] if found else None
            lines = journaled_chunks(journal) if journal else set()
            if 0 in lines and len(lines) >= JOURNALED_AT_STOP:
                break
            await asyncio.sleep(0.02)
        assert journal is not None
        # the whole worker: its main process and the activity processes
        pool = child_pids(main)
        signal_all([main, *pool], signal.SIGSTOP)
        stopped.extend([main, *pool])
        lines = journaled_chunks(journal)
        assert len(lines) < chunks, "every chunk was journaled before the stop"
        assert not destination.exists()

        temp = journal.with_name(journal.name.replace("-journal", "-part"))
        await asyncio.sleep(_PAST_A_TICK_S)
        with open(temp, "r+b") as handle:  # the tester's 8 bytes into chunk 0
            handle.seek(100)
            handle.write(b"ZZZZZZZZ")
        signal_all(stopped, signal.SIGCONT)
        stopped.clear()

        result = await asyncio.wait_for(client.wait(transfer), 240)
        assert result.bytes == SIZE
        assert result.verified == verify
        done = await wait_for_status(
            client, transfer, lambda s: s.state == TransferState.completed, timeout_s=30
        )
        assert done.state == TransferState.completed
        history = await client.temporal.get_workflow_handle(transfer).fetch_history()
        assert sha256_file(destination) == digest, "published bytes differ from the source"
        assert not temp.exists()
        if verify == VerifyMode.full:
            # the path taken: the temp file read back before publish (a verify per
            # segment, twice), segment 0 copied again
            assert _scheduled(history, "verify") == 4
            # the ended status says full ran and what it copied again (tester71)
            assert done.verify_level == VerifyMode.full
            assert done.segments_copied_again == 1
            assert _scheduled(history, "copy_stream") == 3
    finally:
        signal_all(stopped, signal.SIGCONT)
        worker.stop()


async def test_untampered_full_reads_back_and_copies_once(
    client: StaccatoClient, data_dir: Path
) -> None:
    """``full`` on an undisturbed transfer: one ``verify`` per segment before publish,
    no segment copied again, the destination equals the source. On the session worker:
    nothing here needs a worker of its own (one less worker start, ~3 CPU-s)."""
    source = data_dir / "src.bin"
    digest = write_random(source, 24 * MiB, seed=70)
    at_rest(source)
    destination = data_dir / "dst.bin"
    options = TransferOptions(streams=3, chunk_size=4 * MiB, verify=VerifyMode.full)
    transfer = await client.submit(str(source), str(destination), options)
    result = await asyncio.wait_for(client.wait(transfer), 120)
    history = await client.temporal.get_workflow_handle(transfer).fetch_history()
    assert result.verified == VerifyMode.full
    assert result.read_back_recopied == 0
    assert sha256_file(destination) == digest
    streams = _scheduled(history, "copy_stream")
    assert streams >= 1
    assert _scheduled(history, "verify") == streams


def _throttled(pids: list[int], stop: threading.Event) -> None:
    """Slow the processes ``pids`` ~10x (SIGSTOP 0.45 s, run 0.05 s) until ``stop``:
    a read-back that lasts long enough to be seen (a local disk reads it in well under
    a second); SIGCONT at the end, always."""
    try:
        while not stop.is_set():
            signal_all(pids, signal.SIGSTOP)
            stop.wait(0.45)
            signal_all(pids, signal.SIGCONT)
            time.sleep(0.05)
    finally:
        signal_all(pids, signal.SIGCONT)


async def test_the_read_back_shows_its_progress_and_the_end_says_full_ran(
    temporal_server: TemporalDevServer, data_dir: Path, tmp_path: Path
) -> None:
    """tester71: a local ``--verify full`` copy showed no progress in phase ``verify``
    (no bytes read back, rate or ETA), and the ended transfer did not say that
    ``full`` ran or whether a segment was copied again. Now, with the activity
    processes slowed (SIGSTOP/SIGCONT) so the read-back lasts seconds: a status in
    phase ``verify`` has ``verified_bytes`` of ``verify_bytes_total`` (the size), some
    of them above 0 and below the size, and ``status`` (human) says ``verified``; the
    ended status says ``verify_level`` full and ``segments_copied_again`` 0, in
    ``--json`` and in words."""
    size = 256 * MiB
    source = data_dir / "src.bin"
    digest = write_random(source, size, seed=71)
    at_rest(source)
    destination = data_dir / "dst.bin"
    options = TransferOptions(
        streams=2,
        chunk_size=4 * MiB,
        verify=VerifyMode.full,
        checksum=ChecksumAlgorithm.sha256,  # slower to read back than crc32c
        heartbeat_timeout_s=120,
    )
    worker = WorkerProcess(temporal_server.address, processes=2, log_dir=tmp_path).start()
    assert worker.process is not None
    stop = threading.Event()
    throttle = threading.Thread(
        target=_throttled, args=(child_pids(worker.process.pid), stop), daemon=True
    )
    seen: list[TransferStatus] = []
    try:
        client = await StaccatoClient.connect(
            target_host=temporal_server.address, namespace="default"
        )
        client.task_queue = worker.task_queue
        transfer = await client.submit(str(source), str(destination), options)
        throttle.start()
        deadline = time.monotonic() + 240
        while True:
            assert time.monotonic() < deadline, "the transfer did not end in 240 s"
            now = await client.status(transfer)
            if now.phase == "verify" and now.state == TransferState.running:
                seen.append(now)
            if now.state.value in ("completed", "failed", "cancelled"):
                break
            await asyncio.sleep(0.2)
        stop.set()
        throttle.join(10)
        args = dict(address=temporal_server.address, task_queue=worker.task_queue)
        shown = await asyncio.to_thread(run_cli, "status", "--json", transfer, **args)
        words = await asyncio.to_thread(run_cli, "status", transfer, **args)
    finally:
        stop.set()
        worker.stop()
    assert now.state == TransferState.completed, now
    assert sha256_file(destination) == digest
    assert seen, "no status in phase verify"
    assert all(s.verify_bytes_total == size for s in seen), seen
    assert all(s.verified_bytes is not None for s in seen), seen
    assert any(0 < (s.verified_bytes or 0) < size for s in seen), [s.verified_bytes for s in seen]
    from staccato.cli.render import progress_text

    # the human line: the copy's bytes, then the read-back's (``verifying 64.0 MiB /
    # 256.0 MiB (25%) at ...``)
    assert all(" / 256.0 MiB" in progress_text(s).split("verifying ")[1] for s in seen), [
        progress_text(s) for s in seen
    ]
    ended = json.loads(shown.stdout)
    assert ended["verify_level"] == "full" and ended["segments_copied_again"] == 0, ended
    assert ended["verified_bytes"] is None
    assert "every byte read back before publish, 0 segments copied again" in words.stdout, words


@pytest.mark.parametrize(
    ("args", "kind"),
    [
        (["s3://bucket/key.bin"], "s3"),
        # SFTP gives no change time: a write after the read-back would be published
        (["sftp://user@127.0.0.1:1/tmp/out.bin"], "sftp"),
        (["-r", "DIR"], "-r"),
        (["s3://bucket/a.bin", "OUT"], "s3"),  # a fan-out with an S3 destination
    ],
    ids=["s3", "sftp", "dataset", "fan-out-with-s3"],
)
def test_verify_full_refused_where_it_reads_nothing_back(
    args: list[str], kind: str, tmp_path: Path
) -> None:
    """``cp --verify full`` to S3 or SFTP, or with ``-r``: exit 2, one line naming
    ``--verify full``, the URL's kind and the kinds accepted; nothing started."""
    source = tmp_path / "src.bin"
    source.write_bytes(b"x" * 1000)
    (tmp_path / "dir").mkdir()
    replace = {"DIR": str(tmp_path / "dir"), "OUT": str(tmp_path / "out.bin")}
    destinations = [replace.get(a, a) for a in args if a != "-r"]
    flags = ["-r"] if "-r" in args else []
    src = str(tmp_path / "dir") if flags else str(source)
    if flags:
        destinations = [str(tmp_path / "copy")]
    done = run_cli(
        "cp",
        *flags,
        "--verify",
        "full",
        src,
        *destinations,
        address="127.0.0.1:1",  # nothing listens: the refusal comes first
        env={"STACCATO_HOME": str(tmp_path / "home")},
        timeout_s=60,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert "--verify full" in done.stderr, done.stderr
    assert kind in done.stderr, done.stderr
    assert "file destinations" in done.stderr, done.stderr


@pytest.mark.parametrize(
    "destination", ["s3://no-such-bucket/k.bin", "sftp://user@127.0.0.1:1/tmp/out.bin"]
)
async def test_verify_full_to_s3_or_sftp_is_refused_by_the_apis_submit(
    temporal_server: TemporalDevServer, data_dir: Path, destination: str
) -> None:
    """tester71: the Python API's ``submit`` with ``verify=full`` to an S3 (or SFTP)
    destination started a transfer that only its workflow refused. Now ``submit``
    raises InvalidURLError with the CLI's words (one rule:
    ``staccato.models.verify_full_refusal``) and starts nothing; a dataset's ``full``
    (``cp -r --verify full`` is refused) too."""
    from temporalio.service import RPCError

    from staccato.dataset_client import submit_dataset
    from staccato.errors import InvalidURLError
    from staccato.ids import transfer_id

    source = data_dir / "small.bin"
    source.write_bytes(os.urandom(1 << 20))
    (data_dir / "tree").mkdir()
    options = TransferOptions(verify=VerifyMode.full)
    client = await StaccatoClient.connect(target_host=temporal_server.address, namespace="default")
    try:
        with pytest.raises(InvalidURLError) as refused:
            await client.submit(str(source), destination, options)
        kind = destination.split(":", 1)[0]
        assert f"--verify full is not available for a {kind} destination" in str(refused.value)
        assert "back file destinations only" in str(refused.value)
        with pytest.raises(RPCError):  # nothing was started
            await client.temporal.get_workflow_handle(
                transfer_id(StaccatoClient.make_request(str(source), destination).destination)
            ).describe()
        with pytest.raises(InvalidURLError, match="not to -r"):
            await submit_dataset(client, str(data_dir / "tree"), str(data_dir / "copy"), options)
    finally:
        await client.close()


async def test_verify_full_to_s3_from_a_raw_request_fails_before_anything_is_written(
    client: StaccatoClient, data_dir: Path
) -> None:
    """A request that reaches the workflow without the client's check (a start of the
    workflow with a request built by hand) for ``full`` to an S3 destination
    fails before ``prepare``: no upload is opened and no stream runs (no S3 server is
    needed to see it),
    the reason names ``--verify full``, the kind and the kinds accepted. On the session
    worker: nothing here needs a worker of its own."""
    from staccato.models import TransferRequest
    from staccato.starts import start_or_attach

    source = data_dir / "small.bin"
    source.write_bytes(os.urandom(1 << 20))
    at_rest(source)
    options = TransferOptions(verify=VerifyMode.full)
    request = TransferRequest(
        source=StaccatoClient.make_request(str(source), "s3://no-such-bucket/raw.bin").source,
        destination="s3://no-such-bucket/raw.bin",
        options=options,
    )
    started = await start_or_attach(client.temporal, request, task_queue=client.task_queue)
    transfer = started.workflow_id
    ended = await wait_for_status(
        client, transfer, lambda s: s.state == TransferState.failed, timeout_s=120
    )
    history = await client.temporal.get_workflow_handle(transfer).fetch_history()
    assert ended.error is not None
    assert "--verify full" in ended.error, ended.error
    assert "s3" in ended.error and "back file destinations only" in ended.error, ended.error
    assert _scheduled(history, "copy_stream") == 0
