"""The sensor as an ASGI application: an Open Inference Protocol v2 REST reverse proxy in front of
the model server, and a receiver for KServe's inference logger.

Routes (anything else is a 404 in the protocol's ``{"error": ...}`` form):

* ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``: forwarded;
* ``GET /v2/models/{name}[/versions/{v}][/ready]``: forwarded for configured models;
* ``POST /v2/models/{name}[/versions/{v}]/infer``: enforced, forwarded, inspected (below);
* ``POST /kizashi/logger``: CloudEvents from KServe's logger (binary mode), paired by ``ce-id``;
* ``GET /kizashi/status``: counters (loopback peers only).

An infer call: identify the account, refuse it if blocked (enforce), decode the input tensor (400
for anything unreadable), forward the original body, decode the answer, run the model's
detectors, answer with the upstream's bytes. Upstream failures are 502 (unreachable, bad answer,
too large) or 504 (timed out).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict

import orjson

from .accounts import AccountIdentifier
from .asgi import Receive, Scope, Send, json_response, read_body
from .core import Sensor, outputs_from
from .tensors import (
    HEADER_LENGTH,
    InferRequest,
    InferResponse,
    TensorError,
    decode_request,
    decode_response,
    parse_json,
    split_body,
)
from .upstream import Upstream, UpstreamError

__all__ = ["SensorApp"]

log = logging.getLogger("kizashi.sensor")

_MODEL_PATH = re.compile(r"^/v2/models/([^/]{1,256})(?:/versions/([^/]{1,64}))?(/ready|/infer)?$")
_HEALTH_PATHS = ("/v2", "/v2/health/live", "/v2/health/ready")
_HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer",
               b"transfer-encoding", b"upgrade", b"host", b"content-length", b"accept-encoding"}
_LOOPBACK = ("127.0.0.1", "::1")
SNAPSHOT_SLICE = 25  # accounts copied per turn of the event loop


class SensorApp:
    def __init__(self, sensor: Sensor, upstream: str, accounts: AccountIdentifier):
        self.sensor = sensor
        self.config = sensor.config
        self.upstream = upstream.rstrip("/")
        self.accounts = accounts
        self.client: Upstream | None = None
        self.pending: OrderedDict[str, tuple[float, str, dict]] = OrderedDict()
        self._snapshot_task: asyncio.Task | None = None

    # -- ASGI ------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        self.sensor.counts["requests"] += 1
        path, method = scope["path"], scope["method"]
        try:
            if path == "/kizashi/logger" and self.config.logger.enabled:
                if method != "POST":
                    await json_response(send, 405, {"error": "POST CloudEvents here"})
                    return
                await self._logger(scope, receive, send)
                return
            if path == "/kizashi/status":
                peer = (scope.get("client") or ("",))[0]
                if peer not in _LOOPBACK:
                    await json_response(send, 403, {"error": "status is served to loopback clients only"})
                else:
                    await json_response(send, 200, self.sensor.status())
                return
            if path in _HEALTH_PATHS and method == "GET":
                await self._forward_simple(scope, send)
                return
            m = _MODEL_PATH.match(path)
            if m is None:
                await json_response(send, 404, {"error": f"no route for {method} {path}"})
                return
            model, _version, tail = m.groups()
            if model not in self.config.models:
                await json_response(send, 404, {"error": f"model {model!r} is not served through this sensor"})
                return
            if tail == "/infer":
                if method != "POST":
                    await json_response(send, 405, {"error": "infer takes POST"})
                    return
                await self._infer(scope, receive, send, model)
            elif method == "GET":
                await self._forward_simple(scope, send)
            else:
                await json_response(send, 405, {"error": f"{method} not allowed on {path}"})
        except UpstreamError as exc:
            self.sensor.counts["upstream_errors"] += 1
            await json_response(send, exc.status, {"error": str(exc)})
        except ConnectionError:
            return  # the client went away
        except Exception:  # never a traceback to the client; the sensor stays up
            log.exception("sensor failed on %s %s", method, path)
            await json_response(send, 500, {"error": "internal sensor error"})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                self.start()
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def start(self) -> None:
        c = self.config
        self.client = Upstream(self.upstream, timeout=c.upstream_timeout, connect_timeout=c.upstream_connect_timeout,
                               max_body=c.max_upstream_body)
        self._snapshot_task = asyncio.get_running_loop().create_task(self._snapshots())

    async def aclose(self) -> None:
        if self._snapshot_task:
            self._snapshot_task.cancel()
        if self.client:
            await self.client.aclose()
        await asyncio.to_thread(self.sensor.stop)

    async def _snapshots(self) -> None:
        """Incremental: only accounts seen since the last round are encoded (on the loop, a slice at
        a time so requests interleave); the file is written in a thread."""
        sensor = self.sensor
        while True:
            await asyncio.sleep(self.config.snapshot_seconds)
            dirty = sensor.take_dirty()
            if not dirty:
                continue
            sensor.snapshot_running = True
            try:
                for key, accounts in dirty.items():
                    ordered, encoded = sorted(accounts), []
                    for k in range(0, len(ordered), SNAPSHOT_SLICE):
                        encoded.extend(sensor.encode_states(key, ordered[k:k + SNAPSHOT_SLICE]))
                        await asyncio.sleep(0)
                    await asyncio.to_thread(sensor.write_snapshot, key, encoded)
            except Exception:  # a failed snapshot must not stop the next ones
                log.exception("snapshot failed")
            finally:
                sensor.snapshot_running = False

    # -- upstream ----------------------------------------------------------------------------------
    def _forward_headers(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        # identity: the sensor reads the answer, and passes the same bytes on
        return [(k, v) for k, v in scope["headers"] if k not in _HOP_BY_HOP] + [(b"accept-encoding", b"identity")]

    async def _call_upstream(self, method: str, scope: Scope, body: bytes | None
                             ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """(status, the answer's headers the client needs, body): its content type, and the binary
        extension's JSON length when the answer carries binary tensors."""
        assert self.client is not None
        qs = scope.get("query_string") or b""
        target = scope["path"] + ("?" + qs.decode("latin-1") if qs else "")
        status, headers, answer = await self.client.request(method, target, self._forward_headers(scope), body)
        passed = [(b"content-type", headers.get(b"content-type", b"application/json"))]
        if _HEADER_LENGTH in headers:
            passed.append((_HEADER_LENGTH, headers[_HEADER_LENGTH]))
        return status, passed, answer

    async def _forward_simple(self, scope: Scope, send: Send) -> None:
        status, headers, body = await self._call_upstream(scope["method"], scope, None)
        await _raw_response(send, status, headers, body)

    # -- infer -----------------------------------------------------------------------------------
    async def _infer(self, scope: Scope, receive: Receive, send: Send, model: str) -> None:
        sensor = self.sensor
        sensor.counts["infer"] += 1
        peer = (scope.get("client") or (None,))[0]
        account, ip = self.accounts.identify(peer, scope["headers"])
        decision = sensor.check(account, model, ip)
        if not decision.allowed:
            await json_response(send, 403, {"error": f"refused by kizashi sensor: {decision.reason}"})
            return
        body = await read_body(receive)
        mcfg = self.config.models[model]
        try:
            req = decode_request(*split_body(body, _header(scope, _HEADER_LENGTH)))
            X = req.input(mcfg.input).rows()
        except TensorError as exc:
            sensor.counts["bad_requests"] += 1
            await json_response(send, 400, {"error": str(exc)})
            return
        status, headers, answer = await self._call_upstream("POST", scope, body)
        resp = None
        if status == 200:
            length = dict(headers).get(_HEADER_LENGTH)
            try:
                resp = decode_response(*split_body(answer, length.decode("latin-1") if length else None))
            except TensorError:
                sensor.counts["undecoded_responses"] += 1
        if status == 200 and len(X):
            verdict = sensor.inspect(model, X, outputs_from(resp, mcfg.output, len(X)), account=account,
                                     source_ip=ip)
            if not verdict.allowed:
                await json_response(send, 403, {"error": f"refused by kizashi sensor: {verdict.reason}"})
                return
        await _raw_response(send, status, headers, answer)

    # -- KServe inference logger --------------------------------------------------------------------
    async def _logger(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        body = await read_body(receive)
        ce_id, ce_type = headers.get("ce-id"), headers.get("ce-type", "")
        if not ce_id or len(ce_id) > 256 or not ce_type:
            await json_response(send, 400, {"error": "not a binary-mode CloudEvent (ce-id and ce-type required)"})
            return
        kind = "request" if ce_type.endswith(".request") else "response" if ce_type.endswith(".response") else None
        if kind is None:
            await json_response(send, 400, {"error": f"unsupported ce-type {ce_type[:100]!r}"})
            return
        self.sensor.counts["logger_events"] += 1
        now = time.monotonic()
        lc = self.config.logger
        while self.pending and (len(self.pending) >= lc.pending_max or
                                next(iter(self.pending.values()))[0] < now - lc.pending_seconds):
            self.pending.popitem(last=False)
        other = self.pending.pop(ce_id, None)
        if other is None or other[1] == kind:
            self.pending[ce_id] = (now, kind, {"headers": headers, "body": body})
            await _raw_response(send, 202, [(b"content-type", b"application/json")], b'{"status":"pending"}')
            return
        parts = {kind: {"headers": headers, "body": body}, other[1]: other[2]}
        try:
            status, result = self._logged_pair(parts["request"], parts["response"])
        except TensorError as exc:
            self.sensor.counts["bad_requests"] += 1
            await json_response(send, 400, {"error": str(exc)})
            return
        await json_response(send, status, result)

    def _logged_pair(self, request: dict, response: dict) -> tuple[int, dict]:
        rh = request["headers"]
        req: InferRequest = decode_request(parse_json(request["body"]))
        resp: InferResponse = decode_response(parse_json(response["body"]))
        model = resp.model_name or rh.get("ce-inferenceservicename") or rh.get("ce-modelid") or ""
        if model not in self.config.models:
            return 404, {"error": f"model {model!r} is not configured"}
        mcfg = self.config.models[model]
        X = req.input(mcfg.input).rows()
        account = self._logged_account(rh) or self._logged_account(response["headers"])
        if account is None:
            account = "addr-unknown"
        self.sensor.counts["logger_pairs"] += 1
        self.sensor.inspect(model, X, outputs_from(resp, mcfg.output, len(X)), account=account, source_ip=None)
        return 200, {"status": "inspected", "rows": int(len(X))}

    def _logged_account(self, headers: dict[str, str]) -> str | None:
        name = self.config.logger.account_header.lower()
        value = headers.get(name)
        if value is None:
            return None
        if name == "ce-metadata":  # KServe: JSON map of the logged request headers -> [values]
            try:
                meta = orjson.loads(value)
            except orjson.JSONDecodeError:
                return None
            if not isinstance(meta, dict):
                return None
            want = self.config.account_header.lower()
            for k, v in meta.items():
                if isinstance(k, str) and k.lower() == want:
                    v = v[0] if isinstance(v, list) and v else v
                    if isinstance(v, str) and v:
                        if want == "authorization":
                            scheme, _, token = v.partition(" ")
                            v = token.strip() if scheme.lower() == "bearer" else ""
                        return self.accounts.account_id(v) if v else None
            return None
        return self.accounts.account_id(value)


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope["headers"]:
        if k.lower() == name:
            return v.decode("latin-1")
    return None


_HEADER_LENGTH = HEADER_LENGTH.encode()


async def _raw_response(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})

