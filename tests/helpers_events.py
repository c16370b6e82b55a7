"""Shared test data: a raw event dict (`make`), ATLAS-tagged detection events and a small extraction-then-evasion campaign
(store, ingest CLI and delivery tests)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kizashi.engine import DetectionEvent

T0 = datetime(2026, 11, 28, 1, 0, tzinfo=UTC)


def ev(eid, stage, attack, techniques, *, account="acct-a", model="digits", minutes=0, detector="prada"):
    return DetectionEvent.parse({
        "id": eid, "time": (T0 + timedelta(minutes=minutes)).isoformat(),
        "detector": {"id": f"kizashi.{detector}", "name": detector}, "stage": stage, "attack": attack,
        "atlas": {"techniques": techniques}, "subject": {"account": account}, "target": {"model": model},
        "score": 2.0, "threshold": 1.0,
    })


def campaign(prefix="", account="acct-a"):
    return [
        ev(prefix + "x1", "symptom", "extraction", ["AML.T0024.002", "AML.T0040"], account=account, minutes=0),
        ev(prefix + "x2", "symptom", "extraction", ["AML.T0024.002"], account=account, minutes=5),
        ev(prefix + "v1", "symptom", "evasion", ["AML.T0015"], account=account, minutes=60,
           detector="feature_squeezing"),
    ]


def make(**over):
    base = {
        "id": "evt-1",
        "time": "2026-11-28T10:00:00+09:00",
        "detector": {"id": "kizashi.prada", "name": "prada", "version": "0.1.0", "method": "juuti2019-prada"},
        "stage": "symptom",
        "attack": "extraction",
        "atlas": {"techniques": ["AML.T0024.002", "AML.T0040"]},
        "subject": {"account": "acct-7", "source_ip": "10.0.0.7"},
        "target": {"model": "digits-mlp", "model_version": "3", "endpoint": "/v1/predict"},
        "data_used": {"input": "target"},
        "score": 0.62,
        "threshold": 0.9,
        "severity": "high",
        "evidence": {"queries": 120, "w": 0.62},
    }
    base.update(over)
    return base
