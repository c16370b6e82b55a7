"""Local HTTP receivers (127.0.0.1, started and stopped by the tests and the delivery bench) that
enforce the documented contracts of the receivers kizashi cannot run here:

- Splunk HEC: ``POST /services/collector/event``, ``Authorization: Splunk <token>`` (401 code 2
  without it, 403 code 4 with a wrong one), concatenated JSON objects each with ``event`` (400 code
  12/13 otherwise), ``X-Splunk-Request-Channel`` required when acknowledgement is on (400 code 10),
  503 code 9 "server is busy", ``/services/collector/ack`` answering ``{"acks": {"<id>": bool}}``.
- Elasticsearch ``_bulk``: ``Authorization: ApiKey``, NDJSON content type, body ending in a newline,
  action/source line pairs, documents stored by ``(_index, _id)``, per-item statuses, and the
  ``X-Elastic-Product: Elasticsearch`` header on every answer.
- Webhook: JSON body, optional HMAC ``X-Kizashi-Signature: sha256=<hex>`` checked, deliveries kept
  by ``Idempotency-Key``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    """A threaded HTTP server on a free loopback port; subclasses implement ``handle``."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver.lock:
                    receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    status, payload, headers = receiver.handle(self.path, self.headers, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def handle(self, path, headers, body) -> tuple[int, Any, dict[str, str]]:  # pragma: no cover
        raise NotImplementedError

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class HecReceiver(Receiver):
    def __init__(self, token: str, *, require_ack: bool = False, busy: int = 0, ack_after_polls: int = 1):
        self.token, self.require_ack, self.busy = token, require_ack, busy
        self.ack_after_polls = ack_after_polls
        self.events: list[dict] = []
        self.pending: dict[int, int] = {}  # ackId -> polls until indexed
        self.next_ack = 0
        super().__init__()

    def handle(self, path, headers, body):
        auth = headers.get("Authorization")
        if not auth:
            return 401, {"text": "Token is required", "code": 2}, {}
        if auth != f"Splunk {self.token}":
            return 403, {"text": "Invalid token", "code": 4}, {}
        channel = headers.get("X-Splunk-Request-Channel")
        if path.startswith("/services/collector/ack"):
            if not channel:
                return 400, {"text": "Data channel is missing", "code": 10}, {}
            acks = {}
            for i in json.loads(body)["acks"]:
                left = self.pending.get(i, 0)
                self.pending[i] = max(0, left - 1)
                acks[str(i)] = left == 0
            return 200, {"acks": acks}, {}
        if path != "/services/collector/event":
            return 404, {"text": "The requested URL was not found on this server.", "code": 404}, {}
        if self.require_ack and not channel:
            return 400, {"text": "Data channel is missing", "code": 10}, {}
        if self.busy:
            self.busy -= 1
            return 503, {"text": "Server is busy", "code": 9}, {}
        text = body.decode("utf-8")
        if not text.strip():
            return 400, {"text": "No data", "code": 5}, {}
        decoder, pos, batch = json.JSONDecoder(), 0, []
        while pos < len(text):
            while pos < len(text) and text[pos].isspace():
                pos += 1
            if pos >= len(text):
                break
            try:
                obj, pos = decoder.raw_decode(text, pos)
            except json.JSONDecodeError:
                return 400, {"text": "Invalid data format", "code": 6, "invalid-event-number": len(batch)}, {}
            if "event" not in obj:
                return 400, {"text": "Event field is required", "code": 12, "invalid-event-number": len(batch)}, {}
            if obj["event"] in ("", {}, None):
                return 400, {"text": "Event field cannot be blank", "code": 13}, {}
            batch.append(obj)
        self.events.extend(batch)
        reply: dict[str, Any] = {"text": "Success", "code": 0}
        if self.require_ack:
            self.pending[self.next_ack] = self.ack_after_polls
            reply["ackId"] = self.next_ack
            self.next_ack += 1
        return 200, reply, {}


class ElasticReceiver(Receiver):
    PRODUCT = {"X-Elastic-Product": "Elasticsearch"}

    def __init__(self, api_key: str, *, impostor: bool = False, reject_ids: dict[str, int] | None = None,
                 unavailable: int = 0):
        self.api_key, self.impostor = api_key, impostor
        self.reject_ids = dict(reject_ids or {})
        self.unavailable = unavailable
        self.docs: dict[tuple[str, str], dict] = {}
        super().__init__()

    def handle(self, path, headers, body):
        product = {} if self.impostor else self.PRODUCT
        if headers.get("Authorization") != f"ApiKey {self.api_key}":
            return 401, {"error": {"type": "security_exception", "reason": "missing authentication credentials"},
                         "status": 401}, product
        if path.split("?")[0] != "/_bulk":
            return 404, {"error": "no handler", "status": 404}, product
        if self.unavailable:
            self.unavailable -= 1
            return 503, {"error": {"type": "unavailable_shards_exception"}, "status": 503}, product
        ctype = (headers.get("Content-Type") or "").split(";")[0].strip()
        if ctype not in ("application/x-ndjson", "application/vnd.elasticsearch+x-ndjson"):
            return 406, {"error": f"Content-Type header [{ctype}] is not supported", "status": 406}, product
        text = body.decode("utf-8")
        if not text.endswith("\n"):
            return 400, {"error": {"type": "illegal_argument_exception",
                                   "reason": "The bulk request must be terminated by a newline [\\n]"}}, product
        lines = text[:-1].split("\n")
        if len(lines) % 2:
            return 400, {"error": {"type": "illegal_argument_exception", "reason": "action without source"}}, product
        items, errors = [], False
        for action_line, source_line in zip(lines[::2], lines[1::2], strict=True):
            action = json.loads(action_line)
            (op, meta), = action.items()
            doc = json.loads(source_line)
            status = self.reject_ids.get(meta["_id"])
            if status:
                errors = True
                items.append({op: {"_index": meta["_index"], "_id": meta["_id"], "status": status,
                                   "error": {"type": "es_rejected_execution_exception" if status == 429
                                             else "document_parsing_exception", "reason": "rejected"}}})
                continue
            key = (meta["_index"], meta["_id"])
            created = key not in self.docs
            self.docs[key] = doc
            items.append({op: {"_index": meta["_index"], "_id": meta["_id"], "status": 201 if created else 200,
                               "result": "created" if created else "updated"}})
        return 200, {"took": 1, "errors": errors, "items": items}, product


class WebhookReceiver(Receiver):
    def __init__(self, secret: str | None = None, *, fail: int = 0, replay_window: float = 300.0):
        self.secret, self.fail, self.replay_window = secret, fail, replay_window
        self.deliveries: dict[str, dict] = {}
        super().__init__()

    def handle(self, path, headers, body):
        if (headers.get("Content-Type") or "").split(";")[0] != "application/json":
            return 415, {"error": "expected application/json"}, {}
        if self.secret is not None:  # t=<unix seconds>,v1=HMAC-SHA256(secret, "<t>." + body), 5-minute window
            parts = dict(p.split("=", 1) for p in (headers.get("X-Kizashi-Signature") or "").split(",") if "=" in p)
            t = parts.get("t", "")
            want = hmac.new(self.secret.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
            if not (t.isdigit() and hmac.compare_digest(parts.get("v1", ""), want)):
                return 401, {"error": "bad signature"}, {}
            if abs(time.time() - int(t)) > self.replay_window:
                return 401, {"error": "signature timestamp outside the replay window"}, {}
        if self.fail:
            self.fail -= 1
            return 502, {"error": "bad gateway"}, {}
        key = headers.get("Idempotency-Key")
        if not key:
            return 400, {"error": "Idempotency-Key header required"}, {}
        self.deliveries[key] = json.loads(body)
        return 202, {"accepted": True}, {}
