"""Help texts and usage errors of the command that need no server: the fan-out's
several destinations, the states `list --state` takes, settings and owners refused
with the variable named, `limit learned` given something other than a link, and
schedule options in words."""

from __future__ import annotations

import pytest

from staccato.cli.schedule import _options_text
from staccato.models import TransferOptions
from tests.helpers import run_cli

NOWHERE = "127.0.0.1:1"  # nothing is contacted: each case fails before connecting


@pytest.mark.parametrize("command", ["cp", "submit"])
def test_several_destinations_read_as_a_fan_out(command: str) -> None:
    shown = run_cli(command, "--help", address=NOWHERE)
    assert shown.returncode == 0, shown.stderr
    assert "DESTINATION..." in shown.stdout and "<list[str]>" not in shown.stdout, shown.stdout
    assert "{DESTINATION}..." in shown.stdout  # the usage line: once "..."
    assert "fan-out group" in " ".join(shown.stdout.split()), shown.stdout


def test_list_state_takes_completed_with_errors() -> None:
    shown = run_cli("list", "--help", address=NOWHERE)
    assert "completed_with_errors" in shown.stdout, shown.stdout
    bad = run_cli("list", "--state", "maybe", address=NOWHERE)
    assert bad.returncode == 2 and "completed_with_errors" in bad.stderr, bad.stderr


def test_a_yes_no_setting_names_the_words_it_takes() -> None:
    done = run_cli("cp", "/a", "/b", address=NOWHERE, env={"STACCATO_TUNING": "maybe"})
    assert done.returncode == 2, done.stderr
    assert "STACCATO_TUNING='maybe': expected one of 1, 0, true, false" in done.stderr


def test_an_owner_too_long_in_the_environment_is_refused() -> None:
    done = run_cli("submit", "/a", "/b", address=NOWHERE, env={"STACCATO_OWNER": "o" * 65})
    assert done.returncode == 2, done.stderr
    assert "STACCATO_OWNER=" in done.stderr and "expected at most 64" in done.stderr


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        ("foo", "LINK: unknown endpoint form 'foo': expected a link SRC_ENDPOINT,DST_ENDPOINT"),
        ("http://a:80", "LINK: http://a:80 is an endpoint: tuning is learned per link"),
    ],
)
def test_limit_learned_wants_a_link(link: str, expected: str) -> None:
    done = run_cli("limit", "learned", link, address=NOWHERE)
    assert done.returncode == 2 and expected in done.stderr, done.stderr
    assert "TARGET" not in done.stderr


def test_schedule_options_read_as_words() -> None:
    text = _options_text(TransferOptions().model_dump(mode="json"))
    assert "from_origin" not in text and "False" not in text, text
    text = _options_text(TransferOptions(from_origin=True).model_dump(mode="json"))
    assert "from the origin" in text, text


def test_submit_takes_quiet_as_cp_does() -> None:
    for command in ("cp", "submit"):
        shown = run_cli(command, "--help", address=NOWHERE)
        assert shown.returncode == 0, shown.stderr
        text = " ".join(shown.stdout.split())
        assert "-q" in text and "--quiet" in text and "Print nothing but errors" in text, text


@pytest.mark.parametrize("light", ["1", "0"])
@pytest.mark.parametrize(
    ("destinations", "recursive", "expected"),
    [
        (["/b"], True, "--not-before applies to single transfers, not to -r"),
        (["/b", "/c"], True, "--not-before applies to single transfers, not to -r"),
        (["/b", "/c"], False, "--not-before applies to a single transfer, not to a fan-out"),
    ],
)
def test_not_before_is_refused_where_it_cannot_apply(
    tmp_path, light: str, destinations: list[str], recursive: bool, expected: str
) -> None:
    """`submit -r … --not-before` was accepted and the dataset started at once; with
    two roots it was refused as a fan-out. Each is refused (exit 2) saying what is
    wrong, before Temporal is asked."""
    source = tmp_path / ("tree" if recursive else "a.bin")
    source.mkdir() if recursive else source.write_bytes(b"x")
    args = ["submit", *(["-r"] if recursive else []), str(source)]
    args += [str(tmp_path / d.lstrip("/")) for d in destinations]
    done = run_cli(
        *args, "--not-before", "1h", address=NOWHERE, env={"STACCATO_LIGHT_CLIENT": light}
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert expected in done.stderr, done.stderr
    if recursive:
        assert "fan-out" not in done.stderr, done.stderr


def test_a_count_of_one_is_singular() -> None:
    """`1 files copied`, `(1 transfers)`: a count of one reads singular where the CLI
    prints counts (the dataset's end line uses the same :func:`units.counted`)."""
    from staccato import units
    from staccato.cli.limits import learned_text
    from staccato.tuning import LinkMemory

    assert units.counted(1, "file") == "1 file" and units.counted(0, "file") == "0 files"
    one = learned_text(LinkMemory(link="a,b", streams=1, transfers=1))
    assert "1 stream x" in one and "(1 transfer)" in one, one
    two = learned_text(LinkMemory(link="a,b", streams=2, transfers=2))
    assert "2 streams x" in two and "(2 transfers)" in two, two
