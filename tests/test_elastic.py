"""Elastic ``_bulk`` sink and ECS documents against a local receiver enforcing the bulk contract."""

from __future__ import annotations

import json

import pytest
from helpers_alerts import all_alerts, evasion_alert
from kizashi.connectors.base import DeliveryError
from kizashi.connectors.elastic import EcsFormatter, ElasticBulkSink
from kizashi.mappings import load_atlas
from kizashi.scenarios.receivers import ElasticReceiver


def test_ecs_documents_carry_atlas_threat_fields():
    alerts, events = all_alerts()
    docs = [json.loads(line) for line in EcsFormatter().render(alerts, events).splitlines()]
    assert len(docs) == len(alerts)
    atlas = load_atlas()
    for a, d in zip(alerts, docs, strict=True):
        assert d["event"]["kind"] == "alert" and d["event"]["category"] == ["intrusion_detection"]
        assert d["event"]["id"] == a.id and d["rule"]["id"] == a.rule.id
        t = d["threat"]
        assert t["framework"] == "MITRE ATLAS"
        assert t["tactic"]["id"] == a.atlas.tactics
        assert t["tactic"]["name"] == [atlas.tactic(x).name for x in a.atlas.tactics]
        subs = [x for x in a.atlas.techniques if atlas.technique(x).parent]
        assert t["technique"]["subtechnique"]["id"] == subs
        # each sub-technique's parent is listed as a technique
        assert {atlas.technique(s).parent for s in subs} <= set(t["technique"]["id"])
        assert all(r == f"https://atlas.mitre.org/techniques/{i}"
                   for i, r in zip(t["technique"]["id"], t["technique"]["reference"], strict=True))
    ev = docs[1]  # evasion: IPv6 source, sub-technique AML.T0043.001 under AML.T0043
    assert "AML.T0043" in ev["threat"]["technique"]["id"] and ev["source"]["ip"] == "2001:db8::42"


def test_bulk_indexes_by_alert_id_and_resend_dedupes():
    r = ElasticReceiver("a2V5OnNlY3JldA==")
    try:
        alerts, events = all_alerts()
        sink = ElasticBulkSink(r.url, "kizashi-alerts", api_key="a2V5OnNlY3JldA==")
        sink.send(alerts, events)
        sink.send(alerts, events)
        assert set(r.docs) == {("kizashi-alerts", a.id) for a in alerts}
        body = r.requests[0]["body"].decode()
        assert body.endswith("\n") and len(body.splitlines()) == 2 * len(alerts)
        assert r.requests[0]["headers"]["Content-Type"] == "application/x-ndjson"
        sink.close()
    finally:
        r.stop()


def test_auth_failure_and_impostor_are_not_retryable():
    r = ElasticReceiver("right")
    bad = ElasticReceiver("k", impostor=True)
    try:
        alerts, events = all_alerts()
        with pytest.raises(DeliveryError) as err:
            ElasticBulkSink(r.url, api_key="wrong").send(alerts, events)
        assert err.value.retryable is False and "401" in str(err.value)
        with pytest.raises(DeliveryError) as err:
            ElasticBulkSink(bad.url, api_key="k").send(alerts, events)
        assert err.value.retryable is False and "X-Elastic-Product" in str(err.value)
    finally:
        r.stop()
        bad.stop()


def test_partial_failures_name_the_documents_and_decide_retry():
    a, ev = evasion_alert()
    alerts, events = all_alerts()
    r = ElasticReceiver("k", reject_ids={a.id: 429})
    try:
        with pytest.raises(DeliveryError) as err:
            ElasticBulkSink(r.url, api_key="k").send(alerts, events)
        assert err.value.retryable is True and a.id in str(err.value)
        assert len(r.docs) == len(alerts) - 1
        r.reject_ids = {a.id: 400}
        with pytest.raises(DeliveryError) as err:
            ElasticBulkSink(r.url, api_key="k").send(alerts, events)
        assert err.value.retryable is False
        r.unavailable = 1
        with pytest.raises(DeliveryError) as err:
            ElasticBulkSink(r.url, api_key="k").send(alerts, events)
        assert err.value.retryable is True and "503" in str(err.value)
    finally:
        r.stop()
