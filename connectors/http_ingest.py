"""HTTP ingest endpoint (``kizashi serve``): POST events as one JSON object, a JSON array or JSON lines.

An ASGI application (served by uvicorn with the timeouts and size limits of
:mod:`kizashi.sensor.asgi`, wired by the CLI):

* bearer-token auth when a token is configured (``Authorization: Bearer <token>``, scheme
  case-insensitive, token compared as bytes so any header value is answered 401, never a crash);
* without a token (loopback only): a JSON content type is required (no CORS-simple
  ``text/plain`` posts from web pages), and ``Host`` must name a loopback address and ``Origin``,
  when sent, a loopback origin (DNS rebinding, CSRF);
* at most ``max_records`` records per request (413 beyond);
* valid records of a batch are kept, invalid ones go to quarantine with their reason; the answer
  (200 all stored, 207 some rejected, 422 none valid) lists the rejected records and why;
* ``GET /health`` answers ``{"status": "ok"}`` without auth.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import orjson
from kizashi.engine.events import DetectionEvent, EventValidationError

MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_RECORDS = 10_000
#: with a token, any of these; without one, only the JSON types (text/plain is what a web page may
#: post cross-origin without a CORS preflight)
JSON_TYPES = ("application/json", "application/x-ndjson", "application/jsonl", "application/json-seq")
TOKEN_TYPES = (*JSON_TYPES, "text/plain")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
MAX_REJECTED_LISTED = 100


def _loads(text: str | bytes) -> Any:
    """Strict JSON; nesting deeper than the parser's limit is an error, not a RecursionError."""
    return orjson.loads(text)


def _raw(record: Any) -> str:
    """A record's text for quarantine (nesting too deep to re-serialise is summarised, not fatal)."""
    try:
        return orjson.dumps(record).decode()
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps({"unserialisable_record": f"a {type(record).__name__} nested too deeply to re-serialise"})


def array_elements(text: str) -> list[str] | None:
    """The texts of a JSON array's top-level elements, found by bracket matching outside strings
    (no parse), or None if ``text`` is not one well-bracketed array. Used when the whole array does
    not parse (e.g. one element nested past the parser's depth limit): each element is then parsed
    and judged alone, so one hostile record cannot take its valid neighbours down with it."""
    body = text.strip()
    if len(body) < 2 or body[0] != "[" or body[-1] != "]":
        return None
    out, depth, start, in_string, escaped = [], 0, 1, False, False
    for i in range(1, len(body) - 1):
        ch = body[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
            if depth < 0:
                return None
        elif ch == "," and depth == 0:
            out.append(body[start:i])
            start = i + 1
    if depth or in_string:
        return None
    last = body[start:-1]
    if last.strip() or out:
        out.append(last)
    return [e.strip() for e in out]


def split_records(body: bytes, content_type: str) -> list[tuple[str, Any | None, str | None]]:
    """Body → [(raw text, parsed JSON or None, error or None)] per record."""
    text = body.decode("utf-8", errors="replace")
    stripped = text.lstrip()
    if content_type.startswith("application/json") and stripped[:1] in ("{", "["):
        try:
            data = _loads(text)
        except orjson.JSONDecodeError:
            data = None
            elements = array_elements(text)
            if elements is not None:
                return [_parse_one(e) for e in elements]
        if isinstance(data, list):
            return [(_raw(x), x, None) for x in data]
        if isinstance(data, dict):
            return [(text, data, None)]
    # not splitlines(): U+2028 and friends are data inside JSON strings
    return [_parse_one(line) for line in text.split("\n") if line.strip()]


def _parse_one(text: str) -> tuple[str, Any | None, str | None]:
    try:
        return text, _loads(text), None
    except orjson.JSONDecodeError as exc:
        return text, None, f"not valid JSON: {exc}"


def bearer_token(header: bytes) -> bytes | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive, RFC 7235)."""
    scheme, _, token = header.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    return token.strip() or None


def _host_is_loopback(host: str) -> bool:
    if host.startswith("["):
        return host.split("]")[0] + "]" in LOOPBACK_HOSTS
    return host.rsplit(":", 1)[0] in LOOPBACK_HOSTS


class IngestApp:
    """ASGI app feeding ``handle(events) -> dict`` (e.g. a pipeline's ingest) and
    ``quarantine([(raw, reason), ...])`` for a request's rejected records, in one call (one
    transaction however many were rejected). The callbacks run in a worker thread, one request at a
    time (the store is one writer)."""

    def __init__(self, handle: Callable[[list[DetectionEvent]], dict],
                 quarantine: Callable[[list[tuple[str, str]]], None], *,
                 token: str | None = None, max_records: int = MAX_RECORDS):
        if token is not None and not token:
            raise ValueError("an empty token would accept anyone: set a token or run without one on loopback")
        self.handle_events = handle
        self.quarantine = quarantine
        self.token = token.encode("utf-8") if token is not None else None
        self.max_records = max_records
        self.lock = threading.Lock()

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        headers: dict[bytes, bytes] = {}
        for k, v in scope["headers"]:
            headers.setdefault(k, v)
        early = self.check(scope["method"], scope["path"], headers)
        if early is not None:
            await _reply(send, *early)
            return
        chunks = []
        while True:  # size and time are bounded by the server's guard
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        try:
            code, summary = await asyncio.to_thread(self.process, b"".join(chunks), self.content_type(headers))
        except Exception as exc:  # e.g. the store is down: one error answer, the server stays up
            code, summary = 503, {"error": f"events not stored: {type(exc).__name__}"}
        await _reply(send, code, summary)

    def check(self, method: str, path: str, headers: dict[bytes, bytes]) -> tuple[int, dict] | None:
        """Everything decided from the request head: None when the body should be read."""
        if method == "GET":
            if path == "/health":
                return 200, {"status": "ok"}
            return 404, {"error": f"no such path {path}; POST events to /events"}
        if method != "POST":
            return 405, {"error": "POST events to /events"}
        if path not in ("/events", "/ingest"):
            return 404, {"error": f"no such path {path}; POST events to /events"}
        if self.token is not None:
            given = bearer_token(headers.get(b"authorization", b""))
            if given is None or not hmac.compare_digest(given, self.token):
                return 401, {"error": "missing or wrong bearer token (Authorization: Bearer <token>)"}
        else:
            host = headers.get(b"host", b"").decode("latin-1")
            if not _host_is_loopback(host):
                return 403, {"error": "without a token only requests addressed to a loopback Host are accepted"}
            origin = headers.get(b"origin")
            if origin is not None:
                o = urlsplit(origin.decode("latin-1"))
                if o.hostname not in ("127.0.0.1", "localhost", "::1"):
                    return 403, {"error": "cross-origin requests are refused when no token is set"}
        ctype = self.content_type(headers)
        if ctype not in (TOKEN_TYPES if self.token is not None else JSON_TYPES):
            return 415, {"error": f"Content-Type {ctype or '(none)'} not accepted; send application/json "
                                  "or application/x-ndjson"}
        return None

    @staticmethod
    def content_type(headers: dict[bytes, bytes]) -> str:
        return headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()

    def process(self, body: bytes, ctype: str) -> tuple[int, dict]:
        records = split_records(body, ctype)
        if not records:
            return 400, {"error": "empty body: send one event, a JSON array of events or JSON lines"}
        if len(records) > self.max_records:
            return 413, {"error": f"{len(records)} records in one request; at most {self.max_records}"}
        valid, rejected, bad = [], [], []
        for i, (raw, data, err) in enumerate(records):
            if err is None:
                try:
                    valid.append(DetectionEvent.parse(data))
                    continue
                except EventValidationError as exc:
                    err = str(exc)
                except (ValueError, TypeError, OverflowError, RecursionError) as exc:
                    err = f"invalid event: {type(exc).__name__}: {exc}"
            rejected.append({"index": i, "error": err[:500]})
            bad.append((raw, f"http record {i}: {err}"))
        if bad:
            with self.lock:
                self.quarantine(bad)
        summary: dict[str, Any] = {"received": len(records), "rejected": rejected[:MAX_REJECTED_LISTED],
                                   "rejected_count": len(rejected)}
        if valid:
            with self.lock:
                summary.update(self.handle_events(valid))
        code = 200 if not rejected else (207 if valid else 422)
        return code, summary


async def _reply(send, status: int, body: dict) -> None:
    data = orjson.dumps(body)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})
