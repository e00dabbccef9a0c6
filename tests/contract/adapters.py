"""Endpoint adapters: what the driver contract suite needs to know about one endpoint.

An adapter pairs a driver with a real server and gives the tests their own view of
that server (never through the driver under test): where a fresh, per-test namespace
is (a directory, a key prefix), how to put a source object there, how to read an object
back, how to list everything there (to see leftovers: temp files, journals, open
multipart uploads), and how to lose a write session's temp data behind the driver's
back. Sizes are bytes.
"""

from __future__ import annotations

import abc
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

from staccato.endpoints.base import Driver
from staccato.models import WriteSession
from staccato.urls import EndpointURL, parse_url


class EndpointAdapter(abc.ABC):
    """One endpoint under the contract suite (one per test: a fresh namespace).

    Attributes:
        name: the id the suite's tests carry (``test_x[sftp]``).
        driver: the driver under test.
        writable: whether the endpoint is a destination too (the write-session tests
            run only then); must agree with ``driver.features.write``.
        supports_ranges: what ``stat`` must report for an ordinary object.
        chunk_size: the chunk size the write tests ask for (bytes): the smallest the
            endpoint takes for a multi-chunk write (S3: 5 MiB parts), so tests stay fast.
        name_limit: longest name (bytes, UTF-8) the endpoint takes for the last
            component of an object's name (a file system's NAME_MAX, S3's 1,024-byte key).
        listable: ``driver.list_page`` lists a directory or prefix (not http).
        opaque_keys: names are opaque keys, not paths (S3: ``a//b``, ``x/./y``, ``dir/``
            beside ``dir`` are distinct objects).
        tree_order: the store lists in file-tree order (``/`` before every other
            character: SeaweedFS keeps keys in a file tree) rather than in UTF-8 byte
            order (AWS S3, and the file and sftp walks).
    """

    name: ClassVar[str]
    writable: ClassVar[bool] = True
    supports_ranges: ClassVar[bool] = True
    chunk_size: ClassVar[int] = 64 * 1024
    name_limit: ClassVar[int] = 255
    listable: ClassVar[bool] = True
    opaque_keys: ClassVar[bool] = False
    tree_order: ClassVar[bool] = False

    def __init__(self, driver: Driver) -> None:
        self.driver = driver

    @abc.abstractmethod
    def url(self, name: str) -> EndpointURL:
        """The URL of ``name`` in this test's namespace (the object need not exist)."""

    def list_root(self) -> EndpointURL:
        """The URL of this test's namespace as a directory or prefix (what is listed)."""
        return self.url("")

    @abc.abstractmethod
    def put(self, name: str, data: bytes) -> EndpointURL:
        """Create or replace the object ``name`` with ``data``; returns its URL."""

    def rewrite(self, name: str, data: bytes) -> None:
        """Replace ``name`` with ``data`` in a way its version token can see (endpoints
        whose version is a modification time in whole seconds: dated a few seconds
        later, as a rewrite a moment later would be)."""
        self.put(name, data)

    @abc.abstractmethod
    def delete(self, name: str) -> None:
        """Remove the object ``name``."""

    @abc.abstractmethod
    def get(self, name: str) -> bytes | None:
        """The bytes of object ``name`` as the server holds them, None if absent."""

    @abc.abstractmethod
    def listing(self) -> set[str]:
        """Everything in this test's namespace: object names, and ``upload:NAME`` for
        each unfinished multipart upload."""

    @abc.abstractmethod
    def lose_session_data(self, keep: str) -> set[str]:
        """Delete everything in the namespace except the object ``keep`` (a write
        session's temp file, journal, upload...), as a person or a cleanup job might;
        returns what was deleted."""

    def long_name(self, alphabet: str, extra: int = 0) -> str:
        """A name of exactly :attr:`name_limit` (+ ``extra``) bytes of UTF-8: ``ascii``
        letters, or two-byte ``utf-8`` characters (so a driver that shortens names by
        characters, not bytes, is caught)."""
        return _name_of(self.name_limit + extra, alphabet)

    def lose_temp(self, session: WriteSession) -> None:
        """Delete the session's temp object alone (its journal, if any, stays), as a
        clean-up of ``*.staccato-part`` files might. Default: all of the session's data."""
        self.lose_session_data(keep=parse_url(session.url).path.rsplit("/", 1)[-1])

    @abc.abstractmethod
    def missing_parent(self, name: str) -> EndpointURL:
        """A URL for ``name`` whose parent (directory, bucket) does not exist."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Remove the namespace."""


def _name_of(size: int, alphabet: str) -> str:
    """``size`` bytes of UTF-8 ending in ``.bin``."""
    if alphabet == "ascii":
        return "n" * (size - 4) + ".bin"
    two_byte = "é" * ((size - 4) // 2)
    return two_byte + "x" * (size - 4 - 2 * len(two_byte)) + ".bin"


class _LocalDirectory(EndpointAdapter):
    """An endpoint serving a local directory (the test sees the files directly)."""

    def __init__(self, driver: Driver, root: Path) -> None:
        super().__init__(driver)
        self.root = root
        root.mkdir(mode=0o755, parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        return self.root / name

    def put(self, name: str, data: bytes) -> EndpointURL:
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o644)
        return self.url(name)

    def rewrite(self, name: str, data: bytes) -> None:
        path = self._path(name)
        before = path.stat().st_mtime_ns
        self.put(name, data)
        later = before + 3_000_000_000
        os.utime(path, ns=(later, later))

    def delete(self, name: str) -> None:
        self._path(name).unlink()

    def get(self, name: str) -> bytes | None:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError:
            return None

    def listing(self) -> set[str]:
        return set(os.listdir(self.root))

    def lose_session_data(self, keep: str) -> set[str]:
        lost = self.listing() - {keep}
        for name in lost:
            if (self.root / name).is_dir():  # an SFTP session's writers directory
                shutil.rmtree(self.root / name)
            else:
                os.unlink(self.root / name)
        return lost

    def lose_temp(self, session: WriteSession) -> None:
        os.unlink(session.session_id)  # file and SFTP sessions: the temp file's path

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class FileAdapter(_LocalDirectory):
    """``file://`` on the local file system."""

    name = "file"

    def url(self, name: str) -> EndpointURL:
        return parse_url("file://" + quote(str(self._path(name))))

    def missing_parent(self, name: str) -> EndpointURL:
        return parse_url(str(self.root / "no-such-dir" / name))


class SFTPAdapter(_LocalDirectory):
    """``sftp://`` through a real OpenSSH sshd on 127.0.0.1 serving this machine's
    file system (so the test sees the server's files directly)."""

    name = "sftp"

    def __init__(self, driver: Driver, root: Path, base_url: str) -> None:
        super().__init__(driver, root)
        self.base_url = base_url  # sftp://user@127.0.0.1:port

    def url(self, name: str) -> EndpointURL:
        return parse_url(self.base_url + quote(str(self._path(name))))

    def missing_parent(self, name: str) -> EndpointURL:
        return parse_url(self.base_url + quote(str(self.root / "no-such-dir" / name)))


class HTTPAdapter(_LocalDirectory):
    """``http://`` from nginx serving a world-readable local directory (sources only)."""

    name = "http"
    writable = False
    listable = False

    def __init__(self, driver: Driver, root: Path, base_url: str) -> None:
        super().__init__(driver, root)
        self.base_url = base_url  # http://127.0.0.1:port/<namespace>

    def url(self, name: str) -> EndpointURL:
        return parse_url(f"{self.base_url}/{quote(name)}")

    def missing_parent(self, name: str) -> EndpointURL:
        return parse_url(f"{self.base_url}/no-such-dir/{quote(name)}")


class HTTPWithoutRangesAdapter(HTTPAdapter):
    """nginx with ``max_ranges 0``: a server that ignores Range and sends the whole body."""

    name = "http_no_ranges"
    supports_ranges = False


class S3Adapter(EndpointAdapter):
    """``s3://`` on a real SeaweedFS; the namespace is a fresh key prefix in a bucket."""

    name = "s3"
    tree_order = True  # SeaweedFS; it also rewrites a//b as a/b and refuses x/./y
    chunk_size = 5 * 1024 * 1024  # S3's smallest part but the last
    # S3's longest key is 1,024 bytes of UTF-8; the namespace's prefix takes its share

    def __init__(self, driver: Driver, client: Any, bucket: str) -> None:
        super().__init__(driver)
        self.s3 = client
        self.bucket = bucket
        self.prefix = f"{uuid.uuid4().hex[:12]}/"
        self.name_limit = 1024 - len(self.prefix)  # type: ignore[misc]

    def url(self, name: str) -> EndpointURL:
        # the percent-encoded form holds any key (?, trailing spaces...)
        return parse_url(f"s3://{self.bucket}/?key={quote(self.prefix + name)}")

    def put(self, name: str, data: bytes) -> EndpointURL:
        self.s3.put_object(Bucket=self.bucket, Key=self.prefix + name, Body=data)
        return self.url(name)

    def delete(self, name: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=self.prefix + name)

    def get(self, name: str) -> bytes | None:
        try:
            return bytes(
                self.s3.get_object(Bucket=self.bucket, Key=self.prefix + name)["Body"].read()
            )
        except self.s3.exceptions.NoSuchKey:
            return None

    def _keys(self) -> list[str]:
        found: list[str] = []
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        )
        for page in pages:
            found += [item["Key"] for item in page.get("Contents") or []]
        return found

    def _uploads(self) -> list[dict[str, Any]]:
        answer = self.s3.list_multipart_uploads(Bucket=self.bucket, Prefix=self.prefix)
        return list(answer.get("Uploads") or [])

    def listing(self) -> set[str]:
        names = {key[len(self.prefix) :] for key in self._keys()}
        return names | {"upload:" + u["Key"][len(self.prefix) :] for u in self._uploads()}

    def lose_session_data(self, keep: str) -> set[str]:
        lost: set[str] = set()
        for upload in self._uploads():
            self.s3.abort_multipart_upload(
                Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
            lost.add("upload:" + upload["Key"][len(self.prefix) :])
        for key in self._keys():
            if key != self.prefix + keep:
                self.s3.delete_object(Bucket=self.bucket, Key=key)
                lost.add(key[len(self.prefix) :])
        return lost

    def long_name(self, alphabet: str, extra: int = 0) -> str:
        """A key of 1,024 (+ ``extra``) bytes with this test's prefix, in ``/``-separated
        segments of at most 201 bytes (S3 keys are not paths, but S3-compatible stores
        that keep objects in a file tree, SeaweedFS among them, limit each segment)."""
        segment = ("n" * 200 if alphabet == "ascii" else "é" * 100) + "/"
        room = self.name_limit + extra
        count = (room - 5) // len(segment.encode())
        return segment * count + _name_of(room - count * len(segment.encode()), alphabet)

    def missing_parent(self, name: str) -> EndpointURL:
        return parse_url(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/{name}")


class MotoS3Adapter(S3Adapter):
    """``s3://`` on moto, which keeps keys opaque and lists them in UTF-8 byte order as
    AWS S3 does (listing tests only: moto is slow for large ranged reads)."""

    name = "s3_moto"
    opaque_keys = True
    tree_order = False
