"""The Python API refuses what it cannot do with a clear error, and checks what the
command line checks with the same functions and words (a newcomer's findings):
single-transfer calls given a dataset or fan-out group id name the call that applies;
``wait`` of no such transfer says so; a single str is one pattern or destination;
a schedule with a directory source, or at a time already past, is refused."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHandle

from staccato.client import StaccatoClient
from staccato.errors import InvalidURLError, StaccatoError, TransferNotFoundError
from tests.helpers import run_cli, write_random

#: seconds any refusal here may take at most (the old ``wait`` of a running dataset
#: blocked until it ended)
REFUSED_WITHIN_S = 30

#: (call, what the refusal names instead for a dataset, for a group)
CALLS = [
    ("status", "dataset_status(", "group_status("),
    ("wait", "await_dataset_end(", "wait_group("),
    ("outcome", "await_dataset_end(", "wait_group("),
    ("follow", "follow_dataset(", "follow_group("),
]


def _call(client: StaccatoClient, call: str, workflow_id: str) -> Awaitable[Any]:
    """The single-transfer call ``call`` of ``workflow_id``, as an awaitable."""
    if call == "follow":

        async def first() -> Any:
            async for status in client.follow(workflow_id):
                return status
            return None

        return first()
    method: Callable[[str], Awaitable[Any]] = getattr(client, call)
    return method(workflow_id)


async def _refusal(client: StaccatoClient, call: str, workflow_id: str) -> StaccatoError:
    """The error ``call`` of ``workflow_id`` raises, within :data:`REFUSED_WITHIN_S`."""
    with pytest.raises(StaccatoError) as raised:
        await asyncio.wait_for(_call(client, call, workflow_id), REFUSED_WITHIN_S)
    return raised.value


async def _fake(client: StaccatoClient, kind: str, workflow_id: str) -> WorkflowHandle[Any, Any]:
    """A workflow of type ``kind`` under ``workflow_id`` on a task queue no worker
    polls: it stays running (the calls under test read only its type and state)."""
    return await client.temporal.start_workflow(
        kind, id=workflow_id, task_queue=f"nobody-{secrets.token_hex(4)}"
    )


@pytest.mark.parametrize(("call", "for_dataset", "for_group"), CALLS)
async def test_transfer_calls_of_a_completed_dataset_name_the_dataset_call(
    client: StaccatoClient, data_dir: Path, call: str, for_dataset: str, for_group: str
) -> None:
    """A completed dataset's id: ``wait`` raised pydantic's "6 validation errors for
    TransferResult"; now each call names itself and the dataset call instead."""
    from staccato.dataset_client import await_dataset_end, submit_dataset

    source = data_dir / "tree"
    source.mkdir()
    write_random(source / "a.bin", 1000, seed=1)
    dataset = await submit_dataset(client, str(source), str(data_dir / "copy"))
    ended = await asyncio.wait_for(await_dataset_end(client, dataset), 120)
    assert ended.state.value == "completed", ended
    err = await _refusal(client, call, dataset)
    said = str(err)
    assert type(err).__name__ == "NotATransferError", repr(err)
    assert f"{dataset} is a Staccato dataset, not a single transfer" in said, said
    assert f"StaccatoClient.{call}() applies to single transfers" in said, said
    assert f"{for_dataset}client, '{dataset}')" in said, said


@pytest.mark.parametrize("ended", [False, True], ids=["running", "terminated"])
@pytest.mark.parametrize(("call", "for_dataset", "for_group"), CALLS)
async def test_transfer_calls_of_a_dataset_or_group_are_refused_at_once(
    client: StaccatoClient, call: str, for_dataset: str, for_group: str, ended: bool
) -> None:
    """A running dataset's ``wait`` blocked until it ended; an ended one's raised the
    pause refusal ("pause and resume apply to single transfers"); a group's likewise.
    Now each is refused at once, naming the call made and the one that applies."""
    dataset = f"staccato-dataset-{secrets.token_hex(16)}"
    group = f"staccato-group-{secrets.token_hex(12)}"
    handles = [await _fake(client, "DatasetWorkflow", dataset)]
    handles.append(await _fake(client, "FanOutWorkflow", group))
    try:
        if ended:
            for handle in handles:
                await handle.terminate("test: ended")
        for workflow_id, what, instead in (
            (dataset, "a Staccato dataset", for_dataset),
            (group, "a fan-out group", for_group),
        ):
            err = await _refusal(client, call, workflow_id)
            said = str(err)
            assert type(err).__name__ == "NotATransferError", repr(err)
            assert f"{workflow_id} is {what}, not a single transfer" in said, said
            assert f"StaccatoClient.{call}() applies to single transfers" in said, said
            assert instead in said and repr(workflow_id) in said, said
            assert "pause" not in said, said
    finally:
        if not ended:
            for handle in handles:
                await handle.terminate("test over")


async def test_pause_of_a_dataset_names_the_pause(client: StaccatoClient) -> None:
    """``resume`` of a dataset said "pause and resume apply": it names the call made."""
    dataset = f"staccato-dataset-{secrets.token_hex(16)}"
    handle = await _fake(client, "DatasetWorkflow", dataset)
    try:
        for call in ("pause", "resume"):
            with pytest.raises(StaccatoError) as raised:
                await getattr(client, call)(dataset)
            said = str(raised.value)
            assert f"{dataset} is a Staccato dataset, not a single transfer" in said, said
            assert f"{call} applies to single transfers" in said, said
    finally:
        await handle.terminate("test over")


@pytest.mark.parametrize("call", ["status", "wait", "outcome", "follow"])
async def test_no_such_transfer_is_transfer_not_found(client: StaccatoClient, call: str) -> None:
    """``wait("staccato-deadbeef")`` raised Temporal's RPCError; ``status`` raised
    TransferNotFoundError: every call does now."""
    missing = f"staccato-{secrets.token_hex(16)}"
    with pytest.raises(TransferNotFoundError, match=f"no transfer '{missing}'"):
        await asyncio.wait_for(_call(client, call, missing), REFUSED_WITHIN_S)


async def test_wait_group_of_a_dataset_or_of_nothing_is_refused_at_once(
    client: StaccatoClient,
) -> None:
    """``wait_group`` of a running dataset's id waited for the dataset to end; of an
    id no workflow has it raised Temporal's RPCError: both say so at once, as
    ``group_status`` does."""
    dataset = f"staccato-dataset-{secrets.token_hex(16)}"
    missing = f"staccato-group-{secrets.token_hex(12)}"
    handle = await _fake(client, "DatasetWorkflow", dataset)
    try:
        with pytest.raises(TransferNotFoundError, match=f"{dataset} is not a fan-out group"):
            await asyncio.wait_for(client.wait_group(dataset), REFUSED_WITHIN_S)
    finally:
        await handle.terminate("test over")
    with pytest.raises(TransferNotFoundError, match=f"no fan-out group '{missing}'"):
        await asyncio.wait_for(client.wait_group(missing), REFUSED_WITHIN_S)


async def test_a_single_pattern_is_one_pattern(client: StaccatoClient, data_dir: Path) -> None:
    """``include="*.bin"`` was split into characters ("*" selected every file) and
    ``exclude="skip*"`` likewise ("*" left out every file): a str is one pattern."""
    from staccato.dataset_client import await_dataset_end, submit_dataset

    source = data_dir / "tree"
    source.mkdir()
    for name in ("keep.bin", "skip.bin", "note.txt"):
        write_random(source / name, 100)
    destination = data_dir / "copy"
    dataset = await submit_dataset(
        client, str(source), str(destination), include="*.bin", exclude="skip*"
    )
    ended = await asyncio.wait_for(await_dataset_end(client, dataset), 120)
    assert ended.state.value == "completed", ended
    assert sorted(p.name for p in destination.iterdir()) == ["keep.bin"]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"include": ["*.bin", 3]}, "include[1]: expected a str, not int 3"),
        ({"exclude": [b"*.txt"]}, "exclude[0]: expected a str, not bytes"),
        ({"include": 7}, "include: expected a str or a list of str, not int 7"),
    ],
)
async def test_a_pattern_that_is_not_a_str_is_a_type_error(
    client: StaccatoClient, data_dir: Path, given: dict[str, Any], expected: str
) -> None:
    from staccato.dataset_client import submit_dataset

    (data_dir / "tree").mkdir()
    with pytest.raises(TypeError) as raised:
        await submit_dataset(client, str(data_dir / "tree"), str(data_dir / "copy"), **given)
    assert expected in str(raised.value), raised.value


async def test_fan_out_to_a_single_str_is_one_destination(
    client: StaccatoClient, data_dir: Path
) -> None:
    """``fan_out(SRC, "/m/a.bin")`` was a fan-out to "/", "m", "/", "a"...: a str is
    one destination (too few for a group); a destination not a str: TypeError."""
    source = data_dir / "a.bin"
    write_random(source, 100)
    with pytest.raises(InvalidURLError, match="at least 2 destinations"):
        await client.fan_out(str(source), str(data_dir / "out.bin"))
    with pytest.raises(TypeError, match=r"destinations\[1\]: expected a str, not PosixPath"):
        await client.fan_out(str(source), [str(data_dir / "1.bin"), data_dir / "2.bin"])  # type: ignore[list-item]


def _cli_refusal(temporal_server, *args: str) -> str:
    """What ``staccato schedule create ARGS`` says as it exits 2."""
    result = run_cli("schedule", "create", *args, address=temporal_server.address)
    assert result.returncode == 2, result
    return " ".join(result.stderr.split())


async def test_schedule_of_a_directory_is_refused_as_the_cli_refuses_it(
    client: StaccatoClient, temporal_server, data_dir: Path
) -> None:
    """A single-transfer schedule with a directory source was created, and each run
    failed "is a directory"; ``schedule create`` exits 2: the API refuses it too, in
    the same words."""
    from staccato.schedules import Schedules, Timing

    source = data_dir / "tree"
    source.mkdir()
    name = f"pyds-{uuid.uuid4().hex[:8]}"
    schedules = Schedules(client)
    try:
        with pytest.raises(InvalidURLError) as raised:
            await schedules.create(
                name, str(source), str(data_dir / "out.bin"), Timing(every_s=3600)
            )
        said = str(raised.value)
        assert said.startswith(
            f"source {str(source)!r} is a directory: each run of a schedule copies one file"
        ), said
        assert said in _cli_refusal(
            temporal_server, name, str(source), str(data_dir / "out.bin"), "--every", "1h"
        )
    finally:
        await _delete_if_made(schedules, name)


async def test_schedule_at_a_past_time_is_refused_as_the_cli_refuses_it(
    client: StaccatoClient, temporal_server, data_dir: Path
) -> None:
    """``Timing(at=<past>)`` was accepted and never ran; ``--at`` in the past exits 2
    ("is not in the future"): the API refuses it with the same check and words."""
    from staccato.schedule_timing import InvalidScheduleError
    from staccato.schedules import Schedules, Timing

    source = data_dir / "a.bin"
    write_random(source, 100)
    past = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    name = f"pyat-{uuid.uuid4().hex[:8]}"
    schedules = Schedules(client)
    try:
        with pytest.raises(InvalidScheduleError) as raised:
            await schedules.create(name, str(source), str(data_dir / "out.bin"), Timing(at=past))
        said = str(raised.value)
        assert said.startswith(f"Timing.at: {past.isoformat()} is not in the future"), said
        cli_said = _cli_refusal(
            temporal_server,
            name,
            str(source),
            str(data_dir / "out.bin"),
            "--at",
            past.isoformat(),
        )
        assert f"--at {past.isoformat()!r}: {past.isoformat()} is not in the future" in cli_said
    finally:
        await _delete_if_made(schedules, name)


async def _delete_if_made(schedules: Any, name: str) -> None:
    """Delete schedule ``name`` if the call under test made it (the old code did)."""
    from staccato.schedules import ScheduleNotFoundError

    try:
        await schedules.delete(name)
    except ScheduleNotFoundError:
        pass


#: (call, the parameter the refusal names, what it expects): every entry point of the
#: Python API that takes a text, each with its argument in the position under test
TEXT_PARAMETERS: list[tuple[str, str, str]] = [
    ("submit(source)", "source", "a URL or path"),
    ("submit(destination)", "destination", "a URL or path"),
    ("start(source)", "source", "a URL or path"),
    ("make_request(destination)", "destination", "a URL or path"),
    ("fan_out(source)", "source", "a URL or path"),
    ("status", "transfer", "a transfer id or destination"),
    ("cancel", "transfer", "a transfer id or destination"),
    ("pause", "transfer", "a transfer id or destination"),
    ("resume", "transfer", "a transfer id or destination"),
    ("wait", "transfer", "a transfer id or destination"),
    ("outcome", "transfer", "a transfer id or destination"),
    ("follow", "transfer", "a transfer id or destination"),
    ("group_status", "group", "a fan-out group id"),
    ("wait_group", "group", "a fan-out group id"),
    ("dataset_status", "dataset", "a dataset id or destination root"),
    ("cancel_dataset", "dataset", "a dataset id or destination root"),
    ("await_dataset_end", "dataset", "a dataset id or destination root"),
    ("submit_dataset(source)", "source", "a URL or path"),
    ("schedule describe", "name", "a schedule name"),
    ("schedule create(name)", "name", "a schedule name"),
    ("schedule create(source)", "source", "a URL or path"),
]


def _text_call(client: StaccatoClient, call: str, value: Any, data_dir: Path) -> Awaitable[Any]:
    """The entry point ``call`` (:data:`TEXT_PARAMETERS`) with ``value`` in the
    parameter under test and valid texts elsewhere."""
    from staccato import dataset_client
    from staccato.schedules import Schedules, Timing

    src, dst = str(data_dir / "in.bin"), str(data_dir / "out.bin")
    schedules = Schedules(client)
    every = Timing(every_s=3600)

    async def sync(result: Any) -> Any:
        return result

    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "submit(source)": lambda: client.submit(value, dst),
        "submit(destination)": lambda: client.submit(src, value),
        "start(source)": lambda: client.start(value, dst),
        "make_request(destination)": lambda: sync(StaccatoClient.make_request(src, value)),
        "fan_out(source)": lambda: client.fan_out(value, [dst, dst + ".2"]),
        "group_status": lambda: client.group_status(value),
        "wait_group": lambda: client.wait_group(value),
        "dataset_status": lambda: dataset_client.dataset_status(client, value),
        "cancel_dataset": lambda: dataset_client.cancel_dataset(client, value),
        "await_dataset_end": lambda: dataset_client.await_dataset_end(client, value),
        "submit_dataset(source)": lambda: dataset_client.submit_dataset(client, value, dst),
        "schedule describe": lambda: schedules.describe(value),
        "schedule create(name)": lambda: schedules.create(value, src, dst, every),
        "schedule create(source)": lambda: schedules.create("pytext", value, dst, every),
    }
    if call in calls:
        return calls[call]()
    return _call(client, call, value)  # a single-transfer call of ``transfer``


@pytest.mark.parametrize(("call", "parameter", "expected"), TEXT_PARAMETERS)
async def test_a_text_parameter_given_another_type_is_a_type_error(
    client: StaccatoClient, data_dir: Path, call: str, parameter: str, expected: str
) -> None:
    """An int, bytes, None or a Path where the API takes a str (a URL or path, an id or
    destination, a name) is a TypeError naming the parameter, the str it expects and
    what was given (tester53: ``'int' object has no attribute 'strip'``, ``a bytes-like
    object is required``, ``'NoneType' object has no attribute 'startswith'``),
    before Temporal is asked anything."""
    for value, given in [
        (123, "not int 123"),
        (b"/data/x.bin", "not bytes b'/data/x.bin' (decode it first"),
        (None, "not NoneType None"),
        (data_dir / "x.bin", "(pass str(path))"),
    ]:
        with pytest.raises(TypeError) as raised:
            await asyncio.wait_for(_text_call(client, call, value, data_dir), REFUSED_WITHIN_S)
        said = str(raised.value)
        assert said.startswith(f"{parameter}: expected a str ({expected}), "), (call, said)
        assert given in said, (call, value, said)


def test_require_str_passes_a_str_and_names_the_rest() -> None:
    """The one check behind those refusals: a str (also an empty one: what it names is
    checked later, as a URL or id) comes back unchanged; anything else is a TypeError
    naming the parameter, the str expected and the value given."""
    from staccato.quantities import URL_OR_PATH, require_str

    assert require_str("s3://b/k", "source", URL_OR_PATH) == "s3://b/k"
    assert require_str("", "source", URL_OR_PATH) == ""
    with pytest.raises(TypeError) as raised:
        require_str(bytearray(b"x"), "destination", URL_OR_PATH)
    assert str(raised.value) == (
        "destination: expected a str (a URL or path), not bytearray bytearray(b'x') "
        "(decode it first, e.g. os.fsdecode(value))"
    )
    with pytest.raises(TypeError, match=r"^source: expected a str \(a URL or path\), not list"):
        require_str(["/a"], "source", URL_OR_PATH)
