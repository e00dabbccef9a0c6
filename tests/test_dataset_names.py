"""Mapping a listed source name to its destination URL (staccato.datasets.names): built
from parts, never by parsing text; a name the destination cannot hold as itself fails
for that name alone, with the reason."""

from __future__ import annotations

import unicodedata

import pytest

from staccato.datasets.names import UnrepresentableNameError, target_url
from staccato.errors import PermanentError
from staccato.urls import _file_canonical, parse_url

FILE_ROOT = parse_url("file:///data/run")
SFTP_ROOT = parse_url("sftp://me@host:2222/data/run/")
S3_ROOT = parse_url("s3://bucket/run?profile=lab")


@pytest.mark.parametrize("root", [FILE_ROOT, SFTP_ROOT, S3_ROOT], ids=["file", "sftp", "s3"])
@pytest.mark.parametrize(
    "name",
    [
        "+",
        "%2B",
        "a b/c d",
        "hash#x",
        "q?x",
        "%",
        unicodedata.normalize("NFC", "é"),
        unicodedata.normalize("NFD", "é"),
        "n" * 255,
        "new\nline",
    ],
)
def test_names_map_byte_for_byte(root, name: str) -> None:
    url = target_url(root, name)
    prefix = "run/" if root.scheme == "s3" else "/data/run/"
    assert url.path == prefix + name
    assert (url.scheme, url.host, url.port, url.user, url.params) == (
        root.scheme,
        root.host,
        root.port,
        root.user,
        root.params,
    )
    assert parse_url(url.canonical) == url  # workflows carry the canonical text


@pytest.mark.parametrize("root", [FILE_ROOT, SFTP_ROOT], ids=["file", "sftp"])
@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("a//b", "empty path segment"),
        ("dir/", "empty path segment"),
        ("/lead", "empty path segment"),
        ("x/./y", "'.' path segment"),
        ("../up", "'..' path segment"),
        ("..", "'..' path segment"),
        ("n" * 256, "at most 255 bytes"),
        ("é" * 128, "at most 255 bytes"),
        ("nul\0", "NUL"),
        ("", "empty"),
    ],
)
def test_file_systems_refuse_names_that_are_not_themselves(root, name: str, reason: str) -> None:
    with pytest.raises(UnrepresentableNameError, match=reason) as caught:
        target_url(root, name)
    assert isinstance(caught.value, PermanentError)
    assert repr(name)[:40].strip("'") in str(caught.value) or name == ""
    assert str(root) in str(caught.value)


@pytest.mark.parametrize("name", ["a//b", "x/./y", "../up", "dir/", "/lead", "n" * 300])
def test_s3_keys_are_opaque(name: str) -> None:
    assert target_url(S3_ROOT, name).key == "run/" + name


def test_s3_keys_over_1024_bytes_are_refused() -> None:
    assert len(target_url(S3_ROOT, "k" * 1020).key) == 1024
    with pytest.raises(UnrepresentableNameError, match="1025 bytes"):
        target_url(S3_ROOT, "k" * 1021)


def test_a_bucket_root_and_a_slash_root_hold_names_directly() -> None:
    assert target_url(parse_url("s3://bucket/"), "x").canonical == "s3://bucket/x"
    assert target_url(parse_url("s3://bucket/run/"), "x").key == "run/x"
    assert target_url(parse_url("file:///"), "x").path == "/x"


def test_http_roots_name_no_objects() -> None:
    with pytest.raises(UnrepresentableNameError, match="single http object"):
        target_url(parse_url("http://example.org/dir/"), "x")


@pytest.mark.parametrize(
    ("key", "canonical"),
    [
        ("a?b", "s3://bucket/?key=a%3Fb"),
        ("odd/#hash.bin", "s3://bucket/?key=odd/%23hash.bin"),
        ("dir/trail ", "s3://bucket/?key=dir/trail%20"),
        ("tab\there", "s3://bucket/?key=tab%09here"),
        ("%2B&x", "s3://bucket/%2B&x"),  # written as is when the text can hold it
    ],
)
def test_s3_keys_plain_text_cannot_hold_go_percent_encoded_in_the_query(
    key: str, canonical: str
) -> None:
    url = target_url(parse_url("s3://bucket/"), key)
    assert (url.key, url.canonical) == (key, canonical)
    assert parse_url(canonical) == url
    with_profile = target_url(parse_url("s3://bucket/?profile=lab"), key)
    assert parse_url(with_profile.canonical) == with_profile
    assert with_profile.params == {"profile": "lab"}


def test_a_quoted_key_that_needs_no_quoting_has_the_plain_canonical_form() -> None:
    assert parse_url("s3://bucket/?key=a%2Fb%2B").canonical == "s3://bucket/a/b+"
    assert parse_url("s3://bucket/?profile=lab&key=x").canonical == "s3://bucket/x?profile=lab"


@pytest.mark.parametrize(
    "name",
    [
        "+",
        "%2B",
        "a b",
        "q?x",
        "h#x",
        "a//b",
        "x/./y",
        "a/..",
        "dir/",
        "new\nline",
        "tab\t",
        " lead",
        "trail ",
        "q=REDACTED",
        unicodedata.normalize("NFD", "é"),
        "/abs",
    ],
)
def test_a_file_url_is_built_only_when_its_text_parses_back_to_it(name: str) -> None:
    """A file URL under a root is not parsed back (cost) when its path is already
    normal: it must be exactly the URL its canonical text parses to, and a name whose
    text would name another path is still refused."""
    path = "/data/run/" + name
    try:
        url = target_url(FILE_ROOT, name)
    except UnrepresentableNameError:
        url = None
    if url is None:
        assert parse_url(_file_canonical(path)).path != path
    else:
        assert parse_url(url.canonical) == url
        assert url.path == path


@pytest.mark.parametrize(
    "name",
    ["d001/f00001.bin", "a-b_c.d~e/f", "x/./y", "a//b", "..", "-", "a" * 1020, "a" * 1025],
)
@pytest.mark.parametrize("root", ["s3://bucket/run/", "s3://bucket", "s3://bucket/p?profile=x"])
def test_an_s3_url_built_without_a_parse_is_what_its_text_parses_to(root: str, name: str) -> None:
    """Plain keys skip parsing the built text back (a dataset builds two URLs per file):
    the result must be exactly what the parse gives, and a key over 1,024 bytes still
    refused."""
    base = parse_url(root)
    key = (base.key.rstrip("/") + "/" if base.key else "") + name
    if len(key) > 1024:
        with pytest.raises(PermanentError, match="1,024|1024"):
            target_url(base, name)
        return
    built = target_url(base, name)
    assert parse_url(built.canonical) == built
    assert built.key.endswith(name)
