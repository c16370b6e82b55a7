"""Shared test data: detection events of three multi-stage campaigns and benign noise, and the
correlated alert each bundled campaign rule must raise (rules pack and rules CLI tests)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kizashi.engine.events import DetectionEvent

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)

TECHNIQUES = {
    ("symptom", "extraction"): ["AML.T0024.002", "AML.T0005.001", "AML.T0040"],
    ("symptom", "evasion"): ["AML.T0015", "AML.T0043"],
    ("precursor", "evasion"): ["AML.T0043.001", "AML.T0040"],
    ("precursor", "poisoning"): ["AML.T0020", "AML.T0018.000"],
    ("symptom", "poisoning"): ["AML.T0043.004", "AML.T0015"],
}


def event(eid, minutes, detector, stage, attack, account=None, model="digits-mlp", score=5.0, severity="medium"):
    return DetectionEvent(
        id=eid,
        time=T0 + timedelta(minutes=minutes),
        detector={"id": f"kizashi.{detector}", "name": detector},
        stage=stage,
        attack=attack,
        atlas={"techniques": TECHNIQUES[(stage, attack)]},
        subject={"account": account},
        target={"model": model},
        score=score,
        threshold=1.0,
        severity=severity,
    )


def campaign_events() -> list[DetectionEvent]:
    evs = [
        # account A: extraction, then adversarial inputs (transfer attack)
        event("a1", 0, "prada", "symptom", "extraction", "acct-A"),
        event("a2", 30, "query_rate", "symptom", "extraction", "acct-A"),
        event("a3", 90, "vardetect", "symptom", "extraction", "acct-A"),
        event("a4", 240, "feature_squeezing", "symptom", "evasion", "acct-A"),
        event("a5", 250, "magnet", "symptom", "evasion", "acct-A"),
        # account B: black-box probing, then adversarial inputs
        event("b1", 10, "stateful_knn", "precursor", "evasion", "acct-B", severity="high"),
        event("b2", 15, "blacklight", "precursor", "evasion", "acct-B", severity="critical"),
        event("b3", 200, "softmax", "symptom", "evasion", "acct-B"),
        # poisoning found at training time, trigger inputs the next day against the same model
        event("p1", -600, "spectral_signature", "precursor", "poisoning", None, model="digits-backdoored"),
        event("p2", 900, "strip", "symptom", "poisoning", "acct-C", model="digits-backdoored"),
        event("p3", 905, "misa", "symptom", "poisoning", "acct-C", model="digits-backdoored"),
        # benign account D: an input alarm only, with no precursor (no correlated alert)
        event("d1", 300, "softmax", "symptom", "evasion", "acct-D", model="other-model"),
        # account E: extraction only, no evasion (no correlated alert); evasion first then extraction for F
        event("e1", 20, "hoda", "symptom", "extraction", "acct-E"),
        event("f1", 20, "magnet", "symptom", "evasion", "acct-F", model="other-model"),
        event("f2", 60, "atli", "symptom", "extraction", "acct-F", model="other-model"),
    ]
    return evs


EXPECTED = {
    "kizashi_campaign_extraction_then_evasion": ({"account.id": "acct-A"}, ["a1", "a2", "a3", "a4"]),
    "kizashi_campaign_probing_then_evasion": ({"account.id": "acct-B"}, ["b1", "b2", "b3"]),
    "kizashi_campaign_poisoning_then_trigger": ({"model.id": "digits-backdoored"}, ["p1", "p2"]),
}
