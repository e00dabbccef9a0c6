"""The command refuses bad settings and option values with one line and exit 2:
a bad STACCATO_* setting for ``up`` and for client commands, a rate with a suffix
other than ``/s``; and ``cp --help`` shows ``--retry-for``'s default as typed."""

from __future__ import annotations

import socket

import pytest

from tests.helpers import run_cli


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("name", "value"),
    [("STACCATO_STAGING_MAX_BYTES", "-5"), ("STACCATO_MIN_RATE_WINDOW_S", "abc")],
)
def test_up_with_a_bad_setting_exits_2(name: str, value: str, tmp_path) -> None:
    """``staccato up`` checks the settings as ``staccato worker`` does: one line naming
    the variable, exit 2, nothing started."""
    done = run_cli(
        "up",
        "--port",
        str(free_port()),
        "--ui-port",
        str(free_port()),
        address="127.0.0.1:1",
        env={name: value, "STACCATO_HOME": str(tmp_path / "home")},
        timeout_s=60,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("staccato: error: "), done.stderr
    assert name in done.stderr, done.stderr


@pytest.mark.parametrize(
    "args",
    [["status", "t-1"], ["list"], ["limit", "list"], ["cp", "/etc/hostname", "/tmp/x-cliv"]],
)
def test_client_commands_with_a_bad_setting_exit_2(args: list[str], tmp_path) -> None:
    """A bad STACCATO_* setting makes a client command exit 2 with one line naming it
    (as ``staccato worker`` does), not exit 1 with a traceback."""
    done = run_cli(
        *args,
        address="127.0.0.1:1",
        env={"STACCATO_STAGING_MAX_BYTES": "abc", "STACCATO_HOME": str(tmp_path / "home")},
        timeout_s=60,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert "STACCATO_STAGING_MAX_BYTES" in done.stderr, done.stderr


@pytest.mark.parametrize("rate", ["40MB/h", "40MB/s/s", "2PiB/s"])
def test_cp_max_rate_refuses_other_suffixes(rate: str, tmp_path) -> None:
    """``cp --max-rate 40MB/h`` is refused (it was read as 40MB/s), as is ``/s/s`` and a
    rate above 1 PiB/s: exit 2 naming --max-rate."""
    done = run_cli(
        "cp", "--max-rate", rate, "/etc/hostname", str(tmp_path / "x"), address="127.0.0.1:1"
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "--max-rate" in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("option", "value", "advice"),
    [
        ("--chunk-size", "10Mb", "write MB for bytes"),
        ("--chunk-size", "8mib", "write MiB for bytes"),
        ("--small-file-max", "1kb", "write KB for bytes"),
        ("--max-rate", "10Mb/s", "write MB/s for bytes or Mbit/s for bits"),
    ],
)
def test_a_lowercase_b_unit_is_refused_by_every_size_option(
    option: str, value: str, advice: str, tmp_path
) -> None:
    """One rule for sizes and rates: a unit ending in a lowercase b (megabits on data
    sheets) is refused as ambiguous, exit 2 naming the option; ``--chunk-size 10Mb``
    was read as 10^7 bytes while ``--max-rate 10Mb/s`` was refused."""
    unit = value.rstrip("/s").lstrip("0123456789")
    done = run_cli(
        "cp", "-r", option, value, str(tmp_path), str(tmp_path / "x"), address="127.0.0.1:1"
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert option in done.stderr, done.stderr
    assert f"{unit!r} is ambiguous (bits or bytes?)" in done.stderr, done.stderr
    assert advice in done.stderr, done.stderr


def test_cp_help_shows_retry_for_default_plainly() -> None:
    """``cp --help`` shows --retry-for's default as 24h, without stray parentheses."""
    done = run_cli("cp", "--help", address="127.0.0.1:1")
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "(24h)" not in text, text
    assert "Default: 24h" in text, text


@pytest.mark.parametrize(
    "command", [["cp"], ["submit"], ["schedule", "create", "n", "--every", "1h"]]
)
@pytest.mark.parametrize("owner", ["", "  ", "x" * 65, "a\nb", "tab\there"])
def test_an_empty_or_long_owner_is_refused(command: list[str], owner: str, tmp_path) -> None:
    """``--owner ""`` (it fell back to the OS user silently) and a name over 64
    characters: exit 2 naming --owner, before any connection."""
    args = [*command[:3], "/etc/hostname", str(tmp_path / "x"), *command[3:]]
    done = run_cli(*args, "--owner", owner, address="127.0.0.1:1")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "--owner" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "x").exists()


def test_help_says_what_max_rate_and_cancel_do() -> None:
    """``cp --help``: with -r, --max-rate caps the whole dataset, its batches of small
    files and its large files' transfers together (help said batches are not paced,
    then that it capped each batch and each transfer, not their sum); ``cancel -h``
    names datasets and groups, which it cancels too."""
    cp = run_cli("cp", "--help", address="127.0.0.1:1")
    assert cp.returncode == 0, cp.stderr
    text = " ".join(cp.stdout.split())
    assert "not paced" not in text, text
    assert "not their sum" not in text, text
    assert "caps the whole dataset" in text and "batches of small files" in text, text
    assert "what it writes to each destination" in text, text  # several roots: one meaning
    cancel = run_cli("cancel", "-h", address="127.0.0.1:1")
    assert cancel.returncode == 0, cancel.stderr
    text = " ".join(cancel.stdout.split())
    assert "a dataset" in text and "fan-out group" in text, text


@pytest.mark.parametrize("command", ["cp", "submit"])
def test_if_busy_wait_with_recursive_is_refused(command: str, tmp_path) -> None:
    """A dataset whose root is busy fails at once: ``--if-busy wait`` with ``-r`` was
    accepted and ignored (a tester's ``submit -r --if-busy wait`` failed "destination
    busy"), so it is refused before anything starts."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "f").write_bytes(b"x")
    done = run_cli(
        command, "-r", "--if-busy", "wait", str(source), str(tmp_path / "dst"),
        address="127.0.0.1:1",
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "--if-busy wait applies to one object, not to -r" in done.stderr, done.stderr
    assert not (tmp_path / "dst").exists()


#: a client that gives up on an absent Temporal soon (the command fails after its checks)
QUICK = {"STACCATO_CLIENT_WAIT_S": "1"}


def test_small_file_max_above_the_fan_out_cap_is_said(tmp_path) -> None:
    """With several roots a small file is held in memory for every root, so
    ``--small-file-max`` is capped at 8 MiB and one chunk: a larger value says so (it
    was capped without a word: a tester); one root keeps it as given."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "f").write_bytes(b"x")
    roots = [str(tmp_path / "a"), str(tmp_path / "b")]
    several = run_cli(
        "submit",
        "-r",
        "--small-file-max",
        "16MiB",
        str(source),
        *roots,
        address="127.0.0.1:1",
        env=QUICK,
    )
    assert "warning: --small-file-max 16.0 MiB: with several destinations files up to " in (
        several.stderr
    ), several.stderr
    one = run_cli(
        "submit",
        "-r",
        "--small-file-max",
        "16MiB",
        str(source),
        roots[0],
        address="127.0.0.1:1",
        env=QUICK,
    )
    assert "warning" not in one.stderr, one.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["cp", "--verify", "maybe"],
            "Invalid value for '--verify': 'maybe' is not one of 'checksum', 'full', 'size', 'none'.",
        ),
        (
            ["cp", "--checksum", "md5"],
            "Invalid value for '--checksum': 'md5' is not one of 'crc32c', 'sha256'.",
        ),
        (
            ["submit", "--if-busy", "later"],
            "Invalid value for '--if-busy': 'later' is not one of 'fail', 'wait'.",
        ),
        (
            ["cp", "--sync-level", "Size"],
            "Invalid value for '--sync-level': 'Size' is not one of 'exists', 'size', "
            "'mtime', 'checksum'.",
        ),
        (
            ["schedule", "create", "n", "--every", "1h", "--overlap", "queue"],
            "Invalid value for '--overlap': 'queue' is not one of 'skip', 'buffer-one', "
            "'buffer-all', 'cancel-other', 'terminate-other', 'allow-all'.",
        ),
        (["list", "--state", "done"], "Invalid value for '--state': 'done' is not one of "),
        (
            ["cp", "--priority", "9"],
            "Invalid value for '--priority': 9 is not in the range 1<=x<=5.",
        ),
        (
            ["cp", "--priority", "high"],
            "Invalid value for '--priority': 'high' is not a valid integer.",
        ),
        (
            ["cp", "--streams", "0"],
            "Invalid value for '--streams': 0 is not in the range 1<=x<=64.",
        ),
        (
            ["list", "--limit", "0"],
            "Invalid value for '--limit': 0 is not in the range 1<=x<=1000.",
        ),
        (
            ["limit", "set", "file://", "--max-streams", "0"],
            "Invalid value for '--max-streams': 0 is not in the range 1<=x<=1000000.",
        ),
    ],
)
def test_a_bad_choice_or_number_says_it_as_click_does(
    args: list[str], expected: str, tmp_path
) -> None:
    """An option with a fixed list of values (or a range) refuses another with click's
    words: the option, the value and what it takes, exit 2. Typer 0.29 checks these
    through pydantic, whose words came with them (tester: ``--verify maybe`` said
    "Value error, 'maybe' is not one of ..."; ``--priority 9`` "Input should be less
    than or equal to 5", without the value)."""
    files = ["/etc/hostname", str(tmp_path / "x")]
    if args[0] in ("cp", "submit"):
        args = [*args, *files]
    elif args[:2] == ["schedule", "create"]:
        args = [*args[:3], *files, *args[3:]]
    done = run_cli(*args, address="127.0.0.1:1")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert expected in done.stderr, done.stderr
    assert "Value error" not in done.stderr and "Input should" not in done.stderr, done.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("args", "suggested"),
    [
        # click compared the names with their "--": --quiet, --at, --verify came up
        (["cp", "--wait"], "(Possible options: --if-busy wait)"),
        (["schedule", "create", "n", "--fail"], "(Possible options: --if-busy fail)"),
        (["cp", "--ifbusy", "wait"], "(Possible options: --if-busy)\n"),
        (["cp", "--retry"], "(Possible options: --retry-failed, --retry-for)"),
        (["list", "--running"], "(Possible options: --state running)"),
        (["cp", "--overwrite"], "No such option: --overwrite\n"),
        (["cp", "--dry-run"], "No such option: --dry-run\n"),
    ],
)
def test_an_unknown_option_suggests_what_was_meant(
    args: list[str], suggested: str, tmp_path
) -> None:
    """An unknown long option suggests the options whose names are close without their
    dashes, begin with it, or take it as a value; else none (click suggested --quiet
    for --wait, --at for --fail and --verify for --overwrite)."""
    done = run_cli(*args, "/etc/hostname", str(tmp_path / "x"), address="127.0.0.1:1")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert suggested in done.stderr, done.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (
            ["cp", "--not-before", "10m"],
            "--not-before is an option of `staccato submit`, not of `staccato cp`: "
            "`staccato submit --not-before ... SOURCE DESTINATION` starts the transfer",
        ),
        (["cp", "--json"], "--json is an option of `staccato submit`, `staccato status`"),
    ],
)
def test_an_option_of_another_command_names_it(args: list[str], said: str, tmp_path) -> None:
    """``cp --not-before`` (an option of ``submit``) says whose option it is and how to
    use it, exit 2, nothing started (it said only "No such option: --not-before")."""
    done = run_cli(*args, "/etc/hostname", str(tmp_path / "x"), address="127.0.0.1:1")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert said in " ".join(done.stderr.split()), done.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("spelling", ["link", "dir-link"])
def test_a_source_that_resolves_to_the_destination_is_the_same_object(
    spelling: str, tmp_path
) -> None:
    """A source named through a symbolic link to the destination (the file, or a
    directory above it) is the same object, refused as ``/d/./f`` is: exit 2, nothing
    started (it was copied onto itself and said "completed")."""
    target = tmp_path / "real" / "f"
    target.parent.mkdir()
    target.write_bytes(b"abc")
    if spelling == "link":
        source = tmp_path / "f-link"
        source.symlink_to(target)
    else:
        (tmp_path / "up").symlink_to(target.parent)
        source = tmp_path / "up" / "f"
    for command in ("cp", "submit"):
        done = run_cli(command, str(source), str(target), address="127.0.0.1:1", timeout_s=60)
        assert done.returncode == 2, done
        assert "source and destination are the same object" in done.stderr, done.stderr
        assert str(target) in done.stderr, done.stderr
    assert target.read_bytes() == b"abc"
