"""Elastic: alerts as Elastic Common Schema documents, indexed with the Elasticsearch ``_bulk`` API.

``_bulk`` takes NDJSON of ``{"index": {"_index": …, "_id": <alert id>}}`` + document; the ``_id``
makes re-sends idempotent. The answer must carry ``X-Elastic-Product: Elasticsearch``; per-item
429/503 are retryable, other item errors not. ``threat.*`` follows ECS's MITRE fields with the ATLAS
framework, named from the alert's :class:`~kizashi.connectors.alertview.AlertView`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from kizashi.engine.events import Alert, DetectionEvent

from .alertview import AlertView, TechniqueInfo, iso_z, technique_info
from .base import DeliveryError, RecordFormatter
from .http_delivery import check, json_object, post

ECS_VERSION = "8.11.0"


def _technique_fields(techniques: Sequence[TechniqueInfo]) -> dict[str, list[str]]:
    return {"id": [t.id for t in techniques], "name": [t.short_name for t in techniques],
            "reference": [t.url for t in techniques]}


def ecs_threat(v: AlertView) -> dict[str, Any]:
    """``threat.*``: tactics, techniques (parents of sub-techniques included, as ECS nests
    sub-techniques under their technique) and sub-techniques."""
    subs = [t for t in v.techniques if t.parent]
    techniques = [t for t in v.techniques if not t.parent]
    listed = {t.id for t in techniques}
    for s in subs:
        if s.parent not in listed:
            techniques.append(technique_info(s.parent))
            listed.add(s.parent)
    return {"framework": "MITRE ATLAS",
            "tactic": {"id": [t.id for t in v.tactics], "name": [t.name for t in v.tactics],
                       "reference": [t.url for t in v.tactics]},
            "technique": {**_technique_fields(techniques), "subtechnique": _technique_fields(subs)}}


def ecs_document(v: AlertView) -> dict[str, Any]:
    """An alert as an Elastic Common Schema document."""
    alert = v.alert
    ips = sorted(v.source_ips)
    doc: dict[str, Any] = {
        "@timestamp": iso_z(alert.last_seen),
        "ecs": {"version": ECS_VERSION},
        "event": {"kind": "alert", "category": ["intrusion_detection"], "type": ["info"],
                  "id": alert.id, "severity": v.severity.score, "module": "kizashi",
                  "dataset": "kizashi.alert", "start": iso_z(alert.first_seen), "end": iso_z(alert.last_seen),
                  "created": iso_z(alert.created)},
        "rule": {"id": alert.rule.id, "name": v.rule_name, "description": alert.rule.title or "",
                 "category": alert.rule.type, "ruleset": "kizashi"},
        "threat": ecs_threat(v),
        "user": {"name": alert.accounts[0]} if len(alert.accounts) == 1 else {},
        "related": {"user": list(alert.accounts), "ip": ips},
        "labels": {"kizashi_stages": ",".join(alert.stages), "kizashi_attacks": ",".join(alert.attacks)},
        "kizashi": {"alert": alert.to_dict(), "models": list(alert.models)},
    }
    if v.source_ips:
        doc["source"] = {"ip": v.source_ips[0]}
    return doc


class EcsFormatter(RecordFormatter):
    """Alerts → NDJSON of ECS documents."""

    name = "ecs"

    def record(self, v: AlertView) -> str:
        return json.dumps(ecs_document(v), ensure_ascii=False)


class ElasticBulkSink:
    """Index alerts as ECS documents with the ``_bulk`` API (``_id`` = alert id: re-sends dedupe)."""

    def __init__(self, url: str, index: str = "kizashi-alerts", *, api_key: str | None = None,
                 username: str | None = None, password: str | None = None, timeout: float = 10.0,
                 name: str = "elastic", verify: bool | str = True):
        self.url = url.rstrip("/")
        self.index = index
        self.name = name
        self.formatter = EcsFormatter()
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
            lines.append(self.formatter.line(a, events))
        return "\n".join(lines) + "\n"

    def send(self, alerts: Sequence[Alert], events: Mapping[str, DetectionEvent]) -> None:
        if not alerts:
            return
        resp = post(self.client, self.name, f"{self.url}/_bulk", content=self.body(alerts, events).encode())
        check(self.name, resp)
        if resp.headers.get("X-Elastic-Product") != "Elasticsearch":
            raise DeliveryError(f"{self.name}: the server is not Elasticsearch (no X-Elastic-Product header)",
                                retryable=False)
        data = json_object(self.name, resp)
        if data.get("errors"):
            bad = [it for it in data.get("items", []) for op in it.values() if op.get("status", 200) >= 300]
            retry = all(op.get("status", 500) in (429, 503) for it in bad for op in it.values())
            raise DeliveryError(f"{self.name}: {len(bad)} document(s) rejected: {json.dumps(bad[:2])[:300]}",
                                retryable=retry)

    def close(self) -> None:
        self.client.close()
