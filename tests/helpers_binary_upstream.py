"""A model server that speaks the binary tensor extension, for the sensor's tests: MLServer (the real
model) does not, Triton does. It answers like Triton: reads binary (or JSON) inputs, asks the real
MLServer for the answer in JSON, and sends outputs back binary when the request asks for it.

Binary request bodies are read with Triton's own client decoder (``InferResult``; the request's
layout is the response's with ``inputs`` for ``outputs``), so the sensor is not checked against a
second copy of its own reading of the specification."""

from __future__ import annotations

import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import tritonclient.http as triton

HEADER = "Inference-Header-Content-Length"


def _read_inputs(body: bytes, header_length: int | None) -> tuple[dict, dict[str, np.ndarray]]:
    if header_length is None:
        head = json.loads(body)
        return head, {t["name"]: np.asarray(t["data"], dtype=np.float32).reshape(t["shape"]) for t in head["inputs"]}
    head = json.loads(body[:header_length])
    as_outputs = json.dumps({"outputs": head["inputs"]}).encode()
    result = triton.InferResult.from_response_body(as_outputs + body[header_length:], header_length=len(as_outputs))
    return head, {t["name"]: result.as_numpy(t["name"]) for t in head["inputs"]}


class BinaryUpstream:
    def __init__(self, mlserver_url: str):
        self.mlserver_url = mlserver_url
        self.binary_requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # health and metadata: MLServer's answer as is
                with urllib.request.urlopen(outer.mlserver_url + self.path, timeout=30) as r:
                    self._send(r.status, r.read(), {})

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                length = self.headers.get(HEADER)
                outer.binary_requests += length is not None
                head, arrays = _read_inputs(body, int(length) if length is not None else None)
                request = {"inputs": [{"name": n, "shape": list(a.shape), "datatype": "FP32",
                                       "data": a.astype(np.float32).reshape(-1).tolist()} for n, a in arrays.items()],
                           "outputs": [{"name": o["name"]} for o in head.get("outputs", [])]}
                req = urllib.request.Request(outer.mlserver_url + self.path, json.dumps(request).encode(),
                                             {"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=30) as r:
                    answer = json.loads(r.read())
                binary = {o["name"] for o in head.get("outputs", []) if (o.get("parameters") or {}).get("binary_data")}
                raw = b""
                for out in answer["outputs"]:
                    if out["name"] in binary:
                        values = np.asarray(out["data"], dtype=np.float32 if out["datatype"] == "FP32" else np.float64)
                        chunk = values.astype(values.dtype.newbyteorder("<")).tobytes()
                        out.pop("data")
                        out["parameters"] = {**(out.get("parameters") or {}), "binary_data_size": len(chunk)}
                        raw += chunk
                text = json.dumps(answer).encode()
                self._send(200, text + raw, {HEADER: str(len(text))} if raw else {})

            def _send(self, status: int, payload: bytes, headers: dict):
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if not headers else "application/octet-stream")
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> BinaryUpstream:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
