"""Shared test data: ATLAS-tagged detection events and a small extraction-then-evasion campaign
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
