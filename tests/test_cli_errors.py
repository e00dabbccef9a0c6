"""Bad input: a clear message naming the problem, exit 2 for usage errors, 1 for
failed transfers, and nothing at the destination."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.helpers import leftovers, mounted_tmpfs, run_cli, sha256_file, write_random


@pytest.fixture
def cli(temporal_server, worker):
    def run(*args: str, **kwargs):
        return run_cli(
            *args, address=temporal_server.address, task_queue=worker.task_queue, **kwargs
        )

    return run


@pytest.fixture
def source(data_dir: Path) -> Path:
    path = data_dir / "src.bin"
    write_random(path, 4096)
    return path


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["ftp://host/file", "{dst}"], "unknown URL scheme 'ftp'"),
        (["http://", "{dst}"], "malformed URL 'http://'"),
        (["http://h:99999/x", "{dst}"], "'http://h:99999/x': the port must be 1-65535"),
        (["{src}", "s3://Bad_Bucket/key"], "invalid S3 bucket name 'Bad_Bucket'"),
        # the URL as typed: an S3 key has no fragment to redact (tester75: 'q?hash#REDACTED')
        (["s3://demo/odd/q?hash#x", "{dst}"], "malformed S3 URL 's3://demo/odd/q?hash#x'"),
        (["sftp://user:secret@host/file", "{dst}"], "refusing a password in URL"),
        # an empty user name was taken silently (a tester's typo)
        (["{src}", "sftp://@127.0.0.1:7412/x"], "the user name before '@' is empty"),
        (["{src}", "http://example.com/x"], "can only be sources"),
        (["{src}", "{src}"], "source and destination are the same"),
        (
            ["{src}", "{dst}", "--chunk-size", "0"],
            "Invalid value for '--chunk-size': '0': expected a size from 64KiB to 5GiB",
        ),
        # one range for every size --chunk-size refuses (tester72: 0 said "from 1 byte")
        (
            ["{src}", "{dst}", "--chunk-size", "6GiB"],
            "Invalid value for '--chunk-size': '6GiB': expected a size from 64KiB to 5GiB",
        ),
        # 1-byte chunks moved 100 KB in ~70 s (tester62)
        (
            ["{src}", "{dst}", "--chunk-size", "1"],
            "Invalid value for '--chunk-size': '1': expected a size from 64KiB to 5GiB",
        ),
        (
            ["-r", "{src}", "{dst}", "--small-file-max", "6GiB"],
            "Invalid value for '--small-file-max': '6GiB': expected a size from 0 to 5GiB",
        ),
        # 0 is a value (every file with data as a transfer of its own), so it is "given"
        (
            ["{src}", "{dst}", "--small-file-max", "0"],
            "--small-file-max applies to directories and prefixes: add -r",
        ),
        # a file named with a trailing / (POSIX: a directory; GNU cp: "Not a directory")
        (["{src}/", "{dst}"], "is not a directory: a trailing / names a directory"),
        (["file://{src}/", "{dst}", "{dst}2"], "is not a directory: a trailing / names"),
        (["{src}", "{dst}", "--chunk-size", "lots"], "'lots' is not a size"),
        # a fraction of a byte (ByteSize cut it: --max-rate 1.5 ran at 1 B/s)
        (["{src}", "{dst}", "--chunk-size", "1.5"], "a fraction of a byte"),
        (["{src}", "{dst}", "--max-rate", "1.5"], "a fraction of a byte"),
        (["-r", "{src}", "{dst}", "--small-file-max", "2."], "a fraction of a byte"),
        (["{src}", "{dst}", "--streams", "0"], "--streams"),
        (["-r", "{src}", "{dst}", "--include", ""], "--include '': an empty pattern"),
        (["-r", "{src}", "{dst}", "--exclude", ""], "--exclude '': an empty pattern"),
    ],
)
def test_usage_errors_exit_2(
    cli, source: Path, data_dir: Path, args: list[str], expected: str
) -> None:
    destination = data_dir / "dst.bin"
    result = cli("cp", *[a.format(src=source, dst=destination) for a in args])
    assert result.returncode == 2, result
    assert expected in result.stderr, result.stderr
    assert "secret" not in result.stderr
    assert not destination.exists()


def test_http_url_with_a_space_is_refused_before_anything_starts(
    cli, nginx_ranges, http_root: Path, data_dir: Path
) -> None:
    """An http URL with a literal space (tester75): httpx sent ``%20`` at stat, every
    read (http.client) failed with ``InvalidURL`` and was retried for 24 h. RFC 3986
    allows no space in a URI and curl refuses one: refused, exit 2, naming the URL,
    the character and ``%20``; written ``%20`` it copies (non-ASCII is encoded as
    UTF-8, as httpx does, and copies too)."""
    folder = http_root / "odd75" / "a dir"
    folder.mkdir(parents=True, exist_ok=True)
    digest = write_random(folder / "with space.txt", 70_000)
    write_random(folder / "caf\N{LATIN SMALL LETTER E WITH ACUTE}.bin", 1000)
    destination = data_dir / "dst.bin"
    result = cli(
        "cp", nginx_ranges.url("odd75/a dir/with space.txt"), str(destination), "--retry-for", "5s"
    )
    assert result.returncode == 2, result
    assert "odd75/a dir/with space.txt" in result.stderr, result.stderr
    assert "contains a space" in result.stderr and "%20" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not destination.exists()
    result = cli("cp", nginx_ranges.url("odd75/a%20dir/with%20space.txt"), str(destination))
    assert result.returncode == 0, result
    assert sha256_file(destination) == digest
    accented = data_dir / "accented.bin"
    result = cli(
        "cp",
        nginx_ranges.url("odd75/a%20dir/caf\N{LATIN SMALL LETTER E WITH ACUTE}.bin"),
        str(accented),
        "--retry-for",
        "5s",
    )
    assert result.returncode == 0, result
    assert (
        accented.read_bytes()
        == (folder / "caf\N{LATIN SMALL LETTER E WITH ACUTE}.bin").read_bytes()
    )


@pytest.mark.parametrize("scheme", ["file", "sftp", "s3-key"])
def test_percent_escapes_that_are_not_utf8_are_refused(
    cli, source: Path, data_dir: Path, scheme: str
) -> None:
    """``%FE`` in a destination URL is refused (exit 2, naming the URL and the escape):
    decoded with U+FFFD for it, it named another file, ``other\N{REPLACEMENT CHARACTER}.txt``,
    and a tester's existing file of that name was replaced, exit 0."""
    existing = data_dir / "other\N{REPLACEMENT CHARACTER}.txt"
    existing.write_bytes(b"user data\n")
    destination = {
        "file": f"file://{quote(str(data_dir))}/other%FE.txt",
        "sftp": f"sftp://127.0.0.1{quote(str(data_dir))}/other%FE.txt",
        "s3-key": "s3://bucket/?key=other%FE.txt",
    }[scheme]
    result = cli("cp", str(source), destination)
    assert result.returncode == 2, result
    assert "'%FE'" in result.stderr and "are not UTF-8" in result.stderr, result.stderr
    assert destination in result.stderr, result.stderr
    assert existing.read_bytes() == b"user data\n"
    assert sorted(p.name for p in data_dir.iterdir()) == sorted([existing.name, source.name])


@pytest.mark.parametrize(
    ("scheme", "escape"),
    [("file", "%ZZ"), ("file", "%"), ("sftp", "%4."), ("s3-key", "%ZZ")],
)
def test_percent_signs_that_start_no_escape_are_refused(
    cli, source: Path, data_dir: Path, scheme: str, escape: str
) -> None:
    """A ``%`` not followed by two hex digits (``%ZZ``, a trailing ``%``) is refused
    (exit 2, naming the URL and the bad escape), as ``%FF`` is: it was written as the
    name ``pp%ZZ`` (exit 0), and ``s3://bucket/?key=bad%ZZ`` as the key ``bad%ZZ``."""
    destination = {
        "file": f"file://{quote(str(data_dir))}/pp{escape}",
        "sftp": f"sftp://127.0.0.1{quote(str(data_dir))}/pp{escape}txt",
        "s3-key": f"s3://bucket/?key=bad{escape}",
    }[scheme]
    result = cli("cp", "--retry-for", "5", str(source), destination)
    assert result.returncode == 2, result
    assert f"{escape!r} in its" in result.stderr, result.stderr
    assert "is not a percent-escape" in result.stderr and "%25" in result.stderr, result.stderr
    assert destination in result.stderr, result.stderr
    assert sorted(p.name for p in data_dir.iterdir()) == [source.name]


@pytest.mark.parametrize("order", ["outer-first", "inner-first"])
def test_a_fan_out_to_nested_destinations_is_refused(
    cli, source: Path, data_dir: Path, order: str
) -> None:
    """``cp a.txt out7 out7/sub`` wrote out7, then failed out7/sub ("destination
    directory .../out7 does not exist ... create it first"): destinations that lie
    inside one another are refused before anything is written (exit 2, naming both),
    as a dataset's nested roots are."""
    outer, inner = data_dir / "out7", data_dir / "out7" / "sub"
    pair = [outer, inner] if order == "outer-first" else [inner, outer]
    result = cli("cp", "--retry-for", "5", str(source), *map(str, pair))
    assert result.returncode == 2, result
    assert f"destinations file://{outer} and file://{inner} nest" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in data_dir.iterdir()) == [source.name]


def _assert_failed(
    result: subprocess.CompletedProcess[str], expected: str, destination: Path
) -> None:
    assert result.returncode == 1, result
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not destination.exists()
    assert leftovers(destination.parent) == [] if destination.parent.is_dir() else True


def test_missing_source_file(cli, data_dir: Path) -> None:
    destination = data_dir / "dst.bin"
    result = cli("cp", str(data_dir / "nope.bin"), str(destination))
    _assert_failed(result, "nope.bin: no such file or directory", destination)


def test_missing_http_source(cli, nginx_ranges, data_dir: Path) -> None:
    destination = data_dir / "dst.bin"
    result = cli("cp", nginx_ranges.url("missing.bin"), str(destination))
    _assert_failed(result, "source not found", destination)
    assert "HTTP 404" in result.stderr


def test_source_on_a_pseudo_file_system(cli, data_dir: Path) -> None:
    """/proc files report a size unrelated to what a read returns: refused at once."""
    destination = data_dir / "dst.bin"
    result = cli("cp", "/proc/self/status", str(destination))
    _assert_failed(result, "is on the kernel's proc file system", destination)


@pytest.mark.parametrize("command", ["cp", "submit"])
def test_source_is_directory(cli, data_dir: Path, command: str) -> None:
    """A directory without -r is refused before anything starts, exit 2 (it started a
    transfer that failed, exit 1; found by a tester)."""
    destination = data_dir / "dst.bin"
    (data_dir / "in").mkdir()
    result = cli(command, str(data_dir / "in"), str(destination))
    assert result.returncode == 2, result
    assert "is a directory: add -r to copy every file under it" in result.stderr
    assert "Traceback" not in result.stderr
    assert not destination.exists()


def test_destination_directory_missing(cli, source: Path, data_dir: Path) -> None:
    """A missing local destination directory is the worker's to find (it does the
    I/O; a client on another machine sees none of its paths): the transfer fails
    (exit 1), naming the URL and the directory, that nothing was written, and what to
    do (it said only "create it first", not where nor how)."""
    destination = data_dir / "no" / "such" / "dst.bin"
    missing = data_dir / "no" / "such"
    result = cli("cp", str(source), str(destination))
    _assert_failed(result, f"destination directory {missing} does not exist", destination)
    assert f"(for file://{destination})" in result.stderr, result.stderr
    assert "on the worker's file system" in result.stderr, result.stderr
    assert "nothing was written" in result.stderr, result.stderr
    assert f"mkdir -p {missing}" in result.stderr and "copy again" in result.stderr, result.stderr
    assert not (data_dir / "no").exists()


@pytest.fixture
def read_only_dir(data_dir: Path) -> Iterator[Path]:
    """A directory nobody may write into, even root (immutable flag or ro bind mount)."""
    path = data_dir / "readonly"
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        yield path
        path.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0:
        yield path
        subprocess.run(["chattr", "-i", str(path)], check=True)
        return
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], check=True)
    yield path
    subprocess.run(["umount", str(path)], check=True)


def test_destination_not_writable(cli, source: Path, read_only_dir: Path) -> None:
    destination = read_only_dir / "dst.bin"
    result = cli("cp", str(source), str(destination))
    assert result.returncode == 1, result
    assert "permission denied" in result.stderr or "not writable" in result.stderr, result.stderr
    if "not writable" in result.stderr:  # root, kept out by an immutable flag (tester73)
        assert "an immutable flag: lsattr -d" in result.stderr, result.stderr
    assert str(read_only_dir) in result.stderr
    assert not destination.exists()
    assert os.listdir(read_only_dir) == []


def test_destination_on_a_read_only_file_system_says_so(cli, source: Path, data_dir: Path) -> None:
    """A file system mounted read-only is named as such, as a dataset's root on one
    is (tester64): "not writable" read as a permission root could fix."""
    mount = data_dir / "ro"
    with mounted_tmpfs(mount, "4m"):
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        destination = mount / "dst.bin"
        result = cli("cp", str(source), str(destination))
        assert result.returncode == 1, result
        said = " ".join(result.stderr.split())
        assert f"the file system mounted at {mount} is read-only" in said, said
        assert not destination.exists()
        assert os.listdir(mount) == []


def test_temporal_not_reachable(source: Path, data_dir: Path) -> None:
    destination = data_dir / "dst.bin"
    result = run_cli("cp", str(source), str(destination), address="127.0.0.1:1", timeout_s=60)
    assert result.returncode == 1, result
    assert "cannot reach Temporal at 127.0.0.1:1" in result.stderr, result.stderr
    assert "staccato up" in result.stderr
    assert not destination.exists()


def test_status_of_unknown_transfer(cli) -> None:
    result = cli("status", "staccato-0000")
    assert result.returncode == 1
    assert "no transfer 'staccato-0000'" in result.stderr


def test_unknown_and_empty_names_say_what_was_typed(cli) -> None:
    """A name that is no transfer is reported as typed (a relative path's transfer id
    is a hash the user never saw); an empty or blank one is a usage error, exit 2,
    for every command taking a TRANSFER (it was a traceback)."""
    for command in ("status", "cancel", "pause", "resume"):
        result = cli(command, "no-such-transfer")
        assert result.returncode == 1, (command, result)
        assert "no transfer 'no-such-transfer'" in result.stderr, (command, result.stderr)
    for command in ("status", "watch", "cancel", "pause", "resume"):
        for blank in ("", " "):
            result = cli(command, blank)
            assert result.returncode == 2, (command, blank, result)
            assert "TRANSFER" in result.stderr and "is empty" in result.stderr, result.stderr
            assert "Traceback" not in result.stderr


def test_help_lists_commands() -> None:
    result = run_cli("--help", address="127.0.0.1:1")
    assert result.returncode == 0
    for command in (
        "up",
        "down",
        "worker",
        "submit",
        "cp",
        "status",
        "watch",
        "list",
        "cancel",
        "pause",
        "resume",
    ):
        assert command in result.stdout


def test_warns_when_no_worker_polls(cli, source: Path, data_dir: Path) -> None:
    """A transfer submitted where no worker listens says so instead of waiting silently."""
    result = cli(
        "submit",
        str(source),
        str(data_dir / "queued.bin"),
        env={"STACCATO_TASK_QUEUE": "nobody-home"},
    )
    assert result.returncode == 0, result
    assert "no worker is polling task queue 'nobody-home'" in result.stderr
    transfer = result.stdout.strip()
    assert cli("cancel", transfer, env={"STACCATO_TASK_QUEUE": "nobody-home"}).returncode == 0


def test_special_file_destination_is_refused(cli, source: Path, data_dir: Path) -> None:
    """A FIFO (or device, socket) at the destination name is never replaced."""
    fifo = data_dir / "pipe"
    os.mkfifo(fifo)
    result = cli("cp", str(source), str(fifo))
    assert result.returncode == 1, result
    assert "is not a regular file" in result.stderr
    assert fifo.is_fifo()
    assert leftovers(data_dir) == []


def test_symlink_destination_is_refused(cli, source: Path, data_dir: Path) -> None:
    target = data_dir / "real.bin"
    target.write_bytes(b"keep")
    link = data_dir / "link.bin"
    link.symlink_to(target)
    result = cli("cp", str(source), str(link))
    assert result.returncode == 1, result
    assert "symbolic link" in result.stderr and str(target) in result.stderr
    assert link.is_symlink() and target.read_bytes() == b"keep"


def test_long_destination_name_fails_fast(cli, source: Path, data_dir: Path) -> None:
    """A name the file system cannot hold fails at once (not retried), with the reason."""
    result = cli("cp", str(source), str(data_dir / ("n" * 300)), timeout_s=60)
    assert result.returncode == 1, result
    assert "name too long" in result.stderr


def test_long_but_valid_destination_name(cli, source: Path, data_dir: Path) -> None:
    """Names up to 255 bytes work: the temp name beside them stays within NAME_MAX."""
    destination = data_dir / ("n" * 255)
    result = cli("cp", str(source), str(destination))
    assert result.returncode == 0, result.stderr
    assert destination.read_bytes() == source.read_bytes()


@pytest.mark.parametrize("form", ["path", "file-url"])
def test_a_destination_ending_in_slash_is_a_usage_error(
    cli, source: Path, data_dir: Path, form: str
) -> None:
    """``cp SRC DIR/`` names a directory, not the file to write: refused before anything
    starts, exit 2, as an S3 key or an SFTP path ending in '/' is, naming the full
    name to give; nothing is written in or as the directory (one that exists: the
    next test)."""
    directory = data_dir / "into"
    text = f"{directory}/" if form == "path" else f"file://{directory}/"
    result = cli("cp", str(source), text)
    assert result.returncode == 2, result
    assert f"destination {text!r} ends in '/'" in result.stderr, result.stderr
    assert f"e.g. {text}src.bin" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in data_dir.iterdir()) == ["src.bin"]


@pytest.mark.parametrize("slash", ["", "/"])
@pytest.mark.parametrize("form", ["path", "file-url"])
def test_an_existing_directory_as_destination_is_a_usage_error(
    cli, source: Path, data_dir: Path, form: str, slash: str
) -> None:
    """``cp SRC EXISTING_DIR`` (with or without a trailing '/') is refused before
    anything starts, exit 2, with one message naming the directory and the file name
    to give inside it (without the '/' the transfer started and failed, exit 1; with
    it the message was that of a '/', "ends in '/'")."""
    directory = data_dir / "into"
    directory.mkdir()
    named = str(directory) if form == "path" else f"file://{directory}"
    result = cli("cp", str(source), named + slash)
    assert result.returncode == 2, result
    assert result.stderr == (
        f"staccato: error: destination {named} is a directory; name the file to write, "
        f"e.g. {named}/src.bin (cp -r copies into a directory)\n"
    ), result.stderr
    assert list(directory.iterdir()) == []


def test_temporal_timeout_is_one_line_naming_the_address(temporal_server, worker) -> None:
    """A Temporal call that does not answer in time (here: a dataset's describe bounded
    by STACCATO_CLIENT_WAIT_S of 1 µs, which no server meets) is one line naming
    Temporal's address and the command, exit 1: no traceback."""
    dataset = "staccato-dataset-" + "0" * 16
    result = run_cli(
        "status",
        dataset,
        address=temporal_server.address,
        task_queue=worker.task_queue,
        env={"STACCATO_CLIENT_WAIT_S": "0.000001"},
    )
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"Temporal at {temporal_server.address} did not answer in time" in lines[0]
    assert f"staccato status {dataset}" in lines[0]


def test_any_temporal_rpc_error_is_one_line(temporal_server, monkeypatch, capsys) -> None:
    """Every command runs through ``common.run``: an RPCError from any Temporal call
    (a real one, from the real server: a describe with a deadline no server meets)
    becomes one line naming the address, exit 1."""
    from datetime import timedelta

    import typer

    from staccato.cli.common import run
    from staccato.client import StaccatoClient

    async def go() -> None:
        client = await StaccatoClient.connect(target_host=temporal_server.address)
        try:
            handle = client.temporal.get_workflow_handle("staccato-no-such-transfer")
            await handle.describe(rpc_timeout=timedelta(microseconds=1))
        finally:
            await client.close()

    monkeypatch.setenv("TEMPORAL_ADDRESS", temporal_server.address)
    monkeypatch.setattr("sys.argv", ["staccato", "list"])
    with pytest.raises(typer.Exit) as ended:
        run(go)
    assert ended.value.exit_code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"Temporal at {temporal_server.address} did not answer in time" in lines[0]
    assert "`staccato list`" in lines[0]


def test_a_name_ending_in_a_space_is_copied_through_a_file_url(cli, data_dir: Path) -> None:
    """A bare path ending in a space is refused, and the message says how to name it
    (tester: files `cp -r` copies could not be copied one at a time); the file:// URL
    with the space percent-encoded copies it, byte-identical."""
    odd = data_dir / "trailing "
    digest = write_random(odd, 5000)
    bare = cli("cp", str(odd), str(data_dir / "out.bin"))
    assert bare.returncode == 2, bare
    assert "file:///dir/name%20" in bare.stderr, bare.stderr
    assert not (data_dir / "out.bin").exists()
    done = cli("cp", "-q", f"file://{quote(str(odd))}", str(data_dir / "out.bin"))
    assert done.returncode == 0, done.stderr
    assert sha256_file(data_dir / "out.bin") == digest


def test_temporal_address_at_the_http_port_says_it_is_not_grpc(temporal_server) -> None:
    """TEMPORAL_ADDRESS at the dev server's HTTP API port (or the UI's): the error says
    something answers there but not Temporal's gRPC, and names the gRPC port's option
    (tester74: just "transport error"); the UI's port says the same."""
    for address in (temporal_server.http_address, temporal_server.ui_url.removeprefix("http://")):
        done = run_cli("list", address=address, timeout_s=60)
        assert done.returncode == 1, done
        said = " ".join(done.stderr.split())
        assert f"cannot reach Temporal at {address}" in said, said
        assert "but not Temporal's gRPC" in said and "staccato up --port" in said, said
