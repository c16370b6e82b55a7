"""HTTP sinks: Splunk HTTP Event Collector, Elasticsearch ``_bulk`` with ECS documents, and a generic
JSON webhook. Each raises :class:`DeliveryError` with ``retryable`` set from the answer (5xx,
429, timeouts and HEC's "server busy" code 9 are retryable; auth and format errors are not).

* Splunk HEC (``/services/collector/event``): ``Authorization: Splunk <token>``, a batch of
  concatenated JSON event objects, indexer acknowledgement with ``X-Splunk-Request-Channel`` and
  ``/services/collector/ack`` polling when ``ack=True``.
* Elasticsearch ``_bulk``: NDJSON of ``{"index": {"_index": …, "_id": <alert id>}}`` + document;
  the ``_id`` makes re-sends idempotent; the answer must carry ``X-Elastic-Product: Elasticsearch``.
* Webhook: one JSON POST per batch, with an ``Idempotency-Key`` header and an optional
  ``X-Kizashi-Signature: sha256=<hmac>`` of the body.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from kizashi.engine.events import Alert, DetectionEvent
from kizashi.mappings import load_atlas

from .base import DeliveryError

SEVERITY = {"informational": 1, "low": 21, "medium": 47, "high": 73, "critical": 99}  # ECS risk-style 0-100


def _post(client: httpx.Client, name: str, url: str, **kw: Any) -> httpx.Response:
    try:
        return client.post(url, **kw)
    except httpx.HTTPError as exc:
        raise DeliveryError(f"{name}: {type(exc).__name__}: {exc}", retryable=True) from exc


def _check(name: str, resp: httpx.Response) -> None:
    if resp.status_code < 300:
        return
    retryable = resp.status_code >= 500 or resp.status_code == 429
    raise DeliveryError(f"{name}: HTTP {resp.status_code}: {resp.text[:300]}", retryable=retryable)


# -- ECS ---------------------------------------------------------------------------------------------


def ecs_document(alert: Alert, events: Mapping[str, DetectionEvent]) -> dict[str, Any]:
    """An alert as an Elastic Common Schema document (threat.* from the shipped ATLAS data)."""
    atlas = load_atlas()
    chain = [events[i] for i in alert.event_ids if i in events]
    techniques, subs = [], []
    for tid in alert.atlas.techniques:
        t = atlas.technique(tid)
        entry = {"id": t.id, "name": t.name, "reference": f"https://atlas.mitre.org/techniques/{t.id}"}
        (subs if t.parent else techniques).append((t, entry))
    parents = {e["id"] for _, e in techniques}
    tech_docs = [e for _, e in techniques]
    for t, _ in subs:  # ECS nests sub-techniques under their technique
        if t.parent not in parents:
            p = atlas.technique(t.parent)
            tech_docs.append({"id": p.id, "name": p.name, "reference": f"https://atlas.mitre.org/techniques/{p.id}"})
            parents.add(p.id)
    ips = sorted({e.subject.source_ip for e in chain if e.subject.source_ip})
    doc: dict[str, Any] = {
        "@timestamp": alert.last_seen.isoformat().replace("+00:00", "Z"),
        "ecs": {"version": "8.11.0"},
        "event": {"kind": "alert", "category": ["intrusion_detection"], "type": ["info"],
                  "id": alert.id, "severity": SEVERITY.get(alert.level, 47), "module": "kizashi",
                  "dataset": "kizashi.alert", "start": alert.first_seen.isoformat().replace("+00:00", "Z"),
                  "end": alert.last_seen.isoformat().replace("+00:00", "Z"),
                  "created": alert.created.isoformat().replace("+00:00", "Z")},
        "rule": {"id": alert.rule.id, "name": alert.rule.name or alert.rule.id,
                 "description": alert.rule.title or "", "category": alert.rule.type,
                 "ruleset": "kizashi"},
        "threat": {"framework": "MITRE ATLAS",
                   "tactic": {"id": list(alert.atlas.tactics),
                              "name": [atlas.tactic(t).name for t in alert.atlas.tactics],
                              "reference": [f"https://atlas.mitre.org/tactics/{t}" for t in alert.atlas.tactics]},
                   "technique": {"id": [e["id"] for e in tech_docs], "name": [e["name"] for e in tech_docs],
                                 "reference": [e["reference"] for e in tech_docs],
                                 "subtechnique": {"id": [e["id"] for _, e in subs],
                                                  "name": [e["name"] for _, e in subs],
                                                  "reference": [e["reference"] for _, e in subs]}}},
        "user": {"name": alert.accounts[0]} if len(alert.accounts) == 1 else {},
        "related": {"user": list(alert.accounts), "ip": ips},
        "labels": {"kizashi_stages": ",".join(alert.stages), "kizashi_attacks": ",".join(alert.attacks)},
        "kizashi": {"alert": alert.to_dict(), "models": list(alert.models)},
    }
    if ips:
        doc["source"] = {"ip": ips[0]}
    return doc


class EcsFormatter:
    """Alerts → NDJSON of ECS documents."""

    name = "ecs"

    def render(self, alerts: Sequence[Alert], events: Mapping[str, DetectionEvent]) -> str:
        return "".join(json.dumps(ecs_document(a, events), ensure_ascii=False) + "\n" for a in alerts)


class ElasticBulkSink:
    """Index alerts as ECS documents with the ``_bulk`` API (``_id`` = alert id: re-sends dedupe)."""

    def __init__(self, url: str, index: str = "kizashi-alerts", *, api_key: str | None = None,
                 username: str | None = None, password: str | None = None, timeout: float = 10.0,
                 name: str = "elastic", verify: bool | str = True):
        self.url = url.rstrip("/")
        self.index = index
        self.name = name
        headers = {"Content-Type": "application/x-ndjson"}
        if api_key:
            headers["Authorization"] = f"ApiKey {api_key}"
        auth = (username, password) if username else None
        self.client = httpx.Client(headers=headers, auth=auth, timeout=timeout, verify=verify)

    def __repr__(self) -> str:  # never shows credentials
        return f"ElasticBulkSink(name={self.name!r}, url={self.url!r}, index={self.index!r})"

    def body(self, alerts: Sequence[Alert], events: Mapping[str, DetectionEvent]) -> str:
        lines = []
        for a in alerts:
            lines.append(json.dumps({"index": {"_index": self.index, "_id": a.id}}))
            lines.append(json.dumps(ecs_document(a, events), ensure_ascii=False))
        return "\n".join(lines) + "\n"

    def send(self, alerts: Sequence[Alert], events: Mapping[str, DetectionEvent]) -> None:
        if not alerts:
            return
        resp = _post(self.client, self.name, f"{self.url}/_bulk", content=self.body(alerts, events).encode())
        _check(self.name, resp)
        if resp.headers.get("X-Elastic-Product") != "Elasticsearch":
            raise DeliveryError(f"{self.name}: the server is not Elasticsearch (no X-Elastic-Product header)",
                                retryable=False)
        data = resp.json()
        if data.get("errors"):
            bad = [it for it in data.get("items", []) for op in it.values() if op.get("status", 200) >= 300]
            retry = all(op.get("status", 500) in (429, 503) for it in bad for op in it.values())
            raise DeliveryError(f"{self.name}: {len(bad)} document(s) rejected: {json.dumps(bad[:2])[:300]}",
                                retryable=retry)

    def close(self) -> None:
        self.client.close()


# -- Splunk HEC ---------------------------------------------------------------------------------------


class HecSink:
    """Splunk HTTP Event Collector (event endpoint), optional indexer acknowledgement."""

    def __init__(self, url: str, token: str, *, index: str | None = None, sourcetype: str = "kizashi:alert",
                 source: str = "kizashi", ack: bool = False, channel: str | None = None,
                 ack_timeout: float = 30.0, timeout: float = 10.0, name: str = "splunk",
                 verify: bool | str = True):
        self.url = url.rstrip("/")
        self.index, self.sourcetype, self.source = index, sourcetype, source
        self.ack = ack
        self.channel = channel or str(uuid.uuid4())
        self.ack_timeout = ack_timeout
        self.name = name
        headers = {"Authorization": f"Splunk {token}"}
        if ack:
            headers["X-Splunk-Request-Channel"] = self.channel
        self.client = httpx.Client(headers=headers, timeout=timeout, verify=verify)

    def body(self, alerts: Sequence[Alert], events: Mapping[str, DetectionEvent]) -> str:
        out = []
        for a in alerts:
            ev: dict[str, Any] = {"time": round(a.last_seen.timestamp(), 3), "host": "kizashi",
                                  "source": self.source, "sourcetype": self.sourcetype,
                                  "event": {**a.to_dict(), "events": [events[i].flat() for i in a.event_ids
                                                                      if i in events][:50]},
                                  "fields": {"atlas_technique": list(a.atlas.techniques), "level": a.level,
                                             "kizashi_alert_id": a.id}}
            if self.index:
                ev["index"] = self.index
            out.append(json.dumps(ev, ensure_ascii=False, default=str))
        return "".join(out)  # HEC batches are concatenated JSON objects

    def send(self, alerts: Sequence[Alert], events: Mapping[str, DetectionEvent]) -> None:
        if not alerts:
            return
        resp = _post(self.client, self.name, f"{self.url}/services/collector/event",
                     content=self.body(alerts, events).encode())
        try:
            data = resp.json()
        except ValueError:
            data = {}
        if resp.status_code >= 300:
            code = data.get("code")
            retry = resp.status_code >= 500 or resp.status_code == 429 or code == 9
            raise DeliveryError(f"{self.name}: HTTP {resp.status_code} code {code}: {data.get('text', resp.text[:200])}",
                                retryable=retry)
        if self.ack:
            self._wait_ack(int(data["ackId"]))

    def __repr__(self) -> str:  # never shows the token
        return f"HecSink(name={self.name!r}, url={self.url!r}, ack={self.ack})"

    def _wait_ack(self, ack_id: int) -> None:
        deadline = time.monotonic() + self.ack_timeout
        delay = 0.05
        while time.monotonic() < deadline:
            resp = _post(self.client, self.name, f"{self.url}/services/collector/ack", json={"acks": [ack_id]})
            _check(self.name, resp)
            if resp.json().get("acks", {}).get(str(ack_id)):
                return
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        raise DeliveryError(f"{self.name}: no indexer acknowledgement for ackId {ack_id}", retryable=True)

    def close(self) -> None:
        self.client.close()


# -- webhook -------------------------------------------------------------------------------------------


class WebhookSink:
    """POST ``{"alerts": [...], "events": {...}}`` as JSON."""

    def __init__(self, url: str, *, headers: Mapping[str, str] | None = None, secret: str | None = None,
                 timeout: float = 10.0, name: str = "webhook", verify: bool | str = True):
        self.url = url
        self.secret = secret
        self.name = name
        self.client = httpx.Client(headers=dict(headers or {}), timeout=timeout, verify=verify)

    def __repr__(self) -> str:  # never shows the secret
        return f"WebhookSink(name={self.name!r}, url={self.url!r}, signed={self.secret is not None})"

    def send(self, alerts: Sequence[Alert], events: Mapping[str, DetectionEvent]) -> None:
        if not alerts:
            return
        body = json.dumps({"alerts": [a.to_dict() for a in alerts],
                           "events": {i: events[i].to_dict() for a in alerts for i in a.event_ids if i in events}},
                          ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json",
                   "Idempotency-Key": hashlib.sha256(",".join(a.id for a in alerts).encode()).hexdigest()}
        if self.secret:
            headers["X-Kizashi-Signature"] = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
        _check(self.name, _post(self.client, self.name, self.url, content=body, headers=headers))

    def close(self) -> None:
        self.client.close()
