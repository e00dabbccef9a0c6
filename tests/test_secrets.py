"""Secrets in URLs: a presigned-style HTTP source (token in the query) is copied, and
its token appears nowhere Temporal keeps or shows anything (histories, describe,
list, memo, search attributes), nor in the worker's log or the CLI's output; the
same with the payload codec on, whose codec server then decodes a history payload.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets as pysecrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from staccato import secrets
from staccato.client import StaccatoClient
from staccato.errors import InvalidURLError
from staccato.urls import redact, redact_text
from tests.helpers import (
    REPO,
    MiB,
    WorkerProcess,
    run_cli,
    sha256_file,
    wait_for_status,
    write_random,
)
from tests.servers.nginx import nginx_fixture
from tests.servers.temporal_server import free_port, temporal_binary

#: a token that only a redirect target carries (object stores and release-download
#: services redirect to presigned URLs)
REDIRECT_TOKEN = "rdr" + pysecrets.token_hex(12)
nginx_redirecting = nginx_fixture(
    "http_root",
    scope="module",
    extra_server_config=(
        "location = /signed-redirect { return 302 "
        f"/redirect-target.bin?X-Amz-Signature={REDIRECT_TOKEN}&X-Amz-Expires=300; }}"
        " location = /unavailable { return 503; }"
    ),
)


def _new_tokens() -> dict[str, str]:
    return {
        name: name[:3] + pysecrets.token_hex(12) for name in ("X-Amz-Signature", "token", "sig")
    }


def _presigned(base: str, tokens: dict[str, str]) -> str:
    return base + "?" + "&".join(f"{k}={v}" for k, v in tokens.items())


def _strings(value: Any) -> Iterator[str]:
    """Every string in a JSON document, and the decoded text of every base64 string
    (payload data and metadata are base64 in Temporal's JSON)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield value
        try:
            yield base64.b64decode(value, validate=True).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            pass


def _leaks(text: str, tokens: list[str]) -> list[str]:
    """The tokens found in ``text`` (a JSON document or plain text)."""
    found = [t for t in tokens if t in text]
    try:
        document = json.loads(text)
    except ValueError:
        documents = []
        for line in text.splitlines():
            try:
                documents.append(json.loads(line))
            except ValueError:
                continue
        document = documents
    for item in _strings(document):
        found += [t for t in tokens if t in item and t not in found]
    return found


def _temporal(address: str, *args: str) -> str:
    done = subprocess.run(
        [temporal_binary(), *args, "--address", address, "--namespace", "default"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def _everything_temporal_keeps(
    address: str, client: StaccatoClient, workflow_ids: list[str]
) -> dict[str, str]:
    """Every history, describe and list output of ``workflow_ids``, by where it came from."""
    from google.protobuf import json_format

    dumps: dict[str, str] = {}
    for wid in workflow_ids:
        dumps[f"show {wid}"] = _temporal(address, "workflow", "show", "-w", wid, "-o", "json")
        dumps[f"describe {wid}"] = _temporal(
            address, "workflow", "describe", "-w", wid, "-o", "json"
        )
        handle = client.temporal.get_workflow_handle(wid)
        dumps[f"fetch_history {wid}"] = (await handle.fetch_history()).to_json()
        described = await handle.describe()
        dumps[f"describe raw {wid}"] = json_format.MessageToJson(described.raw_description)
        dumps[f"memo {wid}"] = json.dumps(await described.memo())
        dumps[f"search attributes {wid}"] = repr(described.typed_search_attributes)
        dumps[f"summary {wid}"] = repr(await described.static_summary())
    query = " OR ".join(f"WorkflowId = '{wid}'" for wid in workflow_ids)
    dumps["list"] = _temporal(address, "workflow", "list", "--query", query, "-o", "json")
    async for execution in client.temporal.list_workflows(query):
        dumps[f"list memo {execution.id}"] = json.dumps(await execution.memo())
        dumps[f"list search attributes {execution.id}"] = repr(execution.typed_search_attributes)
    return dumps


def _assert_nowhere(dumps: dict[str, str], tokens: list[str]) -> None:
    leaks = {where: found for where, text in dumps.items() if (found := _leaks(text, tokens))}
    assert not leaks, f"tokens found in: {leaks}"


@pytest.fixture
def secret_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    key = secrets.new_key_text()
    monkeypatch.setenv("STACCATO_SECRET_KEY", key)
    monkeypatch.setenv("STACCATO_HOME", str(tmp_path / "home"))
    return key


async def _copy_and_dump(
    temporal_server: Any,
    nginx_ranges: Any,
    nginx_redirecting: Any,
    http_root: Path,
    data_dir: Path,
    tmp_path: Path,
    env: dict[str, str],
) -> tuple[dict[str, str], list[str], WorkerProcess]:
    """Copy a presigned-style URL, a redirect to one, and fail on a missing one; then
    dump everything. Returns the dumps, the tokens and the (stopped) worker."""
    tokens = _new_tokens()
    name = f"presigned-{pysecrets.token_hex(4)}.bin"
    expected = write_random(http_root / name, 3 * MiB + 17, seed=5)
    write_random(http_root / "redirect-target.bin", 1 * MiB, seed=6)
    worker = WorkerProcess(temporal_server.address, processes=1, env=env, log_dir=tmp_path)
    worker.start()
    outputs: dict[str, str] = {}
    try:
        source = _presigned(nginx_ranges.url(name), tokens)
        destination = data_dir / "out.bin"
        cli = dict(address=temporal_server.address, task_queue=worker.task_queue, env=env)
        done = run_cli("cp", "--chunk-size", "1MiB", source, str(destination), **cli)
        outputs["cp"] = done.stdout + done.stderr
        assert done.returncode == 0, done.stderr
        assert sha256_file(destination) == expected

        redirected = data_dir / "redirected.bin"
        done = run_cli(
            "cp", nginx_redirecting.url("signed-redirect"), str(redirected), "--streams", "2", **cli
        )
        outputs["cp redirect"] = done.stdout + done.stderr
        assert done.returncode == 0, done.stderr
        assert redirected.stat().st_size == 1 * MiB

        missing = _presigned(nginx_ranges.url("no-such-object.bin"), tokens)
        done = run_cli("cp", missing, str(data_dir / "never.bin"), **cli)
        outputs["cp missing"] = done.stdout + done.stderr
        assert done.returncode == 1, done.stderr
        assert "no-such-object.bin" in done.stderr and "REDACTED" in done.stderr

        # a source that keeps failing: its retried stat's failure is kept in the
        # pending activity (describe, status) while the transfer runs
        retried = data_dir / "retried.bin"
        done = run_cli(
            "submit", _presigned(nginx_redirecting.url("unavailable"), tokens), str(retried), **cli
        )
        assert done.returncode == 0, done.stderr
        client = await StaccatoClient.connect(
            target_host=temporal_server.address, namespace="default"
        )
        retrying = await wait_for_status(
            client, str(retried), lambda s: s.last_retry_error is not None, timeout_s=30
        )
        assert "HTTP 503" in (retrying.last_retry_error or ""), retrying
        assert "REDACTED" in (retrying.last_retry_error or ""), retrying
        retried_id = retrying.id
        outputs["status retrying"] = _temporal(
            temporal_server.address, "workflow", "describe", "-w", retried_id, "-o", "json"
        )
        outputs["status retrying --json"] = run_cli("status", "--json", str(retried), **cli).stdout

        for args in (
            ("status", "--json", str(destination)),
            ("status", "--json", str(data_dir / "never.bin")),
            ("list", "--json"),
            ("list",),
        ):
            done = run_cli(*args, **cli)
            assert done.returncode == 0, done.stderr
            outputs[" ".join(args)] = done.stdout + done.stderr
        assert "REDACTED" in outputs["status --json " + str(destination)]

        await client.cancel(retried_id)
        ids = [
            (await client.status(str(path))).id
            for path in (destination, redirected, data_dir / "never.bin")
        ] + [retried_id]  # the first is the presigned copy's
        dumps = await _everything_temporal_keeps(temporal_server.address, client, ids)
    finally:
        worker.stop()
    dumps.update({f"cli {k}": v for k, v in outputs.items()})
    dumps["worker log"] = worker.log_path.read_text(errors="replace")
    return dumps, [*tokens.values(), REDIRECT_TOKEN], worker


async def test_presigned_url_token_appears_nowhere(
    temporal_server, nginx_ranges, nginx_redirecting, http_root, data_dir, tmp_path, secret_key
):
    """The tokens of a presigned-style URL (and of a redirect target) reach neither
    Temporal (histories, describe, list, memo, search attributes, summary, result,
    failure) nor the worker's log nor the CLI's output, and the copies are exact."""
    env = {"STACCATO_SECRET_KEY": secret_key, "STACCATO_HOME": str(tmp_path / "home")}
    dumps, tokens, _ = await _copy_and_dump(
        temporal_server, nginx_ranges, nginx_redirecting, http_root, data_dir, tmp_path, env
    )
    assert any("REDACTED" in text for text in dumps.values())
    _assert_nowhere(dumps, tokens)


async def test_presigned_url_with_codec_and_codec_server(
    temporal_server, nginx_ranges, nginx_redirecting, http_root, data_dir, tmp_path, secret_key
):
    """With the payload codec on: payloads in history are ``binary/encrypted`` with a
    key id, no token appears anywhere, and ``staccato codec-server`` decodes the
    workflow input (CORS for the UI's origin) to the redacted source."""
    codec_key = secrets.new_key_text()
    env = {
        "STACCATO_SECRET_KEY": secret_key,
        "STACCATO_HOME": str(tmp_path / "home"),
        "STACCATO_CODEC_KEY": codec_key,
    }
    os.environ["STACCATO_CODEC_KEY"] = codec_key  # this process's client too
    try:
        dumps, tokens, _ = await _copy_and_dump(
            temporal_server, nginx_ranges, nginx_redirecting, http_root, data_dir, tmp_path, env
        )
    finally:
        del os.environ["STACCATO_CODEC_KEY"]
    _assert_nowhere(dumps, tokens)
    history = json.loads(next(v for k, v in dumps.items() if k.startswith("fetch_history")))
    started = history["events"][0]["workflowExecutionStartedEventAttributes"]
    payload = started["input"]["payloads"][0]
    assert base64.b64decode(payload["metadata"]["encoding"]) == b"binary/encrypted"
    assert len(base64.b64decode(payload["metadata"]["encryption-key-id"])) == 8
    assert b"presigned-" not in base64.b64decode(payload["data"])  # the input is unreadable

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "staccato.cli", "codec-server", "--port", str(port)],
        env={**os.environ, "STACCATO_CODEC_KEY": codec_key},
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}/default/decode"
        body = json.dumps({"payloads": [payload]}).encode()
        deadline = time.monotonic() + 20
        while True:
            try:
                request = urllib.request.Request(
                    url,
                    data=body,
                    method="POST",
                    headers={"Content-Type": "application/json", "X-Namespace": "default"},
                )
                with urllib.request.urlopen(request, timeout=5) as response:
                    decoded = json.loads(response.read())
                break
            except OSError:
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                assert time.monotonic() < deadline, "codec server did not answer in 20 s"
                time.sleep(0.2)
        (plain,) = decoded["payloads"]
        assert base64.b64decode(plain["metadata"]["encoding"]) == b"json/plain"
        request_json = json.loads(base64.b64decode(plain["data"]))
        assert "presigned-" in request_json["source"]
        assert "X-Amz-Signature=REDACTED" in request_json["source"]
        assert request_json["source_secret"].startswith("s1.")
        assert not _leaks(json.dumps(decoded), tokens)
        preflight = urllib.request.Request(
            url,
            method="OPTIONS",
            headers={
                "Origin": "http://127.0.0.1:8233",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,x-namespace",
            },
        )
        with urllib.request.urlopen(preflight, timeout=5) as response:
            assert response.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:8233"
            assert "X-Namespace" in response.headers["Access-Control-Allow-Headers"]
        stranger = urllib.request.Request(
            url, method="OPTIONS", headers={"Origin": "http://evil.example"}
        )
        with urllib.request.urlopen(stranger, timeout=5) as response:
            assert response.headers.get("Access-Control-Allow-Origin") is None
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(10)


def test_query_refused_without_a_key(temporal_server, nginx_ranges, tmp_path):
    """Without a key the CLI refuses a URL with a query (usage error naming the
    setting) and prints the URL only redacted."""
    token = "tok" + pysecrets.token_hex(12)
    env = {
        "STACCATO_HOME": str(tmp_path / "empty-home"),
        "STACCATO_SECRET_KEY": "",
        "STACCATO_SECRET_KEY_FILE": "",
    }
    done = run_cli(
        "submit",
        nginx_ranges.url(f"x.bin?token={token}"),
        str(tmp_path / "x.bin"),
        address=temporal_server.address,
        env=env,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "STACCATO_SECRET_KEY" in done.stderr
    assert token not in done.stdout + done.stderr


def test_redact() -> None:
    assert (
        redact("https://h.example/a/b?X-Amz-Signature=abc&X-Amz-Date=1&flag")
        == "https://h.example/a/b?X-Amz-Signature=REDACTED&X-Amz-Date=REDACTED&REDACTED"
    )
    assert redact("http://h/p") == "http://h/p"
    assert redact("http://user:pw@proxy:3128/") == "http://REDACTED@proxy:3128/"
    assert redact("s3://bucket/key?profile=prod") == "s3://bucket/key?profile=prod"
    assert redact("sftp://alice@host/p") == "sftp://alice@host/p"
    assert redact("https://h/p#access_token=x") == "https://h/p#REDACTED"
    # no fragment in an S3, SFTP or file URL: a '#' is the key's or path's, shown as
    # typed (tester75 read 'q?hash#REDACTED'); a password there still is not
    assert redact("s3://demo/odd/q?hash#x") == "s3://demo/odd/q?hash#x"
    assert redact("sftp://u:pw@h/a#b") == "sftp://REDACTED@h/a#b"
    assert redact("file:///d/a#b") == "file:///d/a#b"
    assert (
        redact_text("Client error '403' for url 'https://h/x?sig=abc' via http://u:p@proxy:1")
        == "Client error '403' for url 'https://h/x?sig=REDACTED' via http://REDACTED@proxy:1"
    )


def test_sealed_query_is_bound_to_its_url_and_key(secret_key, monkeypatch) -> None:
    """A sealed query opens only for the URL it was sealed for, with its key; a worker
    with another key says which key it needs. Sealing is deterministic, so an
    identical re-submission keeps its request hash."""
    url = "https://h.example/a?X-Amz-Signature=abcdef0123&X-Amz-Date=20260101"
    request = StaccatoClient.make_request(url, "/tmp/dst.bin")
    assert request.source == "https://h.example/a?X-Amz-Signature=REDACTED&X-Amz-Date=REDACTED"
    assert request.source_secret and "abcdef0123" not in request.source_secret
    assert StaccatoClient.make_request(url, "/tmp/dst.bin").request_hash() == request.request_hash()
    assert secrets.source_url(request.source, request.source_secret).canonical == url
    other = request.source.replace("h.example", "evil.example")
    with pytest.raises(secrets.SecretKeyError, match="sealed for another URL"):
        secrets.source_url(other, request.source_secret)
    with pytest.raises(InvalidURLError, match="no sealed query"):
        secrets.source_url(request.source, None)
    with pytest.raises(InvalidURLError, match="in clear") as refused:
        secrets.source_url(url, None)  # a raw Temporal client's unsealed query
    assert "abcdef0123" not in str(refused.value)
    assert secrets.source_url("https://h.example/a", None).canonical == "https://h.example/a"
    monkeypatch.setenv("STACCATO_SECRET_KEY", secrets.new_key_text())
    key_id = request.source_secret.split(".")[1]
    with pytest.raises(secrets.SecretKeyError, match=f"sealed with key {key_id}"):
        secrets.source_url(request.source, request.source_secret)
    assert "abcdef0123" not in secrets.scrub("HTTP 403 for signature abcdef0123")


def test_log_lines_are_scrubbed(secret_key) -> None:
    """A log line (message, arguments and traceback) of any library passes through the
    scrubber before it is written."""
    import io
    import logging

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(secrets.ScrubFilter())
    logger = logging.getLogger("test.scrub")
    logger.addHandler(handler)
    try:
        try:
            raise RuntimeError("GET https://h/x?X-Amz-Signature=sigvalue99 failed")
        except RuntimeError:
            logger.error("reading %s", "https://h/x?token=tokvalue99", exc_info=True)
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "sigvalue99" not in text and "tokvalue99" not in text
    assert "token=REDACTED" in text and "X-Amz-Signature=REDACTED" in text
