"""Event model: JSON round trip, flat dotted form, and clear rejection of bad events."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from helpers_events import make
from hypothesis import given, settings
from hypothesis import strategies as st
from kizashi.engine import Alert, DetectionEvent, EventValidationError, RuleRef, flatten_event
from kizashi.engine.events import EVENT_FIELD_MAP, unflatten_event


def test_parse_normalises_time_to_utc_and_derives_tactics():
    e = DetectionEvent.parse(make())
    assert e.time == datetime(2026, 11, 28, 1, 0, tzinfo=UTC)
    assert e.time.utcoffset() == timedelta(0)
    # tactics derived from techniques, in kill-chain order (AI Model Access before Exfiltration)
    assert e.atlas.tactics == ["AML.TA0000", "AML.TA0010"]


def test_json_round_trip():
    e = DetectionEvent.parse(make())
    again = DetectionEvent.parse(e.to_json())
    assert again == e
    assert json.loads(e.to_json())["time"].startswith("2026-11-28T01:00:00")


def test_flat_form_keys_and_values():
    f = DetectionEvent.parse(make()).flat()
    assert f["stage"] == "symptom" and f["attack"] == "extraction"
    assert f["atlas.technique"] == ["AML.T0024.002", "AML.T0040"]
    assert f["account.id"] == "acct-7" and f["source.ip"] == "10.0.0.7"
    assert f["detector.name"] == "prada" and f["model.id"] == "digits-mlp"
    assert f["data.input"] == "target" and f["data.output"] is None
    assert f["evidence.queries"] == 120
    assert f["time"] == "2026-11-28T01:00:00Z"
    assert set(EVENT_FIELD_MAP) <= set(f)


def test_flat_form_parses_back():
    e = DetectionEvent.parse(make())
    assert DetectionEvent.parse(e.flat()) == e


@pytest.mark.parametrize(
    "over, field, problem",
    [
        ({"stage": "during"}, "stage", "precursor"),
        ({"attack": "phishing"}, "attack", "evasion"),
        ({"time": "2026-11-28T10:00:00"}, "time", "timezone"),
        ({"atlas": {"techniques": ["AML.T9999"]}}, "atlas.techniques", "unknown ATLAS technique"),
        ({"atlas": {"tactics": ["AML.TA0099"]}}, "atlas.tactics", "unknown ATLAS tactic"),
        ({"score": float("nan")}, "score", "finite"),
        ({"subject": {"source_ip": "999.1.1.1"}}, "subject.source_ip", "IPv4 or IPv6"),
        ({"data_used": {"input": "yes"}}, "data_used.input", "target"),
        ({"evidence": {"blob": "x" * 20000}}, "evidence", "bytes"),
        ({"colour": "red"}, "colour", "Extra inputs"),
    ],
)
def test_bad_events_rejected_naming_field(over, field, problem):
    with pytest.raises(EventValidationError) as ei:
        DetectionEvent.parse(make(**over))
    msg = str(ei.value)
    assert field in msg and problem in msg, msg


def test_missing_fields_named():
    d = make()
    del d["detector"], d["stage"]
    with pytest.raises(EventValidationError) as ei:
        DetectionEvent.parse(d)
    assert "detector: Field required" in str(ei.value) and "stage: Field required" in str(ei.value)


def test_not_json_and_not_object():
    with pytest.raises(EventValidationError, match="not valid JSON"):
        DetectionEvent.parse('{"id": ')
    with pytest.raises(EventValidationError, match="expected a JSON object"):
        DetectionEvent.parse("[1, 2]")


def test_retired_technique_resolves():
    e = DetectionEvent.parse(make(atlas={"techniques": ["AML.T0045"]}))
    assert e.atlas.techniques == ["AML.T0048.004"]


def test_alert_from_events_carries_chain():
    e1 = DetectionEvent.parse(make(id="a", stage="precursor", attack="extraction",
                                   time="2026-11-28T00:00:00Z"))
    e2 = DetectionEvent.parse(make(id="b", stage="symptom", attack="evasion",
                                   atlas={"techniques": ["AML.T0015"]}, time="2026-11-28T00:30:00Z"))
    rule = RuleRef(id="r1", name="extraction_then_evasion", type="correlation", correlation_type="temporal_ordered")
    a = Alert.from_events(rule=rule, events=[e2, e1], level="high", group={"account.id": "acct-7"})
    assert a.event_ids == ["a", "b"]
    assert a.first_seen < a.last_seen
    assert a.stages == ["precursor", "symptom"] and a.attacks == ["evasion", "extraction"]
    assert set(a.atlas.techniques) == {"AML.T0024.002", "AML.T0040", "AML.T0015"}
    assert a.accounts == ["acct-7"]
    # deterministic id: same rule, group, chain -> same id
    b = Alert.from_events(rule=rule, events=[e1, e2], level="high", group={"account.id": "acct-7"})
    assert a.id == b.id
    assert Alert.parse(a.to_json()) == a
    assert a.flat()["group.account.id"] == "acct-7"


def test_alert_rejects_inverted_window():
    with pytest.raises(EventValidationError, match="last_seen is earlier"):
        Alert.parse({"id": "x", "rule": {"id": "r"}, "event_ids": ["e"],
                     "first_seen": "2026-01-02T00:00:00Z", "last_seen": "2026-01-01T00:00:00Z"})


@settings(max_examples=60, deadline=None)
@given(
    score=st.floats(allow_nan=False, allow_infinity=False, width=32),
    account=st.text(min_size=1, max_size=30).filter(lambda s: s.strip() == s and s),
    offset=st.integers(min_value=-12 * 60, max_value=14 * 60),
    ev=st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda s: "." not in s),
                       st.one_of(st.integers(-10**6, 10**6), st.text(max_size=20), st.booleans()), max_size=4),
)
def test_round_trip_property(score, account, offset, ev):
    tz = timezone(timedelta(minutes=offset))
    e = DetectionEvent.parse(make(score=score, subject={"account": account}, evidence=ev,
                                  time=datetime(2026, 5, 1, 12, tzinfo=tz).isoformat()))
    assert DetectionEvent.parse(e.to_json()) == e
    assert DetectionEvent.parse(unflatten_event(flatten_event(e))) == e
