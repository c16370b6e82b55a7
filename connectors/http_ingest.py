"""HTTP ingest endpoint (``kizashi serve``): POST events as one JSON object, a JSON array or JSON lines.

* Binds 127.0.0.1 by default; bearer-token auth (``Authorization: Bearer <token>``) when a token is
  configured; body size limit (413); ``Content-Type`` must be JSON or NDJSON (415).
* Valid records of a batch are kept, invalid ones go to quarantine with their reason; the answer
  (200 all stored, 207 some rejected, 422 none valid) lists the rejected records and why.
* ``GET /health`` answers ``{"status": "ok"}`` without auth.
"""

from __future__ import annotations

import hmac
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kizashi.engine.events import DetectionEvent, EventValidationError

MAX_BODY_BYTES = 10 * 1024 * 1024
JSON_TYPES = ("application/json", "application/x-ndjson", "application/jsonl", "application/json-seq",
              "text/plain")


def split_records(body: bytes, content_type: str) -> list[tuple[str, Any | None, str | None]]:
    """Body → [(raw text, parsed JSON or None, error or None)] per record."""
    text = body.decode("utf-8", errors="replace")
    stripped = text.lstrip()
    if content_type.startswith("application/json") and stripped[:1] in ("{", "["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, list):
            return [(json.dumps(x), x, None) for x in data]
        if isinstance(data, dict):
            return [(text, data, None)]
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            out.append((line, json.loads(line), None))
        except json.JSONDecodeError as exc:
            out.append((line, None, f"not valid JSON: {exc}"))
    return out


class IngestServer:
    """A threaded HTTP server feeding ``handle(events) -> dict`` (e.g. a pipeline's ingest) and
    ``quarantine(raw, reason)`` for rejected records. Access to the callbacks is serialised."""

    def __init__(self, handle: Callable[[list[DetectionEvent]], dict], quarantine: Callable[[str, str], None], *,
                 host: str = "127.0.0.1", port: int = 8787, token: str | None = None,
                 max_body: int = MAX_BODY_BYTES):
        self.handle_events = handle
        self.quarantine = quarantine
        self.token = token
        self.max_body = max_body
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "kizashi"

            def log_message(self, fmt: str, *args: Any) -> None:  # quiet; never logs tokens
                pass

            def _reply(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                if self.path == "/health":
                    self._reply(200, {"status": "ok"})
                else:
                    self._reply(404, {"error": f"no such path {self.path}; POST events to /events"})

            def do_POST(self) -> None:  # noqa: N802
                if self.path not in ("/events", "/ingest"):
                    self._reply(404, {"error": f"no such path {self.path}; POST events to /events"})
                    return
                if server.token is not None:
                    auth = self.headers.get("Authorization", "")
                    if not auth.startswith("Bearer ") or not hmac.compare_digest(auth[7:].strip(), server.token):
                        self._reply(401, {"error": "missing or wrong bearer token (Authorization: Bearer <token>)"})
                        return
                ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
                if ctype not in JSON_TYPES:
                    self._reply(415, {"error": f"Content-Type {ctype or '(none)'} not accepted; send "
                                               "application/json or application/x-ndjson"})
                    return
                try:
                    length = int(self.headers.get("Content-Length", ""))
                except ValueError:
                    self._reply(411, {"error": "Content-Length required"})
                    return
                if length > server.max_body:
                    self._reply(413, {"error": f"body of {length} bytes exceeds the limit of {server.max_body}"})
                    return
                body = self.rfile.read(length)
                self._reply(*server.process(body, ctype))

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.httpd.server_address[:2]

    def process(self, body: bytes, ctype: str) -> tuple[int, dict]:
        records = split_records(body, ctype)
        if not records:
            return 400, {"error": "empty body: send one event, a JSON array of events or JSON lines"}
        valid, rejected = [], []
        for i, (raw, data, err) in enumerate(records):
            if err is None:
                try:
                    valid.append(DetectionEvent.parse(data))
                    continue
                except EventValidationError as exc:
                    err = str(exc)
            rejected.append({"index": i, "error": err})
            with self.lock:
                self.quarantine(raw, f"http record {i}: {err}")
        summary: dict[str, Any] = {"received": len(records), "rejected": rejected}
        if valid:
            with self.lock:
                summary.update(self.handle_events(valid))
        code = 200 if not rejected else (207 if valid else 422)
        return code, summary

    def start(self) -> IngestServer:
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
