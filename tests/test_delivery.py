"""Outbox delivery to HTTP receivers that enforce the Splunk HEC and Elasticsearch _bulk contracts,
and a webhook that is down, then comes back: every alert arrives exactly once."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from helpers_events import campaign
from kizashi.connectors.base import DeliveryError
from kizashi.connectors.config import load_sinks
from kizashi.connectors.elastic import ElasticBulkSink
from kizashi.connectors.outbox import Backoff, deliver
from kizashi.connectors.splunk_hec import HecSink
from kizashi.engine.alerting import AlertingConfig
from kizashi.engine.pipeline import Pipeline
from kizashi.engine.store import Store


class Receiver:
    """A loopback HTTP server; ``handler(method, path, headers, body) -> (status, headers, body)``."""

    def __init__(self, handler, port=0):
        outer = self
        self.handler = handler
        self.requests = []

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.requests.append((self.path, dict(self.headers), body))
                status, headers, out = outer.handler("POST", self.path, self.headers, body)
                data = json.dumps(out).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), H)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def store_with_alerts(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'd.db'}")
    # plain Sigma alerting (the pack's standalone detection rules alert too): several alerts to deliver
    Pipeline(s, alerting=AlertingConfig()).ingest(campaign() + campaign(prefix="b-", account="acct-b"))
    assert s.count_alerts() >= 4
    return s


def splunk_handler(token="tok"):
    state = {"busy": 1, "acks": {}, "events": [], "next": 0}

    def handle(method, path, headers, body):
        if headers.get("Authorization") != f"Splunk {token}":
            return 401, {}, {"text": "Invalid authorization", "code": 3}
        if path == "/services/collector/event":
            if not headers.get("X-Splunk-Request-Channel"):
                return 400, {}, {"text": "Data channel is missing", "code": 10}
            if state["busy"]:
                state["busy"] -= 1
                return 503, {}, {"text": "Server is busy", "code": 9}
            dec, text, objs = json.JSONDecoder(), body.decode(), []
            i = 0
            while i < len(text):  # concatenated JSON objects, not an array
                obj, i = dec.raw_decode(text, i)
                objs.append(obj)
            assert all("event" in o and "time" in o for o in objs)
            state["events"] += objs
            ack = state["next"]
            state["next"] += 1
            state["acks"][ack] = True
            return 200, {}, {"text": "Success", "code": 0, "ackId": ack}
        if path == "/services/collector/ack":
            acks = json.loads(body)["acks"]
            return 200, {}, {"acks": {str(a): state["acks"].get(a, False) for a in acks}}
        return 404, {}, {"text": "not found"}

    return handle, state


def test_hec_auth_busy_retry_and_ack(store_with_alerts):
    handle, state = splunk_handler()
    r = Receiver(handle)
    try:
        bad = HecSink(r.url, "wrong", ack=True)
        with pytest.raises(DeliveryError) as ei:
            bad.send(store_with_alerts.list_alerts(), {})
        assert not ei.value.retryable and "401" in str(ei.value)
        sink = HecSink(r.url, "tok", ack=True, name="splunk")
        rep = deliver(store_with_alerts, [sink], backoff=Backoff(base=0.0, jitter=0.0))
        assert rep.failed == {"splunk": store_with_alerts.count_alerts()}  # code 9: busy, retryable
        rep = deliver(store_with_alerts, [sink], backoff=Backoff(base=0.0, jitter=0.0))
        assert rep.delivered == {"splunk": store_with_alerts.count_alerts()}
        ids = [e["fields"]["kizashi_alert_id"] for e in state["events"]]
        assert sorted(ids) == sorted(a.id for a in store_with_alerts.list_alerts())
    finally:
        r.stop()


def test_elastic_bulk_ecs_and_product_header(store_with_alerts):
    docs = {}

    def handle(method, path, headers, body):
        if path != "/_bulk" or headers.get("Content-Type") != "application/x-ndjson":
            return 400, {}, {"error": "bad request"}
        lines = body.decode().split("\n")
        assert lines[-1] == ""
        items = []
        for action, doc in zip(lines[0:-1:2], lines[1:-1:2], strict=True):
            meta = json.loads(action)["index"]
            docs[meta["_id"]] = json.loads(doc)
            items.append({"index": {"_id": meta["_id"], "status": 201}})
        return 200, {"X-Elastic-Product": "Elasticsearch"}, {"errors": False, "items": items}

    r = Receiver(handle)
    try:
        sink = ElasticBulkSink(r.url, name="elastic")
        alerts = store_with_alerts.list_alerts()
        events = store_with_alerts.get_events(i for a in alerts for i in a.event_ids)
        sink.send(alerts, events)
        sink.send(alerts, events)  # a re-send overwrites by _id: no duplicate
        assert set(docs) == {a.id for a in alerts}
        corr = next(d for d in docs.values() if d["rule"]["category"] == "correlation")
        assert corr["event"]["kind"] == "alert" and corr["event"]["category"] == ["intrusion_detection"]
        assert corr["threat"]["framework"] == "MITRE ATLAS"
        assert "AML.T0024" in corr["threat"]["technique"]["id"]
        assert "AML.T0024.002" in corr["threat"]["technique"]["subtechnique"]["id"]
        assert "Exfiltration" in corr["threat"]["tactic"]["name"]
    finally:
        r.stop()

    impostor = Receiver(lambda *a: (200, {}, {"errors": False, "items": []}))
    try:
        with pytest.raises(DeliveryError, match="not Elasticsearch") as ei:
            ElasticBulkSink(impostor.url).send(alerts, events)
        assert not ei.value.retryable
    finally:
        impostor.stop()


def test_webhook_down_then_up_receives_every_alert_exactly_once(store_with_alerts, tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HOOK_SECRET", "s3cr3t")
    cfg = tmp_path / "sinks.yaml"
    cfg.write_text(f'sinks:\n  - {{name: hook, type: webhook, url: "http://127.0.0.1:{port}/hook", secret: "${{HOOK_SECRET}}"}}\n')
    [sink] = load_sinks(cfg)
    assert sink.secret == "s3cr3t" and "s3cr3t" not in repr(sink) and "hook" in repr(sink)
    n = store_with_alerts.count_alerts()
    rep = deliver(store_with_alerts, [sink], backoff=Backoff(base=3600))  # receiver down
    assert rep.failed == {"hook": n} and "hook" in rep.errors
    assert store_with_alerts.pending("hook") == []  # backing off
    received = []

    def handle(method, path, headers, body):
        from kizashi.connectors.webhook import verify_signature

        assert verify_signature("s3cr3t", body, headers["X-Kizashi-Signature"])
        received.extend(a["id"] for a in json.loads(body)["alerts"])
        return 200, {}, {"ok": True}

    r = Receiver(handle, port=port)
    try:
        from datetime import UTC, datetime

        later = datetime.now(UTC) + timedelta(hours=2)
        assert len(store_with_alerts.pending("hook", now=later)) == n
        with store_with_alerts.engine.begin() as c:  # the backoff has elapsed
            from kizashi.engine.store import outbox_table
            from sqlalchemy import update
            c.execute(update(outbox_table).values(next_try=datetime.now(UTC)))
        rep = deliver(store_with_alerts, [sink])
        assert rep.delivered == {"hook": n}
        assert deliver(store_with_alerts, [sink]).delivered == {}  # nothing twice
    finally:
        r.stop()
    assert sorted(received) == sorted(a.id for a in store_with_alerts.list_alerts())


def test_sink_config_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("NOPE", raising=False)
    cfg = tmp_path / "s.yaml"
    cfg.write_text('sinks:\n  - {name: a, type: webhook, url: "${NOPE}"}\n')
    with pytest.raises(ValueError, match="environment variable NOPE is not set"):
        load_sinks(cfg)
    cfg.write_text("sinks:\n  - {name: a, type: pager}\n")
    with pytest.raises(ValueError, match="unknown type 'pager'"):
        load_sinks(cfg)
    cfg.write_text("sinks:\n  - {name: a, type: syslog, port: 1}\n  - {name: a, type: syslog, port: 2}\n")
    with pytest.raises(ValueError, match="unique"):
        load_sinks(cfg)


def test_event_clock_raises_alerts_at_their_last_event(tmp_path):
    wall = Store(f"sqlite:///{tmp_path / 'wall.db'}")
    Pipeline(wall).ingest(campaign())
    simulated = Store(f"sqlite:///{tmp_path / 'sim.db'}")
    Pipeline(simulated, event_clock=True).ingest(campaign())
    assert [a.id for a in wall.list_alerts()] == [a.id for a in simulated.list_alerts()]
    assert all(a.created == a.last_seen for a in simulated.list_alerts())
    assert all(a.created > a.last_seen + timedelta(days=1) for a in wall.list_alerts())  # events are from T0


def test_outbox_drained_into_file_sinks_once_each_batch_in_store_order(store_with_alerts, tmp_path):
    from kizashi.connectors.files import FileSink

    lines, layer = FileSink(tmp_path / "a.jsonl", "alerts", name="lines"), FileSink(tmp_path / "l.json", "navigator")
    rep = deliver(store_with_alerts, [lines, layer], batch_size=3)
    n = store_with_alerts.count_alerts()
    assert rep.delivered == {"lines": n, "file": n} and n > 3
    stored = [a.to_json() for a in store_with_alerts.list_alerts()]
    assert sorted((tmp_path / "a.jsonl").read_text().splitlines()) == sorted(stored)  # appended batch after batch
    assert json.loads((tmp_path / "l.json").read_text())["description"].startswith(f"{n % 3 or 3} kizashi")
    assert deliver(store_with_alerts, [lines]).delivered == {}
    assert len((tmp_path / "a.jsonl").read_text().splitlines()) == n  # nothing twice
    one = FileSink(tmp_path / "one.jsonl", "alerts", append=False, name="one")
    deliver(store_with_alerts, [one], batch_size=n)
    assert (tmp_path / "one.jsonl").read_text().splitlines() == stored  # a batch is in the store's order
