"""The Python API refuses bad values as the command line does, naming the parameter
and what was expected: ``TransferOptions`` reads sizes, rates and durations given as
text with the CLI's rules and words (``chunk_size="10Mb"`` was pydantic's "unable to
parse string as an integer"), and ``not_before`` in the past is refused as
``submit --not-before`` refuses it (it started the transfer at once, silently)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from staccato.client import StaccatoClient
from staccato.errors import TransferNotFoundError
from staccato.models import MiB, TransferOptions
from tests.helpers import run_cli


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"chunk_size": "8MiB"}, {"chunk_size": 8 * MiB}),
        ({"chunk_size": "64M"}, {"chunk_size": 64 * MiB}),
        ({"max_rate": "40MB/s"}, {"max_rate": 40_000_000}),
        ({"max_rate": "500k"}, {"max_rate": 500 * 1024}),
        ({"retry_for_s": "2h"}, {"retry_for_s": 7200.0}),
        ({"chunk_size": 1024, "retry_for_s": 60}, {"chunk_size": 1024, "retry_for_s": 60.0}),
    ],
)
def test_transfer_options_read_units_as_the_command_line(
    given: dict[str, object], expected: dict[str, object]
) -> None:
    options = TransferOptions(**given)  # type: ignore[arg-type]
    assert options.model_dump(include=set(expected)) == expected


@pytest.mark.parametrize(
    ("field", "value", "option"),
    [
        ("chunk_size", "10Mb", "--chunk-size"),
        ("chunk_size", "ten", "--chunk-size"),
        ("max_rate", "10Mb/s", "--max-rate"),
        ("max_rate", "40MB/h", "--max-rate"),
        ("retry_for_s", "2 weeks", "--retry-for"),
    ],
)
def test_a_bad_value_names_the_parameter_in_the_command_lines_words(
    field: str, value: str, option: str
) -> None:
    """The message names the field and says what was expected, in the words the
    command line gives for the same text (one rule: :mod:`staccato.quantities`)."""
    with pytest.raises(ValidationError) as refused:
        TransferOptions(**{field: value})  # type: ignore[arg-type]
    message = str(refused.value)
    assert "unable to parse" not in message and "Input should" not in message, message
    said = run_cli(
        "submit", option, value, "/etc/hostname", "/tmp/never-written", address="127.0.0.1:1"
    )
    assert said.returncode == 2, said.stderr
    words = " ".join(said.stderr.split()).split(f"Invalid value for '{option}': ")[1]
    assert f"{field}: {words}" in " ".join(message.split()), (message, words)


def test_a_chunk_size_above_the_s3_part_limit_names_the_apis_own_range() -> None:
    """``chunk_size`` above 5 GiB (S3's largest part) is refused naming the API's range,
    1 byte to 5 GiB: the command line's range starts at 64 KiB (its message says so,
    tests/test_cli_errors.py), so the two words differ there by design."""
    with pytest.raises(ValidationError) as refused:
        TransferOptions(chunk_size="6GiB")  # type: ignore[arg-type]
    message = " ".join(str(refused.value).split())
    assert "chunk_size: '6GiB': expected a size from 1 byte to 5GiB" in message, message


async def test_not_before_in_the_past_is_refused_as_the_command_line_does(
    client: StaccatoClient, tmp_path: Path
) -> None:
    """``not_before`` a past time or a negative delay is refused (``submit
    --not-before`` refuses a past time; the API started the transfer at once), as is
    one more than 30 days ahead or of another type; nothing is started."""
    source, destination = tmp_path / "src.bin", tmp_path / "dst.bin"
    source.write_bytes(b"x" * 10)
    now = datetime.now(UTC)
    for bad, said in (
        (now - timedelta(hours=1), "not_before 20"),
        (timedelta(minutes=-5), "not_before (a delay of -300 s) is in the past"),
        (now + timedelta(days=31), "is more than 30 days ahead"),
    ):
        with pytest.raises(ValueError, match="in the past|more than 30 days") as refused:
            await client.submit(str(source), str(destination), not_before=bad)
        assert said in str(refused.value), refused.value
    with pytest.raises(TypeError, match="not_before: expected a datetime"):
        await client.submit(str(source), str(destination), not_before="10m")  # type: ignore[arg-type]
    with pytest.raises(TransferNotFoundError):
        await client.status(str(destination))
    assert not destination.exists()
