"""Pure functions: URL canonicalisation, chunk planning, checksum combination, sizes."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import crc32c
import pytest
import typer

from staccato import checksums, errors, units
from staccato.cli import parse_size
from staccato.client import transfer_id
from staccato.errors import InvalidURLError
from staccato.models import GiB, MiB
from staccato.plan import MAX_SEGMENT_BYTES, chunk_count, plan_segments
from staccato.secrets import seal_source
from staccato.urls import parse_url


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("/tmp/a b", "file:///tmp/a%20b"),
        ("file:///tmp/../tmp/x", "file:///tmp/x"),
        ("file://localhost/tmp/x", "file:///tmp/x"),
        ("HTTP://Example.COM:80/a?b=1#frag", "http://example.com/a?b=1"),
        ("https://h:8443/x", "https://h:8443/x"),
        ("s3://bkt/a//b.txt", "s3://bkt/a//b.txt"),
        ("s3://bkt//lead.txt", "s3://bkt//lead.txt"),
        ("s3://bkt/x/./y", "s3://bkt/x/./y"),
        ("s3://bkt/k?profile=prod", "s3://bkt/k?profile=prod"),
        # a key with '#' (one `cp -r` writes): never a fragment
        ("s3://bkt/odd/#hash.bin", "s3://bkt/?key=odd/%23hash.bin"),
        ("s3://bkt/?key=odd%2F%23hash.bin", "s3://bkt/?key=odd/%23hash.bin"),
        ("sftp://h/tree/%23hash.bin", "sftp://h/tree/%23hash.bin"),
        ("sftp://U@Host:22/p/x", "sftp://U@host/p/x"),
        ("sftp://host:2222/p", "sftp://host:2222/p"),
        # one file on a POSIX server, so one canonical URL (and one destination lock)
        ("sftp://h/a//b", "sftp://h/a/b"),
        ("sftp://h//a/./b", "sftp://h/a/b"),
        ("sftp://h/d/./", "sftp://h/d/"),
        ("sftp://h/d/.", "sftp://h/d/"),
        ("sftp://h//", "sftp://h/"),
    ],
)
def test_canonical_urls(text: str, canonical: str) -> None:
    assert parse_url(text).canonical == canonical


def test_an_s3_key_with_a_hash_is_no_secret() -> None:
    """``s3://b/odd/#hash.bin`` (a key ``cp -r`` wrote) was refused as a URL that
    "carries a secret that cannot be kept out of Temporal": its canonical text kept the
    ``#``, which every shown or stored URL hides as a fragment."""
    url = parse_url("s3://bkt/odd/#hash.bin")
    assert url.key == "odd/#hash.bin"
    assert seal_source(url.canonical) == (url.canonical, None)
    assert parse_url(url.canonical).key == "odd/#hash.bin"


def test_relative_path_is_made_absolute() -> None:
    assert parse_url("data/x.bin", cwd="/work").canonical == "file:///work/data/x.bin"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty URL"),
        ("ftp://h/x", "unknown URL scheme 'ftp'"),
        ("http://", "no host"),
        ("http://u:p@h/x", "refusing a password"),
        ("sftp://u:p@h/x", "refusing a password"),
        ("s3://A/x", "invalid S3 bucket name"),
        ("s3://bkt/x?region=eu", "query parameters understood are ?profile=NAME and ?key="),
        ("s3://bkt/x?key=y", "not both"),
        ("file://remotehost/x", "expected file:///absolute/path"),
        (" /tmp/x", "whitespace"),
        ("sftp://h/a/../b", "a '..' segment in the path"),
        # a fragment means nothing to SFTP: dropped, it named the directory tree/
        ("sftp://h/tree/#hash.bin", "'#' must be percent-encoded"),
    ],
)
def test_bad_urls(text: str, message: str) -> None:
    with pytest.raises(InvalidURLError, match=message.replace("?", r"\?")):
        parse_url(text)


def test_spaces_mean_one_thing_per_scheme() -> None:
    """A space is a character of an S3 key, an SFTP path or a local name (tester75
    checked they copy), but no URI holds one (RFC 3986): an http(s) URL with one is
    refused naming ``%20``, and non-ASCII in it is encoded as UTF-8 as httpx sends it."""
    assert parse_url("s3://bucket/a dir/x y.bin").key == "a dir/x y.bin"
    assert parse_url("sftp://u@h/a dir/x y.bin").path == "/a dir/x y.bin"
    assert parse_url("/tmp/a b").path == "/tmp/a b"
    for bad in ("http://h/a dir/x", "https://h/x?q=a b", "http://h/a\x7fb"):
        with pytest.raises(InvalidURLError, match="write it as %"):
            parse_url(bad)
    assert parse_url("http://h/caf\N{LATIN SMALL LETTER E WITH ACUTE}?q={x}").canonical == (
        "http://h/caf%C3%A9?q=%7Bx%7D"
    )


def test_transfer_id_is_per_destination() -> None:
    assert transfer_id("/tmp/x") == transfer_id("file:///tmp/../tmp/x")
    assert transfer_id("/tmp/x") != transfer_id("/tmp/y")
    # the same file on an SFTP server: one id, so one lock (tester62: a second writer
    # of sftp://h/a//b was admitted while sftp://h/a/b was being written)
    assert (
        transfer_id("sftp://h/a//b") == transfer_id("sftp://h/a/./b") == transfer_id("sftp://h/a/b")
    )
    assert len(transfer_id("s3://bucket/" + "k" * 900)) < 100


@pytest.mark.parametrize("size", [0, 1, MiB - 1, MiB, MiB + 1, 10 * GiB + 7])
@pytest.mark.parametrize("streams", [1, 3, 4, 64])
def test_segments_cover_object_exactly(size: int, streams: int) -> None:
    segments = plan_segments(size, MiB, streams)
    assert sum(s.length for s in segments) == size
    assert len(segments) <= max(streams, -(-size // MAX_SEGMENT_BYTES))
    expected_offset = 0
    expected_chunk = 0
    for s in segments:
        assert s.offset == expected_offset and s.first_chunk == expected_chunk
        expected_offset += s.length
        expected_chunk = s.end_chunk
    assert expected_chunk == chunk_count(size, MiB)


def test_huge_object_keeps_few_segments() -> None:
    segments = plan_segments(10 * 1024 * GiB, 64 * MiB, 4)
    assert len(segments) == 160  # 10 TiB / 64 GiB: ~1,000 history events, far below 51,200


@pytest.mark.parametrize(
    ("size", "piece"),
    [(1001, 1), (10007, 7), (1000003, 4096), (1000003, 65536), (1000003, 1000003)],
)
def test_crc32c_combine_equals_whole(size: int, piece: int) -> None:
    data = os.urandom(size)
    parts = [
        (
            checksums.checksum_bytes("crc32c", memoryview(bytearray(data[i : i + piece]))),
            len(data[i : i + piece]),
        )
        for i in range(0, len(data), piece)
    ]
    assert checksums.combine("crc32c", parts) == f"{crc32c.crc32c(data):08x}"


@pytest.mark.parametrize("size", [0, 1, 255, 256, 65536 + 3, 16 * MiB + 1])
def test_posix_cksum_is_what_the_cksum_tool_prints(size: int) -> None:
    """``posix_cksum`` equals the first field POSIX ``cksum`` prints (the sftp verify
    compares them), for lengths taking 0 to 4 bytes in its length suffix; a view of a
    bytearray (a stream's buffer) gives the same."""
    data = os.urandom(size)
    printed = subprocess.run(["cksum"], input=data, capture_output=True, check=True).stdout
    assert printed.split() == [str(checksums.posix_cksum(data)).encode(), str(size).encode()]
    assert checksums.posix_cksum(memoryview(bytearray(data))) == checksums.posix_cksum(data)


def test_sha256_tree_depends_on_every_part() -> None:
    a = checksums.combine("sha256", [(checksums.checksum_bytes("sha256", b"x"), 1)] * 2)
    b = checksums.combine("sha256", [(checksums.checksum_bytes("sha256", b"y"), 1)] * 2)
    assert a != b


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("8MiB", 8 * MiB),
        ("64M", 64 * MiB),
        ("64m", 64 * MiB),
        ("1G", GiB),
        ("100MB", 100_000_000),
        ("4096", 4096),
    ],
)
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize(
    "text", ["0", "-1", "lots", "6GiB", "", "4 MiB per link", "8MiB of chunks", "1e3"]
)
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(typer.BadParameter):
        parse_size(text)


def test_error_types_keep_their_wire_names() -> None:
    """Failures travel as ``ApplicationError.type``; renaming a class must not change
    the type recorded in Temporal (a worker replaying an old history compares it)."""
    assert errors.WriteSessionLostError.TYPE == "WriteSessionLost"
    assert errors.ChecksumMismatchError.TYPE == "ChecksumMismatch"
    assert errors.NotAFileError.TYPE == "IsADirectory"
    assert errors.NotFound is errors.NotFoundError
    for name, cls in errors.ERROR_TYPES.items():
        assert cls.TYPE == name
        assert cls.__name__.endswith("Error"), cls

    class LostUpload(errors.WriteSessionLostError):
        """A driver's own kind of lost session."""

    class Gone(errors.NotFoundError):
        TYPE = "Gone"

    assert errors.application_type(LostUpload("x")) == "WriteSessionLost"
    assert errors.application_type(Gone("x")) == "Gone"
    assert errors.application_type(errors.RetryableError("x")) == "RetryableError"


def test_workflow_names_failure_types_by_constant() -> None:
    """The workflow compares and raises failure types only through the constants of
    staccato.errors, never string literals that a rename would silently break."""
    import ast
    from pathlib import Path

    import staccato.workflows

    for path in Path(staccato.workflows.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                text = ast.unparse(node)
                if any(isinstance(o, ast.Constant) and isinstance(o.value, str) for o in operands):
                    assert "reason_type" not in text and ".type" not in text, f"{path.name}: {text}"
            if isinstance(node, ast.keyword) and node.arg == "type":
                assert not isinstance(node.value, ast.Constant), f"{path.name}: type={node.value}"


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (MiB - 1, "1.0 MiB"),  # 1023.999 KiB reads as the next unit, never "1024.0 KiB"
        (GiB, "1.0 GiB"),
        (4 * GiB + GiB // 2, "4.5 GiB"),
    ],
)
def test_sizes_in_iec_units(n: int, text: str) -> None:
    from staccato import units

    assert units.size(n) == text


def test_rates_durations_percentages() -> None:
    from staccato import units

    assert units.rate(20 * MiB) == "20.0 MiB/s"
    assert [units.duration(s) for s in (0, 5.2, 200, 7500, 3 * 86400 + 4000)] == [
        "0 s", "6 s", "3 min 20 s", "2 h 05 min", "3 d 01 h",
    ]  # fmt: skip
    assert units.percent(999, 1000) == "99%"  # rounded down: 100% only when all of it
    assert units.percent(0, 0) == "100%" and units.percent(5, None) is None
    assert units.eta(100, 0) is None and units.eta(100, 50.0) == 2.0
    assert units.progress(512 * MiB, GiB, 20 * MiB, 25.2) == (
        "512.0 MiB / 1.0 GiB (50%) at 20.0 MiB/s, ETA 26 s"
    )
    assert units.progress(0, None) == "0 B / ?"


def test_stream_counts_are_worded_by_number() -> None:
    """No message says ``1 streams`` (tester75: ``1 streams waiting`` for worker
    capacity, ``(1 streams)`` in a governor's line): every count of streams in an
    f-string goes through ``units.counted``, the optimizer's reasons too (``holding 1
    streams``). A share (``+{added:.0%} streams``) is not a count."""
    root = Path(__file__).resolve().parent.parent / "staccato"
    bare = re.compile(r"\{[^{}%]*\} streams\b")
    found = [
        f"{path.relative_to(root)}:{number}: {line.strip()}"
        for path in sorted(root.rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if bare.search(line)
    ]
    assert found == [], found
    assert units.counted(1, "stream") == "1 stream" and units.counted(2, "stream") == "2 streams"
