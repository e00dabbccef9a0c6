"""A tiny real HTTP server on 127.0.0.1 that answers every S3 request with one
configured S3 error (status, code, XML fields, headers), the way a store does when the
worker's clock is off, the bucket lives in another region, or it throttles. An S3
profile's ``endpoint_url`` points at it: the driver and botocore run unchanged."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from xml.sax.saxutils import escape


@dataclass
class Answer:
    """One S3 error answer. ``{authorization}`` / ``{token}`` in ``fields`` values are
    replaced by the request's ``Authorization`` / ``X-Amz-Security-Token`` headers (a
    store that echoes the request in its error, to prove nothing of it reaches a message)."""

    status: int
    code: str
    message: str = ""
    fields: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


class S3Answers(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answer = Answer(500, "InternalError")
        self.requests: list[str] = []
        self.times: list[float] = []  # time.monotonic() of each request
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def set(self, answer: Answer) -> None:
        with self.lock:
            self.answer = answer
            self.requests = []
            self.times = []

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: S3Answers

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        with self.server.lock:
            answer = self.server.answer
            self.server.requests.append(f"{self.command} {self.path}")
            self.server.times.append(time.monotonic())
        values = {
            "authorization": self.headers.get("Authorization", ""),
            "token": self.headers.get("X-Amz-Security-Token", ""),
        }
        fields = {"Code": answer.code, "Message": answer.message, **answer.fields}
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error>'
            + "".join(
                f"<{name}>{escape(value.format(**values))}</{name}>"
                for name, value in fields.items()
            )
            + "<RequestId>0</RequestId></Error>"
        ).encode()
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _answer
