"""`kizashi serve` on the ASGI stack against hostile clients (issue 14 rows 4-7 and item 4): each test
is named after what it guards, and runs against the real CLI server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from helpers_mlserver import free_port, wait_http
from kizashi.engine.events import DetectionEvent
from kizashi.engine.store import Store

KIZASHI = [sys.executable, "-m", "kizashi.cli.main"]


class Serve:
    def __init__(self, tmp_path, token: str | None = None, *extra: str):
        self.port = free_port()
        self.db = f"sqlite:///{tmp_path / 'serve.db'}"
        env = {k: v for k, v in os.environ.items() if k != "KIZASHI_TOKEN"}
        if token is not None:
            env["KIZASHI_TOKEN"] = token
        self.log = open(tmp_path / "serve.log", "w")
        self.proc = subprocess.Popen(KIZASHI + ["serve", "--db", self.db, "--port", str(self.port), *extra],
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_http(f"http://127.0.0.1:{self.port}/health", timeout=60, proc=self.proc)

    def raw(self, data: bytes, timeout: float = 10.0) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(data)
            chunks = []
            while True:
                try:
                    c = s.recv(65536)
                except TimeoutError:
                    break
                if not c:
                    break
                chunks.append(c)
            return b"".join(chunks)

    def request(self, body: bytes, headers: dict[str, str] | None = None, path: str = "/events") -> tuple[int, dict]:
        h = {"Host": f"127.0.0.1:{self.port}", "Content-Type": "application/json", "Connection": "close",
             "Content-Length": str(len(body)), **(headers or {})}
        head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
        return parse(self.raw(head.encode("utf-8") + body))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=15)
        self.log.close()


def parse(resp: bytes) -> tuple[int, dict]:
    head, _, body = resp.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), resp[:200]
    code = int(head.split()[1])
    try:
        return code, json.loads(body) if body else {}
    except ValueError:
        return code, {"raw": body.decode("latin-1")}


@pytest.fixture
def open_server(tmp_path):
    s = Serve(tmp_path, None, "--header-timeout", "1", "--body-timeout", "1", "--max-body", "100000",
              "--max-records", "50")
    yield s
    s.stop()


@pytest.fixture
def token_server(tmp_path):
    s = Serve(tmp_path, "s3cret")
    yield s
    s.stop()


def _event(i: int = 0) -> str:
    return DetectionEvent(id=f"ev-{i}", detector={"id": "t", "name": "t"}, stage="precursor", attack="evasion",
                          score=1.0).to_json()


def test_slow_clients_are_cut_off_and_do_not_starve_others(open_server):
    s = open_server
    slow = []
    for _ in range(300):  # half-sent requests, as a slowloris client sends them
        c = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        c.sendall(b"POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        slow.append(c)
    body_slow = socket.create_connection(("127.0.0.1", s.port), timeout=10)  # head complete, body never sent
    body_slow.sendall(f"POST /events HTTP/1.1\r\nHost: 127.0.0.1:{s.port}\r\nContent-Type: application/json\r\n"
                      "Content-Length: 500\r\n\r\n{".encode())
    try:
        code, body = s.request(_event(1).encode())  # an honest client is served meanwhile
        assert code == 200 and body["stored"] == 1
        time.sleep(2.5)
        closed = 0
        for c in slow:
            c.settimeout(5)
            try:
                closed += c.recv(100) == b""
            except OSError:
                closed += 1
        assert closed == len(slow)
        body_slow.settimeout(5)
        answer = body_slow.recv(1000)
        assert answer.startswith(b"HTTP/1.1 408") or answer == b""
    finally:
        for c in [*slow, body_slow]:
            c.close()


def test_content_length_minus_one_is_refused_not_read_to_eof(open_server):
    s = open_server
    head = (f"POST /events HTTP/1.1\r\nHost: 127.0.0.1:{s.port}\r\nContent-Type: application/json\r\n"
            "Content-Length: -1\r\nConnection: close\r\n\r\n").encode()
    resp = s.raw(head + b"x" * 1000)  # answered at once: the server does not wait for end of stream
    assert resp.split()[1] == b"400"
    code, _ = s.request(b"[" + b",".join(_event(i).encode() for i in range(3)) + b"]")
    assert code == 200 and Store(s.db).count_events() == 3


def test_body_over_max_body_is_413_declared_or_chunked(open_server):
    s = open_server
    head = (f"POST /events HTTP/1.1\r\nHost: 127.0.0.1:{s.port}\r\nContent-Type: application/json\r\n"
            "Content-Length: 200000\r\nConnection: close\r\n\r\n").encode()
    assert parse(s.raw(head + b"x" * 1000))[0] == 413  # refused on the declared length, body unread
    chunk = b"x" * 60_000
    head = (f"POST /events HTTP/1.1\r\nHost: 127.0.0.1:{s.port}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode()
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(2))  # 120 kB, no end chunk
    assert parse(s.raw(head + body))[0] == 413


def test_non_ascii_bearer_token_is_401_not_a_traceback(token_server):
    s = token_server
    head = (f"POST /events HTTP/1.1\r\nHost: 127.0.0.1:{s.port}\r\nContent-Type: application/json\r\n"
            "Authorization: Bearer s3cr\xe9t\xff\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}").encode("latin-1")
    code, body = parse(s.raw(head))
    assert code == 401 and "bearer token" in body["error"]


def test_lowercase_bearer_scheme_is_accepted(token_server):
    s = token_server
    code, body = s.request(_event(5).encode(), {"Authorization": "bearer s3cret"})
    assert code == 200 and body["stored"] == 1


def test_deeply_nested_json_is_quarantined_with_a_reason(token_server):
    s = token_server
    auth = {"Authorization": "Bearer s3cret"}
    deep = b"[" * 50_000 + b"]" * 50_000
    code, body = s.request(b"[" + deep + b"]", auth)  # one record: ``deep``
    assert code == 422 and body["rejected_count"] == 1
    code, body = s.request(b"[" + deep + b", " + _event(8).encode() + b"]", auth)
    assert code == 207 and body["stored"] == 1
    store = Store(s.db)
    # the same rejected record for the same reason is quarantined once, however often it is resent
    assert store.count_quarantine() == 1 and store.count_events() == 1


def test_no_token_mode_requires_json_content_type(open_server):
    code, body = open_server.request(_event().encode(), {"Content-Type": "text/plain"})
    assert code == 415


def test_no_token_mode_refuses_foreign_host_and_origin(open_server):
    s = open_server
    code, body = s.request(_event().encode(), {"Host": "attacker.example:8787"})
    assert code == 403 and "Host" in body["error"]
    code, body = s.request(_event().encode(), {"Origin": "http://attacker.example"})
    assert code == 403 and "cross-origin" in body["error"]
    code, body = s.request(_event(9).encode(), {"Origin": f"http://127.0.0.1:{s.port}"})
    assert code == 200


def test_records_per_request_are_capped(open_server):
    s = open_server
    code, body = s.request("\n".join(_event(i) for i in range(51)).encode(), {"Content-Type": "application/x-ndjson"})
    assert code == 413 and "at most 50" in body["error"]
    assert Store(s.db).count_events() == 0


def test_empty_kizashi_token_is_refused(tmp_path):
    env = {**os.environ, "KIZASHI_TOKEN": ""}
    r = subprocess.run(KIZASHI + ["serve", "--db", f"sqlite:///{tmp_path / 'x.db'}", "--port", str(free_port())],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.startswith("error:") and "KIZASHI_TOKEN" in r.stderr
    assert "Traceback" not in r.stderr
