"""Realistic alerts for the output-connector tests, built with ``Alert.from_events`` from events like
the detectors emit (PRADA-style extraction, an evasion chain, a poisoning finding), plus a hostile one
whose values carry every CEF/LEEF/syslog delimiter, newlines, control characters and unicode."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kizashi.engine.events import Alert, DetectionEvent, RuleRef

T0 = datetime(2026, 11, 28, 1, 0, tzinfo=UTC)

EXTRACTION_RULE = """\
title: Model extraction through the inference API
id: 5b0f4a7e-3c1d-4e7b-9a55-2f0d8c1e6a01
status: experimental
description: A PRADA detector flagged a query stream, then the same account kept querying.
author: kizashi
date: 2026-11-01
modified: 2026-11-20
tags:
  - atlas.aml.t0024.002
logsource:
  product: kizashi
  category: ml_detection
detection:
  selection:
    attack: extraction
    stage: symptom
  condition: selection
level: high
"""

EVASION_RULE = """\
title: Adversarial examples against the classifier
id: 7c2e9d41-8a0b-4f3c-b6d2-1e5a9f0c3b22
status: experimental
date: 2026-10-15
logsource:
  product: kizashi
  category: ml_detection
detection:
  selection:
    attack: evasion
  condition: selection
level: medium
"""

HOSTILE = 'a|b\\c=d e^f\tg\nh\ri"j]k\x00l\x1bm\x7fn\u0085o — 攻撃者 🚨 <script>'


def event(i: int, **over) -> DetectionEvent:
    base = {
        "id": f"evt-{i:04d}",
        "time": (T0 + timedelta(seconds=30 * i)).isoformat(),
        "detector": {"id": "kizashi.prada", "name": "prada", "version": "0.1.0", "method": "juuti2019-prada"},
        "stage": "symptom",
        "attack": "extraction",
        "atlas": {"techniques": ["AML.T0024.002", "AML.T0040"]},
        "subject": {"account": "acct-7", "source_ip": "203.0.113.7", "session": "s-91"},
        "target": {"model": "digits-mlp", "model_version": "3", "endpoint": "https://ml.example/v1/predict"},
        "data_used": {"input": "target"},
        "score": 0.62 + 0.01 * i,
        "threshold": 0.9,
        "severity": "high",
        "evidence": {"queries": 120 + i, "shapiro_w": 0.62},
    }
    base.update(over)
    return DetectionEvent.parse(base)


def extraction_alert(n_events: int = 3, start: int = 0) -> tuple[Alert, dict[str, DetectionEvent]]:
    evs = [event(start + i) for i in range(n_events)]
    rule = RuleRef(id="5b0f4a7e-3c1d-4e7b-9a55-2f0d8c1e6a01", title="Model extraction through the inference API",
                   type="correlation", correlation_type="event_count")
    alert = Alert.from_events(rule=rule, events=evs, level="high", group={"account.id": "acct-7"},
                              value=float(n_events))
    return alert, {e.id: e for e in evs}


def evasion_alert() -> tuple[Alert, dict[str, DetectionEvent]]:
    evs = [
        event(100 + i, attack="evasion", stage="symptom" if i else "precursor",
              detector={"id": "kizashi.feature-squeezing", "name": "feature_squeezing", "version": "0.1.0"},
              atlas={"techniques": ["AML.T0043.001", "AML.T0015"]},
              subject={"account": "svc-batch", "source_ip": "2001:db8::42"},
              evidence={"l1_distance": 1.7 + i})
        for i in range(2)
    ]
    rule = RuleRef(id="7c2e9d41-8a0b-4f3c-b6d2-1e5a9f0c3b22", title="Adversarial examples against the classifier")
    return Alert.from_events(rule=rule, events=evs, level="medium"), {e.id: e for e in evs}


def poisoning_alert() -> tuple[Alert, dict[str, DetectionEvent]]:
    e = event(200, attack="poisoning", stage="symptom",
              detector={"id": "kizashi.activation-clustering", "name": "activation_clustering", "version": "0.1.0"},
              atlas={"techniques": ["AML.T0020"]}, subject={}, data_used={"training_data": "target"},
              target={"model": "digits-mlp"}, evidence={"poisoned_fraction": 0.08})
    rule = RuleRef(id="kizashi-poisoned-cluster", title="Poisoned cluster in training data")
    return Alert.from_events(rule=rule, events=[e], level="critical"), {e.id: e}


def hostile_alert() -> tuple[Alert, dict[str, DetectionEvent]]:
    """Every value an attacker controls (account, session, model name, rule title) is hostile."""
    e = event(300, subject={"account": "x" + HOSTILE + "x", "source_ip": "198.51.100.9", "session": HOSTILE},
              target={"model": "m" + HOSTILE, "endpoint": "/p?q=" + HOSTILE},
              evidence={"note": HOSTILE})
    rule = RuleRef(id="rule|" + HOSTILE, title="t" + HOSTILE)
    return Alert.from_events(rule=rule, events=[e], level="low"), {e.id: e}


def all_alerts() -> tuple[list[Alert], dict[str, DetectionEvent]]:
    alerts, events = [], {}
    for make in (extraction_alert, evasion_alert, poisoning_alert):
        a, ev = make()
        alerts.append(a)
        events.update(ev)
    return alerts, events


RULE_TEXTS = {
    "5b0f4a7e-3c1d-4e7b-9a55-2f0d8c1e6a01": EXTRACTION_RULE,
    "7c2e9d41-8a0b-4f3c-b6d2-1e5a9f0c3b22": EVASION_RULE,
}
