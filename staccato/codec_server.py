"""``staccato codec-server``: the HTTP endpoints the Temporal UI and CLI call to show
payloads that :class:`staccato.codec.EncryptionCodec` encrypted.

Protocol (Temporal's remote codec protocol): ``POST …/encode`` and ``POST …/decode``
(any prefix, e.g. ``/{namespace}/decode``) with a JSON body
``{"payloads": [{"metadata": {name: base64}, "data": base64}, …]}`` (the
``temporal.api.common.v1.Payloads`` message in protobuf's JSON mapping), answered
with the same shape. Browsers send a CORS preflight (``OPTIONS``) first: it is
answered for the configured UI origins only.

Whoever can reach this server can decrypt what it decodes: bind it to loopback (the
default) or put it behind the same authentication as the UI.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from staccato.codec import EncryptionCodec
from staccato.secrets import SecretKeyError

log = logging.getLogger("staccato.codec_server")

MAX_BODY_BYTES = 8 * 1024 * 1024  # a history page of payloads; Temporal's own cap is 4 MiB/message
DEFAULT_PORT = 8081


def make_server(
    codec: EncryptionCodec, host: str, port: int, origins: Sequence[str]
) -> ThreadingHTTPServer:
    """An HTTP server (not yet serving) for ``codec`` on ``host:port`` that answers CORS
    requests from ``origins`` (e.g. ``http://127.0.0.1:8233``)."""
    allowed = {origin.rstrip("/") for origin in origins}

    class Handler(BaseHTTPRequestHandler):
        server_version = "staccato-codec"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            log.info("%s %s", self.address_string(), format % args)

        def _cors(self) -> None:
            origin = self.headers.get("Origin")
            if origin and origin.rstrip("/") in allowed:
                self.send_header("Access-Control-Allow-Origin", origin)
                self.send_header("Access-Control-Allow-Credentials", "true")
                self.send_header("Access-Control-Allow-Methods", "POST, OPTIONS")
                self.send_header(
                    "Access-Control-Allow-Headers", "Content-Type, X-Namespace, Authorization"
                )
                self.send_header("Vary", "Origin")

        def _reply(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self._cors()
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: HTTPStatus, message: str) -> None:
            self._reply(status, (message + "\n").encode(), "text/plain; charset=utf-8")

        def do_OPTIONS(self) -> None:  # noqa: N802 - http.server's naming
            self.send_response(HTTPStatus.OK)
            self._cors()
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:  # noqa: N802
            path = self.path.split("?", 1)[0].rstrip("/")
            if path.endswith("/encode"):
                transform = codec.encode_one
            elif path.endswith("/decode"):
                transform = codec.decode_one
            else:
                self._error(HTTPStatus.NOT_FOUND, "expected POST …/encode or …/decode")
                return
            length_text = self.headers.get("Content-Length", "")
            if not length_text.isdigit() or int(length_text) > MAX_BODY_BYTES:
                self._error(
                    HTTPStatus.BAD_REQUEST,
                    f"expected a Content-Length of at most {MAX_BODY_BYTES} bytes",
                )
                return
            body = self.rfile.read(int(length_text))
            try:
                payloads = json_format.Parse(body, Payloads())
            except json_format.ParseError as err:
                self._error(HTTPStatus.BAD_REQUEST, f"expected a JSON Payloads message: {err}")
                return
            try:
                result = Payloads(payloads=[transform(p) for p in payloads.payloads])
            except SecretKeyError as err:
                self._error(HTTPStatus.BAD_REQUEST, str(err))
                return
            self._reply(
                HTTPStatus.OK,
                json.dumps(json_format.MessageToDict(result)).encode(),
                "application/json",
            )

    return ThreadingHTTPServer((host, port), Handler)
