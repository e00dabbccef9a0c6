"""Parse and canonicalise endpoint URLs: one canonical text per object.

Accepted forms (tests/test_units.py ``test_canonical_urls`` and ``test_bad_urls``):

* ``/abs/path``, ``rel/path``, ``file:///abs/path`` -> ``file:///abs/path``
  (relative paths are made absolute against the caller's working directory;
  ``.`` and ``..`` are resolved, symlinks are not; percent-escapes decoded).
* ``http://host[:port]/path?query``, ``https://...`` (sources only): scheme and host
  lower-cased, default port dropped, fragment dropped.
* ``s3://bucket/key[?profile=NAME]``: the key is an opaque string (S3 keys are not
  paths: ``a//b``, ``/lead``, ``x/./y``, ``%2B`` stay as written). A key holding ``?``,
  a tab, a line break or ending in white space is written percent-encoded in the query
  instead: ``s3://bucket/?key=a%3Fb`` (the canonical form of such keys).
* ``sftp://[user@]host[:port]/path``: empty and ``.`` segments folded (``/a//b``,
  ``/a/./b`` -> ``/a/b``: one file on the server, one destination lock), a trailing
  ``/`` kept; a ``..`` segment refused (the server resolves it through symlinks).

Credentials never appear in a URL: a password is refused with :class:`InvalidURLError`
(they would land in workflow history and logs). The query of an http(s) URL is
treated as secret (presigned URLs carry their signature there): :func:`redact` is the
form of such a URL that may be shown, stored in Temporal or logged, and
:func:`redact_text` applies it to every URL inside a message.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit

from staccato.errors import InvalidURLError

#: what every query value of an http(s) URL is replaced with in shown and stored text
REDACTED = "REDACTED"

SCHEMES = ("file", "http", "https", "s3", "sftp")
SOURCE_ONLY_SCHEMES = ("http", "https")

# S3 bucket naming rules: https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_DEFAULT_PORTS = {"http": 80, "https": 443, "sftp": 22}


@dataclass(frozen=True)
class EndpointURL:
    """A parsed, canonical endpoint URL.

    Attributes:
        scheme: ``file``, ``http``, ``https``, ``s3`` or ``sftp``.
        canonical: the one text form of this object, used for workflow ids.
        path: file path (file, sftp), URL path (http), or key (s3).
        host: host name (http, sftp) or bucket (s3).
        port: explicit port, or None for the default.
        user: sftp user, if given.
        params: query parameters Staccato understands (``profile`` for s3).
    """

    scheme: str
    canonical: str
    path: str
    host: str = ""
    port: int | None = None
    user: str | None = None
    params: dict[str, str] = field(default_factory=dict)

    @property
    def bucket(self) -> str:
        """S3 bucket name."""
        return self.host

    @property
    def key(self) -> str:
        """S3 object key."""
        return self.path

    def __str__(self) -> str:
        return self.canonical


def parse_url(text: str, *, cwd: str | None = None) -> EndpointURL:
    """Parse ``text`` into its canonical :class:`EndpointURL`.

    Args:
        text: a URL or a local path.
        cwd: directory against which relative paths are resolved (default: os.getcwd()).

    Raises:
        InvalidURLError: empty text, an unknown scheme, a malformed URL or credentials in it;
            the message names the URL and what was expected.
    """
    if not text or not text.strip():
        raise InvalidURLError("empty URL: expected a path or a URL such as file:///data/x.bin")
    if text != text.strip() or any(c in text for c in "\r\n\t\0"):
        raise InvalidURLError(
            f"malformed URL {redact(text)!r}: it contains whitespace or control characters "
            "at its ends or a tab, newline or NUL; a name that holds them is written "
            "percent-encoded: file:///dir/name%20 (a local file), "
            "s3://bucket/?key=name%20 (an S3 key)"
        )
    if text.startswith(_CACHED_SCHEMES) and ".." not in unquote(text):
        # (a local path with `..` is resolved on the file system: not remembered)
        return _parse_cached(text)
    return _parse(text, cwd)


#: URLs whose parse depends on their text alone and holds no secret (an http(s) URL may
#: carry a token in its query): kept by :func:`_parse_cached`
_CACHED_SCHEMES = ("file://", "s3://", "sftp://")


@functools.lru_cache(maxsize=4096)
def _parse_cached(text: str) -> EndpointURL:
    """:func:`_parse` of a ``file``, ``s3`` or ``sftp`` URL, remembered: a dataset's
    batch parses each file's URLs ~10 times, ~40 us each (errors are not
    remembered: they are raised again)."""
    return _parse(text, None)


def _parse(text: str, cwd: str | None) -> EndpointURL:
    """The body of :func:`parse_url` after the checks of the text's characters."""
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.\-]*)://", text)
    if not match:
        if re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*:", text) and not os.path.exists(text):
            scheme = text.split(":", 1)[0]
            if len(scheme) > 1:
                raise InvalidURLError(
                    f"malformed URL {redact(text)!r}: expected SCHEME://..., one of {', '.join(SCHEMES)}"
                )
        return _file_url(os.path.join(cwd or os.getcwd(), text))
    scheme = match.group(1).lower()
    if scheme not in SCHEMES:
        raise InvalidURLError(
            f"unknown URL scheme {scheme!r} in {redact(text)!r}: supported schemes are {', '.join(SCHEMES)}"
        )
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as err:
        why = "the port must be 1-65535" if "out of range" in str(err) else str(err)
        raise InvalidURLError(f"malformed URL {redact(text)!r}: {why}") from None
    if parts.password is not None:
        raise InvalidURLError(
            f"refusing a password in URL {redact(text)}: credentials never go in URLs "
            "(they would be stored in the transfer's history); configure them on the worker "
            "(ssh-agent, key files or ~/.ssh/config for sftp; AWS profiles for s3)"
        )
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise InvalidURLError(
                f"malformed file URL {redact(text)!r}: expected file:///absolute/path"
            )
        if parts.query or parts.fragment:
            raise InvalidURLError(
                f"malformed file URL {redact(text)!r}: '?' and '#' must be percent-encoded"
            )
        path = _decoded(parts.path, text, "path")
        if not path.startswith("/"):
            raise InvalidURLError(
                f"malformed file URL {redact(text)!r}: expected file:///absolute/path"
            )
        return _file_url(path)
    if scheme in ("http", "https"):
        if not parts.hostname:
            raise InvalidURLError(f"malformed URL {redact(text)!r}: no host")
        if parts.username is not None:
            raise InvalidURLError(
                f"refusing credentials in URL {redact(text)}: configure them on the worker"
            )
        _refuse_http_blanks(text)
        host = parts.hostname.lower()
        netloc = f"[{host}]" if ":" in host else host
        if port is not None and port != _DEFAULT_PORTS[scheme]:
            netloc += f":{port}"
        path = quote(parts.path or "/", safe=_HTTP_KEPT)
        query = quote(parts.query, safe=_HTTP_KEPT + "?")
        canonical = f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "")
        return EndpointURL(scheme, canonical, path, host=host, port=port)
    if scheme == "s3":
        return _s3_url(text)
    if "#" in text:
        # a fragment means nothing to SFTP: silently dropped it named another path
        # (``.../tree/#hash.bin`` became the directory ``.../tree/``)
        raise InvalidURLError(
            f"malformed SFTP URL {redact(text)!r}: '#' must be percent-encoded "
            "(a name with '#' is written %23)"
        )
    return _sftp_url(text, parts.hostname, port, parts.username, parts.path, parts.query)


#: what an http(s) URL's path and query keep as written: RFC 3986's unreserved and
#: reserved characters and ``%`` (escapes already made); the rest (non-ASCII, and
#: ``"<>\\^`{|}``) is percent-encoded as UTF-8 (RFC 3987 section 3.1), as httpx
#: and browsers send it, so the stat (httpx) and the reads (http.client) ask for one URL
_HTTP_KEPT = "-._~:/@!$&'()*+,;=%"

#: characters no http(s) URL may hold (RFC 3986 section 2: not in a URI at all):
#: space, the C0 controls and DEL
_HTTP_BLANK = re.compile(r"[\x00-\x20\x7f]")


def _refuse_http_blanks(text: str) -> None:
    """Refuse an http(s) URL holding a space or a control character.

    RFC 3986 section 2 allows neither in a URI; curl refuses such a URL ("URL using
    bad/illegal format", exit 3) and ``http.client`` raises ``InvalidURL`` for it
    while httpx quietly sends ``%20``: one URL once meant two requests (the stat
    found the file, every read failed). Refused before anything starts, naming the
    character and its escape, so the user writes the URL they mean.

    Raises:
        InvalidURLError: naming the URL, the character's position and ``%XX``.
    """
    blank = _HTTP_BLANK.search(text)
    if blank is None:
        return
    char = blank.group(0)
    what = "a space" if char == " " else f"the control character {char!r}"
    raise InvalidURLError(
        f"malformed URL {redact(text)!r}: it contains {what} (at character "
        f"{blank.start() + 1}), which a URL cannot hold (RFC 3986); write it as "
        f"%{ord(char):02X}"
    )


#: a ``%`` that does not start a percent-escape, with what follows it (up to 2 chars)
_BROKEN_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2}).{0,2}", re.DOTALL)


def _decoded(value: str, text: str, what: str) -> str:
    """``value`` percent-decoded as UTF-8, strictly: a percent-escape whose bytes are
    not UTF-8 (``%FF``) is refused. ``urllib.parse.unquote``'s default replaces such
    bytes with U+FFFD, a real and different name, so ``file:///d/x%FF`` once replaced
    an existing ``/d/x\N{REPLACEMENT CHARACTER}``.

    A ``%`` not followed by two hex digits (``%ZZ``, ``%4``, a trailing ``%``) is
    refused too: ``unquote`` keeps it as written, so ``file:///d/pp%ZZ`` wrote the
    name ``pp%ZZ`` while ``pp%ff`` was refused; a literal ``%`` is written ``%25``.

    Raises:
        InvalidURLError: naming the URL ``text``, ``what`` was being decoded and the
            bad escape.
    """
    broken = _BROKEN_ESCAPE.search(value)
    if broken is not None:
        raise InvalidURLError(
            f"malformed URL {redact(text)!r}: {broken.group(0)!r} in its {what} is not a "
            "percent-escape (% and two hex digits); write a literal % as %25"
        )
    try:
        return unquote(value, errors="strict")
    except UnicodeDecodeError:
        bad = [m.group(0) for m in re.finditer(r"(?:%[0-9A-Fa-f]{2})+", value)]
        escapes = next((b for b in bad if not _utf8(b)), "")
        raise InvalidURLError(
            f"malformed URL {redact(text)!r}: the percent-escapes {escapes!r} in its {what} "
            "are not UTF-8; paths and keys are written as their UTF-8 bytes, each byte "
            "%XX (e.g. %C3%A9 for \N{LATIN SMALL LETTER E WITH ACUTE})"
        ) from None


def _utf8(escapes: str) -> bool:
    try:
        unquote(escapes, errors="strict")
    except UnicodeDecodeError:
        return False
    return True


def redact(url: str) -> str:
    """``url`` with every secret part replaced by ``REDACTED``, for display, logs and
    anything stored in Temporal (history, memo, search attributes, failures).

    For ``http``/``https`` URLs every query value is replaced (``?X-Amz-Signature=…``,
    ``?token=…``, ``?sig=…``: presigned URLs carry their credential in the query, and
    which parameter is secret cannot be known in general); a bare query item without
    ``=`` is replaced whole, and so is a fragment (``#access_token=…``: OAuth's
    implicit grant hands tokens there). For every scheme, user info holding a password
    (``user:pass@``) becomes ``REDACTED@``. An ``s3``, ``sftp`` or ``file`` URL has
    no fragment: a ``#`` there is part of the key or path the user typed (or refused
    as such: ``s3://b/q?hash#x``), never a secret, and is kept as typed (tester75 read
    ``q?hash#REDACTED`` in an error); unknown schemes keep the fragment's redaction.
    Parameter names, order and everything else are kept, so the text still says
    which object is meant. Text that is not a URL is returned unchanged.
    """
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.\-]*)://([^/?#]*)(.*)$", url, re.DOTALL)
    if not match:
        return url
    scheme, authority, rest = match.group(1).lower(), match.group(2), match.group(3)
    if "@" in authority:
        userinfo, _, hostport = authority.rpartition("@")
        if ":" in userinfo or scheme in SOURCE_ONLY_SCHEMES:
            authority = f"{REDACTED}@{hostport}"
    fragment = ""
    if "#" in rest and scheme not in _NO_FRAGMENT_SCHEMES:
        rest, _, fragment_text = rest.partition("#")
        fragment = f"#{REDACTED}" if fragment_text else "#"
    if scheme in SOURCE_ONLY_SCHEMES and "?" in rest:
        path, _, query = rest.partition("?")
        items = []
        for item in query.split("&"):
            if not item:
                items.append(item)
            elif "=" in item:
                items.append(item.split("=", 1)[0] + "=" + REDACTED)
            else:
                items.append(REDACTED)
        rest = f"{path}?{'&'.join(items)}"
    return f"{match.group(1)}://{authority}{rest}{fragment}"


#: schemes whose URLs have no fragment: a ``#`` is part of the key or path (S3), or
#: refused naming it (sftp, file), and is shown as typed by :func:`redact`
_NO_FRAGMENT_SCHEMES = ("s3", "sftp", "file")


# a URL inside free text ends at white space, a quote or a bracket (RFC 3986, appendix C)
_URL_IN_TEXT = re.compile(r"""[A-Za-z][A-Za-z0-9+.\-]*://[^\s'"<>`\\]+""")


def redact_text(text: str) -> str:
    """``text`` with :func:`redact` applied to every URL in it (error messages and log
    lines of drivers and HTTP libraries quote the URL they were given)."""
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda m: redact(m.group(0)), text)


def has_secret(url: str) -> bool:
    """Whether :func:`redact` changes ``url`` (it holds a query, user info or fragment
    that must not be stored or shown)."""
    return redact(url) != url


def _file_url(path: str) -> EndpointURL:
    path = os.path.normpath(resolve_dot_dot(path))
    if path.startswith("//"):
        path = "/" + path.lstrip("/")
    return EndpointURL("file", _file_canonical(path), path)


def resolve_dot_dot(path: str) -> str:
    """``path`` (absolute) with its ``..`` segments resolved as the kernel resolves
    them (POSIX pathname resolution, as ``cp`` and ``open`` see the path): the part up
    to the last ``..`` through ``os.path.realpath`` (a symbolic link before a ``..`` is
    followed first, so ``/src/link/../z``, ``link`` -> ``/elsewhere/d``, is
    ``/elsewhere/z``), the rest as it is; what does not exist is collapsed as text. A
    path without a ``..`` segment is returned as it is (its canonical form, and the
    transfer id derived from it, do not depend on the file system). Reads the local
    file system for a ``..``: canonical text has none, so parsing it in a workflow
    never does."""
    parts = path.split("/")
    if ".." not in parts:
        return path
    last = len(parts) - 1 - parts[::-1].index("..")
    head = "/".join(parts[: last + 1]) or "/"
    # the rest without its empty segments: ``..//w``'s tail is ``w``, not ``/w`` (which
    # os.path.join takes for an absolute path: the file system's root)
    rest = "/".join(part for part in parts[last + 1 :] if part)
    return os.path.join(os.path.realpath(head), rest)


def _file_canonical(path: str) -> str:
    return "file://" + quote(path, safe="/")


def _s3_canonical(bucket: str, key: str, params: dict[str, str]) -> str:
    """``s3://bucket/key[?profile=NAME]`` with the key written as is (S3 keys are
    opaque: ``%2B`` is the three characters ``%2B``); a key that text cannot hold that
    way (:func:`_key_needs_quoting`) goes percent-encoded in ``?key=``:
    ``s3://bucket/?key=a%3Fb[&profile=NAME]``. Either way one text per object."""
    profile = f"profile={quote(params['profile'])}" if params else ""
    if not _key_needs_quoting(key):
        return f"s3://{bucket}/{key}" + (f"?{profile}" if profile else "")
    return f"s3://{bucket}/?key={quote(key, safe='/')}" + (f"&{profile}" if profile else "")


def _key_needs_quoting(key: str) -> bool:
    """Whether the raw key cannot be written after ``s3://bucket/``: a ``?`` (it would
    start the query), a ``#`` (read as a URL's fragment by everything that shows or
    stores URLs, which hides it as a possible secret: ``s3://b/odd/#hash.bin``, a key
    ``cp -r`` writes, was refused as "carries a secret"), a tab, line break or NUL, or
    white space at its end (URLs with those are refused as typed text)."""
    return any(c in key for c in "?#\r\n\t\0") or key != key.rstrip()


#: characters RFC 3986 allows unencoded in user info besides the unreserved ones
#: (``:`` is left out: it would start a password)
_USERINFO_SAFE = "!$&'()*+,;="


def _sftp_canonical(host: str, port: int | None, user: str | None, path: str) -> str:
    """The canonical SFTP URL: the (decoded) ``user`` percent-encoded again where RFC
    3986 user info needs it (``us@er`` as ``us%40er``; ``r%6Fot`` and ``root`` are one
    user), the host lower-case, port 22 left out, the path percent-encoded."""
    login = quote(user, safe=_USERINFO_SAFE) if user else ""
    netloc = (f"{login}@" if user else "") + (f"[{host}]" if ":" in host else host)
    if port is not None and port != 22:
        netloc += f":{port}"
    return f"sftp://{netloc}{quote(path, safe='/')}"


def root_text(url: EndpointURL) -> str:
    """A dataset's canonical root: without a trailing '/' (``s3://b/run`` and
    ``s3://b/run/``, ``/data/x`` and ``/data/x/`` are one root), except a bucket or
    file-system root."""
    canonical = url.canonical
    inner = url.key if url.scheme == "s3" else url.path
    if canonical.endswith("/") and inner not in ("", "/"):
        return canonical.rstrip("/")
    return canonical


def file_source_problem(source: str, remedy: str) -> str | None:
    """Why a local ``source`` of one transfer cannot be copied, as seen from here, or
    None: it is a directory (``remedy``: what to do instead), or it is typed with a
    trailing ``/`` and is not a directory (``/data/x.bin/`` names a directory, POSIX
    pathname resolution). The one check of ``cp``, ``submit`` and ``schedule create``
    (:func:`staccato.cli.common.check_file_source`, exit 2) and of
    :meth:`staccato.schedules.Schedules.create`. A source that does not parse is
    None: the request says why, in its own words. Reads the local file system.
    """
    try:
        url = parse_url(source)
    except InvalidURLError:
        return None
    if url.scheme != "file":
        return None
    if os.path.isdir(url.path):
        return f"source {source!r} is a directory: {remedy}"
    if source.endswith("/") and os.path.lexists(url.path):
        return (
            f"source {source!r} is not a directory: a trailing / names a directory; "
            f"drop the / to copy the file {url.path}"
        )
    return None


def resolve_local_directory(url: EndpointURL, *, is_directory: bool = False) -> EndpointURL:
    """A ``file`` URL whose directory is named through a symbolic link, named by the
    directory's real path instead (``os.path.realpath``; the last component is kept as
    it is, unless ``is_directory``: then the URL names the directory itself, a dataset's
    root). Other URLs, and paths whose directory does not exist here, are returned as
    they are.

    The transfer id is derived from the destination's URL, so two spellings of one
    directory (``/data/link/x`` and ``/data/real/x``) would be two locks on one file.
    Clients resolve what they can see (the command runs on the machine whose paths it
    was given, as relative paths already assume); the worker refuses a destination
    whose directory is still a link (``FileDriver.check_destination``). Reads the
    local file system: never call it inside a workflow.
    """
    if url.scheme != "file":
        return url
    if is_directory and os.path.isdir(url.path):
        real = os.path.realpath(url.path)
        if real == url.path.rstrip("/"):
            return url
        return _file_url(real + ("/" if url.path.endswith("/") else ""))
    parent, name = os.path.split(url.path)
    real = os.path.realpath(parent)
    if real == parent or not os.path.isdir(real):
        return url
    return _file_url(os.path.join(real, name))


def directory_prefix(root: EndpointURL) -> str:
    """The path (file, sftp) or key prefix (s3) that names the objects under the
    directory or prefix ``root``, ending in ``/``: ``s3://b/run`` and ``s3://b/run/``
    both hold ``run/x``; ``s3://b/`` (a whole bucket) holds every key, prefix ``""``."""
    if root.scheme == "s3":
        return root.key if not root.key or root.key.endswith("/") else root.key + "/"
    return root.path if root.path.endswith("/") else root.path + "/"


def child_url(root: EndpointURL, name: str) -> EndpointURL:
    """The URL of the object ``name`` (a relative name, ``/``-separated) under the
    directory or prefix ``root``, built from its parts, never by parsing text: the name
    is taken byte for byte (``%2B`` stays the three characters ``%2B``; an S3 key keeps
    ``a//b`` and ``x/./y``).

    The canonical text of the result parses back to the same object (workflows carry
    URLs as canonical text); a name that text cannot say is refused.

    Raises:
        InvalidURLError: ``root`` is an http(s) URL, or the result's canonical text would
            name another object (file and sftp paths are normalised when parsed, so
            ``.``/``..`` segments and ``//`` are refused; an S3 key with ``?``, a tab or
            line break, or ending in white space cannot be written in an ``s3://`` URL;
            an S3 key over 1,024 bytes).
    """
    path = directory_prefix(root) + name
    if root.scheme == "file":
        url = EndpointURL("file", _file_canonical(path), path)
        if not path.startswith("//") and os.path.normpath(path) == path:
            # what parsing the canonical text gives back (quote() leaves no '?', '#',
            # white space or control character in it; parsing normalises the path
            # and folds a leading '//'), without the ~0.1 ms parse: a dataset builds
            # two URLs per file when listed and again when copied
            return url
    elif root.scheme == "s3":
        url = EndpointURL(
            "s3",
            _s3_canonical(root.bucket, path, root.params),
            path,
            host=root.host,
            params=dict(root.params),
        )
        if len(path) <= S3_MAX_KEY_BYTES and _PLAIN_KEY.fullmatch(path):
            # what parsing the canonical text gives back (a key of these characters is
            # written as is, and no parse step changes or refuses it), without the
            # ~50 us parse of a new text per file
            return url
    elif root.scheme == "sftp":
        url = EndpointURL(
            "sftp",
            _sftp_canonical(root.host, root.port, root.user, path),
            path,
            host=root.host,
            port=root.port,
            user=root.user,
        )
    else:
        raise InvalidURLError(
            f"{root} names a single {root.scheme} object, not a directory: nothing can be "
            "named under it"
        )
    try:
        again = parse_url(url.canonical)
    except InvalidURLError as err:
        raise InvalidURLError(
            f"{name!r} under {root} cannot be written as a {root.scheme} URL: {err}"
        ) from None
    if again != url:
        raise InvalidURLError(
            f"{name!r} under {root} cannot be written as a {root.scheme} URL: its text "
            f"{again.canonical!r} names another object"
        )
    return url


#: longest S3 object key, bytes of UTF-8 (S3 API limit, ``KeyTooLongError``)
S3_MAX_KEY_BYTES = 1024
#: keys :func:`child_url` builds without parsing its text back: ASCII letters, digits
#: and ``/._-~`` (one byte each, never quoted, nothing a URL parser reads specially)
_PLAIN_KEY = re.compile(r"[A-Za-z0-9/._~-]*")


def _s3_url(text: str) -> EndpointURL:
    rest = text[len("s3://") :]
    params: dict[str, str] = {}
    quoted_key: str | None = None
    if "?" in rest:
        rest, query = rest.split("?", 1)
        for item in query.split("&"):
            name, _, value = item.partition("=")
            if name == "key" and quoted_key is None:
                quoted_key = _decoded(value, text, "key")
                continue
            if name != "profile" or not value or name in params:
                raise InvalidURLError(
                    f"malformed S3 URL {redact(text)!r}: the query parameters understood are "
                    "?profile=NAME and ?key=PERCENT-ENCODED-KEY"
                )
            params[name] = _decoded(value, text, "profile")
    bucket, _, key = rest.partition("/")
    if quoted_key is not None:
        if key:
            raise InvalidURLError(
                f"malformed S3 URL {redact(text)!r}: give the key after the bucket or in "
                "?key=, not both"
            )
        key = quoted_key
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise InvalidURLError(
            f"invalid S3 bucket name {bucket!r} in {redact(text)!r}: 3-63 characters of lowercase "
            "letters, digits, '.' and '-', starting and ending with a letter or digit"
        )
    if len(key.encode("utf-8")) > S3_MAX_KEY_BYTES:
        raise InvalidURLError(
            f"S3 key in {text[:80]!r}... is {len(key.encode('utf-8'))} bytes long; S3 keys are "
            f"at most {S3_MAX_KEY_BYTES} bytes of UTF-8 (S3 API limit): use a shorter key"
        )
    return EndpointURL("s3", _s3_canonical(bucket, key, params), key, host=bucket, params=params)


def _sftp_url(
    text: str, host: str | None, port: int | None, user: str | None, path: str, query: str
) -> EndpointURL:
    if not host:
        raise InvalidURLError(
            f"malformed SFTP URL {redact(text)!r}: expected sftp://[user@]host[:port]/path"
        )
    if query:
        raise InvalidURLError(
            f"malformed SFTP URL {redact(text)!r}: query parameters are not understood"
        )
    if user == "":
        # sftp://@host/p: an empty user name (a typo); the login user comes from ssh's
        # config or the worker's user only when the URL names none
        raise InvalidURLError(
            f"malformed SFTP URL {redact(text)!r}: the user name before '@' is empty; "
            "write sftp://host/path to log in as the configured user"
        )
    if user is not None:
        # RFC 3986 user info is percent-encoded: sftp://us%40er@host logs in as us@er
        user = _decoded(user, text, "user name")
    path = _decoded(path, text, "path")
    if not path.startswith("/"):
        raise InvalidURLError(
            f"malformed SFTP URL {redact(text)!r}: expected an absolute path after the host"
        )
    path = _sftp_path(path, text)
    host = host.lower()
    canonical = _sftp_canonical(host, port, user, path)
    return EndpointURL("sftp", canonical, path, host=host, port=port, user=user)


def _sftp_path(path: str, text: str) -> str:
    """``path`` (absolute) with its empty and ``.`` segments folded, as the server's
    POSIX pathname resolution folds them (``/a//b``, ``/a/./b`` and ``/a/b`` are one
    file, so one canonical URL and one destination lock); a trailing ``/`` is kept (a
    directory). A ``..`` segment is refused: the server resolves it through symbolic
    links, which the URL cannot see, so the text alone cannot say which file it names.

    Raises:
        InvalidURLError: the path has a ``..`` segment (``text``, redacted, is named).
    """
    segments = path.split("/")
    if ".." in segments:
        raise InvalidURLError(
            f"malformed SFTP URL {redact(text)!r}: a '..' segment in the path; write the "
            "path without it (the server resolves '..' through symbolic links, so the URL "
            "alone cannot say which file it names)"
        )
    kept = [segment for segment in segments if segment not in ("", ".")]
    folded = "/" + "/".join(kept)
    if kept and segments[-1] in ("", "."):
        folded += "/"
    return folded
