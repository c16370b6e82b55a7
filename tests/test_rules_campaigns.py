"""The bundled pack raises one correlated alert per multi-stage campaign and none for benign accounts,
in streaming and batch mode, and the alerts carry the chain's and the rule's ATLAS techniques."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from kizashi.engine.events import DetectionEvent
from kizashi.engine.sigma import RuleSet, results_to_alerts

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)

TECHNIQUES = {
    ("symptom", "extraction"): ["AML.T0024.002", "AML.T0005.001", "AML.T0040"],
    ("symptom", "evasion"): ["AML.T0015", "AML.T0043"],
    ("precursor", "evasion"): ["AML.T0043.001", "AML.T0040"],
    ("precursor", "poisoning"): ["AML.T0020", "AML.T0018.000"],
    ("symptom", "poisoning"): ["AML.T0043.004", "AML.T0015"],
}


def event(eid, minutes, detector, stage, attack, account=None, model="digits-mlp", score=5.0):
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
        event("b1", 10, "stateful_knn", "precursor", "evasion", "acct-B"),
        event("b2", 15, "blacklight", "precursor", "evasion", "acct-B"),
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


@pytest.fixture(scope="module")
def pack() -> RuleSet:
    return RuleSet.bundled()


def correlated(results):
    return [r for r in results if r.type == "correlation"]


@pytest.mark.parametrize("mode", ["stream", "batch", "shuffled-stream"])
def test_one_correlated_alert_per_campaign(pack, mode):
    evs = campaign_events()
    if mode == "batch":
        results = pack.evaluate_batch(evs)
    else:
        ordered = sorted(evs, key=lambda e: e.time)
        lateness = timedelta(0)
        if mode == "shuffled-stream":
            random.Random(7).shuffle(ordered)
            lateness = timedelta(days=2)
        ev = pack.stream(lateness=lateness)
        results = []
        for e in ordered:
            results += ev.push(e)
        results += ev.flush()
    corr = correlated(results)
    got = {r.rule_name: (r.group, r.event_ids) for r in corr}
    assert got == EXPECTED, got
    assert len(corr) == 3
    # detection matches are emitted too (generate: true), one per event and matching rule
    matched_events = {r.event_ids[0] for r in results if r.type == "match"}
    assert {e.id for e in evs} <= matched_events


def test_stream_and_batch_give_identical_results(pack):
    evs = sorted(campaign_events(), key=lambda e: e.time)
    ev = pack.stream()
    streamed = [r for e in evs for r in ev.push(e)] + ev.flush()
    batch = pack.evaluate_batch(evs)
    key = lambda r: r.id  # noqa: E731
    assert sorted(map(key, streamed)) == sorted(map(key, batch))
    assert sorted(r.to_json() for r in streamed) == sorted(r.to_json() for r in batch)


def test_alerts_carry_chain_and_rule_techniques(pack):
    evs = campaign_events()
    by_id = {e.id: e for e in evs}
    results = correlated(pack.evaluate_batch(evs))
    alerts = {a.rule.name: a for a in results_to_alerts(results, by_id)}
    a = alerts["kizashi_campaign_extraction_then_evasion"]
    for tid in ["AML.T0040", "AML.T0024.002", "AML.T0043.002", "AML.T0015"]:
        assert tid in a.atlas.techniques
    assert a.level == "critical" and a.rule.type == "correlation"
    assert a.event_ids == ["a1", "a2", "a3", "a4"] and a.accounts == ["acct-A"]
    assert a.stages == ["symptom"] and a.attacks == ["evasion", "extraction"]
    assert a.id == results[[r.rule_name for r in results].index(a.rule.name)].id
    p = alerts["kizashi_campaign_poisoning_then_trigger"]
    assert "AML.T0043.004" in p.atlas.techniques and "AML.T0020" in p.atlas.techniques
    assert p.stages == ["precursor", "symptom"]


def test_replay_gives_the_same_ids(pack):
    evs = campaign_events()
    first = {r.id for r in pack.evaluate_batch(evs)}
    again = {r.id for r in pack.evaluate_batch(list(reversed(evs)))}
    assert first == again


def test_snapshot_restore_keeps_correlation_state(pack):
    evs = sorted(campaign_events(), key=lambda e: e.time)
    cut = next(i for i, e in enumerate(evs) if e.id == "a4")
    ev = pack.stream()
    before = [r for e in evs[:cut] for r in ev.push(e)]
    state = ev.snapshot()
    assert isinstance(state, bytes)
    ev2 = pack.stream()
    ev2.restore(state)
    after = [r for e in evs[cut:] for r in ev2.push(e)] + ev2.flush()
    names = {r.rule_name for r in correlated(before + after)}
    assert "kizashi_campaign_extraction_then_evasion" in names
    # without the state the restarted evaluator cannot see account A's extraction
    ev3 = pack.stream()
    lost = [r for e in evs[cut:] for r in ev3.push(e)] + ev3.flush()
    assert "kizashi_campaign_extraction_then_evasion" not in {r.rule_name for r in correlated(lost)}
