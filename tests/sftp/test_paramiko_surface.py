"""Pins the private paramiko names that :mod:`staccato.endpoints.sftp.protocol` relies on
(the only module that uses them), so that a paramiko upgrade that renames, re-signs or
re-implements one of them fails here, loudly, instead of a transfer hanging or reading
answers meant for another request.

What is pinned (paramiko 3.x-5.x):

* the ``SFTPClient`` / ``BaseSFTP`` methods ``StaccatoSFTP`` overrides, with their
  signatures, and that ``SFTPClient.__init__`` still negotiates through
  ``_send_version`` (so the override runs);
* the methods and members it calls or changes: ``_async_request`` (still records the
  receiver in ``_expecting`` under ``request_number`` and increments it, as
  ``send_reads`` / ``send_write`` do by hand), ``_request``, ``_send_packet``,
  ``_convert_status``, ``_lock``, ``_expecting``, ``request_number``;
* the receivers' ``_async_response(t, msg, num)`` (``SFTPFile``'s, which the
  response router calls for paramiko's own file objects);
* ``SFTPAttributes._from_msg``;
* ``Transport.stop_thread`` reading ``sock._closed`` (``BufferedSocket`` forwards it);
* ``Channel._wait_for_send_window``'s data per packet (``out_max_packet_size - 64``),
  the size of each fenced send.

A live check then opens a real connection to the test sshd and sees the members on the
instance.
"""

from __future__ import annotations

import ast
import inspect
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paramiko
import pytest
from paramiko.sftp import BaseSFTP
from paramiko.sftp_attr import SFTPAttributes
from paramiko.sftp_client import SFTPClient
from paramiko.sftp_file import SFTPFile

from staccato.endpoints.sftp import protocol
from staccato.endpoints.sftp.pool import POOL
from staccato.endpoints.sftp.protocol import BufferedSocket, Responses, StaccatoSFTP
from staccato.endpoints.sftp.ssh import resolve
from staccato.urls import parse_url

P = inspect.Parameter

# name -> (owner, parameters as (name, kind, default)) of paramiko's version
PRIVATE_METHODS: dict[str, tuple[type, list[tuple[str, Any, Any]]]] = {
    # overridden by StaccatoSFTP
    "_read_response": (SFTPClient, [("self", P.POSITIONAL_OR_KEYWORD, P.empty),
                                    ("waitfor", P.POSITIONAL_OR_KEYWORD, None)]),
    "_read_packet": (BaseSFTP, [("self", P.POSITIONAL_OR_KEYWORD, P.empty)]),
    "_send_version": (BaseSFTP, [("self", P.POSITIONAL_OR_KEYWORD, P.empty)]),
    "_write_all": (BaseSFTP, [("self", P.POSITIONAL_OR_KEYWORD, P.empty),
                              ("out", P.POSITIONAL_OR_KEYWORD, P.empty)]),
    # called by StaccatoSFTP
    "_async_request": (SFTPClient, [("self", P.POSITIONAL_OR_KEYWORD, P.empty),
                                    ("fileobj", P.POSITIONAL_OR_KEYWORD, P.empty),
                                    ("t", P.POSITIONAL_OR_KEYWORD, P.empty),
                                    ("args", P.VAR_POSITIONAL, P.empty)]),
    "_request": (SFTPClient, [("self", P.POSITIONAL_OR_KEYWORD, P.empty),
                              ("t", P.POSITIONAL_OR_KEYWORD, P.empty),
                              ("args", P.VAR_POSITIONAL, P.empty)]),
    "_send_packet": (BaseSFTP, [("self", P.POSITIONAL_OR_KEYWORD, P.empty),
                                ("t", P.POSITIONAL_OR_KEYWORD, P.empty),
                                ("packet", P.POSITIONAL_OR_KEYWORD, P.empty)]),
    "_convert_status": (SFTPClient, [("self", P.POSITIONAL_OR_KEYWORD, P.empty),
                                     ("msg", P.POSITIONAL_OR_KEYWORD, P.empty)]),
}  # fmt: skip
OVERRIDDEN = ("_read_response", "_read_packet", "_send_version", "_write_all")


def _shape(fn: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize("name", sorted(PRIVATE_METHODS))
def test_private_method_signature(name: str) -> None:
    """Each private method protocol.py overrides or calls exists in paramiko with the
    signature it was written against."""
    owner, expected = PRIVATE_METHODS[name]
    method = getattr(SFTPClient, name, None)
    assert method is not None, f"paramiko's SFTPClient has no {name} any more"
    assert _shape(method) == expected, f"paramiko changed {owner.__name__}.{name}"


@pytest.mark.parametrize("name", OVERRIDDEN)
def test_overrides_keep_paramikos_signature(name: str) -> None:
    """StaccatoSFTP's overrides accept what paramiko passes them."""
    ours = getattr(StaccatoSFTP, name)
    assert ours is not getattr(SFTPClient, name), f"StaccatoSFTP no longer overrides {name}"
    assert [(n, k) for n, k, _ in _shape(ours)] == [(n, k) for n, k, _ in PRIVATE_METHODS[name][1]]


def test_init_negotiates_through_send_version() -> None:
    """``SFTPClient.__init__`` sets the members the pipelines use and calls
    ``_send_version`` (where StaccatoSFTP learns the server's extensions)."""
    source = inspect.getsource(SFTPClient.__init__)
    assert "self._send_version()" in source
    assert "self.request_number = 1" in source
    assert "self._lock = threading.Lock()" in source
    assert "self._expecting = " in source


def test_async_request_bookkeeping() -> None:
    """``send_reads`` and ``send_write`` number and register requests the way
    ``_async_request`` does; if paramiko changes that bookkeeping, they must follow."""
    source = inspect.getsource(SFTPClient._async_request)
    assert "self._lock.acquire()" in source
    assert "num = self.request_number" in source
    assert "self._expecting[num] = fileobj" in source
    assert "self.request_number += 1" in source
    assert "self._send_packet(t, msg)" in source


def test_read_response_routes_to_async_response() -> None:
    """paramiko's own ``_read_response`` (replaced by ours) routes answers to
    ``receiver._async_response(t, msg, num)``; its file objects still take that call."""
    assert "_async_response(t, msg, num)" in inspect.getsource(SFTPClient._read_response)
    assert _shape(SFTPFile._async_response) == [
        ("self", P.POSITIONAL_OR_KEYWORD, P.empty),
        ("t", P.POSITIONAL_OR_KEYWORD, P.empty),
        ("msg", P.POSITIONAL_OR_KEYWORD, P.empty),
        ("num", P.POSITIONAL_OR_KEYWORD, P.empty),
    ]
    assert _shape(Responses._async_response) == _shape(SFTPFile._async_response)


def test_attributes_from_msg() -> None:
    assert _shape(SFTPAttributes._from_msg) == [
        ("msg", P.POSITIONAL_OR_KEYWORD, P.empty),
        ("filename", P.POSITIONAL_OR_KEYWORD, None),
        ("longname", P.POSITIONAL_OR_KEYWORD, None),
    ]


def test_transport_reads_sock_closed() -> None:
    """``Transport.stop_thread`` reads ``sock._closed``; ``BufferedSocket`` forwards it."""
    assert "self.sock._closed" in inspect.getsource(paramiko.Transport.stop_thread)
    assert isinstance(inspect.getattr_static(BufferedSocket, "_closed"), property)


def test_channel_packet_data_rule() -> None:
    """``Channel._wait_for_send_window`` puts at most the channel's maximum packet size
    less 64 bytes of data in one packet: ``StaccatoSFTP._packet_data_bytes`` slices
    fenced writes by that rule (slices of another size cost a second packet each)."""
    source = inspect.getsource(paramiko.Channel._wait_for_send_window)
    assert f"self.out_max_packet_size - {protocol.PACKET_HEADROOM_BYTES}" in source
    assert "size = self._wait_for_send_window(size)" in inspect.getsource(paramiko.Channel._send)


def test_only_protocol_uses_private_names() -> None:
    """No other module of the package names one of these private members."""
    names = [*PRIVATE_METHODS, "_expecting", "request_number", "_from_msg", "_closed"]
    package = Path(protocol.__file__).parent
    for path in sorted(package.glob("*.py")):
        if path.name == "protocol.py":
            continue
        text = path.read_text()
        used = [n for n in names if re.search(rf"\.{n}\b", text)]
        assert not used, f"{path.name} uses paramiko's private {used}: move it to protocol.py"


def test_live_connection_has_the_members(driver_env: Path, sftp_url, data_dir: Path) -> None:
    """On a real connection to the test sshd: the members exist with the types the
    pipelines rely on, and a request made through them is answered."""
    target = resolve(parse_url(sftp_url(data_dir / "x")))
    with POOL.lease(target) as connection:
        sftp = connection.sftp
        assert isinstance(sftp.request_number, int)
        assert isinstance(sftp._lock, type(threading.Lock()))
        receiver = Responses()
        sftp._expecting[-1] = receiver  # item assignment, as send_reads does
        del sftp._expecting[-1]
        assert sftp.extensions, "no extensions parsed by the _send_version override"
        assert sftp.stat(str(data_dir)).st_mode  # paramiko's own request path still works


def _sftp_attributes_used(tree: ast.AST) -> set[str]:
    """Attributes read from a StaccatoSFTP outside protocol.py: ``sftp.X``,
    ``self._sftp.X`` and ``connection.sftp.X`` / ``self._connection.sftp.X``."""
    used: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        value = node.value
        if (isinstance(value, ast.Name) and value.id == "sftp") or (
            isinstance(value, ast.Attribute) and value.attr in ("_sftp", "sftp")
        ):
            used.add(node.attr)
    return used


def test_package_uses_only_existing_sftp_members() -> None:
    """Every member the other modules use on a StaccatoSFTP exists on it (paramiko's
    SFTPClient is untyped, so mypy cannot see a missing one)."""
    package = Path(protocol.__file__).parent
    instance_members = {"sock", *StaccatoSFTP.__annotations__}
    for path in sorted(package.glob("*.py")):
        if path.name == "protocol.py":
            continue
        used = _sftp_attributes_used(ast.parse(path.read_text()))
        unknown = sorted(
            name
            for name in used
            if name not in instance_members and not hasattr(StaccatoSFTP, name)
        )
        assert not unknown, f"{path.name} uses StaccatoSFTP members that do not exist: {unknown}"
