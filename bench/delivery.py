"""Delivery throughput per sink (alerts/s) against local receivers on 127.0.0.1, as JSON.

Baseline in the same run: rendering the same alerts with each sink's formatter and no network
(``render_only``), so a sink's number reads as "what the transport and receiver cost on top".
Receivers: the contract-enforcing HEC / Elastic / webhook receivers of the tests, a TCP and a UDP
line counter for syslog, a real medallion 3.0.0 TAXII server, and a temporary directory for STIX.

    .venv/bin/python bench/delivery.py [--alerts 2000] [--batch 100]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kizashi.connectors.elastic import EcsFormatter, ElasticBulkSink
from kizashi.connectors.splunk_hec import HecSink
from kizashi.connectors.stix import StixFileSink, StixFormatter
from kizashi.connectors.syslog import CefFormatter, SyslogSink
from kizashi.connectors.taxii import TaxiiSink
from kizashi.connectors.webhook import WebhookSink
from kizashi.engine.events import Alert, DetectionEvent, RuleRef
from kizashi.scenarios.receivers import ElasticReceiver, HecReceiver, WebhookReceiver

RULE = RuleRef(id="5b0f4a7e-3c1d-4e7b-9a55-2f0d8c1e6a01", title="Model extraction through the inference API",
               type="correlation", correlation_type="event_count")
RULE_TEXT = "title: Model extraction\nid: 5b0f4a7e-3c1d-4e7b-9a55-2f0d8c1e6a01\ndate: 2026-11-01\n" \
            "logsource: {product: kizashi}\ndetection: {sel: {attack: extraction}, condition: sel}\n"


def make_alerts(n: int, chain: int = 3):
    t0 = datetime(2026, 11, 28, tzinfo=UTC)
    alerts, events = [], {}
    for i in range(n):
        evs = [DetectionEvent.parse({
            "id": f"e{i}-{j}", "time": (t0 + timedelta(seconds=i * 10 + j)).isoformat(),
            "detector": {"id": "kizashi.prada", "name": "prada"}, "stage": "symptom", "attack": "extraction",
            "atlas": {"techniques": ["AML.T0024.002", "AML.T0040"]},
            "subject": {"account": f"acct-{i % 50}", "source_ip": f"203.0.113.{i % 250 + 1}"},
            "target": {"model": "digits-mlp"}, "score": 0.5, "threshold": 0.9, "severity": "high",
        }) for j in range(chain)]
        events.update({e.id: e for e in evs})
        alerts.append(Alert.from_events(rule=RULE, events=evs, level="high", group={"account.id": f"acct-{i % 50}"}))
    return alerts, events


class LineCounter:
    """Counts newline-framed (TCP) or datagram (UDP) syslog messages."""

    def __init__(self, kind: int):
        self.count = 0
        self.sock = socket.socket(socket.AF_INET, kind)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.kind = kind
        if kind == socket.SOCK_STREAM:
            self.sock.listen(16)
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        if self.kind == socket.SOCK_DGRAM:
            while True:
                self.sock.recv(70000)
                self.count += 1
        while True:
            conn, _ = self.sock.accept()
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn):
        with conn:
            while data := conn.recv(1 << 16):
                self.count += data.count(b"\n")


def start_medallion(d: Path):
    port_sock = socket.socket()
    port_sock.bind(("127.0.0.1", 0))
    port = port_sock.getsockname()[1]
    port_sock.close()
    coll = {"id": "c1", "title": "c1", "can_read": True, "can_write": True,
            "media_types": ["application/stix+json;version=2.1"], "objects": [], "manifest": []}
    (d / "data.json").write_text(json.dumps({
        "/discovery": {"title": "bench", "default": "http://127.0.0.1/api1/", "api_roots": []},
        "api1": {"information": {"title": "api1", "versions": ["application/taxii+json;version=2.1"],
                                 "max_content_length": 104857600}, "status": [], "collections": [coll]}}))
    (d / "config.json").write_text(json.dumps({
        "backend": {"module": "medallion.backends.memory_backend", "module_class": "MemoryBackend",
                    "filename": str(d / "data.json")}, "users": {"u": "p"}}))
    proc = subprocess.Popen([sys.executable, "-m", "medallion.scripts.run", "--host", "127.0.0.1", "--port",
                             str(port), str(d / "config.json")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    return proc, f"http://127.0.0.1:{port}/api1/"


def rate(fn, alerts, events, batch: int) -> float:
    t = time.perf_counter()
    for i in range(0, len(alerts), batch):
        fn(alerts[i:i + batch], events)
    return len(alerts) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--alerts", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--taxii-alerts", type=int, default=300, help="medallion's memory backend is O(n^2) per add")
    args = ap.parse_args()
    alerts, events = make_alerts(args.alerts)
    result: dict = {"bench": "delivery", "alerts": args.alerts, "batch": args.batch, "chain_events": 3,
                    "python": platform.python_version(), "cpus": os.cpu_count(), "unit": "alerts/s"}

    render = {
        "cef": CefFormatter(), "ecs": EcsFormatter(), "stix": StixFormatter({RULE.id: RULE_TEXT}),
    }
    result["render_only"] = {k: round(rate(f.render, alerts, events, args.batch)) for k, f in render.items()}

    sinks: dict[str, float] = {}
    hec, hec_ack = HecReceiver("t"), HecReceiver("t", require_ack=True, ack_after_polls=0)
    es, hook = ElasticReceiver("k"), WebhookReceiver(secret="s")
    tcp, udp = LineCounter(socket.SOCK_STREAM), LineCounter(socket.SOCK_DGRAM)
    with tempfile.TemporaryDirectory() as tmp:
        plan = {
            "splunk_hec": HecSink(hec.url, "t"),
            "splunk_hec_ack": HecSink(hec_ack.url, "t", ack=True),
            "elastic_bulk": ElasticBulkSink(es.url, api_key="k"),
            "webhook_hmac": WebhookSink(hook.url, secret="s"),
            "syslog_tcp_cef": SyslogSink("127.0.0.1", tcp.port, protocol="tcp", format="cef"),
            "syslog_udp_cef": SyslogSink("127.0.0.1", udp.port, protocol="udp", format="cef"),
            "stix_file": StixFileSink(Path(tmp) / "stix", StixFormatter({RULE.id: RULE_TEXT})),
        }
        for name, sink in plan.items():
            sinks[name] = round(rate(sink.send, alerts, events, args.batch))
            sink.close()
        time.sleep(0.3)
        checks = {"splunk_hec": len(hec.events) == args.alerts, "elastic_bulk": len(es.docs) == args.alerts,
                  "syslog_tcp_cef": tcp.count == args.alerts, "syslog_udp_cef_received": udp.count}
        proc, url = start_medallion(Path(tmp))
        try:
            n = min(args.taxii_alerts, args.alerts)
            taxii = TaxiiSink(url, collection="c1", user="u", password="p",
                              formatter=StixFormatter({RULE.id: RULE_TEXT}))
            sinks[f"taxii_medallion_first_{n}"] = round(rate(taxii.send, alerts[:n], events, args.batch))
            taxii.close()
        finally:
            proc.terminate()
            proc.wait(10)
    for r in (hec, hec_ack, es, hook):
        r.stop()
    result["sinks"] = sinks
    result["receiver_checks"] = checks
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
